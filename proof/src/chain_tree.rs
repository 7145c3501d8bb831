//! The chain tree: the RFC 6962 Merkle tree over block header hashes that checkpoints
//! sign, kept so a server can prove against any earlier size without walking the chain.
//!
//! Leaf `n` is the leaf hash of block `n`'s 32-byte header hash (genesis is leaf 0), so
//! after `h` blocks the tree has `h` leaves (docs/PROOFS.md). [`ChainTree`] keeps every
//! aligned perfect subtree hash (`levels[k][i]` is the root of leaves
//! `i·2^k .. (i+1)·2^k`): 2n hashes in all, 64 MiB for a million blocks. With them the
//! root of any earlier size, an inclusion proof and a consistency proof each take
//! O(log² n) hashes of work, where the list-based [`crate::merkle::inclusion_proof`] and
//! [`crate::merkle::consistency_proof`] rehash every leaf.
//!
//! The proofs are the same walks as the list-based ones (`merkle::path_by` and
//! `merkle::subproof_by`, RFC 9162 PATH and SUBPROOF), given this tree's subtree roots:
//! every range they visit splits at the largest power of two below its length, so the
//! left part is always an aligned perfect subtree found in `levels`.

use crate::error::ChainTreeError;
use crate::merkle::{empty_root, leaf_hash, node_hash, path_by, split_point, subproof_by, Hash};

/// The tree over every committed block's header hash, growing one block at a time.
///
/// Guarantees: after pushing header hashes `h_0 … h_{n-1}`, `size() == n` and, for every
/// `s <= n`, `root(s)`, `inclusion_proof(i, s)` and `consistency_proof(m, s)` equal what
/// [`crate::merkle`]'s list-based functions give for the leaf hashes of `h_0 … h_{s-1}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainTree {
    /// `levels[0]` holds the leaf hashes; `levels[k]` the roots of the complete aligned
    /// subtrees of 2^k leaves. Never empty, so `levels[0]` always exists.
    levels: Vec<Vec<Hash>>,
}

impl Default for ChainTree {
    fn default() -> Self {
        ChainTree::new()
    }
}

impl ChainTree {
    /// An empty tree (`size() == 0`, `root(0) == empty_root()`).
    #[must_use]
    pub fn new() -> ChainTree {
        ChainTree {
            levels: vec![Vec::new()],
        }
    }

    /// The number of leaves (blocks).
    #[must_use]
    pub fn size(&self) -> u64 {
        self.levels[0].len() as u64
    }

    /// Appends the header hash of the next block (its leaf is `leaf_hash(header_hash)`),
    /// in amortised O(1) and worst-case O(log n) node hashes.
    pub fn push(&mut self, header_hash: &Hash) {
        self.levels[0].push(leaf_hash(header_hash));
        // Like a binary increment: every level that now has an even count completes a
        // perfect subtree one level up.
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
        let k = split_point(n);
        node_hash(
            &self.subtree(start, start + k),
            &self.subtree(start + k, end),
        )
    }

    /// The root of the first `tree_size` leaves ([`empty_root`] for 0).
    ///
    /// # Errors
    /// [`ChainTreeError::SizeTooLarge`] if `tree_size > size()`.
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
    /// bottom-up (RFC 9162 PATH); it verifies with [`crate::merkle::verify_inclusion`]
    /// against `root(tree_size)`.
    ///
    /// # Errors
    /// [`ChainTreeError::SizeTooLarge`] or [`ChainTreeError::IndexOutOfRange`].
    pub fn inclusion_proof(&self, index: u64, tree_size: u64) -> Result<Vec<Hash>, ChainTreeError> {
        self.check_size(tree_size)?;
        if index >= tree_size {
            return Err(ChainTreeError::IndexOutOfRange { index, tree_size });
        }
        Ok(path_by(index, tree_size, |start, end| {
            self.subtree(start, end)
        }))
    }

    /// The consistency proof from the tree of `from` leaves to the tree of `to` leaves
    /// (RFC 9162 PROOF; empty when `from == to`); it verifies with
    /// [`crate::merkle::verify_consistency`] against `root(from)` and `root(to)`.
    ///
    /// # Errors
    /// [`ChainTreeError::SizeTooLarge`] or [`ChainTreeError::InvalidRange`].
    pub fn consistency_proof(&self, from: u64, to: u64) -> Result<Vec<Hash>, ChainTreeError> {
        self.check_size(to)?;
        if from == 0 || from > to {
            return Err(ChainTreeError::InvalidRange { from, to });
        }
        Ok(subproof_by(from, to, |start, end| self.subtree(start, end)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::{
        consistency_proof, inclusion_proof, root_from_leaf_hashes, verify_consistency,
        verify_inclusion,
    };
    use sha2::{Digest, Sha256};

    fn header_hash(n: u64) -> Hash {
        Sha256::digest(n.to_le_bytes()).into()
    }

    /// Every root, inclusion proof and consistency proof equals the one computed from
    /// the full leaf list by the list-based functions, for every size up to 70.
    #[test]
    fn proofs_equal_the_full_list_computation() {
        let mut tree = ChainTree::new();
        let mut leaves = Vec::new();
        assert_eq!(tree.root(0).unwrap(), empty_root());
        assert_eq!(ChainTree::default(), tree);
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
        assert_eq!(
            tree.inclusion_proof(5, 5),
            Err(ChainTreeError::IndexOutOfRange {
                index: 5,
                tree_size: 5
            })
        );
        assert_eq!(
            tree.inclusion_proof(0, 6),
            Err(ChainTreeError::SizeTooLarge {
                tree_size: 6,
                size: 5
            })
        );
        assert_eq!(
            tree.root(6),
            Err(ChainTreeError::SizeTooLarge {
                tree_size: 6,
                size: 5
            })
        );
        assert_eq!(
            tree.consistency_proof(0, 3),
            Err(ChainTreeError::InvalidRange { from: 0, to: 3 })
        );
        assert_eq!(
            tree.consistency_proof(4, 3),
            Err(ChainTreeError::InvalidRange { from: 4, to: 3 })
        );
        assert_eq!(
            tree.consistency_proof(1, 6),
            Err(ChainTreeError::SizeTooLarge {
                tree_size: 6,
                size: 5
            })
        );
    }

    /// The messages reach the explorer's `invalid_range` answers as they are.
    #[test]
    fn error_messages() {
        let cases = [
            (
                ChainTreeError::IndexOutOfRange {
                    index: 5,
                    tree_size: 5,
                },
                "leaf 5 is not below tree size 5",
            ),
            (
                ChainTreeError::SizeTooLarge {
                    tree_size: 6,
                    size: 5,
                },
                "tree size 6 is above the current size 5",
            ),
            (
                ChainTreeError::InvalidRange { from: 4, to: 3 },
                "invalid consistency range 4..3: need 1 <= from <= to",
            ),
        ];
        for (err, msg) in cases {
            assert_eq!(err.to_string(), msg);
        }
    }
}
