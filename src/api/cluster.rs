//! The cluster as the HTTP API shows it: `GET /v1/cluster`, and where a write sent to a
//! node that does not lead goes (307 to the leader's URL, or 503 during an election).

use actix_web::http::{header, Method, StatusCode};
use actix_web::{web, HttpResponse, ResponseError};
use serde_json::json;

use super::auth::Caller;
use super::error::ApiError;
use super::AppState;

type Data = web::Data<AppState>;

/// `GET /v1/cluster` (auditors, admins): the cluster's nodes, roles and heights as this
/// node sees them. One node on its own answers with no cluster id and no nodes.
pub async fn status(state: Data, caller: Caller) -> Result<HttpResponse, ApiError> {
    if !caller.may_explore() {
        return Err(ApiError::forbidden(
            "only auditors and admins may see the cluster's state",
        ));
    }
    let height = state.ledger.tip().height;
    let views = state.projector.applied_height();
    Ok(HttpResponse::Ok().json(match &state.cluster {
        Some(c) => c.status(height, views),
        None => json!({"cluster_id": null, "node_id": null, "leader_id": null, "term": null,
            "nodes": [], "committed_height": height, "applied_height": views}),
    }))
}

/// For a write (any method but GET, HEAD and OPTIONS under `/v1/`) that reaches a node
/// which does not lead its cluster: `307 Temporary Redirect` to the same path on the
/// leader (a client that follows it sends the same method and body again), or `503` with
/// `Retry-After` while no leader is known. None: the write is for this node.
pub fn write_elsewhere(
    state: &AppState,
    method: &Method,
    path_and_query: &str,
) -> Option<HttpResponse> {
    let cluster = state.cluster.as_ref()?;
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
        || !path_and_query.starts_with("/v1/")
        || cluster.is_leader()
    {
        return None;
    }
    Some(match cluster.leader() {
        Some((id, Some(http))) => {
            let location = format!("http://{http}{path_and_query}");
            let mut res = ApiError::new(
                StatusCode::TEMPORARY_REDIRECT,
                "not_leader",
                format!(
                    "node {} does not take writes; node {id} leads",
                    cluster.node_id
                ),
            )
            .with_details(json!({"leader_id": id, "location": location}))
            .error_response();
            // The path came in a request line, so it is a valid header value.
            if let Ok(v) = header::HeaderValue::from_str(&location) {
                res.headers_mut().insert(header::LOCATION, v);
            }
            res
        }
        _ => ApiError::unavailable(
            "no_leader",
            "the cluster is electing a leader; try again shortly",
            1,
        )
        .error_response(),
    })
}
