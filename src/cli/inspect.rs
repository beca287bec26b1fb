//! `pulmo inspect`: what pulmo would measure in a folder of DICOM files, and why.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use serde_json::json;

use pulmo::config::Config;
use pulmo::pipeline::{assemble, scan, select};

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Folder of DICOM files (read recursively)
    input: PathBuf,
    /// Machine-readable output
    #[arg(long)]
    json: bool,
}

pub fn run(a: InspectArgs, config: &Config) -> anyhow::Result<ExitCode> {
    let scan = scan::scan(&a.input)?;
    let studies = select::by_study(scan.frames);
    let mut report = Vec::new();
    let mut all_ok = !studies.is_empty();
    for (study_uid, frames) in studies {
        match select::select(frames, &config.selection) {
            Ok(sel) => {
                let c = &sel.chosen;
                let volume = assemble::assemble(c);
                let (volume_json, ok) = match &volume {
                    Ok(v) => {
                        let (min, max) =
                            v.hu.iter()
                                .fold((i16::MAX, i16::MIN), |(a, b), &x| (a.min(x), b.max(x)));
                        let mean = v.hu.iter().map(|&x| f64::from(x)).sum::<f64>()
                            / v.hu.len().max(1) as f64;
                        (
                            json!({"geometry": v.geometry, "hu_min": min, "hu_max": max, "hu_mean": mean}),
                            true,
                        )
                    }
                    Err(e) => (json!({"error": e.to_string()}), false),
                };
                all_ok &= ok;
                report.push(json!({
                    "study_instance_uid": study_uid,
                    "selected": {
                        "series_instance_uid": c.series_uid,
                        "series_number": c.series_number,
                        "description": c.description,
                        "slices": c.frames.len(),
                        "filled_slices": c.filled(),
                        "slice_thickness_mm": c.slice_thickness,
                        "transfer_syntax": c.present().next().map(|f| f.transfer_syntax.clone()),
                    },
                    "volume": volume_json,
                    "skipped": sel.skipped,
                }));
            }
            Err(e) => {
                all_ok = false;
                let skipped = match &e {
                    select::SelectError::NoSuitableSeries { skipped, .. } => {
                        serde_json::to_value(skipped)?
                    }
                    select::SelectError::NoImages | select::SelectError::Unreadable { .. } => {
                        json!([])
                    }
                };
                report.push(json!({
                    "study_instance_uid": study_uid,
                    "error": e.to_string(),
                    "skipped": skipped,
                }));
            }
        }
    }
    let rejected: Vec<_> = scan
        .rejected
        .iter()
        .map(|r| json!({"path": r.path.display().to_string(), "reason": r.reason}))
        .collect();
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"studies": report, "rejected_files": rejected}))?
        );
    } else {
        if report.is_empty() {
            println!("no DICOM images found in {}", a.input.display());
        }
        for s in &report {
            println!("study {}", s["study_instance_uid"].as_str().unwrap_or("?"));
            if let Some(e) = s.get("error") {
                println!("  cannot be measured: {}", e.as_str().unwrap_or("?"));
            } else {
                let c = &s["selected"];
                println!(
                    "  selected: series {} \"{}\", {} slices, {} mm ({})",
                    c["series_number"],
                    c["description"].as_str().unwrap_or(""),
                    c["slices"],
                    c["slice_thickness_mm"],
                    c["transfer_syntax"].as_str().unwrap_or("")
                );
                let v = &s["volume"];
                if let Some(e) = v.get("error") {
                    println!("  volume: cannot be built: {}", e.as_str().unwrap_or("?"));
                } else {
                    let g = &v["geometry"];
                    println!(
                        "  volume: {} × {} × {} voxels, spacing {} mm, HU {} to {} (mean {:.0})",
                        g["columns"],
                        g["rows"],
                        g["slices"],
                        g["spacing"],
                        v["hu_min"],
                        v["hu_max"],
                        v["hu_mean"].as_f64().unwrap_or(0.0)
                    );
                }
            }
            for k in s["skipped"].as_array().into_iter().flatten() {
                println!(
                    "  skipped: series {} \"{}\" ({} images): {}",
                    k["series_number"],
                    k["description"].as_str().unwrap_or(""),
                    k["images"],
                    k["reason"].as_str().unwrap_or("")
                );
            }
        }
        for r in &rejected {
            println!(
                "  file not read: {}: {}",
                r["path"].as_str().unwrap_or(""),
                r["reason"].as_str().unwrap_or("")
            );
        }
    }
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
