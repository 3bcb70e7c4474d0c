//! Prometheus metrics: one registry per app, rendered in text format on `/metrics`.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::app::AppState;
use crate::store::Store;

type Labels = Vec<(&'static str, String)>;

/// The registry and the HTTP metrics recorded by [`track_requests`].
pub struct Metrics {
    registry: Registry,
    requests: Family<Labels, Counter>,
    latency: Family<Labels, Histogram>,
    events: Family<Labels, Counter>,
    dropped: Family<Labels, Gauge>,
    alerts: Family<Labels, Counter>,
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
        let alerts = Family::<Labels, Counter>::default();
        registry.register(
            "schedule_alerts",
            "Failed health checks (workers that did not answer a ping), by project id and schedule id",
            alerts.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            events,
            dropped,
            alerts,
        }
    }

    /// Counts a stored event batch and the agent's cumulative drops.
    pub fn record_ingest(&self, agent: &str, events: u64, dropped_total: u64) {
        let labels = vec![("agent", agent.to_owned())];
        self.events.get_or_create(&labels).inc_by(events);
        self.dropped
            .get_or_create(&labels)
            .set(dropped_total as i64);
    }

    /// Counts a health-check alert.
    pub fn record_alert(&self, project: &str, schedule: &str) {
        let labels = vec![
            ("project_id", project.to_owned()),
            ("schedule", schedule.to_owned()),
        ];
        self.alerts.get_or_create(&labels).inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

/// Middleware counting requests by matched route (not raw path, so ids do not explode the
/// label set) and status.
pub async fn track_requests(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().to_string();
    let started = Instant::now();
    let response = next.run(req).await;
    let metrics = &state.metrics;
    metrics
        .requests
        .get_or_create(&vec![
            ("method", method.clone()),
            ("route", route.clone()),
            ("status", response.status().as_u16().to_string()),
        ])
        .inc();
    metrics
        .latency
        .get_or_create(&vec![("method", method), ("route", route)])
        .observe(started.elapsed().as_secs_f64());
    response
}
