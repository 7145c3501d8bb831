//! The per-client rate limit: a token bucket per client, refilled continuously.
//!
//! A client is its IP address: the one thing a caller cannot choose freely (a bearer
//! token could be varied per request to dodge the limit before it is even checked).
//! Behind a reverse proxy, limit at the proxy instead. Buckets live in 16 shards under
//! their own mutexes; a shard forgets buckets idle for a minute once it holds
//! [`SHARD_CLIENTS_MAX`] clients, and starts over if they are all busy, so the table's
//! memory is bounded however many addresses come.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const SHARDS: usize = 16;
/// Clients one shard tracks before it forgets idle ones.
pub const SHARD_CLIENTS_MAX: usize = 16_384;
/// A bucket untouched this long is full again, so it can be forgotten.
const IDLE: Duration = Duration::from_secs(60);

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Requests per second per client, with a burst of twice that.
pub struct RateLimiter {
    per_sec: f64,
    burst: f64,
    shards: Vec<Mutex<HashMap<u64, Bucket>>>,
}

impl RateLimiter {
    /// `per_sec` requests per second per client (must be > 0).
    pub fn new(per_sec: u32) -> RateLimiter {
        assert!(per_sec > 0, "a rate limit of 0 is expressed as no limiter");
        RateLimiter {
            per_sec: f64::from(per_sec),
            burst: 2.0 * f64::from(per_sec),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    /// Takes one token for `client`; `Err(seconds)` says when one will be there.
    pub fn check(&self, client: &[u8], now: Instant) -> Result<(), u32> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        client.hash(&mut h);
        let key = h.finish();
        let mut shard = self.shards[(key as usize) % SHARDS]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if shard.len() >= SHARD_CLIENTS_MAX && !shard.contains_key(&key) {
            shard.retain(|_, b| now.saturating_duration_since(b.at) < IDLE);
            if shard.len() >= SHARD_CLIENTS_MAX {
                shard.clear();
            }
        }
        let bucket = shard.entry(key).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_sec).min(self.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / self.per_sec;
            Err(wait.ceil().max(1.0) as u32)
        }
    }
}

/// The client a request counts against: its peer IP address.
pub fn client_key(req: &actix_web::dev::ServiceRequest) -> Vec<u8> {
    match req.peer_addr() {
        Some(addr) => addr.ip().to_string().into_bytes(),
        None => b"unknown".to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate_then_refill() {
        let rl = RateLimiter::new(10);
        let t0 = Instant::now();
        for _ in 0..20 {
            rl.check(b"a", t0).unwrap();
        }
        assert_eq!(rl.check(b"a", t0), Err(1));
        // Another client has its own bucket.
        rl.check(b"b", t0).unwrap();
        // 0.5 s later, 5 more.
        let t1 = t0 + Duration::from_millis(500);
        for _ in 0..5 {
            rl.check(b"a", t1).unwrap();
        }
        assert!(rl.check(b"a", t1).is_err());
        // A long pause refills only up to the burst.
        let t2 = t1 + Duration::from_secs(3600);
        for _ in 0..20 {
            rl.check(b"a", t2).unwrap();
        }
        assert!(rl.check(b"a", t2).is_err());
    }

    #[test]
    fn idle_clients_are_forgotten_when_a_shard_is_full() {
        let rl = RateLimiter::new(1);
        let t0 = Instant::now();
        for i in 0..(SHARD_CLIENTS_MAX * SHARDS * 2) as u64 {
            let _ = rl.check(&i.to_le_bytes(), t0);
        }
        let total: usize = rl.shards.iter().map(|s| s.lock().unwrap().len()).sum();
        assert!(total <= SHARD_CLIENTS_MAX * SHARDS, "{total}");
    }
}
