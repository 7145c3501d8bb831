//! Bulk export, after FHIR Bulk Data's pattern: `POST /v1/exports` starts a job over a
//! scope (a hospital, a record type, a range of creation times, or everything) and
//! answers 202 with its status URL; `GET /v1/exports/{id}` answers 202 with `X-Progress`
//! while it runs and 200 with the manifest once done: one NDJSON file per record type,
//! each with its records, bytes and SHA-256; `GET /v1/exports/{id}/files/{type}` streams
//! one; `DELETE /v1/exports/{id}` removes a finished one. Admins and auditors only.
//!
//! A job walks `patient_timeline` (every record once, a patient's together) in steps of
//! [`STEP_ROWS`] rows: the step's records are read in one lookup, written as JSON lines
//! (on every core), their reads put on the ledger (`what: export`, one event per patient
//! of the step, under the caller who asked), the files synced, then the job's state
//! (`DATA_DIR/exports/<id>/state.json`, replaced atomically) moves past the step; the
//! next step is read while one is written. Memory is two steps' records, whatever the
//! export's size. A job the server stopped, or a
//! crash, resumes at the next start from its last state: the files are cut back to the
//! lengths that state names and the walk goes on after its last row (a step's reads may
//! then be on the ledger twice, never missing). Files are checksummed when the walk ends.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use actix_web::{web, HttpResponse};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use medledger_chaincode::{Timestamp, READ_PURPOSES};
use medledger_views::values::{self, Summary, VersionEntry};
use medledger_views::{keys, View};

use super::audit::{self, Declared};
use super::auth::{Caller, Claims, Role};
use super::error::ApiError;
use super::records::record_json;
use super::submit::now;
use super::AppState;

type Data = web::Data<AppState>;

/// Timeline rows one step of a job reads.
pub const STEP_ROWS: usize = 8192;
/// Jobs walking at once; more wait for a slot (`queued`).
pub const EXPORTS_RUNNING_MAX: usize = 2;
/// Exports kept (running or finished); more are refused until some are deleted.
pub const EXPORTS_KEPT_MAX: usize = 16;
/// Record types one export writes files for, at most.
pub const EXPORT_TYPES_MAX: usize = 256;
/// Tries of a job after an outage the server answers 503 for (about a minute).
const RETRIES_MAX: u32 = 20;
/// The directory of the exports, under the data dir.
pub const EXPORTS_DIR: &str = "exports";
const STATE_FILE: &str = "state.json";

/// What an export holds: all optional, `to` exclusive.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Scope {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hospital_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Timestamp>,
}

/// `POST /v1/exports`'s body (schemas/new_export.json).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewExport {
    hospital_id: Option<String>,
    record_type: Option<String>,
    from: Option<Timestamp>,
    to: Option<Timestamp>,
    purpose: Option<String>,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum Stage {
    Running,
    Complete,
    Failed,
}

/// One output file: its records and bytes so far, its SHA-256 once complete.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct FileState {
    records: u64,
    bytes: u64,
    sha256: Option<String>,
}

/// A job's durable state (`state.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Job {
    id: String,
    /// Who asked: the reads are recorded under it; it (or an admin) reads the result.
    owner: Claims,
    purpose: String,
    scope: Scope,
    created_at: Timestamp,
    stage: Stage,
    /// The last `patient_timeline` key the files hold (hex); none: from the start.
    after: Option<String>,
    /// Timeline rows walked, and records written.
    rows: u64,
    records: u64,
    /// The timeline's rows when the job started (progress is `rows / rows_total`).
    rows_total: u64,
    files: BTreeMap<String, FileState>,
    error: Option<(String, String)>,
    finished_at: Option<Timestamp>,
}

/// The exports of this server: their directory, what each is at, the running ones.
pub struct Exports {
    dir: PathBuf,
    jobs: Mutex<BTreeMap<String, Job>>,
    running: AtomicUsize,
    /// Set when the server stops: a walking job stops after its step, to resume at the
    /// next start.
    stop: AtomicBool,
}

fn io(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> ApiError {
    // The path is logged, never answered.
    let (what, path) = (what.to_owned(), path.display().to_string());
    move |e| {
        tracing::error!(error = %e, path, "export: {what}");
        ApiError::internal(format!("export: {what}: {e}"))
    }
}

impl Exports {
    /// The exports under `data_dir`, their states read back (none resumed yet:
    /// [`Exports::resume`]).
    pub fn open(data_dir: &Path) -> std::io::Result<Exports> {
        let dir = data_dir.join(EXPORTS_DIR);
        medledger_storage::ledger::fs::create_dir_durably(&dir)?;
        let mut jobs = BTreeMap::new();
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path().join(STATE_FILE);
            match std::fs::read(&path) {
                Ok(bytes) => match serde_json::from_slice::<Job>(&bytes) {
                    Ok(job) => {
                        jobs.insert(job.id.clone(), job);
                    }
                    Err(e) => {
                        tracing::error!(error = %e, path = %path.display(), "export: an unreadable state, skipped")
                    }
                },
                // A job whose first state never reached the disk: nothing was exported,
                // and no one was told of it.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if let Some(dir) = path.parent() {
                        std::fs::remove_dir_all(dir)?;
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(Exports {
            dir,
            jobs: Mutex::new(jobs),
            running: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        })
    }

    /// Starts every job a stop interrupted.
    pub fn resume(state: &Data) {
        let ids: Vec<String> = lock(&state.exports.jobs)
            .values()
            .filter(|j| j.stage == Stage::Running)
            .map(|j| j.id.clone())
            .collect();
        for id in ids {
            tracing::info!(export = %id, "export: resuming");
            spawn(state.clone(), id);
        }
    }

    /// Stops walking jobs after their current step (the server is stopping).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    fn job_dir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// Writes `job`'s state durably (a temp file, synced, renamed over the state, the
    /// directory synced) and makes it the current one.
    fn save(&self, job: &Job) -> Result<(), ApiError> {
        let dir = self.job_dir(&job.id);
        let tmp = dir.join("state.json.tmp");
        let path = dir.join(STATE_FILE);
        let bytes = serde_json::to_vec_pretty(job).expect("a job serialises");
        (|| {
            let mut f = File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_data()?;
            std::fs::rename(&tmp, &path)?;
            File::open(&dir)?.sync_all()
        })()
        .map_err(io("saving its state", &path))?;
        lock(&self.jobs).insert(job.id.clone(), job.clone());
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs job `id` on a thread of its own, once a slot is free.
fn spawn(state: Data, id: String) {
    let name = format!("export-{}", &id[id.len().saturating_sub(8)..]);
    let started = std::thread::Builder::new().name(name).spawn(move || {
        // Wait for a slot (bounded: the server's stop ends the wait).
        loop {
            let exports = &state.exports;
            if exports.stop.load(Ordering::Acquire) {
                return;
            }
            let n = exports.running.load(Ordering::Acquire);
            if n < EXPORTS_RUNNING_MAX
                && exports
                    .running
                    .compare_exchange(n, n + 1, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        // An outage the server answers 503 for (the orderer's queue full, say) is tried
        // again from the last saved step, backing off, for about a minute.
        let mut attempts = 0u32;
        let result = loop {
            let result = run(&state, &id);
            let stopping = state.exports.stop.load(Ordering::Acquire);
            match &result {
                Err(e) if e.status.as_u16() == 503 && !stopping && attempts < RETRIES_MAX => {
                    attempts += 1;
                    tracing::warn!(export = %id, error = %e.message, attempts, "export: trying again");
                    let wait = (100u64 << attempts.min(6)).min(5_000);
                    std::thread::sleep(std::time::Duration::from_millis(wait));
                }
                _ => break result,
            }
        };
        state.exports.running.fetch_sub(1, Ordering::AcqRel);
        if let Err(e) = result {
            // The server stopping: the job resumes at the next start. Anything else fails
            // it (a 503 too, past the retries).
            if state.exports.stop.load(Ordering::Acquire) {
                tracing::warn!(export = %id, error = %e.message, "export: paused until the next start");
                return;
            }
            tracing::error!(export = %id, code = e.code, error = %e.message, "export: failed");
            let job = lock(&state.exports.jobs).get(&id).cloned();
            if let Some(mut job) = job {
                job.stage = Stage::Failed;
                job.error = Some((e.code.to_owned(), e.message.clone()));
                job.finished_at = Some(now());
                let _ = state.exports.save(&job);
            }
        }
    });
    if let Err(e) = started {
        tracing::error!(error = %e, "export: cannot start a thread; the job resumes at the next start");
    }
}

/// The file of `record_type`'s records in an export's directory `dir`.
fn file_path(dir: &Path, record_type: &str) -> PathBuf {
    dir.join(format!("{record_type}.ndjson"))
}

/// Output files being appended to, by record type.
struct Outputs {
    dir: PathBuf,
    files: BTreeMap<String, BufWriter<File>>,
}

impl Outputs {
    /// The files of `job`, cut back to the lengths its state names (a resumed job's
    /// later lines go), open for appending.
    fn open(dir: &Path, job: &Job) -> Result<Outputs, ApiError> {
        let mut files = BTreeMap::new();
        for (record_type, f) in &job.files {
            let path = file_path(dir, record_type);
            let file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(io("opening a file", &path))?;
            file.set_len(f.bytes)
                .map_err(io("cutting a file back", &path))?;
            let mut file = file;
            file.seek(std::io::SeekFrom::End(0))
                .map_err(io("seeking a file", &path))?;
            files.insert(
                record_type.clone(),
                BufWriter::with_capacity(256 << 10, file),
            );
        }
        Ok(Outputs {
            dir: dir.to_path_buf(),
            files,
        })
    }

    fn append(&mut self, record_type: &str, line: &[u8]) -> Result<(), ApiError> {
        if !self.files.contains_key(record_type) {
            if self.files.len() >= EXPORT_TYPES_MAX {
                return Err(ApiError::new(
                    actix_web::http::StatusCode::UNPROCESSABLE_ENTITY,
                    "too_many_types",
                    format!("an export writes at most {EXPORT_TYPES_MAX} record types: narrow it to one type"),
                ));
            }
            let path = file_path(&self.dir, record_type);
            let file = File::create(&path).map_err(io("creating a file", &path))?;
            self.files.insert(
                record_type.to_owned(),
                BufWriter::with_capacity(256 << 10, file),
            );
        }
        let out = self.files.get_mut(record_type).expect("opened above");
        out.write_all(line).map_err(io("writing a file", &self.dir))
    }

    /// Flushes and syncs every file.
    fn sync(&mut self) -> Result<(), ApiError> {
        for out in self.files.values_mut() {
            out.flush().map_err(io("writing a file", &self.dir))?;
            out.get_ref()
                .sync_data()
                .map_err(io("syncing a file", &self.dir))?;
        }
        Ok(())
    }
}

/// Whether the timeline row (`key` after the patient's prefix: created_at, record id;
/// its `summary`) is in `scope`, as far as the row tells (the hospital needs the record).
fn row_in_scope(scope: &Scope, created_at: Timestamp, summary: &Summary) -> bool {
    scope.from.is_none_or(|from| created_at >= from)
        && scope.to.is_none_or(|to| created_at < to)
        && scope
            .record_type
            .as_deref()
            .is_none_or(|t| t == summary.record_type)
}

/// One step's output: its lines by record type, the reads they are, and where the walk
/// is after it.
struct Step {
    lines: Vec<(String, Vec<u8>)>,
    reads: Vec<(String, String)>,
    rows: u64,
    last: Vec<u8>,
}

/// Walks job `id` to its end (or the server's stop), in two stages a step apart: this
/// thread reads a step's rows and records and writes their lines (on every core) while
/// a second one appends the previous step's lines, puts its reads on the ledger, syncs
/// the files and saves the state past it. A step waits in between, at most: memory is
/// two steps' lines.
fn run(state: &AppState, id: &str) -> Result<(), ApiError> {
    let exports = &state.exports;
    let job = lock(&exports.jobs)
        .get(id)
        .cloned()
        .ok_or_else(|| ApiError::internal("export: the job vanished"))?;
    let dir = exports.job_dir(id);
    let outputs = Outputs::open(&dir, &job)?;
    let malformed = |what: &'static str| ApiError::internal(format!("export: a malformed {what}"));
    let mut after = job
        .after
        .as_deref()
        .map(hex::decode)
        .transpose()
        .map_err(|_| malformed("resume point"))?;
    let scope = job.scope.clone();
    // `None` ends the walk: a channel closed without it is a reader that failed.
    let (tx, rx) = std::sync::mpsc::sync_channel::<Option<Step>>(1);
    std::thread::scope(|scope_threads| {
        let writer = scope_threads.spawn(move || write_steps(state, job, outputs, rx));
        let read = (|| {
            let store = state.views.as_ref();
            let keys_store = state.payloads.keys();
            loop {
                if exports.stop.load(Ordering::Acquire) {
                    return Err(ApiError::unavailable(
                        "shutting_down",
                        "the server is stopping",
                        1,
                    ));
                }
                let rows = store
                    .scan(View::PatientTimeline, b"", after.as_deref(), STEP_ROWS)
                    .map_err(super::submit::store_error)?;
                let Some((last, _)) = rows.last() else {
                    // The walk's end (the writer gone: its error is the job's).
                    let _ = tx.send(None);
                    return Ok(());
                };
                let last = last.clone();
                // The rows in scope, as far as they tell, then their records in one lookup.
                let mut wanted = Vec::with_capacity(rows.len());
                for (key, value) in &rows {
                    let sep = key
                        .iter()
                        .position(|&b| b == keys::SEP)
                        .ok_or_else(|| malformed("timeline key"))?;
                    let (created_at, record_id) = keys::parse_timeline(&key[..=sep], key)
                        .ok_or_else(|| malformed("timeline key"))?;
                    let summary: Summary = values::decode(value, "timeline summary")
                        .map_err(super::submit::store_error)?;
                    if row_in_scope(&scope, created_at, &summary) {
                        wanted.push(keys::record(&record_id));
                    }
                }
                let records: Vec<VersionEntry> = store
                    .get_many(View::Records, &wanted)
                    .map_err(super::submit::store_error)?
                    .into_iter()
                    .map(|row| match row {
                        Some(b) => values::decode::<VersionEntry>(&b, "record")
                            .map_err(super::submit::store_error),
                        None => Err(malformed("timeline (a row names no record)")),
                    })
                    .filter(|r| match (r, &scope.hospital_id) {
                        (Ok(e), Some(h)) => e.state.hospital_id == *h,
                        _ => true,
                    })
                    .collect::<Result<_, _>>()?;
                let lines: Vec<(String, Vec<u8>)> = records
                    .par_iter()
                    .map(|entry| {
                        let json = record_json(keys_store, entry)?;
                        let mut line = serde_json::to_vec(&json).expect("a record serialises");
                        line.push(b'\n');
                        Ok((entry.state.record_type.clone(), line))
                    })
                    .collect::<Result<_, ApiError>>()?;
                let reads = records
                    .into_iter()
                    .map(|e| (e.state.patient_id, e.state.record_id))
                    .collect();
                after = Some(last.clone());
                let step = Step {
                    lines,
                    reads,
                    rows: rows.len() as u64,
                    last,
                };
                if tx.send(Some(step)).is_err() {
                    // The writer failed: its error is the job's.
                    return Ok(());
                }
            }
        })();
        drop(tx);
        let written = writer.join().expect("an export's writer panicked");
        read.and(written)
    })
}

/// The second stage of [`run`]: each step's lines appended, its reads on the ledger, the
/// files synced, the state saved past it; at the end, the files' checksums.
fn write_steps(
    state: &AppState,
    mut job: Job,
    mut outputs: Outputs,
    steps: std::sync::mpsc::Receiver<Option<Step>>,
) -> Result<(), ApiError> {
    let exports = &state.exports;
    let caller = Caller(job.owner.clone());
    // Checked when the job was made: a state file edited since reads as operations.
    let purpose = audit::read_purpose(Some(&job.purpose), "operations").unwrap_or("operations");
    let declared = Declared {
        purpose,
        break_glass: None,
    };
    let mut walked = false;
    for step in steps.iter() {
        let Some(step) = step else {
            walked = true;
            break;
        };
        for (record_type, line) in &step.lines {
            outputs.append(record_type, line)?;
            let f = job.files.entry(record_type.clone()).or_default();
            f.records += 1;
            f.bytes += line.len() as u64;
        }
        // The step's reads on the ledger, then the files on disk, then the state past it.
        let reads: Vec<(&str, &str)> = step
            .reads
            .iter()
            .map(|(p, r)| (p.as_str(), r.as_str()))
            .collect();
        if !reads.is_empty() {
            audit::record_blocking(state, &caller, &declared, "export", &reads)?;
        }
        outputs.sync()?;
        job.rows += step.rows;
        job.records += step.lines.len() as u64;
        job.after = Some(hex::encode(&step.last));
        exports.save(&job)?;
    }
    if !walked {
        // The reader failed (its error is the job's) or the server stops: the state
        // saved so far is where the job resumes.
        return Ok(());
    }
    let dir = exports.job_dir(&job.id);
    drop(outputs);
    for (record_type, f) in job.files.iter_mut() {
        let path = file_path(&dir, record_type);
        let mut file = File::open(&path).map_err(io("reading a file back", &path))?;
        let mut hash = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file
                .read(&mut buf)
                .map_err(io("reading a file back", &path))?;
            if n == 0 {
                break;
            }
            hash.update(&buf[..n]);
        }
        f.sha256 = Some(hex::encode(hash.finalize()));
    }
    job.stage = Stage::Complete;
    job.finished_at = Some(now());
    exports.save(&job)
}

/// The manifest or progress of `job`, as the API answers it.
fn job_json(job: &Job) -> serde_json::Value {
    let files: Vec<serde_json::Value> = job
        .files
        .iter()
        .map(|(t, f)| {
            json!({
                "record_type": t,
                "url": format!("/v1/exports/{}/files/{t}", job.id),
                "records": f.records,
                "bytes": f.bytes,
                "sha256": f.sha256,
            })
        })
        .collect();
    json!({
        "export_id": job.id,
        "state": job.stage,
        "scope": job.scope,
        "purpose": job.purpose,
        "requested_by": job.owner.sub,
        "created_at": job.created_at,
        "finished_at": job.finished_at,
        "progress": progress(job),
        "records": job.records,
        "files": files,
        "error": job.error.as_ref().map(|(code, message)| json!({"code": code, "message": message})),
    })
}

/// How far the walk is, 0 to 1.
fn progress(job: &Job) -> f64 {
    match job.stage {
        Stage::Complete => 1.0,
        _ if job.rows_total == 0 => 0.0,
        _ => (job.rows as f64 / job.rows_total as f64).min(0.99),
    }
}

fn may_export(caller: &Caller) -> Result<(), ApiError> {
    match caller.role() {
        Role::Admin | Role::Auditor => Ok(()),
        _ => Err(ApiError::forbidden(
            "bulk exports are for admins and auditors",
        )),
    }
}

/// The job `id` if the caller may see it: its owner, or an admin. Another's is "not
/// found", like an id that names nothing.
fn visible_job(state: &AppState, caller: &Caller, id: &str) -> Result<Job, ApiError> {
    may_export(caller)?;
    lock(&state.exports.jobs)
        .get(id)
        .filter(|j| caller.role() == Role::Admin || j.owner.sub == caller.id())
        .cloned()
        .ok_or_else(|| ApiError::not_found("export", id))
}

/// `POST /v1/exports`.
pub async fn start(
    state: Data,
    caller: Caller,
    body: web::Json<NewExport>,
) -> Result<HttpResponse, ApiError> {
    may_export(&caller)?;
    let body = body.into_inner();
    let purpose = audit::read_purpose(body.purpose.as_deref(), "operations")?;
    let scope = Scope {
        hospital_id: body.hospital_id,
        record_type: body.record_type,
        from: body.from,
        to: body.to,
    };
    if let (Some(from), Some(to)) = (scope.from, scope.to) {
        if from >= to {
            return Err(ApiError::bad_request(
                "invalid_range",
                "`from` must be before `to`",
            ));
        }
    }
    if let Some(h) = &scope.hospital_id {
        if !medledger_chaincode::is_valid_id(h) {
            return Err(ApiError::bad_request(
                "invalid_field",
                "hospital_id is 1 to 128 characters of [A-Za-z0-9._:@-]",
            ));
        }
    }
    super::submit::disk_room(&state, 0)?;
    let rows_total = state
        .explorer
        .snapshot()
        .map(|s| s.totals().records)
        .unwrap_or(0);
    let id = format!("exp-{}", uuid::Uuid::now_v7());
    let job = Job {
        id: id.clone(),
        owner: caller.0.clone(),
        purpose: purpose.to_owned(),
        scope,
        created_at: now(),
        stage: Stage::Running,
        after: None,
        rows: 0,
        records: 0,
        rows_total,
        files: BTreeMap::new(),
        error: None,
        finished_at: None,
    };
    {
        // Counted and taken under one lock: two requests never both take the last place.
        let mut jobs = lock(&state.exports.jobs);
        if jobs.len() >= EXPORTS_KEPT_MAX {
            return Err(ApiError::new(
                actix_web::http::StatusCode::CONFLICT,
                "too_many_exports",
                format!("{EXPORTS_KEPT_MAX} exports are kept: delete finished ones first (DELETE /v1/exports/{{id}})"),
            ));
        }
        jobs.insert(id.clone(), job.clone());
    }
    let dir = state.exports.job_dir(&id);
    // Durable in `exports/` before the job is answered 202: a power cut keeps it.
    let saved = medledger_storage::ledger::fs::create_dir_durably(&dir)
        .map_err(io("creating its directory", &dir))
        .and_then(|()| state.exports.save(&job));
    if let Err(e) = saved {
        lock(&state.exports.jobs).remove(&id);
        let _ = std::fs::remove_dir_all(&dir);
        return Err(e);
    }
    spawn(state.clone(), id.clone());
    let url = format!("/v1/exports/{id}");
    Ok(HttpResponse::Accepted()
        .insert_header(("Location", url.clone()))
        .insert_header(("Retry-After", "1"))
        .json(json!({"export_id": id, "status_url": url})))
}

/// `GET /v1/exports/{id}`: 202 with `X-Progress` while the job runs, 200 with the
/// manifest once it ended (complete or failed).
pub async fn status(
    state: Data,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let job = visible_job(&state, &caller, &path.into_inner())?;
    if job.stage == Stage::Running {
        return Ok(HttpResponse::Accepted()
            .insert_header(("X-Progress", format!("{:.0}%", progress(&job) * 100.0)))
            .insert_header(("Retry-After", "1"))
            .json(job_json(&job)));
    }
    Ok(HttpResponse::Ok().json(job_json(&job)))
}

/// `GET /v1/exports/{id}/files/{type}`: one file of a complete export, streamed.
pub async fn file(
    state: Data,
    caller: Caller,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (id, record_type) = path.into_inner();
    let job = visible_job(&state, &caller, &id)?;
    let Some(f) = job.files.get(&record_type) else {
        return Err(ApiError::not_found("export file", &record_type));
    };
    if job.stage != Stage::Complete {
        return Err(ApiError::new(
            actix_web::http::StatusCode::CONFLICT,
            "export_not_complete",
            "the export's files are read once it is complete",
        ));
    }
    let path = file_path(&state.exports.job_dir(&id), &record_type);
    let mut file = File::open(&path).map_err(io("opening a file", &path))?;
    // Read on a thread of its own, sent through a bounded channel: constant memory.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<web::Bytes, ApiError>>(8);
    std::thread::Builder::new()
        .name("export-file".into())
        .spawn(move || loop {
            let mut buf = vec![0u8; 256 << 10];
            match file.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    buf.truncate(n);
                    if tx.blocking_send(Ok(web::Bytes::from(buf))).is_err() {
                        return; // the client went away
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(io("reading a file", &path)(e)));
                    return;
                }
            }
        })
        .map_err(|e| ApiError::internal(format!("starting a file's read: {e}")))?;
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Ok(HttpResponse::Ok()
        .content_type("application/x-ndjson")
        .insert_header(("X-Sha256", f.sha256.clone().unwrap_or_default()))
        .streaming(stream))
}

/// `DELETE /v1/exports/{id}`: removes a finished export and its files.
pub async fn delete(
    state: Data,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let job = visible_job(&state, &caller, &path.into_inner())?;
    if job.stage == Stage::Running {
        return Err(ApiError::new(
            actix_web::http::StatusCode::CONFLICT,
            "export_running",
            "a running export is deleted once it ended",
        ));
    }
    let dir = state.exports.job_dir(&job.id);
    // The state goes first: a crash half way leaves files no job names, never a job
    // without its files.
    let state_path = dir.join(STATE_FILE);
    std::fs::remove_file(&state_path).map_err(io("removing its state", &state_path))?;
    lock(&state.exports.jobs).remove(&job.id);
    // Gigabytes, maybe: off the async workers.
    web::block(move || std::fs::remove_dir_all(&dir).map_err(io("removing its files", &dir)))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))??;
    Ok(HttpResponse::Ok().json(json!({"export_id": job.id, "deleted": true})))
}

/// The success bodies of the export routes, for the OpenAPI document.
pub(super) fn schemas() -> Vec<(&'static str, serde_json::Value)> {
    use super::openapi::{array, closed, closed_optional, count, id, time};
    let url = json!({"type": "string", "pattern": "^/v1/exports/"});
    let scope = closed_optional(
        json!({"hospital_id": id(), "record_type": id(), "from": time(), "to": time()}),
        &["hospital_id", "record_type", "from", "to"],
    );
    let file = closed(json!({
        "record_type": id(), "url": url, "records": count(), "bytes": count(),
        "sha256": {"oneOf": [{"type": "null"}, {"type": "string", "pattern": "^[0-9a-f]{64}$"}]}
    }));
    let status = closed(json!({
        "export_id": id(),
        "state": {"type": "string", "enum": ["running", "complete", "failed"]},
        "scope": scope,
        "purpose": {"type": "string", "enum": READ_PURPOSES},
        "requested_by": id(),
        "created_at": time(),
        "finished_at": {"oneOf": [{"type": "null"}, time()]},
        "progress": {"type": "number", "minimum": 0, "maximum": 1},
        "records": count(),
        "files": array(file),
        "error": {"oneOf": [{"type": "null"}, closed(json!({"code": {"type": "string"}, "message": {"type": "string"}}))]}
    }));
    vec![
        (
            "export_started",
            closed(json!({"export_id": id(), "status_url": url})),
        ),
        ("export_status", status),
        (
            "export_deleted",
            closed(json!({"export_id": id(), "deleted": {"const": true}})),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use medledger_chaincode::RecordStatus;

    #[test]
    fn rows_are_kept_by_type_and_a_half_open_range() {
        let summary = Summary {
            status: RecordStatus::Active,
            record_type: "lab_result".into(),
        };
        let scope = Scope {
            record_type: Some("lab_result".into()),
            from: Some(Timestamp(100)),
            to: Some(Timestamp(200)),
            ..Scope::default()
        };
        assert!(row_in_scope(&scope, Timestamp(100), &summary));
        assert!(row_in_scope(&scope, Timestamp(199), &summary));
        assert!(!row_in_scope(&scope, Timestamp(200), &summary));
        assert!(!row_in_scope(&scope, Timestamp(99), &summary));
        let other = Summary {
            record_type: "imaging".into(),
            ..summary
        };
        assert!(!row_in_scope(&scope, Timestamp(150), &other));
        assert!(row_in_scope(&Scope::default(), Timestamp(-5), &other));
    }
}
