//! Child processes that end with the test, and loopback ports.

use std::process::{Child, Command, Output};

/// A child process, killed (SIGKILL) and reaped when dropped, so a failed assertion never
/// leaves it running.
pub struct Proc(pub Child);

impl Proc {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// SIGKILL to the process alone, and waits for it.
    pub fn kill_9(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill_9();
    }
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Sends `signal` (`"TERM"`, `"KILL"`, …) to `pid`, or to the process group `pid` leads when
/// `group` is set; whether `kill` succeeded.
pub fn signal(pid: u32, signal: &str, group: bool) -> bool {
    let target = if group {
        format!("-{pid}")
    } else {
        pid.to_string()
    };
    Command::new("kill")
        .args([&format!("-{signal}"), "--", &target])
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs `command` to its end and asserts it succeeded (its stderr in the message); its output.
pub fn run_ok(command: &mut Command) -> Output {
    let out = command.output().expect("the command starts");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
