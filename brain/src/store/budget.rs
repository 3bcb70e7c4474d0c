//! Time budgets for reads a caller shapes (lists, searches, filters, orderings, exports).
//!
//! A viewer once sent a filter of 100 `contains` comparisons over a relation: 23 s on SQLite,
//! and eight in parallel held every reader connection, so every other request answered 503.
//! A budgeted read is stopped when its budget runs out, and the caller is told which budget
//! it hit, instead of the brain running it to the end.
//!
//! How each backend stops a statement:
//! - PostgreSQL: the read runs in a transaction with `SET LOCAL statement_timeout`.
//! - SQLite has no statement timeout, and diesel does not expose the handle
//!   `sqlite3_interrupt` would need. Every reader connection instead carries the SQL function
//!   `taskward_within_budget()`, which fails once the calling thread's deadline has passed;
//!   grammar queries put it first in their `WHERE` ([`crate::query::sql::Sql::budget_check`]),
//!   so SQLite evaluates it for each row it considers, and a runaway scan fails within a row of
//!   its deadline. Without a deadline set it always passes.

use std::cell::Cell;
use std::time::{Duration, Instant};

use diesel::serialize::{IsNull, Output, ToSql};
use diesel::sql_types::Integer;
use diesel::sqlite::{Sqlite, SqliteConnection};

use super::StoreError;

/// The default budget of one page, or one page of an export.
pub const DEFAULT_BUDGET: Duration = Duration::from_secs(2);

/// The error text the SQLite function fails with, recognised in [`over_budget`].
const SQLITE_OVER_BUDGET: &str = "taskward: query time budget exceeded";

thread_local! {
    /// The deadline of the budgeted read running on this thread, if any.
    static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
}

diesel::define_sql_function! {
    /// Fails once the running read's deadline has passed (see the module header).
    fn taskward_within_budget() -> Integer;
}

/// Installs `taskward_within_budget()` on a SQLite connection.
pub fn install(conn: &mut SqliteConnection) -> diesel::QueryResult<()> {
    taskward_within_budget_utils::register_nondeterministic_impl(conn, || Check)
}

/// The function's answer: 1 while within the deadline, an error after it.
#[derive(Debug)]
struct Check;

impl ToSql<Integer, Sqlite> for Check {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Sqlite>) -> diesel::serialize::Result {
        let expired = DEADLINE.with(|d| d.get().is_some_and(|at| Instant::now() >= at));
        if expired {
            return Err(SQLITE_OVER_BUDGET.into());
        }
        out.set_value(1);
        Ok(IsNull::No)
    }
}

/// Runs `f` with this thread's deadline `budget` from now (SQLite reads check it), restoring
/// the previous one after.
pub fn with_deadline<T>(budget: Duration, f: impl FnOnce() -> T) -> T {
    struct Restore(Option<Instant>);
    impl Drop for Restore {
        fn drop(&mut self) {
            DEADLINE.with(|d| d.set(self.0));
        }
    }
    let _restore = Restore(DEADLINE.with(|d| d.replace(Some(Instant::now() + budget))));
    f()
}

/// `SET LOCAL statement_timeout` for a budget, in whole milliseconds (at least 1: 0 would
/// mean no timeout at all).
pub fn postgres_setting(budget: Duration) -> String {
    let ms = budget.as_millis().clamp(1, u128::from(u32::MAX));
    format!("SET LOCAL statement_timeout = {ms}")
}

/// Turns a backend's "stopped for time" error into [`StoreError::OverBudget`]; other errors
/// pass through.
pub fn over_budget(err: StoreError, budget: Duration) -> StoreError {
    match &err {
        StoreError::Database(diesel::result::Error::DatabaseError(_, info))
            if info.message().contains(SQLITE_OVER_BUDGET)
                || info.message().contains("statement timeout") =>
        {
            StoreError::OverBudget(budget)
        }
        _ => err,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use diesel::{Connection, RunQueryDsl};

    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }

    /// A recursive query that counts to `n`, with the budget check on every row.
    fn count_to(conn: &mut SqliteConnection, n: i64) -> diesel::QueryResult<i64> {
        diesel::sql_query(format!(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c \
             WHERE taskward_within_budget() AND x < {n}) SELECT count(*) AS n FROM c"
        ))
        .get_result::<Count>(conn)
        .map(|c| c.n)
    }

    #[test]
    fn a_sqlite_scan_stops_at_its_deadline_and_runs_freely_without_one() {
        let mut conn = SqliteConnection::establish(":memory:").unwrap();
        install(&mut conn).unwrap();
        assert_eq!(count_to(&mut conn, 1000).unwrap(), 1000, "no deadline");
        let err =
            with_deadline(Duration::from_millis(50), || count_to(&mut conn, i64::MAX)).unwrap_err();
        let budget = Duration::from_millis(50);
        assert!(matches!(
            over_budget(StoreError::Database(err), budget),
            StoreError::OverBudget(b) if b == budget
        ));
        // The deadline is gone after the closure.
        assert_eq!(count_to(&mut conn, 10).unwrap(), 10);
    }

    #[test]
    fn the_postgres_setting_is_whole_milliseconds_never_zero() {
        assert_eq!(
            postgres_setting(Duration::from_secs(2)),
            "SET LOCAL statement_timeout = 2000"
        );
        assert_eq!(
            postgres_setting(Duration::from_micros(10)),
            "SET LOCAL statement_timeout = 1"
        );
    }
}
