//! `medledger backup --data-dir D --to DIR` and `medledger restore --from DIR --data-dir D`:
//! a consistent copy of a node's data dir, taken while the server runs and writes go on.
//!
//! The ledger is append-only, so a copy of its segments, each read up to its length when
//! the copy reaches it, is the chain up to some block plus perhaps a torn frame; opening
//! the copy recovers it exactly as a restart after a crash would (the torn frame is cut,
//! the index is rebuilt from the segments), and the copy is then verified. The payload
//! store and its keys are copied after the ledger: a payload is durable before its record
//! is committed, so every payload a copied record names is in the copy (what the copy has
//! beyond that is an orphan the server's start-up reconcile removes). The keys of the data
//! dir (the JWT secret, the checkpoint key, the payload master key) are copied too: guard
//! the backup as you guard the data dir. Views are not copied (a restored server rebuilds
//! them from the ledger), nor is a cluster node's Raft state (docs/CLUSTER.md).

use std::fs;
use std::io::{Read, Write};
use std::path::Path;

use serde_json::json;

use medledger_chaincode::Envelope;
use medledger_storage::ledger::verify::verify;
use medledger_storage::{Ledger, LedgerOptions};

/// Files and bytes copied.
#[derive(Default)]
struct Copied {
    files: u64,
    bytes: u64,
}

fn fail(out: &mut dyn Write, message: String) -> i32 {
    let _ = writeln!(out, "{}", json!({"ok": false, "error": message}));
    2
}

/// `dir` is missing or an empty directory.
fn is_vacant(dir: &Path) -> bool {
    match fs::read_dir(dir) {
        Ok(mut entries) => entries.next().is_none(),
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    }
}

/// Copies `from` to `to` up to `from`'s length when opened (a log being appended to
/// yields a prefix), keeps its permission bits, and fsyncs the copy.
fn copy_file(from: &Path, to: &Path, copied: &mut Copied) -> std::io::Result<()> {
    let src = fs::File::open(from)?;
    let meta = src.metadata()?;
    let mut dst = fs::File::create(to)?;
    dst.set_permissions(meta.permissions())?;
    let n = std::io::copy(&mut src.take(meta.len()), &mut dst)?;
    dst.sync_all()?;
    copied.files += 1;
    copied.bytes += n;
    Ok(())
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// Copies the tree under `from` into `to` (created), files in name order.
fn copy_tree(from: &Path, to: &Path, copied: &mut Copied) -> std::io::Result<()> {
    fs::create_dir_all(to)?;
    let mut entries: Vec<_> = fs::read_dir(from)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let kind = e.file_type()?;
        let target = to.join(e.file_name());
        if kind.is_dir() {
            copy_tree(&e.path(), &target, copied)?;
        } else if kind.is_file() {
            copy_file(&e.path(), &target, copied)?;
        }
    }
    sync_dir(to)
}

/// Opens the ledger in `dir` (recovering it) and verifies it; the JSON to print.
fn open_and_verify(dir: &Path) -> Result<serde_json::Value, String> {
    let (ledger, recovery) =
        Ledger::open(dir, LedgerOptions::default()).map_err(|e| e.to_string())?;
    let is_envelope = |format: u8, tx: &[u8]| {
        Envelope::decode_in(format, tx)
            .map(drop)
            .map_err(|e| e.to_string())
    };
    let report = verify(&ledger, &is_envelope).map_err(|e| e.to_string())?;
    let tip = ledger.tip();
    let _ = ledger.close();
    if !report.ok {
        return Err(format!("the copy does not verify: {:?}", report.failure));
    }
    Ok(
        json!({"height": tip.height, "tip_hash": hex::encode(tip.tip_hash),
        "recovery": recovery}),
    )
}

/// Opens and verifies the ledger in `dir` and prints the outcome with what was copied;
/// the exit code (0 when it verifies, 2 otherwise).
fn verified(dir: &Path, copied: &Copied, what: &str, out: &mut dyn Write) -> i32 {
    match open_and_verify(dir) {
        Ok(mut v) => {
            v["ok"] = true.into();
            v["files"] = copied.files.into();
            v["bytes"] = copied.bytes.into();
            let _ = writeln!(out, "{v}");
            0
        }
        Err(e) => fail(out, format!("{what}: {e}")),
    }
}

/// The files of the data dir copied beside the ledger and the payload store.
const KEY_FILES: [&str; 4] = [
    crate::api::auth::SECRET_FILE,
    crate::api::auth::PREVIOUS_SECRET_FILE,
    crate::serve::CHECKPOINT_KEY_FILE,
    crate::serve::CHECKPOINT_RETIRED_KEYS_FILE,
];

/// `medledger backup`: prints `{"ok", "height", "tip_hash", "files", "bytes", ...}`; exit 0
/// when the copy is complete and verifies, 2 otherwise.
pub fn run_backup(data_dir: &Path, to: &Path, out: &mut dyn Write) -> i32 {
    if !data_dir.join("blocks").is_dir() {
        return fail(
            out,
            "no ledger in the data dir (no blocks/ directory)".into(),
        );
    }
    if !is_vacant(to) {
        return fail(out, "the backup directory exists and is not empty".into());
    }
    let copy = || -> std::io::Result<Copied> {
        let mut c = Copied::default();
        fs::create_dir_all(to)?;
        // The ledger first: every payload its records name is durable before them.
        copy_tree(&data_dir.join("blocks"), &to.join("blocks"), &mut c)?;
        for name in KEY_FILES {
            let p = data_dir.join(name);
            if p.is_file() {
                copy_file(&p, &to.join(name), &mut c)?;
            }
        }
        if data_dir.join("payloads").is_dir() {
            copy_tree(&data_dir.join("payloads"), &to.join("payloads"), &mut c)?;
        }
        sync_dir(to)?;
        Ok(c)
    };
    let copied = match copy() {
        Ok(c) => c,
        Err(e) => return fail(out, format!("copying: {e}")),
    };
    verified(to, &copied, "the copy", out)
}

/// `medledger restore`: copies a backup into an empty data dir and verifies it there;
/// exit 0 when it verifies, 2 otherwise.
pub fn run_restore(from: &Path, data_dir: &Path, out: &mut dyn Write) -> i32 {
    if !from.join("blocks").is_dir() {
        return fail(out, "not a backup (no blocks/ directory)".into());
    }
    if !is_vacant(data_dir) {
        return fail(
            out,
            "the data dir exists and is not empty; restore into a new one".into(),
        );
    }
    let mut copied = Copied::default();
    if let Err(e) = copy_tree(from, data_dir, &mut copied) {
        return fail(out, format!("copying: {e}"));
    }
    verified(data_dir, &copied, "the restored ledger", out)
}
