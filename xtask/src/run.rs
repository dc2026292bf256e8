//! Running other programs, with the command echoed and its failure named.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository root (xtask lives one level below it).
pub fn root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

pub fn command(program: &str) -> Command {
    let mut command = Command::new(program);
    command.current_dir(root());
    command
}

/// `cargo`, the same one that runs xtask.
pub fn cargo() -> Command {
    command(&std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// Runs `command` to completion, echoing it first; an error names it and its exit status.
pub fn run(command: &mut Command) -> Result<(), String> {
    let shown = format!("{command:?}").replace('"', "");
    eprintln!("xtask: running {shown}");
    let status = command
        .status()
        .map_err(|error| format!("cannot start {shown}: {error}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{shown} failed ({status})"))
    }
}

/// Runs a `cargo test` to completion, passing its output through, and adds up its
/// "test result" lines into `tally`.
pub fn run_tests(command: &mut Command, tally: &mut TestTally) -> Result<(), String> {
    use std::io::{BufRead, BufReader};
    let shown = format!("{command:?}").replace('"', "");
    eprintln!("xtask: running {shown}");
    let skip_log = std::env::temp_dir().join(format!("p2p-skips-{}", std::process::id()));
    let _ = std::fs::remove_file(&skip_log);
    let mut child = command
        .env(p2p_testnet::SKIP_LOG_VAR, &skip_log)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|error| format!("cannot start {shown}: {error}"))?;
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            println!("{line}");
            tally.add(&line);
        }
    }
    let status = child.wait().map_err(|error| format!("{shown}: {error}"))?;
    tally.take_skips(&skip_log);
    if status.success() {
        Ok(())
    } else {
        Err(format!("{shown} failed ({status})"))
    }
}

/// Tests passed, failed and skipped over several `cargo test` runs.
#[derive(Default)]
pub struct TestTally {
    pub passed: u64,
    pub failed: u64,
    /// `#[ignore]`d tests, each with its reason in the source.
    pub ignored: u64,
    /// Tests that found they cannot run here, with their reasons (from the skip log).
    pub skipped: Vec<String>,
}

impl TestTally {
    /// Counts a line like "test result: ok. 38 passed; 0 failed; 0 ignored; ...".
    fn add(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("test result: ") else {
            return;
        };
        let count = |label: &str| -> u64 {
            rest.split(';')
                .find_map(|part| {
                    part.trim()
                        .trim_start_matches("ok. ")
                        .trim_start_matches("FAILED. ")
                        .strip_suffix(label)
                })
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or(0)
        };
        self.passed += count(" passed");
        self.failed += count(" failed");
        self.ignored += count(" ignored");
    }

    /// Takes the skips recorded in `log`: a test that skipped reported itself as passed.
    pub fn take_skips(&mut self, log: &Path) {
        let Ok(text) = std::fs::read_to_string(log) else {
            return;
        };
        let _ = std::fs::remove_file(log);
        for line in text.lines().filter(|line| !line.is_empty()) {
            self.passed = self.passed.saturating_sub(1);
            self.skipped.push(line.to_string());
        }
    }

    /// The summary line, and the reason of every skip.
    pub fn report(&self) {
        println!(
            "tests: {} passed, {} failed, {} skipped, {} ignored",
            self.passed,
            self.failed,
            self.skipped.len(),
            self.ignored
        );
        for skip in &self.skipped {
            println!("  skipped {skip}");
        }
    }
}

/// A directory under the system's temporary directory, removed with everything in it when
/// this goes, on success or error alike.
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    pub fn new(label: &str) -> Result<Self, String> {
        let dir = std::env::temp_dir().join(format!("p2p-{label}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(Self(dir))
    }
}

impl std::ops::Deref for ScratchDir {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
