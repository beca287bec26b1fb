//! The border between two lobes of one lung moved to the fissure the CT shows.
//!
//! The lobes model works on a 3.2 mm grid, where a fissure (a plate of pleura about a millimetre
//! thick, some 200 HU denser than the lung on either side) is barely seen; it places the border
//! between two lobes from the texture and from where the lung sits in the chest, a few
//! millimetres off, and the middle lobe, thin and bounded by two fissures, loses the most
//! (models/train/README.md). On a CT of thin slices the fissure is plain. So near the model's
//! border the lobes are flooded again, each from its own side, in order of smoothed density
//! (a watershed): the floods of two lobes meet on the densest surface between them, the fissure.
//! Vessels are denser still, but they are tubes, which a flood goes round; found opacities keep
//! the model's label, since in dense lung no fissure is seen. The lungs do not change, only which
//! lobe a voxel belongs to.

use std::collections::VecDeque;

use rayon::prelude::*;

use super::postprocess::{bounding_box, neighbours6, squared_depth};
use crate::infer::model::Fissures;
use crate::labels::opacity;

/// 0: background; 1: right lung; 2: left lung (labels as `labels::Lobe`).
fn lung_of(label: u8) -> u8 {
    match label {
        1..=3 => 1,
        4..=5 => 2,
        _ => 0,
    }
}

/// Relabel in `lobes` (labels on the CT grid, `[z][y][x]` of `dims`; `spacing` x, y, z in mm)
/// the lung within `rule.band_mm` of a border between two lobes of one lung and without a found
/// opacity, by a watershed on the smoothed CT (`hu`, same grid) from the rest of each lobe.
pub fn snap(
    lobes: &mut [u8],
    opacities: &[u8],
    hu: &[i16],
    dims: [usize; 3],
    spacing: [f64; 3],
    rule: &Fissures,
) {
    if !rule.acts_on(spacing) {
        return;
    }
    let Some((lo, end)) = bounding_box(lobes, dims) else {
        return;
    };
    let sub = [end[0] - lo[0], end[1] - lo[1], end[2] - lo[2]];
    let global = |i: usize| {
        let (z, y, x) = (i / (sub[1] * sub[2]), (i / sub[2]) % sub[1], i % sub[2]);
        ((z + lo[0]) * dims[1] + y + lo[1]) * dims[2] + x + lo[2]
    };
    let n = sub.iter().product::<usize>();
    let mut labels: Vec<u8> = (0..n).map(|i| lobes[global(i)]).collect();
    let border: Vec<bool> = (0..n)
        .map(|i| {
            let l = labels[i];
            l > 0
                && neighbours6(i, sub).into_iter().flatten().any(|j| {
                    let m = labels[j];
                    m > 0 && m != l && lung_of(m) == lung_of(l)
                })
        })
        .collect();
    if !border.contains(&true) {
        return;
    }
    let not_border: Vec<bool> = border.into_iter().map(|b| !b).collect();
    let near = squared_depth(&not_border, sub, spacing);
    drop(not_border);
    let band2 = (rule.band_mm * rule.band_mm) as f32;
    // The band's voxels are set apart (the model's label kept in `model`) and flooded again.
    // Found opacities in the band keep their label and so seed the flood of their lobe: handing
    // them to the lobe around them instead was tried and moved lesions that lie on a fissure
    // into the wrong lobe (models/train/README.md).
    let mut model = vec![0u8; n];
    for i in 0..n {
        if labels[i] > 0 && near[i] <= band2 && opacities[global(i)] == opacity::NONE {
            model[i] = labels[i];
            labels[i] = 0;
        }
    }
    drop(near);
    let [low, high] = rule.hu_range.map(|v| v.round() as i32);
    let sub_hu: Vec<f32> = (0..n)
        .map(|i| (i32::from(hu[global(i)]).clamp(low, high)) as f32)
        .collect();
    let smooth = gaussian(sub_hu, sub, spacing, rule.smooth_mm);
    let level: Vec<u16> = smooth
        .iter()
        .map(|&v| (v.round() as i32).clamp(low, high).wrapping_sub(low) as u16)
        .collect();
    drop(smooth);
    flood(&mut labels, &model, &level, sub, (high - low) as usize + 1);
    for i in 0..n {
        if model[i] > 0 {
            // A band voxel no lobe of its lung reaches (cut off by opacities) keeps the model's
            // label.
            lobes[global(i)] = if labels[i] > 0 { labels[i] } else { model[i] };
        }
    }
}

/// Priority flood (the watershed with markers) from every labelled voxel into the unlabelled
/// ones that the model labelled (`model`), lowest `level` first, first come first served within
/// a level; a voxel takes only a label of the lung the model put it in. Voxels no flood reaches
/// stay 0.
fn flood(labels: &mut [u8], model: &[u8], level: &[u16], dims: [usize; 3], levels: usize) {
    let mut queue: Vec<VecDeque<u32>> = vec![VecDeque::new(); levels];
    for i in 0..labels.len() {
        if labels[i] > 0
            && neighbours6(i, dims)
                .into_iter()
                .flatten()
                .any(|j| model[j] > 0 && labels[j] == 0)
        {
            queue[usize::from(level[i])].push_back(i as u32);
        }
    }
    let mut current = 0;
    while current < levels {
        let Some(p) = queue[current].pop_front() else {
            current += 1;
            continue;
        };
        let p = p as usize;
        let label = labels[p];
        for q in neighbours6(p, dims).into_iter().flatten() {
            if labels[q] == 0 && model[q] > 0 && lung_of(model[q]) == lung_of(label) {
                labels[q] = label;
                let at = usize::from(level[q]).max(current);
                queue[at].push_back(q as u32);
            }
        }
    }
}

/// Separable Gaussian blur of `v` (`[z][y][x]` of `dims`) with a standard deviation of `sigma_mm`
/// (`spacing` x, y, z in mm), truncated at 4 standard deviations, mirrored at the edges (as
/// scipy's `gaussian_filter`, with which the rule was chosen). Hand-written: three 1D passes are
/// all it takes, and no maintained crate blurs a 3D volume with anisotropic spacing.
fn gaussian(mut v: Vec<f32>, dims: [usize; 3], spacing: [f64; 3], sigma_mm: f64) -> Vec<f32> {
    if sigma_mm <= 0.0 {
        return v;
    }
    let (nz, ny, nx) = (dims[0], dims[1], dims[2]);
    let kernel = |s: f64| -> Vec<f32> {
        gaussian_kernel(sigma_mm / s)
            .into_iter()
            .map(|w| w as f32)
            .collect()
    };
    let (kx, ky, kz) = (kernel(spacing[0]), kernel(spacing[1]), kernel(spacing[2]));
    let plane = ny * nx;
    let mut out = vec![0.0f32; v.len()];
    // Along x, row by row; the mirror only within a kernel's reach of either end.
    let rx = kx.len() / 2;
    out.par_chunks_mut(nx)
        .zip(v.par_chunks(nx))
        .for_each(|(o, row)| {
            for (x, ox) in o.iter_mut().enumerate() {
                *ox = if x >= rx && x + rx < nx {
                    kx.iter()
                        .zip(&row[x - rx..=x + rx])
                        .map(|(w, a)| w * a)
                        .sum()
                } else {
                    kx.iter()
                        .enumerate()
                        .map(|(k, w)| w * row[mirror((x + k) as i64 - rx as i64, nx)])
                        .sum()
                };
            }
        });
    // Along y, slice by slice, whole rows at a time.
    v.par_chunks_mut(plane)
        .zip(out.par_chunks(plane))
        .for_each(|(o, slab)| {
            for (y, orow) in o.chunks_mut(nx).enumerate() {
                weighted_lines(orow, &ky, y, ny, |j| &slab[j * nx..(j + 1) * nx]);
            }
        });
    // Along z, each output slice from its neighbours.
    out.par_chunks_mut(plane).enumerate().for_each(|(z, o)| {
        weighted_lines(o, &kz, z, nz, |j| &v[j * plane..(j + 1) * plane]);
    });
    out
}

/// A Gaussian of `sigma` (in samples), truncated at 4 standard deviations as scipy's
/// `gaussian_filter` truncates it, summing to 1.
pub(crate) fn gaussian_kernel(sigma: f64) -> Vec<f64> {
    let r = (4.0 * sigma + 0.5) as i64;
    let w: Vec<f64> = (-r..=r)
        .map(|k| (-0.5 * (k as f64 / sigma).powi(2)).exp())
        .collect();
    let sum: f64 = w.iter().sum();
    w.into_iter().map(|x| x / sum).collect()
}

/// scipy's "reflect" edge of an axis of `n`: d c b a | a b c d | d c b a.
fn mirror(i: i64, n: usize) -> usize {
    let n = n as i64;
    let period = 2 * n;
    let m = i.rem_euclid(period);
    (if m < n { m } else { period - 1 - m }) as usize
}

/// One output line `o` of a blur pass along an axis of `n` lines (whole rows along y, whole
/// slices along z): the kernel's weights times the lines around line `at`, mirrored at the ends.
fn weighted_lines<'a>(
    o: &mut [f32],
    kernel: &[f32],
    at: usize,
    n: usize,
    line: impl Fn(usize) -> &'a [f32],
) {
    o.fill(0.0);
    let r = (kernel.len() / 2) as i64;
    for (k, w) in kernel.iter().enumerate() {
        for (a, b) in o.iter_mut().zip(line(mirror(at as i64 + k as i64 - r, n))) {
            *a += w * b;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: Fissures = Fissures {
        band_mm: 3.0,
        smooth_mm: 0.0,
        max_voxel_mm: 1.5,
        hu_range: [-1000.0, -500.0],
    };

    /// One row of lung along x, 1 mm voxels: lobe 1 then lobe 2, the model's border at
    /// `border`, a fissure (denser voxel) at `fissure`.
    fn row(border: usize, fissure: usize) -> (Vec<u8>, Vec<i16>) {
        let labels = (0..12).map(|x| if x < border { 1 } else { 2 }).collect();
        let hu = (0..12)
            .map(|x| if x == fissure { -640 } else { -860 })
            .collect();
        (labels, hu)
    }

    /// The row's labels after `snap` with these opacities and voxel size (mm).
    fn snapped(labels: &[u8], opacities: &[u8], hu: &[i16], spacing: [f64; 3]) -> Vec<u8> {
        let mut out = labels.to_vec();
        snap(&mut out, opacities, hu, [1, 1, 12], spacing, &RULE);
        out
    }

    #[test]
    fn the_border_moves_to_the_fissure() {
        let (labels, hu) = row(6, 4);
        let labels = snapped(&labels, &[0; 12], &hu, [1.0; 3]);
        // The fissure itself goes to whichever flood reaches it first; the lung beyond it is
        // lobe 2's.
        assert_eq!(&labels[..4], &[1, 1, 1, 1]);
        assert_eq!(&labels[5..], &[2, 2, 2, 2, 2, 2, 2]);
    }

    #[test]
    fn thick_slices_opacities_and_other_lungs_stay() {
        // Thick voxels: nothing moves.
        let (labels, hu) = row(6, 4);
        assert_eq!(snapped(&labels, &[0; 12], &hu, [1.0, 1.0, 2.5]), labels);
        // The model's border 2 voxels short of the fissure: the lung between goes to lobe 1,
        // unless it is a found opacity, which keeps the model's label.
        let (labels, hu) = row(6, 8);
        assert_eq!(&snapped(&labels, &[0; 12], &hu, [1.0; 3])[6..8], &[1, 1]);
        let mut opacities = [0u8; 12];
        opacities[6] = opacity::GROUND_GLASS;
        opacities[7] = opacity::CONSOLIDATION;
        assert_eq!(&snapped(&labels, &opacities, &hu, [1.0; 3])[6..8], &[2, 2]);
        // Lobes of two lungs side by side have no fissure between them: nothing moves.
        let labels: Vec<u8> = (0..12).map(|x| if x < 6 { 3 } else { 4 }).collect();
        assert_eq!(snapped(&labels, &[0; 12], &hu, [1.0; 3]), labels);
    }

    #[test]
    fn the_blur_keeps_a_flat_volume_and_spreads_a_point() {
        // A flat volume stays flat up to its mirrored edges.
        let flat = gaussian(vec![-800.0; 125], [5, 5, 5], [1.0; 3], 1.0);
        assert!(flat.iter().all(|&v| (v + 800.0).abs() < 1e-3));
        // A point in the middle of 11³ (the kernel, 4 voxels each way, fits): its mass stays,
        // and one voxel away along each axis it is exp(-1/2) of the centre.
        let dims = [11, 11, 11];
        let centre = (5 * 11 + 5) * 11 + 5;
        let mut point = vec![0.0f32; 11 * 11 * 11];
        point[centre] = 1.0;
        let blurred = gaussian(point, dims, [1.0; 3], 1.0);
        let sum: f32 = blurred.iter().sum();
        assert!((sum - 1.0).abs() < 1e-3, "{sum}");
        for step in [1, 11, 121] {
            let ratio = blurred[centre - step] / blurred[centre];
            assert!((ratio - (-0.5f32).exp()).abs() < 1e-3, "{step}: {ratio}");
        }
        // Anisotropic: 2 mm voxels along z see the blur at half as many voxels (21³, so that
        // the 2-voxel kernel along x fits too).
        let centre = (10 * 21 + 10) * 21 + 10;
        let mut point = vec![0.0f32; 21 * 21 * 21];
        point[centre] = 1.0;
        let blurred = gaussian(point, [21, 21, 21], [1.0, 1.0, 2.0], 2.0);
        let (along_x, along_z) = (blurred[centre - 1], blurred[centre - 441]);
        assert!((along_x / blurred[centre] - (-0.125f32).exp()).abs() < 1e-3);
        assert!((along_z / blurred[centre] - (-0.5f32).exp()).abs() < 1e-3);
    }
}
