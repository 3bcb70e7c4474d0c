//! Frames on the WebSocket: the socket type, and sending and receiving one protocol frame.
//! Everything above this module speaks [`AgentFrame`] and [`BrainFrame`]; errors come back as
//! the text a reconnect logs.

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use taskward_shared::protocol::{AgentFrame, BrainFrame};
use tokio_tungstenite::tungstenite::Message;

/// The link's socket, plain or TLS.
pub(super) type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;
/// The sending half of a session.
pub(super) type Sink = SplitSink<Socket, Message>;
/// The receiving half of a session.
pub(super) type Stream = SplitStream<Socket>;

pub(super) async fn send_frame(sink: &mut Sink, frame: &AgentFrame) -> Result<(), String> {
    send_text(
        sink,
        serde_json::to_string(frame).expect("frames serialize"),
    )
    .await
}

/// Sends a frame already encoded (spooled event batches are kept as text).
pub(super) async fn send_text(sink: &mut Sink, text: String) -> Result<(), String> {
    sink.send(Message::Text(text.into()))
        .await
        .map_err(|e| format!("send failed: {e}"))
}

/// The next protocol frame; pings and other non-text messages of the WebSocket are skipped.
pub(super) async fn next_frame(stream: &mut Stream) -> Result<BrainFrame, String> {
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
