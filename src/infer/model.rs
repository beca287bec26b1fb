//! Model manifests (one TOML file per model in models/) and loaded models.
//!
//! A manifest says everything pulmo needs to run an ONNX model it has never seen: which role it
//! plays, how to prepare its input (spacing, HU window and scaling, layout, patch and overlap),
//! how to read its output (activation, which channel is which label), and where it came from
//! (licence, training data). Any model with a manifest can be dropped in without recompiling.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::InferError;
use super::runtime;
use crate::config::InferenceConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Lobes,
    Opacities,
    Covid,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    Segmentation,
    Classification,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    /// 3D patches [N, C, Z, Y, X] slid over the volume with overlap.
    Patch3d,
    /// Whole axial slices [N, C, Y, X], `batch` at a time.
    Slice2d,
    /// The whole volume resized to `shape` [1, C, Z, Y, X] (classifiers).
    Whole3d,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    Softmax,
    Sigmoid,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    /// CT in the manifest's window, scaled.
    Ct,
    /// The opacity map (0 none, 1 ground-glass, 2 consolidation) divided by 2.
    Opacity,
    /// The lung mask (any lobe of the lobes model) as 0 or 1: for the opacities model, which
    /// cannot tell a consolidated lobe from the chest wall by density alone.
    Lung,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    pub name: String,
    pub layout: Layout,
    /// Target voxel spacing (x, y, z) in mm; the volume is resampled to about this.
    pub spacing_mm: [f64; 3],
    /// HU clipped to [low, high] ...
    pub window: [f32; 2],
    /// ... then mapped linearly onto [a, b].
    #[serde(default = "unit_range")]
    pub scale_to: [f32; 2],
    /// Patch size (z, y, x) for patch3d; fixed shape (z, y, x) for whole3d.
    #[serde(default)]
    pub patch: Option<[usize; 3]>,
    /// Overlap between neighbouring patches, in voxels of the model grid.
    #[serde(default)]
    pub overlap: usize,
    /// patch3d: along an axis where the whole volume fits in the patch, run it as one piece
    /// padded only up to the next multiple of this (a whole-volume model sees the same amount of
    /// padding as in training, which instance normalisation needs). Absent: pad to the patch.
    #[serde(default)]
    pub pad_to_multiple: Option<usize>,
    #[serde(default = "one")]
    pub batch: usize,
    #[serde(default = "ct_only")]
    pub channels: Vec<Channel>,
}

fn unit_range() -> [f32; 2] {
    [0.0, 1.0]
}
fn one() -> usize {
    1
}
fn ct_only() -> Vec<Channel> {
    vec![Channel::Ct]
}

/// How class probabilities on the model grid become labels on the CT grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Upsample {
    /// Argmax on the model grid, carried to each CT voxel from the model voxel containing it.
    #[default]
    Nearest,
    /// Probabilities interpolated trilinearly to each CT voxel, then argmax: for coarse grids
    /// whose model was trained on partial-volume fractions (boundaries between model voxels).
    Linear,
}

/// How the CT moves the lungs' border where a lobes model is unsure (`border::refine_slice`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LungBorder {
    /// Background probabilities between which the model counts as unsure.
    pub unsure: [f32; 2],
    /// An unsure background voxel below this (and above `air_below_hu`) joins the lung.
    pub lung_below_hu: f32,
    /// Air of the airways and outside the body: never added.
    pub air_below_hu: f32,
    /// An unsure lung voxel above this leaves the lung, unless sure dense lung is near.
    pub wall_above_hu: f32,
    /// How near, in in-plane CT voxels (4-connected steps through dense lung).
    pub dense_reach_voxels: usize,
}

/// How the CT carries an opacities model's findings out to their edge (`opacity_edge::grow`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpacityEdge {
    /// Lung at least this dense joins an opacity beside it.
    pub dense_above_hu: f32,
    /// How far in the slice, in mm: as many 4-connected steps of a CT pixel as fit.
    pub reach_mm: f64,
}

/// Which small opacities are a vessel (`vessel_opacities::drop`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VesselOpacities {
    /// Lung above this is dense: vessels, consolidation.
    pub dense_above_hu: f32,
    /// Only findings in which no ball of this radius fits are judged.
    pub max_radius_mm: f64,
    /// Dropped when at least this share of the finding is dense structure that lies mostly
    /// outside it.
    pub min_vessel_share: f64,
    /// Kept whatever its vessel share: a finding at least half of which is lung at or below
    /// `dense_above_hu` whose density spreads over an interquartile range of at most this (HU),
    /// ground glass of its own that a vessel runs through (a vessel's halo falls off from the
    /// vessel to the lung: a wide range). Absent, none is kept so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ground_glass_iqr_hu: Option<f64>,
}

/// Each fissure fitted as one smooth surface and moved onto the density ridge the CT shows along
/// it (`fissure_surface::fit`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FissureSurface {
    /// Standard deviation (mm) of the Gaussian weights of the local plane fit that smooths the
    /// model's border.
    pub smooth_mm: f64,
    /// How far (mm, along z) the surface may move to the CT's ridge; every lobe voxel near it
    /// takes its side.
    pub search_mm: f64,
    /// Voxels within this distance (mm, along z) of the moved surface are relabelled.
    pub band_mm: f64,
    /// The CT is clipped to this range (HU) first, so that a vessel or an opacity weighs no more
    /// than the fissure.
    pub hu_range: [f64; 2],
    /// After the plane, each column of an oblique fissure may move this much further (mm) to the
    /// strongest ridge of the columns around it, but no further than the search of the CT's
    /// slices; 0 (the default) leaves the plane.
    #[serde(default)]
    pub refine_mm: f64,
    /// The Gaussian weights (mm) with which the columns around one are pooled for that.
    #[serde(default)]
    pub refine_smooth_mm: f64,
    /// The horizontal fissure's ridge leaves out voxels denser than `hu_range` instead of
    /// clipping them: vessels run in its plane at the hilum's level.
    #[serde(default)]
    pub horizontal_skips_dense: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    pub name: String,
    pub activation: Activation,
    #[serde(default)]
    pub upsample: Upsample,
    /// Opacities only: components (6-connected) in which no ball of this radius, in in-plane CT
    /// voxels, fits are dropped after the classifier has seen them (`postprocess::
    /// drop_thin_opacities`). Part of the model's contract: a model whose false positives are
    /// thin says so here; absent, nothing is dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_inscribed_radius_voxels: Option<f64>,
    /// Lobes only, with `upsample = "linear"`: where the model is unsure, the CT places the
    /// lungs' border (`border::refine_slice`). Absent, the argmax stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lung_border: Option<LungBorder>,
    /// Lobes only: each fissure as one smooth surface on the CT's ridge, after the opacity rules
    /// (`fissure_surface::fit`). Absent, the labels stand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fissure_surface: Option<FissureSurface>,
    /// Opacities only: lung beside a found opacity and dense enough joins it, after the thin
    /// components are dropped (`opacity_edge::grow`). Absent, the labels stand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opacity_edge: Option<OpacityEdge>,
    /// Opacities only: small findings made mostly of a vessel are dropped, last
    /// (`vessel_opacities::drop`). Absent, the labels stand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vessel_opacities: Option<VesselOpacities>,
    /// Output channel index → pulmo label key ("background", "RUL", ..., "ground_glass",
    /// "consolidation"; for a classifier, "covid").
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    pub role: Role,
    pub task: Task,
    pub file: PathBuf,
    pub sha256: String,
    pub licence: String,
    pub training_data: String,
    #[serde(default)]
    pub description: String,
    pub input: InputSpec,
    pub output: OutputSpec,
}

const LOBE_KEYS: [&str; 6] = ["background", "RUL", "RML", "RLL", "LUL", "LLL"];
const OPACITY_KEYS: [&str; 3] = ["background", "ground_glass", "consolidation"];

impl Manifest {
    pub fn load(path: &Path) -> Result<Manifest, InferError> {
        let bad = |reason: String| InferError::Manifest {
            path: path.to_path_buf(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let m: Manifest = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
        m.validate().map_err(bad)?;
        Ok(m)
    }

    fn validate(&self) -> Result<(), String> {
        if self.sha256.len() != 64 || !self.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("sha256 must be 64 hexadecimal digits".into());
        }
        if self
            .input
            .spacing_mm
            .iter()
            .any(|&s| !(s > 0.0 && s < 20.0))
        {
            return Err("input.spacing_mm must be positive and below 20 mm".into());
        }
        if self.input.window[0] >= self.input.window[1] {
            return Err("input.window must be [low, high] with low < high".into());
        }
        if self.input.batch == 0 {
            return Err("input.batch must be at least 1".into());
        }
        match (self.task, self.input.layout) {
            (Task::Segmentation, Layout::Patch3d) => {
                let p = self
                    .input
                    .patch
                    .ok_or("input.patch is required for patch3d")?;
                if p.contains(&0) {
                    return Err("input.patch must be positive".into());
                }
                if p.iter().any(|&n| self.input.overlap >= n) {
                    return Err("input.overlap must be smaller than the patch".into());
                }
                if let Some(m) = self.input.pad_to_multiple
                    && (m == 0 || p.iter().any(|&n| n % m != 0))
                {
                    return Err(
                        "input.pad_to_multiple must be positive and divide every patch size".into(),
                    );
                }
            }
            (Task::Segmentation, Layout::Slice2d) => {}
            (Task::Classification, Layout::Whole3d) => {
                if self.input.patch.is_none() {
                    return Err(
                        "input.patch (the fixed input shape z, y, x) is required for whole3d"
                            .into(),
                    );
                }
            }
            (t, l) => return Err(format!("layout {l:?} does not fit task {t:?}")),
        }
        let allowed: &[&str] = match self.role {
            Role::Lobes => &LOBE_KEYS,
            Role::Opacities => &OPACITY_KEYS,
            Role::Covid => &["other", "covid"],
        };
        for (k, v) in &self.output.labels {
            k.parse::<usize>()
                .map_err(|_| format!("output.labels key \"{k}\" is not a channel number"))?;
            if !allowed.contains(&v.as_str()) {
                return Err(format!(
                    "output.labels: \"{v}\" is not a label of a {:?} model (known: {})",
                    self.role,
                    allowed.join(", ")
                ));
            }
        }
        if let Some(r) = self.output.min_inscribed_radius_voxels {
            if self.role != Role::Opacities {
                return Err("output.min_inscribed_radius_voxels is for an opacities model".into());
            }
            if !(r > 0.0 && r <= 20.0) {
                return Err(
                    "output.min_inscribed_radius_voxels must be above 0 and at most 20".into(),
                );
            }
        }
        if let Some(b) = &self.output.lung_border {
            if self.role != Role::Lobes || self.output.upsample != Upsample::Linear {
                return Err(
                    "output.lung_border is for a lobes model with upsample = \"linear\"".into(),
                );
            }
            let [lo, hi] = b.unsure;
            if !(0.0 <= lo && lo < hi && hi <= 1.0) {
                return Err("output.lung_border.unsure must be [low, high] within 0..1".into());
            }
            if !(b.air_below_hu < b.lung_below_hu && b.lung_below_hu <= b.wall_above_hu) {
                return Err(
                    "output.lung_border needs air_below_hu < lung_below_hu <= wall_above_hu".into(),
                );
            }
            if b.dense_reach_voxels > 64 {
                return Err("output.lung_border.dense_reach_voxels must be at most 64".into());
            }
        }
        if let Some(f) = &self.output.fissure_surface {
            if self.role != Role::Lobes {
                return Err("output.fissure_surface is for a lobes model".into());
            }
            if !(f.smooth_mm > 0.0 && f.smooth_mm <= 100.0) {
                return Err(
                    "output.fissure_surface.smooth_mm must be above 0 and at most 100".into(),
                );
            }
            if !(0.0..=20.0).contains(&f.search_mm) {
                return Err("output.fissure_surface.search_mm must be within 0..20".into());
            }
            if !(f.band_mm > 0.0 && f.band_mm <= 50.0) {
                return Err("output.fissure_surface.band_mm must be above 0 and at most 50".into());
            }
            hu_range("fissure_surface", f.hu_range)?;
            if !(0.0..=20.0).contains(&f.refine_mm) {
                return Err("output.fissure_surface.refine_mm must be within 0..20".into());
            }
            if f.refine_mm > 0.0 && !(f.refine_smooth_mm > 0.0 && f.refine_smooth_mm <= 100.0) {
                return Err(
                    "output.fissure_surface.refine_smooth_mm must be above 0 and at most 100 \
                     where refine_mm is set"
                        .into(),
                );
            }
        }
        if let Some(e) = &self.output.opacity_edge {
            if self.role != Role::Opacities {
                return Err("output.opacity_edge is for an opacities model".into());
            }
            dense_threshold("opacity_edge", e.dense_above_hu)?;
            if !(0.0..=10.0).contains(&e.reach_mm) {
                return Err("output.opacity_edge.reach_mm must be within 0..10".into());
            }
        }
        if let Some(v) = &self.output.vessel_opacities {
            if self.role != Role::Opacities {
                return Err("output.vessel_opacities is for an opacities model".into());
            }
            dense_threshold("vessel_opacities", v.dense_above_hu)?;
            if !(v.max_radius_mm > 0.0 && v.max_radius_mm <= 30.0) {
                return Err(
                    "output.vessel_opacities.max_radius_mm must be above 0 and at most 30".into(),
                );
            }
            if !(v.min_vessel_share > 0.0 && v.min_vessel_share <= 1.0) {
                return Err(
                    "output.vessel_opacities.min_vessel_share must be above 0 and at most 1".into(),
                );
            }
            if let Some(iqr) = v.max_ground_glass_iqr_hu
                && !(iqr > 0.0 && iqr <= 500.0)
            {
                return Err(
                    "output.vessel_opacities.max_ground_glass_iqr_hu must be above 0 and at most 500"
                        .into(),
                );
            }
        }
        if self.role == Role::Covid && !self.output.labels.values().any(|v| v == "covid") {
            return Err("a covid classifier must name its \"covid\" output channel".into());
        }
        if matches!(self.role, Role::Lobes | Role::Opacities) && self.task != Task::Segmentation {
            return Err(format!("a {:?} model must be a segmentation", self.role));
        }
        // What each role is given: the lobes model runs first, on the CT alone; the opacities
        // model can have the lung mask; the classifier the opacity map.
        let given: &[Channel] = match self.role {
            Role::Lobes => &[Channel::Ct],
            Role::Opacities => &[Channel::Ct, Channel::Lung],
            Role::Covid => &[Channel::Ct, Channel::Opacity],
        };
        if self.input.channels.is_empty() {
            return Err("input.channels must name at least one channel".into());
        }
        if let Some(c) = self.input.channels.iter().find(|c| !given.contains(c)) {
            return Err(format!(
                "input.channels: a {:?} model cannot be given {c:?} (it can have {given:?})",
                self.role
            ));
        }
        Ok(())
    }

    /// Output channel of each label key.
    pub fn channel_of(&self, key: &str) -> Option<usize> {
        self.output
            .labels
            .iter()
            .find(|(_, v)| v.as_str() == key)
            .and_then(|(k, _)| k.parse().ok())
    }
}

/// A model ready to run: its manifest, session and the provider it runs on.
pub struct Model {
    pub manifest: Manifest,
    pub manifest_path: PathBuf,
    pub provider: String,
    pub session: Mutex<ort::session::Session>,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

impl Model {
    /// Read the manifest's model file, check its checksum and its input and output names, and
    /// create its session.
    pub fn load(manifest_path: &Path, cfg: &InferenceConfig) -> Result<Model, InferError> {
        let manifest = Manifest::load(manifest_path)?;
        let dir = manifest_path.parent().unwrap_or(Path::new("."));
        let file = dir.join(&manifest.file);
        let bytes = std::fs::read(&file).map_err(|e| InferError::Manifest {
            path: manifest_path.to_path_buf(),
            reason: format!("cannot read model file {}: {e}", file.display()),
        })?;
        let actual = sha256_hex(&bytes);
        if !actual.eq_ignore_ascii_case(&manifest.sha256) {
            return Err(InferError::Manifest {
                path: manifest_path.to_path_buf(),
                reason: format!(
                    "sha256 of {} is {actual}, but the manifest says {}: the file was changed or \
                     the manifest is stale",
                    file.display(),
                    manifest.sha256
                ),
            });
        }
        let rt = runtime::runtime(cfg)?;
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let (session, provider) = runtime::session(&rt, &bytes, &cfg.execution_providers, threads)?;
        let inputs: Vec<String> = session
            .inputs()
            .iter()
            .map(|i| i.name().to_string())
            .collect();
        if !inputs.contains(&manifest.input.name) {
            return Err(InferError::Manifest {
                path: manifest_path.to_path_buf(),
                reason: format!(
                    "input.name \"{}\" is not an input of {} (its inputs: {})",
                    manifest.input.name,
                    file.display(),
                    inputs.join(", ")
                ),
            });
        }
        let outputs: Vec<String> = session
            .outputs()
            .iter()
            .map(|o| o.name().to_string())
            .collect();
        if !outputs.contains(&manifest.output.name) {
            return Err(InferError::Manifest {
                path: manifest_path.to_path_buf(),
                reason: format!(
                    "output.name \"{}\" is not an output of {} (its outputs: {})",
                    manifest.output.name,
                    file.display(),
                    outputs.join(", ")
                ),
            });
        }
        tracing::info!(model = %manifest.name, version = %manifest.version, %provider, "model loaded");
        Ok(Model {
            manifest,
            manifest_path: manifest_path.to_path_buf(),
            provider,
            session: Mutex::new(session),
        })
    }
}

/// Every manifest (`*.toml`) in a models folder, sorted.
pub fn manifests_in(dir: &Path) -> Result<Vec<PathBuf>, InferError> {
    let entries = std::fs::read_dir(dir).map_err(|e| InferError::Manifest {
        path: dir.to_path_buf(),
        reason: format!("cannot list the models folder: {e}"),
    })?;
    let mut out: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    out.sort();
    Ok(out)
}

/// The `dense_above_hu` of the opacity rules' table `table`: below about -900 HU aerated lung is
/// A CT range `[low, high]` (HU) of the rule `table`, within what a CT can hold.
fn hu_range(table: &str, [low, high]: [f64; 2]) -> Result<(), String> {
    if -1024.0 <= low && low < high && high <= 3071.0 {
        Ok(())
    } else {
        Err(format!(
            "output.{table}.hu_range must be [low, high] with -1024 <= low < high <= 3071"
        ))
    }
}

/// dense, so the edge rule would flood the lung and the whole lung would be one dense structure.
fn dense_threshold(table: &str, hu: f32) -> Result<(), String> {
    if (-900.0..=200.0).contains(&hu) {
        Ok(())
    } else {
        Err(format!(
            "output.{table}.dense_above_hu must be within -900..200"
        ))
    }
}
