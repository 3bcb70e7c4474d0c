//! The application state every handler sees.

use std::ops::Deref;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use taskward_shared::audit::{Actor, ActorKind};

use crate::audit::watch::AuditWatch;
use crate::hub::Hub;
use crate::keys::Keys;
use crate::limits::{ConcurrentReads, Limit, RateLimiter, SlowLanes};
use crate::metrics::Metrics;
use crate::store::Store;
use crate::store::audit::AuditContext;

/// How long a command may wait for its agent before it times out (and the agent would refuse
/// it): long enough for an agent to reconnect, short enough that nobody is surprised by an old
/// command running.
pub const DEFAULT_COMMAND_TTL: Duration = Duration::from_secs(5 * 60);

/// The broker agents are told to use unless `serve --agent-broker` says otherwise: a Redis
/// beside the workers, as most Celery setups start.
pub const DEFAULT_AGENT_BROKER: &str = "redis://127.0.0.1:6379/0";

/// Settings of a running server that handlers consult.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Serve `/metrics` without a token (for scrapers on a trusted network).
    pub metrics_public: bool,
    /// Lifetime of a command, see [`DEFAULT_COMMAND_TTL`].
    pub command_ttl: Duration,
    /// Per-caller limit on bulk retry and purge.
    pub bulk_limit: Limit,
    /// How often grown chains get a checkpoint in `checkpoints.log`.
    pub checkpoint_interval: Duration,
    /// How often overdue commands are timed out.
    pub sweep_interval: Duration,
    /// Due times of schedules missed while no brain ran: run once, or skip.
    pub missed_schedules: crate::schedules::MissedRuns,
    /// Mark the dashboard's session cookie `Secure` (the brain is reached over TLS, through a
    /// proxy that terminates it).
    pub secure_cookies: bool,
    /// Sign-in attempts allowed per account and per address.
    pub login_limit: Limit,
    /// How long each sign-in attempt beyond an address's limit is held, one at a time per
    /// address: a script guessing from one address is slowed to a crawl, while a person
    /// sharing that address (a NAT, an office) still gets in with the right password.
    pub login_slowdown: Duration,
    /// Proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: crate::client_addr::TrustedProxies,
    /// How long one caller-shaped read (a page of a list, a page of an export) may run.
    pub query_budget: Duration,
    /// Caller-shaped reads one caller may run at once.
    pub reads_per_caller: usize,
    /// How often chains that grew are verified from their last verified point.
    pub audit_watch_interval: Duration,
    /// Rows per second the sweep re-verifies from genesis (an altered old row is found within
    /// the log's size divided by this).
    pub audit_sweep_rate: u64,
    /// Answer `/readyz` 503 (not 200) while an audit chain is broken.
    pub readyz_fail_on_audit: bool,
    /// The broker URL the `taskward-agent run` lines handed out (on start, in the dashboard)
    /// carry: where agents reach the Celery broker, which the brain itself never touches.
    pub agent_broker: String,
}

impl Default for ServerSettings {
    fn default() -> ServerSettings {
        ServerSettings {
            metrics_public: false,
            command_ttl: DEFAULT_COMMAND_TTL,
            bulk_limit: Limit::default(),
            checkpoint_interval: Duration::from_secs(60),
            sweep_interval: Duration::from_secs(1),
            missed_schedules: crate::schedules::MissedRuns::default(),
            secure_cookies: false,
            login_limit: Limit {
                burst: 10,
                per_minute: 10,
            },
            login_slowdown: Duration::from_secs(1),
            trusted_proxies: crate::client_addr::TrustedProxies::default(),
            query_budget: crate::store::budget::DEFAULT_BUDGET,
            reads_per_caller: 4,
            audit_watch_interval: Duration::from_secs(1),
            audit_sweep_rate: 200,
            readyz_fail_on_audit: false,
            agent_broker: DEFAULT_AGENT_BROKER.to_owned(),
        }
    }
}

/// Everything a request may need.
pub struct App {
    /// The database.
    pub store: Store,
    /// Signing keys and the confirm-token secret.
    pub keys: Arc<Keys>,
    /// The data directory (checkpoints.log lives here).
    pub data_dir: PathBuf,
    /// Server settings.
    pub settings: ServerSettings,
    /// Prometheus registry and HTTP counters.
    pub metrics: Metrics,
    /// Limits on bulk retry and purge.
    pub bulk_limiter: RateLimiter,
    /// Limits on dashboard sign-in attempts (keys `account:<name>` and `address:<ip>`).
    pub login_limiter: RateLimiter,
    /// Sign-in attempts over an address's limit wait here, one at a time per address.
    pub login_lanes: SlowLanes,
    /// Caller-shaped reads running, per caller.
    pub reads: ConcurrentReads,
    /// Connected agents.
    pub hub: Hub,
    /// Continuous verification of the audit log.
    pub audit_watch: AuditWatch,
    /// Flips to true when the server starts shutting down; long-lived responses (live
    /// dashboard streams) end on it.
    stopping: tokio::sync::watch::Sender<bool>,
}

impl App {
    /// Builds the app and registers the store's counters with the metrics registry.
    pub fn new(store: Store, keys: Arc<Keys>, data_dir: PathBuf, settings: ServerSettings) -> App {
        let metrics = Metrics::new(&store);
        let audit_watch = AuditWatch::new(&data_dir);
        App {
            bulk_limiter: RateLimiter::new(settings.bulk_limit),
            login_limiter: RateLimiter::new(settings.login_limit),
            reads: ConcurrentReads::new(settings.reads_per_caller),
            login_lanes: SlowLanes::new(settings.login_slowdown, Duration::from_secs(10)),
            store,
            keys,
            data_dir,
            settings,
            metrics,
            hub: Hub::default(),
            audit_watch,
            stopping: tokio::sync::watch::Sender::new(false),
        }
    }

    /// Tells long-lived responses to end: the server is shutting down.
    pub fn begin_shutdown(&self) {
        self.stopping.send_replace(true);
    }

    /// Watches for the shutdown (`wait_for(|stopping| *stopping)`).
    pub fn stopping(&self) -> tokio::sync::watch::Receiver<bool> {
        self.stopping.subscribe()
    }

    /// What an audit append needs when `actor` acts (a caller's `actor()`): the keys and the actor.
    pub fn audit_as(&self, actor: Actor) -> AuditContext {
        AuditContext {
            signer: self.keys.clone(),
            actor,
        }
    }

    /// The brain itself as actor (timeouts, checkpoints).
    pub fn audit_as_system(&self) -> AuditContext {
        AuditContext {
            signer: self.keys.clone(),
            actor: system_actor("brain"),
        }
    }
}

/// The brain (or its CLI, on this host) as an audit actor.
pub fn system_actor(name: &str) -> Actor {
    Actor {
        kind: ActorKind::System,
        id: "brain".into(),
        name: name.into(),
    }
}

/// Cheap-to-clone handle on the [`App`], the state type of the router.
#[derive(Clone)]
pub struct AppState(pub Arc<App>);

impl Deref for AppState {
    type Target = App;

    fn deref(&self) -> &App {
        &self.0
    }
}

/// What the client-address extractor needs of the state (so `client_addr` does not depend on
/// the app).
impl axum::extract::FromRef<AppState> for crate::client_addr::TrustedProxies {
    fn from_ref(state: &AppState) -> Self {
        state.settings.trusted_proxies.clone()
    }
}
