//! `corpus FIXTURES_NDJSON OUT_DIR`: writes a seed corpus for each fuzz target from the
//! events `medledger fixtures` prints (every kind: creations, amendments, status
//! changes, grants and revocations, erasures, reads), chained into blocks of one to five
//! as the ledger chains them. Seeds are what the decoders read in production: encoded
//! blocks and headers, envelopes, the views' values the projection writes for those
//! blocks, dag-pb nodes and CIDs, and proof documents signed with
//! [`medledger_fuzz::PROOF_KEY_SEED`]. libFuzzer mutates from these; without them it
//! would first have to find a frame's length and hashes.

use std::path::{Path, PathBuf};

use medledger_chaincode::Envelope;
use medledger_payload::dagpb::{encode_file_leaf, encode_file_parent, ChildLink};
use medledger_payload::{Cid, CidVersion, Codec};
use medledger_proof::{ChainTree, CheckpointBody, CheckpointKey};
use medledger_storage::{Block, CutReason};

/// Seeds per target at most: libFuzzer reads them all at start, and a few hundred
/// varied inputs cover the formats.
const SEEDS_MAX: usize = 400;

fn main() {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [fixtures, out] = &args[..] else {
        eprintln!("usage: corpus FIXTURES_NDJSON OUT_DIR");
        std::process::exit(2);
    };
    let text = std::fs::read_to_string(fixtures).expect("reading the fixtures");
    let mut txs = text.lines().map(|line| {
        serde_json::from_str::<Envelope>(line)
            .expect("a fixture is an envelope")
            .encode()
    });
    let mut blocks = vec![Block::genesis(0)];
    for n in 1..SEEDS_MAX as u64 {
        let block_txs: Vec<Vec<u8>> = (&mut txs).take(1 + n as usize % 5).collect();
        if block_txs.is_empty() {
            break;
        }
        let prev = blocks.last().expect("genesis").hash();
        let cut = [CutReason::Timeout, CutReason::Count][n as usize % 2];
        blocks.push(Block::from_txs(n, prev, n as i64 * 1_000, cut, block_txs));
    }
    assert!(blocks.len() > 10, "too few fixtures to seed from");

    let mut seeds = Seeds::new(out);
    for block in &blocks {
        let mut bytes = Vec::new();
        block.encode_into(&mut bytes);
        // Small blocks: the fuzzer's default input limit is 4 KiB, and mutations of a
        // large block spend their time copying it.
        if bytes.len() <= 16 << 10 {
            seeds.put("block", &bytes);
        }
        seeds.put("block", &block.header.encode());
        for tx in &block.txs {
            seeds.put("envelope", tx);
        }
    }

    let views_dir = out.join(".views");
    let views = medledger_views::rocks::RocksViewStore::open(&views_dir).expect("views");
    let mut projection = medledger_views::project::Projection::new(&views).expect("projection");
    for block in &blocks {
        projection
            .apply_block(block.header.number, block.txs.iter().map(Vec::as_slice))
            .expect("projecting the ledger's blocks");
    }
    for op in projection
        .take_batch()
        .expect("the projection's batch")
        .ops()
    {
        if let medledger_views::ViewOp::Put { value, .. } = op {
            if !value.is_empty() {
                seeds.put("view_values", value);
            }
        }
    }
    drop(projection);
    drop(views);
    std::fs::remove_dir_all(&views_dir).expect("removing the scratch views");

    let leaves: Vec<Vec<u8>> = [&b""[..], b"x", &[7u8; 300][..], &[0u8; 1024][..]]
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
    for leaf in &leaves {
        seeds.put("dag_pb", leaf);
    }
    seeds.put("dag_pb", &encode_file_parent(&links));
    for link in &links {
        seeds.put("dag_pb", &link.cid.to_bytes());
    }
    seeds.put(
        "dag_pb",
        &Cid::for_block(CidVersion::V1, Codec::Raw, b"raw").to_bytes(),
    );

    let key = CheckpointKey::from_seed(&medledger_fuzz::PROOF_KEY_SEED);
    let mut tree = ChainTree::new();
    for block in &blocks {
        tree.push(&block.hash());
    }
    let size = tree.size();
    let checkpoint = |size: u64| {
        key.sign(&CheckpointBody {
            tree_size: size,
            root: tree.root(size).expect("a root of the tree"),
            tip_hash: blocks[size as usize - 1].hash(),
            height: size,
            timestamp: 1_700_000_000_000,
        })
    };
    let latest = checkpoint(size);
    seeds.put("proof_document", json(&latest).as_bytes());
    for block in blocks.iter().filter(|b| !b.txs.is_empty()).take(20) {
        let n = block.header.number;
        let path = tree.inclusion_proof(n, size).expect("an inclusion proof");
        let proof = medledger_proof::build_tx_proof(
            &block.header.encode(),
            &block.tx_hashes(),
            block.txs.len() / 2,
            &path,
            &latest,
        )
        .expect("a tx proof of the corpus's own chain");
        seeds.put("proof_document", json(&proof).as_bytes());
    }
    for from in [1, 2, size / 2, size - 1] {
        let earlier = checkpoint(from);
        let path = tree
            .consistency_proof(from, size)
            .expect("a consistency proof");
        let mut proof = medledger_proof::build_consistency_proof(
            from,
            size,
            &tree.root(from).expect("root"),
            &tree.root(size).expect("root"),
            &path,
        )
        .expect("a consistency proof of the corpus's own chain");
        proof.from_checkpoint = Some(earlier);
        proof.to_checkpoint = Some(latest.clone());
        seeds.put("proof_document", json(&proof).as_bytes());
    }
    seeds.report();
}

/// A proof document as the server sends it.
fn json<T: serde::Serialize>(document: &T) -> String {
    serde_json::to_string_pretty(document).expect("a document is JSON")
}

/// The corpus directories, one per target, and how many seeds each got.
struct Seeds<'a> {
    out: &'a Path,
    written: std::collections::BTreeMap<&'static str, usize>,
}

impl<'a> Seeds<'a> {
    fn new(out: &'a Path) -> Self {
        Seeds {
            out,
            written: Default::default(),
        }
    }

    fn put(&mut self, target: &'static str, bytes: &[u8]) {
        let n = self.written.entry(target).or_default();
        if *n >= SEEDS_MAX {
            return;
        }
        let dir = self.out.join(target);
        std::fs::create_dir_all(&dir).expect("creating a corpus directory");
        std::fs::write(dir.join(format!("seed-{n:04}")), bytes).expect("writing a seed");
        *n += 1;
    }

    fn report(&self) {
        for (target, n) in &self.written {
            println!("{target}: {n} seeds");
        }
    }
}
