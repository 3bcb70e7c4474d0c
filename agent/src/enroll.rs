//! Enrollment: turning a one-time token into this host's identity and config file. Shared by
//! `taskward-agent enroll` and `taskward-agent run --enroll`.
//!
//! The token is single-use, so everything that can fail on this host is checked before it is
//! spent: the brain URL and TLS settings, the engine (chosen or inferred from the broker URL),
//! the broker (connected to), and that the config and state directories can be written.

use std::path::{Path, PathBuf};

use clap::ValueEnum;
use taskward_shared::crypto::generate_signing_key;
use taskward_shared::protocol::{EnrollRequest, EnrollResponse};
use taskward_shared::secret::write_private_file;

use crate::brain_url::BrainUrl;
use crate::config::{AgentConfig, BrokerTls, DEFAULT_CLOCK_SKEW_SECS, EngineConfig};
use crate::tls;
use crate::trust::Trust;

/// Engines the command line can name. The test double is only listed (and only parses) in
/// builds that contain it, so a release binary's help names exactly what it can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EngineKind {
    /// No engine: the agent links to the brain and refuses every command, saying why.
    None,
    /// Celery over Redis or RabbitMQ: events, queue depths and every command verb.
    Celery,
    /// The scripted test double (builds with the test-adapter feature).
    #[cfg_attr(not(feature = "test-adapter"), value(skip))]
    Test,
}

/// Broker URL schemes the Celery engine is inferred from (`amqps://` included so that its own
/// "not supported yet" message is what the operator reads).
const CELERY_SCHEMES: &[&str] = &[
    "redis",
    "rediss",
    "redis+unix",
    "unix",
    "amqp",
    "pyamqp",
    "amqps",
];

/// The `[engine]` section for `engine` and `broker`: the engine named, or without one the
/// engine the broker URL's scheme implies (none without a broker).
pub fn engine_config(
    engine: Option<EngineKind>,
    broker: Option<String>,
    tls: BrokerTls,
) -> Result<EngineConfig, String> {
    if tls.is_set() && broker.is_none() {
        return Err("the broker TLS files need --broker rediss://…".to_owned());
    }
    // Absolute, so `run` finds them from any working directory; a missing file fails here.
    let tls = BrokerTls {
        ca_file: absolute(tls.ca_file, "--broker-ca-file")?,
        client_cert: absolute(tls.client_cert, "--broker-client-cert")?,
        client_key: absolute(tls.client_key, "--broker-client-key")?,
    };
    let kind = match (engine, &broker) {
        (Some(kind), _) => kind,
        (None, None) => EngineKind::None,
        (None, Some(url)) => infer_engine(url)?,
    };
    match (kind, broker) {
        (EngineKind::Celery, Some(broker)) => Ok(EngineConfig::celery(broker, tls)),
        (EngineKind::Celery, None) => Err("--engine celery needs --broker URL".to_owned()),
        (EngineKind::None, None) => Ok(EngineConfig::None),
        (EngineKind::Test, None) => Ok(EngineConfig::Test {
            delay_ms: 0,
            fail_kinds: Vec::new(),
            events_total: 0,
            events_per_sec: 0,
        }),
        (other, Some(_)) => Err(format!(
            "--broker is for the celery engine, not --engine {}",
            other
                .to_possible_value()
                .map_or_else(|| format!("{other:?}"), |v| v.get_name().to_owned())
        )),
    }
}

/// `path` made absolute (it must exist); `flag` names it in the error.
fn absolute(path: Option<PathBuf>, flag: &str) -> Result<Option<PathBuf>, String> {
    path.map(|path| {
        std::fs::canonicalize(&path).map_err(|e| format!("{flag} {}: {e}", path.display()))
    })
    .transpose()
}

/// The engine a broker URL implies, from its scheme alone.
fn infer_engine(broker: &str) -> Result<EngineKind, String> {
    let scheme = broker.split_once("://").map(|(scheme, _)| scheme);
    match scheme {
        Some(s) if CELERY_SCHEMES.contains(&s.to_ascii_lowercase().as_str()) => {
            Ok(EngineKind::Celery)
        }
        _ => Err(format!(
            "cannot tell the engine from the broker URL {:?}: Celery brokers are redis://, \
             rediss:// or amqp:// URLs; name the engine with --engine",
            crate::engines::celery::transport::without_password(broker)
        )),
    }
}

/// How enrollment reaches the brain: the TLS settings it checks and then writes to the config.
#[derive(Debug, Default)]
pub struct LinkSecurity {
    /// PEM file of private CAs the brain's certificate chains to.
    pub ca_file: Option<PathBuf>,
    /// SHA-256 (hex) the brain's certificate must have.
    pub brain_cert_sha256: Option<String>,
    /// Allow plain http:// beyond loopback.
    pub allow_insecure: bool,
}

/// What to enroll with.
#[derive(Debug)]
pub struct Enrollment {
    /// The brain's base URL as given.
    pub brain: String,
    /// The one-time enrollment token.
    pub token: String,
    /// Where state goes (default: `state/` beside the config).
    pub state_dir: Option<PathBuf>,
    /// The engine section to write.
    pub engine: EngineConfig,
    /// TLS settings of the link.
    pub link: LinkSecurity,
}

/// What enrollment produced, for the caller to report.
#[derive(Debug)]
pub struct Enrolled {
    /// The agent's id.
    pub agent_id: String,
    /// How many brain keys were pinned.
    pub brain_keys: usize,
}

/// Enrolls this host: checks everything local, spends the token, writes key, credential,
/// pinned keys and the config at `config_path`. Refuses to replace a config unless `force`.
pub fn enroll(config_path: &Path, e: Enrollment, force: bool) -> Result<Enrolled, String> {
    if config_path.exists() && !force {
        return Err(format!(
            "{} exists: this host is enrolled already (use --force to enroll again)",
            config_path.display()
        ));
    }
    let brain =
        BrainUrl::parse(&e.brain, e.link.allow_insecure).map_err(|e| format!("--brain: {e}"))?;
    // Absolute, so `run` finds it from any working directory.
    let ca_file = e
        .link
        .ca_file
        .map(|path| {
            std::fs::canonicalize(&path).map_err(|e| format!("--ca-file {}: {e}", path.display()))
        })
        .transpose()?;
    let tls = tls::brain_client_config(ca_file.as_deref(), e.link.brain_cert_sha256.as_deref())
        .map_err(|e| e.to_string())?;
    let dir = config_path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let state_dir = e.state_dir.unwrap_or_else(|| dir.join("state"));
    // The broker and the files before the token: a token spent by an agent that cannot read
    // its broker or keep its key is lost.
    if let EngineConfig::Celery {
        broker,
        broker_ca_file,
        broker_client_cert,
        broker_client_key,
        global_keyprefix,
        ..
    } = &e.engine
    {
        let tls = BrokerTls {
            ca_file: broker_ca_file.clone(),
            client_cert: broker_client_cert.clone(),
            client_key: broker_client_key.clone(),
        };
        runtime()?.block_on(crate::engines::celery::reach_broker(
            broker,
            global_keyprefix,
            &tls,
        ))?;
    }
    ensure_writable(&dir)?;
    ensure_writable(&state_dir)?;
    let key = generate_signing_key();
    let request = EnrollRequest {
        enrollment_token: e.token,
        public_key: hex::encode(key.verifying_key().as_bytes()),
        hostname: std::fs::read_to_string("/etc/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty()),
    };
    let response = runtime()?.block_on(spend_token(&brain, &tls, &request))?;
    let key_file = dir.join("agent.key");
    let credential_file = dir.join("agent.credential");
    write_private_file(&key_file, &hex::encode(key.to_bytes()))
        .map_err(|e| format!("{}: {e}", key_file.display()))?;
    write_private_file(&credential_file, &response.credential)
        .map_err(|e| format!("{}: {e}", credential_file.display()))?;
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
        allow_insecure: e.link.allow_insecure,
        ca_file,
        brain_cert_sha256: e.link.brain_cert_sha256,
        engine: e.engine,
    };
    config.save(config_path).map_err(|e| e.to_string())?;
    Ok(Enrolled {
        agent_id: response.agent_id,
        brain_keys: response.brain_keys.len(),
    })
}

/// A runtime for the few async calls enrollment makes.
fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Runtime::new().map_err(|e| format!("cannot start the async runtime: {e}"))
}

/// Creates `dir` if needed and proves a file can be written in it (then removes the probe).
fn ensure_writable(dir: &Path) -> Result<(), String> {
    let fail = |e: std::io::Error| {
        format!(
            "{} is not writable ({e}): the enrollment token was not spent; choose another \
             place with --config (or TASKWARD_AGENT_CONFIG)",
            dir.display()
        )
    };
    std::fs::create_dir_all(dir).map_err(fail)?;
    let probe = dir.join(format!(".taskward-probe-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(fail)?;
    std::fs::remove_file(&probe).map_err(fail)
}

/// Posts the enrollment; the brain's answer, or why it refused, in the operator's words.
async fn spend_token(
    brain: &BrainUrl,
    tls: &rustls::ClientConfig,
    request: &EnrollRequest,
) -> Result<EnrollResponse, String> {
    let url = brain.enroll_url();
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(tls.clone())
        .build()
        .map_err(|e| format!("cannot set up the HTTP client: {}", tls::error_chain(&e)))?;
    let reply = client
        .post(&url)
        .json(request)
        .send()
        .await
        .map_err(|e| format!("cannot reach the brain at {url}: {}", tls::error_chain(&e)))?;
    let status = reply.status();
    if !status.is_success() {
        let body = reply.text().await.unwrap_or_default();
        return Err(match status.as_u16() {
            401 => "the enrollment token is unknown, spent or expired: ask an admin for a new one"
                .to_owned(),
            _ => format!("enrollment failed ({status}): {body}"),
        });
    }
    reply
        .json::<EnrollResponse>()
        .await
        .map_err(|e| format!("unexpected answer from the brain: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_engine_follows_the_broker_scheme_unless_named() {
        let celery = |url: &str| engine_config(None, Some(url.to_owned()), BrokerTls::default());
        for url in [
            "redis://127.0.0.1:6379/0",
            "rediss://h:6380/1",
            "amqp://guest:guest@127.0.0.1:5672//",
        ] {
            assert!(
                matches!(celery(url), Ok(EngineConfig::Celery { .. })),
                "{url}"
            );
        }
        let err = celery("sqs://user:secret@queue").unwrap_err();
        assert!(err.contains("--engine") && !err.contains("secret"), "{err}");
        assert_eq!(
            engine_config(None, None, BrokerTls::default()),
            Ok(EngineConfig::None)
        );
        assert!(engine_config(Some(EngineKind::Celery), None, BrokerTls::default()).is_err());
        let err = engine_config(
            Some(EngineKind::None),
            Some("redis://h".into()),
            BrokerTls::default(),
        )
        .unwrap_err();
        assert!(err.contains("--engine none"), "{err}");
    }
}
