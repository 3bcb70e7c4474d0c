//! What the agent benches share on top of the test kit: the release binaries, peak RSS, and a
//! brain on loopback with one enrolled agent.

use std::path::{Path, PathBuf};

use serde_json::json;
use taskward_brain::store::DatabaseUrl;
use taskward_testkit::{AgentHome, BrainProcess};

pub use taskward_testkit::http1 as http;

/// The agent binary cargo built for this bench.
pub const AGENT: &str = env!("CARGO_BIN_EXE_taskward-agent");

/// The release brain (the agent bench depends on the brain only as a library), built first.
pub fn brain_bin() -> PathBuf {
    taskward_testkit::brain_bin()
}

/// Peak resident set size (VmHWM) of a live process, KiB; 0 if it is gone.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// A brain serving from a temporary directory and one agent enrolled in project `default`.
pub struct Stack {
    /// The brain process (`RUST_LOG=warn`).
    pub brain: BrainProcess,
    /// The enrolled agent (`dir/agent`); [`start_agent`] runs it.
    pub agent: AgentHome,
    /// The brain's base URL.
    pub url: String,
    /// The site admin's API token.
    pub token: String,
    /// The enrolled agent's id.
    pub agent_id: String,
    /// The brain's store, to count what it holds.
    pub store_url: DatabaseUrl,
    /// The brain's data directory lives here, and the agent's config, state and log; removed
    /// after both processes are gone.
    _dir: tempfile::TempDir,
}

/// Starts the brain (on `database`, else SQLite in the temporary directory), creates an agent
/// and enrolls it with `engine` (the `--engine ...` arguments of `taskward-agent enroll`).
pub fn setup(bin: &Path, database: Option<&str>, engine: &[&str]) -> Stack {
    let dir = tempfile::tempdir().unwrap();
    let brain = BrainProcess::builder(bin, dir.path()).env("RUST_LOG", "warn");
    let brain = match database {
        Some(db) => brain.database_url(db),
        None => brain,
    }
    .start();
    let (url, token) = (brain.url(), brain.admin_token().to_owned());
    let created = http::json(
        &format!("{url}/api/v1/projects/default/agents"),
        Some(&token),
        Some(json!({"name": "bench"})),
    )
    .unwrap();
    let agent_id = created["agent"]["id"].as_str().unwrap().to_owned();
    let enrollment = created["enrollment_token"].as_str().unwrap();
    let agent = AgentHome::enroll(AGENT, &dir.path().join("agent"), &url, enrollment, engine);
    let store_url = match database {
        Some(db) => DatabaseUrl::Postgres(db.to_owned()),
        None => DatabaseUrl::Sqlite(brain.sqlite_path().unwrap()),
    };
    Stack {
        brain,
        agent,
        url,
        token,
        agent_id,
        store_url,
        _dir: dir,
    }
}

/// Starts the enrolled agent with `RUST_LOG=rust_log`, its stderr in `state/agent.log`.
pub fn start_agent(s: &mut Stack, rust_log: &str) {
    s.agent.env("RUST_LOG", rust_log);
    s.agent.start();
}
