//! The agent's long-lived state and one session with the brain: after the handshake it learns
//! key rotations, resends the results the brain has not acknowledged, resumes the event stream,
//! and then serves frames, finished commands, spooled events and pings until the link fails.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use taskward_shared::protocol::{
    AgentFrame, BrainFrame, BrokerHealth, CloseReason, FEATURE_BROKER_HEALTH,
};
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::{Instant, interval};

use crate::brain_url::BrainUrl;
use crate::clock::now_ms;
use crate::config::AgentConfig;
use crate::engines::{self, EngineAdapter};
use crate::identity::{load_credential, load_key};
use crate::seen::SeenStore;
use crate::spool::Spool;
use crate::status::{LastCommand, Status};
use crate::tls;
use crate::trust::Trust;

use super::board::Board;
use super::commands::Commands;
use super::events::{EVENT_CHANNEL, Window, batcher, send_events};
use super::handshake;
use super::results::{Finished, Recorder};
use super::rotation::Rotation;
use super::wire::{Sink, next_frame, send_frame};

/// How often the agent pings; the brain closes sessions silent for 45 s.
const PING_EVERY: Duration = Duration::from_secs(10);
/// Silence from the brain after which the agent reconnects.
const BRAIN_SILENCE: Duration = Duration::from_secs(45);

/// How a session ended.
pub(super) enum SessionEnd {
    /// Another process with this identity connected.
    Replaced,
    /// The link failed; `established` when the handshake had completed (the backoff starts
    /// over).
    Failed { reason: String, established: bool },
}

/// A failure after the handshake.
fn established(reason: String) -> SessionEnd {
    SessionEnd::Failed {
        reason,
        established: true,
    }
}

/// The agent's long-lived state.
pub(super) struct Agent {
    pub config: AgentConfig,
    /// The brains, as the config names them and the plain-HTTP rule allows (one or more).
    pub brains: Rotation,
    /// TLS settings of the link (used when `brain` is `https://`).
    tls: Arc<rustls::ClientConfig>,
    key: Arc<SigningKey>,
    credential: String,
    trust: Trust,
    seen: Arc<Mutex<SeenStore>>,
    pub board: Board,
    commands: Commands,
    results_rx: mpsc::UnboundedReceiver<Finished>,
    session: u64,
    spool: Arc<Mutex<Spool>>,
    spooled: Arc<Notify>,
    /// The engine's broker state, reported to brains that read it.
    broker: Option<watch::Receiver<BrokerHealth>>,
}

impl Agent {
    /// Loads the agent's files, reports commands a crash interrupted, and starts the engine
    /// and its event batcher. An error names what could not be loaded.
    pub async fn start(config: AgentConfig) -> Result<Agent, String> {
        let brains = config
            .brain
            .iter()
            .map(|url| BrainUrl::parse(url, config.allow_insecure))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("brain: {e}"))?;
        let tls = tls::brain_client_config(
            config.ca_file.as_deref(),
            config.brain_cert_sha256.as_deref(),
        )
        .map_err(|e| e.to_string())?;
        let key = Arc::new(load_key(&config.key_file)?);
        let credential = load_credential(&config.credential_file)?;
        let trust = Trust::load(&config.state_dir)?;
        let seen =
            SeenStore::open(&config.state_dir, now_ms()).map_err(|e| format!("seen-store: {e}"))?;
        let seen = Arc::new(Mutex::new(seen));
        let recorder = Recorder::new(key.clone(), config.agent_id.clone(), seen.clone());
        recorder.report_interrupted()?;
        let engine: Arc<dyn EngineAdapter> =
            engines::build(&config.engine, &config.state_dir)?.into();
        tracing::info!(engine = engine.name(), brain = ?config.brain, "agent starting");
        let spool = Spool::open(&config.state_dir, config.spool_max_bytes)
            .map_err(|e| format!("spool: {e}"))?;
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
        let broker = engine.broker_health();
        let (results_tx, results_rx) = mpsc::unbounded_channel();
        let status = {
            let seen = seen.lock().expect("seen lock");
            Status {
                link: "connecting".into(),
                brain: brains[0].base().to_owned(),
                seen_commands: seen.len(),
                results_pending: seen.unacked().len(),
                ..Status::default()
            }
        };
        let board = Board::new(status, config.state_dir.clone());
        let commands = Commands::new(
            &config,
            seen.clone(),
            engine,
            recorder,
            results_tx,
            board.clone(),
        );
        Ok(Agent {
            config,
            brains: Rotation::new(brains),
            tls,
            key,
            credential,
            trust,
            seen,
            board,
            commands,
            results_rx,
            session: 0,
            spool,
            spooled,
            broker,
        })
    }

    /// Opens a session with the current brain and serves it until it ends.
    pub async fn session(&mut self) -> Result<Infallible, SessionEnd> {
        let brain = self.brains.current();
        let handshake::Opened {
            mut sink,
            mut stream,
            session,
            rotations,
            features,
        } = handshake::open(
            brain,
            &self.tls,
            &self.config.agent_id,
            &self.credential,
            &self.key,
        )
        .await
        .map_err(|reason| SessionEnd::Failed {
            reason,
            established: false,
        })?;
        match self.trust.learn_rotations(&rotations) {
            Ok(0) => {}
            Ok(n) => tracing::info!(keys = n, "learned rotated brain keys"),
            Err(e) => {
                tracing::error!(error = %e, "a key rotation row did not verify; keeping the keys this agent trusts")
            }
        }
        self.session = session;
        tracing::info!(session, brain = %brain.base(), "connected to the brain");
        let pending = self.connected(session);
        for result in pending {
            send_frame(&mut sink, &AgentFrame::Result(result))
                .await
                .map_err(established)?;
        }
        // Resume the event stream after the last batch the brain acknowledged.
        let mut window = Window::after(self.spool.lock().expect("spool lock").acked());
        send_events(&self.spool, &mut sink, &mut window)
            .await
            .map_err(established)?;

        // The broker's state now, then each change (only to a brain that reads the frame).
        let mut broker = self
            .broker
            .clone()
            .filter(|_| features.iter().any(|f| f == FEATURE_BROKER_HEALTH));
        if let Some(rx) = &mut broker {
            let now = rx.borrow_and_update().clone();
            self.board.set(|s| s.broker = broker_line(&now));
            send_frame(&mut sink, &AgentFrame::BrokerHealth(now))
                .await
                .map_err(established)?;
        }

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
                    self.on_finished(finished, &mut sink).await.map_err(established)?;
                }
                health = broker_changed(&mut broker) => {
                    self.board.set(|s| s.broker = broker_line(&health));
                    send_frame(&mut sink, &AgentFrame::BrokerHealth(health)).await.map_err(established)?;
                }
                _ = self.spooled.notified() => {
                    send_events(&self.spool, &mut sink, &mut window).await.map_err(established)?;
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

    /// Shows the new session in the status; returns the results to resend.
    fn connected(&self, session: u64) -> Vec<taskward_shared::protocol::SignedResult> {
        let (pending, seen_count) = {
            let seen = self.seen.lock().expect("seen lock");
            (seen.unacked(), seen.len())
        };
        let (spool_bytes, dropped) = {
            let spool = self.spool.lock().expect("spool lock");
            (spool.bytes(), spool.dropped_total())
        };
        let results_pending = pending.len();
        self.board.set(|s| {
            s.spool_bytes = spool_bytes;
            s.dropped_events = dropped;
            s.link = "connected".into();
            s.session = Some(session);
            s.last_error = None;
            s.results_pending = results_pending;
            s.seen_commands = seen_count;
        });
        pending
    }

    /// Reports a command that finished on its task: status first, then the result.
    async fn on_finished(&self, finished: Finished, sink: &mut Sink) -> Result<(), String> {
        let outcome = format!("{:?}", finished.result.result.outcome).to_lowercase();
        let id = finished.result.result.command_id.clone();
        let (seen_count, pending) = {
            let seen = self.seen.lock().expect("seen lock");
            (seen.len(), seen.unacked().len())
        };
        self.board.set(|s| {
            s.last_command = Some(LastCommand {
                id,
                kind: finished.kind.clone(),
                outcome,
            });
            s.seen_commands = seen_count;
            s.results_pending = pending;
        });
        send_frame(sink, &AgentFrame::Result(finished.result)).await
    }

    /// Acts on one frame of an established session.
    async fn on_frame(
        &mut self,
        frame: BrainFrame,
        sink: &mut Sink,
        window: &mut Window,
    ) -> Result<(), SessionEnd> {
        match frame {
            BrainFrame::Command { row } => {
                let reply = self
                    .commands
                    .on_command(self.trust.keys(), self.session, row);
                if let Some(reply) = reply {
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
                        let rejected = AgentFrame::Rejected {
                            claimed_command_id: None,
                            reason,
                        };
                        send_frame(sink, &rejected).await.map_err(established)?;
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
                self.board.set(|s| {
                    s.spool_bytes = bytes;
                    s.dropped_events = dropped;
                });
                send_events(&self.spool, sink, window)
                    .await
                    .map_err(established)?;
            }
            BrainFrame::ResultRecorded { command_id } => {
                let mut seen = self.seen.lock().expect("seen lock");
                if let Err(e) = seen.ack(&command_id) {
                    tracing::error!(error = %e, "seen-store write failed");
                }
                let pending = seen.unacked().len();
                drop(seen);
                self.board.set(|s| s.results_pending = pending);
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
}

/// The broker's next state; never, without a broker to watch.
async fn broker_changed(broker: &mut Option<watch::Receiver<BrokerHealth>>) -> BrokerHealth {
    if let Some(rx) = broker
        && rx.changed().await.is_ok()
    {
        return rx.borrow_and_update().clone();
    }
    std::future::pending().await
}

/// The broker's state as `taskward-agent status` prints it.
fn broker_line(health: &BrokerHealth) -> Option<String> {
    Some(match &health.error {
        Some(error) if !health.up => format!("unreachable: {error}"),
        _ => "reachable".to_owned(),
    })
}
