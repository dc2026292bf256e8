//! The `p2p-fetch` command.

use clap::Parser;
use p2p_fetch::cli::Args;
use p2p_fetch::exit::{ExitCode, Failure};
use p2p_fetch::log::Log;
use p2p_fetch::{fetch, seed};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicBool, Ordering};

/// Set by the first Ctrl-C; the download stops and keeps its part file.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);
/// Once seeding, Ctrl-C simply ends the process.
static SEEDING: AtomicBool = AtomicBool::new(false);

fn main() {
    let args = Args::parse();
    let log = Log {
        quiet: args.quiet,
        verbose: args.verbose,
        json: args.json,
        ..Log::default()
    };
    if let Err(error) = ctrlc::set_handler(on_ctrl_c) {
        log.warn(&format!(
            "Ctrl-C will not save the partial download: {error}"
        ));
    }
    let outcome = fetch::run(&args, &log, &INTERRUPTED);
    let mut summary = outcome.summary;
    let code = match &outcome.result {
        Ok(()) => ExitCode::Success,
        Err(failure) => failure.code,
    };
    if args.json {
        summary.insert("ok".into(), json!(outcome.result.is_ok()));
        summary.insert("exit_code".into(), json!(code as i32));
        let error = outcome
            .result
            .as_ref()
            .err()
            .map(|failure| failure.message.clone());
        summary.insert("error".into(), json!(error));
        println!("{}", Value::Object(summary));
    }
    if let Err(failure) = outcome.result {
        finish(failure);
    }
    if let Some((listener, peers)) = outcome.seed {
        SEEDING.store(true, Ordering::SeqCst);
        if let Err(failure) = seed::serve(&args.output, &listener, &peers, &log) {
            finish(failure);
        }
    }
}

/// The first Ctrl-C stops the download cleanly; a second one, or one while seeding, ends
/// the process at once.
fn on_ctrl_c() {
    if SEEDING.load(Ordering::SeqCst) {
        std::process::exit(0);
    }
    if INTERRUPTED.swap(true, Ordering::SeqCst) {
        std::process::exit(ExitCode::Interrupted as i32);
    }
}

fn finish(failure: Failure) -> ! {
    eprintln!("p2p-fetch: {failure}");
    std::process::exit(failure.code as i32)
}
