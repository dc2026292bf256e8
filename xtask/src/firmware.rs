//! `cargo xtask firmware ...`: building the boards and measuring their footprint.

use crate::check::{install_cargo_binary, install_embedded_target};
use crate::run::{command, root, run};
use std::path::PathBuf;

const TARGET_DIR: &str = "firmware/target/thumbv7em-none-eabihf/release";
/// The boards, by package name (each also its binary's name). `nucleo-f429zi-embassy` is the
/// embassy example (embassy-net and p2p-core's embedded-io-async adapter), built and linted.
pub const BOARDS: [&str; 3] = ["mps2-an386", "nucleo-f429zi", "nucleo-f429zi-embassy"];

#[derive(clap::Args)]
pub struct FirmwareArgs {
    #[command(subcommand)]
    command: FirmwareCommand,
}

#[derive(clap::Subcommand)]
enum FirmwareCommand {
    /// Build every board in release mode.
    Build,
    /// Flash and RAM of each board's release build, from its ELF sections.
    Footprint,
}

pub fn run_command(args: FirmwareArgs) -> Result<(), String> {
    match args.command {
        FirmwareCommand::Build => build(),
        FirmwareCommand::Footprint => {
            build()?;
            for board in BOARDS {
                println!("{}", footprint(board)?);
            }
            for footprint in filling_footprints()? {
                println!("{footprint}");
            }
            Ok(())
        }
    }
}

/// Every build-time setting a test build sets, kept out of the default builds.
const SETTINGS: [&str; 4] = ["P2P_BLOCKS", "P2P_PEERS", "P2P_TEST_PANIC", "P2P_MANIFEST"];

/// A test build: its name, its board and its settings.
type TestBuild = (&'static str, &'static str, Vec<(&'static str, String)>);

/// The test builds beside the default ones, each in firmware/target/NAME, as (name, board,
/// settings): `swarm` holds part of the sample and lists the two host-sims beside it (the
/// mixed-swarm test); `panic` panics after start-up (the panic-path test); `filling` is a
/// filling node for the sample that fetches from the host-sims at 10.0.0.2 and 10.0.0.3, on
/// the QEMU board and (built and linted, not run) on the Nucleo.
fn test_builds() -> Vec<TestBuild> {
    let sample = sample_manifest().to_string();
    let filling = vec![
        ("P2P_MANIFEST", sample),
        ("P2P_PEERS", "10.0.0.2,10.0.0.3".to_string()),
    ];
    vec![
        (
            "swarm",
            "mps2-an386",
            vec![
                ("P2P_BLOCKS", "0-99".to_string()),
                ("P2P_PEERS", "10.0.0.3,10.0.0.4".to_string()),
            ],
        ),
        (
            "panic",
            "mps2-an386",
            vec![("P2P_TEST_PANIC", "1".to_string())],
        ),
        ("filling", "mps2-an386", filling.clone()),
        ("nucleo-filling", "nucleo-f429zi", filling),
    ]
}

/// The manifest digest of the built-in sample file.
pub fn sample_manifest() -> p2p_core::Digest {
    const SAMPLE: &[u8] = include_bytes!("../../assets/sample.txt");
    let geometry = p2p_core::Geometry::new(SAMPLE.len() as u32);
    let digests: Vec<p2p_core::Digest> = SAMPLE
        .chunks(geometry.block_size() as usize)
        .map(p2p_core::Digest::of)
        .collect();
    p2p_core::manifest::manifest_digest(SAMPLE.len() as u32, &digests)
}

/// Builds every board (release: what is flashed, and what QEMU runs fast enough), and the QEMU
/// board's test builds.
pub fn build() -> Result<(), String> {
    install_tools()?;
    run(&mut firmware_cargo(&["build", "--release"]))?;
    for (name, board, settings) in test_builds() {
        let mut build = firmware_cargo(&["build", "--release", "-p", board]);
        build.env(
            "CARGO_TARGET_DIR",
            root().join("firmware/target").join(name),
        );
        for (setting, value) in settings {
            build.env(setting, value);
        }
        run(&mut build)?;
    }
    Ok(())
}

/// What building the firmware needs beyond cargo: the target's standard library, and
/// flip-link, the firmware's linker (firmware/.cargo/config.toml; 0.1.12 or later sets the
/// `_stack_end` that cortex-m-rt checks).
pub fn install_tools() -> Result<(), String> {
    install_embedded_target()?;
    install_cargo_binary("flip-link", &["flip-link", "--version", "^0.1.12"])
}

/// The firmware workspace's own formatting and clippy checks (the root's do not reach it).
pub fn lint() -> Result<(), String> {
    run(&mut firmware_cargo(&["fmt", "--all", "--check"]))?;
    run(&mut firmware_cargo(&[
        "clippy",
        "--release",
        "--",
        "-D",
        "warnings",
    ]))?;
    // The benchmark's raw-TCP anchor, which only `cargo xtask bench firmware` builds.
    run(&mut firmware_cargo(&[
        "clippy",
        "--release",
        "-p",
        "mps2-an386",
        "--features",
        "bench-raw-tcp",
        "--",
        "-D",
        "warnings",
    ]))
}

/// `cargo` in the firmware workspace, with none of the caller's build settings leaking in
/// (the firmware workspace has its own target directory).
fn firmware_cargo(args: &[&str]) -> std::process::Command {
    let mut cargo = command(&std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cargo.current_dir(root().join("firmware")).args(args);
    cargo.env_remove("CARGO_TARGET_DIR");
    for setting in SETTINGS {
        cargo.env_remove(setting);
    }
    cargo
}

pub fn elf(board: &str) -> PathBuf {
    root().join(TARGET_DIR).join(board)
}

/// What a board's image occupies.
pub struct Footprint {
    pub board: String,
    /// .vector_table + .text + .rodata + .data, less the embedded file and its digests.
    pub flash: u64,
    /// The embedded served file and the SHA-256 of each of its blocks (32 B a block): both
    /// grow with the file, not with the program.
    pub file: u64,
    /// .data + .bss + .uninit (static RAM, before the stack).
    pub static_ram: u64,
}

impl std::fmt::Display for Footprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: flash {} B ({:.1} KiB) without the {} B file and block digests, static RAM {} B",
            self.board,
            self.flash,
            self.flash as f64 / 1024.0,
            self.file,
            self.static_ram
        )
    }
}

pub fn footprint(board: &str) -> Result<Footprint, String> {
    footprint_of(board, &elf(board))
}

/// The filling-node builds of both boards (`P2P_MANIFEST`: no file, the fetcher instead).
pub fn filling_footprints() -> Result<Vec<Footprint>, String> {
    [
        ("mps2-an386", "filling"),
        ("nucleo-f429zi", "nucleo-filling"),
    ]
    .into_iter()
    .map(|(board, build)| {
        let elf = root()
            .join("firmware/target")
            .join(build)
            .join("thumbv7em-none-eabihf/release")
            .join(board);
        footprint_of(&format!("{board} filling node"), &elf)
    })
    .collect()
}

fn footprint_of(board: &str, elf: &std::path::Path) -> Result<Footprint, String> {
    let sections = output(command("readelf").args(["-S", "-W"]).arg(elf))?;
    let size_of = |name: &str| -> u64 {
        sections
            .lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split(']').nth(1)?.split_whitespace().collect();
                (fields.first() == Some(&name))
                    .then(|| u64::from_str_radix(fields.get(4)?, 16).ok())?
            })
            .sum()
    };
    let symbols = output(command("nm").args(["-S", "--size-sort"]).arg(elf))?;
    let file = symbols
        .lines()
        .filter(|line| line.contains("FILE_DATA") || line.contains("p2p_firmware8settings7DIGESTS"))
        .filter_map(|line| u64::from_str_radix(line.split_whitespace().nth(1)?, 16).ok())
        .sum::<u64>();
    let flash = size_of(".vector_table") + size_of(".text") + size_of(".rodata") + size_of(".data");
    Ok(Footprint {
        board: board.to_string(),
        flash: flash.saturating_sub(file),
        file,
        static_ram: size_of(".data") + size_of(".bss") + size_of(".uninit"),
    })
}

fn output(command: &mut std::process::Command) -> Result<String, String> {
    let shown = format!("{command:?}");
    let out = command
        .output()
        .map_err(|error| format!("cannot run {shown}: {error}"))?;
    if !out.status.success() {
        return Err(format!(
            "{shown} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
