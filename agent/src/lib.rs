//! The Taskward agent: one per host, beside the workers. It links to the brain over a
//! WebSocket, checks every command it is sent, runs it through its engine adapter at most once,
//! and signs the result.
//!
//! # Layout
//! - [`cli`]: `taskward-agent enroll | run [--enroll] | status`.
//! - [`enroll`]: enrollment, shared by `enroll` and `run --enroll`: local checks before the
//!   one-time token is spent, then the identity and config files.
//! - [`config`]: the TOML config file `enroll` writes and `run` reads.
//! - [`identity`]: the agent's own key pair and link credential (files, mode 0600).
//! - [`trust`]: the brain keys the agent pinned at enrollment, and rotations learned from them.
//! - [`checks`]: the checks a command must pass before it runs.
//! - [`seen`]: the durable seen-store: a command id is recorded (fsync'ed) before it runs, so
//!   it never runs twice, and a crash mid-command is reported as `interrupted`.
//! - [`spool`]: the on-disk queue of numbered event batches, kept until the brain acks them.
//! - [`brain_url`]: the brain's address, and the rule against plain HTTP beyond loopback.
//! - [`tls`]: rustls settings of the link (roots, `ca_file`, certificate pin).
//! - [`link`]: the connection to the brain: session, reconnect with backoff, outbox of results.
//! - [`engines`]: the engine adapter trait and its adapters.
//! - [`state_lock`]: one running agent per state directory (a second `run` refuses to start).
//! - [`status`]: the local state `taskward-agent status` prints.
//! - [`logging`]: log lines on stderr, text or JSON.
//! - [`clock`]: the wall clock in ms, as the protocol and the local files carry it.

pub mod brain_url;
pub mod checks;
pub mod cli;
pub mod clock;
pub mod config;
pub mod engines;
pub mod enroll;
pub mod identity;
pub mod link;
pub mod logging;
pub mod seen;
pub mod spool;
pub mod state_lock;
pub mod status;
pub mod tls;
pub mod trust;
