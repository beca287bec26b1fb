//! Quality checks on a measured study (DESIGN.md "Quantification"). A failed check is reported,
//! with its value and limit; it never stops the job.

use serde::Serialize;

use super::Measurements;
use crate::volume::Volume;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QcCheck {
    pub name: &'static str,
    pub passed: bool,
    pub value: f64,
    pub limit: String,
    /// What a failure means, in words.
    pub message: String,
}

/// Adult lung volume range (ml) that pulmo accepts as plausible.
pub const LUNG_VOLUME_ML: (f64, f64) = (1500.0, 9000.0);
/// Each lobe's share of the lung (%).
pub const LOBE_SHARE_PERCENT: (f64, f64) = (3.0, 45.0);
/// Largest slice spacing (mm) for a reliable opacity measurement.
pub const MAX_SPACING_MM: f64 = 5.0;
/// Smallest Dice between the model's lung mask and a simple HU-threshold lung mask.
pub const MIN_LUNG_DICE: f64 = 0.7;
/// Largest share (%) of lung voxels allowed on the first or last slice.
pub const MAX_EDGE_SHARE_PERCENT: f64 = 0.05;

/// Lung mask by HU threshold: air below −400 HU that is not outside the body (per slice, not
/// reachable from the image border), the two largest 3D components, holes filled.
pub fn threshold_lung_mask(volume: &Volume) -> Vec<bool> {
    let g = &volume.geometry;
    let dims = [g.slices, g.rows, g.columns];
    let mut mask: Vec<u8> = volume.hu.iter().map(|&h| u8::from(h < -400)).collect();
    let plane = g.rows * g.columns;
    use rayon::prelude::*;
    mask.par_chunks_mut(plane).for_each(|slab| {
        let mut queue = std::collections::VecDeque::new();
        for (i, v) in slab.iter_mut().enumerate() {
            let (x, y) = (i % g.columns, i / g.columns);
            if (x == 0 || y == 0 || x + 1 == g.columns || y + 1 == g.rows) && *v == 1 {
                *v = 0;
                queue.push_back(i);
            }
        }
        while let Some(i) = queue.pop_front() {
            let (x, y) = (i % g.columns, i / g.columns);
            let mut visit = |j: usize| {
                if slab[j] == 1 {
                    slab[j] = 0;
                    queue.push_back(j);
                }
            };
            if x > 0 {
                visit(i - 1);
            }
            if x + 1 < g.columns {
                visit(i + 1);
            }
            if y > 0 {
                visit(i - g.columns);
            }
            if y + 1 < g.rows {
                visit(i + g.columns);
            }
        }
    });
    let air: Vec<bool> = mask.iter().map(|&m| m == 1).collect();
    let first = crate::infer::postprocess::largest_component(&air, dims);
    let rest: Vec<bool> = air.iter().zip(&first).map(|(&a, &f)| a && !f).collect();
    let second = crate::infer::postprocess::largest_component(&rest, dims);
    let mut labels: Vec<u8> = first
        .iter()
        .zip(&second)
        .map(|(&a, &b)| u8::from(a || b))
        .collect();
    // Vessels and dense opacities enclosed by aerated lung belong to the lung.
    crate::infer::postprocess::fill_holes_per_slice(&mut labels, dims);
    labels.into_iter().map(|l| l > 0).collect()
}

fn dice(a: &[bool], b: &[bool]) -> f64 {
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

/// Run every check.
pub fn check(volume: &Volume, lobes: &[u8], m: &Measurements) -> Vec<QcCheck> {
    let g = &volume.geometry;
    let mut out = Vec::new();

    let v = m.whole_lung.volume_ml;
    let ok = (LUNG_VOLUME_ML.0..=LUNG_VOLUME_ML.1).contains(&v);
    out.push(QcCheck {
        name: "lung_volume",
        passed: ok,
        value: v,
        limit: format!("{} to {} ml", LUNG_VOLUME_ML.0, LUNG_VOLUME_ML.1),
        message: if ok {
            "lung volume is plausible".into()
        } else {
            format!(
                "lung volume {v:.0} ml is implausible: wrong series, or the segmentation failed"
            )
        },
    });

    let shares: Vec<(String, f64)> = m
        .lobes
        .iter()
        .map(|(k, l)| {
            (
                k.clone(),
                if v > 0.0 {
                    100.0 * l.volume_ml / v
                } else {
                    0.0
                },
            )
        })
        .collect();
    let bad: Vec<String> = shares
        .iter()
        .filter(|(_, s)| !(LOBE_SHARE_PERCENT.0..=LOBE_SHARE_PERCENT.1).contains(s))
        .map(|(k, s)| format!("{k} {s:.1} %"))
        .collect();
    let smallest = shares.iter().map(|(_, s)| *s).fold(f64::INFINITY, f64::min);
    out.push(QcCheck {
        name: "five_lobes",
        passed: bad.is_empty(),
        value: if smallest.is_finite() { smallest } else { 0.0 },
        limit: format!(
            "each lobe {} to {} % of the lung",
            LOBE_SHARE_PERCENT.0, LOBE_SHARE_PERCENT.1
        ),
        message: if bad.is_empty() {
            "all five lobes present with plausible shares".into()
        } else {
            format!("implausible lobe shares: {}", bad.join(", "))
        },
    });

    let plane = g.rows * g.columns;
    let lung_total = lobes.iter().filter(|&&l| l > 0).count().max(1);
    let edge = |k: usize| {
        lobes[k * plane..(k + 1) * plane]
            .iter()
            .filter(|&&l| l > 0)
            .count()
    };
    let edge_share = 100.0 * edge(0).max(edge(g.slices - 1)) as f64 / lung_total as f64;
    let ok = edge_share <= MAX_EDGE_SHARE_PERCENT;
    out.push(QcCheck {
        name: "lung_coverage",
        passed: ok,
        value: edge_share,
        limit: format!("at most {MAX_EDGE_SHARE_PERCENT} % of the lung on the first or last slice"),
        message: if ok {
            "the lungs are covered from apex to base".into()
        } else {
            "the lungs are cut at the first or last slice: volumes and percentages are incomplete"
                .into()
        },
    });

    let sp = g.spacing[2];
    let ok = sp <= MAX_SPACING_MM + 1e-6;
    out.push(QcCheck {
        name: "slice_spacing",
        passed: ok,
        value: sp,
        limit: format!("at most {MAX_SPACING_MM} mm"),
        message: if ok {
            "slice spacing is fine enough".into()
        } else {
            format!("slices {sp:.2} mm apart are too coarse for a reliable opacity measurement")
        },
    });

    let model_lung: Vec<bool> = lobes.iter().map(|&l| l > 0).collect();
    let d = dice(&model_lung, &threshold_lung_mask(volume));
    let ok = d >= MIN_LUNG_DICE;
    out.push(QcCheck {
        name: "lung_mask_agreement",
        passed: ok,
        value: d,
        limit: format!("Dice at least {MIN_LUNG_DICE} with a HU-threshold lung mask"),
        message: if ok {
            "the model's lungs agree with the air-filled lungs of the CT".into()
        } else {
            format!("the model's lungs differ from the CT's air-filled lungs (Dice {d:.2})")
        },
    });
    out
}
