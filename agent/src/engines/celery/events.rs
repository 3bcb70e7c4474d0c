//! Celery events (`../shared/docs/celery-wire.md`, section 4) into engine-neutral updates. The
//! input is an event message's body as the transport unwrapped it (on Redis from kombu's
//! envelope, on AMQP as delivered): one event, or for `task.multi` an array of them.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use taskward_shared::events::{TaskState, TaskUpdate, Update, WorkerUpdate};

/// A body that is not Celery events (counted, never fatal: the read loop goes on).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("undecodable body: {0}")]
pub struct ParseError(String);

/// One event's fields, read straight from the body (no JSON tree per event: at 50,000 events/s
/// building one was the agent's largest cost). A field of an unexpected type reads as absent,
/// as a missing one does, so one odd field never costs the whole message.
#[derive(Deserialize)]
struct RawEvent<'a> {
    #[serde(rename = "type", default, borrow, deserialize_with = "lenient")]
    kind: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "lenient")]
    hostname: Option<Cow<'a, str>>,
    #[serde(default, deserialize_with = "lenient")]
    timestamp: Option<f64>,
    #[serde(default, deserialize_with = "lenient")]
    processed: Option<i64>,
    #[serde(default, borrow, deserialize_with = "lenient")]
    uuid: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "lenient")]
    name: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "lenient")]
    args: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "lenient")]
    kwargs: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "lenient")]
    result: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "lenient")]
    exception: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "lenient")]
    traceback: Option<Cow<'a, str>>,
    #[serde(default, deserialize_with = "lenient")]
    retries: Option<i64>,
    #[serde(default, deserialize_with = "lenient")]
    runtime: Option<f64>,
    #[serde(default, borrow, deserialize_with = "lenient")]
    parent_id: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "lenient")]
    root_id: Option<Cow<'a, str>>,
}

/// Parses one event message's body into updates. Events that carry nothing Taskward stores
/// (`task-sent`, unknown types) yield no update.
pub fn parse_body(body: &[u8]) -> Result<Vec<Update>, ParseError> {
    // One event, or for `task.multi` an array of them: told apart by the first byte, as
    // serde's untagged enums would buffer the whole body to try each shape.
    let body_error = |e: serde_json::Error| ParseError(e.to_string());
    if body.trim_ascii_start().starts_with(b"[") {
        let events: Vec<RawEvent> = serde_json::from_slice(body).map_err(body_error)?;
        Ok(events.into_iter().filter_map(to_update).collect())
    } else {
        let event: RawEvent = serde_json::from_slice(body).map_err(body_error)?;
        Ok(to_update(event).into_iter().collect())
    }
}

fn owned(field: Option<Cow<'_, str>>) -> Option<String> {
    field.map(Cow::into_owned)
}

/// One Celery event as an update.
fn to_update(event: RawEvent<'_>) -> Option<Update> {
    let at_ms = (event.timestamp.unwrap_or_default() * 1000.0).round() as i64;
    let kind = event.kind.as_deref()?;
    if let Some(worker_kind) = kind.strip_prefix("worker-") {
        return Some(Update::Worker(WorkerUpdate {
            online: worker_kind != "offline",
            name: owned(event.hostname)?,
            at_ms,
            processed: event.processed,
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
    Some(Update::Task(Box::new(TaskUpdate {
        engine: "celery".into(),
        task_id: owned(event.uuid)?,
        state: Some(state),
        at_ms,
        name: owned(event.name),
        worker: owned(event.hostname),
        // Python reprs, kept as text here; the adapter reads and redacts them.
        args: event
            .args
            .map(|a| serde_json::Value::String(a.into_owned())),
        kwargs: event
            .kwargs
            .map(|k| serde_json::Value::String(k.into_owned())),
        result: owned(event.result),
        exception: owned(event.exception),
        traceback: owned(event.traceback),
        retries: event.retries.map(|r| r as i32),
        runtime_ms: event.runtime.map(|s| (s * 1000.0).round() as i64),
        parent_id: owned(event.parent_id),
        root_id: owned(event.root_id),
        ..TaskUpdate::default()
    })))
}

/// Reads a field as `T` when the JSON has that type, and as absent otherwise (null, another
/// type): the leniency `serde_json::Value::as_str` and friends gave the old tree-based parser.
fn lenient<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Lenient<'de>,
{
    deserializer.deserialize_any(LenientVisitor(std::marker::PhantomData))
}

/// The JSON values a lenient field accepts.
trait Lenient<'de>: Sized {
    fn from_str(_: Cow<'de, str>) -> Option<Self> {
        None
    }
    fn from_i64(_: i64) -> Option<Self> {
        None
    }
    fn from_u64(_: u64) -> Option<Self> {
        None
    }
    fn from_f64(_: f64) -> Option<Self> {
        None
    }
}

impl<'de> Lenient<'de> for Cow<'de, str> {
    fn from_str(s: Cow<'de, str>) -> Option<Self> {
        Some(s)
    }
}

impl Lenient<'_> for i64 {
    fn from_i64(v: i64) -> Option<Self> {
        Some(v)
    }
    fn from_u64(v: u64) -> Option<Self> {
        i64::try_from(v).ok()
    }
}

impl Lenient<'_> for f64 {
    fn from_i64(v: i64) -> Option<Self> {
        Some(v as f64)
    }
    fn from_u64(v: u64) -> Option<Self> {
        Some(v as f64)
    }
    fn from_f64(v: f64) -> Option<Self> {
        Some(v)
    }
}

struct LenientVisitor<T>(std::marker::PhantomData<T>);

impl<'de, T: Lenient<'de>> Visitor<'de> for LenientVisitor<T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(T::from_str(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(T::from_str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(T::from_str(Cow::Owned(v)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(T::from_i64(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(T::from_u64(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(T::from_f64(v))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures;
    use super::super::transport::envelope;
    use super::*;
    use serde_json::Value;

    /// A captured Redis message through both layers, as the running code reads it: the Redis
    /// transport's envelope decoder, then the event parser.
    fn parse_wire(wire: &str) -> Vec<Update> {
        parse_body(&envelope::event_body(wire.as_bytes()).unwrap()).unwrap()
    }

    fn task(updates: &[Update]) -> &TaskUpdate {
        match &updates[0] {
            Update::Task(t) => t,
            other => panic!("expected a task update, got {other:?}"),
        }
    }

    #[test]
    fn every_event_fixture_parses() {
        let all = fixtures::read("redis", "event-");
        assert!(all.len() >= 14, "fixtures missing: {}", all.len());
        for (name, fixture) in &all {
            let body = envelope::event_body(fixture["wire"].as_str().unwrap().as_bytes())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let updates = parse_body(&body).unwrap_or_else(|e| panic!("{name}: {e}"));
            let expect_updates = !name.contains("task-sent");
            assert_eq!(!updates.is_empty(), expect_updates, "{name}: {updates:?}");
        }
    }

    /// AMQP delivers the body itself; the same parser reads it to the same kind of updates.
    #[test]
    fn every_amqp_event_fixture_parses() {
        let all = fixtures::read("amqp", "event-");
        assert!(all.len() >= 6, "AMQP fixtures missing: {}", all.len());
        for (name, fixture) in &all {
            let body = fixture["body_utf8"].as_str().unwrap().as_bytes();
            let updates = parse_body(body).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(!updates.is_empty(), !name.contains("task-sent"), "{name}");
        }
    }

    #[test]
    fn fixtures_map_to_the_right_states_and_fields() {
        let all: std::collections::HashMap<String, Value> =
            fixtures::read("redis", "event-").into_iter().collect();
        let parse = |name: &str| parse_wire(all[name]["wire"].as_str().unwrap());

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
    fn a_field_of_an_unexpected_type_reads_as_absent() {
        let event = serde_json::json!([{
            "type": "task-received", "uuid": "u-1", "hostname": "w@h", "timestamp": 1795497689,
            "name": ["not", "a", "string"], "args": {"a": 1}, "retries": "two",
            "runtime": null, "root_id": 7, "kwargs": "{'x': \"é\"}",
        }]);
        let updates = parse_body(event.to_string().as_bytes()).unwrap();
        let t = task(&updates);
        assert_eq!(t.task_id, "u-1");
        assert_eq!(t.at_ms, 1_795_497_689_000);
        assert_eq!(
            (t.name.as_ref(), t.args.as_ref(), t.retries),
            (None, None, None)
        );
        assert_eq!((t.runtime_ms, t.root_id.as_ref()), (None, None));
        // A string with escapes (the quotes) is decoded, not borrowed raw.
        assert_eq!(t.kwargs, Some(Value::String("{'x': \"é\"}".into())));
        // No uuid: no update, and the message still reads.
        let nameless = serde_json::json!({"type": "task-started", "hostname": "w@h"});
        assert_eq!(parse_body(nameless.to_string().as_bytes()).unwrap(), vec![]);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(parse_body(b"not json").is_err());
        assert!(parse_body(b"[1, 2").is_err());
    }
}
