//! The real `taskward-brain` binary: first start, the admin CLI beside a running server,
//! secrets kept out of logs, and graceful shutdown on SIGTERM.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::json;
use taskward_testkit::{Api, BrainProcess, Wait};

use crate::both_backends;
use crate::support::{Backend, TestDb, celery_task};

const BIN: &str = env!("CARGO_BIN_EXE_taskward-brain");

/// `taskward-brain serve` in `cwd` at debug level, on SQLite there or on `db`, ready.
pub(crate) fn serve(cwd: &Path, db: Option<&TestDb>) -> BrainProcess {
    let brain = BrainProcess::builder(BIN, cwd).env("RUST_LOG", "debug");
    match db {
        Some(db) => brain.database_url(&db.cli_url()),
        None => brain,
    }
    .start()
}

pub(crate) fn cli(cwd: &Path, db: Option<&TestDb>, args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(cwd)
        .args(args)
        .env_remove("TASKWARD_DATA_DIR")
        .env_remove("TASKWARD_DATABASE_URL");
    if let Some(db) = db {
        cmd.env("TASKWARD_DATABASE_URL", db.cli_url());
    }
    cmd.output().unwrap()
}

/// Runs the CLI with `input` on its standard input (not a terminal).
fn cli_with_stdin(cwd: &Path, db: Option<&TestDb>, args: &[&str], input: &str) -> Output {
    use std::io::Write;
    let mut cmd = Command::new(BIN);
    cmd.current_dir(cwd)
        .args(args)
        .env_remove("TASKWARD_DATA_DIR")
        .env_remove("TASKWARD_DATABASE_URL")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(db) = db {
        cmd.env("TASKWARD_DATABASE_URL", db.cli_url());
    }
    let mut child = cmd.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

pub(crate) fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "command failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// `mode & 0o777` of a file or directory.
fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

async fn serve_bootstraps_and_cli_works_beside_it(backend: Backend) {
    let db = TestDb::for_binary(backend).await;
    let db = db.as_ref();
    let cwd = tempfile::tempdir().unwrap();
    let cwd = cwd.path();
    let mut server = serve(cwd, db);
    let admin = first_start(&server, backend);
    let jane = admin_cli_beside_the_server(cwd, db);
    dashboard_passwords(&server, cwd, db).await;
    let as_admin = Api::new(&server.url(), Some(&admin));
    dev_seed(cwd, db, &as_admin).await;
    callers_and_metrics(&server, &as_admin, &jane).await;
    bad_cli_input(cwd, db);

    // Shutdown is graceful, and at debug level the log never carried a token in use.
    let log = server.terminate();
    assert!(log.contains("shutdown requested"));
    assert!(log.contains("request"), "debug log has request spans");
    assert_eq!(
        log.matches(&admin).count(),
        1,
        "admin token leaked into the log"
    );
    assert!(!log.contains(&jane), "a token leaked into the log");
    assert!(
        !log.contains(&jane["tw_".len()..]),
        "a token leaked into the log"
    );

    // Restarting does not bootstrap again.
    let mut again = serve(cwd, db);
    let log = again.terminate();
    assert!(!log.contains("First start"));
}

/// First start: data dir 0700, token file 0600, the token printed once on stderr beside the
/// store's absolute directory; the token.
fn first_start(server: &BrainProcess, backend: Backend) -> String {
    let data_dir = server.data_dir();
    assert_eq!(mode(&data_dir), 0o700);
    let token_file = data_dir.join("admin.token");
    assert_eq!(mode(&token_file), 0o600);
    let admin = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_owned();
    assert_eq!(
        server.log().matches(&admin).count(),
        1,
        "the admin token is printed exactly once"
    );
    let absolute = data_dir.canonicalize().unwrap();
    assert!(
        server
            .log()
            .contains(&format!("new store in {}:", absolute.display())),
        "the banner names the new store's absolute directory: {}",
        server.log()
    );
    assert_eq!(
        backend == Backend::Sqlite,
        data_dir.join("taskward.db").exists()
    );

    admin
}

/// The admin CLI works on the same store while the server runs; jane's token.
fn admin_cli_beside_the_server(cwd: &Path, db: Option<&TestDb>) -> String {
    let out = cli(cwd, db, &["user", "create", "jane"]);
    assert!(stdout(&out).contains("created user jane"));
    assert!(
        stdout(&cli(cwd, db, &["project", "create", "billing"]))
            .contains("created project billing")
    );
    assert!(
        stdout(&cli(
            cwd,
            db,
            &["member", "add", "billing", "jane", "operator"]
        ))
        .contains("jane is operator in billing")
    );
    let jane = stdout(&cli(
        cwd,
        db,
        &["token", "create", "jane", "--expires-in", "30d"],
    ))
    .trim()
    .to_owned();
    assert!(jane.starts_with("tw_"));

    jane
}

/// Dashboard passwords: the admin's printed once and kept 0600 beside the token; another
/// user's set from standard input, checked for length first.
async fn dashboard_passwords(server: &BrainProcess, cwd: &Path, db: Option<&TestDb>) {
    let password_file = cwd.join("taskward-data/admin.password");
    assert_eq!(mode(&password_file), 0o600);
    let admin_password = std::fs::read_to_string(&password_file)
        .unwrap()
        .trim()
        .to_owned();
    assert_eq!(server.log().matches(&admin_password).count(), 1);
    let short = cli_with_stdin(cwd, db, &["user", "set-password", "jane"], "short\n");
    assert!(!short.status.success());
    assert!(String::from_utf8_lossy(&short.stderr).contains("at least 10 characters"));
    let set = cli_with_stdin(
        cwd,
        db,
        &["user", "set-password", "jane"],
        "a long enough password\n",
    );
    assert!(stdout(&set).contains("password set for jane"));
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for (password, status, cookie) in [
        ("a long enough password", 303, true),
        ("a long enough passwor", 401, false),
    ] {
        let reply = no_redirects
            .post(format!("{}/login", server.url()))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(
                form_urlencoded::Serializer::new(String::new())
                    .append_pair("name", "jane")
                    .append_pair("password", password)
                    .finish(),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status().as_u16(), status);
        assert_eq!(reply.headers().contains_key("set-cookie"), cookie);
    }
    assert!(
        !server.log().contains("a long enough password"),
        "a password reached the log"
    );
}

/// Synthetic tasks for trying things at scale: a project made on the way, runs that add up,
/// a family past the tree's cap.
async fn dev_seed(cwd: &Path, db: Option<&TestDb>, as_admin: &Api) {
    let bad = cli(
        cwd,
        db,
        &["dev", "seed", "--tasks", "0", "--project", "bench"],
    );
    assert_eq!(
        bad.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    let mut roots = Vec::new();
    for _ in 0..2 {
        let seeded = cli(
            cwd,
            db,
            &["dev", "seed", "--tasks", "1200", "--project", "bench"],
        );
        let text = stdout(&seeded);
        assert!(text.contains("seeded 1200 tasks into bench"), "{text}");
        assert!(String::from_utf8_lossy(&seeded.stderr).contains("seeded 1200 of 1200"));
        roots.push(
            text.split("task ids ")
                .nth(1)
                .unwrap()
                .split(" to ")
                .next()
                .unwrap()
                .to_owned(),
        );
    }
    let all = as_admin
        .get_json("/api/v1/projects/bench/tasks?limit=5000")
        .await;
    assert_eq!(all["items"].as_array().unwrap().len(), 2400);
    let tree = as_admin
        .get_json(&format!(
            "/api/v1/projects/bench/tasks/celery/{}/tree",
            roots[1]
        ))
        .await;
    assert_eq!(tree["items"].as_array().unwrap().len(), 500);
    assert_eq!(tree["truncated"], true);
    let found = as_admin
        .get_json("/api/v1/projects/bench/tasks?search=task42&limit=5000")
        .await;
    assert_eq!(found["items"].as_array().unwrap().len(), 2 * 1200 / 50);
}

/// A member's token, anonymous and admin calls, `/metrics`.
async fn callers_and_metrics(server: &BrainProcess, as_admin: &Api, jane: &str) {
    let as_jane = as_admin.with_token(jane);
    let project = as_jane.get_json("/api/v1/projects/billing").await;
    assert_eq!(project["role"], "operator");
    let (forbidden, _) = as_jane
        .call(
            reqwest::Method::PATCH,
            "/api/v1/projects/billing",
            Some(serde_json::json!({"name": "x"})),
        )
        .await;
    assert_eq!(forbidden, 403);
    let anonymous = Api::new(&server.url(), None);
    let (status, _) = anonymous.call(reqwest::Method::GET, "/metrics", None).await;
    assert_eq!(status, 401);
    let metrics = as_admin.metrics().await;
    assert!(metrics.contains("taskward_http_requests_total"));
    assert!(metrics.contains("route=\"/api/v1/projects/{slug}\""));
}

/// Bad CLI input: a clear message, a failure exit, nothing created.
fn bad_cli_input(cwd: &Path, db: Option<&TestDb>) {
    let bad = cli(cwd, db, &["project", "create", "Bad Slug"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("invalid project slug"));
    let missing = cli(cwd, db, &["member", "add", "billing", "nobody", "viewer"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("user nobody does not exist"));
    assert!(stdout(&cli(cwd, db, &["migrate"])).contains("is migrated"));
}

#[test]
fn help_teaches_and_version_answers() {
    let help = Command::new(BIN).arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&help.stdout);
    for word in [
        "serve",
        "migrate",
        "user",
        "project",
        "member",
        "token",
        "--data-dir",
        "--database-url",
    ] {
        assert!(
            text.contains(word),
            "--help does not mention {word}:\n{text}"
        );
    }
    let version = Command::new(BIN).arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&version.stdout).contains(env!("CARGO_PKG_VERSION")));
    let cwd = tempfile::tempdir().unwrap();
    let bad_url = Command::new(BIN)
        .current_dir(cwd.path())
        .args(["migrate", "--database-url", "mysql://x"])
        .output()
        .unwrap();
    assert!(!bad_url.status.success());
    assert!(String::from_utf8_lossy(&bad_url.stderr).contains("sqlite://PATH or postgres://"));
}

/// Where one test's brain processes run: a working directory, and the database they share
/// (SQLite in the data directory the first `serve` makes there, or the test's PostgreSQL
/// database).
struct Site {
    backend: Backend,
    db: TestDb,
    cwd: tempfile::TempDir,
}

impl Site {
    async fn new(backend: Backend) -> Site {
        Site {
            backend,
            db: TestDb::new(backend).await,
            cwd: tempfile::tempdir().unwrap(),
        }
    }

    /// A `taskward-brain serve` process here, ready.
    fn serve(&self) -> BrainProcess {
        let db = (self.backend == Backend::Postgres).then_some(&self.db);
        serve(self.cwd.path(), db)
    }

    /// The brains' store, opened beside them.
    fn store(&self) -> taskward_brain::store::Store {
        let url = match self.backend {
            Backend::Sqlite => taskward_brain::store::DatabaseUrl::Sqlite(
                self.cwd.path().join("taskward-data/taskward.db"),
            ),
            Backend::Postgres => self.db.url.clone(),
        };
        taskward_brain::store::Store::open(&url).unwrap()
    }
}

both_backends!(
    serve_bootstraps_and_cli_works_beside_it,
    a_project_deletion_resumes_after_kill_9,
);

/// 100,000 task records of project `slug`'s agent `agent_id`, written as an agent's ingest
/// would.
async fn seed_task_records(store: &taskward_brain::store::Store, slug: &str, agent_id: &str) {
    use taskward_shared::events::{TaskState, TaskUpdate, Update};
    let project = {
        let (store, slug) = (store.clone(), slug.to_owned());
        tokio::task::spawn_blocking(move || {
            store.read_blocking("test_project", |c| {
                taskward_brain::store::projects::find(c, &slug.parse().unwrap())
            })
        })
        .await
        .unwrap()
        .unwrap()
    };
    for chunk in 0..20 {
        let updates: Vec<Update> = (0..5_000)
            .map(|i| {
                Update::Task(Box::new(TaskUpdate {
                    name: Some("app.add".into()),
                    ..celery_task(format!("t{chunk}-{i}"), TaskState::Succeeded, 1)
                }))
            })
            .collect();
        let (store, project_id, agent_id) =
            (store.clone(), project.id.clone(), agent_id.to_owned());
        tokio::task::spawn_blocking(move || {
            store.write_blocking("test_seed", |c| {
                taskward_brain::store::tasks::apply_updates(c, &project_id, &agent_id, &updates, 1)
            })
        })
        .await
        .unwrap()
        .unwrap();
    }
}

/// The `delete_task_records` node of cleanup tree `root`.
async fn records_node(api: &Api, root: &str) -> serde_json::Value {
    let tree = api
        .get_json(&format!("/api/v1/cleanup-tasks/{root}/tree"))
        .await;
    tree.as_array()
        .unwrap()
        .iter()
        .find(|n| n["resourceType"] == "delete_task_records")
        .cloned()
        .unwrap()
}

/// Deleting a project with 100,000 task records: progress shows while it runs, the brain is
/// killed with SIGKILL half-way, and a new brain process finishes the job (the step it held is
/// taken over when its lease runs out) with every record deleted exactly once.
async fn a_project_deletion_resumes_after_kill_9(backend: Backend) {
    let site = Site::new(backend).await;
    let mut server = site.serve();
    let api = server.api();
    api.post_json("/api/v1/projects", json!({"slug": "big"}), 201)
        .await;
    let (agent_id, _) = api.in_project("big").create_agent("host").await;
    let store = site.store();
    seed_task_records(&store, "big", &agent_id).await;
    let root = api
        .call(reqwest::Method::DELETE, "/api/v1/projects/big", None)
        .await
        .1["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Progress is visible; kill the brain as soon as some but not all records are gone.
    let partial = Wait::new("progress")
        .within(Duration::from_secs(60))
        .every(Duration::from_millis(5))
        .until_ok(|| async {
            let node = records_node(&api, &root).await;
            match node["metadata"]["deleted"].as_u64().unwrap() {
                0 => Err(node),
                deleted => Ok(deleted),
            }
        })
        .await;
    server.kill_9();
    assert!(partial < 100_000, "finished before the kill: {partial}");
    // A new process takes over and finishes.
    let mut server = site.serve();
    let api = server.api();
    let node = Wait::new("the records' deletion after the restart")
        .within(Duration::from_secs(90))
        .every(Duration::from_millis(200))
        .context(|| server.log())
        .until_ok(|| async {
            let node = records_node(&api, &root).await;
            if node["status"] == "completed" {
                Ok(node)
            } else {
                Err(node)
            }
        })
        .await;
    assert_eq!(node["metadata"]["deleted"], 100_000, "{node}");
    let root_path = format!("/api/v1/cleanup-tasks/{root}");
    Wait::new("the root to complete")
        .within(Duration::from_secs(30))
        .every(Duration::from_millis(200))
        .until_ok(|| async {
            let root = api.get_json(&root_path).await;
            if root["status"] == "completed" {
                Ok(())
            } else {
                Err(root)
            }
        })
        .await;
    server.terminate();
}

both_backends!(two_brains_fire_each_due_time_once,);

/// How many runs schedule `id`'s history holds, as `api`'s brain says.
async fn runs(api: &Api, id: &str) -> usize {
    api.get_json(&format!("/api/v1/projects/default/schedules/{id}"))
        .await["history"]
        .as_array()
        .unwrap()
        .len()
}

/// Two `taskward-brain serve` processes on one database (sharing a data directory, as
/// replicas share their keys) fire each due time of a schedule once; so does a brain
/// restarted between due times.
async fn two_brains_fire_each_due_time_once(backend: Backend) {
    let site = Site::new(backend).await;
    let mut first = site.serve();
    let api = first.api();
    let (agent_id, _) = api.create_agent("host").await;
    let schedule = api
        .post_json(
            "/api/v1/projects/default/schedules",
            json!({
                "name": "throttle", "type": "command", "cronExpression": "0 0 1 1 *",
                "commandConfig": {"kind": "rate-limit", "agent_id": agent_id,
                                  "task_name": "app.add", "rate": "5/s"}
            }),
            201,
        )
        .await;
    let id = schedule["schedule"]["id"].as_str().unwrap().to_owned();
    let mut second = site.serve();
    let store = site.store();
    // Makes the schedule due now, as if its time had come.
    let make_due = || {
        let (store, id) = (store.clone(), id.clone());
        async move {
            tokio::task::spawn_blocking(move || {
                store.write_blocking("test_make_due", |c| {
                    use diesel::RunQueryDsl;
                    let now = taskward_brain::store::now_ms() - 200;
                    diesel::sql_query(format!(
                        "UPDATE schedules SET next_run_at = {now} WHERE id = '{id}'"
                    ))
                    .execute(c)?;
                    Ok::<_, taskward_brain::store::StoreError>(())
                })
            })
            .await
            .unwrap()
            .unwrap();
        }
    };
    let mut earlier_log = String::new();
    for round in 1..=4 {
        if round == 4 {
            // A restart between due times.
            earlier_log = second.terminate();
            second = site.serve();
        }
        make_due().await;
        let on_second = second.api();
        Wait::new(format!("round {round}: a run"))
            .every(Duration::from_millis(100))
            .until(|| async { runs(&on_second, &id).await >= round })
            .await;
        // Both brains tick every second: give each a few chances to fire it again.
        tokio::time::sleep(Duration::from_millis(3_000)).await;
        assert_eq!(runs(&api, &id).await, round, "round {round}");
    }
    let commands = api
        .get_json("/api/v1/projects/default/commands?kind=rate-limit")
        .await;
    assert_eq!(commands["items"].as_array().unwrap().len(), 4);
    let logs = first.log() + &earlier_log + &second.log();
    assert_eq!(logs.matches("schedule fired").count(), 4, "{logs}");
    second.terminate();
    first.terminate();
}
