//! Projection: what committed blocks do to the views.
//!
//! [`Projection`] turns blocks into one [`ViewBatch`], using the chaincode's contract
//! (the same functions the submission path uses) to decide what each event does. An event
//! the contract rejects for the state it meets (two amendments raced for one version, say)
//! changes no record: it gets a row in the `rejected` view with the contract's code, as
//! Fabric marks an invalid transaction in its block. The outcome depends only on the
//! ledger, so a rebuild writes exactly the bytes the live projector wrote.
//!
//! Records and grants touched by blocks not yet written are kept in an overlay, so several
//! events on one record in one batch see each other (and a record is read from the store
//! once per batch, not once per event); a record is kept as its encoded `records` row and
//! decoded when an event needs its state. The live projector writes one block per batch;
//! a rebuild writes many blocks per batch.
//!
//! A rebuild's projection ([`Projection::for_rebuild`]) also keeps an [`IdFilter`] of the
//! records it created: a creation looks up its id, and on a store the projection filled
//! from empty, an id the filter has never seen needs no read.

use foldhash::HashMap;

use medledger_chaincode::contract::{
    apply_grant_event, change_record, check_record_event, record_created, GrantState, RecordState,
};
use medledger_chaincode::{Envelope, Event, RecordStatus};

use super::idfilter::IdFilter;
use super::keys;
use super::values::{
    self, event_kind_code, AuditEntry, Rejection, Summary, TxPosition, VersionEntry,
};
use super::{View, ViewBatch, ViewError, ViewStore};

/// What one [`Projection::apply_block`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockOutcome {
    /// Transactions applied.
    pub applied: u32,
    /// Transactions the contract rejected (each has a `rejected` row).
    pub rejected: u32,
}

/// The contract's verdict on one event: its rejection code and message, or `Ok`.
type Verdict = Result<(), (&'static str, String)>;

/// Accumulates the view changes of consecutive blocks.
pub struct Projection<'s> {
    store: &'s dyn ViewStore,
    /// Current versions of the records the pending batch changed (or looked up), as
    /// their `records` rows' bytes: decoded when an event needs them. Kept decoded,
    /// every creation's strings lived on in the overlay and were freed two batches
    /// later, from memory long cold; now they are freed as the event is done, and the
    /// next event's decoding reuses them.
    records: HashMap<String, Vec<u8>>,
    grants: HashMap<(String, String), Option<GrantState>>,
    /// The same for the batch taken last, which may still be being written.
    taken_records: HashMap<String, Vec<u8>>,
    taken_grants: HashMap<(String, String), Option<GrantState>>,
    batch: ViewBatch,
    /// A written batch handed back by [`Projection::recycle`], for the next one's memory.
    spare: Option<ViewBatch>,
    /// The ids of the records this projection created, if it began on an empty store.
    created: Option<IdFilter>,
    /// Ops a batch is reserved for when made ([`Projection::for_rebuild`]), or 0.
    batch_ops: usize,
}

impl<'s> Projection<'s> {
    /// A projection continuing from `store`'s applied height.
    pub fn new(store: &'s dyn ViewStore) -> Result<Self, ViewError> {
        let height = store.applied_height()?;
        Ok(Projection {
            store,
            records: HashMap::default(),
            grants: HashMap::default(),
            taken_records: HashMap::default(),
            taken_grants: HashMap::default(),
            batch: ViewBatch::new(height),
            spare: None,
            created: None,
            batch_ops: 0,
        })
    }

    /// A projection for many blocks (a rebuild's), taken in batches of about
    /// `batch_ops` ops: as [`Projection::new`], with each batch and the overlay reserved
    /// for that size up front (grown by doubling, they were copied over and over, and
    /// on this VM memory first touched costs more than the copy). If `store` is empty
    /// (no height, no record) and [skips such reads], it also keeps a filter of the
    /// records it creates, so that looking up a new record's id needs no read of the
    /// store. The filter grows with the
    /// records created (~1.3 bytes each) up to [`idfilter::BYTES_MAX`]; past that it is
    /// dropped and every lookup reads.
    ///
    /// [`idfilter::BYTES_MAX`]: super::idfilter::BYTES_MAX
    /// [skips such reads]: ViewStore::skip_reads_of_new_records
    pub fn for_rebuild(store: &'s dyn ViewStore, batch_ops: usize) -> Result<Self, ViewError> {
        let mut projection = Projection::new(store)?;
        if store.skip_reads_of_new_records()
            && projection.height() == 0
            && store.scan(View::Records, b"", None, 1)?.is_empty()
        {
            projection.created = Some(IdFilter::default());
        }
        projection.batch_ops = batch_ops;
        projection.reserve_batch();
        // A batch's events touch about one record per 8 ops (a creation writes 6 rows).
        projection.records.reserve(batch_ops / 8);
        projection.taken_records.reserve(batch_ops / 8);
        Ok(projection)
    }

    /// Reserves the pending batch for `batch_ops` ops and their keys and values (~130
    /// bytes an op in the fixtures; a batch that needs more grows).
    fn reserve_batch(&mut self) {
        let ops = self.batch_ops + self.batch_ops / 32;
        self.batch.reserve(ops, ops * 144);
    }

    /// The height the pending batch brings the views to.
    pub fn height(&self) -> u64 {
        self.batch.applied_height
    }

    /// Ops pending in the batch.
    pub fn pending_ops(&self) -> usize {
        self.batch.len()
    }

    /// Projects block `number`, whose transactions are `txs` (canonical envelope bytes).
    /// Blocks must come in order, starting at the store's height.
    pub fn apply_block<'t>(
        &mut self,
        number: u64,
        txs: impl IntoIterator<Item = &'t [u8]>,
    ) -> Result<BlockOutcome, ViewError> {
        assert_eq!(
            number, self.batch.applied_height,
            "blocks are projected in order"
        );
        let mut outcome = BlockOutcome::default();
        for (position, bytes) in txs.into_iter().enumerate() {
            let position = u32::try_from(position).expect("a block holds < 2^32 txs");
            let tx_id = Envelope::tx_id_of(bytes).map(|t| t.0).unwrap_or_default();
            let at = TxPosition {
                block: number,
                position,
                tx_id,
            };
            let verdict = match Envelope::decode(bytes) {
                Ok(env) => self.apply_event(at, env.event)?,
                Err(e) => Err(("undecodable", e.to_string())),
            };
            match verdict {
                Ok(()) => outcome.applied += 1,
                Err((code, message)) => {
                    outcome.rejected += 1;
                    let row = Rejection {
                        at,
                        code: code.to_owned(),
                        message,
                    };
                    self.batch.put(
                        View::Rejected,
                        keys::rejected(number, position),
                        values::encode(&row),
                    );
                }
            }
        }
        self.batch.applied_height = number + 1;
        Ok(outcome)
    }

    /// The batch so far (ops and the new height), leaving an empty one at that height.
    ///
    /// Projection may go on while the taken batch is written (its changes stay visible
    /// here), but that batch must be in the store before the next `take_batch`: one
    /// batch in flight at most.
    pub fn take_batch(&mut self) -> ViewBatch {
        // The maps swap roles and the older one is emptied: each keeps its memory, and
        // a rebuild's overlay (tens of thousands of records per batch) no longer grows
        // from nothing every batch.
        self.taken_records.clear();
        std::mem::swap(&mut self.records, &mut self.taken_records);
        self.taken_grants.clear();
        std::mem::swap(&mut self.grants, &mut self.taken_grants);
        let (mut next, fresh) = match self.spare.take() {
            Some(spare) => (spare, false),
            None => (ViewBatch::default(), true),
        };
        next.reset(self.batch.applied_height);
        let taken = std::mem::replace(&mut self.batch, next);
        if fresh {
            self.reserve_batch();
        }
        taken
    }

    /// Hands back a batch taken earlier and written, so that a later batch reuses its
    /// memory instead of growing a new one (a rebuild's batches are tens of MiB).
    pub fn recycle(&mut self, batch: ViewBatch) {
        self.spare = Some(batch);
    }

    /// Makes sure the current version of `record_id`, if the record exists, is in
    /// `records`: moved there from `taken_records`, or read from the store (unless the
    /// filter of created ids says it cannot be there).
    fn load_record(&mut self, record_id: &str) -> Result<(), ViewError> {
        if self.records.contains_key(record_id) {
            return Ok(());
        }
        if let Some((key, entry)) = self.taken_records.remove_entry(record_id) {
            self.records.insert(key, entry);
            return Ok(());
        }
        if self
            .created
            .as_ref()
            .is_some_and(|f| !f.may_contain(record_id))
        {
            return Ok(());
        }
        if let Some(bytes) = self.store.get(View::Records, &keys::record(record_id))? {
            self.records.insert(record_id.to_owned(), bytes);
        }
        Ok(())
    }

    fn grant(
        &mut self,
        patient_id: &str,
        grantee_id: &str,
    ) -> Result<Option<GrantState>, ViewError> {
        let key = (patient_id.to_owned(), grantee_id.to_owned());
        if let Some(g) = self
            .grants
            .get(&key)
            .or_else(|| self.taken_grants.get(&key))
        {
            return Ok(g.clone());
        }
        match self
            .store
            .get(View::Grants, &keys::grant(patient_id, grantee_id))?
        {
            None => Ok(None),
            Some(bytes) => values::decode(&bytes, "grant").map(Some),
        }
    }

    /// Applies one event: `Ok(Err(..))` is the contract's rejection.
    fn apply_event(&mut self, at: TxPosition, event: Event) -> Result<Verdict, ViewError> {
        match &event {
            Event::AccessGranted(e) => self.apply_grant(&e.patient_id, &e.grantee_id, &event),
            Event::AccessRevoked(e) => self.apply_grant(&e.patient_id, &e.grantee_id, &event),
            Event::RecordCreated(_)
            | Event::RecordAmended(_)
            | Event::RecordStatusChanged(_)
            | Event::PayloadErased(_)
            | Event::AccessLogged(_) => self.apply_record(at, event),
        }
    }

    fn apply_grant(
        &mut self,
        patient_id: &str,
        grantee_id: &str,
        event: &Event,
    ) -> Result<Verdict, ViewError> {
        let current = self.grant(patient_id, grantee_id)?;
        let next = match apply_grant_event(current.as_ref(), event) {
            Ok(next) => next,
            Err(e) => return Ok(Err((e.code(), e.to_string()))),
        };
        let key = keys::grant(patient_id, grantee_id);
        match &next {
            Some(g) => self.batch.put(View::Grants, key, values::encode(g)),
            None => self.batch.delete(View::Grants, key),
        }
        self.grants
            .insert((patient_id.to_owned(), grantee_id.to_owned()), next);
        Ok(Ok(()))
    }

    /// Applies a record event. The event is taken by value: a creation's strings move
    /// into the new state, a change's into the changed one.
    fn apply_record(&mut self, at: TxPosition, event: Event) -> Result<Verdict, ViewError> {
        let code = event_kind_code(event.kind());
        let record_id = event.record_id().expect("a record event names its record");
        self.load_record(record_id)?;
        let current: Option<VersionEntry> = match self.records.get(record_id) {
            Some(bytes) => Some(values::decode(bytes, "record")?),
            None => None,
        };
        if let Err(e) = check_record_event(current.as_ref().map(|c| &c.state), &event) {
            return Ok(Err((e.code(), e.to_string())));
        }
        let batch = &mut self.batch;
        let (mut entry, event) = match (current, event) {
            (_, Event::AccessLogged(e)) => {
                // The record itself is unchanged.
                let entry = AuditEntry {
                    at,
                    accessor_id: e.accessor_id,
                    accessed_at: e.accessed_at,
                    purpose: e.purpose,
                };
                batch.put_encoded(
                    View::Audit,
                    |k| keys::write_audit(k, &e.record_id, at.block, at.position),
                    |v| values::encode_into(&entry, v),
                );
                return Ok(Ok(()));
            }
            (_, Event::RecordCreated(e)) => {
                let entry = VersionEntry {
                    at,
                    event: code,
                    state: record_created(e),
                };
                write_summary(batch, &entry.state, false);
                put_current(batch, &entry);
                if let Some(filter) = &mut self.created {
                    if !filter.insert(&entry.state.record_id) {
                        self.created = None;
                    }
                }
                let row = batch.last_value().expect("the row just put").to_vec();
                self.records.insert(entry.state.record_id, row);
                return Ok(Ok(()));
            }
            (Some(entry), event) => (entry, event),
            (None, _) => {
                unreachable!("only a creation is accepted for a record that does not exist")
            }
        };
        let row = self
            .records
            .get_mut(entry.state.record_id.as_str())
            .expect("a record decoded from the overlay is in it");
        // Each state is stored once while it is current (`records`), and moves to
        // `record_versions` when a later version supersedes it: its row, as it is.
        batch.put_with(
            View::RecordVersions,
            |k| keys::write_record_version(k, &entry.state.record_id, entry.state.version),
            row,
        );
        let status = entry.state.status;
        change_record(&mut entry.state, event);
        entry.at = at;
        entry.event = code;
        if entry.state.status != status {
            write_summary(batch, &entry.state, true);
        }
        put_current(batch, &entry);
        row.clear();
        row.extend_from_slice(batch.last_value().expect("the row just put"));
        Ok(Ok(()))
    }
}

/// Writes the timeline and `active` rows of a record whose status is new (`existed`:
/// whether it had a status before, so an `active` row may have to go).
fn write_summary(batch: &mut ViewBatch, state: &RecordState, existed: bool) {
    let summary = values::encode(&Summary {
        status: state.status,
        record_type: state.record_type.clone(),
    });
    let (record_id, created) = (state.record_id.as_str(), state.created_at);
    for (view, owner) in [
        (View::PatientTimeline, &state.patient_id),
        (View::AuthorTimeline, &state.author_id),
        (View::HospitalTimeline, &state.hospital_id),
    ] {
        batch.put_with(
            view,
            |k| keys::write_timeline(k, owner, created, record_id),
            &summary,
        );
    }
    batch.put_with(
        View::PatientTypeTimeline,
        |k| keys::write_type_timeline(k, &state.patient_id, &state.record_type, created, record_id),
        &summary,
    );
    let active_key =
        |k: &mut Vec<u8>| keys::write_timeline(k, &state.patient_id, created, record_id);
    if state.status == RecordStatus::Active {
        batch.put_with(View::Active, active_key, &summary);
    } else if existed {
        batch.delete_with(View::Active, active_key);
    }
}

/// Writes `entry` as its record's current version.
fn put_current(batch: &mut ViewBatch, entry: &VersionEntry) {
    batch.put_encoded(
        View::Records,
        |k| keys::write_record(k, &entry.state.record_id),
        |v| values::encode_into(entry, v),
    );
}
