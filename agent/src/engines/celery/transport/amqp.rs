//! Celery's broker on RabbitMQ (AMQP 0-9-1), as kombu's `amqp` transport lays it out
//! (`celery-wire.md` 6): the only file of the agent that speaks AMQP. No envelope and no
//! base64: bodies are the JSON bytes, kombu's headers are the AMQP headers table.
//!
//! Client: `lapin` 4, which runs on tokio by itself (its `tokio` feature; no executor/reactor
//! trait crates), built without TLS, so `amqps://` is refused by [`super::open`] for now.
//!
//! Connections: one connection, opened on first use and reopened once the broker dropped it
//! (a RabbitMQ restart costs a reconnect, not a dead agent), carries control calls, publishes,
//! depths and purges, each on a channel of its own: a channel error (a passive declare of a
//! queue that does not exist is one) closes only that channel. An event subscription has a
//! connection of its own, so a flood of events never delays a control reply.
//!
//! Events and a stalled agent: the subscription's queue is bounded (`x-max-length`); when the
//! agent falls behind, RabbitMQ drops the oldest messages and dead-letters them to a second
//! queue of the subscription that the agent only counts. The count is
//! [`Transport::overflowed`], reported as dropped events and logged, never silent. Prefetch is
//! bounded and acks are batched, so the client never buffers more than the prefetch.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use lapin::uri::AMQPUri;
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ErrorKind,
    ExchangeKind,
};
use serde_json::{Map, Number, Value};

use super::super::uuid_like;
use super::{BoxFuture, Collect, Delivery, EventStream, Outgoing, Transport, TransportError};

/// Celery's event exchange (topic, durable).
const EVENT_EXCHANGE: &str = "celeryev";
/// The exchange workers send control replies to (direct, not durable).
const REPLY_EXCHANGE: &str = "reply.celery.pidbox";

/// Unacked events the broker may have in flight to the agent: enough to keep the pipe full,
/// small enough that the client's buffer stays bounded.
const EVENT_PREFETCH: u16 = 2000;
/// One `basic.ack` (multiple) per this many events (at most half the prefetch, or the broker
/// would stop sending before the ack is due).
const ACK_EVERY: u64 = 250;
/// Ready event messages kept for a stalled agent before the oldest are dropped (and counted).
/// An event message is 0.5–2 kB, so this bounds the broker's memory to some 200 MB per agent.
pub const EVENT_QUEUE_MAX: i64 = 100_000;
/// Dropped messages kept for counting. The counter consumes without acks, so this fills only
/// if the agent's process is frozen; messages beyond it are lost uncounted.
const OVERFLOW_QUEUE_MAX: i64 = 1_000_000;
/// The subscription's queues outlive a dropped connection this long (then the broker deletes
/// them), like Celery's own `event_queue_expires`.
const EVENT_QUEUE_EXPIRES_MS: i64 = 60_000;
/// Celery's `control_queue_expires` and `control_queue_ttl` for reply queues.
const REPLY_QUEUE_EXPIRES_MS: i64 = 10_000;
const REPLY_QUEUE_TTL_MS: i64 = 300_000;

fn failed(error: lapin::Error) -> TransportError {
    TransportError::Failed(error.to_string())
}

fn unreachable(error: lapin::Error) -> TransportError {
    TransportError::Unreachable(error.to_string())
}

/// Whether the broker said the queue or exchange does not exist (404 NOT_FOUND).
fn not_found(error: &lapin::Error) -> bool {
    matches!(error.kind(), ErrorKind::ProtocolError(e)
        if *e.kind() == AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND))
}

/// A name or routing key: AMQP short strings hold at most 255 bytes.
/// Declares the reply queue of a control call as Celery does (exclusive, auto-delete, expiring,
/// on the direct `reply.celery.pidbox` exchange), binds it to `reply_key` and consumes it
/// without acks; returns the queue (to delete after) and its consumer.
async fn consume_replies(
    channel: &Channel,
    reply_key: &str,
) -> Result<(ShortString, lapin::Consumer), TransportError> {
    let reply_queue = short("reply queue", &format!("{reply_key}.reply.celery.pidbox"))?;
    channel
        .exchange_declare(
            REPLY_EXCHANGE.into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions::default(), // not durable, not auto-delete
            FieldTable::default(),
        )
        .await
        .map_err(failed)?;
    let queue_args = arguments(&[
        (
            "x-expires",
            AMQPValue::LongInt(REPLY_QUEUE_EXPIRES_MS as i32),
        ),
        (
            "x-message-ttl",
            AMQPValue::LongInt(REPLY_QUEUE_TTL_MS as i32),
        ),
    ]);
    channel
        .queue_declare(
            reply_queue.clone(),
            QueueDeclareOptions::exclusive().auto_delete(),
            queue_args,
        )
        .await
        .map_err(failed)?;
    channel
        .queue_bind(
            reply_queue.clone(),
            REPLY_EXCHANGE.into(),
            short("reply key", reply_key)?,
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(failed)?;
    let replies = channel
        .basic_consume(
            reply_queue.clone(),
            short("consumer tag", &format!("taskward.{reply_key}"))?,
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(failed)?;
    Ok((reply_queue, replies))
}

/// Publishes a control request to its pidbox exchange, declaring it first: publishing to an
/// exchange no worker declared yet would close the channel.
async fn publish_control(channel: &Channel, request: &Outgoing) -> Result<(), TransportError> {
    let exchange = short("exchange", &request.exchange)?;
    channel
        .exchange_declare(
            exchange.clone(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions::default(), // not durable, not auto-delete
            FieldTable::default(),
        )
        .await
        .map_err(failed)?;
    channel
        .basic_publish(
            exchange,
            short("routing key", &request.routing_key)?,
            BasicPublishOptions::default(),
            &request.body,
            properties(request)?,
        )
        .await
        .map_err(failed)?;
    Ok(())
}

/// Hands each reply to `collect` until it breaks, the consumer ends, or `timeout` passes.
async fn collect_replies(
    mut replies: lapin::Consumer,
    timeout: Duration,
    collect: &mut Collect<'_>,
) -> Result<(), TransportError> {
    let until = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(until, replies.next()).await {
            Err(_) | Ok(None) => return Ok(()),
            Ok(Some(Err(e))) => return Err(failed(e)),
            Ok(Some(Ok(message))) => {
                let delivery = Delivery {
                    headers: message
                        .properties
                        .headers()
                        .as_ref()
                        .map(from_table)
                        .unwrap_or_default(),
                    body: message.data,
                };
                if collect(delivery).is_break() {
                    return Ok(());
                }
            }
        }
    }
}

fn short(what: &str, text: &str) -> Result<ShortString, TransportError> {
    ShortString::try_new(text).map_err(|_| {
        TransportError::Unsupported(format!("{what} {text:?} is longer than AMQP's 255 bytes"))
    })
}

/// A JSON value in an AMQP table, typed as py-amqp writes it (6.3): integers as 32-bit `I`
/// when they fit, else 64-bit `l`; floats as `d`; null as `V`.
fn to_amqp(value: &Value) -> AMQPValue {
    match value {
        Value::Null => AMQPValue::Void,
        Value::Bool(b) => AMQPValue::Boolean(*b),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => match i32::try_from(i) {
                Ok(small) => AMQPValue::LongInt(small),
                Err(_) => AMQPValue::LongLongInt(i),
            },
            (None, Some(f)) => AMQPValue::Double(f),
            (None, None) => AMQPValue::Void,
        },
        Value::String(s) => AMQPValue::LongString(LongString::from(s.as_bytes())),
        Value::Array(items) => {
            let mut array = FieldArray::default();
            for item in items {
                array.push(to_amqp(item));
            }
            AMQPValue::FieldArray(array)
        }
        Value::Object(map) => AMQPValue::FieldTable(to_table(map)),
    }
}

/// Message headers as an AMQP table. A key longer than a short string is skipped (Celery's
/// headers have short names).
fn to_table(map: &Map<String, Value>) -> FieldTable {
    let mut table = FieldTable::default();
    for (key, value) in map {
        if let Ok(key) = ShortString::try_new(key.as_str()) {
            table.insert(key, to_amqp(value));
        }
    }
    table
}

/// An AMQP field as JSON; every type py-amqp writes is read (6.3).
fn to_json(value: &AMQPValue) -> Value {
    let text = |bytes: &[u8]| Value::String(String::from_utf8_lossy(bytes).into_owned());
    let float = |f: f64| Number::from_f64(f).map_or(Value::Null, Value::Number);
    match value {
        AMQPValue::Boolean(b) => Value::Bool(*b),
        AMQPValue::ShortShortInt(i) => Value::from(*i),
        AMQPValue::ShortShortUInt(i) => Value::from(*i),
        AMQPValue::ShortInt(i) => Value::from(*i),
        AMQPValue::ShortUInt(i) => Value::from(*i),
        AMQPValue::LongInt(i) => Value::from(*i),
        AMQPValue::LongUInt(i) => Value::from(*i),
        AMQPValue::LongLongInt(i) => Value::from(*i),
        AMQPValue::Timestamp(t) => Value::from(*t),
        AMQPValue::Float(f) => float(f64::from(*f)),
        AMQPValue::Double(f) => float(*f),
        AMQPValue::DecimalValue(d) => float(f64::from(d.value) / 10f64.powi(i32::from(d.scale))),
        AMQPValue::ShortString(s) => Value::String(s.as_str().to_owned()),
        AMQPValue::LongString(s) => text(s.as_bytes()),
        AMQPValue::ByteArray(b) => text(b.as_slice()),
        AMQPValue::FieldArray(items) => {
            Value::Array(items.as_slice().iter().map(to_json).collect())
        }
        AMQPValue::FieldTable(table) => Value::Object(from_table(table)),
        AMQPValue::Void => Value::Null,
    }
}

fn from_table(table: &FieldTable) -> Map<String, Value> {
    table
        .inner()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), to_json(v)))
        .collect()
}

/// Queue arguments.
fn arguments(pairs: &[(&str, AMQPValue)]) -> FieldTable {
    let mut table = FieldTable::default();
    for (key, value) in pairs {
        table.insert((*key).into(), value.clone());
    }
    table
}

/// The properties Celery sets on a message (6.3).
fn properties(message: &Outgoing) -> Result<BasicProperties, TransportError> {
    let p = &message.properties;
    let mut props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_content_encoding("utf-8".into())
        .with_headers(to_table(&message.headers))
        .with_delivery_mode(p.delivery_mode)
        .with_priority(p.priority);
    if let Some(id) = &p.correlation_id {
        props = props.with_correlation_id(short("correlation id", id)?);
    }
    if let Some(reply_to) = &p.reply_to {
        props = props.with_reply_to(short("reply-to", reply_to)?);
    }
    Ok(props)
}

/// The broker URL checked: `amqp://user:pass@host:port/vhost`, the vhost percent-encoded
/// (`%2f` or an empty path segment `//` for `/`). An empty vhost is `/`, as kombu reads it.
pub fn parse_url(broker: &str) -> Result<AMQPUri, String> {
    let mut uri: AMQPUri = broker
        .parse()
        .map_err(|e| format!("broker URL {:?}: {e}", super::without_password(broker)))?;
    if uri.authority.host.is_empty() {
        return Err(format!(
            "broker URL {:?}: no host",
            super::without_password(broker)
        ));
    }
    if uri.vhost.is_empty() {
        uri.vhost = "/".into();
    }
    Ok(uri)
}

/// A Celery broker on RabbitMQ.
pub struct AmqpTransport {
    uri: AMQPUri,
    /// The broker for logs (no password).
    shown: String,
    /// The shared connection; `None` until first use.
    shared: tokio::sync::Mutex<Option<Arc<Connection>>>,
    /// Event messages the broker dropped from our full subscription queues, cumulative.
    overflowed: Arc<AtomicU64>,
    /// The subscription queue's `x-max-length`.
    event_queue_max: i64,
    /// The subscription's prefetch.
    event_prefetch: u16,
}

impl AmqpTransport {
    /// A transport for `broker`; checks the URL, connects later.
    pub fn open(broker: &str) -> Result<AmqpTransport, String> {
        let uri = parse_url(broker)?;
        let shown = format!(
            "amqp://{}@{}:{}/{}",
            uri.authority.userinfo.username, uri.authority.host, uri.authority.port, uri.vhost
        );
        Ok(AmqpTransport {
            uri,
            shown,
            shared: tokio::sync::Mutex::new(None),
            overflowed: Arc::new(AtomicU64::new(0)),
            event_queue_max: EVENT_QUEUE_MAX,
            event_prefetch: EVENT_PREFETCH,
        })
    }

    /// The same transport with another event backlog than [`EVENT_QUEUE_MAX`] messages on the
    /// broker and 2,000 in flight to the agent: what the overflow test uses to fill it with a
    /// few messages.
    pub fn with_event_backlog(mut self, queue_max: i64, prefetch: u16) -> AmqpTransport {
        self.event_queue_max = queue_max;
        self.event_prefetch = prefetch.max(1);
        self
    }

    async fn connect(&self) -> Result<Connection, TransportError> {
        let properties =
            ConnectionProperties::default().with_connection_name("taskward-agent".into());
        Connection::connect_uri(self.uri.clone(), properties)
            .await
            .map_err(|e| TransportError::Unreachable(format!("{}: {e}", self.shown)))
    }

    /// A new channel on the shared connection, reconnecting when the broker dropped it.
    async fn channel(&self) -> Result<Channel, TransportError> {
        let mut shared = self.shared.lock().await;
        if let Some(conn) = shared.as_ref().filter(|c| c.status().connected())
            && let Ok(channel) = conn.create_channel().await
        {
            return Ok(channel);
        }
        let conn = Arc::new(self.connect().await?);
        let channel = conn.create_channel().await.map_err(unreachable)?;
        *shared = Some(conn);
        Ok(channel)
    }

    /// One control call on its own channel (`celery-wire.md` 5.2 and 6.2): the reply queue
    /// with Celery's flags, bound before the request goes out; consumed until `collect` breaks
    /// or the deadline; deleted.
    async fn control_on(
        &self,
        channel: &Channel,
        request: &Outgoing,
        reply_key: &str,
        timeout: Duration,
        collect: &mut Collect<'_>,
    ) -> Result<(), TransportError> {
        let (reply_queue, replies) = consume_replies(channel, reply_key).await?;
        publish_control(channel, request).await?;
        collect_replies(replies, timeout, collect).await?;
        let _ = channel
            .queue_delete(reply_queue, QueueDeleteOptions::default())
            .await;
        Ok(())
    }

    /// The subscription: its queue bound `#` on `celeryev`, bounded and dead-lettering its
    /// overflow to a counted queue; the counter runs until the connection closes.
    async fn subscribe(&self, conn: &Connection) -> Result<lapin::Consumer, lapin::Error> {
        let channel = conn.create_channel().await?;
        channel
            .exchange_declare(
                EVENT_EXCHANGE.into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        let queue = format!("celeryev.{}", uuid_like());
        let overflow = format!("{queue}.overflow");
        let expires = (
            "x-expires",
            AMQPValue::LongInt(EVENT_QUEUE_EXPIRES_MS as i32),
        );
        channel
            .queue_declare(
                overflow.as_str().into(),
                QueueDeclareOptions::exclusive().auto_delete(),
                arguments(&[
                    expires.clone(),
                    ("x-max-length", AMQPValue::LongLongInt(OVERFLOW_QUEUE_MAX)),
                ]),
            )
            .await?;
        channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions::exclusive().auto_delete(),
                arguments(&[
                    expires,
                    ("x-max-length", AMQPValue::LongLongInt(self.event_queue_max)),
                    ("x-overflow", AMQPValue::LongString("drop-head".into())),
                    ("x-dead-letter-exchange", AMQPValue::LongString("".into())),
                    (
                        "x-dead-letter-routing-key",
                        AMQPValue::LongString(overflow.as_str().into()),
                    ),
                ]),
            )
            .await?;
        channel
            .queue_bind(
                queue.as_str().into(),
                EVENT_EXCHANGE.into(),
                "#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let mut dropped = channel
            .basic_consume(
                overflow.as_str().into(),
                "taskward.overflow".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        let counter = self.overflowed.clone();
        tokio::spawn(async move {
            while let Some(Ok(_)) = dropped.next().await {
                let total = counter.fetch_add(1, Ordering::Relaxed) + 1;
                if total.is_power_of_two() || total.is_multiple_of(10_000) {
                    tracing::warn!(
                        total,
                        "the broker dropped event messages: this agent fell behind (its event queue is full)"
                    );
                }
            }
        });
        channel
            .basic_qos(self.event_prefetch, BasicQosOptions::default())
            .await?;
        let events = channel
            .basic_consume(
                queue.as_str().into(),
                "taskward.events".into(),
                BasicConsumeOptions {
                    exclusive: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        tracing::info!(broker = %self.shown, %queue, "reading Celery events");
        Ok(events)
    }
}

/// What an event stream holds: its connection (closed with the stream) and consumer.
struct Subscription {
    _conn: Connection,
    events: lapin::Consumer,
    unacked: u64,
    ack_every: u64,
}

impl Transport for AmqpTransport {
    fn events(&self) -> BoxFuture<'_, Result<EventStream, TransportError>> {
        Box::pin(async move {
            let conn = self.connect().await?;
            let events = self.subscribe(&conn).await.map_err(failed)?;
            let state = Subscription {
                _conn: conn,
                events,
                unacked: 0,
                ack_every: ACK_EVERY.min(u64::from(self.event_prefetch / 2)).max(1),
            };
            let stream = futures_util::stream::unfold(state, |mut sub| async move {
                match sub.events.next().await? {
                    Ok(delivery) => {
                        sub.unacked += 1;
                        if sub.unacked >= sub.ack_every {
                            sub.unacked = 0;
                            // A failed ack means the channel is gone: the next read ends.
                            let _ = delivery.acker.ack(BasicAckOptions { multiple: true }).await;
                        }
                        Some((Ok(delivery.data), sub))
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "event subscription ended");
                        None
                    }
                }
            });
            Ok(stream.boxed())
        })
    }

    fn control<'a>(
        &'a self,
        request: &'a Outgoing,
        reply_key: &'a str,
        timeout: Duration,
        collect: &'a mut Collect<'a>,
    ) -> BoxFuture<'a, Result<(), TransportError>> {
        Box::pin(async move {
            let channel = self.channel().await?;
            let outcome = self
                .control_on(&channel, request, reply_key, timeout, collect)
                .await;
            let _ = channel.close(200, "OK".into()).await;
            outcome
        })
    }

    fn publish_task<'a>(
        &'a self,
        message: &'a Outgoing,
    ) -> BoxFuture<'a, Result<(), TransportError>> {
        Box::pin(async move {
            let exchange = short("exchange", &message.exchange)?;
            let routing_key = short("routing key", &message.routing_key)?;
            let props = properties(message)?;
            let channel = self.channel().await?;
            // Confirmed and mandatory: a message no queue takes comes back instead of
            // vanishing, so a retry never reports success for a task nobody will run.
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await
                .map_err(failed)?;
            let confirmation = channel
                .basic_publish(
                    exchange,
                    routing_key,
                    BasicPublishOptions {
                        mandatory: true,
                        ..BasicPublishOptions::default()
                    },
                    &message.body,
                    props,
                )
                .await
                .map_err(failed)?
                .await
                .map_err(failed)?;
            let _ = channel.close(200, "OK".into()).await;
            match confirmation {
                Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
                Confirmation::Ack(Some(_)) => Err(TransportError::Failed(format!(
                    "no queue takes routing key {:?} on exchange {:?}: the message came back unrouted",
                    message.routing_key, message.exchange
                ))),
                Confirmation::Nack(_) => Err(TransportError::Failed(
                    "the broker refused the message (nack)".into(),
                )),
            }
        })
    }

    fn queue_depth<'a>(&'a self, queue: &'a str) -> BoxFuture<'a, Result<u64, TransportError>> {
        Box::pin(async move {
            let name = short("queue", queue)?;
            let channel = self.channel().await?;
            let declared = channel
                .queue_declare(
                    name,
                    QueueDeclareOptions::default().passive(),
                    FieldTable::default(),
                )
                .await;
            match declared {
                Ok(q) => {
                    let _ = channel.close(200, "OK".into()).await;
                    Ok(u64::from(q.message_count()))
                }
                // No queue yet (no worker declared it): nothing waits in it.
                Err(e) if not_found(&e) => Ok(0),
                Err(e) => Err(failed(e)),
            }
        })
    }

    fn purge<'a>(&'a self, queue: &'a str) -> BoxFuture<'a, Result<u64, TransportError>> {
        Box::pin(async move {
            let name = short("queue", queue)?;
            let channel = self.channel().await?;
            match channel
                .queue_purge(name, QueuePurgeOptions::default())
                .await
            {
                Ok(count) => {
                    let _ = channel.close(200, "OK".into()).await;
                    Ok(u64::from(count))
                }
                Err(e) if not_found(&e) => Ok(0),
                Err(e) => Err(failed(e)),
            }
        })
    }

    fn reach(&self) -> BoxFuture<'_, Result<(), TransportError>> {
        Box::pin(async move {
            let channel = self.channel().await?;
            channel.close(200, "OK".into()).await.map_err(unreachable)
        })
    }

    fn overflowed(&self) -> u64 {
        self.overflowed.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn urls_are_checked_and_the_empty_vhost_is_the_default_one() {
        assert_eq!(
            parse_url("amqp://guest:guest@127.0.0.1:5672//")
                .unwrap()
                .vhost,
            "/"
        );
        assert_eq!(parse_url("amqp://127.0.0.1:5672/").unwrap().vhost, "/");
        assert_eq!(parse_url("amqp://127.0.0.1/%2f").unwrap().vhost, "/");
        let uri = parse_url("amqp://u:p@rabbit:5673/billing").unwrap();
        assert_eq!(
            (
                uri.vhost.as_str(),
                uri.authority.host.as_str(),
                uri.authority.port
            ),
            ("billing", "rabbit", 5673)
        );
        assert!(parse_url("amqp:rabbit").is_err());
        assert!(parse_url("amqp://rabbit:99999/").is_err());
        assert!(parse_url("amqp://host:notaport/").is_err());
        let shown = AmqpTransport::open("amqp://u:secret@rabbit/v")
            .unwrap()
            .shown;
        assert!(!shown.contains("secret"), "{shown}");
    }

    /// Celery's task headers survive the table both ways, with the types py-amqp reads
    /// (`timelimit` an array of voids, `stamps` an empty table, `expires` a double).
    #[test]
    fn headers_round_trip_through_an_amqp_table() {
        let headers = json!({
            "task": "app.add", "retries": 0, "timelimit": [null, null], "stamps": {},
            "ignore_result": false, "expires": 1795497758.5, "big": 5_000_000_000_i64,
            "argsrepr": "(2, 3)",
        });
        let map = headers.as_object().unwrap();
        let table = to_table(map);
        assert_eq!(table.inner()["retries"], AMQPValue::LongInt(0));
        assert_eq!(table.inner()["big"], AMQPValue::LongLongInt(5_000_000_000));
        assert_eq!(table.inner()["expires"], AMQPValue::Double(1795497758.5));
        assert_eq!(&from_table(&table), map);
    }

    #[test]
    fn over_long_names_are_errors_not_panics() {
        assert!(short("queue", &"q".repeat(256)).is_err());
        assert!(short("queue", &"q".repeat(255)).is_ok());
    }
}
