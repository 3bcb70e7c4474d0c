//! Celery's task message, protocol v2 (`celery-wire.md` 3): the headers workers and monitors
//! read, the `[args, kwargs, embed]` body and the properties, as a broker-neutral message the
//! transport frames and routes.

use serde_json::{Value, json};

use super::transport::{Outgoing, Properties};
use super::uuid_like;

/// Who published a message (`origin`); Celery writes `gen<pid>@<host>`.
const ORIGIN: &str = "taskward-agent";

/// One call of a task, to be published.
pub struct TaskCall<'a> {
    /// The registered task name.
    pub name: &'a str,
    /// The new message's task id.
    pub id: &'a str,
    /// Positional arguments (a JSON array).
    pub args: &'a Value,
    /// Keyword arguments (a JSON object).
    pub kwargs: &'a Value,
    /// The workflow's first task.
    pub root_id: &'a str,
    /// The task this one hangs under in the task tree.
    pub parent_id: &'a str,
    /// The queue (routing key on the default exchange).
    pub queue: &'a str,
    /// The message priority.
    pub priority: u8,
}

/// The message for `call`: every header Celery itself sends (a message with fewer runs, but
/// leaves monitors without its repr and root; 3.3), and the four-null embed.
pub fn task_message(call: &TaskCall<'_>) -> Outgoing {
    let body = json!([call.args, call.kwargs, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]);
    let headers = json!({
        "lang": "py",
        "task": call.name,
        "id": call.id,
        "shadow": null,
        "eta": null,
        "expires": null,
        "group": null,
        "group_index": null,
        "retries": 0,
        "timelimit": [null, null],
        "root_id": call.root_id,
        "parent_id": call.parent_id,
        "argsrepr": python_repr_args(call.args),
        "kwargsrepr": python_repr(call.kwargs),
        "origin": ORIGIN,
        "ignore_result": false,
        "replaced_task_nesting": 0,
        "stamped_headers": null,
        "stamps": {},
    });
    let Value::Object(headers) = headers else {
        unreachable!("headers are an object")
    };
    Outgoing {
        exchange: String::new(),
        routing_key: call.queue.to_owned(),
        headers,
        properties: Properties {
            correlation_id: Some(call.id.to_owned()),
            reply_to: Some(uuid_like()),
            delivery_mode: 2,
            priority: call.priority,
        },
        body: body.to_string().into_bytes(),
    }
}

/// Python's repr of a JSON value (for the `argsrepr`/`kwargsrepr` headers monitors show).
pub fn python_repr(value: &Value) -> String {
    match value {
        Value::Null => "None".into(),
        Value::Bool(b) => if *b { "True" } else { "False" }.into(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'")),
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(python_repr).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(map) => format!(
            "{{{}}}",
            map.iter()
                .map(|(k, v)| format!(
                    "{}: {}",
                    python_repr(&Value::String(k.clone())),
                    python_repr(v)
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The args tuple as Python shows it: `(1, 2)`, `('a',)`, `()`.
pub fn python_repr_args(args: &Value) -> String {
    match args.as_array() {
        Some(items) if items.len() == 1 => format!("({},)", python_repr(&items[0])),
        Some(items) => format!(
            "({})",
            items.iter().map(python_repr).collect::<Vec<_>>().join(", ")
        ),
        None => python_repr(args),
    }
}

#[cfg(test)]
mod tests {
    use super::super::transport::envelope;
    use super::*;

    #[test]
    fn python_reprs_of_arguments() {
        assert_eq!(python_repr_args(&json!([1, "a"])), "(1, 'a')");
        assert_eq!(python_repr_args(&json!(["x"])), "('x',)");
        assert_eq!(python_repr_args(&json!([])), "()");
        assert_eq!(
            python_repr(&json!({"k": [true, null, "it's"]})),
            r#"{'k': [True, None, 'it\'s']}"#
        );
        // What Celery would show round-trips through the agent's repr reader.
        let repr = python_repr(&json!({"a": "b\\c", "n": 1.5}));
        assert_eq!(
            super::super::pyrepr::parse(&repr).unwrap(),
            json!({"a": "b\\c", "n": 1.5})
        );
    }

    /// Our message carries exactly the headers and properties of the captured `app.add(2, 3)`,
    /// and a body of the same shape.
    #[test]
    fn messages_have_the_shape_of_celerys() {
        let path = format!(
            "{}/../../shared/fixtures/celery/redis/task-v2-add.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let fixture: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let captured: Value = serde_json::from_str(fixture["wire"].as_str().unwrap()).unwrap();
        let message = task_message(&TaskCall {
            name: "app.add",
            id: "i-1",
            args: &json!([2, 3]),
            kwargs: &json!({}),
            root_id: "r-1",
            parent_id: "p-1",
            queue: "celery",
            priority: 0,
        });
        let ours: Value = serde_json::from_str(&envelope::encode(&message, "tag-1")).unwrap();
        let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        for part in ["headers", "properties"] {
            assert_eq!(keys(&ours[part]), keys(&captured[part]), "{part}");
        }
        assert_eq!(keys(&ours), keys(&captured));
        assert_eq!(
            ours["properties"]["delivery_info"],
            captured["properties"]["delivery_info"]
        );
        assert_eq!(ours["headers"]["argsrepr"], "(2, 3)");
        let delivery = envelope::decode(envelope::encode(&message, "t").as_bytes()).unwrap();
        let body: Value = serde_json::from_slice(&delivery.body).unwrap();
        let captured_body = envelope::decode(fixture["wire"].as_str().unwrap().as_bytes()).unwrap();
        let captured_body: Value = serde_json::from_slice(&captured_body.body).unwrap();
        assert_eq!(body, captured_body);
    }
}
