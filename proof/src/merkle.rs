//! RFC 6962 / RFC 9162 Merkle tree hashing, audit (inclusion) proofs, consistency
//! proofs, and an append-only compact tree, all over SHA-256.
//!
//! Definitions (RFC 6962 §2.1, RFC 9162 §2.1.1):
//!
//! * `MTH({}) = SHA-256("")`
//! * `MTH({d(0)}) = SHA-256(0x00 ‖ d(0))` (the *leaf hash*)
//! * `MTH(D[n]) = SHA-256(0x01 ‖ MTH(D[0:k]) ‖ MTH(D[k:n]))`, where `k` is the largest
//!   power of two strictly less than `n`.
//!
//! Roots are computed bottom-up without recursion; proofs are verified with the bit-walk
//! algorithms of RFC 9162 §2.1.3.2 and §2.1.4.2. Every function is deterministic and
//! panic-free for every input.

use sha2::{Digest, Sha256};

/// A SHA-256 digest: a leaf hash, an interior node hash or a tree root.
pub type Hash = [u8; 32];

/// The length in bytes of a [`Hash`](type@Hash).
pub const HASH_LEN: usize = 32;

/// Domain-separation prefix of a leaf hash (RFC 6962 §2.1).
const LEAF_PREFIX: u8 = 0x00;
/// Domain-separation prefix of an interior node hash (RFC 6962 §2.1).
const NODE_PREFIX: u8 = 0x01;

/// Why a Merkle proof could not be produced or did not verify.
///
/// Any `Err` from a verifier means the proof must not be trusted; the variant only says
/// which check failed first.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    /// The leaf index is not below the tree size (this includes every index into an
    /// empty tree).
    #[error("leaf index {index} is out of range for a tree of size {tree_size}")]
    IndexOutOfRange {
        /// The leaf index that was asked for.
        index: u64,
        /// The size of the tree it was asked for in.
        tree_size: u64,
    },
    /// The proof does not have the number of hashes the RFC prescribes for the given
    /// index and size(s).
    #[error("proof has {got} hashes, expected {expected}")]
    WrongProofLength {
        /// The number of hashes supplied.
        got: usize,
        /// The number of hashes a valid proof has for these parameters.
        expected: usize,
    },
    /// The proof is well-formed but the hashes it leads to differ from the expected
    /// root(s).
    #[error("the proof does not lead to the expected root")]
    RootMismatch,
    /// The pair of tree sizes is not a valid consistency range (`0 < old_size <= new_size`
    /// is required).
    #[error("invalid consistency range: old size {old_size}, new size {new_size}")]
    InvalidRange {
        /// The older (smaller) tree size.
        old_size: u64,
        /// The newer (larger) tree size.
        new_size: u64,
    },
}

/// Returns the root of the empty tree, `MTH({}) = SHA-256("")`
/// (`e3b0c442…7852b855`).
#[must_use]
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// Returns the RFC 6962 leaf hash `SHA-256(0x00 ‖ leaf)`.
///
/// The `0x00` prefix guarantees a leaf hash never equals an interior node hash of the
/// same bytes (second-preimage resistance of the tree).
#[must_use]
pub fn leaf_hash(leaf: &[u8]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([LEAF_PREFIX]);
    hasher.update(leaf);
    hasher.finalize().into()
}

/// Returns the RFC 6962 interior node hash `SHA-256(0x01 ‖ left ‖ right)`.
///
/// The result depends on the order of the children.
#[must_use]
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut message = [0u8; 1 + 2 * HASH_LEN];
    message[0] = NODE_PREFIX;
    message[1..=HASH_LEN].copy_from_slice(left);
    message[1 + HASH_LEN..].copy_from_slice(right);
    Sha256::digest(message).into()
}

/// Reduces one level of the tree in place, then the next, until one hash is left, and
/// returns it (or [`empty_root`] for an empty buffer).
///
/// Pairing neighbours left to right and promoting an odd last node unchanged yields
/// exactly RFC 6962's MTH: at every level the left part of each split is a perfect
/// subtree whose size is a power of two, so it is always paired off completely before the
/// ragged right edge.
fn reduce_in_place(level: &mut Vec<Hash>) -> Hash {
    while level.len() > 1 {
        let len = level.len();
        let pairs = len / 2;
        for i in 0..pairs {
            level[i] = node_hash(&level[2 * i], &level[2 * i + 1]);
        }
        if len % 2 == 1 {
            level[pairs] = level[len - 1];
        }
        level.truncate(len.div_ceil(2));
    }
    level.first().copied().unwrap_or_else(empty_root)
}

/// Returns the Merkle tree hash (RFC 6962 `MTH`) of a tree whose leaves have already
/// been hashed: every element must be a leaf hash, i.e. an output of [`leaf_hash`].
///
/// Guarantees: `root_from_leaf_hashes(&[]) == empty_root()`, a single leaf hash is its
/// own root, and the result equals the recursive RFC 6962 definition for every length.
/// Runs in O(n) hashes and one allocation of `ceil(n / 2)` hashes, without recursion.
#[must_use]
pub fn root_from_leaf_hashes(leaf_hashes: &[Hash]) -> Hash {
    match leaf_hashes {
        [] => empty_root(),
        [only] => *only,
        _ => {
            // The first level is built straight from the input; the rest reuse its buffer.
            let pairs = leaf_hashes.chunks_exact(2);
            let odd = pairs.remainder().first().copied();
            let mut level = Vec::with_capacity(leaf_hashes.len().div_ceil(2));
            level.extend(pairs.map(|pair| node_hash(&pair[0], &pair[1])));
            level.extend(odd);
            reduce_in_place(&mut level)
        }
    }
}

/// Returns the Merkle tree hash of a tree whose leaves are the given 32-byte values
/// (for example transaction hashes): `root_from_leaf_hashes` of `leaf_hash(v)` for each
/// value `v`, in order.
///
/// Guarantees: `root_of_hashes(&[]) == empty_root()`; the leaf prefix is applied to every
/// value, so a value can never be confused with an interior node. One allocation of `n`
/// hashes, no recursion.
#[must_use]
pub fn root_of_hashes(values: &[Hash]) -> Hash {
    let mut level: Vec<Hash> = values.iter().map(|v| leaf_hash(v)).collect();
    reduce_in_place(&mut level)
}

/// The largest power of two strictly less than `n`; `n` must be at least 2.
pub(crate) fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (u64::BITS - 1 - (n - 1).leading_zeros())
}

/// RFC 9162 §2.1.3.1 `PATH(index, D[tree_size])`, ordered from the leaf's sibling upward,
/// for any tree that can give the root of a range of its leaves: `mth(start, end)` must
/// return `MTH(D[start:end])` (`start < end <= tree_size`). `index < tree_size`.
///
/// The list-based [`inclusion_proof`] and the chain tree's cached one
/// (`crate::ChainTree`) both walk through here, so there is one transcription of PATH.
/// The walk is at most 64 steps deep: each step halves the range or better.
pub(crate) fn path_by(
    index: u64,
    tree_size: u64,
    mut mth: impl FnMut(u64, u64) -> Hash,
) -> Vec<Hash> {
    debug_assert!(index < tree_size);
    // Walk down from the root: at each split keep the range holding the leaf and record
    // the root of the other one.
    let mut proof = Vec::with_capacity(u64::BITS as usize);
    let (mut start, mut end) = (0, tree_size);
    while end - start > 1 {
        let k = split_point(end - start);
        if index - start < k {
            proof.push(mth(start + k, end));
            end = start + k;
        } else {
            proof.push(mth(start, start + k));
            start += k;
        }
    }
    proof.reverse();
    proof
}

/// RFC 9162 §2.1.4.1 `PROOF(old_size, D[tree_size])` for any tree that can give the root
/// of a range of its leaves, as [`path_by`] takes it. `0 < old_size <= tree_size`; the
/// proof is empty when they are equal.
///
/// The list-based [`consistency_proof`] and the chain tree's cached one both walk through
/// here, so there is one transcription of SUBPROOF.
pub(crate) fn subproof_by(
    old_size: u64,
    tree_size: u64,
    mut mth: impl FnMut(u64, u64) -> Hash,
) -> Vec<Hash> {
    debug_assert!(0 < old_size && old_size <= tree_size);
    // SUBPROOF(m, D[n], b), unrolled: walk down while the old tree is not a complete
    // subtree of the current range, recording the sibling roots (they are appended after
    // the deeper part of the proof, hence the reversal below). The walk is at most 64
    // steps deep.
    let (mut start, mut end) = (0, tree_size);
    let mut m = old_size;
    let mut old_root_is_known = true; // The RFC's `b`.
    let mut siblings = Vec::with_capacity(u64::BITS as usize);
    while m < end - start {
        let k = split_point(end - start);
        if m <= k {
            siblings.push(mth(start + k, end));
            end = start + k;
        } else {
            siblings.push(mth(start, start + k));
            start += k;
            m -= k;
            old_root_is_known = false;
        }
    }
    let mut proof = Vec::with_capacity(siblings.len() + 1);
    if !old_root_is_known {
        proof.push(mth(start, end));
    }
    proof.extend(siblings.into_iter().rev());
    proof
}

/// `MTH(D[start:end])` of a list of leaf hashes, for [`path_by`] and [`subproof_by`].
fn range_root(leaf_hashes: &[Hash]) -> impl FnMut(u64, u64) -> Hash + '_ {
    // The walks only ask for ranges inside the list, so the casts back cannot truncate.
    |start, end| root_from_leaf_hashes(&leaf_hashes[start as usize..end as usize])
}

/// Returns the audit path for leaf `index` (RFC 6962 §2.1.1 `PATH(m, D[n])`), ordered
/// from the leaf's sibling upward to the child of the root.
///
/// The proof has the length [`verify_inclusion`] expects and verifies against
/// `root_from_leaf_hashes(leaf_hashes)`. A one-leaf tree has an empty proof.
///
/// # Errors
/// [`ProofError::IndexOutOfRange`] if `index >= leaf_hashes.len()` (always for an empty
/// tree).
pub fn inclusion_proof(leaf_hashes: &[Hash], index: usize) -> Result<Vec<Hash>, ProofError> {
    if index >= leaf_hashes.len() {
        return Err(ProofError::IndexOutOfRange {
            index: index as u64,
            tree_size: leaf_hashes.len() as u64,
        });
    }
    Ok(path_by(
        index as u64,
        leaf_hashes.len() as u64,
        range_root(leaf_hashes),
    ))
}

/// The number of hashes in a valid inclusion proof for `index < size` (RFC 9162
/// §2.1.3.1): one per level below the point where the paths of `index` and `size - 1`
/// meet, plus one per left sibling on the shared right border above it.
fn inclusion_proof_len(index: u64, size: u64) -> usize {
    let inner = u64::BITS - (index ^ (size - 1)).leading_zeros();
    // `inner` can be 64, and a 64-bit shift by 64 would overflow.
    let border = index.checked_shr(inner).unwrap_or(0).count_ones();
    (inner + border) as usize
}

/// Verifies that `leaf_hash` is the leaf at `index` of a tree of `tree_size` leaves whose
/// root is `root`, given the audit path `proof` (RFC 9162 §2.1.3.2).
///
/// `Ok(())` guarantees (under SHA-256 collision resistance) that hashing the leaf with the
/// proof in the positions dictated by `index` and `tree_size` yields `root`. Runs in
/// O(log n), without recursion or allocation.
///
/// # Errors
/// [`ProofError::IndexOutOfRange`] if `index >= tree_size`, [`ProofError::WrongProofLength`]
/// if `proof` does not have exactly the prescribed length, and [`ProofError::RootMismatch`]
/// if the computed root differs from `root`.
pub fn verify_inclusion(
    leaf_hash: &Hash,
    index: u64,
    tree_size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= tree_size {
        return Err(ProofError::IndexOutOfRange { index, tree_size });
    }
    let expected = inclusion_proof_len(index, tree_size);
    if proof.len() != expected {
        return Err(ProofError::WrongProofLength {
            got: proof.len(),
            expected,
        });
    }
    let mut f_n = index;
    let mut s_n = tree_size - 1;
    let mut r = *leaf_hash;
    for p in proof {
        if s_n == 0 {
            // Unreachable after the length check; kept as the RFC's own guard.
            return Err(ProofError::WrongProofLength {
                got: proof.len(),
                expected,
            });
        }
        if f_n & 1 == 1 || f_n == s_n {
            r = node_hash(p, &r);
            // If LSB(fn) is not set, shift until it is or fn is 0.
            while f_n & 1 == 0 && f_n != 0 {
                f_n >>= 1;
                s_n >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n == 0 && r == *root {
        Ok(())
    } else {
        Err(ProofError::RootMismatch)
    }
}

/// Returns the consistency proof between the tree of the first `old_size` leaves and the
/// tree of all `leaf_hashes` (RFC 6962 §2.1.2 `PROOF(m, D[n])`).
///
/// The proof verifies with [`verify_consistency`] against
/// `root_from_leaf_hashes(&leaf_hashes[..old_size])` and
/// `root_from_leaf_hashes(leaf_hashes)`. It is empty when `old_size == leaf_hashes.len()`.
///
/// # Errors
/// [`ProofError::InvalidRange`] unless `0 < old_size <= leaf_hashes.len()`.
pub fn consistency_proof(leaf_hashes: &[Hash], old_size: usize) -> Result<Vec<Hash>, ProofError> {
    if old_size == 0 || old_size > leaf_hashes.len() {
        return Err(ProofError::InvalidRange {
            old_size: old_size as u64,
            new_size: leaf_hashes.len() as u64,
        });
    }
    Ok(subproof_by(
        old_size as u64,
        leaf_hashes.len() as u64,
        range_root(leaf_hashes),
    ))
}

/// The number of hashes in a valid consistency proof for `0 < old_size < new_size`
/// (RFC 9162 §2.1.4.1).
fn consistency_proof_len(old_size: u64, new_size: u64) -> usize {
    let shift = old_size.trailing_zeros();
    let inner = u64::BITS - ((old_size - 1) ^ (new_size - 1)).leading_zeros();
    // `inner` can be 64, and a 64-bit shift by 64 would overflow.
    let border = (old_size - 1).checked_shr(inner).unwrap_or(0).count_ones();
    // The proof starts with the root of the subtree holding the last old leaf unless that
    // subtree is the whole old tree (old_size a power of two).
    let seed = usize::from(!old_size.is_power_of_two());
    // `shift < inner` whenever old_size < new_size: the low `shift` bits of old_size - 1
    // are all ones, so new_size - 1 must differ from it at a higher bit.
    seed + inner.saturating_sub(shift) as usize + border as usize
}

/// Verifies that the tree of `old_size` leaves with root `old_root` is a prefix of the
/// tree of `new_size` leaves with root `new_root`, given the consistency proof `proof`
/// (RFC 9162 §2.1.4.2).
///
/// `Ok(())` guarantees (under SHA-256 collision resistance) that the proof rebuilds both
/// roots from shared subtree hashes, i.e. the new tree appends to the old one. When
/// `old_size == new_size` the proof must be empty and the roots equal. Runs in O(log n),
/// without recursion or allocation.
///
/// # Errors
/// [`ProofError::InvalidRange`] if `old_size == 0` or `old_size > new_size`,
/// [`ProofError::WrongProofLength`] if `proof` does not have exactly the prescribed
/// length, and [`ProofError::RootMismatch`] if either rebuilt root differs.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if old_size == 0 || old_size > new_size {
        return Err(ProofError::InvalidRange { old_size, new_size });
    }
    if old_size == new_size {
        if !proof.is_empty() {
            return Err(ProofError::WrongProofLength {
                got: proof.len(),
                expected: 0,
            });
        }
        return if old_root == new_root {
            Ok(())
        } else {
            Err(ProofError::RootMismatch)
        };
    }
    let expected = consistency_proof_len(old_size, new_size);
    if proof.len() != expected {
        return Err(ProofError::WrongProofLength {
            got: proof.len(),
            expected,
        });
    }
    // Step 2: if old_size is a power of two the old root itself is the first path element.
    let (seed, rest) = if old_size.is_power_of_two() {
        (*old_root, proof)
    } else {
        match proof.split_first() {
            Some((first, rest)) => (*first, rest),
            // Step 1: an empty path never verifies (unreachable after the length check).
            None => return Err(ProofError::WrongProofLength { got: 0, expected }),
        }
    };
    let mut f_n = old_size - 1;
    let mut s_n = new_size - 1;
    while f_n & 1 == 1 {
        f_n >>= 1;
        s_n >>= 1;
    }
    let mut f_r = seed;
    let mut s_r = seed;
    for c in rest {
        if s_n == 0 {
            // Unreachable after the length check; kept as the RFC's own guard.
            return Err(ProofError::WrongProofLength {
                got: proof.len(),
                expected,
            });
        }
        if f_n & 1 == 1 || f_n == s_n {
            f_r = node_hash(c, &f_r);
            s_r = node_hash(c, &s_r);
            // If LSB(fn) is not set, shift until it is or fn is 0.
            while f_n & 1 == 0 && f_n != 0 {
                f_n >>= 1;
                s_n >>= 1;
            }
        } else {
            s_r = node_hash(&s_r, c);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n == 0 && f_r == *old_root && s_r == *new_root {
        Ok(())
    } else {
        Err(ProofError::RootMismatch)
    }
}

/// An append-only compact Merkle tree: the number of leaves plus the "frontier", the
/// roots of the perfect subtrees that make up the tree (one per set bit of the size,
/// largest/leftmost first).
///
/// It keeps a running root over a growing log in O(log n) memory. Guarantees:
/// after pushing leaf hashes `h_0 … h_{n-1}` into [`CompactTree::new`],
/// `size() == n` and `root() == root_from_leaf_hashes(&[h_0, …, h_{n-1}])`. Two trees
/// compare equal exactly when they have the same size and frontier, i.e. (up to SHA-256
/// collisions) when the same leaf hashes were pushed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactTree {
    /// Number of leaves pushed so far.
    size: u64,
    /// Roots of the perfect subtrees, leftmost (largest) first;
    /// `frontier.len() == size.count_ones()`.
    frontier: Vec<Hash>,
}

impl CompactTree {
    /// Returns an empty tree (`size() == 0`, `root() == empty_root()`).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Returns the number of leaf hashes pushed so far.
    #[must_use]
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends one leaf hash (an output of [`leaf_hash`]) as the next leaf, in amortised
    /// O(1) and worst-case O(log n) node hashes. (The size is a `u64`; a log cannot
    /// reach 2^64 leaves.)
    pub fn push_leaf_hash(&mut self, leaf_hash: Hash) {
        // Every trailing one bit of the size is a perfect subtree of the same height as
        // the node being carried; merge with it, like a binary increment.
        let mut carry = leaf_hash;
        for _ in 0..self.size.trailing_ones() {
            match self.frontier.pop() {
                Some(left) => carry = node_hash(&left, &carry),
                // Cannot happen: the frontier holds one hash per set bit of the size.
                None => break,
            }
        }
        self.frontier.push(carry);
        self.size += 1;
    }

    /// Returns the root of the tree of all leaf hashes pushed so far; equals
    /// `root_from_leaf_hashes` over them (and [`empty_root`] for an empty tree).
    #[must_use]
    pub fn root(&self) -> Hash {
        let mut subtrees = self.frontier.iter().rev();
        match subtrees.next() {
            None => empty_root(),
            Some(last) => subtrees.fold(*last, |right, left| node_hash(left, &right)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // ---------------------------------------------------------------------------------
    // Independent reference: RFC 6962 §2.1 transcribed literally (recursive, hashing with
    // `Sha256` directly rather than through the functions under test).
    // ---------------------------------------------------------------------------------

    fn ref_leaf(data: &[u8]) -> Hash {
        let mut bytes = vec![0x00];
        bytes.extend_from_slice(data);
        Sha256::digest(&bytes).into()
    }

    fn ref_node(left: &Hash, right: &Hash) -> Hash {
        let mut bytes = vec![0x01];
        bytes.extend_from_slice(left);
        bytes.extend_from_slice(right);
        Sha256::digest(&bytes).into()
    }

    /// The largest power of two smaller than `n` (n > 1), found by counting up.
    fn ref_k(n: usize) -> usize {
        let mut k = 1;
        while k * 2 < n {
            k *= 2;
        }
        k
    }

    /// MTH(D[n]) over leaf hashes.
    fn ref_mth(d: &[Hash]) -> Hash {
        match d.len() {
            0 => Sha256::digest(b"").into(),
            1 => d[0],
            n => {
                let k = ref_k(n);
                ref_node(&ref_mth(&d[..k]), &ref_mth(&d[k..]))
            }
        }
    }

    /// PATH(m, D[n]).
    fn ref_path(m: usize, d: &[Hash]) -> Vec<Hash> {
        let n = d.len();
        if n == 1 {
            return Vec::new();
        }
        let k = ref_k(n);
        let (mut path, sibling) = if m < k {
            (ref_path(m, &d[..k]), ref_mth(&d[k..]))
        } else {
            (ref_path(m - k, &d[k..]), ref_mth(&d[..k]))
        };
        path.push(sibling);
        path
    }

    /// SUBPROOF(m, D[n], b).
    fn ref_subproof(m: usize, d: &[Hash], b: bool) -> Vec<Hash> {
        let n = d.len();
        if m == n {
            return if b { Vec::new() } else { vec![ref_mth(d)] };
        }
        let k = ref_k(n);
        let (mut proof, sibling) = if m <= k {
            (ref_subproof(m, &d[..k], b), ref_mth(&d[k..]))
        } else {
            (ref_subproof(m - k, &d[k..], false), ref_mth(&d[..k]))
        };
        proof.push(sibling);
        proof
    }

    /// PROOF(m, D[n]).
    fn ref_proof(m: usize, d: &[Hash]) -> Vec<Hash> {
        ref_subproof(m, d, true)
    }

    /// The left/right turns (true = right) PATH(m, D[n]) takes from the root down.
    fn ref_path_shape(m: usize, n: usize) -> Vec<bool> {
        if n == 1 {
            return Vec::new();
        }
        let k = ref_k(n);
        let (right, mut rest) = if m < k {
            (false, ref_path_shape(m, k))
        } else {
            (true, ref_path_shape(m - k, n - k))
        };
        rest.insert(0, right);
        rest
    }

    /// The left/right turns (true = right) SUBPROOF(m, D[n], _) takes from the root down.
    fn ref_subproof_shape(m: usize, n: usize) -> Vec<bool> {
        if m == n {
            return Vec::new();
        }
        let k = ref_k(n);
        let (right, mut rest) = if m <= k {
            (false, ref_subproof_shape(m, k))
        } else {
            (true, ref_subproof_shape(m - k, n - k))
        };
        rest.insert(0, right);
        rest
    }

    // ---------------------------------------------------------------------------------
    // Shared checks
    // ---------------------------------------------------------------------------------

    fn h(hex_str: &str) -> Hash {
        let bytes = hex::decode(hex_str).expect("test vector is hex");
        bytes.try_into().expect("test vector is 32 bytes")
    }

    fn flip(hash: &Hash, bit: usize) -> Hash {
        let mut out = *hash;
        out[bit / 8] ^= 1 << (bit % 8);
        out
    }

    fn with_flipped(proof: &[Hash], j: usize, bit: usize) -> Vec<Hash> {
        let mut out = proof.to_vec();
        out[j] = flip(&out[j], bit);
        out
    }

    fn distinct_leaves(n: usize, seed: u64) -> Vec<Hash> {
        (0..n as u64)
            .map(|i| leaf_hash(&(seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15)).to_le_bytes()))
            .collect()
    }

    /// `proof` is the valid proof for leaf `i` of a tree of `n` leaves with root `root`:
    /// it verifies, and every corruption of it is rejected. `all_bits` flips every bit of
    /// every proof hash; otherwise one (varying) bit per proof hash.
    fn check_inclusion(
        leaf: &Hash,
        i: usize,
        n: usize,
        proof: &[Hash],
        root: &Hash,
        all_bits: bool,
    ) {
        let (iu, nu) = (i as u64, n as u64);
        assert_eq!(
            verify_inclusion(leaf, iu, nu, proof, root),
            Ok(()),
            "i={i} n={n}"
        );

        for j in 0..proof.len() {
            let bits: Vec<usize> = if all_bits {
                (0..256).collect()
            } else {
                vec![(i * 31 + j * 97 + n) % 256]
            };
            for bit in bits {
                let bad = with_flipped(proof, j, bit);
                assert_eq!(
                    verify_inclusion(leaf, iu, nu, &bad, root),
                    Err(ProofError::RootMismatch),
                    "i={i} n={n} proof[{j}] bit {bit}"
                );
            }
        }
        assert_eq!(
            verify_inclusion(&flip(leaf, 0), iu, nu, proof, root),
            Err(ProofError::RootMismatch)
        );
        assert_eq!(
            verify_inclusion(leaf, iu, nu, proof, &flip(root, 255)),
            Err(ProofError::RootMismatch)
        );

        // Any other index in range: the path differs, so the proof never verifies.
        let mut other_indices = vec![i + 1, i.wrapping_sub(1), i ^ 2];
        if n <= 16 {
            other_indices.extend(0..n);
        }
        for i2 in other_indices.into_iter().filter(|&x| x < n && x != i) {
            assert!(
                verify_inclusion(leaf, i2 as u64, nu, proof, root).is_err(),
                "proof for {i} of {n} accepted for index {i2}"
            );
        }
        assert_eq!(
            verify_inclusion(leaf, nu, nu, proof, root),
            Err(ProofError::IndexOutOfRange {
                index: nu,
                tree_size: nu
            })
        );
        assert_eq!(
            verify_inclusion(leaf, iu, iu, proof, root),
            Err(ProofError::IndexOutOfRange {
                index: iu,
                tree_size: iu
            })
        );

        // Another tree size: the verifier learns the size only through the shape of the
        // path, so it accepts exactly those sizes for which RFC 6962's PATH takes the same
        // turns (e.g. leaf 0 of 3 and of 4); binding a root to its size is the job of the
        // signed tree head. Every other size must be rejected.
        for n2 in [n + 1, n - 1, 2 * n, n / 2] {
            if n2 <= i || n2 == n {
                continue;
            }
            let same_shape = ref_path_shape(i, n2) == ref_path_shape(i, n);
            assert_eq!(
                verify_inclusion(leaf, iu, n2 as u64, proof, root).is_ok(),
                same_shape,
                "proof for {i} of {n} checked as {i} of {n2}"
            );
        }

        // One hash too few or too many, anywhere.
        let len = proof.len();
        let wrong_len = |p: &[Hash]| ProofError::WrongProofLength {
            got: p.len(),
            expected: len,
        };
        if len > 0 {
            for short in [&proof[..len - 1], &proof[1..]] {
                assert_eq!(
                    verify_inclusion(leaf, iu, nu, short, root),
                    Err(wrong_len(short))
                );
            }
        }
        let mut longer = proof.to_vec();
        longer.push(*root);
        assert_eq!(
            verify_inclusion(leaf, iu, nu, &longer, root),
            Err(wrong_len(&longer))
        );
        longer.rotate_right(1);
        assert_eq!(
            verify_inclusion(leaf, iu, nu, &longer, root),
            Err(wrong_len(&longer))
        );
    }

    /// `proof` is the valid consistency proof from `m` leaves (root `old`) to `n` leaves
    /// (root `new`): it verifies, and every corruption of it is rejected.
    fn check_consistency(
        m: usize,
        n: usize,
        proof: &[Hash],
        old: &Hash,
        new: &Hash,
        all_bits: bool,
    ) {
        let (mu, nu) = (m as u64, n as u64);
        assert_eq!(
            verify_consistency(mu, nu, old, new, proof),
            Ok(()),
            "m={m} n={n}"
        );
        assert_eq!(
            verify_consistency(0, nu, old, new, proof),
            Err(ProofError::InvalidRange {
                old_size: 0,
                new_size: nu
            })
        );
        assert_eq!(
            verify_consistency(nu + 1, nu, old, new, proof),
            Err(ProofError::InvalidRange {
                old_size: nu + 1,
                new_size: nu
            })
        );
        if m == n {
            assert!(proof.is_empty());
            assert_eq!(
                verify_consistency(mu, nu, old, new, &[*old]),
                Err(ProofError::WrongProofLength {
                    got: 1,
                    expected: 0
                })
            );
            assert_eq!(
                verify_consistency(mu, nu, old, &flip(new, 7), proof),
                Err(ProofError::RootMismatch)
            );
            return;
        }

        for j in 0..proof.len() {
            let bits: Vec<usize> = if all_bits {
                (0..256).collect()
            } else {
                vec![(m * 31 + j * 97 + n) % 256]
            };
            for bit in bits {
                let bad = with_flipped(proof, j, bit);
                assert_eq!(
                    verify_consistency(mu, nu, old, new, &bad),
                    Err(ProofError::RootMismatch),
                    "m={m} n={n} proof[{j}] bit {bit}"
                );
            }
        }
        for (o, w) in [(&flip(old, 3), new), (old, &flip(new, 200)), (new, old)] {
            assert_eq!(
                verify_consistency(mu, nu, o, w, proof),
                Err(ProofError::RootMismatch)
            );
        }

        // Another old size never verifies.
        for m2 in [m + 1, m - 1, m ^ 2, 1] {
            if m2 != m && m2 <= n {
                assert!(
                    verify_consistency(m2 as u64, nu, old, new, proof).is_err(),
                    "proof {m}->{n} accepted as {m2}->{n}"
                );
            }
        }
        // Another new size verifies exactly when SUBPROOF takes the same turns (see
        // `check_inclusion` for why this is inherent).
        for n2 in [n + 1, n - 1, 2 * n] {
            if n2 < m || n2 == n {
                continue;
            }
            let same_shape = ref_subproof_shape(m, n2) == ref_subproof_shape(m, n);
            assert_eq!(
                verify_consistency(mu, n2 as u64, old, new, proof).is_ok(),
                same_shape,
                "proof {m}->{n} checked as {m}->{n2}"
            );
        }

        let len = proof.len();
        let wrong_len = |p: &[Hash]| ProofError::WrongProofLength {
            got: p.len(),
            expected: len,
        };
        for short in [&proof[..len - 1], &proof[1..], &[]] {
            assert_eq!(
                verify_consistency(mu, nu, old, new, short),
                Err(wrong_len(short))
            );
        }
        let mut longer = proof.to_vec();
        longer.push(*new);
        assert_eq!(
            verify_consistency(mu, nu, old, new, &longer),
            Err(wrong_len(&longer))
        );
        longer.rotate_right(1);
        assert_eq!(
            verify_consistency(mu, nu, old, new, &longer),
            Err(wrong_len(&longer))
        );
    }

    // ---------------------------------------------------------------------------------
    // Published vectors.
    //
    // Leaves, roots, inclusion and consistency proofs: transparency-dev/merkle,
    // proof/verify_test.go (the RFC 6962 data shared with google/certificate-transparency;
    // that file numbers leaves from 1, the indices below are 0-based).
    // Empty root, empty-leaf and "L123456" leaf hashes: transparency-dev/merkle,
    // rfc6962/rfc6962_test.go.
    // ---------------------------------------------------------------------------------

    const EMPTY_ROOT: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    const LEAVES: [&str; 8] = [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ];

    /// Roots of the trees of the first 1..=8 of `LEAVES`.
    const ROOTS: [&str; 8] = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    /// (leaf index, tree size, audit path).
    const INCLUSION: [(usize, usize, &[&str]); 4] = [
        (
            0,
            8,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            5,
            8,
            &[
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (
            2,
            3,
            &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
        ),
        (
            1,
            5,
            &[
                "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
    ];

    /// (old size, new size, consistency proof).
    const CONSISTENCY: [(usize, usize, &[&str]); 5] = [
        (1, 1, &[]),
        (
            1,
            8,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            6,
            8,
            &[
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (
            2,
            5,
            &[
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
        (
            6,
            7,
            &[
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
    ];

    fn vector_leaf_hashes() -> Vec<Hash> {
        LEAVES
            .iter()
            .map(|l| leaf_hash(&hex::decode(l).expect("test vector is hex")))
            .collect()
    }

    fn vector_root(size: usize) -> Hash {
        h(ROOTS[size - 1])
    }

    #[test]
    fn hash_primitives_match_published_values() {
        assert_eq!(empty_root(), h(EMPTY_ROOT));
        assert_eq!(HASH_LEN, empty_root().len());
        // echo -n 00 | xxd -r -p | sha256sum
        assert_eq!(
            leaf_hash(b""),
            h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d")
        );
        // echo -n 004C313233343536 | xxd -r -p | sha256sum
        assert_eq!(
            leaf_hash(b"L123456"),
            h("395aa064aa4c29f7010acfe3f25db9485bbd4b91897b6ad7ad547639252b4d56")
        );
        // Domain separation: a node is not the leaf hash of its children's concatenation.
        let (a, b) = (leaf_hash(b"Hello"), leaf_hash(b"World"));
        let mut concat = a.to_vec();
        concat.extend_from_slice(&b);
        assert_ne!(node_hash(&a, &b), leaf_hash(&concat));
        assert_ne!(node_hash(&a, &b), node_hash(&b, &a));
        assert_eq!(node_hash(&a, &b), ref_node(&a, &b));
        assert_eq!(leaf_hash(b"L123456"), ref_leaf(b"L123456"));
    }

    #[test]
    fn empty_tree_everywhere_is_sha256_of_nothing() {
        let empty = h(EMPTY_ROOT);
        assert_eq!(root_from_leaf_hashes(&[]), empty);
        assert_eq!(root_of_hashes(&[]), empty);
        assert_eq!(CompactTree::new().root(), empty);
        assert_eq!(CompactTree::new().size(), 0);
        assert_eq!(CompactTree::new(), CompactTree::default());
        assert_eq!(ref_mth(&[]), empty);
    }

    #[test]
    fn published_roots_for_sizes_1_to_8() {
        let leaves = vector_leaf_hashes();
        let mut tree = CompactTree::new();
        for size in 1..=8 {
            let want = vector_root(size);
            assert_eq!(root_from_leaf_hashes(&leaves[..size]), want, "size {size}");
            assert_eq!(ref_mth(&leaves[..size]), want, "reference, size {size}");
            tree.push_leaf_hash(leaves[size - 1]);
            assert_eq!(tree.size(), size as u64);
            assert_eq!(tree.root(), want, "compact tree, size {size}");
        }
    }

    #[test]
    fn published_inclusion_proofs() {
        let leaves = vector_leaf_hashes();
        for (index, size, path) in INCLUSION {
            let want: Vec<Hash> = path.iter().map(|p| h(p)).collect();
            let tree = &leaves[..size];
            assert_eq!(
                inclusion_proof(tree, index),
                Ok(want.clone()),
                "{index} of {size}"
            );
            assert_eq!(ref_path(index, tree), want, "reference, {index} of {size}");
            check_inclusion(&leaves[index], index, size, &want, &vector_root(size), true);
            // The probes transparency-dev applies to these vectors, all of which must fail.
            let root = vector_root(size);
            let (i, n) = (index as u64, size as u64);
            for (i2, n2) in [
                (i.wrapping_sub(1), n),
                (i + 1, n),
                (i ^ 2, n),
                (i, n * 2),
                (i, n / 2),
            ] {
                assert!(verify_inclusion(&leaves[index], i2, n2, &want, &root).is_err());
            }
            for bad_root in [h(EMPTY_ROOT), [0xab; 32]] {
                assert!(verify_inclusion(&leaves[index], i, n, &want, &bad_root).is_err());
            }
        }
        // A one-leaf tree: the leaf hash is the root and the proof is empty.
        assert_eq!(inclusion_proof(&leaves[..1], 0), Ok(Vec::new()));
        assert_eq!(verify_inclusion(&leaves[0], 0, 1, &[], &leaves[0]), Ok(()));
    }

    #[test]
    fn published_consistency_proofs() {
        let leaves = vector_leaf_hashes();
        for (old, new, path) in CONSISTENCY {
            let want: Vec<Hash> = path.iter().map(|p| h(p)).collect();
            let tree = &leaves[..new];
            assert_eq!(
                consistency_proof(tree, old),
                Ok(want.clone()),
                "{old} -> {new}"
            );
            assert_eq!(ref_proof(old, tree), want, "reference, {old} -> {new}");
            let (r1, r2) = (vector_root(old), vector_root(new));
            check_consistency(old, new, &want, &r1, &r2, true);
            if old < new {
                // The probes transparency-dev applies to these vectors, all of which fail.
                let (m, n) = (old as u64, new as u64);
                for (m2, n2) in [(m - 1, n), (m + 1, n), (m ^ 2, n), (m, n * 2), (m, n / 2)] {
                    assert!(verify_consistency(m2, n2, &r1, &r2, &want).is_err());
                }
            }
        }
    }

    #[test]
    fn degenerate_ranges_and_sizes() {
        let some = [0xab; 32];
        let other = [0xcd; 32];
        let leaves = distinct_leaves(5, 1);
        // Generators.
        assert_eq!(
            inclusion_proof(&[], 0),
            Err(ProofError::IndexOutOfRange {
                index: 0,
                tree_size: 0
            })
        );
        assert_eq!(
            inclusion_proof(&leaves, 5),
            Err(ProofError::IndexOutOfRange {
                index: 5,
                tree_size: 5
            })
        );
        assert_eq!(
            consistency_proof(&[], 0),
            Err(ProofError::InvalidRange {
                old_size: 0,
                new_size: 0
            })
        );
        assert_eq!(
            consistency_proof(&leaves, 0),
            Err(ProofError::InvalidRange {
                old_size: 0,
                new_size: 5
            })
        );
        assert_eq!(
            consistency_proof(&leaves, 6),
            Err(ProofError::InvalidRange {
                old_size: 6,
                new_size: 5
            })
        );
        assert_eq!(consistency_proof(&leaves, 5), Ok(Vec::new()));
        // Inclusion verifier (the size/index probes of transparency-dev's TestVerifyInclusion).
        for (index, size) in [(0, 0), (1, 0), (2, 1), (1, 1)] {
            assert_eq!(
                verify_inclusion(&some, index, size, &[], &some),
                Err(ProofError::IndexOutOfRange {
                    index,
                    tree_size: size
                })
            );
        }
        assert_eq!(
            verify_inclusion(&some, 0, 1, &[], &other),
            Err(ProofError::RootMismatch)
        );
        // Consistency verifier (transparency-dev's TestVerifyConsistency, except that an
        // old size of 0 is rejected here rather than accepted).
        for (m, n) in [(0, 0), (0, 1), (1, 0), (2, 1)] {
            assert_eq!(
                verify_consistency(m, n, &some, &some, &[]),
                Err(ProofError::InvalidRange {
                    old_size: m,
                    new_size: n
                })
            );
        }
        assert_eq!(verify_consistency(1, 1, &some, &some, &[]), Ok(()));
        assert_eq!(
            verify_consistency(1, 1, &some, &other, &[]),
            Err(ProofError::RootMismatch)
        );
        assert_eq!(
            verify_consistency(1, 1, &some, &some, &[some]),
            Err(ProofError::WrongProofLength {
                got: 1,
                expected: 0
            })
        );
        assert_eq!(
            verify_consistency(1, 2, &some, &other, &[]),
            Err(ProofError::WrongProofLength {
                got: 0,
                expected: 1
            })
        );
    }

    #[test]
    fn huge_sizes_do_not_panic() {
        let x = [7; 32];
        let top = 1u64 << 63;
        assert_eq!(
            verify_inclusion(&x, 0, top + 1, &[], &x),
            Err(ProofError::WrongProofLength {
                got: 0,
                expected: 64
            })
        );
        assert_eq!(
            verify_inclusion(&x, u64::MAX - 1, u64::MAX, &[], &x),
            Err(ProofError::WrongProofLength {
                got: 0,
                expected: 63
            })
        );
        assert!(verify_inclusion(&x, top, u64::MAX, &[x; 64], &x).is_err());
        for (m, n) in [
            (1, u64::MAX),
            (top, top + 1),
            (u64::MAX - 1, u64::MAX),
            (3, top + 3),
        ] {
            assert!(verify_consistency(m, n, &x, &x, &[]).is_err());
            assert!(verify_consistency(m, n, &x, &x, &[x; 70]).is_err());
        }
        assert_eq!(verify_consistency(u64::MAX, u64::MAX, &x, &x, &[]), Ok(()));
    }

    #[test]
    fn split_point_is_largest_power_of_two_below_n() {
        for n in 2..=5000 {
            assert_eq!(split_point(n as u64), ref_k(n) as u64, "n={n}");
        }
        assert_eq!(split_point(u64::MAX), 1 << (u64::BITS - 1));
    }

    #[test]
    fn error_messages() {
        let cases = [
            (
                ProofError::IndexOutOfRange {
                    index: 3,
                    tree_size: 2,
                },
                "leaf index 3 is out of range for a tree of size 2",
            ),
            (
                ProofError::WrongProofLength {
                    got: 1,
                    expected: 2,
                },
                "proof has 1 hashes, expected 2",
            ),
            (
                ProofError::RootMismatch,
                "the proof does not lead to the expected root",
            ),
            (
                ProofError::InvalidRange {
                    old_size: 4,
                    new_size: 3,
                },
                "invalid consistency range: old size 4, new size 3",
            ),
        ];
        for (err, msg) in cases {
            assert_eq!(err.to_string(), msg);
        }
    }

    // ---------------------------------------------------------------------------------
    // Every tree size 1..=300 against the reference.
    //
    // Proof generation costs O(n) hashes per proof and unoptimised SHA-256 calls cost a
    // few microseconds in a debug build, so proofs for *every* position are checked up to
    // `ALL_POSITIONS_MAX` leaves; above it, each size gets the edge positions, both sides
    // of the top-level split and one that moves with the size.
    // ---------------------------------------------------------------------------------

    const EXHAUSTIVE_MAX: usize = 300;
    /// Up to this size every leaf index and every old size is proven, and each proof is
    /// compared hash-for-hash with the recursive reference.
    const ALL_POSITIONS_MAX: usize = 48;
    /// Up to this size every bit of every proof hash is flipped (above it, one bit per
    /// proof hash, a different one for each proof).
    const ALL_BITS_MAX: usize = 8;

    fn exhaustive_leaves() -> (Vec<Hash>, Vec<Hash>) {
        let leaves = distinct_leaves(EXHAUSTIVE_MAX, 0x6d65_646c_6564_6765);
        let roots = (0..=EXHAUSTIVE_MAX)
            .map(|n| ref_mth(&leaves[..n]))
            .collect();
        (leaves, roots)
    }

    /// The positions in `lo..=hi` to prove for a tree of `n` leaves: all of them for small
    /// trees, else the edges, both sides of the top-level split `k` and one position that
    /// moves with `n`.
    fn positions(n: usize, lo: usize, hi: usize) -> Vec<usize> {
        if n <= ALL_POSITIONS_MAX {
            return (lo..=hi).collect();
        }
        let k = split_point(n as u64) as usize;
        let mut picked = vec![
            lo,
            k - 1,
            k,
            k + 1,
            hi - 1,
            hi,
            lo + (n * n / 7 + 13) % (hi - lo + 1),
        ];
        picked.retain(|p| (lo..=hi).contains(p));
        picked.sort_unstable();
        picked.dedup();
        picked
    }

    #[test]
    fn exhaustive_roots_and_compact_tree() {
        let (leaves, roots) = exhaustive_leaves();
        let values: Vec<Hash> = (0..EXHAUSTIVE_MAX as u32)
            .map(|i| Sha256::digest(i.to_be_bytes()).into())
            .collect();
        let value_leaves: Vec<Hash> = values.iter().map(|v| ref_leaf(v)).collect();
        let mut tree = CompactTree::new();
        assert_eq!(tree.root(), roots[0]);
        for n in 1..=EXHAUSTIVE_MAX {
            assert_eq!(root_from_leaf_hashes(&leaves[..n]), roots[n], "n={n}");
            assert_eq!(
                root_of_hashes(&values[..n]),
                ref_mth(&value_leaves[..n]),
                "n={n}"
            );
            let before = tree.clone();
            tree.push_leaf_hash(leaves[n - 1]);
            assert_eq!(tree.size(), n as u64);
            assert_eq!(tree.root(), roots[n], "compact tree, n={n}");
            assert_ne!(tree, before);
        }
        let mut again = CompactTree::new();
        leaves.iter().for_each(|l| again.push_leaf_hash(*l));
        assert_eq!(again, tree);
    }

    #[test]
    fn exhaustive_inclusion_proofs() {
        let (leaves, roots) = exhaustive_leaves();
        for n in 1..=EXHAUSTIVE_MAX {
            let tree = &leaves[..n];
            for i in positions(n, 0, n - 1) {
                let proof = inclusion_proof(tree, i).expect("index in range");
                if n <= ALL_POSITIONS_MAX {
                    assert_eq!(proof, ref_path(i, tree), "i={i} n={n}");
                }
                check_inclusion(&leaves[i], i, n, &proof, &roots[n], n <= ALL_BITS_MAX);
            }
            assert!(inclusion_proof(tree, n).is_err());
        }
    }

    #[test]
    fn exhaustive_consistency_proofs() {
        let (leaves, roots) = exhaustive_leaves();
        for n in 1..=EXHAUSTIVE_MAX {
            let tree = &leaves[..n];
            for m in positions(n, 1, n) {
                let proof = consistency_proof(tree, m).expect("valid range");
                if n <= ALL_POSITIONS_MAX {
                    assert_eq!(proof, ref_proof(m, tree), "m={m} n={n}");
                }
                check_consistency(m, n, &proof, &roots[m], &roots[n], n <= ALL_BITS_MAX);
            }
        }
    }

    // ---------------------------------------------------------------------------------
    // Random larger trees.
    // ---------------------------------------------------------------------------------

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 8,
            // Never write regression files into the source tree.
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn random_large_trees(
            n in (EXHAUSTIVE_MAX + 1)..=2000,
            seed in any::<u64>(),
            picks in proptest::collection::vec(any::<proptest::sample::Index>(), 6),
        ) {
            let leaves = distinct_leaves(n, seed);
            let root = ref_mth(&leaves);
            prop_assert_eq!(root_from_leaf_hashes(&leaves), root);

            let mut sizes: Vec<usize> = picks.iter().map(|p| p.index(n) + 1).collect();
            sizes.extend([1, 2, n - 1, n]);
            sizes.sort_unstable();

            let mut tree = CompactTree::new();
            for (pushed, leaf) in leaves.iter().enumerate() {
                tree.push_leaf_hash(*leaf);
                if sizes.binary_search(&(pushed + 1)).is_ok() {
                    prop_assert_eq!(tree.root(), root_from_leaf_hashes(&leaves[..=pushed]));
                }
            }
            prop_assert_eq!(tree.size(), n as u64);
            prop_assert_eq!(tree.root(), root);

            for &m in &sizes {
                let i = m - 1;
                let proof = inclusion_proof(&leaves, i).expect("index in range");
                check_inclusion(&leaves[i], i, n, &proof, &root, false);

                let old_root = root_from_leaf_hashes(&leaves[..m]);
                let proof = consistency_proof(&leaves, m).expect("valid range");
                check_consistency(m, n, &proof, &old_root, &root, false);
            }
        }
    }
}
