//! What p2p-fetch tells its user, and where: the peer survey on stdout (stderr with `--json`,
//! which keeps stdout for the summary), warnings on stderr unless `-q`, details with `-v`.

use indicatif::ProgressBar;
use std::io::Write;
use std::sync::OnceLock;

/// How much to print; shared by every thread.
#[derive(Debug, Default)]
pub struct Log {
    pub quiet: bool,
    pub verbose: bool,
    pub json: bool,
    /// The progress bar, once drawn: lines are printed above it, not through it.
    pub bar: OnceLock<ProgressBar>,
}

impl Log {
    /// The steps the seed asks to see: peer lists and each peer's block ranges.
    pub fn say(&self, line: &str) {
        if self.quiet {
            return;
        }
        if self.json {
            self.to_stderr(line);
        } else {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
    }

    /// Something went wrong with one peer or step, and the download goes on.
    pub fn warn(&self, line: &str) {
        if !self.quiet {
            self.to_stderr(&format!("warning: {line}"));
        }
    }

    pub fn detail(&self, line: &str) {
        if self.verbose && !self.quiet {
            self.to_stderr(line);
        }
    }

    /// A plain progress line (no bar: stderr is not a terminal).
    pub fn progress(&self, line: &str) {
        if !self.quiet {
            self.to_stderr(line);
        }
    }

    fn to_stderr(&self, line: &str) {
        match self.bar.get() {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }
}
