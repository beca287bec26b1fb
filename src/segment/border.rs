//! The lungs' border, moved to where the CT shows it wherever the lobes model is unsure.
//!
//! A lobes model on a coarse grid (3.2 mm) places the pleura within a voxel or two; the CT grid
//! shows it to a fraction of a millimetre, because aerated lung (about -850 HU) and the chest
//! wall (-100 to +60 HU) differ by far more than the noise. Where the model hesitates, its
//! background probability between the manifest's `unsure` bounds, the CT decides: aerated voxels
//! join the most probable lobe, dense ones leave the lung. A dense voxel may also be lung, a
//! consolidation that reaches the pleura; such a voxel stays when dense lung the model is sure of
//! is near it in the slice (`dense_reach_voxels`), because the boundary between consolidation and
//! chest wall is invisible on CT and the model's guess is the better one there.

use super::flood;
use crate::infer::model::LungBorder;
use crate::infer::resample::{RefineSlice, Voxel};

/// The rule as the upsampling's per-slice refinement, with the CT's HU on the source grid.
pub fn refiner<'a>(
    rule: &'a LungBorder,
    hu: &'a [i16],
    rows: usize,
    cols: usize,
) -> Box<RefineSlice<'a>> {
    let plane = rows * cols;
    Box::new(move |z: usize, labels: &mut [u8], voxels: &[Voxel]| {
        refine_slice(labels, voxels, &hu[z * plane..(z + 1) * plane], cols, rule);
    })
}

/// Refine one CT slice's labels (`rows * cols`, row major) in place.
pub fn refine_slice(
    labels: &mut [u8],
    voxels: &[Voxel],
    hu: &[i16],
    cols: usize,
    rule: &LungBorder,
) {
    let [sure_lung, sure_background] = rule.unsure;
    // 0: untouched; 1: dense lung the model is sure of; 2: dense lung it is unsure of.
    let mut dense = vec![0u8; labels.len()];
    for (i, ((label, v), &h)) in labels.iter_mut().zip(voxels).zip(hu).enumerate() {
        let h = f32::from(h);
        if *label == 0 {
            if v.background <= sure_background && h < rule.lung_below_hu && h > rule.air_below_hu {
                *label = v.best_lobe;
            }
        } else if h > rule.wall_above_hu {
            dense[i] = if v.background < sure_lung { 1 } else { 2 };
        }
    }
    // Breadth-first, `dense_reach_voxels` steps from the sure dense lung through the unsure.
    let seeds: Vec<usize> = (0..dense.len()).filter(|&i| dense[i] == 1).collect();
    let len = dense.len();
    flood::in_slice(seeds, rule.dense_reach_voxels, cols, len, |_, j| {
        let unsure = dense[j] == 2;
        if unsure {
            dense[j] = 1;
        }
        unsure
    });
    for (label, &d) in labels.iter_mut().zip(&dense) {
        if d == 2 {
            *label = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: LungBorder = LungBorder {
        unsure: [0.2, 0.8],
        lung_below_hu: -400.0,
        air_below_hu: -960.0,
        wall_above_hu: -250.0,
        dense_reach_voxels: 2,
    };

    fn voxel(background: f32) -> Voxel {
        Voxel {
            background,
            best_lobe: 3,
        }
    }

    /// One row: labels, background probabilities and HU; returns the refined labels.
    fn row(labels: &[u8], background: &[f32], hu: &[i16]) -> Vec<u8> {
        let mut out = labels.to_vec();
        let voxels: Vec<Voxel> = background.iter().map(|&b| voxel(b)).collect();
        refine_slice(&mut out, &voxels, hu, labels.len(), &RULE);
        out
    }

    #[test]
    fn the_ct_decides_where_the_model_is_unsure() {
        // Sure lung, unsure aerated background, unsure dense lung, sure body wall.
        let out = row(
            &[3, 0, 3, 0],
            &[0.05, 0.6, 0.4, 0.95],
            &[-850, -820, 30, 40],
        );
        assert_eq!(out, [3, 3, 0, 0]);
    }

    #[test]
    fn sure_voxels_and_air_are_left_alone() {
        // Sure background however aerated; unsure air (an airway) stays out; sure dense lung
        // (a vessel) stays in.
        let out = row(&[0, 0, 3], &[0.9, 0.5, 0.1], &[-850, -1000, 40]);
        assert_eq!(out, [0, 0, 3]);
    }

    #[test]
    fn consolidation_at_the_pleura_stays_within_reach() {
        // Sure dense lung, then four unsure dense voxels: two are within reach.
        let out = row(
            &[3, 3, 3, 3, 3],
            &[0.1, 0.3, 0.4, 0.5, 0.5],
            &[20, 25, 30, 35, 40],
        );
        assert_eq!(out, [3, 3, 3, 0, 0]);
    }

    #[test]
    fn reach_goes_across_rows() {
        // 3 × 2: the sure dense voxel at the top left reaches down, not through aerated lung.
        let mut labels = vec![3u8; 6];
        let voxels: Vec<Voxel> = [0.1, 0.5, 0.5, 0.5, 0.5, 0.5].map(voxel).to_vec();
        let hu = [30, -850, 30, 30, -850, 30];
        refine_slice(&mut labels, &voxels, &hu, 3, &RULE);
        assert_eq!(labels, [3, 3, 0, 3, 3, 0]);
    }

    #[test]
    fn the_ct_places_the_border_where_the_model_is_unsure_as_the_model_is_upsampled() {
        // A boundary between model voxels, in two rows, with the CT's chest wall ending later (row 0: lung
        // from voxel 9) and earlier (row 1: from voxel 5) than the model's 0.5 crossing (7).
        // Its background probability lies within 0.2..0.8 from voxel 5 to 8: the CT decides
        // there, the model elsewhere.
        let probs = [
            1.0, 0.75, 0.0, 1.0, 0.75, 0.0, 0.0, 0.25, 1.0, 0.0, 0.25, 1.0,
        ];
        let grid = crate::infer::resample::ModelGrid {
            dims: [1, 2, 3],
            src_dims: [1, 2, 12],
            scale: [1.0, 1.0, 4.0],
        };
        let rule = LungBorder {
            unsure: [0.2, 0.8],
            lung_below_hu: -400.0,
            air_below_hu: -960.0,
            wall_above_hu: -250.0,
            dense_reach_voxels: 8,
        };
        let mut hu = [-850i16; 24];
        hu[..9].fill(40);
        hu[12..17].fill(40);
        let refine = refiner(&rule, &hu, 2, 12);
        let labels = crate::infer::resample::labels_to_source_linear(
            &probs,
            2,
            &grid,
            &[0, 7],
            Some(refine.as_ref()),
        );
        let (wall, lung) = ([0u8; 9], [7u8; 3]);
        assert_eq!(labels[..12], [&wall[..], &lung[..]].concat());
        let (wall, lung) = ([0u8; 5], [7u8; 7]);
        assert_eq!(labels[12..], [&wall[..], &lung[..]].concat());
    }
}
