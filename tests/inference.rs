//! The inference machinery with tiny ONNX models built by the tests (onnx.helper, no training),
//! run by the real ONNX Runtime; measurements and quality checks on the phantom's ground truth.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use pulmo::config::InferenceConfig;
use pulmo::infer::model::Model;
use pulmo::infer::resample::ModelGrid;
use pulmo::infer::{self, run};
use pulmo::iod::transfer_syntax::Syntax;
use pulmo::phantom::{self, Params, Phantom, Size};
use pulmo::quant::{self, qc};
use pulmo::volume::{Geometry, Volume};

/// Build the test models under `dir` (machinery/ and set/).
fn models(dir: &Path) -> PathBuf {
    run_ok(
        Command::new(python())
            .arg(repo().join("tests/py/make_models.py"))
            .arg(dir),
    );
    dir.to_path_buf()
}

fn cpu(models_dir: &Path) -> InferenceConfig {
    InferenceConfig {
        models_dir: models_dir.to_path_buf(),
        execution_providers: vec!["cpu".into()],
        onnxruntime_library: None,
    }
}

/// Copy a model and its manifest to `to`, editing the manifest text.
fn variant(from: &Path, name: &str, to: &Path, edit: impl Fn(String) -> String) -> PathBuf {
    std::fs::create_dir_all(to).expect("dir");
    std::fs::copy(
        from.join(format!("{name}.onnx")),
        to.join(format!("{name}.onnx")),
    )
    .expect("copy");
    let text = std::fs::read_to_string(from.join(format!("{name}.toml"))).expect("manifest");
    let path = to.join(format!("{name}.toml"));
    std::fs::write(&path, edit(text)).expect("write");
    path
}

fn geometry(dims: [usize; 3], spacing: f64) -> Geometry {
    Geometry {
        rows: dims[1],
        columns: dims[2],
        slices: dims[0],
        origin: [0.0; 3],
        row_direction: [1.0, 0.0, 0.0],
        column_direction: [0.0, 1.0, 0.0],
        slice_direction: [0.0, 0.0, 1.0],
        spacing: [spacing; 3],
    }
}

/// Deterministic HU in ±(100..900), never 0, constant over blocks of `block` voxels.
fn blocky_volume(dims: [usize; 3], block: usize) -> Volume {
    let mut hu = Vec::with_capacity(dims.iter().product());
    for k in 0..dims[0] {
        for j in 0..dims[1] {
            for i in 0..dims[2] {
                let (a, b, c) = ((k / block) as u64, (j / block) as u64, (i / block) as u64);
                let h = (a * 73_856_093) ^ (b * 19_349_663) ^ (c * 83_492_791);
                let h = h.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
                let mag = 100 + (h % 800) as i16;
                hu.push(if h % 3 == 0 { mag } else { -mag });
            }
        }
    }
    Volume {
        geometry: geometry(dims, 1.0),
        hu,
    }
}

#[test]
fn threshold_model_gives_exact_masks_after_resampling_and_back() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let m = models(tmp.path());
    let machinery = m.join("machinery");
    // Model spacing 2 mm on a 1 mm source: 2×2×2 blocks come back exactly.
    let model = Model::load(&machinery.join("threshold.toml"), &cpu(&machinery)).expect("load");
    let volume = blocky_volume([24, 40, 40], 2);
    let labels = infer::segment_volume(&model, &volume, &mut |_, _| {}).expect("segment");
    let expected: Vec<u8> = volume.hu.iter().map(|&h| u8::from(h > 0)).collect();
    let wrong = labels.iter().zip(&expected).filter(|(a, b)| a != b).count();
    assert_eq!(wrong, 0, "2 mm model grid: {wrong} voxels differ");

    // Same spacing as the source, voxel-wise random values, several overlapping patches.
    let same = variant(&machinery, "threshold", &tmp.path().join("same"), |t| {
        t.replace(
            "spacing_mm = [2.0, 2.0, 2.0]",
            "spacing_mm = [1.0, 1.0, 1.0]",
        )
    });
    let model = Model::load(&same, &cpu(same.parent().expect("dir"))).expect("load");
    let volume = blocky_volume([37, 45, 70], 1);
    let labels = infer::segment_volume(&model, &volume, &mut |_, _| {}).expect("segment");
    let expected: Vec<u8> = volume.hu.iter().map(|&h| u8::from(h > 0)).collect();
    let wrong = labels.iter().zip(&expected).filter(|(a, b)| a != b).count();
    assert_eq!(wrong, 0, "1 mm model grid: {wrong} voxels differ");
}

#[test]
fn the_lung_channel_is_the_lobes_mask_in_place() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let m = models(tmp.path()).join("machinery");
    let model = Model::load(&m.join("lung_gate.toml"), &cpu(&m)).expect("load");
    // Not a multiple of the 16-voxel patch on any axis: the last patches are padded.
    let volume = blocky_volume([21, 37, 43], 1);
    let dims = [21usize, 37, 43];
    // Two "lungs" labelled with different lobes, one touching the volume's edge.
    let mut lobes = vec![0u8; volume.hu.len()];
    for k in 0..dims[0] {
        for j in 0..dims[1] {
            for i in 0..dims[2] {
                let (z, y, x) = (k as f64, j as f64, i as f64);
                let right = ((x - 10.0) / 8.0).powi(2)
                    + ((y - 18.0) / 14.0).powi(2)
                    + ((z - 10.0) / 9.0).powi(2);
                let left = ((x - 40.0) / 7.0).powi(2)
                    + ((y - 20.0) / 12.0).powi(2)
                    + ((z - 15.0) / 8.0).powi(2);
                lobes[(k * dims[1] + j) * dims[2] + i] = if right < 1.0 {
                    3
                } else if left < 1.0 {
                    4
                } else {
                    0
                };
            }
        }
    }
    let (labels, _) =
        infer::segment_volume_timed(&model, &volume, Some(&lobes), None, &mut |_, _| {})
            .expect("segment");
    let expected: Vec<u8> = lobes
        .iter()
        .map(|&l| {
            if l > 0 {
                quant::opacity::CONSOLIDATION
            } else {
                0
            }
        })
        .collect();
    let wrong = labels.iter().zip(&expected).filter(|(a, b)| a != b).count();
    assert!(expected.iter().any(|&l| l > 0));
    assert_eq!(wrong, 0, "{wrong} voxels differ from the lung mask");

    // Without the lobes there is no lung channel to give: a clear error, no guess.
    let err = match infer::segment_volume_timed(&model, &volume, None, None, &mut |_, _| {}) {
        Ok(_) => panic!("ran without the lung mask"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("needs the lobes first"), "{err}");
}

#[test]
fn tiled_inference_equals_whole_volume_inference() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let m = models(tmp.path()).join("machinery");
    let mut model = Model::load(&m.join("conv.toml"), &cpu(&m)).expect("load");
    let volume = blocky_volume([40, 48, 56], 1);
    let grid = ModelGrid::with_spacing(&volume.geometry, model.manifest.input.spacing_mm);
    assert_eq!(grid.dims, [40, 48, 56]);
    let input = infer::prepare_ct(&volume, &grid, &model.manifest);
    let pad = [model.manifest.input.scale_to[0]];
    // Patches of 16 with an overlap of 8: 3×3×3 receptive field, far smaller than the overlap.
    let mut tiles = 0;
    let (tiled, k) = run::segment(
        &model,
        std::slice::from_ref(&input),
        &pad,
        grid.dims,
        &mut |_, n| tiles = n,
    )
    .expect("tiled");
    assert!(tiles >= 27, "only {tiles} patches");
    model.manifest.input.patch = Some(grid.dims);
    model.manifest.input.overlap = 0;
    let (whole, k2) =
        run::segment(&model, &[input], &pad, grid.dims, &mut |_, _| {}).expect("whole");
    assert_eq!((k, k2), (3, 3));
    let max = tiled
        .iter()
        .zip(&whole)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(max < 1e-5, "tiled and whole differ by {max}");
}

/// A lung border rule as the shipped lobes manifest has it, to append to a manifest.
const BORDER: &str = "\n[output.lung_border]\nunsure = [0.2, 0.8]\nlung_below_hu = -400.0\n\
    air_below_hu = -960.0\nwall_above_hu = -250.0\ndense_reach_voxels = 8\n";

/// An opacity edge rule as the shipped opacities manifest has it, to append to a manifest.
const EDGE: &str = "\n[output.opacity_edge]\ndense_above_hu = -700.0\nreach_mm = 1.6\n";

/// A vessel rule, to append to a manifest.
const VESSEL: &str = "\n[output.vessel_opacities]\ndense_above_hu = -300.0\nmax_radius_mm = 8.0\n\
    min_vessel_share = 0.2\n";

/// The watershed rule that lobes 1.4.0-1.6.0 had (removed in 1.7.0).
const FISSURES: &str = "\n[output.fissures]\nband_mm = 8.0\nsmooth_mm = 1.0\n\
    max_voxel_mm = 1.5\nhu_range = [-1000.0, -500.0]\n";

const SURFACE: &str = "\n[output.fissure_surface]\nsmooth_mm = 40.0\nsearch_mm = 6.0\n\
    band_mm = 15.0\nrefine_mm = 5.0\nrefine_smooth_mm = 15.0\n\
    horizontal_skips_dense = true\nhu_range = [-1000.0, -500.0]\n";

/// The threshold (opacities) manifest made a lobes one, upsampled linearly.
fn as_linear_lobes(t: String) -> String {
    t.replace("role = \"opacities\"", "role = \"lobes\"")
        .replace("\"ground_glass\"", "\"RUL\"")
        .replace("\"consolidation\"", "\"RML\"")
        .replace(
            "activation = \"softmax\"",
            "activation = \"softmax\"\nupsample = \"linear\"",
        )
}

#[test]
fn bad_manifests_are_refused_with_clear_messages() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let m = models(tmp.path()).join("machinery");
    type Edit = Box<dyn Fn(String) -> String>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "sha",
            Box::new(|t: String| {
                let start = t.find("sha256 = \"").expect("sha") + 10;
                format!("{}{}{}", &t[..start], "0".repeat(64), &t[start + 64..])
            }),
            "sha256 of",
        ),
        (
            "input",
            Box::new(|t: String| t.replace("name = \"ct\"", "name = \"image\"")),
            "input.name \"image\" is not an input",
        ),
        (
            "output",
            Box::new(|t: String| t.replace("name = \"logits\"", "name = \"probs\"")),
            "output.name \"probs\" is not an output",
        ),
        (
            "label",
            Box::new(|t: String| t.replace("\"ground_glass\"", "\"fog\"")),
            "\"fog\" is not a label",
        ),
        (
            "overlap",
            Box::new(|t: String| t.replace("overlap = 4", "overlap = 40")),
            "overlap must be smaller",
        ),
        (
            "radius",
            Box::new(|t: String| {
                t.replace(
                    "activation = \"softmax\"",
                    "activation = \"softmax\"\nmin_inscribed_radius_voxels = 0.0",
                )
            }),
            "min_inscribed_radius_voxels must be above 0",
        ),
        (
            "radius-role",
            Box::new(|t: String| {
                t.replace("role = \"opacities\"", "role = \"lobes\"")
                    .replace("\"ground_glass\"", "\"RUL\"")
                    .replace("\"consolidation\"", "\"RML\"")
                    .replace(
                        "activation = \"softmax\"",
                        "activation = \"softmax\"\nmin_inscribed_radius_voxels = 2.5",
                    )
            }),
            "is for an opacities model",
        ),
        (
            "border-role",
            Box::new(|t: String| t + BORDER),
            "is for a lobes model",
        ),
        (
            "border-unsure",
            Box::new(|t: String| as_linear_lobes(t) + &BORDER.replace("[0.2, 0.8]", "[0.8, 0.2]")),
            "unsure must be",
        ),
        (
            "border-hu",
            Box::new(|t: String| as_linear_lobes(t) + &BORDER.replace("-400.0", "-100.0")),
            "air_below_hu < lung_below_hu <= wall_above_hu",
        ),
        (
            "edge-role",
            Box::new(|t: String| as_linear_lobes(t) + EDGE),
            "opacity_edge is for an opacities model",
        ),
        (
            "edge-hu",
            Box::new(|t: String| t + &EDGE.replace("-700.0", "-1000.0")),
            "dense_above_hu must be within",
        ),
        (
            "edge-steps",
            Box::new(|t: String| t + &EDGE.replace("= 1.6", "= 40.0")),
            "reach_mm must be within 0..10",
        ),
        (
            "vessel-role",
            Box::new(|t: String| as_linear_lobes(t) + VESSEL),
            "vessel_opacities is for an opacities model",
        ),
        (
            "vessel-hu",
            Box::new(|t: String| t + &VESSEL.replace("-300.0", "-950.0")),
            "vessel_opacities.dense_above_hu must be within",
        ),
        (
            "vessel-radius",
            Box::new(|t: String| t + &VESSEL.replace("= 8.0", "= 0.0")),
            "max_radius_mm must be above 0",
        ),
        (
            "vessel-share",
            Box::new(|t: String| t + &VESSEL.replace("= 0.2", "= 1.5")),
            "min_vessel_share must be above 0 and at most 1",
        ),
        (
            "vessel-ground-glass",
            Box::new(|t: String| t + VESSEL + "max_ground_glass_iqr_hu = 0.0\n"),
            "max_ground_glass_iqr_hu must be above 0 and at most 500",
        ),
        (
            // Lobes 1.7.0 dropped the rules that changed nothing on real CT: an older manifest
            // that still has one is refused by name, not silently run without it.
            "removed-rule",
            Box::new(|t: String| as_linear_lobes(t) + FISSURES),
            "unknown field `fissures`",
        ),
        (
            "surface-role",
            Box::new(|t: String| t + SURFACE),
            "fissure_surface is for a lobes model",
        ),
        (
            "surface-smooth",
            Box::new(|t: String| as_linear_lobes(t) + &SURFACE.replace("= 40.0", "= 0.0")),
            "fissure_surface.smooth_mm must be above 0 and at most 100",
        ),
        (
            "surface-search",
            Box::new(|t: String| as_linear_lobes(t) + &SURFACE.replace("= 6.0", "= 25.0")),
            "fissure_surface.search_mm must be within 0..20",
        ),
        (
            "surface-band",
            Box::new(|t: String| {
                as_linear_lobes(t) + &SURFACE.replace("band_mm = 15.0", "band_mm = 0.0")
            }),
            "fissure_surface.band_mm must be above 0 and at most 50",
        ),
        (
            "surface-refine",
            Box::new(|t: String| as_linear_lobes(t) + &SURFACE.replace("= 5.0", "= 25.0")),
            "fissure_surface.refine_mm must be within 0..20",
        ),
        (
            "surface-refine-smooth",
            Box::new(|t: String| {
                as_linear_lobes(t)
                    + &SURFACE.replace("refine_smooth_mm = 15.0", "refine_smooth_mm = 0.0")
            }),
            "fissure_surface.refine_smooth_mm must be above 0 and at most 100",
        ),
        (
            "surface-hu",
            Box::new(|t: String| {
                as_linear_lobes(t) + &SURFACE.replace("[-1000.0, -500.0]", "[-500.0, -500.0]")
            }),
            "fissure_surface.hu_range must be [low, high]",
        ),
    ];
    // The lobes model runs first, so it cannot be given the lung mask.
    let path = variant(&m, "lung_gate", &tmp.path().join("lobes-lung"), |t| {
        t.replace("role = \"opacities\"", "role = \"lobes\"")
            .replace("\"consolidation\"", "\"RUL\"")
    });
    let err = match Model::load(&path, &cpu(path.parent().expect("dir"))) {
        Ok(_) => panic!("a lobes model with the lung channel was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("cannot be given Lung"), "{err}");
    for (name, edit, needle) in cases {
        let path = variant(&m, "threshold", &tmp.path().join(name), edit);
        let err = match Model::load(&path, &cpu(path.parent().expect("dir"))) {
            Ok(_) => panic!("{name}: the manifest was accepted"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(needle), "{name}: {err}");
    }
}

#[test]
fn missing_onnx_runtime_gives_the_install_hint_and_no_panic() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let m = models(&tmp.path().join("models")).join("set");
    write_phantom(
        &tmp.path().join("study"),
        &small(71),
        Syntax::Explicit,
        false,
        false,
    );
    let cfg = tmp.path().join("pulmo.toml");
    std::fs::write(
        &cfg,
        format!(
            "[inference]\nmodels_dir = \"{}\"\nonnxruntime_library = \"/nonexistent/libonnxruntime.so\"\n",
            m.display()
        ),
    )
    .expect("config");
    let out = run(pulmo()
        .arg("--config")
        .arg(&cfg)
        .arg("analyze")
        .arg(tmp.path().join("study/dicom"))
        .arg("--out")
        .arg(tmp.path().join("out")));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("ONNX Runtime library not found"), "{err}");
    assert!(err.contains("pip install onnxruntime"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    // A file that is not a library: a clear error, still no panic.
    let fake = tmp.path().join("libonnxruntime.so");
    std::fs::write(&fake, "not a library").expect("write");
    std::fs::write(
        &cfg,
        format!("[inference]\nmodels_dir = \"{}\"\n", m.display()),
    )
    .expect("cfg");
    let out = run(pulmo()
        .env("ORT_DYLIB_PATH", &fake)
        .arg("--config")
        .arg(&cfg)
        .arg("models")
        .arg("check"));
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(text.contains("cannot load ONNX Runtime"), "{text}");
    assert!(!text.contains("panicked"), "{text}");
}

#[test]
fn quant_reproduces_truth_json_from_the_truth_label_volumes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut cases = vec![
        (small(81), "small covid"),
        (Params::new(82, Size::Full), "full covid"),
    ];
    let mut lobar = small(83);
    lobar.pattern = phantom::Pattern::Lobar;
    cases.push((lobar, "small lobar"));
    for (params, what) in cases {
        let dir = tmp.path().join(what.replace(' ', "-"));
        write_phantom(&dir, &params, Syntax::Explicit, false, false);
        let truth: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join("truth/truth.json")).expect("truth"),
        )
        .expect("json");
        let lobes = read_nifti_labels(&dir.join("truth/lobes.nii.gz"));
        let opac = read_nifti_labels(&dir.join("truth/opacities.nii.gz"));
        let sp: Vec<f64> = truth["geometry"]["spacing"]
            .as_array()
            .expect("spacing")
            .iter()
            .map(|v| v.as_f64().expect("f64"))
            .collect();
        let m = quant::measure(&lobes, &opac, sp[0] * sp[1] * sp[2] / 1000.0);
        let got = serde_json::to_value(&m).expect("json");
        for key in ["RUL", "RML", "RLL", "LUL", "LLL"] {
            assert_eq!(got["lobes"][key], truth["lobes"][key], "{what} {key}");
        }
        assert_eq!(got["whole_lung"], truth["whole_lung"], "{what}");
    }
}

fn checks(p: &Phantom) -> Vec<qc::QcCheck> {
    checks_with(p, |_| {}, qc::SeriesFacts::default())
}

/// As `checks`, with the CT's lungs changed by `spoil` and these facts of the series.
fn checks_with(
    p: &Phantom,
    spoil: impl FnOnce(&mut pulmo::segment::lung::Lungs),
    series: qc::SeriesFacts,
) -> Vec<qc::QcCheck> {
    // As `pulmo analyze` does, with the truth in the lobes model's place: the lobes laid on the
    // CT's lung, then measured and checked.
    let g = &p.volume.geometry;
    let dims = [g.slices, g.rows, g.columns];
    let mut lungs = pulmo::segment::lung::segment(&p.volume);
    spoil(&mut lungs);
    let model_lung: Vec<bool> = p.lobes.iter().map(|&l| l > 0).collect();
    let mut lobes = p.lobes.clone();
    pulmo::segment::lobes::lay(&mut lobes, &lungs.side, dims);
    let m = quant::measure(&lobes, &p.opacities, g.voxel_volume_ml());
    let evidence = qc::LungEvidence {
        lungs: &lungs,
        model_lung: &model_lung,
    };
    qc::check(&p.volume, &lobes, &m, &evidence, &series)
}

fn failed(checks: &[qc::QcCheck]) -> Vec<&'static str> {
    checks
        .iter()
        .filter(|c| !c.passed)
        .map(|c| c.name)
        .collect()
}

/// The phantom cut two slices below the top of its lungs.
fn cut_above_apex(mut p: Phantom) -> Phantom {
    let g = &mut p.volume.geometry;
    let plane = g.rows * g.columns;
    let top = (0..g.slices)
        .rev()
        .find(|&k| p.lobes[k * plane..(k + 1) * plane].iter().any(|&l| l > 0))
        .expect("lungs");
    let keep = top - 2;
    g.slices = keep;
    p.volume.hu.truncate(keep * plane);
    p.lobes.truncate(keep * plane);
    p.opacities.truncate(keep * plane);
    p
}

/// Every `n`-th slice of the phantom.
fn every_nth_slice(mut p: Phantom, n: usize) -> Phantom {
    let g = p.volume.geometry.clone();
    let plane = g.rows * g.columns;
    let take = |v: &[u8]| -> Vec<u8> {
        (0..g.slices)
            .step_by(n)
            .flat_map(|k| v[k * plane..(k + 1) * plane].to_vec())
            .collect()
    };
    p.volume.hu = (0..g.slices)
        .step_by(n)
        .flat_map(|k| p.volume.hu[k * plane..(k + 1) * plane].to_vec())
        .collect();
    p.lobes = take(&p.lobes);
    p.opacities = take(&p.opacities);
    p.volume.geometry.slices = g.slices.div_ceil(n);
    p.volume.geometry.spacing[2] = g.spacing[2] * n as f64;
    p
}

#[test]
fn quality_checks_pass_on_truth_and_fire_when_they_should() {
    for (seed, severity) in [
        (91, phantom::Severity::Moderate),
        (92, phantom::Severity::Severe),
        (97, phantom::Severity::Critical),
        (98, phantom::Severity::Critical),
    ] {
        let mut params = small(seed);
        params.severity = severity;
        let p = phantom::generate(&params);
        let c = checks(&p);
        assert!(failed(&c).is_empty(), "seed {seed} {severity:?}: {c:#?}");
    }
    let cut = cut_above_apex(phantom::generate(&small(93)));
    assert_eq!(failed(&checks(&cut)), vec!["lung_coverage"]);
    let coarse = every_nth_slice(phantom::generate(&Params::new(94, Size::Full)), 7);
    assert_eq!(coarse.volume.geometry.spacing[2], 7.0);
    assert_eq!(failed(&checks(&coarse)), vec!["slice_spacing"]);

    // An airway search that ran into the lung (as one seeded on emphysema did on a real scan):
    // the upper third of the right lung taken as airway.
    let p = phantom::generate(&small(99));
    let leaked = checks_with(
        &p,
        |lungs| {
            let right: Vec<usize> = (0..lungs.side.len())
                .filter(|&i| lungs.side[i] == pulmo::segment::lung::RIGHT)
                .collect();
            for &i in &right[right.len() * 2 / 3..] {
                lungs.side[i] = 0;
                lungs.airway[i] = true;
            }
        },
        qc::SeriesFacts::default(),
    );
    assert!(failed(&leaked).contains(&"airway"), "{leaked:#?}");
    // Filled slices: the acquired ones are two spacings apart, and the message says so.
    let filled = checks_with(
        &p,
        |_| {},
        qc::SeriesFacts {
            filled_slices: 2,
            ..Default::default()
        },
    );
    let spacing = filled
        .iter()
        .find(|c| c.name == "slice_spacing")
        .expect("slice_spacing");
    assert_eq!(spacing.value, 2.0 * p.volume.geometry.spacing[2]);
    assert!(
        spacing.message.contains("2 missing slices were filled"),
        "{spacing:?}"
    );
}

#[test]
fn analyze_writes_findings_and_says_when_a_check_failed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let m = models(&tmp.path().join("models")).join("set");
    let cfg = tmp.path().join("pulmo.toml");
    std::fs::write(
        &cfg,
        format!(
            "[inference]\nmodels_dir = \"{}\"\nexecution_providers = [\"cuda\", \"cpu\"]\n",
            m.display()
        ),
    )
    .expect("config");
    let cut = cut_above_apex(phantom::generate(&small(95)));
    let coarse = every_nth_slice(phantom::generate(&Params::new(96, Size::Full)), 7);
    for (p, check) in [(cut, "lung_coverage"), (coarse, "slice_spacing")] {
        let dir = tmp.path().join(check);
        write_study(&p, &dir, Syntax::Explicit, false, false);
        let out = run(pulmo()
            .arg("--config")
            .arg(&cfg)
            .arg("analyze")
            .arg(dir.join("dicom"))
            .arg("--out")
            .arg(dir.join("out")));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{check}: {err}");
        assert!(err.contains("analysed with warnings"), "{err}");
        let f: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join("out/findings.json")).expect("findings"),
        )
        .expect("json");
        let c = f["qc"]
            .as_array()
            .expect("qc")
            .iter()
            .find(|c| c["name"] == check)
            .expect("check present");
        assert_eq!(c["passed"], false, "{check}: {c}");
        assert!(c["message"].as_str().is_some_and(|s| !s.is_empty()));
        // The shape truth.json has, plus what the findings add.
        for key in ["RUL", "RML", "RLL", "LUL", "LLL"] {
            assert!(f["lobes"][key]["plo_percent"].is_number(), "{key}");
        }
        assert!(f["whole_lung"]["ctss_total"].is_number());
        assert!(f["covid_probability"].is_number());
        assert_eq!(f["execution_provider"], "cpu");
        assert_eq!(f["models"].as_array().map(Vec::len), Some(3));
        assert!(f["series"]["series_instance_uid"].is_string());
        assert!(f["note"].as_str().is_some_and(|s| s.contains("synthetic")));
    }
}
