//! The `taskward-agent` command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use taskward_shared::crypto::generate_signing_key;
use taskward_shared::protocol::{EnrollRequest, EnrollResponse};

use crate::brain_url::BrainUrl;
use crate::config::{AgentConfig, DEFAULT_CLOCK_SKEW_SECS, EngineConfig};
use crate::link::{self, RunError};
use crate::status::Status;
use crate::tls;
use crate::trust::Trust;
use taskward_shared::secret::write_private_file;

/// Taskward agent: runs beside the workers on one host, streams their events to the brain and
/// runs the signed commands the brain sends. No Python inside.
///
/// Start with `taskward-agent enroll --brain URL --token TOKEN` (the token comes from
/// `POST /api/v1/projects/SLUG/agents`), then `taskward-agent run`.
#[derive(Debug, Parser)]
#[command(name = "taskward-agent", version, propagate_version = true)]
pub struct Cli {
    /// The config file `enroll` writes and `run` and `status` read.
    #[arg(
        long,
        env = "TASKWARD_AGENT_CONFIG",
        default_value = "/etc/taskward/agent.toml",
        global = true
    )]
    pub config: PathBuf,

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
    /// Example: taskward-agent enroll --brain http://127.0.0.1:7700 --token twe_...
    Enroll {
        /// The brain's base URL.
        #[arg(long)]
        brain: String,
        /// The one-time enrollment token.
        #[arg(long, env = "TASKWARD_ENROLLMENT_TOKEN")]
        token: String,
        /// Where to keep the seen-store, pinned keys and status (default: `state/` beside the config).
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// The engine this agent drives.
        #[arg(long, value_enum, default_value_t = EngineKind::None)]
        engine: EngineKind,
        /// The Celery broker (with `--engine celery`), e.g. redis://127.0.0.1:6379/0 or
        /// amqp://guest:guest@127.0.0.1:5672//; checked (connected to) before the token is spent.
        #[arg(long, required_if_eq("engine", "celery"))]
        broker: Option<String>,
        /// Overwrite an existing config (the old identity is abandoned).
        #[arg(long)]
        force: bool,
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
    },
    /// Connect to the brain and serve until stopped.
    Run,
    /// Print the link state, last command, pending results and counters.
    Status,
}

/// Engines `enroll` can configure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EngineKind {
    /// No engine yet: commands are refused with a reason.
    None,
    /// Celery over Redis (events; commands arrive in a later release).
    Celery,
    /// The scripted test double (test builds only).
    Test,
}

/// Parses arguments and runs.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    tls::install_default_provider();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let outcome = match cli.command {
        Command::Enroll {
            brain,
            token,
            state_dir,
            engine,
            broker,
            force,
            ca_file,
            brain_cert_sha256,
            allow_insecure,
        } => {
            let engine = match (engine, broker) {
                (EngineKind::Celery, Some(broker)) => EngineConfig::celery(broker),
                (EngineKind::Test, _) => EngineConfig::Test {
                    delay_ms: 0,
                    fail_kinds: Vec::new(),
                    events_total: 0,
                    events_per_sec: 0,
                },
                _ => EngineConfig::None,
            };
            let link = LinkSecurity {
                ca_file,
                brain_cert_sha256,
                allow_insecure,
            };
            enroll(&cli.config, &brain, &token, state_dir, engine, link, force)
        }
        Command::Run => run(&cli.config),
        Command::Status => status(&cli.config),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Runtime::new().map_err(|e| format!("cannot start the async runtime: {e}"))
}

/// How `enroll` reaches the brain: the TLS settings it checks and then writes to the config.
struct LinkSecurity {
    ca_file: Option<PathBuf>,
    brain_cert_sha256: Option<String>,
    allow_insecure: bool,
}

fn enroll(
    config_path: &Path,
    brain: &str,
    token: &str,
    state_dir: Option<PathBuf>,
    engine: EngineConfig,
    link: LinkSecurity,
    force: bool,
) -> Result<(), String> {
    if config_path.exists() && !force {
        return Err(format!(
            "{} exists: this host is enrolled already (use --force to enroll again)",
            config_path.display()
        ));
    }
    let brain = BrainUrl::parse(brain, link.allow_insecure).map_err(|e| format!("--brain: {e}"))?;
    // Absolute, so `run` finds it from any working directory.
    let ca_file = link
        .ca_file
        .map(|path| {
            std::fs::canonicalize(&path).map_err(|e| format!("--ca-file {}: {e}", path.display()))
        })
        .transpose()?;
    let tls = tls::brain_client_config(ca_file.as_deref(), link.brain_cert_sha256.as_deref())
        .map_err(|e| e.to_string())?;
    let dir = config_path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let state_dir = state_dir.unwrap_or_else(|| dir.join("state"));
    // The broker before the token: a token spent on a broker the agent cannot read is lost.
    if let EngineConfig::Celery {
        broker,
        global_keyprefix,
        ..
    } = &engine
    {
        runtime()?.block_on(crate::engines::celery::reach_broker(
            broker,
            global_keyprefix,
        ))?;
    }
    let key = generate_signing_key();
    let request = EnrollRequest {
        enrollment_token: token.to_owned(),
        public_key: hex::encode(key.verifying_key().as_bytes()),
        hostname: std::fs::read_to_string("/etc/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty()),
    };
    let url = brain.enroll_url();
    let response: EnrollResponse = runtime()?.block_on(async {
        let client = reqwest::Client::builder()
            .use_preconfigured_tls((*tls).clone())
            .build()
            .map_err(|e| format!("cannot set up the HTTP client: {}", tls::error_chain(&e)))?;
        let reply =
            client.post(&url).json(&request).send().await.map_err(|e| {
                format!("cannot reach the brain at {url}: {}", tls::error_chain(&e))
            })?;
        let status = reply.status();
        if !status.is_success() {
            let body = reply.text().await.unwrap_or_default();
            return Err(match status.as_u16() {
                401 => {
                    "the enrollment token is unknown, spent or expired: ask an admin for a new one"
                        .to_owned()
                }
                _ => format!("enrollment failed ({status}): {body}"),
            });
        }
        reply
            .json::<EnrollResponse>()
            .await
            .map_err(|e| format!("unexpected answer from the brain: {e}"))
    })?;
    let key_file = dir.join("agent.key");
    let credential_file = dir.join("agent.credential");
    write_private_file(&key_file, &hex::encode(key.to_bytes()))
        .map_err(|e| format!("{}: {e}", key_file.display()))?;
    write_private_file(&credential_file, &response.credential)
        .map_err(|e| format!("{}: {e}", credential_file.display()))?;
    std::fs::create_dir_all(&state_dir).map_err(|e| format!("{}: {e}", state_dir.display()))?;
    Trust::pin(&state_dir, response.brain_keys.clone())?;
    let config = AgentConfig {
        brain: vec![brain.base().to_owned()],
        agent_id: response.agent_id.clone(),
        project_id: response.project_id,
        key_file,
        credential_file,
        state_dir,
        clock_skew_secs: DEFAULT_CLOCK_SKEW_SECS,
        spool_max_bytes: crate::spool::DEFAULT_MAX_BYTES,
        reconnect_max_secs: 30,
        allow_insecure: link.allow_insecure,
        ca_file,
        brain_cert_sha256: link.brain_cert_sha256,
        engine,
    };
    config.save(config_path).map_err(|e| e.to_string())?;
    println!(
        "enrolled as agent {}; pinned {} brain key(s); config written to {}\nnext: taskward-agent run --config {}",
        response.agent_id,
        response.brain_keys.len(),
        config_path.display(),
        config_path.display()
    );
    Ok(())
}

fn run(config_path: &Path) -> Result<(), String> {
    let config = AgentConfig::load(config_path).map_err(|e| e.to_string())?;
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
    if let Some(e) = &status.last_error {
        println!("last error     {e}");
    }
    Ok(())
}
