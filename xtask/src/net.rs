//! Private test networks (to be written).

#[derive(clap::Args)]
pub struct NetArgs {}

pub fn run(_args: NetArgs) -> Result<(), String> {
    Err("not written yet".into())
}
