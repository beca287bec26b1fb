//! `pulmo retry`: put parked (failed) deliveries back in the outbox; a running node sends them
//! at its next pass.

use std::process::ExitCode;

use pulmo::config::Config;
use pulmo::store::Store;
use pulmo::store::outbox::Retry;

pub fn run(id: Option<i64>, all_failed: bool, config: &Config) -> anyhow::Result<ExitCode> {
    let which = match (id, all_failed) {
        (Some(id), false) => Retry::One(id),
        (None, true) => Retry::AllFailed,
        _ => anyhow::bail!("give a delivery id (see `pulmo status`) or --all-failed, not both"),
    };
    let store = Store::open_existing(&config.storage.data_dir)?;
    let n = store.retry_deliveries(which)?;
    println!("{n} deliveries queued again");
    Ok(ExitCode::SUCCESS)
}
