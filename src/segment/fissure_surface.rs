//! Each fissure as one smooth surface, moved onto the density ridge the CT shows along it.
//!
//! A fissure is a smooth sheet of pleura. The lobes model's border between two lobes of one lung
//! follows it within a few millimetres but with errors that vary slowly over the surface (a tilt,
//! a bend). On thick slices the fissure is averaged into a ridge of some 30 HU against noise as
//! strong, and found opacities hide it. So each fissure is taken as a height field
//! z = h(x, y) (the z that best splits the lower lobe from the upper in each column of the CT),
//! smoothed by a local plane fit with Gaussian weights (a plain weighted mean would pull a
//! sloping surface toward its middle at its edges), and then shifted by the one plane
//! (offset and two slopes, a few millimetres) that lies on the strongest ridge of the CT: averaged over
//! thousands of columns, a ridge too faint to see in any one of them decides. Optionally each
//! column of an oblique fissure then moves a little further, to the strongest ridge of the columns
//! around it, which follows a bend of the model's border that no plane fits; the horizontal
//! fissure's ridge can leave out the vessels that run in its plane. The lobes' voxels near the
//! surface then take the side they lie on. The lungs do not change, only which lobe a voxel
//! belongs to.
//! (Chosen on tuning phantoms: models/train/README.md, "The fissure as a surface".)

use rayon::prelude::*;

use crate::infer::model::FissureSurface;
use crate::labels::opacity;

/// Step (mm) of the search for the shift along z.
const STEP_MM: f64 = 0.5;
/// A ridge is scored against the CT one slice above and below it, and at least this far (mm).
const RIDGE_MIN_MM: f64 = 2.0;
/// The plane's slopes (mm of shift per mm across the CT) are searched within this range ...
const MAX_SLOPE: f64 = 0.15;
/// ... in steps of this.
const SLOPE_STEP: f64 = 0.025;

/// Relabel `lobes` (labels on the CT grid, `[z][y][x]` of `dims`; `spacing` x, y, z in mm) near
/// each fissure's smoothed, CT-shifted surface.
pub fn fit(
    lobes: &mut [u8],
    opacities: &[u8],
    hu: &[i16],
    dims: [usize; 3],
    spacing: [f64; 3],
    rule: &FissureSurface,
) {
    let [low, high] = rule.hu_range.map(|v| v.round() as i32);
    let level: Vec<f32> = hu
        .par_iter()
        .map(|&v| (i32::from(v).clamp(low, high)) as f32)
        .collect();
    let clear: Vec<bool> = lobes
        .par_iter()
        .zip(opacities.par_iter())
        .map(|(&l, &o)| l > 0 && o == opacity::NONE)
        .collect();
    let fit = Fit {
        dims,
        spacing,
        level: &level,
        clear: &clear,
        hu,
        dense_above: high,
        smooth_mm: rule.smooth_mm,
        search_mm: rule.search_mm,
        band_mm: rule.band_mm,
    };
    let oblique = Pass {
        refine_mm: rule.refine_mm,
        refine_smooth_mm: rule.refine_smooth_mm,
        skip_dense: false,
    };
    // The horizontal fissure lies nearly in the plane of a thick slice, at the level of the
    // hilum, where vessels run in that plane too and read as ridges as broad as the fissure's:
    // its ridge leaves them out, and it is not refined column by column (models/train/README.md).
    let horizontal = Pass {
        refine_mm: 0.0,
        refine_smooth_mm: 0.0,
        skip_dense: rule.horizontal_skips_dense,
    };
    // The oblique fissure of the right lung parts the lower lobe from the upper and middle ones;
    // then the horizontal one parts those two; then the left lung's oblique fissure.
    fit.surface(lobes, 3, &[1, 2], oblique);
    fit.surface(lobes, 2, &[1], horizontal);
    fit.surface(lobes, 5, &[4], oblique);
}

/// How one fissure is placed beyond the shared plane search.
#[derive(Clone, Copy)]
struct Pass {
    /// After the plane, each column may move this much further (mm; no further than the
    /// plane's search) ...
    refine_mm: f64,
    /// ... to the strongest ridge of the columns around it, pooled with Gaussian weights of
    /// this (mm).
    refine_smooth_mm: f64,
    /// Voxels denser than the HU range do not count toward the ridge (instead of clipped).
    skip_dense: bool,
}

struct Fit<'a> {
    dims: [usize; 3],
    spacing: [f64; 3],
    level: &'a [f32],
    clear: &'a [bool],
    hu: &'a [i16],
    /// A `Pass` that skips dense voxels leaves out those above this (HU): the range's top.
    dense_above: i32,
    smooth_mm: f64,
    search_mm: f64,
    band_mm: f64,
}

impl Fit<'_> {
    /// One fissure: `lower` below it, any of `upper` above.
    fn surface(&self, lobes: &mut [u8], lower: u8, upper: &[u8], pass: Pass) {
        let [nz, ny, nx] = self.dims;
        let plane = ny * nx;
        let split = split_heights(lobes, self.dims, lower, upper);
        let columns: Vec<usize> = (0..plane).filter(|&c| split[c].is_some()).collect();
        if columns.len() < 10 {
            return;
        }
        let raw: Vec<f64> = columns.iter().filter_map(|&c| split[c]).collect();
        let smooth = local_plane(&columns, &raw, nx, self.spacing, self.smooth_mm);
        // Columns where the fit is defined, with the boundary in voxel coordinates (a boundary
        // index k lies between voxels k - 1 and k).
        let kept: Vec<(usize, f64)> = columns
            .iter()
            .zip(&smooth)
            .filter_map(|(&c, h)| h.map(|h| (c, h - 0.5)))
            .collect();
        if kept.is_empty() {
            return;
        }
        let sz = self.spacing[2];
        // Symmetric about no shift, which is always a candidate; the profiles reach `extra`
        // steps beyond the plane's search for the refinement.
        let half = (self.search_mm / STEP_MM).round() as i64;
        // The refinement reaches no further than the plane's search: on thin slices, where the
        // watershed placed the aerated lung, 5 mm raised the largest PLO error of the full-size
        // tuning phantoms (3.84 -> 5.00 pp) where 3 mm lowered it (3.29 pp).
        let extra = (pass.refine_mm.min(self.search_mm) / STEP_MM).round() as i64;
        let deltas: Vec<f64> = (-half - extra..=half + extra)
            .map(|i| i as f64 * STEP_MM)
            .collect();
        // Each column's CT along z around the surface, scored as a ridge: the CT at a shift
        // against the mean of the CT one slice (at least `RIDGE_MIN_MM`) above and below it. That
        // takes off the column's level and any slope along z: the lung grows denser toward the
        // hilum, above the horizontal fissure, and a score against the column's mean alone
        // drew that fissure up (models/train/README.md).
        let apart = (sz.max(RIDGE_MIN_MM) / STEP_MM).round() as usize;
        let profiles: Vec<Vec<f32>> = kept
            .par_iter()
            .map(|&(c, b)| {
                let at = |t: usize| -> Option<f32> {
                    let d = (t as f64 - ((half + extra) as usize + apart) as f64) * STEP_MM;
                    let z = b + d / sz;
                    let z0 = z.floor();
                    if z0 < 0.0 || z0 as usize + 1 >= nz {
                        return None;
                    }
                    let (i0, i1) = (z0 as usize * plane + c, (z0 as usize + 1) * plane + c);
                    if !(self.clear[i0] && self.clear[i1]) {
                        return None;
                    }
                    let dense = |i: usize| i32::from(self.hu[i]) > self.dense_above;
                    if pass.skip_dense && (dense(i0) || dense(i1)) {
                        return None;
                    }
                    let f = (z - z0) as f32;
                    Some(self.level[i0] * (1.0 - f) + self.level[i1] * f)
                };
                let samples: Vec<Option<f32>> = (0..deltas.len() + 2 * apart).map(at).collect();
                (0..deltas.len())
                    .map(
                        |i| match (samples[i], samples[i + apart], samples[i + 2 * apart]) {
                            (Some(below), Some(here), Some(above)) => here - 0.5 * (below + above),
                            _ => 0.0,
                        },
                    )
                    .collect()
            })
            .collect();
        let (cx, cy) = centred(&kept, nx, self.spacing);
        let (a, bx, by) = best_plane(&profiles, &cx, &cy, &deltas, extra as usize);
        let mut shifts: Vec<f64> = (0..kept.len())
            .map(|k| (a + bx * cx[k] + by * cy[k]).clamp(-self.search_mm, self.search_mm))
            .collect();
        if extra > 0 && pass.refine_smooth_mm > 0.0 {
            refine(
                &mut shifts,
                &kept,
                &profiles,
                nx,
                self.spacing,
                extra as usize,
                pass.refine_smooth_mm,
            );
        }
        let band = self.band_mm / sz + 1.0;
        for (k, &(c, b)) in kept.iter().enumerate() {
            let boundary = b + shifts[k] / sz;
            // The upper lobe a lower-lobe voxel joins when it crosses: the one that meets the
            // fissure in this column.
            let Some(first_upper) = (0..nz)
                .map(|z| lobes[z * plane + c])
                .find(|l| upper.contains(l))
            else {
                continue;
            };
            let z_lo = (boundary - band).floor().max(0.0) as usize;
            let z_hi = ((boundary + band).ceil().max(0.0) as usize).min(nz - 1);
            for z in z_lo..=z_hi {
                if (z as f64 - boundary).abs() > band {
                    continue;
                }
                let i = z * plane + c;
                let l = lobes[i];
                if !(l == lower || upper.contains(&l)) {
                    continue;
                }
                if (z as f64) < boundary {
                    lobes[i] = lower;
                } else if l == lower {
                    lobes[i] = first_upper;
                }
            }
        }
    }
}

/// Per column (`y * nx + x`) holding both `lower` and `upper` voxels: the boundary index k
/// (between voxels k - 1 and k along z) that leaves the fewest upper voxels below and lower ones
/// above, the mean of all such k where several tie.
fn split_heights(lobes: &[u8], dims: [usize; 3], lower: u8, upper: &[u8]) -> Vec<Option<f64>> {
    let [nz, ny, nx] = dims;
    let plane = ny * nx;
    let mut out = vec![None; plane];
    out.par_chunks_mut(nx).enumerate().for_each(|(y, row)| {
        let at = |z: usize, x: usize| lobes[z * plane + y * nx + x];
        let mut lower_total = vec![0u32; nx];
        let mut has_upper = vec![false; nx];
        for z in 0..nz {
            for x in 0..nx {
                let l = at(z, x);
                if l == lower {
                    lower_total[x] += 1;
                } else if upper.contains(&l) {
                    has_upper[x] = true;
                }
            }
        }
        let mut upper_below = vec![0u32; nx];
        let mut lower_below = vec![0u32; nx];
        let mut best = vec![u32::MAX; nx];
        let mut k_sum = vec![0u64; nx];
        let mut k_count = vec![0u32; nx];
        for k in 0..=nz {
            for x in 0..nx {
                if lower_total[x] == 0 || !has_upper[x] {
                    continue;
                }
                let cost = upper_below[x] + lower_total[x] - lower_below[x];
                if cost < best[x] {
                    best[x] = cost;
                    k_sum[x] = k as u64;
                    k_count[x] = 1;
                } else if cost == best[x] {
                    k_sum[x] += k as u64;
                    k_count[x] += 1;
                }
            }
            if k < nz {
                for x in 0..nx {
                    let l = at(k, x);
                    if l == lower {
                        lower_below[x] += 1;
                    } else if upper.contains(&l) {
                        upper_below[x] += 1;
                    }
                }
            }
        }
        for x in 0..nx {
            if k_count[x] > 0 {
                row[x] = Some(k_sum[x] as f64 / f64::from(k_count[x]));
            }
        }
    });
    out
}

/// Local plane fit of `values` at `columns` (`y * nx + x`) with Gaussian weights of `sigma_mm`
/// (truncated at 4 standard deviations, as scipy's `gaussian_filter`): at each of those columns,
/// the value at it of the weighted least-squares plane. None where the fit is degenerate.
/// Hand-written: weighted moments blurred by a separable Gaussian, then a 3 × 3 solve per column.
fn local_plane(
    columns: &[usize],
    values: &[f64],
    nx: usize,
    spacing: [f64; 3],
    sigma_mm: f64,
) -> Vec<Option<f64>> {
    let (x0, x1) = bounds(columns.iter().map(|&c| c % nx));
    let (y0, y1) = bounds(columns.iter().map(|&c| c / nx));
    let (w, h) = (x1 - x0 + 1, y1 - y0 + 1);
    // Moments: 1, x, y, xx, xy, yy, v, xv, yv (mm from the box's corner).
    const M: usize = 9;
    let mut m = vec![0.0f64; w * h * M];
    for (&c, &v) in columns.iter().zip(values) {
        let (x, y) = (c % nx - x0, c / nx - y0);
        let (px, py) = (x as f64 * spacing[0], y as f64 * spacing[1]);
        let cell = &mut m[(y * w + x) * M..(y * w + x + 1) * M];
        for (o, t) in
            cell.iter_mut()
                .zip([1.0, px, py, px * px, px * py, py * py, v, px * v, py * v])
        {
            *o += t;
        }
    }
    let both = blur(&m, [w, h], M, spacing, sigma_mm);
    let s0_max = both.chunks(M).map(|c| c[0]).fold(0.0f64, f64::max);
    columns
        .iter()
        .map(|&c| {
            let (x, y) = (c % nx - x0, c / nx - y0);
            let s = &both[(y * w + x) * M..(y * w + x + 1) * M];
            if s[0] <= 1e-3 {
                return None;
            }
            let (px, py) = (x as f64 * spacing[0], y as f64 * spacing[1]);
            // The moments about this column, so that the plane's value here is its intercept.
            let a11 = s[0] + 1e-9;
            let a12 = s[1] - px * s[0];
            let a13 = s[2] - py * s[0];
            let a22 = s[3] - 2.0 * px * s[1] + px * px * s[0] + 1e-6 * s0_max;
            let a23 = s[4] - px * s[2] - py * s[1] + px * py * s[0];
            let a33 = s[5] - 2.0 * py * s[2] + py * py * s[0] + 1e-6 * s0_max;
            let b1 = s[6];
            let b2 = s[7] - px * s[6];
            let b3 = s[8] - py * s[6];
            let det = a11 * (a22 * a33 - a23 * a23) - a12 * (a12 * a33 - a23 * a13)
                + a13 * (a12 * a23 - a22 * a13);
            if det.abs() <= 1e-12 {
                return None;
            }
            // Cramer's rule for the intercept.
            let d1 = b1 * (a22 * a33 - a23 * a23) - a12 * (b2 * a33 - a23 * b3)
                + a13 * (b2 * a23 - a22 * b3);
            Some(d1 / det)
        })
        .collect()
}

/// Gaussian blur (`sigma_mm`, truncated at 4 standard deviations, zero outside) of a grid of
/// `dims` (w, h) cells of `channels` values each, separable along x then y. Hand-written: the
/// grids are small boxes of the CT's plane with many channels, which no image crate blurs.
fn blur(
    src: &[f64],
    dims: [usize; 2],
    channels: usize,
    spacing: [f64; 3],
    sigma_mm: f64,
) -> Vec<f64> {
    let [w, h] = dims;
    // `lines` lines of `len` cells; cell j of line i at i * stride + j * step.
    let pass = |src: &[f64], len: usize, lines: usize, stride: usize, step: usize, k: &[f64]| {
        let r = (k.len() / 2) as i64;
        let mut out = vec![0.0f64; src.len()];
        let lines_out: Vec<Vec<(usize, Vec<f64>)>> = (0..lines)
            .into_par_iter()
            .map(|i| {
                (0..len)
                    .map(|j| {
                        let mut acc = vec![0.0f64; channels];
                        let lo = (j as i64 - r).max(0) as usize;
                        let hi = ((j as i64 + r) as usize).min(len - 1);
                        for t in lo..=hi {
                            let wgt = k[(t as i64 - j as i64 + r) as usize];
                            let at = (i * stride + t * step) * channels;
                            for (a, s) in acc.iter_mut().zip(&src[at..at + channels]) {
                                *a += wgt * s;
                            }
                        }
                        (i * stride + j * step, acc)
                    })
                    .collect()
            })
            .collect();
        for line in lines_out {
            for (at, acc) in line {
                out[at * channels..(at + 1) * channels].copy_from_slice(&acc);
            }
        }
        out
    };
    let along_x = pass(src, w, h, w, 1, &gaussian_kernel(sigma_mm / spacing[0]));
    pass(
        &along_x,
        h,
        w,
        1,
        w,
        &gaussian_kernel(sigma_mm / spacing[1]),
    )
}

/// Move each kept column's shift by up to `extra` steps either way, to where the ridge of the
/// columns around it (their profiles pooled with Gaussian weights of `sigma_mm`, each read about
/// its own shift) is strongest: the plane leaves a slow bend of the model's border, which this
/// follows. `profiles[k][i]` scores column k at `deltas[i]`, which run `extra` steps beyond the
/// plane's search on either side.
fn refine(
    shifts: &mut [f64],
    kept: &[(usize, f64)],
    profiles: &[Vec<f32>],
    nx: usize,
    spacing: [f64; 3],
    extra: usize,
    sigma_mm: f64,
) {
    let (x0, x1) = bounds(kept.iter().map(|&(c, _)| c % nx));
    let (y0, y1) = bounds(kept.iter().map(|&(c, _)| c / nx));
    let (w, h) = (x1 - x0 + 1, y1 - y0 + 1);
    let channels = 2 * extra + 1;
    let mut grid = vec![0.0f64; w * h * channels];
    // Shift index of each column's plane shift (the plane's search is centred in the deltas).
    let centre = |k: usize, p: &[f32]| {
        let i = ((shifts[k] / STEP_MM).round() as i64) + (p.len() / 2) as i64;
        i.clamp(0, p.len() as i64 - 1)
    };
    for (k, (&(c, _), p)) in kept.iter().zip(profiles).enumerate() {
        let at = ((c / nx - y0) * w + (c % nx - x0)) * channels;
        let i = centre(k, p);
        for j in 0..channels {
            let t = (i + j as i64 - extra as i64).clamp(0, p.len() as i64 - 1) as usize;
            grid[at + j] = f64::from(p[t]);
        }
    }
    let pooled = blur(&grid, [w, h], channels, spacing, sigma_mm);
    for (k, &(c, _)) in kept.iter().enumerate() {
        let at = ((c / nx - y0) * w + (c % nx - x0)) * channels;
        let cell = &pooled[at..at + channels];
        // The plane's own shift unless another beats it: where no column around shows the CT
        // (found opacities all around), every shift scores 0 and the column stays.
        let mut best = extra;
        for (j, &v) in cell.iter().enumerate() {
            if v > cell[best] {
                best = j;
            }
        }
        shifts[k] += (best as f64 - extra as f64) * STEP_MM;
    }
}

fn bounds(it: impl Iterator<Item = usize>) -> (usize, usize) {
    it.fold((usize::MAX, 0), |(lo, hi), v| (lo.min(v), hi.max(v)))
}

/// The kept columns' positions (mm) about their mean.
fn centred(kept: &[(usize, f64)], nx: usize, spacing: [f64; 3]) -> (Vec<f64>, Vec<f64>) {
    let xs: Vec<f64> = kept
        .iter()
        .map(|&(c, _)| (c % nx) as f64 * spacing[0])
        .collect();
    let ys: Vec<f64> = kept
        .iter()
        .map(|&(c, _)| (c / nx) as f64 * spacing[1])
        .collect();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (mx, my) = (mean(&xs), mean(&ys));
    (
        xs.into_iter().map(|x| x - mx).collect(),
        ys.into_iter().map(|y| y - my).collect(),
    )
}

/// The shift plane `a + bx * cx + by * cy` (a among `deltas` but the `extra` at either end,
/// slopes on their grid) whose samples of the profiles sum highest. Only a plane that beats no
/// shift at all is taken, and among equals the first in the order slope x, slope y, a.
fn best_plane(
    profiles: &[Vec<f32>],
    cx: &[f64],
    cy: &[f64],
    deltas: &[f64],
    extra: usize,
) -> (f64, f64, f64) {
    let n = deltas.len() as i64;
    let half = (MAX_SLOPE / SLOPE_STEP).round() as i64;
    let slopes: Vec<f64> = (-half..=half).map(|i| i as f64 * SLOPE_STEP).collect();
    let pairs: Vec<(usize, usize)> = (0..slopes.len())
        .flat_map(|i| (0..slopes.len()).map(move |j| (i, j)))
        .collect();
    let scores: Vec<Vec<f64>> = pairs
        .par_iter()
        .map(|&(i, j)| {
            let mut score = vec![0.0f64; deltas.len()];
            for (k, p) in profiles.iter().enumerate() {
                let off = ((slopes[i] * cx[k] + slopes[j] * cy[k]) / STEP_MM).round() as i64;
                for (t, &v) in p.iter().enumerate() {
                    // Sample t of this column lies at shift index t - off of this plane.
                    let a = t as i64 - off;
                    if (0..n).contains(&a) {
                        score[a as usize] += f64::from(v);
                    }
                }
            }
            score
        })
        .collect();
    let (flat, zero) = (pairs.len() / 2, deltas.len() / 2);
    let mut best = (scores[flat][zero], flat, zero);
    for (k, score) in scores.iter().enumerate() {
        for (a, &s) in score.iter().enumerate() {
            if s > best.0 && a >= extra && a + extra < deltas.len() {
                best = (s, k, a);
            }
        }
    }
    let (i, j) = pairs[best.1];
    (deltas[best.2], slopes[i], slopes[j])
}

/// A Gaussian of `sigma` (in samples), truncated at 4 standard deviations as scipy's
/// `gaussian_filter` truncates it, summing to 1.
fn gaussian_kernel(sigma: f64) -> Vec<f64> {
    let r = (4.0 * sigma + 0.5) as i64;
    let w: Vec<f64> = (-r..=r)
        .map(|k| (-0.5 * (k as f64 / sigma).powi(2)).exp())
        .collect();
    let sum: f64 = w.iter().sum();
    w.into_iter().map(|x| x / sum).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIMS: [usize; 3] = [24, 40, 40];
    const THICK: [f64; 3] = [2.8, 2.8, 5.0];
    const RULE: FissureSurface = FissureSurface {
        smooth_mm: 40.0,
        search_mm: 6.0,
        band_mm: 15.0,
        hu_range: [-1000.0, -500.0],
        refine_mm: 0.0,
        refine_smooth_mm: 0.0,
        horizontal_skips_dense: false,
    };

    /// The left lung filling the volume: the lower lobe below `fissure(y)` (a z in voxels), the
    /// upper above.
    fn lobes(fissure: impl Fn(usize) -> f64) -> Vec<u8> {
        let [nz, ny, nx] = DIMS;
        (0..nz * ny * nx)
            .map(|i| {
                let (z, y) = (i / (ny * nx), (i / nx) % ny);
                if (z as f64) < fissure(y) { 5 } else { 4 }
            })
            .collect()
    }

    /// Aerated lung with a faint ridge (+40 HU) in the voxels the fissure crosses and a
    /// deterministic noise as strong as the ridge.
    fn ct(fissure: impl Fn(usize) -> f64) -> Vec<i16> {
        let [nz, ny, nx] = DIMS;
        (0..nz * ny * nx)
            .map(|i| {
                let (z, y) = (i / (ny * nx), (i / nx) % ny);
                let noise = ((i as u64).wrapping_mul(2_654_435_761) % 81) as i16 - 40;
                let ridge = if (z as f64 - fissure(y)).abs() < 0.5 {
                    40
                } else {
                    0
                };
                -850 + ridge + noise
            })
            .collect()
    }

    fn right(labels: &[u8], truth: &[u8]) -> f64 {
        labels.iter().zip(truth).filter(|(a, b)| a == b).count() as f64 / truth.len() as f64
    }

    #[test]
    fn a_border_a_slice_off_moves_to_the_faint_ridge_on_thick_slices() {
        // The fissure rises 0.1 voxel a row; the model put the border one slice too high.
        let fissure = |y: usize| 9.0 + 0.1 * y as f64 + 0.5;
        let truth = lobes(fissure);
        let mut labels = lobes(|y| fissure(y) + 1.0);
        let hu = ct(fissure);
        let none = vec![opacity::NONE; hu.len()];
        let before = right(&labels, &truth);
        fit(&mut labels, &none, &hu, DIMS, THICK, &RULE);
        let after = right(&labels, &truth);
        assert!(before < 0.97, "{before}");
        assert!(after > 0.99, "{before} -> {after}");
    }

    #[test]
    fn refinement_follows_a_bend_the_plane_cannot() {
        // The model's border is a slice too high over one half of the fissure and a slice too
        // low over the other: no plane fits both halves (0.958 -> plane 0.990 -> refined 0.998
        // of the voxels right).
        let fissure = |y: usize| 9.0 + 0.1 * y as f64 + 0.5;
        let truth = lobes(fissure);
        let model = lobes(|y| fissure(y) + if y < 20 { 1.0 } else { -1.0 });
        let hu = ct(fissure);
        let none = vec![opacity::NONE; hu.len()];
        let mut plane = model.clone();
        fit(&mut plane, &none, &hu, DIMS, THICK, &RULE);
        let refined_rule = FissureSurface {
            refine_mm: 5.0,
            refine_smooth_mm: 15.0,
            ..RULE
        };
        let mut refined = model.clone();
        fit(&mut refined, &none, &hu, DIMS, THICK, &refined_rule);
        let (before, plane, refined) = (
            right(&model, &truth),
            right(&plane, &truth),
            right(&refined, &truth),
        );
        assert!(
            plane < 0.993,
            "{before} -> plane {plane}, refined {refined}"
        );
        assert!(
            refined > 0.995,
            "{before} -> plane {plane}, refined {refined}"
        );
    }

    #[test]
    fn the_horizontal_fissure_leaves_out_a_vessel_in_its_plane() {
        // The right lung's middle lobe below the horizontal fissure, the upper lobe above; the
        // model put the border a slice too high, and a vessel runs in the plane two slices
        // above the fissure over half of it, far denser than the fissure's ridge. Clipped, the
        // vessel draws the border up (0.958 -> 0.929 of the voxels right); left out, the
        // fissure places it (0.996).
        let fissure = |y: usize| 9.0 + 0.05 * y as f64 + 0.5;
        let right_lung = |l: u8| if l == 5 { 2 } else { 1 };
        let truth: Vec<u8> = lobes(fissure).into_iter().map(right_lung).collect();
        let model: Vec<u8> = lobes(|y| fissure(y) + 1.0)
            .into_iter()
            .map(right_lung)
            .collect();
        let [_, ny, nx] = DIMS;
        let hu: Vec<i16> = ct(fissure)
            .into_iter()
            .enumerate()
            .map(|(i, v)| {
                let (z, y) = (i / (ny * nx), (i / nx) % ny);
                if y < 20 && (z as f64 - fissure(y) - 2.0).abs() < 0.5 {
                    -400
                } else {
                    v
                }
            })
            .collect();
        let none = vec![opacity::NONE; hu.len()];
        let placed = |rule: &FissureSurface| {
            let mut labels = model.clone();
            fit(&mut labels, &none, &hu, DIMS, THICK, rule);
            right(&labels, &truth)
        };
        let (before, clipped) = (right(&model, &truth), placed(&RULE));
        let skipped = placed(&FissureSurface {
            horizontal_skips_dense: true,
            ..RULE
        });
        assert!(clipped < before, "{before} -> clipped {clipped}");
        assert!(
            skipped > 0.99,
            "{before} -> clipped {clipped}, skipped {skipped}"
        );
    }

    #[test]
    fn without_a_ridge_a_plane_border_stays() {
        // An even CT puts as much density on every shifted plane as on the unshifted one, and
        // the smoothing of a plane is the plane; the refinement, finding every shift equal too,
        // keeps the plane's.
        let fissure = |y: usize| 8.0 + 0.2 * y as f64;
        let model = lobes(fissure);
        let hu = vec![-850i16; model.len()];
        let none = vec![opacity::NONE; hu.len()];
        let refined = FissureSurface {
            refine_mm: 5.0,
            refine_smooth_mm: 15.0,
            ..RULE
        };
        for rule in [RULE, refined] {
            let mut labels = model.clone();
            fit(&mut labels, &none, &hu, DIMS, THICK, &rule);
            let moved = labels.iter().zip(&model).filter(|(a, b)| a != b).count();
            assert_eq!(moved, 0, "{rule:?}");
        }
    }
}
