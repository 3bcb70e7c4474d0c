//! The broker seam of the Celery adapter: what Celery needs from a broker, with Celery's meaning
//! left out. Everything above this module (events into updates, remote-control verbs and their
//! replies, protocol-v2 task messages, redaction, the vault, liveness, lookups) is written once
//! against [`Transport`]; each broker is one file beside this one: Redis ([`redis`]) and AMQP
//! 0-9-1, i.e. RabbitMQ ([`amqp`]). Every operation maps onto both
//! (`../shared/docs/celery-wire.md`, sections 2 and 6):
//!
//! | operation | Redis (kombu's virtual transport) | AMQP 0-9-1 |
//! |---|---|---|
//! | [`Transport::events`] | `PSUBSCRIBE /<db>.celeryev/*`, kombu envelope, base64 body | exclusive `celeryev.<uuid>` queue bound `#` to the `celeryev` topic exchange, raw body |
//! | [`Transport::control`] | reply binding + deadline, `PUBLISH /<db>.celery.pidbox`, `BRPOP` the reply lists | reply queue bound to `reply.celery.pidbox`, `basic.publish` to the `celery.pidbox` fanout, consume |
//! | [`Transport::publish_task`] | `LPUSH` to the priority bucket list | `basic.publish` to the default exchange (priority needs `x-max-priority`) |
//! | [`Transport::queue_depth`] | `LLEN` of the four bucket lists | passive `queue.declare` → `message_count` |
//! | [`Transport::purge`] | `LLEN` + `DEL` of the four lists in one `MULTI` | `queue.purge` |
//!
//! Bodies cross the seam as the JSON bytes Celery reads and writes; a broker's own framing (the
//! kombu envelope on Redis, AMQP properties) stays in its file. Switching events on for workers
//! started without `-E` is a remote-control call like any other (`enable_events`).

pub mod amqp;
pub mod envelope;
pub mod redis;

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::BoxStream;
use serde_json::{Map, Value};

use super::super::{BoxFuture, EngineError};
use crate::config::BrokerTls;

/// Why a broker operation failed. Its text is part of command details, hence the `broker:`
/// prefix operators already know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// No connection could be made.
    #[error("broker: {0}")]
    Unreachable(String),
    /// Connected, but the operation failed (or the connection dropped during it).
    #[error("broker: {0}")]
    Failed(String),
    /// The broker cannot do this at all (a routing this transport does not implement).
    #[error("broker: {0}")]
    Unsupported(String),
}

impl From<TransportError> for EngineError {
    fn from(error: TransportError) -> EngineError {
        match error {
            TransportError::Unsupported(_) => EngineError::Refused(error.to_string()),
            TransportError::Unreachable(_) | TransportError::Failed(_) => {
                EngineError::Unavailable(error.to_string())
            }
        }
    }
}

/// A message to publish, as every broker carries it: Celery fills in the meaning, the transport
/// the framing (a kombu envelope with a delivery tag on Redis, basic properties on AMQP).
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    /// The exchange: `""` (the default exchange, i.e. straight to the queue named by the routing
    /// key) for tasks, `celery.pidbox` for control requests.
    pub exchange: String,
    /// The routing key: the queue for tasks, `""` for the pidbox fanout.
    pub routing_key: String,
    /// Message headers (a JSON object): protocol-v2 task headers, or a control request's
    /// `clock`/`expires`.
    pub headers: Map<String, Value>,
    /// Message properties.
    pub properties: Properties,
    /// The body: JSON bytes (`content-type: application/json`, utf-8).
    pub body: Vec<u8>,
}

/// The message properties Celery sets (`celery-wire.md` 2.2 and 6.3).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Properties {
    /// Task messages: the task id.
    pub correlation_id: Option<String>,
    /// Task messages: the producer's id (a uuid); workers do not need it.
    pub reply_to: Option<String>,
    /// 2 (persistent) for tasks and control requests.
    pub delivery_mode: u8,
    /// The message priority. Its meaning is the broker's: on Redis lower is served first
    /// (buckets 0/3/6/9), on RabbitMQ higher, and only on a queue with `x-max-priority`.
    pub priority: u8,
}

/// A message received (a control reply), with the broker's framing removed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Delivery {
    /// Message headers (a control reply's `ticket` and `clock`).
    pub headers: Map<String, Value>,
    /// The body: JSON bytes.
    pub body: Vec<u8>,
}

/// An event message that could not be unwrapped; logged and skipped, never fatal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error} (on {source_name})")]
pub struct UnreadableEvent {
    /// Where it came from (the channel or routing key), for the log.
    pub source_name: String,
    /// What was wrong with it.
    pub error: envelope::EnvelopeError,
}

/// Event bodies as they arrive (each one event or a `task.multi` array, as JSON bytes). The
/// stream ends when the broker drops the subscription; events published until the next
/// subscription are lost.
pub type EventStream = BoxStream<'static, Result<Vec<u8>, UnreadableEvent>>;

/// What a control call does with each reply: `Break` once it has all it waits for.
pub type Collect<'a> = dyn FnMut(Delivery) -> ControlFlow<()> + Send + 'a;

/// A broker, as the Celery adapter uses it. One value per adapter, shared by every task of it;
/// implementations keep their connections open between calls.
pub trait Transport: Send + Sync {
    /// Subscribes to every event on the broker (`celeryev`, all routing keys).
    fn events(&self) -> BoxFuture<'_, Result<EventStream, TransportError>>;

    /// Broadcasts a remote-control request (to `request.exchange`, the `celery.pidbox` fanout)
    /// after making a reply inbox for `reply_key` (the routing key the request's `reply_to`
    /// names), then hands each reply to `collect` until it breaks or `timeout` passes; removes
    /// the inbox before returning. Replies are not filtered: tickets are Celery's business.
    fn control<'a>(
        &'a self,
        request: &'a Outgoing,
        reply_key: &'a str,
        timeout: Duration,
        collect: &'a mut Collect<'a>,
    ) -> BoxFuture<'a, Result<(), TransportError>>;

    /// Publishes a task message to `message.exchange` with its routing key, in the broker's
    /// place for its priority.
    fn publish_task<'a>(
        &'a self,
        message: &'a Outgoing,
    ) -> BoxFuture<'a, Result<(), TransportError>>;

    /// The ready messages of a queue (every priority; not those workers have reserved).
    fn queue_depth<'a>(&'a self, queue: &'a str) -> BoxFuture<'a, Result<u64, TransportError>>;

    /// Deletes a queue's ready messages (every priority) in one step; returns how many.
    fn purge<'a>(&'a self, queue: &'a str) -> BoxFuture<'a, Result<u64, TransportError>>;

    /// Connects (or checks the kept connection): what `enroll` asks before it spends the
    /// token, so a wrong host, password or vhost fails there and not in `run`.
    fn reach(&self) -> BoxFuture<'_, Result<(), TransportError>>;

    /// Event messages the broker dropped because this agent fell behind, cumulative: counted
    /// where the broker bounds the agent's backlog (AMQP's bounded event queue); Redis pub/sub
    /// keeps no backlog for it to count.
    fn overflowed(&self) -> u64 {
        0
    }
}

/// The transport for a broker URL, with kombu's `global_keyprefix` (Redis only; kombu ignores
/// it on AMQP too). Checks the URL without connecting, so a typo fails `enroll` and
/// `taskward-agent run` at once. `pyamqp://` (kombu's name for the same transport) is
/// `amqp://`.
pub fn open(broker: &str, keyprefix: &str, tls: &BrokerTls) -> Result<Arc<dyn Transport>, String> {
    // TLS files on a connection without TLS would be silently ignored: a broker the operator
    // believes verified would not be.
    if tls.is_set() && !broker.starts_with("rediss://") {
        return Err(format!(
            "broker URL {:?}: the broker TLS files (--broker-ca-file, --broker-client-cert, \
             --broker-client-key) are for a rediss:// broker",
            without_password(broker)
        ));
    }
    if broker.starts_with("amqps://") {
        return Err(format!(
            "broker URL {:?}: amqps:// (AMQP over TLS) is not supported yet; use amqp:// \
             on a trusted network, or Redis with rediss://",
            without_password(broker)
        ));
    }
    if let Some(rest) = broker.strip_prefix("pyamqp://") {
        return Ok(Arc::new(amqp::AmqpTransport::open(&format!(
            "amqp://{rest}"
        ))?));
    }
    if broker.starts_with("amqp://") {
        return Ok(Arc::new(amqp::AmqpTransport::open(broker)?));
    }
    let redis_schemes = ["redis://", "rediss://", "redis+unix://", "unix://"];
    if !redis_schemes
        .iter()
        .any(|scheme| broker.starts_with(scheme))
    {
        return Err(format!(
            "broker URL {:?}: not a Celery broker this agent reads (redis://, rediss:// \
             or amqp://)",
            without_password(broker)
        ));
    }
    Ok(Arc::new(redis::RedisTransport::open(
        broker, keyprefix, tls,
    )?))
}

/// A broker URL fit for an error message or a log: the password, if any, replaced by `***`.
pub fn without_password(broker: &str) -> String {
    let Some((scheme, rest)) = broker.split_once("://") else {
        return broker.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => match rest[..at].find(':') {
            Some(colon) => format!("{scheme}://{}:***{}", &rest[..colon], &rest[at..]),
            None => broker.to_owned(),
        },
        None => broker.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::{open, without_password};
    use crate::config::BrokerTls;

    fn plain(url: &str) -> Result<std::sync::Arc<dyn super::Transport>, String> {
        open(url, "", &BrokerTls::default())
    }

    #[test]
    fn passwords_stay_out_of_messages() {
        assert_eq!(
            without_password("amqp://guest:s3cret@rabbit:5672//"),
            "amqp://guest:***@rabbit:5672//"
        );
        assert_eq!(
            without_password("redis://:pw@127.0.0.1:6379/0"),
            "redis://:***@127.0.0.1:6379/0"
        );
        assert_eq!(
            without_password("redis://127.0.0.1/0"),
            "redis://127.0.0.1/0"
        );
        let error = plain("amqps://u:s3cret@rabbit//").err().unwrap();
        assert!(!error.contains("s3cret"), "{error}");
    }

    #[test]
    fn broker_urls_pick_their_transport_or_say_what_is_wrong() {
        assert!(plain("redis://127.0.0.1:6379/0").is_ok());
        assert!(plain("amqp://guest:guest@127.0.0.1:5672//").is_ok());
        assert!(plain("pyamqp://guest@127.0.0.1//").is_ok());
        let tls = plain("amqps://rabbit:5671//").err().unwrap();
        assert!(tls.contains("not supported yet"), "{tls}");
        let other = plain("sqs://queue").err().unwrap();
        assert!(other.contains("redis://, rediss:// or amqp://"), "{other}");
        let port = plain("amqp://rabbit:port/").err().unwrap();
        assert!(port.contains("broker URL"), "{port}");
        let ca = BrokerTls {
            ca_file: Some("/ca.pem".into()),
            ..BrokerTls::default()
        };
        let plain_with_ca = open("redis://127.0.0.1:6379/0", "", &ca).err().unwrap();
        assert!(plain_with_ca.contains("rediss://"), "{plain_with_ca}");
        let missing = open("rediss://127.0.0.1:6380/0", "", &ca).err().unwrap();
        assert!(missing.contains("/ca.pem"), "{missing}");
    }
}
