//! What each resource does for a user who is allowed to use it.

use axum::http::{Method, StatusCode};
use serde_json::json;

use crate::both_backends;
use crate::support::{Backend, TestApp, unique};

async fn projects_create_read_update(backend: Backend) {
    let app = TestApp::new(backend).await;
    let t = app.admin_token.clone();
    let created = app
        .post(
            "/api/v1/projects",
            &t,
            json!({"slug": "billing", "name": "Billing workers", "description": "invoices"}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert_eq!(created.body["slug"], "billing");
    assert_eq!(created.body["name"], "Billing workers");
    assert_eq!(created.body["role"], "admin");

    let patched = app
        .call(
            Method::PATCH,
            "/api/v1/projects/billing",
            Some(&t),
            Some(json!({"description": "all invoices"})),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK);
    assert_eq!(patched.body["description"], "all invoices");
    assert_eq!(patched.body["name"], "Billing workers");

    let read = app.get("/api/v1/projects/billing", &t).await;
    assert_eq!(read.body["description"], "all invoices");
    let listed = app.get("/api/v1/projects", &t).await;
    let slugs: Vec<&str> = listed.texts("items", "slug");
    assert_eq!(slugs, ["billing", "default"]);

    // Slug bounds: 63 characters is accepted, 64 is not.
    let long = "a".repeat(63);
    assert_eq!(
        app.post("/api/v1/projects", &t, json!({"slug": long}))
            .await
            .status,
        StatusCode::CREATED
    );
    assert_eq!(
        app.post("/api/v1/projects", &t, json!({"slug": "a".repeat(64)}))
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
}

async fn members_add_change_list_remove(backend: Backend) {
    let app = TestApp::new(backend).await;
    let t = app.admin_token.clone();
    let jane_token = app.create_user("jane", false).await;
    let members = "/api/v1/projects/default/members";

    let added = app
        .post(members, &t, json!({"user": "jane", "role": "viewer"}))
        .await;
    assert_eq!(added.status, StatusCode::CREATED);
    assert_eq!(added.body["role"], "viewer");
    // A viewer reads the project but cannot change members.
    assert_eq!(
        app.get("/api/v1/projects/default", &jane_token).await.body["role"],
        "viewer"
    );
    let refused = app
        .post(
            members,
            &jane_token,
            json!({"user": "jane", "role": "admin"}),
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);

    let changed = app
        .post(members, &t, json!({"user": "jane", "role": "operator"}))
        .await;
    assert_eq!(changed.status, StatusCode::OK);
    assert_eq!(changed.body["role"], "operator");
    assert_eq!(changed.body["created_at"], added.body["created_at"]);

    let listed = app.get(members, &jane_token).await;
    let roles: Vec<(String, String)> = listed.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["user"].as_str().unwrap().into(),
                m["role"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        roles,
        [
            ("admin".to_owned(), "admin".to_owned()),
            ("jane".into(), "operator".into())
        ]
    );

    let unknown = app
        .post(members, &t, json!({"user": "nobody", "role": "viewer"}))
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);

    assert_eq!(
        app.delete(&format!("{members}/jane"), &t).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.delete(&format!("{members}/jane"), &t).await.status,
        StatusCode::NOT_FOUND
    );
    // Jane no longer sees the project at all.
    assert_eq!(
        app.get("/api/v1/projects/default", &jane_token)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

async fn users_create_list_delete(backend: Backend) {
    let app = TestApp::new(backend).await;
    let t = app.admin_token.clone();
    let token = app.create_user("ops-bot", false).await;
    assert!(token.starts_with("tw_"));
    app.add_member("default", "ops-bot", "operator").await;
    assert_eq!(
        app.get("/api/v1/projects", &token).await.status,
        StatusCode::OK
    );

    let listed = app.get("/api/v1/users", &t).await;
    let names: Vec<&str> = listed.texts("items", "name");
    assert_eq!(names, ["admin", "ops-bot"]);

    assert_eq!(
        app.delete("/api/v1/users/ops-bot", &t).await.status,
        StatusCode::NO_CONTENT
    );
    // Their token stops working at once, the name stays reserved, and they leave the lists.
    assert_eq!(
        app.get("/api/v1/projects", &token).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.post("/api/v1/users", &t, json!({"name": "ops-bot"}))
            .await
            .status,
        StatusCode::CONFLICT
    );
    let members = app.get("/api/v1/projects/default/members", &t).await;
    assert_eq!(members.count("items"), 1);
    // Nobody can delete themselves (the last site admin would lock everyone out).
    let own = app.delete("/api/v1/users/admin", &t).await;
    assert_eq!(own.status, StatusCode::BAD_REQUEST);
    assert_eq!(own.field(), Some("name"));
    assert_eq!(
        app.delete("/api/v1/users/ghost", &t).await.status,
        StatusCode::NOT_FOUND
    );
}

async fn agents_register_list_delete(backend: Backend) {
    let app = TestApp::new(backend).await;
    let t = app.admin_token.clone();
    let created = app
        .post(
            "/api/v1/projects/default/agents",
            &t,
            json!({"name": "worker-host-1", "preserve": true}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let enrollment = created.body["enrollment_token"].as_str().unwrap();
    assert!(enrollment.starts_with("twe_"));
    assert_eq!(created.body["agent"]["enrolled"], false);
    assert_eq!(created.body["agent"]["preserve"], true);
    assert!(created.body["agent"]["enrollment_expires_at"].is_string());
    let id = created.body["agent"]["id"].as_str().unwrap().to_owned();

    let viewer = unique("viewer");
    let viewer_token = app.create_user(&viewer, false).await;
    app.add_member("default", &viewer, "viewer").await;
    let listed = app
        .get("/api/v1/projects/default/agents", &viewer_token)
        .await;
    assert_eq!(listed.status, StatusCode::OK);
    let items = listed.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], id.as_str());
    // The enrollment token is shown once only.
    assert!(!listed.body.to_string().contains(enrollment));

    let path = format!("/api/v1/projects/default/agents/{id}");
    assert_eq!(
        app.get(&path, &viewer_token).await.body["name"],
        "worker-host-1"
    );
    assert_eq!(app.delete(&path, &t).await.status, StatusCode::NO_CONTENT);
    assert_eq!(app.get(&path, &t).await.status, StatusCode::NOT_FOUND);
    assert_eq!(app.delete(&path, &t).await.status, StatusCode::NOT_FOUND);
}

async fn health_and_readiness(backend: Backend) {
    let app = TestApp::new(backend).await;
    let health = app.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(health.status, StatusCode::OK);
    let ready = app.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(ready.status, StatusCode::OK);
    assert_eq!(ready.body["status"], "ok");
    assert!(health.headers.contains_key("x-request-id"));
}

both_backends!(
    projects_create_read_update,
    members_add_change_list_remove,
    users_create_list_delete,
    agents_register_list_delete,
    health_and_readiness,
);
