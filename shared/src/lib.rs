//! Types and rules that the Taskward brain and agent must agree on byte for byte.
//!
//! # Layout
//! - [`secret`]: bearer secrets (API tokens, enrollment tokens): how they are generated, how they
//!   are hashed for storage, and a `Debug` that never prints them. Both sides need the same
//!   hashing because the agent presents secrets the brain only ever stores hashed.
//!
//! Later issues add the wire protocol, the command kinds and the audit-log encoding here, so that
//! both binaries compile against one definition.

pub mod secret;
