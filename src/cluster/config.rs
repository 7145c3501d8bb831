//! The cluster file (`serve --cluster FILE`): the cluster's id, its shared secret and its
//! nodes' addresses. Every node is started with the same file.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The most nodes a cluster file may list (Raft needs a majority of them for every block).
pub const NODES_MAX: usize = 7;
/// The largest cluster file read.
pub const FILE_BYTES_MAX: u64 = 64 * 1024;
/// The secret file's default name, beside the cluster file.
pub const SECRET_FILE_DEFAULT: &str = "cluster.secret";

/// Why the cluster file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ClusterConfigError {
    #[error("reading {path}: {source}", path = .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is larger than {FILE_BYTES_MAX} bytes", path = .0.display())]
    TooLarge(PathBuf),
    #[error("{path}: {message}", path = .path.display())]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {message}", path = .path.display())]
    Invalid { path: PathBuf, message: String },
    #[error("the cluster file lists no node with id {0}")]
    UnknownNode(u64),
    #[error("the cluster secret {path}: {message}", path = .path.display())]
    Secret { path: PathBuf, message: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterFile {
    cluster_id: String,
    /// Hex, 32 bytes or more; relative paths are relative to the cluster file.
    secret_file: Option<PathBuf>,
    node: Vec<NodeFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeFile {
    id: u64,
    raft: SocketAddr,
    http: SocketAddr,
}

/// One node's addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeAddrs {
    /// Node-to-node (Raft RPCs).
    pub raft: SocketAddr,
    /// The public HTTP API.
    pub http: SocketAddr,
}

/// A checked cluster file.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    pub cluster_id: String,
    pub nodes: BTreeMap<u64, NodeAddrs>,
    /// Authenticates node-to-node messages; the JWT and checkpoint keys derive from it.
    pub secret: Vec<u8>,
}

impl ClusterConfig {
    /// Reads and checks `path`; creates the secret file (mode 0600) when it is missing.
    pub fn load(path: &Path) -> Result<ClusterConfig, ClusterConfigError> {
        let read_err = |source| ClusterConfigError::Read {
            path: path.to_owned(),
            source,
        };
        let len = std::fs::metadata(path).map_err(read_err)?.len();
        if len > FILE_BYTES_MAX {
            return Err(ClusterConfigError::TooLarge(path.to_owned()));
        }
        let text = std::fs::read_to_string(path).map_err(read_err)?;
        let file: ClusterFile = toml::from_str(&text).map_err(|e| ClusterConfigError::Parse {
            path: path.to_owned(),
            message: e.message().to_owned(),
        })?;
        let invalid = |message: String| ClusterConfigError::Invalid {
            path: path.to_owned(),
            message,
        };
        let id_ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
        if file.cluster_id.is_empty()
            || file.cluster_id.len() > 64
            || !file.cluster_id.chars().all(id_ok)
        {
            return Err(invalid(
                "cluster_id must be 1 to 64 characters of letters, digits, '-', '_' or '.'".into(),
            ));
        }
        if file.node.is_empty() || file.node.len() > NODES_MAX {
            return Err(invalid(format!(
                "a cluster lists 1 to {NODES_MAX} nodes, not {}",
                file.node.len()
            )));
        }
        let mut nodes = BTreeMap::new();
        let mut addrs = std::collections::HashSet::new();
        for n in &file.node {
            if n.id == 0 {
                return Err(invalid("node ids start at 1".into()));
            }
            for a in [n.raft, n.http] {
                if !addrs.insert(a) {
                    return Err(invalid(format!("the address {a} is listed twice")));
                }
            }
            let addr = NodeAddrs {
                raft: n.raft,
                http: n.http,
            };
            if nodes.insert(n.id, addr).is_some() {
                return Err(invalid(format!("node id {} is listed twice", n.id)));
            }
        }
        let secret_path = match file.secret_file {
            Some(p) if p.is_absolute() => p,
            Some(p) => path.parent().unwrap_or(Path::new(".")).join(p),
            None => path
                .parent()
                .unwrap_or(Path::new("."))
                .join(SECRET_FILE_DEFAULT),
        };
        let secret = load_or_create_secret(&secret_path)?;
        Ok(ClusterConfig {
            cluster_id: file.cluster_id,
            nodes,
            secret,
        })
    }

    /// `id`'s addresses.
    pub fn node(&self, id: u64) -> Result<NodeAddrs, ClusterConfigError> {
        self.nodes
            .get(&id)
            .copied()
            .ok_or(ClusterConfigError::UnknownNode(id))
    }

    /// A key for `purpose`, derived from the cluster secret (HMAC-SHA256), so every node
    /// holds the same one without copying more files.
    pub fn derive_key(&self, purpose: &str) -> [u8; 32] {
        super::network::mac(&self.secret, &[b"medledger derive\0", purpose.as_bytes()])
    }
}

/// Reads the hex secret at `path`, or creates it (32 random bytes, mode 0600, fsynced)
/// when no file is there. Two nodes starting at once from one directory both end with
/// the file's content: the one that loses the creation race reads it.
fn load_or_create_secret(path: &Path) -> Result<Vec<u8>, ClusterConfigError> {
    let fail = |message: String| ClusterConfigError::Secret {
        path: path.to_owned(),
        message,
    };
    for _ in 0..50 {
        match std::fs::read_to_string(path) {
            Ok(text) if text.trim().is_empty() => {
                // Another node is writing it right now.
                std::thread::sleep(std::time::Duration::from_millis(20));
                continue;
            }
            Ok(text) => {
                return hex::decode(text.trim())
                    .ok()
                    .filter(|s| s.len() >= 32)
                    .ok_or_else(|| fail("is not a hex secret of 32 bytes or more".into()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(fail(e.to_string())),
        }
        let mut secret = vec![0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| fail(format!("no randomness: {e}")))?;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        match opts.open(path) {
            Ok(mut f) => {
                f.write_all(hex::encode(&secret).as_bytes())
                    .and_then(|()| f.sync_all())
                    .map_err(|e| fail(e.to_string()))?;
                return Ok(secret);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(fail(e.to_string())),
        }
    }
    Err(fail(
        "stayed empty; is another process still writing it?".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) -> PathBuf {
        let p = dir.join("cluster.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    const THREE: &str = r#"
cluster_id = "hospital-a"
[[node]]
id = 1
raft = "127.0.0.1:7101"
http = "127.0.0.1:8101"
[[node]]
id = 2
raft = "127.0.0.1:7102"
http = "127.0.0.1:8102"
[[node]]
id = 3
raft = "127.0.0.1:7103"
http = "127.0.0.1:8103"
"#;

    #[test]
    fn a_three_node_file_loads_and_every_node_reads_the_same_secret() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), THREE);
        let a = ClusterConfig::load(&p).unwrap();
        let b = ClusterConfig::load(&p).unwrap();
        assert_eq!(a.nodes.len(), 3);
        assert_eq!(a.node(2).unwrap().http.port(), 8102);
        assert_eq!(a.secret, b.secret);
        assert_eq!(a.secret.len(), 32);
        assert_eq!(a.derive_key("jwt"), b.derive_key("jwt"));
        assert_ne!(a.derive_key("jwt"), a.derive_key("checkpoint"));
        assert!(matches!(a.node(4), Err(ClusterConfigError::UnknownNode(4))));
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        for (text, says) in [
            (THREE.replace("hospital-a", "a b"), "cluster_id"),
            (THREE.replace("id = 3", "id = 2"), "listed twice"),
            (THREE.replace("7103", "7102"), "listed twice"),
            (THREE.replace("id = 1", "id = 0"), "start at 1"),
            (format!("{THREE}\nextra = 1\n"), "unknown field"),
            ("cluster_id = \"x\"\nnode = []\n".to_owned(), "1 to 7 nodes"),
        ] {
            let p = write(dir.path(), &text);
            let e = ClusterConfig::load(&p).unwrap_err().to_string();
            assert!(e.contains(says), "{e} should say {says}");
        }
    }
}
