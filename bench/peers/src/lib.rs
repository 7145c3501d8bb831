//! The systems a hospital would pick instead of medledger — PostgreSQL, SQLite, Redis
//! Streams and NATS JetStream — started on loopback from their Debian binaries (SQLite
//! compiled in), loaded with the same [`PeerRecord`]s and measured the same way.
//!
//! Each peer runs with its data in a temp dir and is stopped (and its data removed) when
//! its guard, the `Box<dyn Peer>` from [`PeerKind::start`], is dropped. Every figure says
//! which durability setting the running peer reported ([`Peer::durability`] queries it),
//! and a peer that acknowledges before disk is flagged in every row
//! ([`Figures::acknowledged_after_disk`]).
//!
//! This crate does not depend on medledger (or RocksDB): the bench runner converts
//! medledger's fixtures into [`PeerRecord`]s and prints these figures beside its own.
//! For full-text search, PostgreSQL is loaded with the records of a medledger bulk export
//! instead ([`search`], `peers-bench search`).

#![warn(missing_docs)]

pub mod error;
pub mod figures;
pub mod machine;
pub mod peer;
pub mod peers;
pub mod process;
pub mod record;
pub mod search;
pub mod workload;

pub use error::{PeerError, Result};
pub use figures::{Figures, Latency, Machine};
pub use machine::measure_machine;
pub use peer::{Durability, Peer, PeerKind, Session};
pub use record::{GenConfig, PeerRecord, RecordGen};
pub use search::{QueryClass, SearchHit};
pub use workload::{IngestOptions, MixedOptions, ReadOptions};
