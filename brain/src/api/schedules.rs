//! `/api/v1/projects/{slug}/schedules` (`../shared/spec/scheduled-tasks.txt` as mapped in the
//! spec README): list, create, get with run history, update, delete, and run now. Viewers
//! read; admins write. Every write is a signed audit row.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::ToSchema;

use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::{tags, timestamp};
use crate::app::AppState;
use crate::auth::{Admin, ProjectAccess, Viewer};
use crate::error::{ApiError, ErrorBody};
use crate::schedules::action::{self, Action, ScheduleKind};
use crate::schedules::cron::CronSchedule;
use crate::schedules::{FireEnv, announce, fire_in};
use crate::store::projects::Project;
use crate::store::schedules::{self, RunRow, ScheduleRow, trigger};
use crate::store::{AnyConnection, StoreError, StoreResult, agents, audit, now_ms};

/// Most schedules one project may have.
pub const MAX_SCHEDULES: i64 = 1000;
/// Longest schedule name, in characters.
pub const MAX_NAME_CHARS: usize = 200;
/// Runs shown in a schedule's history.
pub const HISTORY: i64 = 50;
/// Due times previewed in `upcoming`.
pub const UPCOMING: usize = 5;

/// A schedule as the API shows it. Its type's settings sit under `<type>Config`
/// (e.g. `retentionConfig`).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SchedulePublic {
    /// `sch_…`.
    pub id: String,
    /// Display name.
    pub name: String,
    /// bulk-retry, purge-queue, retention, health-check, stale-cleanup or command.
    #[serde(rename = "type")]
    pub kind: String,
    /// Whether it fires.
    pub enabled: bool,
    /// The project's slug.
    pub project_id: String,
    /// The project's name.
    pub project_name: String,
    /// Five-field cron expression.
    pub cron_expression: String,
    /// IANA time zone the expression is read in.
    pub timezone: String,
    /// Next due time; null while disabled.
    pub next_run: Option<DateTime<Utc>>,
    /// Last run's start.
    pub last_run: Option<DateTime<Utc>>,
    /// running, success, failed or skipped.
    pub last_status: Option<String>,
    /// The admin who created it (user id).
    pub created_by: String,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// `<type>Config`: the type's settings.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub config: Map<String, Value>,
}

impl SchedulePublic {
    fn new(row: &ScheduleRow, project: &Project) -> SchedulePublic {
        let field = ScheduleKind::parse(&row.kind).map_or("config", ScheduleKind::config_field);
        let mut config = Map::new();
        config.insert(
            field.to_owned(),
            serde_json::from_str(&row.config).unwrap_or(Value::Null),
        );
        SchedulePublic {
            id: row.id.clone(),
            name: row.name.clone(),
            kind: row.kind.clone(),
            enabled: row.enabled,
            project_id: project.slug.clone(),
            project_name: project.name.clone(),
            cron_expression: row.cron.clone(),
            timezone: row.timezone.clone(),
            next_run: row.next_run_at.map(timestamp),
            last_run: row.last_run_at.map(timestamp),
            last_status: row.last_status.clone(),
            created_by: row.created_by.clone(),
            created_at: timestamp(row.created_at),
            updated_at: timestamp(row.updated_at),
            config,
        }
    }
}

/// One run of a schedule.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunPublic {
    /// `run_…`.
    pub id: String,
    /// When it started.
    pub executed_at: DateTime<Utc>,
    /// The due time it fired for; null for "run now".
    pub due_at: Option<DateTime<Utc>>,
    /// cron, catch_up or manual.
    pub trigger: String,
    /// running (waiting on its commands), success, failed or skipped.
    pub status: String,
    /// Milliseconds from start to finish; null while running.
    pub duration: Option<i64>,
    /// What it did: commands issued and their outcomes, a cleanup task, agents removed.
    #[schema(value_type = Object)]
    pub result: Value,
    /// Why it failed.
    pub error: Option<String>,
    /// The commands it issued (signed and chained with the schedule as issuer).
    pub command_ids: Vec<String>,
}

impl From<RunRow> for RunPublic {
    fn from(run: RunRow) -> RunPublic {
        RunPublic {
            executed_at: timestamp(run.started_at),
            due_at: run.due_at.map(timestamp),
            duration: run.finished_at.map(|f| f - run.started_at),
            result: serde_json::from_str(&run.result).unwrap_or(Value::Null),
            command_ids: serde_json::from_str(&run.command_ids).unwrap_or_default(),
            id: run.id,
            trigger: run.trigger_kind,
            status: run.status,
            error: run.error,
        }
    }
}

/// A schedule with its recent runs.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleDetail {
    /// The schedule.
    #[serde(flatten)]
    pub schedule: SchedulePublic,
    /// Its next due times (up to 5), for a preview.
    pub upcoming: Vec<DateTime<Utc>>,
    /// Its newest runs (up to 50), newest first.
    pub history: Vec<RunPublic>,
}

/// The schedules of a project.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleList {
    /// Oldest first.
    pub schedules: Vec<SchedulePublic>,
}

/// A created or updated schedule.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleWritten {
    /// Always true (errors use the error shape).
    pub success: bool,
    /// The schedule as stored.
    pub schedule: SchedulePublic,
}

/// A deleted schedule.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleDeleted {
    /// Always true.
    pub success: bool,
    /// "Schedule deleted".
    pub message: String,
}

/// A run started by "run now".
#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleExecuted {
    /// Always true (the run's own status says how it went).
    pub success: bool,
    /// The run.
    pub execution: RunPublic,
}

/// Filters of the list.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(rename = "type")]
    kind: Option<String>,
    enabled: Option<String>,
}

/// A checked create or update.
struct Checked {
    name: String,
    kind: ScheduleKind,
    enabled: bool,
    cron: String,
    timezone: String,
    schedule: CronSchedule,
    config: Value,
    action: Action,
}

/// Checks a whole schedule body (an update is merged over the stored schedule first). Every
/// error is a 400 naming the field.
fn check_body(body: &Map<String, Value>, project: &Project) -> Result<Checked, ApiError> {
    // A string field, required unless it has a default.
    let text = |field: &str, default: Option<&str>| -> Result<String, ApiError> {
        match (body.get(field), default) {
            (Some(Value::String(s)), _) => Ok(s.clone()),
            (None, Some(d)) => Ok(d.to_owned()),
            (None, None) => Err(ApiError::missing_field(field)),
            (Some(other), _) => Err(ApiError::invalid_field(
                field,
                format!("{field}: must be a string, got {other}"),
            )),
        }
    };
    let kind_name = text("type", None)?;
    let kind = ScheduleKind::parse(&kind_name).ok_or_else(|| {
        ApiError::invalid_field(
            "type",
            format!(
                "type: {kind_name:?} is not a schedule type; expected one of {}",
                ScheduleKind::names()
            ),
        )
    })?;
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
            return Err(ApiError::invalid_field(
                key.clone(),
                format!(
                    "{key}: belongs to type {}, not {kind_name}; send {config_field}",
                    other.as_str()
                ),
            ));
        }
        if !known.contains(&key.as_str()) {
            known.retain(|k| *k != "projectId");
            return Err(ApiError::invalid_field(
                key.clone(),
                format!("{key}: unknown field; expected {}", known.join(", ")),
            ));
        }
    }
    if let Some(project_id) = body.get("projectId")
        && project_id.as_str() != Some(project.slug.as_str())
    {
        return Err(ApiError::invalid_field(
            "projectId",
            format!(
                "projectId: the schedule belongs to the project in the path ({}); leave projectId out or send that slug",
                project.slug
            ),
        ));
    }
    let name = match body.get("name") {
        Some(Value::String(n))
            if !n.trim().is_empty()
                && n.chars().count() <= MAX_NAME_CHARS
                && !n.chars().any(char::is_control) =>
        {
            n.clone()
        }
        None => return Err(ApiError::missing_field("name")),
        Some(_) => {
            return Err(ApiError::invalid_field(
                "name",
                format!(
                    "name: must be a string of 1 to {MAX_NAME_CHARS} characters without control characters"
                ),
            ));
        }
    };
    let enabled = match body.get("enabled") {
        None => true,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(ApiError::invalid_field(
                "enabled",
                format!("enabled: must be true or false, got {other}"),
            ));
        }
    };
    let cron = text("cronExpression", None)?;
    let timezone = text("timezone", Some("UTC"))?;
    let schedule =
        CronSchedule::parse(&cron, &timezone).map_err(|(field, message)| ApiError::BadRequest {
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
        .ok_or_else(|| ApiError::BadRequest {
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
) -> StoreResult<Result<(), ApiError>> {
    if let Action::Issue { agent_id, .. } = &checked.action {
        let id = agent_id.to_string();
        match agents::find(conn, project_id, &id) {
            Err(StoreError::NotFound) => {
                let field = format!("{}.agent_id", checked.kind.config_field());
                return Ok(Err(ApiError::invalid_field(
                    field.clone(),
                    format!("{field}: no agent {id} in this project"),
                )));
            }
            other => {
                other?;
            }
        }
    }
    Ok(Ok(()))
}

/// The next due time of a checked schedule, if enabled.
fn next_run(checked: &Checked, now: i64) -> Option<i64> {
    checked
        .enabled
        .then(|| checked.schedule.next_after(now))
        .flatten()
}

fn not_found(id: &str) -> impl Fn(StoreError) -> ApiError + '_ {
    move |e| match e {
        StoreError::NotFound => ApiError::NotFound(format!("schedule {id}")),
        other => other.into(),
    }
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

fn object(body: Value) -> Result<Map<String, Value>, ApiError> {
    match body {
        Value::Object(map) => Ok(map),
        _ => Err(ApiError::BadRequest {
            code: "invalid_json",
            message: "the body must be a JSON object".into(),
            field: None,
        }),
    }
}

/// Lists a project's schedules (viewer); `type` and `enabled` filter.
#[utoipa::path(get, path = "/api/v1/projects/{slug}/schedules", tag = tags::SCHEDULES,
    params(("slug" = String, Path, description = "Project slug"),
        ("type" = Option<String>, Query, description = "bulk-retry, purge-queue, retention, health-check, stale-cleanup or command"),
        ("enabled" = Option<bool>, Query, description = "true or false")),
    responses((status = 200, body = ScheduleList), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    access: ProjectAccess<Viewer>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<ScheduleList>, ApiError> {
    let kind = query
        .kind
        .as_deref()
        .map(|t| {
            ScheduleKind::parse(t).ok_or_else(|| {
                ApiError::invalid_field(
                    "type",
                    format!(
                        "type: {t:?} is not a schedule type; expected one of {}",
                        ScheduleKind::names()
                    ),
                )
            })
        })
        .transpose()?;
    let enabled = match query.enabled.as_deref() {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(other) => {
            return Err(ApiError::invalid_field(
                "enabled",
                format!("enabled: must be true or false, got {other:?}"),
            ));
        }
    };
    let project = access.project;
    let project_id = project.id.clone();
    let rows = state
        .store
        .read("list_schedules", move |conn| {
            schedules::list(conn, &project_id, kind.map(ScheduleKind::as_str), enabled)
        })
        .await?;
    Ok(Json(ScheduleList {
        schedules: rows
            .iter()
            .map(|r| SchedulePublic::new(r, &project))
            .collect(),
    }))
}

/// Creates a schedule (admin). The body names `type`, `cronExpression` (five fields),
/// `timezone` (IANA, default UTC), `name`, `enabled` (default true) and the type's
/// `<type>Config`.
#[utoipa::path(post, path = "/api/v1/projects/{slug}/schedules", tag = tags::SCHEDULES,
    params(("slug" = String, Path, description = "Project slug")),
    request_body(content = Object, description = "name, type, enabled, cronExpression, timezone and the type's <type>Config"),
    responses((status = 201, body = ScheduleWritten), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    access: ProjectAccess<Admin>,
    ApiJson(body): ApiJson<Value>,
) -> Result<(StatusCode, Json<ScheduleWritten>), ApiError> {
    let checked = check_body(&object(body)?, &access.project)?;
    let ctx = state.audit_as(&access.caller);
    let project = access.project;
    let (project_id, user_id) = (project.id.clone(), access.caller.user_id.clone());
    let row = state
        .store
        .write("create_schedule", move |conn| {
            if let Err(refusal) = agent_in_project(conn, &project_id, &checked)? {
                return Ok(Err(refusal));
            }
            if schedules::count(conn, &project_id)? >= MAX_SCHEDULES {
                return Ok(Err(ApiError::Conflict(format!(
                    "this project has {MAX_SCHEDULES} schedules, the most allowed; delete one first"
                ))));
            }
            let now = now_ms();
            let row = ScheduleRow {
                id: format!("sch_{}", uuid::Uuid::new_v4().simple()),
                project_id: project_id.clone(),
                next_run_at: next_run(&checked, now),
                name: checked.name,
                kind: checked.kind.as_str().to_owned(),
                enabled: checked.enabled,
                cron: checked.cron,
                timezone: checked.timezone,
                config: checked.config.to_string(),
                last_run_at: None,
                last_status: None,
                created_by: user_id,
                created_at: now,
                updated_at: now,
            };
            schedules::insert(conn, &row)?;
            audit::append(
                conn,
                &ctx,
                &audit::project_chain(&project_id),
                "schedule.created",
                None,
                audit_view(&row),
            )?;
            Ok(Ok(row))
        })
        .await??;
    tracing::info!(schedule = %row.id, kind = %row.kind, cron = %row.cron, zone = %row.timezone, "schedule created");
    Ok((
        StatusCode::CREATED,
        Json(ScheduleWritten {
            success: true,
            schedule: SchedulePublic::new(&row, &project),
        }),
    ))
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

/// Reads a schedule with its next due times and recent runs (viewer).
#[utoipa::path(get, path = "/api/v1/projects/{slug}/schedules/{id}", tag = tags::SCHEDULES,
    params(("slug" = String, Path, description = "Project slug"), ("id" = String, Path, description = "Schedule id")),
    responses((status = 200, body = ScheduleDetail), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    access: ProjectAccess<Viewer>,
    ApiPath((_slug, id)): ApiPath<(String, String)>,
) -> Result<Json<ScheduleDetail>, ApiError> {
    let project = access.project;
    let (project_id, schedule_id) = (project.id.clone(), id.clone());
    let (row, runs) = state
        .store
        .read("get_schedule", move |conn| {
            let row = schedules::find(conn, &project_id, &schedule_id)?;
            let runs = schedules::runs(conn, &row.id, HISTORY)?;
            Ok((row, runs))
        })
        .await
        .map_err(not_found(&id))?;
    let upcoming = match (row.enabled, CronSchedule::parse(&row.cron, &row.timezone)) {
        (true, Ok(schedule)) => schedule.upcoming(now_ms(), UPCOMING),
        _ => Vec::new(),
    };
    Ok(Json(ScheduleDetail {
        schedule: SchedulePublic::new(&row, &project),
        upcoming,
        history: runs.into_iter().map(RunPublic::from).collect(),
    }))
}

/// Updates a schedule (admin): any of name, enabled, cronExpression, timezone and the type's
/// settings; the result is checked as a whole. Enabling or changing the timing recomputes
/// `nextRun` from now.
#[utoipa::path(put, path = "/api/v1/projects/{slug}/schedules/{id}", tag = tags::SCHEDULES,
    params(("slug" = String, Path, description = "Project slug"), ("id" = String, Path, description = "Schedule id")),
    request_body(content = Object, description = "The fields to change"),
    responses((status = 200, body = ScheduleWritten), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    access: ProjectAccess<Admin>,
    ApiPath((_slug, id)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<Value>,
) -> Result<Json<ScheduleWritten>, ApiError> {
    let changes = object(body)?;
    let ctx = state.audit_as(&access.caller);
    let project = access.project;
    let (project_id, schedule_id, owner) = (project.id.clone(), id.clone(), project.clone());
    let row = state
        .store
        .write("update_schedule", move |conn| {
            let mut row = schedules::find(conn, &project_id, &schedule_id)?;
            let mut merged = as_body(&row);
            // A new type brings its own settings; the old type's go.
            if let Some(new_kind) = changes.get("type").and_then(Value::as_str)
                && new_kind != row.kind
                && let Some(old) = ScheduleKind::parse(&row.kind)
            {
                merged.remove(old.config_field());
            }
            merged.extend(changes);
            let checked = match check_body(&merged, &owner) {
                Ok(checked) => checked,
                Err(refusal) => return Ok(Err(refusal)),
            };
            if let Err(refusal) = agent_in_project(conn, &project_id, &checked)? {
                return Ok(Err(refusal));
            }
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
                &ctx,
                &audit::project_chain(&project_id),
                "schedule.updated",
                None,
                audit_view(&row),
            )?;
            Ok(Ok(row))
        })
        .await
        .map_err(not_found(&id))??;
    Ok(Json(ScheduleWritten {
        success: true,
        schedule: SchedulePublic::new(&row, &project),
    }))
}

/// Deletes a schedule and its run history (admin); its audit rows stay.
#[utoipa::path(delete, path = "/api/v1/projects/{slug}/schedules/{id}", tag = tags::SCHEDULES,
    params(("slug" = String, Path, description = "Project slug"), ("id" = String, Path, description = "Schedule id")),
    responses((status = 200, body = ScheduleDeleted), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    access: ProjectAccess<Admin>,
    ApiPath((_slug, id)): ApiPath<(String, String)>,
) -> Result<Json<ScheduleDeleted>, ApiError> {
    let ctx = state.audit_as(&access.caller);
    let (project_id, schedule_id) = (access.project.id.clone(), id.clone());
    state
        .store
        .write("delete_schedule", move |conn| {
            let row = schedules::find(conn, &project_id, &schedule_id)?;
            schedules::delete(conn, &project_id, &schedule_id)?;
            audit::append(
                conn,
                &ctx,
                &audit::project_chain(&project_id),
                "schedule.deleted",
                None,
                audit_view(&row),
            )?;
            Ok(())
        })
        .await
        .map_err(not_found(&id))?;
    Ok(Json(ScheduleDeleted {
        success: true,
        message: "Schedule deleted".into(),
    }))
}

/// Runs a schedule now, whatever its timing and even while disabled (admin). Actions that
/// issue commands answer with status `running`; the run finishes when their results arrive.
#[utoipa::path(post, path = "/api/v1/projects/{slug}/schedules/{id}/run", tag = tags::SCHEDULES,
    params(("slug" = String, Path, description = "Project slug"), ("id" = String, Path, description = "Schedule id")),
    responses((status = 200, body = ScheduleExecuted), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn run(
    State(state): State<AppState>,
    access: ProjectAccess<Admin>,
    ApiPath((_slug, id)): ApiPath<(String, String)>,
) -> Result<Json<ScheduleExecuted>, ApiError> {
    let env = FireEnv::of(&state);
    let (project_id, schedule_id) = (access.project.id.clone(), id.clone());
    let fired = state
        .store
        .write("run_schedule", move |conn| {
            let row = schedules::find(conn, &project_id, &schedule_id)?;
            fire_in(conn, &env, &row, trigger::MANUAL, None, 0, now_ms())
        })
        .await
        .map_err(not_found(&id))?;
    let run = announce(&state, fired);
    Ok(Json(ScheduleExecuted {
        success: true,
        execution: run.into(),
    }))
}
