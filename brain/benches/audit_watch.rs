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

use ed25519_dalek::SigningKey;
use taskward_brain::agents::registry::{self, Enrollment, agent_actor};
use taskward_brain::audit::watch::AuditWatch;
use taskward_brain::commands::issue::{Issue, issue_in};
use taskward_brain::commands::lifecycle::{self, Event};
use taskward_brain::keys::Keys;
use taskward_brain::projects::{self, NewProject};
use taskward_brain::store::agents::{Agent, EnrollError};
use taskward_brain::store::audit::{self, AuditContext};
use taskward_brain::store::{DatabaseUrl, Store};
use taskward_shared::audit::{Actor, ActorKind};
use taskward_shared::command::{Command, RateLimit};
use taskward_shared::crypto::key_id;
use taskward_shared::protocol::{CommandResult, Outcome, SignedResult};

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

/// The user who registers the agent and issues the commands (the verifier holds each row kind
/// to the actors that write it: a user here, as through the API).
fn operator() -> Actor {
    Actor {
        kind: ActorKind::User,
        id: "00000000-0000-4000-8000-0000000000a1".into(),
        name: "bench-operator".into(),
    }
}

/// A project with one enrolled agent, made through the brain's own audited functions, so the
/// chain holds the `agent.enrolled` row the verifier checks every agent result against.
fn project_with_agent(store: &Store, keys: &Arc<Keys>, agent_key: &SigningKey) -> (String, Agent) {
    let ctx = AuditContext {
        signer: keys.clone(),
        actor: operator(),
    };
    let site = store.site_chain();
    store
        .write_blocking("bench_setup", |conn| {
            let slug = "bench".parse().expect("a valid slug");
            let project = projects::create(
                conn,
                &ctx,
                &site,
                NewProject {
                    slug: &slug,
                    name: None,
                    description: "",
                },
                None,
            )?;
            let name = "bench-host".parse().expect("a valid agent name");
            let (_, token) = registry::register(conn, &ctx, &project.id, &name, false)?;
            let enrollment = Enrollment {
                token: token.expose().to_owned(),
                public_key: hex::encode(agent_key.verifying_key().as_bytes()),
                key_id: key_id(&agent_key.verifying_key()),
                hostname: Some("bench-host".into()),
            };
            let (agent, _) = registry::enroll(conn, keys.clone(), &enrollment)?;
            Ok::<_, EnrollError>((audit::project_chain(&project.id), agent))
        })
        .unwrap()
}

/// One command as the brain logs it: issued (an API request's transaction), dispatched (the
/// agent's claim) and succeeded with the agent's signed result, each its own transaction.
fn run_command(store: &Store, keys: &Arc<Keys>, agent: &Agent, agent_key: &SigningKey, n: u64) {
    let issue = Issue {
        ctx: AuditContext {
            signer: keys.clone(),
            actor: operator(),
        },
        issuer_id: "bench".into(),
        project_id: agent.project_id.clone(),
        agent_id: agent.id.parse().expect("agent ids are UUIDs"),
        idempotency_key: None,
        command: Command::RateLimit(RateLimit {
            task_name: format!("app.tasks.t{}", n % 50),
            rate: "10/m".into(),
            worker_name: Some("celery@bench-host".into()),
        }),
        secret: keys.confirm_secret().to_vec(),
        ttl_ms: 60_000,
    };
    let issued = store
        .write_blocking("bench_issue", |conn| issue_in(conn, &issue))
        .unwrap()
        .record;
    let as_agent = AuditContext {
        signer: keys.clone(),
        actor: agent_actor(agent),
    };
    let row_hash = store
        .write_blocking("bench_claim", |conn| {
            lifecycle::record(conn, &as_agent, &issued, Event::Claimed, None, None)?;
            Ok::<_, taskward_brain::store::StoreError>(
                audit::row_at(conn, &issued.audit_chain, issued.audit_seq as u64)?.hash,
            )
        })
        .unwrap();
    let signed = SignedResult::sign(
        CommandResult {
            command_id: issued.id.clone(),
            row_hash,
            agent_id: agent.id.clone(),
            session: 1,
            outcome: Outcome::Succeeded,
            detail: "rate limit set".into(),
            finished_at_ms: taskward_brain::clock::now_ms().to_string(),
        },
        agent_key,
    );
    let recorded = store
        .write_blocking("bench_result", |conn| {
            lifecycle::record_result(conn, &as_agent, &agent.id, &agent.name, &signed)
        })
        .unwrap();
    assert!(recorded, "the agent's result belongs to its command");
}

fn main() {
    let secs = env_u64("AUDIT_WATCH_SECS", 20);
    let rate = env_u64("AUDIT_WATCH_RATE", 1000);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&DatabaseUrl::Sqlite(dir.path().join("bench.db"))).unwrap();
    let keys = Arc::new(Keys::load_or_create(dir.path()).unwrap());
    let agent_key = SigningKey::from_bytes(&[9u8; 32]);
    let (chain, agent) = project_with_agent(&store, &keys, &agent_key);
    let watch = Arc::new(AuditWatch::new(dir.path()));
    // The setup rows (site chain, project creation, enrollment) are verified before timing.
    watch.advance_all(&store, &keys).unwrap();
    let setup_rows = audit_rows(&store, &chain);
    let stop = Arc::new(AtomicBool::new(false));

    let writer = {
        let (store, keys, stop) = (store.clone(), keys.clone(), stop.clone());
        std::thread::spawn(move || {
            let started = Instant::now();
            let mut commands = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // Paced: command n is due at n / rate seconds.
                let due = Duration::from_secs_f64(commands as f64 / rate as f64);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    std::thread::sleep(wait);
                }
                run_command(&store, &keys, &agent, &agent_key, commands);
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
    assert_eq!(audit_rows(&store, &chain), setup_rows + rows);
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
    assert_eq!(point.seq, setup_rows + rows);
    let per_row_us = full_ns as f64 / 1e3 / rows as f64;
    println!(
        "| full check (rows of another process), per row | {per_row_us:.2} µs: at {} rows/s {:.2} % of one core |",
        rate * 3,
        per_row_us * (rate * 3) as f64 / 1e4
    );
}

/// Rows in `chain` now.
fn audit_rows(store: &Store, chain: &str) -> u64 {
    let chain = chain.to_owned();
    store
        .read_blocking("bench_rows", move |conn| audit::head(conn, &chain))
        .unwrap()
        .size
}
