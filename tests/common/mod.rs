//! Helpers shared by the integration tests. A missing tool is a failure, never a skip: `make test`
//! installs every tool these tests use.
#![allow(dead_code)]

pub mod node;
pub mod orthanc;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use pulmo::config::SelectionConfig;
use pulmo::infer::ModelInfo;
use pulmo::infer::model::Role;
use pulmo::iod::transfer_syntax::Syntax;
use pulmo::phantom::study::{self, StudyOptions};
use pulmo::phantom::{self, Params, Phantom, Size};
use pulmo::pipeline::{analyze, read_study, scan};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// ../shared/data/real, beside the checkout.
pub fn real_data() -> PathBuf {
    let p = repo().join("../shared/data/real");
    assert!(
        p.is_dir(),
        "{} is missing: the tests expect shared/ beside the checkout",
        p.display()
    );
    p
}

/// A command-line tool on PATH; panics with how to get it.
pub fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    // Daemons such as Orthanc live in /usr/sbin, which a non-login PATH may lack.
    let extra = [PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")];
    for dir in std::env::split_paths(&path).chain(extra) {
        let p = dir.join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("{name} is not installed: run `make test`, which installs it (scripts/setup.sh)");
}

/// The venv's Python with the pinned validators.
pub fn python() -> PathBuf {
    let p = std::env::var_os("PULMO_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("build/venv/bin/python"));
    assert!(
        p.is_file(),
        "{} is missing: run `make test`, which creates the venv",
        p.display()
    );
    p
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

pub fn run_ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn pulmo() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pulmo"))
}

/// Write a generated phantom's study (DICOM, truth, previews) under `dir`.
pub fn write_study(p: &Phantom, dir: &Path, syntax: Syntax, extra_series: bool, shuffle: bool) {
    study::write(
        p,
        dir,
        StudyOptions {
            syntax,
            extra_series,
            shuffle,
        },
    )
    .expect("phantom study written");
}

/// Generate a phantom and write it under `dir`.
pub fn write_phantom(
    dir: &Path,
    params: &Params,
    syntax: Syntax,
    extra_series: bool,
    shuffle: bool,
) -> Phantom {
    let p = phantom::generate(params);
    write_study(&p, dir, syntax, extra_series, shuffle);
    p
}

/// pulmo reads the study in `dir` back as the phantom's HU volume, voxel for voxel, same grid.
pub fn assert_same_volume(p: &Phantom, dir: &Path, what: &str) {
    let study = read_study(dir, &SelectionConfig::default())
        .unwrap_or_else(|e| panic!("{what}: reading failed: {e}"));
    let g = &p.volume.geometry;
    assert!(
        study.volume.geometry.same_grid(g, 1e-3),
        "{what}: geometry differs:\n{:?}\n{:?}",
        study.volume.geometry,
        g
    );
    assert_eq!(study.volume.hu.len(), p.volume.hu.len(), "{what}");
    let diff = study
        .volume
        .hu
        .iter()
        .zip(&p.volume.hu)
        .filter(|(a, b)| a != b)
        .count();
    assert_eq!(diff, 0, "{what}: {diff} voxels differ");
}

/// Labels of a NIfTI that pulmo wrote (a phantom's truth, `analyze --masks`): uint8 after a
/// 352-byte header.
pub fn read_nifti_labels(path: &Path) -> Vec<u8> {
    use std::io::Read;
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).expect("open"))
        .read_to_end(&mut bytes)
        .expect("gunzip");
    bytes.split_off(352)
}

pub fn small(seed: u64) -> Params {
    Params::new(seed, Size::Small)
}

/// Every .dcm file under `dir`, sorted.
pub fn dicom_files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file() && e.path().extension().is_some_and(|x| x == "dcm"))
        .map(|e| e.into_path())
        .collect();
    out.sort();
    out
}

/// pulmo's SEGs (lobes, opacities) of a written phantom study's truth masks, shifted by `shift`
/// slices toward the head, in `study_dir/segs-VERSION`. `version` names the (pretend) model set,
/// so that SEGs of different versions get different UIDs.
pub fn segs_from_truth(study_dir: &Path, p: &Phantom, shift: usize, version: &str) -> Vec<PathBuf> {
    let study = read_study(&study_dir.join("dicom"), &SelectionConfig::default()).expect("read");
    let c = &study.selection.chosen;
    let source =
        scan::source_series(&c.frames, &study.volume.geometry, c.slice_thickness).expect("source");
    let plane = p.volume.geometry.rows * p.volume.geometry.columns;
    let shifted = |v: &[u8]| -> Vec<u8> {
        let mut out = vec![0u8; v.len()];
        out[shift * plane..].copy_from_slice(&v[..v.len() - shift * plane]);
        out
    };
    let models: Vec<ModelInfo> = [Role::Lobes, Role::Opacities]
        .into_iter()
        .map(|role| ModelInfo {
            role,
            name: "truth".into(),
            version: version.into(),
            sha256: "0".repeat(64),
            execution_provider: "none".into(),
        })
        .collect();
    let out = study_dir.join(format!("segs-{version}"));
    std::fs::create_dir_all(&out).expect("dir");
    analyze::write_segs_for(
        &out,
        &source,
        &shifted(&p.lobes),
        &shifted(&p.opacities),
        &models,
    )
    .expect("segs written")
}

/// A loopback port that was free a moment ago (a test's server binds it next).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// dciodvfy reports neither an error nor a warning on `path`.
pub fn dciodvfy_clean(path: &Path) {
    let out = run(Command::new(tool("dciodvfy")).arg(path));
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let problems: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("Error") || l.contains("Warning"))
        .collect();
    assert!(
        problems.is_empty(),
        "dciodvfy on {}:\n{}",
        path.display(),
        problems.join("\n")
    );
}

/// The tests' stand-in models (tests/py/make_models.py: thresholds and fixed networks, no
/// training) under `dir/models`; returns the folder of the complete model set.
pub fn stand_in_models(dir: &Path) -> PathBuf {
    let set = dir.join("models/set");
    // Built once per folder: a test that analyses several times reuses them.
    if !set.join("classifier.toml").is_file() {
        run_ok(
            Command::new(python())
                .arg(repo().join("tests/py/make_models.py"))
                .arg(dir.join("models")),
        );
    }
    set
}

/// `dir/pulmo.toml` with the stand-in models on the CPU, then `extra` (more tables).
pub fn stand_in_config(dir: &Path, extra: &str) -> PathBuf {
    let models = stand_in_models(dir);
    let cfg = dir.join("pulmo.toml");
    std::fs::write(
        &cfg,
        format!(
            "[inference]\nmodels_dir = \"{}\"\nexecution_providers = [\"cpu\"]\n{extra}",
            models.display()
        ),
    )
    .expect("config");
    cfg
}

/// `pulmo --config CFG analyze DICOM --out OUT`, whatever its exit status.
pub fn pulmo_analyze(cfg: &Path, dicom: &Path, out: &Path) -> Output {
    run(pulmo()
        .arg("--config")
        .arg(cfg)
        .arg("analyze")
        .arg(dicom)
        .arg("--out")
        .arg(out))
}

/// Run tests/js/ohif_check.cjs (OHIF in headless Chromium) against Orthanc at `url` after
/// uploading `files`; its JSON answer. `env` selects the mode (OHIF_MODE, OHIF_THUMB_TEXT).
pub fn ohif_check(
    url: &str,
    study_uid: &str,
    series_uid: &str,
    screenshot: &Path,
    files: &[PathBuf],
    env: &[(&str, &str)],
) -> serde_json::Value {
    let ohif = repo().join("build/ohif/package/dist");
    assert!(
        ohif.join("index.html").is_file(),
        "OHIF is missing: run `make test`, which downloads it"
    );
    let out = run_ok(
        Command::new("node")
            .envs(env.iter().copied())
            .env("NODE_PATH", repo().join("build/node/node_modules"))
            .arg(repo().join("tests/js/ohif_check.cjs"))
            .arg(url)
            .arg(ohif)
            .arg(study_uid)
            .arg(series_uid)
            .arg(screenshot)
            .args(files),
    );
    let last = out.lines().last().unwrap_or("");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("viewer output {last:?}: {e}"))
}
