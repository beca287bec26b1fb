//! One study from files to findings: read and select, segment lobes, segment opacities, classify,
//! measure and check. The only place that knows the order of the stages.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use serde::Serialize;
use thiserror::Error;

use super::select::Skipped;
use super::{ReadStudyError, read_study};
use crate::config::Config;
use crate::infer::{self, InferError, ModelInfo, ModelSet, postprocess};
use crate::quant::{self, Findings, qc};
use crate::volume::{Geometry, Volume};

/// Reports progress of the stages; the command line draws bars or writes log lines.
pub trait Progress {
    fn stage(&mut self, name: &'static str);
    fn update(&mut self, done: u64, total: u64);
    fn done(&mut self, name: &'static str, seconds: f64);
}

/// A `Progress` that only logs.
pub struct LogProgress;

impl Progress for LogProgress {
    fn stage(&mut self, name: &'static str) {
        tracing::info!(stage = name, "stage started");
    }
    fn update(&mut self, _: u64, _: u64) {}
    fn done(&mut self, name: &'static str, seconds: f64) {
        tracing::info!(stage = name, seconds, "stage done");
    }
}

#[derive(Debug, Error)]
pub enum AnalyzeError {
    #[error(transparent)]
    Read(#[from] ReadStudyError),
    #[error(transparent)]
    Infer(#[from] InferError),
}

#[derive(Debug, Clone, Serialize)]
pub struct SeriesUsed {
    pub series_instance_uid: String,
    pub series_number: Option<i32>,
    pub description: String,
    pub slices: usize,
    pub slice_thickness_mm: f64,
    pub geometry: Geometry,
}

/// findings.json: the findings plus where they came from.
#[derive(Debug, Clone, Serialize)]
pub struct Analysis {
    pub pulmo_version: &'static str,
    pub note: &'static str,
    pub study_instance_uid: String,
    pub series: SeriesUsed,
    pub skipped_series: Vec<Skipped>,
    #[serde(flatten)]
    pub findings: Findings,
    pub models: Vec<ModelInfo>,
    pub execution_provider: String,
    pub onnxruntime: String,
    pub timings_s: BTreeMap<&'static str, f64>,
}

/// The label volumes behind the findings, on the source grid (the SEG objects are built from them).
pub struct Masks {
    pub volume: Volume,
    pub lobes: Vec<u8>,
    pub opacities: Vec<u8>,
}

pub const NOTE: &str = "Automated analysis by pulmo with reference models trained on synthetic data \
     for integration and testing. Unverified; not for clinical use.";

/// Analyse the study in `dir` with `models`.
pub fn analyze(
    dir: &Path,
    config: &Config,
    models: &ModelSet,
    progress: &mut dyn Progress,
) -> Result<(Analysis, Masks), AnalyzeError> {
    let mut timings = BTreeMap::new();
    let mut timed = |name: &'static str, t: Instant, progress: &mut dyn Progress| {
        let s = t.elapsed().as_secs_f64();
        timings.insert(name, s);
        progress.done(name, s);
    };

    progress.stage("read");
    let t = Instant::now();
    let study = read_study(dir, &config.selection)?;
    timed("read", t, progress);
    let volume = study.volume;
    let g = volume.geometry.clone();
    let dims = [g.slices, g.rows, g.columns];
    let study_uid = study.selection.study_uid.clone();
    let span = tracing::info_span!("study", uid = %study_uid);
    let _enter = span.enter();

    progress.stage("lobes");
    let t = Instant::now();
    let (mut lobes, lt) =
        infer::segment_volume_timed(&models.lobes, &volume, &mut |d, n| progress.update(d, n))?;
    timed("lobes", t, progress);
    let t = Instant::now();
    postprocess::clean_lobes(&mut lobes, dims);
    timed("lobes_postprocess", t, progress);

    progress.stage("opacities");
    let t = Instant::now();
    let (mut opacities, ot) =
        infer::segment_volume_timed(&models.opacities, &volume, &mut |d, n| {
            progress.update(d, n)
        })?;
    timed("opacities", t, progress);
    let t = Instant::now();
    postprocess::opacities_inside_lungs(&mut opacities, &lobes);
    timed("opacities_postprocess", t, progress);

    progress.stage("classifier");
    let t = Instant::now();
    let covid_probability = infer::classify_volume(&models.covid, &volume, &opacities)?;
    timed("classifier", t, progress);

    progress.stage("measure");
    let t = Instant::now();
    let measurements = quant::measure(&lobes, &opacities, g.voxel_volume_ml());
    let checks = qc::check(&volume, &lobes, &measurements);
    timed("measure", t, progress);

    for (name, v) in [
        ("lobes_resample", lt.resample_s),
        ("lobes_model", lt.model_s),
        ("lobes_back_to_source", lt.back_s),
        ("opacities_resample", ot.resample_s),
        ("opacities_model", ot.model_s),
        ("opacities_back_to_source", ot.back_s),
    ] {
        timings.insert(name, v);
    }
    let qc_passed = checks.iter().all(|c| c.passed);
    for c in checks.iter().filter(|c| !c.passed) {
        tracing::warn!(check = c.name, value = c.value, limit = %c.limit, "quality check failed: {}", c.message);
    }
    let infos = models.infos();
    let provider = infos
        .iter()
        .map(|i| i.execution_provider.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect::<Vec<_>>()
        .join(",");
    let rt = crate::infer::runtime::runtime(&config.inference)?;
    let c = &study.selection.chosen;
    let analysis = Analysis {
        pulmo_version: env!("CARGO_PKG_VERSION"),
        note: NOTE,
        study_instance_uid: study_uid,
        series: SeriesUsed {
            series_instance_uid: c.series_uid.clone(),
            series_number: c.series_number,
            description: c.description.clone(),
            slices: c.frames.len(),
            slice_thickness_mm: c.slice_thickness,
            geometry: g.clone(),
        },
        skipped_series: study.selection.skipped.clone(),
        findings: Findings {
            measurements,
            covid_probability,
            qc: checks,
            qc_passed,
        },
        models: infos,
        execution_provider: provider,
        onnxruntime: format!("{} ({})", rt.version, rt.library.display()),
        timings_s: timings,
    };
    Ok((
        analysis,
        Masks {
            volume,
            lobes,
            opacities,
        },
    ))
}
