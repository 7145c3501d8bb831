//! Kubo's own response bodies, as recorded from Kubo's RPC API (v0.2x), parsed by the
//! response types `KuboStore` relies on (ipfs-api-backend-hyper 0.6). The js-ipfs test
//! node differs in places (its header lists them); these pin the real Kubo shapes.

use ipfs_api_backend_hyper::response::{
    AddResponse, ApiError, BlockPutResponse, PinAddResponse, PinRmResponse, VersionResponse,
};

#[test]
fn block_put_pin_and_version_bodies_parse() {
    // POST /api/v0/block/put?cid-codec=raw&mhtype=sha2-256
    let put: BlockPutResponse = serde_json::from_str(
        r#"{"Key":"bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4","Size":12}"#,
    )
    .unwrap();
    assert_eq!(
        put.key,
        "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4"
    );
    assert_eq!(put.size, 12);

    // POST /api/v0/pin/add?arg=...&recursive=true (the final object of the stream; the
    // earlier ones carry only "Progress").
    let pin: PinAddResponse =
        serde_json::from_str(r#"{"Pins":["QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"]}"#)
            .unwrap();
    assert_eq!(pin.pins, ["QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"]);
    assert_eq!(pin.progress, None);
    let progress: PinAddResponse = serde_json::from_str(r#"{"Pins":null,"Progress":3}"#).unwrap();
    assert!(progress.pins.is_empty());
    assert_eq!(progress.progress, Some(3));

    // POST /api/v0/pin/rm?arg=...
    let rm: PinRmResponse =
        serde_json::from_str(r#"{"Pins":["QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"]}"#)
            .unwrap();
    assert_eq!(rm.pins.len(), 1);

    // POST /api/v0/version (Kubo adds Golang and System).
    let v: VersionResponse = serde_json::from_str(
        r#"{"Version":"0.29.0","Commit":"3f0947b","Repo":"15","System":"amd64/linux","Golang":"go1.22.4"}"#,
    )
    .unwrap();
    assert_eq!(v.version, "0.29.0");
    assert_eq!(v.golang.as_deref(), Some("go1.22.4"));
}

#[test]
fn error_bodies_and_the_add_size_difference() {
    // Kubo's error body (HTTP 500), e.g. pin/rm of a CID that is not pinned.
    let e: ApiError = serde_json::from_str(
        r#"{"Message":"not pinned or pinned indirectly","Code":0,"Type":"error"}"#,
    )
    .unwrap();
    assert_eq!(e.message, "not pinned or pinned indirectly");
    assert_eq!(e.code, 0);

    // `add` reports Size as a string in Kubo and as a number in js-ipfs: the crate's type
    // takes only Kubo's form. KuboStore never calls `add` (it pushes the blocks it built
    // with block/put), so neither shape can break it; this pins why.
    let kubo: AddResponse = serde_json::from_str(
        r#"{"Name":"hello.txt","Hash":"QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o","Size":"20"}"#,
    )
    .unwrap();
    assert_eq!(kubo.size, "20");
    assert!(serde_json::from_str::<AddResponse>(
        r#"{"Name":"hello.txt","Hash":"QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o","Size":20}"#
    )
    .is_err());
}
