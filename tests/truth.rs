//! The phantom's ground truth: truth.json agrees with the label volumes (recomputed independently
//! in Python), severity profiles land in their clinical ranges, patterns look like themselves,
//! and everything is deterministic by seed.

mod common;

use std::process::Command;

use common::*;
use pulmo::iod::transfer_syntax::Syntax;
use pulmo::phantom::{self, Pattern, Severity};
use pulmo::quant::{Lobe, measure};

#[test]
fn truth_json_matches_label_volumes_recomputed_in_python() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cases = [
        (21, Pattern::Covid, Severity::Severe, false),
        (22, Pattern::Lobar, Severity::Moderate, true),
        (23, Pattern::Nodules, Severity::Moderate, false),
        (24, Pattern::Covid, Severity::Critical, true),
    ];
    for (seed, pattern, severity, shuffle) in cases {
        let mut params = small(seed);
        params.pattern = pattern;
        params.severity = severity;
        let dir = tmp.path().join(format!("{seed}"));
        write_phantom(&dir, &params, Syntax::Explicit, false, shuffle);
        let out = run_ok(
            Command::new(python())
                .arg(repo().join("tests/py/check_truth.py"))
                .arg(&dir),
        );
        assert!(out.starts_with("ok"), "{out}");
    }
}

#[test]
fn severity_profiles_land_in_their_ranges_over_20_seeds() {
    for severity in [
        Severity::Mild,
        Severity::Moderate,
        Severity::Severe,
        Severity::Critical,
    ] {
        let (lo, hi) = severity.plo_range();
        let mut values = Vec::new();
        let (mut upper, mut lower) = (0.0, 0.0);
        for seed in 0..20 {
            let mut params = small(1000 + seed);
            params.severity = severity;
            let p = phantom::generate(&params);
            let m = measure(&p.lobes, &p.opacities, p.volume.geometry.voxel_volume_ml());
            let plo = m.whole_lung.plo_percent;
            assert!(
                (lo..=hi).contains(&plo),
                "{severity:?} seed {seed}: whole-lung PLO {plo:.2} % outside {lo}..{hi} %"
            );
            values.push(plo);
            if plo > 0.0 {
                // Bilateral: both lungs carry opacities.
                let right = m.lobes["RUL"].plo_percent
                    + m.lobes["RML"].plo_percent
                    + m.lobes["RLL"].plo_percent;
                let left = m.lobes["LUL"].plo_percent + m.lobes["LLL"].plo_percent;
                assert!(
                    right > 0.0 && left > 0.0,
                    "{severity:?} seed {seed}: not bilateral"
                );
            }
            upper += m.lobes["RUL"].plo_percent + m.lobes["LUL"].plo_percent;
            lower += m.lobes["RLL"].plo_percent + m.lobes["LLL"].plo_percent;
        }
        if severity == Severity::Moderate {
            values.sort_by(f64::total_cmp);
            let median = (values[9] + values[10]) / 2.0;
            assert!(
                (1.0..=3.5).contains(&median),
                "moderate median PLO {median:.2} % is not near 2 %"
            );
        }
        if hi > 0.0 {
            assert!(
                lower > upper,
                "{severity:?}: lower lobes ({lower:.1}) not more opacified than upper ({upper:.1})"
            );
        }
    }
}

#[test]
fn patterns_look_like_themselves() {
    for seed in 0..5 {
        let mut params = small(200 + seed);
        params.pattern = Pattern::Lobar;
        let p = phantom::generate(&params);
        let m = measure(&p.lobes, &p.opacities, p.volume.geometry.voxel_volume_ml());
        let involved: Vec<_> = m.lobes.values().filter(|l| l.plo_percent > 0.0).collect();
        assert_eq!(involved.len(), 1, "lobar seed {seed}: {m:?}");
        assert!(involved[0].plo_percent > 50.0, "lobar seed {seed}: {m:?}");
        assert!(involved[0].consolidation_percent > involved[0].ggo_percent);

        params.pattern = Pattern::Nodules;
        let p = phantom::generate(&params);
        let m = measure(&p.lobes, &p.opacities, p.volume.geometry.voxel_volume_ml());
        assert!(
            m.whole_lung.plo_percent > 0.0 && m.whole_lung.plo_percent < 2.0,
            "nodules seed {seed}: {}",
            m.whole_lung.plo_percent
        );

        params.pattern = Pattern::Normal;
        let p = phantom::generate(&params);
        assert!(p.opacities.iter().all(|&o| o == 0));
    }
}

#[test]
fn anatomy_is_plausible_and_varies_with_the_seed() {
    let mut volumes = Vec::new();
    for seed in 0..6 {
        let p = phantom::generate(&small(300 + seed));
        let m = measure(&p.lobes, &p.opacities, p.volume.geometry.voxel_volume_ml());
        let lung = m.whole_lung.volume_ml;
        assert!(
            (2500.0..=7000.0).contains(&lung),
            "seed {seed}: lung {lung} ml"
        );
        for lobe in Lobe::ALL {
            let share = m.lobes[lobe.key()].volume_ml / lung;
            assert!(
                (0.04..=0.4).contains(&share),
                "seed {seed}: {} share {share:.2}",
                lobe.key()
            );
        }
        // Lungs are dark, soft tissue is not: the HU of lung voxels are mostly below -600.
        let lung_hu: Vec<i16> = p
            .volume
            .hu
            .iter()
            .zip(&p.lobes)
            .zip(&p.opacities)
            .filter(|((_, l), o)| **l > 0 && **o == 0)
            .map(|((h, _), _)| *h)
            .collect();
        let dark = lung_hu.iter().filter(|&&h| h < -600).count() as f64 / lung_hu.len() as f64;
        assert!(
            dark > 0.85,
            "seed {seed}: only {dark:.2} of lung voxels below -600 HU"
        );
        // The lungs are not cut at the first or last slice.
        let plane = p.volume.geometry.rows * p.volume.geometry.columns;
        let last = p.volume.geometry.slices - 1;
        assert!(p.lobes[..plane].iter().all(|&l| l == 0));
        assert!(p.lobes[last * plane..].iter().all(|&l| l == 0));
        volumes.push(lung);
    }
    volumes.dedup();
    assert_eq!(volumes.len(), 6, "anatomy does not vary with the seed");
}

#[test]
fn generation_is_deterministic() {
    let a = phantom::generate(&small(42));
    let b = phantom::generate(&small(42));
    assert_eq!(a.volume.hu, b.volume.hu);
    assert_eq!(a.lobes, b.lobes);
    assert_eq!(a.opacities, b.opacities);
    let c = phantom::generate(&small(43));
    assert_ne!(a.volume.hu, c.volume.hu);
}
