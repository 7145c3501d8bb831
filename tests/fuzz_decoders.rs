//! Mutation fuzzing of every decoder that reads bytes from a disk, a peer or a user
//! (issue 27): valid inputs are damaged (bits flipped, bytes overwritten with extreme
//! values, cut short, grown, spliced with another input) by a seeded PRNG, and each
//! decoder must answer `Ok` or `Err`, never panic, and never accept two byte forms of
//! one value where the format says there is one. Bounded: a fixed number of mutations
//! per decoder, the same ones on every run (set `MEDLEDGER_FUZZ_ROUNDS` to run more,
//! and `MEDLEDGER_FUZZ_SEED` for other ones).
//!
//! Recovery gets its own rule: a segment damaged anywhere opens to a prefix of the
//! chain that keeps every block before the damage, and it shortens the chain only when
//! the damage is in the last frame (a torn tail); damage in the middle stops the open.

use std::sync::Arc;

use medledger::chaincode::Envelope;
use medledger::fixtures::{FixtureConfig, Fixtures};
use medledger::storage::ledger::crashfs::CrashFs;
use medledger::storage::{Block, BlockHeader, CutReason, Ledger, LedgerOptions};
use medledger_payload::dagpb::{decode_node, encode_file_leaf, encode_file_parent, ChildLink};
use medledger_payload::{Cid, CidVersion, Codec};

mod common;
use common::fuzz::{rounds, Rng};

/// One damaged copy of `seeds[i]` for some i, where the damage begins, and what it was.
fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> (Vec<u8>, usize, Damage) {
    let mut b = seeds[rng.below(seeds.len())].clone();
    let at = rng.below(b.len());
    let damage = DAMAGES[rng.below(DAMAGES.len())];
    match damage {
        Damage::Bits => {
            for _ in 0..=rng.below(3) {
                let i = at + rng.below(b.len() - at);
                b[i] ^= 1 << rng.below(8);
            }
        }
        Damage::Extremes => {
            let fill = [0x00, 0xff, 0x7f, 0x80][rng.below(4)];
            for x in b.iter_mut().skip(at).take(1 + rng.below(8)) {
                *x = fill;
            }
        }
        Damage::Cut => b.truncate(at),
        Damage::Inserted => {
            let extra: Vec<u8> = (0..1 + rng.below(16)).map(|_| rng.next() as u8).collect();
            b.splice(at..at, extra);
        }
        Damage::Removed => {
            let n = 1 + rng.below(8);
            b.drain(at..(at + n).min(b.len()));
        }
        Damage::Spliced => {
            let other = &seeds[rng.below(seeds.len())];
            let from = rng.below(other.len());
            b.truncate(at);
            b.extend_from_slice(&other[from..]);
        }
        Damage::Byte => {
            if !b.is_empty() {
                b[at] = rng.next() as u8;
            }
        }
    }
    (b, at, damage)
}

/// What [`mutate`] does to a copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Damage {
    /// A few bits flipped.
    Bits,
    /// Bytes overwritten with extremes: where a length or a count is, it becomes huge,
    /// zero or negative.
    Extremes,
    /// Cut short.
    Cut,
    /// Random bytes inserted.
    Inserted,
    /// Bytes removed from the middle.
    Removed,
    /// The head of this one, the tail of another (or of itself).
    Spliced,
    /// One random byte.
    Byte,
}

const DAMAGES: [Damage; 7] = [
    Damage::Bits,
    Damage::Extremes,
    Damage::Cut,
    Damage::Inserted,
    Damage::Removed,
    Damage::Spliced,
    Damage::Byte,
];

fn envelopes(n: usize) -> Vec<Envelope> {
    Fixtures::new(FixtureConfig::default()).take(n).collect()
}

#[test]
fn envelopes_decode_only_their_one_canonical_form() {
    let seeds: Vec<Vec<u8>> = envelopes(300).iter().map(Envelope::encode).collect();
    let mut rng = Rng::new(1);
    let (mut accepted, mut refused) = (0, 0);
    for _ in 0..rounds(60_000) {
        let (bytes, _, _) = mutate(&mut rng, &seeds);
        // These read the bytes without decoding them: any input, no panic.
        let subject = Envelope::subject_of(&bytes);
        let _ = Envelope::tx_id_of(&bytes);
        for format in [1, 2] {
            let _ = Envelope::decode_in(format, &bytes);
        }
        match Envelope::decode(&bytes) {
            Ok(env) => {
                accepted += 1;
                assert_eq!(env.encode(), bytes, "accepted a second byte form");
                assert_eq!(
                    subject,
                    Envelope::subject_of(&env.encode()),
                    "subject_of disagrees with the decoded envelope"
                );
            }
            Err(_) => refused += 1,
        }
    }
    // Both ways were taken (a flipped byte of an id or of metadata is another valid
    // envelope).
    assert!(refused > accepted, "{accepted} accepted, {refused} refused");
}

fn chain(blocks: usize) -> Vec<Block> {
    let mut fixtures = Fixtures::new(FixtureConfig::default());
    let mut out = vec![Block::genesis(0)];
    for n in 1..blocks as u64 {
        let txs: Vec<Vec<u8>> = (&mut fixtures)
            .take(1 + (n as usize % 5))
            .map(|e| e.encode())
            .collect();
        let prev = out.last().unwrap().hash();
        out.push(Block::from_txs(
            n,
            prev,
            n as i64 * 1_000,
            CutReason::Timeout,
            txs,
        ));
    }
    out
}

fn encoded(block: &Block) -> Vec<u8> {
    let mut b = Vec::new();
    block.encode_into(&mut b);
    b
}

#[test]
fn blocks_and_headers_decode_only_what_they_encode() {
    let seeds: Vec<Vec<u8>> = chain(12).iter().map(encoded).collect();
    let mut rng = Rng::new(2);
    for _ in 0..rounds(30_000) {
        let (bytes, _, _) = mutate(&mut rng, &seeds);
        if let Ok(block) = Block::decode(&bytes) {
            assert_eq!(encoded(&block), bytes, "accepted a second byte form");
        }
        if let Ok(header) = BlockHeader::decode(&bytes) {
            assert_eq!(
                &header.encode()[..],
                &bytes[..header.encode().len()],
                "a header decoded from other bytes"
            );
        }
        let _ = medledger::storage::ledger::block::BlockFrame::parse(bytes.clone());
        let _ = medledger_proof::header::HeaderFields::parse(&bytes);
    }
}

#[test]
fn dag_nodes_and_cids_from_peers_never_panic() {
    let leaves: Vec<Vec<u8>> = [&b""[..], b"x", &[7u8; 300][..]]
        .iter()
        .map(|c| encode_file_leaf(c))
        .collect();
    let links: Vec<ChildLink> = leaves
        .iter()
        .map(|l| ChildLink {
            cid: Cid::for_block(CidVersion::V0, Codec::DagPb, l),
            tsize: l.len() as u64,
            file_bytes: 100,
        })
        .collect();
    let mut seeds = leaves.clone();
    seeds.push(encode_file_parent(&links));
    seeds.extend(links.iter().map(|l| l.cid.to_bytes()));
    seeds.push(Cid::for_block(CidVersion::V1, Codec::Raw, b"raw").to_bytes());
    let mut rng = Rng::new(3);
    for _ in 0..rounds(60_000) {
        let (bytes, _, _) = mutate(&mut rng, &seeds);
        let _ = decode_node(&bytes);
        if let Ok(cid) = Cid::from_bytes(&bytes) {
            assert_eq!(cid.to_bytes(), bytes, "a CID read from other bytes");
        }
    }
}

#[test]
fn view_rows_from_disk_never_panic() {
    use medledger::views::values::{self, Summary, VersionEntry};
    use medledger_chaincode::contract::GrantState;
    let store = tempfile::tempdir().unwrap();
    // Real rows: the fixtures' events projected by the live projection.
    let views = medledger::views::rocks::RocksViewStore::open(store.path()).unwrap();
    let mut projection = medledger::views::project::Projection::new(&views).unwrap();
    let blocks = chain(8);
    for b in &blocks[..] {
        projection
            .apply_block(b.header.number, b.txs.iter().map(Vec::as_slice))
            .unwrap();
    }
    let batch = projection.take_batch().unwrap();
    let seeds: Vec<Vec<u8>> = batch
        .ops()
        .filter_map(|op| match op {
            medledger::views::ViewOp::Put { value, .. } => Some(value.to_vec()),
            _ => None,
        })
        .filter(|v| !v.is_empty())
        .collect();
    assert!(seeds.len() > 20);
    let mut rng = Rng::new(4);
    for _ in 0..rounds(30_000) {
        let (bytes, _, _) = mutate(&mut rng, &seeds);
        let _ = values::decode::<VersionEntry>(&bytes, "record");
        let _ = values::decode::<Summary>(&bytes, "summary");
        let _ = values::decode::<GrantState>(&bytes, "grant");
    }
}

#[test]
fn a_damaged_segment_opens_to_a_prefix_or_stops() {
    let blocks = chain(6);
    // One segment holding the chain's frames, as the ledger writes it.
    let fs = CrashFs::new();
    let dir = tempfile::tempdir().unwrap();
    // The chain's genesis is the one the ledger creates.
    let options = LedgerOptions {
        genesis_timestamp_ms: Some(0),
        ..LedgerOptions::default()
    };
    {
        let (ledger, _) =
            Ledger::open_with(Arc::new(fs.clone()), dir.path(), options.clone()).unwrap();
        for b in &blocks[1..] {
            ledger.append(b).unwrap();
        }
    }
    let segment = fs.contents(0).expect("segment 0");
    // Where each frame ends: frame k holds block k.
    let mut ends = Vec::new();
    let mut at = 0;
    for b in &blocks {
        at += medledger::storage::ledger::segment::FRAME_HEADER_LEN + b.encoded_len();
        ends.push(at);
    }
    assert_eq!(
        *ends.last().unwrap(),
        segment.len(),
        "the frames fill the segment"
    );
    let starts: Vec<usize> = std::iter::once(0).chain(ends.iter().copied()).collect();
    let frame = |k: usize| &segment[starts[k]..ends[k]];
    let mut rng = Rng::new(5);
    let (mut opened, mut stopped) = (0, 0);
    for _ in 0..rounds(150) {
        let (bytes, _, kind) = mutate(&mut rng, std::slice::from_ref(&segment));
        // The first byte that differs, the frame it is in (the segment's end: none), and
        // whether a later frame is still whole somewhere after it: then the damage is in
        // the middle, not a torn tail.
        let first = segment
            .iter()
            .zip(&bytes)
            .take_while(|(a, b)| a == b)
            .count();
        let hit = ends.iter().position(|&e| first < e).unwrap_or(ends.len());
        let later_whole = (hit + 1..blocks.len()).any(|k| {
            bytes[first..]
                .windows(frame(k).len())
                .any(|w| w == frame(k))
        });
        let fs = CrashFs::new();
        fs.set_contents(0, bytes);
        let index = tempfile::tempdir().unwrap();
        match Ledger::open_with(Arc::new(fs), index.path(), options.clone()) {
            Ok((ledger, _)) => {
                opened += 1;
                let height = ledger.tip().height as usize;
                assert!(
                    height >= hit.min(blocks.len()),
                    "{kind:?} at byte {first}: block {hit} was damaged, but only {height} \
                     blocks are left"
                );
                assert!(
                    height == blocks.len() || !later_whole,
                    "{kind:?} at byte {first} (block {hit} of {}) cut the chain to {height} \
                     with a whole later block after the damage: only a torn tail may be cut",
                    blocks.len()
                );
                for (n, b) in blocks.iter().enumerate().take(height) {
                    let read = ledger.block(n as u64).unwrap().unwrap();
                    assert_eq!(read.hash(), b.hash(), "block {n} changed");
                }
            }
            Err(e) => {
                assert!(
                    hit < blocks.len(),
                    "{kind:?}: every block is whole, yet the open stopped: {e}"
                );
                stopped += 1;
            }
        }
    }
    assert!(
        opened > 0 && stopped > 0,
        "{opened} opened, {stopped} stopped"
    );
}
