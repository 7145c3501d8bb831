//! The search index's store: a RocksDB of its own at `<data_dir>/search`.
//!
//! | column family | key | value |
//! |---|---|---|
//! | `postings` | term ‖ desc(created_at ms) ‖ record id | [`Posting`]: patient, hospital, type |
//! | `forward` | record id ‖ 0x00 ‖ term | where the word is: 1 metadata, 2 a reason, 3 both |
//! | `docs` | record id | [`Doc`]: created_at, the version indexed, whether erased, the ids |
//! | `df` | term | how many records hold it (u64 LE) |
//! | `meta` | `height` | the ledger height indexed (u64 LE); `layout` (u32 LE) |
//!
//! A term's postings are its records newest first, so a query reads the rarest term's
//! postings in order, from a date range's end or a cursor, and checks the other terms
//! in `forward`. The forward rows also let a record's terms be removed when it is amended
//! or erased without opening its old text (after an erasure nothing can open it).
//!
//! Everything an indexer pass changes and the height it reached are one write batch
//! (through the WAL, not synced): after a crash the index is at some earlier pass's
//! height, and the indexer repeats from there (each step is idempotent).

use std::collections::BTreeMap;
use std::path::Path;

use rocksdb::{BlockBasedOptions, ColumnFamilyDescriptor, Options, WriteBatch, DB};

use super::terms::{Term, TERM_BYTES};

/// The index's layout; another one found on disk is dropped and indexed again.
pub const LAYOUT: u32 = 1;

const CF_POSTINGS: &str = "postings";
const CF_FORWARD: &str = "forward";
const CF_DOCS: &str = "docs";
const CF_DF: &str = "df";
const CF_META: &str = "meta";
const CFS: [&str; 5] = [CF_POSTINGS, CF_FORWARD, CF_DOCS, CF_DF, CF_META];
const KEY_HEIGHT: &[u8] = b"height";
const KEY_LAYOUT: &[u8] = b"layout";
/// The block cache the index's reads share.
const BLOCK_CACHE_BYTES: usize = 64 << 20;

/// Where a word of a record was found (`forward`'s value bits).
pub const IN_METADATA: u8 = 1;
pub const IN_REASON: u8 = 2;

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

    fn decode(mut bytes: &[u8]) -> Result<Posting, IndexError> {
        let p = Posting {
            patient_id: take_text(&mut bytes)?,
            hospital_id: take_text(&mut bytes)?,
            record_type: take_text(&mut bytes)?,
        };
        if !bytes.is_empty() {
            return Err(IndexError::Corrupt("a posting"));
        }
        Ok(p)
    }
}

impl Doc {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(13 + 32);
        out.extend_from_slice(&self.created_ms.to_le_bytes());
        out.extend_from_slice(&self.version.to_le_bytes());
        out.push(u8::from(self.erased));
        out.extend_from_slice(&self.ids.encode());
        out
    }

    fn decode(bytes: &[u8]) -> Result<Doc, IndexError> {
        if bytes.len() < 13 || bytes[12] > 1 {
            return Err(IndexError::Corrupt("a doc"));
        }
        Ok(Doc {
            created_ms: i64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")),
            version: u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes")),
            erased: bytes[12] == 1,
            ids: Posting::decode(&bytes[13..])?,
        })
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

fn forward_prefix(record_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(record_id.len() + 1 + TERM_BYTES);
    key.extend_from_slice(record_id.as_bytes());
    key.push(0);
    key
}

fn forward_key(record_id: &str, term: &Term) -> Vec<u8> {
    let mut key = forward_prefix(record_id);
    key.extend_from_slice(term);
    key
}

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
        let (postings, forward) = (store.cf(CF_POSTINGS), store.cf(CF_FORWARD));
        // A record's created time and ids never change; its postings move only if the
        // doc said otherwise (a damaged earlier pass): remove the old ones then.
        let moved = old_doc.is_some_and(|d| d.created_ms != doc.created_ms || d.ids != doc.ids);
        for (term, _) in old.iter().filter(|(t, _)| moved || !new.contains_key(*t)) {
            let created = old_doc.map_or(doc.created_ms, |d| d.created_ms);
            self.batch
                .delete_cf(postings, posting_key(term, created, record_id));
            if !new.contains_key(term) {
                self.batch.delete_cf(forward, forward_key(record_id, term));
                *self.df.entry(*term).or_default() -= 1;
            }
        }
        let value = doc.ids.encode();
        for (term, found) in new {
            match old.get(term) {
                Some(was) if was == found && !moved => continue,
                Some(_) => {}
                None => *self.df.entry(*term).or_default() += 1,
            }
            self.batch.put_cf(
                postings,
                posting_key(term, doc.created_ms, record_id),
                &value,
            );
            self.batch
                .put_cf(forward, forward_key(record_id, term), [*found]);
        }
        self.batch
            .put_cf(store.cf(CF_DOCS), record_id.as_bytes(), doc.encode());
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
            let mut table = BlockBasedOptions::default();
            table.set_block_cache(&cache);
            if name != CF_POSTINGS {
                // Point lookups: a record's other terms, a doc, a term's count.
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

    /// The ledger height indexed.
    pub fn height(&self) -> Result<u64, IndexError> {
        self.db
            .get_cf(self.cf(CF_META), KEY_HEIGHT)?
            .map(|v| v.as_slice().try_into().map(u64::from_le_bytes))
            .transpose()
            .map_err(|_| IndexError::Corrupt("the height"))
            .map(Option::unwrap_or_default)
    }

    /// What the index knows of `record_id`.
    pub fn doc(&self, record_id: &str) -> Result<Option<Doc>, IndexError> {
        self.db
            .get_cf(self.cf(CF_DOCS), record_id.as_bytes())?
            .map(|v| Doc::decode(&v))
            .transpose()
    }

    /// `record_id`'s terms, with where each was found.
    pub fn terms_of(&self, record_id: &str) -> Result<BTreeMap<Term, u8>, IndexError> {
        let prefix = forward_prefix(record_id);
        let mut out = BTreeMap::new();
        let iter = self.db.iterator_cf(
            self.cf(CF_FORWARD),
            rocksdb::IteratorMode::From(&prefix, rocksdb::Direction::Forward),
        );
        for row in iter {
            let (key, value) = row?;
            if !key.starts_with(&prefix) {
                break;
            }
            let term: Term = key[prefix.len()..]
                .try_into()
                .map_err(|_| IndexError::Corrupt("a forward key"))?;
            out.insert(term, value.first().copied().unwrap_or(0));
        }
        Ok(out)
    }

    /// Whether `record_id` holds `term`.
    pub fn has_term(&self, record_id: &str, term: &Term) -> Result<bool, IndexError> {
        Ok(self
            .db
            .get_pinned_cf(self.cf(CF_FORWARD), forward_key(record_id, term))?
            .is_some())
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

    /// Calls `each` with `term`'s postings newest first from `start`, down to `oldest_ms`
    /// (inclusive), until it returns false; the number of rows read.
    pub fn scan(
        &self,
        term: &Term,
        start: &Start,
        oldest_ms: Option<i64>,
        mut each: impl FnMut(i64, &str, Posting) -> Result<bool, IndexError>,
    ) -> Result<u64, IndexError> {
        let from = match start {
            Start::AtOrBefore(ms) => {
                let mut key = term.to_vec();
                key.extend_from_slice(&desc(*ms));
                key
            }
            Start::After {
                created_ms,
                record_id,
            } => {
                let mut key = posting_key(term, *created_ms, record_id);
                key.push(0); // the next key after it
                key
            }
        };
        let mut read = 0;
        let iter = self.db.iterator_cf(
            self.cf(CF_POSTINGS),
            rocksdb::IteratorMode::From(&from, rocksdb::Direction::Forward),
        );
        for row in iter {
            let (key, value) = row?;
            if key.len() < TERM_BYTES + 8 || key[..TERM_BYTES] != term[..] {
                break;
            }
            read += 1;
            let created_ms = undesc(key[TERM_BYTES..TERM_BYTES + 8].try_into().expect("8 bytes"));
            if oldest_ms.is_some_and(|oldest| created_ms < oldest) {
                break;
            }
            let record_id = std::str::from_utf8(&key[TERM_BYTES + 8..])
                .map_err(|_| IndexError::Corrupt("a posting's record id"))?;
            if !each(created_ms, record_id, Posting::decode(&value)?)? {
                break;
            }
        }
        Ok(read)
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

    /// RocksDB's memory (block cache, memtables, table readers), bytes.
    pub fn memory(&self) -> u64 {
        [
            "rocksdb.cur-size-all-mem-tables",
            "rocksdb.estimate-table-readers-mem",
        ]
        .iter()
        .filter_map(|p| self.db.property_int_value(*p).ok().flatten())
        .sum()
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
            .scan(&a, &Start::AtOrBefore(i64::MAX), None, |t, r, _| {
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
            .scan(&a, &start, Some(5), |_, r, _| {
                after.push(r.to_owned());
                Ok(true)
            })
            .unwrap();
        assert_eq!(after, ["r-1"]);

        // r-3 loses `a` and keeps `b`: a's count and postings follow.
        let old = store.terms_of("r-3").unwrap();
        let doc = store.doc("r-3").unwrap().unwrap();
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
        assert!(!store.has_term("r-3", &a).unwrap());
        assert!(store.has_term("r-3", &b).unwrap());
        assert_eq!(store.doc("r-3").unwrap().unwrap().version, 2);
        drop(store);
        let store = SearchStore::open(dir.path()).unwrap();
        assert_eq!(store.height().unwrap(), 8);
    }
}
