//! The set-up scripts decide what to install by Debian's package state and check the
//! result the way the build looks for it (issue 19: a glob for `libclang*.so*` matched
//! `libclang-cpp.so.14` from another package, `libclang-dev` was never installed, and the
//! RocksDB build failed on a fresh machine). The scripts run here against a fake package
//! database (`dpkg-query --admindir`), a fake `llvm-config` and a fake file-system root, as
//! dry runs: they print what they would install and install nothing.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A fake machine: a dpkg database holding `installed` (and `removed`, left as config
/// files only), a root whose library directories hold `libs`, and an `llvm-config` that
/// names the root's LLVM library directory.
struct FakeMachine {
    dir: tempfile::TempDir,
}

impl FakeMachine {
    fn new(installed: &[&str], removed: &[&str], libs: &[&str]) -> FakeMachine {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut status = String::new();
        for (names, state) in [
            (installed, "install ok installed"),
            (removed, "deinstall ok config-files"),
        ] {
            for name in names {
                status.push_str(&format!(
                    "Package: {name}\nStatus: {state}\nArchitecture: amd64\nVersion: 1.0\nDescription: fake\n\n"
                ));
            }
        }
        fs::create_dir_all(dir.path().join("dpkg")).unwrap();
        fs::write(dir.path().join("dpkg/status"), status).unwrap();
        let llvm_lib = dir.path().join("root/usr/lib/llvm-14/lib");
        fs::create_dir_all(&llvm_lib).unwrap();
        fs::create_dir_all(dir.path().join("root/usr/lib/x86_64-linux-gnu")).unwrap();
        for lib in libs {
            let path = dir.path().join("root").join(lib.trim_start_matches('/'));
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, b"").unwrap();
        }
        let bin = dir.path().join("bin");
        fs::create_dir_all(&bin).unwrap();
        let llvm_config = bin.join("llvm-config");
        fs::write(
            &llvm_config,
            format!("#!/bin/sh\necho {}\n", llvm_lib.display()),
        )
        .unwrap();
        fs::set_permissions(&llvm_config, fs::Permissions::from_mode(0o755)).unwrap();
        FakeMachine { dir }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// Runs `bash -c SCRIPT` in the repository with the fake machine's environment.
    fn bash(&self, script: &str, extra_env: &[(&str, &Path)]) -> Output {
        let path = format!(
            "{}:{}",
            self.dir.path().join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut command = Command::new("bash");
        command
            .arg("-c")
            .arg(script)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("PATH", path)
            .env("MEDLEDGER_DPKG_ADMINDIR", self.dir.path().join("dpkg"))
            .env("MEDLEDGER_SETUP_ROOT", self.root())
            .env("MEDLEDGER_SETUP_DRY_RUN", "1")
            .env_remove("LIBCLANG_PATH");
        for (key, value) in extra_env {
            command.env(key, value);
        }
        command.output().expect("run bash")
    }

    fn setup(&self) -> (bool, String) {
        let out = self.bash("scripts/setup.sh", &[]);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    fn libclang_found(&self, extra_env: &[(&str, &Path)]) -> Option<String> {
        let out = self.bash(". scripts/lib/packages.sh; libclang_found", extra_env);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

const BUILD_PACKAGES: &[&str] = &["ca-certificates", "g++", "clang", "libclang-dev"];

#[test]
fn libclang_cpp_from_another_package_does_not_stand_in_for_libclang_dev() {
    // The image of issue 19: llvm-14-dev brought libclang-cpp14; clang brought only the
    // versioned libclang.so.1.
    let machine = FakeMachine::new(
        &[
            "ca-certificates",
            "g++",
            "clang",
            "llvm-14-dev",
            "libclang-cpp14",
            "libclang1-14",
        ],
        &[],
        &[
            "usr/lib/llvm-14/lib/libclang-cpp.so.14",
            "usr/lib/llvm-14/lib/libclang.so.1",
        ],
    );
    let (ok, text) = machine.setup();
    assert!(ok, "{text}");
    assert_eq!(text.trim(), "setup: would install libclang-dev");
    assert_eq!(
        machine.libclang_found(&[]),
        None,
        "neither file is one the build links"
    );
}

#[test]
fn a_package_removed_but_for_its_config_files_counts_as_missing() {
    let machine = FakeMachine::new(&["ca-certificates", "g++", "libclang-dev"], &["clang"], &[]);
    let (ok, text) = machine.setup();
    assert!(ok, "{text}");
    assert_eq!(text.trim(), "setup: would install clang");
}

#[test]
fn a_fresh_root_needs_every_build_package() {
    let machine = FakeMachine::new(&[], &[], &[]);
    let (ok, text) = machine.setup();
    assert!(ok, "{text}");
    assert_eq!(
        text.trim(),
        format!("setup: would install {}", BUILD_PACKAGES.join(" "))
    );
}

#[test]
fn everything_installed_but_no_libclang_so_stops_with_one_clear_line() {
    // Package state says yes, the file the build links says no (a broken install, or a
    // package that moved it): the check after installing catches it.
    let machine = FakeMachine::new(
        BUILD_PACKAGES,
        &[],
        &["usr/lib/llvm-14/lib/libclang-cpp.so.14"],
    );
    let (ok, text) = machine.setup();
    assert!(!ok, "setup passed without a libclang.so: {text}");
    assert!(
        text.contains("no libclang.so where the rocksdb build looks")
            && text.contains("install libclang-dev"),
        "{text}"
    );
}

#[test]
fn everything_installed_and_libclang_so_in_llvm_config_libdir_passes() {
    let machine = FakeMachine::new(BUILD_PACKAGES, &[], &["usr/lib/llvm-14/lib/libclang.so"]);
    let (ok, text) = machine.setup();
    assert!(ok, "{text}");
    assert!(
        text.contains("setup: ok (libclang: ") && text.contains("llvm-14/lib/libclang.so)"),
        "{text}"
    );
}

#[test]
fn libclang_is_found_where_clang_sys_looks_and_only_there() {
    // A versioned libclang-N.so in a system directory counts (clang-sys's second pattern).
    let machine = FakeMachine::new(&[], &[], &["usr/lib/x86_64-linux-gnu/libclang-14.so"]);
    let found = machine
        .libclang_found(&[])
        .expect("libclang-14.so is linkable");
    assert!(
        found.ends_with("usr/lib/x86_64-linux-gnu/libclang-14.so"),
        "{found}"
    );

    // LIBCLANG_PATH is searched first.
    let custom = machine.root().join("opt/llvm/lib");
    fs::create_dir_all(&custom).unwrap();
    fs::write(custom.join("libclang.so"), b"").unwrap();
    let found = machine
        .libclang_found(&[("LIBCLANG_PATH", custom.as_path())])
        .expect("found through LIBCLANG_PATH");
    assert_eq!(found, custom.join("libclang.so").display().to_string());

    // A library in a directory nobody searches does not count.
    let machine = FakeMachine::new(&[], &[], &["opt/elsewhere/libclang.so"]);
    assert_eq!(machine.libclang_found(&[]), None);
}

#[test]
fn the_test_setup_installs_by_package_state_too() {
    let machine = FakeMachine::new(
        &[
            "nodejs",
            "curl",
            "util-linux",
            "coreutils",
            "iproute2",
            "postgresql",
        ],
        &[],
        &[],
    );
    let out = machine.bash("scripts/setup-test.sh", &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
    // npm is looked for as a command (the host's nodejs may carry it), so whether npm is
    // listed depends on the host; chromium and the two peers do not.
    assert!(
        lines[0].starts_with("setup-test: would install chromium"),
        "{text}"
    );
    assert!(
        lines.contains(&"install-peers: would install redis-server nats-server"),
        "{text}"
    );
}
