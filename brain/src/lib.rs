//! The Taskward brain: the control plane's central service.
//!
//! # Layout
//! - [`cli`]: the `taskward-brain` command line (serve, migrate, admin commands).
//! - [`server`]: `serve`: store, bootstrap, listener, graceful shutdown.
//! - [`listener`], [`tls`]: the accept loop (deadlines, connection cap) and HTTPS on it with
//!   certificate reloads.
//! - [`router`]: every route in one place, and the OpenAPI document built from them.
//! - [`api`]: one module per REST resource; [`api::extract`] holds the extractors that turn
//!   bad input into JSON 400s.
//! - [`auth`]: bearer tokens into a [`auth::Caller`]; [`auth::ProjectAccess`] checks roles.
//! - [`error`]: [`error::ApiError`], the only error that becomes an HTTP response.
//! - [`store`]: diesel over SQLite or PostgreSQL behind one API, run off the async threads.
//! - [`app`]: the shared state handlers receive.
//! - [`bootstrap`]: first-start admin, project and token.
//! - [`keys`]: the signing keys and confirm secret, in files under `<data-dir>/keys/`.
//! - [`audit`]: checkpoints, live and offline verification, exports of the audit log.
//! - [`hub`]: agent enrollment and the WebSocket sessions that deliver commands and take results.
//! - [`background`]: the server's periodic work: command timeouts, checkpoints, key reloads.
//! - [`schedules`]: cron schedules of operator actions, fired exactly once per due time.
//! - [`query`]: the list grammar (nested filter, orderBy, keyset positions) rendered to SQL.
//! - [`export`]: CSV, XLSX and JSON exports streamed in constant memory.
//! - [`cursor`], [`limits`]: pagination cursors and per-caller rate limits.
//! - [`client_addr`]: the client's address, through `--trusted-proxies`.
//! - [`names`], [`role`], [`expiry`]: validated input values.
//! - [`metrics`], [`telemetry`]: Prometheus metrics and logging.

pub mod agents;
pub mod api;
pub mod app;
pub mod audit;
pub mod auth;
pub mod background;
pub mod bootstrap;
pub mod cli;
pub mod client_addr;
pub mod clock;
pub mod commands;
pub mod cursor;
pub mod dashboard;
pub mod error;
pub mod expiry;
pub mod export;
pub mod hub;
pub mod input;
pub mod keys;
pub mod limits;
pub mod listener;
pub mod metrics;
pub mod names;
pub mod passwords;
pub mod projects;
pub mod query;
pub mod refusal;
pub mod role;
pub mod router;
pub mod schedules;
pub mod server;
pub mod store;
pub mod tasks;
pub mod telemetry;
pub mod tls;
pub mod users;
