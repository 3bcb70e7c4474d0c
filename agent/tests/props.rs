//! Property tests of what the agent decodes from the broker (issue #18): Celery envelopes,
//! event bodies and Python reprs from anything on the wire are read or refused, never a
//! panic (a panic would stop the agent's event stream). The soak run is
//! `PROPTEST_CASES=100000 cargo test --release -p taskward-agent --test props` (README).

use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use taskward_agent::engines::celery::transport::envelope;
use taskward_agent::engines::celery::{events, pyrepr};
use taskward_testkit::fuzz;

/// Keys and values of Kombu envelopes and Celery events.
const CELERY_WORDS: &[&str] = &[
    "body",
    "headers",
    "properties",
    "body_encoding",
    "base64",
    "utf-8",
    "content-type",
    "content-encoding",
    "application/json",
    "delivery_info",
    "routing_key",
    "exchange",
    "type",
    "task-received",
    "task-started",
    "task-succeeded",
    "task-failed",
    "task-retried",
    "task-revoked",
    "task-rejected",
    "task-sent",
    "worker-online",
    "worker-heartbeat",
    "worker-offline",
    "uuid",
    "name",
    "args",
    "kwargs",
    "retries",
    "eta",
    "expires",
    "hostname",
    "timestamp",
    "utcoffset",
    "pid",
    "clock",
    "runtime",
    "result",
    "exception",
    "traceback",
    "root_id",
    "parent_id",
    "queue",
    "freq",
    "active",
    "processed",
    "loadavg",
    "sw_ident",
    "terminated",
    "signum",
    "expired",
    "priority",
    "local_received",
];

#[test]
fn any_envelope_is_decoded_or_refused() {
    let mut runner = TestRunner::new(fuzz::config(2000));
    runner
        .run(&fuzz::bytes_with(CELERY_WORDS, 5), |bytes| {
            let _ = envelope::decode(&bytes);
            let _ = envelope::event_body(&bytes);
            Ok(())
        })
        .unwrap();
}

#[test]
fn any_event_body_is_parsed_or_refused() {
    let mut runner = TestRunner::new(fuzz::config(2000));
    runner
        .run(&fuzz::bytes_with(CELERY_WORDS, 5), |bytes| {
            if let Ok(updates) = events::parse_body(&bytes) {
                for mut update in updates {
                    update.make_storable();
                }
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn any_python_repr_is_parsed_or_refused() {
    let mut runner = TestRunner::new(fuzz::config(2000));
    let reprs = prop_oneof![
        any::<String>(),
        fuzz::json_with(
            &[
                "None", "True", "False", "(", ")", "[", "]", "{", "}", "'", "b'", "u'"
            ],
            4
        )
        .prop_map(|v| v.to_string()),
    ];
    runner
        .run(&reprs, |text| {
            let _ = pyrepr::parse(&text);
            Ok(())
        })
        .unwrap();
}
