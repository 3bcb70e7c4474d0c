//! Fresh PostgreSQL databases, dropped after the test (`TASKWARD_TEST_PG_URL` names the
//! server, default `postgres://postgres@127.0.0.1:5432`).

use diesel::{Connection, PgConnection, RunQueryDsl};

/// The PostgreSQL server tests use (no database name).
pub fn pg_server() -> String {
    std::env::var("TASKWARD_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

fn admin_connection() -> PgConnection {
    let url = format!("{}/postgres", pg_server());
    PgConnection::establish(&url).unwrap_or_else(|e| {
        panic!("PostgreSQL at {url} is needed for the postgres tests (run scripts/test): {e}")
    })
}

/// A database that exists for the lifetime of this value (blocking calls: from async code,
/// create it in `spawn_blocking`).
#[derive(Debug)]
pub struct PgDatabase {
    name: String,
    url: String,
}

impl PgDatabase {
    /// Creates an empty database named `<prefix>_<random>`.
    pub fn create(prefix: &str) -> PgDatabase {
        let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
        diesel::sql_query(format!("CREATE DATABASE {name}"))
            .execute(&mut admin_connection())
            .unwrap();
        PgDatabase {
            url: format!("{}/{name}", pg_server()),
            name,
        }
    }

    /// Its URL (`postgres://…/<name>`), as the brain's CLI and `DatabaseUrl` take it.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        // Best effort: a leftover test database is harmless, a panic in drop is not. On a thread
        // of its own, since the drop may run on an async worker.
        let name = std::mem::take(&mut self.name);
        let _ = std::thread::spawn(move || {
            let _ = diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut admin_connection());
        })
        .join();
    }
}
