//! The served OpenAPI document against the real server: Schemathesis (from PyPI, pinned, in
//! `./.venv`, installed by `scripts/ensure-services`) generates requests for every operation
//! of `/api/v1/openapi.json` from a fixed seed and checks every answer against the document,
//! on a live `taskward-brain serve` over SQLite and over PostgreSQL. The test passes only when
//! there are no server errors, no dropped connections and no response that disagrees with the
//! document; otherwise it fails with Schemathesis's own report.
//!
//! Schemathesis left alone deletes the project it runs in and revokes its own token within
//! seconds, which would turn the rest of the run into 404s and 401s. So it gets a project and a
//! site-admin user of its own (`fuzz`, `schemathesis`), every path's `slug` is that project,
//! and the operations that destroy the run's own footing run in a second pass at the end (see
//! [`DESTRUCTIVE`]).
//!
//! Its own test binary (not the `api` harness): it drives processes only, and is one slow test
//! CI can run and report on its own. The seed and example counts are in [`SEED`] and
//! [`MAX_EXAMPLES`]; to reproduce a failure, run the command the failure message prints.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use taskward_testkit::BrainProcess;

const BIN: &str = env!("CARGO_BIN_EXE_taskward-brain");

/// The fixed seed: the same requests on every run, so a failure reproduces.
const SEED: &str = "20261203";

/// Test cases per operation and phase: enough to reach every documented status, small enough
/// that both backends finish well inside CI's five minutes.
const MAX_EXAMPLES: &str = "25";

/// Everything but the checks that need data the run cannot have (`positive_data_acceptance`
/// wants a real agent behind every random `agent_id`; `ignored_auth` and the object-level and
/// use-after-free checks assume a REST shape the audit log and cleanup tasks do not have).
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
                      response_headers_conformance,response_schema_conformance,\
                      negative_data_rejection,missing_required_header,unsupported_method";

/// Operations that would knock the ground from under the rest of the run, each with why; they
/// run alone, last, in a pass of their own.
const DESTRUCTIVE: &[(&str, &str, &str)] = &[
    (
        "DELETE",
        "/api/v1/projects/{slug}",
        "hides the project every other operation runs in",
    ),
    (
        "DELETE",
        "/api/v1/tokens/{id}",
        "revokes the run's own token (its id is in GET /api/v1/tokens)",
    ),
    (
        "DELETE",
        "/api/v1/users/{name}",
        "can delete the run's own user, and with it its token",
    ),
];

/// The project Schemathesis works in, and its user.
const PROJECT: &str = "fuzz";
const USER: &str = "schemathesis";

fn schemathesis() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/schemathesis")
}

/// Runs the admin CLI against the brain's store; its stdout.
fn cli(brain: &BrainProcess, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .current_dir(brain.dir())
        .args(args)
        .env_remove("TASKWARD_DATA_DIR")
        .env("TASKWARD_DATABASE_URL", brain.database_url())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "taskward-brain {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The run's own project and site-admin user; the user's token.
fn fuzz_tenant(brain: &BrainProcess) -> String {
    cli(brain, &["user", "create", USER, "--site-admin"]);
    cli(brain, &["project", "create", PROJECT]);
    cli(brain, &["member", "add", PROJECT, USER, "admin"]);
    cli(
        brain,
        &[
            "token",
            "create",
            USER,
            "--expires-in",
            "1d",
            "--name",
            "schemathesis",
        ],
    )
    .trim()
    .to_owned()
}

/// One Schemathesis pass; its combined output, or a panic with the report and how to rerun.
fn run_pass(brain: &BrainProcess, token: &str, pass: &str, filter: &[String]) -> String {
    let config = brain.dir().join("schemathesis.toml");
    // Every path parameter named `slug` is the run's own project.
    std::fs::write(
        &config,
        format!("[parameters]\n\"path.slug\" = \"{PROJECT}\"\n"),
    )
    .unwrap();
    let started = Instant::now();
    let mut cmd = Command::new(schemathesis());
    cmd.current_dir(brain.dir())
        .arg("--config-file")
        .arg(&config)
        .arg("run")
        .arg(format!("{}/api/v1/openapi.json", brain.url()))
        .args(["--seed", SEED, "--max-examples", MAX_EXAMPLES])
        .args(["--checks", &CHECKS.replace(char::is_whitespace, "")])
        .args(["--workers", "2", "--request-timeout", "10"])
        .args(["--generation-database", "none", "--no-color"])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args(filter);
    let out: Output = cmd.output().unwrap_or_else(|e| {
        panic!(
            "{}: {e} — Schemathesis is needed (scripts/ensure-services installs it)",
            schemathesis().display()
        )
    });
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "Schemathesis ({pass} pass) found problems ({}):\n{report}\n--- brain log tail ---\n{}",
        out.status,
        tail(&brain.log(), 60),
    );
    eprintln!(
        "schemathesis {pass} pass: {:.1} s\n{}",
        started.elapsed().as_secs_f64(),
        summary(&report)
    );
    report
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The report's closing summary (operations, test cases, checks).
fn summary(report: &str) -> String {
    report
        .lines()
        .skip_while(|line| !line.contains("SUMMARY"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn run_on(brain: BrainProcess) {
    let token = fuzz_tenant(&brain);
    let mut main_filter = Vec::new();
    for (method, path, why) in DESTRUCTIVE {
        eprintln!("left to the last pass: {method} {path} ({why})");
        main_filter.push(format!("--exclude-name={method} {path}"));
    }
    run_pass(&brain, &token, "main", &main_filter);
    let mut last_filter = Vec::new();
    for (method, path, _) in DESTRUCTIVE {
        last_filter.push(format!("--include-name={method} {path}"));
    }
    run_pass(&brain, &token, "destructive", &last_filter);
}

#[test]
fn every_operation_matches_the_document_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    run_on(BrainProcess::builder(BIN, dir.path()).start());
}

#[test]
fn every_operation_matches_the_document_on_postgres() {
    let dir = tempfile::tempdir().unwrap();
    run_on(
        BrainProcess::builder(BIN, dir.path())
            .fresh_postgres()
            .start(),
    );
}
