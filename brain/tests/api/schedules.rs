//! Schedules: the API (create/list/get/update/delete/run with every check), exactly-once
//! firing across a restart and with two brains on one database, missed due times, each
//! type's effect, and access.
//!
//! Agents are not running here: where a command needs an outcome, the test records the
//! agent's verdict with `commands::lifecycle::record` (a stand-in for the agent's signed
//! result; the real agent and Celery workers are in `agent/tests/link.rs`).

use std::sync::Arc;

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};
use taskward_brain::app::{App, AppState, ServerSettings};
use taskward_brain::background::schedules as schedules_loop;
use taskward_brain::commands::lifecycle::{self, Event};
use taskward_brain::schedules::MissedRuns;
use taskward_brain::store::commands::{self, CommandStatus};
use taskward_brain::store::{Store, StoreError, now_ms};
use taskward_shared::events::{Update, WorkerUpdate};

use crate::both_backends;
use crate::support::{Backend, TestApp, unique};

both_backends!(
    schedules_are_written_read_and_checked,
    every_bound_and_grammar_error_names_its_field,
    a_due_time_fires_once_across_restarts_and_two_brains,
    missed_due_times_fire_once_or_are_skipped,
    command_schedules_issue_signed_commands_as_the_schedule,
    retention_deletes_old_records_through_a_cleanup_task,
    health_checks_alert_when_a_worker_does_not_answer,
    stale_cleanup_removes_inactive_agents,
    access_follows_roles,
    deleting_a_project_deletes_its_schedules,
);

const P: &str = "/api/v1/projects/default";

fn health_check(name: &str) -> Value {
    json!({
        "name": name,
        "type": "health-check",
        "cronExpression": "*/5 * * * *",
        "timezone": "UTC",
        "healthCheckConfig": {"alertOnFailure": true},
    })
}

/// Closes the runs whose commands have all ended, as the scheduler's loop does now.
async fn finish_open_runs(app: &TestApp) {
    schedules_loop::finish_open_runs(&app.state, now_ms())
        .await
        .unwrap();
}

async fn create(app: &TestApp, body: Value) -> Value {
    let reply = app
        .post(&format!("{P}/schedules"), &app.admin_token, body)
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    assert_eq!(reply.body["success"], true);
    reply.body["schedule"].clone()
}

async fn run_now(app: &TestApp, id: &str) -> Value {
    let reply = app
        .post(
            &format!("{P}/schedules/{id}/run"),
            &app.admin_token,
            json!({}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    reply.body["execution"].clone()
}

async fn put(app: &TestApp, id: &str, body: Value) -> crate::support::Reply {
    app.call(
        Method::PUT,
        &format!("{P}/schedules/{id}"),
        Some(&app.admin_token),
        Some(body),
    )
    .await
}

/// Sets a schedule's next due time, as if it had been computed earlier.
async fn set_next_run(app: &TestApp, id: &str, at: i64) {
    app.execute_sql(&[&format!(
        "UPDATE schedules SET next_run_at = {at} WHERE id = '{id}'"
    )])
    .await;
}

/// The agent's verdict on a command, as its signed result would record it.
async fn agent_says(app: &TestApp, command_id: &str, status: CommandStatus, detail: &str) {
    let (id, detail) = (command_id.to_owned(), detail.to_owned());
    let ctx = app.state.audit_as_system();
    app.store
        .write("test_outcome", move |conn| {
            let command = commands::find_any(conn, &id)?;
            let event = match status {
                CommandStatus::Succeeded => Event::Succeeded,
                _ => Event::Failed,
            };
            lifecycle::record(conn, &ctx, &command, event, Some(&detail), None)?;
            Ok::<_, StoreError>(())
        })
        .await
        .unwrap();
}

async fn audit_rows(app: &TestApp, kind: &str) -> Vec<Value> {
    let audit = app
        .get(&format!("{P}/audit?limit=1000"), &app.admin_token)
        .await;
    audit.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"] == kind)
        .cloned()
        .collect()
}

fn ms(rfc3339: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .unwrap()
        .timestamp_millis()
}

async fn schedules_are_written_read_and_checked(backend: Backend) {
    let app = TestApp::new(backend).await;
    let t = app.admin_token.clone();
    let before = now_ms();
    let created = create(
        &app,
        json!({
            "name": "Nightly retention",
            "type": "retention",
            "projectId": "default",
            "cronExpression": "0 2 * * *",
            "timezone": "America/New_York",
            "retentionConfig": {"olderThanDays": 30},
        }),
    )
    .await;
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("sch_"), "{id}");
    assert_eq!(created["type"], "retention");
    assert_eq!(created["enabled"], true);
    assert_eq!(created["projectId"], "default");
    assert_eq!(created["retentionConfig"], json!({"olderThanDays": 30}));
    assert_eq!(created["lastRun"], Value::Null);
    // The next 02:00 in New York, in UTC.
    let next = ms(created["nextRun"].as_str().unwrap());
    assert!(next > before && next - before <= 86_400_000, "{created}");
    let local = chrono::DateTime::from_timestamp_millis(next)
        .unwrap()
        .with_timezone(&chrono_tz::America::New_York);
    assert_eq!(local.format("%H:%M").to_string(), "02:00");

    // Get: upcoming due times a day apart, empty history.
    let detail = app.get(&format!("{P}/schedules/{id}"), &t).await;
    assert_eq!(detail.status, StatusCode::OK, "{}", detail.body);
    let upcoming: Vec<i64> = detail.body["upcoming"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| ms(u.as_str().unwrap()))
        .collect();
    assert_eq!(upcoming.len(), 5);
    assert_eq!(upcoming[0], next);
    assert_eq!(detail.body["history"], json!([]));

    // Disable: no next run; enable again: recomputed.
    let off = put(&app, &id, json!({"enabled": false})).await;
    assert_eq!(off.status, StatusCode::OK, "{}", off.body);
    assert_eq!(off.body["schedule"]["nextRun"], Value::Null);
    assert_eq!(off.body["schedule"]["name"], "Nightly retention");
    let on = put(
        &app,
        &id,
        json!({"enabled": true, "cronExpression": "*/5 * * * *"}),
    )
    .await;
    assert_eq!(on.status, StatusCode::OK, "{}", on.body);
    let next = ms(on.body["schedule"]["nextRun"].as_str().unwrap());
    assert!(next - now_ms() <= 5 * 60_000);
    assert_eq!(next % (5 * 60_000), 0);
    // A new type needs its own settings.
    let retyped = put(&app, &id, json!({"type": "stale-cleanup"})).await;
    assert_eq!(retyped.status, StatusCode::BAD_REQUEST);
    assert_eq!(retyped.field(), Some("staleCleanupConfig"));
    let retyped = put(
        &app,
        &id,
        json!({"type": "stale-cleanup", "staleCleanupConfig": {}}),
    )
    .await;
    assert_eq!(retyped.status, StatusCode::OK, "{}", retyped.body);
    assert_eq!(
        retyped.body["schedule"]["staleCleanupConfig"],
        json!({"inactiveHours": 24})
    );
    assert!(retyped.body["schedule"].get("retentionConfig").is_none());

    // List and its filters.
    create(&app, health_check("probe")).await;
    let mut disabled = health_check("paused");
    disabled["enabled"] = json!(false);
    create(&app, disabled).await;
    let all = app.get(&format!("{P}/schedules"), &t).await;
    assert_eq!(
        all.texts("schedules", "name"),
        ["Nightly retention", "probe", "paused"]
    );
    let checks = app
        .get(&format!("{P}/schedules?type=health-check"), &t)
        .await;
    assert_eq!(checks.texts("schedules", "name"), ["probe", "paused"]);
    let off = app.get(&format!("{P}/schedules?enabled=false"), &t).await;
    assert_eq!(off.texts("schedules", "name"), ["paused"]);
    let both = app
        .get(&format!("{P}/schedules?type=health-check&enabled=true"), &t)
        .await;
    assert_eq!(both.texts("schedules", "name"), ["probe"]);
    for bad in ["type=backup", "enabled=yes", "colour=red"] {
        let reply = app.get(&format!("{P}/schedules?{bad}"), &t).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad}");
    }

    // Writes are audited; delete removes it and later reads are 404.
    assert_eq!(audit_rows(&app, "schedule.created").await.len(), 3);
    assert_eq!(audit_rows(&app, "schedule.updated").await.len(), 3);
    let gone = app.delete(&format!("{P}/schedules/{id}"), &t).await;
    assert_eq!(gone.status, StatusCode::OK);
    assert_eq!(gone.body["message"], "Schedule deleted");
    for (method, path) in [
        (Method::GET, format!("{P}/schedules/{id}")),
        (Method::PUT, format!("{P}/schedules/{id}")),
        (Method::DELETE, format!("{P}/schedules/{id}")),
        (Method::POST, format!("{P}/schedules/{id}/run")),
    ] {
        let reply = app
            .call(method.clone(), &path, Some(&t), Some(json!({})))
            .await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{method} {path}");
    }
    let deleted = audit_rows(&app, "schedule.deleted").await;
    assert_eq!(deleted[0]["statement"]["payload"]["schedule"]["id"], id);
}

async fn every_bound_and_grammar_error_names_its_field(backend: Backend) {
    let app = TestApp::new(backend).await;
    let agent = app.create_agent("default", "a1").await;
    let base = health_check("x");
    let with = |key: &str, value: Value| {
        let mut body = base.clone();
        body[key] = value;
        body
    };
    let without = |key: &str| {
        let mut body = base.clone();
        body.as_object_mut().unwrap().remove(key);
        body
    };
    let long = "n".repeat(200);
    // Both edges of the name.
    let ok = app
        .post(
            &format!("{P}/schedules"),
            &app.admin_token,
            with("name", json!(long)),
        )
        .await;
    assert_eq!(ok.status, StatusCode::CREATED, "{}", ok.body);
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            with("cronExpression", json!("61 * * * *")),
            "cronExpression",
            "invalid_cron",
        ),
        (
            with("cronExpression", json!("* * * *")),
            "cronExpression",
            "invalid_cron",
        ),
        (
            with("cronExpression", json!("0 0 * * * *")),
            "cronExpression",
            "invalid_cron",
        ),
        (
            with("cronExpression", json!("@daily")),
            "cronExpression",
            "invalid_cron",
        ),
        (
            with("cronExpression", json!(5)),
            "cronExpression",
            "invalid_field",
        ),
        (without("cronExpression"), "cronExpression", "missing_field"),
        (
            with("timezone", json!("Mars/Olympus")),
            "timezone",
            "invalid_timezone",
        ),
        (
            with("timezone", json!("EST5EDTX")),
            "timezone",
            "invalid_timezone",
        ),
        (
            with("name", json!("n".repeat(201))),
            "name",
            "invalid_field",
        ),
        (with("name", json!(" ")), "name", "invalid_field"),
        (with("name", json!("tab\there")), "name", "invalid_field"),
        (without("name"), "name", "missing_field"),
        (with("enabled", json!("yes")), "enabled", "invalid_field"),
        (with("type", json!("backup")), "type", "invalid_field"),
        (without("type"), "type", "missing_field"),
        (
            without("healthCheckConfig"),
            "healthCheckConfig",
            "missing_field",
        ),
        (
            with("retentionConfig", json!({"olderThanDays": 3})),
            "retentionConfig",
            "invalid_field",
        ),
        (with("colour", json!("red")), "colour", "invalid_field"),
        (
            with("projectId", json!("other")),
            "projectId",
            "invalid_field",
        ),
        (
            with("healthCheckConfig", json!({"alertOnFailure": 1})),
            "healthCheckConfig.alertOnFailure",
            "invalid_field",
        ),
        (
            json!({"name": "r", "type": "retention", "cronExpression": "0 0 * * *", "retentionConfig": {"olderThanDays": 0}}),
            "retentionConfig.olderThanDays",
            "invalid_field",
        ),
        (
            json!({"name": "r", "type": "retention", "cronExpression": "0 0 * * *", "retentionConfig": {"olderThanDays": 3651}}),
            "retentionConfig.olderThanDays",
            "invalid_field",
        ),
        (
            json!({"name": "s", "type": "stale-cleanup", "cronExpression": "0 0 * * *", "staleCleanupConfig": {"inactiveHours": 0}}),
            "staleCleanupConfig.inactiveHours",
            "invalid_field",
        ),
        (
            json!({"name": "b", "type": "bulk-retry", "cronExpression": "0 0 * * *",
                   "bulkRetryConfig": {"agent_id": agent, "filter": {"state": "failed"}, "max": 10001}}),
            "bulkRetryConfig.max",
            "invalid_field",
        ),
        (
            json!({"name": "b", "type": "bulk-retry", "cronExpression": "0 0 * * *",
                   "bulkRetryConfig": {"agent_id": uuid::Uuid::new_v4(), "filter": {}, "max": 5}}),
            "bulkRetryConfig.agent_id",
            "invalid_field",
        ),
        (
            json!({"name": "p", "type": "purge-queue", "cronExpression": "0 0 * * *",
                   "purgeQueueConfig": {"agent_id": agent, "queue": "q", "force": false}}),
            "purgeQueueConfig.force",
            "invalid_field",
        ),
        (
            json!({"name": "c", "type": "command", "cronExpression": "0 0 * * *",
                   "commandConfig": {"kind": "pool-resize", "agent_id": agent, "worker_name": "w", "delta": 0}}),
            "commandConfig.delta",
            "invalid_field",
        ),
        (
            json!({"name": "c", "type": "command", "cronExpression": "0 0 * * *",
                   "commandConfig": {"kind": "purge-queue", "agent_id": agent, "queue": "q", "confirm_token": "abc"}}),
            "commandConfig.force",
            "invalid_field",
        ),
    ];
    for (body, field, code) in cases {
        let reply = app
            .post(&format!("{P}/schedules"), &app.admin_token, body.clone())
            .await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{body}: {}",
            reply.body
        );
        assert_eq!(reply.field(), Some(field), "{body}: {}", reply.body);
        assert_eq!(reply.code(), code, "{body}: {}", reply.body);
    }
    // Nothing but the first was written.
    let list = app.get(&format!("{P}/schedules"), &app.admin_token).await;
    assert_eq!(list.count("schedules"), 1);
    // Unknown project: 404; not JSON: 415.
    let reply = app
        .post(
            "/api/v1/projects/nope/schedules",
            &app.admin_token,
            base.clone(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    // An update is checked like a create and changes nothing when refused.
    let id = list.body["schedules"][0]["id"].as_str().unwrap().to_owned();
    let bad = put(&app, &id, json!({"cronExpression": "* * 32 * *"})).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.field(), Some("cronExpression"));
    assert!(
        bad.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("day-of-month")
    );
    let still = app
        .get(&format!("{P}/schedules/{id}"), &app.admin_token)
        .await;
    assert_eq!(still.body["cronExpression"], "*/5 * * * *");
}

/// A second brain process on the same database: its own store (pools) and app.
async fn second_brain(app: &TestApp) -> AppState {
    let url = app.db.url.clone();
    let dir = app.data_dir.path().to_owned();
    let store = tokio::task::spawn_blocking(move || Store::open(&url).unwrap())
        .await
        .unwrap();
    AppState(Arc::new(App::new(
        store,
        app.keys.clone(),
        dir,
        ServerSettings::default(),
    )))
}

async fn a_due_time_fires_once_across_restarts_and_two_brains(backend: Backend) {
    let app = TestApp::new(backend).await;
    let agent = app.create_agent("default", "a1").await;
    let schedule = create(
        &app,
        json!({"name": "throttle", "type": "command", "cronExpression": "* * * * *",
               "commandConfig": {"kind": "rate-limit", "agent_id": agent, "task_name": "app.add", "rate": "10/m"}}),
    )
    .await;
    let id = schedule["id"].as_str().unwrap().to_owned();
    let t0 = ms("2030-01-01T00:00:00Z");
    set_next_run(&app, &id, t0).await;
    let other = second_brain(&app).await;
    // Five due times; at each, both brains tick at once, twice.
    for minute in 0..5 {
        let now = t0 + minute * 60_000 + 1_500;
        let (a, b) = tokio::join!(
            schedules_loop::tick(&app.state, now),
            schedules_loop::tick(&other, now)
        );
        let (c, d) = tokio::join!(
            schedules_loop::tick(&app.state, now),
            schedules_loop::tick(&other, now)
        );
        let fired: usize = [a, b, c, d].into_iter().map(|r| r.unwrap().len()).sum();
        assert_eq!(fired, 1, "minute {minute}: one run per due time");
    }
    // A brain that starts again (a fresh process) finds nothing more due at the same time.
    let restarted = second_brain(&app).await;
    let now = t0 + 4 * 60_000 + 1_500;
    assert!(
        schedules_loop::tick(&restarted, now)
            .await
            .unwrap()
            .is_empty()
    );
    let detail = app
        .get(&format!("{P}/schedules/{id}"), &app.admin_token)
        .await;
    let history = detail.body["history"].as_array().unwrap();
    let mut due: Vec<i64> = history
        .iter()
        .map(|r| ms(r["dueAt"].as_str().unwrap()))
        .collect();
    due.sort_unstable();
    assert_eq!(due, (0..5).map(|m| t0 + m * 60_000).collect::<Vec<_>>());
    assert!(history.iter().all(|r| r["trigger"] == "cron"));
    // One signed command per due time, nothing else.
    let listed = app
        .get(&format!("{P}/commands?kind=rate-limit"), &app.admin_token)
        .await;
    assert_eq!(listed.count("items"), 5);
    assert_eq!(
        ms(detail.body["nextRun"].as_str().unwrap()),
        t0 + 5 * 60_000
    );
}

async fn missed_due_times_fire_once_or_are_skipped(backend: Backend) {
    for policy in [MissedRuns::RunOnce, MissedRuns::Skip] {
        let app = TestApp::with_settings(
            backend,
            ServerSettings {
                missed_schedules: policy,
                ..ServerSettings::default()
            },
        )
        .await;
        let agent = app.create_agent("default", "a1").await;
        let schedule = create(
            &app,
            json!({"name": "restart", "type": "command", "cronExpression": "* * * * *",
                   "commandConfig": {"kind": "restart-worker", "agent_id": agent, "worker_name": "celery@w1"}}),
        )
        .await;
        let id = schedule["id"].as_str().unwrap().to_owned();
        // The brain was down for ten and a half minutes.
        let due = ms("2030-01-01T00:00:00Z");
        set_next_run(&app, &id, due).await;
        let now = due + 10 * 60_000 + 30_000;
        let runs = schedules_loop::tick(&app.state, now).await.unwrap();
        assert_eq!(runs.len(), 1, "{policy:?}: once, never a burst");
        assert!(
            schedules_loop::tick(&app.state, now)
                .await
                .unwrap()
                .is_empty()
        );
        let run = &runs[0];
        assert_eq!(run.trigger_kind, "catch_up");
        let result: Value = serde_json::from_str(&run.result).unwrap();
        assert_eq!(result["missed"], 11, "{result}");
        let commands = app
            .get(
                &format!("{P}/commands?kind=restart-worker"),
                &app.admin_token,
            )
            .await;
        let issued = commands.count("items");
        match policy {
            MissedRuns::RunOnce => {
                assert_eq!(run.status.as_str(), "running");
                assert_eq!(issued, 1);
            }
            MissedRuns::Skip => {
                assert_eq!(run.status.as_str(), "skipped");
                assert_eq!(issued, 0);
            }
        }
        let detail = app
            .get(&format!("{P}/schedules/{id}"), &app.admin_token)
            .await;
        assert_eq!(
            ms(detail.body["nextRun"].as_str().unwrap()),
            due + 11 * 60_000,
            "the next due time after now"
        );
    }
}

async fn command_schedules_issue_signed_commands_as_the_schedule(backend: Backend) {
    let app = TestApp::new(backend).await;
    let t = app.admin_token.clone();
    let agent = app.create_agent("default", "a1").await;
    app.seed_tasks("default", &agent, &["f1", "f2"]).await;

    // bulk-retry: the filter is resolved when it fires.
    let bulk = create(
        &app,
        json!({"name": "retry failures", "type": "bulk-retry", "cronExpression": "0 * * * *",
               "bulkRetryConfig": {"agent_id": agent, "filter": {"state": "failed"}, "max": 100}}),
    )
    .await;
    let run = run_now(&app, bulk["id"].as_str().unwrap()).await;
    assert_eq!(run["status"], "running");
    assert_eq!(run["trigger"], "manual");
    let command_id = run["commandIds"][0].as_str().unwrap().to_owned();
    let command = app.get(&format!("{P}/commands/{command_id}"), &t).await;
    assert_eq!(command.body["kind"], "bulk-retry");
    assert_eq!(command.body["issuer"]["type"], "schedule");
    assert_eq!(command.body["issuer"]["id"], bulk["id"]);
    assert_eq!(command.body["issuer"]["name"], "retry failures");
    let row = &command.body["audit_rows"][0];
    assert_eq!(row["signature_valid"], true);
    assert_eq!(row["statement"]["actor"]["type"], "schedule");
    // The run finishes with the command.
    agent_says(
        &app,
        &command_id,
        CommandStatus::Succeeded,
        "retried 2, skipped not retryable 0, failed 0",
    )
    .await;
    assert_eq!(
        schedules_loop::finish_open_runs(&app.state, now_ms())
            .await
            .unwrap(),
        1
    );
    let detail = app
        .get(
            &format!("{P}/schedules/{}", bulk["id"].as_str().unwrap()),
            &t,
        )
        .await;
    assert_eq!(detail.body["lastStatus"], "success");
    let last = &detail.body["history"][0];
    assert_eq!(last["status"], "success");
    assert_eq!(
        last["result"]["commands"][0]["detail"],
        "retried 2, skipped not retryable 0, failed 0"
    );

    // purge-queue: always forced, flagged critical in the signed row.
    let purge = create(
        &app,
        json!({"name": "drain", "type": "purge-queue", "cronExpression": "0 4 * * 0",
               "purgeQueueConfig": {"agent_id": agent, "queue": "reports"}}),
    )
    .await;
    let run = run_now(&app, purge["id"].as_str().unwrap()).await;
    let command_id = run["commandIds"][0].as_str().unwrap().to_owned();
    let command = app.get(&format!("{P}/commands/{command_id}"), &t).await;
    assert_eq!(
        command.body["payload"],
        json!({"queue": "reports", "force": true})
    );
    assert_eq!(command.body["critical"], true);
    assert_eq!(
        command.body["audit_rows"][0]["statement"]["payload"]["command"]["critical"],
        true
    );
    // A failed command fails the run, with the agent's reason.
    agent_says(
        &app,
        &command_id,
        CommandStatus::Failed,
        "broker unreachable",
    )
    .await;
    finish_open_runs(&app).await;
    let detail = app
        .get(
            &format!("{P}/schedules/{}", purge["id"].as_str().unwrap()),
            &t,
        )
        .await;
    assert_eq!(detail.body["lastStatus"], "failed");
    assert!(
        detail.body["history"][0]["error"]
            .as_str()
            .unwrap()
            .contains("broker unreachable")
    );

    // A command whose agent is gone fails at once, issuing nothing.
    let cmd = create(
        &app,
        json!({"name": "resize", "type": "command", "cronExpression": "0 4 * * *",
               "commandConfig": {"kind": "pool-resize", "agent_id": agent, "worker_name": "w", "delta": 2}}),
    )
    .await;
    let reply = app.delete(&format!("{P}/agents/{agent}"), &t).await;
    assert!(reply.status.is_success(), "{}", reply.body);
    let run = run_now(&app, cmd["id"].as_str().unwrap()).await;
    assert_eq!(run["status"], "failed");
    assert_eq!(run["commandIds"], json!([]));
    assert!(
        run["error"].as_str().unwrap().contains("not found"),
        "{run}"
    );
}

async fn retention_deletes_old_records_through_a_cleanup_task(backend: Backend) {
    let app = TestApp::new(backend).await;
    let agent = app.create_agent("default", "a1").await;
    let ids: Vec<String> = (0..6).map(|i| format!("r{i}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    app.seed_tasks("default", &agent, &refs).await;
    let (now, old) = (now_ms(), now_ms() - 40 * 86_400_000);
    // r0..r2 are 40 days old (r2 still in flight); r3..r5 are recent.
    app.execute_sql(&[
        &format!("UPDATE tasks SET received_at = {now}, created_at = {now}"),
        &format!("UPDATE tasks SET received_at = {old}, created_at = {old} WHERE task_id IN ('r0', 'r1', 'r2')"),
        "UPDATE tasks SET state = 'started' WHERE task_id = 'r2'",
    ])
    .await;
    let schedule = create(
        &app,
        json!({"name": "keep 30 days", "type": "retention", "cronExpression": "0 3 * * *",
               "retentionConfig": {"olderThanDays": 30}}),
    )
    .await;
    let run = run_now(&app, schedule["id"].as_str().unwrap()).await;
    assert_eq!(run["status"], "success", "{run}");
    let cleanup_id = run["result"]["cleanupTaskId"].as_str().unwrap().to_owned();
    while taskward_brain::background::run_cleanup_steps(&app.state, 10)
        .await
        .unwrap()
        > 0
    {}
    let cleanup = app
        .get(
            &format!("/api/v1/cleanup-tasks/{cleanup_id}"),
            &app.admin_token,
        )
        .await;
    assert_eq!(cleanup.body["status"], "completed", "{}", cleanup.body);
    assert_eq!(cleanup.body["resourceType"], "delete_task_records");
    assert_eq!(cleanup.body["metadata"]["deleted"], 2);
    let list = app
        .get(&format!("{P}/tasks?limit=100"), &app.admin_token)
        .await;
    let mut left: Vec<&str> = list.texts("items", "task_id");
    left.sort_unstable();
    assert_eq!(left, ["r2", "r3", "r4", "r5"]);
    let rows = audit_rows(&app, "schedule.retention").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["statement"]["actor"]["type"], "schedule");
    assert_eq!(
        cleanup.body["sourceEventId"].as_str().unwrap(),
        format!("{}#{}", rows[0]["chain"].as_str().unwrap(), rows[0]["seq"])
    );
}

/// Stores worker updates as an agent reporting now would.
async fn report(app: &TestApp, agent: &str, updates: Vec<Update>) {
    let agent = agent.to_owned();
    app.store
        .write("test_report", move |conn| {
            let project = taskward_brain::store::projects::find(conn, &"default".parse().unwrap())?;
            taskward_brain::store::tasks::apply_updates(
                conn,
                &project.id,
                &agent,
                &updates,
                now_ms(),
            )
        })
        .await
        .unwrap();
}

fn worker(name: &str, online: bool) -> Update {
    Update::Worker(WorkerUpdate {
        name: name.into(),
        online,
        at_ms: now_ms(),
        ..WorkerUpdate::default()
    })
}

async fn health_checks_alert_when_a_worker_does_not_answer(backend: Backend) {
    let app = TestApp::new(backend).await;
    let t = app.admin_token.clone();
    let schedule = create(&app, health_check("workers alive")).await;
    let id = schedule["id"].as_str().unwrap().to_owned();
    // No workers yet: nothing to ping, a success that says so.
    let run = run_now(&app, &id).await;
    assert_eq!(run["status"], "success");
    assert_eq!(run["result"]["workers"], 0);

    let a1 = app.create_agent("default", "a1").await;
    let a2 = app.create_agent("default", "a2").await;
    report(
        &app,
        &a1,
        vec![worker("celery@w1", true), worker("celery@w2", true)],
    )
    .await;
    report(
        &app,
        &a2,
        vec![worker("celery@w3", true), worker("celery@old", false)],
    )
    .await;
    // Run it once so the worker that was already offline is not pinged again.
    let run = run_now(&app, &id).await;
    assert_eq!(run["status"], "running");
    let pings = run["commandIds"].as_array().unwrap().clone();
    assert_eq!(pings.len(), 2, "one ping per agent: {run}");
    let mut asked = Vec::new();
    for ping in &pings {
        let command = app
            .get(&format!("{P}/commands/{}", ping.as_str().unwrap()), &t)
            .await;
        assert_eq!(command.body["kind"], "ping-workers");
        assert_eq!(command.body["issuer"]["type"], "schedule");
        asked.extend(
            command.body["payload"]["worker_names"]
                .as_array()
                .unwrap()
                .iter()
                .map(|w| w.as_str().unwrap().to_owned()),
        );
        agent_says(
            &app,
            ping.as_str().unwrap(),
            CommandStatus::Succeeded,
            "all answered",
        )
        .await;
    }
    asked.sort();
    assert_eq!(asked, ["celery@old", "celery@w1", "celery@w2", "celery@w3"]);
    finish_open_runs(&app).await;
    assert!(audit_rows(&app, "schedule.alert").await.is_empty());

    // w2 dies between checks: it is pinged once more, does not answer, and that raises an
    // alert in the audit log and in /metrics.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    report(&app, &a1, vec![worker("celery@w2", false)]).await;
    let run = run_now(&app, &id).await;
    for ping in run["commandIds"].as_array().unwrap() {
        let command = app
            .get(&format!("{P}/commands/{}", ping.as_str().unwrap()), &t)
            .await;
        let names = command.body["payload"]["worker_names"].clone();
        if names == json!(["celery@w1", "celery@w2"]) {
            agent_says(
                &app,
                ping.as_str().unwrap(),
                CommandStatus::Failed,
                "no answer within 5 s from celery@w2; 1 of 2 answered: celery@w1",
            )
            .await;
        } else {
            assert_eq!(
                names,
                json!(["celery@w3"]),
                "celery@old is not pinged again"
            );
            agent_says(
                &app,
                ping.as_str().unwrap(),
                CommandStatus::Succeeded,
                "1 of 1 answered",
            )
            .await;
        }
    }
    finish_open_runs(&app).await;
    let detail = app.get(&format!("{P}/schedules/{id}"), &t).await;
    assert_eq!(detail.body["lastStatus"], "failed");
    assert!(
        detail.body["history"][0]["error"]
            .as_str()
            .unwrap()
            .contains("celery@w2")
    );
    let alerts = audit_rows(&app, "schedule.alert").await;
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0]["signature_valid"], true);
    assert!(
        alerts[0]["statement"]["payload"]["failures"][0]
            .as_str()
            .unwrap()
            .contains("celery@w2")
    );
    let metrics = app.get("/metrics", &t).await;
    let text = metrics.text();
    let line = text
        .lines()
        .find(|l| l.starts_with("taskward_schedule_alerts_total") && l.contains(&id))
        .unwrap_or_else(|| panic!("no alert metric in:\n{text}"));
    assert!(line.ends_with(" 1"), "{line}");

    // alertOnFailure false: the run fails, no alert.
    let quiet = put(
        &app,
        &id,
        json!({"healthCheckConfig": {"alertOnFailure": false}}),
    )
    .await;
    assert_eq!(quiet.status, StatusCode::OK, "{}", quiet.body);
    let run = run_now(&app, &id).await;
    for ping in run["commandIds"].as_array().unwrap() {
        agent_says(
            &app,
            ping.as_str().unwrap(),
            CommandStatus::TimedOut,
            "no result",
        )
        .await;
    }
    finish_open_runs(&app).await;
    assert_eq!(audit_rows(&app, "schedule.alert").await.len(), 1);

    // A schedule made after workers left does not ping them: only departures it saw.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let late = create(&app, health_check("late")).await;
    let run = run_now(&app, late["id"].as_str().unwrap()).await;
    let mut asked = Vec::new();
    for ping in run["commandIds"].as_array().unwrap() {
        let command = app
            .get(&format!("{P}/commands/{}", ping.as_str().unwrap()), &t)
            .await;
        for name in command.body["payload"]["worker_names"].as_array().unwrap() {
            asked.push(name.as_str().unwrap().to_owned());
        }
    }
    asked.sort();
    assert_eq!(asked, ["celery@w1", "celery@w3"]);
}

async fn stale_cleanup_removes_inactive_agents(backend: Backend) {
    let app = TestApp::new(backend).await;
    let old = app.create_agent("default", &unique("old")).await;
    let fresh = app.create_agent("default", &unique("fresh")).await;
    crate::runtime::backdate(&app, &old).await;
    let schedule = create(
        &app,
        json!({"name": "tidy", "type": "stale-cleanup", "cronExpression": "0 5 * * 1",
               "staleCleanupConfig": {"inactiveHours": 48}}),
    )
    .await;
    let run = run_now(&app, schedule["id"].as_str().unwrap()).await;
    assert_eq!(run["status"], "success", "{run}");
    assert_eq!(run["result"]["removed"][0]["agent_id"], old);
    assert_eq!(run["result"]["kept"], 1);
    let t = &app.admin_token;
    assert_eq!(
        app.get(&format!("{P}/agents/{old}"), t).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get(&format!("{P}/agents/{fresh}"), t).await.status,
        StatusCode::OK
    );
    let rows = audit_rows(&app, "agent.stale_removed").await;
    assert_eq!(rows[0]["statement"]["actor"]["type"], "schedule");
}

async fn access_follows_roles(backend: Backend) {
    let app = TestApp::new(backend).await;
    let viewer = app.create_user("viewer", false).await;
    let operator = app.create_user("operator", false).await;
    let outsider = app.create_user("outsider", false).await;
    app.add_member("default", "viewer", "viewer").await;
    app.add_member("default", "operator", "operator").await;
    let schedule = create(&app, health_check("probe")).await;
    let id = schedule["id"].as_str().unwrap();
    for token in [&viewer, &operator] {
        assert_eq!(
            app.get(&format!("{P}/schedules"), token).await.status,
            StatusCode::OK
        );
        assert_eq!(
            app.get(&format!("{P}/schedules/{id}"), token).await.status,
            StatusCode::OK
        );
        for (method, path, body) in [
            (Method::POST, format!("{P}/schedules"), health_check("mine")),
            (
                Method::PUT,
                format!("{P}/schedules/{id}"),
                json!({"enabled": false}),
            ),
            (Method::DELETE, format!("{P}/schedules/{id}"), json!({})),
            (Method::POST, format!("{P}/schedules/{id}/run"), json!({})),
        ] {
            let reply = app
                .call(method.clone(), &path, Some(token), Some(body))
                .await;
            assert_eq!(reply.status, StatusCode::FORBIDDEN, "{method} {path}");
        }
    }
    assert_eq!(
        app.get(&format!("{P}/schedules/{id}"), &outsider)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    // Another project's admin cannot reach it through their own project.
    app.create_project("other").await;
    let reply = app
        .get(
            &format!("/api/v1/projects/other/schedules/{id}"),
            &app.admin_token,
        )
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let list = app
        .get("/api/v1/projects/other/schedules", &app.admin_token)
        .await;
    assert_eq!(list.body["schedules"], json!([]));
    // Nothing changed.
    let detail = app
        .get(&format!("{P}/schedules/{id}"), &app.admin_token)
        .await;
    assert_eq!(detail.body["enabled"], true);
    assert_eq!(detail.body["history"], json!([]));
}

async fn deleting_a_project_deletes_its_schedules(backend: Backend) {
    let app = TestApp::new(backend).await;
    let t = app.admin_token.clone();
    app.create_project("doomed").await;
    let reply = app
        .post(
            "/api/v1/projects/doomed/schedules",
            &t,
            health_check("probe"),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let id = reply.body["schedule"]["id"].as_str().unwrap().to_owned();
    let root = app.delete("/api/v1/projects/doomed", &t).await;
    assert_eq!(root.status, StatusCode::ACCEPTED, "{}", root.body);
    let root_id = root.body["id"].as_str().unwrap().to_owned();
    while taskward_brain::background::run_cleanup_steps(&app.state, 10)
        .await
        .unwrap()
        > 0
    {}
    let tree = app
        .get(&format!("/api/v1/cleanup-tasks/{root_id}/tree"), &t)
        .await;
    let text = tree.body.to_string();
    assert!(
        text.contains("delete_schedule") && text.contains(&id),
        "{text}"
    );
    // Nothing of it is left to fire.
    let left = app
        .store
        .read("test_schedules_left", move |conn| {
            taskward_brain::store::schedules::find_any(conn, &id).map(|_| ())
        })
        .await;
    assert!(
        matches!(left, Err(taskward_brain::store::StoreError::NotFound)),
        "{left:?}"
    );
}
