//! One conformance suite for every view store (as openraft runs one suite against every
//! log store): the RocksDB store and the sled store (cargo feature `sled`, on by default)
//! run the same `suite`. A build without the feature reports the sled test as ignored
//! rather than dropping it silently.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use medledger_views::rocks::RocksViewStore;
#[cfg(feature = "sled")]
use medledger_views::sled::SledViewStore;
use medledger_views::{Backend, View, ViewBatch, ViewError, ViewStore, LAYOUT};

type Open = dyn Fn(&Path) -> Box<dyn ViewStore>;

fn batch(height: u64, puts: &[(View, &[u8], &[u8])]) -> ViewBatch {
    let mut b = ViewBatch::new(height);
    for (view, k, v) in puts {
        b.put(*view, k, v);
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
    get_many_answers_in_the_keys_order(open);
    scans_honour_prefix_order_cursor_and_limit(open);
    for_each_streams_and_stops(open);
    clear_resets_everything(open);
    data_survives_reopen(open);
    random_ops_match_a_model(open);
    keys_values_and_cursors_at_the_edges(open);
    the_last_op_on_a_key_wins_within_a_batch(open);
    a_clear_is_durable_and_complete(open);
    reads_racing_clears_do_not_fail(open);
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
    b.delete(View::Records, b"r-1");
    b.put(View::Records, b"r-2", b"v2");
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
        b.put(*v, b"same-key", val.clone());
    }
    s.write(&b).unwrap();
    for (v, val) in &puts {
        assert_eq!(s.get(*v, b"same-key").unwrap().as_ref(), Some(val));
        assert_eq!(s.scan(*v, b"", None, 10).unwrap().len(), 1);
    }
}

fn get_many_answers_in_the_keys_order(open: &Open) {
    let (_d, s) = fresh(open);
    s.write(&batch(
        1,
        &[
            (View::Records, b"b", b"2"),
            (View::Records, b"a", b"1"),
            (View::Grants, b"c", b"other view"),
        ],
    ))
    .unwrap();
    // Unsorted, repeated, absent, and a key of another view: each answered in its place.
    let keys: Vec<Vec<u8>> = [&b"b"[..], b"zz", b"a", b"c", b"b", b""]
        .iter()
        .map(|k| k.to_vec())
        .collect();
    let got = s.get_many(View::Records, &keys).unwrap();
    let want: Vec<Option<Vec<u8>>> = vec![
        Some(b"2".to_vec()),
        None,
        Some(b"1".to_vec()),
        None,
        Some(b"2".to_vec()),
        None,
    ];
    assert_eq!(got, want);
    assert!(s.get_many(View::Records, &[]).unwrap().is_empty());
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
            i.to_le_bytes(),
        );
    }
    s.write(&b).unwrap();
    let mut seen = Vec::new();
    s.for_each(View::Audit, b"r-1\0", None, &mut |_, v| {
        seen.push(u32::from_le_bytes(v.try_into().unwrap()));
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(seen, (0..500).collect::<Vec<_>>());
    // Strictly after a cursor, whether or not the cursor is a stored key.
    let mut tail = Vec::new();
    let cursor = [b"r-1\0".as_slice(), &489u32.to_be_bytes()].concat();
    s.for_each(View::Audit, b"r-1\0", Some(&cursor), &mut |_, v| {
        tail.push(u32::from_le_bytes(v.try_into().unwrap()));
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(tail, (490..500).collect::<Vec<_>>());
    let mut tail = Vec::new();
    let between = [cursor.as_slice(), b"\xff"].concat();
    s.for_each(View::Audit, b"r-1\0", Some(&between), &mut |_, v| {
        tail.push(u32::from_le_bytes(v.try_into().unwrap()));
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(tail, (490..500).collect::<Vec<_>>());
    let mut count = 0;
    s.for_each(View::Audit, b"", None, &mut |_, _| {
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
            // Paging through with the cursor, a few rows at a time, gives the same rows.
            let limit = 1 + (height % 3) as usize;
            let mut paged = Vec::new();
            let mut cursor: Option<Vec<u8>> = None;
            for _ in 0..=expected.len() {
                let page = s.scan(view, &prefix, cursor.as_deref(), limit).unwrap();
                let Some((last, _)) = page.last() else { break };
                cursor = Some(last.clone());
                paged.extend(page);
            }
            assert_eq!(paged, expected, "{view:?} at {height}, paged by {limit}");
        }
    }
}

fn keys_values_and_cursors_at_the_edges(open: &Open) {
    let (_d, s) = fresh(open);
    // The empty key and a long run of 0xff bytes in every view: the two ends of each view's
    // key space, where one view's rows meet the next view's in a prefix layout, and past
    // any fixed end bound.
    let long_ff = vec![0xffu8; 2_000];
    let mut b = ViewBatch::new(1);
    for view in View::ALL {
        b.put(view, Vec::new(), vec![view as u8]);
        b.put(view, long_ff.clone(), vec![view as u8]);
    }
    let v = View::Grants;
    b.put(v, b"p", Vec::new());
    b.put(v, b"p\0a", b"1");
    b.put(v, b"p\0c", b"2");
    s.write(&b).unwrap();
    for view in View::ALL {
        assert_eq!(
            s.get(view, b"").unwrap(),
            Some(vec![view as u8]),
            "{view:?}"
        );
        if view != v {
            let rows = s.scan(view, b"", None, 10).unwrap();
            assert_eq!(
                rows,
                vec![
                    (Vec::new(), vec![view as u8]),
                    (long_ff.clone(), vec![view as u8])
                ],
                "{view:?}"
            );
        }
    }
    // An empty value is a value, not an absent row.
    assert_eq!(s.get(v, b"p").unwrap(), Some(Vec::new()));
    assert_eq!(
        keys(&s.scan(v, b"", None, 100).unwrap()),
        vec![&b""[..], b"p", b"p\0a", b"p\0c", &long_ff]
    );
    // Strictly after the empty key: everything else.
    assert_eq!(s.scan(v, b"", Some(b""), 100).unwrap().len(), 4);
    // Cursors that are not stored keys, a stored key equal to the prefix, a cursor that
    // is a prefix of the prefix.
    assert_eq!(
        keys(&s.scan(v, b"p", Some(b"p\0b"), 10).unwrap()),
        vec![&b"p\0c"[..]]
    );
    assert_eq!(
        keys(&s.scan(v, b"p", None, 10).unwrap()),
        vec![&b"p"[..], b"p\0a", b"p\0c"]
    );
    assert_eq!(
        keys(&s.scan(v, b"p", Some(b"p"), 10).unwrap()),
        vec![&b"p\0a"[..], b"p\0c"]
    );
    assert_eq!(
        keys(&s.scan(v, b"p\0", Some(b"p"), 10).unwrap()),
        vec![&b"p\0a"[..], b"p\0c"]
    );
    // Prefixes of only 0xff bytes have no end key at all.
    assert_eq!(keys(&s.scan(v, &[0xff], None, 10).unwrap()), vec![&long_ff]);
    assert_eq!(
        keys(&s.scan(v, &long_ff, None, 10).unwrap()),
        vec![&long_ff]
    );
    assert!(s.scan(v, &long_ff, Some(&long_ff), 10).unwrap().is_empty());
    let mut seen = Vec::new();
    s.for_each(v, &[0xff; 3], Some(&[0xff; 3]), &mut |k, _| {
        seen.push(k.to_vec());
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(seen, vec![long_ff.clone()]);
    let past_everything = [long_ff.as_slice(), &[0]].concat();
    s.for_each(v, b"", Some(&past_everything), &mut |k, _| {
        panic!(
            "nothing sorts after {} bytes of 0xff and a 0, got {k:?}",
            long_ff.len()
        )
    })
    .unwrap();
    // Clearing removes both ends of every view too.
    s.clear().unwrap();
    for view in View::ALL {
        assert!(s.scan(view, b"", None, 10).unwrap().is_empty(), "{view:?}");
        assert_eq!(s.get(view, b"").unwrap(), None, "{view:?}");
    }
}

fn the_last_op_on_a_key_wins_within_a_batch(open: &Open) {
    let (_d, s) = fresh(open);
    let v = View::Records;
    let mut b = ViewBatch::new(1);
    b.put(v, b"a", b"1");
    b.put(v, b"a", b"2");
    b.put(v, b"b", b"1");
    b.delete(v, b"b");
    b.delete(v, b"c");
    b.put(v, b"c", b"3");
    s.write(&b).unwrap();
    assert_eq!(s.get(v, b"a").unwrap().as_deref(), Some(&b"2"[..]));
    assert_eq!(s.get(v, b"b").unwrap(), None);
    assert_eq!(s.get(v, b"c").unwrap().as_deref(), Some(&b"3"[..]));
    // A refused batch does not apply its deletes either.
    let mut refused = ViewBatch::new(0);
    refused.delete(v, b"a");
    assert!(matches!(
        s.write(&refused),
        Err(ViewError::HeightRegression { .. })
    ));
    assert_eq!(s.get(v, b"a").unwrap().as_deref(), Some(&b"2"[..]));
}

fn a_clear_is_durable_and_complete(open: &Open) {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open(dir.path());
        // Enough rows that every store spreads them over many pages and files.
        for height in 1..=4u64 {
            let mut b = ViewBatch::new(height);
            for i in 0..2_000u64 {
                let view = View::ALL[(i % View::ALL.len() as u64) as usize];
                b.put(
                    view,
                    [height, i].map(u64::to_be_bytes).concat(),
                    vec![7; 64],
                );
            }
            s.write(&b).unwrap();
        }
        s.flush().unwrap();
        s.clear().unwrap();
        s.flush().unwrap();
    }
    {
        let s = open(dir.path());
        assert_eq!(s.applied_height().unwrap(), 0);
        for view in View::ALL {
            assert!(s.scan(view, b"", None, 10).unwrap().is_empty(), "{view:?}");
        }
        s.write(&batch(1, &[(View::Records, b"k", b"new")]))
            .unwrap();
        s.flush().unwrap();
    }
    let s = open(dir.path());
    assert_eq!(s.applied_height().unwrap(), 1);
    for view in View::ALL {
        let expected = if view == View::Records { 1 } else { 0 };
        assert_eq!(
            s.scan(view, b"", None, 10).unwrap().len(),
            expected,
            "{view:?}"
        );
    }
}

/// Sets the flag when dropped, so a reader thread stops even if the writer panics.
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

fn reads_racing_clears_do_not_fail(open: &Open) {
    let (_d, s) = fresh(open);
    let s: &dyn ViewStore = &*s;
    let done = AtomicBool::new(false);
    let reads = AtomicU64::new(0);
    std::thread::scope(|scope| {
        let reader = scope.spawn(|| {
            while !done.load(Ordering::Acquire) {
                s.applied_height().unwrap();
                s.get(View::Records, b"r-0007").unwrap();
                let page = s.scan(View::Records, b"r-", None, 50).unwrap();
                assert!(
                    page.windows(2).all(|w| w[0].0 < w[1].0),
                    "scan out of order"
                );
                let mut last: Option<Vec<u8>> = None;
                s.for_each(View::Records, b"r-", None, &mut |k, _| {
                    assert!(k.starts_with(b"r-"), "for_each left its prefix");
                    assert!(last.as_deref() < Some(k), "for_each out of order");
                    last = Some(k.to_vec());
                    ControlFlow::Continue(())
                })
                .unwrap();
                reads.fetch_add(1, Ordering::Relaxed);
            }
        });
        let _stop = SetOnDrop(&done);
        // At least 20 clears, and on until the reader (which a loaded machine may start
        // late) has raced a good number of them; bounded all the same.
        for round in 0..2_000u64 {
            let mut b = ViewBatch::new(round);
            for i in 0..300u32 {
                b.put(View::Records, format!("r-{i:04}").into_bytes(), vec![1; 32]);
            }
            s.write(&b).unwrap();
            s.clear().unwrap();
            if round >= 20 && reads.load(Ordering::Relaxed) >= 20 {
                break;
            }
        }
        drop(_stop);
        reader.join().unwrap();
        assert!(reads.load(Ordering::Relaxed) > 0, "the reader never ran");
    });
}

type TryOpen = dyn Fn(&Path) -> Result<Box<dyn ViewStore>, ViewError>;
/// Overwrites a closed store's stored height-and-layout bytes, as an older build wrote
/// them.
type StampMeta = dyn Fn(&Path, &[u8]);

/// The store records the layout beside the height, refuses views of another layout, and
/// takes any layout's empty store.
fn another_layout_is_refused(try_open: &TryOpen, stamp: &StampMeta) {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = try_open(dir.path()).unwrap();
        s.write(&batch(5, &[(View::Records, b"r-1", b"v")]))
            .unwrap();
        s.flush().unwrap();
    }
    // Layout 1 wrote the height alone, 8 bytes.
    stamp(dir.path(), &5u64.to_le_bytes());
    match try_open(dir.path()) {
        Err(e @ ViewError::Layout { found: 1, expected }) => {
            assert_eq!(expected, LAYOUT);
            assert!(e.to_string().contains("medledger rebuild"), "{e}");
        }
        Err(e) => panic!("expected a layout error, got {e}"),
        Ok(_) => panic!("views of layout 1 opened"),
    }
    // A future layout is refused the same way.
    let mut meta = 5u64.to_le_bytes().to_vec();
    meta.extend_from_slice(&(LAYOUT + 1).to_le_bytes());
    stamp(dir.path(), &meta);
    assert!(matches!(
        try_open(dir.path()),
        Err(ViewError::Layout { found, .. }) if found == LAYOUT + 1
    ));
    // At height 0 no views are stored yet: any layout opens, and the next batch stamps
    // this one.
    stamp(dir.path(), &0u64.to_le_bytes());
    {
        let s = try_open(dir.path()).unwrap();
        assert_eq!(s.applied_height().unwrap(), 0);
        s.write(&batch(1, &[])).unwrap();
        s.flush().unwrap();
    }
    let s = try_open(dir.path()).unwrap();
    assert_eq!(s.applied_height().unwrap(), 1);
    drop(s);
    // A height of another length is malformed, not a layout.
    stamp(dir.path(), &[1, 2, 3]);
    assert!(matches!(
        try_open(dir.path()),
        Err(ViewError::Malformed { .. })
    ));
}

#[test]
fn rocksdb_view_store_passes_the_suite() {
    suite(&|p: &Path| Box::new(RocksViewStore::open(p).unwrap()) as Box<dyn ViewStore>);
    another_layout_is_refused(
        &|p: &Path| RocksViewStore::open(p).map(|s| Box::new(s) as Box<dyn ViewStore>),
        &|p: &Path, meta: &[u8]| {
            let cfs = rocksdb::DB::list_cf(&rocksdb::Options::default(), p).unwrap();
            let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), p, &cfs).unwrap();
            let cf = db.cf_handle("view_meta").unwrap();
            db.put_cf(cf, b"applied_height", meta).unwrap();
            db.flush_cf(cf).unwrap();
        },
    );
}

#[cfg(feature = "sled")]
#[test]
fn sled_view_store_passes_the_suite() {
    suite(&|p: &Path| Box::new(SledViewStore::open(p).unwrap()) as Box<dyn ViewStore>);
    another_layout_is_refused(
        &|p: &Path| SledViewStore::open(p).map(|s| Box::new(s) as Box<dyn ViewStore>),
        &|p: &Path, meta: &[u8]| {
            // sled's lock outlives a dropped store briefly (see `SledViewStore::open`).
            let db = (0..200)
                .find_map(|_| {
                    let db = sled::open(p).ok();
                    if db.is_none() {
                        std::thread::sleep(std::time::Duration::from_millis(10));
                    }
                    db
                })
                .expect("sled's lock is released within two seconds");
            let tree = db.open_tree(b"views").unwrap();
            tree.insert([0x00], meta).unwrap();
            db.flush().unwrap();
        },
    );
}

#[cfg(not(feature = "sled"))]
#[test]
#[ignore = "built without the `sled` feature: the sled view store is not tested"]
fn sled_view_store_passes_the_suite() {}

/// Every row of every view, in key order.
fn all_rows(s: &dyn ViewStore) -> Vec<(View, medledger_views::Rows)> {
    View::ALL
        .into_iter()
        .map(|view| (view, s.scan(view, b"", None, usize::MAX).unwrap()))
        .collect()
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]

    /// A bulk store (a rebuild's) loads every view through sorted runs merged at flush,
    /// and ranges as they are: once flushed, and after a reopen, it holds exactly what
    /// a plain store holds after the same writes, whatever the order of the ops in a
    /// batch (sorted or not), repeated keys within and across batches, and deletes of
    /// keys put in earlier batches or never put. On every backend.
    #[test]
    fn a_flushed_bulk_store_equals_a_plain_store(
        batches in proptest::collection::vec(
            proptest::collection::vec(
                (0..View::ALL.len(), 0u8..3, 0u8..24, proptest::option::weighted(0.75, 0u8..4)),
                0..40,
            ),
            1..12,
        ),
        ranges in proptest::collection::vec((0..View::ALL.len(), 0u8..8), 0..4),
    ) {
        for &backend in Backend::compiled() {
            let dir = tempfile::tempdir().unwrap();
            let plain = backend.open(&dir.path().join("plain"), false).unwrap();
            let bulk = backend.open(&dir.path().join("bulk"), true).unwrap();
            for (i, ops) in batches.iter().enumerate() {
                let mut b = ViewBatch::new(i as u64 + 1);
                for &(view, a, c, value) in ops {
                    let key = vec![b'k', a, c];
                    match value {
                        Some(v) => b.put(View::ALL[view], key, vec![v; usize::from(v)]),
                        None => b.delete(View::ALL[view], key),
                    }
                }
                // Sorted batches (a rebuild's) are written as they are, others sorted
                // first.
                if i % 2 == 1 {
                    b.sort_by_key();
                }
                plain.write(&b).unwrap();
                bulk.write(&b).unwrap();
            }
            // Ranges: keys of their own (`s`, then the range's number), never in a
            // batch nor in another range.
            for (n, &(view, rows)) in ranges.iter().enumerate() {
                let rows: Vec<(Vec<u8>, Vec<u8>)> = (0..rows)
                    .map(|r| (vec![b's', n as u8, r], vec![r; usize::from(r) + 1]))
                    .collect();
                for store in [&plain, &bulk] {
                    store
                        .write_range(
                            View::ALL[view],
                            &mut rows.iter().map(|(k, v)| (k.as_slice(), v.as_slice())),
                        )
                        .unwrap();
                }
            }
            // The views refuse reads until the flush rather than answer from part of
            // their rows.
            for view in View::ALL {
                let loading = bulk.scan(view, b"", None, 1);
                proptest::prop_assert!(
                    matches!(loading, Err(ViewError::Backend(ref m)) if m.contains("after its flush")),
                    "{} {loading:?}", backend.name()
                );
            }
            bulk.flush().unwrap();
            let expected = all_rows(plain.as_ref());
            proptest::prop_assert_eq!(&all_rows(bulk.as_ref()), &expected, "{}", backend.name());
            proptest::prop_assert_eq!(bulk.applied_height().unwrap(), batches.len() as u64);
            proptest::prop_assert!(!dir.path().join("bulk").join("bulk-runs").exists());
            drop(bulk);
            let reopened = backend.open(&dir.path().join("bulk"), false).unwrap();
            proptest::prop_assert_eq!(&all_rows(reopened.as_ref()), &expected, "{}", backend.name());
        }
    }
}

#[test]
fn a_bulk_store_is_loaded_from_empty_only() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = RocksViewStore::open(dir.path()).unwrap();
        s.write(&batch(7, &[(View::Records, b"r-1", b"v")]))
            .unwrap();
        s.flush().unwrap();
    }
    match RocksViewStore::open_with(dir.path(), true) {
        Err(ViewError::Backend(m)) => assert!(m.contains("up to height 7"), "{m}"),
        other => panic!("{:?}", other.map(|_| "opened")),
    }
}
