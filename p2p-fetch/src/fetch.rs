//! One run of p2p-fetch, step by step: survey the swarm, check that every block is held,
//! download in parallel into the part file, verify, and rename into place.

use crate::blockset::{BlockSet, RangesText};
use crate::cli::{Args, hex};
use crate::control::Control;
use crate::discovery::{self, Search, Swarm};
use crate::download::{Download, PeerStats};
use crate::exit::{ExitCode, Failure};
use crate::log::Log;
use crate::manifest::{self, Manifest};
use crate::part_file::PartFile;
use crate::progress::Progress;
use crate::scheduler::Scheduler;
use crate::target;
use p2p_core::{Geometry, PeerAddr};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::Read;
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How often the main thread looks at the download (and at once when it completes).
const TICK: Duration = Duration::from_millis(100);
/// How often the record of completed blocks is made durable.
const RECORD_INTERVAL: Duration = Duration::from_millis(500);

/// How a run ended.
pub struct Outcome {
    pub result: Result<(), Failure>,
    /// The `--json` summary (without the result fields, which the caller adds).
    pub summary: serde_json::Map<String, Value>,
    /// With `--seed` and success: where to serve, and the peers to list.
    pub seed: Option<(TcpListener, Vec<PeerAddr>)>,
}

/// Runs the download; `interrupted` is set by Ctrl-C.
pub fn run(args: &Args, log: &Log, interrupted: &AtomicBool) -> Outcome {
    let mut summary = serde_json::Map::new();
    summary.insert("output".into(), json!(args.output.display().to_string()));
    let mut seed = None;
    let result = run_steps(args, log, interrupted, &mut summary, &mut seed);
    Outcome {
        seed: seed.filter(|_| result.is_ok()),
        result,
        summary,
    }
}

fn run_steps(
    args: &Args,
    log: &Log,
    interrupted: &AtomicBool,
    summary: &mut serde_json::Map<String, Value>,
    seed: &mut Option<(TcpListener, Vec<PeerAddr>)>,
) -> Result<(), Failure> {
    let started = Instant::now();
    // Even --force cannot put a file where a directory is: say so before downloading.
    if args.output.is_dir() {
        return Err(Failure::new(
            ExitCode::Io,
            format!(
                "{} is a directory; name the file to save in it, e.g. -o {}",
                args.output.display(),
                args.output.join("download.bin").display()
            ),
        ));
    }
    if args.output.exists() && !args.force {
        return Err(Failure::new(
            ExitCode::Io,
            format!(
                "{} exists; use --force to overwrite it",
                args.output.display()
            ),
        ));
    }
    let host = target::resolve(&args.host, args.port)?;
    // Bound before the download, so a busy port fails now rather than after it.
    let listener = args
        .seed
        .then(|| {
            TcpListener::bind(args.listen)
                .map_err(|error| Failure::io(format!("cannot listen on {}", args.listen), error))
        })
        .transpose()?;
    let search = Search {
        max_peers: usize::from(args.max_peers),
        timeout: Duration::from_secs(args.timeout),
        own_address: args.seed.then_some(args.listen),
    };
    let swarm = discovery::discover(host, &search, log)?;
    if interrupted.load(Ordering::SeqCst) {
        return Err(Failure::new(
            ExitCode::Interrupted,
            "interrupted before downloading",
        ));
    }
    let geometry = Geometry::new(swarm.file_size);
    summary.insert("file_size".into(), json!(swarm.file_size));
    let holdings: Vec<BlockSet> = swarm
        .peers
        .iter()
        .map(|peer| BlockSet::from_ranges(geometry.block_count(), &peer.ranges))
        .collect();
    let not_held = not_held_by_any(geometry, &holdings);
    if !args.resume && !not_held.is_empty() {
        return Err(Failure::new(
            ExitCode::BlocksUnavailable,
            format!(
                "blocks {} are held by no reachable peer; nothing downloaded (--continue fetches the rest)",
                RangesText(&not_held.ranges())
            ),
        ));
    }
    let manifest = manifest::obtain(&swarm, args.manifest, search.timeout, log)?;
    summary.insert(
        "block_digests".into(),
        json!(match &manifest {
            Some(Manifest { verified: true, .. }) => "verified manifest",
            Some(_) => "first host's",
            None => "none",
        }),
    );
    let (part, mut done) = PartFile::open(&args.output, geometry, args.resume, args.force, log)?;
    if let Some(manifest) = &manifest {
        let bad = part.recheck(geometry, &mut done, &manifest.digests)?;
        if !bad.is_empty() {
            log.warn(&format!(
                "blocks {} of the partial download do not match their digests; fetching them again",
                RangesText(&bad.ranges())
            ));
        }
    }
    let missing = not_held.minus(&done);
    if !missing.is_empty() {
        log.warn(&format!(
            "blocks {} are held by no reachable peer; fetching the rest",
            RangesText(&missing.ranges())
        ));
    }
    let useful_peers = holdings
        .iter()
        .filter(|held| !held.minus(&done).is_empty())
        .count();
    let plan = ConnectionPlan::new(useful_peers, usize::from(args.connections_per_peer));
    if plan.peers < useful_peers || plan.per_peer < usize::from(args.connections_per_peer) {
        log.warn(&format!(
            "using {} of {useful_peers} peers with {} connection(s) each: at most \
             {MAX_CONNECTIONS} connections in all",
            plan.peers, plan.per_peer
        ));
    }
    let connections = plan.peers * plan.per_peer;
    let scheduler = Scheduler::new(geometry, done, &holdings, connections);
    let control = Control::default();
    let download = Download {
        geometry,
        scheduler: &scheduler,
        part: &part,
        control: &control,
        log,
        timeout: search.timeout,
        digests: manifest.as_ref().map(|m| m.digests.as_slice()),
    };
    let stats: Vec<PeerStats> = swarm.peers.iter().map(|_| PeerStats::default()).collect();
    let resumed = scheduler.done_bytes();
    let transferred = transfer(&download, &swarm, &holdings, &stats, plan, interrupted);
    let elapsed = started.elapsed();
    let fetched = scheduler.done_bytes().saturating_sub(resumed);
    describe(summary, &swarm, &stats, elapsed, fetched, resumed);
    transferred?;
    if interrupted.load(Ordering::SeqCst) {
        return Err(Failure::new(
            ExitCode::Interrupted,
            format!(
                "interrupted: {} of {} blocks saved in {}; resume with --continue",
                scheduler.done().count(),
                geometry.block_count(),
                part.part_path().display()
            ),
        ));
    }
    if !scheduler.is_finished() {
        return Err(Failure::new(
            ExitCode::BlocksUnavailable,
            format!(
                "blocks {} are held by no reachable peer; the rest is saved in {} (--continue resumes)",
                RangesText(&scheduler.done().complement().ranges()),
                part.part_path().display()
            ),
        ));
    }
    if args.sha256.is_some() || args.json {
        let digest = sha256_of(part.part_path())?;
        summary.insert("sha256".into(), json!(hex(&digest)));
        if let Some(expected) = args.sha256.filter(|expected| *expected != digest) {
            part.discard_record()?;
            return Err(Failure::new(
                ExitCode::ChecksumMismatch,
                format!(
                    "checksum mismatch: the SHA-256 of the download is {}, not {}; the data is left in {}",
                    hex(&digest),
                    hex(&expected),
                    part.part_path().display()
                ),
            ));
        }
    }
    part.finish(swarm.file_size)?;
    log.say(&format!(
        "saved {} ({} bytes) in {:.2} s",
        args.output.display(),
        swarm.file_size,
        elapsed.as_secs_f64()
    ));
    *seed = listener.map(|listener| {
        let peers = swarm
            .peers
            .iter()
            .map(|peer| PeerAddr::from(peer.addr))
            .collect();
        (listener, peers)
    });
    Ok(())
}

/// The blocks of the file that none of `holdings` has.
fn not_held_by_any(geometry: Geometry, holdings: &[BlockSet]) -> BlockSet {
    let mut held = BlockSet::new(geometry.block_count());
    for holding in holdings {
        held.union_with(holding);
    }
    held.complement()
}

/// Connections opened at most, over all peers: each is a thread with a 256 KiB read buffer,
/// so threads stay under 300 and buffers under 64 MiB however many peers the swarm has.
pub const MAX_CONNECTIONS: usize = 256;

/// How many peers are downloaded from, over how many connections each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ConnectionPlan {
    peers: usize,
    per_peer: usize,
}

impl ConnectionPlan {
    /// `per_peer` connections to each of `peers`, cut to [`MAX_CONNECTIONS`] in all: fewer
    /// connections a peer first, then fewer peers (the first listed are kept).
    fn new(peers: usize, per_peer: usize) -> Self {
        let peers = peers.min(MAX_CONNECTIONS);
        let per_peer = per_peer.min(MAX_CONNECTIONS / peers.max(1)).max(1);
        Self { peers, per_peer }
    }
}

/// Runs every peer's connections while the main thread shows progress and saves the record,
/// until the file is complete, Ctrl-C, a local failure, or no peer has anything left to give.
fn transfer(
    download: &Download<'_>,
    swarm: &Swarm,
    holdings: &[BlockSet],
    stats: &[PeerStats],
    plan: ConnectionPlan,
    interrupted: &AtomicBool,
) -> Result<(), Failure> {
    let scheduler = download.scheduler;
    let control = download.control;
    let done_at_start = scheduler.done();
    let mut progress = Progress::new(
        download.log,
        u64::from(swarm.file_size),
        scheduler.done_bytes(),
    );
    std::thread::scope(|scope| {
        let workers: Vec<_> = swarm
            .peers
            .iter()
            .zip(holdings)
            .zip(stats)
            .filter(|((_, held), _)| !held.minus(&done_at_start).is_empty())
            .take(plan.peers)
            .map(|((peer, held), peer_stats)| {
                scope.spawn(move || download.run_peer(peer.addr, held, peer_stats, plan.per_peer))
            })
            .collect();
        let mut last_record = Instant::now();
        loop {
            scheduler.wait_finished(TICK);
            let active = stats
                .iter()
                .filter(|stats| stats.connections.load(Ordering::SeqCst) > 0)
                .count();
            progress.update(scheduler.done_bytes(), active);
            if last_record.elapsed() >= RECORD_INTERVAL {
                last_record = Instant::now();
                if let Err(failure) = download.part.save_record() {
                    control.fail(failure);
                }
            }
            if interrupted.load(Ordering::SeqCst)
                || scheduler.is_finished()
                || control.is_stopped()
                || workers.iter().all(|worker| worker.is_finished())
            {
                break;
            }
        }
        control.stop();
    });
    progress.finish();
    if let Some(failure) = control.take_failure() {
        return Err(failure);
    }
    download.part.save_record()
}

/// Fills the `--json` summary.
fn describe(
    summary: &mut serde_json::Map<String, Value>,
    swarm: &Swarm,
    stats: &[PeerStats],
    elapsed: Duration,
    fetched: u64,
    resumed: u64,
) {
    let mut peers: Vec<Value> = swarm
        .peers
        .iter()
        .zip(stats)
        .map(|(peer, stats)| {
            let errors = stats
                .errors
                .lock()
                .map(|errors| errors.clone())
                .unwrap_or_default();
            json!({
                "address": peer.addr.to_string(),
                "ranges": RangesText(&peer.ranges).to_string(),
                "bytes": stats.bytes.load(Ordering::SeqCst),
                "duplicate_bytes": stats.duplicate_bytes.load(Ordering::SeqCst),
                "dropped": stats.dropped.load(Ordering::SeqCst),
                "errors": errors,
            })
        })
        .collect();
    peers.extend(swarm.dropped.iter().map(|dropped| {
        json!({
            "address": dropped.addr.to_string(),
            "ranges": Value::Null,
            "bytes": 0,
            "duplicate_bytes": 0,
            "dropped": true,
            "errors": [dropped.reason],
        })
    }));
    let errors: Vec<String> = summary_errors(&peers);
    let seconds = elapsed.as_secs_f64();
    summary.insert("peers".into(), Value::Array(peers));
    summary.insert("errors".into(), json!(errors));
    summary.insert("bytes_downloaded".into(), json!(fetched));
    summary.insert("bytes_resumed".into(), json!(resumed));
    summary.insert("duration_secs".into(), json!(seconds));
    summary.insert(
        "rate_bytes_per_sec".into(),
        json!(fetched as f64 / seconds.max(1e-3)),
    );
}

/// Every peer's errors as `ADDRESS: error`, in one list.
fn summary_errors(peers: &[Value]) -> Vec<String> {
    peers
        .iter()
        .flat_map(|peer| {
            let address = peer["address"].as_str().unwrap_or_default().to_string();
            peer["errors"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|error| error.as_str())
                .map(move |error| format!("{address}: {error}"))
        })
        .collect()
}

/// The SHA-256 of a file, read in pieces.
fn sha256_of(path: &Path) -> Result<[u8; 32], Failure> {
    let what = || format!("cannot read {}", path.display());
    let mut file = File::open(path).map_err(|error| Failure::io(what(), error))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        match file.read(&mut buffer) {
            Ok(0) => break,
            Ok(len) => hasher.update(buffer.get(..len).unwrap_or_default()),
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(Failure::io(what(), error)),
        }
    }
    Ok(hasher.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_capped_in_all() {
        assert_eq!(
            ConnectionPlan::new(4, 2),
            ConnectionPlan {
                peers: 4,
                per_peer: 2
            }
        );
        assert_eq!(
            ConnectionPlan::new(64, 16),
            ConnectionPlan {
                peers: 64,
                per_peer: 4
            }
        );
        assert_eq!(
            ConnectionPlan::new(1024, 16),
            ConnectionPlan {
                peers: 256,
                per_peer: 1
            }
        );
        assert_eq!(
            ConnectionPlan::new(0, 3),
            ConnectionPlan {
                peers: 0,
                per_peer: 3
            }
        );
    }
}
