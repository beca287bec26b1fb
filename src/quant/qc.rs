//! Quality checks on a measured study (DESIGN.md "Quantification"). A failed check is reported,
//! with its value and limit; it never stops the job.

use serde::Serialize;

use super::Measurements;
use crate::segment::lung::{LEFT, Lungs, RIGHT, dice};
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
/// Smallest Dice between the lobes model's own lung and the CT's lung (`segment::lung`): below
/// it, the model saw another chest than the CT shows and its lobe borders are guesses.
pub const MIN_LUNG_DICE: f64 = 0.7;
/// Largest share (%) of the aerated lung left without a lobe.
pub const MAX_AERATED_WITHOUT_LOBE_PERCENT: f64 = 1.0;
/// Largest share (%) of the trachea and main bronchi in the lungs and airways together: beyond it
/// the airway was followed into the lung (or the lung was not found), and that lung is missing.
pub const MAX_AIRWAY_PERCENT: f64 = 5.0;
/// Each lung's smallest share (%) of both: below it one lung was lost (or removed).
pub const MIN_LUNG_SIDE_PERCENT: f64 = 20.0;
/// Largest noise (HU, standard deviation in the tracheal air): beyond it the CT is low dose or
/// reconstructed with a sharp kernel, and neither the models nor the HU thresholds were tried on
/// such images.
pub const MAX_NOISE_HU: f64 = 60.0;
/// Largest share (%) of lung voxels allowed on the first or last slice.
pub const MAX_EDGE_SHARE_PERCENT: f64 = 0.05;

/// What the checks know of the lung besides the lobes: the CT's lung and the lobes model's own.
pub struct LungEvidence<'a> {
    pub lungs: &'a Lungs,
    /// Voxels the lobes model labelled as any lobe, before they were laid on the CT's lung.
    pub model_lung: &'a [bool],
}

/// What the checks know of the series besides its voxels.
#[derive(Debug, Clone, Default)]
pub struct SeriesFacts {
    /// Single missing slices filled from their neighbours.
    pub filled_slices: usize,
    /// The contrast agent the header names; empty when none is named.
    pub contrast_agent: String,
}

/// Where the noise was measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoiseSite {
    Trachea,
    OutsideAir,
}

/// The standard deviation (HU) of air away from any wall: in the trachea and main bronchi (at
/// least 2 mm and two voxels in from their wall) where there are 50 such voxels, else in the air around the
/// patient at least 10 mm from anything denser (within the reconstructed field: padding far below
/// −1000 HU is not air). `None` without 50 voxels of either.
pub fn noise(volume: &Volume, lungs: &Lungs) -> Option<(f64, NoiseSite)> {
    let g = &volume.geometry;
    let dims = [g.slices, g.rows, g.columns];
    // In-plane distances: the slices may be far apart.
    let flat = [g.spacing[0], g.spacing[1], 1.0e4];
    let sd = |set: &[bool], mm: f64| {
        let depth = crate::segment::postprocess::squared_depth(set, dims, flat);
        let r2 = (mm * mm) as f32;
        let (mut n, mut sum, mut sq) = (0f64, 0f64, 0f64);
        for (i, &d) in depth.iter().enumerate() {
            if set[i] && d > r2 {
                let h = f64::from(volume.hu[i]);
                n += 1.0;
                sum += h;
                sq += h * h;
            }
        }
        (n >= 50.0).then(|| (sq / n - (sum / n).powi(2)).max(0.0).sqrt())
    };
    // At least two voxels in as well: the airway mask's rim is the wall's partial volume.
    let pixel = g.spacing[0].max(g.spacing[1]);
    if let Some(v) = sd(&lungs.airway, (2.0f64).max(2.5 * pixel)) {
        return Some((v, NoiseSite::Trachea));
    }
    let outside: Vec<bool> = volume
        .hu
        .iter()
        .zip(&lungs.inside_air)
        .map(|(&h, &inside)| !inside && (-1100..-500).contains(&h))
        .collect();
    sd(&outside, (10.0f64).max(3.0 * pixel)).map(|v| (v, NoiseSite::OutsideAir))
}

/// Run every check.
pub fn check(
    volume: &Volume,
    lobes: &[u8],
    m: &Measurements,
    evidence: &LungEvidence,
    series: &SeriesFacts,
) -> Vec<QcCheck> {
    let filled_slices = series.filled_slices;
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

    // Where a single missing slice was filled, the acquired slices are two spacings apart.
    let sp = g.spacing[2] * if filled_slices > 0 { 2.0 } else { 1.0 };
    let ok = sp <= MAX_SPACING_MM + 1e-6;
    let filled = if filled_slices > 0 {
        format!(
            "; {filled_slices} missing slice{} filled by averaging {} neighbours",
            if filled_slices == 1 { " was" } else { "s were" },
            if filled_slices == 1 { "its" } else { "their" }
        )
    } else {
        String::new()
    };
    out.push(QcCheck {
        name: "slice_spacing",
        passed: ok,
        value: sp,
        limit: format!("at most {MAX_SPACING_MM} mm between acquired slices"),
        message: if ok {
            format!("slice spacing is fine enough{filled}")
        } else {
            format!(
                "slices {sp:.2} mm apart are too coarse for a reliable opacity measurement{filled}"
            )
        },
    });

    let lungs = evidence.lungs;
    let ct_lung: Vec<bool> = lungs.side.iter().map(|&s| s != 0).collect();
    let d = dice(evidence.model_lung, &ct_lung);
    let ok = d >= MIN_LUNG_DICE;
    out.push(QcCheck {
        name: "lobes_model_agreement",
        passed: ok,
        value: d,
        limit: format!("Dice at least {MIN_LUNG_DICE} between the lobes model's lung and the CT's"),
        message: if ok {
            "the lobes model saw the lungs the CT shows".into()
        } else {
            format!(
                "the lobes model's lungs differ from the CT's (Dice {d:.2}): lobe borders are guesses"
            )
        },
    });

    // Aerated lung: the CT's lung where it is air (a lost lung is `both_lungs`' to catch).
    let (mut aerated, mut without) = (0usize, 0usize);
    for (i, &a) in lungs.inside_air.iter().enumerate() {
        if a && !lungs.airway[i] && lungs.side[i] != 0 {
            aerated += 1;
            without += usize::from(lobes[i] == 0);
        }
    }
    let share = 100.0 * without as f64 / aerated.max(1) as f64;
    let ok = share <= MAX_AERATED_WITHOUT_LOBE_PERCENT;
    out.push(QcCheck {
        name: "aerated_lung_without_lobe",
        passed: ok,
        value: share,
        limit: format!("at most {MAX_AERATED_WITHOUT_LOBE_PERCENT} % of the aerated lung"),
        message: if ok {
            "every part of the aerated lung is in a lobe".into()
        } else {
            format!("{share:.1} % of the aerated lung is in no lobe: lobe volumes are incomplete")
        },
    });

    let airway = lungs.airway.iter().filter(|&&a| a).count();
    let share =
        100.0 * airway as f64 / (airway + lungs.count(RIGHT) + lungs.count(LEFT)).max(1) as f64;
    let ok = share <= MAX_AIRWAY_PERCENT;
    out.push(QcCheck {
        name: "airway",
        passed: ok,
        value: share,
        limit: format!("at most {MAX_AIRWAY_PERCENT} % of the lungs and airways"),
        message: if ok {
            "the trachea and main bronchi were told from the lung".into()
        } else {
            format!(
                "{share:.0} % of the lungs and airways was taken as airway: the airway search ran \
                 into the lung, which is then missing from the lobes"
            )
        },
    });

    let (r, l) = (lungs.count(RIGHT), lungs.count(LEFT));
    let smaller = 100.0 * r.min(l) as f64 / (r + l).max(1) as f64;
    let ok = smaller >= MIN_LUNG_SIDE_PERCENT;
    out.push(QcCheck {
        name: "both_lungs",
        passed: ok,
        value: smaller,
        limit: format!("each lung at least {MIN_LUNG_SIDE_PERCENT} % of both"),
        message: if ok {
            "both lungs found".into()
        } else {
            format!(
                "one lung is {smaller:.0} % of both: it was not found, or is collapsed or resected"
            )
        },
    });

    // Enhanced vessels and enhancing lung read denser: the models and the opacity thresholds were
    // set on CT without contrast (the phantoms), and no contrast-enhanced case checked them.
    let agent = series.contrast_agent.trim();
    out.push(QcCheck {
        name: "contrast",
        passed: agent.is_empty(),
        value: if agent.is_empty() { 0.0 } else { 1.0 },
        limit: "no contrast agent named in the header".into(),
        message: if agent.is_empty() {
            "no contrast agent named".into()
        } else {
            format!(
                "contrast-enhanced CT (\"{agent}\"): pulmo's models and opacity thresholds were set \
                 on CT without contrast, and enhanced vessels and lung read denser"
            )
        },
    });

    let limit = format!("at most {MAX_NOISE_HU} HU (standard deviation of air)");
    out.push(match noise(volume, lungs) {
        Some((v, site)) => {
            let ok = v <= MAX_NOISE_HU;
            let at = match site {
                NoiseSite::Trachea => "in the trachea",
                NoiseSite::OutsideAir => "in the air around the patient",
            };
            QcCheck {
                name: "noise",
                passed: ok,
                value: v,
                limit,
                message: if ok {
                    format!("image noise {v:.0} HU {at} is within what pulmo was tried on")
                } else {
                    format!(
                        "image noise {v:.0} HU {at} (low dose or a sharp kernel) is beyond what pulmo was tried on: opacity thresholds are unreliable"
                    )
                },
            }
        }
        None => QcCheck {
            name: "noise",
            passed: false,
            value: 0.0,
            limit,
            message: "no air to measure the image noise in".into(),
        },
    });
    out
}
