//! Small opacities that are a vessel: found opacity made mostly of a dense structure that goes on
//! beyond it.
//!
//! On the phantoms nearly all of the opacities model's remaining false positives are pieces of
//! the vessel tree: a segment of a vessel called consolidation, or a vessel with the lung around
//! it called ground glass. At the density of blood (vessels) and of consolidation the CT cannot
//! tell them apart, and a thick vessel is as round as a small nodule, so neither density nor the
//! inscribed radius of `postprocess::drop_thin_opacities` separates them. What does is that a
//! vessel does not stop where the finding stops: its dense voxels belong to a dense structure
//! (6-connected lung voxels above `dense_above_hu`) that lies mostly outside the finding, while
//! a consolidation is dense inside its opacity and a ground-glass lesion is not dense at all. So
//! a found opacity is dropped when no ball of `max_radius_mm` fits in it (large lesions contain
//! vessels and keep them: they are part of the opacified lung) and at least `min_vessel_share` of
//! its voxels belong to dense structures that are more outside it than inside. A solid nodule
//! touching a vessel joins the vessel's structure and is lost too: the cost, measured on the
//! tuning phantoms (models/train/README.md). A ground-glass lesion that a vessel runs through is
//! kept when the manifest has `max_ground_glass_iqr_hu`: most of it is lung below the dense
//! threshold, evenly dense (a narrow interquartile range), where the lung around a vessel falls
//! off from the vessel's density to the aerated lung's.

use std::collections::{HashMap, HashSet};

use super::dense::{self, Lung};
use super::postprocess::OpacityComponents;
use crate::infer::model::VesselOpacities;

/// Drop from `opacities` (labels on the CT grid, `[z][y][x]` of `dims`, `spacing` in mm as `[x,
/// y, z]`) the small components that are mostly vessel, judged on `lung`.
pub fn drop(
    opacities: &mut [u8],
    lung: &mut Lung,
    dims: [usize; 3],
    spacing: [f64; 3],
    rule: &VesselOpacities,
) {
    let Some(found) = OpacityComponents::of(opacities, dims, spacing) else {
        return;
    };
    let r = rule.max_radius_mm as f32;
    let small = |root: u32| found.deepest[root as usize] < r * r;
    let split = dense::split(&found, small, lung, rule.dense_above_hu);
    let share = rule.min_vessel_share;
    let vessel = |root: u32| {
        split
            .get(&root)
            .is_some_and(|s| s.voxels > 0 && s.outside as f64 >= share * s.voxels as f64)
    };
    let glass = match rule.max_ground_glass_iqr_hu {
        Some(max_iqr) => ground_glass(
            &found,
            vessel,
            lung.hu(),
            dims,
            rule.dense_above_hu,
            max_iqr,
        ),
        None => HashSet::new(),
    };
    found.clear(opacities, dims, |root| {
        vessel(root) && !glass.contains(&root)
    });
}

/// The roots among those `judge` picks that are ground glass of their own: at least half of
/// their voxels lung at or below `dense_above` HU of the CT (`hu`), whose interquartile range
/// is at most `max_iqr` HU.
fn ground_glass(
    found: &OpacityComponents,
    judge: impl Fn(u32) -> bool,
    hu: &[i16],
    dims: [usize; 3],
    dense_above: f32,
    max_iqr: f64,
) -> HashSet<u32> {
    let (ny, nx) = (dims[1], dims[2]);
    // Root → its voxel count and the HU of its voxels at or below `dense_above`.
    let mut values: HashMap<u32, (usize, Vec<i16>)> = HashMap::new();
    for (run, &root) in found.runs.iter().zip(&found.roots) {
        if !judge(root) {
            continue;
        }
        let (z, y, x0, x1) = found.global(run);
        let base = (z * ny + y) * nx;
        let (n, v) = values.entry(root).or_default();
        *n += x1 - x0;
        v.extend(
            hu[base + x0..base + x1]
                .iter()
                .filter(|&&h| f32::from(h) <= dense_above),
        );
    }
    values
        .into_iter()
        .filter_map(|(root, (n, mut v))| {
            if v.is_empty() || 2 * v.len() < n {
                return None;
            }
            v.sort_unstable();
            let q = |p: f64| f64::from(v[((v.len() - 1) as f64 * p).round() as usize]);
            (q(0.75) - q(0.25) <= max_iqr).then_some(root)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIMS: [usize; 3] = [5, 9, 20];
    const SPACING: [f64; 3] = [1.0, 1.0, 1.0];

    fn at(z: usize, y: usize, x: usize) -> usize {
        (z * DIMS[1] + y) * DIMS[2] + x
    }

    fn rule() -> VesselOpacities {
        VesselOpacities {
            dense_above_hu: -300.0,
            max_radius_mm: 4.0,
            min_vessel_share: 0.2,
            max_ground_glass_iqr_hu: None,
        }
    }

    fn rule_with(share: f64, radius_mm: f64) -> VesselOpacities {
        VesselOpacities {
            min_vessel_share: share,
            max_radius_mm: radius_mm,
            ..rule()
        }
    }

    /// The opacities `o` after the rule with this share and radius.
    fn after(o: &[u8], lobes: &[u8], hu: &[i16], share: f64, radius_mm: f64) -> Vec<u8> {
        let mut o = o.to_vec();
        let rule = rule_with(share, radius_mm);
        drop(
            &mut o,
            &mut Lung::new(lobes, hu, DIMS),
            DIMS,
            SPACING,
            &rule,
        );
        o
    }

    /// Lung everywhere at -850 HU, with a vessel (40 HU) along x through row 4 of slice 2.
    fn lung_with_vessel() -> (Vec<u8>, Vec<i16>) {
        let lobes = vec![1u8; DIMS.iter().product()];
        let mut hu = vec![-850i16; lobes.len()];
        for x in 0..DIMS[2] {
            hu[at(2, 4, x)] = 40;
        }
        (lobes, hu)
    }

    /// A 3 × 3 × 3 opacity centred on slice 2, row 4, column `cx`.
    fn cube(cx: usize) -> Vec<u8> {
        let mut o = vec![0u8; DIMS.iter().product()];
        for z in 1..4 {
            for y in 3..6 {
                for x in cx - 1..cx + 2 {
                    o[at(z, y, x)] = 1;
                }
            }
        }
        o
    }

    #[test]
    fn drops_a_small_opacity_around_a_vessel_that_goes_on() {
        let (lobes, hu) = lung_with_vessel();
        let o = cube(10);
        // 3 of its 27 voxels are the vessel, which runs 17 more voxels outside it.
        assert!(after(&o, &lobes, &hu, 0.1, 4.0).iter().all(|&v| v == 0));
    }

    #[test]
    fn keeps_it_when_the_vessel_share_is_below_the_rule() {
        let (lobes, hu) = lung_with_vessel();
        let o = cube(10);
        assert_eq!(after(&o, &lobes, &hu, 0.2, 4.0), o);
    }

    #[test]
    fn keeps_a_dense_opacity_whose_density_stays_inside_it() {
        // A consolidation: the whole cube dense, the vessel only touching it (it is mostly
        // inside the finding, so it is not a vessel passing through).
        let (lobes, mut hu) = lung_with_vessel();
        let mut o = cube(10);
        for (h, &v) in hu.iter_mut().zip(&o) {
            if v > 0 {
                *h = 30;
            }
        }
        // Shorten the vessel to 3 voxels on each side of the cube.
        for x in (0..6).chain(15..20) {
            hu[at(2, 4, x)] = -850;
        }
        o.iter_mut().filter(|v| **v > 0).for_each(|v| *v = 2);
        assert_eq!(after(&o, &lobes, &hu, 0.2, 4.0), o);
    }

    #[test]
    fn keeps_an_opacity_too_large_for_the_rule() {
        let (lobes, hu) = lung_with_vessel();
        let o = cube(10);
        // The cube's centre is 2 mm from outside it: a ball of 1.5 mm fits.
        assert_eq!(after(&o, &lobes, &hu, 0.1, 1.5), o);
    }

    #[test]
    fn the_vessel_only_counts_inside_the_lung() {
        let (mut lobes, hu) = lung_with_vessel();
        // Outside the cube the vessel's voxels are not lung (mediastinum): nothing goes on.
        for x in (0..9).chain(12..20) {
            lobes[at(2, 4, x)] = 0;
        }
        let o = cube(10);
        assert_eq!(after(&o, &lobes, &hu, 0.1, 4.0), o);
    }

    /// `cube(10)` over the vessel with the lung of the cube off the vessel at `hu_of(z, y, x)`,
    /// after the rule with a vessel share of 0.1 and `max_ground_glass_iqr_hu` of `max_iqr`.
    fn ground_glass_case(hu_of: impl Fn(usize, usize, usize) -> i16, max_iqr: Option<f64>) -> bool {
        let (lobes, mut hu) = lung_with_vessel();
        let o = cube(10);
        for z in 1..4 {
            for y in 3..6 {
                for x in 9..12 {
                    if hu[at(z, y, x)] < -300 {
                        hu[at(z, y, x)] = hu_of(z, y, x);
                    }
                }
            }
        }
        let mut after = o.clone();
        let rule = VesselOpacities {
            max_ground_glass_iqr_hu: max_iqr,
            ..rule_with(0.1, 4.0)
        };
        let mut lung = Lung::new(&lobes, &hu, DIMS);
        drop(&mut after, &mut lung, DIMS, SPACING, &rule);
        after == o
    }

    #[test]
    fn keeps_ground_glass_of_its_own_that_a_vessel_runs_through() {
        // 24 of the 27 voxels ground glass at -560 / -540 HU, 3 the vessel (11 %).
        let glass = |z: usize, y: usize, x: usize| if (z + y + x) % 2 == 0 { -560 } else { -540 };
        assert!(!ground_glass_case(glass, None));
        assert!(ground_glass_case(glass, Some(60.0)));
        // Its interquartile range is 20 HU: too spread for a limit of 10.
        assert!(!ground_glass_case(glass, Some(10.0)));
    }

    #[test]
    fn drops_a_vessel_s_halo_whatever_the_limit() {
        // Partial volume: dense beside the vessel (the 12 voxels 6-connected to it), aerated
        // further out.
        let halo = |z: usize, y: usize, _x: usize| {
            if z.abs_diff(2) + y.abs_diff(4) == 1 {
                -420
            } else {
                -820
            }
        };
        assert!(!ground_glass_case(halo, Some(60.0)));
    }
}
