//! What a schedule does when it fires: its type and the settings of that type (the API's
//! camelCase `<type>Config` object), checked once when the schedule is written and again
//! each time it fires (an agent may have been removed since).

use serde_json::{Map, Value, json};
use taskward_shared::command::{Command, CommandKind};
use uuid::Uuid;

use crate::agents::stale::MAX_INACTIVE_HOURS;
use crate::commands::parse_request;
use crate::refusal::Refusal;

/// Longest retention window: ten years.
pub const MAX_RETENTION_DAYS: i64 = 3650;

/// The schedule types, spelled as in the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScheduleKind {
    /// Retry up to `max` tasks matching a filter.
    BulkRetry,
    /// Purge a queue (always forced: nobody is there to confirm a depth).
    PurgeQueue,
    /// Delete task records older than N days, through a cleanup task.
    Retention,
    /// Ping every worker of the project's agents; alert on silence.
    HealthCheck,
    /// Remove agents inactive for N hours (the stale runtime rule, every agent).
    StaleCleanup,
    /// Any command kind with its Commands API body.
    Command,
}

impl ScheduleKind {
    /// Every type.
    pub const ALL: [ScheduleKind; 6] = [
        ScheduleKind::BulkRetry,
        ScheduleKind::PurgeQueue,
        ScheduleKind::Retention,
        ScheduleKind::HealthCheck,
        ScheduleKind::StaleCleanup,
        ScheduleKind::Command,
    ];

    /// The API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ScheduleKind::BulkRetry => "bulk-retry",
            ScheduleKind::PurgeQueue => "purge-queue",
            ScheduleKind::Retention => "retention",
            ScheduleKind::HealthCheck => "health-check",
            ScheduleKind::StaleCleanup => "stale-cleanup",
            ScheduleKind::Command => "command",
        }
    }

    /// The name of the type's settings object in the API.
    pub fn config_field(self) -> &'static str {
        match self {
            ScheduleKind::BulkRetry => "bulkRetryConfig",
            ScheduleKind::PurgeQueue => "purgeQueueConfig",
            ScheduleKind::Retention => "retentionConfig",
            ScheduleKind::HealthCheck => "healthCheckConfig",
            ScheduleKind::StaleCleanup => "staleCleanupConfig",
            ScheduleKind::Command => "commandConfig",
        }
    }

    /// Parses the API spelling.
    pub fn parse(text: &str) -> Option<ScheduleKind> {
        ScheduleKind::ALL.into_iter().find(|k| k.as_str() == text)
    }

    /// Every type's spelling, for error messages.
    pub fn names() -> String {
        ScheduleKind::ALL.map(ScheduleKind::as_str).join(", ")
    }
}

/// A checked action, ready to run.
#[derive(Debug, Clone)]
pub enum Action {
    /// Issue one command to one agent (bulk-retry, purge-queue and command schedules).
    Issue {
        /// The agent.
        agent_id: Uuid,
        /// The validated command.
        command: Command,
    },
    /// Spawn a cleanup task deleting task records older than this many days.
    Retention {
        /// Days.
        older_than_days: i64,
    },
    /// Ping the workers of every agent of the project.
    HealthCheck {
        /// Log and count an alert when a worker does not answer.
        alert_on_failure: bool,
    },
    /// Run the stale rule for every agent of the project.
    StaleCleanup {
        /// Hours of inactivity.
        inactive_hours: i64,
    },
}

/// Prefixes a 400's field and message with the settings object it came from.
fn within(prefix: &str, err: Refusal) -> Refusal {
    match err {
        Refusal::Invalid {
            code,
            message,
            field,
        } => Refusal::Invalid {
            code,
            message: format!("{prefix}.{message}"),
            field: Some(match field {
                Some(f) if !f.is_empty() => format!("{prefix}.{f}"),
                _ => prefix.to_owned(),
            }),
        },
        other => other,
    }
}

fn object<'a>(field: &str, value: &'a Value) -> Result<&'a Map<String, Value>, Refusal> {
    value
        .as_object()
        .ok_or_else(|| Refusal::invalid_field(field, format!("{field}: must be a JSON object")))
}

/// Rejects keys outside `allowed`.
fn only(field: &str, map: &Map<String, Value>, allowed: &[&str]) -> Result<(), Refusal> {
    match map.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(unknown) => Err(Refusal::invalid_field(
            format!("{field}.{unknown}"),
            format!(
                "{field}.{unknown}: unknown field; expected {}",
                allowed.join(", ")
            ),
        )),
        None => Ok(()),
    }
}

/// An integer in `low..=high`, or `default` when absent.
fn bounded(
    field: &str,
    map: &Map<String, Value>,
    key: &str,
    (low, high): (i64, i64),
    default: Option<i64>,
) -> Result<i64, Refusal> {
    let name = format!("{field}.{key}");
    match (map.get(key), default) {
        (None | Some(Value::Null), Some(d)) => Ok(d),
        (None | Some(Value::Null), None) => Err(Refusal::missing_field(name)),
        (Some(v), _) => match v.as_i64() {
            Some(n) if (low..=high).contains(&n) => Ok(n),
            _ => Err(Refusal::invalid_field(
                &name,
                format!("{name}: must be an integer between {low} and {high}, got {v}"),
            )),
        },
    }
}

/// Checks a type's settings. Returns the settings as stored (defaults filled in) and the
/// action they describe.
pub fn check(kind: ScheduleKind, config: &Value) -> Result<(Value, Action), Refusal> {
    let field = kind.config_field();
    let map = object(field, config)?;
    match kind {
        ScheduleKind::BulkRetry => {
            only(field, map, &["agent_id", "filter", "max"])?;
            let request = parse_request(CommandKind::BulkRetry, config.clone())
                .map_err(|e| within(field, e))?;
            let (agent_id, command) = (request.agent_id, request.command);
            let stored =
                json!({"agent_id": agent_id, "filter": config["filter"], "max": config["max"]});
            Ok((stored, Action::Issue { agent_id, command }))
        }
        ScheduleKind::PurgeQueue => {
            only(field, map, &["agent_id", "queue"])?;
            // A scheduled purge has nobody to confirm a depth: it is a forced purge.
            let mut body = config.clone();
            body["force"] = json!(true);
            let request =
                parse_request(CommandKind::PurgeQueue, body).map_err(|e| within(field, e))?;
            let (agent_id, command) = (request.agent_id, request.command);
            let stored = json!({"agent_id": agent_id, "queue": config["queue"]});
            Ok((stored, Action::Issue { agent_id, command }))
        }
        ScheduleKind::Retention => {
            only(field, map, &["olderThanDays"])?;
            let days = bounded(field, map, "olderThanDays", (1, MAX_RETENTION_DAYS), None)?;
            Ok((
                json!({"olderThanDays": days}),
                Action::Retention {
                    older_than_days: days,
                },
            ))
        }
        ScheduleKind::HealthCheck => check_health(field, map),
        ScheduleKind::StaleCleanup => {
            only(field, map, &["inactiveHours"])?;
            let hours = bounded(
                field,
                map,
                "inactiveHours",
                (1, MAX_INACTIVE_HOURS),
                Some(24),
            )?;
            Ok((
                json!({"inactiveHours": hours}),
                Action::StaleCleanup {
                    inactive_hours: hours,
                },
            ))
        }
        ScheduleKind::Command => check_command(field, map),
    }
}

/// A health check's settings: `alertOnFailure` (default true).
fn check_health(field: &str, map: &Map<String, Value>) -> Result<(Value, Action), Refusal> {
    only(field, map, &["alertOnFailure"])?;
    let alert = match map.get("alertOnFailure") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(Refusal::invalid_field(
                format!("{field}.alertOnFailure"),
                format!("{field}.alertOnFailure: must be true or false, got {other}"),
            ));
        }
    };
    Ok((
        json!({"alertOnFailure": alert}),
        Action::HealthCheck {
            alert_on_failure: alert,
        },
    ))
}

/// A command schedule's settings: `kind` plus the Commands API body of that kind (no
/// idempotency key: each run is a new command; a purge must be forced).
fn check_command(field: &str, map: &Map<String, Value>) -> Result<(Value, Action), Refusal> {
    let kind_name = match map.get("kind") {
        Some(Value::String(k)) => k.clone(),
        _ => {
            return Err(Refusal::invalid_field(
                format!("{field}.kind"),
                format!(
                    "{field}.kind: required, one of {}",
                    CommandKind::ALL.map(CommandKind::as_str).join(", ")
                ),
            ));
        }
    };
    let command_kind: CommandKind = kind_name.parse().map_err(|e: String| {
        Refusal::invalid_field(format!("{field}.kind"), format!("{field}.kind: {e}"))
    })?;
    if map.contains_key("idempotency_key") {
        return Err(Refusal::invalid_field(
            format!("{field}.idempotency_key"),
            format!(
                "{field}.idempotency_key: not allowed in a schedule (each run is a new command)"
            ),
        ));
    }
    let mut body = map.clone();
    body.remove("kind");
    let request = parse_request(command_kind, Value::Object(body)).map_err(|e| within(field, e))?;
    let (agent_id, command) = (request.agent_id, request.command);
    if let Command::PurgeQueue(purge) = &command
        && (!purge.force || purge.confirm_token.is_some())
    {
        return Err(Refusal::invalid_field(
            format!("{field}.force"),
            format!(
                "{field}.force: a scheduled purge cannot be confirmed against a depth; \
                 it must be forced (force: true, no confirm_token)"
            ),
        ));
    }
    let mut stored = map.clone();
    stored.insert("agent_id".into(), json!(agent_id));
    Ok((Value::Object(stored), Action::Issue { agent_id, command }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(kind: ScheduleKind, config: Value) -> String {
        match check(kind, &config) {
            Err(Refusal::Invalid { field, .. }) => field.unwrap_or_default(),
            other => panic!("{config}: expected a 400, got {other:?}"),
        }
    }

    #[test]
    fn settings_are_checked_and_named() {
        let agent = Uuid::new_v4().to_string();
        use ScheduleKind::{BulkRetry, HealthCheck, PurgeQueue, Retention, StaleCleanup};
        assert_eq!(
            field_of(Retention, json!({})),
            "retentionConfig.olderThanDays"
        );
        assert_eq!(
            field_of(Retention, json!({"olderThanDays": 0})),
            "retentionConfig.olderThanDays"
        );
        assert!(check(Retention, &json!({"olderThanDays": 1})).is_ok());
        assert!(check(Retention, &json!({"olderThanDays": MAX_RETENTION_DAYS})).is_ok());
        assert_eq!(
            field_of(Retention, json!({"olderThanDays": MAX_RETENTION_DAYS + 1})),
            "retentionConfig.olderThanDays"
        );
        assert_eq!(
            field_of(Retention, json!({"olderThanDays": 3, "extra": 1})),
            "retentionConfig.extra"
        );
        assert_eq!(
            field_of(StaleCleanup, json!({"inactiveHours": 8761})),
            "staleCleanupConfig.inactiveHours"
        );
        let (stored, _) = check(StaleCleanup, &json!({})).unwrap();
        assert_eq!(stored, json!({"inactiveHours": 24}));
        assert_eq!(
            field_of(HealthCheck, json!({"alertOnFailure": "yes"})),
            "healthCheckConfig.alertOnFailure"
        );
        assert_eq!(field_of(HealthCheck, json!([])), "healthCheckConfig");
        assert_eq!(
            field_of(
                BulkRetry,
                json!({"agent_id": agent, "filter": {}, "max": 10001})
            ),
            "bulkRetryConfig.max"
        );
        assert_eq!(
            field_of(BulkRetry, json!({"filter": {}, "max": 5})),
            "bulkRetryConfig.agent_id"
        );
        assert_eq!(
            field_of(PurgeQueue, json!({"agent_id": agent, "queue": ""})),
            "purgeQueueConfig.queue"
        );
        let (_, action) = check(PurgeQueue, &json!({"agent_id": agent, "queue": "q"})).unwrap();
        assert!(matches!(action, Action::Issue { command: Command::PurgeQueue(p), .. } if p.force));
        assert_eq!(
            field_of(ScheduleKind::Command, json!({"agent_id": agent})),
            "commandConfig.kind"
        );
        assert_eq!(
            field_of(
                ScheduleKind::Command,
                json!({"kind": "exec", "agent_id": agent})
            ),
            "commandConfig.kind"
        );
        assert_eq!(
            field_of(
                ScheduleKind::Command,
                json!({"kind": "pool-resize", "agent_id": agent, "worker_name": "w", "delta": 101})
            ),
            "commandConfig.delta"
        );
        assert_eq!(
            field_of(
                ScheduleKind::Command,
                json!({"kind": "purge-queue", "agent_id": agent, "queue": "q", "confirm_token": "t"})
            ),
            "commandConfig.force"
        );
        assert_eq!(
            field_of(
                ScheduleKind::Command,
                json!({"kind": "restart-worker", "agent_id": agent, "worker_name": "w", "idempotency_key": "k"})
            ),
            "commandConfig.idempotency_key"
        );
        assert!(
            check(
                ScheduleKind::Command,
                &json!({"kind": "rate-limit", "agent_id": agent, "task_name": "app.add", "rate": "10/m"})
            )
            .is_ok()
        );
    }
}
