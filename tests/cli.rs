//! The command line a newcomer meets: help, the demo, config handling, phantom errors.

mod common;

use common::*;

#[test]
fn help_lists_every_subcommand() {
    let out = run_ok(pulmo().arg("--help"));
    for cmd in [
        "serve", "analyze", "demo", "phantom", "inspect", "send", "echo", "status", "retry",
        "models", "config",
    ] {
        assert!(
            out.lines().any(|l| l.trim_start().starts_with(cmd)),
            "{cmd} missing from --help:\n{out}"
        );
    }
    assert!(out.contains("Not for clinical use"));
}

#[test]
fn demo_runs_the_whole_path_over_loopback_and_prints_the_table() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = stand_in_config(tmp.path(), "");
    let out = run_ok(
        pulmo()
            .arg("--config")
            .arg(&cfg)
            .args(["demo", "--size", "small", "--out"])
            .arg(tmp.path().join("demo")),
    );
    assert!(out.contains("received: 2 SEG, 1 SR, "), "{out}");
    assert!(out.contains("lobe    volume ml (truth)"), "{out}");
    for lobe in ["RUL", "RML", "RLL", "LUL", "LLL", "lung"] {
        assert!(out.lines().any(|l| l.starts_with(lobe)), "{lobe}: {out}");
    }
    assert!(out.contains("COVID-19 probability"), "{out}");
    assert!(out.contains("models: test-lobes 0.0.1"), "{out}");
    // What the stand-in PACS got is on disk, and the node stopped cleanly (SIGTERM).
    let spool = pulmo::pipeline::scan::files_under(&tmp.path().join("demo/pacs/spool"))
        .expect("receiver spool");
    assert!(spool.len() >= 5, "{} files", spool.len());
    assert!(tmp.path().join("demo/node/clean-shutdown").exists());
}

#[test]
fn queue_commands_fail_clearly_without_their_inputs() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = tmp.path().join("pulmo.toml");
    std::fs::write(
        &cfg,
        format!(
            "[storage]\ndata_dir = \"{}\"\n",
            tmp.path().join("none").display()
        ),
    )
    .expect("config");
    let cases: [(Vec<&str>, &str, bool); 4] = [
        (vec!["status"], "no pulmo index", false),
        (vec!["retry", "--all-failed"], "no pulmo index", false),
        (vec!["retry"], "give a delivery id", false),
        // A file that does not exist: its own line with the reason, and a failing exit.
        (
            vec!["send", "/nonexistent.dcm", "--to", "PACS@127.0.0.1:9"],
            "FAILED  /nonexistent.dcm: cannot open",
            true,
        ),
    ];
    for (args, expected, on_stdout) in cases {
        let out = run(pulmo().arg("--config").arg(&cfg).args(&args));
        assert!(!out.status.success(), "{args:?} succeeded");
        let text =
            String::from_utf8_lossy(if on_stdout { &out.stdout } else { &out.stderr }).to_string();
        assert!(text.contains(expected), "{args:?}: {text}");
    }
}

#[test]
fn default_config_round_trips_and_bad_fields_are_named() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let text = run_ok(pulmo().args(["config", "--print-default"]));
    let path = tmp.path().join("pulmo.toml");
    std::fs::write(&path, &text).expect("write");
    let out = run_ok(pulmo().arg("--config").arg(&path).arg("config"));
    assert!(out.contains("valid"), "{out}");

    let bad = text.replace("port = 11112", "port = 0");
    std::fs::write(&path, bad).expect("write");
    let out = run(pulmo().arg("--config").arg(&path).arg("config"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("node.port"), "{err}");

    let out = run(pulmo()
        .arg("--config")
        .arg(tmp.path().join("missing.toml"))
        .arg("config"));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.toml"));
}

#[test]
fn phantom_refuses_syntaxes_it_cannot_encode() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = run(pulmo()
        .args([
            "phantom",
            "--size",
            "small",
            "--transfer-syntax",
            "jpeg2000",
            "--out",
        ])
        .arg(tmp.path()));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot encode JPEG 2000"), "{err}");
}

#[test]
fn phantom_command_writes_study_truth_and_previews() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = run_ok(
        pulmo()
            .args([
                "phantom",
                "--size",
                "small",
                "--seed",
                "3",
                "--extra-series",
                "--out",
            ])
            .arg(tmp.path()),
    );
    assert!(out.contains("LLL"), "{out}");
    for f in [
        "truth/truth.json",
        "truth/lobes.nii.gz",
        "truth/opacities.nii.gz",
        "preview/axial-middle.png",
        "preview/axial-middle-overlay.png",
        "preview/coronal-overlay.png",
    ] {
        assert!(tmp.path().join(f).is_file(), "{f} missing");
    }
    assert!(dicom_files(&tmp.path().join("dicom")).len() > 60);
}
