//! The agent's link over TLS with real processes: a brain serving HTTPS itself
//! (`serve --tls-cert/--tls-key`) with a certificate from a CA made in the test, agents that
//! trust that CA through `ca_file`, certificate pins, the rule against plain HTTP beyond
//! loopback, and certificate renewal without a restart.

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use serde_json::json;
use support::{AGENT, open_store, task_states};
use taskward_testkit::agent::enroll_output;
use taskward_testkit::{AgentHome, Api, BrainProcess, TestCa, Wait, brain_bin};

/// A brain serving HTTPS with a certificate from a fresh test CA, the CA's PEM in a file.
struct TlsBrain {
    brain: BrainProcess,
    api: Api,
    ca: TestCa,
    ca_file: PathBuf,
    dir: tempfile::TempDir,
}

impl TlsBrain {
    fn start() -> TlsBrain {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new("taskward test CA");
        let ca_file = ca.write_pem(&dir.path().join("ca.pem"));
        let brain = BrainProcess::builder(brain_bin(), dir.path())
            .tls(&ca)
            .start();
        assert!(brain.url().starts_with("https://"), "{}", brain.url());
        TlsBrain {
            api: brain.api(),
            brain,
            ca,
            ca_file,
            dir,
        }
    }

    /// `taskward-agent enroll` into `dir/<name>/agent.toml` with the test adapter and `extra`
    /// flags; the process output (not asserted).
    fn enroll(&self, name: &str, token: &str, extra: &[&str]) -> Output {
        let mut args = vec!["--engine", "test"];
        args.extend_from_slice(extra);
        enroll_output(
            Path::new(AGENT),
            &self.dir.path().join(name).join("agent.toml"),
            &self.brain.url(),
            token,
            &args,
        )
    }

    fn home(&self, name: &str) -> AgentHome {
        let dir = self.dir.path().join(name);
        AgentHome::at(AGENT, dir.join("agent.toml"), dir.join("state"))
    }

    /// The pin of the certificate the brain serves now.
    /// Issues `restart-worker` to `agent` and waits until the agent reported it succeeded:
    /// the command went out and its result came back over the TLS link.
    async fn restart_worker_succeeds(&self, agent: &str) {
        let id = self
            .api
            .issue(agent, "restart-worker", json!({"worker_name": "celery@w1"}))
            .await;
        support::wait_status(&self.api, &self.brain, &id, "succeeded").await;
    }

    fn served_pin(&self) -> String {
        taskward_testkit::tls::served_cert_sha256(self.brain.port(), self.ca.pem()).unwrap()
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// An agent that trusts the test CA through `ca_file` enrolls over https, links over wss, runs
/// a command and streams events; without `ca_file` the same brain is not trusted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_with_ca_file_enrolls_links_and_streams_over_tls() {
    let tb = TlsBrain::start();
    let (agent, token) = tb.api.create_agent("tls-host").await;

    // The web PKI roots do not vouch for a private CA: refused, and the token is not spent.
    let untrusted = tb.enroll("agent", &token, &[]);
    assert!(!untrusted.status.success());
    let why = stderr(&untrusted);
    assert!(
        why.contains("cannot reach the brain") && why.contains("certificate"),
        "{why}"
    );

    let ca_file = tb.ca_file.display().to_string();
    let out = tb.enroll("agent", &token, &["--ca-file", &ca_file]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut home = tb.home("agent");
    let config = std::fs::read_to_string(home.config()).unwrap();
    assert!(config.contains("brain = \"https://127.0.0.1:"), "{config}");
    assert!(config.contains("ca_file = "), "{config}");
    home.edit_config("events_total = 0", "events_total = 300");
    home.start();
    tb.api.wait_online(&agent, true).await;

    tb.restart_worker_succeeds(&agent).await;
    // 300 scripted events: 100 tasks received, started, succeeded.
    let store = open_store(&tb.brain);
    Wait::new("the events over wss")
        .within(Duration::from_secs(60))
        .context(|| home.log())
        .until_ok(|| async {
            let states = task_states(&store);
            match states.get("succeeded") {
                Some(100) => Ok(()),
                _ => Err(format!("{states:?}")),
            }
        })
        .await;
    let status = home.status();
    assert!(status.contains("brain          https://"), "{status}");
}

/// `brain_cert_sha256`: the brain's certificate is accepted when it is the pinned one and
/// refused, saying so, when it is not — at enroll (the token stays usable) and at run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_certificate_is_required_at_enroll_and_at_run() {
    let tb = TlsBrain::start();
    let (agent, token) = tb.api.create_agent("pinned").await;
    let ca_file = tb.ca_file.display().to_string();
    let pin = tb.served_pin();
    let wrong = "00".repeat(32);

    let refused = tb.enroll(
        "agent",
        &token,
        &["--ca-file", &ca_file, "--brain-cert-sha256", &wrong],
    );
    assert!(!refused.status.success());
    let why = stderr(&refused);
    assert!(
        why.contains(&format!("not the pinned brain_cert_sha256 {wrong}")) && why.contains(&pin),
        "{why}"
    );
    let malformed = tb.enroll(
        "agent",
        &token,
        &["--ca-file", &ca_file, "--brain-cert-sha256", "abc"],
    );
    assert!(stderr(&malformed).contains("brain_cert_sha256 must be"));

    // Same token: nothing was spent by the refusals. The pin as `openssl` prints it.
    let colons = pin
        .as_bytes()
        .chunks(2)
        .map(|c| std::str::from_utf8(c).unwrap().to_uppercase())
        .collect::<Vec<_>>()
        .join(":");
    let out = tb.enroll(
        "agent",
        &token,
        &["--ca-file", &ca_file, "--brain-cert-sha256", &colons],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let mut home = tb.home("agent");
    home.start();
    tb.api.wait_online(&agent, true).await;
    home.kill_9();
    tb.api.wait_online(&agent, false).await;

    // The config now pins another certificate: the agent will not link, and says why.
    home.edit_config(&colons, &wrong);
    home.start();
    Wait::new("the agent to refuse the certificate")
        .within(Duration::from_secs(30))
        .until(|| async { home.log().contains("not the pinned brain_cert_sha256") })
        .await;
    assert_eq!(tb.api.agent(&agent).await["online"], false);
    assert!(home.status().contains("not the pinned brain_cert_sha256"));
}

/// Plain http:// to a host that is not loopback: refused at enroll (before any connection, the
/// token unspent) and at run, naming `allow_insecure`. The address is never contacted: the
/// `.invalid` name cannot resolve, and the refusal comes first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_beyond_loopback_is_refused_without_allow_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let (brain, agent, token) = support::start_brain_with_agent(dir.path(), "insecure").await;
    let config = dir.path().join("agent").join("agent.toml");
    let remote = "http://brain.invalid:7700";
    let out = enroll_output(Path::new(AGENT), &config, remote, &token, &[]);
    assert!(!out.status.success());
    let why = stderr(&out);
    assert!(
        why.contains("plain http to a host that is not loopback") && why.contains("allow_insecure"),
        "{why}"
    );
    assert!(!config.exists());

    // Loopback over plain http is fine, with the same token.
    let mut home = AgentHome::enroll(AGENT, &dir.path().join("agent"), &brain.url(), &token, &[]);
    // Pointed elsewhere afterwards: `run` refuses to start.
    home.edit_config(
        &format!("brain = \"{}\"", brain.url()),
        &format!("brain = \"{remote}\""),
    );
    home.start();
    Wait::new("the agent to refuse to start").blocking_until(|| home.exited().is_some());
    assert!(!home.exited().unwrap().success());
    let log = home.log();
    assert!(log.contains("allow_insecure"), "{log}");
    assert_eq!(brain.api().agent(&agent).await["online"], false);
}

/// The brain serves HTTPS itself; replacing its certificate files (a renewal) is picked up
/// without a restart, and agents and HTTP clients keep working across it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_brain_reloads_a_renewed_certificate() {
    let tb = TlsBrain::start();
    let (agent, token) = tb.api.create_agent("renewal").await;
    let ca_file = tb.ca_file.display().to_string();
    let out = tb.enroll("agent", &token, &["--ca-file", &ca_file]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut home = tb.home("agent");
    home.start();
    tb.api.wait_online(&agent, true).await;
    let before = tb.served_pin();

    let renewed = tb.ca.issue_loopback();
    renewed.write(&tb.brain.dir().join("tls"));
    Wait::new("the brain to serve the renewed certificate")
        .within(Duration::from_secs(30))
        .context(|| tb.brain.log())
        .until_ok(|| async {
            match tb.served_pin() {
                pin if pin == renewed.sha256 => Ok(()),
                pin => Err(pin),
            }
        })
        .await;
    assert_ne!(before, renewed.sha256);
    assert!(tb.brain.log().contains("TLS certificate reloaded"));

    // A broken pair (a key that does not match) is refused and the renewed one kept.
    let stray = tb.ca.issue_loopback();
    std::fs::write(tb.brain.dir().join("tls").join("key.pem"), &stray.key_pem).unwrap();
    Wait::new("the brain to refuse the mismatched key")
        .within(Duration::from_secs(30))
        .until(|| async {
            tb.brain
                .log()
                .contains("does not load; serving the previous one")
        })
        .await;
    assert_eq!(tb.served_pin(), renewed.sha256);

    // The connected agent was not disturbed; a new command and a new HTTPS call both work.
    tb.restart_worker_succeeds(&agent).await;
    home.restart();
    Wait::new("the restarted agent to link with the renewed certificate")
        .within(Duration::from_secs(30))
        .until(|| async { home.log().matches("connected to the brain").count() >= 2 })
        .await;
}
