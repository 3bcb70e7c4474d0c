//! The store: one API over SQLite (embedded default) and PostgreSQL.
//!
//! # The seam
//! Queries are written once against [`AnyConnection`], diesel's `MultiConnection` over both
//! backends; only the few statements the backends spell differently (pragmas, `BEGIN
//! IMMEDIATE`) match on the variant, and they live in this module.
//!
//! # The door
//! Every database operation goes through [`Store::read`] or [`Store::write`], named by a static
//! label (used in tracing spans and the `taskward_store_operations_total` metric). Both run the
//! blocking diesel work on tokio's blocking pool, never on the async worker threads. `write`
//! runs its closure in one transaction on the *writer* pool: on SQLite that pool has a single
//! connection and transactions start with `BEGIN IMMEDIATE`, so concurrent requests queue for
//! the write lock instead of failing with `database is locked`; readers use WAL snapshots.

pub mod agents;
pub mod audit;
pub mod audit_watch;
pub mod budget;
pub mod cleanup;
pub mod commands;
mod connection;
pub mod memberships;
pub mod projects;
pub mod runtime;
pub mod schedules;
pub mod schema;
pub mod seed;
pub mod sessions;
pub mod tasks;
pub mod text_enum;
pub mod tokens;
pub mod users;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use connection::AnyConnection;
use diesel::Connection;
use diesel::connection::{AnsiTransactionManager, SimpleConnection, TransactionManager};
use diesel::r2d2::{ConnectionManager, CustomizeConnection, Pool, PooledConnection};
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

/// Migrations compiled into the binary, one set per backend (their SQL differs slightly).
const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations/sqlite");
const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations/postgres");

/// How long a SQLite connection waits for another process's write lock (the CLI writing while
/// `serve` runs) before giving up. Inside one brain the single writer connection already
/// serialises writes, so this only covers other processes.
const SQLITE_BUSY_TIMEOUT_MS: u32 = 5_000;

/// Readers on SQLite: WAL lets them run beside the writer; more than the core count buys little.
const SQLITE_READERS: u32 = 8;

/// Settings of the one SQLite writer connection, for ingest. An ingest transaction of a few
/// thousand tasks dirties more pages than SQLite's default 2 MiB cache holds, so it spilled
/// pages into the WAL mid-transaction and read them back (14 KiB read and 13 KiB written per
/// event); 32 MiB holds a group. Checkpoints (copying WAL pages into the database) run on
/// another thread, [`checkpoint_in_background`]: the writer is ingest's bottleneck, and its own
/// automatic checkpoint (every 1,000 pages by default) stalled it. The writer still checkpoints
/// past 100,000 pages (400 MiB), should that thread fall behind. Measured with
/// `cargo bench -p taskward-brain --bench ingest` and the Celery ingest bench
/// (docs/benchmarks.md).
const SQLITE_WRITER_PRAGMAS: &str =
    "PRAGMA cache_size = -32768; PRAGMA wal_autocheckpoint = 100000;";

/// How often [`checkpoint_in_background`] copies the WAL into the database.
const SQLITE_CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// Connections to PostgreSQL shared by reads and writes.
const POSTGRES_POOL_SIZE: u32 = 16;

/// How long a request waits for a pooled connection before the store reports itself
/// unavailable (503) rather than hanging.
const POOL_TIMEOUT: Duration = Duration::from_secs(10);

type AnyPool = Pool<ConnectionManager<AnyConnection>>;

/// Where the data lives, parsed from `--database-url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// `sqlite://path/to/file.db` (a relative path is relative to the working directory).
    Sqlite(PathBuf),
    /// `postgres://...` or `postgresql://...`, passed to libpq as given.
    Postgres(String),
}

impl DatabaseUrl {
    /// Parses the two accepted URL forms; anything else is an error naming what is accepted.
    pub fn parse(url: &str) -> Result<DatabaseUrl, String> {
        if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err("sqlite:// URL needs a file path, e.g. sqlite://taskward.db".into());
            }
            Ok(DatabaseUrl::Sqlite(PathBuf::from(path)))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(DatabaseUrl::Postgres(url.to_owned()))
        } else {
            Err(format!(
                "unsupported database URL {url:?}: use sqlite://PATH or postgres://USER@HOST:PORT/DB"
            ))
        }
    }

    /// The default embedded database inside a data directory.
    pub fn default_sqlite(data_dir: &Path) -> DatabaseUrl {
        DatabaseUrl::Sqlite(data_dir.join("taskward.db"))
    }

    /// The URL with any password hidden, for logs.
    pub fn redacted(&self) -> String {
        match self {
            DatabaseUrl::Sqlite(path) => format!("sqlite://{}", path.display()),
            DatabaseUrl::Postgres(url) => match (url.find("://"), url.rfind('@')) {
                (Some(scheme_end), Some(at)) if at > scheme_end => {
                    let userinfo = &url[scheme_end + 3..at];
                    let user = userinfo.split(':').next().unwrap_or_default();
                    format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..])
                }
                _ => url.clone(),
            },
        }
    }
}

/// What can go wrong in the store, in terms the API layer maps to HTTP.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The row asked for does not exist (or is not visible in this scope).
    #[error("not found")]
    NotFound,
    /// A uniqueness rule would be broken (a name or slug already taken).
    #[error("conflict: {0}")]
    Conflict(String),
    /// No connection could be had: the database is down or saturated.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Anything else from the database; a bug or a broken database.
    #[error("database error: {0}")]
    Database(DieselError),
    /// Migrations failed to apply.
    #[error("migration failed: {0}")]
    Migration(String),
    /// A budgeted read ran out of time and was stopped (see [`budget`]).
    #[error("the query did not finish within its {} ms budget", .0.as_millis())]
    OverBudget(Duration),
}

impl From<DieselError> for StoreError {
    fn from(err: DieselError) -> StoreError {
        match err {
            DieselError::NotFound => StoreError::NotFound,
            DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, info) => {
                StoreError::Conflict(info.message().to_owned())
            }
            DieselError::DatabaseError(DatabaseErrorKind::ClosedConnection, info) => {
                StoreError::Unavailable(info.message().to_owned())
            }
            other => StoreError::Database(other),
        }
    }
}

impl From<diesel::r2d2::PoolError> for StoreError {
    fn from(err: diesel::r2d2::PoolError) -> StoreError {
        StoreError::Unavailable(err.to_string())
    }
}

/// Result of every store operation.
pub type StoreResult<T> = Result<T, StoreError>;

impl StoreError {
    /// A concurrent writer got there first: a unique key it inserted, or (PostgreSQL) a
    /// serialization failure. Running the operation again sees the winner's rows.
    pub fn is_lost_race(&self) -> bool {
        matches!(
            self,
            StoreError::Conflict(_)
                | StoreError::Database(DieselError::DatabaseError(
                    DatabaseErrorKind::SerializationFailure,
                    _
                ))
        )
    }
}

/// What a write through the door may end with: a [`StoreError`], or a domain refusal (see
/// [`crate::refusal::Refusal`]) that may carry one. The door rolls back on either and counts
/// refusals apart from failures in `taskward_store_operations_total`.
pub trait OpError: From<StoreError> {
    /// The store failure inside, or `None` for a refusal of the domain's own.
    fn store_error(&self) -> Option<&StoreError>;
}

impl OpError for StoreError {
    fn store_error(&self) -> Option<&StoreError> {
        Some(self)
    }
}

/// Applies the per-connection settings each backend needs for a server workload.
#[derive(Debug)]
struct ConnectionSetup {
    /// The SQLite writer connection gets [`SQLITE_WRITER_PRAGMAS`] on top.
    sqlite_writer: bool,
}

impl CustomizeConnection<AnyConnection, diesel::r2d2::Error> for ConnectionSetup {
    fn on_acquire(&self, conn: &mut AnyConnection) -> Result<(), diesel::r2d2::Error> {
        match conn {
            // WAL: readers never block the writer; NORMAL sync is durable across process
            // crashes in WAL mode (only an OS crash can lose the last commits).
            AnyConnection::Sqlite(c) => c
                .batch_execute(&format!(
                    "PRAGMA journal_mode = WAL; PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}; \
                     PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL; {}",
                    if self.sqlite_writer {
                        SQLITE_WRITER_PRAGMAS
                    } else {
                        ""
                    },
                ))
                .and_then(|()| budget::install(c)),
            // Diesel prepares and caches statements per connection. PostgreSQL would settle on
            // a generic plan made while a table was still empty (a fresh install), e.g. a scan
            // of every task of a project for the ingest lookup; planning each execution with
            // its parameters costs a fraction of a millisecond and never goes stale.
            AnyConnection::Postgresql(c) => {
                c.batch_execute("SET plan_cache_mode = force_custom_plan")
            }
        }
        .map_err(diesel::r2d2::Error::QueryError)
    }
}

/// Counts of store operations by name and outcome, exported on `/metrics`.
pub type StoreMetrics = Family<Vec<(&'static str, String)>, Counter>;

/// Handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<StoreInner>,
}

struct StoreInner {
    /// Which backend, for the few places that differ and for logs.
    backend: Backend,
    /// Connections for reads (on PostgreSQL the same pool as `writer`).
    readers: AnyPool,
    /// Connections for writes: exactly one on SQLite, so writers queue here instead of
    /// racing for SQLite's lock.
    writer: AnyPool,
    /// Operation counters, registered by the app on `/metrics`.
    metrics: StoreMetrics,
    /// This installation's id (names the site audit chain).
    install_id: String,
}

/// The two supported backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded.
    Sqlite,
    /// Server.
    Postgres,
}

impl Store {
    /// Connects, applies pending migrations and returns the store. Blocking: call it before
    /// the server starts or inside `spawn_blocking`.
    pub fn open(url: &DatabaseUrl) -> StoreResult<Store> {
        let install_id;
        let (backend, readers, writer) = match url {
            DatabaseUrl::Sqlite(path) => {
                let manager = || ConnectionManager::<AnyConnection>::new(path.to_string_lossy());
                let writer = build_pool(
                    manager(),
                    1,
                    ConnectionSetup {
                        sqlite_writer: true,
                    },
                )?;
                // Migrate through the writer first, so WAL mode is set before readers open.
                migrate(&mut *writer.get()?)?;
                // Read first: a CLI command opening the store beside a busy server must not
                // queue for the write lock only to find the installation row there.
                // (The first connection goes back to the one-connection pool before the write.)
                let existing = audit::installation(&mut *writer.get()?)?;
                install_id = match existing {
                    Some(id) => id,
                    None => in_write_transaction(&mut writer.get()?, audit::ensure_installation)?,
                };
                let readers = build_pool(
                    manager(),
                    SQLITE_READERS,
                    ConnectionSetup {
                        sqlite_writer: false,
                    },
                )?;
                (Backend::Sqlite, readers, writer)
            }
            DatabaseUrl::Postgres(url) => {
                let manager = ConnectionManager::<AnyConnection>::new(url);
                let pool = build_pool(
                    manager,
                    POSTGRES_POOL_SIZE,
                    ConnectionSetup {
                        sqlite_writer: false,
                    },
                )?;
                migrate(&mut *pool.get()?)?;
                install_id = ensure_installation_retrying(&pool)?;
                (Backend::Postgres, pool.clone(), pool)
            }
        };
        let store = Store {
            inner: Arc::new(StoreInner {
                backend,
                readers,
                writer,
                metrics: StoreMetrics::default(),
                install_id,
            }),
        };
        if backend == Backend::Sqlite {
            checkpoint_in_background(&store);
        }
        Ok(store)
    }

    /// Which backend this store runs on.
    pub fn backend(&self) -> Backend {
        self.inner.backend
    }

    /// The name of the site audit chain (users, projects, tokens, keys).
    pub fn site_chain(&self) -> String {
        audit::site_chain(&self.inner.install_id)
    }

    /// Operation counters, for the metrics registry.
    pub fn metrics(&self) -> &StoreMetrics {
        &self.inner.metrics
    }

    /// Runs a read-only closure on a reader connection, off the async threads.
    pub async fn read<T, F>(&self, op: &'static str, f: F) -> StoreResult<T>
    where
        F: FnOnce(&mut AnyConnection) -> StoreResult<T> + Send + 'static,
        T: Send + 'static,
    {
        let store = self.clone();
        run_blocking(move || store.read_blocking(op, f)).await
    }

    /// [`Store::read`] stopped when `budget` runs out ([`StoreError::OverBudget`]): for reads
    /// whose cost a caller shapes (lists, filters, orderings, searches, export pages).
    pub async fn read_within<T, F>(
        &self,
        op: &'static str,
        budget: Duration,
        f: F,
    ) -> StoreResult<T>
    where
        F: FnOnce(&mut AnyConnection) -> StoreResult<T> + Send + 'static,
        T: Send + 'static,
    {
        let store = self.clone();
        run_blocking(move || store.read_within_blocking(op, budget, f)).await
    }

    /// [`Store::read_within`] for synchronous callers (export streams run on blocking threads).
    pub fn read_within_blocking<T>(
        &self,
        op: &'static str,
        budget: Duration,
        f: impl FnOnce(&mut AnyConnection) -> StoreResult<T>,
    ) -> StoreResult<T> {
        budget::with_deadline(budget, || {
            self.read_blocking(op, |conn| match conn {
                AnyConnection::Sqlite(_) => f(conn),
                AnyConnection::Postgresql(_) => conn.transaction(|conn| {
                    conn.batch_execute(&budget::postgres_setting(budget))?;
                    f(conn)
                }),
            })
        })
        .map_err(|err| budget::over_budget(err, budget))
    }

    /// Runs a closure in one write transaction, off the async threads. Everything it does
    /// commits together or not at all: an `Err` — a store failure or a domain refusal —
    /// rolls the transaction back, so a refusal never leaves half a change behind.
    pub async fn write<T, E, F>(&self, op: &'static str, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut AnyConnection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: OpError + Send + 'static,
    {
        let store = self.clone();
        run_blocking(move || store.write_blocking(op, f)).await
    }

    /// [`Store::write`], run again (once) when it lost a race for a unique key or a
    /// serializable snapshot to a concurrent writer: the second attempt reads the winner's
    /// row. For operations whose closure is safe to repeat (it reads before it writes).
    pub async fn write_retrying<T, E, F>(&self, op: &'static str, f: F) -> Result<T, E>
    where
        F: Fn(&mut AnyConnection) -> Result<T, E> + Send + Sync + 'static,
        T: Send + 'static,
        E: OpError + Send + 'static,
    {
        let store = self.clone();
        run_blocking(move || match store.write_blocking(op, &f) {
            Err(err) if err.store_error().is_some_and(StoreError::is_lost_race) => {
                tracing::debug!(op, "write lost a race; running it again");
                store.write_blocking(op, &f)
            }
            other => other,
        })
        .await
    }

    /// [`Store::read`] for synchronous callers (the CLI).
    pub fn read_blocking<T>(
        &self,
        op: &'static str,
        f: impl FnOnce(&mut AnyConnection) -> StoreResult<T>,
    ) -> StoreResult<T> {
        let _span = tracing::debug_span!("store", op).entered();
        let result = self
            .inner
            .readers
            .get()
            .map_err(StoreError::from)
            .and_then(|mut conn| f(&mut conn));
        self.count(op, &result);
        result
    }

    /// [`Store::write`] for synchronous callers (the CLI).
    pub fn write_blocking<T, E: OpError>(
        &self,
        op: &'static str,
        f: impl FnOnce(&mut AnyConnection) -> Result<T, E>,
    ) -> Result<T, E> {
        let _span = tracing::debug_span!("store", op).entered();
        let result = match self.inner.writer.get() {
            Ok(mut conn) => in_write_transaction(&mut conn, f),
            Err(err) => Err(StoreError::from(err).into()),
        };
        self.count(op, &result);
        result
    }

    /// Checks that a connection can be had and answers a trivial query (for `/readyz`).
    pub async fn ping(&self) -> StoreResult<()> {
        self.read("ping", |conn| {
            conn.batch_execute("SELECT 1")?;
            Ok(())
        })
        .await
    }

    fn count<T, E: OpError>(&self, op: &'static str, result: &Result<T, E>) {
        let outcome = match result.as_ref().map_err(E::store_error) {
            Ok(_) => "ok",
            Err(None) => "refused",
            Err(Some(StoreError::NotFound)) => "not_found",
            Err(Some(StoreError::Conflict(_))) => "conflict",
            Err(Some(StoreError::Unavailable(_))) => "unavailable",
            Err(Some(StoreError::OverBudget(_))) => "over_budget",
            Err(Some(_)) => "error",
        };
        self.inner
            .metrics
            .get_or_create(&vec![
                ("op", op.to_owned()),
                ("outcome", outcome.to_owned()),
            ])
            .inc();
    }
}

/// Runs blocking work on tokio's blocking pool, keeping the caller's tracing span.
pub async fn run_blocking<T, E, F>(f: F) -> Result<T, E>
where
    F: FnOnce() -> Result<T, E> + Send + 'static,
    T: Send + 'static,
    E: From<StoreError> + Send + 'static,
{
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(f))
        .await
        .unwrap_or_else(|join_err| {
            // A panic inside store code: surface it as an error instead of killing the server.
            Err(StoreError::Unavailable(format!("store task failed: {join_err}")).into())
        })
}

/// Copies the WAL into the database every [`SQLITE_CHECKPOINT_EVERY`] from a reader connection (a passive
/// checkpoint: it never waits for, nor blocks, the writer or readers). The thread ends when the
/// store is dropped.
fn checkpoint_in_background(store: &Store) {
    let store = Arc::downgrade(&store.inner);
    let spawned = std::thread::Builder::new()
        .name("sqlite-checkpoint".into())
        .spawn(move || {
            loop {
                std::thread::sleep(SQLITE_CHECKPOINT_EVERY);
                let Some(inner) = store.upgrade() else { return };
                let Ok(mut conn) = inner.readers.get() else {
                    continue;
                };
                if let Err(e) = conn.batch_execute("PRAGMA wal_checkpoint(PASSIVE)") {
                    tracing::warn!(error = %e, "WAL checkpoint failed");
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "no checkpoint thread; the writer checkpoints itself");
    }
}

fn build_pool(
    manager: ConnectionManager<AnyConnection>,
    size: u32,
    setup: ConnectionSetup,
) -> StoreResult<AnyPool> {
    Pool::builder()
        .max_size(size)
        // No idle floor: r2d2 would refill it from a background thread, which can still be
        // inside libpq when a short CLI command exits (a crash at exit was seen).
        .min_idle(Some(0))
        .connection_timeout(POOL_TIMEOUT)
        .connection_customizer(Box::new(setup))
        .build(manager)
        .map_err(|e| StoreError::Unavailable(e.to_string()))
}

/// Two brain processes starting at once on one PostgreSQL may both try to create the
/// installation row; the loser sees a conflict and reads the winner's.
fn ensure_installation_retrying(pool: &AnyPool) -> StoreResult<String> {
    match in_write_transaction(&mut pool.get()?, audit::ensure_installation) {
        Err(StoreError::Conflict(_)) => {
            in_write_transaction(&mut pool.get()?, audit::ensure_installation)
        }
        other => other,
    }
}

fn migrate(conn: &mut AnyConnection) -> StoreResult<()> {
    let applied = match conn {
        AnyConnection::Sqlite(c) => c.run_pending_migrations(SQLITE_MIGRATIONS).map(|v| v.len()),
        AnyConnection::Postgresql(c) => c
            .run_pending_migrations(POSTGRES_MIGRATIONS)
            .map(|v| v.len()),
    }
    .map_err(|e| StoreError::Migration(e.to_string()))?;
    if applied > 0 {
        tracing::info!(applied, "applied database migrations");
    }
    Ok(())
}

/// Runs `f` in a transaction, starting it with `BEGIN IMMEDIATE` on SQLite so the write lock
/// is taken up front (a deferred transaction that upgrades later can fail instead of waiting).
fn in_write_transaction<T, E: From<StoreError>>(
    conn: &mut PooledConnection<ConnectionManager<AnyConnection>>,
    f: impl FnOnce(&mut AnyConnection) -> Result<T, E>,
) -> Result<T, E> {
    let conn: &mut AnyConnection = conn;
    let begun = match conn {
        AnyConnection::Sqlite(c) => {
            AnsiTransactionManager::begin_transaction_sql(c, "BEGIN IMMEDIATE")
        }
        AnyConnection::Postgresql(c) => AnsiTransactionManager::begin_transaction(c),
    };
    begun.map_err(StoreError::from)?;
    let result = f(conn);
    let end = match (&result, &mut *conn) {
        (Ok(_), AnyConnection::Sqlite(c)) => AnsiTransactionManager::commit_transaction(c),
        (Ok(_), AnyConnection::Postgresql(c)) => AnsiTransactionManager::commit_transaction(c),
        (Err(_), AnyConnection::Sqlite(c)) => AnsiTransactionManager::rollback_transaction(c),
        (Err(_), AnyConnection::Postgresql(c)) => AnsiTransactionManager::rollback_transaction(c),
    };
    match (result, end) {
        (Ok(value), Ok(())) => Ok(value),
        (Ok(_), Err(commit_err)) => Err(StoreError::from(commit_err).into()),
        (Err(err), _) => Err(err),
    }
}

pub use crate::clock::now_ms;

/// A new random row id.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_parse_and_redact() {
        assert_eq!(
            DatabaseUrl::parse("sqlite://data/x.db").unwrap(),
            DatabaseUrl::Sqlite(PathBuf::from("data/x.db"))
        );
        assert!(DatabaseUrl::parse("sqlite://").is_err());
        assert!(DatabaseUrl::parse("mysql://x").is_err());
        let pg = DatabaseUrl::parse("postgres://tw:hunter2@db:5432/tw").unwrap();
        assert_eq!(pg.redacted(), "postgres://tw:***@db:5432/tw");
        assert!(!pg.redacted().contains("hunter2"));
    }
}
