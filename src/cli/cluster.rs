//! `medledger cluster status|add-learner|promote|remove|transfer-leader`: a running cluster's membership,
//! asked of any node (a change sent to a follower follows its 307 to the leader). The
//! request's admin token is minted from the node's data dir (every node's holds the
//! cluster's JWT secret).

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

/// What to do.
pub enum Action {
    Status,
    AddLearner {
        id: u64,
        raft: std::net::SocketAddr,
        http: std::net::SocketAddr,
    },
    Promote(u64),
    Remove(u64),
    TransferLeader(u64),
}

/// An admin token for a request of the CLI, minted from the data dir's JWT secret.
pub(crate) fn admin_token(data_dir: &Path) -> Result<String, String> {
    if !data_dir.join(crate::api::auth::SECRET_FILE).is_file() {
        return Err("the data dir has no JWT secret (start the node once first)".into());
    }
    let (secret, _) = crate::api::auth::load_or_create_secret(data_dir)?;
    let claims = crate::api::auth::Claims {
        sub: "medledger-cli".into(),
        role: crate::api::auth::Role::Admin,
        hospital: None,
        exp: crate::api::auth::now_secs() + 300,
    };
    crate::api::auth::mint(&secret, &claims).map_err(|e| format!("minting a token: {e}"))
}

/// A GET (`body` none) or a JSON POST to a node, following a follower's 307 to the
/// leader itself.
pub(crate) fn call(
    client: &reqwest::blocking::Client,
    url: &str,
    token: &str,
    path: &str,
    body: Option<Value>,
) -> Result<Value, String> {
    // A follower answers a change with 307 to the leader; followed here, not by reqwest,
    // which drops the Authorization header when a redirect changes the host.
    let mut target = format!("{url}{path}");
    for _ in 0..3 {
        let req = match &body {
            None => client.get(&target),
            Some(b) => client
                .post(&target)
                .header("content-type", "application/json")
                .body(b.to_string()),
        };
        let res = req
            .bearer_auth(token)
            .send()
            .map_err(|e| format!("no answer from {target}: {e}"))?;
        let status = res.status();
        let text = res.text().map_err(|e| e.to_string())?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status == reqwest::StatusCode::TEMPORARY_REDIRECT {
            match value["error"]["details"]["location"].as_str() {
                Some(l) => {
                    target = l.to_owned();
                    continue;
                }
                None => return Err(format!("{status} without a location: {value}")),
            }
        }
        return if status.is_success() {
            Ok(value)
        } else {
            Err(format!("{status}: {value}"))
        };
    }
    Err("redirected more than 3 times".into())
}

/// The voters a status lists.
fn voters(status: &Value) -> BTreeSet<u64> {
    status["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|n| n["role"] == "leader" || n["role"] == "follower")
        .filter_map(|n| n["id"].as_u64())
        .collect()
}

/// Runs `action` against the node at `url`; prints the cluster's status as JSON after it.
/// Exit 0 on success, 1 when the cluster refused, 2 when no node answered.
pub fn run(url: &str, data_dir: &Path, action: Action, out: &mut dyn Write) -> i32 {
    let url = url.trim_end_matches('/');
    let token = match admin_token(data_dir) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("medledger: {e}");
            return 2;
        }
    };
    let client = match reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(crate::cluster::MEMBERSHIP_WAIT + Duration::from_secs(10))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("medledger: {e}");
            return 2;
        }
    };
    let status = match call(&client, url, &token, "/v1/cluster", None) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("medledger: {e}");
            return 2;
        }
    };
    let result = match action {
        Action::Status => Ok(status),
        Action::AddLearner { id, raft, http } => call(
            &client,
            url,
            &token,
            "/v1/cluster/learners",
            Some(json!({"id": id, "raft": raft.to_string(), "http": http.to_string()})),
        ),
        Action::TransferLeader(id) => call(
            &client,
            url,
            &token,
            "/v1/cluster/leader",
            Some(json!({ "id": id })),
        ),
        Action::Promote(id) | Action::Remove(id) => {
            let mut v = voters(&status);
            if matches!(action, Action::Promote(_)) {
                v.insert(id);
            } else {
                v.remove(&id);
            }
            call(
                &client,
                url,
                &token,
                "/v1/cluster/voters",
                Some(json!({ "voters": v })),
            )
        }
    };
    match result {
        Ok(v) => {
            let _ = writeln!(out, "{v}");
            0
        }
        Err(e) => {
            let _ = writeln!(out, "{}", json!({"ok": false, "error": e}));
            1
        }
    }
}
