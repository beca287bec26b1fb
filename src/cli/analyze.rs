//! `pulmo analyze`: a folder of DICOM files in, findings (and later the result objects) out.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use pulmo::config::Config;
use pulmo::infer::ModelSet;
use pulmo::pipeline::analyze::{self, LogProgress, Progress};

/// Exit status of a study that was analysed but failed a quality check.
pub const EXIT_QC_WARNINGS: u8 = 3;

#[derive(Debug, Args)]
pub struct AnalyzeArgs {
    /// Folder of DICOM files of one study (read recursively)
    input: PathBuf,
    /// Output folder: findings.json, seg-lobes.dcm, seg-opacities.dcm, sr.dcm, overlay/ (the
    /// Secondary Capture series, when `[output] overlay_series` is on)
    #[arg(long)]
    out: PathBuf,
    /// Also write the label volumes on the CT's grid as lobes.nii.gz and opacities.nii.gz (the
    /// phantom's truth format), for evaluation and for tools that read NIfTI
    #[arg(long)]
    masks: bool,
}

struct Bars {
    bar: Option<ProgressBar>,
}

impl Progress for Bars {
    fn stage(&mut self, name: &'static str) {
        let bar = ProgressBar::new(1);
        bar.set_style(
            ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos}/{len} {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_prefix(name);
        self.bar = Some(bar);
    }
    fn update(&mut self, done: u64, total: u64) {
        if let Some(b) = &self.bar {
            b.set_length(total);
            b.set_position(done);
        }
    }
    fn done(&mut self, name: &'static str, seconds: f64) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        eprintln!("{name:>10} done in {seconds:.2} s");
    }
}

pub fn run(a: AnalyzeArgs, config: &Config) -> anyhow::Result<ExitCode> {
    let template = analyze::load_template(&config.output).context("loading the SR template")?;
    let models = ModelSet::load(&config.inference).context("loading the models")?;
    let mut bars = Bars { bar: None };
    let mut log = LogProgress;
    let progress: &mut dyn Progress = if std::io::stderr().is_terminal() {
        &mut bars
    } else {
        &mut log
    };
    let files = pulmo::pipeline::scan::files_under(&a.input)
        .with_context(|| format!("reading {}", a.input.display()))?;
    let origin = a.input.display().to_string();
    let (analysis, masks) = analyze::analyze(files, &origin, config, &models, progress)
        .with_context(|| format!("the study in {} could not be analysed", a.input.display()))?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let path = a.out.join("findings.json");
    std::fs::write(&path, serde_json::to_string_pretty(&analysis)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    let segs = analyze::write_segs(&a.out, &analysis, &masks).context("writing the SEG objects")?;
    let overlay = if config.output.overlay_series {
        analyze::write_overlay(&a.out, &analysis, &masks).context("writing the overlay series")?
    } else {
        Vec::new()
    };
    let mut nifti = Vec::new();
    if a.masks {
        let g = &masks.volume.geometry;
        for (name, labels, what) in [
            ("lobes.nii.gz", &masks.lobes, "pulmo lobes"),
            ("opacities.nii.gz", &masks.opacities, "pulmo opacities"),
        ] {
            let p = a.out.join(name);
            pulmo::nifti::write_labels(&p, g, labels, what)
                .with_context(|| format!("writing {}", p.display()))?;
            nifti.push(p);
        }
    }
    let sr = analyze::write_report(
        &a.out,
        &analysis,
        &masks,
        &template,
        pulmo::iod::sr::SrKind::from_config(&config.output.sr_kind),
    )
    .context("writing the SR")?;

    let f = &analysis.findings;
    println!(
        "series {} \"{}\" ({} slices), models on {}",
        analysis
            .series
            .series_number
            .map_or("?".into(), |n| n.to_string()),
        analysis.series.description,
        analysis.series.slices,
        analysis.execution_provider
    );
    super::print_measurements(&f.measurements);
    println!("COVID-19 probability {:.3}", f.covid_probability);
    for c in &f.qc {
        println!(
            "QC {:<20} {}  {:.3} (limit: {})",
            c.name,
            if c.passed { "pass" } else { "FAIL" },
            c.value,
            c.limit
        );
    }
    println!("findings: {}", path.display());
    for p in &segs {
        println!("segmentation: {}", p.display());
    }
    if let Some(first) = overlay.first() {
        println!(
            "overlay series: {} images in {}",
            overlay.len(),
            first.parent().unwrap_or(&a.out).display()
        );
    }
    for p in &nifti {
        println!("labels: {}", p.display());
    }
    println!("report: {}", sr.display());
    if f.qc_passed {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "analysed with warnings: a quality check failed (see findings.json): {}",
            f.reliability
        );
        Ok(ExitCode::from(EXIT_QC_WARNINGS))
    }
}
