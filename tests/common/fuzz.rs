//! The fuzzers' seeded generator and bounds (tests/fuzz_decoders.rs, tests/fuzz_routes.rs).

/// xorshift64*: deterministic, no dependency. `MEDLEDGER_FUZZ_SEED` picks other inputs.
pub struct Rng(u64);

impl Rng {
    /// A generator for one fuzzer (`salt` keeps fuzzers of one seed apart).
    pub fn new(salt: u64) -> Rng {
        let seed = std::env::var("MEDLEDGER_FUZZ_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0x5eed_f00d_u64);
        Rng((seed ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// How many inputs a fuzzer tries: `default`, or `MEDLEDGER_FUZZ_ROUNDS`.
pub fn rounds(default: usize) -> usize {
    std::env::var("MEDLEDGER_FUZZ_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}
