//! The agent's config file (TOML), written by `enroll` and read by `run` and `status`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Default allowance for clock differences between brain and agent when checking a command's
/// expiry: generous enough for unsynchronised VMs, small next to the 5-minute command lifetime.
pub const DEFAULT_CLOCK_SKEW_SECS: u64 = 30;

// The defaults of engine settings live here, beside the settings, so the config never reaches
// into an engine.

/// Default age bound of the Celery adapter's argument vault: a week covers the usual "retry
/// what failed this week".
pub const DEFAULT_VAULT_MAX_AGE_HOURS: u64 = 168;
/// Default size bound of the vault file. Entries are held in memory as their JSON lines, so
/// memory stays within about twice this.
pub const DEFAULT_VAULT_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// Key fragments whose values are secrets (matched case-insensitively, anywhere in the key):
/// the Celery adapter's `redact_keys` when the config names none.
pub const DEFAULT_SECRET_KEYS: [&str; 9] = [
    "password",
    "passwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "auth",
    "credential",
    "private",
];

/// Everything `run` needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Base URL of the brain, e.g. `https://brain.example.com:7700`; or a list of them (brains
    /// on one database), tried in order and failed over between. Written as one string when
    /// there is one.
    #[serde(with = "one_or_many")]
    pub brain: Vec<String>,
    /// This agent's id (the audience of its commands).
    pub agent_id: String,
    /// The agent's project id.
    pub project_id: String,
    /// The agent's private key (hex seed, 0600).
    pub key_file: PathBuf,
    /// The link credential (0600).
    pub credential_file: PathBuf,
    /// Seen-store, pinned brain keys, status, spool.
    pub state_dir: PathBuf,
    /// Allowed clock difference, seconds, when checking expiry.
    #[serde(default = "default_skew")]
    pub clock_skew_secs: u64,
    /// Longest wait between reconnect attempts, seconds (the wait doubles from 0.2 s with
    /// full jitter up to this).
    #[serde(default = "default_reconnect_max")]
    pub reconnect_max_secs: u64,
    /// Bound on the event spool on disk; past it the oldest events are dropped and counted.
    #[serde(default = "default_spool_max")]
    pub spool_max_bytes: u64,
    /// Accept a plain `http://` brain that is not on loopback (a network trusted by other
    /// means). Without it such a URL is refused at enroll and at run: see `brain_url`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_insecure: bool,
    /// PEM bundle of private CAs the brain's certificate must chain to, instead of the web PKI
    /// roots built into the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// SHA-256 (hex) of the brain's leaf certificate, checked on top of the chain: see `tls`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub brain_cert_sha256: Option<String>,
    /// Which engine this agent drives.
    pub engine: EngineConfig,
}

fn default_skew() -> u64 {
    DEFAULT_CLOCK_SKEW_SECS
}

fn default_redact_keys() -> Vec<String> {
    DEFAULT_SECRET_KEYS
        .iter()
        .map(|k| (*k).to_owned())
        .collect()
}

fn default_args_age() -> u64 {
    DEFAULT_VAULT_MAX_AGE_HOURS
}

fn default_args_bytes() -> u64 {
    DEFAULT_VAULT_MAX_BYTES
}

fn default_true() -> bool {
    true
}

fn default_queues() -> Vec<String> {
    vec!["celery".to_owned()]
}

fn default_reconnect_max() -> u64 {
    30
}

fn default_spool_max() -> u64 {
    crate::spool::DEFAULT_MAX_BYTES
}

/// `brain = "url"` or `brain = ["url", …]`, read into a list; a list of one written back as a
/// string, so configs written before lists existed keep their shape.
mod one_or_many {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }

    pub fn serialize<S: Serializer>(urls: &[String], out: S) -> Result<S::Ok, S::Error> {
        match urls {
            [one] => one.serialize(out),
            many => many.serialize(out),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(input: D) -> Result<Vec<String>, D::Error> {
        let urls = match OneOrMany::deserialize(input)? {
            OneOrMany::One(url) => vec![url],
            OneOrMany::Many(urls) => urls,
        };
        if urls.is_empty() {
            return Err(serde::de::Error::custom(
                "brain: at least one URL is needed",
            ));
        }
        Ok(urls)
    }
}

/// The `[engine]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum EngineConfig {
    /// No engine yet: the agent connects and refuses every command, saying why.
    None,
    /// Celery over Redis or RabbitMQ (AMQP).
    Celery {
        /// Broker URL: `redis://[:password@]host:port/db`, `rediss://` (TLS) or
        /// `amqp://user:password@host:port/vhost`.
        broker: String,
        /// `rediss://` only: PEM file of the private CA(s) the broker's certificate chains to
        /// (absent: the web PKI roots built in).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        broker_ca_file: Option<PathBuf>,
        /// `rediss://` only: PEM client certificate, for Redis's `tls-auth-clients yes`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        broker_client_cert: Option<PathBuf>,
        /// The client certificate's PEM private key.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        broker_client_key: Option<PathBuf>,
        /// kombu's `global_keyprefix`, if the app sets one.
        #[serde(default)]
        global_keyprefix: String,
        /// Queues whose depth is reported (every priority bucket counted).
        #[serde(default = "default_queues")]
        queues: Vec<String>,
        /// Send `enable_events` to workers started without `-E` (logged when sent).
        #[serde(default = "default_true")]
        enable_events: bool,
        /// Argument keys whose values are redacted on this host (case-insensitive fragments).
        #[serde(default = "default_redact_keys")]
        redact_keys: Vec<String>,
        /// Replace e-mail addresses in arguments.
        #[serde(default = "default_true")]
        redact_emails: bool,
        /// How long tasks' original arguments are kept on this host for retries, hours.
        #[serde(default = "default_args_age")]
        args_max_age_hours: u64,
        /// Bound on the file holding them, bytes (the oldest go first).
        #[serde(default = "default_args_bytes")]
        args_max_bytes: u64,
    },
    /// The scripted test adapter (a test double; only in builds with the `test-adapter`
    /// feature).
    Test {
        /// Milliseconds each command takes.
        #[serde(default)]
        delay_ms: u64,
        /// Kinds that fail, e.g. `["pool-resize"]` for a pool that cannot resize.
        #[serde(default)]
        fail_kinds: Vec<String>,
        /// Scripted events to emit (three per task: received, started, succeeded).
        #[serde(default)]
        events_total: u64,
        /// Emission rate; 0 emits as fast as the spool takes them.
        #[serde(default)]
        events_per_sec: u64,
    },
}

/// TLS files of the broker connection (PEM): the `broker_*` settings of the `[engine]`
/// section, handed to the transport together.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BrokerTls {
    /// Private CA(s) the broker's certificate must chain to, instead of the web PKI roots.
    pub ca_file: Option<PathBuf>,
    /// Client certificate (chain) presented to the broker.
    pub client_cert: Option<PathBuf>,
    /// The client certificate's private key.
    pub client_key: Option<PathBuf>,
}

impl BrokerTls {
    /// Whether any TLS file is set.
    pub fn is_set(&self) -> bool {
        self.ca_file.is_some() || self.client_cert.is_some() || self.client_key.is_some()
    }
}

impl EngineConfig {
    /// Celery on `broker` with every other setting at its default.
    pub fn celery(broker: String, tls: BrokerTls) -> EngineConfig {
        EngineConfig::Celery {
            broker,
            broker_ca_file: tls.ca_file,
            broker_client_cert: tls.client_cert,
            broker_client_key: tls.client_key,
            global_keyprefix: String::new(),
            queues: default_queues(),
            enable_events: true,
            redact_keys: default_redact_keys(),
            redact_emails: true,
            args_max_age_hours: default_args_age(),
            args_max_bytes: default_args_bytes(),
        }
    }
}

/// Errors loading or saving the config.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not a valid config.
    #[error("{path}: {why}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
}

impl AgentConfig {
    /// Reads a config file.
    pub fn load(path: &Path) -> Result<AgentConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Invalid {
            path: path.to_owned(),
            why: e.to_string(),
        })
    }

    /// Writes the config file (0600: it names the key files and the brain).
    pub fn save(&self, path: &Path) -> Result<(), ConfigError> {
        let text = toml::to_string_pretty(self).expect("config serializes");
        taskward_shared::secret::write_private_file(path, &text).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_toml() {
        let config = AgentConfig {
            brain: vec!["http://127.0.0.1:7700".into()],
            agent_id: "a".into(),
            project_id: "p".into(),
            key_file: "/k".into(),
            credential_file: "/c".into(),
            state_dir: "/s".into(),
            clock_skew_secs: 30,
            spool_max_bytes: 1024,
            reconnect_max_secs: 30,
            allow_insecure: false,
            ca_file: Some("/ca.pem".into()),
            brain_cert_sha256: None,
            engine: EngineConfig::Test {
                delay_ms: 5,
                fail_kinds: vec!["pool-resize".into()],
                events_total: 9,
                events_per_sec: 0,
            },
        };
        let text = toml::to_string_pretty(&config).unwrap();
        assert!(
            text.contains("[engine]") && text.contains("kind = \"test\""),
            "{text}"
        );
        assert_eq!(toml::from_str::<AgentConfig>(&text).unwrap(), config);
        assert!(toml::from_str::<AgentConfig>(&format!("{text}\nbogus = 1")).is_err());
        assert!(text.contains("brain = \"http://127.0.0.1:7700\""), "{text}");
        let two = text.replace(
            "brain = \"http://127.0.0.1:7700\"",
            "brain = [\"https://a:7700\", \"https://b:7700\"]",
        );
        assert_eq!(
            toml::from_str::<AgentConfig>(&two).unwrap().brain,
            ["https://a:7700", "https://b:7700"]
        );
        let none = text.replace("brain = \"http://127.0.0.1:7700\"", "brain = []");
        let err = toml::from_str::<AgentConfig>(&none)
            .unwrap_err()
            .to_string();
        assert!(err.contains("at least one URL"), "{err}");
    }
}
