//! Agents as the domain sees them: registering, enrolling and deleting them ([`registry`]),
//! the first agent a new site is handed on start ([`first`]), and removing the ones that went
//! silent ([`stale`]). The link itself lives in `hub`.

pub mod first;
pub mod registry;
pub mod stale;
