//! `/api/v1/projects/{slug}/schedules` (`../shared/spec/scheduled-tasks.txt` as mapped in the
//! spec README): list, create, get with run history, update, delete, and run now. Viewers
//! read; admins write. Every write is a signed audit row.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::{tags, timestamp};
use crate::app::AppState;
use crate::auth::{Admin, ProjectAccess, Viewer};
use crate::background::schedules::{announce, fire_env};
use crate::error::{ApiError, ErrorBody};
use crate::schedules::action::ScheduleKind;
use crate::schedules::cron::CronSchedule;
use crate::schedules::{fire_in, manage};
use crate::store::projects::Project;
use crate::store::schedules::{self, RunRow, ScheduleRow, trigger};
use crate::store::{StoreError, now_ms};

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
            status: run.status.as_str().to_owned(),
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

fn not_found(id: &str) -> impl Fn(StoreError) -> ApiError + '_ {
    move |e| match e {
        StoreError::NotFound => ApiError::NotFound(format!("schedule {id}")),
        other => other.into(),
    }
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
    Ok(Json(schedule_list(&state, &access.project, &query).await?))
}

/// A project's schedules, filtered (the API's list and the dashboard's schedules page).
pub async fn schedule_list(
    state: &AppState,
    project: &Project,
    query: &ListQuery,
) -> Result<ScheduleList, ApiError> {
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
    let project_id = project.id.clone();
    let rows = state
        .store
        .read("list_schedules", move |conn| {
            schedules::list(conn, &project_id, kind.map(ScheduleKind::as_str), enabled)
        })
        .await?;
    Ok(ScheduleList {
        schedules: rows
            .iter()
            .map(|r| SchedulePublic::new(r, project))
            .collect(),
    })
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
    let checked = manage::check_body(&object(body)?, &access.project.slug)?;
    let ctx = state.audit_as(access.caller.actor());
    let project = access.project;
    let (project_id, user_id) = (project.id.clone(), access.caller.user_id.clone());
    let row = state
        .store
        .write("create_schedule", move |conn| {
            manage::create(conn, &ctx, &project_id, &user_id, checked)
        })
        .await?;
    tracing::info!(schedule = %row.id, kind = %row.kind, cron = %row.cron, zone = %row.timezone, "schedule created");
    Ok((
        StatusCode::CREATED,
        Json(ScheduleWritten {
            success: true,
            schedule: SchedulePublic::new(&row, &project),
        }),
    ))
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
    Ok(Json(schedule_detail(&state, &access.project, &id).await?))
}

/// A schedule of the project with its next due times and recent runs (the API's detail and
/// the dashboard's schedule page).
pub async fn schedule_detail(
    state: &AppState,
    project: &Project,
    id: &str,
) -> Result<ScheduleDetail, ApiError> {
    let (project_id, schedule_id) = (project.id.clone(), id.to_owned());
    let (row, runs) = state
        .store
        .read("get_schedule", move |conn| {
            let row = schedules::find(conn, &project_id, &schedule_id)?;
            let runs = schedules::runs(conn, &row.id, HISTORY)?;
            Ok((row, runs))
        })
        .await
        .map_err(not_found(id))?;
    let upcoming = match (row.enabled, CronSchedule::parse(&row.cron, &row.timezone)) {
        (true, Ok(schedule)) => schedule.upcoming(now_ms(), UPCOMING),
        _ => Vec::new(),
    };
    Ok(ScheduleDetail {
        schedule: SchedulePublic::new(&row, project),
        upcoming,
        history: runs.into_iter().map(RunPublic::from).collect(),
    })
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
    let ctx = state.audit_as(access.caller.actor());
    let project = access.project;
    let (project_id, slug) = (project.id.clone(), project.slug.clone());
    let row = state
        .store
        .write("update_schedule", move |conn| {
            manage::update(conn, &ctx, (&project_id, &slug), &id, changes)
        })
        .await?;
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
    let ctx = state.audit_as(access.caller.actor());
    let project_id = access.project.id.clone();
    state
        .store
        .write("delete_schedule", move |conn| {
            manage::delete(conn, &ctx, &project_id, &id)
        })
        .await?;
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
    let env = fire_env(&state);
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
