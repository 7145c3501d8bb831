//! The RFC 6962 Merkle tree over block header hashes that checkpoints sign.
//!
//! Leaf `n` is the 32-byte header hash of block `n` (genesis is leaf 0), so after `h`
//! blocks the tree has `h` leaves. [`ChainTree`] keeps every aligned perfect subtree
//! hash (`levels[k][i]` is the root of leaves `i·2^k .. (i+1)·2^k`): 2n hashes in all,
//! 64 MiB for a million blocks. With them the root of any earlier size, an inclusion
//! proof and a consistency proof each take O(log² n) hashes of work, never a walk over
//! the chain.
//!
//! The recursion is RFC 9162 §2.1.3.1 (PATH) and §2.1.4.1 (SUBPROOF) literally; every
//! range it visits splits at the largest power of two below its length, so the left part
//! is always an aligned perfect subtree found in `levels`.

use medledger_storage::merkle::{empty_root, leaf_hash, node_hash, Hash};

/// Why a proof over the chain tree cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainTreeError {
    #[error("leaf {index} is not below tree size {tree_size}")]
    IndexOutOfRange { index: u64, tree_size: u64 },
    #[error("tree size {tree_size} is above the current size {size}")]
    SizeTooLarge { tree_size: u64, size: u64 },
    #[error("invalid consistency range {from}..{to}: need 1 <= from <= to")]
    InvalidRange { from: u64, to: u64 },
}

/// The tree over every committed block's header hash.
#[derive(Debug, Default)]
pub struct ChainTree {
    /// `levels[0]` holds the leaf hashes; `levels[k]` the roots of the complete aligned
    /// subtrees of 2^k leaves.
    levels: Vec<Vec<Hash>>,
}

/// The largest power of two strictly below `n` (n ≥ 2).
fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

impl ChainTree {
    pub fn new() -> ChainTree {
        ChainTree {
            levels: vec![Vec::new()],
        }
    }

    /// The number of leaves (blocks).
    pub fn size(&self) -> u64 {
        self.levels[0].len() as u64
    }

    /// Appends the header hash of the next block.
    pub fn push(&mut self, header_hash: &Hash) {
        self.levels[0].push(leaf_hash(header_hash));
        let mut k = 0;
        while self.levels[k].len().is_multiple_of(2) {
            let n = self.levels[k].len();
            let parent = node_hash(&self.levels[k][n - 2], &self.levels[k][n - 1]);
            if self.levels.len() == k + 1 {
                self.levels.push(Vec::new());
            }
            self.levels[k + 1].push(parent);
            k += 1;
        }
    }

    /// MTH of leaves `start..end` (`start < end <= size`).
    fn subtree(&self, start: u64, end: u64) -> Hash {
        debug_assert!(start < end && end <= self.size());
        let n = end - start;
        if n.is_power_of_two() && start.is_multiple_of(n) {
            let k = n.trailing_zeros() as usize;
            return self.levels[k][(start >> k) as usize];
        }
        let k = split(n);
        node_hash(
            &self.subtree(start, start + k),
            &self.subtree(start + k, end),
        )
    }

    /// The root of the first `tree_size` leaves.
    pub fn root(&self, tree_size: u64) -> Result<Hash, ChainTreeError> {
        self.check_size(tree_size)?;
        Ok(if tree_size == 0 {
            empty_root()
        } else {
            self.subtree(0, tree_size)
        })
    }

    fn check_size(&self, tree_size: u64) -> Result<(), ChainTreeError> {
        if tree_size > self.size() {
            return Err(ChainTreeError::SizeTooLarge {
                tree_size,
                size: self.size(),
            });
        }
        Ok(())
    }

    /// The audit path of leaf `index` in the tree of the first `tree_size` leaves,
    /// bottom-up (RFC 9162 PATH).
    pub fn inclusion_proof(&self, index: u64, tree_size: u64) -> Result<Vec<Hash>, ChainTreeError> {
        self.check_size(tree_size)?;
        if index >= tree_size {
            return Err(ChainTreeError::IndexOutOfRange { index, tree_size });
        }
        let mut path = Vec::new();
        self.path(index, 0, tree_size, &mut path);
        Ok(path)
    }

    fn path(&self, index: u64, start: u64, end: u64, out: &mut Vec<Hash>) {
        let n = end - start;
        if n == 1 {
            return;
        }
        let k = split(n);
        if index - start < k {
            self.path(index, start, start + k, out);
            out.push(self.subtree(start + k, end));
        } else {
            self.path(index, start + k, end, out);
            out.push(self.subtree(start, start + k));
        }
    }

    /// The consistency proof from the tree of `from` leaves to the tree of `to` leaves
    /// (RFC 9162 PROOF; empty when `from == to`).
    pub fn consistency_proof(&self, from: u64, to: u64) -> Result<Vec<Hash>, ChainTreeError> {
        self.check_size(to)?;
        if from == 0 || from > to {
            return Err(ChainTreeError::InvalidRange { from, to });
        }
        let mut proof = Vec::new();
        self.subproof(from, 0, to, true, &mut proof);
        Ok(proof)
    }

    fn subproof(&self, m: u64, start: u64, end: u64, whole: bool, out: &mut Vec<Hash>) {
        let n = end - start;
        if m == n {
            if !whole {
                out.push(self.subtree(start, end));
            }
            return;
        }
        let k = split(n);
        if m <= k {
            self.subproof(m, start, start + k, whole, out);
            out.push(self.subtree(start + k, end));
        } else {
            self.subproof(m - k, start + k, end, false, out);
            out.push(self.subtree(start, start + k));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use medledger_storage::merkle::{
        consistency_proof, inclusion_proof, root_from_leaf_hashes, verify_consistency,
        verify_inclusion,
    };
    use sha2::{Digest, Sha256};

    fn header_hash(n: u64) -> Hash {
        Sha256::digest(n.to_le_bytes()).into()
    }

    /// Every root, inclusion proof and consistency proof equals the one computed from
    /// the full leaf list by storage's reference functions, for every size up to 70.
    #[test]
    fn proofs_equal_the_full_list_computation() {
        let mut tree = ChainTree::new();
        let mut leaves = Vec::new();
        assert_eq!(tree.root(0).unwrap(), empty_root());
        for n in 0..70u64 {
            tree.push(&header_hash(n));
            leaves.push(leaf_hash(&header_hash(n)));
            let size = tree.size();
            assert_eq!(size, n + 1);
            for s in 1..=size {
                let prefix = &leaves[..s as usize];
                let root = tree.root(s).unwrap();
                assert_eq!(root, root_from_leaf_hashes(prefix), "root of {s}");
                for i in 0..s {
                    let path = tree.inclusion_proof(i, s).unwrap();
                    assert_eq!(path, inclusion_proof(prefix, i as usize).unwrap());
                    verify_inclusion(&leaves[i as usize], i, s, &path, &root).unwrap();
                }
                if s == size {
                    for m in 1..=s {
                        let proof = tree.consistency_proof(m, s).unwrap();
                        assert_eq!(proof, consistency_proof(prefix, m as usize).unwrap());
                        let old = tree.root(m).unwrap();
                        verify_consistency(m, s, &old, &root, &proof).unwrap();
                    }
                }
            }
        }
    }

    #[test]
    fn out_of_range_requests_are_refused() {
        let mut tree = ChainTree::new();
        for n in 0..5 {
            tree.push(&header_hash(n));
        }
        assert!(matches!(
            tree.inclusion_proof(5, 5),
            Err(ChainTreeError::IndexOutOfRange { .. })
        ));
        assert!(matches!(
            tree.root(6),
            Err(ChainTreeError::SizeTooLarge { .. })
        ));
        assert!(matches!(
            tree.consistency_proof(0, 3),
            Err(ChainTreeError::InvalidRange { .. })
        ));
        assert!(matches!(
            tree.consistency_proof(4, 3),
            Err(ChainTreeError::InvalidRange { .. })
        ));
    }
}
