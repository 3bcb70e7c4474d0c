//! The agent link's throughput, with the real `taskward-brain` and `taskward-agent` (release)
//! on loopback and the scripted test adapter (a test double for the engine):
//! - event ingest: N events (three per task) emitted as fast as the agent takes them, timed
//!   until every task is stored as succeeded, on SQLite and on PostgreSQL, with both processes'
//!   peak RSS;
//! - command round trip: sequential commands, from the API call to the stored signed result.
//!
//! Run: `cargo bench -p taskward-agent --features test-adapter --bench link`
//! (`LINK_BENCH_EVENTS` sets N, default 300000; PostgreSQL at `TASKWARD_TEST_PG_URL`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use diesel::{Connection, PgConnection, RunQueryDsl};
use serde_json::{Value, json};
use taskward_brain::store::{DatabaseUrl, Store, projects, tasks};

const AGENT: &str = env!("CARGO_BIN_EXE_taskward-agent");

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn brain_bin() -> PathBuf {
    let status = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--release", "-p", "taskward-brain"])
        .status()
        .unwrap();
    assert!(status.success());
    Path::new(AGENT).with_file_name("taskward-brain")
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Setup {
    _dir: tempfile::TempDir,
    brain: Proc,
    agent: Option<Proc>,
    url: String,
    token: String,
    agent_id: String,
    config: PathBuf,
    store_url: DatabaseUrl,
}

fn setup(bin: &Path, database: Option<&str>, events: u64) -> Setup {
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
    let http = reqwest::blocking_client();
    let deadline = Instant::now() + Duration::from_secs(30);
    while http(&format!("{url}/readyz"), None, None).is_none() {
        assert!(Instant::now() < deadline, "brain did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let token = std::fs::read_to_string(dir.path().join("taskward-data/admin.token"))
        .unwrap()
        .trim()
        .to_owned();
    let created = http(
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
            "--engine",
            "test",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("events_total = 0", &format!("events_total = {events}")),
    )
    .unwrap();
    let store_url = match database {
        Some(db) => DatabaseUrl::Postgres(db.to_owned()),
        None => DatabaseUrl::Sqlite(dir.path().join("taskward-data/taskward.db")),
    };
    Setup {
        _dir: dir,
        brain,
        agent: None,
        url,
        token,
        agent_id,
        config,
        store_url,
    }
}

fn start_agent(s: &mut Setup) {
    s.agent = Some(Proc(
        Command::new(AGENT)
            .arg("--config")
            .arg(&s.config)
            .arg("run")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    ));
}

mod reqwest {
    use serde_json::Value;

    /// A minimal blocking HTTP/1.1 JSON client over std, so the bench needs no async runtime.
    pub fn blocking_client() -> impl Fn(&str, Option<&str>, Option<Value>) -> Option<Value> {
        |url: &str, token: Option<&str>, body: Option<Value>| {
            use std::io::{Read, Write};
            let rest = url.strip_prefix("http://")?;
            let (host, path) = rest.split_once('/').map(|(h, p)| (h, format!("/{p}")))?;
            let mut stream = std::net::TcpStream::connect(host).ok()?;
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
            let payload = if head
                .to_ascii_lowercase()
                .contains("transfer-encoding: chunked")
            {
                dechunk(payload)
            } else {
                payload.to_owned()
            };
            serde_json::from_str(&payload).ok().or(Some(Value::Null))
        }
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

fn count_succeeded(store: &Store) -> i64 {
    store
        .read_blocking("bench_count", |c| {
            let project = projects::find(c, &"default".parse().unwrap())?;
            tasks::count_by_state(c, &project.id)
        })
        .unwrap()
        .into_iter()
        .find(|(s, _)| s == "succeeded")
        .map_or(0, |(_, n)| n)
}

fn main() {
    let events: u64 = std::env::var("LINK_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300_000);
    let expected_tasks = (events / 3) as i64;
    let bin = brain_bin();
    let pg = std::env::var("TASKWARD_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    println!(
        "| backend | events | seconds | events/s | lost | brain peak RSS MiB | agent peak RSS MiB |"
    );
    println!("|---|---|---|---|---|---|---|");
    let backends: Vec<String> = std::env::var("LINK_BENCH_BACKENDS")
        .unwrap_or_else(|_| "sqlite,postgres".into())
        .split(',')
        .map(str::to_owned)
        .collect();
    for backend in backends.iter().map(String::as_str) {
        let pg_db = (backend == "postgres").then(|| {
            let name = format!("tw_bench_{}", uuid::Uuid::new_v4().simple());
            let mut admin = PgConnection::establish(&format!("{pg}/postgres")).unwrap();
            diesel::sql_query(format!("CREATE DATABASE {name}"))
                .execute(&mut admin)
                .unwrap();
            (name.clone(), format!("{pg}/{name}"))
        });
        let mut s = setup(&bin, pg_db.as_ref().map(|(_, url)| url.as_str()), events);
        let store = Store::open(&s.store_url).unwrap();
        let started = Instant::now();
        start_agent(&mut s);
        let deadline = started + Duration::from_secs(600);
        let mut found = 0;
        while Instant::now() < deadline {
            found = count_succeeded(&store);
            if found >= expected_tasks {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let secs = started.elapsed().as_secs_f64();
        let lost = (expected_tasks - found) * 3;
        let brain_rss = rss_kib(s.brain.0.id()) / 1024;
        let agent_rss = rss_kib(s.agent.as_ref().unwrap().0.id()) / 1024;
        println!(
            "| {backend} | {events} | {secs:.1} | {:.0} | {lost} | {brain_rss} | {agent_rss} |",
            events as f64 / secs
        );
        drop(store);
        drop(s);
        if let Some((name, _)) = pg_db {
            let mut admin = PgConnection::establish(&format!("{pg}/postgres")).unwrap();
            diesel::sql_query(format!("DROP DATABASE {name} WITH (FORCE)"))
                .execute(&mut admin)
                .unwrap();
        }
    }

    // Command round trip on SQLite: API call to stored signed result, per the brain's clock.
    let mut s = setup(&bin, None, 0);
    start_agent(&mut s);
    let http = reqwest::blocking_client();
    let agent_url = format!("{}/api/v1/projects/default/agents/{}", s.url, s.agent_id);
    while http(&agent_url, Some(&s.token), None).is_none_or(|a| a["online"] != true) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut latencies = Vec::new();
    for i in 0..300 {
        let issued = http(
            &format!("{}/api/v1/projects/default/commands/restart-worker", s.url),
            Some(&s.token),
            Some(json!({"agent_id": s.agent_id, "worker_name": format!("w{i}")})),
        )
        .unwrap();
        let id = issued["id"].as_str().unwrap();
        let detail: Value = loop {
            let d = http(
                &format!("{}/api/v1/projects/default/commands/{id}", s.url),
                Some(&s.token),
                None,
            )
            .unwrap();
            if d["status"] == "succeeded" {
                break d;
            }
            std::thread::sleep(Duration::from_micros(500));
        };
        let time = |v: &Value| {
            chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap())
                .unwrap()
                .timestamp_millis()
        };
        let done =
            detail["audit_rows"].as_array().unwrap().last().unwrap()["statement"]["time"].clone();
        latencies.push(time(&done) - time(&detail["issued_at"]));
    }
    latencies.sort_unstable();
    let pct = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "\ncommand round trip (SQLite, {} sequential restart-worker commands): p50 {} ms, p99 {} ms, max {} ms",
        latencies.len(),
        pct(0.5),
        pct(0.99),
        latencies.last().unwrap()
    );
}
