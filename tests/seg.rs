//! DICOM Segmentation objects built from masks the phantom knows: valid for dciodvfy, and read
//! back equal to the masks by highdicom, dcmqi and dcmjs, for a 512 × 512 and a 500 × 500 source.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use pulmo::iod::transfer_syntax::Syntax;
use pulmo::phantom::{self, Params, Phantom, Size};

/// The central `n × n` of a phantom (same anatomy, fewer columns and rows).
fn crop(mut p: Phantom, n: usize) -> Phantom {
    let g = p.volume.geometry.clone();
    let off = (g.columns - n) / 2;
    let take = |v: &[u8]| -> Vec<u8> {
        let mut out = Vec::with_capacity(n * n * g.slices);
        for k in 0..g.slices {
            for j in off..off + n {
                let row = (k * g.rows + j) * g.columns;
                out.extend_from_slice(&v[row + off..row + off + n]);
            }
        }
        out
    };
    let mut hu = Vec::with_capacity(n * n * g.slices);
    for k in 0..g.slices {
        for j in off..off + n {
            let row = (k * g.rows + j) * g.columns;
            hu.extend_from_slice(&p.volume.hu[row + off..row + off + n]);
        }
    }
    p.lobes = take(&p.lobes);
    p.opacities = take(&p.opacities);
    p.volume.hu = hu;
    let geo = &mut p.volume.geometry;
    geo.rows = n;
    geo.columns = n;
    geo.origin[0] += off as f64 * g.spacing[0];
    geo.origin[1] += off as f64 * g.spacing[1];
    p
}

/// Write the phantom's study, then pulmo's SEGs of its truth masks, shifted by `shift` slices.
fn study_with_segs(dir: &Path, p: &Phantom, shift: usize) -> Vec<PathBuf> {
    write_study(p, dir, Syntax::Explicit, false, false);
    segs_from_truth(dir, p, shift, "1")
}

fn check(
    tool_name: &str,
    seg: &Path,
    truth: &Path,
    other: &Path,
    kind: &str,
) -> std::process::Output {
    run(Command::new(python())
        .arg(repo().join("tests/py/check_seg.py"))
        .args([tool_name])
        .arg(seg)
        .arg(truth)
        .arg(other)
        .arg(kind))
}

fn dcmjs(seg: &Path, truth: &Path) -> std::process::Output {
    run(Command::new("node")
        .env("NODE_PATH", repo().join("build/node/node_modules"))
        .arg(repo().join("tests/js/check_seg_dcmjs.cjs"))
        .arg(seg)
        .arg(truth))
}

fn assert_ok(out: std::process::Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn segs_are_valid_and_read_back_equal_by_every_reader() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut full = Params::new(101, Size::Full);
    full.severity = phantom::Severity::Severe;
    let p512 = phantom::generate(&full);
    let p500 = crop(phantom::generate(&Params::new(102, Size::Full)), 500);
    for (name, p) in [("512", p512), ("500", p500)] {
        let dir = tmp.path().join(name);
        let segs = study_with_segs(&dir, &p, 0);
        for (seg, kind, truth) in [
            (&segs[0], "lobes", dir.join("truth/lobes.nii.gz")),
            (&segs[1], "opacities", dir.join("truth/opacities.nii.gz")),
        ] {
            dciodvfy_clean(seg);
            assert_ok(
                check("highdicom", seg, &truth, &dir.join("dicom"), kind),
                &format!("{name} highdicom {kind}"),
            );
            assert_ok(
                check(
                    "dcmqi",
                    seg,
                    &truth,
                    &dir.join(format!("dcmqi-{kind}")),
                    kind,
                ),
                &format!("{name} dcmqi {kind}"),
            );
            assert_ok(dcmjs(seg, &truth), &format!("{name} dcmjs {kind}"));
        }
        std::fs::remove_dir_all(&dir).ok();
    }
}

#[test]
fn a_shifted_seg_is_caught_by_the_readers() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut params = small(103);
    params.severity = phantom::Severity::Severe;
    let p = phantom::generate(&params);
    let dir = tmp.path().join("shifted");
    let segs = study_with_segs(&dir, &p, 1);
    let truth = dir.join("truth/lobes.nii.gz");
    let out = check("highdicom", &segs[0], &truth, &dir.join("dicom"), "lobes");
    assert!(!out.status.success(), "highdicom accepted a shifted SEG");
    assert!(String::from_utf8_lossy(&out.stdout).contains("differ"));
    assert!(
        !dcmjs(&segs[0], &truth).status.success(),
        "dcmjs check accepted a shifted SEG"
    );
    assert!(
        !check("dcmqi", &segs[0], &truth, &dir.join("q"), "lobes")
            .status
            .success()
    );
}
