//! The application state every handler sees.

use std::ops::Deref;
use std::sync::Arc;

use crate::metrics::Metrics;
use crate::store::Store;

/// Settings of a running server that handlers consult.
#[derive(Debug, Clone, Default)]
pub struct ServerSettings {
    /// Serve `/metrics` without a token (for scrapers on a trusted network).
    pub metrics_public: bool,
}

/// Everything a request may need: the store, settings and metrics.
pub struct App {
    /// The database.
    pub store: Store,
    /// Server settings.
    pub settings: ServerSettings,
    /// Prometheus registry and HTTP counters.
    pub metrics: Metrics,
}

impl App {
    /// Builds the app and registers the store's counters with the metrics registry.
    pub fn new(store: Store, settings: ServerSettings) -> App {
        let metrics = Metrics::new(&store);
        App {
            store,
            settings,
            metrics,
        }
    }
}

/// Cheap-to-clone handle on the [`App`], the state type of the router.
#[derive(Clone)]
pub struct AppState(pub Arc<App>);

impl Deref for AppState {
    type Target = App;

    fn deref(&self) -> &App {
        &self.0
    }
}
