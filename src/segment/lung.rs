//! The lungs from the CT's HU alone, with no model: the method that holds on real scans
//! (Hu, Hoffman and Reinhardt, IEEE TMI 2001; Armato, Giger and MacMahon, Med Phys 1999).
//!
//! 1. Air inside the body: below −500 HU and not reached from the image border through air, slice
//!    by slice (the air around the patient and under the table is outside).
//! 2. The trachea and main bronchi: the lumen (below −900 HU) followed down slice by slice from the
//!    trachea near the top of the scan, while each piece stays the size of an airway.
//! 3. The lungs: the large 3D components of what is left, right and left, split where they touch
//!    (anterior or posterior junction) by eroding until they part and growing back.
//! 4. Each lung's holes filled slice by slice (vessels, nodules and consolidation it encloses) and
//!    a 2D closing ("rolling ball") that takes in dense disease at the pleura, away from the hilum.
//!
//! Written by hand: no crate does chest CT lung segmentation; the parts (components, distance
//! transform) are pulmo's own, shared with the other stages.

use std::collections::VecDeque;

use rayon::prelude::*;

use super::postprocess::{
    fill_holes_per_slice, largest_component, neighbours4, reached_from_border,
    run_components_where, squared_depth,
};
use crate::volume::Volume;

/// Aerated lung is below this (HU): normal lung is about −850, ground glass −700 to −300.
pub const AIR_BELOW_HU: i16 = -500;
/// Airway lumen is below this (HU): air, with room for noise, and above most emphysema.
const LUMEN_BELOW_HU: i16 = -900;
/// A trachea's lumen (mm²): diameters from about 6 mm (the larynx, or a lumen narrowed by
/// partial volume on coarse voxels) to 28 mm.
const TRACHEA_AREA_MM2: (f64, f64) = (25.0, 650.0);
/// The trachea is at most this far (mm) left or right of the middle of the body.
const TRACHEA_OFF_MIDDLE_MM: f64 = 40.0;
/// Above the carina the trachea is an air column walled off in the mediastinum: its piece of inside
/// air (below `AIR_BELOW_HU`) is its lumen plus the partial-volume rim, at most this many times the
/// lumen. Lung below `LUMEN_BELOW_HU` (emphysema, a noisy apex) is part of a far larger piece.
const TRACHEA_ISOLATION: f64 = 2.0;
/// How far down from the top of the scan the trachea is looked for (share of the slices).
const TRACHEA_SEARCH_SHARE: f64 = 0.3;
/// A piece of lumen larger than this many times the trachea has leaked into the lung.
const AIRWAY_LEAK_FACTOR: f64 = 2.0;
/// Below this cross-section (mm²) a piece of lumen is airway whatever the airway above it.
const AIRWAY_FLOOR_MM2: f64 = 300.0;
/// The airway is widened by this much (mm) in-plane to take the partial-volume rim of its wall.
const AIRWAY_RIM_MM: f64 = 1.5;
/// A component of inside air smaller than this share of the largest is not a lung (bowel gas,
/// oesophagus, noise).
const MIN_LUNG_SHARE: f64 = 0.05;
/// Radius of the closing (mm) that takes in juxtapleural nodules, consolidation at the pleura and
/// hilar vessels: Armato's rolling ball is of this order.
pub const CLOSING_MM: f64 = 10.0;
/// The closing leaves out the hilum: within this distance (mm, in-plane) of the trachea and main
/// bronchi the notch of the lung holds the hilar vessels and bronchial walls, not lung.
const HILUM_MM: f64 = 15.0;
/// The closing takes in soft tissue, never bone.
const CLOSING_BELOW_HU: i16 = 150;
/// Erosion radii (mm) tried to part two lungs that touch.
const SPLIT_RADII_MM: [f64; 6] = [2.0, 4.0, 6.0, 8.0, 11.0, 15.0];

pub const RIGHT: u8 = 1;
pub const LEFT: u8 = 2;

/// The lungs of a CT, on its grid.
pub struct Lungs {
    /// 0 outside, `RIGHT` or `LEFT`.
    pub side: Vec<u8>,
    /// The trachea and main bronchi removed from the lungs.
    pub airway: Vec<bool>,
    /// Aerated voxels inside the body (below `AIR_BELOW_HU`, not outside air), for the checks.
    pub inside_air: Vec<bool>,
    /// Whether the two lungs had to be parted.
    pub parted: bool,
}

impl Lungs {
    pub fn count(&self, side: u8) -> usize {
        self.side.iter().filter(|&&s| s == side).count()
    }
}

/// Segment the lungs of `volume`.
pub fn segment(volume: &Volume) -> Lungs {
    let g = &volume.geometry;
    let dims = [g.slices, g.rows, g.columns];
    let inside_air = inside_air(&volume.hu, dims);
    let main = largest_component(&inside_air, dims);
    let airway = airway(volume, &inside_air, &main);
    let (mut side, parted) = lungs(volume, &inside_air, &airway, &main);
    let hilum = near(
        &airway,
        dims,
        [g.spacing[0], g.spacing[1], FLAT_MM],
        HILUM_MM,
    );
    for s in [RIGHT, LEFT] {
        complete(&mut side, s, volume, &airway, &hilum);
    }
    Lungs {
        side,
        airway,
        inside_air,
        parted,
    }
}

/// Per slice, air not reached from the image border through air.
fn inside_air(hu: &[i16], dims: [usize; 3]) -> Vec<bool> {
    let (ny, nx) = (dims[1], dims[2]);
    let mut out: Vec<bool> = hu.iter().map(|&h| h < AIR_BELOW_HU).collect();
    out.par_chunks_mut(ny * nx).for_each(|slab| {
        let outside = reached_from_border(slab, nx, ny);
        for (v, o) in slab.iter_mut().zip(outside) {
            *v &= !o;
        }
    });
    out
}

/// 4-connected pieces of `mask` in one slice: the pixel indices of each.
fn pieces(mask: &[bool], nx: usize, ny: usize) -> Vec<Vec<usize>> {
    let mut seen = vec![false; mask.len()];
    let mut out = Vec::new();
    for start in 0..mask.len() {
        if !mask[start] || seen[start] {
            continue;
        }
        seen[start] = true;
        let mut piece = vec![start];
        let mut next = 0;
        while next < piece.len() {
            let i = piece[next];
            next += 1;
            for j in neighbours4(i, nx, ny).into_iter().flatten() {
                if mask[j] && !seen[j] {
                    seen[j] = true;
                    piece.push(j);
                }
            }
        }
        out.push(piece);
    }
    out
}

/// Slice indices from the top of the patient (head end) down.
fn top_down(volume: &Volume) -> Vec<usize> {
    let n = volume.geometry.slices;
    if volume.geometry.slice_direction[2] >= 0.0 {
        (0..n).rev().collect()
    } else {
        (0..n).collect()
    }
}

/// The trachea and main bronchi: lumen followed down from the trachea.
/// The trachea lies between the front and the back of the lungs (`main`, the largest component of
/// inside air, spans them): air trapped in the table under the patient does not.
fn airway(volume: &Volume, inside: &[bool], main: &[bool]) -> Vec<bool> {
    let g = &volume.geometry;
    let (ny, nx) = (g.rows, g.columns);
    let plane = ny * nx;
    let pixel_mm2 = g.spacing[0] * g.spacing[1];
    let mut airway = vec![false; inside.len()];
    let lumen = |k: usize| -> Vec<bool> {
        (0..plane)
            .map(|i| inside[k * plane + i] && volume.hu[k * plane + i] < LUMEN_BELOW_HU)
            .collect()
    };
    // The rows the lungs and airways span, and the middle of the body, left to right.
    let mut rows = (ny, 0usize);
    for (i, &m) in main.iter().enumerate() {
        if m {
            let y = (i / nx) % ny;
            rows = (rows.0.min(y), rows.1.max(y));
        }
    }
    let Some((middle, _)) = body_middle(volume, inside) else {
        return airway;
    };
    if rows.0 > rows.1 {
        return airway;
    }
    let order = top_down(volume);
    let search = ((order.len() as f64 * TRACHEA_SEARCH_SHARE).ceil() as usize).max(1);
    // The trachea: the widest round piece of lumen of a trachea's size near the body's middle
    // in the upper slices (narrower pieces there are the oesophagus, the larynx or noise).
    let mut seed: Option<(usize, Vec<usize>)> = None;
    for (step, &k) in order.iter().enumerate().take(search) {
        let air = &inside[k * plane..(k + 1) * plane];
        let mut air_piece = vec![0usize; plane];
        for p in pieces(air, nx, ny) {
            for &i in &p {
                air_piece[i] = p.len();
            }
        }
        let widest = pieces(&lumen(k), nx, ny)
            .into_iter()
            .filter(|p| air_piece[p[0]] as f64 <= TRACHEA_ISOLATION * p.len() as f64)
            .filter(|p| p.iter().all(|&i| (rows.0..=rows.1).contains(&(i / nx))))
            .filter(|p| {
                let area = p.len() as f64 * pixel_mm2;
                area >= TRACHEA_AREA_MM2.0 && area <= TRACHEA_AREA_MM2.1
            })
            .filter(|p| {
                let cx = p.iter().map(|&i| (i % nx) as f64).sum::<f64>() / p.len() as f64;
                let off = (cx - middle).abs();
                let (x0, x1, y0, y1) = p.iter().fold((nx, 0, ny, 0), |b, &i| {
                    (
                        b.0.min(i % nx),
                        b.1.max(i % nx),
                        b.2.min(i / nx),
                        b.3.max(i / nx),
                    )
                });
                let fill = p.len() as f64 / ((x1 - x0 + 1) * (y1 - y0 + 1)) as f64;
                off * g.spacing[0] <= TRACHEA_OFF_MIDDLE_MM && fill >= 0.5
            })
            .max_by_key(|p| p.len());
        if let Some(p) = widest
            && seed.as_ref().is_none_or(|(_, s)| p.len() > s.len())
        {
            seed = Some((step, p));
        }
    }
    let Some((start, trachea)) = seed else {
        tracing::debug!("no trachea found near the top of the scan");
        return airway;
    };
    tracing::debug!(
        slice = order[start],
        area_mm2 = trachea.len() as f64 * pixel_mm2,
        "trachea found"
    );
    let mut start_mask = vec![false; plane];
    for &i in &trachea {
        start_mask[i] = true;
        airway[order[start] * plane + i] = true;
    }
    // Down from the trachea it divides into the bronchi; up, it only leaves the scan. A piece is
    // airway while it overlaps the airway of the slice before and stays the size of one: larger
    // than twice the widest airway so far (and than the floor), the lumen has leaked into lung.
    let floor = AIRWAY_FLOOR_MM2 / pixel_mm2;
    for slices in [&order[start + 1..], &order[..start]] {
        let mut widest = trachea.len() as f64;
        let mut previous = start_mask.clone();
        let ks: Vec<usize> = if std::ptr::eq(slices, &order[..start]) {
            slices.iter().rev().copied().collect()
        } else {
            slices.to_vec()
        };
        for k in ks {
            let limit = (widest * AIRWAY_LEAK_FACTOR).max(floor);
            let mut current = vec![false; plane];
            let mut any = false;
            for p in pieces(&lumen(k), nx, ny) {
                if p.len() as f64 <= limit && p.iter().any(|&i| previous[i]) {
                    widest = widest.max(p.len() as f64);
                    for &i in &p {
                        current[i] = true;
                        airway[k * plane + i] = true;
                    }
                    any = true;
                }
            }
            if !any {
                break;
            }
            previous = current;
        }
    }
    tracing::debug!(
        voxels = airway.iter().filter(|&&a| a).count(),
        "airway lumen followed"
    );
    // Widen in-plane into inside air: the wall's partial-volume rim is air by the threshold.
    let flat = [g.spacing[0], g.spacing[1], FLAT_MM];
    let outside: Vec<bool> = airway.iter().map(|&a| !a).collect();
    let reach = AIRWAY_RIM_MM.max(g.spacing[0].max(g.spacing[1]) * 1.01);
    let d = squared_depth(&outside, [g.slices, ny, nx], flat);
    for (i, a) in airway.iter_mut().enumerate() {
        if !*a && inside[i] && f64::from(d[i]) <= reach * reach {
            *a = true;
        }
    }
    airway
}

/// A slice spacing that makes the distance transform work within slices only.
const FLAT_MM: f64 = 1.0e4;

/// The centroid (column, row) of the body (everything but the air around it), from every 7th
/// voxel: the middle that right and left are told by. `None` for an image of air only.
fn body_middle(volume: &Volume, inside: &[bool]) -> Option<(f64, f64)> {
    let (ny, nx) = (volume.geometry.rows, volume.geometry.columns);
    let (mut n, mut sx, mut sy) = (0f64, 0f64, 0f64);
    for (i, &h) in volume.hu.iter().enumerate().step_by(7) {
        if h >= AIR_BELOW_HU || inside[i] {
            n += 1.0;
            sx += (i % nx) as f64;
            sy += ((i / nx) % ny) as f64;
        }
    }
    (n > 0.0).then(|| (sx / n, sy / n))
}

/// Patient x (mm, LPS: larger is the patient's left) of the centre of column `c`.
fn patient_x(volume: &Volume, column: f64, row: f64) -> f64 {
    volume.geometry.voxel_position(column, row, 0.0)[0]
}

/// Size, centroid sums, voxels on the patient's right, and whether in the airways' component.
#[derive(Default)]
struct Piece {
    voxels: usize,
    on_right: usize,
    in_main: bool,
}

/// Right and left lung among the inside air less the airway; whether they had to be parted.
/// `main` is the largest component of inside air before the airway was taken out: the lungs and
/// the airways that join them. Air trapped in the table can be larger than one lung, never than
/// both with their airways.
fn lungs(volume: &Volume, inside: &[bool], airway: &[bool], main: &[bool]) -> (Vec<u8>, bool) {
    let g = &volume.geometry;
    let dims = [g.slices, g.rows, g.columns];
    let (ny, nx) = (g.rows, g.columns);
    let mut side = vec![0u8; inside.len()];
    // The middle of the body, left to right (the lungs alone would not do: when the airways do
    // not join them, `main` is one lung).
    let Some((column, row)) = body_middle(volume, inside) else {
        return (side, false);
    };
    if !main.iter().any(|&m| m) {
        return (side, false);
    }
    let middle = patient_x(volume, column, row);
    let side_of = |column: f64, row: f64| {
        if patient_x(volume, column, row) < middle {
            RIGHT
        } else {
            LEFT
        }
    };
    let (runs, roots) = run_components_where(dims, |i| inside[i] && !airway[i]);
    let mut pieces: std::collections::HashMap<u32, Piece> = Default::default();
    for (r, &root) in runs.iter().zip(&roots) {
        let e = pieces.entry(root).or_default();
        e.voxels += r.x1 - r.x0;
        e.on_right += (r.x0..r.x1)
            .filter(|&x| side_of(x as f64, r.y as f64) == RIGHT)
            .count();
        e.in_main |= main[(r.z * ny + r.y) * nx + r.x0];
    }
    let Some((&first, largest)) = pieces
        .iter()
        .max_by_key(|(r, p)| (p.in_main, p.voxels, u32::MAX - **r))
        .map(|(r, p)| (r, p.voxels))
    else {
        return (side, false);
    };
    let on_right = pieces[&first].on_right;
    tracing::debug!(
        components = pieces.len(),
        largest_ml = largest as f64 * g.voxel_volume_ml(),
        on_right_ml = on_right as f64 * g.voxel_volume_ml(),
        "inside air less the airway"
    );
    let paint = |root: u32, s: u8, side: &mut Vec<u8>| {
        for (r, &rt) in runs.iter().zip(&roots) {
            if rt == root {
                let base = (r.z * ny + r.y) * nx;
                side[base + r.x0..base + r.x1].fill(s);
            }
        }
    };
    let min_side = (largest as f64 * 0.2) as usize;
    if on_right >= min_side && largest - on_right >= min_side {
        // Both lungs in one component: they touch at a junction.
        let mut mask = vec![false; inside.len()];
        for (r, &rt) in runs.iter().zip(&roots) {
            if rt == first {
                let base = (r.z * ny + r.y) * nx;
                mask[base + r.x0..base + r.x1].fill(true);
            }
        }
        part(volume, &mask, &mut side, &side_of);
        return (side, true);
    }
    let first_side = if on_right * 2 >= largest { RIGHT } else { LEFT };
    paint(first, first_side, &mut side);
    // The other lung: lung-sized, nearly all on the other side, in the airways' component if one is.
    let other = pieces
        .iter()
        .filter(|&(&r, p)| {
            let there = if first_side == RIGHT {
                p.voxels - p.on_right
            } else {
                p.on_right
            };
            r != first
                && p.voxels as f64 >= largest as f64 * MIN_LUNG_SHARE
                && there as f64 >= p.voxels as f64 * 0.8
        })
        .max_by_key(|(r, p)| (p.in_main, p.voxels, u32::MAX - **r))
        .map(|(&r, _)| r);
    if let Some(r) = other {
        paint(r, if first_side == RIGHT { LEFT } else { RIGHT }, &mut side);
    }
    (side, false)
}

/// Part one component holding both lungs: erode until two large cores on either side remain,
/// then grow them back through the component, breadth first.
fn part(volume: &Volume, mask: &[bool], side: &mut [u8], side_of: &dyn Fn(f64, f64) -> u8) {
    let g = &volume.geometry;
    let dims = [g.slices, g.rows, g.columns];
    let (ny, nx) = (g.rows, g.columns);
    let depth = squared_depth(mask, dims, g.spacing);
    for r in SPLIT_RADII_MM {
        let r2 = (r * r) as f32;
        let (runs, roots) = run_components_where(dims, |i| depth[i] > r2);
        let mut stats: std::collections::HashMap<u32, (usize, f64, f64)> = Default::default();
        for (run, &root) in runs.iter().zip(&roots) {
            let n = run.x1 - run.x0;
            let e = stats.entry(root).or_default();
            e.0 += n;
            e.1 += (run.x0 + run.x1 - 1) as f64 / 2.0 * n as f64;
            e.2 += run.y as f64 * n as f64;
        }
        let total: usize = stats.values().map(|s| s.0).sum();
        let mut best = [None::<(usize, u32)>; 2];
        for (&root, s) in &stats {
            let k = usize::from(side_of(s.1 / s.0 as f64, s.2 / s.0 as f64) == LEFT);
            if best[k].is_none_or(|(n, _)| s.0 > n) {
                best[k] = Some((s.0, root));
            }
        }
        let (Some((nr, right)), Some((nl, left))) = (best[0], best[1]) else {
            continue;
        };
        if (nr.min(nl) as f64) < total as f64 * 0.1 {
            continue;
        }
        let mut queue = VecDeque::new();
        for (run, &root) in runs.iter().zip(&roots) {
            let s = if root == right {
                RIGHT
            } else if root == left {
                LEFT
            } else {
                continue;
            };
            let base = (run.z * ny + run.y) * nx;
            side[base + run.x0..base + run.x1].fill(s);
            queue.extend(base + run.x0..base + run.x1);
        }
        while let Some(i) = queue.pop_front() {
            for j in super::postprocess::neighbours6(i, dims)
                .into_iter()
                .flatten()
            {
                if mask[j] && side[j] == 0 {
                    side[j] = side[i];
                    queue.push_back(j);
                }
            }
        }
        return;
    }
    // No erosion parts them: the middle of the body does.
    for (i, &m) in mask.iter().enumerate() {
        if m {
            side[i] = side_of((i % nx) as f64, ((i / nx) % ny) as f64);
        }
    }
}

/// Fill one lung's holes slice by slice, then close it with the rolling ball.
fn complete(side: &mut [u8], s: u8, volume: &Volume, airway: &[bool], hilum: &[bool]) {
    let g = &volume.geometry;
    let (nz, ny, nx) = (g.slices, g.rows, g.columns);
    // Work in the lung's bounding box, widened by the closing radius.
    let Some((lo, hi)) = bounds(side, s, [nz, ny, nx]) else {
        return;
    };
    let my = (CLOSING_MM / g.spacing[1]).ceil() as usize + 1;
    let mx = (CLOSING_MM / g.spacing[0]).ceil() as usize + 1;
    let (y0, y1) = (lo[1].saturating_sub(my), (hi[1] + my + 1).min(ny));
    let (x0, x1) = (lo[2].saturating_sub(mx), (hi[2] + mx + 1).min(nx));
    let (z0, z1) = (lo[0], hi[0] + 1);
    let (by, bx) = (y1 - y0, x1 - x0);
    let bdims = [z1 - z0, by, bx];
    let at = |z: usize, y: usize, x: usize| ((z0 + z) * ny + y0 + y) * nx + x0 + x;
    let mut boxed = vec![0u8; bdims[0] * by * bx];
    for z in 0..bdims[0] {
        for y in 0..by {
            for x in 0..bx {
                boxed[(z * by + y) * bx + x] = u8::from(side[at(z, y, x)] == s);
            }
        }
    }
    let before: Vec<bool> = boxed.iter().map(|&b| b > 0).collect();
    fill_holes_per_slice(&mut boxed, bdims);
    let inferior_is_lower_index = g.slice_direction[2] >= 0.0;
    let min_area = DOME_MIN_AREA_MM2 / (g.spacing[0] * g.spacing[1]);
    unfill_domes(
        &mut boxed,
        &before,
        bdims,
        inferior_is_lower_index,
        min_area,
    );
    // Closing in-plane: dilate by the radius (distance from outside to the lung), then erode.
    let flat = [g.spacing[0], g.spacing[1], FLAT_MM];
    let r2 = (CLOSING_MM * CLOSING_MM) as f32;
    let outside: Vec<bool> = boxed.iter().map(|&b| b == 0).collect();
    let to_lung = squared_depth(&outside, bdims, flat);
    let dilated: Vec<bool> = boxed
        .iter()
        .zip(&to_lung)
        .map(|(&b, &d)| b > 0 || d <= r2)
        .collect();
    let depth = squared_depth(&dilated, bdims, flat);
    for z in 0..bdims[0] {
        for y in 0..by {
            for x in 0..bx {
                let b = (z * by + y) * bx + x;
                let i = at(z, y, x);
                if boxed[b] == 0
                    && depth[b] > r2
                    && side[i] == 0
                    && !airway[i]
                    && !hilum[i]
                    && volume.hu[i] >= AIR_BELOW_HU
                    && volume.hu[i] < CLOSING_BELOW_HU
                {
                    boxed[b] = 1;
                }
            }
        }
    }
    // No second filling: a ring of lung that the closing has just shut around the dome of the
    // diaphragm would make the liver or the spleen lung.
    for z in 0..bdims[0] {
        for y in 0..by {
            for x in 0..bx {
                let i = at(z, y, x);
                if boxed[(z * by + y) * bx + x] > 0 && side[i] == 0 && !airway[i] {
                    side[i] = s;
                }
            }
        }
    }
}

/// Dice of two masks (1 when both are empty).
pub fn dice(a: &[bool], b: &[bool]) -> f64 {
    let (mut inter, mut na, mut nb) = (0u64, 0u64, 0u64);
    for (&x, &y) in a.iter().zip(b) {
        inter += u64::from(x && y);
        na += u64::from(x);
        nb += u64::from(y);
    }
    if na + nb == 0 {
        1.0
    } else {
        2.0 * inter as f64 / (na + nb) as f64
    }
}

/// Voxels within `mm` of a set voxel of `mask` (none when `mask` is empty).
fn near(mask: &[bool], dims: [usize; 3], spacing: [f64; 3], mm: f64) -> Vec<bool> {
    if !mask.iter().any(|&m| m) {
        return vec![false; mask.len()];
    }
    let outside: Vec<bool> = mask.iter().map(|&m| !m).collect();
    let r2 = (mm * mm) as f32;
    squared_depth(&outside, dims, spacing)
        .into_iter()
        .map(|d| d <= r2)
        .collect()
}

/// A hole of the lung in a slice as wide as this (mm²) may be the dome of the diaphragm.
const DOME_MIN_AREA_MM2: f64 = 300.0;

/// Undo the filling of holes that are the dome of the diaphragm: where the lower lobe rings the
/// liver or the spleen in a slice, the ring's hole is abdomen. Followed through the slices (hole
/// voxels only), such a hole opens downwards onto what lies under the lung; a vessel, a nodule or
/// consolidation that the lung encloses ends on lung, or is small.
fn unfill_domes(
    filled: &mut [u8],
    before: &[bool],
    dims: [usize; 3],
    inferior_is_lower_index: bool,
    min_area_voxels: f64,
) {
    let (nz, ny, nx) = (dims[0], dims[1], dims[2]);
    let plane = ny * nx;
    let hole = |i: usize| filled[i] > 0 && !before[i];
    let (runs, roots) = run_components_where(dims, hole);
    let mut area: std::collections::HashMap<(u32, usize), usize> = Default::default();
    // Faces below each piece: onto lung (closed) or onto anything else (open).
    let mut below: std::collections::HashMap<u32, (usize, usize)> = Default::default();
    for (r, &root) in runs.iter().zip(&roots) {
        *area.entry((root, r.z)).or_default() += r.x1 - r.x0;
        let under = if inferior_is_lower_index {
            r.z.checked_sub(1)
        } else {
            (r.z + 1 < nz).then_some(r.z + 1)
        };
        let e = below.entry(root).or_default();
        for x in r.x0..r.x1 {
            match under {
                None => e.1 += 1,
                Some(z) => {
                    let j = z * plane + r.y * nx + x;
                    if hole(j) {
                        continue;
                    }
                    if before[j] {
                        e.0 += 1;
                    } else {
                        e.1 += 1;
                    }
                }
            }
        }
    }
    let mut widest: std::collections::HashMap<u32, usize> = Default::default();
    for (&(root, _), &a) in &area {
        let w = widest.entry(root).or_default();
        *w = (*w).max(a);
    }
    let dome: std::collections::HashSet<u32> = below
        .iter()
        .filter(|&(root, &(closed, open))| {
            open > closed && widest.get(root).copied().unwrap_or(0) as f64 >= min_area_voxels
        })
        .map(|(&root, _)| root)
        .collect();
    for (r, &root) in runs.iter().zip(&roots) {
        if dome.contains(&root) {
            let base = r.z * plane + r.y * nx;
            filled[base + r.x0..base + r.x1].fill(0);
        }
    }
}

/// Bounding box (inclusive) of the voxels labelled `s`.
fn bounds(labels: &[u8], s: u8, dims: [usize; 3]) -> Option<([usize; 3], [usize; 3])> {
    let (ny, nx) = (dims[1], dims[2]);
    let mut lo = [usize::MAX; 3];
    let mut hi = [0usize; 3];
    let mut any = false;
    for (i, &l) in labels.iter().enumerate() {
        if l == s {
            let p = [i / (ny * nx), (i / nx) % ny, i % nx];
            for a in 0..3 {
                lo[a] = lo[a].min(p[a]);
                hi[a] = hi[a].max(p[a]);
            }
            any = true;
        }
    }
    any.then_some((lo, hi))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::Geometry;

    /// A chest: soft-tissue ellipse in air, two lungs with a vessel each, a trachea above them,
    /// a dense plaque against the right lung's outer wall.
    fn chest(touching: bool) -> Volume {
        let (nz, ny, nx) = (40usize, 64usize, 96usize);
        let mut hu = vec![-1000i16; nz * ny * nx];
        for z in 0..nz {
            for y in 0..ny {
                for x in 0..nx {
                    let (fx, fy) = ((x as f64 - 47.5) / 46.0, (y as f64 - 31.5) / 30.0);
                    let i = (z * ny + y) * nx + x;
                    if fx * fx + fy * fy > 1.0 {
                        continue;
                    }
                    hu[i] = 40;
                    let (right_end, left_start) = if touching { (48, 48) } else { (43, 53) };
                    let in_lung = z < 30
                        && (14..50).contains(&y)
                        && ((14..right_end).contains(&x) || (left_start..82).contains(&x));
                    if in_lung {
                        hu[i] = -850;
                    }
                    // Vessels inside each lung.
                    if in_lung && (30..33).contains(&y) && (x == 25 || x == 70) {
                        hu[i] = 40;
                    }
                    // Consolidation at the right lung's lateral pleura.
                    if in_lung && (28..34).contains(&y) && (14..18).contains(&x) {
                        hu[i] = 20;
                    }
                    // The main bronchi, from the trachea into both lungs.
                    if (27..29).contains(&z) && (23..25).contains(&y) && (30..66).contains(&x) {
                        hu[i] = -1000;
                    }
                    // The trachea, above the lungs and into their middle.
                    if z >= 26 && (44..52).contains(&x) && (20..28).contains(&y) && z < nz {
                        hu[i] = -1000;
                    }
                }
            }
        }
        Volume {
            geometry: Geometry {
                rows: ny,
                columns: nx,
                slices: nz,
                origin: [0.0; 3],
                row_direction: [1.0, 0.0, 0.0],
                column_direction: [0.0, 1.0, 0.0],
                slice_direction: [0.0, 0.0, 1.0],
                spacing: [2.0, 2.0, 2.5],
            },
            hu,
        }
    }

    fn check(touching: bool) {
        let v = chest(touching);
        let lungs = segment(&v);
        let (ny, nx) = (64, 96);
        let at = |z: usize, y: usize, x: usize| (z * ny + y) * nx + x;
        // Patient's right is the smaller x (columns run to the patient's left).
        assert_eq!(lungs.side[at(10, 40, 20)], RIGHT);
        assert_eq!(lungs.side[at(10, 40, 80)], LEFT);
        // The vessels and the plaque at the pleura are lung; the body wall and outside are not.
        assert_eq!(lungs.side[at(10, 31, 25)], RIGHT);
        assert_eq!(lungs.side[at(10, 31, 70)], LEFT);
        assert_eq!(lungs.side[at(10, 31, 15)], RIGHT);
        assert_eq!(lungs.side[at(10, 31, 8)], 0);
        assert_eq!(lungs.side[at(10, 31, 0)], 0);
        // The trachea above the lungs is airway, not lung.
        assert!(lungs.airway[at(35, 24, 48)]);
        assert_eq!(lungs.side[at(35, 24, 48)], 0);
        assert_eq!(lungs.parted, touching);
        let (r, l) = (lungs.count(RIGHT), lungs.count(LEFT));
        assert!(r.abs_diff(l) * 10 < r, "right {r}, left {l}");
    }

    #[test]
    fn finds_two_lungs_with_vessels_and_pleural_disease_and_without_the_trachea() {
        check(false);
    }

    #[test]
    fn parts_lungs_that_touch() {
        check(true);
    }

    #[test]
    fn a_volume_without_air_has_no_lungs() {
        let mut v = chest(false);
        v.hu.fill(40);
        let lungs = segment(&v);
        assert_eq!(lungs.count(RIGHT) + lungs.count(LEFT), 0);
    }
}
