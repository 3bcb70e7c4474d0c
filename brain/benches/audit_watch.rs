//! What continuous audit verification costs a running brain: a writer appends what 1,000
//! commands a second leave in the log (issued, dispatched, succeeded: 3,000 signed rows a
//! second, each in its own transaction, as the brain writes them), while a watcher thread does
//! what the server's loops do each second (verify the rows that arrived, sweep 200 old rows).
//! The watcher thread's CPU time comes from `/proc/thread-self/schedstat` (time on a CPU, in
//! nanoseconds), so waiting for the writer's lock is not counted as work.
//!
//! A second measurement verifies the same rows as if another process had written them (no
//! memory of signing them): the full check every row from another brain process gets.
//!
//! Run: `cargo bench -p taskward-brain --bench audit_watch` (SQLite; `AUDIT_WATCH_SECS` sets
//! the duration, default 20, `AUDIT_WATCH_RATE` the commands per second, default 1000).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use taskward_brain::app::system_actor;
use taskward_brain::audit::watch::AuditWatch;
use taskward_brain::keys::Keys;
use taskward_brain::store::audit::{self, AuditContext};
use taskward_brain::store::{DatabaseUrl, Store};

/// Nanoseconds the calling thread has spent on a CPU.
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .expect("/proc/thread-self/schedstat (Linux)")
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let secs = env_u64("AUDIT_WATCH_SECS", 20);
    let rate = env_u64("AUDIT_WATCH_RATE", 1000);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&DatabaseUrl::Sqlite(dir.path().join("bench.db"))).unwrap();
    let keys = Arc::new(Keys::load_or_create(dir.path()).unwrap());
    let chain = "project:bench".to_owned();
    store
        .write_blocking("bench_chain", |c| audit::create_chain(c, &chain, None))
        .unwrap();
    let ctx = AuditContext {
        signer: keys.clone(),
        actor: system_actor("bench"),
    };
    let watch = Arc::new(AuditWatch::new(dir.path()));
    let stop = Arc::new(AtomicBool::new(false));

    let writer = {
        let (store, ctx, chain, stop) = (store.clone(), ctx.clone(), chain.clone(), stop.clone());
        std::thread::spawn(move || {
            let started = Instant::now();
            let mut commands = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // Paced: command n is due at n / rate seconds.
                let due = Duration::from_secs_f64(commands as f64 / rate as f64);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    std::thread::sleep(wait);
                }
                let id = uuid::Uuid::new_v4().to_string();
                for kind in ["command.issued", "command.dispatched", "command.succeeded"] {
                    store
                        .write_blocking("bench_append", |c| {
                            audit::append(c, &ctx, &chain, kind, Some(&id),
                                serde_json::json!({"command": {"kind": "retry-task", "agent_id": "7f1c1e0e-5d1b-4a57-9a39-4f3d1c2b9e10",
                                    "payload": {"engine": "celery", "task_id": format!("task-{commands}"), "queue": "default"},
                                    "resolved": {"name": "app.tasks.add", "args": [1, 2], "kwargs": {"k": "v"}},
                                    "expires_at": "2026-12-03T16:00:00.000Z"}}))
                        })
                        .unwrap();
                }
                commands += 1;
            }
            (commands, started.elapsed())
        })
    };

    let watcher = {
        let (store, keys, watch, stop) = (store.clone(), keys.clone(), watch.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut cpu = 0u64;
            let mut ticks = 0u64;
            let started = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                ticks += 1;
                let due = Duration::from_secs(ticks);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    std::thread::sleep(wait);
                }
                let before = thread_cpu_ns();
                let broken = watch.advance_all(&store, &keys).unwrap();
                assert!(broken.is_empty(), "{broken:?}");
                watch.sweep(&store, &keys, 200).unwrap();
                cpu += thread_cpu_ns() - before;
            }
            (cpu, started.elapsed())
        })
    };

    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    let (commands, wrote_for) = writer.join().unwrap();
    let (cpu_ns, watched_for) = watcher.join().unwrap();
    // Whatever arrived after the watcher's last tick.
    watch.advance_all(&store, &keys).unwrap();
    let rows = commands * 3;
    let share = cpu_ns as f64 / watched_for.as_nanos() as f64 * 100.0;
    println!("| what | value |");
    println!("|---|---|");
    println!(
        "| commands appended | {commands} in {:.1} s ({:.0}/s, {rows} rows) |",
        wrote_for.as_secs_f64(),
        commands as f64 / wrote_for.as_secs_f64()
    );
    println!(
        "| watcher CPU (rows signed by this process + sweep 200 rows/s) | {:.1} ms in {:.1} s = {share:.2} % of one core |",
        cpu_ns as f64 / 1e6,
        watched_for.as_secs_f64()
    );
    println!(
        "| per row | {:.2} µs |",
        cpu_ns as f64 / 1e3 / rows.max(1) as f64
    );

    // The same rows, checked as rows of another process: a fresh watch, nothing remembered.
    let cold = AuditWatch::new(dir.path());
    let before = thread_cpu_ns();
    let point = cold.advance(&store, &keys, &chain).unwrap().unwrap();
    let full_ns = thread_cpu_ns() - before;
    assert_eq!(point.seq, rows);
    let per_row_us = full_ns as f64 / 1e3 / rows as f64;
    println!(
        "| full check (rows of another process), per row | {per_row_us:.2} µs: at {} rows/s {:.2} % of one core |",
        rate * 3,
        per_row_us * (rate * 3) as f64 / 1e4
    );
}
