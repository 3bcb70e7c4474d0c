//! An agent's home: `taskward-agent enroll` into a directory of its own (`agent.toml` beside
//! `state/`), then `taskward-agent run` as a process, its stderr in `state/agent.log`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};

/// An enrolled agent's files and, while it runs, its process (killed when dropped).
pub struct AgentHome {
    bin: PathBuf,
    config: PathBuf,
    state: PathBuf,
    env: Vec<(String, String)>,
    child: Option<Child>,
}

/// Runs `bin --config <config> enroll --brain <url> --token <token> <engine…>`.
pub fn enroll_output(bin: &Path, config: &Path, url: &str, token: &str, engine: &[&str]) -> Output {
    Command::new(bin)
        .arg("--config")
        .arg(config)
        .args(["enroll", "--brain", url, "--token", token])
        .args(engine)
        .output()
        .unwrap()
}

impl AgentHome {
    /// Enrolls into `dir` (`dir/agent.toml`, `dir/state`) with the brain at `url` and an
    /// enrollment token; `engine` are the `--engine …` arguments. Enrollment must succeed.
    pub fn enroll(
        bin: impl Into<PathBuf>,
        dir: &Path,
        url: &str,
        token: &str,
        engine: &[&str],
    ) -> AgentHome {
        let bin = bin.into();
        let config = dir.join("agent.toml");
        let out = enroll_output(&bin, &config, url, token, engine);
        assert!(
            out.status.success(),
            "enroll: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        AgentHome::at(bin, config, dir.join("state"))
    }

    /// A home whose files exist already (a copy of another, say).
    pub fn at(bin: impl Into<PathBuf>, config: PathBuf, state: PathBuf) -> AgentHome {
        AgentHome {
            bin: bin.into(),
            config,
            state,
            env: Vec::new(),
            child: None,
        }
    }

    /// An environment variable for the processes started from now on (`RUST_LOG`, …).
    pub fn env(&mut self, key: &str, value: &str) {
        self.env.push((key.to_owned(), value.to_owned()));
    }

    /// The config file.
    pub fn config(&self) -> &Path {
        &self.config
    }

    /// The state directory.
    pub fn state(&self) -> &Path {
        &self.state
    }

    /// A file in the state directory, as text (empty if missing).
    pub fn read_state(&self, name: &str) -> String {
        std::fs::read_to_string(self.state.join(name)).unwrap_or_default()
    }

    /// `state/agent.log`: the stderr of every process started from this home.
    pub fn log_path(&self) -> PathBuf {
        self.state.join("agent.log")
    }

    /// The log so far.
    pub fn log(&self) -> String {
        self.read_state("agent.log")
    }

    /// Replaces `from` with `to` in the config file; `from` must be there.
    pub fn edit_config(&self, from: &str, to: &str) {
        let text = std::fs::read_to_string(&self.config).unwrap();
        assert!(
            text.contains(from),
            "{from:?} is not in the config:\n{text}"
        );
        std::fs::write(&self.config, text.replace(from, to)).unwrap();
    }

    /// Starts `taskward-agent run`.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "the agent is running already");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        self.child = Some(
            Command::new(&self.bin)
                .arg("--config")
                .arg(&self.config)
                .arg("run")
                .envs(self.env.iter().map(|(k, v)| (k, v)))
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL (`kill -9`), and waits for it.
    pub fn kill_9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the running process (SIGKILL) and starts another.
    pub fn restart(&mut self) {
        self.kill_9();
        self.start();
    }

    /// How the process ended, if it did.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().unwrap())
    }

    /// The standard output of `taskward-agent status`.
    pub fn status(&self) -> String {
        let out = Command::new(&self.bin)
            .arg("--config")
            .arg(&self.config)
            .arg("status")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for AgentHome {
    fn drop(&mut self) {
        self.kill_9();
    }
}
