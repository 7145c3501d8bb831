//! A synthetic chain for the proof tests: blocks with real 88-byte headers, the chain
//! tree over their hashes, and a checkpoint key with a fixed seed.
#![allow(dead_code)] // Each test binary uses part of this module.

use medledger_proof::header::HeaderFields;
use medledger_proof::merkle::{self, Hash};
use medledger_proof::{
    build_tx_proof, Checkpoint, CheckpointBody, CheckpointKey, TxProof, VerifyingKey,
};
use sha2::{Digest, Sha256};

/// The seed of the test key: bytes 0, 1, …, 31. Public; never use it for anything real.
pub const TEST_SEED: [u8; 32] = {
    let mut seed = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        seed[i] = i as u8;
        i += 1;
    }
    seed
};

pub fn test_key() -> CheckpointKey {
    CheckpointKey::from_seed(&TEST_SEED)
}

pub fn other_key() -> CheckpointKey {
    CheckpointKey::from_seed(&[0xee; 32])
}

/// One block: header bytes and the hashes of its transactions.
pub struct TestBlock {
    pub header: [u8; 88],
    pub tx_hashes: Vec<Hash>,
}

impl TestBlock {
    pub fn hash(&self) -> Hash {
        Sha256::digest(self.header).into()
    }
}

/// A chain whose block `n` holds `tx_counts[n]` transactions.
pub struct Chain {
    pub blocks: Vec<TestBlock>,
}

impl Chain {
    pub fn new(tx_counts: &[usize]) -> Chain {
        let mut blocks: Vec<TestBlock> = Vec::with_capacity(tx_counts.len());
        for (number, &count) in tx_counts.iter().enumerate() {
            let tx_hashes: Vec<Hash> = (0..count)
                .map(|i| Sha256::digest(format!("tx {i} of block {number}")).into())
                .collect();
            let fields = HeaderFields {
                number: number as u64,
                timestamp_ms: 1_795_428_000_000 + 1000 * number as i64,
                tx_count: count as u32,
                cut_reason: if number == 0 { 0 } else { 1 },
                format: medledger_proof::header::BLOCK_FORMAT,
                prev_hash: blocks.last().map_or([0; 32], TestBlock::hash),
                data_hash: merkle::root_of_hashes(&tx_hashes),
            };
            blocks.push(TestBlock {
                header: fields.encode(),
                tx_hashes,
            });
        }
        Chain { blocks }
    }

    /// The chain tree's leaf hashes.
    pub fn leaves(&self) -> Vec<Hash> {
        self.blocks
            .iter()
            .map(|b| merkle::leaf_hash(&b.hash()))
            .collect()
    }

    /// A checkpoint of the whole chain signed by `key`.
    pub fn checkpoint(&self, key: &CheckpointKey) -> Checkpoint {
        key.sign(&self.body())
    }

    pub fn body(&self) -> CheckpointBody {
        let height = self.blocks.len() as u64;
        CheckpointBody {
            tree_size: height,
            root: merkle::root_from_leaf_hashes(&self.leaves()),
            tip_hash: self.blocks.last().expect("a block").hash(),
            height,
            timestamp: 1_795_500_000_000 + height as i64,
        }
    }

    /// The proof of transaction `position` of block `number` against `checkpoint`.
    pub fn tx_proof(&self, number: usize, position: usize, checkpoint: &Checkpoint) -> TxProof {
        let chain_path =
            merkle::inclusion_proof(&self.leaves(), number).expect("block in the chain");
        let block = &self.blocks[number];
        build_tx_proof(
            &block.header,
            &block.tx_hashes,
            position,
            &chain_path,
            checkpoint,
        )
        .expect("an honest proof builds")
    }
}

/// Every way to change one hex field by one bit (all bits when `all_bits`, else one bit
/// per field chosen by `salt`) and every numeric field by ±1 and a high bit, as JSON
/// values derived from `doc`. Each item names what was changed.
pub fn one_field_tampers(
    doc: &serde_json::Value,
    all_bits: bool,
    salt: usize,
) -> Vec<(String, serde_json::Value)> {
    let mut out = Vec::new();
    let mut paths = Vec::new();
    collect_paths(doc, &mut Vec::new(), &mut paths);
    for path in paths {
        let value = get(doc, &path);
        let name = path_name(&path);
        match value {
            serde_json::Value::String(text) => {
                let bytes = hex::decode(text).expect("test documents are hex");
                let bits: Vec<usize> = if all_bits {
                    (0..bytes.len() * 8).collect()
                } else {
                    vec![(salt * 131 + name.len() * 7) % (bytes.len() * 8)]
                };
                for bit in bits {
                    let mut changed = bytes.clone();
                    changed[bit / 8] ^= 1 << (bit % 8);
                    let mut d = doc.clone();
                    *get_mut(&mut d, &path) = serde_json::Value::String(hex::encode(changed));
                    out.push((format!("{name} bit {bit}"), d));
                }
            }
            serde_json::Value::Number(n) => {
                let v = n.as_i64().expect("test numbers fit i64");
                for new in [v + 1, v - 1, v ^ (1 << 40)] {
                    let mut d = doc.clone();
                    *get_mut(&mut d, &path) = serde_json::Value::from(new);
                    out.push((format!("{name} = {new}"), d));
                }
            }
            other => panic!("unexpected JSON value at {name}: {other}"),
        }
    }
    out
}

#[derive(Clone)]
enum Step {
    Key(String),
    Index(usize),
}

fn collect_paths(v: &serde_json::Value, prefix: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, child) in map {
                prefix.push(Step::Key(k.clone()));
                collect_paths(child, prefix, out);
                prefix.pop();
            }
        }
        serde_json::Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                prefix.push(Step::Index(i));
                collect_paths(child, prefix, out);
                prefix.pop();
            }
        }
        _ => out.push(prefix.clone()),
    }
}

fn get<'a>(v: &'a serde_json::Value, path: &[Step]) -> &'a serde_json::Value {
    path.iter().fold(v, |v, s| match s {
        Step::Key(k) => &v[k.as_str()],
        Step::Index(i) => &v[*i],
    })
}

fn get_mut<'a>(v: &'a mut serde_json::Value, path: &[Step]) -> &'a mut serde_json::Value {
    path.iter().fold(v, |v, s| match s {
        Step::Key(k) => &mut v[k.as_str()],
        Step::Index(i) => &mut v[*i],
    })
}

fn path_name(path: &[Step]) -> String {
    let mut name = String::new();
    for s in path {
        match s {
            Step::Key(k) => {
                if !name.is_empty() {
                    name.push('.');
                }
                name.push_str(k);
            }
            Step::Index(i) => name.push_str(&format!("[{i}]")),
        }
    }
    name
}

pub fn public_key_hex(key: &VerifyingKey) -> String {
    hex::encode(key.as_bytes())
}
