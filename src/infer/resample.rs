//! Moving data between the source CT grid and a model's grid.
//!
//! Both grids cover the same box: the model grid has `round(extent / target spacing)` voxels per
//! axis, so its spacing is within half a voxel of the manifest's and its edges coincide with the
//! source's. Model voxel i then has its centre at source index `-0.5 + (i + 0.5) · n_src / n_model`,
//! which makes a 2× resampling of block-aligned data exact (the tests rely on that).
//!
//! HU go to the model by trilinear interpolation. Labels come back, by default, as the argmax on
//! the model grid, carried to each source voxel from the model voxel that contains its centre
//! (nearest neighbour). Interpolating near one-hot class probabilities would shrink every convex
//! corner (a corner voxel keeps only 0.75³ of its own class), which biases small opacities low;
//! the nearest model voxel is the model's own decision. A model on a grid much coarser than the CT
//! (the whole-chest lobes model) is trained on partial-volume fractions instead, so its
//! probabilities cross between voxels where the boundary is: for it (`upsample = "linear"`) the
//! probabilities are interpolated to each source voxel and the argmax taken there, slab by slab,
//! without a full-size probability volume.

use rayon::prelude::*;

use crate::volume::Geometry;

/// A model grid over a source volume; arrays are `[z][y][x]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelGrid {
    pub dims: [usize; 3],
    pub src_dims: [usize; 3],
    /// Source voxels per model voxel, per axis (z, y, x).
    pub scale: [f64; 3],
}

impl ModelGrid {
    /// Grid with about `spacing_mm` (x, y, z) voxels over `src`.
    pub fn with_spacing(src: &Geometry, spacing_mm: [f64; 3]) -> ModelGrid {
        let src_dims = [src.slices, src.rows, src.columns];
        let src_sp = [src.spacing[2], src.spacing[1], src.spacing[0]];
        let target = [spacing_mm[2], spacing_mm[1], spacing_mm[0]];
        let mut dims = [0; 3];
        for a in 0..3 {
            let extent = src_dims[a] as f64 * src_sp[a];
            dims[a] = ((extent / target[a]).round() as usize).max(1);
        }
        ModelGrid::with_dims(src, dims)
    }

    /// Grid of a fixed shape (z, y, x) over `src`.
    pub fn with_dims(src: &Geometry, dims: [usize; 3]) -> ModelGrid {
        let src_dims = [src.slices, src.rows, src.columns];
        let mut scale = [1.0; 3];
        for a in 0..3 {
            scale[a] = src_dims[a] as f64 / dims[a] as f64;
        }
        ModelGrid {
            dims,
            src_dims,
            scale,
        }
    }

    pub fn len(&self) -> usize {
        self.dims.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Linear interpolation taps (i0, i1, weight of i1) for sampling an axis of length `n` at `x`.
fn taps(x: f64, n: usize) -> (usize, usize, f32) {
    let x = x.clamp(0.0, (n - 1) as f64);
    let i0 = x.floor() as usize;
    let i1 = (i0 + 1).min(n - 1);
    (i0, i1, (x - i0 as f64) as f32)
}

/// Taps to sample an axis of length `from` at the centres of `to` voxels spanning the same box.
fn axis_taps(from: usize, to: usize) -> Vec<(usize, usize, f32)> {
    let scale = from as f64 / to as f64;
    (0..to)
        .map(|i| taps(-0.5 + (i as f64 + 0.5) * scale, from))
        .collect()
}

/// Trilinear resampling of `data` (`[z][y][x]` of `from` dims) onto `to` dims over the same box.
/// Generic over the sample type so that HU (i16) are read in place, without a float copy.
pub fn resample<T: Copy + Into<f32> + Sync>(
    data: &[T],
    from: [usize; 3],
    to: [usize; 3],
) -> Vec<f32> {
    let (tz, ty, tx) = (
        axis_taps(from[0], to[0]),
        axis_taps(from[1], to[1]),
        axis_taps(from[2], to[2]),
    );
    let plane_from = from[1] * from[2];
    let mut out = vec![0f32; to[0] * to[1] * to[2]];
    out.par_chunks_mut(to[1] * to[2])
        .enumerate()
        .for_each(|(k, slab)| {
            let (z0, z1, wz) = tz[k];
            for (j, &(y0, y1, wy)) in ty.iter().enumerate() {
                for (i, &(x0, x1, wx)) in tx.iter().enumerate() {
                    let at = |z: usize, y: usize, x: usize| -> f32 {
                        data[z * plane_from + y * from[2] + x].into()
                    };
                    let c00 = at(z0, y0, x0) * (1.0 - wx) + at(z0, y0, x1) * wx;
                    let c01 = at(z0, y1, x0) * (1.0 - wx) + at(z0, y1, x1) * wx;
                    let c10 = at(z1, y0, x0) * (1.0 - wx) + at(z1, y0, x1) * wx;
                    let c11 = at(z1, y1, x0) * (1.0 - wx) + at(z1, y1, x1) * wx;
                    let c0 = c00 * (1.0 - wy) + c01 * wy;
                    let c1 = c10 * (1.0 - wy) + c11 * wy;
                    slab[j * to[2] + i] = c0 * (1.0 - wz) + c1 * wz;
                }
            }
        });
    out
}

/// Nearest-neighbour resampling of labels onto `to` dims over the same box.
pub fn resample_nearest(data: &[u8], from: [usize; 3], to: [usize; 3]) -> Vec<u8> {
    let near = |from: usize, to: usize| -> Vec<usize> {
        let scale = from as f64 / to as f64;
        (0..to)
            .map(|i| ((i as f64 + 0.5) * scale).floor().min((from - 1) as f64) as usize)
            .collect()
    };
    let (nz, ny, nx) = (
        near(from[0], to[0]),
        near(from[1], to[1]),
        near(from[2], to[2]),
    );
    let mut out = Vec::with_capacity(to.iter().product());
    for &z in &nz {
        for &y in &ny {
            for &x in &nx {
                out.push(data[(z * from[1] + y) * from[2] + x]);
            }
        }
    }
    out
}

/// Labels on the source grid: argmax of the class probabilities (`channels` planes of the model
/// grid, channel major), mapped through `label_of_channel`, carried back by nearest neighbour.
pub fn labels_to_source(
    probs: &[f32],
    channels: usize,
    grid: &ModelGrid,
    label_of_channel: &[u8],
) -> Vec<u8> {
    let n = grid.len();
    let model_labels: Vec<u8> = (0..n)
        .into_par_iter()
        .map(|i| {
            let mut best = (0usize, f32::NEG_INFINITY);
            for c in 0..channels {
                let v = probs[c * n + i];
                if v > best.1 {
                    best = (c, v);
                }
            }
            label_of_channel[best.0]
        })
        .collect();
    resample_nearest(&model_labels, grid.dims, grid.src_dims)
}

/// The model voxels (`grid.dims`) that contain the centre of a source voxel set in `mask`
/// (`grid.src_dims`): no set source voxel is lost, however thin.
pub fn mark_model_voxels(mask: &[u8], grid: &ModelGrid) -> Vec<bool> {
    let [sz, sy, sx] = grid.src_dims;
    let [mz, my, mx] = grid.dims;
    let near = |from: usize, to: usize| -> Vec<usize> {
        let scale = to as f64 / from as f64;
        (0..from)
            .map(|i| (((i as f64 + 0.5) * scale) as usize).min(to - 1))
            .collect()
    };
    let (nz, ny, nx) = (near(sz, mz), near(sy, my), near(sx, mx));
    let mut out = vec![false; grid.len()];
    for z in 0..sz {
        for y in 0..sy {
            let row = &mask[(z * sy + y) * sx..(z * sy + y + 1) * sx];
            let base = (nz[z] * my + ny[y]) * mx;
            for (x, &v) in row.iter().enumerate() {
                if v != 0 {
                    out[base + nx[x]] = true;
                }
            }
        }
    }
    out
}

/// What the upsampling knows of one CT voxel of a slice.
#[derive(Debug, Clone, Copy, Default)]
pub struct Voxel {
    /// The model's background probability, interpolated to the voxel.
    pub background: f32,
    /// The most probable lobe's label, whatever the background probability.
    pub best_lobe: u8,
}

impl Voxel {
    /// From the voxel's class probabilities (one per channel) and each channel's label.
    pub fn of(probs: &[f32], label_of_channel: &[u8]) -> Voxel {
        let mut voxel = Voxel::default();
        let mut best_lobe = f32::NEG_INFINITY;
        for (&p, &label) in probs.iter().zip(label_of_channel) {
            if label == 0 {
                voxel.background = p;
            } else if p > best_lobe {
                best_lobe = p;
                voxel.best_lobe = label;
            }
        }
        voxel
    }
}

/// A refinement of one source slice's labels (slice index, labels, what the upsampling knew of each
/// voxel), run as each slice is upsampled. The image analysis supplies it (`segment::border`):
/// `infer` runs models and knows no rule about the CT.
pub type RefineSlice<'a> = dyn Fn(usize, &mut [u8], &[Voxel]) + Sync + 'a;

/// Labels on the source grid: class probabilities interpolated trilinearly to each source voxel
/// centre, then the argmax, mapped through `label_of_channel`.
/// With `refine`, each slice is refined once upsampled.
pub fn labels_to_source_linear(
    probs: &[f32],
    channels: usize,
    grid: &ModelGrid,
    label_of_channel: &[u8],
    refine: Option<&RefineSlice>,
) -> Vec<u8> {
    let [mz, my, mx] = grid.dims;
    let [sz, sy, sx] = grid.src_dims;
    let (tz, ty, tx) = (axis_taps(mz, sz), axis_taps(my, sy), axis_taps(mx, sx));
    let n = grid.len();
    let plane = my * mx;
    let mut out = vec![0u8; sz * sy * sx];
    out.par_chunks_mut(sy * sx)
        .zip(tz.par_iter())
        .enumerate()
        .for_each(|(z, (slice, &(z0, z1, wz)))| {
            // The two model planes around this slice, blended once; then two rows per source row.
            let mut p = vec![0f32; channels * plane];
            for c in 0..channels {
                let a = &probs[c * n + z0 * plane..c * n + (z0 + 1) * plane];
                let b = &probs[c * n + z1 * plane..c * n + (z1 + 1) * plane];
                for (o, (&va, &vb)) in p[c * plane..(c + 1) * plane]
                    .iter_mut()
                    .zip(a.iter().zip(b))
                {
                    *o = va * (1.0 - wz) + vb * wz;
                }
            }
            let mut row = vec![0f32; channels * mx];
            let mut here = vec![0f32; channels];
            let mut voxels = vec![Voxel::default(); if refine.is_some() { sy * sx } else { 0 }];
            for (y, &(y0, y1, wy)) in ty.iter().enumerate() {
                for c in 0..channels {
                    for x in 0..mx {
                        row[c * mx + x] = p[c * plane + y0 * mx + x] * (1.0 - wy)
                            + p[c * plane + y1 * mx + x] * wy;
                    }
                }
                for (x, &(x0, x1, wx)) in tx.iter().enumerate() {
                    let mut best = (0usize, f32::NEG_INFINITY);
                    for (c, p) in here.iter_mut().enumerate() {
                        *p = row[c * mx + x0] * (1.0 - wx) + row[c * mx + x1] * wx;
                        if *p > best.1 {
                            best = (c, *p);
                        }
                    }
                    slice[y * sx + x] = label_of_channel[best.0];
                    if refine.is_some() {
                        voxels[y * sx + x] = Voxel::of(&here, label_of_channel);
                    }
                }
            }
            if let Some(refine) = refine {
                refine(z, slice, &voxels);
            }
        });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_resampling_is_exact() {
        let data: Vec<f32> = (0..60).map(|v| v as f32).collect();
        assert_eq!(resample(&data, [3, 4, 5], [3, 4, 5]), data);
    }

    #[test]
    fn halving_block_aligned_data_is_exact() {
        // 1D along x: blocks of two equal values.
        let data = [1.0, 1.0, 5.0, 5.0, 9.0, 9.0];
        assert_eq!(resample(&data, [1, 1, 6], [1, 1, 3]), vec![1.0, 5.0, 9.0]);
    }

    #[test]
    fn probabilities_come_back_to_the_right_voxels() {
        // Model grid of 3 voxels along x, one-hot classes 0,1,1; source of 6 voxels.
        let probs = [1.0, 0.0, 0.0, 0.0, 1.0, 1.0];
        let grid = ModelGrid {
            dims: [1, 1, 3],
            src_dims: [1, 1, 6],
            scale: [1.0, 1.0, 2.0],
        };
        let labels = labels_to_source(&probs, 2, &grid, &[0, 7]);
        assert_eq!(labels, vec![0, 0, 7, 7, 7, 7]);
        // Each source voxel takes the decision of the model voxel containing its centre.
        let probs = [0.0, 1.0, 0.0, 1.0, 0.0, 1.0];
        let labels = labels_to_source(&probs, 2, &grid, &[0, 7]);
        assert_eq!(labels, vec![7, 7, 0, 0, 7, 7]);
    }

    #[test]
    fn every_set_source_voxel_marks_its_model_voxel() {
        let grid = ModelGrid {
            dims: [1, 1, 3],
            src_dims: [1, 1, 7],
            scale: [1.0, 1.0, 7.0 / 3.0],
        };
        let mut mask = vec![0u8; 7];
        mask[6] = 1;
        assert_eq!(mark_model_voxels(&mask, &grid), vec![false, false, true]);
        mask[2] = 1;
        assert_eq!(mark_model_voxels(&mask, &grid), vec![false, true, true]);
    }

    #[test]
    fn interpolated_probabilities_put_the_boundary_between_model_voxels() {
        // Model voxels along x hold the fraction of class 1: 0, 0.25, 1; on a 4x finer source grid
        // the 0.5 crossing lies a third of the way from the second voxel's centre to the third's.
        let probs = [1.0, 0.75, 0.0, 0.0, 0.25, 1.0];
        let grid = ModelGrid {
            dims: [1, 1, 3],
            src_dims: [1, 1, 12],
            scale: [1.0, 1.0, 4.0],
        };
        let labels = labels_to_source_linear(&probs, 2, &grid, &[0, 7], None);
        assert_eq!(labels, vec![0, 0, 0, 0, 0, 0, 0, 7, 7, 7, 7, 7]);
        // Identical grids: the same as the nearest-neighbour path.
        let same = ModelGrid {
            dims: [1, 1, 3],
            src_dims: [1, 1, 3],
            scale: [1.0, 1.0, 1.0],
        };
        assert_eq!(
            labels_to_source_linear(&probs, 2, &same, &[0, 7], None),
            labels_to_source(&probs, 2, &same, &[0, 7])
        );
    }
}
