//! The agent link with real processes: the `taskward-brain` and `taskward-agent` binaries on
//! loopback, the agent driving the scripted test adapter (a test double for the engine; the
//! Celery adapter is tested against real workers in its own suite).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const AGENT: &str = env!("CARGO_BIN_EXE_taskward-agent");

/// The brain binary beside this one, brought up to date once per test run (a no-op under
/// `cargo test --workspace`, which built it already).
/// The brain tests' WebDriver client (one file, used by both test crates; not every helper is
/// used here).
#[allow(dead_code)]
#[path = "../../brain/tests/api/support/browser.rs"]
mod browser;

fn brain_bin() -> PathBuf {
    static BUILD: std::sync::Once = std::sync::Once::new();
    BUILD.call_once(|| {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--quiet", "-p", "taskward-brain"])
            .status()
            .unwrap();
        assert!(status.success(), "could not build taskward-brain");
    });
    Path::new(AGENT).with_file_name("taskward-brain")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Brain {
    _proc: Proc,
    dir: PathBuf,
    url: String,
    token: String,
    http: reqwest::Client,
}

impl Brain {
    async fn start(dir: &Path) -> Brain {
        Brain::start_with(dir, free_port(), &[]).await
    }

    async fn start_with(dir: &Path, port: u16, extra: &[&str]) -> Brain {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("brain.log"))
            .unwrap();
        let child = Command::new(brain_bin())
            .current_dir(dir)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(extra)
            .env_remove("TASKWARD_DATABASE_URL")
            .env_remove("TASKWARD_DATA_DIR")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        wait_for(Duration::from_secs(30), "the brain to be ready", || async {
            http.get(format!("{url}/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await;
        let token = std::fs::read_to_string(dir.join("taskward-data/admin.token"))
            .unwrap()
            .trim()
            .to_owned();
        Brain {
            _proc: Proc(child),
            dir: dir.to_owned(),
            url,
            token,
            http,
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let reply = request.send().await.unwrap();
        let status = reply.status().as_u16();
        (status, reply.json().await.unwrap_or(Value::Null))
    }

    async fn create_agent(&self, name: &str) -> (String, String) {
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                "/api/v1/projects/default/agents",
                Some(json!({"name": name})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        (
            body["agent"]["id"].as_str().unwrap().to_owned(),
            body["enrollment_token"].as_str().unwrap().to_owned(),
        )
    }

    async fn issue(&self, agent: &str, kind: &str, mut body: Value) -> String {
        body["agent_id"] = json!(agent);
        let (status, reply) = self
            .call(
                reqwest::Method::POST,
                &format!("/api/v1/projects/default/commands/{kind}"),
                Some(body),
            )
            .await;
        assert_eq!(status, 202, "{reply}");
        reply["id"].as_str().unwrap().to_owned()
    }

    async fn command(&self, id: &str) -> Value {
        self.call(
            reqwest::Method::GET,
            &format!("/api/v1/projects/default/commands/{id}"),
            None,
        )
        .await
        .1
    }

    async fn wait_status(&self, id: &str, status: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let command = self.command(id).await;
            if command["status"] == status {
                return command;
            }
            assert!(
                Instant::now() < deadline,
                "command {id} never reached {status}: {command}\nbrain log:\n{}",
                std::fs::read_to_string(self.dir.join("brain.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("brain.log")).unwrap_or_default()
    }

    /// The brain's `/metrics` text.
    async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.url))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

async fn wait_for<F, Fut>(limit: Duration, what: &str, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !probe().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An enrolled agent's files.
struct AgentHome {
    config: PathBuf,
    state: PathBuf,
}

fn enroll(brain: &Brain, token: &str, home: &Path, delay_ms: u64) -> AgentHome {
    enroll_via(&brain.url, token, home, delay_ms)
}

fn enroll_via(url: &str, token: &str, home: &Path, delay_ms: u64) -> AgentHome {
    let config = home.join("agent.toml");
    let out = Command::new(AGENT)
        .args(["--config"])
        .arg(&config)
        .args([
            "enroll", "--brain", url, "--token", token, "--engine", "test",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    if delay_ms > 0 {
        let text = std::fs::read_to_string(&config).unwrap();
        std::fs::write(
            &config,
            text.replace("delay_ms = 0", &format!("delay_ms = {delay_ms}")),
        )
        .unwrap();
    }
    AgentHome {
        config,
        state: home.join("state"),
    }
}

fn start_agent(home: &AgentHome) -> Proc {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(home.state.join("agent.log"))
        .unwrap();
    Proc(
        Command::new(AGENT)
            .arg("--config")
            .arg(&home.config)
            .arg("run")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

/// Commands the test adapter was asked to run.
fn executed(home: &AgentHome) -> Vec<Value> {
    std::fs::read_to_string(home.state.join("test-adapter.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

async fn wait_online(brain: &Brain, agent: &str) {
    wait_for(Duration::from_secs(20), "the agent to connect", || async {
        let (_, body) = brain
            .call(
                reqwest::Method::GET,
                &format!("/api/v1/projects/default/agents/{agent}"),
                None,
            )
            .await;
        body["online"] == true
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_round_trip_with_signed_results() {
    let dir = tempfile::tempdir().unwrap();
    let brain = Brain::start(dir.path()).await;
    let (agent, token) = brain.create_agent("host-1").await;
    let home = enroll(&brain, &token, &dir.path().join("agent"), 0);
    // The token is spent: enrolling again with it fails with a clear message.
    let again = Command::new(AGENT)
        .arg("--config")
        .arg(dir.path().join("other.toml"))
        .args(["enroll", "--brain", &brain.url, "--token", &token])
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("unknown, spent or expired"));

    // A command minted while the agent is away is delivered when it connects.
    let early = brain
        .issue(
            &agent,
            "restart-worker",
            json!({"worker_name": "celery@w1"}),
        )
        .await;
    let _proc = start_agent(&home);
    wait_online(&brain, &agent).await;
    let done = brain.wait_status(&early, "succeeded").await;
    let kinds: Vec<&str> = done["audit_rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["command.issued", "command.dispatched", "command.succeeded"]
    );
    assert!(
        done["audit_rows"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["signature_valid"] == true)
    );
    let evidence = &done["audit_rows"][2]["statement"]["payload"]["agent_result"];
    assert_eq!(evidence["result"]["outcome"], "succeeded");
    assert_eq!(
        evidence["result"]["row_hash"],
        done["audit_rows"][0]["hash"]
    );
    assert_eq!(done["audit_rows"][2]["statement"]["actor"]["type"], "agent");

    // One pushed while connected, and a kind the engine fails.
    let live = brain
        .issue(
            &agent,
            "pool-resize",
            json!({"worker_name": "w", "delta": 2}),
        )
        .await;
    brain.wait_status(&live, "succeeded").await;
    assert_eq!(executed(&home).len(), 2);

    let status = Command::new(AGENT)
        .arg("--config")
        .arg(&home.config)
        .arg("status")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("connected (session 1)"), "{text}");
    assert!(text.contains(&live), "{text}");
}

/// A brain database tampered with (or a brain bug) must not make an agent act: commands with a
/// forged signature, addressed to another agent, expired, or replayed are refused and not run.
/// A connected agent is never stale, however old its records say it is; once it is gone and
/// silent past the window, stale cleanup removes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connected_agent_is_never_stale() {
    let dir = tempfile::tempdir().unwrap();
    let brain = Brain::start(dir.path()).await;
    let (agent, token) = brain.create_agent("host-1").await;
    let home = enroll(&brain, &token, &dir.path().join("agent"), 0);
    let process = start_agent(&home);
    wait_online(&brain, &agent).await;
    let store = taskward_brain::store::Store::open(&taskward_brain::store::DatabaseUrl::Sqlite(
        dir.path().join("taskward-data/taskward.db"),
    ))
    .unwrap();
    let backdate = || {
        use diesel::prelude::*;
        use taskward_brain::store::schema::agents;
        let (id, week_ago) = (
            agent.clone(),
            taskward_brain::store::now_ms() - 7 * 86_400_000,
        );
        store
            .write_blocking("test_backdate", move |conn| {
                diesel::update(agents::table.find(id))
                    .set((
                        agents::created_at.eq(week_ago),
                        agents::enrolled_at.eq(Some(week_ago)),
                        agents::last_seen_at.eq(Some(week_ago)),
                    ))
                    .execute(conn)?;
                Ok::<_, taskward_brain::store::StoreError>(())
            })
            .unwrap();
    };
    let cleanup = || async {
        brain
            .call(
                reqwest::Method::POST,
                "/api/v1/projects/default/runtime-cleanup/stale",
                Some(json!({"agent_id": agent, "inactive_hours": 1})),
            )
            .await
    };
    backdate();
    let (status, body) = cleanup().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"]["agent"]["reason"], "connected", "{body}");
    drop(process);
    wait_for(
        Duration::from_secs(20),
        "the agent to go offline",
        || async {
            let (_, body) = brain
                .call(
                    reqwest::Method::GET,
                    &format!("/api/v1/projects/default/agents/{agent}"),
                    None,
                )
                .await;
            body["online"] == false
        },
    )
    .await;
    backdate();
    let (_, body) = cleanup().await;
    assert_eq!(body["results"]["agent"]["reason"], "deleted", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_misaddressed_expired_and_replayed_commands_never_run() {
    use taskward_brain::keys::Keys;
    use taskward_brain::store::audit::AuditContext;
    use taskward_brain::store::commands::{self, NewCommand};
    use taskward_brain::store::{DatabaseUrl, Store};
    use taskward_shared::audit::{Actor, ActorKind};

    let dir = tempfile::tempdir().unwrap();
    let brain = Brain::start(dir.path()).await;
    let (agent, token) = brain.create_agent("host-1").await;
    let (other_agent, _) = brain.create_agent("host-2").await;
    let home = enroll(&brain, &token, &dir.path().join("agent"), 0);
    let proc = start_agent(&home);
    wait_online(&brain, &agent).await;

    // Direct access to the brain's store and keys, as an insider would have.
    let data = dir.path().join("taskward-data");
    let store = Store::open(&DatabaseUrl::Sqlite(data.join("taskward.db"))).unwrap();
    let keys = Keys::load_or_create(&data).unwrap();
    let project_id = brain
        .call(reqwest::Method::GET, "/api/v1/projects/default", None)
        .await
        .1["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mint = |signer: std::sync::Arc<ed25519_dalek::SigningKey>, audience: &str, ttl_ms: i64| {
        let ctx = AuditContext {
            signer,
            actor: Actor {
                kind: ActorKind::User,
                id: "insider".into(),
                name: "insider".into(),
            },
        };
        let new = NewCommand {
            id: uuid::Uuid::new_v4().to_string(),
            project_id: project_id.clone(),
            agent_id: audience.to_owned(),
            kind: taskward_shared::command::CommandKind::RestartWorker,
            payload: json!({"worker_name": "w"}),
            idempotency_key: None,
            critical: false,
            global_throttle: false,
            bound_depth: None,
            ttl_ms,
            resolved: None,
        };
        store
            .write_blocking("test_mint", |c| commands::mint(c, &ctx, new))
            .unwrap()
    };
    let retarget = |id: &str, to: &str| {
        let (id, to) = (id.to_owned(), to.to_owned());
        store
            .write_blocking("test_retarget", move |c| {
                use diesel::RunQueryDsl;
                diesel::sql_query(format!("UPDATE commands SET agent_id = '{to}', expires_at = expires_at + 600000 WHERE id = '{id}'")).execute(c)?;
                diesel::sql_query(format!("UPDATE command_status SET expires_at = expires_at + 600000 WHERE command_id = '{id}'")).execute(c)?;
                Ok::<_, taskward_brain::store::StoreError>(())
            })
            .unwrap();
    };

    // 1. Signed by a key the brain never published (a stolen database, no key).
    let forged = mint(
        std::sync::Arc::new(taskward_shared::crypto::generate_signing_key()),
        &agent,
        60_000,
    );
    // 2. Genuinely signed, but addressed to another agent, then delivered to this one.
    let misaddressed = mint(keys.signer(), &other_agent, 60_000);
    retarget(&misaddressed.id, &agent);
    // 3. Genuinely signed and addressed, but its signed expiry passed long ago (beyond the
    //    agent's 30 s skew); the brain's own deadline was pushed out so it still delivers it.
    let expired = mint(keys.signer(), &agent, -120_000);
    retarget(&expired.id, &agent);

    // The expired one is answered with a signed refusal, visible on the command.
    let refused = brain.wait_status(&expired.id, "failed").await;
    assert!(
        refused["detail"]
            .as_str()
            .unwrap()
            .starts_with("refused by agent: expired"),
        "{refused}"
    );
    wait_for(
        Duration::from_secs(20),
        "the rejections in the brain log",
        || async {
            let log = brain.log();
            log.contains("agent rejected a frame")
                && log.contains(&forged.id)
                && log.contains(&misaddressed.id)
        },
    )
    .await;
    let log = brain.log();
    assert!(
        log.contains("bad brain signature") || log.contains("is not trusted"),
        "{log}"
    );
    assert!(log.contains("addressed to agent"), "{log}");
    for id in [&forged.id, &misaddressed.id] {
        assert_eq!(
            brain.command(id).await["status"],
            "issued",
            "a rejected command changed status"
        );
    }

    // 4. Replay: a command that ran is made pending again in the database, and redelivered when
    //    the agent reconnects; the agent finds its id in the seen-store and does not run it.
    let once = brain
        .issue(&agent, "restart-worker", json!({"worker_name": "w2"}))
        .await;
    brain.wait_status(&once, "succeeded").await;
    let replay = once.clone();
    store
        .write_blocking("test_replay", move |c| {
            use diesel::RunQueryDsl;
            diesel::sql_query(format!(
                "UPDATE command_status SET status = 'issued' WHERE command_id = '{replay}'"
            ))
            .execute(c)?;
            Ok::<_, taskward_brain::store::StoreError>(())
        })
        .unwrap();
    drop(proc);
    let _restarted = start_agent(&home);
    wait_for(
        Duration::from_secs(20),
        "the replay to be refused",
        || async {
            std::fs::read_to_string(home.state.join("agent.log"))
                .unwrap_or_default()
                .contains("seen before; not run again")
        },
    )
    .await;
    let ran: Vec<String> = executed(&home)
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ran, vec![once], "only the genuine command ran, once");
}

/// `kill -9` while a command runs: on restart it is reported interrupted and never run again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_mid_command_reports_interrupted_and_never_reruns() {
    let dir = tempfile::tempdir().unwrap();
    let brain = Brain::start(dir.path()).await;
    let (agent, token) = brain.create_agent("host-1").await;
    let home = enroll(&brain, &token, &dir.path().join("agent"), 60_000);
    let mut proc = start_agent(&home);
    wait_online(&brain, &agent).await;
    let id = brain
        .issue(&agent, "restart-worker", json!({"worker_name": "w"}))
        .await;
    wait_for(Duration::from_secs(20), "the command to start", || async {
        executed(&home).len() == 1
    })
    .await;
    brain.wait_status(&id, "dispatched").await;
    proc.0.kill().unwrap(); // SIGKILL
    proc.0.wait().unwrap();

    let _restarted = start_agent(&home);
    let failed = brain.wait_status(&id, "failed").await;
    assert!(
        failed["detail"]
            .as_str()
            .unwrap()
            .starts_with("interrupted"),
        "{failed}"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        executed(&home).len(),
        1,
        "the interrupted command ran again"
    );
}

/// A second process with the same identity (a cloned host) takes over; the first stops, and no
/// command runs twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_with_the_same_identity_replaces_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let brain = Brain::start(dir.path()).await;
    let (agent, token) = brain.create_agent("host-1").await;
    let first_home = enroll(&brain, &token, &dir.path().join("first"), 0);
    let mut first = start_agent(&first_home);
    wait_online(&brain, &agent).await;
    let before = brain
        .issue(&agent, "restart-worker", json!({"worker_name": "w"}))
        .await;
    brain.wait_status(&before, "succeeded").await;

    // The clone: same config and keys, its own state directory.
    let clone_dir = dir.path().join("clone");
    std::fs::create_dir_all(clone_dir.join("state")).unwrap();
    std::fs::copy(
        first_home.state.join("brain-keys.json"),
        clone_dir.join("state/brain-keys.json"),
    )
    .unwrap();
    let text = std::fs::read_to_string(&first_home.config).unwrap();
    let clone_config = clone_dir.join("agent.toml");
    std::fs::write(
        &clone_config,
        text.replace(
            &first_home.state.display().to_string(),
            &clone_dir.join("state").display().to_string(),
        ),
    )
    .unwrap();
    let clone_home = AgentHome {
        config: clone_config,
        state: clone_dir.join("state"),
    };
    let _second = start_agent(&clone_home);

    let deadline = Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(status) = first.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the first process kept running");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!exit.success());
    let log = std::fs::read_to_string(first_home.state.join("agent.log")).unwrap();
    assert!(
        log.contains("another agent process with this identity"),
        "{log}"
    );

    let after = brain
        .issue(&agent, "restart-worker", json!({"worker_name": "w"}))
        .await;
    brain.wait_status(&after, "succeeded").await;
    let first_ran: Vec<Value> = executed(&first_home);
    let second_ran: Vec<Value> = executed(&clone_home);
    assert_eq!(first_ran.len(), 1);
    assert_eq!(second_ran.len(), 1);
    assert_eq!(second_ran[0]["id"], after.as_str());
}

fn set_events(home: &AgentHome, total: u64, per_sec: u64) {
    let text = std::fs::read_to_string(&home.config).unwrap();
    let text = text
        .replace("events_total = 0", &format!("events_total = {total}"))
        .replace("events_per_sec = 0", &format!("events_per_sec = {per_sec}"));
    std::fs::write(&home.config, text).unwrap();
}

/// Tasks by state, read from the brain's SQLite database.
fn task_states(dir: &Path) -> std::collections::BTreeMap<String, i64> {
    use taskward_brain::store::{DatabaseUrl, Store, projects, tasks};
    let store = Store::open(&DatabaseUrl::Sqlite(dir.join("taskward-data/taskward.db"))).unwrap();
    store
        .read_blocking("test_counts", |c| {
            let project = projects::find(c, &"default".parse().unwrap())?;
            tasks::count_by_state(c, &project.id)
        })
        .unwrap()
        .into_iter()
        .collect()
}

/// Tasks whose timeline misses an event (a lost update).
fn incomplete_tasks(dir: &Path) -> i64 {
    use diesel::{QueryableByName, RunQueryDsl};
    use taskward_brain::store::{DatabaseUrl, Store};
    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let store = Store::open(&DatabaseUrl::Sqlite(dir.join("taskward-data/taskward.db"))).unwrap();
    store
        .read_blocking("test_incomplete", |c| {
            let rows: Vec<N> = diesel::sql_query(
                "SELECT COUNT(*) AS n FROM tasks WHERE state = 'succeeded' AND \
                 (received_at IS NULL OR started_at IS NULL OR finished_at IS NULL)",
            )
            .load(c)?;
            Ok(rows[0].n)
        })
        .unwrap()
}

/// 100,000 events stream while the brain is killed and restarted: every task ends in the store
/// once, with its full timeline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_arrive_exactly_once_across_a_brain_restart() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let brain = Brain::start_with(dir.path(), port, &[]).await;
    let (agent, token) = brain.create_agent("host-1").await;
    let home = enroll(&brain, &token, &dir.path().join("agent"), 0);
    set_events(&home, 100_000, 25_000);
    let _agent = start_agent(&home);
    wait_online(&brain, &agent).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mid = task_states(dir.path()).values().sum::<i64>();
    assert!(
        mid > 0 && mid < 33_334,
        "the restart should land mid-stream ({mid} tasks so far)"
    );
    drop(brain); // SIGKILL
    tokio::time::sleep(Duration::from_millis(500)).await;
    let brain = Brain::start_with(dir.path(), port, &[]).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let states = task_states(dir.path());
        if states.get("succeeded") == Some(&33_333) && states.get("received") == Some(&1) {
            assert_eq!(states.values().sum::<i64>(), 33_334, "{states:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "events missing after the restart: {states:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(incomplete_tasks(dir.path()), 0);
    let (_, listed) = brain
        .call(
            reqwest::Method::GET,
            &format!("/api/v1/projects/default/agents/{agent}"),
            None,
        )
        .await;
    assert_eq!(listed["dropped_events"], 0);
}

/// A TCP proxy between agent and brain, cut for 30 s while commands are issued and events
/// stream: nothing is lost, nothing runs twice, and a command that expired during the cut is
/// never run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_30_second_link_cut_loses_nothing_and_runs_nothing_late() {
    let dir = tempfile::tempdir().unwrap();
    let brain = Brain::start_with(dir.path(), free_port(), &["--command-ttl", "10"]).await;
    let proxy = Proxy::start(brain.url.trim_start_matches("http://")).await;
    let (agent, token) = brain.create_agent("host-1").await;
    let home = enroll_via(
        &format!("http://{}", proxy.addr),
        &token,
        &dir.path().join("agent"),
        0,
    );
    set_events(&home, 60_000, 1_500);
    let text = std::fs::read_to_string(&home.config).unwrap();
    std::fs::write(
        &home.config,
        text.replace("reconnect_max_secs = 30", "reconnect_max_secs = 2"),
    )
    .unwrap();
    let _agent = start_agent(&home);
    wait_online(&brain, &agent).await;
    let before = brain
        .issue(&agent, "restart-worker", json!({"worker_name": "before"}))
        .await;
    brain.wait_status(&before, "succeeded").await;

    proxy.cut(true);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let expires_during_cut = brain
        .issue(&agent, "restart-worker", json!({"worker_name": "expired"}))
        .await;
    tokio::time::sleep(Duration::from_secs(25)).await;
    let issued_late_in_cut = brain
        .issue(&agent, "restart-worker", json!({"worker_name": "late"}))
        .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        brain.command(&expires_during_cut).await["status"],
        "timed_out"
    );
    proxy.cut(false);

    brain.wait_status(&issued_late_in_cut, "succeeded").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let states = task_states(dir.path());
        if states.get("succeeded") == Some(&20_000) {
            assert_eq!(states.values().sum::<i64>(), 20_000, "{states:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "events lost in the cut: {states:?}\nagent log:\n{}\nbrain log:\n{}",
            std::fs::read_to_string(home.state.join("agent.log")).unwrap_or_default(),
            brain.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(incomplete_tasks(dir.path()), 0);
    let ran: Vec<String> = executed(&home)
        .iter()
        .map(|e| e["payload"]["worker_name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        ran,
        ["before", "late"],
        "the expired command ran, or something ran twice"
    );
}

/// A TCP forwarder the test can cut: while cut, it drops every connection and refuses new ones.
struct Proxy {
    addr: std::net::SocketAddr,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    _task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: &str) -> Proxy {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let upstream = upstream.to_owned();
        let flag = cut.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if flag.load(Ordering::SeqCst) {
                    continue; // dropped: the connection is refused while cut
                }
                let (upstream, flag) = (upstream.clone(), flag.clone());
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let (mut cr, mut cw) = client.split();
                    let (mut sr, mut sw) = server.split();
                    let watch_cut = async {
                        while !flag.load(Ordering::SeqCst) {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    };
                    tokio::select! {
                        _ = tokio::io::copy(&mut cr, &mut sw) => {}
                        _ = tokio::io::copy(&mut sr, &mut cw) => {}
                        _ = watch_cut => {}
                    }
                });
            }
        });
        Proxy {
            addr,
            cut,
            _task: task,
        }
    }

    fn cut(&self, on: bool) {
        self.cut.store(on, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Past its bound the spool drops the oldest events and counts them; the count reaches the
/// brain (agents list) and `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spool_overflow_is_counted_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let brain = Brain::start_with(dir.path(), port, &[]).await;
    let (agent, token) = brain.create_agent("host-1").await;
    let home = enroll(&brain, &token, &dir.path().join("agent"), 0);
    set_events(&home, 150_000, 0);
    let text = std::fs::read_to_string(&home.config).unwrap();
    std::fs::write(
        &home.config,
        text.replace("spool_max_bytes = 1073741824", "spool_max_bytes = 9437184")
            .replace("reconnect_max_secs = 30", "reconnect_max_secs = 1"),
    )
    .unwrap();
    let (url, admin) = (brain.url.clone(), brain.token.clone());
    drop(brain); // the brain is down while the agent produces ~25 MiB of events
    let _agent = start_agent(&home);
    wait_for(Duration::from_secs(60), "the spool to overflow", || async {
        std::fs::read_to_string(home.state.join("spool/dropped"))
            .is_ok_and(|n| n.trim().parse::<u64>().unwrap_or(0) > 0)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let dropped: u64 = std::fs::read_to_string(home.state.join("spool/dropped"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let brain = Brain::start_with(dir.path(), port, &[]).await;
    assert_eq!(
        (brain.url.as_str(), brain.token.as_str()),
        (url.as_str(), admin.as_str())
    );
    wait_for(
        Duration::from_secs(60),
        "the drop count at the brain",
        || async {
            let (_, body) = brain
                .call(
                    reqwest::Method::GET,
                    &format!("/api/v1/projects/default/agents/{agent}"),
                    None,
                )
                .await;
            body["dropped_events"].as_u64() == Some(dropped)
        },
    )
    .await;
    // The gauge is set just after the batch's transaction commits, so it may trail the API
    // by a moment.
    let line = format!("taskward_dropped_events{{agent=\"host-1\"}} {dropped}");
    wait_for(
        Duration::from_secs(20),
        &format!("`{line}` on /metrics"),
        || async { brain.metrics().await.contains(&line) },
    )
    .await;
    wait_for(
        Duration::from_secs(20),
        "the drop count in `taskward-agent status`",
        || async {
            let status = Command::new(AGENT)
                .arg("--config")
                .arg(&home.config)
                .arg("status")
                .output()
                .unwrap();
            String::from_utf8_lossy(&status.stdout).contains(&format!("dropped events {dropped}"))
        },
    )
    .await;
}

/// The project's Python with Celery (made by `scripts/ensure-services`).
fn celery_python() -> PathBuf {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/test (scripts/ensure-services installs Celery)",
        python.display()
    );
    python
}

/// Runs Python with the example Celery app on `broker`; returns stdout lines (task ids).
fn celery_python_run(broker: &str, code: &str, env: &[(&str, &str)]) -> Vec<String> {
    let out = Command::new(celery_python())
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/celery-app"))
        .args(["-c", code])
        .env("CELERY_BROKER_URL", broker)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// A real Celery worker of the example app, in its own process group (killed with it).
fn celery_worker(
    broker: &str,
    name: &str,
    pool: &[&str],
    env: &[(&str, &str)],
    log: &Path,
) -> Proc {
    Proc(
        Command::new(celery_python())
            .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/celery-app"))
            .args([
                "-m",
                "celery",
                "-A",
                "app",
                "worker",
                "-n",
                name,
                "--without-mingle",
                "--without-gossip",
            ])
            .args(pool)
            .env("CELERY_BROKER_URL", broker)
            .envs(env.iter().copied())
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap(),
    )
}

/// A brain and an enrolled Celery agent on `broker` (watching `queues`), connected and
/// subscribed to the broker's events.
struct CeleryStack {
    dir: tempfile::TempDir,
    brain: Brain,
    agent: String,
    home: AgentHome,
    _agent: Proc,
    store: taskward_brain::store::Store,
}

impl CeleryStack {
    async fn start(broker: &str, queues: &[&str]) -> CeleryStack {
        // Each test owns its broker db: start from an empty one (no leftovers of earlier runs).
        celery_python_run(
            broker,
            "import os, redis; redis.Redis.from_url(os.environ['CELERY_BROKER_URL']).flushdb()",
            &[],
        );
        let dir = tempfile::tempdir().unwrap();
        let brain = Brain::start(dir.path()).await;
        let (agent, token) = brain.create_agent("celery-host").await;
        let config = dir.path().join("agent/agent.toml");
        let out = Command::new(AGENT)
            .arg("--config")
            .arg(&config)
            .args([
                "enroll", "--brain", &brain.url, "--token", &token, "--engine", "celery",
                "--broker", broker,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let watched = serde_json::to_string(queues).unwrap().replace(',', ", ");
        let text = std::fs::read_to_string(&config).unwrap();
        std::fs::write(
            &config,
            text.replace(r#"queues = ["celery"]"#, &format!("queues = {watched}")),
        )
        .unwrap();
        let home = AgentHome {
            config,
            state: dir.path().join("agent/state"),
        };
        let process = start_agent(&home);
        wait_online(&brain, &agent).await;
        wait_for(
            Duration::from_secs(20),
            "the agent to subscribe",
            || async {
                std::fs::read_to_string(home.state.join("agent.log"))
                    .unwrap_or_default()
                    .contains("reading Celery events")
            },
        )
        .await;
        let store =
            taskward_brain::store::Store::open(&taskward_brain::store::DatabaseUrl::Sqlite(
                dir.path().join("taskward-data/taskward.db"),
            ))
            .unwrap();
        CeleryStack {
            dir,
            brain,
            agent,
            home,
            _agent: process,
            store,
        }
    }

    fn task(&self, id: &str) -> Option<taskward_brain::store::tasks::TaskRow> {
        use taskward_brain::store::{projects, tasks};
        let id = id.to_owned();
        self.store
            .read_blocking("test_task", |c| {
                let project = projects::find(c, &"default".parse().unwrap())?;
                tasks::find(c, &project.id, "celery", &id)
            })
            .ok()
    }

    fn workers(&self) -> Vec<(String, bool)> {
        let agent = self.agent.clone();
        self.store
            .read_blocking("test_workers", |c| {
                taskward_brain::store::tasks::workers_of_agent(c, &agent)
            })
            .unwrap()
    }

    fn log(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    async fn wait_task(
        &self,
        id: &str,
        what: &str,
        done: impl Fn(&taskward_brain::store::tasks::TaskRow) -> bool,
    ) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.task(id).is_some_and(|t| done(&t)) {
            assert!(
                Instant::now() < deadline,
                "{what}: task {id} is {:?}\nagent log:\n{}",
                self.task(id).map(|t| t.state),
                std::fs::read_to_string(self.home.state.join("agent.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

const PREFORK_1: &[&str] = &["-E", "--pool", "prefork", "-c", "1"];

/// A real Celery worker on the real Redis emits events; the agent's Celery adapter reads them
/// from pub/sub and the brain stores the tasks with their results, errors and worker. A retry
/// with new kwargs republishes the task, which runs again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn celery_events_from_a_real_worker_become_tasks() {
    let broker = "redis://127.0.0.1:6379/9";
    let stack = CeleryStack::start(broker, &["celery"]).await;
    let _worker = celery_worker(
        broker,
        "w1@taskward-test",
        &["-E", "--pool", "solo", "--loglevel", "INFO"],
        &[],
        &stack.log("worker.log"),
    );
    let ids = celery_python_run(
        broker,
        "import app; print(app.add.delay(2, 3).id); print(app.fail.delay().id)",
        &[],
    );
    stack
        .wait_task(&ids[0], "add", |t| t.state == "succeeded")
        .await;
    stack
        .wait_task(&ids[1], "fail", |t| t.state == "failed")
        .await;
    let (added, failed) = (stack.task(&ids[0]).unwrap(), stack.task(&ids[1]).unwrap());
    assert_eq!(added.name.as_deref(), Some("app.add"));
    assert_eq!(added.result.as_deref(), Some("5"));
    assert_eq!(added.worker_name.as_deref(), Some("w1@taskward-test"));
    assert!(
        added.received_at.is_some() && added.started_at.is_some() && added.finished_at.is_some()
    );
    assert!(added.runtime_ms.is_some());
    assert!(
        failed.exception.as_deref().unwrap().contains("ValueError"),
        "{failed:?}"
    );
    assert!(failed.traceback.is_some());

    // Retry with new kwargs: the brain resolves the original arguments from the event reprs,
    // the agent republishes them, and the worker runs the new task.
    let greeted =
        celery_python_run(broker, "import app; print(app.greet.delay('ann').id)", &[]).remove(0);
    stack
        .wait_task(&greeted, "the greeting", |t| {
            t.result.as_deref() == Some("'hello ann'")
        })
        .await;
    let retry = stack
        .brain
        .issue(
            &stack.agent,
            "retry-task",
            json!({"engine": "celery", "task_id": greeted, "override_kwargs": {"greeting": "hi"}}),
        )
        .await;
    let new_id = retried_id(&stack.brain.wait_status(&retry, "succeeded").await);
    assert_ne!(new_id, greeted);
    stack
        .wait_task(&new_id, "the retried task", |t| {
            t.state == "succeeded" && t.result.as_deref() == Some("'hi ann'")
        })
        .await;
    // The retry sits under its original in the task tree.
    let retried = stack.task(&new_id).unwrap();
    assert_eq!(retried.parent_task_id.as_deref(), Some(greeted.as_str()));
    assert_eq!(retried.root_task_id.as_deref(), Some(greeted.as_str()));

    // Secrets and addresses in arguments are redacted on the host: they never reach the
    // brain's database; a retry reads the real values kept on the host.
    let secret = celery_python_run(
        broker,
        "import app; print(app.login.delay('ann', password='hunter2', email='ann@example.com').id)",
        &[],
    )
    .remove(0);
    stack
        .wait_task(&secret, "the login task", |t| t.state == "succeeded")
        .await;
    let row = stack.task(&secret).unwrap();
    assert_eq!(
        row.kwargs.as_deref(),
        Some(r#"{"email":"<email>","password":"<redacted>"}"#)
    );
    let mut stored = Vec::new();
    for file in ["taskward.db", "taskward.db-wal"] {
        if let Ok(bytes) = std::fs::read(stack.dir.path().join("taskward-data").join(file)) {
            stored.extend(bytes);
        }
    }
    let stored = String::from_utf8_lossy(&stored);
    assert!(
        stored.contains("logged in ann"),
        "the scan does not see the data"
    );
    assert!(
        !stored.contains("hunter2") && !stored.contains("ann@example.com"),
        "a secret reached the brain"
    );
    // The originals stay on the agent's host, readable by its user only.
    let vault = stack.home.state.join("args-vault.jsonl");
    // Written through a buffer flushed every second.
    wait_for(
        Duration::from_secs(5),
        "the originals on the host",
        || async {
            std::fs::read_to_string(&vault)
                .unwrap_or_default()
                .contains("hunter2")
        },
    )
    .await;
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&vault).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let retry = stack
        .brain
        .issue(
            &stack.agent,
            "retry-task",
            json!({"engine": "celery", "task_id": secret}),
        )
        .await;
    let done = stack.brain.wait_status(&retry, "succeeded").await;
    let again = retried_id(&done);
    stack
        .wait_task(&again, "the retried login", |t| {
            t.result.as_deref() == Some("'logged in ann with a 7-character password'")
        })
        .await;
}

/// The new task id a retry's result names (`retried <old> as <new> on queue <q>`).
fn retried_id(command: &Value) -> String {
    let detail = command["detail"].as_str().unwrap_or_default();
    detail
        .split(" as ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no new task id in {detail:?}"))
        .to_owned()
}

/// A real worker killed with SIGKILL mid-task: it goes offline and its started task becomes
/// `lost`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_celery_worker_goes_offline_and_its_task_is_lost() {
    let broker = "redis://127.0.0.1:6379/10";
    let stack = CeleryStack::start(broker, &["celery"]).await;
    // Prefork: the main process keeps flushing events while the child sleeps.
    let mut worker = celery_worker(
        broker,
        "doomed@taskward-test",
        PREFORK_1,
        &[],
        &stack.log("worker.log"),
    );
    let id =
        celery_python_run(broker, "import app; print(app.sleepy.delay(120).id)", &[]).remove(0);
    stack
        .wait_task(&id, "the task to start", |t| t.state == "started")
        .await;
    assert_eq!(stack.workers(), [("doomed@taskward-test".to_owned(), true)]);
    // SIGKILL to the worker and its pool child: no worker-offline event, no task event.
    let group = format!("-{}", worker.0.id());
    assert!(
        Command::new("kill")
            .args(["-KILL", "--", &group])
            .status()
            .unwrap()
            .success()
    );
    worker.0.wait().unwrap();
    stack
        .wait_task(&id, "the task to be lost", |t| t.state == "lost")
        .await;
    assert_eq!(
        stack.workers(),
        [("doomed@taskward-test".to_owned(), false)]
    );
}

/// Every worker-control verb, end to end: API → signed command → agent → Celery's remote
/// control on a real worker (or the broker, for purges) → signed result with the worker's answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_reach_a_real_celery_worker() {
    let broker = "redis://127.0.0.1:6379/11";
    let stack = CeleryStack::start(broker, &["celery", "reports"]).await;
    // A queue no worker consumes, with messages in two priority buckets.
    celery_python_run(
        broker,
        "import redis; r = redis.Redis(db=11); \
         r.lpush('reports', 'a', 'b', 'c'); r.lpush('reports\\x06\\x166', 'd', 'e')",
        &[],
    );
    let worker_name = "ctl@taskward-test";
    let _worker = celery_worker(
        broker,
        worker_name,
        PREFORK_1,
        &[],
        &stack.log("worker.log"),
    );
    wait_for(
        Duration::from_secs(30),
        "the worker to come online",
        || async {
            stack
                .workers()
                .iter()
                .any(|(name, online)| name == worker_name && *online)
        },
    )
    .await;
    let brain = &stack.brain;
    // The worker's pool and queues, from Celery's stats and active_queues, in the agents API.
    wait_for(
        Duration::from_secs(30),
        "the worker's pool in the agents API",
        || async {
            let (_, body) = brain
                .call(
                    reqwest::Method::GET,
                    &format!("/api/v1/projects/default/agents/{}", stack.agent),
                    None,
                )
                .await;
            body["workers"].as_array().is_some_and(|ws| {
                ws.iter().any(|w| {
                    w["name"] == worker_name
                        && w["status"] == "online"
                        && w["pool"] == "prefork"
                        && w["concurrency"] == 1
                        && w["queues"] == json!(["celery"])
                })
            })
        },
    )
    .await;

    let agent = stack.agent.as_str();
    let run = |kind: &'static str, body: Value| async move {
        let id = brain.issue(agent, kind, body).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let command = brain.command(&id).await;
            if command["status"] == "succeeded" || command["status"] == "failed" {
                return command;
            }
            assert!(
                Instant::now() < deadline,
                "{kind} never finished: {command}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let expect = |command: &Value, status: &str, detail: &str| {
        assert_eq!(command["status"], status, "{command}");
        assert!(
            command["detail"]
                .as_str()
                .unwrap_or_default()
                .contains(detail),
            "{command}"
        );
    };
    let w = worker_name;
    expect(
        &run(
            "add-consumer",
            json!({"worker_name": w, "queue": "billing"}),
        )
        .await,
        "succeeded",
        "add consumer billing",
    );
    expect(
        &run(
            "cancel-consumer",
            json!({"worker_name": w, "queue": "billing"}),
        )
        .await,
        "succeeded",
        "no longer consuming from billing",
    );
    // The size is read back from Celery's stats after the grow.
    expect(
        &run("pool-resize", json!({"worker_name": w, "delta": 1})).await,
        "succeeded",
        "pool will grow; pool processes 1 -> 2",
    );

    // Cancels say what happened: a running task terminated, a finished one left alone.
    let running =
        celery_python_run(broker, "import app; print(app.sleepy.delay(60).id)", &[]).remove(0);
    stack
        .wait_task(&running, "the sleeper to start", |t| t.state == "started")
        .await;
    expect(
        &run(
            "cancel-task",
            json!({"engine": "celery", "task_id": running, "terminate": true}),
        )
        .await,
        "succeeded",
        &format!("terminated while running on {w} (SIGTERM)"),
    );
    stack
        .wait_task(&running, "the terminated task", |t| t.state == "cancelled")
        .await;
    let quick =
        celery_python_run(broker, "import app; print(app.add.delay(1, 1).id)", &[]).remove(0);
    stack
        .wait_task(&quick, "a quick task", |t| t.state == "succeeded")
        .await;
    expect(
        &run("cancel-task", json!({"engine": "celery", "task_id": quick})).await,
        "succeeded",
        "already finished (succeeded); nothing was stopped",
    );

    // A repr Celery truncated (a 3000-character argument): the agent asks the worker for the
    // real arguments while it holds the task (query_task), so the retry carries all of it.
    let blob = "x".repeat(2999) + "y";
    let big = celery_python_run(
        broker,
        &format!("import app; print(app.digest.delay('{blob}', seconds=3).id)"),
        &[],
    )
    .remove(0);
    stack
        .wait_task(&big, "the worker's copy of the arguments", |t| {
            t.state == "succeeded" && t.args.as_deref().is_some_and(|a| a.ends_with("y\"]"))
        })
        .await;
    let row = stack.task(&big).unwrap();
    // The brain holds the worker's whole (redacted) copy, not the truncated repr.
    assert_eq!(row.args, Some(json!([blob]).to_string()));
    assert_eq!(row.args_unavailable, None);
    assert_eq!(
        (row.queue.as_deref(), row.priority.as_deref()),
        (Some("celery"), Some("0"))
    );
    let again = retried_id(&run("retry-task", json!({"engine": "celery", "task_id": big})).await);
    stack
        .wait_task(&again, "the retried big task", |t| {
            t.state == "succeeded" && t.result == row.result
        })
        .await;

    // Priorities: the worker's copy says 5, and a retry goes back into the same bucket.
    let urgent = celery_python_run(
        broker,
        "import app; print(app.sleepy.apply_async((2,), priority=5).id)",
        &[],
    )
    .remove(0);
    stack
        .wait_task(&urgent, "the urgent task's priority", |t| {
            t.priority.as_deref() == Some("5") && t.queue.as_deref() == Some("celery")
        })
        .await;
    stack
        .wait_task(&urgent, "the urgent task", |t| t.state == "succeeded")
        .await;
    let again =
        retried_id(&run("retry-task", json!({"engine": "celery", "task_id": urgent})).await);
    stack
        .wait_task(&again, "the retried urgent task", |t| {
            t.state == "succeeded" && t.priority.as_deref() == Some("5")
        })
        .await;
    expect(
        &run(
            "rate-limit",
            json!({"worker_name": w, "task_name": "app.add", "rate": "10/m"}),
        )
        .await,
        "succeeded",
        "new rate limit set",
    );
    expect(
        &run(
            "rate-limit",
            json!({"worker_name": w, "task_name": "app.nope", "rate": "1/s"}),
        )
        .await,
        "failed",
        "unknown task",
    );
    expect(
        &run("restart-worker", json!({"worker_name": w})).await,
        "succeeded",
        "reload started",
    );
    expect(
        &run("restart-worker", json!({"worker_name": "ghost@nowhere"})).await,
        "failed",
        "no reply from ghost@nowhere",
    );
    // A task id the project never recorded is refused by the brain, never sent to revoke.
    let (status, reply) = brain
        .call(
            reqwest::Method::POST,
            "/api/v1/projects/default/commands/cancel-task",
            Some(json!({
                "agent_id": agent,
                "engine": "celery",
                "task_id": "00000000-0000-0000-0000-00000000dead",
            })),
        )
        .await;
    assert_eq!(status, 404, "{reply}");
    // Bulk retry: two failed tasks run again.
    let failed = celery_python_run(
        broker,
        "import app; print(app.fail.delay().id); print(app.fail.delay().id)",
        &[],
    );
    for id in &failed {
        stack
            .wait_task(id, "a failure", |t| t.state == "failed")
            .await;
    }
    expect(
        &run(
            "bulk-retry",
            json!({"filter": {"state": "failed", "name": "app.fail"}, "max": 10}),
        )
        .await,
        "succeeded",
        "retried 2, skipped not retryable 0, failed 0",
    );
    let all_failed = || {
        use taskward_brain::store::tasks;
        stack
            .store
            .read_blocking("test_counts", |c| {
                let project =
                    taskward_brain::store::projects::find(c, &"default".parse().unwrap())?;
                tasks::count_by_state(c, &project.id)
            })
            .unwrap()
            .into_iter()
            .find(|(s, _)| s == "failed")
            .map_or(0, |(_, n)| n)
    };
    wait_for(Duration::from_secs(30), "the retried failures", || async {
        all_failed() == 4
    })
    .await;

    // A confirmed purge of the depth the operator saw, then the queue is empty.
    let queues = format!("/api/v1/projects/default/agents/{}/queues", stack.agent);
    let confirm = {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (_, body) = brain.call(reqwest::Method::GET, &queues, None).await;
            if let Some(q) = body["items"].as_array().and_then(|items| {
                items
                    .iter()
                    .find(|q| q["queue"] == "reports" && q["depth"] == 5)
            }) {
                break q["confirm_token"].as_str().unwrap().to_owned();
            }
            assert!(Instant::now() < deadline, "no depth for reports: {body}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    expect(
        &run(
            "purge-queue",
            json!({"queue": "reports", "confirm_token": confirm}),
        )
        .await,
        "succeeded",
        "purged 5 messages from reports",
    );
    let left = celery_python_run(
        broker,
        "import redis; r = redis.Redis(db=11); print(r.llen('reports') + r.llen('reports\\x06\\x166'))",
        &[],
    );
    assert_eq!(left, ["0"]);
}

/// A worker started without `-E` sends no task events until the agent switches them on with
/// `enable_events` (and says so in its log).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_without_task_events_are_switched_on() {
    let broker = "redis://127.0.0.1:6379/12";
    let stack = CeleryStack::start(broker, &["celery"]).await;
    let _worker = celery_worker(
        broker,
        "quiet@taskward-test",
        &["--pool", "solo"],
        &[("TASK_EVENTS", "0"), ("POOL_RESTARTS", "0")],
        &stack.log("worker.log"),
    );
    wait_for(
        Duration::from_secs(30),
        "enable_events in the agent log",
        || async {
            std::fs::read_to_string(stack.home.state.join("agent.log"))
                .unwrap_or_default()
                .contains("asked the worker to send task events")
        },
    )
    .await;
    let id =
        celery_python_run(broker, "import app; print(app.add.delay(20, 22).id)", &[]).remove(0);
    stack
        .wait_task(&id, "the task's events", |t| {
            t.state == "succeeded" && t.result.as_deref() == Some("42")
        })
        .await;

    // A truncated repr on a solo worker, which cannot answer query_task while it runs the
    // task: the real arguments are unavailable, the brain shows why, and a retry is refused.
    let blob = "z".repeat(3000);
    let big = celery_python_run(
        broker,
        &format!("import app; print(app.digest.delay('{blob}', seconds=3).id)"),
        &[],
    )
    .remove(0);
    stack
        .wait_task(&big, "the reason in the brain", |t| {
            t.state == "succeeded" && t.args_unavailable.is_some()
        })
        .await;
    let why = stack.task(&big).unwrap().args_unavailable.unwrap();
    assert!(why.contains("query_task"), "{why}");
    let (status, body) = stack
        .brain
        .call(
            reqwest::Method::POST,
            "/api/v1/projects/default/commands/retry-task",
            Some(json!({"agent_id": stack.agent, "engine": "celery", "task_id": big})),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("not retryable: arguments unavailable"),
        "{message}"
    );

    // What a solo worker without pool restarts cannot do fails with Celery's own reason.
    for (kind, body, reason) in [
        (
            "restart-worker",
            json!({"worker_name": "quiet@taskward-test"}),
            "Pool restarts not enabled",
        ),
        (
            "pool-resize",
            json!({"worker_name": "quiet@taskward-test", "delta": 1}),
            "no attribute 'grow'",
        ),
    ] {
        let id = stack.brain.issue(&stack.agent, kind, body).await;
        let failed = stack.brain.wait_status(&id, "failed").await;
        assert!(
            failed["detail"]
                .as_str()
                .unwrap_or_default()
                .contains(reason),
            "{kind}: {failed}"
        );
    }
}

/// A gap in the event stream (Redis drops the agent's connections, again and again, while a
/// task starts): the agent counts the task events it missed, reports them as dropped, and
/// learns the in-flight task from the workers (`active`) once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_in_the_event_stream_is_counted_and_reconciled() {
    let broker = "redis://127.0.0.1:6379/14";
    let stack = CeleryStack::start(broker, &["celery"]).await;
    let _worker = celery_worker(
        broker,
        "gappy@taskward-test",
        &["-E", "--pool", "prefork", "-c", "2"],
        &[],
        &stack.log("worker.log"),
    );
    // Events flow first (counting starts with the first task event seen).
    let warm =
        celery_python_run(broker, "import app; print(app.add.delay(1, 2).id)", &[]).remove(0);
    stack
        .wait_task(&warm, "a first task", |t| t.state == "succeeded")
        .await;
    let agent_pid = stack._agent.0.id();
    // Kill every Redis connection of the agent for 4 s while a sleeper and ten quick tasks
    // start, spread over the storm.
    let ids = celery_python_run(
        broker,
        &format!(
            r#"
import subprocess, threading, time, redis, app
r = redis.Redis(db=14)
stop = time.time() + 4
def storm():
    while time.time() < stop:
        out = subprocess.run(["ss", "-tnpH", "dst", "127.0.0.1:6379"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if "pid={agent_pid}," in line:
                try:
                    r.client_kill(line.split()[3])
                except redis.ResponseError:
                    pass
        time.sleep(0.02)
t = threading.Thread(target=storm)
t.start()
time.sleep(0.5)
print(app.sleepy.delay(30).id)
for i in range(10):
    time.sleep(0.3)
    app.add.delay(i, i)
t.join()
"#
        ),
        &[],
    );
    // The sleeper is in flight: the brain learns it even if its events were lost.
    stack
        .wait_task(&ids[0], "the in-flight task", |t| t.state == "started")
        .await;
    wait_for(
        Duration::from_secs(30),
        "reconciliation and the missed events in the agents API",
        || async {
            let log =
                std::fs::read_to_string(stack.home.state.join("agent.log")).unwrap_or_default();
            let (_, body) = stack
                .brain
                .call(
                    reqwest::Method::GET,
                    &format!("/api/v1/projects/default/agents/{}", stack.agent),
                    None,
                )
                .await;
            log.contains("reconciled in-flight tasks")
                && body["dropped_events"].as_i64().unwrap_or(0) >= 1
        },
    )
    .await;
}

/// A health-check schedule, end to end with two real workers: each run pings the workers the
/// brain knows (one signed `ping-workers` command per agent, issued by the schedule) and ends
/// with the answers. After one worker is SIGKILLed and marked offline, the next run still pings
/// it (it went offline since the previous run), fails naming it, appends a signed
/// `schedule.alert` row and counts the alert on `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_health_check_schedule_pings_real_workers_and_alerts_on_a_dead_one() {
    let broker = "redis://127.0.0.1:6379/15";
    let stack = CeleryStack::start(broker, &["celery"]).await;
    let (alive, doomed) = ("alive@taskward-test", "doomed@taskward-test");
    let solo = &["-E", "--pool", "solo"];
    let _alive = celery_worker(broker, alive, solo, &[], &stack.log("alive.log"));
    let mut doomed_worker = celery_worker(broker, doomed, solo, &[], &stack.log("doomed.log"));
    let both_online = [(alive.to_owned(), true), (doomed.to_owned(), true)];
    wait_for(
        Duration::from_secs(60),
        "both workers to come online",
        || async { stack.workers() == both_online },
    )
    .await;

    let brain = &stack.brain;
    // Due on 29 February only: no cron run comes between the manual ones.
    let (status, body) = brain
        .call(
            reqwest::Method::POST,
            "/api/v1/projects/default/schedules",
            Some(json!({
                "name": "workers alive",
                "type": "health-check",
                "cronExpression": "0 3 29 2 *",
                "timezone": "UTC",
                "healthCheckConfig": {"alertOnFailure": true},
            })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let schedule = body["schedule"]["id"].as_str().unwrap().to_owned();
    assert!(schedule.starts_with("sch_"), "{body}");
    let path = format!("/api/v1/projects/default/schedules/{schedule}");
    // Runs the schedule now; waits until that run has an outcome and returns it.
    let run_now = || async {
        let (status, body) = brain
            .call(reqwest::Method::POST, &format!("{path}/run"), None)
            .await;
        assert_eq!(status, 200, "{body}");
        let execution = &body["execution"];
        assert_eq!(body["success"], true, "{body}");
        assert_eq!(execution["status"], "running", "{body}");
        assert_eq!(
            execution["commandIds"].as_array().unwrap().len(),
            1,
            "{body}"
        );
        let id = execution["id"].as_str().unwrap().to_owned();
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let (_, detail) = brain.call(reqwest::Method::GET, &path, None).await;
            let run = detail["history"]
                .as_array()
                .and_then(|runs| runs.iter().find(|r| r["id"] == id.as_str()))
                .cloned()
                .unwrap_or(Value::Null);
            if run["status"] == "success" || run["status"] == "failed" {
                return (run, detail);
            }
            assert!(
                Instant::now() < deadline,
                "run {id} never finished: {detail}\nagent log:\n{}\nbrain log:\n{}",
                std::fs::read_to_string(stack.home.state.join("agent.log")).unwrap_or_default(),
                brain.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    // The one ping of a run: its payload and outcome, and who issued it.
    let (agent, issuer) = (stack.agent.as_str(), schedule.as_str());
    let ping_of = |run: &Value| {
        let id = run["commandIds"][0].as_str().unwrap().to_owned();
        async move {
            let command = brain.command(&id).await;
            assert_eq!(command["kind"], "ping-workers", "{command}");
            assert_eq!(command["agent_id"], agent, "{command}");
            assert_eq!(command["issuer"]["type"], "schedule", "{command}");
            assert_eq!(command["issuer"]["id"], issuer, "{command}");
            assert_eq!(command["issuer"]["name"], "workers alive", "{command}");
            let issued = &command["audit_rows"][0];
            assert_eq!(issued["kind"], "command.issued", "{command}");
            assert_eq!(
                issued["statement"]["actor"]["type"], "schedule",
                "{command}"
            );
            assert_eq!(issued["statement"]["actor"]["id"], issuer, "{command}");
            assert_eq!(issued["signature_valid"], true, "{command}");
            command
        }
    };

    // Both workers answer: the run succeeds and says who answered.
    let (first, detail) = run_now().await;
    assert_eq!(first["status"], "success", "{detail}");
    assert_eq!(first["trigger"], "manual", "{detail}");
    assert_eq!(first["error"], Value::Null, "{detail}");
    assert_eq!(detail["lastStatus"], "success", "{detail}");
    let answered = format!("2 of 2 answered: {alive}, {doomed}");
    assert_eq!(
        first["result"]["commands"][0]["status"], "succeeded",
        "{first}"
    );
    assert_eq!(
        first["result"]["commands"][0]["detail"],
        answered.as_str(),
        "{first}"
    );
    let ping = ping_of(&first).await;
    assert_eq!(
        ping["payload"]["worker_names"],
        json!([alive, doomed]),
        "{ping}"
    );
    assert_eq!(ping["status"], "succeeded", "{ping}");
    assert_eq!(ping["detail"], answered.as_str(), "{ping}");

    // SIGKILL to one worker: no worker-offline event; the agent marks it offline once silent.
    let group = format!("-{}", doomed_worker.0.id());
    assert!(
        Command::new("kill")
            .args(["-KILL", "--", &group])
            .status()
            .unwrap()
            .success()
    );
    doomed_worker.0.wait().unwrap();
    let one_gone = [(alive.to_owned(), true), (doomed.to_owned(), false)];
    wait_for(
        Duration::from_secs(60),
        "the killed worker to go offline",
        || async { stack.workers() == one_gone },
    )
    .await;

    // Offline since the previous run, it is still pinged: the run fails naming it, and alerts.
    let (second, detail) = run_now().await;
    assert_eq!(second["status"], "failed", "{detail}");
    assert_eq!(detail["lastStatus"], "failed", "{detail}");
    let silence = format!("no answer within 5 s from {doomed}; 1 of 2 answered: {alive}");
    let error = second["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("ping-workers") && error.contains(&silence),
        "{second}"
    );
    assert_eq!(
        second["result"]["commands"][0]["status"], "failed",
        "{second}"
    );
    let ping = ping_of(&second).await;
    assert_eq!(
        ping["payload"]["worker_names"],
        json!([alive, doomed]),
        "{ping}"
    );
    assert_eq!(ping["status"], "failed", "{ping}");
    assert_eq!(ping["detail"], silence.as_str(), "{ping}");
    // The history, newest first.
    let runs: Vec<&Value> = detail["history"].as_array().unwrap().iter().collect();
    assert_eq!(runs.len(), 2, "{detail}");
    assert_eq!(
        (&runs[0]["id"], &runs[1]["id"]),
        (&second["id"], &first["id"])
    );

    // One signed alert row, for the failed run, naming the dead worker.
    let (_, audit) = brain
        .call(
            reqwest::Method::GET,
            "/api/v1/projects/default/audit?limit=1000",
            None,
        )
        .await;
    let alerts: Vec<&Value> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"] == "schedule.alert")
        .collect();
    assert_eq!(alerts.len(), 1, "{audit}");
    let alert = alerts[0];
    assert_eq!(alert["signature_valid"], true, "{alert}");
    let statement = &alert["statement"];
    assert_eq!(statement["actor"]["type"], "schedule", "{alert}");
    assert_eq!(statement["actor"]["id"], schedule.as_str(), "{alert}");
    assert_eq!(
        statement["payload"]["schedule"]["id"],
        schedule.as_str(),
        "{alert}"
    );
    assert_eq!(statement["payload"]["run"], second["id"], "{alert}");
    let failures = statement["payload"]["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 1, "{alert}");
    assert!(
        failures[0].as_str().unwrap_or_default().contains(&silence),
        "{alert}"
    );

    // The alert is counted (right after the run's transaction commits).
    let label = format!("schedule=\"{schedule}\"");
    let counted = || async {
        brain
            .metrics()
            .await
            .lines()
            .find(|l| l.starts_with("taskward_schedule_alerts_total{") && l.contains(&label))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    wait_for(Duration::from_secs(10), "the alert on /metrics", || async {
        counted().await >= 1.0
    })
    .await;
}

/// The dashboard end to end, in Debian's headless Chromium: an operator signs in, finds a task
/// that failed on a real Celery worker by filter, opens it, retries it with edited kwargs, and
/// watches the command go to succeeded on the live command page (no reload); the new run sits
/// under its original in the tree and succeeded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_retries_a_failed_task_on_a_real_worker() {
    let broker = "redis://127.0.0.1:6379/8";
    let stack = CeleryStack::start(broker, &["celery"]).await;
    let _worker = celery_worker(
        broker,
        "w1@dashboard-test",
        &["-E", "--pool", "solo"],
        &[],
        &stack.log("worker.log"),
    );
    let failed = celery_python_run(
        broker,
        "import app; print(app.divide.delay(x=10, y=0).id)",
        &[],
    )
    .remove(0);
    stack
        .wait_task(&failed, "divide by zero", |t| t.state == "failed")
        .await;

    let browser = browser::Browser::start().await;
    browser.size(1366, 768).await;
    let base = &stack.brain.url;
    let password = std::fs::read_to_string(stack.dir.path().join("taskward-data/admin.password"))
        .unwrap()
        .trim()
        .to_owned();
    browser
        .sign_in(base, "admin", &password, "/p/default/tasks")
        .await;
    browser
        .click_on("select[name=state] option[value=failed]")
        .await;
    browser.click_on("form.filters button[type=submit]").await;
    browser.wait_url(|u| u.contains("state=failed")).await;
    browser
        .click_on(&format!("a[href$='/tasks/celery/{failed}']"))
        .await;
    browser.wait_text("p.error", "ZeroDivisionError").await;
    browser
        .fill(
            &browser.find("textarea[name=override_kwargs]").await,
            "{\"y\": 2}",
        )
        .await;
    browser.click_on("form.retry button[type=submit]").await;
    browser
        .wait_text("[data-result]", "retry-task issued")
        .await;
    browser.click_on("[data-result] a").await;
    browser.wait_url(|u| u.contains("/commands/")).await;
    browser.run("window.__notReloaded = 7; return 1").await;
    browser.wait_text("span[data-status]", "succeeded").await;
    assert_eq!(browser.run("return window.__notReloaded").await, json!(7));
    browser.screenshot("celery-retry-command-1366").await;

    // The new run succeeded with the overridden kwarg, under its original.
    let (_, commands) = stack
        .brain
        .call(
            reqwest::Method::GET,
            "/api/v1/projects/default/commands",
            None,
        )
        .await;
    let retried = retried_id(&commands["items"][0]);
    stack
        .wait_task(&retried, "the retried division", |t| {
            t.state == "succeeded" && t.result.as_deref() == Some("5.0")
        })
        .await;
    browser
        .goto(&format!("{base}/p/default/tasks/celery/{failed}"))
        .await;
    let tree = browser.wait_text("ul.tree", &retried).await;
    assert!(
        tree.contains("succeeded") && tree.contains("failed"),
        "{tree}"
    );
    browser.screenshot("celery-retry-tree-1366").await;
}
