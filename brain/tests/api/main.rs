//! Integration tests of the brain, one binary (one link) for all of them. Every store-touching
//! test runs on SQLite and on PostgreSQL (see `support::both_backends!`).

mod access;
mod audit_log;
mod audit_verify;
mod audit_watch;
mod binary;
mod cleanup;
mod commands;
mod connections;
mod dashboard;
mod errors;
mod first_agent;
mod hostile;
mod openapi;
mod props;
mod resources;
mod rotation;
mod runtime;
mod schedules;
mod shutdown;
mod store;
mod support;
mod tasks;
mod tokens;
