//! Taskward's test kit: what the brain's and the agent's integration tests and benches need to
//! run the real thing — the `taskward-brain` and `taskward-agent` binaries as processes
//! ([`BrainProcess`], [`AgentHome`]), real Celery workers on Redis or RabbitMQ ([`CeleryStack`]), a Redis of the test's own
//! ([`RedisServer`], plain or TLS), polling
//! with a deadline ([`wait_for`], [`Wait`]), an authenticated JSON client ([`Api`]), a blocking
//! HTTP/1.1 client for code without a runtime ([`http1`]), fresh PostgreSQL databases
//! ([`PgDatabase`]), a CA made in the test for TLS ([`TestCa`]), a WebDriver client for headless Chromium ([`browser::Browser`]) and inputs
//! for property tests ([`fuzz`]).
//!
//! Dev-only: a `[dev-dependencies]` entry of the brain and the agent, never a normal one. It
//! does not depend on either crate (the brain's own tests use it; a cycle through the brain's
//! library would compile that library twice); tests that read the brain's store do so with
//! the brain's library themselves.

pub mod agent;
pub mod api;
pub mod bins;
pub mod brain;
pub mod browser;
pub mod celery;
pub mod fuzz;
pub mod http1;
pub mod pg;
pub mod process;
pub mod redis;
pub mod tls;
pub mod wait;

pub use agent::AgentHome;
pub use api::Api;
pub use bins::{brain_bin, target_dir};
pub use brain::{BrainBuilder, BrainProcess};
pub use celery::{Broker, CeleryStack, CeleryWorker, rabbitmqctl};
pub use pg::PgDatabase;
pub use process::{Proc, free_port};
pub use redis::{RedisServer, RedisTls};
pub use tls::TestCa;
pub use wait::{Wait, wait_for};
