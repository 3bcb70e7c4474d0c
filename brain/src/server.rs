//! `taskward-brain serve`: open the store, bootstrap, listen, and shut down gracefully.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{Signal, SignalKind, signal};

use clap::Args;

use crate::agents::first;
use crate::app::{App, AppState, ServerSettings};
use crate::background;
use crate::bootstrap::bootstrap_if_empty;
use crate::keys::Keys;
use crate::listener::{self, Limits};
use crate::router::router;
use crate::store::{DatabaseUrl, Store, StoreError, run_blocking};
use crate::tls;

/// Options of `serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on. Binding beyond loopback exposes the API: serve TLS
    /// (`--tls-cert`, `--tls-key`) or put a TLS proxy in front.
    #[arg(long, env = "TASKWARD_LISTEN", default_value = "127.0.0.1:7700")]
    pub listen: SocketAddr,

    /// Serve HTTPS (and `wss://` for agents) with this PEM certificate chain, leaf first.
    /// Reloaded when the file changes (checked every 2 s), for renewals without a restart.
    /// Implies `--secure-cookies`.
    #[arg(
        long,
        env = "TASKWARD_TLS_CERT",
        requires = "tls_key",
        value_name = "FILE"
    )]
    pub tls_cert: Option<std::path::PathBuf>,

    /// The PEM private key of `--tls-cert` (PKCS#8, PKCS#1 or SEC1); reloaded with it.
    #[arg(
        long,
        env = "TASKWARD_TLS_KEY",
        requires = "tls_cert",
        value_name = "FILE"
    )]
    pub tls_key: Option<std::path::PathBuf>,

    /// Serve /metrics without a token (for a Prometheus scraper on a trusted network).
    #[arg(long, env = "TASKWARD_METRICS_PUBLIC")]
    pub metrics_public: bool,

    /// How long a command may wait for its agent, in seconds: after it the agent refuses it and
    /// the brain marks it timed_out.
    #[arg(long, env = "TASKWARD_COMMAND_TTL", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub command_ttl: u64,

    /// What a schedule does about due times missed while no brain was running: run once on
    /// start (saying how many were missed), or record them as skipped. Never a burst.
    #[arg(
        long,
        env = "TASKWARD_MISSED_SCHEDULES",
        value_enum,
        default_value = "run-once"
    )]
    pub missed_schedules: crate::schedules::MissedRuns,

    /// Mark the dashboard's session cookie `Secure`: set this when browsers reach the brain
    /// over HTTPS (through a proxy that terminates TLS), so the cookie never travels in clear.
    #[arg(long, env = "TASKWARD_SECURE_COOKIES")]
    pub secure_cookies: bool,

    /// After SIGTERM, how long requests still running (a streaming export, a slow client) may
    /// take before the brain closes them and exits, in seconds. Live dashboard streams close
    /// at once.
    #[arg(long, env = "TASKWARD_SHUTDOWN_GRACE", default_value_t = 30, value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub shutdown_grace: u64,

    /// Seconds a client has to send a request's headers; also how long a kept-alive
    /// connection may sit idle between requests. Idle and trickling clients are closed after
    /// it, so they cannot hold the brain's connections.
    #[arg(long, env = "TASKWARD_HEADER_TIMEOUT", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub header_timeout: u64,

    /// Seconds a client has to send a request's whole body, once its headers arrived; a body
    /// still incomplete is answered 408.
    #[arg(long, env = "TASKWARD_BODY_TIMEOUT", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub body_timeout: u64,

    /// Connections served at once; beyond it a new connection is answered 503 and closed. The
    /// brain also keeps it below its open-file limit (raised to the hard limit at start),
    /// leaving room for the database and files.
    #[arg(long, env = "TASKWARD_MAX_CONNECTIONS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_connections: u64,

    /// Reverse proxies (CIDRs or addresses, comma-separated) whose `X-Forwarded-For` names
    /// the client. Without it the header is ignored, and behind a proxy every client shares
    /// the proxy's address for sign-in limits and logs.
    #[arg(
        long,
        env = "TASKWARD_TRUSTED_PROXIES",
        value_delimiter = ',',
        value_name = "CIDR"
    )]
    pub trusted_proxies: Vec<crate::client_addr::Cidr>,

    /// Milliseconds one page of a list, search or export may take in the database. A filter
    /// or ordering that needs longer is stopped and answered 503 `query_over_budget`, so no
    /// caller can hold connections others need.
    #[arg(long, env = "TASKWARD_QUERY_BUDGET_MS", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(10..=600_000))]
    pub query_budget_ms: u64,

    /// Lists and exports one user may run at once; one more is answered 429. Keep it below
    /// the store's connection pool (16 on PostgreSQL) so one user cannot take every
    /// connection.
    #[arg(long, env = "TASKWARD_READS_PER_CALLER", default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub reads_per_caller: u64,
    /// Rows per second the audit watch re-verifies from genesis, round after round, so a row
    /// altered in the database long after it was written is found (new rows are verified
    /// within a second of being appended regardless). 0 turns the sweep off.
    #[arg(long, env = "TASKWARD_AUDIT_SWEEP_RATE", default_value_t = 200, value_parser = clap::value_parser!(u64).range(0..=10_000_000))]
    pub audit_sweep_rate: u64,

    /// Answer /readyz 503 while an audit chain is broken (by default 200 with
    /// `"status":"degraded"`, so traffic keeps flowing).
    #[arg(long, env = "TASKWARD_READYZ_FAIL_ON_AUDIT")]
    pub readyz_fail_on_audit: bool,

    /// The Celery broker URL put in the `taskward-agent run` lines the brain hands out (on
    /// start while project `default` has no enrolled agent, and in the dashboard's "Add
    /// agent"): where agents reach the broker. The brain never connects to it.
    #[arg(
        long,
        env = "TASKWARD_AGENT_BROKER",
        default_value = crate::app::DEFAULT_AGENT_BROKER,
        value_name = "URL"
    )]
    pub agent_broker: String,
}

/// Why the server could not start, or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The store could not be opened or bootstrapped.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// The signing keys could not be loaded or created.
    #[error("{0}")]
    Keys(String),
    /// The TLS certificate or key cannot be served.
    #[error("{0}")]
    Tls(#[from] crate::tls::TlsError),
    /// A socket or signal handler could not be set up.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Runs the server until SIGINT or SIGTERM, then finishes in-flight requests and returns.
pub async fn serve(data_dir: &Path, url: &DatabaseUrl, args: ServeArgs) -> Result<(), ServeError> {
    // Installed first: a SIGTERM that arrives while starting must still mean "stop cleanly".
    let install = |kind: SignalKind| {
        signal(kind).map_err(|source| ServeError::Io {
            what: "cannot install signal handlers".into(),
            source,
        })
    };
    let (term, int) = (
        install(SignalKind::terminate())?,
        install(SignalKind::interrupt())?,
    );
    let tls = load_tls(&args)?;
    let (store, keys) = open_and_bootstrap(data_dir, url).await?;
    if !args.listen.ip().is_loopback() && tls.is_none() {
        tracing::warn!(listen = %args.listen, "listening beyond loopback without TLS: put a TLS proxy in front");
    }
    let settings = settings(&args, tls.is_some());
    let state = AppState(Arc::new(App::new(
        store,
        keys,
        data_dir.to_owned(),
        settings,
    )));
    let background = background::spawn(state.clone());
    let max_connections = listener::connection_cap(args.max_connections);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|source| ServeError::Io {
            what: format!("cannot listen on {}", args.listen),
            source,
        })?;
    let bound = listener.local_addr().map_err(|source| ServeError::Io {
        what: "cannot read the listening address".into(),
        source,
    })?;
    announce_first_agent(&state, bound, tls.is_some()).await;
    tracing::info!(listen = %bound, tls = tls.is_some(), "taskward brain listening");
    let (acceptor, reload) = match tls {
        Some((files, certs)) => (
            Some(tls::acceptor(certs.clone())),
            Some(tokio::spawn(tls::watch(files, certs))),
        ),
        None => (None, None),
    };
    let stopping = state.clone();
    let limits = Limits {
        header_timeout: Duration::from_secs(args.header_timeout),
        body_timeout: Duration::from_secs(args.body_timeout),
        max_connections,
    };
    let server = listener::serve(
        listener,
        router(state.clone()),
        limits,
        acceptor,
        async move {
            shutdown_signal(term, int).await;
            // Live streams end now; they would otherwise hold the shutdown open forever.
            stopping.begin_shutdown();
        },
    );
    let grace = Duration::from_secs(args.shutdown_grace);
    let mut stopped = state.stopping();
    tokio::select! {
        () = server => {},
        () = async move {
            let _ = stopped.wait_for(|stopping| *stopping).await;
            tokio::time::sleep(grace).await;
        } => tracing::warn!(grace_secs = args.shutdown_grace,
            "requests still running after the shutdown grace; closing them"),
    }
    for task in background.into_iter().chain(reload) {
        task.abort();
    }
    // A last checkpoint, so the log on disk covers everything appended before the stop.
    if let Err(err) = background::checkpoint_and_reload(&state).await {
        tracing::warn!(%err, "final checkpoint failed");
    }
    tracing::info!("taskward brain stopped");
    Ok(())
}

/// The certificate files and their loaded contents, when serving TLS. Checked before anything
/// else starts: a bad certificate is a start-up error, not a listener that fails every
/// handshake.
fn load_tls(args: &ServeArgs) -> Result<Option<(tls::CertFiles, Arc<tls::CertSwap>)>, ServeError> {
    Ok(match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let files = tls::CertFiles {
                cert: cert.clone(),
                key: key.clone(),
            };
            let certs = tls::CertSwap::new(files.load()?);
            Some((files, certs))
        }
        _ => None,
    })
}

/// Opens (and migrates) the store, loads the signing keys, and completes a first start,
/// printing what it created.
async fn open_and_bootstrap(
    data_dir: &Path,
    url: &DatabaseUrl,
) -> Result<(Store, Arc<Keys>), ServeError> {
    tracing::info!(database = %url.redacted(), data_dir = %data_dir.display(), "opening store");
    let open_url = url.clone();
    let store = run_blocking(move || Store::open(&open_url)).await?;
    let keys =
        Arc::new(Keys::load_or_create(data_dir).map_err(|e| ServeError::Keys(e.to_string()))?);
    let (bootstrap_store, bootstrap_keys) = (store.clone(), keys.clone());
    let dir = data_dir.to_owned();
    if let Some(boot) =
        run_blocking(move || bootstrap_if_empty(&bootstrap_store, &bootstrap_keys, &dir)).await?
    {
        // Printed, not logged: log pipelines must never carry a secret.
        eprintln!("{}", boot.banner());
    }
    Ok((store, keys))
}

/// What handlers consult, from the command line.
fn settings(args: &ServeArgs, tls: bool) -> ServerSettings {
    ServerSettings {
        metrics_public: args.metrics_public,
        missed_schedules: args.missed_schedules,
        command_ttl: Duration::from_secs(args.command_ttl),
        secure_cookies: args.secure_cookies || tls,
        trusted_proxies: crate::client_addr::TrustedProxies::new(args.trusted_proxies.clone()),
        query_budget: Duration::from_millis(args.query_budget_ms),
        reads_per_caller: args.reads_per_caller as usize,
        audit_sweep_rate: args.audit_sweep_rate,
        readyz_fail_on_audit: args.readyz_fail_on_audit,
        agent_broker: args.agent_broker.clone(),
        ..ServerSettings::default()
    }
}

/// Prints the `taskward-agent run` line of the first agent while project `default` has no
/// enrolled agent. A failure is only a warning: the line is a convenience, and the brain
/// serves without it.
async fn announce_first_agent(state: &AppState, bound: SocketAddr, tls: bool) {
    match first::issue(&state.store, &state.keys).await {
        Ok(Some(first)) => {
            if first.created {
                tracing::info!(agent = first::NAME, "registered the first agent");
            }
            // Printed, not logged: log pipelines must never carry a secret.
            eprintln!("{}", first.banner(bound, tls, &state.settings.agent_broker));
        }
        Ok(None) => {}
        Err(err) => tracing::warn!(%err, "cannot issue the first agent's enrollment token"),
    }
}

async fn shutdown_signal(mut term: Signal, mut int: Signal) {
    tokio::select! {
        _ = int.recv() => {},
        _ = term.recv() => {},
    }
    tracing::info!("shutdown requested; finishing in-flight requests");
}
