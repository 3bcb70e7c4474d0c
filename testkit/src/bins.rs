//! Where cargo put the binaries under test.
//!
//! `env!("CARGO_BIN_EXE_<name>")` exists only in the tests of the binary's own package, so the
//! brain's tests pass theirs and the agent's tests and benches use [`brain_bin`]: the binary in
//! the same profile directory as the running test or bench executable
//! (`<target>/<profile>/deps/<exe>`), built once per process first.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Once;

/// `<target>/<profile>`: where cargo puts this profile's binaries.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let dir = exe.parent().expect("a directory").to_owned();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().expect("the profile directory").to_owned()
    } else {
        dir
    }
}

/// `<target>`: the target directory (`CARGO_TARGET_TMPDIR` is its `tmp/`).
pub fn target_dir() -> PathBuf {
    profile_dir()
        .parent()
        .expect("the target directory")
        .to_owned()
}

/// The `taskward-brain` binary of this profile, brought up to date once per process (a no-op
/// under `cargo test --workspace`, which built it already).
pub fn brain_bin() -> PathBuf {
    static BUILD: Once = Once::new();
    let dir = profile_dir();
    BUILD.call_once(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let mut build = Command::new(cargo);
        build.args(["build", "--quiet", "-p", "taskward-brain"]);
        match dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => {}
            Some("release") => {
                build.arg("--release");
            }
            Some(profile) => {
                build.args(["--profile", profile]);
            }
        }
        let status = build.status().expect("cargo");
        assert!(status.success(), "could not build taskward-brain");
    });
    dir.join("taskward-brain")
}
