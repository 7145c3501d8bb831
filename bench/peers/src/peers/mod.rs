//! One module per peer.

pub mod nats;
pub mod postgres;
pub mod redis;
pub mod sqlite;
