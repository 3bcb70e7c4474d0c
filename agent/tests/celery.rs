//! The agent's Celery adapter against real Celery workers (the example app, from the project's
//! `.venv`) with the real `taskward-brain` and `taskward-agent` binaries on loopback. Each test
//! body is written once and runs on both brokers: the real Redis (a database of its own) and
//! the real RabbitMQ (a vhost made for it), as `<test>::redis` and `<test>::rabbitmq`.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{CeleryHost, expect_outcome, retried_id, task_states};
use taskward_testkit::{Broker, Wait, wait_for};

/// Runs each `test(broker)` on Redis database `db` and on a RabbitMQ vhost of its own.
macro_rules! on_each_broker {
    ($($test:ident on redis db $db:literal;)*) => {$(
        mod $test {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redis() {
                super::$test(super::Broker::Redis { db: $db }).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn rabbitmq() {
                super::$test(super::Broker::rabbitmq(stringify!($test))).await
            }
        }
    )*};
}

on_each_broker! {
    celery_events_from_a_real_worker_become_tasks on redis db 9;
    a_killed_celery_worker_goes_offline_and_its_task_is_lost on redis db 10;
    commands_reach_a_real_celery_worker on redis db 11;
    workers_without_task_events_are_switched_on on redis db 12;
    a_gap_in_the_event_stream_is_counted_and_reconciled on redis db 14;
    a_health_check_schedule_pings_real_workers_and_alerts_on_a_dead_one on redis db 15;
}

const PREFORK_1: &[&str] = &["-E", "--pool", "prefork", "-c", "1"];

/// A real Celery worker on the real Redis emits events; the agent's Celery adapter reads them
/// from pub/sub and the brain stores the tasks with their results, errors and worker. A retry
/// with new kwargs republishes the task, which runs again.
async fn celery_events_from_a_real_worker_become_tasks(broker: Broker) {
    let host = CeleryHost::start(broker, &["celery"]).await;
    let _worker = host.celery.worker(
        "w1@taskward-test",
        &["-E", "--pool", "solo", "--loglevel", "INFO"],
        &[],
    );
    let ids = host
        .celery
        .python("import app; print(app.add.delay(2, 3).id); print(app.fail.delay().id)");
    host.wait_task(&ids[0], "add", |t| t.state == "succeeded")
        .await;
    host.wait_task(&ids[1], "fail", |t| t.state == "failed")
        .await;
    let (added, failed) = (host.task(&ids[0]).unwrap(), host.task(&ids[1]).unwrap());
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

    a_retry_with_new_kwargs_runs_under_its_original(&host).await;
    secrets_stay_on_the_host(&host).await;
}

/// Retry with new kwargs: the brain resolves the original arguments from the event reprs, the
/// agent republishes them, and the worker runs the new task.
async fn a_retry_with_new_kwargs_runs_under_its_original(host: &CeleryHost) {
    let greeted = host.send("app.greet.delay('ann')");
    host.wait_task(&greeted, "the greeting", |t| {
        t.result.as_deref() == Some("'hello ann'")
    })
    .await;
    let retry = host
        .api
        .issue(
            &host.agent,
            "retry-task",
            json!({"engine": "celery", "task_id": greeted, "override_kwargs": {"greeting": "hi"}}),
        )
        .await;
    let new_id = retried_id(&host.wait_status(&retry, "succeeded").await);
    assert_ne!(new_id, greeted);
    host.wait_task(&new_id, "the retried task", |t| {
        t.state == "succeeded" && t.result.as_deref() == Some("'hi ann'")
    })
    .await;
    // The retry sits under its original in the task tree.
    let retried = host.task(&new_id).unwrap();
    assert_eq!(retried.parent_task_id.as_deref(), Some(greeted.as_str()));
    assert_eq!(retried.root_task_id.as_deref(), Some(greeted.as_str()));
}

/// Secrets and addresses in arguments are redacted on the host: they never reach the brain's
/// database; a retry reads the real values kept on the host.
async fn secrets_stay_on_the_host(host: &CeleryHost) {
    let secret = host.send("app.login.delay('ann', password='hunter2', email='ann@example.com')");
    host.wait_task(&secret, "the login task", |t| t.state == "succeeded")
        .await;
    let row = host.task(&secret).unwrap();
    assert_eq!(
        row.kwargs.as_deref(),
        Some(r#"{"email":"<email>","password":"<redacted>"}"#)
    );
    let mut stored = Vec::new();
    for file in ["taskward.db", "taskward.db-wal"] {
        if let Ok(bytes) = std::fs::read(host.brain.data_dir().join(file)) {
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
    let vault = host.home.state().join("args-vault.jsonl");
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
    let retry = host
        .api
        .issue(
            &host.agent,
            "retry-task",
            json!({"engine": "celery", "task_id": secret}),
        )
        .await;
    let again = retried_id(&host.wait_status(&retry, "succeeded").await);
    host.wait_task(&again, "the retried login", |t| {
        t.result.as_deref() == Some("'logged in ann with a 7-character password'")
    })
    .await;
}

/// A real worker killed with SIGKILL mid-task: it goes offline and its started task becomes
/// `lost`.
async fn a_killed_celery_worker_goes_offline_and_its_task_is_lost(broker: Broker) {
    let host = CeleryHost::start(broker, &["celery"]).await;
    // Prefork: the main process keeps flushing events while the child sleeps.
    let mut worker = host.celery.worker("doomed@taskward-test", PREFORK_1, &[]);
    let id = host.send("app.sleepy.delay(120)");
    host.wait_task(&id, "the task to start", |t| t.state == "started")
        .await;
    assert_eq!(host.workers(), [("doomed@taskward-test".to_owned(), true)]);
    // SIGKILL to the worker and its pool child: no worker-offline event, no task event.
    worker.kill_9();
    host.wait_task(&id, "the task to be lost", |t| t.state == "lost")
        .await;
    assert_eq!(host.workers(), [("doomed@taskward-test".to_owned(), false)]);
}

/// Issues each `(kind, body, status, detail)` in turn; each must end with that status and a
/// detail containing that text.
async fn expect_each(host: &CeleryHost, cases: Vec<(&str, Value, &str, &str)>) {
    for (kind, body, status, detail) in cases {
        expect_outcome(&host.run(kind, body).await, status, detail);
    }
}

/// Waits for worker `w` (prefork, one process, consuming `celery`) to come online, then for its
/// pool and queues, from Celery's stats and active_queues, in the agents API.
async fn wait_for_the_pool_in_the_agents_api(host: &CeleryHost, w: &str) {
    wait_for(
        Duration::from_secs(30),
        "the worker to come online",
        || async {
            host.workers()
                .iter()
                .any(|(name, online)| name == w && *online)
        },
    )
    .await;
    wait_for(
        Duration::from_secs(30),
        "the worker's pool in the agents API",
        || async {
            host.api.agent(&host.agent).await["workers"]
                .as_array()
                .is_some_and(|ws| {
                    ws.iter().any(|w_| {
                        w_["name"] == w
                            && w_["status"] == "online"
                            && w_["pool"] == "prefork"
                            && w_["concurrency"] == 1
                            && w_["queues"] == json!(["celery"])
                    })
                })
        },
    )
    .await;
}

/// Every worker-control verb, end to end: API → signed command → agent → Celery's remote
/// control on a real worker (or the broker, for purges) → signed result with the worker's answer.
async fn commands_reach_a_real_celery_worker(broker: Broker) {
    let host = CeleryHost::start(broker, &["celery", "reports"]).await;
    // A queue no worker consumes, with messages of two priorities (two buckets on Redis).
    host.celery.fill_queue("reports", &[0, 0, 0, 6, 6]);
    let w = "ctl@taskward-test";
    let _worker = host.celery.worker(w, PREFORK_1, &[]);
    wait_for_the_pool_in_the_agents_api(&host, w).await;

    expect_each(
        &host,
        vec![
            (
                "add-consumer",
                json!({"worker_name": w, "queue": "billing"}),
                "succeeded",
                "add consumer billing",
            ),
            (
                "cancel-consumer",
                json!({"worker_name": w, "queue": "billing"}),
                "succeeded",
                "no longer consuming from billing",
            ),
            // The size is read back from Celery's stats after the grow.
            (
                "pool-resize",
                json!({"worker_name": w, "delta": 1}),
                "succeeded",
                "pool will grow; pool processes 1 -> 2",
            ),
        ],
    )
    .await;
    cancels_say_what_happened(&host, w).await;
    retries_keep_arguments_and_priority(&host).await;
    expect_each(
        &host,
        vec![
            (
                "rate-limit",
                json!({"worker_name": w, "task_name": "app.add", "rate": "10/m"}),
                "succeeded",
                "new rate limit set",
            ),
            (
                "rate-limit",
                json!({"worker_name": w, "task_name": "app.nope", "rate": "1/s"}),
                "failed",
                "unknown task",
            ),
            (
                "restart-worker",
                json!({"worker_name": w}),
                "succeeded",
                "reload started",
            ),
            (
                "restart-worker",
                json!({"worker_name": "ghost@nowhere"}),
                "failed",
                "no reply from ghost@nowhere",
            ),
            (
                "cancel-task",
                json!({"engine": "celery", "task_id": "00000000-0000-0000-0000-00000000dead"}),
                "succeeded",
                "revoked",
            ),
        ],
    )
    .await;
    bulk_retry_and_purge(&host).await;
}

/// Cancels say what happened: a running task terminated, a finished one left alone.
async fn cancels_say_what_happened(host: &CeleryHost, w: &str) {
    let running = host.send("app.sleepy.delay(60)");
    host.wait_task(&running, "the sleeper to start", |t| t.state == "started")
        .await;
    expect_outcome(
        &host
            .run(
                "cancel-task",
                json!({"engine": "celery", "task_id": running, "terminate": true}),
            )
            .await,
        "succeeded",
        &format!("terminated while running on {w} (SIGTERM)"),
    );
    host.wait_task(&running, "the terminated task", |t| t.state == "cancelled")
        .await;
    let quick = host.send("app.add.delay(1, 1)");
    host.wait_task(&quick, "a quick task", |t| t.state == "succeeded")
        .await;
    expect_outcome(
        &host
            .run("cancel-task", json!({"engine": "celery", "task_id": quick}))
            .await,
        "succeeded",
        "already finished (succeeded); nothing was stopped",
    );
}

/// A repr Celery truncated (a 3000-character argument): the agent asks the worker for the real
/// arguments while it holds the task (query_task), so the retry carries all of it. Priorities:
/// the worker's copy says 5, and a retry goes back into the same bucket.
async fn retries_keep_arguments_and_priority(host: &CeleryHost) {
    let blob = "x".repeat(2999) + "y";
    let big = host.send(&format!("app.digest.delay('{blob}', seconds=3)"));
    host.wait_task(&big, "the worker's copy of the arguments", |t| {
        t.state == "succeeded" && t.args.as_deref().is_some_and(|a| a.ends_with("y\"]"))
    })
    .await;
    let row = host.task(&big).unwrap();
    // The brain holds the worker's whole (redacted) copy, not the truncated repr.
    assert_eq!(row.args, Some(json!([blob]).to_string()));
    assert_eq!(row.args_unavailable, None);
    assert_eq!(
        (row.queue.as_deref(), row.priority.as_deref()),
        (Some("celery"), Some("0"))
    );
    let retry = |id: String| async move {
        retried_id(
            &host
                .run("retry-task", json!({"engine": "celery", "task_id": id}))
                .await,
        )
    };
    let again = retry(big).await;
    host.wait_task(&again, "the retried big task", |t| {
        t.state == "succeeded" && t.result == row.result
    })
    .await;

    let urgent = host.send("app.sleepy.apply_async((2,), priority=5)");
    host.wait_task(&urgent, "the urgent task's priority", |t| {
        t.priority.as_deref() == Some("5") && t.queue.as_deref() == Some("celery")
    })
    .await;
    host.wait_task(&urgent, "the urgent task", |t| t.state == "succeeded")
        .await;
    let again = retry(urgent).await;
    host.wait_task(&again, "the retried urgent task", |t| {
        t.state == "succeeded" && t.priority.as_deref() == Some("5")
    })
    .await;
}

/// Bulk retry: two failed tasks run again. Then a confirmed purge of the depth the operator
/// saw, and the queue is empty.
async fn bulk_retry_and_purge(host: &CeleryHost) {
    let failed = host
        .celery
        .python("import app; print(app.fail.delay().id); print(app.fail.delay().id)");
    for id in &failed {
        host.wait_task(id, "a failure", |t| t.state == "failed")
            .await;
    }
    expect_outcome(
        &host
            .run(
                "bulk-retry",
                json!({"filter": {"state": "failed", "name": "app.fail"}, "max": 10}),
            )
            .await,
        "succeeded",
        "retried 2, skipped not retryable 0, failed 0",
    );
    wait_for(Duration::from_secs(30), "the retried failures", || async {
        task_states(&host.store).get("failed").copied().unwrap_or(0) == 4
    })
    .await;

    let queues = format!("/api/v1/projects/default/agents/{}/queues", host.agent);
    let confirm = Wait::new("a depth for reports")
        .every(Duration::from_millis(200))
        .until_ok(|| async {
            let (_, body) = host.api.call(reqwest::Method::GET, &queues, None).await;
            body["items"]
                .as_array()
                .and_then(|items| {
                    items
                        .iter()
                        .find(|q| q["queue"] == "reports" && q["depth"] == 5)
                })
                .map(|q| q["confirm_token"].as_str().unwrap().to_owned())
                .ok_or(body)
        })
        .await;
    expect_outcome(
        &host
            .run(
                "purge-queue",
                json!({"queue": "reports", "confirm_token": confirm}),
            )
            .await,
        "succeeded",
        "purged 5 messages from reports",
    );
    assert_eq!(host.celery.queue_len("reports"), 0);
}

/// A worker started without `-E` sends no task events until the agent switches them on with
/// `enable_events` (and says so in its log).
async fn workers_without_task_events_are_switched_on(broker: Broker) {
    let host = CeleryHost::start(broker, &["celery"]).await;
    let quiet = "quiet@taskward-test";
    let _worker = host.celery.worker(
        quiet,
        &["--pool", "solo"],
        &[("TASK_EVENTS", "0"), ("POOL_RESTARTS", "0")],
    );
    wait_for(
        Duration::from_secs(30),
        "enable_events in the agent log",
        || async {
            host.home
                .log()
                .contains("asked the worker to send task events")
        },
    )
    .await;
    let id = host.send("app.add.delay(20, 22)");
    host.wait_task(&id, "the task's events", |t| {
        t.state == "succeeded" && t.result.as_deref() == Some("42")
    })
    .await;

    // A truncated repr on a solo worker, which cannot answer query_task while it runs the
    // task: the real arguments are unavailable, the brain shows why, and a retry is refused.
    let blob = "z".repeat(3000);
    let big = host.send(&format!("app.digest.delay('{blob}', seconds=3)"));
    host.wait_task(&big, "the reason in the brain", |t| {
        t.state == "succeeded" && t.args_unavailable.is_some()
    })
    .await;
    let why = host.task(&big).unwrap().args_unavailable.unwrap();
    assert!(why.contains("query_task"), "{why}");
    let body = host
        .api
        .post_json(
            "/api/v1/projects/default/commands/retry-task",
            json!({"agent_id": host.agent, "engine": "celery", "task_id": big}),
            409,
        )
        .await;
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("not retryable: arguments unavailable"),
        "{message}"
    );

    // What a solo worker without pool restarts cannot do fails with Celery's own reason.
    for (kind, body, reason) in [
        (
            "restart-worker",
            json!({"worker_name": quiet}),
            "Pool restarts not enabled",
        ),
        (
            "pool-resize",
            json!({"worker_name": quiet, "delta": 1}),
            "no attribute 'grow'",
        ),
    ] {
        let id = host.api.issue(&host.agent, kind, body).await;
        let failed = host.wait_status(&id, "failed").await;
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
async fn a_gap_in_the_event_stream_is_counted_and_reconciled(broker: Broker) {
    let host = CeleryHost::start(broker, &["celery"]).await;
    let _worker = host.celery.worker(
        "gappy@taskward-test",
        &["-E", "--pool", "prefork", "-c", "2"],
        &[],
    );
    // Events flow first (counting starts with the first task event seen).
    let warm = host.send("app.add.delay(1, 2)");
    host.wait_task(&warm, "a first task", |t| t.state == "succeeded")
        .await;
    let agent_pid = host.home.pid().unwrap();
    // Drop every broker connection of the agent for 4 s (Redis: CLIENT KILL; RabbitMQ: the
    // broker closes them, as on a restart) while a sleeper and ten quick tasks start, spread
    // over the storm.
    let ids = host.celery.python(&format!(
        r#"
import subprocess, threading, time, app
{drop}
stop = time.time() + 4
def storm():
    while time.time() < stop:
        out = subprocess.run(["ss", "-tnpH", "dst", "127.0.0.1:{port}"], capture_output=True, text=True).stdout
        mine = [line.split()[3] for line in out.splitlines() if "pid={agent_pid}," in line]
        if mine:
            drop(mine)
        time.sleep(0.02)
t = threading.Thread(target=storm)
t.start()
time.sleep(0.5)
print(app.sleepy.delay(30).id)
for i in range(10):
    time.sleep(0.3)
    app.add.delay(i, i)
t.join()
"#,
        drop = drop_connections(host.celery.kind()),
        port = if host.celery.kind().is_rabbitmq() { 5672 } else { 6379 },
    ));
    // The sleeper is in flight: the brain learns it even if its events were lost.
    host.wait_task(&ids[0], "the in-flight task", |t| t.state == "started")
        .await;
    wait_for(
        Duration::from_secs(30),
        "reconciliation and the missed events in the agents API",
        || async {
            let log = host.home.log();
            let agent = host.api.agent(&host.agent).await;
            log.contains("reconciled in-flight tasks")
                && agent["dropped_events"].as_i64().unwrap_or(0) >= 1
        },
    )
    .await;
}

/// Python defining `drop(addresses)`: the broker closes its connections from those client
/// addresses.
fn drop_connections(broker: &Broker) -> String {
    match broker {
        Broker::Redis { db } => format!(
            r#"
import redis
r = redis.Redis(db={db})
def drop(addresses):
    for address in addresses:
        try:
            r.client_kill(address)
        except redis.ResponseError:
            pass
"#
        ),
        // rabbitmqctl names a connection "<client> -> <server>" and closes it by its pid.
        Broker::Rabbitmq { .. } => r#"
def drop(addresses):
    out = subprocess.run(["rabbitmqctl", "list_connections", "-q", "--no-table-headers", "pid", "name"],
                         capture_output=True, text=True).stdout
    for line in out.splitlines():
        pid, _, name = line.partition("\t")
        if any(name.startswith(address + " ->") for address in addresses):
            subprocess.run(["rabbitmqctl", "close_connection", pid, "storm"], capture_output=True)
"#
        .to_owned(),
        Broker::Url(url) => panic!("this suite runs on the shared brokers, not {url}"),
    }
}

/// The schedule's runs: starts one now (it must be accepted as running with one command) and
/// waits until it has an outcome; that run and the schedule's detail.
async fn run_now(host: &CeleryHost, path: &str) -> (Value, Value) {
    let body = host
        .api
        .expect(reqwest::Method::POST, &format!("{path}/run"), None, 200)
        .await;
    let execution = &body["execution"];
    assert_eq!(body["success"], true, "{body}");
    assert_eq!(execution["status"], "running", "{body}");
    assert_eq!(
        execution["commandIds"].as_array().unwrap().len(),
        1,
        "{body}"
    );
    let id = execution["id"].as_str().unwrap().to_owned();
    Wait::new(format!("run {id} to finish"))
        .within(Duration::from_secs(90))
        .every(Duration::from_millis(200))
        .context(|| support::logs(&host.home, &host.brain))
        .until_ok(|| async {
            let detail = host.api.call(reqwest::Method::GET, path, None).await.1;
            let run = detail["history"]
                .as_array()
                .and_then(|runs| runs.iter().find(|r| r["id"] == id.as_str()))
                .cloned()
                .unwrap_or(Value::Null);
            if run["status"] == "success" || run["status"] == "failed" {
                Ok((run, detail))
            } else {
                Err(detail)
            }
        })
        .await
}

/// The one ping of a run, checked for who issued it: the schedule, signed.
async fn ping_of(host: &CeleryHost, run: &Value, schedule: &str) -> Value {
    let id = run["commandIds"][0].as_str().unwrap();
    let command = host.api.command(id).await;
    assert_eq!(command["kind"], "ping-workers", "{command}");
    assert_eq!(command["agent_id"], host.agent.as_str(), "{command}");
    assert_eq!(command["issuer"]["type"], "schedule", "{command}");
    assert_eq!(command["issuer"]["id"], schedule, "{command}");
    assert_eq!(command["issuer"]["name"], "workers alive", "{command}");
    let issued = &command["audit_rows"][0];
    assert_eq!(issued["kind"], "command.issued", "{command}");
    assert_eq!(
        issued["statement"]["actor"]["type"], "schedule",
        "{command}"
    );
    assert_eq!(issued["statement"]["actor"]["id"], schedule, "{command}");
    assert_eq!(issued["signature_valid"], true, "{command}");
    command
}

/// A health-check schedule, end to end with two real workers: each run pings the workers the
/// brain knows (one signed `ping-workers` command per agent, issued by the schedule) and ends
/// with the answers. After one worker is SIGKILLed and marked offline, the next run still pings
/// it (it went offline since the previous run), fails naming it, appends a signed
/// `schedule.alert` row and counts the alert on `/metrics`.
async fn a_health_check_schedule_pings_real_workers_and_alerts_on_a_dead_one(broker: Broker) {
    let host = CeleryHost::start(broker, &["celery"]).await;
    let (alive, doomed) = ("alive@taskward-test", "doomed@taskward-test");
    let solo = &["-E", "--pool", "solo"];
    let _alive = host.celery.worker(alive, solo, &[]);
    let mut doomed_worker = host.celery.worker(doomed, solo, &[]);
    let both_online = [(alive.to_owned(), true), (doomed.to_owned(), true)];
    wait_for(
        Duration::from_secs(60),
        "both workers to come online",
        || async { host.workers() == both_online },
    )
    .await;

    // Due on 29 February only: no cron run comes between the manual ones.
    let body = host
        .api
        .post_json(
            "/api/v1/projects/default/schedules",
            json!({
                "name": "workers alive",
                "type": "health-check",
                "cronExpression": "0 3 29 2 *",
                "timezone": "UTC",
                "healthCheckConfig": {"alertOnFailure": true},
            }),
            201,
        )
        .await;
    let schedule = body["schedule"]["id"].as_str().unwrap().to_owned();
    assert!(schedule.starts_with("sch_"), "{body}");
    let path = format!("/api/v1/projects/default/schedules/{schedule}");

    // Both workers answer: the run succeeds and says who answered.
    let (first, detail) = run_now(&host, &path).await;
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
    let ping = ping_of(&host, &first, &schedule).await;
    assert_eq!(
        ping["payload"]["worker_names"],
        json!([alive, doomed]),
        "{ping}"
    );
    assert_eq!(ping["status"], "succeeded", "{ping}");
    assert_eq!(ping["detail"], answered.as_str(), "{ping}");

    // SIGKILL to one worker: no worker-offline event; the agent marks it offline once silent.
    doomed_worker.kill_9();
    let one_gone = [(alive.to_owned(), true), (doomed.to_owned(), false)];
    wait_for(
        Duration::from_secs(60),
        "the killed worker to go offline",
        || async { host.workers() == one_gone },
    )
    .await;

    a_run_with_a_dead_worker_fails_and_alerts(&host, &schedule, &path, &first).await;
}

/// Offline since the previous run, the dead worker is still pinged: the run fails naming it,
/// and alerts (a signed audit row, a counter on `/metrics`).
async fn a_run_with_a_dead_worker_fails_and_alerts(
    host: &CeleryHost,
    schedule: &str,
    path: &str,
    first: &Value,
) {
    let (alive, doomed) = ("alive@taskward-test", "doomed@taskward-test");
    let (second, detail) = run_now(host, path).await;
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
    let ping = ping_of(host, &second, schedule).await;
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
    let audit = host
        .api
        .get_json("/api/v1/projects/default/audit?limit=1000")
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
    assert_eq!(statement["actor"]["id"], schedule, "{alert}");
    assert_eq!(statement["payload"]["schedule"]["id"], schedule, "{alert}");
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
        host.api
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

/// A task that fails with a NUL byte and a 9 MB message (an 18 MB event frame before it was
/// cut) once wedged its agent's stream on PostgreSQL: the brain could not store the batch, the
/// agent resent it forever and no later task was recorded. Now the field is cut on the host
/// and marked, the NUL replaced, and the task after it arrives as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_byte_and_a_huge_error_do_not_wedge_the_stream_on_postgres() {
    let host = CeleryHost::start_on(Broker::Redis { db: 13 }, &["celery"], true).await;
    let _worker = host.celery.worker(
        "w1@taskward-test",
        &["-E", "--pool", "solo", "--loglevel", "WARNING"],
        &[],
    );
    let loud = host.send("app.fail_loudly.delay(9_000_000)");
    let after = host.send("app.add.delay(20, 22)");
    host.wait_task(&after, "the task after the loud one", |t| {
        t.state == "succeeded"
    })
    .await;
    host.wait_task(&loud, "the loud task", |t| t.state == "failed")
        .await;
    let failed = host
        .api
        .get_json(&host.api.project_path(&format!("/tasks/celery/{loud}")))
        .await;
    assert_eq!(failed["truncated"], true, "{}", failed["truncated_fields"]);
    let cut = failed["truncated_fields"].as_array().unwrap();
    assert!(
        cut.iter().any(|f| f == "exception") && cut.iter().any(|f| f == "traceback"),
        "{cut:?}"
    );
    // The exception is Python's repr (the NUL escaped); the traceback carries the message as
    // text, NUL and all, which PostgreSQL cannot store: it arrives replaced.
    let exception = failed["exception"].as_str().unwrap();
    assert!(exception.len() <= 64 * 1024, "{}", exception.len());
    let traceback = failed["traceback"].as_str().unwrap();
    assert!(traceback.len() <= 64 * 1024, "{}", traceback.len());
    assert!(
        traceback.contains("nul\u{FFFD}byte"),
        "{}",
        &traceback[..200]
    );
    let added = host
        .api
        .get_json(&host.api.project_path(&format!("/tasks/celery/{after}")))
        .await;
    assert_eq!(added["truncated"], false);
    assert_eq!(added["result"], "42");
    assert!(
        !host
            .brain
            .metrics()
            .await
            .contains("taskward_events_rejected_total{"),
        "nothing should have needed rejecting"
    );
}

/// `enroll --engine celery` checks the broker (its URL, then a connection) before it spends the
/// token: each wrong broker fails naming the problem and leaves no config behind, and the same
/// token then enrolls with a broker that answers, on RabbitMQ as on Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enroll_checks_the_broker_before_spending_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let (brain, _agent, token) = support::start_brain_with_agent(dir.path(), "broker-check").await;
    let config = dir.path().join("agent.toml");
    let enroll = |broker: &str| {
        taskward_testkit::agent::enroll_output(
            std::path::Path::new(support::AGENT),
            &config,
            &brain.url(),
            &token,
            &["--engine", "celery", "--broker", broker],
        )
    };
    let missing_vhost = format!("taskward-missing-{}", std::process::id());
    for (broker, says) in [
        (
            "amqps://guest:guest@127.0.0.1:5671//".to_owned(),
            "amqps:// (AMQP over TLS) is not supported yet",
        ),
        (
            "sqs://celery".to_owned(),
            "not a Celery broker this agent reads",
        ),
        (
            "amqp://guest:guest@127.0.0.1:notaport//".to_owned(),
            "broker URL",
        ),
        (
            format!("amqp://guest:guest@127.0.0.1:5672/{missing_vhost}"),
            "cannot be reached",
        ),
        (
            "amqp://guest:wrong-password@127.0.0.1:5672//".to_owned(),
            "cannot be reached",
        ),
        ("redis://127.0.0.1:1/0".to_owned(), "cannot be reached"),
    ] {
        let out = enroll(&broker);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{broker}: enrolled");
        assert!(stderr.contains(says), "{broker}: {stderr}");
        assert!(!config.exists(), "{broker}: a config was written");
        assert!(!stderr.contains("wrong-password"), "{broker}: {stderr}");
    }
    // The token was never spent: a reachable RabbitMQ enrolls with it.
    let celery = taskward_testkit::CeleryStack::on(Broker::rabbitmq("enroll"));
    let out = enroll(celery.broker());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let written = std::fs::read_to_string(&config).unwrap();
    assert!(written.contains(celery.broker()), "{written}");
}

/// An agent that stops reading its events on RabbitMQ (its backlog bounded, here to 4 messages
/// in flight and 10 on the broker): real Celery publishes 50 events, the agent holds the first
/// 4, the broker keeps the newest 10 and drops the 36 between, and every dropped message is
/// counted (what the agent reports as dropped events), none silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_rabbitmq_drops_for_a_stalled_agent_are_counted() {
    use futures_util::StreamExt;
    use taskward_agent::engines::celery::transport::Transport;
    use taskward_agent::engines::celery::transport::amqp::AmqpTransport;

    let celery = taskward_testkit::CeleryStack::on(Broker::rabbitmq("overflow"));
    let transport = AmqpTransport::open(celery.broker())
        .unwrap()
        .with_event_backlog(10, 4);
    let mut events = transport.events().await.unwrap();
    // Nothing is read while Celery's own event dispatcher sends 50 events.
    celery.python(
        "import app\n\
         with app.app.events.default_dispatcher() as d:\n\
         \x20   for i in range(50):\n\
         \x20       d.send('task-received', uuid='t-%d' % i, name='app.add')\n",
    );
    wait_for(
        Duration::from_secs(20),
        "36 dropped messages counted",
        || {
            let dropped = transport.overflowed();
            async move { dropped >= 36 }
        },
    )
    .await;
    // The first four and the newest ten are still there, in order.
    let mut kept = Vec::new();
    for _ in 0..14 {
        let body = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("a kept event")
            .unwrap()
            .unwrap();
        let event: Value = serde_json::from_slice(&body).unwrap();
        kept.push(event["uuid"].as_str().unwrap().to_owned());
    }
    let expected: Vec<String> = (0..4).chain(40..50).map(|i| format!("t-{i}")).collect();
    assert_eq!(kept, expected);
    assert_eq!(transport.overflowed(), 36);
}
