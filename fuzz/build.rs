//! RocksDB is C++: when scripts/fuzz.sh links the main build's archive of it
//! (`ROCKSDB_LIB_DIR`), nothing else asks for the C++ runtime, which building it from
//! source would have linked.
fn main() {
    println!("cargo:rerun-if-env-changed=ROCKSDB_LIB_DIR");
    if std::env::var_os("ROCKSDB_LIB_DIR").is_some() {
        println!("cargo:rustc-link-lib=dylib=stdc++");
    }
}
