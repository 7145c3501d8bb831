//! The HTTP API (actix-web): record submission and queries under `/v1`, health, readiness
//! and metrics. Every answer is JSON; every error has the body of [`error::ApiError`].
//!
//! Submissions are answered only after the block holding them is durable (the orderer's
//! receipt); `?wait=projected` also waits until the views reflect that block and reports
//! the contract's verdict on it.

pub mod auth;
pub mod error;
pub mod metrics;
pub mod records;

use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, HttpResponse};
use serde_json::json;

use medledger_storage::views::ViewStore;
use medledger_storage::Ledger;

use crate::orderer::Orderer;
use crate::projector::Projector;
use auth::Auth;
use error::ApiError;

/// The projector lag (blocks) above which `/readyz` answers 503.
pub const READY_LAG_BLOCKS_MAX: u64 = 1_000;
/// The most a `?wait=projected` submission waits for the views.
pub const PROJECTED_WAIT: Duration = Duration::from_secs(10);
/// JSON request bodies above this are refused with 413.
pub const JSON_BODY_BYTES_MAX: usize = 64 * 1024;

/// What every handler shares.
pub struct AppState {
    pub ledger: Arc<Ledger>,
    pub orderer: Arc<Orderer>,
    pub views: Arc<dyn ViewStore>,
    pub projector: Arc<Projector>,
    pub auth: Auth,
    pub metrics: metrics::Metrics,
}

/// Registers every route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::JsonConfig::default()
            .limit(JSON_BODY_BYTES_MAX)
            .error_handler(|err, _| json_error(err).into()),
    )
    .app_data(web::QueryConfig::default().error_handler(|err, _| {
        ApiError::bad_request("invalid_query", format!("invalid query string: {err}")).into()
    }))
    .app_data(web::PathConfig::default().error_handler(|err, _| {
        ApiError::bad_request("invalid_path", format!("invalid path: {err}")).into()
    }))
    .route("/healthz", web::get().to(healthz))
    .route("/readyz", web::get().to(readyz))
    .route("/metrics", web::get().to(metrics::render))
    .service(
        web::scope("/v1")
            .route("/records", web::post().to(records::create))
            .route("/records/batch", web::post().to(records::create_batch))
            .route("/records/{id}", web::get().to(records::get))
            .route("/records/{id}/history", web::get().to(records::history))
            .route("/records/{id}/amendments", web::post().to(records::amend))
            .route(
                "/records/{id}/status",
                web::post().to(records::change_status),
            )
            .route(
                "/patients/{id}/records",
                web::get().to(records::patient_timeline),
            )
            .route(
                "/patients/{id}/export",
                web::get().to(records::patient_export),
            )
            .route("/patients/{id}/grants", web::post().to(records::grant))
            .route("/patients/{id}/grants", web::get().to(records::list_grants))
            .route(
                "/patients/{id}/grants/{grantee}",
                web::delete().to(records::revoke),
            )
            .route(
                "/clinicians/{id}/records",
                web::get().to(records::clinician_timeline),
            )
            .route(
                "/hospitals/{id}/records",
                web::get().to(records::hospital_timeline),
            ),
    )
    .default_service(web::to(|| async {
        Err::<HttpResponse, _>(ApiError::new(
            actix_web::http::StatusCode::NOT_FOUND,
            "no_route",
            "no such route",
        ))
    }));
}

fn json_error(err: actix_web::error::JsonPayloadError) -> ApiError {
    use actix_web::error::JsonPayloadError as E;
    match err {
        E::Overflow { limit } | E::OverflowKnownLength { limit, .. } => ApiError::new(
            actix_web::http::StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the JSON body is larger than {limit} bytes"),
        ),
        E::ContentType => ApiError::new(
            actix_web::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "the body must be `application/json`",
        ),
        E::Deserialize(e) => {
            ApiError::bad_request("invalid_body", format!("invalid JSON body: {e}"))
        }
        other => ApiError::bad_request("invalid_body", format!("unreadable body: {other}")),
    }
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let lag = state.projector.lag();
    let poisoned = state.ledger.poisoned();
    let projector_error = state.projector.error();
    let ready =
        poisoned.is_none() && projector_error.is_none() && lag.blocks <= READY_LAG_BLOCKS_MAX;
    let body = json!({
        "ready": ready,
        "height": state.ledger.tip().height,
        "views_height": state.projector.applied_height(),
        "projector_lag_blocks": lag.blocks,
        "projector_lag_seconds": lag.seconds,
        "ledger_error": poisoned,
        "projector_error": projector_error,
    });
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}
