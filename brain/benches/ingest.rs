//! The brain's share of event ingest, without the agent or Redis: Celery-shaped task updates
//! (received, started 10 ms later, succeeded 10 ms after that, as the Celery bench publishes
//! them) merged into a SQLite store through `tasks::apply_updates`, one write transaction per
//! group of updates as the agent link commits them. Reports events/s, CPU per event and the
//! bytes the process read and wrote through system calls per event (`/proc/self/io`), which is
//! where SQLite's page traffic shows.
//!
//! Run: `cargo bench -p taskward-brain --bench ingest` (`INGEST_BENCH_TASKS`, default 500,000,
//! i.e. 1.5 M events; `INGEST_BENCH_GROUPS`, updates per transaction, default
//! `2000,20000`).

use std::time::Instant;

use taskward_brain::store::{DatabaseUrl, Store, agents, projects, tasks};
use taskward_shared::events::{TaskState, TaskUpdate, Update};

/// The brain's allocator (its `main.rs`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Tasks received per 10 ms tick: 50,000 events/s.
const TASKS_PER_TICK: usize = 167;

fn env_usize(name: &str, default: &str) -> Vec<usize> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_owned())
        .split(',')
        .map(|v| v.trim().parse().expect("a number"))
        .collect()
}

/// `rchar`/`wchar` of this process.
fn io_bytes() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    (field("rchar:"), field("wchar:"))
}

/// CPU seconds (user + system) of this process.
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: f64 = fields
        .get(11..13)
        .map(|f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum())
        .unwrap_or(0.0);
    ticks / 100.0
}

fn task_id(i: usize) -> String {
    // Random-looking like Celery's UUIDv4 ids: a multiplicative hash spreads consecutive tasks.
    let h = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let g = h.rotate_left(29).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    format!(
        "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
        h >> 32,
        (h >> 16) & 0xffff,
        h & 0xfff,
        g >> 52,
        g & 0xffff_ffff_ffff
    )
}

/// The update of `stage` (0 received, 1 started, 2 succeeded) for task `i`.
fn update(i: usize, stage: usize, at_ms: i64) -> Update {
    let id = task_id(i);
    let worker = format!("celery@worker-{}", i % 4);
    let (name, args, kwargs) = match i % 3 {
        0 => ("app.add", serde_json::json!([i, 7]), serde_json::json!({})),
        1 => (
            "app.send_email",
            serde_json::json!(["<email>", "Welcome"]),
            serde_json::json!({}),
        ),
        _ => (
            "reports.build",
            serde_json::json!([i]),
            serde_json::json!({"api_token": "<redacted>", "format": "pdf"}),
        ),
    };
    let base = TaskUpdate {
        engine: "celery".into(),
        task_id: id.clone(),
        at_ms,
        worker: Some(worker),
        ..TaskUpdate::default()
    };
    Update::Task(Box::new(match stage {
        0 => TaskUpdate {
            state: Some(TaskState::Received),
            name: Some(name.into()),
            args: Some(args),
            kwargs: Some(kwargs),
            retries: Some(0),
            root_id: Some(id),
            ..base
        },
        1 => TaskUpdate {
            state: Some(TaskState::Started),
            ..base
        },
        _ => TaskUpdate {
            state: Some(TaskState::Succeeded),
            result: Some(format!("{}", i + 7)),
            runtime_ms: Some(10),
            ..base
        },
    }))
}

/// The update stream in publish order: per tick, new receipts, then the starts of the previous
/// tick's tasks, then the successes of the tick before that.
fn stream(tasks: usize) -> impl Iterator<Item = Update> {
    let ticks = tasks.div_ceil(TASKS_PER_TICK) + 2;
    (0..ticks).flat_map(move |tick| {
        let at_ms = 1_800_000_000_000 + tick as i64 * 10;
        (0..3).flat_map(move |stage| {
            let first = tick.checked_sub(stage).map(|t| t * TASKS_PER_TICK);
            first
                .into_iter()
                .flat_map(move |f| f..(f + TASKS_PER_TICK).min(tasks))
                .map(move |i| update(i, stage, at_ms))
        })
    })
}

fn main() {
    let tasks_n = env_usize("INGEST_BENCH_TASKS", "500000")[0];
    let groups = env_usize("INGEST_BENCH_GROUPS", "2000,20000");
    println!(
        "| updates per transaction | events | events/s | CPU µs per event | KiB read per event | KiB written per event |"
    );
    println!("|---|---|---|---|---|---|");
    for group in groups {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&DatabaseUrl::Sqlite(dir.path().join("ingest.db"))).unwrap();
        let (project, agent) = store
            .write_blocking("bench_setup", |c| {
                let project = projects::create(c, &"bench".parse().unwrap(), None, "")?;
                let (agent, _) = agents::create(c, &project.id, &"bench".parse().unwrap(), false)?;
                Ok::<_, taskward_brain::store::StoreError>((project, agent))
            })
            .unwrap();
        let mut events = 0usize;
        let (read0, written0) = io_bytes();
        let cpu0 = cpu_secs();
        let started = Instant::now();
        let mut batch = Vec::with_capacity(group);
        let mut flush = |batch: &mut Vec<Update>| {
            let updates = std::mem::take(batch);
            events += updates.len();
            let (p, a) = (project.id.clone(), agent.id.clone());
            store
                .write_blocking("ingest_events", move |c| {
                    tasks::apply_updates(c, &p, &a, &updates, 1_800_000_000_000)
                })
                .unwrap();
        };
        for u in stream(tasks_n) {
            batch.push(u);
            if batch.len() == group {
                flush(&mut batch);
            }
        }
        flush(&mut batch);
        let secs = started.elapsed().as_secs_f64();
        let cpu = cpu_secs() - cpu0;
        let (read1, written1) = io_bytes();
        let per = |bytes: u64| bytes as f64 / 1024.0 / events as f64;
        println!(
            "| {group} | {events} | {:.0} | {:.1} | {:.2} | {:.2} |",
            events as f64 / secs,
            cpu * 1e6 / events as f64,
            per(read1 - read0),
            per(written1 - written0),
        );
    }
}
