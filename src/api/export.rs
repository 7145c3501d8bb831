//! `GET /v1/patients/{id}/export`: a patient's whole timeline, NDJSON or CSV, streamed.

use std::ops::ControlFlow;

use actix_web::{web, HttpResponse};
use serde::Deserialize;

use medledger_views::query::{Owner, TimelineFilter, Views};
use medledger_views::values::VersionEntry;

use super::audit::{self, Declared};
use super::auth::Caller;
use super::error::ApiError;
use super::lookup::{honour_min_height, may_read, query_error};
use super::records::record_json;
use super::submit::clinical_error;
use super::AppState;
use medledger_payload::keystore::KeyStore;

type Data = web::Data<AppState>;

/// Exports running at once, at most; more get 503 `busy` (each holds a reading thread).
pub const EXPORTS_MAX: usize = 8;
static EXPORTS_RUNNING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// One running export; dropping it frees its slot.
struct ExportSlot;

impl ExportSlot {
    fn take() -> Option<ExportSlot> {
        use std::sync::atomic::Ordering;
        EXPORTS_RUNNING
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < EXPORTS_MAX).then_some(n + 1)
            })
            .ok()
            .map(|_| ExportSlot)
    }
}

impl Drop for ExportSlot {
    fn drop(&mut self) {
        EXPORTS_RUNNING.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// The columns of a CSV export, in order.
pub const CSV_COLUMNS: [&str; 15] = [
    "record_id",
    "patient_id",
    "hospital_id",
    "record_type",
    "author_id",
    "created_at",
    "version",
    "status",
    "updated_at",
    "payload_cid",
    "payload_erased",
    "tx_id",
    "block_number",
    "position",
    "metadata",
];

/// One CSV field (RFC 4180): quoted when it holds a comma, quote or line break. A field
/// a spreadsheet would run as a formula (`=`, `+`, `-`, `@`, tab, CR first) gets a `'`
/// in front, so opening an export cannot execute anything.
fn csv_field(out: &mut String, text: &str) {
    let formula = text.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let quote = formula || text.contains([',', '"', '\n', '\r']);
    if quote {
        out.push('"');
    }
    if formula {
        out.push('\'');
    }
    for c in text.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    if quote {
        out.push('"');
    }
}

fn csv_line(fields: &[String]) -> String {
    let mut line = String::new();
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            line.push(',');
        }
        csv_field(&mut line, f);
    }
    line.push_str("\r\n");
    line
}

fn csv_record(keys: &KeyStore, entry: &VersionEntry) -> Result<String, ApiError> {
    let s = &entry.state;
    let metadata = crate::clinical::open(keys, &s.record_id, "metadata", &s.metadata)
        .map_err(|e| clinical_error(&e))?;
    Ok(csv_line(&[
        s.record_id.clone(),
        s.patient_id.clone(),
        s.hospital_id.clone(),
        s.record_type.clone(),
        s.author_id.clone(),
        s.created_at.to_string(),
        s.version.to_string(),
        serde_json::to_value(s.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        s.updated_at.to_string(),
        s.payload
            .as_ref()
            .map(|p| p.cid.clone())
            .unwrap_or_default(),
        s.payload_erased.to_string(),
        entry.at.tx_id().to_string(),
        entry.at.block.to_string(),
        entry.at.position.to_string(),
        metadata.text().unwrap_or_default().to_owned(),
    ]))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    min_height: Option<u64>,
    purpose: Option<String>,
    break_glass: Option<String>,
}

/// Records an export sends in one chunk: each chunk's reads are on the ledger before its
/// lines leave.
const EXPORT_CHUNK_RECORDS: usize = 256;

/// `GET /v1/patients/{id}/export`: the whole timeline as NDJSON (or CSV with
/// `Accept: text/csv`), streamed in constant memory (a bounded channel between the
/// reading thread and the response). At most [`EXPORTS_MAX`] run at once.
pub async fn patient_export(
    req: actix_web::HttpRequest,
    state: Data,
    caller: Caller,
    path: web::Path<String>,
    query: web::Query<ExportQuery>,
) -> Result<HttpResponse, ApiError> {
    let patient_id = path.into_inner();
    if !caller.may_list_patient(&patient_id) {
        return Err(ApiError::forbidden(format!(
            "you may not export the records of `{patient_id}`"
        )));
    }
    let declared = Declared::parse(
        &caller,
        query.purpose.as_deref(),
        query.break_glass.as_deref(),
        true,
    )?;
    honour_min_height(&state, query.min_height).await?;
    audit::check_break_glass(&state, &declared, &patient_id).await?;
    let csv = req
        .headers()
        .get(actix_web::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/csv"));
    let slot = ExportSlot::take().ok_or_else(|| {
        ApiError::unavailable(
            "busy",
            format!("{EXPORTS_MAX} exports are running; try again shortly"),
            1,
        )
    })?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<web::Bytes, ApiError>>(64);
    let st = state.clone();
    std::thread::Builder::new()
        .name("export".into())
        .spawn(move || {
            let _slot = slot;
            if csv {
                let header = csv_line(&CSV_COLUMNS.map(String::from));
                if tx.blocking_send(Ok(web::Bytes::from(header))).is_err() {
                    return;
                }
            }
            let views = Views::new(st.views.as_ref());
            // Lines wait here until their reads are on the ledger.
            let mut chunk: Vec<(String, web::Bytes)> = Vec::new();
            let flush = |chunk: &mut Vec<(String, web::Bytes)>| -> bool {
                let reads: Vec<(&str, &str)> = chunk
                    .iter()
                    .map(|(record_id, _)| (patient_id.as_str(), record_id.as_str()))
                    .collect();
                if let Err(e) = audit::record_blocking(&st, &caller, &declared, "export", &reads) {
                    let _ = tx.blocking_send(Err(e));
                    return false;
                }
                for (_, line) in chunk.drain(..) {
                    if tx.blocking_send(Ok(line)).is_err() {
                        return false; // the client went away
                    }
                }
                true
            };
            let result = views.export_timeline(
                Owner::Patient(&patient_id),
                &TimelineFilter::default(),
                &mut |entry| {
                    if !declared.is_break_glass() {
                        match may_read(&st, &caller, &entry) {
                            Ok(false) => return ControlFlow::Continue(()),
                            Ok(true) => {}
                            Err(e) => {
                                let _ = tx.blocking_send(Err(e));
                                return ControlFlow::Break(());
                            }
                        }
                    }
                    let keys = st.payloads.keys();
                    let line = if csv {
                        csv_record(keys, &entry)
                    } else {
                        record_json(keys, &entry).map(|json| {
                            let mut line =
                                serde_json::to_string(&json).expect("a record serialises");
                            line.push('\n');
                            line
                        })
                    };
                    let line = match line {
                        Ok(line) => line,
                        Err(e) => {
                            let _ = tx.blocking_send(Err(e));
                            return ControlFlow::Break(());
                        }
                    };
                    chunk.push((entry.state.record_id.clone(), web::Bytes::from(line)));
                    if chunk.len() >= EXPORT_CHUNK_RECORDS && !flush(&mut chunk) {
                        return ControlFlow::Break(());
                    }
                    ControlFlow::Continue(())
                },
            );
            match result {
                Err(e) => {
                    let _ = tx.blocking_send(Err(query_error(e)));
                }
                Ok(()) if !chunk.is_empty() => {
                    flush(&mut chunk);
                }
                Ok(()) => {}
            }
        })
        .map_err(|e| ApiError::internal(format!("starting the export: {e}")))?;
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Ok(HttpResponse::Ok()
        .content_type(if csv {
            "text/csv; charset=utf-8"
        } else {
            "application/x-ndjson"
        })
        .streaming(stream))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(text: &str) -> String {
        let mut out = String::new();
        csv_field(&mut out, text);
        out
    }

    #[test]
    fn csv_fields_are_quoted_escaped_and_defused() {
        assert_eq!(field("plain"), "plain");
        assert_eq!(field("a,b"), "\"a,b\"");
        assert_eq!(field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(field("two\nlines"), "\"two\nlines\"");
        assert_eq!(field("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(field("+1"), "\"'+1\"");
        assert_eq!(field("-1"), "\"'-1\"");
        assert_eq!(field("@SUM(A1)"), "\"'@SUM(A1)\"");
        assert_eq!(field(""), "");
        assert_eq!(csv_line(&["a".into(), "b,c".into()]), "a,\"b,c\"\r\n");
    }
}
