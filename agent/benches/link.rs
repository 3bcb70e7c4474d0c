//! The agent link's throughput, with the real `taskward-brain` and `taskward-agent` (release)
//! on loopback and the scripted test adapter (a test double for the engine):
//! - event ingest: N events (three per task) emitted as fast as the agent takes them, timed
//!   until every task is stored as succeeded, on SQLite and on PostgreSQL, with both processes'
//!   peak RSS;
//! - command round trip: sequential commands, from the API call to the stored signed result.
//!
//! Run: `cargo bench -p taskward-agent --features test-adapter --bench link`
//! (`LINK_BENCH_EVENTS` sets N, default 300000; PostgreSQL at `TASKWARD_TEST_PG_URL`).

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Stack, brain_bin, http, rss_kib, start_agent};
use taskward_brain::store::{Store, projects, tasks};
use taskward_testkit::PgDatabase;

/// A brain and an agent enrolled with the scripted test adapter, set to emit `events`.
fn setup(bin: &std::path::Path, database: Option<&str>, events: u64) -> Stack {
    let s = support::setup(bin, database, &["--engine", "test"]);
    s.agent
        .edit_config("events_total = 0", &format!("events_total = {events}"));
    s
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
        let pg_db = (backend == "postgres").then(|| PgDatabase::create("tw_bench"));
        let mut s = setup(&bin, pg_db.as_ref().map(PgDatabase::url), events);
        let store = Store::open(&s.store_url).unwrap();
        let started = Instant::now();
        start_agent(&mut s, "warn");
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
        let brain_rss = rss_kib(s.brain.pid().unwrap()) / 1024;
        let agent_rss = rss_kib(s.agent.pid().unwrap()) / 1024;
        println!(
            "| {backend} | {events} | {secs:.1} | {:.0} | {lost} | {brain_rss} | {agent_rss} |",
            events as f64 / secs
        );
        drop(store);
        drop(s);
        drop(pg_db);
    }

    // Command round trip on SQLite: API call to stored signed result, per the brain's clock.
    let mut s = setup(&bin, None, 0);
    start_agent(&mut s, "warn");
    let agent_url = format!("{}/api/v1/projects/default/agents/{}", s.url, s.agent_id);
    while http::json(&agent_url, Some(&s.token), None).is_none_or(|a| a["online"] != true) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut latencies = Vec::new();
    for i in 0..300 {
        let issued = http::json(
            &format!("{}/api/v1/projects/default/commands/restart-worker", s.url),
            Some(&s.token),
            Some(json!({"agent_id": s.agent_id, "worker_name": format!("w{i}")})),
        )
        .unwrap();
        let id = issued["id"].as_str().unwrap();
        let detail: Value = loop {
            let d = http::json(
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
