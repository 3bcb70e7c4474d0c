//! The Commands API: every verb's bounds at both edges, roles, idempotency, purge confirmation,
//! rate limits, timeouts and the list.

use axum::http::StatusCode;
use serde_json::{Value, json};
use taskward_brain::app::ServerSettings;
use taskward_brain::background::time_out_overdue;
use taskward_brain::commands::lifecycle::{self, Event};
use taskward_brain::store::StoreError;
use taskward_brain::store::commands;

use crate::both_backends;
use crate::support::{Backend, Reply, TestApp, celery_task, unique};

const P: &str = "/api/v1/projects/default/commands";

fn with_agent(agent: &str, mut body: Value) -> Value {
    body["agent_id"] = json!(agent);
    body
}

async fn issue(app: &TestApp, token: &str, kind: &str, body: Value) -> Reply {
    app.post(&format!("{P}/{kind}"), token, body).await
}

/// Each verb with a valid body, and bodies that break each bound by one step, both sides.
async fn every_bound_at_both_edges(backend: Backend) {
    let (app, t, agent) = TestApp::with_agent(backend).await;
    // A cancel names a task the project has recorded.
    let longest_id = "x".repeat(255);
    app.seed_tasks("default", &agent, &["t1", &longest_id])
        .await;
    let big = |n: usize| json!({"k": "x".repeat(n)});
    // 64 KiB of compact JSON is {"k":"xxx…"}: 8 bytes of framing.
    let limit_kwargs = 64 * 1024 - 8;
    // (kind, body, expected status, field)
    let cases: Vec<(&str, Value, StatusCode, Option<&str>)> = vec![
        (
            "retry-task",
            json!({"engine": "celery", "task_id": "t1"}),
            StatusCode::ACCEPTED,
            None,
        ),
        (
            "retry-task",
            json!({"engine": "celery", "task_id": "t1", "override_kwargs": big(limit_kwargs)}),
            StatusCode::ACCEPTED,
            None,
        ),
        (
            "retry-task",
            json!({"engine": "celery", "task_id": "t1", "override_kwargs": big(limit_kwargs + 1)}),
            StatusCode::BAD_REQUEST,
            Some("override_kwargs"),
        ),
        (
            "retry-task",
            json!({"engine": "celery", "task_id": "t1", "override_kwargs": [1]}),
            StatusCode::BAD_REQUEST,
            Some("override_kwargs"),
        ),
        (
            "retry-task",
            json!({"engine": "celery", "task_id": ""}),
            StatusCode::BAD_REQUEST,
            Some("task_id"),
        ),
        (
            "retry-task",
            json!({"engine": "Celery!", "task_id": "t1"}),
            StatusCode::BAD_REQUEST,
            Some("engine"),
        ),
        (
            "retry-task",
            json!({"engine": "celery"}),
            StatusCode::BAD_REQUEST,
            Some("task_id"),
        ),
        (
            "retry-task",
            json!({"engine": "celery", "task_id": "t1", "bogus": 1}),
            StatusCode::BAD_REQUEST,
            Some("bogus"),
        ),
        (
            "cancel-task",
            json!({"engine": "celery", "task_id": "t1"}),
            StatusCode::ACCEPTED,
            None,
        ),
        (
            "cancel-task",
            json!({"engine": "celery", "task_id": "x".repeat(256)}),
            StatusCode::BAD_REQUEST,
            Some("task_id"),
        ),
        (
            "cancel-task",
            json!({"engine": "celery", "task_id": "x".repeat(255)}),
            StatusCode::ACCEPTED,
            None,
        ),
        (
            "cancel-task",
            json!({"engine": "celery", "task_id": "t1", "terminate": true, "signal": "SIGKILL"}),
            StatusCode::ACCEPTED,
            None,
        ),
        (
            "cancel-task",
            json!({"engine": "celery", "task_id": "t1", "terminate": true, "signal": "SIGSTOP"}),
            StatusCode::BAD_REQUEST,
            Some("signal"),
        ),
        (
            "cancel-task",
            json!({"engine": "celery", "task_id": "t1", "signal": "SIGTERM"}),
            StatusCode::BAD_REQUEST,
            Some("signal"),
        ),
        (
            "bulk-retry",
            json!({"filter": {"state": "failed"}, "max": 1}),
            StatusCode::ACCEPTED,
            None,
        ),
        (
            "bulk-retry",
            json!({"filter": {}, "max": 10000}),
            StatusCode::ACCEPTED,
            None,
        ),
        (
            "bulk-retry",
            json!({"filter": {}, "max": 0}),
            StatusCode::BAD_REQUEST,
            Some("max"),
        ),
        (
            "bulk-retry",
            json!({"filter": {}, "max": 10001}),
            StatusCode::BAD_REQUEST,
            Some("max"),
        ),
        (
            "bulk-retry",
            json!({"filter": {}, "max": -1}),
            StatusCode::BAD_REQUEST,
            Some("max"),
        ),
        (
            "bulk-retry",
            json!({"filter": {"state": "exploded"}, "max": 5}),
            StatusCode::BAD_REQUEST,
            Some("filter.state"),
        ),
        (
            "bulk-retry",
            json!({"filter": {"colour": "red"}, "max": 5}),
            StatusCode::BAD_REQUEST,
            Some("filter.colour"),
        ),
        (
            "purge-queue",
            json!({"queue": "default"}),
            StatusCode::BAD_REQUEST,
            Some("confirm_token"),
        ),
        (
            "purge-queue",
            json!({"queue": "", "force": true}),
            StatusCode::BAD_REQUEST,
            Some("queue"),
        ),
        (
            "restart-worker",
            json!({"worker_name": "celery@w1"}),
            StatusCode::ACCEPTED,
            None,
        ),
        (
            "restart-worker",
            json!({"worker_name": ""}),
            StatusCode::BAD_REQUEST,
            Some("worker_name"),
        ),
        (
            "restart-worker",
            json!({"worker_name": "a\u{7}b"}),
            StatusCode::BAD_REQUEST,
            Some("worker_name"),
        ),
        (
            "pool-resize",
            json!({"worker_name": "w", "delta": 100}),
            StatusCode::ACCEPTED,
            None,
        ),
        (
            "pool-resize",
            json!({"worker_name": "w", "delta": -100}),
            StatusCode::ACCEPTED,
            None,
        ),
        (
            "pool-resize",
            json!({"worker_name": "w", "delta": 101}),
            StatusCode::BAD_REQUEST,
            Some("delta"),
        ),
        (
            "pool-resize",
            json!({"worker_name": "w", "delta": -101}),
            StatusCode::BAD_REQUEST,
            Some("delta"),
        ),
        (
            "pool-resize",
            json!({"worker_name": "w", "delta": 0}),
            StatusCode::BAD_REQUEST,
            Some("delta"),
        ),
        (
            "pool-resize",
            json!({"worker_name": "w", "delta": 1.5}),
            StatusCode::BAD_REQUEST,
            Some("delta"),
        ),
        (
            "add-consumer",
            json!({"worker_name": "w", "queue": "billing"}),
            StatusCode::ACCEPTED,
            None,
        ),
        (
            "add-consumer",
            json!({"worker_name": "w", "queue": ""}),
            StatusCode::BAD_REQUEST,
            Some("queue"),
        ),
        (
            "cancel-consumer",
            json!({"worker_name": "w", "queue": "billing"}),
            StatusCode::ACCEPTED,
            None,
        ),
        (
            "cancel-consumer",
            json!({"worker_name": "", "queue": "billing"}),
            StatusCode::BAD_REQUEST,
            Some("worker_name"),
        ),
        (
            "rate-limit",
            json!({"task_name": "app.send", "rate": "100/m", "worker_name": "w"}),
            StatusCode::ACCEPTED,
            None,
        ),
        (
            "rate-limit",
            json!({"task_name": "app.send", "rate": "0"}),
            StatusCode::ACCEPTED,
            None,
        ),
        (
            "rate-limit",
            json!({"task_name": "app.send", "rate": "10/d"}),
            StatusCode::BAD_REQUEST,
            Some("rate"),
        ),
        (
            "rate-limit",
            json!({"task_name": "app.send", "rate": "/m"}),
            StatusCode::BAD_REQUEST,
            Some("rate"),
        ),
        (
            "rate-limit",
            json!({"task_name": "", "rate": "1/s"}),
            StatusCode::BAD_REQUEST,
            Some("task_name"),
        ),
    ];
    let before = command_count(&app).await;
    let mut accepted = 0;
    for (kind, body, status, field) in cases {
        let what = format!("{kind} {body}");
        let reply = issue(&app, &t, kind, with_agent(&agent, body)).await;
        assert_eq!(reply.status, status, "{what}: {}", reply.body);
        if status == StatusCode::ACCEPTED {
            accepted += 1;
            assert_eq!(reply.body["status"], "issued");
            assert_eq!(reply.body["kind"], kind);
        } else {
            assert_eq!(reply.field(), field, "{what}: {}", reply.body);
        }
    }
    assert_eq!(
        command_count(&app).await,
        before + accepted,
        "a refused command was stored"
    );

    // Common fields: agent id shape, unknown agent, idempotency key length.
    let body = json!({"engine": "celery", "task_id": "t1"});
    let reply = issue(&app, &t, "retry-task", body.clone()).await;
    assert_eq!(
        (reply.status, reply.field()),
        (StatusCode::BAD_REQUEST, Some("agent_id"))
    );
    let reply = issue(&app, &t, "retry-task", with_agent("nope", body.clone())).await;
    assert_eq!(
        (reply.status, reply.field()),
        (StatusCode::BAD_REQUEST, Some("agent_id"))
    );
    let stranger = uuid::Uuid::new_v4().to_string();
    let reply = issue(&app, &t, "retry-task", with_agent(&stranger, body.clone())).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let mut long_key = with_agent(&agent, body.clone());
    long_key["idempotency_key"] = json!("k".repeat(256));
    let reply = issue(&app, &t, "retry-task", long_key).await;
    assert_eq!(
        (reply.status, reply.field()),
        (StatusCode::BAD_REQUEST, Some("idempotency_key"))
    );
}

async fn command_count(app: &TestApp) -> usize {
    app.get(&format!("{P}?limit=5000"), &app.admin_token)
        .await
        .count("items")
}

/// Viewer: no verb. Operator: retry, cancel, bulk retry. Admin: all. Outsider: 404.
async fn roles_per_verb(backend: Backend) {
    let app = TestApp::new(backend).await;
    let agent = app.create_agent("default", "host").await;
    app.seed_tasks("default", &agent, &["t"]).await;
    let mut tokens = Vec::new();
    for role in ["viewer", "operator", "admin", "outsider"] {
        let name = unique(role);
        let token = app.create_user(&name, false).await;
        if role != "outsider" {
            app.add_member("default", &name, role).await;
        }
        tokens.push((role, token));
    }
    let verbs: [(&str, Value, &str); 10] = [
        (
            "bulk-retry/dry-run",
            json!({"filter": {}, "max": 5}),
            "operator",
        ),
        (
            "retry-task",
            json!({"engine": "celery", "task_id": "t"}),
            "operator",
        ),
        (
            "cancel-task",
            json!({"engine": "celery", "task_id": "t"}),
            "operator",
        ),
        ("bulk-retry", json!({"filter": {}, "max": 5}), "operator"),
        ("purge-queue", json!({"queue": "q", "force": true}), "admin"),
        ("restart-worker", json!({"worker_name": "w"}), "admin"),
        (
            "pool-resize",
            json!({"worker_name": "w", "delta": 1}),
            "admin",
        ),
        (
            "add-consumer",
            json!({"worker_name": "w", "queue": "q"}),
            "admin",
        ),
        (
            "cancel-consumer",
            json!({"worker_name": "w", "queue": "q"}),
            "admin",
        ),
        (
            "rate-limit",
            json!({"task_name": "t", "rate": "1/s", "worker_name": "w"}),
            "admin",
        ),
    ];
    let rank = |r: &str| ["viewer", "operator", "admin"].iter().position(|x| *x == r);
    for (kind, body, floor) in verbs {
        for (role, token) in &tokens {
            let reply = issue(&app, token, kind, with_agent(&agent, body.clone())).await;
            let expected = match rank(role) {
                None => StatusCode::NOT_FOUND,
                Some(r) if r >= rank(floor).unwrap() && kind.ends_with("dry-run") => StatusCode::OK,
                Some(r) if r >= rank(floor).unwrap() => StatusCode::ACCEPTED,
                Some(_) => StatusCode::FORBIDDEN,
            };
            assert_eq!(reply.status, expected, "{kind} as {role}: {}", reply.body);
        }
    }
    let no_token = app
        .call(
            axum::http::Method::POST,
            &format!("{P}/retry-task"),
            None,
            Some(json!({})),
        )
        .await;
    assert_eq!(no_token.status, StatusCode::UNAUTHORIZED);
}

async fn idempotency_keys(backend: Backend) {
    let (app, t, agent) = TestApp::with_agent(backend).await;
    app.seed_tasks("default", &agent, &["t1", "t2"]).await;
    let body = with_agent(
        &agent,
        json!({"engine": "celery", "task_id": "t1", "idempotency_key": "k-1"}),
    );
    let first = issue(&app, &t, "retry-task", body.clone()).await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    let again = issue(&app, &t, "retry-task", body.clone()).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.body["id"], first.body["id"]);
    let mut changed = body.clone();
    changed["task_id"] = json!("t2");
    let conflict = issue(&app, &t, "retry-task", changed).await;
    assert_eq!(conflict.status, StatusCode::CONFLICT);
    // Another kind, or another caller, with the same key mints a new command.
    let other_kind = issue(&app, &t, "cancel-task", body.clone()).await;
    assert_eq!(other_kind.status, StatusCode::ACCEPTED);
    let op_token = app.create_operator().await;
    let other_caller = issue(&app, &op_token, "retry-task", body).await;
    assert_eq!(other_caller.status, StatusCode::ACCEPTED);
    assert_ne!(other_caller.body["id"], first.body["id"]);
}

async fn purge_confirmation_binds_the_depth(backend: Backend) {
    let (app, t, agent) = TestApp::with_agent(backend).await;
    let queues = format!("/api/v1/projects/default/agents/{agent}/queues");
    assert_eq!(app.get(&queues, &t).await.body["items"], json!([]));

    // No depth reported yet: nothing to confirm against.
    let blind = issue(
        &app,
        &t,
        "purge-queue",
        with_agent(&agent, json!({"queue": "default", "confirm_token": "00"})),
    )
    .await;
    assert_eq!(blind.status, StatusCode::CONFLICT);
    assert_eq!(blind.code(), "depth_changed");

    report_depth(&app, &agent, "default", 12).await;
    let listed = app.get(&queues, &t).await;
    assert_eq!(listed.body["items"][0]["depth"], 12);
    let token = listed.body["items"][0]["confirm_token"]
        .as_str()
        .unwrap()
        .to_owned();
    // Viewers see depths but get no token.
    let viewer = unique("viewer");
    let viewer_token = app.create_user(&viewer, false).await;
    app.add_member("default", &viewer, "viewer").await;
    assert!(app.get(&queues, &viewer_token).await.body["items"][0]["confirm_token"].is_null());

    // The depth moved on: 409 with the current depth, and nothing minted.
    report_depth(&app, &agent, "default", 5000).await;
    let stale = issue(
        &app,
        &t,
        "purge-queue",
        with_agent(&agent, json!({"queue": "default", "confirm_token": token})),
    )
    .await;
    assert_eq!(stale.status, StatusCode::CONFLICT);
    assert_eq!(stale.body["error"]["current_depth"], 5000);

    let fresh = app.get(&queues, &t).await.body["items"][0]["confirm_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let ok = issue(
        &app,
        &t,
        "purge-queue",
        with_agent(&agent, json!({"queue": "default", "confirm_token": fresh})),
    )
    .await;
    assert_eq!(ok.status, StatusCode::ACCEPTED, "{}", ok.body);
    assert_eq!(ok.body["bound_depth"], 5000);
    assert_eq!(ok.body["critical"], false);

    // A token for another queue does not confirm this one.
    report_depth(&app, &agent, "other", 5000).await;
    let wrong = issue(
        &app,
        &t,
        "purge-queue",
        with_agent(
            &agent,
            json!({"queue": "other", "confirm_token": ok.body["payload"]["confirm_token"]}),
        ),
    )
    .await;
    assert_eq!(wrong.status, StatusCode::CONFLICT);

    let forced = issue(
        &app,
        &t,
        "purge-queue",
        with_agent(&agent, json!({"queue": "default", "force": true})),
    )
    .await;
    assert_eq!(forced.status, StatusCode::ACCEPTED);
    assert_eq!(forced.body["critical"], true);
    // The flag is in the signed statement, not only in the column.
    let detail = app
        .get(&format!("{P}/{}", forced.body["id"].as_str().unwrap()), &t)
        .await;
    assert_eq!(
        detail.body["audit_rows"][0]["statement"]["payload"]["command"]["critical"],
        true
    );
    assert_eq!(detail.body["audit_rows"][0]["signature_valid"], true);
}

async fn report_depth(app: &TestApp, agent: &str, queue: &str, depth: u64) {
    let (agent, queue) = (agent.to_owned(), queue.to_owned());
    app.store
        .write("test_report_depth", move |conn| {
            commands::report_queue_depth(
                conn,
                &agent,
                &queue,
                depth,
                taskward_brain::store::now_ms(),
            )
        })
        .await
        .unwrap();
}

async fn global_rate_limit_is_flagged(backend: Backend) {
    let (app, t, agent) = TestApp::with_agent(backend).await;
    for body in [
        json!({"task_name": "a.b", "rate": "5/s"}),
        json!({"task_name": "a.b", "rate": "5/s", "worker_name": ""}),
    ] {
        let reply = issue(&app, &t, "rate-limit", with_agent(&agent, body)).await;
        assert_eq!(reply.status, StatusCode::ACCEPTED);
        assert_eq!(reply.body["global_throttle"], true);
        assert_eq!(reply.body["critical"], true);
        let detail = app
            .get(&format!("{P}/{}", reply.body["id"].as_str().unwrap()), &t)
            .await;
        assert_eq!(
            detail.body["audit_rows"][0]["statement"]["payload"]["command"]["global_throttle"],
            true
        );
    }
    let one = issue(
        &app,
        &t,
        "rate-limit",
        with_agent(
            &agent,
            json!({"task_name": "a.b", "rate": "5/s", "worker_name": "w"}),
        ),
    )
    .await;
    assert_eq!(one.body["global_throttle"], false);
}

async fn bulk_actions_are_rate_limited(backend: Backend) {
    let app = TestApp::with_tight_bulk_limit(backend).await;
    let t = app.admin_token.clone();
    let agent = app.create_agent("default", "host").await;
    app.seed_tasks("default", &agent, &["t"]).await;
    let body = with_agent(&agent, json!({"filter": {}, "max": 5}));
    assert_eq!(
        issue(&app, &t, "bulk-retry", body.clone()).await.status,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        issue(&app, &t, "bulk-retry", body.clone()).await.status,
        StatusCode::ACCEPTED
    );
    let limited = issue(&app, &t, "bulk-retry", body.clone()).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.code(), "rate_limited");
    let retry_after: u64 = limited.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    // Per caller: another operator is not affected; routine verbs are not limited.
    let op_token = app.create_operator().await;
    assert_eq!(
        issue(&app, &op_token, "bulk-retry", body).await.status,
        StatusCode::ACCEPTED
    );
    for _ in 0..4 {
        let r = issue(
            &app,
            &t,
            "cancel-task",
            with_agent(&agent, json!({"engine": "celery", "task_id": "t"})),
        )
        .await;
        assert_eq!(r.status, StatusCode::ACCEPTED);
    }
}

/// A brain whose commands expire after 50 ms, one restart-worker command issued on it that no
/// agent picks up, and time enough for it to be overdue: the app, the admin token and the
/// issue reply.
async fn issue_unclaimed_command(backend: Backend) -> (TestApp, String, Reply) {
    let settings = ServerSettings {
        command_ttl: std::time::Duration::from_millis(50),
        ..ServerSettings::default()
    };
    let app = TestApp::with_settings(backend, settings).await;
    let t = app.admin_token.clone();
    let agent = app.create_agent("default", "host").await;
    let issued = issue(
        &app,
        &t,
        "restart-worker",
        with_agent(&agent, json!({"worker_name": "w"})),
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(80)).await;
    (app, t, issued)
}

/// Nothing picks commands up yet: past their expiry they end `timed_out`, by a signed row;
/// a result arriving later is recorded as late and does not revive them.
async fn unclaimed_commands_time_out(backend: Backend) {
    let (app, t, issued) = issue_unclaimed_command(backend).await;
    let id = issued.body["id"].as_str().unwrap().to_owned();
    assert_eq!(time_out_overdue(&app.state).await.unwrap(), 1);
    assert_eq!(
        time_out_overdue(&app.state).await.unwrap(),
        0,
        "timed out twice"
    );
    let detail = app.get(&format!("{P}/{id}"), &t).await;
    assert_eq!(detail.body["status"], "timed_out");
    let rows = detail.body["audit_rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1]["kind"], "command.timed_out");
    assert_eq!(rows[1]["statement"]["actor"]["type"], "system");
    assert!(rows.iter().all(|r| r["signature_valid"] == true));

    // A late success: recorded and chained, but the status stays timed_out. A second late
    // result is ignored, so an agent cannot grow the log without bound.
    let ctx = app.state.audit_as_system();
    let (pid, cid) = (
        issued.body["project_id"].as_str().unwrap().to_owned(),
        id.clone(),
    );
    let changed = app
        .store
        .write("test_late_result", move |conn| {
            let mut changed = Vec::new();
            for event in [Event::Succeeded, Event::Failed] {
                let command = commands::find(conn, &pid, &cid)?;
                changed.push(
                    lifecycle::record(conn, &ctx, &command, event, Some("ran"), None)?.is_some(),
                );
            }
            Ok::<_, StoreError>(changed)
        })
        .await
        .unwrap();
    assert_eq!(
        changed,
        [true, false],
        "only the first late result is recorded"
    );
    let detail = app.get(&format!("{P}/{id}"), &t).await;
    assert_eq!(detail.body["status"], "timed_out");
    assert_eq!(detail.body["late"], true);
    assert_eq!(detail.count("audit_rows"), 3);
    assert_eq!(
        detail.body["audit_rows"][2]["statement"]["payload"]["late"],
        true
    );

    let listed = app.get(&format!("{P}?status=timed_out"), &t).await;
    assert_eq!(listed.count("items"), 1);
    let listed = app.get(&format!("{P}?status=issued"), &t).await;
    assert_eq!(listed.count("items"), 0);
}

/// Results racing for one ended command (an agent sending many at once, each read before
/// the others committed) append one late row between them: the store's conditional update
/// lets one through, and the others, decided again on the command as it now is, change
/// nothing. On PostgreSQL the transactions run at once, each on its own connection.
async fn racing_results_append_one_late_row(backend: Backend) {
    let (app, t, issued) = issue_unclaimed_command(backend).await;
    let id = issued.body["id"].as_str().unwrap().to_owned();
    let pid = issued.body["project_id"].as_str().unwrap().to_owned();
    assert_eq!(time_out_overdue(&app.state).await.unwrap(), 1);
    // Read once, as each racing result would have read it: timed out, nothing late yet.
    let stale = {
        let (pid, id) = (pid.clone(), id.clone());
        app.store
            .read("test_read", move |conn| commands::find(conn, &pid, &id))
            .await
            .unwrap()
    };
    assert!(!stale.late);
    let racers = (0..6).map(|n| {
        let (store, ctx, stale) = (
            app.store.clone(),
            app.state.audit_as_system(),
            stale.clone(),
        );
        let event = if n % 2 == 0 {
            Event::Succeeded
        } else {
            Event::Failed
        };
        tokio::spawn(async move {
            store
                .write("test_racing_result", move |conn| {
                    lifecycle::record(conn, &ctx, &stale, event, Some("ran"), None)
                })
                .await
                .unwrap()
                .is_some()
        })
    });
    let mut recorded = 0;
    for racer in racers.collect::<Vec<_>>() {
        recorded += usize::from(racer.await.unwrap());
    }
    assert_eq!(recorded, 1, "exactly one racing result is recorded");
    let detail = app.get(&format!("{P}/{id}"), &t).await;
    let kinds: Vec<&str> = detail.texts("audit_rows", "kind");
    assert_eq!(kinds.len(), 3, "issued, timed_out, one late row: {kinds:?}");
    assert_eq!(detail.body["status"], "timed_out");
    assert_eq!(detail.body["late"], true);
}

async fn list_filters_and_pages(backend: Backend) {
    let (app, t, agent) = TestApp::with_agent(backend).await;
    app.seed_tasks("default", &agent, &["t0", "t2", "t4", "t6"])
        .await;
    let mut ids = Vec::new();
    for i in 0..7 {
        let kind = if i % 2 == 0 {
            "cancel-task"
        } else {
            "restart-worker"
        };
        let body = if i % 2 == 0 {
            json!({"engine": "celery", "task_id": format!("t{i}")})
        } else {
            json!({"worker_name": format!("w{i}")})
        };
        ids.push(
            issue(&app, &t, kind, with_agent(&agent, body)).await.body["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    // Pages of 3, newest first, every command exactly once.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(c) => format!("{P}?limit=3&cursor={c}"),
            None => format!("{P}?limit=3"),
        };
        let page = app.get(&url, &t).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        for item in page.body["items"].as_array().unwrap() {
            seen.push(item["id"].as_str().unwrap().to_owned());
        }
        match page.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let mut expected = ids.clone();
    expected.reverse();
    assert_eq!(seen, expected);

    let cancels = app.get(&format!("{P}?kind=cancel-task"), &t).await;
    assert_eq!(cancels.count("items"), 4);
    let future = app
        .get(&format!("{P}?since=2999-01-01T00:00:00Z"), &t)
        .await;
    assert_eq!(future.count("items"), 0);
    let past = app
        .get(&format!("{P}?until=2999-01-01T00:00:00Z"), &t)
        .await;
    assert_eq!(past.count("items"), 7);

    // A cursor is bound to its query and project.
    let first = app.get(&format!("{P}?limit=3"), &t).await;
    let c = first.body["next_cursor"].as_str().unwrap();
    let other_query = app
        .get(&format!("{P}?limit=3&kind=cancel-task&cursor={c}"), &t)
        .await;
    assert_eq!(
        (other_query.status, other_query.field()),
        (StatusCode::BAD_REQUEST, Some("cursor"))
    );
    app.create_project("beta").await;
    let other_project = app
        .get(
            &format!("/api/v1/projects/beta/commands?limit=3&cursor={c}"),
            &t,
        )
        .await;
    assert_eq!(other_project.status, StatusCode::BAD_REQUEST);

    app.assert_queries_name_fields(
        P,
        &t,
        &[
            ("limit=0", "limit"),
            ("limit=5001", "limit"),
            ("limit=x", "limit"),
            ("status=done", "status"),
            ("kind=exec", "kind"),
            ("since=yesterday", "since"),
            ("cursor=garbage", "cursor"),
            ("colour=red", "colour"),
        ],
    )
    .await;
    for ok in ["limit=1", "limit=5000"] {
        assert_eq!(
            app.get(&format!("{P}?{ok}"), &t).await.status,
            StatusCode::OK
        );
    }
    // Another project's command id is not found here.
    let beta_agent = app.create_agent("beta", "beta-host").await;
    let beta_cmd = app
        .post(
            "/api/v1/projects/beta/commands/restart-worker",
            &t,
            json!({"agent_id": beta_agent, "worker_name": "w"}),
        )
        .await;
    let cross = app
        .get(
            &format!("{P}/{}", beta_cmd.body["id"].as_str().unwrap()),
            &t,
        )
        .await;
    assert_eq!(cross.status, StatusCode::NOT_FOUND);
    // And beta's agent cannot be the audience of a command in default.
    let cross_agent = issue(
        &app,
        &t,
        "restart-worker",
        with_agent(&beta_agent, json!({"worker_name": "w"})),
    )
    .await;
    assert_eq!(cross_agent.status, StatusCode::NOT_FOUND);
}

/// Each kind's result deadline, capped by the command's signed expiry.
async fn deadlines_per_kind(backend: Backend) {
    let (app, t, agent) = TestApp::with_agent(backend).await;
    app.seed_tasks("default", &agent, &["t"]).await;
    let ms = |reply: &crate::support::Reply, field: &str| {
        chrono::DateTime::parse_from_rfc3339(reply.body[field].as_str().unwrap())
            .unwrap()
            .timestamp_millis()
    };
    for (kind, body, secs) in [
        (
            "cancel-task",
            json!({"engine": "celery", "task_id": "t"}),
            60,
        ),
        ("restart-worker", json!({"worker_name": "w"}), 120),
        ("bulk-retry", json!({"filter": {}, "max": 3}), 300),
    ] {
        let reply = issue(&app, &t, kind, with_agent(&agent, body)).await;
        assert_eq!(
            ms(&reply, "deadline_at") - ms(&reply, "issued_at"),
            secs * 1000,
            "{kind}"
        );
        assert_eq!(
            ms(&reply, "expires_at") - ms(&reply, "issued_at"),
            300_000,
            "{kind}"
        );
    }
    let short = TestApp::with_settings(
        backend,
        ServerSettings {
            command_ttl: std::time::Duration::from_secs(30),
            ..ServerSettings::default()
        },
    )
    .await;
    let agent = short.create_agent("default", "host").await;
    let reply = issue(
        &short,
        &short.admin_token,
        "restart-worker",
        with_agent(&agent, json!({"worker_name": "w"})),
    )
    .await;
    assert_eq!(ms(&reply, "deadline_at"), ms(&reply, "expires_at"));
}

/// retry-task resolves the task: unknown ids are 404; a task whose real arguments the agent
/// reported unavailable is not retryable (409, saying why); otherwise the signed command
/// carries the task's name, queue, arguments as the brain saw them and `override_kwargs`.
async fn retries_resolve_the_original_task(backend: Backend) {
    let (app, t, agent) = TestApp::with_agent(backend).await;
    app.seed_tasks("default", &agent, &["known"]).await;
    let unknown = issue(
        &app,
        &t,
        "retry-task",
        with_agent(&agent, json!({"engine": "celery", "task_id": "nope"})),
    )
    .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{}", unknown.body);
    let ok = issue(
        &app,
        &t,
        "retry-task",
        with_agent(
            &agent,
            json!({"engine": "celery", "task_id": "known", "override_kwargs": {"extra": 1}}),
        ),
    )
    .await;
    assert_eq!(ok.status, StatusCode::ACCEPTED, "{}", ok.body);
    let detail = app
        .get(&format!("{P}/{}", ok.body["id"].as_str().unwrap()), &t)
        .await;
    let resolved = &detail.body["audit_rows"][0]["statement"]["payload"]["command"]["resolved"];
    assert_eq!(resolved["name"], "app.add");
    assert_eq!(resolved["queue"], "default");
    assert_eq!(resolved["args"], json!([1, 2]));
    assert_eq!(resolved["kwargs"], json!({"k": "v"}));
    assert_eq!(resolved["override_kwargs"], json!({"extra": 1}));

    // Arguments the agent could not get (a truncated repr, gone from its worker): not
    // retryable, with the agent's reason.
    use taskward_shared::events::{TaskState, TaskUpdate, Update};
    let truncated = vec![Update::Task(Box::new(TaskUpdate {
        name: Some("app.add".into()),
        args: Some(serde_json::Value::String("('aaaa...', ...)".into())),
        kwargs: Some(serde_json::Value::String("{}".into())),
        args_unavailable: Some("arguments unavailable: truncated repr".into()),
        ..celery_task("long", TaskState::Failed, 1)
    }))];
    let a = agent.clone();
    app.store
        .write("test_seed", move |conn| {
            let project = taskward_brain::store::projects::find(conn, &"default".parse().unwrap())?;
            taskward_brain::store::tasks::apply_updates(conn, &project.id, &a, &truncated, 1)
        })
        .await
        .unwrap();
    let refused = issue(
        &app,
        &t,
        "retry-task",
        with_agent(&agent, json!({"engine": "celery", "task_id": "long"})),
    )
    .await;
    assert_eq!(refused.status, StatusCode::CONFLICT);
    assert!(
        refused.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not retryable: arguments unavailable: truncated repr")
    );

    // A dry run counts without issuing anything. ("known" was retried above, so only a
    // filter that includes retried tasks still takes it.)
    let before = command_count(&app).await;
    let preview = app
        .post(
            &format!("{P}/bulk-retry/dry-run"),
            &t,
            with_agent(
                &agent,
                json!({"filter": {"state": "failed", "include_retried": true}, "max": 10}),
            ),
        )
        .await;
    assert_eq!(preview.status, StatusCode::OK, "{}", preview.body);
    assert_eq!(
        (
            preview.body["matched"].as_u64(),
            preview.body["retryable"].as_u64()
        ),
        (Some(2), Some(1))
    );
    assert_eq!(preview.body["skipped_not_retryable"][0]["task_id"], "long");
    assert_eq!(
        command_count(&app).await,
        before,
        "a dry run minted a command"
    );
    let bad = app
        .post(
            &format!("{P}/bulk-retry/dry-run"),
            &t,
            with_agent(&agent, json!({"filter": {}, "max": 0})),
        )
        .await;
    assert_eq!(
        (bad.status, bad.field()),
        (StatusCode::BAD_REQUEST, Some("max"))
    );

    // bulk-retry resolves every matching task that is not in flight, counting the
    // unreadable ones as skipped.
    let bulk = issue(
        &app,
        &t,
        "bulk-retry",
        with_agent(
            &agent,
            json!({"filter": {"state": "failed", "include_retried": true}, "max": 10}),
        ),
    )
    .await;
    assert_eq!(bulk.status, StatusCode::ACCEPTED, "{}", bulk.body);
    let detail = app
        .get(&format!("{P}/{}", bulk.body["id"].as_str().unwrap()), &t)
        .await;
    let resolved = &detail.body["audit_rows"][0]["statement"]["payload"]["command"]["resolved"];
    assert_eq!(resolved["tasks"].as_array().unwrap().len(), 1, "{resolved}");
    assert_eq!(resolved["tasks"][0]["original_task_id"], "known");
    assert_eq!(resolved["skipped_not_retryable"][0]["task_id"], "long");

    // The original it retried is marked: the same bulk retry again leaves it out (the
    // unretryable one stays), unless the filter includes retried tasks. A dry run counts
    // every match, beside what `max` takes.
    let preview = |filter: Value, max: u32| {
        let (app, t, agent) = (&app, t.clone(), agent.clone());
        async move {
            let reply = app
                .post(
                    &format!("{P}/bulk-retry/dry-run"),
                    &t,
                    with_agent(&agent, json!({"filter": filter, "max": max})),
                )
                .await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
            (
                reply.body["matched"].as_u64().unwrap(),
                reply.body["selected"].as_u64().unwrap(),
                reply.body["retryable"].as_u64().unwrap(),
            )
        }
    };
    assert_eq!(preview(json!({"state": "failed"}), 10).await, (1, 1, 0));
    let everything = json!({"state": "failed", "include_retried": true});
    assert_eq!(preview(everything.clone(), 10).await, (2, 2, 1));
    let (matched, selected, _) = preview(everything, 1).await;
    assert_eq!(
        (matched, selected),
        (2, 1),
        "matched is not capped by max, selected is"
    );
    let capped = issue(
        &app,
        &t,
        "bulk-retry",
        with_agent(&agent, json!({"filter": {"state": "failed"}, "max": 1})),
    )
    .await;
    let detail = app
        .get(&format!("{P}/{}", capped.body["id"].as_str().unwrap()), &t)
        .await;
    let resolved = &detail.body["audit_rows"][0]["statement"]["payload"]["command"]["resolved"];
    let seen = resolved["tasks"].as_array().unwrap().len()
        + resolved["skipped_not_retryable"].as_array().unwrap().len();
    assert_eq!(seen, 1, "max caps the tasks considered");
    let none = issue(
        &app,
        &t,
        "bulk-retry",
        with_agent(&agent, json!({"filter": {"state": "succeeded"}, "max": 10})),
    )
    .await;
    let detail = app
        .get(&format!("{P}/{}", none.body["id"].as_str().unwrap()), &t)
        .await;
    assert_eq!(
        detail.body["audit_rows"][0]["statement"]["payload"]["command"]["resolved"]["tasks"],
        json!([])
    );
}

both_backends!(
    retries_resolve_the_original_task,
    deadlines_per_kind,
    every_bound_at_both_edges,
    roles_per_verb,
    idempotency_keys,
    purge_confirmation_binds_the_depth,
    global_rate_limit_is_flagged,
    bulk_actions_are_rate_limited,
    unclaimed_commands_time_out,
    racing_results_append_one_late_row,
    list_filters_and_pages,
    list_takes_the_query_grammar,
);

/// The commands list takes the tasks list's grammar: nested filters with the agent and issuer
/// relations, orderBy with keyset pages, errors naming the JSON path.
async fn list_takes_the_query_grammar(backend: Backend) {
    let app = TestApp::new(backend).await;
    let t = app.admin_token.clone();
    let first = app.create_agent("default", "first").await;
    let second = app.create_agent("default", "second").await;
    app.seed_tasks("default", &first, &["w-a", "w-b", "w-c", "w-d"])
        .await;
    let op = unique("op");
    let op_token = app.create_user(&op, false).await;
    app.add_member("default", &op, "operator").await;
    for (token, agent, worker) in [
        (&t, &first, "w-b"),
        (&t, &second, "w-a"),
        (&op_token, &first, "w-c"),
        (&op_token, &second, "w-d"),
    ] {
        let reply = issue(
            &app,
            token,
            "cancel-task",
            with_agent(agent, json!({"engine": "celery", "task_id": worker})),
        )
        .await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
    }
    let list = |params: &[(&str, &str)]| {
        let mut q = form_urlencoded::Serializer::new(String::new());
        for (k, v) in params {
            q.append_pair(k, v);
        }
        format!("{P}?{}", q.finish())
    };
    let agents_of = |reply: &crate::support::Reply| -> Vec<String> {
        reply
            .texts("items", "agent_id")
            .into_iter()
            .map(String::from)
            .collect()
    };
    let by_issuer = app
        .get(
            &list(&[(
                "filter",
                &json!({"issuer": {"name": {"eq": op}}}).to_string(),
            )]),
            &t,
        )
        .await;
    assert_eq!(by_issuer.count("items"), 2);
    let by_agent = app
        .get(
            &list(&[(
                "filter",
                &json!({"agent": {"name": {"eq": "second"}}, "NOT": {"issuer_name": {"eq": "admin"}}})
                    .to_string(),
            )]),
            &t,
        )
        .await;
    assert_eq!(agents_of(&by_agent), vec![second]);
    // Ordered by the payload's agent, two per page, every command once.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut params = vec![
            ("limit", "1"),
            (
                "orderBy",
                r#"[{"agent_id": "asc"}, {"issuer_name": "desc"}]"#,
            ),
        ];
        if let Some(c) = &cursor {
            params.push(("cursor", c));
        }
        let page = app.get(&list(&params), &t).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        seen.extend(agents_of(&page));
        match page.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted);
    assert_eq!(seen.len(), 4);
    let bad = app
        .get(
            &list(&[("filter", r#"{"issuer": {"name": {"gt": 1}}}"#)]),
            &t,
        )
        .await;
    assert_eq!(
        (bad.status, bad.field()),
        (StatusCode::BAD_REQUEST, Some("filter.issuer.name.gt"))
    );
}
