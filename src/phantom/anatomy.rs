//! The synthetic patient: body wall, bones, mediastinum, diaphragm, lungs and lobes, as functions
//! of a point in patient space (LPS, mm).
//!
//! Shapes are analytic so that any voxel can be classified on its own, at any resolution: the same
//! seed gives the same patient at `small` and `full` size. Dimensions are adult averages scaled and
//! shifted per seed; they aim at what a radiologist recognises, not at an anatomical atlas.

use std::f64::consts::TAU;

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::texture::smoothstep;
use crate::quant::Lobe;

/// Which structure a point belongs to, before lung texture, vessels and opacities are added.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Tissue {
    /// Outside the patient or inside an airway.
    Air,
    /// Lung parenchyma of a lobe; `fissure` is the distance (mm) to the nearest fissure.
    Lung { lobe: Lobe, fissure: f64 },
    /// Everything else, with its Hounsfield value.
    Solid(f32),
}

#[derive(Debug, Clone)]
struct Ellipsoid {
    c: [f64; 3],
    r: [f64; 3],
}

impl Ellipsoid {
    fn inside(&self, p: [f64; 3]) -> bool {
        let u = (p[0] - self.c[0]) / self.r[0];
        let v = (p[1] - self.c[1]) / self.r[1];
        let w = (p[2] - self.c[2]) / self.r[2];
        u * u + v * v + w * w < 1.0
    }
}

/// A fissure as a height field z = f(x, y): the points below belong to the lower lobe (oblique)
/// or to the middle lobe (horizontal).
#[derive(Debug, Clone)]
struct Fissure {
    z0: f64,
    slope_y: f64,
    slope_x: f64,
    curve: f64,
    x_mid: f64,
    wobble: f64,
    phase: [f64; 2],
}

impl Fissure {
    fn height(&self, x: f64, y: f64) -> f64 {
        let dx = (x - self.x_mid) / 60.0;
        self.z0
            + self.slope_y * y
            + self.slope_x * (x - self.x_mid)
            + self.curve * dx * dx
            + self.wobble * (x / 23.0 + self.phase[0]).sin() * (y / 31.0 + self.phase[1]).cos()
    }

    /// Approximate perpendicular distance of a point from the surface.
    fn distance(&self, p: [f64; 3]) -> f64 {
        (p[2] - self.height(p[0], p[1])).abs()
            / (1.0 + self.slope_y * self.slope_y + self.slope_x * self.slope_x).sqrt()
    }
}

/// Diaphragm dome of one side: highest over the centre of the hemithorax, lower toward the
/// costophrenic recesses, deepest posteriorly.
#[derive(Debug, Clone)]
struct Dome {
    x: f64,
    y: f64,
    z: f64,
    k: f64,
}

impl Dome {
    fn height(&self, x: f64, y: f64) -> f64 {
        let (dx, dy) = (x - self.x, y - self.y);
        self.z - self.k * (dx * dx + dy * dy) - 0.35 * (y - self.y).max(0.0)
    }
}

#[derive(Debug, Clone)]
pub struct Anatomy {
    body_a: f64,
    body_b_ant: f64,
    body_b_post: f64,
    body_cx: f64,
    fat: f64,
    wall: f64,
    apex: [f64; 2],
    domes: [Dome; 2],
    lung_center: [[f64; 2]; 2],
    heart: Ellipsoid,
    arch: Ellipsoid,
    aorta_desc: [f64; 3],
    aorta_asc: [f64; 3],
    svc: [f64; 3],
    med_half: f64,
    spine_y: f64,
    spine_r: f64,
    vertebra_period: f64,
    vertebra_phase: f64,
    trachea: [f64; 3],
    carina_z: f64,
    hila: [[f64; 3]; 2],
    bronchus_r: [f64; 2],
    right_oblique: Fissure,
    right_horizontal: Fissure,
    left_oblique: Fissure,
    rib_top: f64,
    rib_gap: f64,
    rib_drop: f64,
    table_y: f64,
    pub texture_seed: u64,
}

fn jitter(rng: &mut ChaCha8Rng, value: f64, spread: f64) -> f64 {
    value + rng.random_range(-spread..=spread)
}

impl Anatomy {
    pub fn new(rng: &mut ChaCha8Rng) -> Anatomy {
        let scale = rng.random_range(0.92..1.08);
        let body_a = 160.0 * scale * rng.random_range(0.95..1.05);
        let body_b_ant = 112.0 * scale * rng.random_range(0.94..1.06);
        let body_b_post = body_b_ant * 0.9;
        let fat = rng.random_range(8.0..20.0);
        let apex_r = jitter(rng, 118.0, 8.0);
        let apex_l = apex_r + rng.random_range(-4.0..6.0);
        let dome_r = jitter(rng, -52.0, 8.0);
        let dome_l = dome_r - rng.random_range(8.0..18.0);
        let carina_z = jitter(rng, 48.0, 5.0);
        let heart_z = dome_l + rng.random_range(42.0..52.0);
        let tilt = rng.random_range(0.82..1.0);
        Anatomy {
            body_a,
            body_b_ant,
            body_b_post,
            body_cx: jitter(rng, 0.0, 6.0),
            fat,
            wall: fat + rng.random_range(16.0..20.0),
            apex: [apex_r, apex_l],
            domes: [
                Dome {
                    x: jitter(rng, -72.0, 6.0),
                    y: jitter(rng, 5.0, 5.0),
                    z: dome_r,
                    k: rng.random_range(0.0055..0.0075),
                },
                Dome {
                    x: jitter(rng, 72.0, 6.0),
                    y: jitter(rng, 5.0, 5.0),
                    z: dome_l,
                    k: rng.random_range(0.0055..0.0075),
                },
            ],
            lung_center: [[-75.0, 12.0], [75.0, 12.0]],
            heart: Ellipsoid {
                c: [jitter(rng, 24.0, 6.0), jitter(rng, -22.0, 5.0), heart_z],
                r: [
                    62.0 * rng.random_range(0.9..1.12),
                    47.0 * rng.random_range(0.9..1.1),
                    55.0 * rng.random_range(0.9..1.1),
                ],
            },
            arch: Ellipsoid {
                c: [8.0, 4.0, carina_z + 18.0],
                r: [30.0, 36.0, 14.0],
            },
            aorta_desc: [20.0, 24.0, 12.0],
            aorta_asc: [6.0, -22.0, 15.0],
            svc: [-26.0, -14.0, 10.0],
            med_half: rng.random_range(15.0..20.0),
            spine_y: 36.0,
            spine_r: 16.5,
            vertebra_period: 26.0,
            vertebra_phase: rng.random_range(0.0..26.0),
            trachea: [jitter(rng, 0.0, 2.0), 0.0, rng.random_range(8.0..10.5)],
            carina_z,
            hila: [[-42.0, 8.0, carina_z - 18.0], [44.0, 8.0, carina_z - 24.0]],
            bronchus_r: [6.5, 6.0],
            right_oblique: Fissure {
                z0: jitter(rng, -4.0, 7.0),
                slope_y: tilt,
                slope_x: rng.random_range(-0.1..0.1),
                curve: rng.random_range(-8.0..8.0),
                x_mid: -75.0,
                wobble: rng.random_range(1.5..4.0),
                phase: [rng.random_range(0.0..TAU), rng.random_range(0.0..TAU)],
            },
            right_horizontal: Fissure {
                z0: jitter(rng, 16.0, 6.0),
                slope_y: rng.random_range(0.05..0.2),
                slope_x: rng.random_range(-0.05..0.05),
                curve: rng.random_range(-5.0..5.0),
                x_mid: -75.0,
                wobble: rng.random_range(1.0..3.0),
                phase: [rng.random_range(0.0..TAU), rng.random_range(0.0..TAU)],
            },
            left_oblique: Fissure {
                z0: jitter(rng, 6.0, 7.0),
                slope_y: tilt + rng.random_range(-0.05..0.08),
                slope_x: rng.random_range(-0.1..0.1),
                curve: rng.random_range(-8.0..8.0),
                x_mid: 75.0,
                wobble: rng.random_range(1.5..4.0),
                phase: [rng.random_range(0.0..TAU), rng.random_range(0.0..TAU)],
            },
            rib_top: apex_r + 4.0,
            rib_gap: rng.random_range(22.0..26.0),
            rib_drop: rng.random_range(40.0..55.0),
            table_y: body_b_post + 4.0,
            texture_seed: rng.random(),
        }
    }

    /// Lowest and highest z (mm) that any lung reaches; the phantom's grid is built around them.
    pub fn lung_z_range(&self) -> (f64, f64) {
        let lowest = self.domes[0].z.min(self.domes[1].z) - 95.0;
        (lowest, self.apex[0].max(self.apex[1]))
    }

    /// Body outline: distance (mm) from the skin inward along the ray from the body centre;
    /// negative outside.
    fn depth(&self, x: f64, y: f64, z: f64) -> f64 {
        let b = if y < 0.0 {
            self.body_b_ant
        } else {
            self.body_b_post
        };
        let dx = x - self.body_cx;
        let narrow = 1.0 - 0.12 * smoothstep(self.apex[0] - 110.0, self.apex[0] + 10.0, z);
        let a = self.body_a * narrow;
        let (u, v) = (dx / a, y / b);
        let rn = (u * u + v * v).sqrt();
        let dist = (dx * dx + y * y).sqrt();
        if rn < 1e-9 {
            return a.min(b);
        }
        dist * (1.0 / rn - 1.0)
    }

    /// Hemithorax (0 right, 1 left) a point's lung would belong to.
    fn side(&self, x: f64) -> usize {
        if x < 0.0 { 0 } else { 1 }
    }

    /// Is the point inside a lung? Returns the side. Vessels and lesion planning use this too.
    pub fn lung_side(&self, p: [f64; 3]) -> Option<usize> {
        let [x, y, z] = p;
        let s = self.side(x);
        if z > self.apex[s] || z < self.domes[s].height(x, y) {
            return None;
        }
        if self.depth(x, y, z) < self.wall {
            return None;
        }
        if x.abs() < self.med_half {
            return None;
        }
        // Apex taper: the lung narrows toward its dome-shaped top.
        let t = ((self.apex[s] - z) / 70.0).clamp(0.0, 4.0).sqrt();
        let c = self.lung_center[s];
        let (u, v) = ((x - c[0]) / (72.0 * t), (y - c[1]) / (82.0 * t));
        if u * u + v * v >= 1.0 {
            return None;
        }
        if self.mediastinal(p) || self.spine_block(x, y) {
            return None;
        }
        if self.in_airway(p).is_some() {
            return None;
        }
        Some(s)
    }

    fn lobe_of(&self, s: usize, p: [f64; 3]) -> (Lobe, f64) {
        let [x, y, z] = p;
        if s == 0 {
            let ob = self.right_oblique.height(x, y);
            let d_ob = self.right_oblique.distance(p);
            if z < ob {
                (Lobe::RightLower, d_ob)
            } else {
                let hz = self.right_horizontal.height(x, y);
                let d = d_ob.min(self.right_horizontal.distance(p));
                if z < hz {
                    (Lobe::RightMiddle, d)
                } else {
                    // The horizontal fissure only separates RUL from RML anterior to the oblique one.
                    (Lobe::RightUpper, d)
                }
            }
        } else {
            let d = self.left_oblique.distance(p);
            if z < self.left_oblique.height(x, y) {
                (Lobe::LeftLower, d)
            } else {
                (Lobe::LeftUpper, d)
            }
        }
    }

    fn mediastinal(&self, p: [f64; 3]) -> bool {
        let [x, y, z] = p;
        if self.heart.inside(p) || self.arch.inside(p) {
            return true;
        }
        let circle = |c: [f64; 3]| {
            let (dx, dy) = (x - c[0], y - c[1]);
            dx * dx + dy * dy < c[2] * c[2]
        };
        let arch_z = self.arch.c[2];
        if z < arch_z && circle(self.aorta_desc) {
            return true;
        }
        if z < arch_z && z > self.heart.c[2] && circle(self.aorta_asc) {
            return true;
        }
        if z < arch_z + 30.0 && z > self.heart.c[2] && circle(self.svc) {
            return true;
        }
        // Great vessels widen the upper mediastinum.
        let widen = 14.0 * (1.0 - ((z - (arch_z + 20.0)) / 30.0).powi(2)).max(0.0);
        x.abs() < self.med_half + widen && y < 10.0
    }

    fn spine_block(&self, x: f64, y: f64) -> bool {
        x.abs() < self.spine_r + 6.0 && y > self.spine_y - self.spine_r - 4.0
    }

    /// Trachea and main bronchi: Some(true) inside the lumen, Some(false) in the wall.
    fn in_airway(&self, p: [f64; 3]) -> Option<bool> {
        let [x, y, z] = p;
        let t = self.trachea;
        if z >= self.carina_z {
            let (dx, dy) = (x - t[0], y - t[1]);
            let d = (dx * dx + dy * dy).sqrt();
            return airway_wall(d, t[2]);
        }
        let carina = [t[0], t[1], self.carina_z];
        let mut best: Option<bool> = None;
        for s in 0..2 {
            let d = segment_distance(p, carina, self.hila[s]);
            match airway_wall(d, self.bronchus_r[s]) {
                Some(true) => return Some(true),
                Some(false) => best = Some(false),
                None => {}
            }
        }
        best
    }

    fn vertebra(&self, x: f64, y: f64, z: f64) -> Option<f32> {
        let sy = self.spine_y;
        let phase = (z - self.vertebra_phase).rem_euclid(self.vertebra_period);
        let disc = phase < 5.0;
        let (dx, dy) = (x / (self.spine_r * 1.15), (y - sy) / self.spine_r);
        let r = (dx * dx + dy * dy).sqrt();
        if r < 1.0 {
            return Some(if disc {
                80.0
            } else if r > 0.85 {
                700.0
            } else {
                260.0
            });
        }
        // Spinal canal and posterior arch.
        let canal = [0.0, sy + self.spine_r + 9.0];
        let d = ((x - canal[0]).powi(2) + (y - canal[1]).powi(2)).sqrt();
        if d < 8.0 {
            return Some(15.0);
        }
        if d < 14.0 && y > sy + 4.0 && !disc {
            return Some(600.0);
        }
        if x.abs() < 4.0 && y > canal[1] && y < canal[1] + 32.0 && phase > 8.0 && phase < 20.0 {
            return Some(650.0);
        }
        None
    }

    /// Ribs, costal cartilage, sternum and scapulae in the chest wall.
    fn wall_bone(&self, x: f64, y: f64, z: f64, depth: f64) -> Option<f32> {
        let dx = x - self.body_cx;
        let phi = dx.abs().atan2(y); // 0 posterior, π anterior
        // Sternum: anterior midline.
        let sternum_top = self.apex[0] - 20.0;
        let sternum_bottom = self.domes[0].z + 10.0;
        if dx.abs() < 14.0
            && y < 0.0
            && depth > self.fat + 2.0
            && depth < self.fat + 12.0
            && z < sternum_top
            && z > sternum_bottom
        {
            let edge = dx.abs() > 11.0 || depth < self.fat + 4.0 || depth > self.fat + 10.0;
            return Some(if edge { 750.0 } else { 300.0 });
        }
        // Scapulae: posterolateral plates outside the ribs in the upper chest.
        if phi > 0.5
            && phi < 1.15
            && z < self.apex[0] + 5.0
            && z > self.apex[0] - 95.0
            && depth > self.fat + 2.0
            && depth < self.fat + 6.0
        {
            return Some(650.0);
        }
        // Ribs: arcs that descend from the spine toward the front.
        let rib_depth = self.wall - 6.0;
        if (depth - rib_depth).abs() > 4.5 || phi > 2.75 {
            return None;
        }
        let drop = self.rib_drop * (1.0 - phi.cos()) / 2.0;
        let k = ((self.rib_top - drop - z) / self.rib_gap)
            .round()
            .clamp(0.0, 11.0);
        let zc = self.rib_top - drop - k * self.rib_gap;
        let (u, v) = ((depth - rib_depth) / 4.5, (z - zc) / 5.5);
        let r = u * u + v * v;
        if r < 1.0 {
            if phi > 2.35 {
                return Some(110.0); // costal cartilage
            }
            return Some(if r < 0.35 { 320.0 } else { 850.0 });
        }
        None
    }

    /// Classify a point.
    pub fn tissue(&self, p: [f64; 3]) -> Tissue {
        let [x, y, z] = p;
        let depth = self.depth(x, y, z);
        if depth < 0.0 {
            // Table: two carbon shells with foam between, curved under the patient.
            let ty = self.table_y + 0.0006 * x * x;
            if x.abs() < 230.0 && y > ty && y < ty + 40.0 {
                let inner = y - ty;
                return Tissue::Solid(if !(3.0..=37.0).contains(&inner) {
                    250.0
                } else {
                    -920.0
                });
            }
            return Tissue::Air;
        }
        if depth < 1.5 {
            return Tissue::Solid(25.0);
        }
        if depth < self.fat {
            return Tissue::Solid(-100.0);
        }
        if let Some(hu) = self.wall_bone(x, y, z, depth) {
            return Tissue::Solid(hu);
        }
        if depth < self.wall {
            return Tissue::Solid(45.0);
        }
        if let Some(hu) = self.vertebra(x, y, z) {
            return Tissue::Solid(hu);
        }
        if let Some(lumen) = self.in_airway(p) {
            return if lumen {
                Tissue::Air
            } else {
                Tissue::Solid(60.0)
            };
        }
        if let Some(s) = self.lung_side(p) {
            let (lobe, fissure) = self.lobe_of(s, p);
            return Tissue::Lung { lobe, fissure };
        }
        if self.spine_block(x, y) {
            return Tissue::Solid(50.0);
        }
        // Below the domes: liver on the right, stomach (with its air bubble) and spleen on the left.
        if x < 10.0 && z < self.domes[0].height(x, y) {
            return Tissue::Solid(62.0);
        }
        if x >= 10.0 && z < self.domes[1].height(x, y) {
            let bubble = Ellipsoid {
                c: [self.domes[1].x, -25.0, self.domes[1].z - 22.0],
                r: [28.0, 22.0, 12.0],
            };
            if bubble.inside(p) {
                return Tissue::Air;
            }
            return Tissue::Solid(if y > 30.0 { 48.0 } else { 35.0 });
        }
        if self.heart.inside(p)
            || self.arch.inside(p)
            || (z < self.arch.c[2] && self.mediastinal(p))
        {
            return Tissue::Solid(40.0);
        }
        // Remaining mediastinum: fat anteriorly, soft tissue elsewhere.
        if y < -10.0 && x.abs() < 40.0 {
            return Tissue::Solid(-85.0);
        }
        Tissue::Solid(35.0)
    }
}

fn airway_wall(d: f64, r: f64) -> Option<bool> {
    if d < r {
        Some(true)
    } else if d < r + 2.0 {
        Some(false)
    } else {
        None
    }
}

/// Distance from point p to the segment a–b.
pub fn segment_distance(p: [f64; 3], a: [f64; 3], b: [f64; 3]) -> f64 {
    let ab = [b[0] - a[0], b[1] - a[1], b[2] - a[2]];
    let ap = [p[0] - a[0], p[1] - a[1], p[2] - a[2]];
    let len2 = ab[0] * ab[0] + ab[1] * ab[1] + ab[2] * ab[2];
    let t = if len2 > 0.0 {
        ((ap[0] * ab[0] + ap[1] * ab[1] + ap[2] * ab[2]) / len2).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let q = [ap[0] - t * ab[0], ap[1] - t * ab[1], ap[2] - t * ab[2]];
    (q[0] * q[0] + q[1] * q[1] + q[2] * q[2]).sqrt()
}

impl Anatomy {
    pub fn hilum(&self, side: usize) -> [f64; 3] {
        self.hila[side]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn landmarks_are_where_they_belong() {
        let a = Anatomy::new(&mut ChaCha8Rng::seed_from_u64(1));
        // Mid-chest, lateral: lung. Centre of the heart: soft tissue. Far outside: air.
        assert!(matches!(a.tissue([-90.0, 10.0, 40.0]), Tissue::Lung { .. }));
        assert!(matches!(a.tissue([90.0, 10.0, 40.0]), Tissue::Lung { .. }));
        assert!(matches!(a.tissue(a.heart.c), Tissue::Solid(_)));
        assert!(matches!(a.tissue([0.0, -170.0, 0.0]), Tissue::Air));
        // Upper right lung is RUL, lower posterior right lung is RLL.
        match a.tissue([-80.0, 10.0, 90.0]) {
            Tissue::Lung { lobe, .. } => assert_eq!(lobe, Lobe::RightUpper),
            t => panic!("expected lung, got {t:?}"),
        }
        match a.tissue([-80.0, 50.0, -40.0]) {
            Tissue::Lung { lobe, .. } => assert_eq!(lobe, Lobe::RightLower),
            t => panic!("expected lung, got {t:?}"),
        }
    }
}
