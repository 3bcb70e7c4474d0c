//! `taskward-brain serve` as a process: a data directory of its own (SQLite inside it, or a
//! fresh PostgreSQL database), ready when `/readyz` answers, its stderr kept in a file, the
//! bootstrap admin's token and password, SIGTERM, SIGKILL and restarts on the same port.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::api::Api;
use crate::pg::PgDatabase;
use crate::process::{free_port, signal};
use crate::wait::Wait;

/// How to start a brain: see [`BrainProcess::builder`].
pub struct BrainBuilder {
    bin: PathBuf,
    dir: PathBuf,
    port: Option<u16>,
    args: Vec<String>,
    env: Vec<(String, String)>,
    database_url: Option<String>,
    pg: Option<PgDatabase>,
    tls_ca: Option<String>,
}

impl BrainBuilder {
    /// Serves HTTPS with a certificate for `127.0.0.1` from `ca` (`--tls-cert`, `--tls-key`,
    /// the files in `dir/tls/`); [`BrainProcess::url`] is then `https://…` and its callers
    /// trust `ca`.
    pub fn tls(mut self, ca: &crate::TestCa) -> Self {
        let (cert, key) = ca.issue_loopback().write(&self.dir.join("tls"));
        self.args.extend([
            "--tls-cert".to_owned(),
            cert.display().to_string(),
            "--tls-key".to_owned(),
            key.display().to_string(),
        ]);
        self.tls_ca = Some(ca.pem().to_owned());
        self
    }

    /// Listens on this loopback port (default: one free now).
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Extra arguments of `serve` (`--command-ttl 10`, …).
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|a| (*a).to_owned()));
        self
    }

    /// An environment variable (`RUST_LOG`, …).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Serves from this database (`TASKWARD_DATABASE_URL`) instead of SQLite in the data dir.
    pub fn database_url(mut self, url: &str) -> Self {
        self.database_url = Some(url.to_owned());
        self
    }

    /// Serves from a fresh PostgreSQL database, dropped with the process handle.
    pub fn fresh_postgres(mut self) -> Self {
        let db = PgDatabase::create("tw_test");
        self.database_url = Some(db.url().to_owned());
        self.pg = Some(db);
        self
    }

    /// Starts the brain and waits until it is ready (30 s at most).
    pub fn start(self) -> BrainProcess {
        static HANDLES: AtomicUsize = AtomicUsize::new(0);
        let n = HANDLES.fetch_add(1, Ordering::Relaxed);
        let mut brain = BrainProcess {
            log: self.dir.join(format!("brain-{n}.log")),
            port: self.port.unwrap_or_else(free_port),
            bin: self.bin,
            dir: self.dir,
            args: self.args,
            env: self.env,
            database_url: self.database_url,
            _pg: self.pg,
            tls_ca: self.tls_ca,
            child: None,
            token: String::new(),
        };
        brain.spawn();
        brain
    }
}

/// A running `taskward-brain serve` (killed with SIGKILL when dropped).
pub struct BrainProcess {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    args: Vec<String>,
    env: Vec<(String, String)>,
    database_url: Option<String>,
    _pg: Option<PgDatabase>,
    tls_ca: Option<String>,
    child: Option<Child>,
    log: PathBuf,
    token: String,
}

impl BrainProcess {
    /// A brain of binary `bin` run in `dir` (its data directory is `dir/taskward-data`).
    pub fn builder(bin: impl Into<PathBuf>, dir: &Path) -> BrainBuilder {
        BrainBuilder {
            bin: bin.into(),
            dir: dir.to_owned(),
            port: None,
            args: Vec::new(),
            env: Vec::new(),
            database_url: None,
            pg: None,
            tls_ca: None,
        }
    }

    /// A brain on SQLite in `dir` with default settings, ready.
    pub fn start(bin: impl Into<PathBuf>, dir: &Path) -> BrainProcess {
        BrainProcess::builder(bin, dir).start()
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "the brain is running already");
        let mut cmd = Command::new(&self.bin);
        cmd.current_dir(&self.dir)
            .args(["serve", "--listen", &format!("127.0.0.1:{}", self.port)])
            .args(&self.args)
            .env_remove("TASKWARD_DATA_DIR")
            .env_remove("TASKWARD_DATABASE_URL")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            // A file, not a pipe: what the process wrote before it answered is in the file
            // when it answers.
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.log)
                    .unwrap(),
            );
        if let Some(url) = &self.database_url {
            cmd.env("TASKWARD_DATABASE_URL", url);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", self.bin.display()));
        let ready = format!("{}/readyz", self.url());
        let tls_ca = self.tls_ca.clone();
        let (path, child) = (&self.log, self.child.insert(child));
        let log = || std::fs::read_to_string(path).unwrap_or_default();
        Wait::new("the brain to be ready")
            .within(Duration::from_secs(30))
            .blocking_until_ok(|| {
                if let Some(status) = child.try_wait().unwrap() {
                    panic!("the brain exited ({status}):\n{}", log());
                }
                match &tls_ca {
                    Some(ca) => crate::http1::text_tls(&ready, ca, None, None),
                    None => crate::http1::text(&ready, None, None),
                }
                .map(drop)
                .ok_or_else(log)
            });
        // Read at every start: a restart must find the token the first start wrote.
        self.token = std::fs::read_to_string(self.data_dir().join("admin.token"))
            .unwrap()
            .trim()
            .to_owned();
    }

    /// `http://127.0.0.1:<port>`, or `https://` when it serves TLS.
    pub fn url(&self) -> String {
        let scheme = if self.tls_ca.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The CA its certificate chains to (PEM), when it serves TLS.
    pub fn tls_ca(&self) -> Option<&str> {
        self.tls_ca.as_deref()
    }

    /// The port it listens on (the same after a restart).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory it runs in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `dir/taskward-data`: keys, `admin.token`, `admin.password`, the SQLite database.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("taskward-data")
    }

    /// The SQLite database file, unless it serves from PostgreSQL.
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        self.database_url
            .is_none()
            .then(|| self.data_dir().join("taskward.db"))
    }

    /// The database it serves from, as the CLI takes it (`sqlite://…` or `postgres://…`).
    pub fn database_url(&self) -> String {
        self.database_url.clone().unwrap_or_else(|| {
            format!("sqlite://{}", self.data_dir().join("taskward.db").display())
        })
    }

    /// The bootstrap site admin's API token (written at the first start).
    pub fn admin_token(&self) -> &str {
        &self.token
    }

    /// The bootstrap admin's dashboard password.
    pub fn admin_password(&self) -> String {
        std::fs::read_to_string(self.data_dir().join("admin.password"))
            .unwrap()
            .trim()
            .to_owned()
    }

    /// A caller authenticated as the site admin.
    pub fn api(&self) -> Api {
        match &self.tls_ca {
            Some(ca) => Api::trusting(&self.url(), Some(&self.token), ca),
            None => Api::new(&self.url(), Some(&self.token)),
        }
    }

    /// The `/metrics` text, read as the admin.
    pub async fn metrics(&self) -> String {
        self.api().metrics().await
    }

    /// Everything the processes of this handle wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The file [`BrainProcess::log`] reads (`dir/brain-<n>.log`, one per handle).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn exited(&mut self) -> ExitStatus {
        self.child.take().unwrap().wait().unwrap()
    }

    /// SIGTERM, then waits (15 s at most) for a clean exit; the log.
    pub fn terminate(&mut self) -> String {
        let pid = self.pid().expect("the brain is not running");
        assert!(signal(pid, "TERM", false));
        Wait::new("the brain to stop after SIGTERM")
            .within(Duration::from_secs(15))
            .every(Duration::from_millis(20))
            .blocking_until(|| self.child.as_mut().unwrap().try_wait().unwrap().is_some());
        let status = self.exited();
        assert!(
            status.success(),
            "the brain exited with {status} after SIGTERM"
        );
        self.log()
    }

    /// SIGKILL (`kill -9`): no shutdown work at all.
    pub fn kill_9(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            self.exited();
        }
    }

    /// Starts it again (after [`BrainProcess::kill_9`] or [`BrainProcess::terminate`], or
    /// killing it first), on the same port, data and settings; waits until it is ready.
    pub fn restart(&mut self) {
        self.kill_9();
        self.spawn();
    }
}

impl Drop for BrainProcess {
    /// A failed assertion must not leave a server running.
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
