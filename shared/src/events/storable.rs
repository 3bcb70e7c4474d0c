//! Making an update storable by any backend and bounded in size, before it is spooled by the
//! agent and again when the brain receives it (an older or hostile agent may skip the first).
//!
//! One task event carrying a NUL byte (PostgreSQL text cannot hold one) or a 9 MB exception
//! message once made every later batch of its agent fail, so the agent resent the same batch
//! forever and nothing after it was recorded. Here a NUL becomes U+FFFD and a field over
//! [`MAX_FIELD_BYTES`] is cut at a character boundary and named in
//! [`TaskUpdate::truncated`]; the full value stays on the host (the worker's own log, and the
//! agent's argument vault).

use serde_json::Value;

use super::{TaskUpdate, Update, WorkerUpdate};

/// Longest text kept of one task field (result, exception, traceback, arguments as JSON, …),
/// in bytes.
pub const MAX_FIELD_BYTES: usize = 64 * 1024;

/// Longest name-like field (task id, name, queue, worker, priority, parent and root ids): far
/// beyond any real one, small enough that indexes over them stay cheap.
pub const MAX_NAME_BYTES: usize = 1024;

impl Update {
    /// Applies [`TaskUpdate::make_storable`] (or the worker and queue equivalent). Returns
    /// whether anything was changed.
    pub fn make_storable(&mut self) -> bool {
        match self {
            Update::Task(task) => task.make_storable(),
            Update::Worker(worker) => worker.make_storable(),
            Update::QueueDepth { queue, .. } => clean(queue, MAX_NAME_BYTES),
        }
    }
}

impl TaskUpdate {
    /// Replaces NUL bytes and cuts oversized fields, naming each cut field in `truncated`.
    /// Returns whether anything was changed. Idempotent.
    pub fn make_storable(&mut self) -> bool {
        let mut changed = false;
        for (field, value) in [("engine", &mut self.engine), ("task_id", &mut self.task_id)] {
            changed |= self.truncated.note(field, clean(value, MAX_NAME_BYTES));
        }
        for (field, value, cap) in [
            ("name", &mut self.name, MAX_NAME_BYTES),
            ("queue", &mut self.queue, MAX_NAME_BYTES),
            ("worker", &mut self.worker, MAX_NAME_BYTES),
            ("priority", &mut self.priority, MAX_NAME_BYTES),
            ("parent_id", &mut self.parent_id, MAX_NAME_BYTES),
            ("root_id", &mut self.root_id, MAX_NAME_BYTES),
            ("result", &mut self.result, MAX_FIELD_BYTES),
            ("exception", &mut self.exception, MAX_FIELD_BYTES),
            ("traceback", &mut self.traceback, MAX_FIELD_BYTES),
            (
                "args_unavailable",
                &mut self.args_unavailable,
                MAX_FIELD_BYTES,
            ),
        ] {
            if let Some(value) = value {
                changed |= self.truncated.note(field, clean(value, cap));
            }
        }
        for (field, value) in [("args", &mut self.args), ("kwargs", &mut self.kwargs)] {
            if let Some(value) = value {
                changed |= self.truncated.note(field, clean_json(value));
            }
        }
        changed
    }
}

impl WorkerUpdate {
    /// Replaces NUL bytes and cuts oversized names. Returns whether anything was changed.
    pub fn make_storable(&mut self) -> bool {
        let mut changed = clean(&mut self.name, MAX_NAME_BYTES);
        if let Some(pool) = &mut self.pool {
            changed |= clean(pool, MAX_NAME_BYTES);
        }
        for queue in self.queues.iter_mut().flatten() {
            changed |= clean(queue, MAX_NAME_BYTES);
        }
        changed
    }
}

/// The names of fields that were cut, kept on the update.
trait Note {
    /// Records `field` when `cut`; passes `cut` on.
    fn note(&mut self, field: &str, cut: bool) -> bool;
}

impl Note for Vec<String> {
    fn note(&mut self, field: &str, cut: bool) -> bool {
        if cut && !self.iter().any(|f| f == field) {
            self.push(field.to_owned());
        }
        cut
    }
}

/// Replaces NUL bytes with U+FFFD, then cuts `text` to at most `cap` bytes at a character
/// boundary. Returns whether the text was cut (a NUL replacement alone is not a cut).
fn clean(text: &mut String, cap: usize) -> bool {
    if text.contains('\0') {
        *text = text.replace('\0', "\u{FFFD}");
    }
    if text.len() <= cap {
        return false;
    }
    let mut end = cap;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    true
}

/// Arguments are JSON: NUL bytes inside strings are escaped when stored, so only size
/// matters. An oversized value becomes a string holding the start of its JSON text.
fn clean_json(value: &mut Value) -> bool {
    if let Value::String(text) = value {
        // A repr the agent could not parse: plain text.
        return clean(text, MAX_FIELD_BYTES);
    }
    let mut text = value.to_string();
    if text.len() <= MAX_FIELD_BYTES {
        return false;
    }
    clean(&mut text, MAX_FIELD_BYTES);
    *value = Value::String(text);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn task() -> TaskUpdate {
        TaskUpdate {
            engine: "celery".into(),
            task_id: "t1".into(),
            ..TaskUpdate::default()
        }
    }

    #[test]
    fn nul_bytes_are_replaced_without_marking_a_cut() {
        let mut update = task();
        update.exception = Some("boom\0here".into());
        update.name = Some("\0".into());
        assert!(!update.make_storable());
        assert_eq!(update.exception.as_deref(), Some("boom\u{FFFD}here"));
        assert_eq!(update.name.as_deref(), Some("\u{FFFD}"));
        assert!(update.truncated.is_empty());
    }

    #[test]
    fn fields_are_cut_at_their_cap_on_a_character_boundary() {
        let mut update = task();
        // Exactly at the cap: kept whole.
        update.result = Some("r".repeat(MAX_FIELD_BYTES));
        // One byte over, ending in a two-byte character that straddles the cap.
        update.traceback = Some(format!("{}é", "t".repeat(MAX_FIELD_BYTES - 1)));
        update.queue = Some("q".repeat(MAX_NAME_BYTES + 1));
        assert!(update.make_storable());
        assert_eq!(update.result.as_ref().unwrap().len(), MAX_FIELD_BYTES);
        assert_eq!(
            update.traceback.as_ref().unwrap().len(),
            MAX_FIELD_BYTES - 1
        );
        assert_eq!(update.queue.as_ref().unwrap().len(), MAX_NAME_BYTES);
        assert_eq!(update.truncated, ["queue", "traceback"]);
        // Idempotent: a second pass (the brain's) changes nothing more.
        let once = update.clone();
        assert!(!update.make_storable());
        assert_eq!(update, once);
    }

    #[test]
    fn oversized_arguments_become_the_start_of_their_json_text() {
        let mut update = task();
        update.args = Some(json!(["x".repeat(MAX_FIELD_BYTES)]));
        update.kwargs = Some(json!({"small": 1}));
        assert!(update.make_storable());
        let Some(Value::String(text)) = &update.args else {
            panic!("{:?}", update.args)
        };
        assert!(text.starts_with("[\"xxx"));
        assert_eq!(text.len(), MAX_FIELD_BYTES);
        assert_eq!(update.kwargs, Some(json!({"small": 1})));
        assert_eq!(update.truncated, ["args"]);
    }
}
