//! API tokens: shown once, stored hashed, revocable, expiring, with a last-used time.

use axum::http::StatusCode;
use diesel::{Connection, PgConnection, QueryableByName, RunQueryDsl};
use serde_json::json;
use taskward_brain::store::DatabaseUrl;
use taskward_shared::secret::hash_secret;

use crate::both_backends;
use crate::support::{Backend, TestApp};

async fn tokens_lifecycle(backend: Backend) {
    let app = TestApp::new(backend).await;
    let t = app.admin_token.clone();
    let created = app.create_token(&t, "ci", "30d").await;
    assert_eq!(created.status, StatusCode::CREATED);
    let token = created.body["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("tw_"));
    assert!(token.starts_with(created.body["prefix"].as_str().unwrap()));
    assert!(created.body["expires_at"].is_string());

    // It works; the listing shows the prefix but never the token.
    assert_eq!(
        app.get("/api/v1/projects", &token).await.status,
        StatusCode::OK
    );
    let listed = app.get("/api/v1/tokens", &token).await;
    assert!(!listed.body.to_string().contains(&token));
    let entry = listed.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == created.body["id"])
        .unwrap()
        .clone();
    assert!(entry.get("token").is_none());
    // Using it recorded a last-used time (written off the request path; wait for it).
    let mut seen = false;
    for _ in 0..50 {
        let listed = app.get("/api/v1/tokens", &t).await;
        if listed.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["id"] == created.body["id"] && i["last_used_at"].is_string())
        {
            seen = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(seen, "last_used_at was never recorded");

    // Only the owner can revoke it; for others it does not exist.
    let other = app.create_user("other", false).await;
    let path = format!("/api/v1/tokens/{}", created.body["id"].as_str().unwrap());
    assert_eq!(
        app.delete(&path, &other).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get("/api/v1/projects", &token).await.status,
        StatusCode::OK
    );
    let revoked = app.delete(&path, &t).await;
    assert_eq!(revoked.status, StatusCode::OK);
    assert!(revoked.body["revoked_at"].is_string());
    assert_eq!(
        app.get("/api/v1/projects", &token).await.status,
        StatusCode::UNAUTHORIZED
    );
    // Revoking again is harmless and keeps the first time.
    assert_eq!(
        app.delete(&path, &t).await.body["revoked_at"],
        revoked.body["revoked_at"]
    );

    // Lifetime bounds: 1m and 3650d are accepted, 0m and 3651d are not.
    for (expires_in, status) in [
        ("1m", StatusCode::CREATED),
        ("3650d", StatusCode::CREATED),
        ("0m", StatusCode::BAD_REQUEST),
        ("3651d", StatusCode::BAD_REQUEST),
    ] {
        let reply = app.create_token(&t, "b", expires_in).await;
        assert_eq!(reply.status, status, "{expires_in}: {}", reply.body);
    }
}

#[derive(QueryableByName)]
struct Dumped {
    #[diesel(sql_type = diesel::sql_types::Text)]
    row: String,
}

/// Every byte the database holds (SQLite: the files; PostgreSQL: every row of every table as
/// text) must contain the tokens' hashes and never the tokens.
async fn plaintext_tokens_never_reach_the_database(backend: Backend) {
    let app = TestApp::new(backend).await;
    let mut secrets = vec![app.admin_token.clone()];
    secrets.push(app.create_user("jane", false).await);
    let created = app
        .post("/api/v1/tokens", &app.admin_token, json!({"name": "x"}))
        .await;
    secrets.push(created.body["token"].as_str().unwrap().to_owned());
    let agent = app
        .post(
            "/api/v1/projects/default/agents",
            &app.admin_token,
            json!({"name": "h"}),
        )
        .await;
    secrets.push(agent.body["enrollment_token"].as_str().unwrap().to_owned());

    let contents = match &app.db.url {
        DatabaseUrl::Sqlite(path) => {
            let mut all = Vec::new();
            for suffix in ["", "-wal"] {
                let file = format!("{}{suffix}", path.display());
                if let Ok(bytes) = std::fs::read(&file) {
                    all.extend(bytes);
                }
            }
            String::from_utf8_lossy(&all).into_owned()
        }
        DatabaseUrl::Postgres(url) => {
            let url = url.clone();
            tokio::task::spawn_blocking(move || {
                let mut conn = PgConnection::establish(&url).unwrap();
                let mut out = String::new();
                for table in ["users", "projects", "memberships", "api_tokens", "agents"] {
                    let rows: Vec<Dumped> =
                        diesel::sql_query(format!("SELECT CAST(t AS TEXT) AS row FROM {table} t"))
                            .load(&mut conn)
                            .unwrap();
                    for r in rows {
                        out.push_str(&r.row);
                        out.push('\n');
                    }
                }
                out
            })
            .await
            .unwrap()
        }
    };
    for secret in &secrets {
        assert!(
            contents.contains(&hash_secret(secret)),
            "the scan did not find the hash of a token: it is not looking at the data"
        );
        assert!(
            !contents.contains(secret.as_str()),
            "a plaintext token is in the database"
        );
    }
}

both_backends!(tokens_lifecycle, plaintext_tokens_never_reach_the_database);
