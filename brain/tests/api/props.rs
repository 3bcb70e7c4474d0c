//! Property tests of the list grammar and cursors through the real router, on both backends
//! (issue #18): any JSON as `filter` and `orderBy`, and any text as `cursor`, is answered 200
//! (a query the database runs) or 400 naming the parameter, never a 500 or a panic. The soak
//! run is `PROPTEST_CASES=100000 cargo test --release -p taskward-brain --test api props`
//! (README); the suite runs a few hundred cases.

use std::sync::LazyLock;

use axum::http::StatusCode;
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use serde_json::{Value, json};
use taskward_brain::query::filter::OPERATORS;
use taskward_testkit::fuzz;

use crate::both_backends;
use crate::support::{Backend, TestApp};

both_backends!(
    any_filter_or_order_is_a_query_or_a_400,
    any_cursor_is_a_page_or_a_400
);

/// The grammar's words: combinators, operators, fields, relations and directions, and a few
/// values.
static GRAMMAR_WORDS: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
    let mut words = vec!["AND", "OR", "NOT"];
    words.extend(OPERATORS);
    words.extend(fields());
    words.extend([
        "worker",
        "agent",
        "parent",
        "pool",
        "concurrency",
        "hostname",
    ]);
    words.extend(DIRECTIONS);
    words.extend(["succeeded", "failed", "app.add", "%", "_", "\\"]);
    words
});

/// The task fields, as the grammar's own entity table lists them.
fn fields() -> Vec<&'static str> {
    taskward_brain::query::entities::TASKS
        .fields
        .iter()
        .map(|f| f.name)
        .collect()
}

/// The directions of an ordering.
const DIRECTIONS: &[&str] = &[
    "asc",
    "desc",
    "asc_nulls_first",
    "asc_nulls_last",
    "desc_nulls_first",
    "desc_nulls_last",
];

/// A filter built from the grammar's shapes, with operands of every type (so the parser's
/// type checks and the database both see them), mixed with arbitrary JSON.
fn grammar_filter() -> BoxedStrategy<Value> {
    use proptest::sample::select;
    let operand = prop_oneof![
        fuzz::json_with(&GRAMMAR_WORDS, 0),
        proptest::collection::vec(fuzz::json_with(&GRAMMAR_WORDS, 0), 0..4).prop_map(Value::Array),
    ];
    let compare = (select(fields()), select(OPERATORS), operand)
        .prop_map(|(field, op, operand)| json!({ field: { op: operand } }));
    let shaped = compare.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            (select(&["worker", "agent", "parent"][..]), inner.clone())
                .prop_map(|(relation, f)| json!({ relation: f })),
            proptest::collection::vec(inner.clone(), 0..4).prop_map(|v| json!({ "AND": v })),
            proptest::collection::vec(inner.clone(), 0..4).prop_map(|v| json!({ "OR": v })),
            inner.prop_map(|f| json!({ "NOT": f })),
        ]
    });
    prop_oneof![4 => shaped, 1 => fuzz::json_with(&GRAMMAR_WORDS, 4)].boxed()
}

/// An `orderBy` of the grammar's shape, or arbitrary JSON.
fn grammar_order() -> BoxedStrategy<Value> {
    use proptest::sample::select;
    let key = (select(fields()), select(DIRECTIONS)).prop_map(|(f, d)| json!({ f: d }));
    prop_oneof![
        4 => proptest::collection::vec(key, 0..3).prop_map(Value::Array),
        1 => fuzz::json_with(&GRAMMAR_WORDS, 3),
    ]
    .boxed()
}

/// Runs `cases` requests built from `strategy()` through the app's router on a blocking
/// thread (the strategy is made there: proptest's recursive strategies stay on one thread),
/// each checked by `check`. Returns how many were answered 200.
async fn run_requests<S>(
    app: &TestApp,
    cases: u32,
    strategy: fn() -> S,
    check: fn(&S::Value, StatusCode, &Value) -> Result<(), TestCaseError>,
    path: fn(&S::Value) -> String,
) -> usize
where
    S: Strategy + 'static,
{
    let router = app.router.clone();
    let token = app.admin_token.clone();
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let pages = std::sync::atomic::AtomicUsize::new(0);
        let mut runner = TestRunner::new(fuzz::config(cases));
        runner
            .run(&strategy(), |input| {
                let request = axum::http::Request::get(path(&input))
                    .header("authorization", format!("Bearer {token}"))
                    .body(axum::body::Body::empty())
                    .unwrap();
                let (status, body) = handle.block_on(async {
                    use http_body_util::BodyExt;
                    use tower::ServiceExt;
                    let response = router.clone().oneshot(request).await.unwrap();
                    let status = response.status();
                    let bytes = response.into_body().collect().await.unwrap().to_bytes();
                    (
                        status,
                        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
                    )
                });
                if status == StatusCode::OK {
                    pages.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                check(&input, status, &body)
            })
            .unwrap();
        pages.into_inner()
    })
    .await
    .unwrap()
}

fn encoded(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// 200, or 400 naming one of `fields`.
fn page_or_refusal(status: StatusCode, body: &Value, fields: &[&str]) -> Result<(), TestCaseError> {
    match status {
        StatusCode::OK => Ok(()),
        StatusCode::BAD_REQUEST => {
            let field = body["error"]["field"].as_str().unwrap_or_default();
            prop_assert!(
                fields.iter().any(|f| field.starts_with(f)),
                "a 400 must name the parameter: {body}"
            );
            Ok(())
        }
        other => Err(TestCaseError::fail(format!("answered {other}: {body}"))),
    }
}

async fn any_filter_or_order_is_a_query_or_a_400(backend: Backend) {
    let app = TestApp::new(backend).await;
    let agent = app.create_agent("default", "host-a").await;
    app.seed_tasks("default", &agent, &["t1", "t2", "t3"]).await;
    let pages = run_requests(
        &app,
        300,
        || (grammar_filter(), grammar_order()),
        |_, status, body| page_or_refusal(status, body, &["filter", "orderBy"]),
        |(filter, order)| {
            format!(
                "/api/v1/projects/default/tasks?limit=5&filter={}&orderBy={}",
                encoded(&filter.to_string()),
                encoded(&order.to_string())
            )
        },
    )
    .await;
    // The inputs reach the database, not only the parser's first refusal.
    assert!(pages >= 15, "only {pages} of 300 inputs made a query");
}

async fn any_cursor_is_a_page_or_a_400(backend: Backend) {
    let app = TestApp::new(backend).await;
    let cursors = || {
        prop_oneof![
            any::<String>(),
            fuzz::json_with(&GRAMMAR_WORDS, 3).prop_map(|v| v.to_string()),
            proptest::collection::vec(any::<u8>(), 0..96).prop_map(|b| {
                use base64::Engine;
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
            }),
        ]
    };
    let _ = run_requests(
        &app,
        300,
        cursors,
        |_, status, body| page_or_refusal(status, body, &["cursor"]),
        |cursor| format!("/api/v1/projects/default/tasks?cursor={}", encoded(cursor)),
    )
    .await;
}
