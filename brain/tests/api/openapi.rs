//! The committed OpenAPI document is the one the code generates and serves.
//! Regenerate with `UPDATE_OPENAPI=1 cargo test -p taskward-brain --test api openapi`.

use axum::http::{Method, StatusCode};

use crate::support::{Backend, TestApp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_openapi_matches_the_code() {
    let generated = taskward_brain::router::openapi().to_pretty_json().unwrap() + "\n";
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.json");
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/openapi.json is stale: run UPDATE_OPENAPI=1 cargo test -p taskward-brain --test api openapi"
    );
    let doc: serde_json::Value = serde_json::from_str(&generated).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));

    let app = TestApp::new(Backend::Sqlite).await;
    let served = app
        .call(Method::GET, "/api/v1/openapi.json", None, None)
        .await;
    assert_eq!(served.status, StatusCode::OK);
    assert_eq!(served.body, doc);
}
