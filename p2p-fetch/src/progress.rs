//! Progress while downloading: an indicatif bar when stderr is a terminal, otherwise a
//! plain line every few seconds (logs and CI stay readable).

use crate::log::Log;
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// Interval between plain progress lines.
const LINE_INTERVAL: Duration = Duration::from_secs(2);

pub struct Progress<'a> {
    log: &'a Log,
    total: u64,
    /// Bytes already on disk when this run started (resumed).
    resumed: u64,
    started: Instant,
    last_line: Instant,
}

impl<'a> Progress<'a> {
    pub fn new(log: &'a Log, total: u64, resumed: u64) -> Self {
        if !log.quiet && std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template(
                    "{bar:40.cyan/blue} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.set_position(resumed);
            bar.reset_eta();
            let _ = log.bar.set(bar);
        }
        let now = Instant::now();
        Self {
            log,
            total,
            resumed,
            started: now,
            last_line: now,
        }
    }

    /// Shows `done` bytes of the total, with `active_peers` sending.
    pub fn update(&mut self, done: u64, active_peers: usize) {
        if let Some(bar) = self.log.bar.get() {
            bar.set_position(done);
            bar.set_message(peers(active_peers));
            return;
        }
        if self.last_line.elapsed() < LINE_INTERVAL {
            return;
        }
        self.last_line = Instant::now();
        let rate = self.rate(done);
        let percent = if self.total == 0 {
            100.0
        } else {
            done as f64 * 100.0 / self.total as f64
        };
        let eta = if rate > 0.0 {
            format!("{:.0} s", self.total.saturating_sub(done) as f64 / rate)
        } else {
            "unknown".to_string()
        };
        self.log.progress(&format!(
            "{percent:.1}% {}/{} at {}/s, ETA {eta}, from {}",
            HumanBytes(done),
            HumanBytes(self.total),
            HumanBytes(rate as u64),
            peers(active_peers),
        ));
    }

    /// Bytes per second fetched in this run.
    pub fn rate(&self, done: u64) -> f64 {
        done.saturating_sub(self.resumed) as f64 / self.started.elapsed().as_secs_f64().max(1e-3)
    }

    pub fn finish(&self) {
        if let Some(bar) = self.log.bar.get() {
            bar.finish_and_clear();
        }
    }
}

fn peers(count: usize) -> String {
    match count {
        1 => "1 peer".to_string(),
        count => format!("{count} peers"),
    }
}
