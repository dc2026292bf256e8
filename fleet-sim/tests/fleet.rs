//! Small fleets, fast enough for every test run: completion, determinism and the distance from
//! the theoretical minimum.

use fleet_sim::{FleetConfig, Report, run};
use proptest::prelude::*;

fn fleet(config: FleetConfig) -> Report {
    run(&config, &mut |_, _| {})
}

/// The report without the wall-clock time, which is all that may differ between equal runs.
fn result(report: &Report) -> serde_json::Value {
    let mut json = report.to_json();
    json.as_object_mut().map(|o| o.remove("wall_seconds"));
    json
}

#[test]
fn sixteen_nodes_all_complete_well_ahead_of_client_server() {
    let p2p = fleet(FleetConfig::default());
    assert_eq!(p2p.completed, 16, "{}", p2p.to_json());
    assert_eq!(p2p.peers_dropped, 0, "an honest fleet drops nobody");
    // Measured 1.44 to 1.52x over seeds 1-8 (BENCHMARKS.md); the goal of 1.3 is for 64 nodes.
    assert!(p2p.t_over_tmin() < 2.2, "{}", p2p.to_json());
    // Client-server sends all 16 copies from the seed; here the seed sends about two and the
    // nodes the rest.
    assert!(
        p2p.bytes_from_seed < 3 * (1 << 20),
        "the seed sent {} bytes for 16 copies of 1 MiB",
        p2p.bytes_from_seed
    );
    // Every ARP request is a broadcast that costs every downlink. Nodes learn known peers'
    // addresses from requests they overhear, and ask a peer heard by a request to it alone:
    // 151 to 155 broadcasts over seeds 1-6, 272 when nothing is learnt.
    assert!(
        p2p.broadcasts < 200,
        "{} broadcasts from 17 nodes",
        p2p.broadcasts
    );
    // A node passes the manifest on while it receives it: the last of 16 has it 0.129 to
    // 0.137 s in over seeds 1-6, 0.28 to 0.31 s when only verified manifests are served.
    let last_manifest = p2p.manifest_percentile(100.0).unwrap_or(f64::MAX);
    assert!(last_manifest < 0.2, "last manifest at {last_manifest} s");
    let client_server = fleet(FleetConfig {
        client_server: true,
        ..FleetConfig::default()
    });
    assert_eq!(client_server.completed, 16);
    assert!(
        client_server.t_seconds > 2.0 * p2p.t_seconds,
        "client-server {} s against peer-to-peer {} s",
        client_server.t_seconds,
        p2p.t_seconds
    );
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let config = FleetConfig {
        nodes: 12,
        file_size: 300_000,
        seed: 7,
        loss_percent: 0.5,
        churn_percent: 20.0,
        ..FleetConfig::default()
    };
    let first = fleet(config.clone());
    let second = fleet(config.clone());
    assert_eq!(result(&first), result(&second));
    let other = fleet(FleetConfig { seed: 8, ..config });
    assert_ne!(
        first.log_digest, other.log_digest,
        "another seed, another run"
    );
}

#[test]
fn nodes_that_go_away_and_come_back_resume_and_complete() {
    let report = fleet(FleetConfig {
        nodes: 16,
        seed: 3,
        churn_percent: 25.0,
        ..FleetConfig::default()
    });
    assert!(report.resets > 0, "{}", report.to_json());
    assert_eq!(report.completed, 16, "{}", report.to_json());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4, ..ProptestConfig::default() })]

    /// Whatever the seed, with loss and churn, every node ends holding the verified file.
    #[test]
    fn every_node_ends_with_the_verified_file(seed in 0u64..1000) {
        let report = fleet(FleetConfig {
            nodes: 8,
            file_size: 150_000,
            seed,
            loss_percent: 1.0,
            churn_percent: 25.0,
            ..FleetConfig::default()
        });
        prop_assert_eq!(report.completed, 8, "{}", report.to_json());
        prop_assert_eq!(report.peers_dropped, 0);
    }
}
