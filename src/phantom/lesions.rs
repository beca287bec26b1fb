//! Opacities: the COVID-19 pattern (multifocal, bilateral, subpleural, lower-lobe predominant
//! ground-glass with some consolidation) and the classifier's negatives (lobar consolidation,
//! solitary nodules, normal lungs).
//!
//! Lesions are planned on a coarse 4 mm grid until the whole-lung opacified fraction reaches a
//! target drawn from the severity profile (Huang et al. 2020 groups), then rendered per voxel by
//! the same membership function, so the fine result lands close to the plan.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::anatomy::{Anatomy, Tissue};
use super::texture::{fractal3, smoothstep};
use crate::quant::{Lobe, opacity};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Pattern {
    Covid,
    Lobar,
    Nodules,
    Normal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    None,
    Mild,
    Moderate,
    Severe,
    Critical,
}

impl Severity {
    /// Whole-lung opacification range (%) of the clinical group, as the phantom promises it.
    pub fn plo_range(self) -> (f64, f64) {
        match self {
            Severity::None | Severity::Mild => (0.0, 0.0),
            Severity::Moderate => (0.5, 7.0),
            Severity::Severe => (10.0, 50.0),
            Severity::Critical => (35.0, 65.0),
        }
    }

    /// Target drawn for one study, kept inside the range with a margin for rendering.
    fn draw_target(self, rng: &mut ChaCha8Rng) -> f64 {
        match self {
            Severity::None | Severity::Mild => 0.0,
            // Log-uniform on [0.8, 5]: median 2 %, as in the moderate group.
            Severity::Moderate => (rng.random_range(0.8f64.ln()..5.0f64.ln())).exp(),
            Severity::Severe => rng.random_range(14.0..44.0),
            Severity::Critical => rng.random_range(40.0..60.0),
        }
    }
}

/// One focal opacity: a noisy ellipsoid of ground-glass with an optional consolidated core.
#[derive(Debug, Clone)]
struct Focal {
    c: [f64; 3],
    r: [f64; 3],
    ggo_hu: f64,
    /// Normalised radius under which the lesion is consolidated (0: pure ground-glass).
    core: f64,
    solid_hu: f64,
    roughness: f64,
    seed: u64,
}

impl Focal {
    fn q(&self, p: [f64; 3]) -> f64 {
        let u = (p[0] - self.c[0]) / self.r[0];
        let v = (p[1] - self.c[1]) / self.r[1];
        let w = (p[2] - self.c[2]) / self.r[2];
        let base = (u * u + v * v + w * w).sqrt();
        if base > 1.0 + self.roughness {
            return base;
        }
        base + self.roughness * fractal3(self.seed, p, 7.0) as f64
    }

    fn z_range(&self) -> (f64, f64) {
        let m = self.r[2] * (1.0 + self.roughness);
        (self.c[2] - m, self.c[2] + m)
    }
}

#[derive(Debug, Clone)]
pub struct Lesions {
    focal: Vec<Focal>,
    lobar: Option<(Lobe, u64)>,
    pub target_plo: f64,
}

/// Label boundary of a focal lesion in normalised radius; HU fade across 0.9..1.0 around it.
const EDGE: f64 = 0.95;

impl Lesions {
    pub fn count(&self) -> usize {
        self.focal.len() + usize::from(self.lobar.is_some())
    }

    /// Lesions that can touch the slab z0..z1.
    pub fn for_slab(&self, z0: f64, z1: f64) -> Lesions {
        Lesions {
            focal: self
                .focal
                .iter()
                .filter(|f| {
                    let (a, b) = f.z_range();
                    b >= z0 && a <= z1
                })
                .cloned()
                .collect(),
            lobar: self.lobar,
            target_plo: self.target_plo,
        }
    }

    /// Apply the opacities to one lung voxel of parenchymal value `hu`; returns the new value and
    /// the opacity label.
    pub fn apply(&self, p: [f64; 3], lobe: Lobe, hu: f64) -> (f64, u8) {
        let mut hu = hu;
        let mut label = opacity::NONE;
        if let Some((l, seed)) = self.lobar
            && l == lobe
        {
            let n = fractal3(seed, p, 18.0) as f64;
            if n > -0.3 {
                let t = fractal3(seed ^ 0xA5, p, 4.0) as f64;
                hu = 5.0 + 25.0 * t;
                label = opacity::CONSOLIDATION;
            } else if n > -0.5 {
                hu = -480.0 + 60.0 * fractal3(seed ^ 0xA7, p, 4.0) as f64;
                label = opacity::GROUND_GLASS;
            }
        }
        for f in &self.focal {
            let q = f.q(p);
            if q >= 1.0 {
                continue;
            }
            let tex = fractal3(f.seed ^ 0x77, p, 3.5) as f64;
            let w = smoothstep(1.0, 0.9, q);
            let ggo = f.ggo_hu + 70.0 * tex;
            if ggo > hu {
                hu += w * (ggo - hu);
            }
            if q < EDGE && label == opacity::NONE {
                label = opacity::GROUND_GLASS;
            }
            if f.core > 0.0 {
                let wc = smoothstep(f.core + 0.04, f.core - 0.04, q);
                let solid = f.solid_hu + 25.0 * tex;
                if solid > hu {
                    hu += wc * (solid - hu);
                }
                if q < f.core {
                    label = opacity::CONSOLIDATION;
                }
            }
        }
        (hu, label)
    }
}

/// Coarse lung map used for planning: lobe label per 4 mm cell and depth from the pleura.
struct Coarse {
    cells: Vec<([f64; 3], Lobe, u8)>,
}

const STEP: f64 = 4.0;

fn coarse_map(anatomy: &Anatomy, extent: [[f64; 2]; 3]) -> Coarse {
    let n = |a: usize| ((extent[a][1] - extent[a][0]) / STEP).ceil() as usize + 1;
    let (nx, ny, nz) = (n(0), n(1), n(2));
    let idx = |i: usize, j: usize, k: usize| (k * ny + j) * nx + i;
    let mut lobe = vec![0u8; nx * ny * nz];
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                let p = [
                    extent[0][0] + i as f64 * STEP,
                    extent[1][0] + j as f64 * STEP,
                    extent[2][0] + k as f64 * STEP,
                ];
                if let Tissue::Lung { lobe: l, .. } = anatomy.tissue(p) {
                    lobe[idx(i, j, k)] = l.label();
                }
            }
        }
    }
    // Depth from the pleura in cells: breadth-first from every non-lung cell (6-neighbour).
    let mut depth = vec![u8::MAX; lobe.len()];
    let mut queue = std::collections::VecDeque::new();
    for (n, &l) in lobe.iter().enumerate() {
        if l == 0 {
            depth[n] = 0;
            queue.push_back(n);
        }
    }
    while let Some(n) = queue.pop_front() {
        let (i, rest) = (n % nx, n / nx);
        let (j, k) = (rest % ny, rest / ny);
        let d = depth[n];
        let mut visit = |m: usize| {
            if depth[m] == u8::MAX {
                depth[m] = d.saturating_add(1);
                queue.push_back(m);
            }
        };
        if i > 0 {
            visit(n - 1);
        }
        if i + 1 < nx {
            visit(n + 1);
        }
        if j > 0 {
            visit(n - nx);
        }
        if j + 1 < ny {
            visit(n + nx);
        }
        if k > 0 {
            visit(n - nx * ny);
        }
        if k + 1 < nz {
            visit(n + nx * ny);
        }
    }
    let mut cells = Vec::new();
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                let n = idx(i, j, k);
                if let Some(l) = Lobe::from_label(lobe[n]) {
                    let p = [
                        extent[0][0] + i as f64 * STEP,
                        extent[1][0] + j as f64 * STEP,
                        extent[2][0] + k as f64 * STEP,
                    ];
                    cells.push((p, l, depth[n]));
                }
            }
        }
    }
    Coarse { cells }
}

fn lobe_weight(l: Lobe) -> f64 {
    match l {
        Lobe::RightLower | Lobe::LeftLower => 2.2,
        Lobe::RightMiddle => 0.8,
        Lobe::RightUpper | Lobe::LeftUpper => 1.0,
    }
}

/// Plan the opacities of a study. `extent` bounds the patient space to search (mm).
pub fn plan(
    anatomy: &Anatomy,
    pattern: Pattern,
    severity: Severity,
    extent: [[f64; 2]; 3],
    rng: &mut ChaCha8Rng,
) -> Lesions {
    let mut lesions = Lesions {
        focal: Vec::new(),
        lobar: None,
        target_plo: 0.0,
    };
    match pattern {
        Pattern::Normal => {}
        Pattern::Lobar => {
            let lobe = Lobe::ALL[rng.random_range(0..5)];
            lesions.lobar = Some((lobe, rng.random()));
        }
        Pattern::Nodules => {
            let coarse = coarse_map(anatomy, extent);
            let deep: Vec<_> = coarse.cells.iter().filter(|c| c.2 >= 3).collect();
            for _ in 0..rng.random_range(1..=3) {
                if deep.is_empty() {
                    break;
                }
                let (c, _, _) = deep[rng.random_range(0..deep.len())];
                let r = rng.random_range(4.0..11.0);
                lesions.focal.push(Focal {
                    c: *c,
                    r: [r, r * rng.random_range(0.85..1.15), r],
                    ggo_hu: 20.0,
                    core: 0.97,
                    solid_hu: 25.0,
                    roughness: 0.05,
                    seed: rng.random(),
                });
            }
        }
        Pattern::Covid => {
            let target = severity.draw_target(rng);
            lesions.target_plo = target;
            if target > 0.0 {
                plan_covid(anatomy, severity, target, extent, rng, &mut lesions.focal);
            }
        }
    }
    lesions
}

fn plan_covid(
    anatomy: &Anatomy,
    severity: Severity,
    target: f64,
    extent: [[f64; 2]; 3],
    rng: &mut ChaCha8Rng,
    out: &mut Vec<Focal>,
) {
    let coarse = coarse_map(anatomy, extent);
    if coarse.cells.is_empty() {
        return;
    }
    // Subpleural candidates (within about 12 mm of the pleura), weighted toward the lower lobes.
    let candidates: Vec<usize> = (0..coarse.cells.len())
        .filter(|&n| coarse.cells[n].2 <= 3)
        .collect();
    let weights: Vec<f64> = candidates
        .iter()
        .map(|&n| lobe_weight(coarse.cells[n].1))
        .collect();
    let total_w: f64 = weights.iter().sum();
    let (r_lo, r_hi, core_share) = match severity {
        Severity::Moderate => (7.0, 20.0, 0.2),
        Severity::Severe => (16.0, 38.0, 0.45),
        _ => (22.0, 48.0, 0.6),
    };
    let mut opacified = vec![false; coarse.cells.len()];
    let mut count = 0usize;
    let lung = coarse.cells.len() as f64;
    for n_lesion in 0..600 {
        if 100.0 * count as f64 / lung >= target {
            break;
        }
        // Alternate sides so that the pattern is bilateral.
        let want_left = n_lesion % 2 == 1;
        let mut pick = None;
        for _ in 0..50 {
            let mut x = rng.random_range(0.0..total_w);
            let mut chosen = candidates[candidates.len() - 1];
            for (w, &n) in weights.iter().zip(&candidates) {
                if x < *w {
                    chosen = n;
                    break;
                }
                x -= w;
            }
            let left = matches!(coarse.cells[chosen].1, Lobe::LeftUpper | Lobe::LeftLower);
            if left == want_left {
                pick = Some(chosen);
                break;
            }
        }
        let Some(chosen) = pick else { continue };
        let c = coarse.cells[chosen].0;
        let r = rng.random_range(r_lo..r_hi);
        let core = if rng.random_bool(core_share) {
            rng.random_range(0.3..0.6)
        } else {
            0.0
        };
        let f = Focal {
            c,
            r: [
                r * rng.random_range(0.7..1.3),
                r * rng.random_range(0.7..1.3),
                r * rng.random_range(0.7..1.3),
            ],
            ggo_hu: rng.random_range(-700.0..-350.0),
            core,
            solid_hu: rng.random_range(-60.0..30.0),
            roughness: rng.random_range(0.12..0.25),
            seed: rng.random(),
        };
        for (n, cell) in coarse.cells.iter().enumerate() {
            if !opacified[n] && f.q(cell.0) < EDGE {
                opacified[n] = true;
                count += 1;
            }
        }
        out.push(f);
    }
}
