//! The test network without root: a user namespace of its own, entered through nsenter, with
//! host-sim serving on its TAP and p2p-fetch downloading from it, and `cargo xtask net`'s
//! keep / enter / remove cycle.
//!
//! As root this test runs itself again as user `nobody`, inside a private mount namespace
//! where `/dev/net/tun` is a mode-0666 node (as most distributions ship it; some machines make
//! it 0600), so the rootless path is what is tested. Nothing outside that mount namespace
//! changes.

use p2p_testnet::TestNet;
use p2p_tests::{SAMPLE, Scratch, binary};
use std::process::Command;
use std::time::{Duration, Instant};

/// Set in the re-run as `nobody`.
const AS_NOBODY: &str = "P2P_ROOTLESS_RUN";
const NOBODY: &str = "65534";

#[test]
fn without_root_a_test_network_serves_and_downloads() {
    if std::env::var_os(AS_NOBODY).is_some() {
        return download_without_root();
    }
    if !p2p_testnet::is_root() {
        // Already unprivileged: test this user's own rootless network, where the system
        // allows it.
        match TestNet::new(1) {
            Ok(net) => drop(net),
            Err(reason) if std::env::var_os("CI").is_none() => {
                p2p_testnet::report_skip(&format!("no rootless test network here: {reason}"));
                return;
            }
            Err(reason) => panic!("CI needs a rootless test network: {reason}"),
        }
        return download_without_root();
    }
    let this_test = std::env::current_exe().expect("test executable");
    let script = format!(
        "set -e; dir=$(mktemp -d); mknod \"$dir/tun\" c 10 200; chmod 0666 \"$dir/tun\"; \
         mount --bind \"$dir/tun\" /dev/net/tun; \
         exec setpriv --reuid {NOBODY} --regid {NOBODY} --clear-groups --inh-caps=-all \
         \"$0\" --exact without_root_a_test_network_serves_and_downloads --nocapture"
    );
    let output = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .arg(&this_test)
        .env(AS_NOBODY, "1")
        .env_remove("XDG_RUNTIME_DIR")
        .output()
        .expect("run unshare");
    assert!(
        output.status.success(),
        "the run as nobody failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("1 passed"),
        "the run as nobody did not run the test:\n{}",
        String::from_utf8_lossy(&output.stdout)
    );
}

/// The part that runs unprivileged.
fn download_without_root() {
    assert!(!p2p_testnet::is_root(), "must run without root");
    let mut net = TestNet::new(1).expect("a rootless test network");
    let host_sim = binary("host-sim");
    let mut command = net.command(host_sim.to_str().expect("path"));
    command.args(["--tap", "tap0", "--ip", "10.0.0.2/24"]);
    net.spawn(&mut command).expect("start host-sim");

    let scratch = Scratch::new("rootless");
    let output = scratch.0.join("sample.txt");
    let p2p_fetch = binary("p2p-fetch");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let result = net
            .command(p2p_fetch.to_str().expect("path"))
            .args(["10.0.0.2", "-q", "-o", output.to_str().expect("path")])
            .output()
            .expect("run p2p-fetch");
        if result.status.success() {
            break;
        }
        // host-sim may still be starting.
        assert!(
            Instant::now() < deadline,
            "p2p-fetch failed: {}",
            String::from_utf8_lossy(&result.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        std::fs::read(&output).expect("output") == SAMPLE,
        "not byte-identical"
    );

    // A thread cannot join this namespace, and says so.
    let refused = net.run_inside(|| ()).expect_err("no thread may enter");
    assert!(refused.0.contains("root"), "{refused}");

    // Kept by name, entered by name, removed by name, as `cargo xtask net` does.
    let name = format!("p2p-rootless-{}", std::process::id());
    let kept = TestNet::with_name(&name, 0)
        .expect("a named rootless network")
        .keep()
        .expect("keep");
    let bridge = TestNet::command_in(&kept, "ip")
        .expect("enter by name")
        .args(["-br", "addr", "show", "br0"])
        .output()
        .expect("ip");
    assert!(
        String::from_utf8_lossy(&bridge.stdout).contains("10.0.0.1/24"),
        "{}",
        String::from_utf8_lossy(&bridge.stdout)
    );
    assert!(
        TestNet::with_name(&kept, 0).is_err(),
        "a name in use is refused"
    );
    let mut inside = TestNet::command_in(&kept, "sleep")
        .expect("enter by name")
        .arg("60")
        .spawn()
        .expect("sleep inside");
    // nsenter enters, then becomes sleep: only then is it in the namespace.
    let pid = inside.id();
    let started = Instant::now();
    while std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default() != "sleep\n" {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "sleep did not start"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        TestNet::remove(&kept).expect("remove"),
        1,
        "the sleep inside is stopped"
    );
    assert!(!inside.wait().expect("reap").success());
    let gone = TestNet::command_in(&kept, "ip").expect_err("removed");
    assert!(gone.0.contains("no network namespace"), "{gone}");
}
