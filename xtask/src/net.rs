//! `cargo xtask net ...`: a private test network (network namespace, bridge 10.0.0.1/24, TAP
//! devices) that outlives the command, for trying host-sim and QEMU boards by hand. Nothing
//! outside the namespace is changed. Without root it lives in a user namespace of its own.

use p2p_testnet::TestNet;

/// The namespace `net up` makes unless told otherwise.
pub const DEFAULT_NAME: &str = "p2p-blocks";

#[derive(clap::Args)]
pub struct NetArgs {
    #[command(subcommand)]
    command: NetCommand,
}

#[derive(clap::Subcommand)]
enum NetCommand {
    /// Make the namespace with a bridge and TAP devices tap0, tap1, ...
    Up {
        #[arg(long, default_value_t = 3)]
        taps: usize,
        #[arg(long, default_value = DEFAULT_NAME)]
        name: String,
    },
    /// Remove the namespace and everything in it.
    Down {
        #[arg(long, default_value = DEFAULT_NAME)]
        name: String,
    },
    /// Run a command inside the namespace, e.g. `cargo xtask net exec -- target/debug/host-sim`.
    Exec {
        #[arg(long, default_value = DEFAULT_NAME)]
        name: String,
        #[arg(required = true, trailing_var_arg = true)]
        command: Vec<String>,
    },
}

pub fn run(args: NetArgs) -> Result<(), String> {
    match args.command {
        NetCommand::Up { taps, name } => {
            let net = TestNet::with_name(&name, taps).map_err(|e| e.to_string())?;
            let name = net.keep().map_err(|e| e.to_string())?;
            println!(
                "network namespace {name}: bridge br0 10.0.0.1/24, TAP devices tap0..tap{}",
                taps.saturating_sub(1)
            );
            println!(
                "run inside it:  cargo xtask net exec --name {name} -- target/debug/host-sim --tap tap0 --ip 10.0.0.2/24"
            );
            println!("remove it:      cargo xtask net down --name {name}");
            Ok(())
        }
        NetCommand::Down { name } => {
            let stopped = TestNet::remove(&name).map_err(|e| e.to_string())?;
            println!("removed network namespace {name}, stopping {stopped} processes in it");
            Ok(())
        }
        NetCommand::Exec { name, command } => {
            let (program, rest) = command.split_first().ok_or("no command given")?;
            let status = TestNet::command_in(&name, program)
                .map_err(|e| e.to_string())?
                .args(rest)
                .status()
                .map_err(|error| format!("cannot run {program} in {name}: {error}"))?;
            if status.success() {
                Ok(())
            } else {
                Err(format!("{program} exited with {status}"))
            }
        }
    }
}
