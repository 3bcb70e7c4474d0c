//! A project's tasks: the list (simple parameters as sugar over the query grammar, keyset
//! cursors, projections), the detail, the tree of a workflow, and bulk deletes.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::{tags, timestamp};
use crate::app::AppState;
use crate::auth::{Admin, ProjectAccess, Viewer};
use crate::error::{ApiError, ErrorBody};
use crate::export;
use crate::query::filter::{Filter, Scalar};
use crate::query::order;
use crate::refusal::Refusal;
use crate::store::StoreError;
use crate::store::tasks::{self as task_store, TREE_CAP, TaskRow};
use crate::tasks::list::{ListQuery, TaskPlan, read_page};

/// Page size when `limit` is not given.
pub const DEFAULT_LIMIT: i64 = 100;
/// Largest page.
pub const MAX_LIMIT: i64 = 5000;
/// Shortest search term: the indexes match substrings of three characters or more.
pub const SEARCH_MIN: usize = 3;
/// Longest search term.
pub const SEARCH_MAX: usize = 200;

/// A task as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TaskPublic {
    /// Row id.
    pub id: String,
    /// Project id.
    pub project_id: String,
    /// Engine (`celery`).
    pub engine: String,
    /// The engine's task id.
    pub task_id: String,
    /// Task name.
    pub name: Option<String>,
    /// Queue.
    pub queue: Option<String>,
    /// received, started, succeeded, failed, retried, cancelled or lost.
    pub state: String,
    /// Priority (Celery: the message priority, 0-9).
    pub priority: Option<String>,
    /// Positional arguments, redacted on the agent's host (text when unreadable); null when
    /// the agent did not send them. Any JSON value.
    pub args: Option<Value>,
    /// Keyword arguments, redacted on the agent's host (text when unreadable); null when the
    /// agent did not send them. Any JSON value.
    pub kwargs: Option<Value>,
    /// Result (repr).
    pub result: Option<String>,
    /// Exception.
    pub exception: Option<String>,
    /// Traceback.
    pub traceback: Option<String>,
    /// Retries so far.
    pub retry_count: i32,
    /// ETA.
    pub eta: Option<DateTime<Utc>>,
    /// When a worker received it.
    pub received_at: Option<DateTime<Utc>>,
    /// When it started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// Runtime, ms.
    pub runtime_ms: Option<i64>,
    /// Worker.
    pub worker_name: Option<String>,
    /// Parent task id (for a retry issued through Taskward: the original).
    pub parent_task_id: Option<String>,
    /// Root task id of its workflow.
    pub root_task_id: Option<String>,
    /// Tags (none yet for Celery).
    pub tags: Vec<String>,
    /// Why it cannot be retried (its real arguments are unavailable), if so.
    pub args_unavailable: Option<String>,
    /// Whether any field's value was cut to its size cap (64 KiB for results, exceptions,
    /// tracebacks and arguments); the full value stays on the worker's host.
    pub truncated: bool,
    /// Which fields were cut, if any.
    pub truncated_fields: Vec<String>,
    /// First seen by the brain.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

/// The field names of [`TaskPublic`], in order (what `fields` may name).
pub const TASK_FIELDS: [&str; 28] = [
    "id",
    "project_id",
    "engine",
    "task_id",
    "name",
    "queue",
    "state",
    "priority",
    "args",
    "kwargs",
    "result",
    "exception",
    "traceback",
    "retry_count",
    "eta",
    "received_at",
    "started_at",
    "finished_at",
    "runtime_ms",
    "worker_name",
    "parent_task_id",
    "root_task_id",
    "tags",
    "args_unavailable",
    "truncated",
    "truncated_fields",
    "created_at",
    "updated_at",
];

impl From<TaskRow> for TaskPublic {
    fn from(t: TaskRow) -> TaskPublic {
        // Stored as JSON text: arguments as the agent sent them (a string when unreadable).
        let json =
            |v: Option<String>| v.map(|s| serde_json::from_str(&s).unwrap_or(Value::String(s)));
        let truncated_fields = t.truncated_fields();
        TaskPublic {
            id: t.id,
            project_id: t.project_id,
            engine: t.engine,
            task_id: t.task_id,
            name: t.name,
            queue: t.queue,
            state: t.state,
            priority: t.priority,
            args: json(t.args),
            kwargs: json(t.kwargs),
            result: t.result,
            exception: t.exception,
            traceback: t.traceback,
            retry_count: t.retry_count,
            eta: t.eta.map(timestamp),
            received_at: t.received_at.map(timestamp),
            started_at: t.started_at.map(timestamp),
            finished_at: t.finished_at.map(timestamp),
            runtime_ms: t.runtime_ms,
            worker_name: t.worker_name,
            parent_task_id: t.parent_task_id,
            root_task_id: t.root_task_id,
            tags: Vec::new(),
            truncated: !truncated_fields.is_empty(),
            truncated_fields,
            args_unavailable: t.args_unavailable,
            created_at: timestamp(t.created_at),
            updated_at: timestamp(t.updated_at),
        }
    }
}

/// A page of tasks.
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskList {
    /// Tasks (only the `fields` asked for, if any).
    #[schema(value_type = Vec<TaskPublic>)]
    pub items: Vec<Value>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// The fields to show (all when `fields` is absent).
pub fn fields(query: &ListQuery) -> Result<Vec<&'static str>, ApiError> {
    let Some(list) = &query.fields else {
        return Ok(TASK_FIELDS.to_vec());
    };
    let mut chosen = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let field = TASK_FIELDS.iter().find(|f| **f == name).ok_or_else(|| {
            ApiError::invalid_field(
                "fields",
                format!(
                    "fields: unknown field {name:?}; fields are {}",
                    TASK_FIELDS.join(", ")
                ),
            )
        })?;
        if !chosen.contains(field) {
            chosen.push(*field);
        }
    }
    if chosen.is_empty() {
        return Err(ApiError::invalid_field(
            "fields",
            "fields: name at least one field",
        ));
    }
    Ok(chosen)
}

/// A task as JSON with only `fields`.
pub fn projected(task: TaskPublic, fields: &[&str]) -> Value {
    let Value::Object(mut all) = serde_json::to_value(task).expect("tasks serialize") else {
        unreachable!("a task serializes to an object")
    };
    if fields.len() == TASK_FIELDS.len() {
        return Value::Object(all);
    }
    let mut out = Map::with_capacity(fields.len());
    for field in fields {
        if let Some(value) = all.remove(*field) {
            out.insert((*field).to_owned(), value);
        }
    }
    Value::Object(out)
}

/// Lists a project's tasks, newest received first unless `orderBy` says otherwise.
#[utoipa::path(get, path = "/api/v1/projects/{slug}/tasks", tag = tags::TASKS,
    params(("slug" = String, Path, description = "Project slug"),
        ("state" = Option<String>, Query, description = "received, started, succeeded, failed, cancelled, retried or lost"),
        ("priority" = Option<String>, Query, description = "Comma-separated priorities"),
        ("name" = Option<String>, Query, description = "Exact task name"),
        ("queue" = Option<String>, Query, description = "Exact queue"),
        ("worker" = Option<String>, Query, description = "Exact worker name"),
        ("search" = Option<String>, Query, description = "Case-insensitive text in name, queue or worker (3 to 200 characters; indexed)"),
        ("since" = Option<String>, Query, description = "RFC 3339; received at or after"),
        ("until" = Option<String>, Query, description = "RFC 3339; received at or before"),
        ("filter" = Option<String>, Query, description = "Nested filter, JSON: AND/OR/NOT, per-field operators (eq, ne, in, notIn, lt, lte, gt, gte, contains, startsWith, endsWith, isNull), relations worker, agent, parent"),
        ("orderBy" = Option<String>, Query, description = "JSON array of {field: direction}; directions asc, desc (nulls sort as the smallest value), asc_nulls_first, asc_nulls_last, desc_nulls_first, desc_nulls_last; default received_at desc"),
        ("fields" = Option<String>, Query, description = "Comma-separated projection (also of exports)"),
        ("format" = Option<String>, Query, description = "csv, xlsx or json: stream the whole result as a file (pagination does not apply)"),
        ("cursor" = Option<String>, Query, description = "next_cursor of the previous page"),
        ("limit" = Option<i64>, Query, description = "1..5000, default 100")),
    responses((status = 200, body = TaskList, description = "A page, or with `format` the whole result as text/csv, xlsx or a JSON array"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 429, body = ErrorBody, description = "Too many lists or exports of this caller at once"),
        (status = 503, body = ErrorBody, description = "Over the query budget, or the store is unavailable")))]
pub async fn list(
    State(state): State<AppState>,
    access: ProjectAccess<Viewer>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Response, ApiError> {
    let fields = fields(&query)?;
    let format = query
        .format
        .as_deref()
        .map(|f| {
            export::Format::parse(f).ok_or_else(|| {
                ApiError::invalid_field("format", format!("format: {f:?} is not csv, xlsx or json"))
            })
        })
        .transpose()?;
    let plan = query.plan(&access.project.id)?;
    if let Some(format) = format {
        // An export streams the whole result; pagination parameters do not apply.
        let reading = ExportReads {
            budget: state.settings.query_budget,
            slot: Some(access.caller.read_slot(&state)?),
        };
        return Ok(export_tasks(
            state.store.clone(),
            &access.project,
            plan,
            fields,
            format,
            reading,
        ));
    }
    let secret = state.keys.confirm_secret();
    let _slot = access.caller.read_slot(&state)?;
    let budget = state.settings.query_budget;
    let (rows, next_cursor) = read_page(
        &state.store,
        budget,
        secret,
        &access.project.id,
        &query,
        plan,
    )
    .await?;
    Ok(Json(TaskList {
        items: rows
            .into_iter()
            .map(|row| projected(row.into(), &fields))
            .collect(),
        next_cursor,
    })
    .into_response())
}

/// Rows per page read by an export.
const EXPORT_PAGE: i64 = 1000;

/// How an export reads: each page within `budget`, and the caller's read slot held until the
/// stream ends.
pub struct ExportReads {
    /// The time budget of one page.
    pub budget: std::time::Duration,
    /// The caller's slot (`None` for the benchmark, which has no caller).
    pub slot: Option<crate::limits::ReadSlot>,
}

/// Streams every task the plan selects, in its order, in keyset pages (public for the
/// benchmark, which measures exports through it).
pub fn export_tasks(
    store: crate::store::Store,
    project: &crate::store::projects::Project,
    plan: TaskPlan,
    fields: Vec<&'static str>,
    format: export::Format,
    reading: ExportReads,
) -> Response {
    let project_id = project.id.clone();
    let (filter, order, search) = (plan.page.filter, plan.page.order, plan.search);
    let mut position: Option<Vec<Option<Scalar>>> = None;
    let mut done = false;
    let columns = fields.clone();
    let pages: export::NextPage<TaskRow> = Box::new(move || {
        let _slot = &reading.slot;
        if done {
            return Ok(None);
        }
        let rows = store
            .read_within_blocking("export_tasks", reading.budget, |conn| {
                let selection = task_store::Selection {
                    filter: &filter,
                    search: search.as_deref(),
                    order: &order,
                };
                task_store::page(
                    conn,
                    &project_id,
                    &selection,
                    position.as_deref(),
                    EXPORT_PAGE,
                )
            })
            .map_err(|e| e.to_string())?;
        done = (rows.len() as i64) < EXPORT_PAGE;
        let Some(last) = rows.last() else {
            return Ok(None);
        };
        let values = task_store::position(last, &order);
        position = order::read_position(&order, &values);
        Ok(Some(rows))
    });
    let mut picker = export::CellPicker::new(fields);
    let to_cells: export::ToCells<TaskRow> =
        Box::new(move |row| picker.cells(&TaskPublic::from(row)));
    export::respond(
        format,
        &format!("tasks-{}", project.slug),
        columns,
        pages,
        to_cells,
    )
}

/// A task of the project by engine and id (404 naming it otherwise).
pub async fn find_task(
    state: &AppState,
    project_id: &str,
    engine: String,
    task_id: String,
) -> Result<TaskRow, ApiError> {
    let project_id = project_id.to_owned();
    let what = format!("task {engine}/{task_id}");
    state
        .store
        .read("get_task", move |conn| {
            task_store::find(conn, &project_id, &engine, &task_id)
        })
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ApiError::NotFound(what),
            other => other.into(),
        })
}

/// Reads one task.
#[utoipa::path(get, path = "/api/v1/projects/{slug}/tasks/{engine}/{task_id}", tag = tags::TASKS,
    params(("slug" = String, Path, description = "Project slug"),
        ("engine" = String, Path, description = "Engine, e.g. celery"),
        ("task_id" = String, Path, description = "The engine's task id")),
    responses((status = 200, body = TaskPublic), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    access: ProjectAccess<Viewer>,
    ApiPath((_slug, engine, task_id)): ApiPath<(String, String, String)>,
) -> Result<Json<TaskPublic>, ApiError> {
    let task = find_task(&state, &access.project.id, engine, task_id).await?;
    Ok(Json(task.into()))
}

/// A task's workflow: every task sharing its root.
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskTree {
    /// The root's task id.
    pub root_task_id: String,
    /// The tasks, oldest received first (at most 500).
    pub items: Vec<TaskPublic>,
    /// More than 500 tasks share the root; only the first 500 are here.
    pub truncated: bool,
}

/// The tree of a task: walks to its root (`root_task_id`, or the task itself) and returns
/// every task sharing it, retries issued through Taskward included (their parent is the
/// original). Capped at 500 with `truncated: true`.
#[utoipa::path(get, path = "/api/v1/projects/{slug}/tasks/{engine}/{task_id}/tree", tag = tags::TASKS,
    params(("slug" = String, Path, description = "Project slug"),
        ("engine" = String, Path, description = "Engine, e.g. celery"),
        ("task_id" = String, Path, description = "The engine's task id")),
    responses((status = 200, body = TaskTree), (status = 404, body = ErrorBody)))]
pub async fn tree(
    State(state): State<AppState>,
    access: ProjectAccess<Viewer>,
    ApiPath((_slug, engine, task_id)): ApiPath<(String, String, String)>,
) -> Result<Json<TaskTree>, ApiError> {
    let task = find_task(&state, &access.project.id, engine, task_id).await?;
    let root = task.root_task_id.clone().unwrap_or(task.task_id.clone());
    let (items, truncated) = task_tree(&state, &access.project.id, &task).await?;
    Ok(Json(TaskTree {
        root_task_id: root,
        items: items.into_iter().map(TaskPublic::from).collect(),
        truncated,
    }))
}

/// Every task sharing `task`'s root, oldest first, at most [`TREE_CAP`]; `true` when more
/// were left out.
pub async fn task_tree(
    state: &AppState,
    project_id: &str,
    task: &TaskRow,
) -> Result<(Vec<TaskRow>, bool), ApiError> {
    let root = task.root_task_id.clone().unwrap_or(task.task_id.clone());
    let (project_id, engine) = (project_id.to_owned(), task.engine.clone());
    let mut rows = state
        .store
        .read("task_tree", move |conn| {
            task_store::tree(conn, &project_id, &engine, &root, TREE_CAP + 1)
        })
        .await?;
    let truncated = rows.len() as i64 > TREE_CAP;
    rows.truncate(TREE_CAP as usize);
    Ok((rows, truncated))
}

/// Most ids one bulk delete may name.
pub const MAX_DELETE_IDS: usize = 1000;

/// What to delete: explicit `task_ids` (all or nothing) or filters (whatever matches and is
/// not in flight). One of the two, never both, never neither.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkDelete {
    /// Engine task ids, at most 1000.
    #[serde(default)]
    pub task_ids: Option<Vec<String>>,
    /// State.
    #[serde(default)]
    pub filter_state: Option<String>,
    /// Exact task name.
    #[serde(default)]
    pub filter_name: Option<String>,
    /// Exact queue.
    #[serde(default)]
    pub filter_queue: Option<String>,
    /// RFC 3339; received at or after.
    #[serde(default)]
    pub filter_since: Option<String>,
    /// RFC 3339; received at or before.
    #[serde(default)]
    pub filter_until: Option<String>,
}

/// What a bulk delete did.
#[derive(Debug, Serialize, ToSchema)]
pub struct BulkDeleted {
    /// Tasks deleted.
    pub deleted_count: usize,
    /// Filter mode only: matching tasks left alone because they are in flight.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped_in_flight: Option<i64>,
}

impl BulkDelete {
    /// The filter of filter mode, or `None` when no filter field is given.
    fn filter(&self) -> Result<Option<(Filter, Value)>, ApiError> {
        let query = ListQuery {
            state: self.filter_state.clone(),
            name: self.filter_name.clone(),
            queue: self.filter_queue.clone(),
            since: self.filter_since.clone(),
            until: self.filter_until.clone(),
            ..ListQuery::default()
        };
        let given = serde_json::json!({
            "filter_state": self.filter_state,
            "filter_name": self.filter_name,
            "filter_queue": self.filter_queue,
            "filter_since": self.filter_since,
            "filter_until": self.filter_until,
        });
        if given
            .as_object()
            .is_some_and(|o| o.values().all(Value::is_null))
        {
            return Ok(None);
        }
        // The list's parameter checks, with the body's field names in errors.
        let plan = query.plan("").map_err(|e| match e {
            Refusal::Invalid {
                code,
                message,
                field: Some(field),
            } => Refusal::Invalid {
                code,
                message: format!("filter_{message}"),
                field: Some(format!("filter_{field}")),
            },
            other => other,
        })?;
        Ok(Some((plan.page.filter, given)))
    }
}

/// Deletes task records, permanently, with an audit row saying who deleted what. Explicit ids
/// are all or nothing (unknown ids 404, in-flight ids 400, both listed); filters delete what
/// matches and is not in flight.
#[utoipa::path(post, path = "/api/v1/projects/{slug}/tasks/bulk-delete", tag = tags::TASKS,
    params(("slug" = String, Path, description = "Project slug")),
    request_body = BulkDelete,
    responses((status = 200, body = BulkDeleted), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn bulk_delete(
    State(state): State<AppState>,
    access: ProjectAccess<Admin>,
    ApiJson(body): ApiJson<BulkDelete>,
) -> Result<Json<BulkDeleted>, ApiError> {
    let filter = body.filter()?;
    let ids = body.task_ids.clone().filter(|ids| !ids.is_empty());
    match (&ids, &filter) {
        (None, None) => {
            return Err(ApiError::invalid_field(
                "task_ids",
                "task_ids: give task ids, or at least one filter_* field",
            ));
        }
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid_field(
                "task_ids",
                "task_ids: give task ids or filters, not both",
            ));
        }
        (Some(ids), None) => {
            if ids.len() > MAX_DELETE_IDS {
                return Err(ApiError::invalid_field(
                    "task_ids",
                    format!("task_ids: at most {MAX_DELETE_IDS} ids, got {}", ids.len()),
                ));
            }
            if let Some(i) = ids.iter().position(|id| id.is_empty() || id.len() > 255) {
                return Err(ApiError::invalid_field(
                    format!("task_ids[{i}]"),
                    format!("task_ids[{i}]: 1 to 255 bytes"),
                ));
            }
        }
        (None, Some(_)) => {}
    }
    state
        .bulk_limiter
        .check(&format!("tasks-bulk-delete:{}", access.caller.user_id))
        .map_err(ApiError::RateLimited)?;
    let ctx = state.audit_as(access.caller.actor());
    let project_id = access.project.id.clone();
    let outcome = state
        .store
        .write("bulk_delete_tasks", move |conn| match (ids, filter) {
            (Some(ids), _) => Ok(BulkDeleted {
                deleted_count: crate::tasks::delete_ids(conn, &ctx, &project_id, ids)?,
                skipped_in_flight: None,
            }),
            (None, Some((filter, given))) => {
                let (deleted, skipped) =
                    crate::tasks::delete_matching(conn, &ctx, &project_id, &filter, given)?;
                Ok::<_, Refusal>(BulkDeleted {
                    deleted_count: deleted,
                    skipped_in_flight: Some(skipped),
                })
            }
            (None, None) => unreachable!("checked above"),
        })
        .await?;
    tracing::info!(project = %access.project.slug, deleted = outcome.deleted_count, "tasks deleted");
    Ok(Json(outcome))
}
