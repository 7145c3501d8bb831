//! What the fuzz targets and the corpus writer share.

/// The seed of the checkpoint key the corpus signs its proof documents with, and the
/// `proof_document` target verifies them against.
pub const PROOF_KEY_SEED: [u8; 32] = [7; 32];
