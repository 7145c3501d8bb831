//! Key rotations an admin asks of a running server: the master key that wraps every data
//! key (docs/PAYLOADS.md §2) and the JWT secret (docs/API.md, "Tokens"). The checkpoint
//! key rotates with the explorer's routes (`POST /v1/checkpoint/rotate`).

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::auth::Caller;
use super::error::ApiError;
use super::AppState;

type Data = web::Data<AppState>;

/// `POST /v1/keys/rotate` (admins): re-wrap every data key (payloads' and records') under
/// a new master key; the old master key file is replaced. Key operations wait meanwhile.
/// 409 `master_key_not_a_file` when the key comes from the environment, a command or a
/// cluster's secret (rotate it there).
pub async fn rotate_keys(state: Data, caller: Caller) -> Result<HttpResponse, ApiError> {
    caller.admin_only("rotating the master key")?;
    if !state.payloads.master_key_is_a_file() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "master_key_not_a_file",
            "the master key does not come from a file this server owns: rotate it where it comes from",
        ));
    }
    let started = std::time::Instant::now();
    let rotation = state.payloads.rotate_master().await.map_err(|e| {
        tracing::error!(error = %e, "master key rotation");
        ApiError::internal("the master key rotation failed; the old master key stays (see the log)")
    })?;
    tracing::info!(
        keys = rotation.keys_rewrapped,
        erased = rotation.erased_kept,
        "rotated the master key"
    );
    Ok(HttpResponse::Ok().json(json!({
        "keys_rewrapped": rotation.keys_rewrapped,
        "erased_kept": rotation.erased_kept,
        "seconds": started.elapsed().as_secs_f64(),
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtRotation {
    #[serde(default)]
    grace_seconds: Option<u64>,
}

/// How long tokens of a rotated JWT secret stay accepted unless the request says.
pub const JWT_GRACE_SECS_DEFAULT: u64 = 24 * 3600;

/// `POST /v1/keys/rotate-jwt` (admins): replace the HS256 secret tokens are signed with;
/// tokens of the old one stay accepted for `grace_seconds` (default a day, at most a
/// week). 409 `jwt_secret_not_rotatable` for RS256 tokens or a cluster's secret.
pub async fn rotate_jwt(
    state: Data,
    caller: Caller,
    body: web::Json<JwtRotation>,
) -> Result<HttpResponse, ApiError> {
    caller.admin_only("rotating the JWT secret")?;
    if !state.auth.is_rotatable() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "jwt_secret_not_rotatable",
            "tokens here are checked with a key this server does not own (RS256, or a cluster's secret)",
        ));
    }
    let grace = body.grace_seconds.unwrap_or(JWT_GRACE_SECS_DEFAULT);
    if grace > crate::api::auth::JWT_GRACE_SECS_MAX {
        return Err(ApiError::bad_request(
            "invalid_field",
            format!(
                "grace_seconds is at most {}",
                crate::api::auth::JWT_GRACE_SECS_MAX
            ),
        ));
    }
    let until = state.auth.rotate_hs256(grace).map_err(|e| {
        tracing::error!(error = %e, "JWT secret rotation");
        ApiError::internal("the JWT secret rotation failed; the old secret stays (see the log)")
    })?;
    tracing::info!(grace, "rotated the JWT secret");
    Ok(HttpResponse::Ok().json(json!({ "previous_accepted_until": until })))
}
