//! Opening a session: the WebSocket upgrade with the agent's credential, then the brain's
//! challenge, the agent's signed hello, and the brain's welcome (`docs/protocol.md`, "The agent
//! link"). Every step has [`HANDSHAKE_TIMEOUT`], so a brain that accepts the connection and
//! then says nothing costs a reconnect, not a hung agent.

use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::{Signer, SigningKey};
use futures_util::StreamExt;
use rustls::ClientConfig;
use taskward_shared::audit::AuditRow;
use taskward_shared::protocol::{
    AgentFrame, BrainFrame, MAX_FRAME_BYTES, PROTOCOL_VERSION, hello_message,
};
use tokio::time::timeout;
use tokio_tungstenite::Connector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::brain_url::BrainUrl;
use crate::tls::error_chain;

use super::wire::{Sink, Stream, next_frame, send_frame};

/// Time allowed for each step of the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// An authenticated session, as the welcome described it.
pub(super) struct Opened {
    pub sink: Sink,
    pub stream: Stream,
    /// The session generation.
    pub session: u64,
    /// Signed `key.rotated` rows to learn from.
    pub rotations: Vec<AuditRow>,
    /// Optional frames the brain reads (`FEATURE_*`).
    pub features: Vec<String>,
}

/// Connects to `brain` (over TLS with `tls` for an `https://` brain) and authenticates as
/// `agent_id`. A failure is the reason to log; the attempt never counts as established.
pub(super) async fn open(
    brain: &BrainUrl,
    tls: &Arc<ClientConfig>,
    agent_id: &str,
    credential: &str,
    key: &SigningKey,
) -> Result<Opened, String> {
    let url = brain.connect_url();
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| format!("bad brain URL {url}: {e}"))?;
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {credential}")
            .parse()
            .map_err(|_| "credential is not a valid header value".to_owned())?,
    );
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(MAX_FRAME_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES));
    let (socket, _) = timeout(
        HANDSHAKE_TIMEOUT,
        tokio_tungstenite::connect_async_tls_with_config(
            request,
            Some(ws_config),
            true,
            Some(Connector::Rustls(tls.clone())),
        ),
    )
    .await
    .map_err(|_| "connect timed out".to_owned())?
    .map_err(|e| format!("connect to {url}: {}", error_chain(&e)))?;
    let (mut sink, mut stream) = socket.split();

    let nonce = match timeout(HANDSHAKE_TIMEOUT, next_frame(&mut stream)).await {
        Ok(Ok(BrainFrame::Challenge { version, nonce })) if version == PROTOCOL_VERSION => nonce,
        Ok(Ok(other)) => return Err(format!("expected a challenge, got {other:?}")),
        Ok(Err(e)) => return Err(e),
        Err(_) => return Err("no challenge in time".into()),
    };
    let signature = key.sign(&hello_message(&nonce, agent_id));
    send_frame(
        &mut sink,
        &AgentFrame::Hello {
            version: PROTOCOL_VERSION,
            agent_id: agent_id.to_owned(),
            signature: hex::encode(signature.to_bytes()),
        },
    )
    .await?;
    let (session, rotations, features) =
        match timeout(HANDSHAKE_TIMEOUT, next_frame(&mut stream)).await {
            Ok(Ok(BrainFrame::Welcome {
                session,
                rotations,
                features,
                ..
            })) => (session, rotations, features),
            Ok(Ok(BrainFrame::Close { reason })) => {
                return Err(format!("refused: {reason}"));
            }
            Ok(Ok(other)) => return Err(format!("expected welcome, got {other:?}")),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err("no welcome in time".into()),
        };
    Ok(Opened {
        sink,
        stream,
        session,
        rotations,
        features,
    })
}
