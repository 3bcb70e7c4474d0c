//! kombu's message envelope, the framing of every message on kombu's "virtual" transports
//! (Redis): one JSON object with the body base64-encoded, the headers, and the properties an
//! AMQP broker would carry itself (`celery-wire.md` 2.2). AMQP has no envelope, so this is the
//! Redis transport's half of decoding; what is inside the body is Celery's (`events`,
//! `pidbox`).

use std::borrow::Cow;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{Delivery, Outgoing};

/// Why an envelope could not be unwrapped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// Not a kombu envelope.
    #[error("not a kombu envelope: {0}")]
    NotAnEnvelope(String),
    /// The body is not valid base64.
    #[error("undecodable body: {0}")]
    Base64(String),
}

/// The envelope as read. Only what decoding needs is kept; the body is borrowed from the
/// message when it has no escapes (base64 never does), so an event costs one allocation, for
/// its decoded body.
#[derive(Deserialize)]
struct Incoming<'a> {
    #[serde(borrow)]
    body: Cow<'a, str>,
    #[serde(default)]
    headers: Option<Map<String, Value>>,
    #[serde(default, borrow)]
    properties: IncomingProperties<'a>,
}

/// Events skip the headers unread: nothing in them is needed (the hostname is in the body too),
/// and building a map per event would cost more than the rest of the envelope.
#[derive(Deserialize)]
struct IncomingBodyOnly<'a> {
    #[serde(borrow)]
    body: Cow<'a, str>,
    #[serde(default, borrow)]
    properties: IncomingProperties<'a>,
}

#[derive(Default, Deserialize)]
struct IncomingProperties<'a> {
    /// A string when present; any other type reads as "not base64", as a missing one does.
    #[serde(default, borrow, deserialize_with = "string_or_none")]
    body_encoding: Option<Cow<'a, str>>,
}

fn string_or_none<'de, D>(deserializer: D) -> Result<Option<Cow<'de, str>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Field<'a> {
        Text(#[serde(borrow)] Cow<'a, str>),
        Other(serde::de::IgnoredAny),
    }
    Ok(match Option::<Field>::deserialize(deserializer)? {
        Some(Field::Text(text)) => Some(text),
        _ => None,
    })
}

/// The body as Celery wrote it: base64-decoded when the envelope says so.
fn body(body: Cow<'_, str>, encoding: Option<&str>) -> Result<Vec<u8>, EnvelopeError> {
    if encoding == Some("base64") {
        STANDARD
            .decode(body.as_bytes())
            .map_err(|e| EnvelopeError::Base64(e.to_string()))
    } else {
        Ok(body.into_owned().into_bytes())
    }
}

/// An event message's body (one event or a `task.multi` array, JSON bytes): what the Redis
/// event stream yields for every `pmessage`.
pub fn event_body(message: &[u8]) -> Result<Vec<u8>, EnvelopeError> {
    let envelope: IncomingBodyOnly =
        serde_json::from_slice(message).map_err(|e| EnvelopeError::NotAnEnvelope(e.to_string()))?;
    body(envelope.body, envelope.properties.body_encoding.as_deref())
}

/// A whole message, headers and body: what a control reply popped from its list becomes.
pub fn decode(message: &[u8]) -> Result<Delivery, EnvelopeError> {
    let envelope: Incoming =
        serde_json::from_slice(message).map_err(|e| EnvelopeError::NotAnEnvelope(e.to_string()))?;
    Ok(Delivery {
        headers: envelope.headers.unwrap_or_default(),
        body: body(envelope.body, envelope.properties.body_encoding.as_deref())?,
    })
}

/// The envelope as written, in kombu's key order (not significant, but diffs read easier).
#[derive(Serialize)]
struct Envelope<'a> {
    body: String,
    #[serde(rename = "content-encoding")]
    content_encoding: &'static str,
    #[serde(rename = "content-type")]
    content_type: &'static str,
    headers: &'a Map<String, Value>,
    properties: EnvelopeProperties<'a>,
}

#[derive(Serialize)]
struct EnvelopeProperties<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    correlation_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reply_to: Option<&'a str>,
    delivery_mode: u8,
    delivery_info: DeliveryInfo<'a>,
    priority: u8,
    body_encoding: &'static str,
    delivery_tag: &'a str,
}

/// Where the message was sent; workers store it beside an unacked message to requeue it.
#[derive(Serialize)]
struct DeliveryInfo<'a> {
    exchange: &'a str,
    routing_key: &'a str,
}

/// Wraps a message in kombu's envelope. `delivery_tag` must be fresh for every message: it is
/// the message's key in the workers' `unacked` hash.
pub fn encode(message: &Outgoing, delivery_tag: &str) -> String {
    let envelope = Envelope {
        body: STANDARD.encode(&message.body),
        content_encoding: "utf-8",
        content_type: "application/json",
        headers: &message.headers,
        properties: EnvelopeProperties {
            correlation_id: message.properties.correlation_id.as_deref(),
            reply_to: message.properties.reply_to.as_deref(),
            delivery_mode: message.properties.delivery_mode,
            delivery_info: DeliveryInfo {
                exchange: &message.exchange,
                routing_key: &message.routing_key,
            },
            priority: message.properties.priority,
            body_encoding: "base64",
            delivery_tag,
        },
    };
    serde_json::to_string(&envelope).expect("an envelope serializes")
}

#[cfg(test)]
mod tests {
    use super::super::Properties;
    use super::*;

    #[test]
    fn what_is_encoded_decodes_to_the_same_message() {
        let mut headers = Map::new();
        headers.insert("ticket".into(), Value::from("t-1"));
        let message = Outgoing {
            exchange: "celery.pidbox".into(),
            routing_key: String::new(),
            headers: headers.clone(),
            properties: Properties {
                delivery_mode: 2,
                ..Properties::default()
            },
            body: br#"{"method": "ping"}"#.to_vec(),
        };
        let wire = encode(&message, "tag-1");
        let envelope: Value = serde_json::from_str(&wire).unwrap();
        assert_eq!(
            envelope["properties"],
            serde_json::json!({"delivery_mode": 2, "priority": 0, "body_encoding": "base64",
                "delivery_info": {"exchange": "celery.pidbox", "routing_key": ""},
                "delivery_tag": "tag-1"})
        );
        let delivery = decode(wire.as_bytes()).unwrap();
        assert_eq!((delivery.headers, delivery.body), (headers, message.body));
        assert_eq!(
            event_body(wire.as_bytes()).unwrap(),
            br#"{"method": "ping"}"#
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(matches!(
            event_body(b"not json"),
            Err(EnvelopeError::NotAnEnvelope(_))
        ));
        assert!(matches!(
            decode(br#"{"headers": {}}"#),
            Err(EnvelopeError::NotAnEnvelope(_))
        ));
        assert!(matches!(
            event_body(br#"{"body": "!!!", "properties": {"body_encoding": "base64"}}"#),
            Err(EnvelopeError::Base64(_))
        ));
        // No encoding (or an odd one) means the body is the text itself.
        assert_eq!(
            event_body(br#"{"body": "[]", "properties": {"body_encoding": 7}}"#).unwrap(),
            b"[]"
        );
    }
}
