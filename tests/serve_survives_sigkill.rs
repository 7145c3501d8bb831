//! A real `medledger serve` process on a free loopback port: submit records, SIGKILL it,
//! restart it, and every acknowledged record is there.

use std::time::{Duration, Instant};

mod common;
use common::server::{free_port, request, start, token};

#[test]
fn every_acknowledged_record_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let token = token(dir.path(), "clinician", "dr-1", Some("h-1"));

    let addr = free_port();
    let mut server = start(dir.path(), addr);
    // Submitters on 8 threads; the server is killed while they run.
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let (acked, stop, token) = (acked.clone(), stop.clone(), token.clone());
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && i < 2_000 {
                    let body = format!(r#"{{"patient_id":"p-{w}","hospital_id":"h-1","record_type":"note","record_id":"r-{w}-{i}"}}"#);
                    if let Ok((201, b)) = request(addr, "POST", "/v1/records", Some(&token), Some(&body)) {
                        acked.lock().unwrap().push(b["record_id"].as_str().unwrap().to_owned());
                    }
                    i += 1;
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1_500));
    server.kill().unwrap(); // SIGKILL
    server.wait().unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
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
