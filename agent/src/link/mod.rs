//! The link to the brain: one session at a time over a WebSocket, reconnecting with capped
//! exponential backoff and full jitter. With several brain addresses (brains on one database)
//! each reconnect tries the next one, and the backoff grows once per round through all of them,
//! so a dead brain costs one jittered delay (at most 0.2 s after an established session) before
//! the next is tried. A session authenticates (credential in the upgrade
//! request, then the agent's signature over the brain's challenge), learns key rotations (all of
//! them at connect, then each as the brain pushes it), resends results the brain has not
//! acknowledged, and then takes commands.
//!
//! Commands run on their own tasks; their results are written to the seen-store first (so a
//! lost link loses nothing) and then sent, and resent on every reconnect until acknowledged.
//!
//! `handshake` opens a session (upgrade, challenge, signed hello, welcome); this module runs it.

mod handshake;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use futures_util::{SinkExt, StreamExt};
use taskward_shared::audit::AuditRow;
use taskward_shared::command::IssuedCommand;
use taskward_shared::crypto::random_bytes;
use taskward_shared::events::Update;
use taskward_shared::protocol::{
    AgentFrame, BrainFrame, CloseReason, CommandResult, Outcome, SignedResult,
};
use tokio::sync::{Notify, mpsc};
use tokio::time::{Instant, interval};
use tokio_tungstenite::tungstenite::Message;

use crate::brain_url::BrainUrl;
use crate::checks::{CheckContext, Verdict, check};
use crate::config::AgentConfig;
use crate::engines::{self, EngineAdapter};
use crate::identity::{load_credential, load_key};
use crate::seen::{Entry, SeenStore};
use crate::spool::Spool;
use crate::status::{LastCommand, Status};
use crate::tls;
use crate::trust::Trust;

/// First reconnect delay; doubles per failed attempt.
const BACKOFF_BASE: Duration = Duration::from_millis(200);
/// How often the agent pings; the brain closes sessions silent for 45 s.
const PING_EVERY: Duration = Duration::from_secs(10);
/// Silence from the brain after which the agent reconnects.
const BRAIN_SILENCE: Duration = Duration::from_secs(45);
/// Time allowed for each step of the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most updates in one batch.
const BATCH_MAX: usize = 2000;
/// How long a batch waits for more updates before it is spooled.
const BATCH_LINGER: Duration = Duration::from_millis(5);
/// Batches sent and not yet acknowledged, at most, and the updates in them, at most: enough that
/// the brain receives and decodes the next batches while it writes a group (up to 20,000
/// updates), so its one SQLite writer never waits for the agent; bounded so the brain's queue
/// of decoded updates stays a few tens of MiB and a reconnect resends little. With 16 batches
/// the writer idled between groups: at 50,000 events/s over 90 s ingest fell 9 s behind.
const EVENT_WINDOW: usize = 64;
/// See [`EVENT_WINDOW`].
const EVENT_WINDOW_UPDATES: usize = 40_000;
/// Updates buffered between the adapter and the spool.
const EVENT_CHANNEL: usize = 20_000;

/// The event batches a session has sent and the brain not yet acknowledged.
struct Window {
    /// Last batch sent.
    sent_upto: u64,
    /// Seq and update count of each unacknowledged batch, oldest first.
    unacked: std::collections::VecDeque<(u64, usize)>,
    /// Updates in `unacked`.
    updates: usize,
}

impl Window {
    /// A session's window: it resumes after the last acknowledged batch.
    fn after(acked: u64) -> Window {
        Window {
            sent_upto: acked,
            unacked: Default::default(),
            updates: 0,
        }
    }

    fn sent(&mut self, seq: u64, updates: usize) {
        self.sent_upto = seq;
        self.unacked.push_back((seq, updates));
        self.updates += updates;
    }

    /// Whether another batch may go: always when none is unacknowledged, else while under
    /// both bounds of [`EVENT_WINDOW`].
    fn may_send(&self) -> bool {
        self.unacked.is_empty()
            || (self.unacked.len() < EVENT_WINDOW && self.updates < EVENT_WINDOW_UPDATES)
    }

    /// Forgets the batches up to `acked` (acks are cumulative).
    fn acked(&mut self, acked: u64) {
        self.sent_upto = self.sent_upto.max(acked);
        while let Some(&(seq, updates)) = self.unacked.front() {
            if seq > acked {
                break;
            }
            self.unacked.pop_front();
            self.updates -= updates;
        }
    }
}

/// Why `run` returned.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The agent could not start (files, keys).
    #[error("{0}")]
    Setup(String),
    /// Another process with this identity connected; this one steps aside.
    #[error("another agent process with this identity connected; this one stops")]
    Replaced,
}

/// A finished command, on its way to the brain.
struct Finished {
    result: SignedResult,
    kind: String,
}

/// The agent's long-lived state.
struct Agent {
    config: AgentConfig,
    /// The brains, as the config names them and the plain-HTTP rule allows (one or more).
    brains: Vec<BrainUrl>,
    /// The one the next session is opened with.
    current: usize,
    /// TLS settings of the link (used when `brain` is `https://`).
    tls: Arc<rustls::ClientConfig>,
    key: Arc<SigningKey>,
    credential: String,
    trust: Trust,
    seen: Arc<Mutex<SeenStore>>,
    engine: Arc<dyn EngineAdapter>,
    status: Arc<Mutex<Status>>,
    results_tx: mpsc::UnboundedSender<Finished>,
    results_rx: mpsc::UnboundedReceiver<Finished>,
    session: u64,
    spool: Arc<Mutex<Spool>>,
    spooled: Arc<Notify>,
    recorder: Recorder,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Runs the agent until it is replaced by another process with the same identity (or fails to
/// start). Link failures are retried forever.
pub async fn run(config: AgentConfig) -> Result<(), RunError> {
    let setup = |e: String| RunError::Setup(e);
    let brains = config
        .brain
        .iter()
        .map(|url| BrainUrl::parse(url, config.allow_insecure))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| setup(format!("brain: {e}")))?;
    let tls = tls::brain_client_config(
        config.ca_file.as_deref(),
        config.brain_cert_sha256.as_deref(),
    )
    .map_err(|e| setup(e.to_string()))?;
    let key = Arc::new(load_key(&config.key_file).map_err(setup)?);
    let credential = load_credential(&config.credential_file).map_err(setup)?;
    let trust = Trust::load(&config.state_dir).map_err(setup)?;
    let mut seen = SeenStore::open(&config.state_dir, now_ms())
        .map_err(|e| setup(format!("seen-store: {e}")))?;
    // Commands claimed before a crash and never finished: report them, never run them again.
    for (id, row_hash, expires_at_ms) in seen.interrupted() {
        tracing::warn!(command = %id, "command was interrupted by a restart; reporting it, not running it again");
        let result = sign_result(
            &key,
            &config.agent_id,
            0,
            &id,
            &row_hash,
            Outcome::Interrupted,
            "the agent stopped while running it; not run again".into(),
        );
        seen.finish(&id, expires_at_ms, result)
            .map_err(|e| setup(format!("seen-store: {e}")))?;
    }
    let engine: Arc<dyn EngineAdapter> = engines::build(&config.engine, &config.state_dir)
        .map_err(setup)?
        .into();
    tracing::info!(engine = engine.name(), brain = ?config.brain, "agent starting");
    let spool = Spool::open(&config.state_dir, config.spool_max_bytes)
        .map_err(|e| setup(format!("spool: {e}")))?;
    let spool = Arc::new(Mutex::new(spool));
    let spooled = Arc::new(Notify::new());
    let (events_tx, events_rx) = mpsc::channel(EVENT_CHANNEL);
    tokio::spawn(batcher(
        events_rx,
        spool.clone(),
        spooled.clone(),
        engine.clone(),
    ));
    engine.start_events(events_tx);
    let (results_tx, results_rx) = mpsc::unbounded_channel();
    let status = Status {
        link: "connecting".into(),
        brain: brains[0].base().to_owned(),
        seen_commands: seen.len(),
        results_pending: seen.unacked().len(),
        ..Status::default()
    };
    let seen = Arc::new(Mutex::new(seen));
    let recorder = Recorder {
        key: key.clone(),
        agent_id: config.agent_id.clone(),
        seen: seen.clone(),
    };
    let mut agent = Agent {
        config,
        brains,
        current: 0,
        tls,
        key,
        credential,
        trust,
        seen,
        recorder,
        engine,
        status: Arc::new(Mutex::new(status)),
        results_tx,
        results_rx,
        session: 0,
        spool,
        spooled,
    };
    // Failed attempts since the last session that was established; the backoff grows once per
    // round through every brain, so with one brain up the agent finds it within one round.
    let mut attempt: u32 = 0;
    loop {
        let brain = agent.brains[agent.current].base().to_owned();
        agent.set_status(|s| {
            s.link = "connecting".into();
            s.brain = brain.clone();
        });
        let Err(outcome) = agent.session().await;
        agent.set_status(|s| {
            s.link = "disconnected".into();
            s.session = None;
        });
        match outcome {
            SessionEnd::Replaced => return Err(RunError::Replaced),
            SessionEnd::Failed {
                reason,
                established,
            } => {
                tracing::warn!(%reason, %brain, "link to the brain lost");
                agent.set_status(|s| s.last_error = Some(reason.clone()));
                attempt = if established {
                    0
                } else {
                    attempt.saturating_add(1)
                };
            }
        }
        // The next brain in the list (the same one when there is one).
        agent.current = (agent.current + 1) % agent.brains.len();
        let rounds = attempt / agent.brains.len() as u32;
        let cap = Duration::from_secs(agent.config.reconnect_max_secs.max(1));
        tokio::time::sleep(backoff(rounds, cap)).await;
    }
}

/// Collects adapter updates into batches (up to [`BATCH_MAX`], waiting at most
/// [`BATCH_LINGER`] for more) and spools them; the link sends from the spool. Events the
/// engine reports lost join the spool's dropped count before each batch.
async fn batcher(
    mut rx: mpsc::Receiver<Update>,
    spool: Arc<Mutex<Spool>>,
    spooled: Arc<Notify>,
    engine: Arc<dyn EngineAdapter>,
) {
    let mut buf = Vec::with_capacity(BATCH_MAX);
    let mut lost_counted = 0;
    loop {
        if rx.recv_many(&mut buf, BATCH_MAX).await == 0 {
            return;
        }
        let linger = tokio::time::sleep(BATCH_LINGER);
        tokio::pin!(linger);
        while buf.len() < BATCH_MAX {
            let room = BATCH_MAX - buf.len();
            tokio::select! {
                n = rx.recv_many(&mut buf, room) => if n == 0 { break },
                _ = &mut linger => break,
            }
        }
        let batch = std::mem::replace(&mut buf, Vec::with_capacity(BATCH_MAX));
        let lost = engine.lost_events().saturating_sub(lost_counted);
        lost_counted += lost;
        let spool = spool.clone();
        let written = tokio::task::spawn_blocking(move || {
            let mut spool = spool.lock().expect("spool lock");
            if lost > 0 {
                spool.count_lost(lost)?;
            }
            spool.append(batch)
        })
        .await;
        match written {
            Ok(Ok(_)) => spooled.notify_one(),
            Ok(Err(e)) => tracing::error!(error = %e, "cannot write the event spool; events lost"),
            Err(e) => tracing::error!(error = %e, "spool writer failed"),
        }
    }
}

/// Full jitter: a random delay up to `min(cap, base * 2^attempt)`.
fn backoff(attempt: u32, cap: Duration) -> Duration {
    let ceiling = BACKOFF_BASE
        .saturating_mul(2u32.saturating_pow(attempt.min(16)))
        .min(cap);
    let random = u64::from_le_bytes(random_bytes::<8>());
    let millis = ceiling.as_millis() as u64;
    Duration::from_millis(if millis == 0 {
        0
    } else {
        random % (millis + 1)
    })
}

fn sign_result(
    key: &SigningKey,
    agent_id: &str,
    session: u64,
    command_id: &str,
    row_hash: &str,
    outcome: Outcome,
    detail: String,
) -> SignedResult {
    SignedResult::sign(
        CommandResult {
            command_id: command_id.to_owned(),
            row_hash: row_hash.to_owned(),
            agent_id: agent_id.to_owned(),
            session,
            outcome,
            detail,
            finished_at_ms: now_ms().to_string(),
        },
        key,
    )
}

/// Signs results and makes each durable in the seen-store before anything sends it, so a
/// finished command is never reported as interrupted after a crash.
#[derive(Clone)]
struct Recorder {
    key: Arc<SigningKey>,
    agent_id: String,
    seen: Arc<Mutex<SeenStore>>,
}

impl Recorder {
    fn finish(
        &self,
        session: u64,
        issued: &IssuedCommand,
        row_hash: &str,
        outcome: Outcome,
        detail: String,
    ) -> SignedResult {
        let result = sign_result(
            &self.key,
            &self.agent_id,
            session,
            &issued.id,
            row_hash,
            outcome,
            detail,
        );
        let expires = issued.expires_at().unwrap_or_default();
        if let Err(e) =
            self.seen
                .lock()
                .expect("seen lock")
                .finish(&issued.id, expires, result.clone())
        {
            tracing::error!(error = %e, "cannot record a result");
        }
        result
    }
}

enum SessionEnd {
    Replaced,
    Failed { reason: String, established: bool },
}

fn failed(reason: impl Into<String>) -> SessionEnd {
    SessionEnd::Failed {
        reason: reason.into(),
        established: false,
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn send_frame(
    sink: &mut futures_util::stream::SplitSink<Socket, Message>,
    frame: &AgentFrame,
) -> Result<(), String> {
    send_text(
        sink,
        serde_json::to_string(frame).expect("frames serialize"),
    )
    .await
}

/// Sends a frame already encoded (spooled event batches are kept as text).
async fn send_text(
    sink: &mut futures_util::stream::SplitSink<Socket, Message>,
    text: String,
) -> Result<(), String> {
    sink.send(Message::Text(text.into()))
        .await
        .map_err(|e| format!("send failed: {e}"))
}

async fn next_frame(
    stream: &mut futures_util::stream::SplitStream<Socket>,
) -> Result<BrainFrame, String> {
    loop {
        match stream.next().await {
            None => return Err("the brain closed the connection".into()),
            Some(Err(e)) => return Err(format!("receive failed: {e}")),
            Some(Ok(Message::Text(text))) => {
                return serde_json::from_str(&text).map_err(|e| format!("undecodable frame: {e}"));
            }
            Some(Ok(Message::Close(_))) => return Err("the brain closed the session".into()),
            Some(Ok(_)) => continue,
        }
    }
}

impl Agent {
    fn set_status(&self, change: impl FnOnce(&mut Status)) {
        let mut status = self.status.lock().expect("status lock");
        change(&mut status);
        status.updated_at_ms = now_ms();
        status.save(&self.config.state_dir);
    }

    async fn session(&mut self) -> Result<std::convert::Infallible, SessionEnd> {
        let handshake::Opened {
            mut sink,
            mut stream,
            session,
            rotations,
        } = handshake::open(
            &self.brains[self.current],
            &self.tls,
            &self.config.agent_id,
            &self.credential,
            &self.key,
        )
        .await?;
        match self.trust.learn_rotations(&rotations) {
            Ok(0) => {}
            Ok(n) => tracing::info!(keys = n, "learned rotated brain keys"),
            Err(e) => {
                tracing::error!(error = %e, "a key rotation row did not verify; keeping the keys this agent trusts")
            }
        }
        self.session = session;
        tracing::info!(session, brain = %self.brains[self.current].base(), "connected to the brain");
        let (pending, seen_count) = {
            let seen = self.seen.lock().expect("seen lock");
            (seen.unacked(), seen.len())
        };
        let (spool_bytes, dropped) = {
            let spool = self.spool.lock().expect("spool lock");
            (spool.bytes(), spool.dropped_total())
        };
        self.set_status(|s| {
            s.spool_bytes = spool_bytes;
            s.dropped_events = dropped;
            s.link = "connected".into();
            s.session = Some(session);
            s.last_error = None;
            s.results_pending = pending.len();
            s.seen_commands = seen_count;
        });
        let established = |reason: String| SessionEnd::Failed {
            reason,
            established: true,
        };
        for result in pending {
            send_frame(&mut sink, &AgentFrame::Result(result))
                .await
                .map_err(established)?;
        }
        // Resume the event stream after the last batch the brain acknowledged.
        let mut window = Window::after(self.spool.lock().expect("spool lock").acked());
        self.send_events(&mut sink, &mut window)
            .await
            .map_err(established)?;

        let mut ping = interval(PING_EVERY);
        let mut last_heard = Instant::now();
        loop {
            tokio::select! {
                frame = next_frame(&mut stream) => {
                    let frame = frame.map_err(established)?;
                    last_heard = Instant::now();
                    self.on_frame(frame, &mut sink, &mut window).await?;
                }
                Some(finished) = self.results_rx.recv() => {
                    let outcome = format!("{:?}", finished.result.result.outcome).to_lowercase();
                    let id = finished.result.result.command_id.clone();
                    let (seen_count, pending) = {
                        let seen = self.seen.lock().expect("seen lock");
                        (seen.len(), seen.unacked().len())
                    };
                    self.set_status(|s| {
                        s.last_command = Some(LastCommand { id, kind: finished.kind.clone(), outcome });
                        s.seen_commands = seen_count;
                        s.results_pending = pending;
                    });
                    send_frame(&mut sink, &AgentFrame::Result(finished.result)).await.map_err(established)?;
                }
                _ = self.spooled.notified() => {
                    self.send_events(&mut sink, &mut window).await.map_err(established)?;
                }
                _ = ping.tick() => {
                    if last_heard.elapsed() > BRAIN_SILENCE {
                        return Err(established("the brain went silent".into()));
                    }
                    send_frame(&mut sink, &AgentFrame::Ping { time_ms: now_ms() }).await.map_err(established)?;
                }
            }
        }
    }

    /// Acts on one frame of an established session.
    async fn on_frame(
        &mut self,
        frame: BrainFrame,
        sink: &mut futures_util::stream::SplitSink<Socket, Message>,
        window: &mut Window,
    ) -> Result<(), SessionEnd> {
        let established = |reason: String| SessionEnd::Failed {
            reason,
            established: true,
        };
        match frame {
            BrainFrame::Command { row } => {
                if let Some(reply) = self.on_command(row) {
                    send_frame(sink, &reply).await.map_err(established)?;
                }
            }
            BrainFrame::Rotation { row } => {
                let seq = row.seq;
                match self.trust.learn_rotations(std::slice::from_ref(&row)) {
                    Ok(0) => {}
                    Ok(_) => tracing::info!(seq, "learned a rotated brain key during the session"),
                    Err(reason) => {
                        tracing::error!(%reason, "a key rotation row did not verify; keeping the keys this agent trusts");
                        send_frame(
                            sink,
                            &AgentFrame::Rejected {
                                claimed_command_id: None,
                                reason,
                            },
                        )
                        .await
                        .map_err(established)?;
                    }
                }
            }
            BrainFrame::EventsAck { seq } => {
                let (bytes, dropped) = {
                    let mut spool = self.spool.lock().expect("spool lock");
                    if let Err(e) = spool.ack(seq) {
                        tracing::error!(error = %e, "cannot update the spool");
                    }
                    (spool.bytes(), spool.dropped_total())
                };
                self.set_status(|s| {
                    s.spool_bytes = bytes;
                    s.dropped_events = dropped;
                });
                self.send_events(sink, window).await.map_err(established)?;
            }
            BrainFrame::ResultRecorded { command_id } => {
                let mut seen = self.seen.lock().expect("seen lock");
                if let Err(e) = seen.ack(&command_id) {
                    tracing::error!(error = %e, "seen-store write failed");
                }
                let pending = seen.unacked().len();
                drop(seen);
                self.set_status(|s| s.results_pending = pending);
            }
            BrainFrame::Ping { time_ms } => {
                send_frame(sink, &AgentFrame::Pong { time_ms })
                    .await
                    .map_err(established)?;
            }
            BrainFrame::Pong { .. } => {}
            BrainFrame::Close {
                reason: CloseReason::Replaced,
            } => return Err(SessionEnd::Replaced),
            BrainFrame::Close { reason } => {
                return Err(established(format!("closed by the brain: {reason}")));
            }
            other => return Err(established(format!("unexpected frame {other:?}"))),
        }
        Ok(())
    }

    /// Sends spooled batches after the window's last, keeping at most [`EVENT_WINDOW`] batches
    /// and [`EVENT_WINDOW_UPDATES`] updates unacknowledged (always at least one batch).
    async fn send_events(
        &self,
        sink: &mut futures_util::stream::SplitSink<Socket, Message>,
        window: &mut Window,
    ) -> Result<(), String> {
        let batches = {
            let mut spool = self.spool.lock().expect("spool lock");
            window.acked(spool.acked());
            if !window.may_send() {
                return Ok(());
            }
            spool
                .batches_after(window.sent_upto, EVENT_WINDOW - window.unacked.len())
                .map_err(|e| format!("cannot read the spool: {e}"))?
        };
        for batch in batches {
            if !window.may_send() {
                break;
            }
            send_text(
                sink,
                taskward_shared::protocol::events_frame_text(&batch.json),
            )
            .await?;
            window.sent(batch.seq, batch.updates);
        }
        Ok(())
    }

    /// Decides about a delivered command; returns the frame to answer with right away.
    fn on_command(&mut self, row: AuditRow) -> Option<AgentFrame> {
        let now = now_ms();
        let ctx = CheckContext {
            keys: self.trust.keys(),
            agent_id: &self.config.agent_id,
            project_id: &self.config.project_id,
            skew_ms: self.config.clock_skew_secs as i64 * 1000,
        };
        let verdict = {
            let seen = self.seen.lock().expect("seen lock");
            check(&ctx, &row, &seen, now)
        };
        match verdict {
            Verdict::Reject { claimed_id, reason } => {
                tracing::warn!(command = ?claimed_id, %reason, "refused a frame that is not a genuine command for this agent");
                self.set_status(|s| s.rejected_frames += 1);
                Some(AgentFrame::Rejected {
                    claimed_command_id: claimed_id,
                    reason,
                })
            }
            Verdict::Seen { id } => {
                tracing::warn!(command = %id, "command id seen before; not run again");
                let seen = self.seen.lock().expect("seen lock");
                match seen.get(&id) {
                    Some(Entry::Done { result, .. }) => Some(AgentFrame::Result(result.clone())),
                    _ => None,
                }
            }
            Verdict::Refuse { issued, reason } => {
                tracing::warn!(command = %issued.id, %reason, "refused a command");
                self.finish_now(&issued, &row.hash, Outcome::Refused, reason)
            }
            Verdict::Run { issued, command } => {
                let expires = issued.expires_at().unwrap_or(now);
                let claimed = {
                    let mut seen = self.seen.lock().expect("seen lock");
                    seen.claim(&issued.id, &row.hash, expires)
                };
                match claimed {
                    Ok(true) => {}
                    Ok(false) => return None,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot record the command; not running it");
                        return None;
                    }
                }
                if !self.engine.supports(command.kind()) {
                    let detail = format!(
                        "{} is not supported by the {} engine",
                        command.kind(),
                        self.engine.name()
                    );
                    return self.finish_claimed(&issued, &row.hash, Outcome::Failed, detail);
                }
                tracing::info!(command = %issued.id, kind = %command.kind(), "running command");
                let (engine, recorder, tx) = (
                    self.engine.clone(),
                    self.recorder.clone(),
                    self.results_tx.clone(),
                );
                let (session, row_hash) = (self.session, row.hash.clone());
                tokio::spawn(async move {
                    let (outcome, detail) = match engine.execute(&command, &issued).await {
                        Ok(detail) => (Outcome::Succeeded, detail),
                        Err(error) => (Outcome::Failed, error.to_string()),
                    };
                    let result = recorder.finish(session, &issued, &row_hash, outcome, detail);
                    let _ = tx.send(Finished {
                        result,
                        kind: command.kind().to_string(),
                    });
                });
                Some(AgentFrame::Claimed {
                    command_id: row.command_id.clone().unwrap_or_default(),
                })
            }
        }
    }

    /// Records a command as seen and immediately finished (refusals).
    fn finish_now(
        &mut self,
        issued: &IssuedCommand,
        row_hash: &str,
        outcome: Outcome,
        detail: String,
    ) -> Option<AgentFrame> {
        let expires = issued.expires_at().unwrap_or_default();
        let claimed = self
            .seen
            .lock()
            .expect("seen lock")
            .claim(&issued.id, row_hash, expires);
        if !matches!(claimed, Ok(true)) {
            return None;
        }
        self.finish_claimed(issued, row_hash, outcome, detail)
    }

    fn finish_claimed(
        &mut self,
        issued: &IssuedCommand,
        row_hash: &str,
        outcome: Outcome,
        detail: String,
    ) -> Option<AgentFrame> {
        let result = self
            .recorder
            .finish(self.session, issued, row_hash, outcome, detail);
        self.set_status(|s| {
            s.last_command = Some(LastCommand {
                id: issued.id.clone(),
                kind: issued.kind.to_string(),
                outcome: format!("{outcome:?}").to_lowercase(),
            })
        });
        Some(AgentFrame::Result(result))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_event_window_bounds_batches_and_updates() {
        let mut window = Window::after(10);
        assert!(window.may_send());
        // One batch bigger than the update bound still goes when nothing is in flight.
        window.sent(11, EVENT_WINDOW_UPDATES + 1);
        assert!(!window.may_send());
        window.acked(11);
        assert!(window.may_send());
        window.sent(12, EVENT_WINDOW_UPDATES / 2);
        window.sent(13, EVENT_WINDOW_UPDATES / 2 - 1);
        assert!(window.may_send(), "one update below the bound");
        window.sent(14, 1);
        assert!(!window.may_send());
        // Acks are cumulative: acking 13 frees 12 and 13.
        window.acked(13);
        assert_eq!((window.unacked.len(), window.updates), (1, 1));
        for seq in 15..(15 + EVENT_WINDOW as u64 - 1) {
            assert!(window.may_send());
            window.sent(seq, 1);
        }
        assert!(!window.may_send(), "{EVENT_WINDOW} small batches in flight");
        window.acked(10_000);
        assert_eq!((window.unacked.len(), window.updates), (0, 0));
        assert_eq!(window.sent_upto, 10_000);
    }

    #[test]
    fn backoff_is_capped_and_jittered() {
        let cap = Duration::from_secs(30);
        for attempt in 0..40 {
            let d = backoff(attempt, cap);
            assert!(d <= cap, "{attempt}: {d:?}");
        }
        let samples: std::collections::HashSet<u128> =
            (0..50).map(|_| backoff(10, cap).as_millis()).collect();
        assert!(samples.len() > 10, "no jitter");
        assert!(backoff(0, cap) <= BACKOFF_BASE);
    }
}
