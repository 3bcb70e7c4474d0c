//! Isolated databases: a temp-file SQLite database, or a PostgreSQL database created for the
//! test and dropped after it (the test kit's `PgDatabase`; `TASKWARD_TEST_PG_URL` names the
//! server, default `postgres://postgres@127.0.0.1:5432`).

use taskward_brain::store::DatabaseUrl;
use taskward_testkit::PgDatabase;

/// Which backend a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A database that exists for the lifetime of this value.
pub struct TestDb {
    pub url: DatabaseUrl,
    _pg: Option<PgDatabase>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    /// The database a test of the real binary runs on: none on SQLite (the binary keeps its
    /// own under its data directory), a fresh one on PostgreSQL.
    pub async fn for_binary(backend: Backend) -> Option<TestDb> {
        match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(TestDb::new(Backend::Postgres).await),
        }
    }

    /// Creates an empty database on the backend.
    pub async fn new(backend: Backend) -> TestDb {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                TestDb {
                    url: DatabaseUrl::Sqlite(dir.path().join("test.db")),
                    _pg: None,
                    _dir: Some(dir),
                }
            }
            Backend::Postgres => {
                let db = tokio::task::spawn_blocking(|| PgDatabase::create("tw_test"))
                    .await
                    .unwrap();
                TestDb {
                    url: DatabaseUrl::Postgres(db.url().to_owned()),
                    _pg: Some(db),
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
