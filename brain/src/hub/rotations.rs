//! Key rotations on the agent link: a connected agent learns each new brain key over its
//! session, before any command signed by that key reaches it, so a rotation never makes an
//! agent refuse a command.
//!
//! Two paths, both sending the signed `key.rotated` row of the site chain (which the agent
//! checks against a key it already trusts before it trusts the new one):
//! - push: a watcher (`background::keyring`) re-reads the keyring every
//!   [`RELOAD_EVERY`](crate::keys::RELOAD_EVERY); when its keys change it publishes the
//!   rotation rows to every session ([`Rotations`]), which sends the ones its agent was not told.
//!   `keys rotate` schedules the switch seconds ahead, so this normally happens well before the
//!   new key signs anything;
//! - backstop: before a session sends a command signed by a key it has not told its agent of
//!   (a switch made by another brain process, a push not yet seen), it reads the rotation rows
//!   and sends the missing ones first ([`Told`]).

use std::collections::HashSet;
use std::sync::Arc;

use taskward_shared::audit::{AuditRow, PublicKeyInfo, Statement};
use tokio::sync::watch;

use crate::store::{Store, StoreResult, audit};

/// The site chain's `key.rotated` rows, oldest first, as last published to the sessions.
pub struct Rotations {
    rows: watch::Sender<Arc<Vec<AuditRow>>>,
}

impl Default for Rotations {
    fn default() -> Rotations {
        Rotations {
            rows: watch::Sender::new(Arc::new(Vec::new())),
        }
    }
}

impl Rotations {
    /// A session's view: changes whenever rotations are published.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Vec<AuditRow>>> {
        self.rows.subscribe()
    }

    /// Publishes the rotation rows (all of them, oldest first); sessions are woken only when
    /// there are more than before.
    pub fn publish(&self, rows: Vec<AuditRow>) {
        self.rows.send_if_modified(|current| {
            if rows.len() == current.len() {
                return false;
            }
            *current = Arc::new(rows);
            true
        });
    }
}

/// The rotation rows of this installation's site chain, oldest first.
pub async fn read_rotations(store: &Store) -> StoreResult<Vec<AuditRow>> {
    let site = store.site_chain();
    store
        .read("key_rotations", move |conn| audit::rotations(conn, &site))
        .await
}

/// The brain keys one session told its agent of: the first key (which every agent pinned
/// at enrollment, or learned a rotation from) and both keys of every rotation row sent.
#[derive(Debug, Default)]
pub struct Told {
    keys: HashSet<String>,
}

impl Told {
    /// What the `welcome` frame told: `ring` as published before `rows` were read (so no key
    /// of the ring lacks its row), and the rotation rows it carried.
    pub fn from_welcome(ring: &[PublicKeyInfo], rows: &[AuditRow]) -> Told {
        let mut told = Told::default();
        if let Some(first) = ring.first() {
            told.keys.insert(first.key_id.clone());
        }
        for row in rows {
            told.learn(row);
        }
        told
    }

    /// Whether the agent was told of this key.
    pub fn knows(&self, key_id: &str) -> bool {
        self.keys.contains(key_id)
    }

    /// The rows of `all` that introduce a key the agent was not told of, oldest first; they
    /// count as told from now on (the caller sends them).
    pub fn untold<'a>(&mut self, all: &'a [AuditRow]) -> Vec<&'a AuditRow> {
        let mut untold = Vec::new();
        for row in all {
            if rotation_keys(row).is_some_and(|(_, new)| !self.keys.contains(&new)) {
                self.learn(row);
                untold.push(row);
            }
        }
        untold
    }

    fn learn(&mut self, row: &AuditRow) {
        if let Some((old, new)) = rotation_keys(row) {
            self.keys.extend(old);
            self.keys.insert(new);
        }
    }
}

/// The old (if named) and new key ids of a rotation row.
fn rotation_keys(row: &AuditRow) -> Option<(Option<String>, String)> {
    let statement: Statement = serde_json::from_str(&row.statement).ok()?;
    let id = |field: &str| statement.payload[field].as_str().map(str::to_owned);
    Some((id("old_key_id"), id("new_key_id")?))
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::SigningKey;
    use taskward_shared::audit::{Actor, ActorKind, STATEMENT_VERSION, genesis_hash};

    use super::*;

    fn rotation(seq: u64, old: &str, new: &str) -> AuditRow {
        let statement = Statement {
            v: STATEMENT_VERSION,
            chain: "site:x".into(),
            seq: seq.to_string(),
            time: "2026-12-03T00:00:00.000Z".into(),
            actor: Actor {
                kind: ActorKind::System,
                id: "brain".into(),
                name: "brain".into(),
            },
            kind: "key.rotated".into(),
            command_id: None,
            payload: serde_json::json!({"old_key_id": old, "new_key_id": new}),
        };
        AuditRow::sign(
            seq,
            &genesis_hash("site:x"),
            &statement,
            &SigningKey::from_bytes(&[7; 32]),
        )
    }

    fn info(id: &str) -> PublicKeyInfo {
        PublicKeyInfo {
            key_id: id.into(),
            public_key: String::new(),
            valid_from_ms: 0,
            valid_until_ms: None,
        }
    }

    #[test]
    fn a_session_sends_each_rotation_once_in_order() {
        let ab = rotation(3, "a", "b");
        let bc = rotation(9, "b", "c");
        let cd = rotation(12, "c", "d");
        let mut told = Told::from_welcome(&[info("a"), info("b")], std::slice::from_ref(&ab));
        assert!(told.knows("a") && told.knows("b") && !told.knows("c"));
        let all = vec![ab.clone(), bc.clone(), cd.clone()];
        let sent: Vec<u64> = told.untold(&all).iter().map(|r| r.seq).collect();
        assert_eq!(sent, [9, 12]);
        assert!(told.knows("d"));
        assert!(told.untold(&all).is_empty(), "told twice");
    }

    #[test]
    fn an_installation_without_rotations_knows_its_first_key() {
        let told = Told::from_welcome(&[info("a")], &[]);
        assert!(told.knows("a") && !told.knows("b"));
    }
}
