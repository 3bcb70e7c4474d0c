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

use reqwest::Method;
use serde_json::{Value, json};
use taskward_testkit::{Api, BrainProcess};

const BIN: &str = env!("CARGO_BIN_EXE_taskward-brain");

/// The fixed seed: the same requests on every run, so a failure reproduces.
const SEED: &str = "20261203";

/// Test cases per operation and phase: enough to reach every documented status, small enough
/// that both backends finish well inside CI's five minutes.
const MAX_EXAMPLES: &str = "10";

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
    (
        "DELETE",
        "/api/v1/projects/{slug}/agents/{agent_id}",
        "removes the agent every command operation targets",
    ),
    (
        "POST",
        "/api/v1/projects/{slug}/runtime-cleanup/stale",
        "can remove the agent every command operation targets",
    ),
    (
        "DELETE",
        "/api/v1/projects/{slug}/schedules/{id}",
        "removes the schedule the other schedule operations read and change",
    ),
    (
        "POST",
        "/api/v1/projects/{slug}/tasks/bulk-delete",
        "removes the seeded tasks the task operations read",
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

/// What the run works on: its token, and real ids for the path parameters, so operations
/// reach their handlers' logic instead of answering 404 to random ids.
struct Tenant {
    token: String,
    agent_id: String,
    schedule_id: String,
    command_id: String,
    cleanup_task_id: String,
    task_ids: Vec<String>,
}

/// The run's own project and site-admin user (admin of the project too), an agent, a
/// schedule, a command, a cleanup task (from deleting a throwaway project) and seeded tasks.
async fn fuzz_tenant(brain: &BrainProcess) -> Tenant {
    cli(brain, &["user", "create", USER, "--site-admin"]);
    cli(brain, &["project", "create", PROJECT]);
    cli(brain, &["member", "add", PROJECT, USER, "admin"]);
    cli(
        brain,
        &["dev", "seed", "--tasks", "50", "--project", PROJECT],
    );
    let token = cli(
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
    .to_owned();
    let api = Api::new(&brain.url(), Some(&token)).in_project(PROJECT);
    let (agent_id, _) = api.create_agent("fuzz-agent").await;
    let schedule = api
        .post_json(
            &api.project_path("/schedules"),
            json!({"name": "workers alive", "type": "health-check",
                   "cronExpression": "0 3 * * *", "healthCheckConfig": {}}),
            201,
        )
        .await;
    let command = api
        .post_json(
            &api.project_path("/commands/ping-workers"),
            json!({"agent_id": agent_id}),
            202,
        )
        .await;
    api.post_json("/api/v1/projects", json!({"slug": "doomed"}), 201)
        .await;
    let cleanup = api
        .expect(Method::DELETE, "/api/v1/projects/doomed", None, 202)
        .await;
    let tasks = api.get_json(&api.project_path("/tasks?limit=3")).await;
    let id = |v: &Value| v.as_str().unwrap().to_owned();
    Tenant {
        token,
        agent_id,
        schedule_id: id(&schedule["schedule"]["id"]),
        command_id: id(&command["id"]),
        cleanup_task_id: id(&cleanup["id"]),
        task_ids: tasks["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| id(&t["task_id"]))
            .collect(),
    }
}

/// Schemathesis's configuration: the tenant's ids offered for the path parameters and body
/// fields of their name most of the time (a random value the rest, so 404s and 400s are
/// checked too); the project's slug nearly always.
fn config_text(tenant: &Tenant) -> String {
    let list = |values: &[&str]| {
        values
            .iter()
            .map(|v| format!("{v:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let tasks: Vec<&str> = tenant.task_ids.iter().map(String::as_str).collect();
    format!(
        r#"[dictionaries.projects]
values = [{project}]
[dictionaries.agents]
values = [{agent}]
[dictionaries.tasks]
values = [{tasks}]
[dictionaries.commands]
values = [{command}]

[parameters]
"path.slug" = {{ dictionary = "projects", probability = 0.95 }}
"path.agent_id" = {{ dictionary = "agents", probability = 0.8 }}
"body.agent_id" = {{ dictionary = "agents", probability = 0.8 }}
"path.engine" = "celery"
"path.task_id" = {{ dictionary = "tasks", probability = 0.8 }}
"path.command_id" = {{ dictionary = "commands", probability = 0.8 }}

[[operations]]
include-path-regex = "/schedules/[{{]id[}}]"
parameters = {{ "path.id" = {schedule:?} }}

[[operations]]
include-path-regex = "^/api/v1/cleanup-tasks/[{{]id[}}]"
parameters = {{ "path.id" = {cleanup:?} }}
"#,
        project = list(&[PROJECT]),
        agent = list(&[&tenant.agent_id]),
        tasks = list(&tasks),
        command = list(&[&tenant.command_id]),
        schedule = tenant.schedule_id,
        cleanup = tenant.cleanup_task_id,
    )
}

/// One Schemathesis pass; its combined output, or a panic with the report and how to rerun.
fn run_pass(brain: &BrainProcess, tenant: &Tenant, pass: &str, filter: &[String]) -> String {
    let config = brain.dir().join("schemathesis.toml");
    std::fs::write(&config, config_text(tenant)).unwrap();
    let started = Instant::now();
    let mut cmd = Command::new(schemathesis());
    cmd.current_dir(brain.dir())
        .arg("--config-file")
        .arg(&config)
        .arg("run")
        .arg(format!("{}/api/v1/openapi.json", brain.url()))
        .args(["--seed", SEED, "--max-examples", MAX_EXAMPLES])
        .args(["--checks", &CHECKS.replace(char::is_whitespace, "")])
        .args(["--workers", "4", "--request-timeout", "10"])
        .args(["--generation-database", "none", "--no-color"])
        .args([
            "--header",
            &format!("Authorization: Bearer {}", tenant.token),
        ])
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

/// The report's phase timings and closing summary (operations, test cases, warnings).
fn summary(report: &str) -> String {
    let phases = report.lines().filter(|line| line.contains(" (in "));
    let closing = report.lines().skip_while(|line| !line.contains("SUMMARY"));
    phases.chain(closing).collect::<Vec<_>>().join("\n")
}

async fn run_on(backend: &'static str, brain: BrainProcess) {
    let tenant = fuzz_tenant(&brain).await;
    let mut main_filter = Vec::new();
    for (method, path, why) in DESTRUCTIVE {
        eprintln!("left to the last pass: {method} {path} ({why})");
        main_filter.push(format!("--exclude-name={method} {path}"));
    }
    let brain = tokio::task::spawn_blocking(move || {
        run_pass(&brain, &tenant, &format!("{backend} main"), &main_filter);
        let last_filter: Vec<String> = DESTRUCTIVE
            .iter()
            .map(|(method, path, _)| format!("--include-name={method} {path}"))
            .collect();
        run_pass(
            &brain,
            &tenant,
            &format!("{backend} destructive"),
            &last_filter,
        );
        brain
    })
    .await
    .unwrap();
    drop(brain);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_matches_the_document_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    run_on("sqlite", BrainProcess::builder(BIN, dir.path()).start()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_matches_the_document_on_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let brain = tokio::task::spawn_blocking(move || {
        let brain = BrainProcess::builder(BIN, dir.path())
            .fresh_postgres()
            .start();
        (brain, dir)
    })
    .await
    .unwrap();
    run_on("postgres", brain.0).await;
    drop(brain.1);
}
