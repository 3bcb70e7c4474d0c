//! Task list pages: keyset pages in the grammar's order, search through the term index
//! (one ordered index range per matching value), and the positions cursors store.

use diesel::prelude::*;

use super::super::schema::tasks;
use super::super::{AnyConnection, StoreResult};
use crate::query::filter::{Filter, Scalar};
use crate::query::order::SortKey;
use crate::query::sql::{Dialect, Sql, dialect_of, load_sql};

use super::TaskRow;

/// What a task list selects, and in which order.
pub struct Selection<'a> {
    /// What rows must match.
    pub filter: &'a Filter,
    /// Text in name, queue or worker (case-insensitive; through the search index).
    pub search: Option<&'a str>,
    /// The full order (with its tiebreak).
    pub order: &'a [SortKey],
}

/// One page of a project's tasks, after `position` (a keyset cursor's values).
pub fn page(
    conn: &mut AnyConnection,
    project_id: &str,
    selection: &Selection,
    position: Option<&[Option<Scalar>]>,
    limit: i64,
) -> StoreResult<Vec<TaskRow>> {
    let terms = match selection.search {
        Some(text) => Some(search_terms(conn, project_id, text)?),
        None => None,
    };
    let sql = page_query(
        dialect_of(conn),
        project_id,
        selection,
        terms.as_ref(),
        position,
        limit,
    );
    let rows: Vec<ByPosition> = load_sql!(conn, sql, ByPosition)?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

/// The columns of [`TaskRow`] in its field order: what a page selects, so that its rows decode
/// by position ([`ByPosition`]).
const TASK_COLUMNS: &str = "t.id, t.project_id, t.agent_id, t.engine, t.task_id, t.name, \
     t.queue, t.state, t.state_rank, t.state_at, t.priority, t.args, t.kwargs, t.result, \
     t.exception, t.traceback, t.retry_count, t.eta, t.received_at, t.started_at, \
     t.finished_at, t.runtime_ms, t.worker_name, t.parent_task_id, t.root_task_id, \
     t.created_at, t.updated_at, t.args_unavailable, t.truncated";

/// A [`TaskRow`] read from a hand-written statement by column position. Diesel reads such
/// statements by column name, looking each of the 28 names up in the row for every row; at a
/// million rows that lookup was a good share of an export's time.
struct ByPosition(TaskRow);

impl<DB> diesel::deserialize::QueryableByName<DB> for ByPosition
where
    DB: diesel::backend::Backend,
    TaskRow: diesel::deserialize::FromSqlRow<tasks::SqlType, DB>,
{
    fn build<'a>(row: &impl diesel::row::NamedRow<'a, DB>) -> diesel::deserialize::Result<Self> {
        Ok(ByPosition(<TaskRow as diesel::deserialize::FromSqlRow<
            tasks::SqlType,
            DB,
        >>::build_from_row(row)?))
    }
}

/// The most distinct values a search answers with one index range each; past it the list
/// is walked in order and each task tested against the values.
pub const SEARCH_BRANCHES: usize = 32;

/// The names, queues and workers of a project that contain a search text.
#[derive(Debug, Clone, PartialEq)]
pub enum SearchTerms {
    /// Few enough values for one index range per value: `(column, value)`.
    Values(Vec<(&'static str, String)>),
    /// More than [`SEARCH_BRANCHES`] values match: a broad text, whose tasks are dense in
    /// the list, so walking the list in order finds a page quickly.
    Broad(String),
}

/// The columns search looks in, with the `task_terms.field` that records their values.
const SEARCH_COLUMNS: [(&str, &str); 3] = [
    ("name", "name"),
    ("queue", "queue"),
    ("worker_name", "worker"),
];

/// Finds the project's recorded values containing `text` (case-insensitive), through the
/// trigram index over the values (migration 0009).
pub fn search_terms(
    conn: &mut AnyConnection,
    project_id: &str,
    text: &str,
) -> StoreResult<SearchTerms> {
    #[derive(QueryableByName)]
    struct Term {
        #[diesel(sql_type = diesel::sql_types::Text)]
        field: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        value: String,
    }
    let mut sql = Sql::new(dialect_of(conn));
    sql.push("SELECT v.field, v.value FROM task_terms v WHERE ")
        .budget_check();
    matching_terms(&mut sql, project_id, text);
    sql.push(" LIMIT ")
        .bind(Scalar::Int(SEARCH_BRANCHES as i64 + 1));
    let found: Vec<Term> = load_sql!(conn, sql, Term)?;
    if found.len() > SEARCH_BRANCHES {
        return Ok(SearchTerms::Broad(text.to_owned()));
    }
    Ok(SearchTerms::Values(
        found
            .into_iter()
            .filter_map(|t| {
                SEARCH_COLUMNS
                    .iter()
                    .find(|(_, field)| *field == t.field)
                    .map(|(column, _)| (*column, t.value))
            })
            .collect(),
    ))
}

/// Appends the condition on `task_terms v` that its value belongs to the project and
/// contains `text`, case-insensitively.
fn matching_terms(sql: &mut Sql, project_id: &str, text: &str) {
    sql.push("v.project_id = ")
        .bind(Scalar::Text(project_id.to_owned()))
        .push(" AND ");
    match sql.dialect {
        Dialect::Sqlite => {
            // An FTS5 phrase: the trigram tokenizer matches it as a substring.
            let phrase = format!("\"{}\"", text.replace('"', "\"\""));
            sql.push("v.id IN (SELECT rowid FROM task_terms_search WHERE task_terms_search MATCH ")
                .bind(Scalar::Text(phrase))
                .push(")");
        }
        Dialect::Postgres => {
            let escaped = text
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            sql.push("v.value ILIKE ")
                .bind(Scalar::Text(format!("%{escaped}%")));
        }
    }
}

/// The statement [`page`] runs, given the search's terms (public so tests can check its plan).
pub fn page_query(
    dialect: Dialect,
    project_id: &str,
    selection: &Selection,
    terms: Option<&SearchTerms>,
    position: Option<&[Option<Scalar>]>,
    limit: i64,
) -> Sql {
    let mut sql = Sql::new(dialect);
    let base = |sql: &mut Sql| {
        sql.push(&format!(
            "SELECT {TASK_COLUMNS} FROM tasks t WHERE t.project_id = "
        ))
        .bind(Scalar::Text(project_id.to_owned()))
        .push(" AND ")
        .budget_check();
        sql.filter("t", selection.filter);
    };
    match terms {
        None => sql.keyset_page("t", selection.order, position, limit, &base),
        Some(SearchTerms::Values(values)) if values.is_empty() => {
            base(&mut sql);
            sql.push(" AND 1=0");
        }
        Some(SearchTerms::Values(values)) => {
            // One page per value, each a range of that column's index in list order
            // (tasks_by_name, tasks_by_queue, tasks_by_worker), merged; UNION drops a task
            // found through two of its columns.
            sql.push("SELECT * FROM (");
            for (i, (column, value)) in values.iter().enumerate() {
                if i > 0 {
                    sql.push(" UNION ");
                }
                sql.push("SELECT * FROM (");
                sql.keyset_page("t", selection.order, position, limit, &|sql: &mut Sql| {
                    base(sql);
                    sql.push(&format!(" AND t.{column} = "))
                        .bind(Scalar::Text(value.clone()));
                });
                sql.push(&format!(") v{i}"));
            }
            sql.push(") t");
            sql.order_by("t", selection.order);
            sql.push(" LIMIT ").bind(Scalar::Int(limit));
        }
        Some(SearchTerms::Broad(text)) => {
            sql.keyset_page("t", selection.order, position, limit, &|sql: &mut Sql| {
                base(sql);
                sql.push(" AND (");
                for (i, (column, field)) in SEARCH_COLUMNS.iter().enumerate() {
                    if i > 0 {
                        sql.push(" OR ");
                    }
                    sql.push(&format!(
                        "t.{column} IN (SELECT v.value FROM task_terms v WHERE v.field = '{field}' AND "
                    ));
                    matching_terms(sql, project_id, text);
                    sql.push(")");
                }
                sql.push(")");
            })
        }
    }
    sql
}

/// The sort values of a row, as a cursor stores them (times in ms).
pub fn position(row: &TaskRow, order: &[SortKey]) -> Vec<serde_json::Value> {
    use serde_json::Value;
    let text = |v: &Option<String>| v.clone().map_or(Value::Null, Value::String);
    let int = |v: Option<i64>| v.map_or(Value::Null, Value::from);
    order
        .iter()
        .map(|key| match key.field.name {
            "id" => Value::String(row.id.clone()),
            "engine" => Value::String(row.engine.clone()),
            "task_id" => Value::String(row.task_id.clone()),
            "state" => Value::String(row.state.clone()),
            "name" => text(&row.name),
            "queue" => text(&row.queue),
            "priority" => text(&row.priority),
            "worker_name" => text(&row.worker_name),
            "agent_id" => text(&row.agent_id),
            "result" => text(&row.result),
            "exception" => text(&row.exception),
            "parent_task_id" => text(&row.parent_task_id),
            "root_task_id" => text(&row.root_task_id),
            "retry_count" => Value::from(row.retry_count),
            "eta" => int(row.eta),
            "received_at" => int(row.received_at),
            "started_at" => int(row.started_at),
            "finished_at" => int(row.finished_at),
            "runtime_ms" => int(row.runtime_ms),
            "created_at" => Value::from(row.created_at),
            "updated_at" => Value::from(row.updated_at),
            other => unreachable!("task field {other} has no position"),
        })
        .collect()
}
