//! `taskward-brain serve`: open the store, bootstrap, listen, and shut down gracefully.

use std::path::Path;
use std::sync::Arc;

use crate::app::{App, AppState, ServerSettings};
use crate::bootstrap::bootstrap_if_empty;
use crate::cli::{CliError, ServeArgs};
use crate::router::router;
use crate::store::{DatabaseUrl, Store, run_blocking};

/// Runs the server until SIGINT or SIGTERM, then finishes in-flight requests and returns.
pub async fn serve(data_dir: &Path, url: &DatabaseUrl, args: ServeArgs) -> Result<(), CliError> {
    tracing::info!(database = %url.redacted(), data_dir = %data_dir.display(), "opening store");
    let open_url = url.clone();
    let store = run_blocking(move || Store::open(&open_url)).await?;
    let bootstrap_store = store.clone();
    let dir = data_dir.to_owned();
    if let Some(boot) = run_blocking(move || bootstrap_if_empty(&bootstrap_store, &dir)).await? {
        // Printed, not logged: log pipelines must never carry a secret.
        eprintln!(
            "\nFirst start: created site admin `admin` and project `default`.\n\
             Admin token (shown once, also written to {}):\n\n    {}\n",
            boot.token_file.display(),
            boot.token
        );
    }
    if !args.listen.ip().is_loopback() {
        tracing::warn!(listen = %args.listen, "listening beyond loopback without TLS: put a TLS proxy in front");
    }
    let state = AppState(Arc::new(App::new(
        store,
        ServerSettings {
            metrics_public: args.metrics_public,
        },
    )));
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|source| CliError::Io {
            what: format!("cannot listen on {}", args.listen),
            source,
        })?;
    let bound = listener.local_addr().map_err(|source| CliError::Io {
        what: "cannot read the listening address".into(),
        source,
    })?;
    tracing::info!(listen = %bound, "taskward brain listening");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(|source| CliError::Io {
            what: "server failed".into(),
            source,
        })?;
    tracing::info!("taskward brain stopped");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
    tracing::info!("shutdown requested; finishing in-flight requests");
}
