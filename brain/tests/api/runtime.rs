//! Stale runtime cleanup, rule by rule: not stale, preserved, dry run, removal (workers gone,
//! task records and commands kept, started tasks lost, archive in the audit log), bounds and
//! access.

use axum::http::StatusCode;
use serde_json::{Value, json};
use taskward_shared::events::{TaskState, TaskUpdate, Update, WorkerUpdate};

use crate::both_backends;
use crate::support::{Backend, TestApp, celery_task};

both_backends!(stale_rules_one_by_one, bounds_and_access,);

const P: &str = "/api/v1/projects/default";

/// Moves an agent's every timestamp a week into the past.
pub async fn backdate(app: &TestApp, agent: &str) {
    use diesel::prelude::*;
    use taskward_brain::store::schema::agents;
    let (agent, week_ago) = (
        agent.to_owned(),
        taskward_brain::store::now_ms() - 7 * 86_400_000,
    );
    app.store
        .write("test_backdate", move |conn| {
            diesel::update(agents::table.find(agent))
                .set((
                    agents::created_at.eq(week_ago),
                    agents::enrolled_at.eq(Some(week_ago)),
                    agents::last_seen_at.eq(Some(week_ago)),
                ))
                .execute(conn)?;
            Ok::<_, taskward_brain::store::StoreError>(())
        })
        .await
        .unwrap();
}

fn started(id: &str, worker: &str, state: TaskState) -> Update {
    Update::Task(Box::new(TaskUpdate {
        worker: Some(worker.into()),
        ..celery_task(id, state, 1)
    }))
}

fn worker(name: &str) -> Update {
    Update::Worker(WorkerUpdate {
        name: name.into(),
        online: true,
        at_ms: 1,
        pool: Some("prefork".into()),
        ..WorkerUpdate::default()
    })
}

async fn cleanup(app: &TestApp, body: Value) -> crate::support::Reply {
    app.post(
        &format!("{P}/runtime-cleanup/stale"),
        &app.admin_token,
        body,
    )
    .await
}

async fn stale_rules_one_by_one(backend: Backend) {
    let app = TestApp::new(backend).await;
    let t = app.admin_token.clone();
    // Fresh: not stale, with when it would be.
    let fresh = app.create_agent("default", "fresh").await;
    let reply = cleanup(&app, json!({"agent_id": fresh})).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let result = &reply.body["results"]["agent"];
    assert_eq!(
        (
            result["reason"].as_str(),
            result["skipped"].as_bool(),
            result["deleted"].as_bool()
        ),
        (Some("not_stale"), Some(true), Some(false))
    );
    let last =
        chrono::DateTime::parse_from_rfc3339(result["last_updated_at"].as_str().unwrap()).unwrap();
    let eligible =
        chrono::DateTime::parse_from_rfc3339(result["eligible_after"].as_str().unwrap()).unwrap();
    assert_eq!((eligible - last).num_hours(), 24);
    assert_eq!(reply.body["inactive_hours"], 24);
    assert_eq!(reply.body["archive_before_delete"], true);

    // Preserved: never removed, however old.
    let kept = app
        .post(
            &format!("{P}/agents"),
            &t,
            json!({"name": "keeper", "preserve": true}),
        )
        .await;
    let kept = kept.body["agent"]["id"].as_str().unwrap().to_owned();
    backdate(&app, &kept).await;
    let reply = cleanup(&app, json!({"agent_id": kept, "inactive_hours": 1})).await;
    assert_eq!(reply.body["results"]["agent"]["reason"], "preserved");
    assert_eq!(
        app.get(&format!("{P}/agents/{kept}"), &t).await.status,
        StatusCode::OK
    );

    // Stale, with a worker, tasks on it, and a command in the log.
    let old = app.create_agent("default", "old").await;
    let other = app.create_agent("default", "other").await;
    app.apply_updates(
        "default",
        &old,
        vec![
            worker("w1@old"),
            started("running", "w1@old", TaskState::Started),
            started("done", "w1@old", TaskState::Succeeded),
        ],
    )
    .await;
    app.apply_updates(
        "default",
        &other,
        vec![
            worker("w1@old"),
            started("elsewhere", "w1@old", TaskState::Started),
        ],
    )
    .await;
    let command = app
        .command_on_task(&t, "cancel-task", &old, "running")
        .await;
    let command = command.body["id"].as_str().unwrap().to_owned();
    backdate(&app, &old).await;

    // A dry run says what would happen and changes nothing.
    let dry = cleanup(
        &app,
        json!({"agent_id": old, "inactive_hours": 48, "dry_run": true}),
    )
    .await;
    let result = &dry.body["results"]["agent"];
    assert_eq!(result["reason"], "dry_run", "{}", dry.body);
    assert_eq!(result["deleted"], false);
    assert_eq!(result["workers"], json!(["w1@old"]));
    assert_eq!(result["lost_tasks"], 1);
    assert_eq!(result["archive"]["workers"][0]["pool"], "prefork");
    assert_eq!(
        app.get(&format!("{P}/agents/{old}"), &t).await.status,
        StatusCode::OK
    );

    // The real thing.
    let done = cleanup(&app, json!({"agent_id": old, "inactive_hours": 48})).await;
    let result = &done.body["results"]["agent"];
    assert_eq!(
        (result["reason"].as_str(), result["deleted"].as_bool()),
        (Some("deleted"), Some(true)),
        "{}",
        done.body
    );
    assert_eq!(result["lost_tasks"], 1);
    assert_eq!(
        app.get(&format!("{P}/agents/{old}"), &t).await.status,
        StatusCode::NOT_FOUND
    );
    let state_of = |id: &'static str| {
        let app = &app;
        let t = t.clone();
        async move { app.get(&format!("{P}/tasks/celery/{id}"), &t).await.body["state"].clone() }
    };
    assert_eq!(state_of("running").await, "lost");
    assert_eq!(state_of("done").await, "succeeded", "task records are kept");
    assert_eq!(
        state_of("elsewhere").await,
        "started",
        "another agent's worker of the same name is untouched"
    );
    let other_agent = app.get(&format!("{P}/agents/{other}"), &t).await;
    assert_eq!(other_agent.body["workers"][0]["name"], "w1@old");
    assert_eq!(
        other_agent.body["workers"][0]["status"], "unknown",
        "reported online, but its agent is not connected: nobody watches it"
    );
    assert_eq!(
        app.get(&format!("{P}/commands/{command}"), &t).await.status,
        StatusCode::OK,
        "the command log is kept"
    );
    let audit = app.get(&format!("{P}/audit?limit=1000"), &t).await;
    let row = audit.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kind"] == "agent.stale_removed")
        .expect("an audit row")
        .clone();
    let payload = &row["statement"]["payload"];
    assert_eq!(payload["archive"]["agent"]["name"], "old");
    assert_eq!(payload["workers"], json!(["w1@old"]));

    // Without the archive: nothing archived in the response or the log.
    let bare = app.create_agent("default", "bare").await;
    backdate(&app, &bare).await;
    let reply = cleanup(
        &app,
        json!({"agent_id": bare, "archive_before_delete": false}),
    )
    .await;
    assert_eq!(reply.body["results"]["agent"]["deleted"], true);
    assert_eq!(reply.body["results"]["agent"]["archive"], Value::Null);
}

async fn bounds_and_access(backend: Backend) {
    let app = TestApp::new(backend).await;
    let agent = app.create_agent("default", "host").await;
    for (hours, status) in [
        (0, StatusCode::BAD_REQUEST),
        (1, StatusCode::OK),
        (8760, StatusCode::OK),
        (8761, StatusCode::BAD_REQUEST),
    ] {
        let reply = cleanup(&app, json!({"agent_id": agent, "inactive_hours": hours})).await;
        assert_eq!(reply.status, status, "{hours}: {}", reply.body);
        if status == StatusCode::BAD_REQUEST {
            assert_eq!(reply.field(), Some("inactive_hours"));
        }
    }
    for (body, field) in [
        (json!({}), "agent_id"),
        (json!({"agent_id": "not-a-uuid"}), "agent_id"),
        (json!({"agent_id": agent, "dry_run": "yes"}), "dry_run"),
        (json!({"agent_id": agent, "extra": 1}), "extra"),
    ] {
        let reply = cleanup(&app, body.clone()).await;
        reply.assert_names_field(field, &body.to_string());
    }
    assert_eq!(
        cleanup(&app, json!({"agent_id": uuid::Uuid::new_v4()}))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    app.create_project("other").await;
    let theirs = app.create_agent("other", "theirs").await;
    assert_eq!(
        cleanup(&app, json!({"agent_id": theirs})).await.status,
        StatusCode::NOT_FOUND,
        "another project's agent is not found here"
    );
    let token = app.create_operator().await;
    let refused = app
        .post(
            &format!("{P}/runtime-cleanup/stale"),
            &token,
            json!({"agent_id": agent}),
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
}
