//! One study from files to findings: read and select, segment lobes, segment opacities, classify,
//! measure and check. The only place that knows the order of the stages.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use serde::Serialize;
use thiserror::Error;

use super::select::Skipped;
use super::{ReadStudyError, read_study_files};
use crate::config::Config;
use crate::infer::{self, InferError, ModelInfo, ModelSet};
use crate::iod::common::SourceSeries;
use crate::quant::{self, Findings, qc};
use crate::segment::{self, postprocess};
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
    /// Where (mm along the slice normal) single missing slices were filled from their neighbours.
    pub filled_slices_mm: Vec<f64>,
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
    pub source: SourceSeries,
}

/// Build and write the overlay series (Secondary Capture) into `out/overlay/`.
pub fn write_overlay(
    out: &Path,
    analysis: &Analysis,
    masks: &Masks,
) -> Result<Vec<std::path::PathBuf>, crate::iod::sc::ScError> {
    use crate::iod::common::ResultUids;
    use crate::iod::sc::{self, Planes, ScError, Summary};
    let dir = out.join("overlay");
    std::fs::create_dir_all(&dir).map_err(|e| ScError::Write {
        path: dir.display().to_string(),
        message: e.to_string(),
    })?;
    let uids = ResultUids::new(&masks.source, &model_set_version(&analysis.models));
    let f = &analysis.findings;
    let summary = Summary {
        measurements: &f.measurements,
        covid_probability: f.covid_probability,
        models: analysis
            .models
            .iter()
            .map(|m| format!("{} {}", m.name, m.version))
            .collect(),
        failed_checks: f
            .qc
            .iter()
            .filter(|c| !c.passed)
            .map(|c| c.message.clone())
            .collect(),
        disclaimer: analysis.note,
    };
    let planes = Planes {
        volume: &masks.volume,
        lobes: &masks.lobes,
        opacities: &masks.opacities,
    };
    sc::write_series(&dir, &planes, &masks.source, &uids, &summary)
}

/// A version string of the model set, for deterministic result UIDs.
pub fn model_set_version(models: &[ModelInfo]) -> String {
    models
        .iter()
        .map(|m| {
            format!(
                "{}@{}#{}",
                m.name,
                m.version,
                &m.sha256[..m.sha256.len().min(12)]
            )
        })
        .collect::<Vec<_>>()
        .join("+")
}

/// Build and write both SEGs (lobes, opacities) into `out`; returns their paths.
pub fn write_segs(
    out: &Path,
    analysis: &Analysis,
    masks: &Masks,
) -> Result<Vec<std::path::PathBuf>, crate::iod::seg::SegError> {
    write_segs_for(
        out,
        &masks.source,
        &masks.lobes,
        &masks.opacities,
        &analysis.models,
    )
}

/// Build and write both SEGs from label volumes on the source grid.
pub fn write_segs_for(
    out: &Path,
    source: &SourceSeries,
    lobes: &[u8],
    opacities: &[u8],
    models: &[ModelInfo],
) -> Result<Vec<std::path::PathBuf>, crate::iod::seg::SegError> {
    use crate::iod::common::{Kind, ResultUids};
    use crate::iod::seg;
    let uids = ResultUids::new(source, &model_set_version(models));
    let model = |role: crate::infer::model::Role| {
        models
            .iter()
            .find(|m| m.role == role)
            .map(|m| (m.name.clone(), m.version.clone()))
            .unwrap_or_else(|| ("unknown".into(), "unknown".into()))
    };
    let jobs = [
        (
            Kind::SegLobes,
            lobes,
            seg::lobe_segments(),
            crate::infer::model::Role::Lobes,
            "LOBES",
            "lung lobes",
        ),
        (
            Kind::SegOpacities,
            opacities,
            seg::opacity_segments(),
            crate::infer::model::Role::Opacities,
            "OPACITIES",
            "lung opacities",
        ),
    ];
    // The two SEGs are independent: build and write them side by side.
    use rayon::prelude::*;
    let written = jobs
        .into_par_iter()
        .map(|(kind, labels, segments, role, label, what)| {
            let (name, version) = model(role);
            let meta = seg::SegMeta {
                series_uid: uids.series(kind),
                sop_instance_uid: uids.instance(kind),
                series_number: kind.series_number(),
                series_description: format!("pulmo {what} (SEG, unverified)"),
                content_label: label.into(),
                // LO: at most 64 characters.
                content_description: format!(
                    "pulmo {} {what}; unverified, not for clinical use",
                    env!("CARGO_PKG_VERSION")
                ),
                algorithm_name: name,
                algorithm_version: version,
            };
            let obj = seg::build(source, labels, &segments, &meta)?;
            let path = out.join(match kind {
                Kind::SegLobes => "seg-lobes.dcm",
                _ => "seg-opacities.dcm",
            });
            seg::write(obj, &meta, &path)?;
            Ok(path)
        })
        .collect::<Result<Vec<_>, seg::SegError>>()?;
    Ok(written)
}

/// The shipped report template, built in so that the binary works from any folder.
pub const SHIPPED_TEMPLATE: &str = include_str!("../../templates/tid1500.xml");

/// The configured report template, loaded and checked (a bad one is refused with line and reason).
pub fn load_template(
    cfg: &crate::config::OutputConfig,
) -> Result<crate::iod::sr::template::Template, crate::iod::sr::template::TemplateError> {
    use crate::iod::sr::template::Template;
    match &cfg.sr_template {
        Some(p) => Template::load(p),
        None => Template::parse(SHIPPED_TEMPLATE, "templates/tid1500.xml (built in)"),
    }
}

/// Build and write the TID 1500 report (`sr.dcm`) referencing the SEGs of `write_segs`.
pub fn write_report(
    out: &Path,
    analysis: &Analysis,
    masks: &Masks,
    template: &crate::iod::sr::template::Template,
    kind: crate::iod::sr::SrKind,
) -> Result<std::path::PathBuf, crate::iod::sr::SrError> {
    use crate::iod::common::{Kind, ResultUids};
    use crate::iod::sr::{self, ReportInput, SegRef};
    let uids = ResultUids::new(&masks.source, &model_set_version(&analysis.models));
    let seg = |k: Kind| SegRef {
        series_uid: uids.series(k),
        sop_instance_uid: uids.instance(k),
    };
    let input = ReportInput {
        source: &masks.source,
        findings: &analysis.findings,
        models: &analysis.models,
        execution_provider: &analysis.execution_provider,
        note: analysis.note,
        lobes_seg: seg(Kind::SegLobes),
        opacities_seg: seg(Kind::SegOpacities),
        series_uid: uids.series(Kind::Report),
        sop_instance_uid: uids.instance(Kind::Report),
        series_number: Kind::Report.series_number(),
        kind,
        lobe_slices: BTreeMap::new(),
        lung_slice: Default::default(),
    };
    let (lobe_slices, lung_slice) = largest_slices(masks);
    let input = ReportInput {
        lobe_slices,
        lung_slice,
        ..input
    };
    let obj = sr::build(template, &input);
    let path = out.join("sr.dcm");
    sr::write(obj, kind, &input.sop_instance_uid, &path)?;
    Ok(path)
}

/// The source slice where each lobe has the most voxels, and where the lungs have, with the
/// centroid there.
fn largest_slices(masks: &Masks) -> (BTreeMap<String, crate::iod::sr::Spot>, crate::iod::sr::Spot) {
    let g = &masks.volume.geometry;
    let plane = g.rows * g.columns;
    let mut per_slice = vec![[0u64; 6]; g.slices];
    for (k, counts) in per_slice.iter_mut().enumerate() {
        for &l in &masks.lobes[k * plane..(k + 1) * plane] {
            counts[usize::from(l.min(5))] += 1;
        }
    }
    let spot = |inside: &dyn Fn(u8) -> bool, count: &dyn Fn(&[u64; 6]) -> u64| {
        // An image the SR can point at: an acquired slice, not one pulmo filled in.
        let k = (0..per_slice.len())
            .filter(|&k| masks.source.slices.get(k).is_some_and(Option::is_some))
            .max_by_key(|&k| count(&per_slice[k]))
            .unwrap_or(0);
        let (mut n, mut sc, mut sr) = (0f64, 0f64, 0f64);
        for (i, &l) in masks.lobes[k * plane..(k + 1) * plane].iter().enumerate() {
            if inside(l) {
                n += 1.0;
                sc += (i % g.columns) as f64;
                sr += (i / g.columns) as f64;
            }
        }
        crate::iod::sr::Spot {
            sop_instance_uid: masks
                .source
                .slices
                .get(k)
                .and_then(Option::as_ref)
                .map(|(uid, _)| uid.clone())
                .unwrap_or_default(),
            column: if n > 0.0 {
                sc / n
            } else {
                g.columns as f64 / 2.0
            },
            row: if n > 0.0 { sr / n } else { g.rows as f64 / 2.0 },
        }
    };
    let lobes = crate::quant::Lobe::ALL
        .into_iter()
        .map(|l| {
            let i = usize::from(l.label());
            (l.key().to_string(), spot(&|v| v == l.label(), &|c| c[i]))
        })
        .collect();
    let lung = spot(&|v| v > 0, &|c| c[1..].iter().sum());
    (lobes, lung)
}

pub const NOTE: &str = "Automated analysis by pulmo. The lung is taken from the CT's densities; the \
     lobes, the opacities and the COVID-19 probability come from reference models trained on \
     synthetic data only, for integration and testing: on real chest CT their lobe borders are \
     unvalidated and the COVID-19 probability is no better than chance. Unverified; not for \
     clinical use.";

/// Analyse the study made of `files` (`origin` names them in errors) with `models`.
pub fn analyze(
    files: Vec<std::path::PathBuf>,
    origin: &str,
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
    let study = read_study_files(files, origin, &config.selection)?;
    timed("read", t, progress);
    let c = &study.selection.chosen;
    let source = super::scan::source_series(&c.frames, &study.volume.geometry, c.slice_thickness)
        .map_err(|reason| {
        ReadStudyError::Assemble(super::assemble::AssembleError::Instance {
            path: c
                .present()
                .next()
                .map(|f| f.path.clone())
                .unwrap_or_default(),
            reason,
        })
    })?;
    let volume = study.volume;
    let g = volume.geometry.clone();
    let dims = [g.slices, g.rows, g.columns];
    let study_uid = study.selection.study_uid.clone();
    let span = tracing::info_span!("study", uid = %study_uid);
    let _enter = span.enter();

    progress.stage("lobes");
    let t = Instant::now();
    let border = models
        .lobes
        .manifest
        .output
        .lung_border
        .as_ref()
        .map(|rule| segment::border::refiner(rule, &volume.hu, g.rows, g.columns));
    let (mut lobes, lt) = infer::segment_volume_timed(
        &models.lobes,
        &volume,
        None,
        border.as_deref(),
        &mut |d, n| progress.update(d, n),
    )?;
    drop(border);
    timed("lobes", t, progress);
    let t = Instant::now();
    let lungs = segment::lung::segment(&volume);
    let model_lung: Vec<bool> = lobes.iter().map(|&l| l > 0).collect();
    timed("lung", t, progress);
    let t = Instant::now();
    let laid = segment::lobes::lay(&mut lobes, &lungs.side, dims);
    tracing::debug!(
        from_model = laid.from_model,
        grown = laid.grown,
        without_lobe = laid.without_lobe,
        model_outside = laid.model_outside,
        "lobes laid on the lung"
    );
    timed("lobes_on_lung", t, progress);

    progress.stage("opacities");
    let t = Instant::now();
    let (mut opacities, ot) = infer::segment_volume_timed(
        &models.opacities,
        &volume,
        Some(&lobes),
        None,
        &mut |d, n| progress.update(d, n),
    )?;
    timed("opacities", t, progress);
    let t = Instant::now();
    postprocess::opacities_inside_lungs(&mut opacities, &lobes);
    timed("opacities_postprocess", t, progress);

    progress.stage("classifier");
    let t = Instant::now();
    let covid_probability = infer::classify_volume(&models.covid, &volume, &opacities)?;
    timed("classifier", t, progress);
    // After the classifier: it learnt from the opacities model's maps as they come out of it.
    if let Some(r) = models.opacities.manifest.output.min_inscribed_radius_voxels {
        let t = Instant::now();
        postprocess::drop_thin_opacities(&mut opacities, dims, g.spacing, r);
        timed("thin_opacities", t, progress);
    }
    if let Some(rule) = &models.opacities.manifest.output.opacity_edge {
        let t = Instant::now();
        segment::opacity_edge::grow(&mut opacities, &lobes, &volume.hu, dims, g.spacing, rule);
        timed("opacity_edge", t, progress);
    }
    if let Some(rule) = &models.opacities.manifest.output.vessel_opacities {
        let t = Instant::now();
        let mut lung = segment::dense::Lung::new(&lobes, &volume.hu, dims);
        segment::vessel_opacities::drop(&mut opacities, &mut lung, dims, g.spacing, rule);
        timed("vessel_opacities", t, progress);
    }
    // After the opacity rules: found opacities keep the lobes model's labels.
    if let Some(rule) = &models.lobes.manifest.output.fissure_surface {
        let t = Instant::now();
        segment::fissure_surface::fit(&mut lobes, &opacities, &volume.hu, dims, g.spacing, rule);
        timed("fissure_surface", t, progress);
    }

    progress.stage("measure");
    let t = Instant::now();
    let measurements = quant::measure(&lobes, &opacities, g.voxel_volume_ml());
    let evidence = qc::LungEvidence {
        lungs: &lungs,
        model_lung: &model_lung,
    };
    let checks = qc::check(
        &volume,
        &lobes,
        &measurements,
        &evidence,
        &qc::SeriesFacts {
            filled_slices: study.selection.chosen.filled(),
            contrast_agent: study
                .selection
                .chosen
                .present()
                .next()
                .map(|f| f.contrast_agent.clone())
                .unwrap_or_default(),
        },
    );
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
            filled_slices_mm: c
                .frames
                .iter()
                .enumerate()
                .filter(|(_, f)| f.is_none())
                .map(|(k, _)| {
                    (crate::volume::dot(g.slice_position(k), g.slice_direction) * 100.0).round()
                        / 100.0
                })
                .collect(),
            slice_thickness_mm: c.slice_thickness,
            geometry: g.clone(),
        },
        skipped_series: study.selection.skipped.clone(),
        findings: Findings {
            measurements,
            covid_probability,
            reliability: Findings::reliability_of(&checks),
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
            source,
        },
    ))
}
