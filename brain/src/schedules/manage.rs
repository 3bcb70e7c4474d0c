//! Schedules as audited actions: a body is checked whole ([`check_body`]: every error names
//! the field), then created, updated (merged over the stored schedule and checked again) or
//! deleted with its `schedule.created|updated|deleted` row on the project's chain, in the
//! caller's transaction.

use serde_json::{Map, Value, json};

use super::action::{self, Action, ScheduleKind};
use super::cron::CronSchedule;
use crate::refusal::Refusal;
use crate::store::audit::{self, AuditContext};
use crate::store::schedules::{self, ScheduleRow};
use crate::store::{AnyConnection, StoreError, agents, now_ms};

/// Most schedules one project may have.
pub const MAX_SCHEDULES: i64 = 1000;
/// Longest schedule name, in characters.
pub const MAX_NAME_CHARS: usize = 200;
/// A checked create or update.
pub struct Checked {
    name: String,
    kind: ScheduleKind,
    enabled: bool,
    cron: String,
    timezone: String,
    schedule: CronSchedule,
    config: Value,
    action: Action,
}

/// Every key of a schedule body is known, the settings are those of its type, and a
/// `projectId`, if given, names the project in the path.
fn check_keys(
    body: &Map<String, Value>,
    kind: ScheduleKind,
    project_slug: &str,
) -> Result<(), Refusal> {
    let kind_name = kind.as_str();
    let config_field = kind.config_field();
    let mut known = vec![
        "name",
        "type",
        "enabled",
        "cronExpression",
        "timezone",
        "projectId",
        config_field,
    ];
    for key in body.keys() {
        if let Some(other) = ScheduleKind::ALL
            .into_iter()
            .find(|k| k.config_field() == key && *k != kind)
        {
            return Err(Refusal::invalid_field(
                key.clone(),
                format!(
                    "{key}: belongs to type {}, not {kind_name}; send {config_field}",
                    other.as_str()
                ),
            ));
        }
        if !known.contains(&key.as_str()) {
            known.retain(|k| *k != "projectId");
            return Err(Refusal::invalid_field(
                key.clone(),
                format!("{key}: unknown field; expected {}", known.join(", ")),
            ));
        }
    }
    if let Some(project_id) = body.get("projectId")
        && project_id.as_str() != Some(project_slug)
    {
        return Err(Refusal::invalid_field(
            "projectId",
            format!(
                "projectId: the schedule belongs to the project in the path ({}); leave projectId out or send that slug",
                project_slug
            ),
        ));
    }
    Ok(())
}

/// A schedule's name: 1 to [`MAX_NAME_CHARS`] characters, no control characters.
fn check_name(body: &Map<String, Value>) -> Result<String, Refusal> {
    match body.get("name") {
        Some(Value::String(n))
            if !n.trim().is_empty()
                && n.chars().count() <= MAX_NAME_CHARS
                && !n.chars().any(char::is_control) =>
        {
            Ok(n.clone())
        }
        None => Err(Refusal::missing_field("name")),
        Some(_) => Err(Refusal::invalid_field(
            "name",
            format!(
                "name: must be a string of 1 to {MAX_NAME_CHARS} characters without control characters"
            ),
        )),
    }
}

/// Whether the schedule fires (default true).
fn check_enabled(body: &Map<String, Value>) -> Result<bool, Refusal> {
    match body.get("enabled") {
        None => Ok(true),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(Refusal::invalid_field(
            "enabled",
            format!("enabled: must be true or false, got {other}"),
        )),
    }
}

/// Checks a whole schedule body (an update is merged over the stored schedule first). Every
/// error is a 400 naming the field.
pub fn check_body(body: &Map<String, Value>, project_slug: &str) -> Result<Checked, Refusal> {
    // A string field, required unless it has a default.
    let text = |field: &str, default: Option<&str>| -> Result<String, Refusal> {
        match (body.get(field), default) {
            (Some(Value::String(s)), _) => Ok(s.clone()),
            (None, Some(d)) => Ok(d.to_owned()),
            (None, None) => Err(Refusal::missing_field(field)),
            (Some(other), _) => Err(Refusal::invalid_field(
                field,
                format!("{field}: must be a string, got {other}"),
            )),
        }
    };
    let kind_name = text("type", None)?;
    let kind = ScheduleKind::parse(&kind_name).ok_or_else(|| {
        Refusal::invalid_field(
            "type",
            format!(
                "type: {kind_name:?} is not a schedule type; expected one of {}",
                ScheduleKind::names()
            ),
        )
    })?;
    let config_field = kind.config_field();
    check_keys(body, kind, project_slug)?;
    let name = check_name(body)?;
    let enabled = check_enabled(body)?;
    let cron = text("cronExpression", None)?;
    let timezone = text("timezone", Some("UTC"))?;
    let schedule =
        CronSchedule::parse(&cron, &timezone).map_err(|(field, message)| Refusal::Invalid {
            code: if field == "cronExpression" {
                "invalid_cron"
            } else {
                "invalid_timezone"
            },
            message: format!("{field}: {message}"),
            field: Some(field.into()),
        })?;
    let config = body
        .get(config_field)
        .cloned()
        .ok_or_else(|| Refusal::Invalid {
            code: "missing_field",
            message: format!(
                "{config_field}: missing; a {kind_name} schedule needs its settings there"
            ),
            field: Some(config_field.into()),
        })?;
    let (config, action) = action::check(kind, &config)?;
    Ok(Checked {
        name,
        kind,
        enabled,
        cron,
        timezone,
        schedule,
        config,
        action,
    })
}

/// The agent a command schedule targets must be one of the project's: checked in the write.
fn agent_in_project(
    conn: &mut AnyConnection,
    project_id: &str,
    checked: &Checked,
) -> Result<(), Refusal> {
    if let Action::Issue { agent_id, .. } = &checked.action {
        let id = agent_id.to_string();
        match agents::find(conn, project_id, &id) {
            Err(StoreError::NotFound) => {
                let field = format!("{}.agent_id", checked.kind.config_field());
                return Err(Refusal::invalid_field(
                    field.clone(),
                    format!("{field}: no agent {id} in this project"),
                ));
            }
            other => {
                other?;
            }
        }
    }
    Ok(())
}

/// The next due time of a checked schedule, if enabled.
fn next_run(checked: &Checked, now: i64) -> Option<i64> {
    checked
        .enabled
        .then(|| checked.schedule.next_after(now))
        .flatten()
}

/// The stored schedule as a body, so an update can be merged over it and checked whole.
fn as_body(row: &ScheduleRow) -> Map<String, Value> {
    let mut body = Map::new();
    body.insert("name".into(), json!(row.name));
    body.insert("type".into(), json!(row.kind));
    body.insert("enabled".into(), json!(row.enabled));
    body.insert("cronExpression".into(), json!(row.cron));
    body.insert("timezone".into(), json!(row.timezone));
    if let Some(kind) = ScheduleKind::parse(&row.kind) {
        body.insert(
            kind.config_field().into(),
            serde_json::from_str(&row.config).unwrap_or(Value::Null),
        );
    }
    body
}

/// What the audit log records of a schedule.
fn audit_view(row: &ScheduleRow) -> Value {
    json!({
        "schedule": {
            "id": row.id,
            "name": row.name,
            "type": row.kind,
            "enabled": row.enabled,
            "cron": row.cron,
            "timezone": row.timezone,
            "config": serde_json::from_str::<Value>(&row.config).unwrap_or(Value::Null),
        }
    })
}

/// Creates a checked schedule (at most [`MAX_SCHEDULES`] per project; a command's agent
/// must be the project's).
pub fn create(
    conn: &mut AnyConnection,
    ctx: &AuditContext,
    project_id: &str,
    created_by: &str,
    checked: Checked,
) -> Result<ScheduleRow, Refusal> {
    agent_in_project(conn, project_id, &checked)?;
    if schedules::count(conn, project_id)? >= MAX_SCHEDULES {
        return Err(Refusal::Conflict(format!(
            "this project has {MAX_SCHEDULES} schedules, the most allowed; delete one first"
        )));
    }
    let now = now_ms();
    let row = ScheduleRow {
        id: format!("sch_{}", uuid::Uuid::new_v4().simple()),
        project_id: project_id.to_owned(),
        next_run_at: next_run(&checked, now),
        name: checked.name,
        kind: checked.kind.as_str().to_owned(),
        enabled: checked.enabled,
        cron: checked.cron,
        timezone: checked.timezone,
        config: checked.config.to_string(),
        last_run_at: None,
        last_status: None,
        created_by: created_by.to_owned(),
        created_at: now,
        updated_at: now,
    };
    schedules::insert(conn, &row)?;
    audit::append(
        conn,
        ctx,
        &audit::project_chain(project_id),
        "schedule.created",
        None,
        audit_view(&row),
    )?;
    Ok(row)
}

/// The schedule `id` of the project, or a refusal naming it.
fn find(conn: &mut AnyConnection, project_id: &str, id: &str) -> Result<ScheduleRow, Refusal> {
    match schedules::find(conn, project_id, id) {
        Err(StoreError::NotFound) => Err(Refusal::NotFound(format!("schedule {id}"))),
        other => Ok(other?),
    }
}

/// Applies `changes` to schedule `id` of the project (`project`: id and slug). The merged
/// schedule is checked whole; enabling it or changing its timing recomputes its next due
/// time from now.
pub fn update(
    conn: &mut AnyConnection,
    ctx: &AuditContext,
    project: (&str, &str),
    id: &str,
    changes: Map<String, Value>,
) -> Result<ScheduleRow, Refusal> {
    let (project_id, slug) = project;
    let mut row = find(conn, project_id, id)?;
    let mut merged = as_body(&row);
    // A new type brings its own settings; the old type's go.
    if let Some(new_kind) = changes.get("type").and_then(Value::as_str)
        && new_kind != row.kind
        && let Some(old) = ScheduleKind::parse(&row.kind)
    {
        merged.remove(old.config_field());
    }
    merged.extend(changes);
    let checked = check_body(&merged, slug)?;
    agent_in_project(conn, project_id, &checked)?;
    let now = now_ms();
    let timing_changed = checked.cron != row.cron
        || checked.timezone != row.timezone
        || checked.enabled != row.enabled;
    if timing_changed || row.next_run_at.is_none() {
        row.next_run_at = next_run(&checked, now);
    }
    if !checked.enabled {
        row.next_run_at = None;
    }
    row.name = checked.name;
    row.kind = checked.kind.as_str().to_owned();
    row.enabled = checked.enabled;
    row.cron = checked.cron;
    row.timezone = checked.timezone;
    row.config = checked.config.to_string();
    row.updated_at = now;
    schedules::save(conn, &row)?;
    audit::append(
        conn,
        ctx,
        &audit::project_chain(project_id),
        "schedule.updated",
        None,
        audit_view(&row),
    )?;
    Ok(row)
}

/// Deletes schedule `id` of the project and its run history; its audit rows stay.
pub fn delete(
    conn: &mut AnyConnection,
    ctx: &AuditContext,
    project_id: &str,
    id: &str,
) -> Result<(), Refusal> {
    let row = find(conn, project_id, id)?;
    schedules::delete(conn, project_id, id)?;
    audit::append(
        conn,
        ctx,
        &audit::project_chain(project_id),
        "schedule.deleted",
        None,
        audit_view(&row),
    )?;
    Ok(())
}
