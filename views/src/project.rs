//! Projection: what committed blocks do to the views.
//!
//! [`Projection`] turns blocks into one [`ViewBatch`], using the chaincode's contract
//! (the same functions the submission path uses) to decide what each event does. An event
//! the contract rejects for the state it meets (two amendments raced for one version, say)
//! changes no record: it gets a row in the `rejected` view with the contract's code, as
//! Fabric marks an invalid transaction in its block. The outcome depends only on the
//! ledger, so a rebuild writes exactly the bytes the live projector wrote.
//!
//! Records and grants the projection has met are kept in an overlay, so several events on
//! one record see each other before their batch is written (and a record is read from the
//! store once, not once per event); a record is kept as its encoded `records` row and
//! decoded when an event needs its state. The live projector projects one block per
//! batch, reading the states it needs from the store.
//!
//! A rebuild projects partitions instead ([`Projection::for_partitions`]): each holds
//! every event about some records and grants, in ledger order, and the events of
//! different subjects never affect each other (see [`Subject`]). The overlay then holds
//! the whole state of the partition's records, so nothing is read from a store; each
//! record's `records` row is written once, when its partition ends
//! ([`Projection::end_partition`]).
//!
//! [`Subject`]: medledger_chaincode::Subject

use foldhash::HashMap;

use medledger_chaincode::contract::{
    apply_grant_event, change_record, check_record_event, record_created, GrantState, RecordState,
};
use medledger_chaincode::{Envelope, Event, RecordStatus, RecordsRead};

use super::changes::Touched;
use super::derive::count_keys;
use super::keys;
use super::values::{
    self, event_kind_code, AccessLogEntry, AuditEntry, Rejection, Summary, TxPosition, VersionEntry,
};
use super::{View, ViewBatch, ViewError, ViewOp, ViewStore};

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

/// Accumulates the view changes of consecutive blocks, or of a rebuild's partitions.
pub struct Projection<'s> {
    /// Where states not in the overlay are read; `None` for partitions, whose overlay
    /// holds every state their events need.
    store: Option<&'s dyn ViewStore>,
    /// Current versions of the records met so far, as their `records` rows' bytes:
    /// decoded when an event needs them. Kept decoded, every creation's strings lived on
    /// in the overlay, to be freed later from memory long cold; now they are freed as
    /// the event is done, and the next event's decoding reuses them.
    records: HashMap<String, Vec<u8>>,
    grants: HashMap<(String, String), Option<GrantState>>,
    /// What the events so far add to (or take from) each count row (`patient_counts`,
    /// `stats`): the live projection's, applied to the stored counts when the batch is
    /// taken, in one lookup per view (a rebuild derives its counts from the timelines at
    /// its flush, views/src/derive.rs).
    count_deltas: HashMap<(View, Vec<u8>), i64>,
    batch: ViewBatch,
    /// A partition's rows of `record_versions` and `audit`, keyed by record id first.
    /// Partitions are ranges of record ids (and of grant keys), so these rows, its
    /// `records` and its `grants` are written as ranges when the partition ends
    /// ([`ViewStore::write_range`]), merged with nothing.
    partition_rows: ViewBatch,
    /// Where a partition's `records` rows are encoded before they are copied into the
    /// overlay at their exact size (encoded there, each row grew by doubling).
    row_scratch: Vec<u8>,
    /// Ops a partitions' batch holds before [`Projection::batch_full`], or 0.
    batch_ops: usize,
    /// The timelines the events so far changed (the live projection's; a rebuild's
    /// partitions note nothing).
    touched: Touched,
}

/// Bytes of keys and values reserved per op of a partitions' batch (~130 in the
/// fixtures); a batch is full at that many bytes too.
const BATCH_BYTES_PER_OP: usize = 144;

impl<'s> Projection<'s> {
    /// A projection continuing from `store`'s applied height.
    pub fn new(store: &'s dyn ViewStore) -> Result<Self, ViewError> {
        let height = store.applied_height()?;
        Ok(Projection {
            store: Some(store),
            records: HashMap::default(),
            grants: HashMap::default(),
            count_deltas: HashMap::default(),
            batch: ViewBatch::new(height),
            partition_rows: ViewBatch::new(0),
            row_scratch: Vec::new(),
            batch_ops: 0,
            touched: Touched::default(),
        })
    }

    /// A projection of a rebuild's partitions ([`Projection::apply_tx`], then
    /// [`Projection::end_partition`] for each), written in batches of about `batch_ops`
    /// ops ([`Projection::write_batch`] when [`Projection::batch_full`]). It reads no
    /// store: a partition's events must be all the events about its records and grants,
    /// and the views it writes into must have been empty. Its batches bring the views to
    /// no height (0): the caller writes the height once every partition is written.
    ///
    /// One batch, reserved up front and reused: grown by doubling, batches were copied
    /// over and over, and on this VM memory first touched (cleared by the kernel) costs
    /// more than the copy.
    pub fn for_partitions(batch_ops: usize) -> Self {
        let mut batch = ViewBatch::new(0);
        let ops = batch_ops + batch_ops / 32;
        batch.reserve(ops, ops * BATCH_BYTES_PER_OP);
        Projection {
            store: None,
            records: HashMap::default(),
            grants: HashMap::default(),
            count_deltas: HashMap::default(),
            batch,
            partition_rows: ViewBatch::new(0),
            row_scratch: Vec::new(),
            batch_ops,
            touched: Touched::default(),
        }
    }

    /// Whether a partitions' batch holds `batch_ops` ops, or their bytes: time to
    /// [`Projection::write_batch`].
    pub fn batch_full(&self) -> bool {
        self.batch.len() >= self.batch_ops
            || self.batch.byte_len() >= self.batch_ops * BATCH_BYTES_PER_OP
    }

    /// Sorts the batch, writes it into `store` and empties it (its memory stays).
    pub fn write_batch(&mut self, store: &dyn ViewStore) -> Result<(), ViewError> {
        self.batch.sort_by_key();
        store.write(&self.batch)?;
        self.batch.reset(self.batch.applied_height);
        Ok(())
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
            if self.apply_tx(number, position, bytes)? {
                outcome.applied += 1;
            } else {
                outcome.rejected += 1;
            }
        }
        self.batch.applied_height = number + 1;
        Ok(outcome)
    }

    /// Projects the transaction at `position` in block `number` (canonical envelope
    /// bytes): whether it was applied (`false`: the contract rejected it, and it has a
    /// `rejected` row). [`Projection::apply_block`] projects a block's transactions in
    /// order; a partition's come in ledger order.
    pub fn apply_tx(
        &mut self,
        number: u64,
        position: u32,
        bytes: &[u8],
    ) -> Result<bool, ViewError> {
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
        let Err((code, message)) = verdict else {
            return Ok(true);
        };
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
        Ok(false)
    }

    /// Ends a partition: writes its rows into `store` as ranges
    /// ([`ViewStore::write_range`]): the `records` row of each of its records (its
    /// current version: earlier ones are in its `record_versions` rows already), its
    /// grants, and its versions and audit entries. The partition's records and grants
    /// are then forgotten, and the overlay and the partition's rows keep their memory
    /// for the next partition.
    ///
    /// The events projected since the last `end_partition` must be all the events about
    /// a range of record ids and a range of grant keys, which no other partition's
    /// events enter.
    pub fn end_partition(&mut self, store: &dyn ViewStore) -> Result<(), ViewError> {
        debug_assert!(self.store.is_none(), "only partitions end");
        // Written straight from the overlay, sorted by id (a `records` key is the id's
        // bytes): copied into a batch first, they were a quarter of the partitions'
        // threads, in copies and memory first touched.
        let mut records: Vec<(&String, &Vec<u8>)> = self.records.iter().collect();
        records.sort_unstable_by(|a, b| a.0.cmp(b.0));
        debug_assert!(records
            .first()
            .is_none_or(|(id, _)| keys::record(id) == id.as_bytes()));
        store.write_range(
            View::Records,
            &mut records
                .iter()
                .map(|(id, row)| (id.as_bytes(), row.as_slice())),
        )?;
        drop(records);
        // A revoked grant leaves no row (nothing underneath to delete).
        let mut grants: Vec<(Vec<u8>, Vec<u8>)> = self
            .grants
            .iter()
            .filter_map(|((patient_id, grantee_id), grant)| {
                let grant = grant.as_ref()?;
                Some((keys::grant(patient_id, grantee_id), values::encode(grant)))
            })
            .collect();
        grants.sort_unstable();
        store.write_range(
            View::Grants,
            &mut grants.iter().map(|(k, v)| (k.as_slice(), v.as_slice())),
        )?;
        self.partition_rows.sort_by_key();
        for view in [View::RecordVersions, View::Audit, View::AccessLog] {
            store.write_range(
                view,
                &mut self.partition_rows.ops().filter_map(|op| match op {
                    ViewOp::Put {
                        view: v,
                        key,
                        value,
                    } if v == view => Some((key, value)),
                    _ => None,
                }),
            )?;
        }
        self.partition_rows.reset(0);
        self.records.clear();
        self.grants.clear();
        Ok(())
    }

    /// The batch so far (ops and the new height), leaving an empty one at that height;
    /// the counts the events changed are read from the store (one lookup per view) and
    /// written into it. The overlay keeps its states: the batch taken must be in the
    /// store before the projection's next read of it.
    pub fn take_batch(&mut self) -> Result<ViewBatch, ViewError> {
        if let Some(store) = self.store {
            let mut deltas: Vec<((View, Vec<u8>), i64)> = self
                .count_deltas
                .drain()
                .filter(|(_, delta)| *delta != 0)
                .collect();
            deltas.sort_unstable();
            for view in [View::PatientCounts, View::Stats] {
                let rows: Vec<&((View, Vec<u8>), i64)> =
                    deltas.iter().filter(|((v, _), _)| *v == view).collect();
                let keys: Vec<Vec<u8>> = rows.iter().map(|((_, k), _)| k.clone()).collect();
                for (stored, ((_, key), delta)) in
                    store.get_many(view, &keys)?.into_iter().zip(rows)
                {
                    let stored = match stored {
                        None => 0,
                        Some(bytes) => keys::decode_count(&bytes)
                            .ok_or(ViewError::Malformed { what: "count" })?,
                    };
                    let n = stored
                        .checked_add_signed(*delta)
                        .ok_or(ViewError::Malformed {
                            what: "count (taken below 0)",
                        })?;
                    if n == 0 {
                        self.batch.delete(view, key);
                    } else {
                        self.batch.put(view, key, keys::encode_count(n));
                    }
                }
            }
        }
        let height = self.batch.applied_height;
        Ok(std::mem::replace(&mut self.batch, ViewBatch::new(height)))
    }

    /// The timelines the events projected since the last call changed.
    pub fn take_touched(&mut self) -> Touched {
        std::mem::take(&mut self.touched)
    }

    /// Makes sure the current version of `record_id`, if the record exists, is in
    /// `records`: read from the store if it is not there yet (a partition's overlay holds
    /// every record its events can name).
    fn load_record(&mut self, record_id: &str) -> Result<(), ViewError> {
        let Some(store) = self.store else {
            return Ok(());
        };
        if self.records.contains_key(record_id) {
            return Ok(());
        }
        if let Some(bytes) = store.get(View::Records, &keys::record(record_id))? {
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
        if let Some(g) = self.grants.get(&key) {
            return Ok(g.clone());
        }
        let Some(store) = self.store else {
            return Ok(None);
        };
        match store.get(View::Grants, &keys::grant(patient_id, grantee_id))? {
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
            Event::RecordsRead(_) => {
                let Event::RecordsRead(e) = event else {
                    unreachable!()
                };
                self.apply_read(at, e);
                Ok(Ok(()))
            }
        }
    }

    /// A read of clinical content: one row in the patient's access log (a record's log
    /// is its patient's, filtered). It changes no state and the contract has no rule for
    /// it.
    fn apply_read(&mut self, at: TxPosition, e: RecordsRead) {
        let partition = self.store.is_none();
        let entry = AccessLogEntry {
            at,
            patient_id: e.patient_id,
            record_ids: e.record_ids,
            reader_id: e.reader_id,
            reader_role: e.reader_role,
            reader_hospital: e.reader_hospital,
            what: e.what,
            purpose: e.purpose,
            break_glass: e.break_glass,
            read_at: e.read_at,
        };
        kept(&mut self.batch, &mut self.partition_rows, partition).put_encoded(
            View::AccessLog,
            |k| keys::write_access_log(k, &entry.patient_id, at.block, at.position),
            |v| values::encode_into(&entry, v),
        );
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
        // A partition writes its grants when it ends.
        if self.store.is_some() {
            self.touched.grant(patient_id);
            let key = keys::grant(patient_id, grantee_id);
            match &next {
                Some(g) => self.batch.put(View::Grants, key, values::encode(g)),
                None => self.batch.delete(View::Grants, key),
            }
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
        let partition = self.store.is_none();
        let (mut entry, event) = match (current, event) {
            (_, Event::AccessLogged(e)) => {
                // The record itself is unchanged.
                let entry = AuditEntry {
                    at,
                    accessor_id: e.accessor_id,
                    accessed_at: e.accessed_at,
                    purpose: e.purpose,
                };
                kept(&mut self.batch, &mut self.partition_rows, partition).put_encoded(
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
                if !partition {
                    let s = &entry.state;
                    self.touched
                        .record(&s.patient_id, &s.author_id, &s.hospital_id);
                }
                write_summary(&mut self.batch, &entry.state, false);
                if !partition {
                    let s = &entry.state;
                    count(&mut self.count_deltas, s, s.status, 1);
                }
                let mut row = Vec::new();
                let scratch = &mut self.row_scratch;
                set_current(&mut self.batch, &mut row, scratch, &entry, !partition);
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
        kept(&mut self.batch, &mut self.partition_rows, partition).put_with(
            View::RecordVersions,
            |k| keys::write_record_version(k, &entry.state.record_id, entry.state.version),
            row,
        );
        let status = entry.state.status;
        change_record(&mut entry.state, event);
        if !partition {
            let s = &entry.state;
            self.touched
                .record(&s.patient_id, &s.author_id, &s.hospital_id);
        }
        entry.at = at;
        entry.event = code;
        if entry.state.status != status {
            write_summary(&mut self.batch, &entry.state, true);
            if !partition {
                count(&mut self.count_deltas, &entry.state, status, -1);
                count(&mut self.count_deltas, &entry.state, entry.state.status, 1);
            }
        }
        set_current(
            &mut self.batch,
            row,
            &mut self.row_scratch,
            &entry,
            !partition,
        );
        Ok(Ok(()))
    }
}

/// Where the rows of `record_versions` and `audit` go: a partition's own rows (written
/// as ranges when it ends), or the batch.
fn kept<'b>(
    batch: &'b mut ViewBatch,
    partition_rows: &'b mut ViewBatch,
    partition: bool,
) -> &'b mut ViewBatch {
    if partition {
        partition_rows
    } else {
        batch
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

/// Counts the record `state` in (`delta` 1) or out of (-1) its patient's count of its
/// type and `status`, and its hospital's of its month, type and `status`.
fn count(
    deltas: &mut HashMap<(View, Vec<u8>), i64>,
    state: &RecordState,
    status: RecordStatus,
    delta: i64,
) {
    let rows = count_keys(
        &state.patient_id,
        &state.hospital_id,
        &state.record_type,
        state.created_at,
        status,
    );
    for row in rows {
        *deltas.entry(row).or_insert(0) += delta;
    }
}

/// Makes `entry` its record's current version: its `records` row in the overlay's `row`,
/// and in the batch if `write` (a partition writes its rows when it ends; `scratch` is
/// where it encodes them).
fn set_current(
    batch: &mut ViewBatch,
    row: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
    entry: &VersionEntry,
    write: bool,
) {
    let encoded = if write {
        batch.put_encoded(
            View::Records,
            |k| keys::write_record(k, &entry.state.record_id),
            |v| values::encode_into(entry, v),
        );
        batch.last_value().expect("the row just put")
    } else {
        scratch.clear();
        values::encode_into(entry, scratch);
        scratch
    };
    row.clear();
    row.reserve_exact(encoded.len());
    row.extend_from_slice(encoded);
}
