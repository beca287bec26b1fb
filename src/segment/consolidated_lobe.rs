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
//! mostly in one lobe, and are left alone. Optionally (`aerated_pocket_share`) the claiming lobe
//! then gives back the neighbour's aerated lung that the model put on its side of the fissure.

use std::collections::HashMap;

use super::postprocess::{neighbours6, run_components_where};
use crate::infer::model::ConsolidatedLobe;
use crate::labels::{Lobe, opacity};

/// Relabel in `lobes` (labels on the CT grid, `[z][y][x]` of `dims`) the voxels of each found
/// opacity (`opacities`, 6-connected components) that the rule gives to one lobe.
pub fn claim(lobes: &mut [u8], opacities: &[u8], dims: [usize; 3], rule: &ConsolidatedLobe) {
    let (runs, roots) = run_components_where(dims, |i| opacities[i] != opacity::NONE);
    if runs.is_empty() {
        return;
    }
    let lobe_size = label_counts(lobes);
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
    let Some(share) = rule.aerated_pocket_share else {
        return;
    };
    // A lobe claimed by two findings gives pockets only to the lobes both let it take from.
    let mut claiming: Vec<(Lobe, [bool; 6])> = Vec::new();
    for &(lobe, gives) in claims.values() {
        match claiming.iter_mut().find(|(l, _)| *l == lobe) {
            Some((_, g)) => *g = std::array::from_fn(|i| g[i] && gives[i]),
            None => claiming.push((lobe, gives)),
        }
    }
    // In label order: a pocket given to a lobe that claims too is then that lobe's, the same on
    // every run (the claims come from a HashMap).
    claiming.sort_by_key(|(lobe, _)| lobe.label());
    for (lobe, gives) in claiming {
        give_back_aerated(lobes, opacities, dims, lobe, gives, share);
    }
}

/// Voxels per label 0-5 (background and the five lobes); other labels are not counted.
fn label_counts(lobes: &[u8]) -> [u64; 6] {
    let mut counts = [0u64; 6];
    for &l in lobes {
        if let Some(n) = counts.get_mut(usize::from(l)) {
            *n += 1;
        }
    }
    counts
}

/// The other half of the consolidated lobe's fissure: where the lobes model put the fissure too
/// far into the clean neighbour, the consolidated lobe holds a pocket of aerated lung against it,
/// one piece, a few per cent of the lobe (on the phantoms 5-15 %; the consolidated lobe's own
/// aerated voxels, around its vessels, come in pieces of at most 1.5 %). Lobar consolidation
/// reaches its pleura, so such a pocket is the neighbour's lung, and it goes to the neighbour
/// (among `gives`, the lobes that gave way to the claim) it touches on most faces. Left in place
/// it reads as the consolidated lobe's clear lung: the lobe's PLO 4-15 points low.
fn give_back_aerated(
    lobes: &mut [u8],
    opacities: &[u8],
    dims: [usize; 3],
    lobe: Lobe,
    gives: [bool; 6],
    [low, high]: [f64; 2],
) {
    let label = lobe.label();
    let lobe_size = label_counts(lobes)[usize::from(label)] as f64;
    let (runs, roots) =
        run_components_where(dims, |i| lobes[i] == label && opacities[i] == opacity::NONE);
    #[derive(Default)]
    struct Pocket {
        size: u64,
        faces: [u64; 6],
    }
    let mut pockets: HashMap<u32, Pocket> = HashMap::new();
    let row = |z: usize, y: usize| (z * dims[1] + y) * dims[2];
    for (run, &root) in runs.iter().zip(&roots) {
        let p = pockets.entry(root).or_default();
        p.size += (run.x1 - run.x0) as u64;
        for i in row(run.z, run.y) + run.x0..row(run.z, run.y) + run.x1 {
            for j in neighbours6(i, dims).into_iter().flatten() {
                let l = usize::from(lobes[j]);
                if gives.get(l).copied().unwrap_or(false) {
                    p.faces[l] += 1;
                }
            }
        }
    }
    let to: HashMap<u32, u8> = pockets
        .iter()
        .filter(|(_, p)| {
            let size = p.size as f64;
            size >= low * lobe_size && size <= high * lobe_size
        })
        .filter_map(|(&root, p)| {
            let (l, &faces) = p.faces.iter().enumerate().max_by_key(|&(_, f)| *f)?;
            (faces > 0).then_some((root, l as u8))
        })
        .collect();
    for (run, root) in runs.iter().zip(&roots) {
        if let Some(&l) = to.get(root) {
            let base = row(run.z, run.y);
            lobes[base + run.x0..base + run.x1].fill(l);
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
            aerated_pocket_share: None,
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
            aerated_pocket_share: None,
        };
        claim(&mut lobes, &o, DIMS, &loose);
        assert_ne!(lobes, lungs());
    }

    /// The right lung's fissure put at row 3 instead of row 5: the lower lobe (rows 3..10) is
    /// consolidated from row 5 on, and rows 3 and 4 are aerated lung of the upper lobe. One voxel
    /// inside the consolidation is aerated too (a vessel).
    fn fissure_too_high() -> (Vec<u8>, Vec<u8>) {
        let mut lobes = lungs();
        let mut o = vec![opacity::NONE; DIMS.iter().product()];
        for z in 0..DIMS[0] {
            for x in 0..10 {
                for y in 3..5 {
                    lobes[at(z, y, x)] = Lobe::RightLower.label();
                }
                for y in 5..DIMS[1] {
                    o[at(z, y, x)] = opacity::CONSOLIDATION;
                }
            }
            o[at(z, 8, 5)] = opacity::NONE;
        }
        (lobes, o)
    }

    #[test]
    fn an_aerated_pocket_against_the_neighbour_goes_back_to_it() {
        let (mut lobes, o) = fissure_too_high();
        // The pocket is 2 of the lower lobe's 8 rows: 25 %.
        let pockets = ConsolidatedLobe {
            aerated_pocket_share: Some([0.03, 0.3]),
            ..rule()
        };
        claim(&mut lobes, &o, DIMS, &pockets);
        assert_eq!(lobes, lungs());
        for z in 0..DIMS[0] {
            assert_eq!(lobes[at(z, 8, 5)], Lobe::RightLower.label());
        }
    }

    #[test]
    fn a_pocket_outside_the_range_or_without_the_rule_stays() {
        let (fissure, o) = fissure_too_high();
        for share in [None, Some([0.03, 0.2]), Some([0.3, 0.4])] {
            let mut lobes = fissure.clone();
            let rule = ConsolidatedLobe {
                aerated_pocket_share: share,
                ..rule()
            };
            claim(&mut lobes, &o, DIMS, &rule);
            assert_eq!(lobes, fissure, "{share:?}");
        }
    }

    #[test]
    fn without_a_claim_no_pocket_moves() {
        // The same fissure, the lower lobe's opacity ground glass: nothing claims the lobe.
        let (fissure, mut o) = fissure_too_high();
        for v in o.iter_mut().filter(|v| **v == opacity::CONSOLIDATION) {
            *v = opacity::GROUND_GLASS;
        }
        let mut lobes = fissure.clone();
        let pockets = ConsolidatedLobe {
            aerated_pocket_share: Some([0.03, 0.3]),
            ..rule()
        };
        claim(&mut lobes, &o, DIMS, &pockets);
        assert_eq!(lobes, fissure);
    }
}
