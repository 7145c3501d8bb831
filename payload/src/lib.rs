//! The medledger payload pipeline: payloads are encrypted with a per-payload data key,
//! chunked into a UnixFS DAG whose CIDs equal Kubo's, and stored in pin stores.
//!
//! See docs/PAYLOADS.md for the formats.

#![deny(missing_docs)]

pub mod cid;
pub mod crypto;
pub mod dagpb;
mod error;
pub mod fsutil;
mod groupcommit;
mod keylog;
pub mod keystore;
mod outbox;
pub mod pinstore;
mod pipeline;
mod replica;
pub mod unixfs;

pub use cid::{Cid, CidVersion, Codec};
pub use error::PayloadError;
pub use outbox::{Outbox, OutboxOp};
pub use pipeline::{
    OrphanScan, PayloadConfig, Payloads, PlaintextStream, ReconcileReport, ReplicationStatus,
    SecretSeed, StoredPayload,
};
pub use replica::DAG_BLOCKS_MAX;
pub use unixfs::{only_hash, Block, DagSummary, FileBuilder};
