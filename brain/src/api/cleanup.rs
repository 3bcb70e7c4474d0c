//! Cleanup tasks (`../shared/spec/cleanup-tasks.txt` as mapped in the spec README): list with
//! the query grammar and `after`/`before` keyset cursors, get, retry and tree. A caller sees the
//! cleanup tasks of projects where they are admin (site admins: all of them), and only those.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::extract::{ApiPath, ApiQuery};
use super::{tags, timestamp};
use crate::app::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::query::entities::CLEANUP_TASKS;
use crate::query::filter::{Filter, Op, Operand, Scalar};
use crate::query::order;
use crate::query::page::{Plan, parse_limit};
use crate::store::cleanup::{self, CleanupTask, resource, status};
use crate::store::{StoreError, now_ms};

/// Largest page.
pub const MAX_LIMIT: i64 = 100;
/// Most ids in `ids`.
pub const MAX_IDS: usize = 100;

/// A cleanup task as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CleanupTaskPublic {
    /// `ct_…`.
    pub id: String,
    /// The task this one is a step of.
    pub parent_id: Option<String>,
    /// The project whose resources it deletes.
    pub project_id: String,
    /// The audit row that caused it (`<chain>#<seq>`).
    pub source_event_id: Option<String>,
    /// delete_project, delete_agent, delete_task_records or delete_schedule.
    pub resource_type: String,
    /// What it deletes.
    pub resource_id: String,
    /// Names and progress (`deleted` rows so far).
    #[schema(value_type = Object)]
    pub metadata: Value,
    /// pending, in_progress, completed or failed.
    pub status: String,
    /// Attempts made.
    pub attempts: i32,
    /// Attempts allowed before it stays failed.
    pub max_attempts: i32,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When it may run next.
    pub next_attempt_at: DateTime<Utc>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Completed.
    pub completed_at: Option<DateTime<Utc>>,
}

impl From<CleanupTask> for CleanupTaskPublic {
    fn from(t: CleanupTask) -> CleanupTaskPublic {
        CleanupTaskPublic {
            id: t.id,
            parent_id: t.parent_id,
            project_id: t.project_id,
            source_event_id: t.source_event_id,
            resource_type: t.resource_type,
            resource_id: t.resource_id,
            metadata: serde_json::from_str(&t.metadata).unwrap_or(Value::Null),
            status: t.status,
            attempts: t.attempts,
            max_attempts: t.max_attempts,
            last_error: t.last_error,
            next_attempt_at: timestamp(t.next_attempt_at),
            created_at: timestamp(t.created_at),
            updated_at: timestamp(t.updated_at),
            completed_at: t.completed_at.map(timestamp),
        }
    }
}

/// Where a page sits in the whole result.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PageInfo {
    /// Rows matching the query, over every page.
    pub total: i64,
    /// Rows follow this page (`after: endCursor`).
    pub has_next_page: bool,
    /// Rows precede this page (`before: startCursor`).
    pub has_previous_page: bool,
    /// Cursor of the first row of this page.
    pub start_cursor: Option<String>,
    /// Cursor of the last row of this page.
    pub end_cursor: Option<String>,
}

/// A page of cleanup tasks.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CleanupTaskPage {
    /// The tasks.
    pub data: Vec<CleanupTaskPublic>,
    /// Paging.
    pub page_info: PageInfo,
}

/// The query of the list.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    limit: Option<i64>,
    after: Option<String>,
    before: Option<String>,
    ids: Option<String>,
    filter: Option<String>,
    #[serde(rename = "orderBy")]
    order_by: Option<String>,
    status: Option<String>,
    resource_type: Option<String>,
    project_id: Option<String>,
    parent_id: Option<String>,
    source_event_id: Option<String>,
}

fn one_of(field: &str, value: &str, allowed: &[&str]) -> Result<(), ApiError> {
    if allowed.contains(&value) {
        Ok(())
    } else {
        Err(ApiError::invalid_field(
            field,
            format!("{field}: {value:?} is not one of {}", allowed.join(", ")),
        ))
    }
}

/// The filters of the list's simple parameters (`status`, `resource_type`, ids, …).
fn simple_filters(query: &ListQuery) -> Result<Vec<Filter>, ApiError> {
    let text = |v: &str| Scalar::Text(v.to_owned());
    let mut parts = Vec::new();
    if let Some(s) = &query.status {
        one_of("status", s, &status::ALL)?;
        parts.push(CLEANUP_TASKS.compare("status", Op::Eq, Operand::One(text(s))));
    }
    if let Some(r) = &query.resource_type {
        one_of("resource_type", r, &resource::ALL)?;
        parts.push(CLEANUP_TASKS.compare("resourceType", Op::Eq, Operand::One(text(r))));
    }
    for (param, field) in [
        (&query.project_id, "projectId"),
        (&query.parent_id, "parentId"),
        (&query.source_event_id, "sourceEventId"),
    ] {
        if let Some(value) = param {
            parts.push(CLEANUP_TASKS.compare(field, Op::Eq, Operand::One(text(value))));
        }
    }
    if let Some(ids) = &query.ids {
        let ids: Vec<Scalar> = ids
            .split(',')
            .map(str::trim)
            .filter(|i| !i.is_empty())
            .map(text)
            .collect();
        if ids.is_empty() || ids.len() > MAX_IDS {
            return Err(ApiError::invalid_field(
                "ids",
                format!("ids: 1 to {MAX_IDS} comma-separated ids"),
            ));
        }
        parts.push(CLEANUP_TASKS.compare("id", Op::In, Operand::List(ids)));
    }
    Ok(parts)
}

/// Lists the cleanup tasks the caller may see, newest first unless `orderBy` says otherwise.
#[utoipa::path(get, path = "/api/v1/cleanup-tasks", tag = tags::CLEANUP,
    params(("limit" = Option<i64>, Query, description = "1..100, default 100"),
        ("after" = Option<String>, Query, description = "endCursor of a page: the page after it"),
        ("before" = Option<String>, Query, description = "startCursor of a page: the page before it"),
        ("ids" = Option<String>, Query, description = "Comma-separated ids (at most 100), within what the caller may see"),
        ("filter" = Option<String>, Query, description = "Nested filter, JSON (the tasks list's grammar); relation parent"),
        ("orderBy" = Option<String>, Query, description = "JSON array of {field: direction}; default createdAt desc"),
        ("status" = Option<String>, Query, description = "pending, in_progress, completed or failed"),
        ("resource_type" = Option<String>, Query, description = "delete_project, delete_agent, delete_task_records or delete_schedule"),
        ("project_id" = Option<String>, Query, description = "Project id"),
        ("parent_id" = Option<String>, Query, description = "Children of this task"),
        ("source_event_id" = Option<String>, Query, description = "Tasks spawned by this audit row")),
    responses((status = 200, body = CleanupTaskPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 429, body = ErrorBody, description = "Too many lists or exports of this caller at once"),
        (status = 503, body = ErrorBody, description = "Over the query budget, or the store is unavailable")))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<CleanupTaskPage>, ApiError> {
    Ok(Json(cleanup_page(&state, &caller, &query).await?))
}

/// A page of the cleanup tasks the caller may see (the API's list and the dashboard's
/// cleanup page).
pub async fn cleanup_page(
    state: &AppState,
    caller: &Caller,
    query: &ListQuery,
) -> Result<CleanupTaskPage, ApiError> {
    let limit = parse_limit(query.limit, MAX_LIMIT, MAX_LIMIT)?;
    let parts = simple_filters(query)?;
    let scope = format!(
        "cleanup:{}:{:?}",
        caller.user_id,
        (
            &query.status,
            &query.resource_type,
            &query.project_id,
            &query.parent_id,
            &query.source_event_id,
            &query.ids,
        )
    );
    let plan = Plan::new(
        &CLEANUP_TASKS,
        parts,
        query.filter.as_deref(),
        query.order_by.as_deref(),
        "createdAt",
        scope,
    )?;
    if query.after.is_some() && query.before.is_some() {
        return Err(ApiError::invalid_field(
            "before",
            "before: give after or before, not both",
        ));
    }
    let secret = state.keys.confirm_secret();
    // `before` reads backwards from the cursor, then turns the page around.
    let forward = plan.order.clone();
    let (keys_used, position, backwards) = match (&query.after, &query.before) {
        (Some(c), _) => (
            forward.clone(),
            plan.position(secret, "after", Some(c))?,
            false,
        ),
        (_, Some(c)) => (
            order::reversed(&forward),
            plan.position(secret, "before", Some(c))?,
            true,
        ),
        _ => (forward.clone(), None, false),
    };
    let filter = plan.filter.clone();
    let (user_id, site_admin) = (caller.user_id.clone(), caller.site_admin);
    let had_cursor = position.is_some();
    let _slot = caller.read_slot(state)?;
    let (mut rows, total) = state
        .store
        .read_within(
            "list_cleanup_tasks",
            state.settings.query_budget,
            move |conn| {
                let scope = cleanup::Scope {
                    user_id: &user_id,
                    site_admin,
                };
                let rows = cleanup::page(
                    conn,
                    &scope,
                    &filter,
                    &keys_used,
                    position.as_deref(),
                    limit + 1,
                )?;
                let total = cleanup::count(conn, &scope, &filter)?;
                Ok((rows, total))
            },
        )
        .await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    if backwards {
        rows.reverse();
    }
    let cursor_of = |row: &CleanupTask| plan.cursor_after(secret, row, cleanup::position);
    let page_info = PageInfo {
        total,
        has_next_page: if backwards { had_cursor } else { more },
        has_previous_page: if backwards { more } else { had_cursor },
        start_cursor: rows.first().map(cursor_of),
        end_cursor: rows.last().map(cursor_of),
    };
    Ok(CleanupTaskPage {
        data: rows.into_iter().map(CleanupTaskPublic::from).collect(),
        page_info,
    })
}

/// A cleanup task the caller may see, or 404.
async fn visible(state: &AppState, caller: &Caller, id: String) -> Result<CleanupTask, ApiError> {
    let (user_id, site_admin) = (caller.user_id.clone(), caller.site_admin);
    let what = format!("cleanup task {id}");
    state
        .store
        .read("get_cleanup_task", move |conn| {
            let task = cleanup::find(conn, &id)?;
            let scope = cleanup::Scope {
                user_id: &user_id,
                site_admin,
            };
            if cleanup::may_see(conn, &scope, &task)? {
                Ok(task)
            } else {
                Err(StoreError::NotFound)
            }
        })
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ApiError::NotFound(what),
            other => other.into(),
        })
}

/// Reads one cleanup task.
#[utoipa::path(get, path = "/api/v1/cleanup-tasks/{id}", tag = tags::CLEANUP,
    params(("id" = String, Path, description = "ct_…")),
    responses((status = 200, body = CleanupTaskPublic), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<CleanupTaskPublic>, ApiError> {
    Ok(Json(visible(&state, &caller, id).await?.into()))
}

/// The answer to a retry.
#[derive(Debug, Serialize, ToSchema)]
pub struct Retried {
    /// Whether it was queued again.
    pub ok: bool,
}

/// Queues a failed cleanup task for another round of attempts (admins of its project). A task
/// that has not failed is a 409.
#[utoipa::path(post, path = "/api/v1/cleanup-tasks/{id}/retry", tag = tags::CLEANUP,
    params(("id" = String, Path, description = "ct_…")),
    responses((status = 200, body = Retried), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn retry(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Retried>, ApiError> {
    let task = visible(&state, &caller, id).await?;
    let task_id = task.id.clone();
    let queued = state
        .store
        .write("retry_cleanup_task", move |conn| {
            cleanup::retry(conn, &task_id, now_ms())
        })
        .await?;
    if !queued {
        return Err(ApiError::Conflict(format!(
            "cleanup task {} is {}: only failed tasks can be retried",
            task.id, task.status
        )));
    }
    tracing::info!(task = %task.id, user = %caller.user_name, "cleanup task retried");
    Ok(Json(Retried { ok: true }))
}

/// A cleanup task and all its descendants, as a flat array (admins of its project).
#[utoipa::path(get, path = "/api/v1/cleanup-tasks/{id}/tree", tag = tags::CLEANUP,
    params(("id" = String, Path, description = "ct_…")),
    responses((status = 200, body = Vec<CleanupTaskPublic>), (status = 404, body = ErrorBody)))]
pub async fn tree(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Vec<CleanupTaskPublic>>, ApiError> {
    Ok(Json(cleanup_tree(&state, &caller, id).await?))
}

/// A cleanup task the caller may see and its whole tree (the API and the dashboard's tree
/// page).
pub async fn cleanup_tree(
    state: &AppState,
    caller: &Caller,
    id: String,
) -> Result<Vec<CleanupTaskPublic>, ApiError> {
    let root = visible(state, caller, id).await?;
    let all = state
        .store
        .read("cleanup_tree", move |conn| cleanup::tree(conn, &root))
        .await?;
    Ok(all.into_iter().map(CleanupTaskPublic::from).collect())
}
