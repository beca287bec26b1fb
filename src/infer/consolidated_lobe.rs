//! A consolidated lobe keeps its consolidation: the edge of lobar consolidation is the fissure.
//!
//! Where a lobe is consolidated the CT shows no fissure inside the dense lung, and the lobes
//! model, which places fissures from the aerated lung's texture and from where a patch sits in
//! the chest, gives part of the consolidated lobe to its neighbour. On the phantoms that put
//! 1-15 % of lobar pneumonia into a clean neighbouring lobe: the neighbour reads CTSS 1-2 instead
//! of 0 (models/train/README.md). Lobar consolidation is bounded by the lobe's pleura, which is
//! what makes it lobar, so a found opacity that fills most of one lobe, lies mostly in that lobe
//! and is mostly consolidation takes its voxels that the model gave to another lobe of the same
//! lung back into that lobe, unless that other lobe holds much of it too (multilobar pneumonia:
//! the other lobe is consolidated as well and keeps its part). Diffuse opacities (COVID-19:
//! ground glass crossing several lobes) are not consolidation for the most part, or are not
//! mostly in one lobe, and are left alone.

use std::collections::HashMap;

use super::model::ConsolidatedLobe;
use super::postprocess::run_components_where;
use crate::quant::{Lobe, opacity};

/// Relabel in `lobes` (labels on the CT grid, `[z][y][x]` of `dims`) the voxels of each found
/// opacity (`opacities`, 6-connected components) that the rule gives to one lobe.
pub fn claim(lobes: &mut [u8], opacities: &[u8], dims: [usize; 3], rule: &ConsolidatedLobe) {
    let (runs, roots) = run_components_where(dims, |i| opacities[i] != opacity::NONE);
    if runs.is_empty() {
        return;
    }
    let mut lobe_size = [0u64; 6];
    for &l in lobes.iter() {
        if let Some(n) = lobe_size.get_mut(usize::from(l)) {
            *n += 1;
        }
    }
    #[derive(Default)]
    struct Part {
        per_lobe: [u64; 6],
        consolidation: u64,
        size: u64,
    }
    let mut parts: HashMap<u32, Part> = HashMap::new();
    let at = |z: usize, y: usize, x: usize| (z * dims[1] + y) * dims[2] + x;
    for (run, &root) in runs.iter().zip(&roots) {
        let p = parts.entry(root).or_default();
        for x in run.x0..run.x1 {
            let i = at(run.z, run.y, x);
            if let Some(n) = p.per_lobe.get_mut(usize::from(lobes[i])) {
                *n += 1;
            }
            p.consolidation += u64::from(opacities[i] == opacity::CONSOLIDATION);
        }
        p.size += (run.x1 - run.x0) as u64;
    }
    // Component → the lobe that claims it, and which labels give their part of it to that lobe.
    let claims: HashMap<u32, (Lobe, [bool; 6])> = parts
        .iter()
        .filter_map(|(&root, p)| {
            let (label, &inside) = (1..6)
                .map(|l| (l, &p.per_lobe[l]))
                .max_by_key(|&(_, n)| *n)?;
            let lobe = Lobe::from_label(label as u8)?;
            // A component has voxels, so lying mostly inside the lobe means some are.
            let size = p.size as f64;
            let fills = inside as f64 >= rule.min_lobe_share * lobe_size[label] as f64;
            let inside_lobe = inside as f64 >= rule.min_inside_share * size;
            let consolidated = p.consolidation as f64 >= rule.min_consolidation_share * size;
            let gives = std::array::from_fn(|l| {
                Lobe::from_label(l as u8).is_some_and(|other| {
                    // Never across the mediastinum: a lobe of the other lung keeps its voxels.
                    other != lobe
                        && other.right() == lobe.right()
                        && p.per_lobe[l] as f64 <= rule.max_neighbour_share * lobe_size[l] as f64
                })
            });
            (fills && inside_lobe && consolidated).then_some((root, (lobe, gives)))
        })
        .collect();
    if claims.is_empty() {
        return;
    }
    for (run, root) in runs.iter().zip(&roots) {
        let Some(&(lobe, gives)) = claims.get(root) else {
            continue;
        };
        for x in run.x0..run.x1 {
            let l = &mut lobes[at(run.z, run.y, x)];
            if gives[usize::from(*l)] {
                *l = lobe.label();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIMS: [usize; 3] = [4, 10, 20];

    fn at(z: usize, y: usize, x: usize) -> usize {
        (z * DIMS[1] + y) * DIMS[2] + x
    }

    fn rule() -> ConsolidatedLobe {
        ConsolidatedLobe {
            min_lobe_share: 0.5,
            min_inside_share: 0.7,
            min_consolidation_share: 0.5,
            max_neighbour_share: 0.25,
        }
    }

    /// Right lung in columns 0..10 (RUL rows 0..5, RLL rows 5..10), left lung (LUL) in 10..20.
    fn lungs() -> Vec<u8> {
        let mut lobes = vec![0u8; DIMS.iter().product()];
        for z in 0..DIMS[0] {
            for y in 0..DIMS[1] {
                for x in 0..DIMS[2] {
                    lobes[at(z, y, x)] = match (x < 10, y < 5) {
                        (true, true) => Lobe::RightUpper.label(),
                        (true, false) => Lobe::RightLower.label(),
                        (false, _) => Lobe::LeftUpper.label(),
                    };
                }
            }
        }
        lobes
    }

    /// The lower lobe consolidated (label `kind`), and the consolidation running on into row 4
    /// of the upper lobe and, in row 9, into column 10 of the left lung.
    fn lower_lobe_opacified(kind: u8) -> Vec<u8> {
        let mut o = vec![opacity::NONE; DIMS.iter().product()];
        for z in 0..DIMS[0] {
            for y in 4..DIMS[1] {
                for x in 0..10 {
                    o[at(z, y, x)] = kind;
                }
            }
            o[at(z, 9, 10)] = kind;
        }
        o
    }

    fn count(lobes: &[u8], lobe: Lobe) -> usize {
        lobes.iter().filter(|&&l| l == lobe.label()).count()
    }

    #[test]
    fn the_consolidated_lobe_takes_back_what_the_model_gave_its_neighbour() {
        let mut lobes = lungs();
        let o = lower_lobe_opacified(opacity::CONSOLIDATION);
        claim(&mut lobes, &o, DIMS, &rule());
        // Row 4 of the upper lobe (4 slices x 10 columns) is now lower lobe.
        assert_eq!(count(&lobes, Lobe::RightUpper), 4 * 4 * 10);
        assert_eq!(count(&lobes, Lobe::RightLower), 4 * 6 * 10);
        for z in 0..DIMS[0] {
            assert_eq!(lobes[at(z, 4, 3)], Lobe::RightLower.label());
            assert_eq!(lobes[at(z, 3, 3)], Lobe::RightUpper.label());
        }
    }

    #[test]
    fn the_other_lung_keeps_its_voxels() {
        let mut lobes = lungs();
        let o = lower_lobe_opacified(opacity::CONSOLIDATION);
        claim(&mut lobes, &o, DIMS, &rule());
        assert_eq!(count(&lobes, Lobe::LeftUpper), 4 * 10 * 10);
    }

    #[test]
    fn ground_glass_does_not_move_fissures() {
        let mut lobes = lungs();
        let o = lower_lobe_opacified(opacity::GROUND_GLASS);
        claim(&mut lobes, &o, DIMS, &rule());
        assert_eq!(lobes, lungs());
    }

    #[test]
    fn a_neighbour_consolidated_as_well_keeps_its_part() {
        // The lower lobe and 60 % of the upper lobe consolidated, as one finding (multilobar
        // pneumonia).
        let mut o = vec![opacity::NONE; DIMS.iter().product()];
        for z in 0..DIMS[0] {
            for y in 2..DIMS[1] {
                for x in 0..10 {
                    o[at(z, y, x)] = opacity::CONSOLIDATION;
                }
            }
        }
        let multilobar = ConsolidatedLobe {
            min_inside_share: 0.6,
            ..rule()
        };
        let mut lobes = lungs();
        claim(&mut lobes, &o, DIMS, &multilobar);
        assert_eq!(lobes, lungs());
        // Were any part allowed to move, the upper lobe would lose it.
        let any_part = ConsolidatedLobe {
            max_neighbour_share: 1.0,
            ..multilobar
        };
        claim(&mut lobes, &o, DIMS, &any_part);
        assert_eq!(count(&lobes, Lobe::RightUpper), 4 * 2 * 10);
    }

    #[test]
    fn a_small_or_shared_finding_does_not_move_fissures() {
        // A consolidation of 2 rows each side of the fissure: half in each lobe, and it fills
        // 40 % of either.
        let mut o = vec![opacity::NONE; DIMS.iter().product()];
        for z in 0..DIMS[0] {
            for y in 3..7 {
                for x in 0..10 {
                    o[at(z, y, x)] = opacity::CONSOLIDATION;
                }
            }
        }
        let mut lobes = lungs();
        claim(&mut lobes, &o, DIMS, &rule());
        assert_eq!(lobes, lungs());
        // Allowed to claim a lobe it fills by 40 % and to lie half outside, it takes the rows.
        let loose = ConsolidatedLobe {
            min_lobe_share: 0.4,
            min_inside_share: 0.5,
            min_consolidation_share: 0.5,
            max_neighbour_share: 0.4,
        };
        claim(&mut lobes, &o, DIMS, &loose);
        assert_ne!(lobes, lungs());
    }
}
