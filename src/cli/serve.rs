//! `pulmo serve`: the DICOM node.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;

use pulmo::config::Config;
use pulmo::net::scp::{self, Stats};
use pulmo::store::Store;

pub fn run(config: &Config) -> anyhow::Result<ExitCode> {
    let store =
        Arc::new(Store::open(&config.storage.data_dir).with_context(|| {
            format!("opening the store in {}", config.storage.data_dir.display())
        })?);
    let counts = store.counts()?;
    tracing::info!(
        studies = counts.studies,
        instances = counts.instances,
        data_dir = %config.storage.data_dir.display(),
        "store opened"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
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
        scp::serve(
            config.node.clone(),
            store,
            Arc::new(Stats::default()),
            shutdown,
        )
        .await
    })?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}
