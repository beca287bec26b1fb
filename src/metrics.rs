//! Observability: the node's Prometheus metrics and the HTTP endpoint that serves them with
//! `/healthz` (loopback by default, `[http]` in the config).
//!
//! Counters are kept in memory since the start of the process; the jobs and deliveries by state
//! are read from the index at each scrape, so they are right after a restart too.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::store::Store;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Stage {
    pub stage: String,
}

type Histograms = Family<Stage, Histogram, fn() -> Histogram>;

fn stage_histogram() -> Histogram {
    // 10 ms to about 80 s.
    Histogram::new(exponential_buckets(0.01, 2.0, 14))
}

pub struct Metrics {
    registry: Registry,
    /// accepted, rejected
    pub associations: Family<Outcome, Counter>,
    /// stored, duplicate, failed
    pub instances: Family<Outcome, Counter>,
    pub bytes_received: Counter,
    /// How stored instances were made durable: journal, file
    pub instances_durable: Family<Outcome, Counter>,
    /// delivered, retry, parked
    pub delivery_attempts: Family<Outcome, Counter>,
    pub stage_seconds: Histograms,
    jobs: Family<StateLabel, Gauge>,
    deliveries: Family<StateLabel, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("pulmo");
        let associations = Family::<Outcome, Counter>::default();
        let instances = Family::<Outcome, Counter>::default();
        let bytes_received = Counter::default();
        let instances_durable = Family::<Outcome, Counter>::default();
        let delivery_attempts = Family::<Outcome, Counter>::default();
        let stage_seconds: Histograms = Family::new_with_constructor(stage_histogram);
        let jobs = Family::<StateLabel, Gauge>::default();
        let deliveries = Family::<StateLabel, Gauge>::default();
        registry.register(
            "associations",
            "DICOM associations requested, by outcome (accepted, rejected)",
            associations.clone(),
        );
        registry.register(
            "instances_received",
            "C-STORE requests received, by outcome (stored, duplicate, failed)",
            instances.clone(),
        );
        registry.register(
            "received_bytes",
            "Data set bytes received in C-STORE requests",
            bytes_received.clone(),
        );
        registry.register(
            "instances_durable",
            "Instances stored, by how they were made durable before Success (journal: a record \
             in a preallocated journal segment; file: a file fsynced on its own)",
            instances_durable.clone(),
        );
        registry.register(
            "delivery_attempts",
            "Attempts to deliver a result object, by outcome (delivered, retry, parked)",
            delivery_attempts.clone(),
        );
        registry.register(
            "stage_seconds",
            "Duration of each analysis stage of a study job",
            stage_seconds.clone(),
        );
        registry.register("jobs", "Study jobs by state", jobs.clone());
        registry.register(
            "deliveries",
            "Outbox rows by state (pending, delivered, failed)",
            deliveries.clone(),
        );
        Metrics {
            registry,
            associations,
            instances,
            bytes_received,
            instances_durable,
            delivery_attempts,
            stage_seconds,
            jobs,
            deliveries,
        }
    }

    pub fn count(family: &Family<Outcome, Counter>, outcome: &'static str) {
        family.get_or_create(&Outcome { outcome }).inc();
    }

    pub fn stage(&self, stage: &str, seconds: f64) {
        self.stage_seconds
            .get_or_create(&Stage {
                stage: stage.to_string(),
            })
            .observe(seconds);
    }

    /// The text exposition, with the index's current jobs and deliveries by state.
    pub fn render(&self, store: &Store) -> Result<String, String> {
        let jobs = store.jobs_by_state().map_err(|e| e.to_string())?;
        for (state, n) in jobs {
            self.jobs
                .get_or_create(&StateLabel {
                    state: state.as_str(),
                })
                .set(n as i64);
        }
        let deliveries = store.deliveries_by_state().map_err(|e| e.to_string())?;
        for (state, n) in deliveries {
            self.deliveries
                .get_or_create(&StateLabel {
                    state: state.as_str(),
                })
                .set(n as i64);
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .map_err(|e| e.to_string())?;
        Ok(out)
    }
}

type Shared = (Arc<Store>, Arc<Metrics>);

async fn metrics(State((store, metrics)): State<Shared>) -> impl IntoResponse {
    match tokio::task::spawn_blocking(move || metrics.render(&store)).await {
        Ok(Ok(text)) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        ),
        Ok(Err(e)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "text/plain")],
            e,
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain")],
            e.to_string(),
        ),
    }
}

async fn healthz(State((store, _)): State<Shared>) -> impl IntoResponse {
    match tokio::task::spawn_blocking(move || store.healthy()).await {
        Ok(true) => (StatusCode::OK, "ok\n"),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "index not answering\n"),
    }
}

/// Serve `/healthz` and `/metrics` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(self::metrics))
        .with_state((store, metrics));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
