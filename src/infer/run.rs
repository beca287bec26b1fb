//! Running a model over a volume on its grid: sliding 3D patches with overlap and blending, or
//! batches of whole 2D slices, or the whole volume for a classifier.
//!
//! Blending weight along each axis of a patch is 0 within `q = overlap / 4` voxels of an edge that
//! lies inside the volume (outputs there see the patch's padding, not the neighbouring tissue),
//! then rises linearly to 1 at half the overlap. Patch outputs are therefore exact wherever they
//! count, and tiled inference equals whole-volume inference when the model's receptive radius is at
//! most `q` voxels; the ramp hides seams for models with larger receptive fields.

use ndarray::{Array, IxDyn};
use ort::value::TensorRef;

use super::InferError;
use super::model::{Activation, Layout, Model};

/// Positions of patches of size `p` with overlap `o` along an axis of length `n`.
pub fn positions(n: usize, p: usize, o: usize) -> Vec<usize> {
    if n <= p {
        return vec![0];
    }
    let step = (p - o).max(1);
    let mut out: Vec<usize> = (0..).map(|i| i * step).take_while(|&s| s + p < n).collect();
    out.push(n - p);
    out.dedup();
    out
}

/// The patch actually run: `patch`, except along axes where the volume fits whole and the
/// manifest asks for padding only up to a multiple.
pub fn patch_for(patch: [usize; 3], multiple: Option<usize>, dims: [usize; 3]) -> [usize; 3] {
    let Some(m) = multiple.filter(|&m| m > 0) else {
        return patch;
    };
    let mut out = patch;
    for a in 0..3 {
        if dims[a] <= patch[a] {
            out[a] = dims[a].div_ceil(m) * m;
        }
    }
    out
}

/// Blending weights along one axis of a patch at `start` (size `p`, axis length `n`).
fn axis_weights(start: usize, p: usize, n: usize, overlap: usize) -> Vec<f32> {
    let left_inside = start > 0;
    let right_inside = start + p < n;
    let q = overlap / 4;
    let ramp = (overlap as f32 / 2.0 - q as f32).max(0.0) + 1.0;
    (0..p)
        .map(|t| {
            let mut d = usize::MAX;
            if left_inside {
                d = d.min(t);
            }
            if right_inside {
                d = d.min(p - 1 - t);
            }
            if d == usize::MAX {
                1.0
            } else if d < q {
                0.0
            } else {
                (((d - q) as f32 + 1.0) / ramp).min(1.0)
            }
        })
        .collect()
}

fn activate(values: &mut [f32], channels: usize, stride: usize, act: Activation) {
    match act {
        Activation::None => {}
        Activation::Sigmoid => values
            .iter_mut()
            .for_each(|v| *v = 1.0 / (1.0 + (-*v).exp())),
        Activation::Softmax => {
            for i in 0..stride {
                let max = (0..channels)
                    .map(|c| values[c * stride + i])
                    .fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0.0;
                for c in 0..channels {
                    let e = (values[c * stride + i] - max).exp();
                    values[c * stride + i] = e;
                    sum += e;
                }
                for c in 0..channels {
                    values[c * stride + i] /= sum;
                }
            }
        }
    }
}

/// Run the model on one input batch; returns (output shape, values).
fn infer(model: &Model, input: Array<f32, IxDyn>) -> Result<(Vec<usize>, Vec<f32>), InferError> {
    let m = &model.manifest;
    let failed = |e: &dyn std::fmt::Display| InferError::Model {
        model: m.name.clone(),
        message: e.to_string(),
    };
    let tensor = TensorRef::from_array_view(input.view()).map_err(|e| failed(&e))?;
    let mut session = model
        .session
        .lock()
        .map_err(|_| failed(&"session lock poisoned"))?;
    let outputs = session
        .run(ort::inputs![m.input.name.as_str() => tensor])
        .map_err(|e| failed(&e))?;
    let out = outputs
        .get(m.output.name.as_str())
        .ok_or_else(|| failed(&format!("no output named {}", m.output.name)))?;
    let arr = out.try_extract_array::<f32>().map_err(|e| failed(&e))?;
    Ok((arr.shape().to_vec(), arr.iter().copied().collect()))
}

/// Class probabilities on the model grid (`[channel][z][y][x]`) for segmentation models.
/// `channels_in` are the prepared input planes on the grid (each `dims` voxels); `pad` their
/// values outside the volume.
pub fn segment(
    model: &Model,
    channels_in: &[Vec<f32>],
    pad: &[f32],
    dims: [usize; 3],
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(Vec<f32>, usize), InferError> {
    segment_within(model, channels_in, pad, dims, None, progress)
}

/// Whether any voxel of the patch at `t` (size `p`) is set in `needed` (`dims`, model grid).
fn patch_needed(needed: &[bool], t: [usize; 3], p: [usize; 3], dims: [usize; 3]) -> bool {
    (t[0]..(t[0] + p[0]).min(dims[0])).any(|z| {
        (t[1]..(t[1] + p[1]).min(dims[1])).any(|y| {
            let row = (z * dims[1] + y) * dims[2];
            needed[row + t[2]..row + (t[2] + p[2]).min(dims[2])]
                .iter()
                .any(|&v| v)
        })
    })
}

/// `segment`, running patch3d models only on the patches that hold a voxel of `needed` (model
/// grid). Voxels covered by no patch that ran get probability 0 in every channel: callers use
/// this only where such voxels are discarded (opacities outside the lungs).
pub fn segment_within(
    model: &Model,
    channels_in: &[Vec<f32>],
    pad: &[f32],
    dims: [usize; 3],
    needed: Option<&[bool]>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(Vec<f32>, usize), InferError> {
    let m = &model.manifest;
    let k_out = m.output.labels.len();
    let n = dims.iter().product::<usize>();
    let c_in = channels_in.len();
    let bad_shape = |shape: &[usize], want: &[usize]| InferError::Model {
        model: m.name.clone(),
        message: format!("output shape {shape:?}, expected {want:?}"),
    };
    match m.input.layout {
        Layout::Slice2d => {
            let plane = dims[1] * dims[2];
            let mut probs = vec![0f32; k_out * n];
            let batch = m.input.batch;
            let total = dims[0] as u64;
            for z0 in (0..dims[0]).step_by(batch) {
                let b = batch.min(dims[0] - z0);
                let mut input = Array::<f32, _>::zeros(IxDyn(&[b, c_in, dims[1], dims[2]]));
                for bi in 0..b {
                    for (c, data) in channels_in.iter().enumerate() {
                        let src = &data[(z0 + bi) * plane..(z0 + bi + 1) * plane];
                        for (o, v) in input
                            .slice_mut(ndarray::s![bi, c, .., ..])
                            .iter_mut()
                            .zip(src)
                        {
                            *o = *v;
                        }
                    }
                }
                let (shape, mut out) = infer(model, input)?;
                let want = [b, k_out, dims[1], dims[2]];
                if shape != want {
                    return Err(bad_shape(&shape, &want));
                }
                for bi in 0..b {
                    let s = &mut out[bi * k_out * plane..(bi + 1) * k_out * plane];
                    activate(s, k_out, plane, m.output.activation);
                    for c in 0..k_out {
                        let dst = c * n + (z0 + bi) * plane;
                        probs[dst..dst + plane].copy_from_slice(&s[c * plane..(c + 1) * plane]);
                    }
                }
                progress((z0 + b) as u64, total);
            }
            Ok((probs, k_out))
        }
        Layout::Patch3d => {
            let p = patch_for(
                m.input.patch.unwrap_or([64, 64, 64]),
                m.input.pad_to_multiple,
                dims,
            );
            let o = m.input.overlap;
            let (pz, py, px) = (
                positions(dims[0], p[0], o),
                positions(dims[1], p[1], o),
                positions(dims[2], p[2], o),
            );
            let mut acc = vec![0f32; k_out * n];
            let mut wsum = vec![0f32; n];
            let mut tiles = Vec::new();
            for &z in &pz {
                for &y in &py {
                    for &x in &px {
                        tiles.push([z, y, x]);
                    }
                }
            }
            if let Some(needed) = needed {
                tiles.retain(|&t| patch_needed(needed, t, p, dims));
            }
            let total = tiles.len() as u64;
            let patch_n = p[0] * p[1] * p[2];
            for (done, group) in tiles.chunks(m.input.batch).enumerate() {
                let b = group.len();
                let mut input = Array::<f32, _>::zeros(IxDyn(&[b, c_in, p[0], p[1], p[2]]));
                for (bi, t) in group.iter().enumerate() {
                    for c in 0..c_in {
                        let mut view = input.slice_mut(ndarray::s![bi, c, .., .., ..]);
                        for ((lz, ly, lx), v) in view.indexed_iter_mut() {
                            let (gz, gy, gx) = (t[0] + lz, t[1] + ly, t[2] + lx);
                            *v = if gz < dims[0] && gy < dims[1] && gx < dims[2] {
                                channels_in[c][(gz * dims[1] + gy) * dims[2] + gx]
                            } else {
                                pad[c]
                            };
                        }
                    }
                }
                let (shape, mut out) = infer(model, input)?;
                let want = [b, k_out, p[0], p[1], p[2]];
                if shape != want {
                    return Err(bad_shape(&shape, &want));
                }
                for (bi, t) in group.iter().enumerate() {
                    let s = &mut out[bi * k_out * patch_n..(bi + 1) * k_out * patch_n];
                    activate(s, k_out, patch_n, m.output.activation);
                    let wz = axis_weights(t[0], p[0], dims[0], o);
                    let wy = axis_weights(t[1], p[1], dims[1], o);
                    let wx = axis_weights(t[2], p[2], dims[2], o);
                    let (nz, ny, nx) = (
                        p[0].min(dims[0] - t[0]),
                        p[1].min(dims[1] - t[1]),
                        p[2].min(dims[2] - t[2]),
                    );
                    for (lz, &w_z) in wz.iter().enumerate().take(nz) {
                        for (ly, &w_y) in wy.iter().enumerate().take(ny) {
                            for (lx, &w_x) in wx.iter().enumerate().take(nx) {
                                let w = w_z * w_y * w_x;
                                if w == 0.0 {
                                    continue;
                                }
                                let g = ((t[0] + lz) * dims[1] + t[1] + ly) * dims[2] + t[2] + lx;
                                let l = (lz * p[1] + ly) * p[2] + lx;
                                wsum[g] += w;
                                for c in 0..k_out {
                                    acc[c * n + g] += w * s[c * patch_n + l];
                                }
                            }
                        }
                    }
                }
                progress(((done + 1) * m.input.batch).min(tiles.len()) as u64, total);
            }
            for (g, &w) in wsum.iter().enumerate() {
                if w > 0.0 {
                    for c in 0..k_out {
                        acc[c * n + g] /= w;
                    }
                }
            }
            Ok((acc, k_out))
        }
        Layout::Whole3d => Err(InferError::Model {
            model: m.name.clone(),
            message: "a whole3d model is a classifier, not a segmentation".into(),
        }),
    }
}

/// Probability of the classifier's "covid" channel for one prepared input (`[channel][z][y][x]`).
pub fn classify(
    model: &Model,
    channels_in: &[Vec<f32>],
    dims: [usize; 3],
) -> Result<f64, InferError> {
    let m = &model.manifest;
    let mut input =
        Array::<f32, _>::zeros(IxDyn(&[1, channels_in.len(), dims[0], dims[1], dims[2]]));
    for (c, data) in channels_in.iter().enumerate() {
        for (o, v) in input
            .slice_mut(ndarray::s![0, c, .., .., ..])
            .iter_mut()
            .zip(data)
        {
            *o = *v;
        }
    }
    let (shape, mut out) = infer(model, input)?;
    let k = out.len();
    if shape.first() != Some(&1) || k == 0 {
        return Err(InferError::Model {
            model: m.name.clone(),
            message: format!("classifier output shape {shape:?}"),
        });
    }
    activate(&mut out, k, 1, m.output.activation);
    let c = m.channel_of("covid").unwrap_or(0);
    out.get(c)
        .map(|&p| f64::from(p))
        .ok_or_else(|| InferError::Model {
            model: m.name.clone(),
            message: format!("no output channel {c}"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_patch_is_needed_when_it_holds_a_needed_voxel() {
        let dims = [4, 4, 4];
        let mut needed = vec![false; 64];
        needed[(3 * 4 + 3) * 4 + 3] = true;
        assert!(patch_needed(&needed, [2, 2, 2], [2, 2, 2], dims));
        assert!(!patch_needed(&needed, [0, 0, 0], [3, 3, 3], dims));
        // A patch reaching past the volume's end is clipped, not read out of bounds.
        assert!(patch_needed(&needed, [3, 3, 3], [2, 2, 2], dims));
    }

    #[test]
    fn a_volume_that_fits_runs_padded_to_the_multiple_only() {
        assert_eq!(
            patch_for([96, 160, 160], Some(8), [61, 125, 130]),
            [64, 128, 136]
        );
        // An axis longer than the patch still tiles with the full patch.
        assert_eq!(
            patch_for([96, 160, 160], Some(8), [120, 125, 160]),
            [96, 128, 160]
        );
        assert_eq!(
            patch_for([96, 160, 160], None, [61, 125, 130]),
            [96, 160, 160]
        );
    }

    #[test]
    fn patches_cover_the_axis() {
        assert_eq!(positions(10, 16, 4), vec![0]);
        assert_eq!(positions(16, 16, 4), vec![0]);
        assert_eq!(positions(40, 16, 8), vec![0, 8, 16, 24]);
        assert_eq!(positions(30, 16, 4), vec![0, 12, 14]);
    }

    #[test]
    fn every_voxel_gets_weight() {
        for (n, p, o) in [(40, 16, 8), (30, 16, 4), (100, 32, 12), (33, 16, 1)] {
            let mut sum = vec![0f32; n];
            for s in positions(n, p, o) {
                for (t, w) in axis_weights(s, p, n, o).iter().enumerate() {
                    sum[s + t] += w;
                }
            }
            assert!(sum.iter().all(|&w| w > 0.0), "{n} {p} {o}: {sum:?}");
        }
    }
}
