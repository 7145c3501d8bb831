//! One conformance suite for every view store (as openraft runs one suite against every
//! log store). RocksDB today; the sled store will run the same `suite`.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::Path;

use medledger_storage::views::rocks::RocksViewStore;
use medledger_storage::views::{View, ViewBatch, ViewError, ViewStore};

type Open = dyn Fn(&Path) -> Box<dyn ViewStore>;

fn batch(height: u64, puts: &[(View, &[u8], &[u8])]) -> ViewBatch {
    let mut b = ViewBatch::new(height);
    for (view, k, v) in puts {
        b.put(*view, k.to_vec(), v.to_vec());
    }
    b
}

fn keys(rows: &[(Vec<u8>, Vec<u8>)]) -> Vec<&[u8]> {
    rows.iter().map(|(k, _)| k.as_slice()).collect()
}

fn suite(open: &Open) {
    new_store_is_empty_at_height_zero(open);
    a_batch_and_its_height_land_together(open);
    the_height_never_goes_back(open);
    views_are_separate(open);
    scans_honour_prefix_order_cursor_and_limit(open);
    for_each_streams_and_stops(open);
    clear_resets_everything(open);
    data_survives_reopen(open);
    random_ops_match_a_model(open);
}

fn fresh(open: &Open) -> (tempfile::TempDir, Box<dyn ViewStore>) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    (dir, store)
}

fn new_store_is_empty_at_height_zero(open: &Open) {
    let (_d, s) = fresh(open);
    assert_eq!(s.applied_height().unwrap(), 0);
    for view in View::ALL {
        assert_eq!(s.get(view, b"anything").unwrap(), None);
        assert!(s.scan(view, b"", None, 10).unwrap().is_empty());
    }
}

fn a_batch_and_its_height_land_together(open: &Open) {
    let (_d, s) = fresh(open);
    s.write(&batch(
        3,
        &[
            (View::Records, b"r-1", b"v1"),
            (View::Grants, b"p-1\0dr-2", b"g"),
        ],
    ))
    .unwrap();
    assert_eq!(s.applied_height().unwrap(), 3);
    assert_eq!(
        s.get(View::Records, b"r-1").unwrap().as_deref(),
        Some(&b"v1"[..])
    );
    let mut b = ViewBatch::new(4);
    b.delete(View::Records, b"r-1".to_vec());
    b.put(View::Records, b"r-2".to_vec(), b"v2".to_vec());
    s.write(&b).unwrap();
    assert_eq!(s.get(View::Records, b"r-1").unwrap(), None);
    assert_eq!(
        s.get(View::Records, b"r-2").unwrap().as_deref(),
        Some(&b"v2"[..])
    );
    assert_eq!(s.applied_height().unwrap(), 4);
    // A batch with no ops still moves the height (a block with nothing to project).
    s.write(&ViewBatch::new(5)).unwrap();
    assert_eq!(s.applied_height().unwrap(), 5);
}

fn the_height_never_goes_back(open: &Open) {
    let (_d, s) = fresh(open);
    s.write(&batch(10, &[])).unwrap();
    let err = s
        .write(&batch(9, &[(View::Records, b"x", b"y")]))
        .unwrap_err();
    assert!(matches!(
        err,
        ViewError::HeightRegression {
            current: 10,
            requested: 9
        }
    ));
    assert_eq!(
        s.get(View::Records, b"x").unwrap(),
        None,
        "a refused batch writes nothing"
    );
    assert_eq!(s.applied_height().unwrap(), 10);
    s.write(&batch(10, &[(View::Records, b"x", b"y")])).unwrap();
}

fn views_are_separate(open: &Open) {
    let (_d, s) = fresh(open);
    let puts: Vec<(View, Vec<u8>)> = View::ALL.iter().map(|v| (*v, vec![*v as u8; 3])).collect();
    let mut b = ViewBatch::new(1);
    for (v, val) in &puts {
        b.put(*v, b"same-key".to_vec(), val.clone());
    }
    s.write(&b).unwrap();
    for (v, val) in &puts {
        assert_eq!(s.get(*v, b"same-key").unwrap().as_ref(), Some(val));
        assert_eq!(s.scan(*v, b"", None, 10).unwrap().len(), 1);
    }
}

fn scans_honour_prefix_order_cursor_and_limit(open: &Open) {
    let (_d, s) = fresh(open);
    let ks: [&[u8]; 7] = [
        b"p-1\0a",
        b"p-1\0b",
        b"p-1\0c",
        b"p-10\0a",
        b"p-2\0a",
        b"p-1",
        b"p-1\xff\xff",
    ];
    let puts: Vec<(View, &[u8], &[u8])> = ks
        .iter()
        .map(|k| (View::PatientTimeline, *k, &b"v"[..]))
        .collect();
    s.write(&batch(1, &puts)).unwrap();
    let v = View::PatientTimeline;
    let all = s.scan(v, b"p-1\0", None, 100).unwrap();
    assert_eq!(keys(&all), vec![&b"p-1\0a"[..], b"p-1\0b", b"p-1\0c"]);
    let page1 = s.scan(v, b"p-1\0", None, 2).unwrap();
    assert_eq!(keys(&page1), vec![&b"p-1\0a"[..], b"p-1\0b"]);
    let page2 = s.scan(v, b"p-1\0", Some(&page1[1].0), 2).unwrap();
    assert_eq!(keys(&page2), vec![&b"p-1\0c"[..]]);
    assert!(s.scan(v, b"p-1\0", Some(b"p-1\0c"), 2).unwrap().is_empty());
    // A cursor before the prefix starts at the prefix; one after it yields nothing.
    assert_eq!(s.scan(v, b"p-1\0", Some(b"a"), 10).unwrap().len(), 3);
    assert!(s.scan(v, b"p-1\0", Some(b"z"), 10).unwrap().is_empty());
    // Prefixes ending in 0xff bytes have no simple end key.
    assert_eq!(
        keys(&s.scan(v, b"p-1\xff", None, 10).unwrap()),
        vec![&b"p-1\xff\xff"[..]]
    );
    // The whole view, in byte order.
    let every = s.scan(v, b"", None, 100).unwrap();
    let mut sorted: Vec<&[u8]> = ks.to_vec();
    sorted.sort();
    assert_eq!(keys(&every), sorted);
    assert!(s.scan(v, b"", None, 0).unwrap().is_empty());
}

fn for_each_streams_and_stops(open: &Open) {
    let (_d, s) = fresh(open);
    let mut b = ViewBatch::new(1);
    for i in 0..500u32 {
        b.put(
            View::Audit,
            [b"r-1\0".as_slice(), &i.to_be_bytes()].concat(),
            i.to_le_bytes().to_vec(),
        );
    }
    s.write(&b).unwrap();
    let mut seen = Vec::new();
    s.for_each(View::Audit, b"r-1\0", &mut |_, v| {
        seen.push(u32::from_le_bytes(v.try_into().unwrap()));
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(seen, (0..500).collect::<Vec<_>>());
    let mut count = 0;
    s.for_each(View::Audit, b"", &mut |_, _| {
        count += 1;
        if count == 7 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .unwrap();
    assert_eq!(count, 7);
}

fn clear_resets_everything(open: &Open) {
    let (_d, s) = fresh(open);
    let puts: Vec<(View, &[u8], &[u8])> = View::ALL
        .iter()
        .map(|v| (*v, &b"k"[..], &b"v"[..]))
        .collect();
    s.write(&batch(42, &puts)).unwrap();
    s.clear().unwrap();
    assert_eq!(s.applied_height().unwrap(), 0);
    for view in View::ALL {
        assert!(s.scan(view, b"", None, 10).unwrap().is_empty(), "{view:?}");
    }
    s.write(&batch(1, &[(View::Records, b"k", b"again")]))
        .unwrap();
    assert_eq!(
        s.get(View::Records, b"k").unwrap().as_deref(),
        Some(&b"again"[..])
    );
}

fn data_survives_reopen(open: &Open) {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open(dir.path());
        s.write(&batch(7, &[(View::Records, b"r-1", b"v")]))
            .unwrap();
        s.flush().unwrap();
    }
    let s = open(dir.path());
    assert_eq!(s.applied_height().unwrap(), 7);
    assert_eq!(
        s.get(View::Records, b"r-1").unwrap().as_deref(),
        Some(&b"v"[..])
    );
}

fn random_ops_match_a_model(open: &Open) {
    let (_d, s) = fresh(open);
    let mut model: BTreeMap<(u8, Vec<u8>), Vec<u8>> = BTreeMap::new();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut rnd = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    for height in 1..=60u64 {
        let mut b = ViewBatch::new(height);
        for _ in 0..rnd(20) {
            let view = View::ALL[rnd(View::ALL.len() as u64) as usize];
            let key = vec![b'k', rnd(4) as u8, rnd(256) as u8];
            if rnd(4) == 0 {
                model.remove(&(view as u8, key.clone()));
                b.delete(view, key);
            } else {
                let value = vec![rnd(256) as u8; rnd(5) as usize];
                model.insert((view as u8, key.clone()), value.clone());
                b.put(view, key, value);
            }
        }
        s.write(&b).unwrap();
        for view in View::ALL {
            let prefix = [b'k', rnd(4) as u8];
            let expected: Vec<(Vec<u8>, Vec<u8>)> = model
                .iter()
                .filter(|((v, k), _)| *v == view as u8 && k.starts_with(&prefix))
                .map(|((_, k), v)| (k.clone(), v.clone()))
                .collect();
            assert_eq!(
                s.scan(view, &prefix, None, 1_000).unwrap(),
                expected,
                "{view:?} at {height}"
            );
        }
    }
}

#[test]
fn rocksdb_view_store_passes_the_suite() {
    suite(&|p: &Path| Box::new(RocksViewStore::open(p).unwrap()) as Box<dyn ViewStore>);
}
