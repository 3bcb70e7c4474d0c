//! Bad input of every kind gets the JSON error shape, the right status, names the field, and
//! changes nothing.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::json;

use crate::both_backends;
use crate::support::{Backend, TestApp};

async fn bad_input_gets_json_errors_and_changes_nothing(backend: Backend) {
    let app = TestApp::new(backend).await;
    let token = app.admin_token.clone();
    let before = app.project_count().await;

    let raw = |method: Method, path: &str, content_type: Option<&str>, body: Vec<u8>| {
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {token}"));
        if let Some(ct) = content_type {
            builder = builder.header("content-type", ct);
        }
        builder.body(Body::from(body)).unwrap()
    };
    let json_ct = Some("application/json");

    // (request, status, code, field)
    let cases: Vec<(Request<Body>, StatusCode, &str, Option<&str>)> = vec![
        (
            raw(
                Method::POST,
                "/api/v1/projects",
                json_ct,
                b"{\"slug\": ".to_vec(),
            ),
            StatusCode::BAD_REQUEST,
            "invalid_json",
            None,
        ),
        (
            raw(Method::POST, "/api/v1/projects", json_ct, b"".to_vec()),
            StatusCode::BAD_REQUEST,
            "invalid_json",
            None,
        ),
        // JSON, but not an object: serde would have read the struct from its fields in order.
        (
            raw(
                Method::PATCH,
                "/api/v1/projects/default",
                json_ct,
                b"[null, null]".to_vec(),
            ),
            StatusCode::BAD_REQUEST,
            "invalid_body",
            None,
        ),
        // A nested struct from an array is refused with its field named.
        (
            raw(
                Method::POST,
                "/api/v1/projects/default/commands/bulk-retry/dry-run",
                json_ct,
                format!(
                    "{{\"agent_id\": \"{}\", \"filter\": [null, null], \"max\": 1}}",
                    uuid::Uuid::new_v4()
                )
                .into_bytes(),
            ),
            StatusCode::BAD_REQUEST,
            "invalid_field",
            Some("filter"),
        ),
        (
            raw(
                Method::POST,
                "/api/v1/projects",
                json_ct,
                b"{\"slug\": 42}".to_vec(),
            ),
            StatusCode::BAD_REQUEST,
            "invalid_field",
            Some("slug"),
        ),
        (
            raw(
                Method::POST,
                "/api/v1/projects",
                json_ct,
                b"{\"slug\": \"Not A Slug\"}".to_vec(),
            ),
            StatusCode::BAD_REQUEST,
            "invalid_field",
            Some("slug"),
        ),
        (
            raw(
                Method::POST,
                "/api/v1/projects",
                json_ct,
                br#"{"slug": "ok", "owner": "x"}"#.to_vec(),
            ),
            StatusCode::BAD_REQUEST,
            "unknown_field",
            Some("owner"),
        ),
        (
            raw(
                Method::POST,
                "/api/v1/projects",
                json_ct,
                br#"{"name": "No slug"}"#.to_vec(),
            ),
            StatusCode::BAD_REQUEST,
            "missing_field",
            Some("slug"),
        ),
        (
            raw(
                Method::POST,
                "/api/v1/projects",
                json_ct,
                br#"["slug"]"#.to_vec(),
            ),
            StatusCode::BAD_REQUEST,
            "invalid_body",
            None,
        ),
        (
            raw(
                Method::POST,
                "/api/v1/projects",
                Some("text/plain"),
                br#"{"slug": "ok"}"#.to_vec(),
            ),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            None,
        ),
        (
            raw(
                Method::POST,
                "/api/v1/projects",
                None,
                br#"{"slug": "ok"}"#.to_vec(),
            ),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            None,
        ),
        (
            // One byte over the 1 MiB limit, as valid JSON so only the size is wrong.
            raw(Method::POST, "/api/v1/projects", json_ct, {
                let mut body = br#"{"slug": "ok", "description": ""#.to_vec();
                body.resize(1024 * 1024 - 1, b'a');
                body.extend_from_slice(b"\"}");
                body
            }),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            None,
        ),
        (
            raw(
                Method::POST,
                "/api/v1/projects",
                json_ct,
                json!({"slug": "ok", "description": "x".repeat(2001)})
                    .to_string()
                    .into_bytes(),
            ),
            StatusCode::BAD_REQUEST,
            "invalid_field",
            Some("description"),
        ),
        (
            raw(
                Method::POST,
                "/api/v1/tokens",
                json_ct,
                br#"{"name": "t", "expires_in": "forever"}"#.to_vec(),
            ),
            StatusCode::BAD_REQUEST,
            "invalid_field",
            Some("expires_in"),
        ),
        (
            raw(
                Method::POST,
                "/api/v1/tokens",
                json_ct,
                br#"{"name": ""}"#.to_vec(),
            ),
            StatusCode::BAD_REQUEST,
            "invalid_field",
            Some("name"),
        ),
        (
            raw(
                Method::POST,
                "/api/v1/projects/default/members",
                json_ct,
                br#"{"user": "admin", "role": "owner"}"#.to_vec(),
            ),
            StatusCode::BAD_REQUEST,
            "invalid_field",
            Some("role"),
        ),
        (
            raw(
                Method::GET,
                "/api/v1/projects/default/agents/not-a-uuid",
                None,
                vec![],
            ),
            StatusCode::BAD_REQUEST,
            "invalid_path_parameter",
            Some("agent_id"),
        ),
        (
            raw(Method::GET, "/api/v1/projects/Bad_Slug", None, vec![]),
            StatusCode::BAD_REQUEST,
            "invalid_field",
            Some("slug"),
        ),
        (
            raw(Method::DELETE, "/api/v1/users/Bad%20Name", None, vec![]),
            StatusCode::BAD_REQUEST,
            "invalid_path_parameter",
            None,
        ),
        (
            raw(Method::GET, "/api/v1/nothing-here", None, vec![]),
            StatusCode::NOT_FOUND,
            "not_found",
            None,
        ),
        (
            raw(Method::PUT, "/api/v1/projects", json_ct, b"{}".to_vec()),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            None,
        ),
    ];
    for (request, status, code, field) in cases {
        let what = format!("{} {}", request.method(), request.uri());
        let reply = app.send(request).await;
        assert_eq!(reply.status, status, "{what}: {}", reply.body);
        assert_eq!(reply.code(), code, "{what}: {}", reply.body);
        assert!(
            reply.body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{what}: message missing"
        );
        if field.is_some() {
            assert_eq!(reply.field(), field, "{what}: {}", reply.body);
        }
    }
    assert_eq!(
        app.project_count().await,
        before,
        "a bad request changed the store"
    );

    // Unauthenticated requests get the shape too, with a challenge header.
    let reply = app.call(Method::GET, "/api/v1/projects", None, None).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.code(), "unauthenticated");
    assert_eq!(reply.headers["www-authenticate"], "Bearer");
    for header in ["Basic abc", "Bearer", "Bearer ", "tw_abc"] {
        let request = Request::builder()
            .uri("/api/v1/projects")
            .header("authorization", header)
            .body(Body::empty())
            .unwrap();
        assert_eq!(
            app.send(request).await.status,
            StatusCode::UNAUTHORIZED,
            "{header}"
        );
    }
}

async fn conflicts_are_409(backend: Backend) {
    let app = TestApp::new(backend).await;
    let t = app.admin_token.clone();
    let again = app
        .post("/api/v1/projects", &t, json!({"slug": "default"}))
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(again.code(), "conflict");
    app.create_agent("default", "host-1").await;
    let dup = app.register_agent("default", "host-1").await;
    assert_eq!(dup.status, StatusCode::CONFLICT);
    let user = app
        .post("/api/v1/users", &t, json!({"name": "admin"}))
        .await;
    assert_eq!(user.status, StatusCode::CONFLICT);
}

both_backends!(
    bad_input_gets_json_errors_and_changes_nothing,
    conflicts_are_409
);
