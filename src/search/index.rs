//! The search index's store: a RocksDB of its own at `<data_dir>/search`.
//!
//! | column family | key | value |
//! |---|---|---|
//! | `postings` | term ‖ desc(created_at ms) ‖ record id | (empty) |
//! | `docs` | record id | [`Doc`]: created_at, the version indexed, whether erased, the ids; then its terms, each with where it is from (bits: 1 metadata, 2 a reason, 4 the record's patient or hospital) |
//! | `df` | term | how many records hold it (u64 LE) |
//! | `meta` | `height` | the ledger height indexed (u64 LE); `layout` (u32 LE); `key`, the term of no word, which tells the key the terms are under |
//!
//! A term's postings are its records newest first, so a query walks the rarest term's
//! postings in order, from a date range's end or a cursor, and seeks the other terms'
//! to the same position (a leapfrog join). A record's doc lists its terms, so they are
//! removed when it is amended or erased without opening its old text (after an erasure
//! nothing can open it). Postings carry no value: a hit's ids are read from its doc.
//!
//! Everything an indexer pass changes and the height it reached are one write batch
//! (through the WAL, not synced): after a crash the index is at some earlier pass's
//! height, and the indexer repeats from there (each step is idempotent).

use std::collections::BTreeMap;
use std::path::Path;

use rocksdb::{ColumnFamilyDescriptor, Options, WriteBatch, DB};

use super::terms::{Term, TERM_BYTES};

/// The index's layout; another one found on disk is dropped and indexed again.
pub const LAYOUT: u32 = 1;

const CF_POSTINGS: &str = "postings";
const CF_DOCS: &str = "docs";
const CF_DF: &str = "df";
const CF_META: &str = "meta";
const CFS: [&str; 4] = [CF_POSTINGS, CF_DOCS, CF_DF, CF_META];
const KEY_HEIGHT: &[u8] = b"height";
const KEY_LAYOUT: &[u8] = b"layout";
const KEY_FINGERPRINT: &[u8] = b"key";
/// The block cache the index's reads share.
const BLOCK_CACHE_BYTES: usize = 64 << 20;

/// Where a term of a record is from (bits of its entry in the record's doc).
pub const IN_METADATA: u8 = 1;
pub const IN_REASON: u8 = 2;
/// The record's patient or hospital (a term of its own: the filters walk it).
pub const IN_IDS: u8 = 4;

/// Why the search index failed.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("the search index's store failed: {0}")]
    Store(#[from] rocksdb::Error),
    #[error("the search index holds a damaged row ({0})")]
    Corrupt(&'static str),
}

/// What a posting carries, so filters and authorization run inside the scan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Posting {
    pub patient_id: String,
    pub hospital_id: String,
    pub record_type: String,
}

/// What the index knows of a record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Doc {
    /// The record's clinical time, ms since the epoch (its postings' order).
    pub created_ms: i64,
    /// The version whose metadata is indexed (0: none yet).
    pub version: u32,
    /// Erased: nothing of it is indexed, and nothing will be.
    pub erased: bool,
    pub ids: Posting,
}

/// The search index's store.
pub struct SearchStore {
    db: DB,
}

fn put_text(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(&(text.len() as u16).to_le_bytes());
    out.extend_from_slice(text.as_bytes());
}

fn take_text(bytes: &mut &[u8]) -> Result<String, IndexError> {
    let bad = IndexError::Corrupt("a text field");
    if bytes.len() < 2 {
        return Err(bad);
    }
    let len = u16::from_le_bytes([bytes[0], bytes[1]]) as usize;
    if bytes.len() < 2 + len {
        return Err(bad);
    }
    let text = std::str::from_utf8(&bytes[2..2 + len])
        .map_err(|_| bad)?
        .to_owned();
    *bytes = &bytes[2 + len..];
    Ok(text)
}

impl Posting {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            6 + self.patient_id.len() + self.hospital_id.len() + self.record_type.len(),
        );
        put_text(&mut out, &self.patient_id);
        put_text(&mut out, &self.hospital_id);
        put_text(&mut out, &self.record_type);
        out
    }
}

impl Doc {
    /// The doc row: the doc, then `terms` (count u16 LE, each term and its bits).
    fn encode(&self, terms: &BTreeMap<Term, u8>) -> Vec<u8> {
        let mut out = Vec::with_capacity(13 + 32 + 2 + terms.len() * (TERM_BYTES + 1));
        out.extend_from_slice(&self.created_ms.to_le_bytes());
        out.extend_from_slice(&self.version.to_le_bytes());
        out.push(u8::from(self.erased));
        out.extend_from_slice(&self.ids.encode());
        out.extend_from_slice(&(terms.len() as u16).to_le_bytes());
        for (term, found) in terms {
            out.extend_from_slice(term);
            out.push(*found);
        }
        out
    }

    fn decode(bytes: &[u8]) -> Result<(Doc, Terms), IndexError> {
        let bad = IndexError::Corrupt("a doc");
        if bytes.len() < 13 || bytes[12] > 1 {
            return Err(bad);
        }
        let mut rest = &bytes[13..];
        let ids = Posting {
            patient_id: take_text(&mut rest)?,
            hospital_id: take_text(&mut rest)?,
            record_type: take_text(&mut rest)?,
        };
        let doc = Doc {
            created_ms: i64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")),
            version: u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes")),
            erased: bytes[12] == 1,
            ids,
        };
        if rest.len() < 2 {
            return Err(bad);
        }
        let count = u16::from_le_bytes([rest[0], rest[1]]) as usize;
        let rest = &rest[2..];
        if rest.len() != count * (TERM_BYTES + 1) {
            return Err(bad);
        }
        let terms = rest
            .chunks_exact(TERM_BYTES + 1)
            .map(|c| {
                (
                    c[..TERM_BYTES].try_into().expect("a term's bytes"),
                    c[TERM_BYTES],
                )
            })
            .collect();
        Ok((doc, terms))
    }
}

/// Newest first: the complement of the time's bits (with the sign flipped) sorts later
/// times first.
fn desc(ms: i64) -> [u8; 8] {
    (!((ms as u64) ^ (1 << 63))).to_be_bytes()
}

fn undesc(bytes: [u8; 8]) -> i64 {
    ((!u64::from_be_bytes(bytes)) ^ (1 << 63)) as i64
}

fn posting_key(term: &Term, created_ms: i64, record_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(TERM_BYTES + 8 + record_id.len());
    key.extend_from_slice(term);
    key.extend_from_slice(&desc(created_ms));
    key.extend_from_slice(record_id.as_bytes());
    key
}

/// How an [`SearchStore::intersect`] went.
#[derive(Debug, Default)]
pub struct Walk {
    /// Lead positions considered.
    pub read: u64,
    /// The budget ran out: the walk goes on after this position.
    pub stopped_after: Option<(i64, String)>,
}

/// The position (after the term) of a valid iterator on `term`'s postings; `None` past
/// them.
fn suffix_at(
    it: &rocksdb::DBRawIteratorWithThreadMode<'_, DB>,
    term: &Term,
) -> Result<Option<Vec<u8>>, IndexError> {
    if !it.valid() {
        it.status()?;
        return Ok(None);
    }
    let key = it.key().unwrap_or_default();
    if key.len() < TERM_BYTES + 8 || key[..TERM_BYTES] != term[..] {
        return Ok(None);
    }
    Ok(Some(key[TERM_BYTES..].to_vec()))
}

/// A position's clinical time and record id.
fn split_suffix(suffix: &[u8]) -> Result<(i64, &str), IndexError> {
    let created_ms = undesc(
        suffix[..8]
            .try_into()
            .expect("a position holds 8 bytes of time"),
    );
    let record_id = std::str::from_utf8(&suffix[8..])
        .map_err(|_| IndexError::Corrupt("a posting's record id"))?;
    Ok((created_ms, record_id))
}

/// A record's terms, each with where it is from ([`IN_METADATA`], [`IN_REASON`],
/// [`IN_IDS`] bits).
pub type Terms = BTreeMap<Term, u8>;

/// A row of the index: its column family, key and value.
pub type Row = (&'static str, Vec<u8>, Vec<u8>);

/// Where a scan of a term's postings starts: after this hit (a cursor), or at a time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Start {
    /// From the newest posting at or before this time (ms).
    AtOrBefore(i64),
    /// Strictly after this hit in the term's order.
    After { created_ms: i64, record_id: String },
}

/// The changes of one indexer pass, written with its height in one batch.
#[derive(Default)]
pub struct Changes {
    batch: WriteBatch,
    df: BTreeMap<Term, i64>,
}

impl Changes {
    /// `record_id`'s terms go from `old` to `new` (term → where it was found), its doc to
    /// `doc`.
    pub fn record(
        &mut self,
        store: &SearchStore,
        record_id: &str,
        doc: &Doc,
        old_doc: Option<&Doc>,
        old: &BTreeMap<Term, u8>,
        new: &BTreeMap<Term, u8>,
    ) {
        let postings = store.cf(CF_POSTINGS);
        // A record's created time and ids never change; its postings move only if the
        // doc said otherwise (a damaged earlier pass): remove the old ones then.
        let moved = old_doc.is_some_and(|d| d.created_ms != doc.created_ms || d.ids != doc.ids);
        for term in old.keys().filter(|t| moved || !new.contains_key(*t)) {
            let created = old_doc.map_or(doc.created_ms, |d| d.created_ms);
            self.batch
                .delete_cf(postings, posting_key(term, created, record_id));
            if !new.contains_key(term) {
                *self.df.entry(*term).or_default() -= 1;
            }
        }
        for term in new.keys() {
            match old.contains_key(term) {
                true if !moved => continue,
                true => {}
                false => *self.df.entry(*term).or_default() += 1,
            }
            self.batch
                .put_cf(postings, posting_key(term, doc.created_ms, record_id), []);
        }
        self.batch
            .put_cf(store.cf(CF_DOCS), record_id.as_bytes(), doc.encode(new));
    }
}

impl SearchStore {
    /// Opens (or creates) the index at `path`. An index of another layout is dropped
    /// (it is indexed again from the ledger).
    pub fn open(path: &Path) -> Result<SearchStore, IndexError> {
        let store = Self::open_db(path)?;
        let layout = store
            .db
            .get_cf(store.cf(CF_META), KEY_LAYOUT)?
            .map(|v| v.as_slice().try_into().map(u32::from_le_bytes))
            .transpose()
            .map_err(|_| IndexError::Corrupt("the layout"))?;
        match layout {
            Some(LAYOUT) => Ok(store),
            Some(other) => {
                tracing::warn!(
                    layout = other,
                    "the search index has another layout: indexing again"
                );
                drop(store);
                DB::destroy(&Options::default(), path)?;
                Self::create(path)
            }
            None => {
                drop(store);
                DB::destroy(&Options::default(), path)?;
                Self::create(path)
            }
        }
    }

    fn create(path: &Path) -> Result<SearchStore, IndexError> {
        let store = Self::open_db(path)?;
        store
            .db
            .put_cf(store.cf(CF_META), KEY_LAYOUT, LAYOUT.to_le_bytes())?;
        store.db.flush_cf(store.cf(CF_META))?;
        Ok(store)
    }

    fn open_db(path: &Path) -> Result<SearchStore, IndexError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_max_background_jobs(2);
        opts.set_db_write_buffer_size(128 << 20);
        if medledger_views::rocks::direct_io_supported(path).unwrap_or(false) {
            // As the views: a flush or compaction through the page cache leaves dirty
            // data the ledger's fdatasync would wait behind.
            opts.set_use_direct_io_for_flush_and_compaction(true);
        }
        let cache = rocksdb::Cache::new_lru_cache(BLOCK_CACHE_BYTES);
        let cfs = CFS.map(|name| {
            let mut cf = Options::default();
            cf.set_compression_type(rocksdb::DBCompressionType::Lz4);
            let mut table = medledger_storage::ledger::index::cached_table(&cache);
            if name != CF_POSTINGS {
                // Point lookups: a hit's doc, a term's count.
                table.set_bloom_filter(10.0, false);
            }
            cf.set_block_based_table_factory(&table);
            ColumnFamilyDescriptor::new(name, cf)
        });
        Ok(SearchStore {
            db: DB::open_cf_descriptors(&opts, path, cfs)?,
        })
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("every column family is opened")
    }

    /// Bytes RocksDB holds in memory for the index, by what holds them.
    pub fn memory(&self) -> Vec<(&'static str, u64)> {
        medledger_storage::ledger::index::rocksdb_memory(&self.db, CFS)
    }

    /// The ledger height indexed.
    pub fn height(&self) -> Result<u64, IndexError> {
        self.db
            .get_cf(self.cf(CF_META), KEY_HEIGHT)?
            .map(|v| v.as_slice().try_into().map(u64::from_le_bytes))
            .transpose()
            .map_err(|_| IndexError::Corrupt("the height"))
            .map(Option::unwrap_or_default)
    }

    /// The fingerprint of the key the terms are under, if set.
    pub fn key_fingerprint(&self) -> Result<Option<Term>, IndexError> {
        self.db
            .get_cf(self.cf(CF_META), KEY_FINGERPRINT)?
            .map(|v| {
                v.as_slice()
                    .try_into()
                    .map_err(|_| IndexError::Corrupt("the key's fingerprint"))
            })
            .transpose()
    }

    /// Sets it (durably: the terms written after it are under that key).
    pub fn set_key_fingerprint(&self, fingerprint: &Term) -> Result<(), IndexError> {
        if self.key_fingerprint()?.as_ref() == Some(fingerprint) {
            return Ok(());
        }
        self.db
            .put_cf(self.cf(CF_META), KEY_FINGERPRINT, fingerprint)?;
        self.db.flush_cf(self.cf(CF_META))?;
        Ok(())
    }

    /// What the index knows of `record_id`, and its terms with where each is from.
    pub fn doc(&self, record_id: &str) -> Result<Option<(Doc, Terms)>, IndexError> {
        self.db
            .get_pinned_cf(self.cf(CF_DOCS), record_id.as_bytes())?
            .map(|v| Doc::decode(&v))
            .transpose()
    }

    /// How many records hold `term`.
    pub fn df(&self, term: &Term) -> Result<u64, IndexError> {
        Ok(self
            .db
            .get_pinned_cf(self.cf(CF_DF), term)?
            .and_then(|v| v.as_ref().try_into().ok().map(u64::from_le_bytes))
            .unwrap_or(0))
    }

    /// Writes a pass's changes and the height it reached, atomically.
    pub fn commit(&self, mut changes: Changes, height: u64) -> Result<(), IndexError> {
        let df_cf = self.cf(CF_DF);
        for (term, delta) in std::mem::take(&mut changes.df) {
            if delta == 0 {
                continue;
            }
            let now = self.df(&term)? as i64 + delta;
            if now <= 0 {
                changes.batch.delete_cf(df_cf, term);
            } else {
                changes
                    .batch
                    .put_cf(df_cf, term, (now as u64).to_le_bytes());
            }
        }
        changes
            .batch
            .put_cf(self.cf(CF_META), KEY_HEIGHT, height.to_le_bytes());
        self.db.write(changes.batch)?;
        Ok(())
    }

    /// Calls `each` with every posting that all of `terms` share (the records holding
    /// every term), newest first from `start` down to `oldest_ms` (inclusive), until it
    /// returns false. A leapfrog join: the first term's postings are walked (put the
    /// rarest first), each other term's iterator is sought to the lead's position, and
    /// where one lies past it the lead skips there. At most `budget` lead positions are
    /// considered; past that the walk stops with [`Walk::stopped_after`].
    pub fn intersect(
        &self,
        terms: &[Term],
        start: &Start,
        oldest_ms: Option<i64>,
        budget: u64,
        mut each: impl FnMut(i64, &str, Posting) -> Result<bool, IndexError>,
    ) -> Result<Walk, IndexError> {
        let key_of = |term: &Term, suffix: &[u8]| {
            let mut key = Vec::with_capacity(TERM_BYTES + suffix.len());
            key.extend_from_slice(term);
            key.extend_from_slice(suffix);
            key
        };
        let start = match start {
            Start::AtOrBefore(ms) => desc(*ms).to_vec(),
            Start::After {
                created_ms,
                record_id,
            } => {
                let mut suffix = desc(*created_ms).to_vec();
                suffix.extend_from_slice(record_id.as_bytes());
                suffix.push(0); // the next position after it
                suffix
            }
        };
        let cf = self.cf(CF_POSTINGS);
        let mut its: Vec<_> = terms.iter().map(|_| self.db.raw_iterator_cf(cf)).collect();
        let mut positioned = vec![false; terms.len()];
        let Some(lead_term) = terms.first() else {
            return Ok(Walk::default());
        };
        its[0].seek(key_of(lead_term, &start));
        let mut walk = Walk::default();
        let mut last: Option<Vec<u8>> = None;
        'walk: while let Some(lead) = suffix_at(&its[0], lead_term)? {
            let (created_ms, record_id) = split_suffix(&lead)?;
            if oldest_ms.is_some_and(|oldest| created_ms < oldest) {
                break;
            }
            if walk.read >= budget {
                walk.stopped_after = last
                    .as_deref()
                    .map(split_suffix)
                    .transpose()?
                    .map(|(ms, id)| (ms, id.to_owned()));
                break;
            }
            walk.read += 1;
            let mut ahead: Option<Vec<u8>> = None;
            for i in 1..terms.len() {
                let behind =
                    !positioned[i] || suffix_at(&its[i], &terms[i])?.is_some_and(|s| s < lead);
                if behind {
                    its[i].seek(key_of(&terms[i], &lead));
                    positioned[i] = true;
                }
                match suffix_at(&its[i], &terms[i])? {
                    // Nothing of this term at or past the lead: no more hits.
                    None => break 'walk,
                    Some(s) if s == lead => {}
                    Some(s) => {
                        if ahead.as_ref().is_none_or(|a| &s > a) {
                            ahead = Some(s);
                        }
                    }
                }
            }
            match ahead {
                None => {
                    let (doc, _) = self
                        .doc(record_id)?
                        .ok_or(IndexError::Corrupt("a posting of a record without a doc"))?;
                    let go_on = each(created_ms, record_id, doc.ids)?;
                    last = Some(lead);
                    if !go_on {
                        break;
                    }
                    its[0].next();
                }
                Some(skip_to) => {
                    last = Some(lead);
                    its[0].seek(key_of(lead_term, &skip_to));
                }
            }
        }
        Ok(walk)
    }

    /// Every row but the height, by column family: for tests that compare two indexes.
    #[doc(hidden)]
    pub fn rows(&self) -> Result<Vec<Row>, IndexError> {
        let mut out = Vec::new();
        for name in CFS {
            for row in self
                .db
                .iterator_cf(self.cf(name), rocksdb::IteratorMode::Start)
            {
                let (key, value) = row?;
                if name == CF_META && &*key == KEY_HEIGHT {
                    continue;
                }
                out.push((name, key.to_vec(), value.to_vec()));
            }
        }
        Ok(out)
    }

    /// Sets the height indexed back to `height`, as a crash that lost the later passes'
    /// batches but not their rows would (the WAL keeps batches whole; a test of the
    /// replay needs this worse case).
    #[doc(hidden)]
    pub fn rewind(&self, height: u64) -> Result<(), IndexError> {
        self.db
            .put_cf(self.cf(CF_META), KEY_HEIGHT, height.to_le_bytes())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn desc_orders_newest_first_and_inverts() {
        let times = [i64::MIN, -5, 0, 1, 1_700_000_000_000, i64::MAX];
        for pair in times.windows(2) {
            assert!(desc(pair[1]) < desc(pair[0]));
        }
        for t in times {
            assert_eq!(undesc(desc(t)), t);
        }
    }

    fn ids(p: &str) -> Posting {
        Posting {
            patient_id: p.into(),
            hospital_id: "h-1".into(),
            record_type: "lab_result".into(),
        }
    }

    #[test]
    fn postings_come_newest_first_and_changes_keep_counts() {
        let dir = tempfile::tempdir().unwrap();
        let store = SearchStore::open(dir.path()).unwrap();
        let (a, b) = ([1u8; 16], [2u8; 16]);
        let mut changes = Changes::default();
        for (i, (record, created)) in [("r-1", 10), ("r-2", 30), ("r-3", 20)]
            .into_iter()
            .enumerate()
        {
            let doc = Doc {
                created_ms: created,
                version: 1,
                erased: false,
                ids: ids(&format!("p-{i}")),
            };
            let new = if record == "r-3" {
                BTreeMap::from([(a, IN_METADATA), (b, IN_REASON)])
            } else {
                BTreeMap::from([(a, IN_METADATA)])
            };
            changes.record(&store, record, &doc, None, &BTreeMap::new(), &new);
        }
        store.commit(changes, 7).unwrap();
        assert_eq!(store.height().unwrap(), 7);
        assert_eq!((store.df(&a).unwrap(), store.df(&b).unwrap()), (3, 1));
        let mut seen = Vec::new();
        store
            .intersect(&[a], &Start::AtOrBefore(i64::MAX), None, 100, |t, r, _| {
                seen.push((t, r.to_owned()));
                Ok(true)
            })
            .unwrap();
        assert_eq!(
            seen,
            [(30, "r-2".into()), (20, "r-3".into()), (10, "r-1".into())]
        );
        let mut after = Vec::new();
        let start = Start::After {
            created_ms: 20,
            record_id: "r-3".into(),
        };
        store
            .intersect(&[a], &start, Some(5), 100, |_, r, _| {
                after.push(r.to_owned());
                Ok(true)
            })
            .unwrap();
        assert_eq!(after, ["r-1"]);

        // r-3 loses `a` and keeps `b`: a's count and postings follow.
        let (doc, old) = store.doc("r-3").unwrap().unwrap();
        let mut changes = Changes::default();
        let new = BTreeMap::from([(b, IN_REASON)]);
        changes.record(
            &store,
            "r-3",
            &Doc {
                version: 2,
                ..doc.clone()
            },
            Some(&doc),
            &old,
            &new,
        );
        store.commit(changes, 8).unwrap();
        assert_eq!((store.df(&a).unwrap(), store.df(&b).unwrap()), (2, 1));
        let (doc, terms) = store.doc("r-3").unwrap().unwrap();
        assert_eq!((doc.version, terms), (2, new));
        drop(store);
        let store = SearchStore::open(dir.path()).unwrap();
        assert_eq!(store.height().unwrap(), 8);
    }

    #[test]
    fn intersect_finds_exactly_the_records_holding_every_term_across_budgets() {
        let dir = tempfile::tempdir().unwrap();
        let store = SearchStore::open(dir.path()).unwrap();
        let terms: Vec<Term> = (0..5u8).map(|t| [t + 1; 16]).collect();
        // 300 records, each with a pseudo-random subset of the terms (term 0 in half,
        // term 4 in a tenth), times with ties.
        let mut seed = 0x9e37_79b9_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut model: Vec<(i64, String, Vec<usize>)> = Vec::new();
        let mut changes = Changes::default();
        for r in 0..300 {
            let record_id = format!("r-{r}");
            let created_ms = (next() % 100) as i64;
            let held: Vec<usize> = (0..5)
                .filter(|&t| next() % [2, 3, 4, 5, 10][t] == 0)
                .collect();
            let new: BTreeMap<Term, u8> = held.iter().map(|&t| (terms[t], IN_METADATA)).collect();
            let doc = Doc {
                created_ms,
                version: 1,
                erased: false,
                ids: ids("p-1"),
            };
            changes.record(&store, &record_id, &doc, None, &BTreeMap::new(), &new);
            model.push((created_ms, record_id, held));
        }
        store.commit(changes, 1).unwrap();
        // Newest first; ties by record id ascending (the key's order).
        model.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let queries: [&[usize]; 6] = [&[0], &[4], &[0, 1], &[4, 0], &[1, 2, 3], &[0, 1, 2, 3, 4]];
        for query in queries {
            let wanted: Vec<String> = model
                .iter()
                .filter(|(t, _, held)| *t >= 20 && query.iter().all(|q| held.contains(q)))
                .map(|(_, r, _)| r.clone())
                .collect();
            let query_terms: Vec<Term> = query.iter().map(|&q| terms[q]).collect();
            for budget in [1, 3, 1_000] {
                let mut found = Vec::new();
                let mut start = Start::AtOrBefore(i64::MAX);
                loop {
                    let walk = store
                        .intersect(&query_terms, &start, Some(20), budget, |_, r, _| {
                            found.push(r.to_owned());
                            Ok(true)
                        })
                        .unwrap();
                    match walk.stopped_after {
                        Some((created_ms, record_id)) => {
                            start = Start::After {
                                created_ms,
                                record_id,
                            }
                        }
                        None => break,
                    }
                }
                assert_eq!(found, wanted, "query {query:?}, budget {budget}");
            }
        }
    }
}
