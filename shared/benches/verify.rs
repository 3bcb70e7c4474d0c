//! Offline verification throughput: rows per second through `ChainVerifier`, from rows in
//! memory and from export text (JSON Lines parsed as `audit verify --file` does).
//!
//! Run: `cargo bench -p taskward-shared --bench verify` (`VERIFY_BENCH_ROWS` sets the row
//! count, default 200,000). Two chains are generated: one of brain rows only (commands
//! issued), and one where every command is also dispatched and completed with an agent's
//! signed result (four signatures per three rows). The last column is rows per CPU-second
//! spent (all threads): on a machine other work shares, the wall-clock rates fall but this
//! one does not, and two free cores reach at most twice it.

use std::time::Instant;

use ed25519_dalek::SigningKey;
use serde_json::json;
use taskward_shared::audit::verify::{ChainVerifier, TrustedKeys};
use taskward_shared::audit::{
    Actor, ActorKind, AuditRow, PublicKeyInfo, STATEMENT_VERSION, Statement, genesis_hash,
    parse_hash,
};
use taskward_shared::crypto::key_id;
use taskward_shared::protocol::{CommandResult, Outcome, SignedResult};

/// The brain's allocator (its `main.rs`): `taskward-brain audit verify --file` allocates with it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CHAIN: &str = "project:00000000-0000-4000-8000-000000000001";
const PROJECT: &str = "00000000-0000-4000-8000-000000000001";
const AGENT: &str = "00000000-0000-4000-8000-0000000000b1";
const START_MS: i64 = 1_795_600_000_000;

fn main() {
    let rows: u64 = std::env::var("VERIFY_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let brain = SigningKey::from_bytes(&[7u8; 32]);
    let agent = SigningKey::from_bytes(&[8u8; 32]);
    let trusted =
        TrustedKeys::from_infos(&[PublicKeyInfo::of(&brain.verifying_key(), 0, None)]).unwrap();
    println!(
        "cores: {}",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "| chain | rows | signatures | in memory rows/s | from JSON Lines rows/s | JSON Lines rows per CPU-second |"
    );
    println!("|---|---|---|---|---|---|");
    for with_agents in [false, true] {
        let (chain, signatures) = generate(rows, with_agents, &brain, &agent);
        let text: Vec<String> = chain
            .iter()
            .map(|r| serde_json::to_string(r).unwrap())
            .collect();

        let started = Instant::now();
        let mut verifier = ChainVerifier::new(CHAIN, trusted.clone(), None).unwrap();
        for row in &chain {
            verifier.push(row).unwrap();
        }
        assert_eq!(verifier.finish().unwrap().rows, rows);
        let in_memory = rows as f64 / started.elapsed().as_secs_f64();

        let started = Instant::now();
        let cpu_before = cpu_seconds();
        let mut verifier = ChainVerifier::new(CHAIN, trusted.clone(), None).unwrap();
        for line in &text {
            let row: AuditRow = serde_json::from_str(line).unwrap();
            verifier.push(&row).unwrap();
        }
        assert_eq!(verifier.finish().unwrap().rows, rows);
        let from_text = rows as f64 / started.elapsed().as_secs_f64();
        let per_cpu_second = rows as f64 / (cpu_seconds() - cpu_before);

        println!(
            "| {} | {rows} | {signatures} | {in_memory:.0} | {from_text:.0} | {per_cpu_second:.0} |",
            if with_agents {
                "commands completed by an agent"
            } else {
                "brain rows only"
            }
        );
    }
}

/// A chain of `rows` rows: an agent enrolled, then commands (issued only, or issued,
/// dispatched and succeeded with the agent's signed result). Returns it and its signature
/// count.
fn generate(
    rows: u64,
    with_agents: bool,
    brain: &SigningKey,
    agent: &SigningKey,
) -> (Vec<AuditRow>, u64) {
    let mut out = Vec::with_capacity(rows as usize);
    let mut prev = genesis_hash(CHAIN);
    let mut signatures = 0;
    let mut issued_hash = String::new();
    let mut command = 0u64;
    for seq in 1..=rows {
        let (kind, actor, command_id, payload) = if seq == 1 {
            (
                "agent.enrolled",
                ActorKind::Agent,
                None,
                json!({"agent": {"id": AGENT, "name": "worker-1"},
                    "public_key": hex::encode(agent.verifying_key().as_bytes()),
                    "key_id": key_id(&agent.verifying_key()), "hostname": "host-1"}),
            )
        } else {
            let step = if with_agents { (seq - 2) % 3 } else { 0 };
            if step == 0 {
                command += 1;
            }
            let id = format!("00000000-0000-4000-8000-{command:012}");
            match step {
                0 => (
                    "command.issued",
                    ActorKind::User,
                    Some(id.clone()),
                    json!({"command": {"id": id, "project_id": PROJECT, "audience": AGENT,
                        "kind": "retry-task",
                        "payload": {"engine": "celery", "task_id": format!("task-{command}")},
                        "issued_at_ms": (START_MS + seq as i64).to_string(),
                        "expires_at_ms": (START_MS + seq as i64 + 600_000).to_string(),
                        "critical": false, "global_throttle": false, "bound_depth": null,
                        "idempotency_key": null}}),
                ),
                1 => (
                    "command.dispatched",
                    ActorKind::Agent,
                    Some(id),
                    json!({"status": "dispatched", "detail": null, "late": false,
                        "previous_status": "issued", "agent_result": null}),
                ),
                _ => {
                    let signed = SignedResult::sign(
                        CommandResult {
                            command_id: id.clone(),
                            row_hash: issued_hash.clone(),
                            agent_id: AGENT.into(),
                            session: 1,
                            outcome: Outcome::Succeeded,
                            detail: "republished as task-x".into(),
                            finished_at_ms: (START_MS + seq as i64).to_string(),
                        },
                        agent,
                    );
                    signatures += 1;
                    (
                        "command.succeeded",
                        ActorKind::Agent,
                        Some(id),
                        json!({"status": "succeeded", "detail": "republished as task-x",
                            "late": false, "previous_status": "dispatched",
                            "agent_result": signed}),
                    )
                }
            }
        };
        let statement = Statement {
            v: STATEMENT_VERSION,
            chain: CHAIN.into(),
            seq: seq.to_string(),
            time: time(START_MS + seq as i64),
            // Each row's actor is the one the protocol requires of its kind.
            actor: match actor {
                ActorKind::Agent => Actor {
                    kind: actor,
                    id: AGENT.into(),
                    name: "worker-1".into(),
                },
                _ => Actor {
                    kind: actor,
                    id: "00000000-0000-4000-8000-0000000000aa".into(),
                    name: "admin".into(),
                },
            },
            kind: kind.into(),
            command_id,
            payload,
        };
        let row = AuditRow::sign(seq, &prev, &statement, brain);
        signatures += 1;
        prev = parse_hash(&row.hash).unwrap();
        if kind == "command.issued" {
            issued_hash = row.hash.clone();
        }
        out.push(row);
    }
    (out, signatures)
}

/// RFC 3339 UTC with milliseconds, as statements spell times (within 2026-11-25 here).
fn time(ms: i64) -> String {
    let day_ms = ms.rem_euclid(86_400_000);
    let base = "2026-11-25";
    assert_eq!(
        ms.div_euclid(86_400_000),
        20_782,
        "bench times stay on one day"
    );
    format!(
        "{base}T{:02}:{:02}:{:02}.{:03}Z",
        day_ms / 3_600_000,
        day_ms / 60_000 % 60,
        day_ms / 1000 % 60,
        day_ms % 1000
    )
}

/// CPU time this process used so far (user + system, all threads), from `/proc/self/stat`:
/// rows per CPU-second says what the verifier costs whatever else loads the machine.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 and 15 of the file (utime, stime) in clock ticks of 1/100 s.
    let ticks: f64 = fields.get(11..13).map_or(0.0, |f| {
        f.iter().filter_map(|v| v.parse::<f64>().ok()).sum()
    });
    ticks / 100.0
}
