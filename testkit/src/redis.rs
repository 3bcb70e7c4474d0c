//! A Redis server of the test's own (Debian's `redis-server`, no persistence), on a free
//! loopback port, optionally serving TLS only: what a test needs when it stops and restarts
//! the broker, or talks `rediss://` to it, without touching the shared Redis on 6379.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::process::{Proc, free_port};
use crate::wait::Wait;

/// TLS files of a [`RedisServer`] (PEM): its certificate and key, and the CA its clients'
/// certificates must chain to.
pub struct RedisTls {
    /// The server certificate.
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
    /// The CA client certificates are checked against.
    pub ca: PathBuf,
    /// Redis's `tls-auth-clients`: `yes` (a client certificate is required) or `optional`.
    pub auth_clients: &'static str,
}

/// A `redis-server` process, killed when dropped.
pub struct RedisServer {
    port: u16,
    tls: Option<RedisTls>,
    dir: PathBuf,
    proc: Option<Proc>,
}

impl RedisServer {
    /// Starts a plain Redis on a free port, working directory `dir`; ready when it returns.
    pub fn start(dir: &Path) -> RedisServer {
        RedisServer::start_on(dir, None)
    }

    /// Starts a Redis that serves TLS only (`--port 0 --tls-port …`).
    pub fn start_tls(dir: &Path, tls: RedisTls) -> RedisServer {
        RedisServer::start_on(dir, Some(tls))
    }

    fn start_on(dir: &Path, tls: Option<RedisTls>) -> RedisServer {
        std::fs::create_dir_all(dir).unwrap();
        let mut server = RedisServer {
            port: free_port(),
            tls,
            dir: dir.to_owned(),
            proc: None,
        };
        server.restart();
        server
    }

    /// The port it listens on (the TLS port for a TLS server).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>/<db>`, or `rediss://` for a TLS server.
    pub fn url(&self, db: u8) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}/{db}", self.port)
    }

    /// SIGKILL: the broker is gone (connections drop, nothing listens on the port).
    pub fn kill(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            proc.kill_9();
        }
    }

    /// Starts it again on the same port (after [`RedisServer::kill`]); ready when it returns.
    pub fn restart(&mut self) {
        self.kill();
        let mut command = Command::new("redis-server");
        command
            .current_dir(&self.dir)
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(std::fs::File::create(self.dir.join("redis.log")).unwrap())
            .stderr(Stdio::null());
        let port = self.port.to_string();
        match &self.tls {
            None => {
                command.args(["--port", &port]);
            }
            Some(tls) => {
                command.args(["--port", "0", "--tls-port", &port]);
                command.arg("--tls-cert-file").arg(&tls.cert);
                command.arg("--tls-key-file").arg(&tls.key);
                command.arg("--tls-ca-cert-file").arg(&tls.ca);
                command.args(["--tls-auth-clients", tls.auth_clients]);
            }
        }
        let child = command
            .spawn()
            .expect("redis-server starts (Debian's redis-server, built with TLS)");
        self.proc = Some(Proc(child));
        let log = self.dir.join("redis.log");
        Wait::new(format!("redis-server on port {}", self.port))
            .within(Duration::from_secs(20))
            .context(|| std::fs::read_to_string(&log).unwrap_or_default())
            .blocking_until(|| {
                std::fs::read_to_string(&log)
                    .is_ok_and(|text| text.contains("Ready to accept connections"))
            });
    }
}
