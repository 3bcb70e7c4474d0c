//! From nothing to a command on a real Celery worker in two commands, as the README tells a
//! newcomer: `taskward-brain serve` on a fresh data directory prints the `taskward-agent run …`
//! line; that line, run as printed, enrolls and links an agent beside a real worker; a
//! rate-limit issued through the API with the README's body reaches the worker, which answers.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use support::{AGENT, wait_status};
use taskward_testkit::{Api, BrainProcess, CeleryStack, Proc, Wait, brain_bin};

/// The `taskward-agent run …` line the brain printed on stderr.
fn printed_agent_line(brain: &BrainProcess) -> String {
    let log = brain.log();
    log.lines()
        .map(str::trim)
        .find(|line| line.starts_with("taskward-agent run "))
        .unwrap_or_else(|| panic!("no `taskward-agent run` line on the brain's stderr:\n{log}"))
        .to_owned()
}

/// The printed line as a shell runs it, with this build's agent first on the `PATH` and the
/// config where `TASKWARD_AGENT_CONFIG` says.
fn line_command(line: &str, config: &Path) -> Command {
    let bin_dir = Path::new(AGENT).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut command = Command::new("sh");
    command
        .args(["-c", &format!("exec {line}")])
        .env("PATH", path)
        .env("TASKWARD_AGENT_CONFIG", config);
    command
}

/// Starts the printed line, stderr appended to `log`; killed when dropped.
fn run_line(line: &str, config: &Path, log: &Path) -> Proc {
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Proc(
        line_command(line, config)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap(),
    )
}

/// The project's one enrolled agent, once it is online with `worker` online; its id.
async fn online_agent_with(api: &Api, worker: &str, log: &Path) -> String {
    Wait::new(format!("an agent online with worker {worker} online"))
        .within(Duration::from_secs(60))
        .every(Duration::from_millis(200))
        .context(|| std::fs::read_to_string(log).unwrap_or_default())
        .until_ok(|| async {
            let agents = api.get_json(&api.project_path("/agents")).await;
            let found = agents["items"].as_array().and_then(|items| {
                items.iter().find(|a| {
                    a["online"] == true
                        && a["workers"].as_array().is_some_and(|ws| {
                            ws.iter()
                                .any(|w| w["name"] == worker && w["status"] == "online")
                        })
                })
            });
            match found {
                Some(agent) => Ok(agent["id"].as_str().unwrap().to_owned()),
                None => Err(agents.to_string()),
            }
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_then_the_printed_line_puts_a_rate_limit_on_a_real_worker() {
    let celery = CeleryStack::on_db(7);
    let dir = tempfile::tempdir().unwrap();
    let brain = BrainProcess::builder(brain_bin(), dir.path())
        .args(&["--agent-broker", celery.broker()])
        .start();
    let line = printed_agent_line(&brain);
    assert!(
        line.ends_with(&format!("--broker {}", celery.broker())),
        "the line names another broker: {line}"
    );
    a_config_dir_that_cannot_be_written_leaves_the_token_unspent(&line, dir.path());
    let _worker = celery.worker("w1@two-commands", &["--pool", "solo"], &[]);
    let (config, log) = (
        dir.path().join("agent/agent.toml"),
        dir.path().join("agent.log"),
    );
    let mut agent = run_line(&line, &config, &log);
    let api = brain.api();
    let agent_id = online_agent_with(&api, "w1@two-commands", &log).await;

    // The README's body, through the API with the admin's token from the data directory.
    let token = std::fs::read_to_string(brain.data_dir().join("admin.token")).unwrap();
    let admin = Api::new(&brain.url(), Some(token.trim()));
    let issued: Value = admin
        .post_json(
            &admin.project_path("/commands/rate-limit"),
            json!({"agent_id": agent_id, "task_name": "app.add", "rate": "10/m"}),
            202,
        )
        .await;
    let id = issued["id"].as_str().unwrap();
    let done = wait_status(&admin, &brain, id, "succeeded").await;
    let detail = done["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("w1@two-commands") && detail.contains("new rate limit set"),
        "{done}"
    );

    // The same line again while the agent runs: refused, and the running agent keeps its link.
    let beside = line_command(&line, &config).output().unwrap();
    let stderr = String::from_utf8_lossy(&beside.stderr);
    assert!(!beside.status.success(), "{stderr}");
    assert!(stderr.contains("already running"), "{stderr}");
    api.wait_online(&agent_id, true).await;

    // The same line again, with the config there now: the token is left alone and the agent
    // links with the identity it has.
    agent.kill_9();
    api.wait_online(&agent_id, false).await;
    let _again = run_line(&line, &config, &log);
    api.wait_online(&agent_id, true).await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("--enroll and the enrollment options")
            && text.contains("the token is not used"),
        "{text}"
    );
}

/// The line with a config path under a plain file: enrollment stops before the token is spent
/// (the run after it enrolls with the same token), saying where it could not write.
fn a_config_dir_that_cannot_be_written_leaves_the_token_unspent(line: &str, dir: &Path) {
    let file = dir.join("not-a-dir");
    std::fs::write(&file, "").unwrap();
    let out = line_command(line, &file.join("agent.toml"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("not-a-dir is not writable") && stderr.contains("not spent"),
        "{stderr}"
    );
}
