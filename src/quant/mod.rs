//! Measurements on label volumes, exactly as DESIGN.md ("Quantification") defines them.
//!
//! Owns the definitions of lobe volume, percentage of lobe opacification (PLO), ground-glass and
//! consolidation shares and the CT severity score, so that the phantom's truth and pulmo's
//! findings are computed by the same code and compare key by key.

pub mod qc;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use crate::labels::{Lobe, opacity};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LobeMeasurement {
    pub volume_ml: f64,
    pub plo_percent: f64,
    pub ggo_percent: f64,
    pub consolidation_percent: f64,
    pub ctss: u8,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WholeLungMeasurement {
    pub volume_ml: f64,
    pub plo_percent: f64,
    pub ctss_total: u8,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measurements {
    pub lobes: BTreeMap<String, LobeMeasurement>,
    pub whole_lung: WholeLungMeasurement,
}

/// What pulmo finds in one study: the measurements, the COVID-19 probability and the quality
/// checks. Serialised with the same "lobes" and "whole_lung" keys as the phantom's truth.json.
#[derive(Debug, Clone, Serialize)]
pub struct Findings {
    #[serde(flatten)]
    pub measurements: Measurements,
    pub covid_probability: f64,
    pub qc: Vec<qc::QcCheck>,
    pub qc_passed: bool,
    /// In words, for whoever reads findings.json: whether the numbers can be relied on and why not.
    pub reliability: String,
}

impl Findings {
    /// `reliability` from the checks.
    pub fn reliability_of(checks: &[qc::QcCheck]) -> String {
        let failed: Vec<&str> = checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| c.message.as_str())
            .collect();
        if failed.is_empty() {
            "every quality check passed (the models are still unverified on real CT)".into()
        } else {
            format!("NOT RELIABLE: {}", failed.join("; "))
        }
    }
}

/// CT severity score of one lobe (Pan et al., Radiology 2020): 0 none, 1 < 5 %, 2 5–25 %,
/// 3 26–50 %, 4 51–75 %, 5 > 75 %. The published bands are in whole percent; for a continuous
/// PLO the upper bound of each band is inclusive (25.0 % is 2, 25.01 % is 3).
pub fn ctss(plo_percent: f64) -> u8 {
    if plo_percent <= 0.0 {
        0
    } else if plo_percent < 5.0 {
        1
    } else if plo_percent <= 25.0 {
        2
    } else if plo_percent <= 50.0 {
        3
    } else if plo_percent <= 75.0 {
        4
    } else {
        5
    }
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}

/// Measure every lobe and the whole lung. `lobes` and `opacities` are label volumes on the same
/// grid; opacities outside the lobes are ignored (opacified = ground-glass ∪ consolidation inside
/// the lobe).
pub fn measure(lobes: &[u8], opacities: &[u8], voxel_volume_ml: f64) -> Measurements {
    // counts[lobe label][opacity label]
    let mut counts = [[0u64; 3]; 6];
    for (&l, &o) in lobes.iter().zip(opacities) {
        if (l as usize) < counts.len() && (o as usize) < 3 {
            counts[l as usize][o as usize] += 1;
        }
    }
    let mut out = BTreeMap::new();
    let (mut lung, mut opac, mut total) = (0u64, 0u64, 0u8);
    for lobe in Lobe::ALL {
        let c = counts[lobe.label() as usize];
        let voxels = c[0] + c[1] + c[2];
        let opacified = c[1] + c[2];
        let plo = percent(opacified, voxels);
        let score = ctss(plo);
        lung += voxels;
        opac += opacified;
        total += score;
        out.insert(
            lobe.key().to_string(),
            LobeMeasurement {
                volume_ml: voxels as f64 * voxel_volume_ml,
                plo_percent: plo,
                ggo_percent: percent(c[1], voxels),
                consolidation_percent: percent(c[2], voxels),
                ctss: score,
            },
        );
    }
    Measurements {
        lobes: out,
        whole_lung: WholeLungMeasurement {
            volume_ml: lung as f64 * voxel_volume_ml,
            plo_percent: percent(opac, lung),
            ctss_total: total,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctss_boundaries_on_both_sides() {
        let eps = 1e-9;
        assert_eq!(ctss(0.0), 0);
        assert_eq!(ctss(eps), 1);
        assert_eq!(ctss(5.0 - eps), 1);
        assert_eq!(ctss(5.0), 2);
        assert_eq!(ctss(25.0), 2);
        assert_eq!(ctss(25.0 + eps), 3);
        assert_eq!(ctss(50.0), 3);
        assert_eq!(ctss(50.0 + eps), 4);
        assert_eq!(ctss(75.0), 4);
        assert_eq!(ctss(75.0 + eps), 5);
    }

    #[test]
    fn ctss_bands() {
        let cases = [
            (0.0, 0),
            (0.01, 1),
            (4.99, 1),
            (5.0, 2),
            (25.0, 2),
            (25.5, 3),
            (50.0, 3),
            (50.1, 4),
            (75.0, 4),
            (75.1, 5),
            (100.0, 5),
        ];
        for (plo, score) in cases {
            assert_eq!(ctss(plo), score, "PLO {plo}");
        }
    }

    #[test]
    fn measure_counts_inside_lobes_only() {
        // RUL: 4 voxels, 1 GGO + 1 consolidation; LLL: 2 voxels, none; one opacity outside.
        let lobes = [1, 1, 1, 1, 5, 5, 0];
        let opac = [1, 2, 0, 0, 0, 0, 2];
        let m = measure(&lobes, &opac, 0.5);
        let rul = &m.lobes["RUL"];
        assert_eq!(rul.volume_ml, 2.0);
        assert_eq!(rul.plo_percent, 50.0);
        assert_eq!(rul.ggo_percent, 25.0);
        assert_eq!(rul.consolidation_percent, 25.0);
        assert_eq!(rul.ctss, 3);
        assert_eq!(m.lobes["RML"].volume_ml, 0.0);
        assert_eq!(m.lobes["RML"].ctss, 0);
        assert_eq!(m.whole_lung.volume_ml, 3.0);
        assert!((m.whole_lung.plo_percent - 100.0 * 2.0 / 6.0).abs() < 1e-12);
        assert_eq!(m.whole_lung.ctss_total, 3);
    }
}
