//! The cluster as the HTTP API shows it: `GET /v1/cluster`, and where a write sent to a
//! node that does not lead goes (307 to the leader's URL, or 503 during an election).

use actix_web::http::{header, Method, StatusCode};
use actix_web::{web, HttpResponse, ResponseError};
use serde::Deserialize;
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
    Ok(HttpResponse::Ok().json(status_json(&state, state.cluster.as_deref())))
}

/// The cluster as this node sees it, with this node's ledger and views heights.
fn status_json(state: &AppState, cluster: Option<&crate::cluster::Cluster>) -> serde_json::Value {
    let height = state.ledger.tip().height;
    let views = state.projector.applied_height();
    match cluster {
        Some(c) => c.status(height, views),
        None => json!({"cluster_id": null, "node_id": null, "leader_id": null, "term": null,
            "nodes": [], "committed_height": height, "applied_height": views}),
    }
}

/// Refuses a membership change unless the caller is an admin and this is a cluster.
fn cluster_admin<'a>(
    state: &'a AppState,
    caller: &Caller,
) -> Result<&'a std::sync::Arc<crate::cluster::Cluster>, ApiError> {
    if caller.role() != super::auth::Role::Admin {
        return Err(ApiError::forbidden(
            "only admins may change the cluster's membership or leader",
        ));
    }
    state.cluster.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "not_a_cluster",
            "this server runs as one node (start it with --cluster)",
        )
    })
}

fn membership_error(e: String) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, "membership_refused", e)
}

/// A node to add: its id and addresses (as in the cluster file).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewNode {
    id: u64,
    raft: std::net::SocketAddr,
    http: std::net::SocketAddr,
}

/// `POST /v1/cluster/learners` (admins, on the leader): adds a node as a learner and
/// answers once it has caught up (by snapshot, then log); it does not vote yet.
pub async fn add_learner(
    state: Data,
    caller: Caller,
    body: web::Json<NewNode>,
) -> Result<HttpResponse, ApiError> {
    let cluster = cluster_admin(&state, &caller)?;
    if body.id == 0 {
        return Err(ApiError::bad_request(
            "invalid_field",
            "node ids start at 1",
        ));
    }
    let node = crate::cluster::ClusterNode::new(body.raft, body.http);
    cluster
        .add_learner(body.id, node)
        .await
        .map_err(membership_error)?;
    Ok(HttpResponse::Ok().json(status_json(&state, Some(cluster.as_ref()))))
}

/// The voters a membership change leaves.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Voters {
    voters: std::collections::BTreeSet<u64>,
}

/// `POST /v1/cluster/voters` (admins, on the leader): makes exactly these nodes the voters
/// (promote a learner by listing it; remove a node by leaving it out).
pub async fn set_voters(
    state: Data,
    caller: Caller,
    body: web::Json<Voters>,
) -> Result<HttpResponse, ApiError> {
    let cluster = cluster_admin(&state, &caller)?;
    if body.voters.is_empty() || body.voters.len() > crate::cluster::config::NODES_MAX {
        return Err(ApiError::bad_request(
            "invalid_field",
            format!(
                "a cluster has 1 to {} voters",
                crate::cluster::config::NODES_MAX
            ),
        ));
    }
    let voters = body.into_inner().voters;
    cluster.set_voters(voters).await.map_err(membership_error)?;
    Ok(HttpResponse::Ok().json(status_json(&state, Some(cluster.as_ref()))))
}

/// The voter to hand the leadership to.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Leader {
    id: u64,
}

/// `POST /v1/cluster/leader` (admins, on the leader): hands the leadership to the voter
/// `id` and answers once it leads (writes pause for the handover, typically well under a
/// second). 409 `transfer_refused` when it could not (not a voter, or it did not win).
pub async fn transfer_leader(
    state: Data,
    caller: Caller,
    body: web::Json<Leader>,
) -> Result<HttpResponse, ApiError> {
    let cluster = cluster_admin(&state, &caller)?;
    cluster
        .transfer_leader(body.id)
        .await
        .map_err(|e| ApiError::new(StatusCode::CONFLICT, "transfer_refused", e))?;
    Ok(HttpResponse::Ok().json(status_json(&state, Some(cluster.as_ref()))))
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
    let read = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    // A read of clinical content puts an event on the ledger, which only the leader
    // commits: it goes there too (unless reads are not recorded).
    let recorded_read = read
        && state.audit_reads != super::audit::AuditReads::Off
        && reads_clinical_content(path_and_query);
    if (read && !recorded_read) || !path_and_query.starts_with("/v1/") || cluster.is_leader() {
        return None;
    }
    Some(match cluster.leader() {
        Some((id, Some(http))) => {
            let location = format!("http://{http}{path_and_query}");
            let mut res = ApiError::new(
                StatusCode::TEMPORARY_REDIRECT,
                "not_leader",
                format!(
                    "node {} does not take writes{}; node {id} leads",
                    cluster.node_id,
                    if recorded_read {
                        " (a read of clinical content is one: it is recorded on the ledger)"
                    } else {
                        ""
                    }
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

/// Whether a GET of `path_and_query` shows clinical content (and so is recorded on the
/// ledger): a record, its history or payload, a timeline, an export, a patient summary.
pub fn reads_clinical_content(path_and_query: &str) -> bool {
    let path = path_and_query.split('?').next().unwrap_or("");
    let parts: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    match parts.as_slice() {
        // `GET /v1/records/batch` too: `batch` is a valid record id.
        ["", "v1", "records", _] => true,
        ["", "v1", "records", _, "history" | "payload"] => true,
        ["", "v1", "patients" | "clinicians" | "hospitals", _, "records"] => true,
        ["", "v1", "patients", _, "export" | "summary"] => true,
        ["", "v1", "search"] => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_reads_of_clinical_content_are_the_audited_routes() {
        use super::reads_clinical_content as reads;
        for path in [
            "/v1/records/r-1",
            "/v1/search?q=chest",
            "/v1/records/r-1?as_of_block=3",
            "/v1/records/r-1/history",
            "/v1/records/r-1/payload?purpose=treatment",
            "/v1/patients/p-1/records",
            "/v1/clinicians/dr-1/records?limit=5",
            "/v1/hospitals/h-1/records",
            "/v1/patients/p-1/export",
            "/v1/patients/p-1/summary",
        ] {
            assert!(reads(path), "{path}");
        }
        for path in [
            "/v1/records",
            "/v1/records/r-1/access-log",
            "/v1/patients/p-1/access-log",
            "/v1/patients/p-1/grants",
            "/v1/chain",
            "/v1/stats?group_by=month",
            "/v1/tx/abc",
            "/healthz",
        ] {
            assert!(!reads(path), "{path}");
        }
    }
}
