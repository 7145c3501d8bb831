//! What `verify --views` compares: a digest of every view ([`digest_views`]), and, when
//! two stores' digests differ, the first key where they do ([`first_difference`]).

use std::ops::ControlFlow;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::{View, ViewError, ViewStore};

/// One view's rows and digest.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ViewDigest {
    pub view: &'static str,
    pub rows: u64,
    /// SHA-256 over every (key length u32 LE, key, value length u32 LE, value) in key
    /// order, lowercase hex.
    pub sha256: String,
}

/// Digests every view of `store`.
pub fn digest_views(store: &dyn ViewStore) -> Result<Vec<ViewDigest>, ViewError> {
    View::ALL
        .iter()
        .map(|&view| {
            let mut hasher = Sha256::new();
            let mut rows = 0u64;
            store.for_each(view, b"", None, &mut |k, v| {
                hasher.update((k.len() as u32).to_le_bytes());
                hasher.update(k);
                hasher.update((v.len() as u32).to_le_bytes());
                hasher.update(v);
                rows += 1;
                ControlFlow::Continue(())
            })?;
            Ok(ViewDigest {
                view: view.name(),
                rows,
                sha256: hex::encode(hasher.finalize()),
            })
        })
        .collect()
}

/// Where two stores first differ.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Difference {
    pub view: &'static str,
    /// The first key (hex) present in one store and not the other, or with other bytes.
    pub key: String,
    /// The key as text where it is printable (ids are).
    pub key_text: String,
    pub in_live: bool,
    pub in_rebuilt: bool,
}

/// The first key, in view then key order, where `live` and `rebuilt` differ.
pub fn first_difference(
    live: &dyn ViewStore,
    rebuilt: &dyn ViewStore,
) -> Result<Option<Difference>, ViewError> {
    const PAGE_ROWS: usize = 4096;
    for view in View::ALL {
        let (mut after_a, mut after_b): (Option<Vec<u8>>, Option<Vec<u8>>) = (None, None);
        let (mut a, mut b) = (Vec::new().into_iter(), Vec::new().into_iter());
        let (mut next_a, mut next_b) = (None, None);
        loop {
            if next_a.is_none() {
                if a.len() == 0 {
                    a = live
                        .scan(view, b"", after_a.as_deref(), PAGE_ROWS)?
                        .into_iter();
                }
                next_a = a.next();
                if let Some((k, _)) = &next_a {
                    after_a = Some(k.clone());
                }
            }
            if next_b.is_none() {
                if b.len() == 0 {
                    b = rebuilt
                        .scan(view, b"", after_b.as_deref(), PAGE_ROWS)?
                        .into_iter();
                }
                next_b = b.next();
                if let Some((k, _)) = &next_b {
                    after_b = Some(k.clone());
                }
            }
            let diff = |key: &[u8], in_live, in_rebuilt| Difference {
                view: view.name(),
                key: hex::encode(key),
                key_text: String::from_utf8_lossy(key).into_owned(),
                in_live,
                in_rebuilt,
            };
            match (&next_a, &next_b) {
                (None, None) => break,
                (Some((k, _)), None) => return Ok(Some(diff(k, true, false))),
                (None, Some((k, _))) => return Ok(Some(diff(k, false, true))),
                (Some((ka, va)), Some((kb, vb))) => {
                    if ka < kb {
                        return Ok(Some(diff(ka, true, false)));
                    }
                    if kb < ka {
                        return Ok(Some(diff(kb, false, true)));
                    }
                    if va != vb {
                        return Ok(Some(diff(ka, true, true)));
                    }
                    next_a = None;
                    next_b = None;
                }
            }
        }
    }
    Ok(None)
}
