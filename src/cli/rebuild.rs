//! `medledger rebuild` and `medledger verify --views`.
//!
//! Both print one JSON object on stdout and progress on stderr: a bar that redraws in
//! place on a terminal, a line every few seconds otherwise (logs, CI).

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

use medledger_storage::{Ledger, LedgerOptions};
use medledger_views::Backend;

use medledger_views::rebuild::{self, Progress, Stage};

/// Prints progress to stderr.
pub struct ProgressPrinter {
    label: &'static str,
    terminal: bool,
    /// The stage shown, since when, and whether its last line (done) was printed.
    stage: Option<(Stage, Instant, bool)>,
    last: Instant,
    every: Duration,
    drew: bool,
}

impl ProgressPrinter {
    /// A printer for `label` (e.g. "rebuild").
    pub fn new(label: &'static str) -> Self {
        let terminal = std::io::stderr().is_terminal();
        let now = Instant::now();
        ProgressPrinter {
            label,
            terminal,
            stage: None,
            last: now,
            every: if terminal {
                Duration::from_millis(100)
            } else {
                Duration::from_secs(5)
            },
            drew: false,
        }
    }

    /// Reports `p`, at most every so often.
    pub fn update(&mut self, p: Progress) {
        let now = Instant::now();
        let done = p.done == p.total;
        let started = match &mut self.stage {
            Some((stage, started, finished)) if *stage == p.stage => {
                if *finished || (now.duration_since(self.last) < self.every && !(done && self.drew))
                {
                    return;
                }
                *finished = done;
                *started
            }
            _ => {
                self.stage = Some((p.stage, now, done));
                now
            }
        };
        self.last = now;
        let secs = now.duration_since(started).as_secs_f64().max(1e-9);
        let frac = if p.total == 0 {
            1.0
        } else {
            p.done as f64 / p.total as f64
        };
        let rate = p.events as f64 / secs;
        let mut err = std::io::stderr().lock();
        if self.terminal {
            const WIDTH: usize = 30;
            let filled = ((frac * WIDTH as f64) as usize).min(WIDTH);
            let _ = write!(
                err,
                "\r{} {:<10} [{}{}] {:>5.1}%  {} / {} {}  {} events  {:.0} events/s ",
                self.label,
                p.stage.as_str(),
                "#".repeat(filled),
                " ".repeat(WIDTH - filled),
                frac * 100.0,
                p.done,
                p.total,
                p.stage.unit(),
                p.events,
                rate
            );
            if done {
                let _ = writeln!(err);
            }
        } else {
            let _ = writeln!(
                err,
                "{} {}: {:.1}% ({} / {} {}, {} events, {:.0} events/s)",
                self.label,
                p.stage.as_str(),
                frac * 100.0,
                p.done,
                p.total,
                p.stage.unit(),
                p.events,
                rate
            );
        }
        self.drew = true;
    }
}

fn open_ledger(data_dir: &Path, out: &mut dyn Write) -> Result<Ledger, i32> {
    if !data_dir.join("blocks").is_dir() {
        let msg = format!("no ledger in {} (no blocks/ directory)", data_dir.display());
        let _ = writeln!(out, "{}", json!({"ok": false, "error": msg}));
        return Err(2);
    }
    match Ledger::open(data_dir, LedgerOptions::default()) {
        Ok((ledger, _)) => Ok(ledger),
        Err(e) => {
            let _ = writeln!(out, "{}", json!({"ok": false, "error": e.to_string()}));
            Err(2)
        }
    }
}

/// `medledger rebuild`: exit 0 with `{events, blocks, seconds, events_per_sec, ...}`, or 2.
pub fn run_rebuild(data_dir: &Path, backend: Backend, out: &mut dyn Write) -> i32 {
    let ledger = match open_ledger(data_dir, out) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let mut printer = ProgressPrinter::new("rebuild");
    match rebuild::rebuild(data_dir, &ledger, backend, &mut |p| printer.update(p)) {
        Ok(s) => {
            let _ = writeln!(
                out,
                "{}",
                json!({
                    "ok": true,
                    "backend": backend.name(),
                    "events": s.events,
                    "rejected": s.rejected,
                    "blocks": s.blocks,
                    "seconds": s.seconds,
                    "events_per_sec": s.events_per_sec,
                })
            );
            0
        }
        Err(e) => {
            let _ = writeln!(out, "{}", json!({"ok": false, "error": e.to_string()}));
            2
        }
    }
}

/// `medledger verify --views`: exit 0 when every view equals a rebuild, 1 naming the
/// first differing key, 2 when it cannot run.
pub fn run_verify_views(data_dir: &Path, backend: Backend, out: &mut dyn Write) -> i32 {
    let ledger = match open_ledger(data_dir, out) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let mut printer = ProgressPrinter::new("verify views");
    match rebuild::verify_views(data_dir, &ledger, backend, &mut |p| printer.update(p)) {
        Ok(report) => {
            let mut answer = json!(report);
            let mut ok = report.ok;
            if ok {
                let search = verify_search(data_dir, &ledger, backend);
                ok = search["ok"] != json!(false);
                answer["search"] = search;
                answer["ok"] = json!(ok);
            }
            let _ = writeln!(out, "{answer}");
            i32::from(!ok)
        }
        Err(e) => {
            let _ = writeln!(out, "{}", json!({"ok": false, "error": e.to_string()}));
            2
        }
    }
}

/// The search index against one built afresh (docs/SEARCH.md): `{"ok", "height", "rows",
/// "first_difference"}`, or `{"checked": false, "reason"}` when it cannot be (no index
/// yet, or the keys' master key is not a file here: a cluster node derives it from the
/// cluster secret), or `{"ok": false, "error"}`.
fn verify_search(
    data_dir: &Path,
    ledger: &medledger_storage::Ledger,
    backend: Backend,
) -> serde_json::Value {
    let skipped = |reason: &str| json!({"checked": false, "reason": reason});
    if !data_dir.join(crate::search::SEARCH_DIR).exists() {
        return skipped("no search index (the server builds it at its start)");
    }
    if !data_dir.join("payloads").join("master.key").exists() {
        return skipped("the master key is not a file in the data dir (a cluster node's derives from the cluster secret)");
    }
    let checked = (|| -> Result<Option<crate::search::SearchCheck>, String> {
        let keys = crate::clinical::open_keys(data_dir)?;
        let views = rebuild::open_views(data_dir, backend).map_err(|e| e.to_string())?;
        crate::search::verify(data_dir, ledger, views.as_ref(), &keys)
    })();
    match checked {
        Ok(Some(check)) => json!(check),
        Ok(None) => skipped("no search index"),
        Err(e) => json!({"ok": false, "error": e}),
    }
}
