//! The IPFS test node's first start on a fresh machine: several tests start nodes at once
//! and every one of them finds the npm package cache empty (issue 19: they raced to fill
//! it and all but one failed). `tests/ipfs-test-node/start.sh` installs under a lock into
//! a temporary directory renamed into place; here three nodes start at once on an empty
//! cache and each must come up and answer.

mod common;

use common::TestNode;

#[test]
fn three_nodes_start_at_once_on_an_empty_package_cache() {
    let cache = tempfile::tempdir().expect("temp dir");
    let nodes: Vec<TestNode> = std::thread::scope(|scope| {
        let starts: Vec<_> = (0..3)
            .map(|_| scope.spawn(|| TestNode::start_with_cache(cache.path())))
            .collect();
        starts
            .into_iter()
            .map(|start| start.join().expect("a node failed to start"))
            .collect()
    });
    for node in &nodes {
        let version = std::process::Command::new("curl")
            .args(["-fsS", "-X", "POST"])
            .arg(format!("{}/api/v0/version", node.api))
            .output()
            .expect("run curl");
        assert!(
            version.status.success()
                && String::from_utf8_lossy(&version.stdout).contains("Version"),
            "node {} did not answer /api/v0/version: {}",
            node.api,
            String::from_utf8_lossy(&version.stderr)
        );
    }
    // One install, complete, and no temporary directory left behind.
    let entries: Vec<String> = std::fs::read_dir(cache.path())
        .expect("read the cache")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    let installs: Vec<&String> = entries.iter().filter(|n| n.len() == 16).collect();
    assert_eq!(
        installs.len(),
        1,
        "one install directory expected: {entries:?}"
    );
    assert!(
        !entries.iter().any(|n| n.starts_with("installing.")),
        "a temporary install directory was left behind: {entries:?}"
    );
    assert!(
        cache
            .path()
            .join(installs[0])
            .join("node_modules/.bin/jsipfs")
            .exists(),
        "the install has no jsipfs"
    );
}
