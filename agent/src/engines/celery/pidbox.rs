//! Celery remote control ("pidbox"): a request broadcast to the `celery.pidbox` fanout, the
//! replies the workers send to our own reply inbox, matched by ticket
//! (`../shared/docs/celery-wire.md`, section 5). The broker's part (binding the inbox,
//! publishing, popping) is the transport's; the request, the tickets, when to stop waiting and
//! what a reply means are here, once for every broker.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};

use super::super::EngineError;
use super::transport::{Delivery, Outgoing, Properties, Transport, TransportError};
use super::uuid_like;

/// How long replies are awaited (Celery's CLI waits 1 s; restarts and slow hosts need more).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// The exchange control requests are broadcast on.
const PIDBOX_EXCHANGE: &str = "celery.pidbox";
/// The exchange workers send replies to, routed by our reply key.
const REPLY_EXCHANGE: &str = "reply.celery.pidbox";

fn epoch_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A pidbox client over one broker.
#[derive(Clone)]
pub struct Pidbox {
    transport: Arc<dyn Transport>,
}

impl Pidbox {
    /// A client sending through `transport`.
    pub fn new(transport: Arc<dyn Transport>) -> Pidbox {
        Pidbox { transport }
    }

    /// Sends `method(arguments)` to `destination` (every worker when `None`) and returns the
    /// replies as `(worker, result)`, waiting until each destination answered or the timeout.
    pub async fn call(
        &self,
        method: &str,
        arguments: Value,
        destination: Option<Vec<String>>,
    ) -> Result<Vec<(String, Value)>, TransportError> {
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
    ) -> Result<Vec<(String, Value)>, TransportError> {
        let (reply_key, ticket) = (uuid_like(), uuid_like());
        // No end-of-replies marker exists: wait for one answer per destination named.
        let expected = destination.as_ref().map_or(usize::MAX, Vec::len);
        let message = request(method, arguments, destination, &ticket, &reply_key, timeout);
        let mut replies = Vec::new();
        let mut collect = |delivery: Delivery| {
            match decode_reply(&delivery) {
                Some((t, answers)) if t == ticket => replies.extend(answers),
                _ => {}
            }
            if replies.len() >= expected {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        };
        self.transport
            .control(&message, &reply_key, timeout, &mut collect)
            .await?;
        Ok(replies)
    }
}

/// A control request (`celery-wire.md` 5.1) whose replies go to `reply_key`, tagged `ticket`.
pub fn request(
    method: &str,
    arguments: Value,
    destination: Option<Vec<String>>,
    ticket: &str,
    reply_key: &str,
    timeout: Duration,
) -> Outgoing {
    let body = json!({
        "method": method,
        "arguments": arguments,
        "destination": destination,
        "pattern": null,
        "matcher": null,
        "ticket": ticket,
        "reply_to": {"exchange": REPLY_EXCHANGE, "routing_key": reply_key},
    });
    let mut headers = Map::new();
    headers.insert("clock".into(), json!(1));
    // Workers ignore it; Celery's own collectors use it to drop stale requests.
    headers.insert(
        "expires".into(),
        json!(epoch_secs() + timeout.as_secs_f64()),
    );
    Outgoing {
        exchange: PIDBOX_EXCHANGE.into(),
        routing_key: String::new(),
        headers,
        properties: Properties {
            delivery_mode: 2,
            ..Properties::default()
        },
        body: body.to_string().into_bytes(),
    }
}

/// Reads a reply: its ticket and each worker's answer (`{"<host>": <result>}`). `None` for
/// anything else, which the caller skips.
pub fn decode_reply(reply: &Delivery) -> Option<(String, Vec<(String, Value)>)> {
    let ticket = reply.headers.get("ticket")?.as_str()?.to_owned();
    match serde_json::from_slice::<Value>(&reply.body).ok()? {
        Value::Object(map) => Some((ticket, map.into_iter().collect())),
        _ => None,
    }
}

/// Turns one worker's reply into the command's outcome: `{"ok": text}` or `{"error": text}`.
pub fn outcome(worker: &str, reply: &Value) -> Result<String, EngineError> {
    if let Some(ok) = reply.get("ok").and_then(Value::as_str) {
        Ok(format!("{worker}: {ok}"))
    } else if let Some(error) = reply.get("error").and_then(Value::as_str) {
        Err(EngineError::Rejected(format!("{worker}: {error}")))
    } else {
        Ok(format!("{worker}: {reply}"))
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures;
    use super::super::transport::envelope;
    use super::*;

    fn check_reply(name: &str, delivery: &Delivery, body: &Value) {
        let (ticket, answers) =
            decode_reply(delivery).unwrap_or_else(|| panic!("{name} does not decode"));
        assert!(!ticket.is_empty(), "{name}");
        let expected: Vec<(String, Value)> =
            body.as_object().unwrap().clone().into_iter().collect();
        assert_eq!(answers, expected, "{name}");
        for (worker, reply) in &answers {
            let result = outcome(worker, reply);
            if reply.get("error").is_some() {
                assert!(
                    matches!(result, Err(EngineError::Rejected(_))),
                    "{name}: {result:?}"
                );
            } else if reply.get("ok").is_some() {
                assert!(result.is_ok(), "{name}: {result:?}");
            }
        }
    }

    /// Every captured Redis reply, unwrapped by the envelope decoder the Redis transport uses
    /// and read by the decoder the call path uses, gives the body the capture recorded.
    #[test]
    fn every_redis_reply_fixture_decodes() {
        let all = fixtures::read("redis", "pidbox-reply-");
        assert!(all.len() >= 15, "only {} reply fixtures", all.len());
        for (name, fixture) in &all {
            let delivery = envelope::decode(fixture["wire"].as_str().unwrap().as_bytes())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            check_reply(name, &delivery, &fixture["body"]);
        }
        let solo = outcome(
            "w",
            &json!({"error": "AttributeError(\"'TaskPool' object has no attribute 'grow'\")"}),
        );
        assert!(
            solo.unwrap_err()
                .to_string()
                .contains("no attribute 'grow'")
        );
    }

    /// AMQP replies carry the same body with no envelope: the same decoder reads them.
    #[test]
    fn every_amqp_reply_fixture_decodes() {
        let all = fixtures::read("amqp", "pidbox-reply-");
        assert!(all.len() >= 3, "only {} AMQP reply fixtures", all.len());
        for (name, fixture) in &all {
            let delivery = Delivery {
                headers: fixture["amqp"]["properties"]["headers"]
                    .as_object()
                    .unwrap()
                    .clone(),
                body: fixture["body_utf8"].as_str().unwrap().as_bytes().to_vec(),
            };
            check_reply(name, &delivery, &fixture["body"]);
        }
    }

    /// Our requests read like the captured ones: the same body fields, and a body and header
    /// set a worker accepts.
    #[test]
    fn requests_have_the_shape_of_celerys() {
        let (name, captured) = fixtures::read("redis", "pidbox-request-pool-grow")
            .into_iter()
            .next()
            .unwrap();
        let captured = envelope::decode(captured["wire"].as_str().unwrap().as_bytes()).unwrap();
        let message = request(
            "pool_grow",
            json!({"n": 2}),
            None,
            "t-1",
            "r-1",
            REPLY_TIMEOUT,
        );
        let ours = envelope::decode(envelope::encode(&message, "d-1").as_bytes()).unwrap();
        let keys = |d: &Delivery| {
            let body: Value = serde_json::from_slice(&d.body).unwrap();
            let mut keys: Vec<String> = body.as_object().unwrap().keys().cloned().collect();
            keys.sort();
            keys
        };
        assert_eq!(keys(&ours), keys(&captured), "{name}");
        let headers = |d: &Delivery| d.headers.keys().cloned().collect::<Vec<_>>();
        assert_eq!(headers(&ours), headers(&captured), "{name}");
        let body: Value = serde_json::from_slice(&ours.body).unwrap();
        assert_eq!(body["reply_to"]["routing_key"], "r-1");
        assert_eq!(body["ticket"], "t-1");
    }
}
