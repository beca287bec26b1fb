//! Synthetic chest CT with ground truth: the demo's default study, every test's fixture and the
//! reference models' training data.
//!
//! `generate` builds the HU volume and the lobe and opacity label volumes on one grid;
//! `study` writes them as a DICOM study plus `truth/` and `preview/`. Everything is deterministic
//! by seed.

pub mod anatomy;
pub mod lesions;
pub mod preview;
pub mod study;
pub mod texture;
pub mod vessels;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;
use serde::Serialize;

pub use lesions::{Pattern, Severity};

use crate::volume::{Geometry, Volume};
use anatomy::{Anatomy, Tissue};
use texture::{blur_121, fractal3, smoothstep};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Size {
    /// About 128 × 128 × 64 at 2.8 × 2.8 × 5 mm: fast tests.
    Small,
    /// 512 × 512 × about 300 at about 0.7 × 0.7 × 1.0 mm: a real thin-slice chest CT.
    Full,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Params {
    pub seed: u64,
    pub size: Size,
    pub pattern: Pattern,
    pub severity: Severity,
    /// Standard deviation (HU) of the correlated image noise.
    pub noise_hu: f32,
}

impl Params {
    pub fn new(seed: u64, size: Size) -> Params {
        Params {
            seed,
            size,
            pattern: Pattern::Covid,
            severity: Severity::Moderate,
            noise_hu: 18.0,
        }
    }
}

/// A generated study in memory: HU plus truth labels on the same grid.
#[derive(Debug, Clone)]
pub struct Phantom {
    pub params: Params,
    pub volume: Volume,
    /// 0 background, 1 RUL, 2 RML, 3 RLL, 4 LUL, 5 LLL.
    pub lobes: Vec<u8>,
    /// 0 none, 1 ground-glass, 2 consolidation.
    pub opacities: Vec<u8>,
    pub lesion_count: usize,
    pub target_plo: f64,
}

/// Lowest and highest value the phantom's CT stores: 12 bits with intercept −1024.
pub const HU_MIN: i16 = -1024;
pub const HU_MAX: i16 = 3071;

/// Soft tissue value vessels are drawn with (blood, no contrast).
const BLOOD_HU: f64 = 40.0;

fn grid(anatomy: &Anatomy, size: Size, body_width: f64) -> Geometry {
    let (n, dz) = match size {
        Size::Small => (128usize, 5.0),
        Size::Full => (512usize, 1.0),
    };
    let fov = (body_width * 1.1).clamp(340.0, 420.0).round();
    let px = fov / n as f64;
    let (lo, hi) = anatomy.lung_z_range();
    let z0 = (lo - 18.0).floor();
    let slices = ((hi + 16.0 - z0) / dz).ceil() as usize;
    Geometry {
        rows: n,
        columns: n,
        slices,
        origin: [-fov / 2.0 + px / 2.0, -fov / 2.0 + px / 2.0 + 20.0, z0],
        row_direction: [1.0, 0.0, 0.0],
        column_direction: [0.0, 1.0, 0.0],
        slice_direction: [0.0, 0.0, 1.0],
        spacing: [px, px, dz],
    }
}

/// Generate the phantom described by `params`.
pub fn generate(params: &Params) -> Phantom {
    let mut rng = ChaCha8Rng::seed_from_u64(params.seed);
    let anatomy = Anatomy::new(&mut rng);
    let g = grid(&anatomy, params.size, anatomy_width(&anatomy));
    let extent = [
        [
            g.origin[0],
            g.origin[0] + g.spacing[0] * (g.columns - 1) as f64,
        ],
        [
            g.origin[1],
            g.origin[1] + g.spacing[1] * (g.rows - 1) as f64,
        ],
        [
            g.origin[2],
            g.origin[2] + g.spacing[2] * (g.slices - 1) as f64,
        ],
    ];
    let lesions = lesions::plan(&anatomy, params.pattern, params.severity, extent, &mut rng);
    let min_radius = 0.6 * g.spacing[0];
    let mut vessel_rng = ChaCha8Rng::seed_from_u64(params.seed ^ 0x07E5_5E15);
    let vessels = vessels::grow(&anatomy, &mut vessel_rng, min_radius);

    let plane = g.rows * g.columns;
    let slices: Vec<(Vec<i16>, Vec<u8>, Vec<u8>)> = (0..g.slices)
        .into_par_iter()
        .map(|k| render_slice(&anatomy, &lesions, &vessels, &g, params, k))
        .collect();
    let mut hu = Vec::with_capacity(plane * g.slices);
    let mut lobes = Vec::with_capacity(plane * g.slices);
    let mut opac = Vec::with_capacity(plane * g.slices);
    for (h, l, o) in slices {
        hu.extend_from_slice(&h);
        lobes.extend_from_slice(&l);
        opac.extend_from_slice(&o);
    }
    Phantom {
        params: params.clone(),
        volume: Volume { geometry: g, hu },
        lobes,
        opacities: opac,
        lesion_count: lesions.count(),
        target_plo: lesions.target_plo,
    }
}

fn anatomy_width(a: &Anatomy) -> f64 {
    // The widest point of the body outline on the x axis, found by walking out from the centre.
    let mut left = 0.0;
    while left < 400.0 && !matches!(a.tissue([left, 0.0, 0.0]), Tissue::Air) {
        left += 2.0;
    }
    let mut right = 0.0;
    while right > -400.0 && !matches!(a.tissue([right, 0.0, 0.0]), Tissue::Air) {
        right -= 2.0;
    }
    left - right
}

fn render_slice(
    anatomy: &Anatomy,
    lesions: &lesions::Lesions,
    vessels: &[vessels::Segment],
    g: &Geometry,
    params: &Params,
    k: usize,
) -> (Vec<i16>, Vec<u8>, Vec<u8>) {
    let (rows, cols) = (g.rows, g.columns);
    let z = g.origin[2] + k as f64 * g.spacing[2];
    let slab = lesions.for_slab(z - g.spacing[2], z + g.spacing[2]);
    let tex_seed = anatomy.texture_seed;
    let mut hu = vec![0f32; rows * cols];
    let mut lobes = vec![0u8; rows * cols];
    let mut opac = vec![0u8; rows * cols];
    for j in 0..rows {
        let y = g.origin[1] + j as f64 * g.spacing[1];
        for i in 0..cols {
            let x = g.origin[0] + i as f64 * g.spacing[0];
            let p = [x, y, z];
            let n = j * cols + i;
            hu[n] = match anatomy.tissue(p) {
                Tissue::Air => -1000.0,
                Tissue::Solid(v) => v,
                Tissue::Lung { lobe, fissure } => {
                    let gravity = ((y + 60.0) / 140.0).clamp(0.0, 1.0);
                    let mut v = -868.0
                        + 22.0 * fractal3(tex_seed, p, 9.0) as f64
                        + 10.0 * fractal3(tex_seed ^ 1, p, 2.5) as f64
                        + 38.0 * gravity;
                    // Fissures: thin surfaces slightly denser than the lung around them.
                    let w = smoothstep(0.9, 0.25, fissure);
                    v += w * (-640.0 - v);
                    let (v, label) = slab.apply(p, lobe, v);
                    lobes[n] = lobe.label();
                    opac[n] = label;
                    v as f32
                }
            };
        }
    }
    // Vessels: anti-aliased coverage, kept to the lungs (elsewhere they blend into soft tissue).
    let px = g.spacing[0];
    let mut coverage = vec![0f32; rows * cols];
    for s in vessels {
        let (z0, z1) = s.z_range();
        if z < z0 || z > z1 {
            continue;
        }
        let r = s.ra.max(s.rb) + px;
        let (xa, xb) = (s.a[0].min(s.b[0]) - r, s.a[0].max(s.b[0]) + r);
        let (ya, yb) = (s.a[1].min(s.b[1]) - r, s.a[1].max(s.b[1]) + r);
        let i0 = (((xa - g.origin[0]) / px).floor().max(0.0)) as usize;
        let i1 = (((xb - g.origin[0]) / px).ceil().max(0.0) as usize).min(cols - 1);
        let j0 = (((ya - g.origin[1]) / g.spacing[1]).floor().max(0.0)) as usize;
        let j1 = (((yb - g.origin[1]) / g.spacing[1]).ceil().max(0.0) as usize).min(rows - 1);
        for j in j0..=j1 {
            let y = g.origin[1] + j as f64 * g.spacing[1];
            for i in i0..=i1 {
                let n = j * cols + i;
                if lobes[n] == 0 {
                    continue;
                }
                let x = g.origin[0] + i as f64 * px;
                let (rad, d) = s.radius_distance([x, y, z]);
                let c = ((rad - d) / px + 0.5).clamp(0.0, 1.0) as f32;
                if c > coverage[n] {
                    coverage[n] = c;
                }
            }
        }
    }
    for (h, &c) in hu.iter_mut().zip(&coverage) {
        if c > 0.0 && (BLOOD_HU as f32) > *h {
            *h += c * (BLOOD_HU as f32 - *h);
        }
    }
    // Partial volume (scanner point spread), then correlated noise of the requested deviation.
    let mut tmp = Vec::new();
    blur_121(&mut hu, rows, cols, &mut tmp);
    let mut noise_rng =
        ChaCha8Rng::seed_from_u64(params.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ k as u64);
    let mut noise: Vec<f32> = (0..rows * cols)
        .map(|_| StandardNormal.sample(&mut noise_rng))
        .collect();
    blur_121(&mut noise, rows, cols, &mut tmp);
    // [1 2 1]/4 in both axes keeps 0.375² of white noise variance.
    let gain = params.noise_hu / 0.375;
    let out = hu
        .iter()
        .zip(&noise)
        .map(|(&h, &e)| (h + gain * e).round().clamp(HU_MIN as f32, HU_MAX as f32) as i16)
        .collect();
    (out, lobes, opac)
}
