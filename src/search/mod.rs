//! Full-text search over records' metadata and reasons (docs/SEARCH.md).
//!
//! The index is a view of the ledger like the others, but it needs the records' text,
//! which only this process can open (it is sealed in the ledger and in the views): so it
//! is kept by an indexer of its own that follows the views' projector, block by block,
//! in [`SearchStore`] (`<data_dir>/search`) with its own height. It holds keyed terms,
//! never words ([`terms`]). An erasure removes the record's terms; an amendment replaces
//! its metadata's; reasons add theirs. Deleting the directory (or a layout change) makes
//! the indexer start again from block 0.

pub mod index;
pub mod terms;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use medledger_chaincode::envelope::Subject;
use medledger_chaincode::{Clinical, Envelope, Event};
use medledger_payload::keystore::KeyStore;
use medledger_storage::Ledger;
use medledger_views::projector::Projector;
use medledger_views::query::Views;
use medledger_views::ViewStore;

use crate::clinical::{self, ClinicalError, Opened};
use index::{Changes, IN_IDS, IN_METADATA, IN_REASON};
pub use index::{Doc, IndexError, Posting, SearchStore, Start};
use terms::{Term, TermHasher, WORDS_PER_RECORD_MAX};

/// The directory of the index in the data dir.
pub const SEARCH_DIR: &str = "search";
/// The purpose the search key is derived for from the master key.
const SEARCH_KEY_PURPOSE: &str = "search-index-terms-v1";
/// Blocks one indexer pass reads at most (one write batch).
const BLOCKS_PER_PASS: u64 = 256;
/// How often the indexer looks for new blocks when it has caught up.
const POLL: Duration = Duration::from_millis(10);
/// Words a query may have, at most.
pub const QUERY_WORDS_MAX: usize = 8;
/// Positions of its rarest word a query considers at most; past it the page is short
/// and has a cursor.
pub const SCAN_ROWS_MAX: u64 = 20_000;

/// Why a search failed.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error("the views failed: {0}")]
    Views(String),
    #[error("the ledger failed: {0}")]
    Ledger(String),
    #[error("clinical text: {0}")]
    Clinical(#[from] ClinicalError),
}

/// The search index and its indexer.
pub struct Search {
    store: SearchStore,
    hasher: TermHasher,
    height: tokio::sync::watch::Sender<u64>,
    stop: AtomicBool,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// The last error of the indexer (none: it is well).
    error: Mutex<Option<String>>,
}

/// A query: every word must be in a hit (AND), filters narrow it.
#[derive(Clone, Debug, Default)]
pub struct Query {
    /// Lowercased words (see [`terms::words`]).
    pub words: BTreeSet<String>,
    pub patient_id: Option<String>,
    pub hospital_id: Option<String>,
    pub record_type: Option<String>,
    /// Records created at or after this time (ms).
    pub from_ms: Option<i64>,
    /// Records created at or before this time (ms).
    pub to_ms: Option<i64>,
    /// After this hit (a cursor).
    pub after: Option<(i64, String)>,
    pub limit: usize,
}

/// One record found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hit {
    pub created_ms: i64,
    pub record_id: String,
    pub posting: Posting,
}

/// A page of hits, and where the next one starts.
#[derive(Debug, Default)]
pub struct Found {
    pub hits: Vec<Hit>,
    pub next: Option<(i64, String)>,
    /// Postings read.
    pub scanned: u64,
}

/// A record's terms as one pass changes them.
struct Touched {
    old_doc: Option<Doc>,
    old: BTreeMap<Term, u8>,
    doc: Option<Doc>,
    new: BTreeMap<Term, u8>,
}

impl Search {
    /// Opens the index at `<data_dir>/search` with the search key derived from the master
    /// key. An index ahead of the ledger (the ledger was replaced), or under another
    /// master key (rotated), is dropped: the indexer builds it again.
    pub fn open(data_dir: &Path, keys: &KeyStore, ledger: &Ledger) -> Result<Search, String> {
        Self::open_at(&data_dir.join(SEARCH_DIR), keys, ledger)
    }

    /// [`Search::open`] of an index at `path`.
    fn open_at(path: &Path, keys: &KeyStore, ledger: &Ledger) -> Result<Search, String> {
        let hasher = TermHasher::new(keys.derived_key(SEARCH_KEY_PURPOSE).hmac_sha256());
        // Which key the terms are under, without the key: a term of no word.
        let fingerprint = hasher.term("\0the search key");
        let mut store = match SearchStore::open(path) {
            Ok(store) => store,
            Err(e) => {
                // Derived from the ledger: an index that does not open is built again
                // rather than keep the server from starting.
                tracing::error!(error = %e, "the search index does not open: indexing again");
                rocksdb::DB::destroy(&rocksdb::Options::default(), path)
                    .map_err(|e| e.to_string())?;
                let _ = std::fs::remove_dir_all(path);
                SearchStore::open(path).map_err(|e| e.to_string())?
            }
        };
        let height = store.height().map_err(|e| e.to_string())?;
        let stale = if height > ledger.tip().height {
            Some(
                "the search index is ahead of the ledger (the ledger was replaced): indexing again",
            )
        } else if store
            .key_fingerprint()
            .map_err(|e| e.to_string())?
            .is_some_and(|f| f != fingerprint)
        {
            Some("the search index's terms are under another master key (it was rotated): indexing again")
        } else {
            None
        };
        if let Some(why) = stale {
            tracing::warn!(height, tip = ledger.tip().height, "{why}");
            drop(store);
            rocksdb::DB::destroy(&rocksdb::Options::default(), path).map_err(|e| e.to_string())?;
            store = SearchStore::open(path).map_err(|e| e.to_string())?;
        }
        // The directory's name durable (created or made again above).
        medledger_storage::ledger::fs::create_dir_durably(path).map_err(|e| e.to_string())?;
        store
            .set_key_fingerprint(&fingerprint)
            .map_err(|e| e.to_string())?;
        let height = store.height().map_err(|e| e.to_string())?;
        Ok(Search {
            store,
            hasher,
            height: tokio::sync::watch::channel(height).0,
            stop: AtomicBool::new(false),
            thread: Mutex::new(None),
            error: Mutex::new(None),
        })
    }

    /// Starts the indexer: it follows `projector`, reading `ledger`'s blocks and the
    /// views' records, opening text with `keys`.
    pub fn start(
        self: &Arc<Self>,
        ledger: Arc<Ledger>,
        views: Arc<dyn ViewStore>,
        projector: Arc<Projector>,
        keys: Arc<KeyStore>,
    ) -> std::io::Result<()> {
        let search = self.clone();
        let thread = std::thread::Builder::new()
            .name("medledger-search".into())
            .spawn(move || search.run(&ledger, views.as_ref(), &projector, &keys))?;
        *self.thread.lock().unwrap_or_else(|e| e.into_inner()) = Some(thread);
        Ok(())
    }

    /// Stops the indexer and waits for it (it ends its pass first).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = t.join();
        }
    }

    /// The ledger height indexed.
    pub fn height(&self) -> u64 {
        *self.height.borrow()
    }

    /// Bytes the index's RocksDB holds in memory, by what holds them (`/metrics`).
    pub fn memory(&self) -> Vec<(&'static str, u64)> {
        self.store.memory()
    }

    /// The indexer's last error, if it is failing.
    pub fn error(&self) -> Option<String> {
        self.error.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits until the index holds blocks `0..height`, at most `timeout`; the height
    /// reached otherwise.
    pub async fn reached(&self, height: u64, timeout: Duration) -> Result<(), u64> {
        let mut rx = self.height.subscribe();
        let reached = tokio::time::timeout(timeout, rx.wait_for(|h| *h >= height))
            .await
            .is_ok_and(|r| r.is_ok());
        if reached {
            Ok(())
        } else {
            Err(self.height())
        }
    }

    fn run(&self, ledger: &Ledger, views: &dyn ViewStore, projector: &Projector, keys: &KeyStore) {
        let mut backoff = Duration::ZERO;
        while !self.stop.load(Ordering::Acquire) {
            let done = self.height();
            let applied = projector.applied_height();
            if done >= applied {
                std::thread::sleep(POLL);
                continue;
            }
            match self.step(ledger, views, keys, applied) {
                Ok(reached) => {
                    if backoff > Duration::ZERO {
                        tracing::info!(height = reached, "the search indexer goes on");
                        *self.error.lock().unwrap_or_else(|e| e.into_inner()) = None;
                    }
                    backoff = Duration::ZERO;
                }
                Err(e) => {
                    // Tried again after a pause that doubles (a missing key arrives, a
                    // full disk is freed): logged once per pause, not per block.
                    backoff =
                        (backoff * 2).clamp(Duration::from_millis(250), Duration::from_secs(4));
                    tracing::warn!(error = %e, height = done, retry_in_ms = backoff.as_millis() as u64, "the search indexer failed a pass");
                    *self.error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e.to_string());
                    std::thread::sleep(backoff);
                }
            }
        }
    }

    /// One pass towards `applied` (the views' height), committed: the height reached.
    fn step(
        &self,
        ledger: &Ledger,
        views: &dyn ViewStore,
        keys: &KeyStore,
        applied: u64,
    ) -> Result<u64, SearchError> {
        let done = self.height();
        let to = applied.min(done + BLOCKS_PER_PASS);
        let (changes, reached) = self.pass(ledger, views, keys, done, to)?;
        self.store.commit(changes, reached)?;
        self.height.send_replace(reached);
        Ok(reached)
    }

    /// Indexes blocks `from..to`: the changes and the height they reach.
    fn pass(
        &self,
        ledger: &Ledger,
        views: &dyn ViewStore,
        keys: &KeyStore,
        from: u64,
        to: u64,
    ) -> Result<(Changes, u64), SearchError> {
        let views = Views::new(views);
        let mut touched: HashMap<String, Touched> = HashMap::new();
        let mut reached = from;
        for number in from..to {
            if self.stop.load(Ordering::Acquire) {
                break;
            }
            let Some(block) = ledger
                .block(number)
                .map_err(|e| SearchError::Ledger(e.to_string()))?
            else {
                break;
            };
            for (position, tx) in block.txs.iter().enumerate() {
                // Only a record's events have words; a read's (most blocks under reads)
                // is passed over without decoding it.
                if !matches!(Envelope::subject_of(tx), Some(Subject::Record(_))) {
                    continue;
                }
                let Ok(env) = Envelope::decode(tx) else {
                    continue; // the projector recorded it as undecodable
                };
                self.event(&views, keys, &env, number, position as u32, &mut touched)?;
            }
            reached = number + 1;
        }
        let mut changes = Changes::default();
        for (record_id, t) in &touched {
            if let Some(doc) = &t.doc {
                if t.old_doc.as_ref() != Some(doc) || t.old != t.new {
                    changes.record(
                        &self.store,
                        record_id,
                        doc,
                        t.old_doc.as_ref(),
                        &t.old,
                        &t.new,
                    );
                }
            }
        }
        Ok((changes, reached))
    }

    /// What one event changes of its record's terms.
    fn event(
        &self,
        views: &Views<'_>,
        keys: &KeyStore,
        env: &Envelope,
        block: u64,
        position: u32,
        touched: &mut HashMap<String, Touched>,
    ) -> Result<(), SearchError> {
        let reason: Option<&Clinical> = match &env.event {
            Event::RecordCreated(_) => None,
            Event::RecordAmended(e) => Some(&e.reason),
            Event::RecordStatusChanged(e) => Some(&e.reason),
            Event::PayloadErased(_) => None,
            _ => return Ok(()),
        };
        let Some(record_id) = env.event.record_id() else {
            return Ok(());
        };
        let view_error = |e: medledger_views::ViewError| SearchError::Views(e.to_string());
        if views
            .rejection(block, position)
            .map_err(view_error)?
            .is_some()
        {
            return Ok(());
        }
        if !touched.contains_key(record_id) {
            let (old_doc, old) = match self.store.doc(record_id)? {
                Some((doc, terms)) => (Some(doc), terms),
                None => (None, BTreeMap::new()),
            };
            touched.insert(
                record_id.to_owned(),
                Touched {
                    doc: old_doc.clone(),
                    new: old.clone(),
                    old_doc,
                    old,
                },
            );
        }
        let t = touched.get_mut(record_id).expect("inserted above");
        if t.doc.as_ref().is_some_and(|d| d.erased) {
            return Ok(());
        }
        // The record as the views hold it now (at this block or later).
        let Some(entry) = views.record(record_id).map_err(view_error)? else {
            return Ok(()); // accepted, so the views hold it; nothing to index otherwise
        };
        let s = &entry.state;
        if t.doc.is_none() {
            // The record's patient and hospital as terms of their own, so a search of one
            // patient's (or hospital's) records walks only theirs.
            for term in [
                self.patient_term(&s.patient_id),
                self.hospital_term(&s.hospital_id),
            ] {
                *t.new.entry(term).or_default() |= IN_IDS;
            }
        }
        let doc = t.doc.get_or_insert_with(|| Doc {
            created_ms: s.created_at.0,
            version: 0,
            erased: false,
            ids: Posting {
                patient_id: s.patient_id.clone(),
                hospital_id: s.hospital_id.clone(),
                record_type: s.record_type.clone(),
            },
        });
        if matches!(env.event, Event::PayloadErased(_)) {
            erase(doc, &mut t.new);
            return Ok(());
        }
        if doc.version != s.version {
            match open(keys, record_id, "metadata", &s.metadata)? {
                Some(text) => {
                    let words = terms::metadata_words(&text);
                    replace(
                        &mut t.new,
                        IN_METADATA,
                        words.iter().map(|w| self.hasher.term(w)),
                    );
                    doc.version = s.version;
                }
                None => {
                    erase(doc, &mut t.new);
                    return Ok(());
                }
            }
        }
        if let Some(reason) = reason {
            match open(keys, record_id, "reason", reason)? {
                Some(text) => {
                    for word in terms::words(&text) {
                        if t.new.len() >= WORDS_PER_RECORD_MAX {
                            break;
                        }
                        *t.new.entry(self.hasher.term(&word)).or_default() |= IN_REASON;
                    }
                }
                None => erase(doc, &mut t.new),
            }
        }
        Ok(())
    }

    /// The term of a patient's records (no word has a NUL).
    fn patient_term(&self, patient_id: &str) -> Term {
        self.hasher.term(&format!("\0patient:{patient_id}"))
    }

    /// The term of a hospital's records.
    fn hospital_term(&self, hospital_id: &str) -> Term {
        self.hasher.term(&format!("\0hospital:{hospital_id}"))
    }

    /// A page of `query`'s hits the caller may read (`readable`), newest first.
    pub fn search(
        &self,
        query: &Query,
        mut readable: impl FnMut(&Posting) -> Result<bool, SearchError>,
    ) -> Result<Found, SearchError> {
        let mut terms: Vec<(u64, Term)> = Vec::with_capacity(query.words.len());
        for word in &query.words {
            let term = self.hasher.term(word);
            terms.push((self.store.df(&term)?, term));
        }
        if let Some(p) = &query.patient_id {
            let term = self.patient_term(p);
            terms.push((self.store.df(&term)?, term));
        }
        if let Some(h) = &query.hospital_id {
            let term = self.hospital_term(h);
            terms.push((self.store.df(&term)?, term));
        }
        // The rarest leads the walk.
        terms.sort();
        let Some(&(lead_df, _)) = terms.first() else {
            return Ok(Found::default());
        };
        if lead_df == 0 {
            return Ok(Found::default());
        }
        let terms: Vec<Term> = terms.iter().map(|(_, t)| *t).collect();
        let start = match &query.after {
            Some((created_ms, record_id)) => Start::After {
                created_ms: *created_ms,
                record_id: record_id.clone(),
            },
            None => Start::AtOrBefore(query.to_ms.unwrap_or(i64::MAX)),
        };
        let mut hits = Vec::with_capacity(query.limit);
        let (mut error, mut full) = (None, false);
        let walk = self.store.intersect(
            &terms,
            &start,
            query.from_ms,
            SCAN_ROWS_MAX,
            |created_ms, record_id, posting| {
                let wanted = query
                    .patient_id
                    .as_ref()
                    .is_none_or(|p| *p == posting.patient_id)
                    && query
                        .hospital_id
                        .as_ref()
                        .is_none_or(|h| *h == posting.hospital_id)
                    && query
                        .record_type
                        .as_ref()
                        .is_none_or(|t| *t == posting.record_type);
                if !wanted {
                    return Ok(true);
                }
                match readable(&posting) {
                    Ok(true) => {}
                    Ok(false) => return Ok(true),
                    Err(e) => {
                        error = Some(e);
                        return Ok(false);
                    }
                }
                if hits.len() == query.limit {
                    // One more readable hit exists: the page is full and has a next one.
                    full = true;
                    return Ok(false);
                }
                hits.push(Hit {
                    created_ms,
                    record_id: record_id.to_owned(),
                    posting,
                });
                Ok(true)
            },
        )?;
        if let Some(e) = error {
            return Err(e);
        }
        let scanned = walk.read;
        let next = if full {
            hits.last()
                .map(|h: &Hit| (h.created_ms, h.record_id.clone()))
        } else if walk.stopped_after.is_some() {
            // The budget ran out: the next page goes on where the walk stopped.
            walk.stopped_after
        } else {
            None
        };
        Ok(Found {
            hits,
            next,
            scanned,
        })
    }
}

impl Drop for Search {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Nothing of the record is indexed from now on.
fn erase(doc: &mut Doc, new: &mut BTreeMap<Term, u8>) {
    doc.erased = true;
    // Whatever version was indexed before: an index built after the erasure never saw one.
    doc.version = 0;
    new.clear();
}

/// Sets `bit` on exactly `terms` (keeping other bits), dropping terms left with none.
fn replace(new: &mut BTreeMap<Term, u8>, bit: u8, terms: impl Iterator<Item = Term>) {
    for found in new.values_mut() {
        *found &= !bit;
    }
    for term in terms {
        if new.len() >= WORDS_PER_RECORD_MAX && !new.contains_key(&term) {
            break;
        }
        *new.entry(term).or_default() |= bit;
    }
    new.retain(|_, found| *found != 0);
}

/// The text of a clinical field; `None` once the record is erased. A key this node does
/// not hold yet (a cluster's key keeper fetches it) fails the pass, to be tried again.
fn open(
    keys: &KeyStore,
    record_id: &str,
    field: &'static str,
    value: &Clinical,
) -> Result<Option<String>, SearchError> {
    match clinical::open(keys, record_id, field, value) {
        Ok(Opened::Text(text)) => Ok(Some(text)),
        Ok(Opened::Erased) => Ok(None),
        Err(e @ ClinicalError::KeyMissing { .. }) => Err(SearchError::Clinical(e)),
        Err(e) => {
            // Damaged text: nothing to index of it (verify names the block).
            tracing::error!(record_id, field, error = %e.code(), "clinical text that does not open is not indexed");
            Ok(Some(String::new()))
        }
    }
}

/// What [`verify`] found.
#[derive(Debug, serde::Serialize)]
pub struct SearchCheck {
    /// The index equals one built afresh from the ledger.
    pub ok: bool,
    /// The height both were built to (the views').
    pub height: u64,
    /// Rows compared.
    pub rows: usize,
    /// The first row that differs: its column family and key (hex; terms are keyed
    /// hashes, record ids are not clinical text).
    pub first_difference: Option<String>,
}

/// Checks the search index of `data_dir` against one built afresh from the ledger in a
/// temp dir beside it (both brought to the views' height first: the index catches up as
/// the server would). `None` when there is no index.
pub fn verify(
    data_dir: &Path,
    ledger: &Ledger,
    views: &dyn ViewStore,
    keys: &KeyStore,
) -> Result<Option<SearchCheck>, String> {
    if !data_dir.join(SEARCH_DIR).exists() {
        return Ok(None);
    }
    let height = views.applied_height().map_err(|e| e.to_string())?;
    let catch_up = |search: &Search| -> Result<(), String> {
        while search.height() < height {
            let before = search.height();
            let reached = search
                .step(ledger, views, keys, height)
                .map_err(|e| e.to_string())?;
            if reached == before {
                return Err(format!(
                    "the ledger has no block {before}, below the views' height {height}"
                ));
            }
        }
        Ok(())
    };
    let live = Search::open(data_dir, keys, ledger)?;
    catch_up(&live)?;
    let fresh_dir = data_dir.join(format!("{SEARCH_DIR}.verify"));
    let _ = std::fs::remove_dir_all(&fresh_dir);
    let fresh = Search::open_at(&fresh_dir, keys, ledger)?;
    catch_up(&fresh)?;
    let (a, b) = (
        live.store.rows().map_err(|e| e.to_string())?,
        fresh.store.rows().map_err(|e| e.to_string())?,
    );
    drop(fresh);
    let _ = std::fs::remove_dir_all(&fresh_dir);
    let first_difference = a
        .iter()
        .zip(&b)
        .find(|(x, y)| x != y)
        .map(|(x, _)| x)
        .or_else(|| {
            if a.len() > b.len() {
                a.get(b.len())
            } else {
                b.get(a.len())
            }
        })
        .map(|(cf, key, _)| format!("{cf} {}", hex::encode(key)));
    Ok(Some(SearchCheck {
        ok: first_difference.is_none(),
        height,
        rows: a.len(),
        first_difference,
    }))
}
