//! The Grafana dashboard and the Prometheus alert rules under docs/ops/ name only metrics
//! the server exports: a renamed metric breaks this test, not a hospital's alerting.

use std::collections::BTreeSet;

use actix_web::test;

use medledger::serve::{app, Core, ServeConfig};

fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("medledger_") {
        let start = i + at;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_lowercase() || bytes[end] == b'_') {
            end += 1;
        }
        // A bare prefix (`medledger_*` in prose) names no metric.
        if end > start + "medledger_".len() {
            names.insert(text[start..end].to_owned());
        }
        i = end;
    }
    names
}

#[actix_web::test]
async fn dashboards_and_alerts_use_exported_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let config = ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        workers: 1,
        ..ServeConfig::new(dir.path().to_path_buf())
    };
    let core = Core::open(&config).unwrap();
    let svc = test::init_service(app(core.state.clone())).await;
    // One request first, so the per-route histogram has a series.
    let _ = test::call_service(&svc, test::TestRequest::get().uri("/healthz").to_request()).await;
    let res = test::call_service(&svc, test::TestRequest::get().uri("/metrics").to_request()).await;
    assert!(res.status().is_success());
    let body = String::from_utf8(test::read_body(res).await.to_vec()).unwrap();
    let exported: BTreeSet<String> = body
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    assert!(exported.len() >= 10, "{exported:?}");

    let root = env!("CARGO_MANIFEST_DIR");
    for file in [
        "docs/ops/prometheus-alerts.yml",
        "docs/ops/grafana-dashboard.json",
    ] {
        let text = std::fs::read_to_string(format!("{root}/{file}")).unwrap();
        let used = metric_names(&text);
        assert!(!used.is_empty(), "{file} names no metric");
        for name in used {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .filter(|b| exported.contains(*b))
                .unwrap_or(&name);
            assert!(
                exported.contains(base),
                "{file} uses `{name}`, which /metrics does not export; exported: {exported:?}"
            );
        }
    }
    drop(svc);
    core.close();
}
