//! A real IPFS node for integration tests: `tests/ipfs-test-node/start.sh` (js-ipfs with
//! Kubo's RPC API) on a free loopback port, stopped when the guard drops — also when the
//! test fails. If the node cannot start, the test fails with the reason; it is never
//! skipped. Also [`read_all`], a stored payload read back whole.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use futures_util::StreamExt;
use medledger_payload::{PayloadError, Payloads, StoredPayload};

/// A running test node; dropping it stops the node and removes its state directory.
pub struct TestNode {
    /// The RPC API URL, e.g. `http://127.0.0.1:23456`.
    pub api: String,
    /// The node's state directory (its repo is `STATE/repo`).
    pub state: PathBuf,
    port: u16,
}

fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/ipfs-test-node")
}

fn port_is_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// A port P such that P, P+1, P+1000 and P+2000 (API, RPC, swarm, gateway) are free.
fn free_port() -> u16 {
    for _ in 0..200 {
        let probe = TcpListener::bind(("127.0.0.1", 0)).expect("bind a loopback port");
        let port = probe.local_addr().expect("local address").port();
        drop(probe);
        if port > 60000 {
            continue;
        }
        if [port, port + 1, port + 1000, port + 2000]
            .into_iter()
            .all(port_is_free)
        {
            return port;
        }
    }
    panic!("no free loopback port block for the test IPFS node");
}

impl TestNode {
    /// Starts a node; panics with the script's output if it does not come up.
    pub fn start() -> TestNode {
        TestNode::start_on_a_free_port(None)
    }

    /// Starts a node whose npm packages live in `cache` (installed there if it is empty)
    /// instead of the user's cache.
    pub fn start_with_cache(cache: &Path) -> TestNode {
        TestNode::start_on_a_free_port(Some(cache))
    }

    /// A port found free can be taken by another test before the node binds it: then
    /// another port, three times at most.
    fn start_on_a_free_port(cache: Option<&Path>) -> TestNode {
        let mut last = String::new();
        for _ in 0..3 {
            match TestNode::try_start(free_port(), None, cache) {
                Ok(node) => return node,
                Err(why) if why.contains("EADDRINUSE") => last = why,
                Err(why) => TestNode::fail(&why),
            }
        }
        TestNode::fail(&last)
    }

    /// Starts a node on `port`, reusing `state` (a restart) if given.
    pub fn start_on(port: u16, state: Option<&Path>) -> TestNode {
        TestNode::try_start(port, state, None).unwrap_or_else(|why| TestNode::fail(&why))
    }

    fn fail(why: &str) -> ! {
        panic!("the test IPFS node did not start (needs node and npm; first start runs npm install):\n{why}")
    }

    fn try_start(
        port: u16,
        state: Option<&Path>,
        cache: Option<&Path>,
    ) -> Result<TestNode, String> {
        let mut command = Command::new("bash");
        command
            .arg(scripts_dir().join("start.sh"))
            .arg(port.to_string());
        if let Some(state) = state {
            command.env("MEDLEDGER_IPFS_NODE_STATE", state);
        }
        if let Some(cache) = cache {
            command.env("MEDLEDGER_IPFS_NODE_CACHE", cache);
        }
        let output = command
            .output()
            .expect("run tests/ipfs-test-node/start.sh (is bash installed?)");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let field = |name: &str| {
            stdout
                .lines()
                .find_map(|line| line.strip_prefix(name).map(str::to_string))
        };
        match (output.status.success(), field("API="), field("STATE=")) {
            (true, Some(api), Some(state)) => Ok(TestNode {
                api,
                state: PathBuf::from(state),
                port,
            }),
            _ => Err(format!(
                "{}\n{}",
                stdout,
                String::from_utf8_lossy(&output.stderr)
            )),
        }
    }

    /// Stops the node without removing its state (for a restart with [`TestNode::restart`]).
    pub fn stop(&self) {
        let _ = Command::new("bash")
            .arg(scripts_dir().join("stop.sh"))
            .arg(&self.state)
            .status();
        // Wait until the API port is released, so a restart can bind it.
        for _ in 0..100 {
            if port_is_free(self.port) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// Starts the stopped node again on the same port and state; the returned guard
    /// takes over (dropping it stops the node).
    pub fn restart(self) -> TestNode {
        let (port, state) = (self.port, self.state.clone());
        std::mem::forget(self); // Its Drop would stop the new daemon and delete the state.
        TestNode::start_on(port, Some(&state))
    }

    /// The API port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.stop();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.state);
        }
    }
}

/// A stored payload read back whole through `Payloads::get` (decrypted and checked).
pub async fn read_all(
    payloads: &Payloads,
    payload: &StoredPayload,
) -> Result<Vec<u8>, PayloadError> {
    let mut stream = payloads.get(payload).await?;
    let mut out = Vec::new();
    while let Some(piece) = stream.next().await {
        out.extend_from_slice(&piece?);
    }
    Ok(out)
}
