//! Reading tasks: a project's list in the shared grammar, with the tasks list's own simple
//! parameters (`state`, `priority`, `name`, `queue`, `worker`, `since`/`until`) as sugar over
//! it and `search` through the term index. The API's list, its exports and the dashboard's
//! tasks page all read through [`ListQuery::plan`] and [`read_page`].

use std::time::Duration;

use serde::Deserialize;
use taskward_shared::events::TaskState;

use crate::query::entities::TASKS;
use crate::query::filter::{self, Op, Operand, Scalar};
use crate::query::page::{Plan, parse_limit, parse_time};
use crate::refusal::Refusal;
use crate::store::Store;
use crate::store::tasks::{self, TaskRow};

/// Page size when `limit` is not given.
pub const DEFAULT_LIMIT: i64 = 100;
/// Largest page.
pub const MAX_LIMIT: i64 = 5000;
/// Shortest search term: the indexes match substrings of three characters or more.
pub const SEARCH_MIN: usize = 3;
/// Longest search term.
pub const SEARCH_MAX: usize = 200;

/// The query of the tasks list.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only tasks in this state.
    pub state: Option<String>,
    /// Only these priorities (comma-separated).
    pub priority: Option<String>,
    /// Only this task name.
    pub name: Option<String>,
    /// Only this queue.
    pub queue: Option<String>,
    /// Only this worker.
    pub worker: Option<String>,
    /// Text in name, queue or worker (3 to 200 characters).
    pub search: Option<String>,
    /// Received at or after (RFC 3339).
    pub since: Option<String>,
    /// Received at or before (RFC 3339).
    pub until: Option<String>,
    /// The grammar's nested filter (JSON).
    pub filter: Option<String>,
    /// The grammar's order (JSON).
    #[serde(rename = "orderBy")]
    pub order_by: Option<String>,
    /// The previous page's `next_cursor`.
    pub cursor: Option<String>,
    /// Page size.
    pub limit: Option<i64>,
    /// The fields to show (the API's projection, also of exports).
    pub fields: Option<String>,
    /// Stream the whole result as a file: csv, xlsx or json.
    pub format: Option<String>,
}

/// A parsed tasks list query: the grammar's plan (the simple parameters and `filter` together,
/// the order with its tiebreak, the cursor scope) and the text searched through the term
/// index, which the grammar does not express.
pub struct TaskPlan {
    /// Filter, order and cursor scope.
    pub page: Plan,
    /// Text searched in name, queue and worker.
    pub search: Option<String>,
}

impl ListQuery {
    /// Checks every parameter and builds the plan.
    pub fn plan(&self, project_id: &str) -> Result<TaskPlan, Refusal> {
        let text = |v: &Option<String>| v.clone().map(Scalar::Text);
        let mut parts = Vec::new();
        if let Some(state) = &self.state {
            if TaskState::parse(state).is_none() {
                return Err(Refusal::invalid_field(
                    "state",
                    format!(
                        "state: {state:?} is not one of {}",
                        TaskState::ALL.map(TaskState::as_str).join(", ")
                    ),
                ));
            }
            parts.push(TASKS.compare("state", Op::Eq, Operand::One(Scalar::Text(state.clone()))));
        }
        if let Some(priority) = &self.priority {
            let values: Vec<Scalar> = priority
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(|p| Scalar::Text(p.to_owned()))
                .collect();
            if values.is_empty() || values.len() > filter::MAX_LIST {
                return Err(Refusal::invalid_field(
                    "priority",
                    format!(
                        "priority: a comma-separated list of 1 to {} values",
                        filter::MAX_LIST
                    ),
                ));
            }
            parts.push(TASKS.compare("priority", Op::In, Operand::List(values)));
        }
        for (param, field) in [
            (&self.name, "name"),
            (&self.queue, "queue"),
            (&self.worker, "worker_name"),
        ] {
            if let Some(value) = text(param) {
                parts.push(TASKS.compare(field, Op::Eq, Operand::One(value)));
            }
        }
        if let Some(since) = parse_time("since", self.since.as_deref())? {
            parts.push(TASKS.compare("received_at", Op::Gte, Operand::One(Scalar::Int(since))));
        }
        if let Some(until) = parse_time("until", self.until.as_deref())? {
            parts.push(TASKS.compare("received_at", Op::Lte, Operand::One(Scalar::Int(until))));
        }
        if let Some(term) = &self.search {
            let chars = term.chars().count();
            if !(SEARCH_MIN..=SEARCH_MAX).contains(&chars) || term.chars().any(char::is_control) {
                return Err(Refusal::invalid_field(
                    "search",
                    format!(
                        "search: {SEARCH_MIN} to {SEARCH_MAX} characters, no control characters"
                    ),
                ));
            }
        }
        let scope = format!(
            "tasks:{project_id}:{:?}",
            (
                &self.state,
                &self.priority,
                &self.name,
                &self.queue,
                &self.worker,
                &self.search,
                &self.since,
                &self.until,
            )
        );
        let page = Plan::new(
            &TASKS,
            parts,
            self.filter.as_deref(),
            self.order_by.as_deref(),
            "received_at",
            scope,
        )?;
        Ok(TaskPlan {
            page,
            search: self.search.clone(),
        })
    }
}

/// One page of the list a query selects, with the cursor of the next page (`None` on the
/// last): the API's list and the dashboard's task page both read through it.
/// The read is stopped when `budget` runs out (the caller shaped its cost).
pub async fn read_page(
    store: &Store,
    budget: Duration,
    secret: &[u8],
    project_id: &str,
    query: &ListQuery,
    plan: TaskPlan,
) -> Result<(Vec<TaskRow>, Option<String>), Refusal> {
    let limit = parse_limit(query.limit, DEFAULT_LIMIT, MAX_LIMIT)?;
    let position = plan
        .page
        .position(secret, "cursor", query.cursor.as_deref())?;
    let project_id = project_id.to_owned();
    let TaskPlan { page, search } = plan;
    let (rows, page) = store
        .read_within("list_tasks", budget, move |conn| {
            let selection = tasks::Selection {
                filter: &page.filter,
                search: search.as_deref(),
                order: &page.order,
            };
            let rows = tasks::page(
                conn,
                &project_id,
                &selection,
                position.as_deref(),
                limit + 1,
            )?;
            Ok((rows, page))
        })
        .await?;
    let limit = limit.min(rows_within(&rows, PAGE_BYTES));
    Ok(page.page(secret, rows, limit, tasks::position))
}

/// The most a page of tasks may weigh, roughly, in bytes: a page of 5,000 tasks with every
/// field at its 64 KiB cap would otherwise be over a gigabyte in one response. A page that
/// reaches it ends early, with a cursor to the rest.
pub const PAGE_BYTES: usize = 8 * 1024 * 1024;

/// How many of `rows` fit in `budget` bytes (at least one, so a page always moves on).
fn rows_within(rows: &[TaskRow], budget: usize) -> i64 {
    let mut spent = 0;
    let fitting = rows
        .iter()
        .take_while(|row| {
            spent += row.text_bytes();
            spent <= budget
        })
        .count();
    fitting.max(1) as i64
}
