//! The `taskward-agent` command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::config::{AgentConfig, BrokerTls};
use crate::enroll::{self, EngineKind, Enrollment, LinkSecurity};
use crate::link::{self, RunError};
use crate::logging::{self, LogFormat};
use crate::status::Status;
use crate::tls;

/// Taskward agent: runs beside the workers on one host, streams their events to the brain and
/// runs the signed commands the brain sends. No Python inside.
///
/// Start with the line `taskward-brain serve` prints, e.g.
/// `taskward-agent run --brain http://127.0.0.1:7700 --enroll twe_... --broker redis://127.0.0.1:6379/0`
/// (enrolls on first start, then runs); or `taskward-agent enroll` with a token from
/// `POST /api/v1/projects/SLUG/agents`, then `taskward-agent run`.
#[derive(Debug, Parser)]
#[command(name = "taskward-agent", version, propagate_version = true)]
pub struct Cli {
    /// The config file `enroll` writes and `run` and `status` read (default:
    /// /etc/taskward/agent.toml as root, else ~/.config/taskward/agent.toml).
    #[arg(
        long,
        env = "TASKWARD_AGENT_CONFIG",
        default_value_os_t = default_config_path(),
        global = true
    )]
    pub config: PathBuf,

    /// Log line format on stderr: text, or one JSON object per line for log shippers.
    #[arg(long, env = "TASKWARD_AGENT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Register this host with the brain: makes the agent's key pair, spends the one-time
    /// token, pins the brain's public keys and writes the config file.
    ///
    /// Example: taskward-agent enroll --brain http://127.0.0.1:7700 --token twe_... --broker redis://127.0.0.1:6379/0
    Enroll {
        /// The brain's base URL.
        #[arg(long)]
        brain: String,
        /// The one-time enrollment token.
        #[arg(long, env = "TASKWARD_ENROLLMENT_TOKEN")]
        token: String,
        /// Overwrite an existing config (the old identity is abandoned).
        #[arg(long)]
        force: bool,
        /// Engine, broker, state and TLS settings.
        #[command(flatten)]
        setup: Setup,
    },
    /// Connect to the brain and serve until stopped. With `--enroll` and no config yet,
    /// enrolls first (as `enroll` does) and writes the config; with a config there already,
    /// the token is ignored.
    ///
    /// Example: taskward-agent run --brain http://127.0.0.1:7700 --enroll twe_... --broker redis://127.0.0.1:6379/0
    Run {
        /// A one-time enrollment token, used only when there is no config yet.
        #[arg(long, requires = "brain")]
        enroll: Option<String>,
        /// The brain's base URL (with `--enroll`).
        #[arg(long, requires = "enroll")]
        brain: Option<String>,
        /// Engine, broker, state and TLS settings (with `--enroll`).
        #[command(flatten)]
        setup: Setup,
    },
    /// Print the link state, last command, pending results and counters.
    Status,
}

/// What enrollment writes into the config besides the identity: shared by `enroll` and
/// `run --enroll`.
#[derive(Debug, Args)]
pub struct Setup {
    /// The engine this agent drives (default: celery when --broker is a redis://, rediss://
    /// or amqp:// URL, none without --broker).
    #[arg(long, value_enum)]
    engine: Option<EngineKind>,
    /// The Celery broker, e.g. redis://127.0.0.1:6379/0 or
    /// amqp://guest:guest@127.0.0.1:5672//; connected to before the token is spent.
    #[arg(long, required_if_eq("engine", "celery"))]
    broker: Option<String>,
    /// rediss:// only: PEM file of the private CA(s) the broker's certificate chains to
    /// (instead of the web PKI roots built in).
    #[arg(long, requires = "broker")]
    broker_ca_file: Option<PathBuf>,
    /// rediss:// only: PEM client certificate for a Redis with `tls-auth-clients yes`.
    #[arg(long, requires_all = ["broker", "broker_client_key"])]
    broker_client_cert: Option<PathBuf>,
    /// The PEM private key of --broker-client-cert.
    #[arg(long, requires = "broker_client_cert")]
    broker_client_key: Option<PathBuf>,
    /// Where to keep the seen-store, pinned keys and status (default: `state/` beside the config).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// PEM file of the private CA(s) the brain's certificate chains to (instead of the
    /// web PKI roots built in).
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// SHA-256 (hex) of the brain's certificate, required on top of a valid chain.
    #[arg(long)]
    brain_cert_sha256: Option<String>,
    /// Allow a plain http:// brain beyond loopback (credential and commands in clear text:
    /// only on a network secured otherwise).
    #[arg(long)]
    allow_insecure: bool,
}

impl Setup {
    /// The enrollment these settings describe, for `brain` and `token`.
    fn enrollment(self, brain: String, token: String) -> Result<Enrollment, String> {
        Ok(Enrollment {
            brain,
            token,
            state_dir: self.state_dir,
            engine: enroll::engine_config(
                self.engine,
                self.broker,
                BrokerTls {
                    ca_file: self.broker_ca_file,
                    client_cert: self.broker_client_cert,
                    client_key: self.broker_client_key,
                },
            )?,
            link: LinkSecurity {
                ca_file: self.ca_file,
                brain_cert_sha256: self.brain_cert_sha256,
                allow_insecure: self.allow_insecure,
            },
        })
    }
}

/// `/etc/taskward/agent.toml` for root (a system service); for anyone else a file of their
/// own, so a first `run --enroll` by a user works without root.
fn default_config_path() -> PathBuf {
    use std::os::unix::fs::MetadataExt;
    let root = std::fs::metadata("/proc/self").map_or(true, |m| m.uid() == 0);
    let user_dir = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")));
    match user_dir {
        Some(dir) if !root => dir.join("taskward/agent.toml"),
        _ => PathBuf::from("/etc/taskward/agent.toml"),
    }
}

/// Parses arguments and runs.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    tls::install_default_provider();
    logging::init(cli.log_format);
    let outcome = match cli.command {
        Command::Enroll {
            brain,
            token,
            force,
            setup,
        } => setup
            .enrollment(brain, token)
            .and_then(|e| enroll::enroll(&cli.config, e, force))
            .map(|done| {
                println!(
                    "enrolled as agent {}; pinned {} brain key(s); config written to {}\nnext: taskward-agent run --config {}",
                    done.agent_id,
                    done.brain_keys,
                    cli.config.display(),
                    cli.config.display()
                );
            }),
        Command::Run {
            enroll,
            brain,
            setup,
        } => enroll_first(&cli.config, enroll, brain, setup).and_then(|()| run(&cli.config)),
        Command::Status => status(&cli.config),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // A log shipper reads every stderr line as JSON; a person reads the bare line.
            match cli.log_format {
                LogFormat::Json => tracing::error!(error = %e, "stopped"),
                LogFormat::Text => eprintln!("error: {e}"),
            }
            ExitCode::FAILURE
        }
    }
}

/// `run --enroll`: enrolls when there is no config yet; otherwise says (one line) that the
/// token and the enrollment options are not used, and how to change what the config holds.
fn enroll_first(
    config: &Path,
    token: Option<String>,
    brain: Option<String>,
    setup: Setup,
) -> Result<(), String> {
    let (Some(token), Some(brain)) = (token, brain) else {
        return Ok(());
    };
    if config.exists() {
        tracing::info!(
            config = %config.display(),
            "this host is enrolled already, so --enroll and the enrollment options (--brain, \
             --broker, --engine, TLS files) are ignored and the token is not used; to change the \
             broker or brain, edit the config and restart; to enroll afresh, run \
             `taskward-agent enroll --force` with a new token"
        );
        return Ok(());
    }
    let done = enroll::enroll(config, setup.enrollment(brain, token)?, false)?;
    tracing::info!(
        agent = %done.agent_id,
        brain_keys = done.brain_keys,
        config = %config.display(),
        "enrolled; config written"
    );
    Ok(())
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Runtime::new().map_err(|e| format!("cannot start the async runtime: {e}"))
}

fn run(config_path: &Path) -> Result<(), String> {
    if !config_path.exists() {
        return Err(format!(
            "no config at {}: this host is not enrolled yet; start with `taskward-agent run \
             --brain URL --enroll TOKEN [--broker URL]` (the line `taskward-brain serve` prints)",
            config_path.display()
        ));
    }
    let config = AgentConfig::load(config_path).map_err(|e| e.to_string())?;
    let _running = crate::state_lock::lock(&config.state_dir)?;
    runtime()?.block_on(async {
        tokio::select! {
            result = link::run(config) => match result {
                Ok(()) => Ok(()),
                Err(RunError::Replaced) => Err(RunError::Replaced.to_string()),
                Err(e) => Err(e.to_string()),
            },
            _ = shutdown() => {
                tracing::info!("stopping");
                Ok(())
            }
        }
    })
}

async fn shutdown() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}

fn status(config_path: &Path) -> Result<(), String> {
    let config = AgentConfig::load(config_path).map_err(|e| e.to_string())?;
    let Some(status) = Status::load(&config.state_dir) else {
        println!(
            "agent {}: never run (no status in {})",
            config.agent_id,
            config.state_dir.display()
        );
        return Ok(());
    };
    println!("agent          {}", config.agent_id);
    println!("brain          {}", status.brain);
    println!(
        "link           {}{}",
        status.link,
        status
            .session
            .map(|s| format!(" (session {s})"))
            .unwrap_or_default()
    );
    match &status.last_command {
        Some(c) => println!("last command   {} {} {}", c.id, c.kind, c.outcome),
        None => println!("last command   none"),
    }
    println!("pending results {}", status.results_pending);
    println!("seen commands  {}", status.seen_commands);
    println!("spool          {} bytes", status.spool_bytes);
    println!("dropped events {}", status.dropped_events);
    println!("rejected frames {}", status.rejected_frames);
    if let Some(b) = &status.broker {
        println!("broker         {b}");
    }
    if let Some(e) = &status.last_error {
        println!("last error     {e}");
    }
    Ok(())
}
