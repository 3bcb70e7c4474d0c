//! Celery remote control ("pidbox") over Redis: publish a request to the `celery.pidbox`
//! fanout and collect the replies the workers push to our own reply queue
//! (`../shared/docs/celery-wire.md`, sections 2.5, 2.6 and 5).

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use redis::AsyncCommands;
use serde_json::{Value, json};
use taskward_shared::crypto::random_bytes;

/// How long replies are awaited (Celery's CLI waits 1 s; restarts and slow hosts need more).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// kombu's separator inside binding members.
const SEP: &str = "\x06\x16";

/// A random UUID-shaped id (task ids, reply keys, delivery tags).
pub fn uuid_like() -> String {
    let b = random_bytes::<16>();
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

fn epoch_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A pidbox client for one broker db.
#[derive(Clone)]
pub struct Pidbox {
    /// The broker.
    pub client: redis::Client,
    /// kombu's `global_keyprefix`.
    pub prefix: String,
    /// The broker's db number (part of the fanout channel name).
    pub db: i64,
}

impl Pidbox {
    /// Sends `method(arguments)` to `destination` (every worker when `None`) and returns the
    /// replies as `(worker, result)`, waiting until each destination answered or the timeout.
    pub async fn call(
        &self,
        method: &str,
        arguments: Value,
        destination: Option<Vec<String>>,
    ) -> Result<Vec<(String, Value)>, String> {
        self.call_within(method, arguments, destination, REPLY_TIMEOUT)
            .await
    }

    /// [`Pidbox::call`] with its own reply timeout (lookups that must not hold up others).
    pub async fn call_within(
        &self,
        method: &str,
        arguments: Value,
        destination: Option<Vec<String>>,
        timeout: Duration,
    ) -> Result<Vec<(String, Value)>, String> {
        let mut conn = self
            .client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| format!("broker: {e}"))?;
        let p = &self.prefix;
        let reply_key = uuid_like();
        let reply_queue = format!("{reply_key}.reply.celery.pidbox");
        let member = format!("{reply_key}{SEP}{SEP}{reply_queue}");
        let bindings = format!("{p}_kombu.binding.reply.celery.pidbox");
        // The reply binding must exist before a worker answers, and carry a deadline so
        // kombu 5.7's sweeper treats it like its own.
        let _: () = conn
            .sadd(&bindings, &member)
            .await
            .map_err(|e| e.to_string())?;
        let deadline_ms = (epoch_secs() * 1000.0) as i64 + 3_600_000;
        let _: Result<i64, _> = redis::cmd("ZADD")
            .arg(format!("{p}_kombu.binding_deadlines"))
            .arg("GT")
            .arg(deadline_ms)
            .arg("reply.celery.pidbox")
            .query_async(&mut conn)
            .await;
        let ticket = uuid_like();
        let body = json!({
            "method": method,
            "arguments": arguments,
            "destination": destination,
            "pattern": null,
            "matcher": null,
            "ticket": ticket,
            "reply_to": {"exchange": "reply.celery.pidbox", "routing_key": reply_key},
        });
        let envelope = json!({
            "body": STANDARD.encode(body.to_string()),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": {"clock": 1, "expires": epoch_secs() + timeout.as_secs_f64()},
            "properties": {
                "delivery_mode": 2,
                "delivery_info": {"exchange": "celery.pidbox", "routing_key": ""},
                "priority": 0,
                "body_encoding": "base64",
                "delivery_tag": uuid_like(),
            },
        });
        let channel = format!("{p}/{}.celery.pidbox", self.db);
        let _: i64 = conn
            .publish(&channel, envelope.to_string())
            .await
            .map_err(|e| e.to_string())?;
        let expected = destination.as_ref().map_or(usize::MAX, Vec::len);
        let mut replies = Vec::new();
        let until = tokio::time::Instant::now() + timeout;
        let keys: Vec<String> = std::iter::once(format!("{p}{reply_queue}"))
            .chain(
                ["3", "6", "9"]
                    .iter()
                    .map(|b| format!("{p}{reply_queue}{SEP}{b}")),
            )
            .collect();
        while replies.len() < expected && tokio::time::Instant::now() < until {
            // A short block: below the client's response timeout, and fractional timeouts are
            // fine on Redis >= 6.
            let popped: Option<(String, String)> = redis::cmd("BRPOP")
                .arg(&keys)
                .arg(0.25)
                .query_async(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            let Some((_, message)) = popped else { continue };
            let Ok(reply) = serde_json::from_str::<Value>(&message) else {
                continue;
            };
            if reply["headers"]["ticket"] != ticket.as_str() {
                continue;
            }
            let Some(decoded) = reply["body"]
                .as_str()
                .and_then(|b| STANDARD.decode(b).ok())
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            else {
                continue;
            };
            if let Value::Object(map) = decoded {
                replies.extend(map);
            }
        }
        // Clean up like kombu: the binding member and the reply lists.
        let _: Result<i64, _> = conn.srem(&bindings, &member).await;
        let _: Result<i64, _> = conn.del(&keys).await;
        Ok(replies)
    }
}

/// Decodes a reply message: its ticket and each worker's answer (`{"<host>": <result>}`).
pub fn decode_reply(message: &str) -> Option<(String, Vec<(String, Value)>)> {
    let reply: Value = serde_json::from_str(message).ok()?;
    let ticket = reply["headers"]["ticket"].as_str()?.to_owned();
    let body = reply["body"].as_str()?;
    let raw = if reply["properties"]["body_encoding"] == "base64" {
        STANDARD.decode(body).ok()?
    } else {
        body.as_bytes().to_vec()
    };
    match serde_json::from_slice::<Value>(&raw).ok()? {
        Value::Object(map) => Some((ticket, map.into_iter().collect())),
        _ => None,
    }
}

/// Turns one worker's reply into the command's outcome: `{"ok": text}` or `{"error": text}`.
pub fn outcome(worker: &str, reply: &Value) -> Result<String, String> {
    if let Some(ok) = reply.get("ok").and_then(Value::as_str) {
        Ok(format!("{worker}: {ok}"))
    } else if let Some(error) = reply.get("error").and_then(Value::as_str) {
        Err(format!("{worker}: {error}"))
    } else {
        Ok(format!("{worker}: {reply}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every captured pidbox reply decodes to the body the capture recorded, and control
    /// replies map to the right outcome.
    #[test]
    fn every_reply_fixture_decodes() {
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/fixtures/celery/redis"
        );
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap().to_owned();
            if !name.starts_with("pidbox-reply-") {
                continue;
            }
            let fixture: Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let (ticket, answers) = decode_reply(fixture["wire"].as_str().unwrap())
                .unwrap_or_else(|| panic!("{name} does not decode"));
            assert!(!ticket.is_empty(), "{name}");
            let expected: Vec<(String, Value)> = fixture["body"]
                .as_object()
                .unwrap()
                .clone()
                .into_iter()
                .collect();
            assert_eq!(answers, expected, "{name}");
            for (worker, reply) in &answers {
                let result = outcome(worker, reply);
                if reply.get("error").is_some() {
                    assert!(result.is_err(), "{name}: {result:?}");
                } else if reply.get("ok").is_some() {
                    assert!(result.is_ok(), "{name}: {result:?}");
                }
            }
            seen += 1;
        }
        assert!(seen >= 15, "only {seen} reply fixtures");
        let solo = outcome(
            "w",
            &serde_json::json!({"error": "AttributeError(\"'TaskPool' object has no attribute 'grow'\")"}),
        );
        assert!(solo.unwrap_err().contains("no attribute 'grow'"));
    }
}
