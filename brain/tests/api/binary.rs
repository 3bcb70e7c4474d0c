//! The real `taskward-brain` binary: first start, the admin CLI beside a running server,
//! secrets kept out of logs, and graceful shutdown on SIGTERM.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::both_backends;
use crate::support::{Backend, TestDb};

const BIN: &str = env!("CARGO_BIN_EXE_taskward-brain");

/// A running `taskward-brain serve` with its stderr collected.
pub(crate) struct Server {
    child: Child,
    stderr: Arc<Mutex<String>>,
    pub(crate) base: String,
}

impl Server {
    pub(crate) fn start(cwd: &Path, db: Option<&TestDb>) -> Server {
        let mut cmd = Command::new(BIN);
        cmd.current_dir(cwd)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("RUST_LOG", "debug")
            .env_remove("TASKWARD_DATA_DIR")
            .env_remove("TASKWARD_DATABASE_URL")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(db) = db {
            cmd.env("TASKWARD_DATABASE_URL", db.cli_url());
        }
        let mut child = cmd.spawn().unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut all = sink.lock().unwrap();
                all.push_str(&line);
                all.push('\n');
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let base = loop {
            let log = stderr.lock().unwrap().clone();
            if let Some(line) = log.lines().find(|l| l.contains("taskward brain listening")) {
                let addr = line
                    .split("listen=")
                    .nth(1)
                    .unwrap()
                    .split_whitespace()
                    .next()
                    .unwrap();
                break format!("http://{addr}");
            }
            assert!(Instant::now() < deadline, "server did not start:\n{log}");
            assert!(child.try_wait().unwrap().is_none(), "server exited:\n{log}");
            std::thread::sleep(Duration::from_millis(20));
        };
        Server {
            child,
            stderr,
            base,
        }
    }

    pub(crate) fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub(crate) fn terminate(mut self) -> String {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "server exited with {status} after SIGTERM"
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "server did not stop after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(50));
        self.log()
    }
}

impl Drop for Server {
    /// A failed assertion must not leave a server running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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

/// `GET base+path` as `token`, the body as JSON.
pub(crate) async fn get_json(base: &str, path: &str, token: &str) -> serde_json::Value {
    reqwest::Client::new()
        .get(format!("{base}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
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

async fn serve_bootstraps_and_cli_works_beside_it(backend: Backend) {
    let db = match backend {
        Backend::Sqlite => None,
        Backend::Postgres => Some(TestDb::new(Backend::Postgres).await),
    };
    let db = db.as_ref();
    let cwd = tempfile::tempdir().unwrap();
    let cwd = cwd.path();
    let server = Server::start(cwd, db);

    // First start: data dir 0700, token file 0600, the token printed once on stderr.
    let data_dir = cwd.join("taskward-data");
    assert_eq!(
        std::fs::metadata(&data_dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let token_file = data_dir.join("admin.token");
    assert_eq!(
        std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let admin = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_owned();
    assert_eq!(
        server.log().matches(&admin).count(),
        1,
        "the admin token is printed exactly once"
    );
    assert_eq!(
        backend == Backend::Sqlite,
        data_dir.join("taskward.db").exists()
    );

    // The admin CLI works on the same store while the server runs.
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

    // Dashboard passwords: the admin's printed once and kept 0600 beside the token; another
    // user's set from standard input, checked for length first.
    let password_file = data_dir.join("admin.password");
    assert_eq!(
        std::fs::metadata(&password_file)
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
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
            .post(format!("{}/login", server.base))
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

    // Synthetic tasks for trying things at scale: a project made on the way, runs that add up,
    // a family past the tree's cap.
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
    let all = get_json(
        &server.base,
        "/api/v1/projects/bench/tasks?limit=5000",
        &admin,
    )
    .await;
    assert_eq!(all["items"].as_array().unwrap().len(), 2400);
    let tree = get_json(
        &server.base,
        &format!("/api/v1/projects/bench/tasks/celery/{}/tree", roots[1]),
        &admin,
    )
    .await;
    assert_eq!(tree["items"].as_array().unwrap().len(), 500);
    assert_eq!(tree["truncated"], true);
    let found = get_json(
        &server.base,
        "/api/v1/projects/bench/tasks?search=task42&limit=5000",
        &admin,
    )
    .await;
    assert_eq!(found["items"].as_array().unwrap().len(), 2 * 1200 / 50);

    let http = reqwest::Client::new();
    let project = get_json(&server.base, "/api/v1/projects/billing", &jane).await;
    assert_eq!(project["role"], "operator");
    let forbidden = http
        .patch(format!("{}/api/v1/projects/billing", server.base))
        .bearer_auth(&jane)
        .json(&serde_json::json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(forbidden.status(), 403);
    let metrics = http
        .get(format!("{}/metrics", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 401);
    let metrics = http
        .get(format!("{}/metrics", server.base))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("taskward_http_requests_total"));
    assert!(metrics.contains("route=\"/api/v1/projects/{slug}\""));

    // Bad CLI input: a clear message, a failure exit, nothing created.
    let bad = cli(cwd, db, &["project", "create", "Bad Slug"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("invalid project slug"));
    let missing = cli(cwd, db, &["member", "add", "billing", "nobody", "viewer"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("user nobody does not exist"));
    assert!(stdout(&cli(cwd, db, &["migrate"])).contains("is migrated"));

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
    let again = Server::start(cwd, db);
    let log = again.terminate();
    assert!(!log.contains("First start"));
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

/// Where a test's server keeps its data, and the bootstrap admin's token.
struct Site {
    /// The database URL the server uses (SQLite in the data directory, or the test database).
    url: taskward_brain::store::DatabaseUrl,
    token: String,
    http: reqwest::Client,
}

impl Site {
    /// The URL a server started in `cwd` uses, before it starts.
    fn url_for(backend: Backend, cwd: &Path, db: &TestDb) -> taskward_brain::store::DatabaseUrl {
        match backend {
            Backend::Sqlite => {
                taskward_brain::store::DatabaseUrl::Sqlite(cwd.join("taskward-data/taskward.db"))
            }
            Backend::Postgres => db.url.clone(),
        }
    }

    /// Reads the admin token the first server wrote.
    fn new(url: taskward_brain::store::DatabaseUrl, cwd: &Path) -> Site {
        let token = std::fs::read_to_string(cwd.join("taskward-data/admin.token"))
            .unwrap()
            .trim()
            .to_owned();
        Site {
            url,
            token,
            http: reqwest::Client::new(),
        }
    }

    /// A JSON request as the admin.
    fn call(&self, method: reqwest::Method, base: &str, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{base}{path}"))
            .bearer_auth(&self.token)
            .header("content-type", "application/json")
    }
}

both_backends!(
    serve_bootstraps_and_cli_works_beside_it,
    a_project_deletion_resumes_after_kill_9,
);

impl Server {
    /// Kills the process with SIGKILL: no shutdown work at all.
    fn kill_9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

/// Deleting a project with 100,000 task records: progress shows while it runs, the brain is
/// killed with SIGKILL half-way, and a new brain process finishes the job (the step it held is
/// taken over when its lease runs out) with every record deleted exactly once.
async fn a_project_deletion_resumes_after_kill_9(backend: Backend) {
    use taskward_shared::events::{TaskState, TaskUpdate, Update};
    let db = TestDb::new(backend).await;
    let cwd = tempfile::tempdir().unwrap();
    let cwd = cwd.path();
    let url = Site::url_for(backend, cwd, &db);
    let db = (backend == Backend::Postgres).then_some(&db);
    let server = Server::start(cwd, db);
    let site = Site::new(url.clone(), cwd);
    let call = |method: reqwest::Method, base: &str, path: &str| site.call(method, base, path);
    let created = call(reqwest::Method::POST, &server.base, "/api/v1/projects")
        .body(r#"{"slug": "big"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let agent: serde_json::Value = call(
        reqwest::Method::POST,
        &server.base,
        "/api/v1/projects/big/agents",
    )
    .body(r#"{"name": "host"}"#)
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let agent_id = agent["agent"]["id"].as_str().unwrap().to_owned();
    // 100,000 task records, written as an agent's ingest would.
    let store = taskward_brain::store::Store::open(&url).unwrap();
    let project = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || {
            store.read_blocking("test_project", |c| {
                taskward_brain::store::projects::find(c, &"big".parse().unwrap())
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
                    engine: "celery".into(),
                    task_id: format!("t{chunk}-{i}"),
                    state: Some(TaskState::Succeeded),
                    at_ms: 1,
                    name: Some("app.add".into()),
                    ..TaskUpdate::default()
                }))
            })
            .collect();
        let (store, project_id, agent_id) = (store.clone(), project.id.clone(), agent_id.clone());
        tokio::task::spawn_blocking(move || {
            store.write_blocking("test_seed", |c| {
                taskward_brain::store::tasks::apply_updates(c, &project_id, &agent_id, &updates, 1)
            })
        })
        .await
        .unwrap()
        .unwrap();
    }
    let root: serde_json::Value = call(
        reqwest::Method::DELETE,
        &server.base,
        "/api/v1/projects/big",
    )
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let root = root["id"].as_str().unwrap().to_owned();
    let records = |base: String| {
        let (call, root) = (&call, root.clone());
        async move {
            let tree: serde_json::Value = call(
                reqwest::Method::GET,
                &base,
                &format!("/api/v1/cleanup-tasks/{root}/tree"),
            )
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
            tree.as_array()
                .unwrap()
                .iter()
                .find(|n| n["resourceType"] == "delete_task_records")
                .cloned()
                .unwrap()
        }
    };
    // Progress is visible; kill the brain as soon as some but not all records are gone.
    let deadline = Instant::now() + Duration::from_secs(60);
    let partial = loop {
        let node = records(server.base.clone()).await;
        let deleted = node["metadata"]["deleted"].as_u64().unwrap();
        if deleted > 0 {
            break deleted;
        }
        assert!(Instant::now() < deadline, "no progress: {node}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    server.kill_9();
    assert!(partial < 100_000, "finished before the kill: {partial}");
    // A new process takes over and finishes.
    let server = Server::start(cwd, db);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let node = records(server.base.clone()).await;
        if node["status"] == "completed" {
            assert_eq!(node["metadata"]["deleted"], 100_000, "{node}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not finished after the restart: {node}\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let root_node: serde_json::Value = call(
        reqwest::Method::GET,
        &server.base,
        &format!("/api/v1/cleanup-tasks/{root}"),
    )
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut root_node = root_node;
    while root_node["status"] != "completed" {
        assert!(Instant::now() < deadline, "root not completed: {root_node}");
        tokio::time::sleep(Duration::from_millis(200)).await;
        root_node = call(
            reqwest::Method::GET,
            &server.base,
            &format!("/api/v1/cleanup-tasks/{root}"),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    }
    server.terminate();
}

both_backends!(two_brains_fire_each_due_time_once,);

/// Two `taskward-brain serve` processes on one database (sharing a data directory, as
/// replicas share their keys) fire each due time of a schedule once; so does a brain
/// restarted between due times.
async fn two_brains_fire_each_due_time_once(backend: Backend) {
    let db = TestDb::new(backend).await;
    let cwd = tempfile::tempdir().unwrap();
    let cwd = cwd.path();
    let url = Site::url_for(backend, cwd, &db);
    let db = (backend == Backend::Postgres).then_some(&db);
    let first = Server::start(cwd, db);
    let site = Site::new(url.clone(), cwd);
    let call = |method: reqwest::Method, base: &str, path: &str| site.call(method, base, path);
    let json = |r: reqwest::Response| async move { r.json::<serde_json::Value>().await.unwrap() };
    let agent = json(
        call(
            reqwest::Method::POST,
            &first.base,
            "/api/v1/projects/default/agents",
        )
        .body(r#"{"name": "host"}"#)
        .send()
        .await
        .unwrap(),
    )
    .await;
    let agent_id = agent["agent"]["id"].as_str().unwrap().to_owned();
    let schedule = json(
        call(
            reqwest::Method::POST,
            &first.base,
            "/api/v1/projects/default/schedules",
        )
        .body(
            serde_json::json!({
                "name": "throttle", "type": "command", "cronExpression": "0 0 1 1 *",
                "commandConfig": {"kind": "rate-limit", "agent_id": agent_id,
                                  "task_name": "app.add", "rate": "5/s"}
            })
            .to_string(),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    let id = schedule["schedule"]["id"].as_str().unwrap().to_owned();
    let mut second = Server::start(cwd, db);
    let store = taskward_brain::store::Store::open(&site.url).unwrap();
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
    let runs = |base: String| {
        let (call, id) = (&call, id.clone());
        async move {
            let detail = call(
                reqwest::Method::GET,
                &base,
                &format!("/api/v1/projects/default/schedules/{id}"),
            )
            .send()
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap();
            detail["history"].as_array().unwrap().len()
        }
    };
    let mut earlier_log = String::new();
    for round in 1..=4 {
        if round == 4 {
            // A restart between due times.
            earlier_log = second.terminate();
            second = Server::start(cwd, db);
        }
        make_due().await;
        let deadline = Instant::now() + Duration::from_secs(20);
        while runs(second.base.clone()).await < round {
            assert!(Instant::now() < deadline, "round {round}: no run");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Both brains tick every second: give each a few chances to fire it again.
        tokio::time::sleep(Duration::from_millis(3_000)).await;
        assert_eq!(runs(first.base.clone()).await, round, "round {round}");
    }
    let commands = json(
        call(
            reqwest::Method::GET,
            &first.base,
            "/api/v1/projects/default/commands?kind=rate-limit",
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(commands["items"].as_array().unwrap().len(), 4);
    let logs = first.log() + &earlier_log + &second.log();
    assert_eq!(logs.matches("schedule fired").count(), 4, "{logs}");
    second.terminate();
    first.terminate();
}
