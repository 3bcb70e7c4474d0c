//! The real binary's listener under clients that open connections and then say nothing, or
//! trickle: idle connections are closed after `--header-timeout`, a body that does not arrive
//! within `--body-timeout` is answered 408, connections beyond `--max-connections` are answered
//! 503 and closed, and the brain raises its own open-file limit.

use std::time::Duration;

use taskward_testkit::BrainProcess;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BIN: &str = env!("CARGO_BIN_EXE_taskward-brain");

/// The brain binary started with `args` in a fresh directory, which it returns first so that
/// it outlives the process.
fn brain_with(args: &[&str]) -> (tempfile::TempDir, BrainProcess) {
    let dir = tempfile::tempdir().unwrap();
    let brain = BrainProcess::builder(BIN, dir.path()).args(args).start();
    (dir, brain)
}

fn address(brain: &BrainProcess) -> String {
    brain.url().trim_start_matches("http://").to_owned()
}

/// The JSON body of a raw HTTP/1.1 answer.
fn json_body(answer: &str) -> serde_json::Value {
    serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap()
}

/// Reads until the peer closes (or 15 s pass), returning what arrived.
async fn read_until_closed(stream: &mut TcpStream) -> Option<String> {
    let mut seen = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), stream.read_to_end(&mut seen)).await;
    read.ok()
        .map(|_| String::from_utf8_lossy(&seen).into_owned())
}

#[tokio::test]
async fn idle_connections_are_closed_and_the_cap_refuses_politely() {
    // The header timeout is long beside the probes' waits (200 ms each), so no silent client
    // is closed, freeing its slot, before one is refused.
    let (_dir, brain) = brain_with(&["--header-timeout", "4", "--max-connections", "4"]);
    // Clients connect and send nothing until one is refused: the silent ones fill the slots.
    // (Counted rather than assumed: a connection of the start-up readiness check may hold a
    // slot for a moment, and on a busy machine it may close while these connect.)
    let mut idle = Vec::new();
    let refused = loop {
        let mut stream = TcpStream::connect(address(&brain)).await.unwrap();
        let answer =
            tokio::time::timeout(Duration::from_millis(500), read_until_closed(&mut stream)).await;
        match answer {
            Ok(Some(text)) if text.starts_with("HTTP/1.1 503") => break text,
            Ok(other) => panic!("a silent client was answered at once: {other:?}"),
            // Still open: it holds a slot.
            Err(_) => idle.push(stream),
        }
        assert!(idle.len() <= 6, "the cap of 4 connections was not enforced");
    };
    // The one over the cap is told why, in the API's error shape, and closed.
    assert_eq!(json_body(&refused)["error"]["code"], "overloaded");
    // The silent ones are closed by the brain after the header timeout (none is answered,
    // unless a refusal was slower than the wait above)...
    let mut held = 0;
    for stream in &mut idle {
        let closed = read_until_closed(stream).await;
        let text = closed.expect("an idle connection stayed open past --header-timeout");
        if !text.starts_with("HTTP/1.1 503") {
            held += 1;
        }
    }
    assert!(
        held <= 4,
        "{held} connections were served at once with a cap of 4"
    );
    // ...which frees their slots for clients that talk.
    let health = reqwest::get(format!("{}/healthz", brain.url()))
        .await
        .unwrap();
    assert_eq!(health.status(), reqwest::StatusCode::OK);
}

#[tokio::test]
async fn a_header_trickled_slower_than_the_timeout_is_cut_off() {
    let (_dir, brain) = brain_with(&["--header-timeout", "2"]);
    let mut slow = TcpStream::connect(address(&brain)).await.unwrap();
    let started = std::time::Instant::now();
    // One byte every 300 ms: each arrives well within any per-read timeout, but the head as a
    // whole would take far longer than 2 s.
    let head = format!(
        "GET /healthz HTTP/1.1\r\nhost: x\r\nx-slow: {}\r\n\r\n",
        "a".repeat(60)
    );
    let mut cut_off = false;
    for byte in head.as_bytes() {
        if slow.write_all(&[*byte]).await.is_err() {
            cut_off = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        if started.elapsed() > Duration::from_secs(8) {
            break;
        }
    }
    if !cut_off {
        let answer = read_until_closed(&mut slow).await.unwrap_or_default();
        assert!(
            !answer.starts_with("HTTP/1.1 200"),
            "a head trickled over {:?} was served: {answer}",
            started.elapsed()
        );
    }
}

#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_is_answered_408() {
    let (_dir, brain) = brain_with(&["--body-timeout", "1"]);
    let mut stalled = TcpStream::connect(address(&brain)).await.unwrap();
    stalled
        .write_all(
            format!(
                "POST /api/v1/projects HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\n\
                 content-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"slug\":",
                brain.admin_token()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let answer = read_until_closed(&mut stalled).await.expect("closed");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let body = json_body(&answer);
    assert_eq!(body["error"]["code"], "request_timeout", "{body}");
    // Nothing was created from the half body.
    let projects = brain.api().get_json("/api/v1/projects").await;
    assert_eq!(projects["items"].as_array().unwrap().len(), 1, "{projects}");
}

#[tokio::test]
async fn the_brain_raises_its_open_file_limit_to_the_hard_limit() {
    let dir = tempfile::tempdir().unwrap();
    // Started the way a login shell with a low default would start it: soft limit 512.
    let wrapper = dir.path().join("low-limit.sh");
    std::fs::write(
        &wrapper,
        format!("#!/bin/sh\nulimit -Sn 512\nexec {BIN} \"$@\"\n"),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let brain = BrainProcess::start(&wrapper, dir.path());
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", brain.pid().unwrap())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let fields: Vec<&str> = line.split_whitespace().collect();
    // "Max open files <soft> <hard> files": the soft limit was raised to the hard one.
    assert_eq!(fields[3], fields[4], "{line}");
    assert_ne!(fields[3], "512", "{line}");
}
