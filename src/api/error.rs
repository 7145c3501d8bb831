//! One error body everywhere: `{"error": {"code", "message", "details"}}`, with a stable
//! snake_case code and the right status. Messages name ids and limits, never metadata or
//! payload bytes.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::{json, Value};

/// Seconds a client waits before writing again after 507 `storage_full`.
pub const STORAGE_FULL_RETRY_AFTER: u32 = 5;

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Value,
    /// Seconds for a `Retry-After` header (503, 429).
    pub retry_after: Option<u32>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            details: Value::Null,
            retry_after: None,
        }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(what: &str, id: &str) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} `{id}` does not exist"),
        )
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// 507 `storage_full`: the disk is full (or would eat into the reserve); nothing was
    /// written. Writes are taken again by themselves once space is freed.
    pub fn storage_full(message: impl Into<String>) -> Self {
        let mut e = ApiError::new(StatusCode::INSUFFICIENT_STORAGE, "storage_full", message);
        e.retry_after = Some(STORAGE_FULL_RETRY_AFTER);
        e
    }

    /// The message a client may see: a server error's without the paths it may name
    /// (the log keeps it whole).
    pub fn public_message(&self) -> String {
        if self.status.is_server_error() {
            without_paths(&self.message)
        } else {
            self.message.clone()
        }
    }

    pub fn unavailable(code: &'static str, message: impl Into<String>, retry_after: u32) -> Self {
        let mut e = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, message);
        e.retry_after = Some(retry_after);
        e
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl std::error::Error for ApiError {}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status);
        if let Some(secs) = self.retry_after {
            res.insert_header(("Retry-After", secs.to_string()));
        }
        // A server error's message often comes from an I/O error naming a file: the log
        // keeps it whole, the client gets it without the paths.
        let message = self.public_message();
        if message != self.message {
            if self.status == StatusCode::INTERNAL_SERVER_ERROR {
                tracing::error!(code = self.code, message = %self.message, "answered 500");
            } else {
                tracing::debug!(code = self.code, message = %self.message, "answered 5xx");
            }
        }
        res.json(json!({"error": {
            "code": self.code,
            "message": message,
            "details": self.details,
        }}))
    }
}

/// `message` with every path-like word (a `/` followed by at least one more `/`, such as
/// a file path or a URL) replaced by `<path>`; what precedes the first `/` of a word and
/// its closing punctuation stay.
pub fn without_paths(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while !rest.is_empty() {
        let word_end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let (word, tail) = rest.split_at(word_end);
        match word.find('/') {
            Some(slash) if word[slash + 1..].contains('/') => {
                let body = &word[slash..];
                let kept = body.trim_end_matches(|c: char| ")]}>,;:.'\"`".contains(c));
                out.push_str(&word[..slash]);
                out.push_str("<path>");
                out.push_str(&body[kept.len()..]);
            }
            _ => out.push_str(word),
        }
        let space_end = tail
            .find(|c: char| !c.is_whitespace())
            .unwrap_or(tail.len());
        out.push_str(&tail[..space_end]);
        rest = &tail[space_end..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_do_not_carry_paths() {
        let m = "writing /var/lib/medledger/ledger/seg-000001.log: No space left on device (os error 28)";
        assert_eq!(
            without_paths(m),
            "writing <path>: No space left on device (os error 28)"
        );
        assert_eq!(
            without_paths("opening `/srv/d/views` failed; see (/x/y)."),
            "opening `<path>` failed; see (<path>)."
        );
        assert_eq!(
            without_paths("record `r/1` is 5 KiB/s"),
            "record `r/1` is 5 KiB/s"
        );
        let e = ApiError::internal(m);
        let body = actix_web::body::to_bytes(e.error_response().into_body());
        let body = futures_util::FutureExt::now_or_never(body)
            .unwrap()
            .unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(!text.contains("/var/lib"), "{text}");
        assert!(text.contains("No space left on device"), "{text}");
        // Client errors keep their message (ids may hold slashes).
        let e = ApiError::bad_request("invalid_body", "id `a/b/c` is bad");
        let body = actix_web::body::to_bytes(e.error_response().into_body());
        let body = futures_util::FutureExt::now_or_never(body)
            .unwrap()
            .unwrap();
        assert!(String::from_utf8(body.to_vec()).unwrap().contains("a/b/c"));
    }
}
