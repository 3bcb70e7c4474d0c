//! Types and rules that the Taskward brain and agent must agree on byte for byte.
//!
//! # Layout
//! - [`secret`]: bearer secrets (API tokens, enrollment tokens, agent credentials):
//!   generation, hashing for storage, a `Debug` that never prints them, and 0600 files.
//! - [`crypto`]: key ids, key generation, purge confirm tokens (HMAC).
//! - [`audit`]: the audit log's byte formats (statements, row hashes, signatures,
//!   checkpoints) and [`audit::verify`], the offline verifier.
//! - [`protocol`]: the agent link's frames, the signed hello and signed results.
//! - [`events`]: normalized task, worker and queue updates, and the numbered batches they travel in.
//! - [`command`]: the closed set of command kinds, their typed payloads and their bounds.

// The types both binaries and outside auditors agree on: every public item says why it
// exists. (The binaries' internals are documented where a comment says more than the name.)
#![warn(missing_docs)]

pub mod audit;
pub mod command;
pub mod crypto;
pub mod events;
pub mod protocol;
pub mod secret;
pub mod spelling;
