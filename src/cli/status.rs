//! `pulmo status`: studies, jobs and deliveries from the node's index, with reasons.

use std::process::ExitCode;

use anyhow::Context;
use serde::Serialize;

use pulmo::config::Config;
use pulmo::net::scu::sop_class_name;
use pulmo::store::jobs::{Job, StudyRow};
use pulmo::store::{Counts, Delivery, Store};

/// Rows shown of each table; `--json` has the same limit.
const LIMIT: usize = 200;

#[derive(Serialize)]
struct Status {
    counts: Counts,
    studies: Vec<StudyRow>,
    jobs: Vec<Job>,
    deliveries: Vec<Delivery>,
}

fn age(ms: i64) -> String {
    let s = (pulmo::store::now_ms() - ms).max(0) / 1000;
    match s {
        0..60 => format!("{s}s ago"),
        60..3600 => format!("{}m ago", s / 60),
        3600..86_400 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86_400),
    }
}

pub fn run(json: bool, config: &Config) -> anyhow::Result<ExitCode> {
    let store = Store::open_existing(&config.storage.data_dir)?;
    let status = Status {
        counts: store.counts()?,
        studies: store.studies(LIMIT)?,
        jobs: store.jobs(LIMIT)?,
        deliveries: store.deliveries(LIMIT)?,
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&status).context("encoding the status")?
        );
        return Ok(ExitCode::SUCCESS);
    }
    let c = status.counts;
    println!(
        "{} studies, {} series, {} instances in {}",
        c.studies,
        c.series,
        c.instances,
        config.storage.data_dir.display()
    );
    if c.in_journal > 0 {
        println!(
            "{} instances durable in the journal, their spool files still to be written",
            c.in_journal
        );
    }
    println!(
        "\nSTUDIES\n{:<64} {:>9} {:<11} {:>5}  last received",
        "study", "instances", "state", "job"
    );
    for s in &status.studies {
        println!(
            "{:<64} {:>9} {:<11} {:>5}  {}",
            s.study_uid,
            s.instances,
            s.state,
            s.latest_job.map_or("-".into(), |j| j.to_string()),
            age(s.last_received_ms)
        );
    }
    println!(
        "\nJOBS\n{:>5} {:<11} {:>9} {:>8}  {:<12} study / reason",
        "job", "state", "instances", "attempts", "updated"
    );
    for j in &status.jobs {
        println!(
            "{:>5} {:<11} {:>9} {:>8}  {:<12} {}",
            j.id,
            j.state.as_str(),
            j.instances,
            j.attempts,
            age(j.updated_ms),
            j.study_uid
        );
        if let Some(r) = &j.reason {
            println!("{:>50} {r}", "reason:");
        }
    }
    println!(
        "\nDELIVERIES\n{:>5} {:>5} {:<12} {:<10} {:>8}  object",
        "id", "job", "destination", "state", "attempts"
    );
    for d in &status.deliveries {
        println!(
            "{:>5} {:>5} {:<12} {:<10} {:>8}  {} {}",
            d.id,
            d.job_id,
            d.destination,
            d.state.as_str(),
            d.attempts,
            sop_class_name(&d.sop_class_uid),
            d.sop_instance_uid
        );
        if let Some(e) = &d.last_error {
            let when = if d.state == pulmo::store::DeliveryState::Pending {
                format!(
                    " (next try in {} s)",
                    ((d.next_attempt_ms - pulmo::store::now_ms()).max(0) + 999) / 1000
                )
            } else {
                String::new()
            };
            println!("{:>50} {e}{when}", "last error:");
        }
    }
    Ok(ExitCode::SUCCESS)
}
