//! The agent hub: which agents are connected to this brain, and the WebSocket sessions that
//! carry commands down and results up (`session.rs`).
//!
//! Delivery is level-triggered: a session sends every command of its agent that is `issued`
//! and not expired, on connect, whenever [`Hub::wake`] is called after a mint, and on a short
//! tick. The agent's durable seen-store makes a resent command harmless; a command past its
//! expiry is never sent (the sweeper times it out). Key rotations reach connected agents over
//! their sessions (`rotations.rs`).

pub mod ingest;
pub mod rotations;
pub mod session;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use taskward_shared::protocol::BrokerHealth;
use tokio::sync::{Notify, watch};

/// A live session's handles.
struct Live {
    generation: u64,
    wake: Arc<Notify>,
    /// Dropping the sender tells the session it was replaced.
    _replaced: watch::Sender<()>,
    /// The agent's broker as it last reported it; `None` before its first report (or from an
    /// agent that does not report).
    broker: Option<BrokerHealth>,
}

/// The sessions of this brain process.
#[derive(Default)]
pub struct Hub {
    sessions: Mutex<HashMap<String, Live>>,
    /// Key rotations, pushed to every session (`rotations.rs`).
    pub rotations: rotations::Rotations,
}

/// What a session gets when it registers.
pub struct Registration {
    /// Notified when a command for the agent is minted.
    pub wake: Arc<Notify>,
    /// Errors (sender dropped) when a newer session of the same agent registers.
    pub replaced: watch::Receiver<()>,
}

impl Hub {
    /// Registers a session; an older session of the same agent is told to close.
    pub fn register(&self, agent_id: &str, generation: u64) -> Registration {
        let wake = Arc::new(Notify::new());
        let (tx, rx) = watch::channel(());
        let mut sessions = self.sessions.lock().expect("hub lock");
        if let Some(old) = sessions.get(agent_id)
            && old.generation > generation
        {
            // A newer session already won the race; this one closes at once.
            drop(tx);
        } else {
            sessions.insert(
                agent_id.to_owned(),
                Live {
                    generation,
                    wake: wake.clone(),
                    _replaced: tx,
                    broker: None,
                },
            );
        }
        Registration { wake, replaced: rx }
    }

    /// Removes a session if it is still the current one.
    pub fn unregister(&self, agent_id: &str, generation: u64) {
        let mut sessions = self.sessions.lock().expect("hub lock");
        if sessions
            .get(agent_id)
            .is_some_and(|l| l.generation == generation)
        {
            sessions.remove(agent_id);
        }
    }

    /// Asks the agent's session (if connected here) to send its pending commands now.
    pub fn wake(&self, agent_id: &str) {
        if let Some(live) = self.sessions.lock().expect("hub lock").get(agent_id) {
            live.wake.notify_one();
        }
    }

    /// Records the broker state the agent's current session reports.
    pub fn set_broker(&self, agent_id: &str, generation: u64, health: BrokerHealth) {
        let mut sessions = self.sessions.lock().expect("hub lock");
        if let Some(live) = sessions
            .get_mut(agent_id)
            .filter(|l| l.generation == generation)
        {
            live.broker = Some(health);
        }
    }

    /// The broker state of a connected agent, if it reported one.
    pub fn broker(&self, agent_id: &str) -> Option<BrokerHealth> {
        self.sessions
            .lock()
            .expect("hub lock")
            .get(agent_id)
            .and_then(|l| l.broker.clone())
    }

    /// Whether the agent has a session on this brain.
    pub fn is_online(&self, agent_id: &str) -> bool {
        self.sessions
            .lock()
            .expect("hub lock")
            .contains_key(agent_id)
    }

    /// The agents with a session on this brain.
    pub fn online_agents(&self) -> std::collections::HashSet<String> {
        self.sessions
            .lock()
            .expect("hub lock")
            .keys()
            .cloned()
            .collect()
    }
}
