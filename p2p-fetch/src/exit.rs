//! Exit codes, one per way a download can end, so scripts can tell them apart.

use std::fmt;

/// How the process ends; the number is the exit code documented in `--help`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    Success = 0,
    /// Bad command line (also clap's own code).
    Usage = 2,
    /// The first host could not be reached or did not answer as a peer.
    Unreachable = 3,
    /// Some blocks are held by no reachable peer (before or during the download).
    BlocksUnavailable = 4,
    /// The file's SHA-256 is not the one given with `--sha256`, or no peer serves the
    /// manifest given with `--manifest`.
    ChecksumMismatch = 5,
    /// Reading or writing local files failed, or the output or an earlier partial download
    /// of it exists without `--force`.
    Io = 6,
    /// Ctrl-C: the partial download is kept for `--continue`.
    Interrupted = 130,
}

/// The text `--help` shows after the options.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0    the file was downloaded (and verified, with --sha256 or --manifest)
  2    usage: bad command line
  3    unreachable: the first host cannot be reached or is not a peer
  4    blocks held by no reachable peer (the missing ranges are named)
  5    checksum mismatch (--sha256), or no peer serves the --manifest given
  6    I/O error on local files, or the output or a partial download of it exists
       (--continue resumes a partial download, --force overwrites)
  130  interrupted (Ctrl-C); resume with --continue";

/// Why p2p-fetch stops: a message for the user and the exit code.
#[derive(Debug)]
pub struct Failure {
    pub code: ExitCode,
    pub message: String,
}

impl Failure {
    pub fn new(code: ExitCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// A local file operation failed.
    pub fn io(what: impl fmt::Display, error: std::io::Error) -> Self {
        Self::new(ExitCode::Io, format!("{what}: {error}"))
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}
