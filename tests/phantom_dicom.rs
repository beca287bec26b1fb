//! The phantom's CT files are valid DICOM (dciodvfy, dcmdump) in every syntax pulmo writes, and
//! reading them back gives the phantom's HU volume voxel for voxel, with the same geometry, also
//! when another implementation encoded them.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use pulmo::iod::transfer_syntax::Syntax;
use pulmo::phantom::{self, Params, Size};
use rayon::prelude::*;

fn writable() -> Vec<Syntax> {
    Syntax::ALL.into_iter().filter(|s| s.writable()).collect()
}

/// dciodvfy on every file: no line may say Error. Returns the distinct warnings.
fn dciodvfy_all(dir: &Path) -> Vec<String> {
    let dciodvfy = tool("dciodvfy");
    let files = dicom_files(dir);
    assert!(!files.is_empty(), "no files in {}", dir.display());
    let results: Vec<(String, String)> = files
        .par_iter()
        .map(|f| {
            let out = run(Command::new(&dciodvfy).arg(f));
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            (f.display().to_string(), text)
        })
        .collect();
    let mut warnings = std::collections::BTreeSet::new();
    for (f, text) in &results {
        let errors: Vec<&str> = text.lines().filter(|l| l.contains("Error")).collect();
        assert!(
            errors.is_empty(),
            "dciodvfy errors in {f}:\n{}",
            errors.join("\n")
        );
        for l in text.lines().filter(|l| l.contains("Warning")) {
            warnings.insert(l.to_string());
        }
    }
    warnings.into_iter().collect()
}

/// dcmdump reads every file without an error.
fn dcmdump_all(dir: &Path) {
    let files = dicom_files(dir);
    for chunk in files.chunks(200) {
        let out = run(Command::new(tool("dcmdump")).arg("-q").args(chunk));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && !err.contains("E:"),
            "dcmdump failed in {}: {err}",
            dir.display()
        );
    }
}

#[test]
fn dciodvfy_and_dcmdump_accept_every_syntax_small_and_full() {
    let tmp = tempfile::tempdir().expect("tempdir");
    for size in [Size::Small, Size::Full] {
        let mut params = Params::new(11, size);
        params.severity = phantom::Severity::Severe;
        let p = phantom::generate(&params);
        for syntax in writable() {
            let dir = tmp.path().join(format!("{size:?}-{syntax:?}"));
            write_study(&p, &dir, syntax, true, false);
            // dicom3tools as packaged in Debian cannot read deflated files at all (it fails the
            // same way on files DCMTK deflates): validate the DCMTK-inflated copy, and let
            // dcmdump read the deflated original below.
            let to_validate = if syntax == Syntax::Deflated {
                let inflated = dir.join("inflated");
                for f in dicom_files(&dir.join("dicom")) {
                    let rel = f.strip_prefix(dir.join("dicom")).expect("prefix");
                    let out = inflated.join(rel);
                    std::fs::create_dir_all(out.parent().expect("parent")).expect("dir");
                    run_ok(Command::new(tool("dcmconv")).arg("+te").arg(&f).arg(&out));
                }
                inflated
            } else {
                dir.join("dicom")
            };
            let warnings = dciodvfy_all(&to_validate);
            assert!(
                warnings.is_empty(),
                "{size:?} {syntax:?}: dciodvfy warnings: {warnings:#?}"
            );
            dcmdump_all(&dir.join("dicom"));
            std::fs::remove_dir_all(&dir).ok();
        }
    }
}

#[test]
fn round_trip_every_writable_syntax_shuffled() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let p = phantom::generate(&small(5));
    for syntax in writable() {
        let dir = tmp.path().join(format!("{syntax:?}"));
        write_study(&p, &dir, syntax, false, true);
        assert_same_volume(&p, &dir.join("dicom"), &format!("{syntax:?}"));
    }
}

#[test]
fn round_trip_full_size_compressed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let p = phantom::generate(&Params::new(6, Size::Full));
    for syntax in [Syntax::Rle, Syntax::JpegLs] {
        let dir = tmp.path().join(format!("{syntax:?}"));
        write_study(&p, &dir, syntax, false, true);
        assert_same_volume(&p, &dir.join("dicom"), &format!("full {syntax:?}"));
    }
}

#[test]
fn round_trip_of_syntaxes_encoded_by_other_implementations() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("explicit");
    let p = write_phantom(&src, &small(8), Syntax::Explicit, false, false);
    let files = dicom_files(&src.join("dicom"));

    // JPEG Lossless SV1, encoded by DCMTK.
    let jpeg = tmp.path().join("jpeg-lossless");
    std::fs::create_dir_all(&jpeg).expect("dir");
    for f in &files {
        let name = f.file_name().expect("name");
        run_ok(
            Command::new(tool("dcmcjpeg"))
                .arg("+e1")
                .arg(f)
                .arg(jpeg.join(name)),
        );
    }
    let dump = run_ok(Command::new(tool("dcmdump")).arg(jpeg.join("IM0001.dcm")));
    assert!(dump.contains("1.2.840.10008.1.2.4.70") || dump.contains("JPEGLossless"));
    assert_same_volume(&p, &jpeg, "JPEG lossless (dcmcjpeg)");

    // JPEG 2000 Lossless, encoded by pydicom + OpenJPEG.
    let j2k = tmp.path().join("j2k");
    let n = run_ok(
        Command::new(python())
            .arg(repo().join("tests/py/transcode_j2k.py"))
            .arg(src.join("dicom"))
            .arg(&j2k),
    );
    assert_eq!(n.trim(), files.len().to_string());
    assert_same_volume(&p, &j2k, "JPEG 2000 (OpenJPEG)");
}

/// pulmo's own RLE and JPEG-LS encodings decode to the same pixels with DCMTK's decoders.
#[test]
fn dcmtk_decodes_what_pulmo_encodes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let p = phantom::generate(&small(9));
    for (syntax, decoder) in [(Syntax::Rle, "dcmdrle"), (Syntax::JpegLs, "dcmdjpls")] {
        let dir = tmp.path().join(format!("{syntax:?}"));
        write_study(&p, &dir, syntax, false, false);
        let out = tmp.path().join(format!("{syntax:?}-decoded"));
        std::fs::create_dir_all(&out).expect("dir");
        for f in dicom_files(&dir.join("dicom")) {
            let name = f.file_name().expect("name");
            run_ok(Command::new(tool(decoder)).arg(&f).arg(out.join(name)));
        }
        let dump = run_ok(Command::new(tool("dcmdump")).arg(out.join("IM0001.dcm")));
        assert!(dump.contains("LittleEndianExplicit"), "{dump}");
        assert_same_volume(&p, &out, &format!("{syntax:?} decoded by {decoder}"));
    }
}
