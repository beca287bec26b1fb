//! The TID 1500 report that `pulmo analyze` writes, against real validators and readers:
//! dciodvfy, DCMTK dsrdump, highdicom's TID 1500 classes and dcmqi's tid1500reader, whose numbers
//! must equal findings.json; the Comprehensive 3D option; and templates an integrator edits.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use pulmo::iod::transfer_syntax::Syntax;
use pulmo::phantom::Severity;

/// A moderate COVID-19 phantom analysed with the stand-in models; returns the output folder.
fn analysed(dir: &Path, extra: &str) -> (PathBuf, std::process::Output) {
    let study = dir.join("study");
    if !study.exists() {
        let mut params = small(211);
        params.severity = Severity::Moderate;
        write_phantom(&study, &params, Syntax::Explicit, false, false);
    }
    let cfg = stand_in_config(dir, extra);
    let out = dir.join("out");
    std::fs::remove_dir_all(&out).ok();
    let result = pulmo_analyze(&cfg, &study.join("dicom"), &out);
    (out, result)
}

/// dciodvfy finds no error (the declared private scheme 99PULMO draws warnings only).
fn dciodvfy_no_errors(path: &Path) {
    let out = run(Command::new(tool("dciodvfy")).arg(path));
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = text.lines().filter(|l| l.contains("Error")).collect();
    assert!(errors.is_empty(), "dciodvfy:\n{}", errors.join("\n"));
}

#[test]
fn the_report_is_valid_and_readers_find_the_findings_numbers() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (out, result) = analysed(tmp.path(), "");
    assert!(
        result.status.success() || result.status.code() == Some(3),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let sr = out.join("sr.dcm");
    dciodvfy_no_errors(&sr);
    // dsrdump reads the whole tree, checking content items strictly, without a word on stderr.
    let dump = run(Command::new(tool("dsrdump"))
        .args(["-Ee", "-Ec", "+Pl"])
        .arg(&sr));
    assert!(dump.status.success());
    assert!(
        dump.stderr.is_empty(),
        "dsrdump: {}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let text = String::from_utf8_lossy(&dump.stdout);
    for expected in [
        "Enhanced SR Document",
        "Completion Flag     : COMPLETE",
        "Verification Flag   : UNVERIFIED",
        "\"Imaging Measurement Report\"",
        "\"Percentage of lobe opacified\"",
        "not for clinical use",
    ] {
        assert!(text.contains(expected), "dsrdump lacks {expected}:\n{text}");
    }
    // dcmqi (3D Slicer's reader) converts it; highdicom reads it through its TID 1500 classes;
    // both must give findings.json's numbers.
    let dcmqi_json = tmp.path().join("dcmqi.json");
    run_ok(
        Command::new(python().with_file_name("tid1500reader"))
            .arg("--inputDICOM")
            .arg(&sr)
            .arg("--outputMetadata")
            .arg(&dcmqi_json),
    );
    let checked = run_ok(
        Command::new(python())
            .arg(repo().join("tests/py/check_sr.py"))
            .arg(&sr)
            .arg(out.join("findings.json"))
            .arg(&dcmqi_json),
    );
    assert!(checked.starts_with("ok 7 groups"), "{checked}");
}

#[test]
fn a_changed_number_is_caught_by_the_reader_check() {
    // The oracle is not a rubber stamp: the same SR against altered findings fails.
    let tmp = tempfile::tempdir().expect("tempdir");
    let (out, _) = analysed(tmp.path(), "");
    let findings = out.join("findings.json");
    let mut f: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&findings).expect("read")).expect("json");
    let v = f["lobes"]["RUL"]["plo_percent"].as_f64().expect("plo");
    f["lobes"]["RUL"]["plo_percent"] = serde_json::json!(v + 0.5);
    let altered = tmp.path().join("altered.json");
    std::fs::write(&altered, f.to_string()).expect("write");
    let out = run(Command::new(python())
        .arg(repo().join("tests/py/check_sr.py"))
        .arg(out.join("sr.dcm"))
        .arg(&altered));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("right upper lobe"));
}

#[test]
fn comprehensive_3d_sr_is_an_option() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (out, _) = analysed(tmp.path(), "[output]\nsr_kind = \"comprehensive3d\"\n");
    let sr = out.join("sr.dcm");
    dciodvfy_no_errors(&sr);
    let obj = dicom_object::open_file(&sr).expect("sr");
    assert_eq!(
        obj.meta()
            .media_storage_sop_class_uid()
            .trim_end_matches('\0'),
        "1.2.840.10008.5.1.4.1.1.88.34"
    );
}

#[test]
fn an_edited_template_changes_the_report_and_a_broken_one_is_refused_with_line_and_reason() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let shipped = std::fs::read_to_string(repo().join("templates/tid1500.xml")).expect("template");
    // Wording changed by an integrator, no recompiling.
    let edited = tmp.path().join("edited.xml");
    std::fs::write(
        &edited,
        shipped.replace(
            "meaning=\"Percentage of lobe opacified\"",
            "meaning=\"Lobe opacification\"",
        ),
    )
    .expect("write");
    let (out, _) = analysed(
        tmp.path(),
        &format!("[output]\nsr_template = \"{}\"\n", edited.display()),
    );
    let dump = run_ok(Command::new(tool("dsrdump")).arg(out.join("sr.dcm")));
    assert!(dump.contains("\"Lobe opacification\""), "{dump}");
    assert!(!dump.contains("\"Percentage of lobe opacified\""));
    // Broken templates: the command refuses to start, naming the line and the reason.
    let line_of = |needle: &str| {
        shipped
            .lines()
            .position(|l| l.contains(needle))
            .expect("needle")
            + 1
    };
    let cases = [
        (
            shipped.replace("{lobe.plo_percent}", "{lobe.plo}"),
            // Errors name the line where the element starts.
            line_of("code=\"PULMO-PLO\""),
            "unknown placeholder {lobe.plo}",
        ),
        (
            shipped.replace(
                "<num rel=\"CONTAINS\" code=\"PULMO-PLO\"",
                "<num rel=\"HAS CONCEPT MOD\" code=\"PULMO-PLO\"",
            ),
            line_of("code=\"PULMO-PLO\""),
            "a CONTAINER may not have a NUM child by HAS CONCEPT MOD",
        ),
        (
            shipped.replace("value=\"{lobe.ctss}\"", "value=\"{lobe.name}\""),
            line_of("code=\"PULMO-CTSS\""),
            "a NUM value must be a number",
        ),
        (shipped.replacen("</container>", "", 1), 0, ""),
    ];
    for (n, (text, line, reason)) in cases.into_iter().enumerate() {
        let path = tmp.path().join(format!("broken{n}.xml"));
        std::fs::write(&path, text).expect("write");
        let (_, result) = analysed(
            tmp.path(),
            &format!("[output]\nsr_template = \"{}\"\n", path.display()),
        );
        assert!(!result.status.success(), "broken template {n} was accepted");
        let err = String::from_utf8_lossy(&result.stderr);
        assert!(err.contains(&format!("broken{n}.xml, line ")), "{err}");
        if line > 0 {
            assert!(err.contains(&format!("line {line}: {reason}")), "{err}");
        }
        // The node refuses to start with it too.
        if n == 0 {
            let cfg = tmp.path().join("serve.toml");
            std::fs::write(
                &cfg,
                format!(
                    "[node]\nport = {}\n[http]\nport = {}\n[storage]\ndata_dir = \"{}\"\n\
                     [output]\nsr_template = \"{}\"\n",
                    free_port(),
                    free_port(),
                    tmp.path().join("data").display(),
                    path.display()
                ),
            )
            .expect("config");
            let serve = run(pulmo().arg("--config").arg(&cfg).arg("serve"));
            assert!(!serve.status.success());
            assert!(
                String::from_utf8_lossy(&serve.stderr).contains("unknown placeholder {lobe.plo}"),
                "{}",
                String::from_utf8_lossy(&serve.stderr)
            );
        }
    }
}

#[test]
fn conformance_validate_passes_the_outputs_and_fails_a_broken_one() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (out, _) = analysed(tmp.path(), "");
    let validate = |dir: &Path| run(Command::new(repo().join("conformance/validate")).arg(dir));
    let r = validate(&out);
    let text = String::from_utf8_lossy(&r.stdout).to_string();
    assert!(
        r.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&r.stderr)
    );
    // Two SEGs (4 validators each), the SR (5), and 4 per image of the overlay series.
    let overlay = std::fs::read_dir(out.join("overlay"))
        .expect("overlay series")
        .count();
    assert!(overlay >= 2, "{overlay} overlay images");
    let want = format!("{} passed, 0 failed", 13 + 4 * overlay);
    assert!(text.contains(&want), "{want}:\n{text}");
    // The SR without its CompletionFlag (type 1): the validators must say so.
    let broken = tmp.path().join("broken");
    std::fs::create_dir_all(&broken).expect("dir");
    let sr = broken.join("sr.dcm");
    std::fs::copy(out.join("sr.dcm"), &sr).expect("copy");
    run_ok(
        Command::new(tool("dcmodify"))
            .args(["-nb", "-ea", "(0040,a491)"])
            .arg(&sr),
    );
    let r = validate(&broken);
    let text = String::from_utf8_lossy(&r.stdout).to_string();
    assert!(!r.status.success(), "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("dciodvfy") && l.contains("FAIL")),
        "{text}"
    );
}
