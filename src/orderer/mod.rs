//! Ordering: the block cutter (Fabric's rules plus the eager policy) and the service that
//! runs it with group commit — submitters are answered only after the block holding
//! their transaction is durable.

pub mod cutter;
pub mod service;

pub use cutter::{Batch, CutPolicy, Cutter, CutterConfig};
pub use service::{
    BlockSink, Committed, Orderer, OrdererConfig, OrdererError, OrdererStats, Receipt, SinkError,
    SubmitError,
};
