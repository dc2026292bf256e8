//! `cargo xtask bench core`: p2p-core's server session serving into a transmit buffer beside
//! a plain copy through the same buffer.

use super::Rows;
use std::process::Stdio;

/// p2p-core's session bench (criterion), its summary line as a row.
pub fn session() -> Result<Rows, String> {
    let output = crate::run::command(&std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["bench", "-p", "p2p-core", "--bench", "session"])
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cargo bench: {e}"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    print!("{text}");
    // The bench's last line: "session A GiB/s, memcpy B GiB/s, ratio C (goal >= 0.70)".
    let line = text
        .lines()
        .find(|l| l.starts_with("session "))
        .ok_or("the session bench printed no summary")?;
    let number = |after: &str| -> Result<f64, String> {
        line.split(after)
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.trim_end_matches(',').parse().ok())
            .ok_or_else(|| format!("no {after}in {line}"))
    };
    let mut rows = Rows::default();
    rows.push(format!(
        "| p2p-core session serving 64 MiB into a 64 KiB transmit buffer | {:.1} GiB/s | plain copy through the same buffer: {:.1} GiB/s | {:.2} | >= 0.70 |",
        number("session ")?,
        number("memcpy ")?,
        number("ratio ")?
    ));
    Ok(rows)
}
