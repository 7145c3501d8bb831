//! The workloads, written once over [`Peer`] and [`Session`]: each client is a thread
//! with its own session; sessions are opened before the clock starts.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::error::{PeerError, Result};
use crate::figures::{new_histogram, Figures, Latency};
use crate::peer::{Peer, Session, WORKLOAD_SECONDS_MAX};
use crate::process::{self, MemorySampler};
use crate::record::{PeerRecord, SplitMix64};

/// Parameters of [`ingest`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct IngestOptions {
    /// Concurrent clients (capped at the peer's [`Peer::writers_max`]).
    pub clients: usize,
    /// Records per write call.
    pub batch: usize,
}

/// Parameters of [`timeline_reads`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ReadOptions {
    /// Concurrent clients.
    pub clients: usize,
    /// Pages read in all.
    pub pages: usize,
    /// Records per page.
    pub limit: usize,
    /// Stop after this long even if pages remain.
    pub seconds_max: u64,
}

/// Parameters of [`mixed`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct MixedOptions {
    /// Concurrent clients, each doing reads and writes.
    pub clients: usize,
    /// Operations in all (reads + writes).
    pub operations: usize,
    /// Stop after this long even if operations remain.
    pub seconds_max: u64,
    /// Share of writes, percent (20 for the 80/20 mix).
    pub write_percent: u8,
    /// Records per timeline page.
    pub limit: usize,
    /// Seeds the per-client choice of read or write.
    pub seed: u64,
}

/// CPU, memory and wall time around one timed part.
struct Meter {
    server_pid: Option<u32>,
    server_cpu_start: f64,
    client_cpu_start: f64,
    sampler: Option<MemorySampler>,
    start: Instant,
}

#[derive(Clone)]
struct Metered {
    seconds: f64,
    server_cpu_seconds: Option<f64>,
    client_cpu_seconds: f64,
    peak_memory_bytes: Option<u64>,
}

impl Meter {
    fn start<P: Peer + ?Sized>(peer: &P) -> Self {
        let server_pid = peer.server_pid();
        let pid_for_peak = server_pid.unwrap_or_else(std::process::id);
        process::reset_peak_rss(pid_for_peak);
        Meter {
            server_pid,
            server_cpu_start: server_pid.map_or(0.0, process::tree_cpu_seconds),
            client_cpu_start: process::self_cpu_seconds(),
            sampler: server_pid.map(MemorySampler::start),
            start: Instant::now(),
        }
    }

    fn finish(self) -> Metered {
        let seconds = self.start.elapsed().as_secs_f64();
        let client_cpu_seconds = process::self_cpu_seconds() - self.client_cpu_start;
        let (server_cpu_seconds, peak_memory_bytes) = match self.server_pid {
            Some(pid) => {
                let cpu = process::tree_cpu_seconds(pid) - self.server_cpu_start;
                let pss = self.sampler.map_or(0, MemorySampler::finish);
                let hwm = process::peak_rss(pid).unwrap_or(0);
                (Some(cpu), Some(pss.max(hwm)))
            }
            None => (None, process::peak_rss(std::process::id())),
        };
        Metered {
            seconds,
            server_cpu_seconds,
            client_cpu_seconds,
            peak_memory_bytes,
        }
    }
}

/// What one timed part did, before it becomes [`Figures`].
struct Part<'a> {
    workload: &'a str,
    clients: usize,
    batch: usize,
    body_bytes: usize,
    operations: u64,
    records: u64,
    latency: Latency,
    metered: Metered,
    records_stored: u64,
    notes: Vec<String>,
}

fn figures<P: Peer + ?Sized>(peer: &P, part: Part<'_>) -> Result<Figures> {
    let durability = peer.durability()?;
    let bytes = peer.bytes_on_disk()?;
    let seconds = part.metered.seconds.max(1e-9);
    let mut notes = peer.notes();
    notes.extend(part.notes);
    Ok(Figures {
        peer: peer.name().to_string(),
        workload: part.workload.to_string(),
        durability: durability.summary,
        acknowledged_after_disk: durability.acknowledged_after_disk,
        clients: part.clients,
        batch: part.batch,
        body_bytes: part.body_bytes,
        operations: part.operations,
        records: part.records,
        seconds: part.metered.seconds,
        operations_per_second: part.operations as f64 / seconds,
        records_per_second: part.records as f64 / seconds,
        latency: part.latency,
        server_cpu_seconds: part.metered.server_cpu_seconds,
        client_cpu_seconds: part.metered.client_cpu_seconds,
        server_peak_memory_bytes: part.metered.peak_memory_bytes,
        bytes_on_disk: Some(bytes),
        bytes_on_disk_breakdown: peer.disk_breakdown()?,
        bytes_on_disk_per_record: (part.records_stored > 0)
            .then(|| bytes as f64 / part.records_stored as f64),
        notes,
    })
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

fn record(h: &mut Histogram<u64>, d: Duration) {
    // Saturate rather than fail: the bound is 10 minutes, above any workload's limit.
    h.saturating_record(micros(d));
}

fn open_sessions<P: Peer + ?Sized>(peer: &P, n: usize) -> Result<Vec<Box<dyn Session + '_>>> {
    if n == 0 {
        return Err(PeerError::Invalid("clients must be at least 1".into()));
    }
    (0..n).map(|_| peer.session()).collect()
}

fn merge(results: Vec<Result<(Histogram<u64>, u64)>>) -> Result<(Histogram<u64>, u64)> {
    let mut total = new_histogram();
    let mut count = 0;
    for r in results {
        let (h, n) = r?;
        total.add(&h).expect("same bounds");
        count += n;
    }
    Ok((total, count))
}

fn body_bytes(records: &[PeerRecord]) -> usize {
    records.first().map_or(0, |r| r.body.len())
}

/// Durable ingest: clients take the next `batch` records from a shared cursor and append
/// them; latency is per write call (the time its records waited for their ack).
pub fn ingest<P: Peer + ?Sized>(
    peer: &P,
    records: &[PeerRecord],
    options: &IngestOptions,
) -> Result<Figures> {
    if options.batch == 0 {
        return Err(PeerError::Invalid("batch must be at least 1".into()));
    }
    let clients = options
        .clients
        .min(peer.writers_max().unwrap_or(usize::MAX));
    let chunks: Vec<&[PeerRecord]> = records.chunks(options.batch).collect();
    let sessions = open_sessions(peer, clients)?;
    let next = AtomicUsize::new(0);
    let deadline = Instant::now() + WORKLOAD_SECONDS_MAX;
    let meter = Meter::start(peer);
    let results = std::thread::scope(|s| {
        let handles: Vec<_> = sessions
            .into_iter()
            .map(|mut session| {
                let (next, chunks) = (&next, &chunks);
                s.spawn(move || -> Result<(Histogram<u64>, u64)> {
                    let mut h = new_histogram();
                    let mut written = 0u64;
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= chunks.len() || Instant::now() > deadline {
                            return Ok((h, written));
                        }
                        let t = Instant::now();
                        session.append(chunks[i])?;
                        record(&mut h, t.elapsed());
                        written += chunks[i].len() as u64;
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a client thread panicked"))
            .collect::<Vec<_>>()
    });
    let metered = meter.finish();
    let (h, written) = merge(results)?;
    let mut notes = Vec::new();
    if clients < options.clients {
        notes.push(format!(
            "clients capped at {clients} (the peer allows {clients} writer)"
        ));
    }
    if written < records.len() as u64 {
        notes.push(format!(
            "stopped at the {}s limit after {written} of {} records",
            WORKLOAD_SECONDS_MAX.as_secs(),
            records.len()
        ));
    }
    figures(
        peer,
        Part {
            workload: "ingest",
            clients,
            batch: options.batch,
            body_bytes: body_bytes(records),
            operations: h.len(),
            records: written,
            latency: Latency::from_histogram(&h),
            metered,
            records_stored: written,
            notes,
        },
    )
}

/// Timeline page reads: clients read the first page of `patients[i % len]` for the i-th
/// page; latency is per page.
pub fn timeline_reads<P: Peer + ?Sized>(
    peer: &P,
    patients: &[String],
    options: &ReadOptions,
) -> Result<Figures> {
    let note = format!(
        "first pages of {} records, newest first, patients drawn from the records' \
         skewed distribution; at most {} s",
        options.limit, options.seconds_max
    );
    let read = |session: &mut Box<dyn Session + '_>, patient: &str| {
        Ok(Some(session.timeline_page(patient, options.limit)?.len()))
    };
    Ok(
        reads(peer, patients, options, "timeline", note, read)?
            .expect("every peer reads timelines"),
    )
}

/// Patient summaries ([`Session::summary`]): clients read the summary of
/// `patients[i % len]` for the i-th; latency is per summary. `None` for a peer that
/// does not answer them.
pub fn summary_reads<P: Peer + ?Sized>(
    peer: &P,
    patients: &[String],
    options: &ReadOptions,
) -> Result<Option<Figures>> {
    let note = format!(
        "patient summaries (counts by type and status, newest of each type, 20 newest \
         active), patients drawn from the records' skewed distribution; at most {} s",
        options.seconds_max
    );
    let read = |session: &mut Box<dyn Session + '_>, patient: &str| session.summary(patient);
    reads(peer, patients, options, "summary", note, read)
}

/// Searches ([`Session::search`]) of one class of queries: clients run `queries[i % len]`
/// for the i-th, each for the newest `options.limit` hits; latency is per search, and
/// records counts the hits returned. The workload is `search_<class>`. `None` for a peer
/// that does not search.
pub fn search_reads<P: Peer + ?Sized>(
    peer: &P,
    class: &str,
    queries: &[String],
    options: &ReadOptions,
) -> Result<Option<Figures>> {
    let note = format!(
        "full-text search, class {class}: {} queries cycled, every word of a query ANDed, \
         the newest {} hits with every column; at most {} s",
        queries.len(),
        options.limit,
        options.seconds_max
    );
    let read = |session: &mut Box<dyn Session + '_>, words: &str| {
        Ok(session.search(words, options.limit)?.map(|hits| hits.len()))
    };
    reads(
        peer,
        queries,
        options,
        &format!("search_{class}"),
        note,
        read,
    )
}

/// `options.pages` reads by `options.clients` clients, the i-th of `keys[i % len]` (a
/// patient, a query); records counts what the reads returned. `None` when `read` answers
/// `None` (the peer does not serve this read).
fn reads<P: Peer + ?Sized>(
    peer: &P,
    keys: &[String],
    options: &ReadOptions,
    workload: &str,
    note: String,
    read: impl Fn(&mut Box<dyn Session + '_>, &str) -> Result<Option<usize>> + Sync,
) -> Result<Option<Figures>> {
    if keys.is_empty() {
        return Err(PeerError::Invalid(format!(
            "nothing to read for {workload}"
        )));
    }
    let mut probe = peer.session()?;
    if read(&mut probe, &keys[0])?.is_none() {
        return Ok(None);
    }
    drop(probe);
    let sessions = open_sessions(peer, options.clients)?;
    let next = AtomicUsize::new(0);
    let rows = AtomicU64::new(0);
    let deadline =
        Instant::now() + Duration::from_secs(options.seconds_max).min(WORKLOAD_SECONDS_MAX);
    let meter = Meter::start(peer);
    let results = std::thread::scope(|s| {
        let handles: Vec<_> = sessions
            .into_iter()
            .map(|mut session| {
                let (next, rows, read) = (&next, &rows, &read);
                s.spawn(move || -> Result<(Histogram<u64>, u64)> {
                    let mut h = new_histogram();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= options.pages || Instant::now() > deadline {
                            return Ok((h, 0));
                        }
                        let t = Instant::now();
                        let n = read(&mut session, &keys[i % keys.len()])?.unwrap_or(0);
                        record(&mut h, t.elapsed());
                        rows.fetch_add(n as u64, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a client thread panicked"))
            .collect::<Vec<_>>()
    });
    let metered = meter.finish();
    let (h, _) = merge(results)?;
    figures(
        peer,
        Part {
            workload,
            clients: options.clients,
            batch: options.limit,
            body_bytes: 0,
            operations: h.len(),
            records: rows.load(Ordering::Relaxed),
            latency: Latency::from_histogram(&h),
            metered,
            records_stored: 0,
            notes: vec![note],
        },
    )
    .map(Some)
}

/// The mixed run: each client draws read or write per operation (`write_percent`);
/// a write appends one new record, a read fetches a timeline page. When `new_records`
/// runs out, draws that would write read instead.
pub fn mixed<P: Peer + ?Sized>(
    peer: &P,
    new_records: &[PeerRecord],
    patients: &[String],
    options: &MixedOptions,
) -> Result<Vec<Figures>> {
    if patients.is_empty() {
        return Err(PeerError::Invalid("no patients to read".into()));
    }
    let sessions = open_sessions(peer, options.clients)?;
    let next_op = AtomicUsize::new(0);
    let next_write = AtomicUsize::new(0);
    let deadline =
        Instant::now() + Duration::from_secs(options.seconds_max).min(WORKLOAD_SECONDS_MAX);
    let meter = Meter::start(peer);
    let rows_read = AtomicU64::new(0);
    type Hists = (Histogram<u64>, Histogram<u64>);
    let results = std::thread::scope(|s| {
        let handles: Vec<_> = sessions
            .into_iter()
            .enumerate()
            .map(|(client, mut session)| {
                let (next_op, next_write, rows_read) = (&next_op, &next_write, &rows_read);
                s.spawn(move || -> Result<Hists> {
                    let mut rng = SplitMix64(options.seed ^ ((client as u64 + 1) * 0x9e37));
                    let (mut reads, mut writes) = (new_histogram(), new_histogram());
                    loop {
                        let i = next_op.fetch_add(1, Ordering::Relaxed);
                        if i >= options.operations || Instant::now() > deadline {
                            return Ok((reads, writes));
                        }
                        let wants_write = rng.next() % 100 < u64::from(options.write_percent);
                        let w = if wants_write {
                            next_write.fetch_add(1, Ordering::Relaxed)
                        } else {
                            usize::MAX
                        };
                        let t = Instant::now();
                        if let Some(rec) = new_records.get(w) {
                            session.append(std::slice::from_ref(rec))?;
                            record(&mut writes, t.elapsed());
                        } else {
                            let patient = &patients[(rng.next() as usize) % patients.len()];
                            let page = session.timeline_page(patient, options.limit)?;
                            record(&mut reads, t.elapsed());
                            rows_read.fetch_add(page.len() as u64, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a client thread panicked"))
            .collect::<Vec<_>>()
    });
    let metered = meter.finish();
    let (mut reads, mut writes) = (new_histogram(), new_histogram());
    for r in results {
        let (rh, wh) = r?;
        reads.add(&rh).expect("same bounds");
        writes.add(&wh).expect("same bounds");
    }
    let shared =
        "CPU, memory and seconds are those of the whole mixed run (reads and writes together)";
    let mut out = Vec::new();
    for (workload, h, batch) in [
        ("mixed_read", &reads, options.limit),
        ("mixed_write", &writes, 1),
    ] {
        let records = if workload == "mixed_write" {
            h.len()
        } else {
            rows_read.load(Ordering::Relaxed)
        };
        out.push(figures(
            peer,
            Part {
                workload,
                clients: options.clients,
                batch,
                body_bytes: body_bytes(new_records),
                operations: h.len(),
                records,
                latency: Latency::from_histogram(h),
                metered: metered.clone(),
                records_stored: 0,
                notes: vec![
                    format!(
                        "{}% writes of one record, the rest timeline pages of {}",
                        options.write_percent, options.limit
                    ),
                    shared.to_string(),
                ],
            },
        )?);
    }
    Ok(out)
}

/// Times [`Peer::rebuild_secondary`] over the `records_stored` records the peer holds.
pub fn reindex<P: Peer + ?Sized>(peer: &P, records_stored: u64) -> Result<Option<Figures>> {
    build(peer, "reindex", records_stored, || peer.rebuild_secondary())
}

/// Times one build over the `records_stored` records the peer holds (an index, a
/// rebuild) as the workload `workload`: one operation, its latency the build's time.
/// `build` says what it built, for the notes; `None` when there was nothing to build.
pub fn build<P: Peer + ?Sized>(
    peer: &P,
    workload: &str,
    records_stored: u64,
    build: impl FnOnce() -> Result<Option<String>>,
) -> Result<Option<Figures>> {
    let meter = Meter::start(peer);
    let t = Instant::now();
    let Some(what) = build()? else {
        return Ok(None);
    };
    let took = t.elapsed();
    let metered = meter.finish();
    let mut h = new_histogram();
    record(&mut h, took);
    figures(
        peer,
        Part {
            workload,
            clients: 1,
            batch: 0,
            body_bytes: 0,
            operations: 1,
            records: records_stored,
            latency: Latency::from_histogram(&h),
            metered,
            records_stored,
            notes: vec![what],
        },
    )
    .map(Some)
}
