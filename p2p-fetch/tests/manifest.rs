//! Block digests: with `--manifest` every block is checked against the verified manifest as it
//! arrives; without it, against the first host's digests where it serves them.

mod common;

use common::*;

#[test]
fn with_the_manifest_a_corrupting_peer_is_dropped_and_the_file_is_whole() {
    let bad = with_digests(&[], true);
    let host = with_digests(&[bad], false);
    let dir = scratch("manifest-corrupt");
    let output = dir.join("file.bin");
    let manifest = manifest().1.to_string();
    let result = run(p2p_fetch()
        .arg(host.to_string())
        .args(["--manifest", &manifest, "--json", "-o"])
        .arg(&output));
    assert!(result.status.success(), "{}", stderr(&result));
    assert_is_the_file(&output);
    let errors = stderr(&result);
    assert!(errors.contains("manifest verified"), "{errors}");
    assert!(
        errors.contains(&format!("{bad}: sent block"))
            && errors.contains("does not match its digest in the manifest; dropping this peer"),
        "{errors}"
    );
    let summary = summary(&result);
    assert_eq!(summary["block_digests"], "verified manifest");
    assert_eq!(peer_summary(&summary, bad)["dropped"], true);
}

#[test]
fn without_the_manifest_the_first_host_s_digests_still_catch_a_bad_peer() {
    let bad = with_digests(&[], true);
    let host = with_digests(&[bad], false);
    let dir = scratch("host-digests");
    let output = dir.join("file.bin");
    let result = run(p2p_fetch().arg(host.to_string()).arg("-o").arg(&output));
    assert!(result.status.success(), "{}", stderr(&result));
    assert_is_the_file(&output);
    let printed = stdout(&result);
    assert!(printed.contains("not verified: no --manifest"), "{printed}");
}

#[test]
fn a_manifest_no_peer_serves_is_refused_before_downloading() {
    let host = with_digests(&[], false);
    let dir = scratch("wrong-manifest");
    let output = dir.join("file.bin");
    let wrong = p2p_core::Digest::of(b"another file").to_string();
    let result = run(p2p_fetch()
        .arg(host.to_string())
        .args(["--manifest", &wrong, "-o"])
        .arg(&output));
    assert_eq!(result.status.code(), Some(5), "{}", stderr(&result));
    let errors = stderr(&result);
    assert!(
        errors.contains(&format!("no peer serves the manifest {wrong}")),
        "{errors}"
    );
    assert!(!output.exists() && !dir.join("file.bin.part").exists());
}

#[test]
fn a_malformed_manifest_is_a_usage_error() {
    let result = run(p2p_fetch().args(["127.0.0.1", "--manifest", "abc"]));
    assert_eq!(result.status.code(), Some(2));
    assert!(stderr(&result).contains("a digest is 64 hex digits, not 3 characters"));
}

#[test]
fn peers_without_digests_fall_back_to_whole_file_checking() {
    let host = honest("0-5119", &[]);
    let dir = scratch("no-digests");
    let output = dir.join("file.bin");
    let result = run(p2p_fetch().arg(host.to_string()).arg("-o").arg(&output));
    assert!(result.status.success(), "{}", stderr(&result));
    assert_is_the_file(&output);
    assert!(stdout(&result).contains("only the whole file can be checked"));
}
