//! Stopping the real binary while clients hold it open: an open dashboard tab (a live
//! Server-Sent Events stream) must not hold a SIGTERM up, and a client that never finishes
//! its request is cut off after `--shutdown-grace`.

use std::time::{Duration, Instant};

use taskward_testkit::BrainProcess;
use tokio::io::AsyncWriteExt;

const BIN: &str = env!("CARGO_BIN_EXE_taskward-brain");

/// Signs in as the bootstrap admin and returns the session cookie (`name=value`).
async fn admin_session(brain: &BrainProcess) -> String {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let reply = client
        .post(format!("{}/login", brain.url()))
        .form(&[
            ("name", "admin".to_owned()),
            ("password", brain.admin_password()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), reqwest::StatusCode::SEE_OTHER);
    let cookie = reply.headers()["set-cookie"].to_str().unwrap();
    cookie.split(';').next().unwrap().to_owned()
}

/// SIGTERM to `brain`, whose log must then say `said`; it must stop within 10 s (`terminate`
/// allows 15 s).
fn terminate_promptly(brain: &mut BrainProcess, said: &str) {
    let asked = Instant::now();
    let log = brain.terminate();
    assert!(log.contains(said), "{log}");
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "{:?}",
        asked.elapsed()
    );
}

#[tokio::test]
async fn an_open_live_page_does_not_hold_sigterm_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut brain = BrainProcess::start(BIN, dir.path());
    let cookie = admin_session(&brain).await;
    let live = reqwest::Client::new()
        .get(format!("{}/p/default/live", brain.url()))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), reqwest::StatusCode::OK);
    let mut live = live;
    // The stream is open: its first event (the watermark) arrives at once.
    assert!(live.chunk().await.unwrap().is_some());
    // The live stream ends at once, so the brain stops well before its 30 s grace would have
    // run out.
    terminate_promptly(&mut brain, "taskward brain stopped");
    // And the client sees its stream end rather than hang.
    let rest = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(Some(_)) = live.chunk().await {}
    })
    .await;
    assert!(
        rest.is_ok(),
        "the live stream stayed open after the brain stopped"
    );
}

#[tokio::test]
async fn a_request_that_never_finishes_is_cut_off_after_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let mut brain = BrainProcess::builder(BIN, dir.path())
        .args(&["--shutdown-grace", "1"])
        .start();
    // A client that sends half a request body and then nothing: the request stays in flight.
    let address = brain.url().trim_start_matches("http://").to_owned();
    let mut stalled = tokio::net::TcpStream::connect(&address).await.unwrap();
    stalled
        .write_all(
            format!(
                "POST /api/v1/projects HTTP/1.1\r\nhost: {address}\r\nauthorization: Bearer {}\r\n\
                 content-type: application/json\r\ncontent-length: 1000\r\n\r\n{{\"slug\":",
                brain.admin_token()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    terminate_promptly(&mut brain, "shutdown grace");
}
