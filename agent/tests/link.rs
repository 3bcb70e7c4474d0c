//! The agent link with real processes: the `taskward-brain` and `taskward-agent` binaries on
//! loopback, the agent driving the scripted test adapter (a test double for the engine; the
//! Celery adapter is tested against real workers in the `celery` suite).

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use support::{AGENT, incomplete_tasks, open_store, start_brain, task_states};
use taskward_testkit::{AgentHome, Api, BrainProcess, Wait, wait_for};

/// A brain in a temporary directory and agent `host-1` enrolled with the test adapter (not
/// started yet).
struct Link {
    brain: BrainProcess,
    api: Api,
    agent: String,
    /// The enrollment token (spent).
    token: String,
    home: AgentHome,
    dir: tempfile::TempDir,
}

impl Link {
    /// A brain with default settings, the agent enrolled with it directly.
    async fn start() -> Link {
        Link::start_on(false).await
    }

    /// [`Link::start`] with the brain on a fresh PostgreSQL database when `postgres`.
    async fn start_on(postgres: bool) -> Link {
        let dir = tempfile::tempdir().unwrap();
        let brain = if postgres {
            BrainProcess::builder(taskward_testkit::brain_bin(), dir.path())
                .fresh_postgres()
                .start()
        } else {
            start_brain(dir.path())
        };
        let url = brain.url();
        Link::enroll(dir, brain, &url).await
    }

    /// Creates the agent on `brain` and enrolls it with the brain at `url` (a proxy, say).
    async fn enroll(dir: tempfile::TempDir, brain: BrainProcess, url: &str) -> Link {
        let api = brain.api();
        let (agent, token) = api.create_agent("host-1").await;
        let home = AgentHome::enroll(
            AGENT,
            &dir.path().join("agent"),
            url,
            &token,
            &["--engine", "test"],
        );
        Link {
            brain,
            api,
            agent,
            token,
            home,
            dir,
        }
    }

    /// Starts the agent and waits for it to connect.
    async fn run_agent(&mut self) {
        self.home.start();
        self.api.wait_online(&self.agent, true).await;
    }

    /// Issues a command to the agent.
    async fn issue(&self, kind: &str, body: Value) -> String {
        self.api.issue(&self.agent, kind, body).await
    }

    /// Waits up to 20 s for command `id` to reach `status`; the command.
    async fn wait_status(&self, id: &str, status: &str) -> Value {
        support::wait_status(&self.api, &self.brain, id, status).await
    }

    /// The test adapter emits `total` events at `per_sec` (0: as fast as it can).
    fn set_events(&self, total: u64, per_sec: u64) {
        self.home
            .edit_config("events_total = 0", &format!("events_total = {total}"));
        self.home
            .edit_config("events_per_sec = 0", &format!("events_per_sec = {per_sec}"));
    }
}

/// Asserts that `command`'s detail starts with `prefix`: who ended it, and why.
fn assert_detail_starts(command: &Value, prefix: &str) {
    let detail = command["detail"].as_str().unwrap_or_default();
    assert!(detail.starts_with(prefix), "{command}");
}

/// Commands the test adapter of `home` was asked to run.
fn executed(home: &AgentHome) -> Vec<Value> {
    home.read_state("test-adapter.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Waits up to 60 s until the tasks by state are `expected` exactly.
async fn wait_for_tasks(link: &Link, expected: &[(&str, i64)], what: &str) {
    let expected: std::collections::BTreeMap<String, i64> = expected
        .iter()
        .map(|(state, n)| ((*state).to_owned(), *n))
        .collect();
    Wait::new(what)
        .within(Duration::from_secs(60))
        .every(Duration::from_millis(200))
        .context(|| support::logs(&link.home, &link.brain))
        .until_ok(|| async {
            // A store opened per look, as another process reading beside the brain would.
            let states = task_states(&open_store(&link.brain));
            if states == expected {
                Ok(())
            } else {
                Err(format!("{states:?}"))
            }
        })
        .await;
    assert_eq!(incomplete_tasks(&open_store(&link.brain)), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_round_trip_with_signed_results() {
    let mut link = Link::start().await;
    // The token is spent: enrolling again with it fails with a clear message.
    let again = taskward_testkit::agent::enroll_output(
        Path::new(AGENT),
        &link.dir.path().join("other.toml"),
        &link.brain.url(),
        &link.token,
        &[],
    );
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("unknown, spent or expired"));

    // A command minted while the agent is away is delivered when it connects.
    let early = link
        .issue("restart-worker", json!({"worker_name": "celery@w1"}))
        .await;
    link.run_agent().await;
    let done = link.wait_status(&early, "succeeded").await;
    let rows = done["audit_rows"].as_array().unwrap();
    let kinds: Vec<&str> = rows.iter().map(|r| r["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["command.issued", "command.dispatched", "command.succeeded"]
    );
    assert!(rows.iter().all(|r| r["signature_valid"] == true));
    let evidence = &done["audit_rows"][2]["statement"]["payload"]["agent_result"];
    assert_eq!(evidence["result"]["outcome"], "succeeded");
    assert_eq!(
        evidence["result"]["row_hash"],
        done["audit_rows"][0]["hash"]
    );
    assert_eq!(done["audit_rows"][2]["statement"]["actor"]["type"], "agent");

    // One pushed while connected, and a kind the engine fails.
    let live = link
        .issue("pool-resize", json!({"worker_name": "w", "delta": 2}))
        .await;
    link.wait_status(&live, "succeeded").await;
    assert_eq!(executed(&link.home).len(), 2);

    let text = link.home.status();
    assert!(text.contains("connected (session 1)"), "{text}");
    assert!(text.contains(&live), "{text}");
}

/// A connected agent is never stale, however old its records say it is; once it is gone and
/// silent past the window, stale cleanup removes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connected_agent_is_never_stale() {
    let mut link = Link::start().await;
    link.run_agent().await;
    let store = open_store(&link.brain);
    let backdate = || {
        use diesel::prelude::*;
        use taskward_brain::store::schema::agents;
        let (id, week_ago) = (
            link.agent.clone(),
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
    let cleanup = |agent: &str| {
        let body = json!({"agent_id": agent, "inactive_hours": 1});
        let api = link.api.clone();
        async move {
            api.call(
                reqwest::Method::POST,
                "/api/v1/projects/default/runtime-cleanup/stale",
                Some(body),
            )
            .await
        }
    };
    backdate();
    let (status, body) = cleanup(&link.agent).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"]["agent"]["reason"], "connected", "{body}");
    link.home.kill_9();
    link.api.wait_online(&link.agent, false).await;
    backdate();
    let (_, body) = cleanup(&link.agent).await;
    assert_eq!(body["results"]["agent"]["reason"], "deleted", "{body}");
}

/// Direct access to the brain's store and keys, as an insider would have.
struct Insider {
    store: taskward_brain::store::Store,
    keys: taskward_brain::keys::Keys,
    project_id: String,
}

impl Insider {
    async fn of(link: &Link) -> Insider {
        Insider {
            store: open_store(&link.brain),
            keys: taskward_brain::keys::Keys::load_or_create(&link.brain.data_dir()).unwrap(),
            project_id: link.api.get_json("/api/v1/projects/default").await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        }
    }

    /// Mints a `restart-worker` command for `audience`, signed by `signer`, expiring in
    /// `ttl_ms`; its id.
    fn mint(
        &self,
        signer: std::sync::Arc<ed25519_dalek::SigningKey>,
        audience: &str,
        ttl_ms: i64,
    ) -> String {
        use taskward_brain::store::audit::AuditContext;
        use taskward_brain::store::commands::{self, NewCommand};
        use taskward_shared::audit::{Actor, ActorKind};
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
            project_id: self.project_id.clone(),
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
        self.store
            .write_blocking("test_mint", |c| commands::mint(c, &ctx, new))
            .unwrap()
            .id
    }

    /// Runs SQL statements on the brain's database.
    fn sql(&self, statements: Vec<String>) {
        self.store
            .write_blocking("test_sql", move |c| {
                use diesel::RunQueryDsl;
                for statement in &statements {
                    diesel::sql_query(statement).execute(c)?;
                }
                Ok::<_, taskward_brain::store::StoreError>(())
            })
            .unwrap();
    }

    /// Readdresses command `id` to agent `to` and pushes its deadline out by 10 minutes.
    fn retarget(&self, id: &str, to: &str) {
        self.sql(vec![
            format!("UPDATE commands SET agent_id = '{to}', expires_at = expires_at + 600000 WHERE id = '{id}'"),
            format!("UPDATE command_status SET expires_at = expires_at + 600000 WHERE command_id = '{id}'"),
        ]);
    }
}

/// A brain database tampered with (or a brain bug) must not make an agent act: commands with a
/// forged signature, addressed to another agent, expired, or replayed are refused and not run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_misaddressed_expired_and_replayed_commands_never_run() {
    let mut link = Link::start().await;
    let (other_agent, _) = link.api.create_agent("host-2").await;
    link.run_agent().await;
    let insider = Insider::of(&link).await;
    let agent = link.agent.clone();

    // 1. Signed by a key the brain never published (a stolen database, no key).
    let forged = insider.mint(
        std::sync::Arc::new(taskward_shared::crypto::generate_signing_key()),
        &agent,
        60_000,
    );
    // 2. Genuinely signed, but addressed to another agent, then delivered to this one.
    let misaddressed = insider.mint(
        insider.keys.signer_at(taskward_brain::store::now_ms()),
        &other_agent,
        60_000,
    );
    insider.retarget(&misaddressed, &agent);
    // 3. Genuinely signed and addressed, but its signed expiry passed long ago (beyond the
    //    agent's 30 s skew); the brain's own deadline was pushed out so it still delivers it.
    let expired = insider.mint(
        insider.keys.signer_at(taskward_brain::store::now_ms()),
        &agent,
        -120_000,
    );
    insider.retarget(&expired, &agent);

    // The expired one is answered with a signed refusal, visible on the command.
    let refused = link.wait_status(&expired, "failed").await;
    assert_detail_starts(&refused, "refused by agent: expired");
    wait_for(
        Duration::from_secs(20),
        "the rejections in the brain log",
        || async {
            let log = link.brain.log();
            log.contains("agent rejected a frame")
                && log.contains(&forged)
                && log.contains(&misaddressed)
        },
    )
    .await;
    let log = link.brain.log();
    assert!(
        log.contains("bad brain signature") || log.contains("is not trusted"),
        "{log}"
    );
    assert!(log.contains("addressed to agent"), "{log}");
    for id in [&forged, &misaddressed] {
        assert_eq!(
            link.api.command(id).await["status"],
            "issued",
            "a rejected command changed status"
        );
    }

    // 4. Replay: a command that ran is made pending again in the database, and redelivered when
    //    the agent reconnects; the agent finds its id in the seen-store and does not run it.
    let once = link
        .issue("restart-worker", json!({"worker_name": "w2"}))
        .await;
    link.wait_status(&once, "succeeded").await;
    insider.sql(vec![format!(
        "UPDATE command_status SET status = 'issued' WHERE command_id = '{once}'"
    )]);
    link.home.restart();
    wait_for(
        Duration::from_secs(20),
        "the replay to be refused",
        || async { link.home.log().contains("seen before; not run again") },
    )
    .await;
    let ran: Vec<String> = executed(&link.home)
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ran, vec![once], "only the genuine command ran, once");
}

/// `kill -9` while a command runs: on restart it is reported interrupted and never run again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_mid_command_reports_interrupted_and_never_reruns() {
    let mut link = Link::start().await;
    link.home.edit_config("delay_ms = 0", "delay_ms = 60000");
    link.run_agent().await;
    let id = link
        .issue("restart-worker", json!({"worker_name": "w"}))
        .await;
    wait_for(Duration::from_secs(20), "the command to start", || async {
        executed(&link.home).len() == 1
    })
    .await;
    link.wait_status(&id, "dispatched").await;
    link.home.kill_9();

    link.home.start();
    let failed = link.wait_status(&id, "failed").await;
    assert_detail_starts(&failed, "interrupted");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        executed(&link.home).len(),
        1,
        "the interrupted command ran again"
    );
}

/// A second process with the same identity (a cloned host) takes over; the first stops, and no
/// command runs twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_with_the_same_identity_replaces_the_first() {
    let mut link = Link::start().await;
    link.run_agent().await;
    let before = link
        .issue("restart-worker", json!({"worker_name": "w"}))
        .await;
    link.wait_status(&before, "succeeded").await;

    // The clone: same config and keys, its own state directory.
    let first = &mut link.home;
    let clone_dir = link.dir.path().join("clone");
    std::fs::create_dir_all(clone_dir.join("state")).unwrap();
    std::fs::copy(
        first.state().join("brain-keys.json"),
        clone_dir.join("state/brain-keys.json"),
    )
    .unwrap();
    let text = std::fs::read_to_string(first.config()).unwrap();
    let clone_config = clone_dir.join("agent.toml");
    std::fs::write(
        &clone_config,
        text.replace(
            &first.state().display().to_string(),
            &clone_dir.join("state").display().to_string(),
        ),
    )
    .unwrap();
    let mut clone = AgentHome::at(AGENT, clone_config, clone_dir.join("state"));
    clone.start();

    let exit = Wait::new("the first process to stop")
        .until_some(|| {
            let exit = first.exited();
            async move { exit }
        })
        .await;
    assert!(!exit.success());
    let log = first.log();
    assert!(
        log.contains("another agent process with this identity"),
        "{log}"
    );

    let after = link
        .issue("restart-worker", json!({"worker_name": "w"}))
        .await;
    link.wait_status(&after, "succeeded").await;
    let first_ran: Vec<Value> = executed(&link.home);
    let second_ran: Vec<Value> = executed(&clone);
    assert_eq!(first_ran.len(), 1);
    assert_eq!(second_ran.len(), 1);
    assert_eq!(second_ran[0]["id"], after.as_str());
}

/// 100,000 events stream while the brain is killed and restarted: every task ends in the store
/// once, with its full timeline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_arrive_exactly_once_across_a_brain_restart() {
    let mut link = Link::start().await;
    link.set_events(100_000, 25_000);
    link.run_agent().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mid = task_states(&open_store(&link.brain)).values().sum::<i64>();
    assert!(
        mid > 0 && mid < 33_334,
        "the restart should land mid-stream ({mid} tasks so far)"
    );
    link.brain.kill_9();
    tokio::time::sleep(Duration::from_millis(500)).await;
    link.brain.restart();
    link.api = link.brain.api();
    wait_for_tasks(
        &link,
        &[("received", 1), ("succeeded", 33_333)],
        "every task after the restart",
    )
    .await;
    assert_eq!(link.api.agent(&link.agent).await["dropped_events"], 0);
}

/// A TCP proxy between agent and brain, cut for 30 s while commands are issued and events
/// stream: nothing is lost, nothing runs twice, and a command that expired during the cut is
/// never run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_30_second_link_cut_loses_nothing_and_runs_nothing_late() {
    let dir = tempfile::tempdir().unwrap();
    let brain = BrainProcess::builder(taskward_testkit::brain_bin(), dir.path())
        .args(&["--command-ttl", "10"])
        .start();
    let proxy = Proxy::start(brain.url().trim_start_matches("http://")).await;
    let mut link = Link::enroll(dir, brain, &format!("http://{}", proxy.addr)).await;
    link.set_events(60_000, 1_500);
    link.home
        .edit_config("reconnect_max_secs = 30", "reconnect_max_secs = 2");
    link.run_agent().await;
    let before = link
        .issue("restart-worker", json!({"worker_name": "before"}))
        .await;
    link.wait_status(&before, "succeeded").await;

    proxy.cut(true);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let expires_during_cut = link
        .issue("restart-worker", json!({"worker_name": "expired"}))
        .await;
    tokio::time::sleep(Duration::from_secs(25)).await;
    let issued_late_in_cut = link
        .issue("restart-worker", json!({"worker_name": "late"}))
        .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        link.api.command(&expires_during_cut).await["status"],
        "timed_out"
    );
    proxy.cut(false);

    link.wait_status(&issued_late_in_cut, "succeeded").await;
    wait_for_tasks(
        &link,
        &[("succeeded", 20_000)],
        "the events sent in the cut",
    )
    .await;
    let ran: Vec<String> = executed(&link.home)
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
    let mut link = Link::start().await;
    link.set_events(150_000, 0);
    link.home
        .edit_config("spool_max_bytes = 1073741824", "spool_max_bytes = 9437184");
    link.home
        .edit_config("reconnect_max_secs = 30", "reconnect_max_secs = 1");
    let (url, admin) = (link.brain.url(), link.brain.admin_token().to_owned());
    link.brain.kill_9(); // the brain is down while the agent produces ~25 MiB of events
    link.home.start();
    let dropped_file = || link.home.read_state("spool/dropped");
    wait_for(Duration::from_secs(60), "the spool to overflow", || async {
        dropped_file().trim().parse::<u64>().unwrap_or(0) > 0
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let dropped: u64 = dropped_file().trim().parse().unwrap();
    link.brain.restart();
    assert_eq!(
        (link.brain.url(), link.brain.admin_token()),
        (url, admin.as_str())
    );
    let api = link.brain.api();
    wait_for(
        Duration::from_secs(60),
        "the drop count at the brain",
        || async { api.agent(&link.agent).await["dropped_events"].as_u64() == Some(dropped) },
    )
    .await;
    // The gauge is set just after the batch's transaction commits, so it may trail the API
    // by a moment.
    let line = format!("taskward_dropped_events{{agent=\"host-1\"}} {dropped}");
    wait_for(
        Duration::from_secs(20),
        &format!("`{line}` on /metrics"),
        || async { api.metrics().await.contains(&line) },
    )
    .await;
    wait_for(
        Duration::from_secs(20),
        "the drop count in `taskward-agent status`",
        || async {
            link.home
                .status()
                .contains(&format!("dropped events {dropped}"))
        },
    )
    .await;
}

/// Keys rotated twice while an agent is connected and commands flow (one every 50 ms): the
/// agent learns each new key over its session before the key signs anything, so every command
/// succeeds (none refused, none timed out) and the agent never reconnects. Every row of both
/// chains is signed by the key whose window holds the row's time, rows on both sides of each
/// switch included, and the log verifies.
async fn rotation_strands_no_agent(postgres: bool) {
    let mut link = Link::start_on(postgres).await;
    link.run_agent().await;
    let rotations = {
        let dir = link.brain.data_dir();
        let url = link.brain.database_url();
        tokio::task::spawn_blocking(move || {
            let once = |lead: &str| {
                taskward_testkit::process::run_ok(
                    std::process::Command::new(taskward_testkit::brain_bin())
                        .args(["keys", "rotate", "--lead", lead])
                        .env("TASKWARD_DATA_DIR", &dir)
                        .env("TASKWARD_DATABASE_URL", &url),
                );
            };
            std::thread::sleep(Duration::from_millis(800));
            once("2");
            // The second rotation after the first switch (2 s lead, plus a margin).
            std::thread::sleep(Duration::from_millis(2600));
            once("2");
        })
    };
    let mut ids = Vec::new();
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_millis(7500) {
        ids.push(
            link.issue(
                "restart-worker",
                json!({"worker_name": format!("w{}", ids.len())}),
            )
            .await,
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    rotations.await.unwrap();
    let mut signers = std::collections::BTreeSet::new();
    for id in &ids {
        let done = link.wait_status(id, "succeeded").await;
        signers.insert(done["audit_rows"][0]["key_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(executed(&link.home).len(), ids.len());
    assert_eq!(
        signers.len(),
        3,
        "commands were signed by each of the three keys"
    );
    let status = link.home.status();
    assert!(status.contains("connected (session 1)"), "{status}");
    assert!(status.contains("rejected frames 0\n"), "{status}");
    let pinned: Vec<Value> =
        serde_json::from_str(&link.home.read_state("brain-keys.json")).unwrap();
    assert_eq!(
        pinned.len(),
        3,
        "the agent trusts all three keys: {pinned:?}"
    );
    assert!(
        link.home
            .log()
            .contains("learned a rotated brain key during the session"),
        "{}",
        link.home.log()
    );

    // Each row is signed by the key whose window holds its time; times never go back.
    let keys = taskward_brain::keys::Keys::load_or_create(&link.brain.data_dir())
        .unwrap()
        .public_keys();
    assert_eq!(keys.len(), 3);
    let store = open_store(&link.brain);
    let project = link.api.get_json("/api/v1/projects/default").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for chain in [
        store.site_chain(),
        taskward_brain::store::audit::project_chain(&project),
    ] {
        let rows = store
            .read_blocking("test_rows", |c| {
                taskward_brain::store::audit::page(c, &chain, 0, 100_000)
            })
            .unwrap();
        let mut last = i64::MIN;
        let mut near_switch = [0usize; 2];
        for row in &rows {
            let statement: taskward_shared::audit::Statement =
                serde_json::from_str(&row.statement).unwrap();
            let time = chrono::DateTime::parse_from_rfc3339(&statement.time)
                .unwrap()
                .timestamp_millis();
            assert!(time >= last, "{chain} row {}: time goes back", row.seq);
            last = time;
            let holder = keys
                .iter()
                .find(|k| {
                    k.valid_from_ms <= time && k.valid_until_ms.is_none_or(|until| time < until)
                })
                .unwrap();
            assert_eq!(
                row.key_id, holder.key_id,
                "{chain} row {} at {time} is signed outside its key's window",
                row.seq
            );
            for (n, key) in keys[1..].iter().enumerate() {
                if (time - key.valid_from_ms).abs() < 500 {
                    near_switch[n] += 1;
                }
            }
        }
        if chain.starts_with("project:") {
            assert!(
                near_switch.iter().all(|&n| n >= 4),
                "rows within 500 ms of each switch: {near_switch:?}"
            );
        }
    }
    let verify = std::process::Command::new(taskward_testkit::brain_bin())
        .args(["audit", "verify"])
        .env("TASKWARD_DATA_DIR", link.brain.data_dir())
        .env("TASKWARD_DATABASE_URL", link.brain.database_url())
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_strands_no_agent_on_sqlite() {
    rotation_strands_no_agent(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_strands_no_agent_on_postgres() {
    rotation_strands_no_agent(true).await;
}
