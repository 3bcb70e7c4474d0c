//! Celery's broker on Redis, as kombu's virtual transport lays it out (`celery-wire.md` 2): the
//! only file of the agent that speaks Redis. Key names take kombu's `global_keyprefix`; the
//! database number is part of every pub/sub channel name (pub/sub ignores `SELECT`).
//!
//! Connections: one multiplexed connection, opened on first use and reopened after an error,
//! carries publishes, depths and purges; a control call needs a connection of its own, because
//! its `BRPOP` blocks whatever else would be queued on the same connection, so idle ones are
//! kept for the next call; an event subscription is a pub/sub connection of its own. A kept
//! connection is checked with a `PING` before it is used again: one that died with a Redis
//! restart must cost a reconnect, not a failed command (and a failed `LPUSH` cannot be retried
//! blindly: it may have been applied).

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use ::redis::aio::MultiplexedConnection;
use ::redis::{AsyncCommands, RedisError};
use futures_util::StreamExt;

use super::super::uuid_like;
use super::envelope;
use super::{
    BoxFuture, Collect, EventStream, Outgoing, Transport, TransportError, UnreadableEvent,
};
use crate::clock::now_ms;
use crate::config::BrokerTls;

/// kombu's separator inside binding members and priority bucket names.
const SEP: &str = "\x06\x16";

/// kombu's priority buckets on Redis beyond bucket 0 (the plain list): `<queue>\x06\x16<n>`.
const PRIORITY_BUCKETS: [u8; 3] = [3, 6, 9];

/// How long kombu 5.7's sweeper leaves a binding table alone after a (re)bind: the deadline
/// kombu itself sets (`celery-wire.md` 2.6).
const BINDING_TTL_MS: i64 = 3_600_000;

/// One `BRPOP` of the reply lists: well below the client's response timeout, so a wait of
/// several seconds is a loop of short blocks (fractional timeouts need Redis >= 6).
const REPLY_POLL_SECS: f64 = 0.25;

/// Idle control connections kept; more concurrent calls than this open and drop their own.
const IDLE_CONTROL_MAX: usize = 8;

/// The list a message of `priority` waits in: the largest bucket step not above it
/// (`celery-wire.md` 2.3).
fn bucket_key(prefix: &str, queue: &str, priority: u8) -> String {
    match PRIORITY_BUCKETS
        .iter()
        .rev()
        .find(|step| **step <= priority)
    {
        Some(step) => format!("{prefix}{queue}{SEP}{step}"),
        None => format!("{prefix}{queue}"),
    }
}

/// Every bucket list of a queue (what its depth and a purge cover).
fn bucket_keys(prefix: &str, queue: &str) -> Vec<String> {
    std::iter::once(0)
        .chain(PRIORITY_BUCKETS)
        .map(|step| bucket_key(prefix, queue, step))
        .collect()
}

/// Whether a kept connection still answers.
async fn alive(conn: &mut MultiplexedConnection) -> bool {
    ::redis::cmd("PING")
        .query_async::<String>(conn)
        .await
        .is_ok()
}

fn failed(error: RedisError) -> TransportError {
    TransportError::Failed(error.to_string())
}

fn unreachable(error: RedisError) -> TransportError {
    TransportError::Unreachable(error.to_string())
}

/// Reads the broker's TLS files: the CA bundle replaces the web PKI roots; a client
/// certificate needs its key.
fn certificates(tls: &BrokerTls) -> Result<::redis::TlsCertificates, String> {
    let read = |path: &Path, what: &str| {
        std::fs::read(path).map_err(|e| format!("{what} {}: {e}", path.display()))
    };
    let client_tls = match (&tls.client_cert, &tls.client_key) {
        (Some(cert), Some(key)) => Some(::redis::ClientTlsConfig {
            client_cert: read(cert, "broker_client_cert")?,
            client_key: read(key, "broker_client_key")?,
        }),
        (None, None) => None,
        _ => {
            return Err(
                "broker_client_cert and broker_client_key go together (a certificate needs \
                 its key)"
                    .to_owned(),
            );
        }
    };
    let root_cert = match &tls.ca_file {
        Some(ca) => Some(read(ca, "broker_ca_file")?),
        None => None,
    };
    Ok(::redis::TlsCertificates {
        client_tls,
        root_cert,
    })
}

/// A Celery broker on Redis.
pub struct RedisTransport {
    client: ::redis::Client,
    /// kombu's `global_keyprefix`: before every key and channel name, not inside members.
    prefix: String,
    /// The broker's database number, part of the fanout channel names.
    db: i64,
    /// The shared connection; `None` until first use and after an error.
    shared: Mutex<Option<MultiplexedConnection>>,
    /// Control connections between calls.
    idle_control: Mutex<Vec<MultiplexedConnection>>,
}

impl RedisTransport {
    /// A transport for `broker` (`redis://[:password@]host:port/db`, `rediss://` for TLS);
    /// checks the URL, connects later.
    pub fn open(broker: &str, prefix: &str, tls: &BrokerTls) -> Result<RedisTransport, String> {
        let client = if tls.is_set() {
            ::redis::Client::build_with_tls(broker, certificates(tls)?)
        } else {
            ::redis::Client::open(broker)
        }
        .map_err(|e| format!("broker URL {:?}: {e}", super::without_password(broker)))?;
        let db = client.get_connection_info().redis_settings().db();
        Ok(RedisTransport {
            client,
            prefix: prefix.to_owned(),
            db,
            shared: Mutex::new(None),
            idle_control: Mutex::new(Vec::new()),
        })
    }

    /// The shared connection, checked or opened.
    async fn shared(&self) -> Result<MultiplexedConnection, TransportError> {
        let kept = self.shared.lock().expect("connection lock").clone();
        if let Some(mut conn) = kept
            && alive(&mut conn).await
        {
            return Ok(conn);
        }
        let conn = self.connect().await?;
        *self.shared.lock().expect("connection lock") = Some(conn.clone());
        Ok(conn)
    }

    async fn connect(&self) -> Result<MultiplexedConnection, TransportError> {
        self.client
            .get_multiplexed_async_connection()
            .await
            .map_err(unreachable)
    }

    /// Runs `op` on the shared connection; after an error the next call reconnects.
    async fn on_shared<T>(
        &self,
        op: impl AsyncFnOnce(&mut MultiplexedConnection) -> Result<T, RedisError>,
    ) -> Result<T, TransportError> {
        let mut conn = self.shared().await?;
        op(&mut conn).await.map_err(|e| {
            *self.shared.lock().expect("connection lock") = None;
            failed(e)
        })
    }

    /// A connection for one control call: an idle one that still answers, or a new one.
    async fn control_connection(&self) -> Result<MultiplexedConnection, TransportError> {
        loop {
            let Some(mut conn) = self.idle_control.lock().expect("connection lock").pop() else {
                return self.connect().await;
            };
            if alive(&mut conn).await {
                return Ok(conn);
            }
        }
    }

    /// The pattern of every event channel of the broker's database.
    fn events_pattern(&self) -> String {
        format!("{}/{}.celeryev/*", self.prefix, self.db)
    }

    /// One control call on `conn` (kombu's sequence, `celery-wire.md` 5.2): bind the reply
    /// list with a deadline the sweeper respects, publish, pop replies, unbind and delete.
    async fn control_on(
        &self,
        conn: &mut MultiplexedConnection,
        request: &Outgoing,
        reply_key: &str,
        timeout: Duration,
        collect: &mut Collect<'_>,
    ) -> Result<(), RedisError> {
        let p = &self.prefix;
        let reply_queue = format!("{reply_key}.reply.celery.pidbox");
        let member = format!("{reply_key}{SEP}{SEP}{reply_queue}");
        let bindings = format!("{p}_kombu.binding.reply.celery.pidbox");
        // The reply binding must exist before a worker answers: workers route replies by it.
        let _: () = conn.sadd(&bindings, &member).await?;
        let _: Result<i64, _> = ::redis::cmd("ZADD")
            .arg(format!("{p}_kombu.binding_deadlines"))
            .arg("GT")
            .arg(now_ms() + BINDING_TTL_MS)
            .arg("reply.celery.pidbox")
            .query_async(conn)
            .await;
        // A fanout with routing key "" is the bare channel (`fanout_patterns` appends the key
        // only when there is one).
        let channel = match request.routing_key.as_str() {
            "" => format!("{p}/{}.{}", self.db, request.exchange),
            key => format!("{p}/{}.{}/{key}", self.db, request.exchange),
        };
        let _: i64 = conn
            .publish(&channel, envelope::encode(request, &uuid_like()))
            .await?;
        let keys = bucket_keys(p, &reply_queue);
        let until = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < until {
            let popped: Option<(String, Vec<u8>)> = ::redis::cmd("BRPOP")
                .arg(&keys)
                .arg(REPLY_POLL_SECS)
                .query_async(conn)
                .await?;
            let Some((_, message)) = popped else { continue };
            // Something that is not a reply (nothing else should be in our list) is skipped.
            let Ok(delivery) = envelope::decode(&message) else {
                continue;
            };
            if collect(delivery).is_break() {
                break;
            }
        }
        // Clean up like kombu: the binding member and the reply lists.
        let _: Result<i64, _> = conn.srem(&bindings, &member).await;
        let _: Result<i64, _> = conn.del(&keys).await;
        Ok(())
    }
}

impl Transport for RedisTransport {
    fn events(&self) -> BoxFuture<'_, Result<EventStream, TransportError>> {
        Box::pin(async move {
            let pattern = self.events_pattern();
            let mut pubsub = self.client.get_async_pubsub().await.map_err(unreachable)?;
            pubsub.psubscribe(&pattern).await.map_err(failed)?;
            tracing::info!(%pattern, "reading Celery events");
            let stream = pubsub.into_on_message().map(|message| {
                envelope::event_body(message.get_payload_bytes()).map_err(|error| UnreadableEvent {
                    source_name: message.get_channel_name().to_owned(),
                    error,
                })
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
            let mut conn = self.control_connection().await?;
            self.control_on(&mut conn, request, reply_key, timeout, collect)
                .await
                .map_err(failed)?;
            let mut idle = self.idle_control.lock().expect("connection lock");
            if idle.len() < IDLE_CONTROL_MAX {
                idle.push(conn);
            }
            Ok(())
        })
    }

    fn publish_task<'a>(
        &'a self,
        message: &'a Outgoing,
    ) -> BoxFuture<'a, Result<(), TransportError>> {
        Box::pin(async move {
            // The default exchange routes by queue name, which is all Celery's task routing
            // needs; other exchanges would need kombu's binding-table lookup (2.5).
            if !message.exchange.is_empty() {
                return Err(TransportError::Unsupported(format!(
                    "publishing to exchange {:?} (only the default exchange is routed on Redis)",
                    message.exchange
                )));
            }
            let list = bucket_key(
                &self.prefix,
                &message.routing_key,
                message.properties.priority,
            );
            let wire = envelope::encode(message, &uuid_like());
            self.on_shared(async |conn| {
                let _: i64 = ::redis::cmd("LPUSH")
                    .arg(&list)
                    .arg(&wire)
                    .query_async(conn)
                    .await?;
                Ok(())
            })
            .await
        })
    }

    fn queue_depth<'a>(&'a self, queue: &'a str) -> BoxFuture<'a, Result<u64, TransportError>> {
        Box::pin(async move {
            let mut pipe = ::redis::pipe();
            for key in bucket_keys(&self.prefix, queue) {
                pipe.cmd("LLEN").arg(key);
            }
            let lengths: Vec<u64> = self
                .on_shared(async |conn| pipe.query_async(conn).await)
                .await?;
            Ok(lengths.iter().sum())
        })
    }

    fn purge<'a>(&'a self, queue: &'a str) -> BoxFuture<'a, Result<u64, TransportError>> {
        Box::pin(async move {
            // `celery purge`'s own transaction: count and delete each bucket atomically.
            let mut pipe = ::redis::pipe();
            pipe.atomic();
            for key in bucket_keys(&self.prefix, queue) {
                pipe.cmd("LLEN").arg(&key).cmd("DEL").arg(&key).ignore();
            }
            let lengths: Vec<u64> = self
                .on_shared(async |conn| pipe.query_async(conn).await)
                .await?;
            Ok(lengths.iter().sum())
        })
    }

    fn reach(&self) -> BoxFuture<'_, Result<(), TransportError>> {
        Box::pin(async move { self.shared().await.map(|_| ()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_land_in_kombu_buckets() {
        assert_eq!(bucket_key("", "billing", 0), "billing");
        assert_eq!(bucket_key("", "billing", 2), "billing");
        assert_eq!(bucket_key("", "billing", 3), "billing\x06\x163");
        assert_eq!(bucket_key("", "billing", 5), "billing\x06\x163");
        assert_eq!(bucket_key("", "billing", 7), "billing\x06\x166");
        assert_eq!(bucket_key("p:", "billing", 9), "p:billing\x06\x169");
        assert_eq!(bucket_key("", "billing", 200), "billing\x06\x169");
        assert_eq!(bucket_keys("", "q").len(), 4);
    }

    #[test]
    fn channels_carry_the_prefix_and_the_database() {
        let t = RedisTransport::open("redis://127.0.0.1:6379/3", "pfx:", &BrokerTls::default())
            .unwrap();
        assert_eq!(t.events_pattern(), "pfx:/3.celeryev/*");
        assert!(RedisTransport::open("not a url", "", &BrokerTls::default()).is_err());
    }
}
