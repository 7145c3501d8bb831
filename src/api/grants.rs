//! Grant routes: a patient grants, lists and revokes clinicians' access to their records.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use medledger_chaincode::contract::apply_grant_event;
use medledger_chaincode::{AccessGranted, AccessRevoked, Event, Timestamp};
use medledger_views::query::Views;

use super::auth::Caller;
use super::error::ApiError;
use super::lookup::query_error;
use super::submit::{commit, contract_error, envelope, now, store_error, WriteQuery};
use super::{AppState, PAGE_LIMIT_DEFAULT};

type Data = web::Data<AppState>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewGrant {
    grantee_id: String,
    #[serde(default)]
    expires_at: Option<Timestamp>,
    #[serde(default)]
    scope: Vec<String>,
}

/// `POST /v1/patients/{id}/grants`.
pub async fn grant(
    state: Data,
    caller: Caller,
    _query: web::Query<WriteQuery>,
    path: web::Path<String>,
    body: web::Json<NewGrant>,
) -> Result<HttpResponse, ApiError> {
    let patient_id = path.into_inner();
    if !caller.may_manage_grants_of(&patient_id) {
        return Err(ApiError::forbidden(format!(
            "you may not manage the grants of `{patient_id}`"
        )));
    }
    let body = body.into_inner();
    let env = envelope(
        &caller,
        Event::AccessGranted(AccessGranted {
            patient_id: patient_id.clone(),
            grantee_id: body.grantee_id.clone(),
            granted_by: caller.id().to_owned(),
            granted_at: now(),
            expires_at: body.expires_at,
            scope: body.scope,
        }),
    );
    env.check_limits()
        .map_err(|e| ApiError::bad_request("invalid_field", e.to_string()))?;
    let current = Views::new(state.views.as_ref())
        .grant(&patient_id, &body.grantee_id)
        .map_err(store_error)?;
    apply_grant_event(current.as_ref(), &env.event).map_err(|e| contract_error(&e))?;
    let receipt = commit(&state, &env).await?;
    Ok(HttpResponse::Created().json(json!({
        "tx_id": receipt.tx_id.to_string(),
        "patient_id": patient_id,
        "grantee_id": body.grantee_id,
        "block_number": receipt.block_number,
        "position": receipt.position,
        "height": receipt.block_number + 1,
    })))
}

/// `DELETE /v1/patients/{id}/grants/{grantee}`.
pub async fn revoke(
    state: Data,
    caller: Caller,
    _query: web::Query<WriteQuery>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (patient_id, grantee_id) = path.into_inner();
    if !caller.may_manage_grants_of(&patient_id) {
        return Err(ApiError::forbidden(format!(
            "you may not manage the grants of `{patient_id}`"
        )));
    }
    let env = envelope(
        &caller,
        Event::AccessRevoked(AccessRevoked {
            patient_id: patient_id.clone(),
            grantee_id: grantee_id.clone(),
            revoked_by: caller.id().to_owned(),
            revoked_at: now(),
        }),
    );
    env.check_limits()
        .map_err(|e| ApiError::bad_request("invalid_field", e.to_string()))?;
    let current = Views::new(state.views.as_ref())
        .grant(&patient_id, &grantee_id)
        .map_err(store_error)?;
    apply_grant_event(current.as_ref(), &env.event).map_err(|e| contract_error(&e))?;
    let receipt = commit(&state, &env).await?;
    Ok(HttpResponse::Ok().json(json!({
        "tx_id": receipt.tx_id.to_string(),
        "patient_id": patient_id,
        "grantee_id": grantee_id,
        "block_number": receipt.block_number,
        "position": receipt.position,
        "height": receipt.block_number + 1,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantsQuery {
    after: Option<String>,
    limit: Option<usize>,
}

/// `GET /v1/patients/{id}/grants`.
pub async fn list_grants(
    state: Data,
    caller: Caller,
    path: web::Path<String>,
    query: web::Query<GrantsQuery>,
) -> Result<HttpResponse, ApiError> {
    let patient_id = path.into_inner();
    if !caller.may_manage_grants_of(&patient_id) {
        return Err(ApiError::forbidden(format!(
            "you may not see the grants of `{patient_id}`"
        )));
    }
    let limit = query.limit.unwrap_or(PAGE_LIMIT_DEFAULT);
    let views = Views::new(state.views.as_ref());
    // The views refuse a limit out of range (400 invalid_limit).
    let grants = views
        .grants(&patient_id, query.after.as_deref(), limit)
        .map_err(query_error)?;
    // A full page has a next one if one more grant follows its last.
    let next_after = match grants.last() {
        Some(last) if grants.len() == limit => {
            let more = views
                .grants(&patient_id, Some(&last.grantee_id), 1)
                .map_err(query_error)?;
            (!more.is_empty()).then(|| last.grantee_id.clone())
        }
        _ => None,
    };
    Ok(HttpResponse::Ok().json(json!({"items": grants, "next_after": next_after})))
}
