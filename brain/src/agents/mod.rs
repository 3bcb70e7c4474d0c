//! Agents as the domain sees them: registering, enrolling and deleting them ([`registry`]),
//! and removing the ones that went silent ([`stale`]). The link itself lives in `hub`.

pub mod registry;
pub mod stale;
