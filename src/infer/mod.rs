//! Inference: the only module that knows ONNX.
//!
//! - `runtime`: finding and loading ONNX Runtime, sessions on the first working provider.
//! - `model`: model manifests and loaded models.
//! - `resample`: source grid ↔ model grid.
//! - `run`: patches, slices and whole-volume runs, blending.

pub mod model;
pub mod resample;
pub mod run;
pub mod runtime;

use std::path::PathBuf;

use serde::Serialize;
use thiserror::Error;

use crate::config::InferenceConfig;
use crate::labels::Lobe;
use crate::volume::Volume;
use model::{Channel, Model, Role, Upsample};
use resample::ModelGrid;

#[derive(Debug, Error)]
pub enum InferError {
    #[error("ONNX Runtime library not found (looked at: {looked}); {hint}")]
    RuntimeNotFound { looked: String, hint: &'static str },
    #[error("ONNX Runtime: {message}")]
    Runtime { message: String },
    #[error("model manifest {path}: {reason}")]
    Manifest { path: PathBuf, reason: String },
    #[error("model {model}: {message}")]
    Model { model: String, message: String },
    #[error("models folder {dir}: {reason}")]
    ModelSet { dir: PathBuf, reason: String },
}

/// Name, version and checksum of a model as reports cite it.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ModelInfo {
    pub role: Role,
    pub name: String,
    pub version: String,
    pub sha256: String,
    pub execution_provider: String,
}

impl ModelInfo {
    fn of(m: &Model) -> ModelInfo {
        ModelInfo {
            role: m.manifest.role,
            name: m.manifest.name.clone(),
            version: m.manifest.version.clone(),
            sha256: m.manifest.sha256.clone(),
            execution_provider: m.provider.clone(),
        }
    }
}

/// The three models of an analysis, loaded once and reused across studies.
pub struct ModelSet {
    pub lobes: Model,
    pub opacities: Model,
    pub covid: Model,
}

impl ModelSet {
    pub fn load(cfg: &InferenceConfig) -> Result<ModelSet, InferError> {
        let dir = &cfg.models_dir;
        let mut lobes = None;
        let mut opacities = None;
        let mut covid = None;
        let manifests = model::manifests_in(dir)?;
        for path in manifests {
            let role = model::Manifest::load(&path)?.role;
            let slot = match role {
                Role::Lobes => &mut lobes,
                Role::Opacities => &mut opacities,
                Role::Covid => &mut covid,
            };
            if slot.is_some() {
                return Err(InferError::ModelSet {
                    dir: dir.clone(),
                    reason: format!("more than one {role:?} model ({})", path.display()),
                });
            }
            *slot = Some(Model::load(&path, cfg)?);
        }
        let missing = |what: &str| InferError::ModelSet {
            dir: dir.clone(),
            reason: format!("no {what} model (a manifest with role = \"{what}\")"),
        };
        Ok(ModelSet {
            lobes: lobes.ok_or_else(|| missing("lobes"))?,
            opacities: opacities.ok_or_else(|| missing("opacities"))?,
            covid: covid.ok_or_else(|| missing("covid"))?,
        })
    }

    pub fn infos(&self) -> Vec<ModelInfo> {
        [&self.lobes, &self.opacities, &self.covid]
            .into_iter()
            .map(ModelInfo::of)
            .collect()
    }
}

/// The CT prepared for a model: HU resampled to its grid, clipped to its window and scaled.
pub fn prepare_ct(volume: &Volume, grid: &ModelGrid, m: &model::Manifest) -> Vec<f32> {
    let mut data = resample::resample(&volume.hu, grid.src_dims, grid.dims);
    let [lo, hi] = m.input.window;
    let [a, b] = m.input.scale_to;
    for v in &mut data {
        *v = a + (v.clamp(lo, hi) - lo) / (hi - lo) * (b - a);
    }
    data
}

fn label_values(m: &model::Manifest) -> Result<Vec<u8>, InferError> {
    let k = m.output.labels.len();
    let mut out = vec![0u8; k];
    for (c, key) in &m.output.labels {
        let c: usize = c.parse().unwrap_or(usize::MAX);
        if c >= k {
            return Err(InferError::Model {
                model: m.name.clone(),
                message: format!("output.labels must number channels 0..{k}"),
            });
        }
        out[c] = match key.as_str() {
            "background" => 0,
            "ground_glass" => crate::labels::opacity::GROUND_GLASS,
            "consolidation" => crate::labels::opacity::CONSOLIDATION,
            lobe => Lobe::ALL
                .into_iter()
                .find(|l| l.key() == lobe)
                .map(Lobe::label)
                .unwrap_or(0),
        };
    }
    Ok(out)
}

/// Seconds spent in each step of a segmentation.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct SegmentTimes {
    /// Resampling to the model grid, windowing and scaling.
    pub resample_s: f64,
    /// ONNX Runtime, patches, activation and blending.
    pub model_s: f64,
    /// Argmax and labels back to the source grid.
    pub back_s: f64,
}

/// Segment `volume` with a segmentation model: labels on the source grid.
pub fn segment_volume(
    model: &Model,
    volume: &Volume,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Vec<u8>, InferError> {
    segment_volume_timed(model, volume, None, None, progress).map(|(labels, _)| labels)
}

/// `segment_volume`, with the time of each step. With `within` (a mask on the source grid,
/// non-zero inside), a patch model runs only on the patches that hold part of the mask, and every
/// voxel outside the mask's patches is labelled as channel 0 (background): for opacities, which
/// pulmo keeps only inside the lungs, this skips the patches of air and body wall. With `refine`,
/// a model upsampled linearly has each source slice refined as it comes back.
pub fn segment_volume_timed(
    model: &Model,
    volume: &Volume,
    within: Option<&[u8]>,
    refine: Option<&resample::RefineSlice>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(Vec<u8>, SegmentTimes), InferError> {
    let m = &model.manifest;
    let mut times = SegmentTimes::default();
    let t = std::time::Instant::now();
    let grid = ModelGrid::with_spacing(&volume.geometry, m.input.spacing_mm);
    let mut inputs = Vec::new();
    let mut pad = Vec::new();
    for ch in &m.input.channels {
        match ch {
            Channel::Ct => {
                inputs.push(prepare_ct(volume, &grid, m));
                pad.push(m.input.scale_to[0]);
            }
            Channel::Lung => {
                let mask = within.ok_or_else(|| InferError::Model {
                    model: m.name.clone(),
                    message: "the lung channel needs the lobes first".into(),
                })?;
                inputs.push(lung_channel(mask, &grid));
                pad.push(0.0);
            }
            Channel::Opacity => {
                return Err(InferError::Model {
                    model: m.name.clone(),
                    message: "a segmentation model cannot take the opacity map".into(),
                });
            }
        }
    }
    times.resample_s = t.elapsed().as_secs_f64();
    let t = std::time::Instant::now();
    let needed = within.map(|mask| resample::mark_model_voxels(mask, &grid));
    let (probs, k) =
        run::segment_within(model, &inputs, &pad, grid.dims, needed.as_deref(), progress)?;
    times.model_s = t.elapsed().as_secs_f64();
    let t = std::time::Instant::now();
    let labels = label_values(m)?;
    let out = match m.output.upsample {
        Upsample::Nearest => resample::labels_to_source(&probs, k, &grid, &labels),
        Upsample::Linear => resample::labels_to_source_linear(&probs, k, &grid, &labels, refine),
    };
    times.back_s = t.elapsed().as_secs_f64();
    Ok((out, times))
}

/// The lung mask on the model grid, 1 inside any lobe: nearest source voxel, as the training
/// cache carries the lobes to its grid.
fn lung_channel(labels: &[u8], grid: &ModelGrid) -> Vec<f32> {
    resample::resample_nearest(labels, grid.src_dims, grid.dims)
        .into_iter()
        .map(|l| if l > 0 { 1.0 } else { 0.0 })
        .collect()
}

/// COVID-19 probability from the classifier, given the CT and the opacity map on the source grid.
pub fn classify_volume(
    model: &Model,
    volume: &Volume,
    opacities: &[u8],
) -> Result<f64, InferError> {
    let m = &model.manifest;
    let shape = m.input.patch.unwrap_or([64, 128, 128]);
    let grid = ModelGrid::with_dims(&volume.geometry, shape);
    let mut inputs = Vec::new();
    for ch in &m.input.channels {
        inputs.push(match ch {
            Channel::Ct => prepare_ct(volume, &grid, m),
            Channel::Opacity => resample::resample_nearest(opacities, grid.src_dims, grid.dims)
                .into_iter()
                .map(|o| f32::from(o) / 2.0)
                .collect(),
            Channel::Lung => {
                return Err(InferError::Model {
                    model: m.name.clone(),
                    message: "a classifier cannot take the lung channel".into(),
                });
            }
        });
    }
    run::classify(model, &inputs, grid.dims)
}
