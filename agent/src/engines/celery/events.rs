//! Celery events as they arrive on Redis pub/sub (`/<db>.celeryev/<routing key>`): a kombu
//! envelope whose `body` is base64 JSON holding one event or, for `task.multi`, an array of
//! them (`../shared/docs/celery-wire.md`, section 4). Turned into engine-neutral updates.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;
use taskward_shared::events::{TaskState, TaskUpdate, Update, WorkerUpdate};

/// Why a message could not be read (counted, never fatal: the read loop goes on).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not a kombu envelope.
    #[error("not a kombu envelope: {0}")]
    Envelope(String),
    /// The body is not base64 JSON.
    #[error("undecodable body: {0}")]
    Body(String),
}

/// Parses one pub/sub payload into updates. Events that carry nothing Taskward stores
/// (`task-sent` without a worker, unknown types) yield no update.
pub fn parse_message(payload: &[u8]) -> Result<Vec<Update>, ParseError> {
    let envelope: Value =
        serde_json::from_slice(payload).map_err(|e| ParseError::Envelope(e.to_string()))?;
    let body = envelope
        .get("body")
        .and_then(Value::as_str)
        .ok_or_else(|| ParseError::Envelope("no body".into()))?;
    let raw = if envelope["properties"]["body_encoding"] == "base64" {
        STANDARD
            .decode(body)
            .map_err(|e| ParseError::Body(e.to_string()))?
    } else {
        body.as_bytes().to_vec()
    };
    let decoded: Value =
        serde_json::from_slice(&raw).map_err(|e| ParseError::Body(e.to_string()))?;
    let events = match decoded {
        Value::Array(events) => events,
        single => vec![single],
    };
    Ok(events.iter().filter_map(to_update).collect())
}

fn ms(event: &Value) -> i64 {
    (event["timestamp"].as_f64().unwrap_or_default() * 1000.0).round() as i64
}

fn text(event: &Value, field: &str) -> Option<String> {
    event.get(field).and_then(Value::as_str).map(str::to_owned)
}

/// One Celery event as an update.
pub fn to_update(event: &Value) -> Option<Update> {
    let kind = event["type"].as_str()?;
    if let Some(worker_kind) = kind.strip_prefix("worker-") {
        return Some(Update::Worker(WorkerUpdate {
            name: text(event, "hostname")?,
            online: worker_kind != "offline",
            at_ms: ms(event),
            processed: event["processed"].as_i64(),
            ..WorkerUpdate::default()
        }));
    }
    let state = match kind {
        "task-received" => TaskState::Received,
        "task-started" => TaskState::Started,
        "task-succeeded" => TaskState::Succeeded,
        "task-failed" => TaskState::Failed,
        "task-retried" => TaskState::Retried,
        "task-revoked" => TaskState::Cancelled,
        // Rejected follows a failure of the same task; sent comes from the producer.
        "task-rejected" | "task-sent" => return None,
        _ => return None,
    };
    let repr = |field: &str| text(event, field).map(Value::String);
    Some(Update::Task(Box::new(TaskUpdate {
        engine: "celery".into(),
        task_id: text(event, "uuid")?,
        state: Some(state),
        at_ms: ms(event),
        name: text(event, "name"),
        worker: text(event, "hostname"),
        // Python reprs, kept as text here; the adapter reads and redacts them.
        args: repr("args"),
        kwargs: repr("kwargs"),
        result: text(event, "result"),
        exception: text(event, "exception"),
        traceback: text(event, "traceback"),
        retries: event["retries"].as_i64().map(|r| r as i32),
        runtime_ms: event["runtime"]
            .as_f64()
            .map(|s| (s * 1000.0).round() as i64),
        parent_id: text(event, "parent_id"),
        root_id: text(event, "root_id"),
        ..TaskUpdate::default()
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixtures() -> Vec<(String, Value)> {
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/fixtures/celery/redis"
        );
        let mut out: Vec<(String, Value)> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("fixtures at {dir}: {e}"))
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .starts_with("event-")
            })
            .map(|p| {
                let name = p.file_name().unwrap().to_str().unwrap().to_owned();
                (
                    name,
                    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap(),
                )
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    fn task(updates: &[Update]) -> &TaskUpdate {
        match &updates[0] {
            Update::Task(t) => t,
            other => panic!("expected a task update, got {other:?}"),
        }
    }

    #[test]
    fn every_event_fixture_parses() {
        let all = fixtures();
        assert!(all.len() >= 14, "fixtures missing: {}", all.len());
        for (name, fixture) in &all {
            let wire = fixture["wire"].as_str().unwrap();
            let updates = parse_message(wire.as_bytes()).unwrap_or_else(|e| panic!("{name}: {e}"));
            let expect_updates = !name.contains("task-sent");
            assert_eq!(!updates.is_empty(), expect_updates, "{name}: {updates:?}");
        }
    }

    #[test]
    fn fixtures_map_to_the_right_states_and_fields() {
        let all: std::collections::HashMap<String, Value> = fixtures().into_iter().collect();
        let parse =
            |name: &str| parse_message(all[name]["wire"].as_str().unwrap().as_bytes()).unwrap();

        let received = parse("event-task-received.json");
        let t = task(&received);
        assert_eq!(t.state, Some(TaskState::Received));
        assert!(t.name.is_some() && t.args.is_some() && t.kwargs.is_some());
        assert!(t.worker.as_deref().unwrap().contains('@'));
        assert!(t.at_ms > 1_700_000_000_000);

        let succeeded = parse("event-task-succeeded.json");
        let t = task(&succeeded);
        assert_eq!(t.state, Some(TaskState::Succeeded));
        assert!(t.result.is_some() && t.runtime_ms.is_some());

        let failed = parse("event-task-failed.json");
        let t = task(&failed);
        assert_eq!(t.state, Some(TaskState::Failed));
        assert!(t.exception.is_some() && t.traceback.is_some());

        assert_eq!(
            task(&parse("event-task-retried.json")).state,
            Some(TaskState::Retried)
        );
        assert_eq!(
            task(&parse("event-task-revoked.json")).state,
            Some(TaskState::Cancelled)
        );
        assert_eq!(
            task(&parse("event-task-started.json")).state,
            Some(TaskState::Started)
        );

        let batch = parse("event-task-multi-batch-of-two.json");
        assert_eq!(batch.len(), 2, "both events of a task.multi batch");

        for (name, online) in [
            ("event-worker-online.json", true),
            ("event-worker-heartbeat.json", true),
            ("event-worker-offline.json", false),
        ] {
            match &parse(name)[0] {
                Update::Worker(w) => assert_eq!(w.online, online, "{name}"),
                other => panic!("{name}: {other:?}"),
            }
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(matches!(
            parse_message(b"not json"),
            Err(ParseError::Envelope(_))
        ));
        assert!(matches!(
            parse_message(br#"{"body": "!!!", "properties": {"body_encoding": "base64"}}"#),
            Err(ParseError::Body(_))
        ));
    }
}
