//! Reading studies: series selection with reasons, real scanners' files, and broken inputs that
//! must give clear errors and never a panic.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use pulmo::config::SelectionConfig;
use pulmo::iod::transfer_syntax::Syntax;
use pulmo::pipeline::{ReadStudyError, assemble, read_study, scan, select};

#[test]
fn extra_series_the_thin_lung_series_is_chosen_and_the_others_explained() {
    let tmp = tempfile::tempdir().expect("tempdir");
    write_phantom(tmp.path(), &small(31), Syntax::Explicit, true, true);
    let truth: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(tmp.path().join("truth/truth.json")).expect("truth"),
    )
    .expect("json");
    let study = read_study(&tmp.path().join("dicom"), &SelectionConfig::default()).expect("read");
    assert_eq!(
        study.selection.chosen.series_uid,
        truth["series_instance_uid"].as_str().expect("uid")
    );
    let reasons: Vec<(&str, &str)> = study
        .selection
        .skipped
        .iter()
        .map(|s| (s.description.as_str(), s.reason.as_str()))
        .collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons
            .iter()
            .any(|(d, r)| *d == "SCOUT" && r.contains("LOCALIZER")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|(d, r)| d.contains("STANDARD") && r.contains("thicker")),
        "{reasons:?}"
    );

    // The command line says the same, in JSON.
    let out = run_ok(
        pulmo()
            .arg("inspect")
            .arg("--json")
            .arg(tmp.path().join("dicom")),
    );
    let v: serde_json::Value = serde_json::from_str(&out).expect("inspect json");
    let s = &v["studies"][0];
    assert_eq!(
        s["selected"]["series_instance_uid"],
        truth["series_instance_uid"]
    );
    assert_eq!(s["skipped"].as_array().map(Vec::len), Some(2));
}

#[test]
fn real_ct_files_are_read_with_plausible_hu_and_geometry() {
    let mut files: Vec<PathBuf> = dicom_files(&real_data());
    files.retain(|f| f.extension().is_some_and(|e| e == "dcm"));
    assert!(
        files.len() >= 14,
        "expected the real samples, found {}",
        files.len()
    );
    for f in &files {
        let frames = scan::read_header(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        assert_eq!(frames.len(), 1, "{}", f.display());
        let fr = &frames[0];
        assert!(fr.position.is_some(), "{}: no position", f.display());
        let o = fr.orientation.expect("orientation");
        assert!(
            (o[0] - 1.0).abs() < 0.01 && (o[4] - 1.0).abs() < 0.01,
            "{o:?}"
        );
        let ps = fr.pixel_spacing.expect("pixel spacing");
        // cip-copdgene-64 is a whole chest downsampled to 4.2 mm pixels.
        assert!(
            (0.3..4.5).contains(&ps[0]),
            "{}: spacing {ps:?}",
            f.display()
        );
        let hu = assemble::decode_frame(fr).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        assert_eq!(hu.len(), usize::from(fr.rows) * usize::from(fr.columns));
        let (min, max) = hu
            .iter()
            .fold((i16::MAX, i16::MIN), |(a, b), &x| (a.min(x), b.max(x)));
        assert!(
            // Metal (ECG leads, clips) reaches far above bone in 16-bit CT.
            (-3100..=-900).contains(&min) && (200..=16_000).contains(&max),
            "{}: HU range {min}..{max}",
            f.display()
        );
        // A chest or abdomen CT holds air (outside or lungs) and soft tissue.
        let air = hu.iter().filter(|&&h| (-1100..-900).contains(&h)).count();
        let soft = hu.iter().filter(|&&h| (-100..100).contains(&h)).count();
        // At least 0.3 % of the image each (1000 pixels of a 512 × 512 one was the rule; the
        // downsampled COPDGene slice has 64 × 64).
        let enough = hu.len() * 3 / 1000;
        assert!(
            air > enough && soft > enough,
            "{}: air {air}, soft {soft}",
            f.display()
        );
    }
}

#[test]
fn real_single_slice_series_are_rejected_with_a_reason() {
    let scan = scan::scan(&real_data().join("covid-ny-sbu")).expect("scan");
    assert!(scan.rejected.is_empty(), "{:?}", scan.rejected);
    let studies = select::by_study(scan.frames);
    assert_eq!(studies.len(), 10);
    for (uid, frames) in studies {
        match select::select(frames, &SelectionConfig::default()) {
            Err(select::SelectError::NoSuitableSeries { skipped, .. }) => {
                assert_eq!(skipped.len(), 1);
                assert!(
                    skipped[0].reason.contains("1 slice: at least 20"),
                    "{uid}: {}",
                    skipped[0].reason
                );
            }
            other => panic!("{uid}: expected a rejection, got {other:?}"),
        }
    }
    // The 3-slice series and the LIDC slice (which lacks Modality) are refused the same way.
    for dir in ["dcmqi-ct-3slice", "lidc-slice"] {
        let err = read_study(&real_data().join(dir), &SelectionConfig::default())
            .expect_err("too few slices");
        assert!(err.to_string().contains("at least 20"), "{dir}: {err}");
    }
}

/// A small phantom study to break, and the sorted list of its files (lowest slice first).
fn study_to_break(tmp: &Path) -> (PathBuf, Vec<PathBuf>) {
    write_phantom(tmp, &small(41), Syntax::Explicit, false, false);
    let dir = tmp.join("dicom");
    let mut files = dicom_files(&dir);
    // IM#### numbers run head to feet, so reverse for lowest first.
    files.reverse();
    (dir, files)
}

fn edit(path: &Path, f: impl FnOnce(&mut dicom_object::DefaultDicomObject)) {
    let mut obj = dicom_object::open_file(path).expect("open");
    f(&mut obj);
    obj.write_to_file(path).expect("write");
}

fn expect_error(dir: &Path, needle: &str) -> String {
    let err = read_study(dir, &SelectionConfig::default())
        .map(|_| ())
        .expect_err(needle);
    let msg = err.to_string();
    assert!(msg.contains(needle), "expected {needle:?} in: {msg}");
    msg
}

#[test]
fn broken_inputs_give_clear_errors() {
    type Breaker = fn(&Path, &[PathBuf]);
    let cases: Vec<(&str, Breaker, &str)> = vec![
        (
            "truncated",
            |_, f| {
                let bytes = std::fs::read(&f[10]).expect("read");
                std::fs::write(&f[10], &bytes[..bytes.len() / 2]).expect("write");
            },
            "IM",
        ),
        (
            "missing PixelData",
            |_, f| {
                edit(&f[5], |o| {
                    o.remove_element(tags::PIXEL_DATA);
                })
            },
            "no PixelData",
        ),
        (
            "wrong Rows in one file",
            |_, f| {
                edit(&f[7], |o| {
                    o.put(DataElement::new(
                        tags::ROWS,
                        VR::US,
                        PrimitiveValue::from(130u16),
                    ));
                })
            },
            "image sizes differ",
        ),
        (
            "wrong Rows in every file",
            |_, f| {
                for p in f {
                    edit(p, |o| {
                        o.put(DataElement::new(
                            tags::ROWS,
                            VR::US,
                            PrimitiveValue::from(100u16),
                        ));
                    });
                }
            },
            "PixelData has",
        ),
        (
            "missing ImagePositionPatient",
            |_, f| {
                edit(&f[3], |o| {
                    o.remove_element(tags::IMAGE_POSITION_PATIENT);
                })
            },
            "has no ImagePositionPatient",
        ),
        (
            "mixed orientations",
            |_, f| {
                edit(&f[4], |o| {
                    o.put(DataElement::new(
                        tags::IMAGE_ORIENTATION_PATIENT,
                        VR::DS,
                        PrimitiveValue::from("0.9961947\\0.0871557\\0\\-0.0871557\\0.9961947\\0"),
                    ));
                })
            },
            "mixed orientations",
        ),
        (
            "duplicate positions",
            |_, f| {
                let other = dicom_object::open_file(&f[9]).expect("open");
                let ipp = other
                    .element(tags::IMAGE_POSITION_PATIENT)
                    .expect("ipp")
                    .clone();
                edit(&f[8], |o| {
                    o.put(ipp);
                });
            },
            "duplicate slice position",
        ),
        (
            "two missing slices side by side",
            |_, f| {
                std::fs::remove_file(&f[20]).expect("remove");
                std::fs::remove_file(&f[21]).expect("remove");
            },
            "missing slices?",
        ),
        (
            "more single missing slices than pulmo fills",
            |_, f| {
                for k in [5, 10, 15, 20, 25] {
                    std::fs::remove_file(&f[k]).expect("remove");
                }
            },
            "5 in this series, more than the 4 pulmo fills",
        ),
        (
            "non-CT modality",
            |_, f| {
                for p in f {
                    edit(p, |o| {
                        o.put(DataElement::new(
                            tags::MODALITY,
                            VR::CS,
                            PrimitiveValue::from("MR"),
                        ));
                    });
                }
            },
            "modality is MR, not CT",
        ),
        (
            "not DICOM at all",
            |d, f| {
                for p in f {
                    std::fs::remove_file(p).expect("remove");
                }
                std::fs::write(d.join("notes.txt"), "this is not DICOM\n").expect("write");
                std::fs::write(d.join("random.dcm"), [7u8; 4000]).expect("write");
            },
            // Never "no images": the files that were there, and why the first could not be read.
            "no DICOM image could be read: 2 file(s) could not be read",
        ),
    ];
    for (name, breaker, needle) in cases {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (dir, files) = study_to_break(tmp.path());
        breaker(&dir, &files);
        let msg = expect_error(&dir, needle);
        eprintln!("{name}: {msg}");
    }
}

#[test]
fn a_single_missing_slice_is_filled_from_its_neighbours() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (dir, files) = study_to_break(tmp.path());
    let whole = read_study(&dir, &SelectionConfig::default()).expect("read");
    std::fs::remove_file(&files[20]).expect("remove");
    let study = read_study(&dir, &SelectionConfig::default()).expect("read with a gap");
    let c = &study.selection.chosen;
    assert_eq!(c.filled(), 1);
    assert!(c.frames[20].is_none() && c.frames[19].is_some() && c.frames[21].is_some());
    assert_eq!(study.volume.geometry, whole.volume.geometry);
    let plane = whole.volume.geometry.rows * whole.volume.geometry.columns;
    let slice = |v: &pulmo::volume::Volume, k: usize| v.hu[k * plane..(k + 1) * plane].to_vec();
    for k in [0, 19, 21, 40] {
        assert_eq!(
            slice(&study.volume, k),
            slice(&whole.volume, k),
            "slice {k}"
        );
    }
    let filled = slice(&study.volume, 20);
    let (below, above) = (slice(&whole.volume, 19), slice(&whole.volume, 21));
    assert!(
        filled
            .iter()
            .zip(below.iter().zip(&above))
            .all(|(&f, (&b, &a))| i32::from(f) == (i32::from(b) + i32::from(a)).div_euclid(2))
    );
    assert_ne!(
        filled,
        slice(&whole.volume, 19),
        "the phantom's slices differ"
    );

    // A gap that a broken file leaves is reported, never filled.
    let bytes = std::fs::read(&files[30]).expect("read");
    std::fs::write(&files[30], &bytes[..bytes.len() / 2]).expect("write");
    let err = read_study(&dir, &SelectionConfig::default()).expect_err("a broken file");
    assert!(err.to_string().contains("could not be read"), "{err}");
}

#[test]
fn lidc_idri_0001_is_read_with_its_two_missing_slices_filled() {
    let study = read_study(
        &real_data().join("lidc-idri-0001"),
        &SelectionConfig::default(),
    )
    .expect("read");
    let c = &study.selection.chosen;
    assert_eq!((c.frames.len(), c.filled()), (133, 2));
    assert!((study.volume.geometry.spacing[2] - 2.5).abs() < 1e-3);
    // Contrast-enhanced, as its header says: the `contrast` check reads this.
    assert!(c.present().all(|f| f.contrast_agent == "IV"));
    let normal = read_study(
        &real_data().join("covid-ct-md/normal001"),
        &SelectionConfig::default(),
    )
    .expect("read");
    assert!(
        normal
            .selection
            .chosen
            .present()
            .all(|f| f.contrast_agent.is_empty())
    );
}

#[test]
fn stray_non_dicom_files_are_listed_and_the_study_still_read() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (dir, _) = study_to_break(tmp.path());
    std::fs::write(dir.join("README.txt"), "hello").expect("write");
    std::fs::write(dir.join("empty.dcm"), []).expect("write");
    let study = read_study(&dir, &SelectionConfig::default()).expect("read");
    assert_eq!(study.rejected.len(), 2);
    assert!(
        study
            .rejected
            .iter()
            .all(|r| r.reason.contains("not a readable DICOM file"))
    );
}

#[test]
fn two_studies_in_one_folder_are_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    write_phantom(
        &tmp.path().join("a"),
        &small(51),
        Syntax::Explicit,
        false,
        false,
    );
    write_phantom(
        &tmp.path().join("b"),
        &small(52),
        Syntax::Explicit,
        false,
        false,
    );
    let err = read_study(tmp.path(), &SelectionConfig::default()).expect_err("two studies");
    let ReadStudyError::SeveralStudies { studies, .. } = &err else {
        panic!("not several studies: {err}");
    };
    // The error names each study with its image count.
    assert_eq!(studies.len(), 2, "{err}");
    assert!(err.to_string().contains(&studies[1]), "{err}");
}

#[test]
fn enhanced_ct_multiframe_is_read_by_geometry() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    let p = write_phantom(&src, &small(61), Syntax::Explicit, false, false);
    let dir = tmp.path().join("enhanced");
    std::fs::create_dir_all(&dir).expect("dir");
    let n = run_ok(
        std::process::Command::new(python())
            .arg(repo().join("tests/py/make_enhanced_ct.py"))
            .arg(src.join("dicom"))
            .arg(dir.join("enhanced.dcm")),
    );
    assert_eq!(n.trim(), p.volume.geometry.slices.to_string());
    assert_same_volume(&p, &dir, "Enhanced CT");
}
