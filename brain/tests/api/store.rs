//! The store itself: bootstrap, migrations from empty, and concurrent writers.

use std::os::unix::fs::PermissionsExt;

use axum::http::StatusCode;
use serde_json::json;
use taskward_brain::bootstrap::bootstrap_if_empty;
use taskward_brain::store::{Store, users};

use crate::both_backends;
use crate::support::{Backend, TestApp};

async fn bootstrap_creates_admin_project_and_token_once(backend: Backend) {
    let app = TestApp::new(backend).await;
    let file = app.data_dir.path().join("admin.token");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode, 0o600,
        "admin.token must be readable by its owner only"
    );
    assert_eq!(
        std::fs::read_to_string(&file).unwrap().trim(),
        app.admin_token
    );

    let me = app.get("/api/v1/projects/default", &app.admin_token).await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.body["role"], "admin");
    let users_list = app.get("/api/v1/users", &app.admin_token).await;
    assert_eq!(users_list.body["items"][0]["name"], "admin");
    assert_eq!(users_list.body["items"][0]["site_admin"], true);

    // Reopening (migrations already applied) and bootstrapping again changes nothing.
    let url = app.db.url.clone();
    let dir = app.data_dir.path().to_owned();
    let keys = app.keys.clone();
    let (again, count) = tokio::task::spawn_blocking(move || {
        let store = Store::open(&url).unwrap();
        let again = bootstrap_if_empty(&store, &keys, &dir).unwrap();
        let count = store
            .read_blocking("count", users::list_active)
            .unwrap()
            .len();
        (again.is_some(), count)
    })
    .await
    .unwrap();
    assert!(!again, "bootstrap ran on a store that has users");
    assert_eq!(count, 1);
    assert_eq!(
        std::fs::read_to_string(&file).unwrap().trim(),
        app.admin_token
    );
}

/// Many requests writing at once: none may fail (on SQLite: no "database is locked").
async fn concurrent_writers_never_fail(backend: Backend) {
    let app = std::sync::Arc::new(TestApp::new(backend).await);
    let mut tasks = Vec::new();
    for i in 0..48 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            let t = app.admin_token.clone();
            let reply = if i % 2 == 0 {
                app.post("/api/v1/tokens", &t, json!({"name": format!("t{i}")}))
                    .await
            } else {
                app.post(
                    "/api/v1/projects/default/agents",
                    &t,
                    json!({"name": format!("host-{i}")}),
                )
                .await
            };
            (reply.status, reply.body)
        }));
    }
    for task in tasks {
        let (status, body) = task.await.unwrap();
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let agents = app
        .get("/api/v1/projects/default/agents", &app.admin_token)
        .await;
    assert_eq!(agents.count("items"), 24);
}

both_backends!(
    bootstrap_creates_admin_project_and_token_once,
    concurrent_writers_never_fail
);
