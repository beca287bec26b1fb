//! Found opacities that are a solid lesion: kept by the thin filter and the vessel rule.
//!
//! On a small CT (2.7-3.3 mm pixels, 5 mm slices) a solid nodule of 4-11 mm radius is a few
//! voxels across: the opacities model finds part of it, and what it finds is as thin as its false
//! findings, so `postprocess::drop_thin_opacities` dropped every small study's nodule on the
//! tuning phantoms. What tells them apart is the CT: a solid nodule is dense, and its density lies
//! inside the finding (a dense structure mostly inside it), where a vessel goes on beyond it and
//! ground glass has next to no density. The model, too, calls a nodule consolidation and its false
//! findings mostly ground glass. So a found opacity is a solid lesion when at least
//! `min_consolidation_share` of it is consolidation, it holds at least `min_solid_ml` of dense
//! structures that lie mostly inside it, and more of its voxels belong to those than to dense
//! structures that go on beyond it (a vessel with a dense knot in it is not a nodule). A nodule
//! touching a vessel joins the vessel's structure and is not found solid: the vessel rule may
//! still drop it (models/train/README.md has the measurements).

use std::collections::HashSet;

use super::dense::{self, Lung};
use super::postprocess::OpacityComponents;
use crate::infer::model::SolidLesions;
use crate::labels::opacity;

/// The solid lesions found, each by one of its voxels (indices into `[z][y][x]` of the CT
/// grid): later rules only add voxels to a finding or drop it, so the voxel names the finding
/// even after it has grown.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Found {
    voxels: Vec<usize>,
}

impl Found {
    /// The roots of the components of `found` that hold a solid lesion.
    pub(crate) fn roots_in(&self, found: &OpacityComponents, dims: [usize; 3]) -> HashSet<u32> {
        self.voxels
            .iter()
            .filter_map(|&v| found.root_at(v, dims))
            .collect()
    }

    #[cfg(test)]
    pub(crate) fn from_voxels(voxels: Vec<usize>) -> Self {
        Self { voxels }
    }

    pub fn len(&self) -> usize {
        self.voxels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.voxels.is_empty()
    }
}

/// The solid lesions among `opacities` (labels on the CT grid, `[z][y][x]` of `dims`, `spacing`
/// in mm as `[x, y, z]`), judged on `lung` as the model found them, before any opacity rule.
pub fn find(
    opacities: &[u8],
    lung: &mut Lung,
    dims: [usize; 3],
    spacing: [f64; 3],
    rule: &SolidLesions,
) -> Found {
    let Some(found) = OpacityComponents::without_depth(opacities, dims) else {
        return Found::default();
    };
    let split = dense::split(&found, |_| true, lung, rule.dense_above_hu);
    let (ny, nx) = (dims[1], dims[2]);
    // Indexed by root, as `found.deepest` is.
    let mut consolidation = vec![0u64; found.runs.len()];
    for (run, &root) in found.runs.iter().zip(&found.roots) {
        let (z, y, x0, x1) = found.global(run);
        let base = (z * ny + y) * nx;
        consolidation[root as usize] += opacities[base + x0..base + x1]
            .iter()
            .filter(|&&o| o == opacity::CONSOLIDATION)
            .count() as u64;
    }
    let voxel_ml = spacing.iter().product::<f64>() / 1000.0;
    let solid = |root: u32| {
        split.get(&root).is_some_and(|s| {
            s.voxels > 0
                && consolidation[root as usize] as f64
                    >= rule.min_consolidation_share * s.voxels as f64
                && s.inside as f64 * voxel_ml >= rule.min_solid_ml
                && s.inside > s.outside
        })
    };
    let mut seen = HashSet::new();
    let mut voxels = Vec::new();
    for (run, &root) in found.runs.iter().zip(&found.roots) {
        if seen.insert(root) && solid(root) {
            let (z, y, x0, _) = found.global(run);
            voxels.push((z * ny + y) * nx + x0);
        }
    }
    Found { voxels }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::postprocess::drop_thin_opacities;

    const DIMS: [usize; 3] = [7, 12, 20];
    const SPACING: [f64; 3] = [1.0, 1.0, 1.0];

    fn at(z: usize, y: usize, x: usize) -> usize {
        (z * DIMS[1] + y) * DIMS[2] + x
    }

    /// `find` on the lung of `lobes` and `hu`.
    fn solid(o: &[u8], lobes: &[u8], hu: &[i16], rule: &SolidLesions) -> Found {
        find(o, &mut Lung::new(lobes, hu, DIMS), DIMS, SPACING, rule)
    }

    fn rule() -> SolidLesions {
        SolidLesions {
            dense_above_hu: -300.0,
            min_consolidation_share: 0.3,
            min_solid_ml: 0.02,
        }
    }

    /// Lung at -850 HU everywhere; a nodule (30 HU), 3 × 3 × 3 voxels around slice 3, row 5,
    /// column 5, which the model found as consolidation `label`; and a vessel (40 HU) along x
    /// through row 9 of slice 3, of which the model called three voxels (columns 12-14)
    /// consolidation.
    fn case(label: u8) -> (Vec<u8>, Vec<u8>, Vec<i16>) {
        let n = DIMS.iter().product();
        let lobes = vec![1u8; n];
        let mut hu = vec![-850i16; n];
        let mut o = vec![0u8; n];
        for z in 2..5 {
            for y in 4..7 {
                for x in 4..7 {
                    hu[at(z, y, x)] = 30;
                    o[at(z, y, x)] = label;
                }
            }
        }
        for x in 0..DIMS[2] {
            hu[at(3, 9, x)] = 40;
        }
        for x in 12..15 {
            o[at(3, 9, x)] = opacity::CONSOLIDATION;
        }
        (o, lobes, hu)
    }

    #[test]
    fn a_dense_consolidation_is_solid_and_a_vessel_is_not() {
        let (o, lobes, hu) = case(opacity::CONSOLIDATION);
        let found = solid(&o, &lobes, &hu, &rule());
        assert_eq!(found.voxels, vec![at(2, 4, 4)]);
    }

    #[test]
    fn ground_glass_over_the_same_density_is_not() {
        let (o, lobes, hu) = case(opacity::GROUND_GLASS);
        assert!(solid(&o, &lobes, &hu, &rule()).is_empty());
    }

    #[test]
    fn too_little_density_of_its_own_is_not() {
        let (o, lobes, hu) = case(opacity::CONSOLIDATION);
        // 27 voxels of 1 mm³: 0.027 mL.
        let rule = SolidLesions {
            min_solid_ml: 0.03,
            ..rule()
        };
        assert!(solid(&o, &lobes, &hu, &rule).is_empty());
    }

    #[test]
    fn a_vessel_with_a_dense_knot_in_it_is_not() {
        // A consolidation-labelled finding (3 slices × 3 rows × 6 columns around slice 3, row 9)
        // that the vessel runs through (6 of its voxels, 14 more outside it), with a dense knot of
        // 4 voxels of its own beside the vessel (not 6-connected to it).
        let (_, lobes, mut hu) = case(opacity::CONSOLIDATION);
        let mut o = vec![0u8; hu.len()];
        for z in 2..5 {
            for y in 8..11 {
                for x in 6..12 {
                    o[at(z, y, x)] = opacity::CONSOLIDATION;
                }
            }
        }
        for x in 7..11 {
            hu[at(2, 8, x)] = 30;
        }
        let rule = SolidLesions {
            min_solid_ml: 0.004,
            ..rule()
        };
        // The nodule of `case` lies outside this finding and stays at -850 HU here.
        let nodule_free: Vec<i16> = hu
            .iter()
            .zip(case(opacity::CONSOLIDATION).2)
            .map(|(&h, c)| if c == 30 { -850 } else { h })
            .collect();
        assert!(solid(&o, &lobes, &nodule_free, &rule).is_empty());
        // Without the vessel the knot is the finding's own density: solid.
        let no_vessel: Vec<i16> = nodule_free
            .iter()
            .map(|&h| if h == 40 { -850 } else { h })
            .collect();
        assert_eq!(solid(&o, &lobes, &no_vessel, &rule).len(), 1);
    }

    #[test]
    fn the_thin_filter_keeps_a_solid_lesion_and_drops_the_vessel() {
        let (o, lobes, hu) = case(opacity::CONSOLIDATION);
        let found = solid(&o, &lobes, &hu, &rule());
        // The nodule's centre is 2 mm from outside it: a ball of 2.5 fits in neither finding.
        let mut without = o.clone();
        drop_thin_opacities(&mut without, DIMS, SPACING, 2.5, &Found::default());
        assert!(without.iter().all(|&v| v == 0));
        let mut with = o.clone();
        drop_thin_opacities(&mut with, DIMS, SPACING, 2.5, &found);
        let nodule = o.iter().filter(|&&v| v > 0).count() - 3;
        assert_eq!(with.iter().filter(|&&v| v > 0).count(), nodule);
        assert_eq!(with[at(3, 9, 13)], 0);
        assert_eq!(with[at(3, 5, 5)], opacity::CONSOLIDATION);
    }
}
