//! Prometheus metrics: one registry per app, rendered in text format on `/metrics`.

use std::time::Duration;

use axum::http::Method;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::store::Store;

type Labels = Vec<(&'static str, String)>;

/// The registry, and the HTTP metrics the router records through [`Metrics::record_request`].
pub struct Metrics {
    registry: Registry,
    requests: Family<Labels, Counter>,
    latency: Family<Labels, Histogram>,
    events: Family<Labels, Counter>,
    dropped: Family<Labels, Gauge>,
    rejected: Family<Labels, Counter>,
    alerts: Family<Labels, Counter>,
    audit_chain_ok: Family<Labels, Gauge>,
    audit_first_bad_seq: Family<Labels, Gauge>,
    broker_up: Family<Labels, Gauge>,
}

impl Metrics {
    /// Creates the registry with HTTP and store metrics.
    pub fn new(store: &Store) -> Metrics {
        let mut registry = Registry::with_prefix("taskward");
        let requests = Family::<Labels, Counter>::default();
        let latency = Family::<Labels, Histogram>::new_with_constructor(|| {
            // 0.5 ms .. ~4 s: API calls are expected in the low milliseconds.
            Histogram::new(exponential_buckets(0.0005, 2.0, 14))
        });
        registry.register(
            "http_requests",
            "HTTP requests by route and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            latency.clone(),
        );
        registry.register(
            "store_operations",
            "Store operations by name and outcome",
            store.metrics().clone(),
        );
        let events = Family::<Labels, Counter>::default();
        let dropped = Family::<Labels, Gauge>::default();
        registry.register(
            "events_ingested",
            "Task, worker and queue updates stored, by agent",
            events.clone(),
        );
        registry.register(
            "dropped_events",
            "Events an agent reports it dropped (spool overflow, lost subscriber messages), by agent",
            dropped.clone(),
        );
        let rejected = Family::<Labels, Counter>::default();
        registry.register(
            "events_rejected",
            "Updates refused and skipped (values that cannot be true, or refused by the store even alone), so the agent's later events are not held up, by agent",
            rejected.clone(),
        );
        let alerts = Family::<Labels, Counter>::default();
        registry.register(
            "schedule_alerts",
            "Failed health checks (workers that did not answer a ping), by project id and schedule id",
            alerts.clone(),
        );
        let audit_chain_ok = Family::<Labels, Gauge>::default();
        registry.register(
            "audit_chain_ok",
            "1 while the audit chain verifies, 0 once a bad row was found, by chain",
            audit_chain_ok.clone(),
        );
        let audit_first_bad_seq = Family::<Labels, Gauge>::default();
        registry.register(
            "audit_first_bad_seq",
            "The first bad row of a broken audit chain (0 while it verifies), by chain",
            audit_first_bad_seq.clone(),
        );
        let broker_up = Family::<Labels, Gauge>::default();
        registry.register(
            "agent_broker_up",
            "1 while a connected agent reaches its engine's broker, 0 while it does not, by agent id (absent while the agent is offline)",
            broker_up.clone(),
        );
        Metrics {
            registry,
            broker_up,
            audit_chain_ok,
            audit_first_bad_seq,
            requests,
            latency,
            events,
            dropped,
            rejected,
            alerts,
        }
    }

    /// Counts one answered request. Every label is from a bounded set, so no client can grow
    /// the registry (and the brain's memory) by inventing values: the method is one of the
    /// standard ones or `other`, the route is the matched route template or `unmatched`.
    pub fn record_request(
        &self,
        method: &Method,
        route: Option<&str>,
        status: u16,
        elapsed: Duration,
    ) {
        let method = method_label(method);
        let route = route.unwrap_or("unmatched").to_owned();
        self.requests
            .get_or_create(&vec![
                ("method", method.to_owned()),
                ("route", route.clone()),
                ("status", status.to_string()),
            ])
            .inc();
        self.latency
            .get_or_create(&vec![("method", method.to_owned()), ("route", route)])
            .observe(elapsed.as_secs_f64());
    }

    /// Counts a stored event batch and the agent's cumulative drops.
    pub fn record_ingest(&self, agent: &str, events: u64, dropped_total: u64) {
        let labels = vec![("agent", agent.to_owned())];
        self.events.get_or_create(&labels).inc_by(events);
        self.dropped
            .get_or_create(&labels)
            .set(dropped_total as i64);
    }

    /// Counts updates the store refused even alone.
    pub fn record_rejected(&self, agent: &str, updates: u64) {
        self.rejected
            .get_or_create(&vec![("agent", agent.to_owned())])
            .inc_by(updates);
    }

    /// Publishes whether `agent` reaches its broker; `None` removes the series (the agent is
    /// offline). Only authenticated sessions call this, so the label set is bounded by the
    /// enrolled agents.
    pub fn record_broker(&self, agent: &str, up: Option<bool>) {
        let labels = vec![("agent", agent.to_owned())];
        match up {
            Some(up) => {
                self.broker_up.get_or_create(&labels).set(i64::from(up));
            }
            None => {
                self.broker_up.remove(&labels);
            }
        }
    }

    /// Counts a health-check alert.
    pub fn record_alert(&self, project: &str, schedule: &str) {
        let labels = vec![
            ("project_id", project.to_owned()),
            ("schedule", schedule.to_owned()),
        ];
        self.alerts.get_or_create(&labels).inc();
    }

    /// Publishes a chain's verification status: `first_bad_seq` is `None` while it verifies.
    pub fn record_audit_chain(&self, chain: &str, first_bad_seq: Option<u64>) {
        let labels = vec![("chain", chain.to_owned())];
        self.audit_chain_ok
            .get_or_create(&labels)
            .set(i64::from(first_bad_seq.is_none()));
        self.audit_first_bad_seq
            .get_or_create(&labels)
            .set(first_bad_seq.unwrap_or(0) as i64);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

/// The label of a request method: the standard methods by name, anything invented as `other`.
fn method_label(method: &Method) -> &'static str {
    const KNOWN: [(Method, &str); 9] = [
        (Method::GET, "GET"),
        (Method::POST, "POST"),
        (Method::PUT, "PUT"),
        (Method::DELETE, "DELETE"),
        (Method::PATCH, "PATCH"),
        (Method::HEAD, "HEAD"),
        (Method::OPTIONS, "OPTIONS"),
        (Method::CONNECT, "CONNECT"),
        (Method::TRACE, "TRACE"),
    ];
    KNOWN
        .iter()
        .find(|(known, _)| known == method)
        .map_or("other", |(_, label)| label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invented_methods_share_one_label() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::from_bytes(b"FOO").unwrap()), "other");
        assert_eq!(method_label(&Method::from_bytes(b"BAR").unwrap()), "other");
    }
}
