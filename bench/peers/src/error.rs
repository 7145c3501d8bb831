//! One error type for the peers layer.

use std::path::PathBuf;

/// What can go wrong starting, loading or querying a peer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PeerError {
    /// A server binary is not installed. The message carries the command that installs it.
    #[error(
        "{binary} not found; install the peers with `scripts/install-peers.sh` (as root; apt)"
    )]
    MissingBinary {
        /// The binary that was looked for.
        binary: String,
    },
    /// A server did not come up in time; `log` is the tail of its log.
    #[error("{peer} did not start: {reason}\n--- log tail ---\n{log}")]
    Start {
        /// Which peer.
        peer: &'static str,
        /// Why we gave up.
        reason: String,
        /// The last lines the server wrote.
        log: String,
    },
    /// An I/O error, with what we were doing.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, e.g. the path.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// PostgreSQL client error.
    #[error("postgres: {0}")]
    Postgres(#[from] postgres::Error),
    /// SQLite error.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Redis client error.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// NATS protocol or JetStream API error.
    #[error("nats: {0}")]
    Nats(String),
    /// A stored record did not decode.
    #[error("record decode: {0}")]
    Decode(String),
    /// Bad parameters (e.g. zero clients).
    #[error("invalid parameters: {0}")]
    Invalid(String),
}

impl PeerError {
    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        PeerError::Io {
            context: context.into(),
            source,
        }
    }

    /// Wraps an I/O error on a path.
    pub fn io_path(what: &str, path: &std::path::Path, source: std::io::Error) -> Self {
        Self::io(format!("{what} {}", PathBuf::from(path).display()), source)
    }
}

/// Result alias for this crate.
pub type Result<T, E = PeerError> = std::result::Result<T, E>;
