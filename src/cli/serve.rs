//! `pulmo serve`: the DICOM node. The SCP receives into the store; job workers turn stable
//! studies into results; the delivery loop sends them; `/healthz` and `/metrics` on the side.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;

use pulmo::config::Config;
use pulmo::metrics::{self, Metrics};
use pulmo::net::{deliver, scp};
use pulmo::pipeline::job::{self, Analysis, StudyProcessor};
use pulmo::pipeline::worker::Isolated;
use pulmo::store::{JournalConfig, Store};

/// How often idle workers look for stable studies and due deliveries.
const POLL: Duration = Duration::from_millis(500);

async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Run `work` on a blocking thread; give up waiting (it finishes in the background, its state
/// is resumed at the next start) when the node is stopping.
async fn blocking_or_stop<T: Send + 'static>(
    stop: &watch::Receiver<bool>,
    work: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let task = tokio::task::spawn_blocking(work);
    tokio::select! {
        r = task => match r {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::error!(error = %e, "background task failed");
                None
            }
        },
        _ = stopped(stop.clone()) => None,
    }
}

async fn worker(
    store: Arc<Store>,
    processor: Arc<dyn StudyProcessor>,
    config: Arc<Config>,
    metrics: Arc<Metrics>,
    stop: watch::Receiver<bool>,
) {
    let stable_ms = (config.storage.stable_after_s * 1000) as i64;
    let destinations: Arc<Vec<String>> =
        Arc::new(config.destinations.iter().map(|d| d.name.clone()).collect());
    while !*stop.borrow() {
        let (s, p, d, m) = (
            store.clone(),
            processor.clone(),
            destinations.clone(),
            metrics.clone(),
        );
        let ran = blocking_or_stop(&stop, move || {
            s.promote_stable(stable_ms)?;
            job::run_one(&s, p.as_ref(), &d, stable_ms, m.as_ref())
        })
        .await;
        match ran {
            Some(Ok(true)) => continue,
            Some(Ok(false)) | None => {}
            Some(Err(e)) => tracing::error!(error = %e, "job runner"),
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = stopped(stop.clone()) => {}
        }
    }
}

async fn delivery(
    store: Arc<Store>,
    config: Arc<Config>,
    metrics: Arc<Metrics>,
    stop: watch::Receiver<bool>,
) {
    while !*stop.borrow() {
        let (s, c, m) = (store.clone(), config.clone(), metrics.clone());
        let r = blocking_or_stop(&stop, move || {
            deliver::deliver_due(&s, &c.destinations, &c.node.ae_title, &c.delivery, &m)
        })
        .await;
        if let Some(Err(e)) = r {
            tracing::error!(error = %e, "delivery loop");
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = stopped(stop.clone()) => {}
        }
    }
}

pub fn run(config: &Config) -> anyhow::Result<ExitCode> {
    let store =
        Arc::new(Store::open(&config.storage.data_dir).with_context(|| {
            format!("opening the store in {}", config.storage.data_dir.display())
        })?);
    store
        .start_journal(JournalConfig {
            max_segments: config.storage.journal_segments as usize,
            segment_bytes: u64::from(config.storage.journal_segment_mib) << 20,
        })
        .context("starting the journal")?;
    let counts = store.counts()?;
    let resumed = store.resume_jobs()?;
    tracing::info!(
        studies = counts.studies,
        instances = counts.instances,
        resumed_jobs = resumed,
        data_dir = %config.storage.data_dir.display(),
        "store opened"
    );
    let metrics = Arc::new(Metrics::new());
    // Checked here, so that a template that does not load stops the node at its start.
    Analysis::new(config.clone()).context("loading the SR template")?;
    let exe = std::env::current_exe().context("finding the pulmo executable")?;
    let analysis = Isolated::new(
        exe,
        config,
        config.storage.data_dir.join("analysis-config.toml"),
    )
    .context("writing the analysis processes' configuration")?;
    let config = Arc::new(config.clone());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let served = runtime.block_on(async {
        let http_addr = format!("{}:{}", config.http.bind, config.http.port);
        let http = tokio::net::TcpListener::bind(&http_addr)
            .await
            .with_context(|| format!("cannot listen for HTTP on {http_addr}"))?;
        tracing::info!(addr = %http_addr, "/healthz and /metrics");
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut background = tokio::task::JoinSet::new();
        {
            let (s, m, stop) = (store.clone(), metrics.clone(), stop_rx.clone());
            background.spawn(async move {
                if let Err(e) = metrics::serve(http, s, m, stopped(stop)).await {
                    tracing::error!(error = %e, "HTTP endpoint stopped");
                }
            });
        }
        let processor: Arc<dyn StudyProcessor> = Arc::new(analysis);
        for _ in 0..config.jobs.workers {
            background.spawn(worker(
                store.clone(),
                processor.clone(),
                config.clone(),
                metrics.clone(),
                stop_rx.clone(),
            ));
        }
        background.spawn(delivery(
            store.clone(),
            config.clone(),
            metrics.clone(),
            stop_rx.clone(),
        ));
        let shutdown = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async {
                    match term.as_mut() {
                        Some(t) => { t.recv().await; }
                        None => std::future::pending::<()>().await,
                    }
                } => {}
            }
            tracing::info!("stop requested");
        };
        let served = scp::serve(
            config.node.clone(),
            store.clone(),
            metrics.clone(),
            shutdown,
        )
        .await;
        let _ = stop_tx.send(true);
        let drained = tokio::time::timeout(Duration::from_secs(10), async {
            while background.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            background.abort_all();
        }
        anyhow::Ok(served?)
    });
    // An analysis or a delivery still running on a blocking thread is abandoned: its job or
    // delivery is resumed from the index at the next start.
    runtime.shutdown_background();
    served?;
    let requeued = store.requeue_running_jobs()?;
    store.mark_clean_shutdown()?;
    tracing::info!(requeued_jobs = requeued, "stopped");
    Ok(ExitCode::SUCCESS)
}
