//! A streaming UnixFS file DAG builder that produces the blocks and CIDs Kubo produces for
//! `ipfs add` with the `size-262144` chunker, balanced layout and 174 links per node.
//!
//! Kubo's balanced layout fills a node with up to 174 children left to right; when a
//! tree of depth d is full, it becomes the first child of a new root of depth d+1.
//! Pushed bottom-up, that is: each level keeps at most 174 pending children; a full level
//! becomes a parent node only when one more child arrives (or at the end), so the depth
//! never exceeds what the file needs. Memory: one chunk plus 174 links per level.

use std::io::{self, Read};

use bytes::Bytes;

use crate::cid::{Cid, CidVersion, Codec};
use crate::dagpb::{encode_file_leaf, encode_file_parent, ChildLink};

/// Bytes per leaf (Kubo's `size-262144` chunker).
pub const CHUNK_BYTES: usize = 262_144;
/// Links per node (Kubo's `helpers.DefaultLinksPerBlock`).
pub const LINKS_MAX: usize = 174;
/// Deepest tree: 174^8 × 256 KiB is far beyond any payload (and `u64`).
const LEVELS_MAX: usize = 8;

/// One block of a DAG and its CID.
#[derive(Clone, Debug)]
pub struct Block {
    /// The block's CID (its bytes' sha2-256 under its codec).
    pub cid: Cid,
    /// The block's bytes (never changed after the block is made: a block made here is
    /// stored without hashing them again).
    pub data: Bytes,
    /// The CID was computed from these bytes in this process (by [`FileBuilder`]), so a
    /// store need not hash them again; a block from anywhere else is checked.
    hashed_here: bool,
}

impl PartialEq for Block {
    fn eq(&self, other: &Block) -> bool {
        self.cid == other.cid && self.data == other.data
    }
}

impl Eq for Block {}

impl Block {
    /// A block read or received with the CID it claims: a store checks the bytes against
    /// the CID before it keeps them.
    pub fn claimed(cid: Cid, data: Bytes) -> Block {
        Block {
            cid,
            data,
            hashed_here: false,
        }
    }

    /// A block made here: its CID is the hash of its bytes.
    fn hashed(version: CidVersion, codec: Codec, data: Vec<u8>) -> Block {
        let cid = Cid::for_block(version, codec, &data);
        Block {
            cid,
            data: Bytes::from(data),
            hashed_here: true,
        }
    }

    /// Whether the CID was computed from the bytes in this process.
    pub(crate) fn hashed_here(&self) -> bool {
        self.hashed_here
    }
}

/// The result of a finished DAG.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DagSummary {
    /// The root CID (what `ipfs add` prints).
    pub root: Cid,
    /// File bytes in the DAG.
    pub file_bytes: u64,
    /// Blocks emitted.
    pub block_count: u64,
    /// Sum of all blocks' sizes (the root's `Tsize`).
    pub dag_bytes: u64,
}

/// Builds a UnixFS file DAG from bytes pushed in any slicing. Blocks are handed out as
/// soon as they are complete; children always come before their parent, the root last.
pub struct FileBuilder {
    version: CidVersion,
    chunk: Vec<u8>,
    /// `levels[0]` holds leaves waiting for a parent, `levels[1]` their parents, ...
    levels: Vec<Vec<ChildLink>>,
    file_bytes: u64,
    block_count: u64,
}

impl FileBuilder {
    /// A builder for `version` (v0: dag-pb leaves; v1: raw leaves).
    pub fn new(version: CidVersion) -> FileBuilder {
        FileBuilder {
            version,
            chunk: Vec::with_capacity(CHUNK_BYTES),
            levels: Vec::new(),
            file_bytes: 0,
            block_count: 0,
        }
    }

    /// Adds `data`; returns the blocks it completed (at most one leaf per 256 KiB pushed,
    /// plus the parents those leaves completed).
    pub fn push(&mut self, mut data: &[u8]) -> Vec<Block> {
        let mut blocks = Vec::new();
        while !data.is_empty() {
            let take = (CHUNK_BYTES - self.chunk.len()).min(data.len());
            self.chunk.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.chunk.len() == CHUNK_BYTES {
                self.cut_leaf(&mut blocks);
            }
        }
        blocks
    }

    /// Emits the remaining blocks, the root last, and the DAG's summary.
    pub fn finish(mut self) -> (Vec<Block>, DagSummary) {
        let mut blocks = Vec::new();
        if !self.chunk.is_empty() || (self.file_bytes == 0 && self.levels.is_empty()) {
            // The empty file is one empty leaf.
            self.cut_leaf(&mut blocks);
        }
        let mut level = 0;
        loop {
            let is_top = self.levels[level + 1..].iter().all(Vec::is_empty);
            if is_top && self.levels[level].len() == 1 {
                break;
            }
            if !self.levels[level].is_empty() {
                let children = std::mem::take(&mut self.levels[level]);
                self.emit_parent(level + 1, &children, &mut blocks);
            }
            level += 1;
            assert!(
                level < self.levels.len(),
                "the top level always holds the root"
            );
        }
        let root = self.levels[level][0];
        assert_eq!(root.file_bytes, self.file_bytes);
        let summary = DagSummary {
            root: root.cid,
            file_bytes: self.file_bytes,
            block_count: self.block_count,
            dag_bytes: root.tsize,
        };
        (blocks, summary)
    }

    fn cut_leaf(&mut self, blocks: &mut Vec<Block>) {
        let chunk_len = self.chunk.len() as u64;
        let block = match self.version {
            CidVersion::V0 => {
                Block::hashed(self.version, Codec::DagPb, encode_file_leaf(&self.chunk))
            }
            CidVersion::V1 => Block::hashed(self.version, Codec::Raw, self.chunk.clone()),
        };
        self.chunk.clear();
        self.file_bytes += chunk_len;
        let link = ChildLink {
            cid: block.cid,
            tsize: block.data.len() as u64,
            file_bytes: chunk_len,
        };
        blocks.push(block);
        self.block_count += 1;
        self.add_child(0, link, blocks);
    }

    /// Adds `link` at `level`, first turning a full level into a parent one level up.
    fn add_child(&mut self, level: usize, link: ChildLink, blocks: &mut Vec<Block>) {
        assert!(level < LEVELS_MAX, "DAG deeper than any file can make it");
        if self.levels.len() <= level {
            self.levels.push(Vec::with_capacity(LINKS_MAX));
        }
        if self.levels[level].len() == LINKS_MAX {
            let children = std::mem::take(&mut self.levels[level]);
            self.emit_parent(level + 1, &children, blocks);
        }
        self.levels[level].push(link);
    }

    fn emit_parent(&mut self, level: usize, children: &[ChildLink], blocks: &mut Vec<Block>) {
        assert!(children.len() <= LINKS_MAX);
        let data = encode_file_parent(children);
        let block = Block::hashed(self.version, Codec::DagPb, data);
        let link = ChildLink {
            cid: block.cid,
            tsize: block.data.len() as u64 + children.iter().map(|c| c.tsize).sum::<u64>(),
            file_bytes: children.iter().map(|c| c.file_bytes).sum(),
        };
        blocks.push(block);
        self.block_count += 1;
        self.add_child(level, link, blocks);
    }
}

/// The CID `ipfs add --only-hash --cid-version N` prints for the bytes of `reader`
/// (v1 with `--raw-leaves`, Kubo's default for v1). Reads in 256 KiB pieces; memory
/// stays bounded whatever the file's size.
pub fn only_hash<R: Read>(mut reader: R, version: CidVersion) -> io::Result<Cid> {
    let mut builder = FileBuilder::new(version);
    let mut buffer = vec![0u8; CHUNK_BYTES];
    loop {
        let read = match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        drop(builder.push(&buffer[..read]));
    }
    Ok(builder.finish().1.root)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// `size` bytes of `byte[i] = i % 251` (fixtures/cids/README.md).
    struct Pattern {
        offset: u64,
        size: u64,
    }

    impl Read for Pattern {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = (self.size - self.offset).min(buf.len() as u64) as usize;
            for (i, byte) in buf[..n].iter_mut().enumerate() {
                *byte = ((self.offset + i as u64) % 251) as u8;
            }
            self.offset += n as u64;
            Ok(n)
        }
    }

    fn golden_lines() -> Vec<(String, u64, String, String)> {
        let text = include_str!("../../fixtures/cids/cids.txt");
        text.lines()
            .map(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                (
                    f[0].to_string(),
                    f[1].parse().unwrap(),
                    f[2].to_string(),
                    f[3].to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn golden_cids_match_a_real_node() {
        let lines = golden_lines();
        assert!(lines.len() >= 9, "fixtures/cids/cids.txt lost lines");
        for (name, size, v0, v1) in lines {
            for (version, expected) in [(CidVersion::V0, v0), (CidVersion::V1, v1)] {
                let cid = if name == "hello" {
                    only_hash(&b"hello world\n"[..], version).unwrap()
                } else {
                    only_hash(Pattern { offset: 0, size }, version).unwrap()
                };
                assert_eq!(cid.to_string(), expected, "{name} {version:?}");
            }
        }
    }

    #[test]
    fn slicing_does_not_change_the_dag() {
        let data: Vec<u8> = (0..3 * CHUNK_BYTES as u64 + 17)
            .map(|i| (i % 251) as u8)
            .collect();
        let whole = {
            let mut b = FileBuilder::new(CidVersion::V1);
            let mut blocks = b.push(&data);
            let (rest, summary) = b.finish();
            blocks.extend(rest);
            (blocks, summary)
        };
        for piece in [
            1usize,
            7,
            4096,
            CHUNK_BYTES - 1,
            CHUNK_BYTES,
            CHUNK_BYTES + 1,
        ] {
            let mut b = FileBuilder::new(CidVersion::V1);
            let mut blocks = Vec::new();
            for slice in data.chunks(piece) {
                blocks.extend(b.push(slice));
            }
            let (rest, summary) = b.finish();
            blocks.extend(rest);
            assert_eq!(summary, whole.1, "piece {piece}");
            assert_eq!(blocks, whole.0, "piece {piece}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(16))]
        #[test]
        fn any_slicing_gives_the_same_root(len in 0u64..(3 * CHUNK_BYTES as u64), piece in 1usize..400_000) {
            let mut data = Vec::new();
            Pattern { offset: 0, size: len }.read_to_end(&mut data).unwrap();
            for version in [CidVersion::V0, CidVersion::V1] {
                let mut builder = FileBuilder::new(version);
                for slice in data.chunks(piece) {
                    drop(builder.push(slice));
                }
                let root = builder.finish().1.root;
                proptest::prop_assert_eq!(root, only_hash(&data[..], version).unwrap());
            }
        }
    }

    #[test]
    fn blocks_come_children_first_and_sum_to_the_tsize() {
        let data: Vec<u8> = (0..5 * CHUNK_BYTES as u64).map(|i| (i % 7) as u8).collect();
        let mut b = FileBuilder::new(CidVersion::V0);
        let mut blocks = b.push(&data);
        let (rest, summary) = b.finish();
        blocks.extend(rest);
        assert_eq!(blocks.last().unwrap().cid, summary.root);
        assert_eq!(summary.block_count, blocks.len() as u64);
        assert_eq!(
            summary.dag_bytes,
            blocks.iter().map(|b| b.data.len() as u64).sum::<u64>()
        );
        let mut seen = HashSet::new();
        for block in &blocks {
            assert!(block.cid.verifies(&block.data));
            let node = crate::dagpb::decode_node(&block.data).unwrap();
            for link in node.links {
                assert!(seen.contains(&link), "a parent came before its child");
            }
            seen.insert(block.cid);
        }
    }

    #[test]
    fn memory_stays_bounded_while_pushing() {
        let mut b = FileBuilder::new(CidVersion::V1);
        let piece = vec![3u8; 100_000];
        for _ in 0..200 {
            let blocks = b.push(&piece);
            assert!(blocks.len() <= 3);
            assert!(b.chunk.len() < CHUNK_BYTES);
            assert!(b.levels.iter().all(|l| l.len() <= LINKS_MAX));
        }
    }
}
