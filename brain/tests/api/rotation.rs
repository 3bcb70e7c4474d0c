//! Key rotation in the store: `keys::rotate` schedules a switch, and every row and checkpoint
//! is signed by the key whose window holds its time, on both sides of the switch.

use std::time::Duration;

use taskward_brain::app::system_actor;
use taskward_brain::keys::{self, MIN_LEAD};
use taskward_brain::store::audit;
use taskward_brain::store::{StoreError, now_ms};
use taskward_shared::audit::{PublicKeyInfo, Statement};

use crate::both_backends;
use crate::support::{Backend, TestApp};

/// The key whose window `[valid_from_ms, valid_until_ms)` holds `time`.
fn holder(keys: &[PublicKeyInfo], time: i64) -> &str {
    &keys
        .iter()
        .find(|k| k.valid_from_ms <= time && k.valid_until_ms.is_none_or(|until| time < until))
        .unwrap_or_else(|| panic!("no key holds {time}: {keys:?}"))
        .key_id
}

fn row_time(statement: &str) -> i64 {
    let statement: Statement = serde_json::from_str(statement).unwrap();
    chrono::DateTime::parse_from_rfc3339(&statement.time)
        .unwrap()
        .timestamp_millis()
}

/// A rotation scheduled 3 s ahead, rows appended every few milliseconds across the
/// switch: the rotation row (before the switch) and every row before it carry the old key,
/// every row from the switch on the new one, with no overlap; the windows meet exactly; a
/// second rotation before the first switch is refused; checkpoints follow the same rule.
async fn rows_around_a_switch_are_signed_by_the_key_of_their_time(backend: Backend) {
    let app = TestApp::new(backend).await;
    let site = app.store.site_chain();
    let before = app.keys.public_keys();
    assert_eq!(before.len(), 1);
    let (store, keys) = (app.store.clone(), app.keys.clone());
    let (switch, rotation) = tokio::task::spawn_blocking(move || {
        keys::rotate(
            &store,
            &keys,
            MIN_LEAD + Duration::from_secs(1),
            &system_actor("test"),
        )
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(switch.old_key_id, before[0].key_id);
    assert_eq!(
        rotation.key_id, switch.old_key_id,
        "the outgoing key signs the rotation"
    );
    let statement: Statement = serde_json::from_str(&rotation.statement).unwrap();
    assert_eq!(statement.kind, "key.rotated");
    assert_eq!(statement.payload["switch_at_ms"], switch.switch_at_ms);
    assert_eq!(statement.payload["new_key_id"], switch.new_key_id);
    assert_eq!(statement.payload["new_public_key"], switch.new_public_key);

    let ring = app.keys.public_keys();
    assert_eq!(ring.len(), 2);
    assert_eq!(ring[0].valid_until_ms, Some(switch.switch_at_ms));
    assert_eq!(ring[1].valid_from_ms, switch.switch_at_ms);
    assert_eq!(ring[1].valid_until_ms, None);

    // A second rotation that would switch before the pending one (an empty window): refused.
    let (store, keys) = (app.store.clone(), app.keys.clone());
    let again = tokio::task::spawn_blocking(move || {
        keys::rotate(&store, &keys, MIN_LEAD, &system_actor("test"))
    })
    .await
    .unwrap();
    assert!(
        matches!(again, Err(keys::KeyError::Refused(_))),
        "{:?}",
        again.map(|(s, _)| s)
    );
    assert_eq!(app.keys.public_keys().len(), 2);

    // Rows every few ms until 300 ms past the switch, and a checkpoint on each side.
    let mut checkpoints = Vec::new();
    while now_ms() < switch.switch_at_ms + 300 {
        let ctx = app.state.audit_as_system();
        let chain = site.clone();
        app.store
            .write("test_tick", move |conn| {
                // Any row the protocol defines for a system actor on the site chain.
                let tick = serde_json::json!({"user": {"id": "tick", "name": "tick"}});
                audit::append(conn, &ctx, &chain, "user.password_set", None, tick)?;
                Ok::<_, StoreError>(())
            })
            .await
            .unwrap();
        if checkpoints.is_empty() || (checkpoints.len() == 1 && now_ms() > switch.switch_at_ms) {
            checkpoints.push(app.checkpoint(&site).await);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let chain = site.clone();
    let rows = app
        .store
        .read("test_rows", move |conn| {
            audit::page(conn, &chain, 0, 100_000)
        })
        .await
        .unwrap();
    let (mut old, mut new, mut last) = (0, 0, i64::MIN);
    for row in &rows {
        let time = row_time(&row.statement);
        assert!(time >= last, "row {}: time goes back", row.seq);
        last = time;
        assert_eq!(
            row.key_id,
            holder(&ring, time),
            "row {} at {time} (switch at {}) is signed outside its key's window",
            row.seq,
            switch.switch_at_ms
        );
        if row.kind == "user.password_set" && row.statement.contains(r#""id":"tick""#) {
            if time < switch.switch_at_ms {
                old += 1;
            } else {
                new += 1;
            }
        }
    }
    assert!(
        old > 10 && new > 10,
        "rows on both sides: {old} before, {new} after"
    );
    assert_eq!(checkpoints.len(), 2);
    for checkpoint in &checkpoints {
        assert_eq!(checkpoint.key_id, holder(&ring, checkpoint.time_ms));
    }
    assert_ne!(checkpoints[0].key_id, checkpoints[1].key_id);
}

both_backends!(rows_around_a_switch_are_signed_by_the_key_of_their_time);
