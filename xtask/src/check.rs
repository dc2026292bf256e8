//! `cargo xtask test`: every check the project has, in the order a failure is cheapest to see.
//! `.ci/run` calls exactly this, and so does the README.

use crate::run::{TestTally, cargo, command, run, run_tests};
use std::path::PathBuf;

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
    let semver_tool = SemverTool::start()?;
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
    publishable_core()?;
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
    semver_tool.check()?;
    println!("\nxtask test: every check passed");
    tally.report();
    Ok(())
}

/// p2p-core's minimum supported Rust version: `rust-version` in core/Cargo.toml, and the
/// toolchain `cargo xtask test` checks the crate with. The project's machines have exactly one
/// toolchain, so this is the oldest that can be tested here.
pub const CORE_MSRV: &str = "1.95.0";

/// The revision whose p2p-core public API the current one is compared with by
/// cargo-semver-checks: the last release. None is published yet, so it is the API of 0.1.0
/// before the `io` module was added; move it to the release commit when one is published.
pub const SEMVER_BASELINE: &str = "9d2c90f278e93af5ddb760bc14a405bd366d9bd3";

/// What publishing p2p-core needs: its docs build without a warning, its example runs, it
/// builds with its stated MSRV, and its public API has no breaking change that its version
/// does not allow.
fn publishable_core() -> Result<(), String> {
    run(cargo()
        .args(["doc", "-p", "p2p-core", "--no-deps", "--all-features"])
        .env("RUSTDOCFLAGS", "-D warnings"))?;
    // The example serves over std TCP on loopback and fetches from itself, byte-exact.
    run(cargo().args([
        "run",
        "-p",
        "p2p-core",
        "--features",
        "embedded-io",
        "--example",
        "serve_std",
    ]))?;
    check_msrv()
}

/// `cargo check` of p2p-core, every feature, with the MSRV toolchain, after checking that
/// core/Cargo.toml states that MSRV.
fn check_msrv() -> Result<(), String> {
    let manifest = std::fs::read_to_string(crate::run::root().join("core/Cargo.toml"))
        .map_err(|e| format!("core/Cargo.toml: {e}"))?;
    let stated = manifest
        .lines()
        .find_map(|line| line.strip_prefix("rust-version = "))
        .map(|value| value.trim().trim_matches('"').to_string())
        .ok_or("core/Cargo.toml states no rust-version")?;
    if !CORE_MSRV.starts_with(&format!("{stated}.")) && CORE_MSRV != stated {
        return Err(format!(
            "core/Cargo.toml says rust-version {stated}, xtask checks {CORE_MSRV}"
        ));
    }
    let version_of = |command: &mut std::process::Command| {
        command
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
    };
    // The toolchain by its number if rustup has it; else the default one, if that is the
    // MSRV (rustup cannot download another toolchain here).
    let wanted = format!("rustc {CORE_MSRV} ");
    let mut check = if version_of(command("rustup").args(["run", CORE_MSRV, "rustc", "--version"]))
        .is_some_and(|v| v.starts_with(&wanted))
    {
        let mut check = command("rustup");
        check.args(["run", CORE_MSRV, "cargo"]);
        check
    } else if version_of(command("rustc").arg("--version")).is_some_and(|v| v.starts_with(&wanted))
    {
        command("cargo")
    } else {
        return Err(format!(
            "no Rust {CORE_MSRV} toolchain (p2p-core's MSRV): rustup toolchain install {CORE_MSRV}"
        ));
    };
    // The library only: dev-dependencies (criterion, proptest) have MSRVs of their own.
    check.args(["check", "-p", "p2p-core", "--all-features"]);
    for variable in ["CARGO", "RUSTC", "RUSTDOC", "RUSTUP_TOOLCHAIN"] {
        check.env_remove(variable);
    }
    run(&mut check)
}

/// cargo-semver-checks, installed in the background while the rest of the tests run when it
/// is missing (building it takes longer than the whole test run on a fresh machine).
struct SemverTool {
    install: Option<(std::process::Child, PathBuf)>,
}

impl SemverTool {
    fn start() -> Result<Self, String> {
        if command("cargo-semver-checks")
            .arg("--version")
            .output()
            .is_ok()
        {
            return Ok(Self { install: None });
        }
        let log_path = std::env::temp_dir().join("p2p-semver-checks-install.log");
        let log =
            std::fs::File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
        let errors = log
            .try_clone()
            .map_err(|e| format!("{}: {e}", log_path.display()))?;
        eprintln!(
            "xtask: installing cargo-semver-checks in the background (log: {})",
            log_path.display()
        );
        let child = cargo()
            .args(["install", "cargo-semver-checks", "--locked"])
            // Its own target directory, so it does not wait on the tests' build lock.
            .env(
                "CARGO_TARGET_DIR",
                std::env::temp_dir().join("p2p-semver-checks-build"),
            )
            .stdout(log)
            .stderr(errors)
            .spawn()
            .map_err(|e| format!("cannot start cargo install cargo-semver-checks: {e}"))?;
        Ok(Self {
            install: Some((child, log_path)),
        })
    }

    /// Waits for the install, then checks p2p-core against [`SEMVER_BASELINE`].
    fn check(mut self) -> Result<(), String> {
        if let Some((mut child, log_path)) = self.install.take() {
            let status = child
                .wait()
                .map_err(|e| format!("cargo install cargo-semver-checks: {e}"))?;
            if !status.success() {
                return Err(format!(
                    "cargo install cargo-semver-checks failed ({status}); see {}",
                    log_path.display()
                ));
            }
        }
        run(cargo().args([
            "semver-checks",
            "check-release",
            "-p",
            "p2p-core",
            "--baseline-rev",
            SEMVER_BASELINE,
        ]))
    }
}

impl Drop for SemverTool {
    /// A test run that fails early stops the install it started.
    fn drop(&mut self) {
        if let Some((child, _)) = self.install.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
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
