//! `pulmo send`: C-STORE files (and folders, recursively) to a node, one line per file.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use pulmo::config::Config;
use pulmo::net::scu::{self, StoreOutcome};

pub fn run(
    paths: &[PathBuf],
    target: &str,
    calling_ae: Option<String>,
    config: &Config,
) -> anyhow::Result<ExitCode> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            files.extend(
                pulmo::pipeline::scan::files_under(p)
                    .with_context(|| format!("reading {}", p.display()))?,
            );
        } else {
            files.push(p.clone());
        }
    }
    if files.is_empty() {
        anyhow::bail!("nothing to send: no files in {paths:?}");
    }
    let calling = calling_ae.unwrap_or_else(|| config.node.ae_title.clone());
    // No association at all (refused, nothing listening, no context accepted) fails every file,
    // each with the reason.
    let outcomes = scu::store(
        target,
        &calling,
        &files,
        Duration::from_secs(config.delivery.timeout_s),
    )
    .unwrap_or_else(|e| {
        let reason = e.to_string();
        files
            .iter()
            .map(|_| StoreOutcome::Failed {
                reason: reason.clone(),
                permanent: true,
            })
            .collect()
    });
    let mut failed = 0;
    for (f, o) in files.iter().zip(&outcomes) {
        match o {
            StoreOutcome::Stored { status: 0 } => println!("stored  {}", f.display()),
            StoreOutcome::Stored { status } => {
                println!("stored  {} (warning 0x{status:04X})", f.display())
            }
            StoreOutcome::Failed { reason, .. } => {
                failed += 1;
                println!("FAILED  {}: {reason}", f.display());
            }
        }
    }
    println!(
        "{} of {} files stored at {target}",
        files.len() - failed,
        files.len()
    );
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
