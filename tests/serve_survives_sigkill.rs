//! A real `medledger serve` process on a free loopback port: submit records, SIGKILL it,
//! restart it, and every acknowledged record is there.

use std::time::{Duration, Instant};

mod common;
use common::server::{free_port, load_then_kill, request, start, token};

#[test]
fn every_acknowledged_record_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let token = token(dir.path(), "clinician", "dr-1", Some("h-1"));

    let addr = free_port();
    let mut server = start(dir.path(), addr);
    // Submitters on 8 threads; the server is killed while they run.
    let acked = load_then_kill(
        &mut server,
        addr,
        &token,
        8,
        2_000,
        Duration::from_millis(1_500),
    );
    assert!(
        acked.len() > 10,
        "some records were acknowledged before the kill: {}",
        acked.len()
    );

    let mut server = start(dir.path(), addr);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, ready) = request(addr, "GET", "/readyz", None, None).unwrap();
        if ready["projector_lag_blocks"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the views caught up");
        std::thread::sleep(Duration::from_millis(50));
    }
    for id in &acked {
        let (status, rec) = request(
            addr,
            "GET",
            &format!("/v1/records/{id}"),
            Some(&token),
            None,
        )
        .unwrap();
        assert_eq!(
            status, 200,
            "acknowledged record {id} is missing after SIGKILL: {rec}"
        );
    }
    server.kill().unwrap();
    server.wait().unwrap();
}
