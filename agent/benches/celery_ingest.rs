//! Celery event ingest, side by side with the incumbent (issue 6): Flower 2.2.0 (from PyPI) and
//! Taskward (release `taskward-agent` with the Celery engine + `taskward-brain` on SQLite), each
//! alone, in the same run on the same machine, reading the same Celery-shaped events from
//! Redis (db 13), or with `CELERY_BENCH_BROKER=rabbitmq` from RabbitMQ (vhost `taskward-bench`).
//!
//! A publisher in this bench plays Celery workers: per task a `task-received`, a `task-started`
//! (one 10 ms tick later) and a `task-succeeded` (one more tick), each its own `task.multi`
//! PUBLISH on `/13.celeryev/task.multi` with the envelope of the captured fixtures, paced in
//! 10 ms ticks at a fixed rate of task events per second, plus a `worker-heartbeat` per fake
//! worker every 2 s. For each rate and system it reports events sent (PUBLISHed task events),
//! applied (Flower: the task-event samples of `flower_events_total` on `/metrics`; Taskward:
//! per task, `received_at`, `started_at` and state succeeded with a result in the brain's
//! store), counted once the count reaches what was sent or stands still for 2 s; lost = sent -
//! applied; late = applied more than 10 s after the last event; what the system itself
//! reported as dropped; peak RSS (VmHWM). Then Redis-side diagnostics (PUBLISHes nobody heard,
//! the subscriber's peak output buffer, its connections, reconnects in the consumer's log).
//!
//! On RabbitMQ the publisher plays workers the AMQP way (`celery-wire.md` 4.1 and 6.3): each
//! message a `basic.publish` to the `celeryev` topic exchange with Celery's routing key
//! (`task.multi`, `worker.heartbeat`, …), the raw JSON body, `headers {"hostname": …}`,
//! `delivery_mode` 1, on a confirmed channel with `mandatory` (a message no queue took comes
//! back: "heard by nobody"). Broker CPU is RabbitMQ's `beam.smp`; the out-buffer and connection
//! columns are Redis-only.
//!
//! Run: `cargo bench -p taskward-agent --bench celery_ingest`
//! (`CELERY_BENCH_BROKER`, `redis` (default) or `rabbitmq`;
//! `CELERY_BENCH_RATES`, default `5000,10000,25000,50000` events/s; `CELERY_BENCH_SECS`,
//! default 30; `CELERY_BENCH_SYSTEMS`, default `flower,taskward`; `CELERY_BENCH_DRAIN_SECS`
//! (late after), default 10; `CELERY_BENCH_SETTLE_SECS` (longest wait), default 600;
//! `CELERY_BENCH_QUIET_WAIT_SECS`, default 300: how long each run waits for the rest of the
//! machine to go idle; the CPU it used anyway is reported). Needs Redis on 127.0.0.1:6379 (and
//! RabbitMQ on 127.0.0.1:5672 with `rabbitmqctl` for its mode) and `python3`; Flower is
//! installed on first run into `.venv-flower/`.

mod support;

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use diesel::prelude::*;
use serde::Serialize;
use support::{Stack, http, rss_kib, start_agent};
use taskward_brain::store::{Store, projects, schema};
use taskward_testkit::{Proc, free_port};

const BROKER: &str = "redis://127.0.0.1:6379/13";
/// The RabbitMQ vhost of the AMQP mode (made at the start, deleted at the end).
const AMQP_VHOST: &str = "taskward-bench";
const AMQP_BROKER: &str = "amqp://guest:guest@127.0.0.1:5672/taskward-bench";

/// The broker the run publishes on (`CELERY_BENCH_BROKER`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Redis,
    Rabbitmq,
}

static MODE: OnceLock<Mode> = OnceLock::new();

fn mode() -> Mode {
    *MODE.get().expect("the mode is set first")
}

/// The broker URL Flower and the agent read.
fn broker_url() -> &'static str {
    match mode() {
        Mode::Redis => BROKER,
        Mode::Rabbitmq => AMQP_BROKER,
    }
}
/// Celery's event channels on db 13 (`celery-wire.md` 2.1): `/<db>.celeryev/<routing key>`.
const CHANNEL_PREFIX: &str = "/13.celeryev/";
const FAKE_WORKERS: usize = 4;
const TICK: Duration = Duration::from_millis(10);
const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);
/// After publishing stops, the applied count may stand still this long before the drain ends
/// early (it ends at once when everything sent is applied, at the latest after `Plan::drain`).
const DRAIN_STILL: Duration = Duration::from_secs(2);

/// Flower's dependencies, as the issue names them.
const FLOWER_PIP: [&str; 2] = ["flower==2.2.0", "celery[redis]"];

// ---------------------------------------------------------------------------------------------
// Celery's wire format, as captured in `shared/fixtures/celery/redis/event-*.json`.

/// `json.dumps` defaults (`", "` and `": "` separators), byte for byte like Celery's events.
struct PythonJson;

/// The `", "` separator Python writes before every array element and object key but the first.
fn item_separator<W: ?Sized + std::io::Write>(writer: &mut W, first: bool) -> std::io::Result<()> {
    if first {
        Ok(())
    } else {
        writer.write_all(b", ")
    }
}

impl serde_json::ser::Formatter for PythonJson {
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        item_separator(writer, first)
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        item_separator(writer, first)
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
    ) -> std::io::Result<()> {
        writer.write_all(b": ")
    }
}

fn python_json(value: &impl Serialize) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, PythonJson);
    value.serialize(&mut serializer).expect("events serialize");
    out
}

/// The fields every event carries, first in Celery's order.
#[derive(Serialize)]
struct Common<'a> {
    hostname: &'a str,
    utcoffset: f64,
    pid: u32,
    clock: u64,
}

#[derive(Serialize)]
struct TaskReceived<'a> {
    #[serde(flatten)]
    common: Common<'a>,
    uuid: &'a str,
    name: &'a str,
    args: &'a str,
    kwargs: &'a str,
    root_id: &'a str,
    parent_id: Option<&'a str>,
    retries: u32,
    eta: Option<&'a str>,
    expires: Option<&'a str>,
    timestamp: f64,
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(Serialize)]
struct TaskStarted<'a> {
    #[serde(flatten)]
    common: Common<'a>,
    uuid: &'a str,
    timestamp: f64,
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(Serialize)]
struct TaskSucceeded<'a> {
    #[serde(flatten)]
    common: Common<'a>,
    uuid: &'a str,
    result: &'a str,
    runtime: f64,
    timestamp: f64,
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(Serialize)]
struct WorkerEvent<'a> {
    #[serde(flatten)]
    common: Common<'a>,
    freq: f64,
    active: u64,
    processed: u64,
    loadavg: [f64; 3],
    sw_ident: &'static str,
    sw_ver: &'static str,
    sw_sys: &'static str,
    timestamp: f64,
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(Serialize)]
struct Envelope<'a> {
    body: String,
    #[serde(rename = "content-encoding")]
    content_encoding: &'static str,
    #[serde(rename = "content-type")]
    content_type: &'static str,
    headers: Headers<'a>,
    properties: Properties<'a>,
}

#[derive(Serialize)]
struct Headers<'a> {
    hostname: &'a str,
}

#[derive(Serialize)]
struct Properties<'a> {
    delivery_mode: u8,
    delivery_info: DeliveryInfo<'a>,
    priority: u8,
    body_encoding: &'static str,
    delivery_tag: String,
}

#[derive(Serialize)]
struct DeliveryInfo<'a> {
    exchange: &'static str,
    routing_key: &'a str,
}

/// The PUBLISH payload: kombu's envelope around the base64 of the JSON `body`.
fn envelope(hostname: &str, routing_key: &str, body: &[u8]) -> Vec<u8> {
    python_json(&Envelope {
        body: base64::engine::general_purpose::STANDARD.encode(body),
        content_encoding: "utf-8",
        content_type: "application/json",
        headers: Headers { hostname },
        properties: Properties {
            delivery_mode: 1,
            delivery_info: DeliveryInfo {
                exchange: "celeryev",
                routing_key,
            },
            priority: 0,
            body_encoding: "base64",
            delivery_tag: uuid::Uuid::new_v4().to_string(),
        },
    })
}

/// A plain connection to the broker's db.
fn broker_connection() -> redis::Connection {
    redis::Client::open(BROKER)
        .unwrap()
        .get_connection()
        .unwrap()
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

// ---------------------------------------------------------------------------------------------
// The publisher: fake Celery workers.

struct FakeWorker {
    hostname: String,
    pid: u32,
    clock: u64,
    /// Tasks started since boot, as Celery's heartbeats count them.
    processed: u64,
    /// Tasks started and not finished.
    active: u64,
}

impl FakeWorker {
    fn common(&mut self) -> Common<'_> {
        self.clock += 1;
        Common {
            hostname: &self.hostname,
            utcoffset: 0.0,
            pid: self.pid,
            clock: self.clock,
        }
    }
}

/// A task between its events.
struct InFlight {
    seq: u64,
    uuid: String,
    started_at: f64,
}

/// What one run published.
#[derive(Default, Clone, Copy)]
struct Published {
    /// Task events PUBLISHed (three per task).
    task_events: u64,
    /// Task-event PUBLISHes that reached no subscriber (Redis answered 0).
    unheard: u64,
    /// Worker events PUBLISHed (online, heartbeats); not part of "sent".
    worker_events: u64,
    /// From the first task event to the last.
    secs: f64,
}

/// One event message: routing key, sender hostname, JSON body.
type Message = (String, String, Vec<u8>);

/// Where the publisher's messages go: Redis PUBLISHes (pipelined), or AMQP publishes on a
/// confirmed channel.
enum Sink {
    Redis(redis::Connection),
    Amqp(Box<AmqpSink>),
}

/// The AMQP publisher's connection, channel and the runtime lapin runs on.
struct AmqpSink {
    runtime: tokio::runtime::Runtime,
    _conn: lapin::Connection,
    channel: lapin::Channel,
}

impl Sink {
    fn connect() -> Sink {
        match mode() {
            Mode::Redis => Sink::Redis(broker_connection()),
            Mode::Rabbitmq => {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                let (conn, channel) = runtime.block_on(async {
                    let conn = lapin::Connection::connect(
                        AMQP_BROKER,
                        lapin::ConnectionProperties::default(),
                    )
                    .await
                    .unwrap();
                    let channel = conn.create_channel().await.unwrap();
                    channel
                        .confirm_select(lapin::options::ConfirmSelectOptions::default())
                        .await
                        .unwrap();
                    channel
                        .exchange_declare(
                            "celeryev".into(),
                            lapin::ExchangeKind::Topic,
                            lapin::options::ExchangeDeclareOptions {
                                durable: true,
                                ..Default::default()
                            },
                            lapin::types::FieldTable::default(),
                        )
                        .await
                        .unwrap();
                    (conn, channel)
                });
                Sink::Amqp(Box::new(AmqpSink {
                    runtime,
                    _conn: conn,
                    channel,
                }))
            }
        }
    }

    /// Sends `messages` in order; for each, whether a consumer took it.
    fn send(&mut self, messages: Vec<Message>) -> Vec<bool> {
        match self {
            Sink::Redis(conn) => {
                let mut pipe = redis::pipe();
                for (routing_key, hostname, body) in &messages {
                    pipe.cmd("PUBLISH")
                        .arg(format!("{CHANNEL_PREFIX}{routing_key}"))
                        .arg(envelope(hostname, routing_key, body));
                }
                let heard: Vec<i64> = pipe.query(conn).unwrap();
                heard.iter().map(|&h| h > 0).collect()
            }
            Sink::Amqp(amqp) => amqp.runtime.block_on(async {
                let channel = &amqp.channel;
                let mut confirms = Vec::with_capacity(messages.len());
                for (routing_key, hostname, body) in messages {
                    let mut headers = lapin::types::FieldTable::default();
                    headers.insert(
                        "hostname".into(),
                        lapin::types::AMQPValue::LongString(hostname.into()),
                    );
                    let properties = lapin::BasicProperties::default()
                        .with_content_type("application/json".into())
                        .with_content_encoding("utf-8".into())
                        .with_headers(headers)
                        .with_delivery_mode(1)
                        .with_priority(0);
                    confirms.push(
                        channel
                            .basic_publish(
                                "celeryev".into(),
                                routing_key.into(),
                                lapin::options::BasicPublishOptions {
                                    mandatory: true,
                                    ..Default::default()
                                },
                                &body,
                                properties,
                            )
                            .await
                            .unwrap(),
                    );
                }
                let mut heard = Vec::with_capacity(confirms.len());
                for confirm in confirms {
                    let confirmation = confirm.await.unwrap();
                    heard.push(matches!(confirmation, lapin::Confirmation::Ack(None)));
                }
                heard
            }),
        }
    }
}

struct Publisher {
    sink: Sink,
    workers: Vec<FakeWorker>,
    next_seq: u64,
    published: Published,
}

/// Name, args repr, kwargs repr and result repr of the `seq`th task: three kinds, including
/// arguments the agent redacts (an e-mail address, a token).
fn task_shape(seq: u64) -> (&'static str, String, String, String) {
    match seq % 3 {
        0 => (
            "app.add",
            format!("({seq}, {})", seq % 97),
            "{}".into(),
            (seq + seq % 97).to_string(),
        ),
        1 => (
            "app.send_email",
            format!("('user{seq}@example.com',)"),
            "{'subject': 'Welcome', 'template': 'signup'}".into(),
            "None".into(),
        ),
        _ => (
            "reports.build",
            format!("({seq},)"),
            format!("{{'fmt': 'pdf', 'api_token': 'tok-{seq}'}}"),
            format!("'reports/{seq}.pdf'"),
        ),
    }
}

impl Publisher {
    fn connect() -> Publisher {
        let sink = Sink::connect();
        let workers = (0..FAKE_WORKERS)
            .map(|n| FakeWorker {
                hostname: format!("bench{n}@benchhost"),
                pid: 40_000 + n as u32,
                clock: 0,
                processed: 0,
                active: 0,
            })
            .collect();
        Publisher {
            sink,
            workers,
            next_seq: 0,
            published: Published::default(),
        }
    }

    fn worker_event(&mut self, pipe: &mut Vec<Message>, n: usize, kind: &'static str) {
        let w = &mut self.workers[n];
        let (processed, active) = (w.processed, w.active);
        let hostname = w.hostname.clone();
        let event = WorkerEvent {
            common: w.common(),
            freq: 2.0,
            active,
            processed,
            loadavg: [0.5, 0.4, 0.3],
            sw_ident: "py-celery",
            sw_ver: "5.7.0",
            sw_sys: "Linux",
            timestamp: unix_now(),
            kind,
        };
        let routing_key = kind.replace('-', ".");
        pipe.push((routing_key, hostname, python_json(&event)));
    }

    /// Every fake worker says `worker-online` until the consumer hears them all.
    fn announce(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut pipe = Vec::new();
            for n in 0..FAKE_WORKERS {
                self.worker_event(&mut pipe, n, "worker-online");
            }
            let heard = self.sink.send(pipe);
            self.published.worker_events += FAKE_WORKERS as u64;
            if heard.iter().all(|&h| h) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "nobody subscribed to {}",
                broker_url()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn heartbeats(&mut self, pipe: &mut Vec<Message>) {
        for n in 0..FAKE_WORKERS {
            self.worker_event(pipe, n, "worker-heartbeat");
        }
    }

    /// One `task.multi` PUBLISH from the task's worker; `body` makes the JSON array.
    fn task_multi(
        &mut self,
        pipe: &mut Vec<Message>,
        seq: u64,
        body: impl FnOnce(Common<'_>) -> Vec<u8>,
    ) {
        let w = &mut self.workers[seq as usize % FAKE_WORKERS];
        let hostname = w.hostname.clone();
        let payload = body(w.common());
        pipe.push(("task.multi".to_owned(), hostname, payload));
    }

    /// Publishes `rate` task events per second for `secs`, then tells `done` what it sent and
    /// keeps the workers' heartbeats going until `stop`.
    fn run(mut self, rate: u64, secs: u64, done: mpsc::Sender<Published>, stop: Arc<AtomicBool>) {
        self.announce();
        let tasks_per_sec = rate as f64 / 3.0;
        let duration = Duration::from_secs(secs);
        let start = Instant::now();
        let mut next_tick = start;
        let mut next_heartbeat = start;
        let (mut received, mut started): (Vec<InFlight>, Vec<InFlight>) = (Vec::new(), Vec::new());
        let mut last_event = start;
        loop {
            let now = Instant::now();
            let elapsed = now - start;
            let due = if elapsed < duration {
                (tasks_per_sec * elapsed.as_secs_f64()) as u64
            } else {
                self.next_seq
            };
            if elapsed >= duration && received.is_empty() && started.is_empty() {
                break;
            }
            let mut pipe = Vec::new();
            let ts = unix_now();
            let mut task_events = 0;
            for t in std::mem::take(&mut started) {
                let (_, _, _, result) = task_shape(t.seq);
                self.workers[t.seq as usize % FAKE_WORKERS].active -= 1;
                self.task_multi(&mut pipe, t.seq, |common| {
                    python_json(&[TaskSucceeded {
                        common,
                        uuid: &t.uuid,
                        result: &result,
                        runtime: ts - t.started_at,
                        timestamp: ts,
                        kind: "task-succeeded",
                    }])
                });
                task_events += 1;
            }
            for t in std::mem::take(&mut received) {
                let w = &mut self.workers[t.seq as usize % FAKE_WORKERS];
                w.processed += 1;
                w.active += 1;
                self.task_multi(&mut pipe, t.seq, |common| {
                    python_json(&[TaskStarted {
                        common,
                        uuid: &t.uuid,
                        timestamp: ts,
                        kind: "task-started",
                    }])
                });
                task_events += 1;
                started.push(InFlight {
                    started_at: ts,
                    ..t
                });
            }
            while self.next_seq < due {
                let seq = self.next_seq;
                self.next_seq += 1;
                let uuid = uuid::Uuid::new_v4().to_string();
                let (name, args, kwargs, _) = task_shape(seq);
                self.task_multi(&mut pipe, seq, |common| {
                    python_json(&[TaskReceived {
                        common,
                        uuid: &uuid,
                        name,
                        args: &args,
                        kwargs: &kwargs,
                        root_id: &uuid,
                        parent_id: None,
                        retries: 0,
                        eta: None,
                        expires: None,
                        timestamp: ts,
                        kind: "task-received",
                    }])
                });
                task_events += 1;
                received.push(InFlight {
                    seq,
                    uuid,
                    started_at: 0.0,
                });
            }
            let heartbeat = now >= next_heartbeat;
            if heartbeat {
                self.heartbeats(&mut pipe);
                next_heartbeat += HEARTBEAT_EVERY;
            }
            if task_events > 0 || heartbeat {
                let heard = self.sink.send(pipe);
                // Task events come first in the pipeline, heartbeats last.
                let tasks = &heard[..task_events];
                self.published.task_events += task_events as u64;
                self.published.unheard += tasks.iter().filter(|&&h| !h).count() as u64;
                self.published.worker_events += (heard.len() - task_events) as u64;
                if task_events > 0 {
                    last_event = Instant::now();
                }
            }
            next_tick += TICK;
            if let Some(wait) = next_tick.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        self.published.secs = (last_event - start).as_secs_f64();
        done.send(self.published).unwrap();
        while !stop.load(Ordering::Relaxed) {
            let mut pipe = Vec::new();
            self.heartbeats(&mut pipe);
            self.sink.send(pipe);
            for _ in 0..20 {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep(HEARTBEAT_EVERY / 20);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Watching Redis while the events flow.

/// The pattern subscribers on db 13 as `CLIENT LIST` shows them, sampled during a run.
#[derive(Default)]
struct RedisWatch {
    /// Connection ids seen: more than one means the subscriber was dropped and came back.
    ids: BTreeSet<u64>,
    /// Largest output buffer Redis held for a subscriber (events not yet read), bytes.
    peak_omem: u64,
}

impl RedisWatch {
    fn sample(&mut self, conn: &mut redis::Connection) {
        if mode() != Mode::Redis {
            return;
        }
        let Ok(list) = redis::cmd("CLIENT")
            .arg("LIST")
            .arg("TYPE")
            .arg("pubsub")
            .query::<String>(conn)
        else {
            return;
        };
        for line in list.lines() {
            let field = |name: &str| {
                line.split(' ')
                    .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                    .and_then(|v| v.parse::<u64>().ok())
            };
            if field("db") == Some(13) && field("psub").unwrap_or(0) > 0 {
                self.ids.extend(field("id"));
                self.peak_omem = self.peak_omem.max(field("omem").unwrap_or(0));
            }
        }
    }
}

/// Empties the broker's db (Redis; on RabbitMQ each consumer's queue goes with it).
fn flushdb() {
    if mode() != Mode::Redis {
        return;
    }
    let mut conn = broker_connection();
    let _: () = redis::cmd("FLUSHDB").query(&mut conn).unwrap();
}

// ---------------------------------------------------------------------------------------------
// One measured run.

/// Applied task events by kind: received, started, succeeded.
type Applied = [u64; 3];

struct Row {
    rate: u64,
    system: &'static str,
    measured: Measured,
    /// What the system itself reported as dropped, if it reports anything.
    reported_dropped: Option<u64>,
    /// Process name, peak RSS KiB, CPU seconds.
    processes: Vec<(&'static str, u64, f64)>,
    /// Times the consumer logged that it lost its subscription.
    reconnects_logged: usize,
    /// Task updates still in the agent's spool, not acknowledged by the brain, at the end.
    spooled: Option<u64>,
}

impl Row {
    fn sent(&self) -> u64 {
        self.measured.published.task_events
    }

    fn applied(&self) -> u64 {
        self.measured.applied.iter().sum()
    }

    fn lost(&self) -> i64 {
        self.sent() as i64 - self.applied() as i64
    }

    /// Applied, but only after the drain.
    fn late(&self) -> u64 {
        self.applied().saturating_sub(self.measured.within_drain)
    }
}

/// User plus system CPU time of a live process, seconds (USER_HZ is 100 on Linux).
fn cpu_secs(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let fields: Vec<u64> = s
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .skip(11)
                .take(2)
                .filter_map(|v| v.parse().ok())
                .collect();
            Some(fields.iter().sum::<u64>() as f64 / 100.0)
        })
        .unwrap_or(0.0)
}

/// CPU seconds the whole machine spent busy (user, nice, system, irq, softirq; not idle, iowait
/// or steal), from `/proc/stat`.
fn machine_busy_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    [0, 1, 2, 5, 6]
        .iter()
        .filter_map(|&i| ticks.get(i))
        .sum::<u64>() as f64
        / 100.0
}

/// Waits (at most `patience`) until the machine has been nearly idle (under a tenth of a core)
/// for two seconds, so a neighbour's build does not skew a run; says so if it never was.
fn wait_for_quiet(patience: Duration) {
    let deadline = Instant::now() + patience;
    loop {
        let before = machine_busy_secs();
        std::thread::sleep(Duration::from_secs(2));
        let busy = machine_busy_secs() - before;
        if busy < 0.2 {
            return;
        }
        if Instant::now() >= deadline {
            eprintln!("the machine is busy ({busy:.1} CPU s in 2 s); running anyway");
            return;
        }
    }
}

/// CPU seconds the broker has used: Redis's `INFO cpu`, or RabbitMQ's `beam.smp` process.
fn redis_cpu_secs(conn: &mut redis::Connection) -> f64 {
    if mode() == Mode::Rabbitmq {
        let pids = Command::new("pidof")
            .arg("beam.smp")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        return pids
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .map(cpu_secs)
            .sum();
    }
    let info: String = redis::cmd("INFO")
        .arg("cpu")
        .query(conn)
        .unwrap_or_default();
    info.lines()
        .filter_map(|l| {
            let (key, value) = l.split_once(':')?;
            ["used_cpu_sys", "used_cpu_user"]
                .contains(&key)
                .then(|| value.trim().parse::<f64>().ok())?
        })
        .sum()
}

/// CPU seconds spent during a run, by whom.
#[derive(Default, Clone, Copy)]
struct CpuUse {
    /// The processes under test.
    tested: f64,
    /// This bench (the publisher, the counting).
    bench: f64,
    redis: f64,
    /// Everything else on the machine: a busy neighbour makes the run unfair.
    others: f64,
}

impl CpuUse {
    fn now(tested: &[u32], conn: &mut redis::Connection) -> (f64, CpuUse) {
        (
            machine_busy_secs(),
            CpuUse {
                tested: tested.iter().map(|&pid| cpu_secs(pid)).sum(),
                bench: cpu_secs(std::process::id()),
                redis: redis_cpu_secs(conn),
                others: 0.0,
            },
        )
    }

    fn since(start: (f64, CpuUse), end: (f64, CpuUse)) -> CpuUse {
        let (tested, bench, redis) = (
            end.1.tested - start.1.tested,
            end.1.bench - start.1.bench,
            end.1.redis - start.1.redis,
        );
        CpuUse {
            tested,
            bench,
            redis,
            others: (end.0 - start.0 - tested - bench - redis).max(0.0),
        }
    }
}

/// One run: task events per second, for how long, and the waits after the last event.
#[derive(Clone, Copy)]
struct Plan {
    rate: u64,
    secs: u64,
    /// What is applied by then counts as in time; later is late.
    drain: Duration,
    /// The longest wait for everything to be applied.
    settle: Duration,
}

/// What a run published and what the system made of it.
struct Measured {
    published: Published,
    /// Applied in the end (when all was applied, the count stood still, or `Plan::settle`).
    applied: Applied,
    /// Applied by the end of `Plan::drain`.
    within_drain: u64,
    /// Seconds after the last event until everything sent was applied.
    caught_up: Option<f64>,
    watch: RedisWatch,
    /// From the first event to the end of counting.
    cpu: CpuUse,
    /// Wall seconds from the first event to the end of counting.
    wall: f64,
}

/// Publishes as `plan` says once the consumer listens, then counts with `applied` until all
/// is applied or the count stands still.
fn measure(plan: Plan, tested: &[u32], applied: &mut dyn FnMut() -> Applied) -> Measured {
    let (done_tx, done_rx) = mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let stop = stop.clone();
        let p = Publisher::connect();
        std::thread::spawn(move || p.run(plan.rate, plan.secs, done_tx, stop))
    };
    let mut watch = RedisWatch::default();
    let mut conn = broker_connection();
    let (cpu_start, wall_start) = (CpuUse::now(tested, &mut conn), Instant::now());
    let published = loop {
        watch.sample(&mut conn);
        match done_rx.recv_timeout(Duration::from_millis(250)) {
            Ok(p) => break p,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(e) => panic!("publisher failed: {e}"),
        }
    };
    // Counted once a second (counting costs the system CPU too); Redis sampled meanwhile.
    let drain_start = Instant::now();
    let (mut counted, mut moved_at) = (applied(), Instant::now());
    let (mut within_drain, mut caught_up) = (None, None);
    loop {
        let total: u64 = counted.iter().sum();
        if within_drain.is_none() && drain_start.elapsed() >= plan.drain {
            within_drain = Some(total);
        }
        if total >= published.task_events {
            caught_up = Some(drain_start.elapsed().as_secs_f64());
            break;
        }
        if moved_at.elapsed() >= DRAIN_STILL || drain_start.elapsed() >= plan.settle {
            break;
        }
        for _ in 0..4 {
            watch.sample(&mut conn);
            std::thread::sleep(Duration::from_millis(250));
        }
        let now = applied();
        if now != counted {
            counted = now;
            moved_at = Instant::now();
        }
    }
    let (cpu_end, wall) = (CpuUse::now(tested, &mut conn), wall_start.elapsed());
    stop.store(true, Ordering::Relaxed);
    publisher.join().unwrap();
    Measured {
        cpu: CpuUse::since(cpu_start, cpu_end),
        wall: wall.as_secs_f64(),
        published,
        within_drain: within_drain.unwrap_or(counted.iter().sum()),
        applied: counted,
        caught_up,
        watch,
    }
}

fn count_lines(path: &Path, needle: &str) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .matches(needle)
        .count()
}

/// `.venv-flower/bin/celery`, installing Flower from PyPI first if it is missing.
fn flower_celery() -> PathBuf {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv-flower");
    let celery = venv.join("bin/celery");
    if !celery.exists() {
        eprintln!(
            "installing {} into {}",
            FLOWER_PIP.join(" "),
            venv.display()
        );
        let ok = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .is_ok_and(|s| s.success())
            && Command::new(venv.join("bin/pip"))
                .args(["install", "--quiet"])
                .args(FLOWER_PIP)
                .status()
                .is_ok_and(|s| s.success());
        assert!(ok, "could not install Flower into {}", venv.display());
    }
    celery
}

/// Sums the task-event samples of Flower's `flower_events_total{worker,type,task}` counter.
fn flower_applied(port: u16) -> Applied {
    let metrics =
        http::text(&format!("http://127.0.0.1:{port}/metrics"), None, None).unwrap_or_default();
    let mut applied = [0; 3];
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("flower_events_total{"))
    {
        let value = line
            .rsplit_once(' ')
            .and_then(|(_, v)| v.parse::<f64>().ok())
            .unwrap_or(0.0) as u64;
        for (i, kind) in ["task-received", "task-started", "task-succeeded"]
            .iter()
            .enumerate()
        {
            if line.contains(&format!("type=\"{kind}\"")) {
                applied[i] += value;
            }
        }
    }
    applied
}

fn run_flower(celery: &Path, plan: Plan) -> Row {
    flushdb();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let log = dir.path().join("flower.log");
    let flower = Proc(
        Command::new(celery)
            .current_dir(dir.path())
            .args(["--broker", broker_url(), "flower"])
            .arg(format!("--port={port}"))
            .arg("--address=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while http::text(&format!("http://127.0.0.1:{port}/healthcheck"), None, None).is_none() {
        assert!(
            Instant::now() < deadline,
            "Flower did not start:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let measured = measure(plan, &[flower.pid()], &mut || flower_applied(port));
    let processes = vec![("flower", rss_kib(flower.pid()), cpu_secs(flower.pid()))];
    drop(flower);
    flushdb();
    Row {
        rate: plan.rate,
        system: "Flower 2.2.0",
        measured,
        reported_dropped: None,
        processes,
        reconnects_logged: count_lines(&log, "Failed to capture events"),
        spooled: None,
    }
}

/// Task events whose effect the brain stored: a receipt time, a start time, and the succeeded
/// state with its result.
fn taskward_applied(store: &Store) -> Applied {
    use schema::tasks::dsl as t;
    store
        .read_blocking("bench_applied", |c| {
            let project = projects::find(c, &"default".parse().unwrap())?;
            let (received, started): (i64, i64) = t::tasks
                .filter(t::project_id.eq(&project.id))
                .select((
                    diesel::dsl::count(t::received_at),
                    diesel::dsl::count(t::started_at),
                ))
                .first(c)?;
            let succeeded: i64 = t::tasks
                .filter(t::project_id.eq(&project.id))
                .filter(t::state.eq("succeeded"))
                .filter(t::result.is_not_null())
                .count()
                .get_result(c)?;
            Ok([received as u64, started as u64, succeeded as u64])
        })
        .unwrap()
}

/// Task updates in the agent's spool after the last batch the brain acknowledged (the spool's
/// files: `acked` holds that seq, `*.seg` one JSON batch a line).
fn spool_backlog(spool: &Path) -> u64 {
    let acked: u64 = std::fs::read_to_string(spool.join("acked"))
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0);
    let mut backlog = 0;
    for entry in std::fs::read_dir(spool).into_iter().flatten().flatten() {
        if entry.path().extension().is_none_or(|e| e != "seg") {
            continue;
        }
        for line in std::fs::read_to_string(entry.path())
            .unwrap_or_default()
            .lines()
        {
            let Ok(batch) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if batch["seq"].as_u64().is_some_and(|seq| seq > acked) {
                backlog += batch["updates"].as_array().map_or(0, |u| {
                    u.iter().filter(|u| u["type"] == "task").count() as u64
                });
            }
        }
    }
    backlog
}

fn run_taskward(bin: &Path, plan: Plan) -> Row {
    flushdb();
    let mut s: Stack = support::setup(bin, None, &["--engine", "celery", "--broker", broker_url()]);
    let store = Store::open(&s.store_url).unwrap();
    start_agent(&mut s, "info");
    let deadline = Instant::now() + Duration::from_secs(30);
    while count_lines(&s.agent.log_path(), "reading Celery events") == 0 {
        assert!(
            Instant::now() < deadline,
            "the agent did not subscribe:\n{}",
            std::fs::read_to_string(s.agent.log_path()).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (brain, agent) = (s.brain.pid().unwrap(), s.agent.pid().unwrap());
    let measured = measure(plan, &[brain, agent], &mut || taskward_applied(&store));
    let agent_url = format!("{}/api/v1/projects/default/agents/{}", s.url, s.agent_id);
    let reported_dropped =
        http::json(&agent_url, Some(&s.token), None).and_then(|a| a["dropped_events"].as_u64());
    let processes = vec![
        ("brain", rss_kib(brain), cpu_secs(brain)),
        ("agent", rss_kib(agent), cpu_secs(agent)),
    ];
    let reconnects_logged = count_lines(&s.agent.log_path(), "event subscription lost");
    let spooled = Some(spool_backlog(&s.agent.state().join("spool")));
    drop(store);
    drop(s);
    flushdb();
    Row {
        rate: plan.rate,
        system: "Taskward",
        measured,
        reported_dropped,
        processes,
        reconnects_logged,
        spooled,
    }
}

fn env_list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .collect()
}

fn mib(kib: u64) -> u64 {
    (kib + 512) / 1024
}

fn print_tables(rows: &[Row], plan: Plan) {
    println!(
        "\nTask events published at a fixed rate for {} s per run; \"late\" = applied more than \
         {} s after the last one.\n",
        plan.secs,
        plan.drain.as_secs()
    );
    println!(
        "| rate (events/s) | system | sent | applied | lost | lost % | reported as dropped | late | peak RSS MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let rss = r
            .processes
            .iter()
            .map(|(name, kib, _)| format!("{name} {}", mib(*kib)))
            .collect::<Vec<_>>()
            .join(" + ");
        println!(
            "| {} | {} | {} | {} | {} | {:.1} | {} | {} | {rss} |",
            r.rate,
            r.system,
            r.sent(),
            r.applied(),
            r.lost(),
            100.0 * r.lost() as f64 / r.sent().max(1) as f64,
            r.reported_dropped
                .map_or("n/a (no counter)".to_owned(), |d| d.to_string()),
            r.late(),
        );
    }
    println!(
        "\n| rate (events/s) | system | applied received/started/succeeded | sent/s | \
         PUBLISHes heard by nobody | subscriber connections | Redis out-buffer peak MiB | \
         reconnects in its log | all applied after s | left in agent spool | CPU s (tested) | \
         CPU s publisher / Redis / rest of machine | wall s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let m = &r.measured;
        let cpu = r
            .processes
            .iter()
            .map(|(name, _, cpu)| format!("{name} {cpu:.1}"))
            .collect::<Vec<_>>()
            .join(" + ");
        println!(
            "| {} | {} | {} | {:.0} | {} | {} | {:.1} | {} | {} | {} | {cpu} | {:.1} / {:.1} / {:.1} | {:.0} |",
            r.rate,
            r.system,
            m.applied.map(|n| n.to_string()).join(" / "),
            r.sent() as f64 / m.published.secs.max(0.001),
            m.published.unheard,
            m.watch.ids.len(),
            m.watch.peak_omem as f64 / (1024.0 * 1024.0),
            r.reconnects_logged,
            m.caught_up
                .map_or("never".to_owned(), |s| format!("{s:.1}")),
            r.spooled.map_or("n/a".to_owned(), |n| n.to_string()),
            m.cpu.bench,
            m.cpu.redis,
            m.cpu.others,
            m.wall,
        );
    }
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().map_or(default, |v| {
        v.parse().unwrap_or_else(|_| panic!("{name}: a number"))
    })
}

/// A fresh vhost for the AMQP mode, guest allowed.
fn rabbitmq_vhost(create: bool) {
    let ctl = |args: &[&str]| {
        let _ = Command::new("rabbitmqctl").args(args).output();
    };
    ctl(&["delete_vhost", AMQP_VHOST]);
    if create {
        ctl(&["add_vhost", AMQP_VHOST]);
        ctl(&[
            "set_permissions",
            "-p",
            AMQP_VHOST,
            "guest",
            ".*",
            ".*",
            ".*",
        ]);
    }
}

fn main() {
    let mode = match std::env::var("CELERY_BENCH_BROKER").as_deref() {
        Ok("rabbitmq") => Mode::Rabbitmq,
        Ok("redis") | Err(_) => Mode::Redis,
        Ok(other) => panic!("CELERY_BENCH_BROKER: redis or rabbitmq, not {other:?}"),
    };
    MODE.set(mode).unwrap();
    if mode == Mode::Rabbitmq {
        rabbitmq_vhost(true);
    }
    eprintln!("broker: {}", broker_url());
    let rates: Vec<u64> = env_list("CELERY_BENCH_RATES", "5000,10000,25000,50000")
        .iter()
        .map(|r| r.parse().expect("CELERY_BENCH_RATES: events per second"))
        .collect();
    let plan = |rate| Plan {
        rate,
        secs: env_number("CELERY_BENCH_SECS", 30),
        drain: Duration::from_secs(env_number("CELERY_BENCH_DRAIN_SECS", 10)),
        settle: Duration::from_secs(env_number("CELERY_BENCH_SETTLE_SECS", 600)),
    };
    let systems = env_list("CELERY_BENCH_SYSTEMS", "flower,taskward");
    let celery = systems.iter().any(|s| s == "flower").then(flower_celery);
    let brain = systems
        .iter()
        .any(|s| s == "taskward")
        .then(support::brain_bin);
    let mut rows = Vec::new();
    for &rate in &rates {
        for system in &systems {
            wait_for_quiet(Duration::from_secs(env_number(
                "CELERY_BENCH_QUIET_WAIT_SECS",
                300,
            )));
            let row = match system.as_str() {
                "flower" => run_flower(celery.as_deref().unwrap(), plan(rate)),
                "taskward" => run_taskward(brain.as_deref().unwrap(), plan(rate)),
                other => panic!("CELERY_BENCH_SYSTEMS: unknown system {other:?}"),
            };
            eprintln!(
                "{} {} at {rate}/s: sent {}, applied {:?} ({} late), lost {}",
                chrono::Utc::now().format("%H:%M:%S"),
                row.system,
                row.sent(),
                row.measured.applied,
                row.late(),
                row.lost()
            );
            let _ = std::io::stderr().flush();
            rows.push(row);
        }
    }
    if mode == Mode::Rabbitmq {
        rabbitmq_vhost(false);
    }
    println!("\nBroker: {}", broker_url());
    print_tables(&rows, plan(0));
}
