//! One agent's WebSocket session, and enrollment.

use std::collections::HashSet;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::response::Response;
use taskward_shared::crypto::{key_id, parse_public_key, random_bytes};
use taskward_shared::events::EventBatch;
use taskward_shared::protocol::{
    AgentFrame, BrainFrame, EnrollRequest, EnrollResponse, FEATURE_BROKER_HEALTH, MAX_FRAME_BYTES,
    PROTOCOL_VERSION, SignedResult, verify_hello,
};
use tokio::time::{Instant, MissedTickBehavior, interval, timeout};

use crate::agents::registry::{self, Enrollment, agent_actor};
use crate::api::extract::ApiJson;
use crate::app::AppState;
use crate::client_addr::ClientAddr;
use crate::commands::lifecycle::{self, Event};
use crate::error::{ApiError, ErrorBody};
use crate::hub::ingest;
use crate::hub::rotations::{Told, read_rotations};
use crate::store::agents::{self, Agent, EnrollError};
use crate::store::audit::{self, AuditContext};
use crate::store::commands;
use crate::store::{StoreError, now_ms};

/// How long the agent has to answer the challenge.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Silence after which a session is considered dead (agents ping every 10 s).
const IDLE_LIMIT: Duration = Duration::from_secs(45);
/// How often the brain pings an agent (the agent reconnects after 45 s of silence).
const PING_EVERY: Duration = Duration::from_secs(15);
/// How often a session re-checks for pending commands without being woken (catches commands
/// minted by another brain process on the same PostgreSQL).
const DELIVERY_TICK: Duration = Duration::from_secs(1);

/// Spends an enrollment token: registers the agent's public key and returns its link credential
/// and the brain keys to pin. Authenticated by the enrollment token itself (no user token).
#[utoipa::path(post, path = "/api/v1/agent/enroll", tag = crate::api::tags::AGENTS, security(()),
    request_body(content = Object, description = "enrollment_token, public_key (hex), hostname"),
    responses((status = 200, description = "agent_id, project_id, credential (shown once), brain_keys"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn enroll(
    State(state): State<AppState>,
    client: ClientAddr,
    ApiJson(body): ApiJson<EnrollRequest>,
) -> Result<Json<EnrollResponse>, ApiError> {
    // The key goes into the signed `agent.enrolled` row as sent, and the log's hex is
    // lowercase only: an uppercase key would make the row fail a strict verifier.
    if body.public_key.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(ApiError::invalid_field(
            "public_key",
            "public_key: lowercase hex (64 digits)",
        ));
    }
    let public = parse_public_key(&body.public_key)
        .map_err(|why| ApiError::invalid_field("public_key", format!("public_key: {why}")))?;
    if let Some(host) = &body.hostname
        && (host.is_empty() || host.len() > 255 || host.chars().any(char::is_control))
    {
        return Err(ApiError::invalid_field(
            "hostname",
            "hostname: 1 to 255 printable characters",
        ));
    }
    let enrollment = Enrollment {
        token: body.enrollment_token,
        key_id: key_id(&public),
        public_key: body.public_key,
        hostname: body.hostname,
    };
    let signer: audit::Signer = state.keys.clone();
    let (agent, credential) = state
        .store
        .write("enroll_agent", move |conn| {
            registry::enroll(conn, signer, &enrollment)
        })
        .await
        .map_err(|err| match err {
            EnrollError::Store(err) => ApiError::from(err),
            refused => {
                tracing::warn!(%refused, %client, "enrollment refused");
                ApiError::Unauthenticated
            }
        })?;
    tracing::info!(agent = %agent.name, "agent enrolled");
    Ok(Json(EnrollResponse {
        agent_id: agent.id,
        project_id: agent.project_id,
        credential: credential.expose().to_owned(),
        brain_keys: state.keys.public_keys(),
    }))
}

/// The agent link. Needs `Authorization: Bearer <agent credential>`; operator tokens do not
/// work here, and agent credentials work nowhere else.
#[utoipa::path(get, path = "/api/v1/agent/connect", tag = crate::api::tags::AGENTS, security(()),
    responses((status = 101, description = "WebSocket session (see docs/protocol.md)"),
        (status = 400, body = ErrorBody, description = "Not a WebSocket upgrade request"),
        (status = 401, body = ErrorBody)))]
pub async fn connect(
    State(state): State<AppState>,
    client: ClientAddr,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    // A refused link is logged (with where it came from, never what it presented): a stolen
    // or revoked credential being tried shows in the brain's log.
    let refused = |why: &str| {
        tracing::warn!(%client, why, "agent link refused");
        ApiError::Unauthenticated
    };
    let credential = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| t.starts_with("twa_"))
        .ok_or_else(|| refused("no agent credential"))?
        .to_owned();
    let agent = state
        .store
        .read("agent_by_credential", move |conn| {
            agents::by_credential(conn, &credential)
        })
        .await?
        .ok_or_else(|| refused("unknown or revoked credential"))?;
    // Checked after the credential, so a caller without one learns nothing more; answered in
    // the API's error shape rather than axum's plain-text rejection.
    let upgrade = upgrade.map_err(|rejection| ApiError::BadRequest {
        code: "websocket_upgrade_required",
        message: format!("the agent link is a WebSocket upgrade: {rejection}"),
        field: None,
    })?;
    Ok(upgrade
        .max_message_size(MAX_FRAME_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .on_upgrade(move |socket| async move {
            let name = agent.name.clone();
            if let Err(reason) = run(state, socket, agent).await {
                tracing::info!(agent = %name, %reason, "agent session ended");
            }
        }))
}

async fn send(socket: &mut WebSocket, frame: &BrainFrame) -> Result<(), String> {
    let text = serde_json::to_string(frame).expect("frames serialize");
    socket
        .send(Message::Text(text.into()))
        .await
        .map_err(|e| format!("send failed: {e}"))
}

async fn recv(socket: &mut WebSocket) -> Result<Option<AgentFrame>, String> {
    match socket.recv().await {
        None => Err("agent closed the connection".into()),
        Some(Err(e)) => Err(format!("receive failed: {e}")),
        Some(Ok(Message::Text(text))) => taskward_shared::protocol::decode_agent_frame(&text)
            .map(Some)
            .map_err(|e| format!("undecodable frame: {e}")),
        Some(Ok(Message::Close(_))) => Err("agent closed the session".into()),
        Some(Ok(_)) => Ok(None),
    }
}

async fn run(state: AppState, mut socket: WebSocket, agent: Agent) -> Result<(), String> {
    let public = agent
        .public_key
        .as_deref()
        .and_then(|k| parse_public_key(k).ok())
        .ok_or("agent has no usable public key")?;
    let nonce = hex::encode(random_bytes::<32>());
    send(
        &mut socket,
        &BrainFrame::Challenge {
            version: PROTOCOL_VERSION,
            nonce: nonce.clone(),
        },
    )
    .await?;
    let hello = timeout(HELLO_TIMEOUT, recv(&mut socket))
        .await
        .map_err(|_| "no hello in time".to_owned())??;
    match hello {
        Some(AgentFrame::Hello {
            version,
            agent_id,
            signature,
        }) if version == PROTOCOL_VERSION
            && agent_id == agent.id
            && verify_hello(&public, &nonce, &agent.id, &signature) => {}
        _ => {
            let _ = send(
                &mut socket,
                &BrainFrame::Close {
                    reason: taskward_shared::protocol::CloseReason::BadHello,
                },
            )
            .await;
            return Err("bad hello (wrong version, id or signature)".into());
        }
    }
    let id = agent.id.clone();
    let generation = state
        .store
        .write("agent_session", move |conn| {
            agents::next_session(conn, &id, now_ms())
        })
        .await
        .map_err(|e| e.to_string())?;
    let mut registration = state.hub.register(&agent.id, generation);
    let result = serve(
        &state,
        &mut socket,
        &agent,
        &public,
        generation,
        &mut registration,
    )
    .await;
    state.hub.unregister(&agent.id, generation);
    if !state.hub.is_online(&agent.id) {
        // Nobody watches the broker now: the gauge says nothing rather than something stale.
        state.metrics.record_broker(&agent.id, None);
    }
    result
}

async fn serve(
    state: &AppState,
    socket: &mut WebSocket,
    agent: &Agent,
    public: &ed25519_dalek::VerifyingKey,
    generation: u64,
    registration: &mut super::Registration,
) -> Result<(), String> {
    // Subscribed before reading, so a rotation published meanwhile is not missed; the ring is
    // read before the rows, so every key in it has its row among them (see `Told`).
    let mut pushed = state.hub.rotations.subscribe();
    let keys = state.keys.public_keys();
    let rotations = read_rotations(&state.store)
        .await
        .map_err(|e| e.to_string())?;
    let mut told = Told::from_welcome(&keys, &rotations);
    send(
        socket,
        &BrainFrame::Welcome {
            session: generation,
            keys,
            rotations,
            features: vec![FEATURE_BROKER_HEALTH.to_owned()],
        },
    )
    .await?;
    tracing::info!(agent = %agent.name, session = generation, "agent connected");
    let mut sent: HashSet<String> = HashSet::new();
    deliver(state, socket, agent, &mut sent, &mut told).await?;
    let mut writer = ingest::start(state.clone(), agent.clone());
    let mut tick = interval(DELIVERY_TICK);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_heard = Instant::now();
    let mut last_touch = Instant::now();
    let mut last_ping = Instant::now();
    loop {
        tokio::select! {
            changed = registration.replaced.changed() => {
                if changed.is_err() {
                    let _ = send(socket, &BrainFrame::Close { reason: taskward_shared::protocol::CloseReason::Replaced }).await;
                    return Err("replaced by a newer session".into());
                }
            }
            _ = registration.wake.notified() => deliver(state, socket, agent, &mut sent, &mut told).await?,
            changed = pushed.changed() => {
                if changed.is_ok() {
                    let all = pushed.borrow_and_update().clone();
                    tell_rotations(socket, agent, &mut told, &all).await?;
                }
            }
            stored = writer.stored.recv() => match stored {
                Some(Ok(seqs)) => {
                    for seq in seqs {
                        send(socket, &BrainFrame::EventsAck { seq }).await?;
                    }
                }
                Some(Err(e)) => return Err(e),
                None => return Err("the event writer stopped".into()),
            },
            _ = tick.tick() => {
                if last_heard.elapsed() > IDLE_LIMIT {
                    return Err("agent silent for too long".into());
                }
                if last_ping.elapsed() >= PING_EVERY {
                    last_ping = Instant::now();
                    send(socket, &BrainFrame::Ping { time_ms: now_ms() }).await?;
                }
                deliver(state, socket, agent, &mut sent, &mut told).await?;
            }
            frame = recv(socket) => {
                let Some(frame) = frame? else { continue };
                last_heard = Instant::now();
                if last_touch.elapsed() > Duration::from_secs(10) {
                    last_touch = Instant::now();
                    let id = agent.id.clone();
                    let _ = state.store.write("agent_touch", move |c| agents::touch(c, &id, now_ms())).await;
                }
                handle(state, socket, agent, public, generation, &writer.batches, frame).await?;
            }
        }
    }
}

/// Sends the agent's pending commands that this session has not sent yet; a command signed by
/// a key the agent was not told of goes after the rotation rows that introduce it.
async fn deliver(
    state: &AppState,
    socket: &mut WebSocket,
    agent: &Agent,
    sent: &mut HashSet<String>,
    told: &mut Told,
) -> Result<(), String> {
    let id = agent.id.clone();
    let pending = state
        .store
        .read("pending_commands", move |conn| {
            commands::pending_for_agent(conn, &id, now_ms())
        })
        .await
        .map_err(|e| e.to_string())?;
    for (record, row) in pending {
        if sent.insert(record.id.clone()) {
            if !told.knows(&row.key_id) {
                let all = read_rotations(&state.store)
                    .await
                    .map_err(|e| e.to_string())?;
                tell_rotations(socket, agent, told, &all).await?;
                if !told.knows(&row.key_id) {
                    tracing::warn!(agent = %agent.name, command = %record.id, key = %row.key_id,
                        "command signed by a key no rotation row introduces");
                }
            }
            send(socket, &BrainFrame::Command { row }).await?;
        }
    }
    Ok(())
}

/// Sends the rotation rows of `all` that the agent was not told of, oldest first.
async fn tell_rotations(
    socket: &mut WebSocket,
    agent: &Agent,
    told: &mut Told,
    all: &[taskward_shared::audit::AuditRow],
) -> Result<(), String> {
    for row in told.untold(all) {
        tracing::info!(agent = %agent.name, seq = row.seq, "telling the agent of a key rotation");
        send(socket, &BrainFrame::Rotation { row: row.clone() }).await?;
    }
    Ok(())
}

async fn handle(
    state: &AppState,
    socket: &mut WebSocket,
    agent: &Agent,
    public: &ed25519_dalek::VerifyingKey,
    generation: u64,
    writer: &tokio::sync::mpsc::Sender<EventBatch>,
    frame: AgentFrame,
) -> Result<(), String> {
    let ctx = AuditContext {
        signer: state.keys.clone(),
        actor: agent_actor(agent),
    };
    match frame {
        AgentFrame::Ping { time_ms } => send(socket, &BrainFrame::Pong { time_ms }).await,
        AgentFrame::Pong { .. } => Ok(()),
        AgentFrame::BrokerHealth(health) => {
            match &health.error {
                Some(error) if !health.up => {
                    tracing::warn!(agent = %agent.name, %error, "agent cannot reach its broker")
                }
                _ => tracing::info!(agent = %agent.name, "agent reaches its broker"),
            }
            state.metrics.record_broker(&agent.id, Some(health.up));
            state.hub.set_broker(&agent.id, generation, health);
            Ok(())
        }
        AgentFrame::Hello { .. } => Err("hello sent twice".into()),
        AgentFrame::Rejected {
            claimed_command_id,
            reason,
        } => {
            tracing::warn!(agent = %agent.name, ?claimed_command_id, %reason, "agent rejected a frame");
            Ok(())
        }
        AgentFrame::Events(batch) => writer
            .send(batch)
            .await
            .map_err(|_| "the event writer stopped".to_owned()),
        AgentFrame::Claimed { command_id } => {
            let agent_id = agent.id.clone();
            let outcome = state
                .store
                .write("command_claimed", move |conn| {
                    let command = commands::find_any(conn, &command_id)?;
                    if command.agent_id != agent_id {
                        return Ok(None);
                    }
                    lifecycle::record(conn, &ctx, &command, Event::Claimed, None, None)
                })
                .await;
            match outcome {
                Ok(_) | Err(StoreError::NotFound) => Ok(()),
                Err(e) => Err(e.to_string()),
            }
        }
        AgentFrame::Result(signed) => {
            let command_id = signed.result.command_id.clone();
            if !signed.verify(public) || signed.result.agent_id != agent.id {
                tracing::warn!(agent = %agent.name, %command_id, "result with a bad signature ignored");
                return Ok(());
            }
            if signed.result.session > generation {
                tracing::warn!(agent = %agent.name, %command_id, "result from a future session ignored");
                return Ok(());
            }
            let recorded = record_result(state, ctx, agent, signed).await;
            match recorded {
                Ok(true) => send(socket, &BrainFrame::ResultRecorded { command_id }).await,
                Ok(false) => Ok(()),
                Err(e) => Err(e.to_string()),
            }
        }
    }
}

/// Records a verified result as its command's outcome (see
/// [`lifecycle::record_result`]).
async fn record_result(
    state: &AppState,
    ctx: AuditContext,
    agent: &Agent,
    signed: SignedResult,
) -> Result<bool, StoreError> {
    let agent_id = agent.id.clone();
    let name = agent.name.clone();
    state
        .store
        .write("command_result", move |conn| {
            lifecycle::record_result(conn, &ctx, &agent_id, &name, &signed)
        })
        .await
}
