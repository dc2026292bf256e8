//! `cargo xtask test`: every check the project has, in the order a failure is cheapest to see.
//! `.ci/run` calls exactly this, and so does the README.

use crate::run::{TestTally, cargo, command, run, run_tests};

/// The microcontroller target p2p-core must build for; rustup does not add it by itself.
pub const EMBEDDED_TARGET: &str = "thumbv7em-none-eabihf";

#[derive(clap::Args)]
pub struct TestArgs {
    /// Skip `cargo fmt --check` and clippy (for a quick local re-run).
    #[arg(long)]
    no_lint: bool,
    /// Skip the 30-second run of each fuzz target.
    #[arg(long)]
    no_fuzz: bool,
}

/// The cargo-fuzz targets in core/fuzz; CI runs each for FUZZ_SECONDS.
const FUZZ_TARGETS: [&str; 5] = [
    "request_decoder",
    "server_session",
    "client_session",
    "block_ranges",
    "fetcher",
];
const FUZZ_SECONDS: u32 = 30;

pub fn run_all(args: TestArgs) -> Result<(), String> {
    install_embedded_target()?;
    install_debian_packages()?;
    if !args.no_lint {
        run(cargo().args(["fmt", "--all", "--check"]))?;
        run(cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))?;
    }
    // Building for a target without std or a heap proves the core needs neither.
    run(cargo().args([
        "build",
        "-p",
        "p2p-core",
        "--target",
        EMBEDDED_TARGET,
        "--all-features",
    ]))?;
    // Binaries and firmware first: the end-to-end tests run them.
    run(cargo().args(["build", "--workspace", "--bins"]))?;
    crate::firmware::build()?;
    if !args.no_lint {
        crate::firmware::lint()?;
    }
    let mut tally = TestTally::default();
    // The core's optional parts (the smoltcp driver, defmt) are tested on their own too.
    run_tests(
        cargo().args(["test", "-p", "p2p-core", "--all-features"]),
        &mut tally,
    )?;
    run_tests(cargo().args(["test", "--workspace"]), &mut tally)?;
    if !args.no_fuzz {
        fuzz_briefly()?;
    }
    println!("\nxtask test: every check passed");
    println!("tests: {} passed, {} failed", tally.passed, tally.failed);
    Ok(())
}

/// Runs every fuzz target for a short while from its corpus in core/fuzz/corpus. New inputs go
/// to a scratch directory (libFuzzer writes to the first corpus it is given), so a test run
/// leaves the checkout as it was. libFuzzer wants nightly's sanitizer flags; RUSTC_BOOTSTRAP
/// lets the stable toolchain take them.
fn fuzz_briefly() -> Result<(), String> {
    install_cargo_binary("cargo-fuzz", &["cargo-fuzz"])?;
    let fuzz_dir = crate::run::root().join("core/fuzz");
    let scratch = std::env::temp_dir().join(format!("p2p-fuzz-{}", std::process::id()));
    for target in FUZZ_TARGETS {
        let new_inputs = scratch.join(target);
        std::fs::create_dir_all(&new_inputs)
            .map_err(|e| format!("cannot create {}: {e}", new_inputs.display()))?;
        let time = format!("-max_total_time={FUZZ_SECONDS}");
        let result = run(cargo()
            .current_dir(&fuzz_dir)
            .args(["fuzz", "run", target])
            .arg(&new_inputs)
            .arg(fuzz_dir.join("corpus").join(target))
            .args(["--", &time])
            .env("RUSTC_BOOTSTRAP", "1")
            .env_remove("CARGO_TARGET_DIR"));
        // Best effort: a leftover scratch directory in /tmp is harmless.
        let _ = std::fs::remove_dir_all(&new_inputs);
        result?;
    }
    let _ = std::fs::remove_dir(&scratch);
    Ok(())
}

/// Installs a crates.io binary with `cargo install --locked PACKAGE...` when `program` cannot be
/// started (CI's machine starts without any).
pub fn install_cargo_binary(program: &str, package: &[&str]) -> Result<(), String> {
    if command(program).arg("--help").output().is_ok() {
        return Ok(());
    }
    run(cargo().args(["install", "--locked"]).args(package))
}

/// Adds the embedded target through rustup when it is missing.
pub fn install_embedded_target() -> Result<(), String> {
    let installed = command("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map_err(|error| {
            format!("cannot run rustup ({error}); install {EMBEDDED_TARGET} by hand")
        })?;
    if String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|line| line.trim() == EMBEDDED_TARGET)
    {
        return Ok(());
    }
    run(command("rustup").args(["target", "add", EMBEDDED_TARGET]))
}

/// Debian packages the tests need, by the command each provides: QEMU boots the firmware,
/// tshark checks the Wireshark dissector.
const DEBIAN_PACKAGES: [(&str, &str); 2] =
    [("qemu-system-arm", "qemu-system-arm"), ("tshark", "tshark")];

/// Installs the Debian packages the tests need when they are missing. Needs root, as CI has;
/// elsewhere it says what to run.
pub fn install_debian_packages() -> Result<(), String> {
    let missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .filter(|(program, _)| command(program).arg("--version").output().is_err())
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let root = command("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false);
    if !root {
        return Err(format!(
            "missing: run `sudo apt-get install {}`",
            missing.join(" ")
        ));
    }
    run(command("apt-get").arg("update").arg("-q"))?;
    run(command("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}
