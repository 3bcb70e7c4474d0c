//! Isolated databases: a temp-file SQLite database, or a PostgreSQL database created for the
//! test and dropped after it (`TASKWARD_TEST_PG_URL` names the server, default
//! `postgres://postgres@127.0.0.1:5432`).

use diesel::{Connection, PgConnection, RunQueryDsl};
use taskward_brain::store::DatabaseUrl;

/// Which backend a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A database that exists for the lifetime of this value.
pub struct TestDb {
    pub url: DatabaseUrl,
    pg_name: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

fn pg_server() -> String {
    std::env::var("TASKWARD_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

fn pg_admin_connection() -> PgConnection {
    let url = format!("{}/postgres", pg_server());
    PgConnection::establish(&url).unwrap_or_else(|e| {
        panic!("PostgreSQL at {url} is needed for the postgres tests (run scripts/test): {e}")
    })
}

impl TestDb {
    /// Creates an empty database on the backend.
    pub async fn new(backend: Backend) -> TestDb {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                TestDb {
                    url: DatabaseUrl::Sqlite(dir.path().join("test.db")),
                    pg_name: None,
                    _dir: Some(dir),
                }
            }
            Backend::Postgres => {
                let name = format!("tw_test_{}", uuid::Uuid::new_v4().simple());
                let create = name.clone();
                tokio::task::spawn_blocking(move || {
                    diesel::sql_query(format!("CREATE DATABASE {create}"))
                        .execute(&mut pg_admin_connection())
                        .unwrap();
                })
                .await
                .unwrap();
                TestDb {
                    url: DatabaseUrl::Postgres(format!("{}/{name}", pg_server())),
                    pg_name: Some(name),
                    _dir: None,
                }
            }
        }
    }

    /// The URL as the CLI takes it.
    pub fn cli_url(&self) -> String {
        match &self.url {
            DatabaseUrl::Sqlite(path) => format!("sqlite://{}", path.display()),
            DatabaseUrl::Postgres(url) => url.clone(),
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(name) = self.pg_name.take() {
            // Best effort: a leftover test database is harmless, a panic in drop is not.
            let _ = std::thread::spawn(move || {
                let _ = diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut pg_admin_connection());
            })
            .join();
        }
    }
}
