//! Commands, the product's central operation, as the domain sees them: whoever asks (an
//! operator through the API or the dashboard, a schedule firing), a command is parsed and
//! checked the same way ([`request`]), minted the same way ([`issue`]: idempotency, the
//! agent's project, a purge's confirmation, a retry's arguments, then the signed
//! `command.issued` row), and moves through one status machine ([`lifecycle`]) whether the
//! move comes from the agent's session, the timeout sweeper or a late result.
//!
//! Everything here runs inside the caller's write transaction (it takes `conn`) and refuses
//! with a [`Refusal`](crate::refusal::Refusal), so a refused command leaves nothing behind.

pub mod issue;
pub mod lifecycle;
pub mod list;
pub mod request;
pub mod retry;

pub use issue::{Issue, Issued, issue_in};
pub use lifecycle::{Event, Transition, record};
pub use request::{parse_request, request_hash};
