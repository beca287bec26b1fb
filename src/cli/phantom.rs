//! `pulmo phantom`: write a synthetic chest CT study with ground truth.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::Args;

use pulmo::iod::transfer_syntax::Syntax;
use pulmo::phantom::study::{self, StudyOptions};
use pulmo::phantom::{self, Params, Pattern, Severity, Size};

#[derive(Debug, Args)]
pub struct PhantomArgs {
    /// Output folder (dicom/, truth/, preview/ are written inside)
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[arg(long, value_enum, default_value_t = Size::Full)]
    size: Size,
    /// COVID-19 severity profile (Huang et al. 2020 groups); only the covid pattern uses it
    #[arg(long, value_enum, default_value_t = Severity::Moderate)]
    severity: Severity,
    #[arg(long, value_enum, default_value_t = Pattern::Covid)]
    pattern: Pattern,
    #[arg(long, value_enum, default_value_t = Syntax::Explicit)]
    transfer_syntax: Syntax,
    /// Add a scout and a thick soft-tissue series to the study
    #[arg(long)]
    extra_series: bool,
    /// Random file names, written in random order
    #[arg(long)]
    shuffle: bool,
    /// Standard deviation of the image noise in HU
    #[arg(long, default_value_t = 18.0)]
    noise: f32,
}

pub fn run(a: PhantomArgs) -> anyhow::Result<ExitCode> {
    if !a.transfer_syntax.writable() {
        anyhow::bail!(
            "pulmo cannot encode {} (dicom-rs 0.10 has no encoder for it); writable syntaxes: {}",
            a.transfer_syntax.name(),
            Syntax::ALL
                .iter()
                .filter(|s| s.writable())
                .map(|s| s.name())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if !(0.0..=200.0).contains(&a.noise) {
        anyhow::bail!("--noise must be between 0 and 200 HU");
    }
    let mut params = Params::new(a.seed, a.size);
    params.pattern = a.pattern;
    params.severity = a.severity;
    params.noise_hu = a.noise;
    let t0 = Instant::now();
    let p = phantom::generate(&params);
    let generated = t0.elapsed();
    let written = study::write(
        &p,
        &a.out,
        StudyOptions {
            syntax: a.transfer_syntax,
            extra_series: a.extra_series,
            shuffle: a.shuffle,
        },
    )
    .with_context(|| format!("writing the phantom study to {}", a.out.display()))?;
    let g = &p.volume.geometry;
    let t = &written.truth;
    println!(
        "phantom seed {} ({:?}, {:?}{}): {} × {} × {} voxels at {:.3} × {:.3} × {:.2} mm",
        a.seed,
        a.size,
        a.pattern,
        if a.pattern == Pattern::Covid {
            format!(", {:?}", a.severity)
        } else {
            String::new()
        },
        g.columns,
        g.rows,
        g.slices,
        g.spacing[0],
        g.spacing[1],
        g.spacing[2]
    );
    println!(
        "{} DICOM files ({}) in {}/dicom; truth and previews beside them",
        written.files,
        a.transfer_syntax.name(),
        a.out.display()
    );
    super::print_measurements(&t.measurements);
    println!(
        "generated in {:.2} s, DICOM written in {:.2} s, truth and previews in {:.2} s",
        generated.as_secs_f64(),
        written.dicom_seconds,
        written.truth_seconds
    );
    Ok(ExitCode::SUCCESS)
}
