//! Deleting task records: explicit ids all or nothing, or what a filter matches (never tasks
//! in flight).

use diesel::prelude::*;

use super::super::schema::tasks;
use super::super::{AnyConnection, StoreResult};
use crate::query::filter::{Filter, Scalar};
use crate::query::sql::{Count, Sql, dialect_of, execute_sql, load_sql};

/// In-flight states: what may not be deleted.
pub const IN_FLIGHT: [&str; 2] = ["received", "started"];

/// What an explicit-ids delete found: the ids that are not in the project and the ones still
/// in flight (it deletes only when both are empty).
#[derive(Debug, Default, PartialEq)]
pub struct IdsDelete {
    /// Ids with no task in the project.
    pub missing: Vec<String>,
    /// Ids of tasks still received or started.
    pub in_flight: Vec<String>,
    /// Rows deleted.
    pub deleted: usize,
}

/// Deletes the tasks with these engine task ids, all or nothing: nothing is deleted if any id
/// is unknown in the project or still in flight.
pub fn delete_ids(
    conn: &mut AnyConnection,
    project_id: &str,
    ids: &[String],
) -> StoreResult<IdsDelete> {
    let found: Vec<(String, String, String)> = tasks::table
        .filter(tasks::project_id.eq(project_id))
        .filter(tasks::task_id.eq_any(ids))
        .select((tasks::id, tasks::task_id, tasks::state))
        .load(conn)?;
    let known: std::collections::HashSet<&str> = found.iter().map(|(_, t, _)| t.as_str()).collect();
    let mut outcome = IdsDelete {
        missing: ids
            .iter()
            .filter(|id| !known.contains(id.as_str()))
            .cloned()
            .collect(),
        in_flight: found
            .iter()
            .filter(|(_, _, state)| IN_FLIGHT.contains(&state.as_str()))
            .map(|(_, t, _)| t.clone())
            .collect(),
        deleted: 0,
    };
    outcome.missing.dedup();
    outcome.in_flight.sort();
    outcome.in_flight.dedup();
    if outcome.missing.is_empty() && outcome.in_flight.is_empty() {
        let rows: Vec<&str> = found.iter().map(|(id, _, _)| id.as_str()).collect();
        outcome.deleted =
            diesel::delete(tasks::table.filter(tasks::id.eq_any(rows))).execute(conn)?;
    }
    Ok(outcome)
}

/// Deletes a project's tasks matching `filter` that are not in flight; returns (deleted,
/// skipped because in flight).
pub fn delete_matching(
    conn: &mut AnyConnection,
    project_id: &str,
    filter: &Filter,
) -> StoreResult<(usize, i64)> {
    let select = |conn: &AnyConnection, head: &str, in_flight: bool| {
        let mut sql = Sql::new(dialect_of(conn));
        sql.push(head)
            .push(" FROM tasks t WHERE t.project_id = ")
            .bind(Scalar::Text(project_id.to_owned()))
            .push(" AND ");
        sql.filter("t", filter);
        sql.push(if in_flight {
            " AND t.state IN ("
        } else {
            " AND t.state NOT IN ("
        });
        for (i, state) in IN_FLIGHT.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.bind(Scalar::Text((*state).to_owned()));
        }
        sql.push(")");
        sql
    };
    let skipped = load_sql!(conn, select(conn, "SELECT COUNT(*) AS n", true), Count)?
        .first()
        .map_or(0, |c| c.n);
    let doomed = select(conn, "SELECT t.id", false);
    let mut sql = Sql::new(doomed.dialect);
    sql.push("DELETE FROM tasks WHERE id IN (");
    sql.text.push_str(&doomed.text);
    sql.binds.extend(doomed.binds);
    sql.push(")");
    let deleted = execute_sql!(conn, sql)?;
    Ok((deleted, skipped))
}
