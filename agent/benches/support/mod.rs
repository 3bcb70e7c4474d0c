//! What the agent benches share: the release binaries, process guards and peak RSS, a minimal
//! blocking HTTP client, and a brain on loopback with one enrolled agent.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use taskward_brain::store::DatabaseUrl;

/// The agent binary cargo built for this bench.
pub const AGENT: &str = env!("CARGO_BIN_EXE_taskward-agent");

/// A child process, killed (SIGKILL) and reaped when dropped.
pub struct Proc(pub Child);

impl Proc {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Builds the release brain (the agent bench depends on the brain only as a library) and
/// returns its path, next to the agent's.
pub fn brain_bin() -> PathBuf {
    let status = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--release", "-p", "taskward-brain"])
        .status()
        .unwrap();
    assert!(status.success());
    Path::new(AGENT).with_file_name("taskward-brain")
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

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A minimal blocking HTTP/1.1 client over std, so the benches need no async runtime.
pub mod http {
    use std::io::{Read, Write};
    use std::time::Duration;

    use serde_json::Value;

    /// GET (or POST when `body` is set) `url`; the body of a 2xx answer, `None` otherwise.
    pub fn text(url: &str, token: Option<&str>, body: Option<Value>) -> Option<String> {
        let rest = url.strip_prefix("http://")?;
        let (host, path) = rest.split_once('/').map(|(h, p)| (h, format!("/{p}")))?;
        let mut stream = std::net::TcpStream::connect(host).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .ok()?;
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let method = if body.is_empty() { "GET" } else { "POST" };
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let (head, payload) = response.split_once("\r\n\r\n")?;
        if !head.starts_with("HTTP/1.1 2") {
            return None;
        }
        Some(
            if head
                .to_ascii_lowercase()
                .contains("transfer-encoding: chunked")
            {
                dechunk(payload)
            } else {
                payload.to_owned()
            },
        )
    }

    /// [`text`], parsed as JSON (`Null` for an empty or non-JSON 2xx body).
    pub fn json(url: &str, token: Option<&str>, body: Option<Value>) -> Option<Value> {
        let payload = text(url, token, body)?;
        serde_json::from_str(&payload).ok().or(Some(Value::Null))
    }

    fn dechunk(mut body: &str) -> String {
        let mut out = String::new();
        while let Some((size, rest)) = body.split_once("\r\n") {
            let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
                break;
            };
            if n == 0 || rest.len() < n {
                break;
            }
            out.push_str(&rest[..n]);
            body = rest[n..].trim_start_matches("\r\n");
        }
        out
    }
}

/// A brain serving from a temporary directory and one agent enrolled in project `default`.
pub struct Stack {
    /// The brain's data directory lives here, and the agent's config, state and log.
    pub dir: tempfile::TempDir,
    /// The brain process.
    pub brain: Proc,
    /// The agent process, once [`start_agent`] ran.
    pub agent: Option<Proc>,
    /// The brain's base URL.
    pub url: String,
    /// The site admin's API token.
    pub token: String,
    /// The enrolled agent's id.
    pub agent_id: String,
    /// The agent's config file.
    pub config: PathBuf,
    /// The brain's store, to count what it holds.
    pub store_url: DatabaseUrl,
}

impl Stack {
    /// The agent's log file (its stderr).
    pub fn agent_log(&self) -> PathBuf {
        self.dir.path().join("agent.log")
    }
}

/// Starts the brain (on `database`, else SQLite in the temporary directory), creates an agent
/// and enrolls it with `engine` (the `--engine ...` arguments of `taskward-agent enroll`).
pub fn setup(bin: &Path, database: Option<&str>, engine: &[&str]) -> Stack {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut cmd = Command::new(bin);
    cmd.current_dir(dir.path())
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(db) = database {
        cmd.env("TASKWARD_DATABASE_URL", db);
    }
    let brain = Proc(cmd.spawn().unwrap());
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while http::json(&format!("{url}/readyz"), None, None).is_none() {
        assert!(Instant::now() < deadline, "brain did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let token = std::fs::read_to_string(dir.path().join("taskward-data/admin.token"))
        .unwrap()
        .trim()
        .to_owned();
    let created = http::json(
        &format!("{url}/api/v1/projects/default/agents"),
        Some(&token),
        Some(json!({"name": "bench"})),
    )
    .unwrap();
    let agent_id = created["agent"]["id"].as_str().unwrap().to_owned();
    let config = dir.path().join("agent/agent.toml");
    let out = Command::new(AGENT)
        .arg("--config")
        .arg(&config)
        .args([
            "enroll",
            "--brain",
            &url,
            "--token",
            created["enrollment_token"].as_str().unwrap(),
        ])
        .args(engine)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "enroll: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let store_url = match database {
        Some(db) => DatabaseUrl::Postgres(db.to_owned()),
        None => DatabaseUrl::Sqlite(dir.path().join("taskward-data/taskward.db")),
    };
    Stack {
        dir,
        brain,
        agent: None,
        url,
        token,
        agent_id,
        config,
        store_url,
    }
}

/// Starts the enrolled agent with `RUST_LOG=rust_log`, its stderr in [`Stack::agent_log`].
pub fn start_agent(s: &mut Stack, rust_log: &str) {
    let log = std::fs::File::create(s.agent_log()).unwrap();
    s.agent = Some(Proc(
        Command::new(AGENT)
            .arg("--config")
            .arg(&s.config)
            .arg("run")
            .env("RUST_LOG", rust_log)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    ));
}
