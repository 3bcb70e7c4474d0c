//! Property tests of what the brain decodes from agents (issue #18): any frame text is
//! either refused or read into a frame that writes back to the same frame, and an update read
//! from it is made storable in one step (idempotent) and judged plausible or not without
//! panicking. And of the audit log's fast statement encoder: byte for byte what the general
//! RFC 8785 canonicalizer writes, for any statement. `PROPTEST_CASES=100000 cargo test --release -p taskward-shared --test props`
//! is the soak run (README).

use std::sync::LazyLock;

use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use taskward_shared::audit::{Actor, ActorKind, Statement};
use taskward_shared::events::TaskState;
use taskward_shared::protocol::{AgentFrame, decode_agent_frame};
use taskward_testkit::fuzz;

/// Keys and values of agent frames, event batches and updates: the words below and the task
/// states.
static FRAME_WORDS: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
    let mut words = FRAME_KEYS_AND_VALUES.to_vec();
    words.extend(TaskState::ALL.map(TaskState::as_str));
    words
});

/// The frames' words other than the task states.
const FRAME_KEYS_AND_VALUES: &[&str] = &[
    "type",
    "hello",
    "claimed",
    "result",
    "events",
    "rejected",
    "ping",
    "pong",
    "version",
    "agent_id",
    "signature",
    "command_id",
    "claimed_command_id",
    "reason",
    "time_ms",
    "seq",
    "dropped_total",
    "updates",
    "task",
    "worker",
    "queue_depth",
    "engine",
    "celery",
    "task_id",
    "state",
    "at_ms",
    "name",
    "queue",
    "priority",
    "args",
    "kwargs",
    "exception",
    "traceback",
    "retries",
    "eta_ms",
    "runtime_ms",
    "parent_id",
    "root_id",
    "args_unavailable",
    "truncated",
    "online",
    "pool",
    "concurrency",
    "queues",
    "processed",
    "depth",
    "row_hash",
    "outcome",
    "detail",
    "audience",
    "agent_key_id",
];

#[test]
fn any_frame_text_is_refused_or_read_back_whole() {
    let mut runner = TestRunner::new(fuzz::config(2000));
    let strategy = fuzz::bytes_with(&FRAME_WORDS, 5);
    runner
        .run(&strategy, |bytes| {
            let Ok(text) = std::str::from_utf8(&bytes) else {
                return Ok(());
            };
            let Ok(frame) = decode_agent_frame(text) else {
                return Ok(());
            };
            let written = serde_json::to_string(&frame).expect("a frame serializes");
            let again: AgentFrame = decode_agent_frame(&written).expect("its own text reads");
            prop_assert_eq!(&again, &frame);
            if let AgentFrame::Events(mut batch) = frame {
                for update in &mut batch.updates {
                    update.make_storable();
                    prop_assert!(!update.make_storable(), "storable in one step");
                    let _ = update.implausible(1_800_000_000_000);
                }
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn any_statement_encodes_as_the_general_canonicalizer_does() {
    let mut runner = TestRunner::new(fuzz::config(2000));
    let kind = prop_oneof![
        Just(ActorKind::User),
        Just(ActorKind::Schedule),
        Just(ActorKind::Agent),
        Just(ActorKind::System),
    ];
    let strategy = (
        (
            any::<u32>(),
            any::<String>(),
            any::<String>(),
            any::<String>(),
        ),
        (kind, any::<String>(), any::<String>()),
        (any::<String>(), proptest::option::of(any::<String>())),
        fuzz::json_with(&FRAME_WORDS, 4),
    );
    runner
        .run(
            &strategy,
            |((v, chain, seq, time), (kind, id, name), (what, command_id), payload)| {
                let statement = Statement {
                    v,
                    chain,
                    seq,
                    time,
                    actor: Actor { kind, id, name },
                    kind: what,
                    command_id,
                    payload,
                };
                let general = serde_json_canonicalizer::to_vec(&statement).expect("serializes");
                let fast = statement.to_canonical();
                prop_assert_eq!(
                    String::from_utf8_lossy(&fast),
                    String::from_utf8_lossy(&general)
                );
                Ok(())
            },
        )
        .unwrap();
}
