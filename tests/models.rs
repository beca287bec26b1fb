//! The reference models shipped in models/: manifests, checksums, model cards, and `pulmo analyze`
//! with them on phantoms, against the phantom's truth with loose bounds (the model cards hold
//! the evaluated errors; these bounds are several times wider so that the test checks the shipped
//! path, not the last decimal).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use pulmo::infer::model::{Manifest, sha256_hex};
use pulmo::iod::transfer_syntax::Syntax;
use pulmo::phantom::{Params, Pattern, Severity, Size};

const MODELS: [&str; 3] = ["lobes", "opacities", "classifier"];
const LOBES: [&str; 5] = ["RUL", "RML", "RLL", "LUL", "LLL"];

fn models_dir() -> PathBuf {
    repo().join("models")
}

#[test]
fn manifests_checksums_and_model_cards_are_shipped() {
    for name in MODELS {
        let manifest = models_dir().join(format!("{name}.toml"));
        let m = Manifest::load(&manifest).unwrap_or_else(|e| panic!("{name}: {e}"));
        let file = models_dir().join(&m.file);
        let bytes = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert_eq!(
            sha256_hex(&bytes),
            m.sha256,
            "{name}: sha256 of the shipped file"
        );
        assert!(
            bytes.len() < 8 << 20,
            "{name}: {} bytes; models stay small",
            bytes.len()
        );
        assert!(
            m.description.contains("not for clinical use") && m.training_data.contains("synthetic"),
            "{name}: the manifest must say synthetic, not for clinical use"
        );
        let card = std::fs::read_to_string(models_dir().join(format!("{name}.md")))
            .unwrap_or_else(|e| panic!("{name}: model card: {e}"));
        for needed in [
            "Not for clinical use",
            "pulmo phantom",
            "| metric | value | goal | met |",
            &m.version,
            "Apache-2.0",
        ] {
            assert!(card.contains(needed), "{name}.md lacks {needed:?}");
        }
    }
    // The ONNX opset, read by the onnx package rather than trusted from the exporter.
    let check = run_ok(
        Command::new(python())
            .arg("-c")
            .arg(
                "import onnx, sys\n\
         for f in sys.argv[1:]:\n\
         \x20   m = onnx.load(f); onnx.checker.check_model(m)\n\
         \x20   print(min(o.version for o in m.opset_import if o.domain in ('', 'ai.onnx')))",
            )
            .args(MODELS.map(|n| models_dir().join(format!("{n}.onnx")))),
    );
    for v in check.lines() {
        assert!(v.trim().parse::<u32>().is_ok_and(|v| v >= 17), "opset {v}");
    }
    run_ok(
        pulmo()
            .arg("--config")
            .arg(config(&std::env::temp_dir()))
            .args(["models", "list"]),
    );
}

fn config(dir: &Path) -> PathBuf {
    let cfg = dir.join("pulmo-models-test.toml");
    std::fs::write(
        &cfg,
        format!(
            "[inference]\nmodels_dir = \"{}\"\nexecution_providers = [\"cpu\"]\n",
            models_dir().display()
        ),
    )
    .expect("config");
    cfg
}

fn analysed(
    dir: &Path,
    seed: u64,
    size: Size,
    pattern: Pattern,
    severity: Severity,
) -> (serde_json::Value, serde_json::Value) {
    let mut params = Params::new(seed, size);
    params.pattern = pattern;
    params.severity = severity;
    let study = dir.join(format!("study-{seed}"));
    write_phantom(&study, &params, Syntax::Explicit, false, false);
    let out = dir.join(format!("out-{seed}"));
    let result = run(pulmo()
        .arg("--config")
        .arg(config(dir))
        .arg("analyze")
        .arg(study.join("dicom"))
        .arg("--out")
        .arg(&out));
    assert!(
        result.status.success(),
        "analyze (with the quality checks passing) failed: {}",
        String::from_utf8_lossy(&result.stderr)
    );
    (
        read_json(&out.join("findings.json")),
        read_json(&study.join("truth/truth.json")),
    )
}

fn num(v: &serde_json::Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

#[test]
fn analyze_with_the_shipped_models_finds_the_truth_of_a_covid_phantom() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (f, t) = analysed(
        tmp.path(),
        424_242,
        Size::Small,
        Pattern::Covid,
        Severity::Severe,
    );
    // The lung is the CT's (src/segment/lung.rs): this phantom's dependent consolidation at the
    // pleura is wider than the rolling ball and stays out of it, so the lower lobes read small and
    // under-opacified (measured: RLL 630 ml against 773, its PLO 28 % against 39 %, the lung's
    // 15.0 % against 22.8 %; with the model's lung it was within 15 % and 5 points). The bounds
    // hold that known limit (README, "Real chest CT") and catch anything worse.
    for lobe in LOBES {
        let (fv, tv) = (
            num(&f["lobes"][lobe]["volume_ml"]),
            num(&t["lobes"][lobe]["volume_ml"]),
        );
        assert!(
            (fv - tv).abs() <= 0.25 * tv,
            "{lobe} volume {fv:.0} ml, truth {tv:.0} ml"
        );
        let (fp, tp) = (
            num(&f["lobes"][lobe]["plo_percent"]),
            num(&t["lobes"][lobe]["plo_percent"]),
        );
        assert!(
            (fp - tp).abs() <= 14.0,
            "{lobe} PLO {fp:.1} %, truth {tp:.1} %"
        );
    }
    let (fp, tp) = (
        num(&f["whole_lung"]["plo_percent"]),
        num(&t["whole_lung"]["plo_percent"]),
    );
    assert!(
        (fp - tp).abs() <= 10.0,
        "lung PLO {fp:.1} %, truth {tp:.1} %"
    );
    let p = num(&f["covid_probability"]);
    assert!(
        p > 0.5,
        "COVID-19 probability {p} for a severe COVID-19 phantom"
    );
    let names: Vec<&str> = f["models"]
        .as_array()
        .expect("models")
        .iter()
        .filter_map(|m| m["name"].as_str())
        .collect();
    assert_eq!(
        names,
        ["pulmo-lobes", "pulmo-opacities", "pulmo-classifier"]
    );
}

#[test]
fn analyze_with_the_shipped_models_finds_a_normal_phantom_normal() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // Full size: small (2.8 mm) normal phantoms can still score high (0.78 on held-out seed
    // 900013 with classifier 1.2.0; the model cards record it). Full-size normals score 0.00-0.01.
    let (f, t) = analysed(
        tmp.path(),
        424_243,
        Size::Full,
        Pattern::Normal,
        Severity::None,
    );
    // Opacities 1.1.0 call 0.08 % of this phantom's lung opacified (1.0.0 called 6.5 %, and the
    // diaphragm's dome, filled slice by slice into the lung, read as consolidation); held-out
    // full-size normals read at most 0.7 % in any lobe. The bound leaves room for that and catches
    // a model, or a pulmo change, that calls normal lung opacified.
    let lung = num(&f["whole_lung"]["plo_percent"]);
    assert!(lung < 3.0, "lung PLO {lung:.2} % in a normal phantom");
    let tv = num(&t["whole_lung"]["volume_ml"]);
    let fv = num(&f["whole_lung"]["volume_ml"]);
    assert!(
        (fv - tv).abs() <= 0.1 * tv,
        "lung volume {fv:.0} ml, truth {tv:.0} ml"
    );
    let p = num(&f["covid_probability"]);
    assert!(p < 0.5, "COVID-19 probability {p} for a normal phantom");
}

#[test]
fn analyze_with_the_shipped_models_drops_the_vessel_like_false_positives_of_a_small_normal_phantom()
{
    // Small (2.8 mm) normal phantoms are where the opacities network calls partial-volume vessels
    // ground-glass: before the manifest's thin-component filter (opacities 1.1.0), none of the
    // 15 lobes of the held-out small normals scored CTSS 0; with it 12 of 15 do (the model cards).
    // This phantom without the filter: no lobe at 0, lung PLO 1.59 %; with it: 3 lobes, 0.27 %.
    let tmp = tempfile::tempdir().expect("tempdir");
    let (f, _) = analysed(
        tmp.path(),
        424_244,
        Size::Small,
        Pattern::Normal,
        Severity::None,
    );
    assert!(
        f["timings_s"]["thin_opacities"].is_number(),
        "the shipped opacities manifest asks for the filter: {}",
        f["timings_s"]
    );
    let clean: Vec<&str> = LOBES
        .into_iter()
        .filter(|l| f["lobes"][*l]["ctss"].as_u64() == Some(0))
        .collect();
    let lung = num(&f["whole_lung"]["plo_percent"]);
    assert!(lung < 1.0, "lung PLO {lung:.2} % in a normal phantom");
    assert!(
        clean.len() >= 2,
        "only {clean:?} of a normal phantom's lobes score CTSS 0: {}",
        f["lobes"]
    );
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("read")).expect("json")
}

/// A copy of the shipped models in `dir` whose manifests lack the table `[name]` (a rule).
fn models_without(dir: &Path, table: &str) -> PathBuf {
    models_without_all(dir, &[table])
}

/// A copy of the shipped models in `dir` whose manifests lack each of the tables `tables`.
fn models_without_all(dir: &Path, tables: &[&str]) -> PathBuf {
    models_edited(dir, |text| {
        let out = without_tables(text, tables);
        (out != text).then_some(out)
    })
}

/// A manifest's text without the tables `tables` (each up to the blank line after it).
fn without_tables(text: &str, tables: &[&str]) -> String {
    let mut out = text.to_string();
    for table in tables {
        let header = format!("[{table}]");
        if let Some((head, rule)) = out.split_once(&header) {
            let rest = rule.split_once("\n\n").map_or("", |(_, rest)| rest);
            out = format!("{head}{rest}");
        }
    }
    out
}

/// A manifest's text without the lines that set any of `keys`.
fn without_keys(text: &str, keys: &[&str]) -> String {
    text.lines()
        .filter(|l| !keys.iter().any(|k| l.starts_with(&format!("{k} ="))))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// A copy of the shipped models in `dir`, each manifest changed by `edit` where it gives a new
/// text; at least one must change.
fn models_edited(dir: &Path, edit: impl Fn(&str) -> Option<String>) -> PathBuf {
    std::fs::create_dir_all(dir).expect("dir");
    let mut found = false;
    for name in MODELS {
        std::fs::copy(
            models_dir().join(format!("{name}.onnx")),
            dir.join(format!("{name}.onnx")),
        )
        .expect("copy");
        let text =
            std::fs::read_to_string(models_dir().join(format!("{name}.toml"))).expect("manifest");
        let text = match edit(&text) {
            Some(changed) => {
                found = true;
                changed
            }
            None => text,
        };
        std::fs::write(dir.join(format!("{name}.toml")), text).expect("write");
    }
    assert!(found, "no shipped manifest was changed");
    dir.to_path_buf()
}

/// `pulmo analyze --masks` of `study` with the models in `models`, into `tmp/name`.
fn analyze_with(models: &Path, study: &Path, tmp: &Path, name: &str) -> PathBuf {
    let cfg = tmp.join(format!("{name}.toml"));
    std::fs::write(
        &cfg,
        format!(
            "[inference]\nmodels_dir = \"{}\"\nexecution_providers = [\"cpu\"]\n",
            models.display()
        ),
    )
    .expect("config");
    let out = tmp.join(name);
    run_ok(
        pulmo()
            .arg("--config")
            .arg(&cfg)
            .arg("analyze")
            .arg(study.join("dicom"))
            .arg("--out")
            .arg(&out)
            .arg("--masks"),
    );
    out
}

/// Dice of the non-zero voxels of two masks.
fn dice(found: &[u8], truth: &[u8]) -> f64 {
    assert_eq!(found.len(), truth.len(), "mask size");
    let (mut both, mut sum) = (0usize, 0usize);
    for (&f, &t) in found.iter().zip(truth) {
        both += usize::from(f > 0 && t > 0);
        sum += usize::from(f > 0) + usize::from(t > 0);
    }
    2.0 * both as f64 / sum as f64
}

#[test]
fn the_lung_border_rule_brings_the_lungs_closer_to_the_truth() {
    // Lobes 1.1.0 are the 1.0.0 network with `[output.lung_border]`: where the network is unsure,
    // the CT places the pleura. Since the lung is taken from the CT (src/segment/lung.rs) the rule
    // can only move lobe borders and the dense lung the model adds: the lung must be at least as
    // close to the truth with it as without (this phantom: lung Dice 0.9729 both ways; 0.9811
    // without and 0.9886 with when the lung was the model's).
    let mut params = Params::new(424_245, Size::Small);
    params.pattern = Pattern::Covid;
    params.severity = Severity::Moderate;
    let (with_rule, without_rule) = dice_with_and_without(&params, "lobes.nii.gz", |dir| {
        models_without(dir, "output.lung_border")
    });
    assert!(
        with_rule >= without_rule - 0.002 && with_rule > 0.95,
        "lung Dice {with_rule:.4} with the rule, {without_rule:.4} without"
    );
}

#[test]
fn the_opacity_edge_rule_brings_the_opacities_closer_to_the_truth() {
    // Opacities 1.3.0 are the 1.1.0 network with `[output.opacity_edge]`: dense lung within
    // 1.6 mm of a found opacity joins it, which on the held-out phantoms took most of the
    // underestimate of severe and critical COVID-19 lobes (models/train/README.md). It acts on
    // CTs with pixels of 1.6 mm or less, so a full-size phantom; with the shipped manifest and
    // with the rule taken out of it, the opacities must come closer to the truth in extent and
    // overlap (this phantom, with lobes 1.4.0: opacity Dice 0.9146 without, 0.9276 with; the five
    // lobes' PLO errors summed 12.49 without, 11.36 pp with).
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut params = Params::new(424_246, Size::Full);
    params.pattern = Pattern::Covid;
    params.severity = Severity::Severe;
    let study = tmp.path().join("study");
    write_phantom(&study, &params, Syntax::Explicit, false, false);
    let without = models_without(&tmp.path().join("models-without"), "output.opacity_edge");
    let truth = read_nifti_labels(&study.join("truth/opacities.nii.gz"));
    let truth_json = read_json(&study.join("truth/truth.json"));
    let measured = |models: &Path, name: &str| -> (f64, f64) {
        let out = analyze_with(models, &study, tmp.path(), name);
        let f = read_json(&out.join("findings.json"));
        let error: f64 = LOBES
            .into_iter()
            .map(|l| {
                (num(&f["lobes"][l]["plo_percent"]) - num(&truth_json["lobes"][l]["plo_percent"]))
                    .abs()
            })
            .sum();
        (
            dice(&read_nifti_labels(&out.join("opacities.nii.gz")), &truth),
            error,
        )
    };
    let (dice_with, error_with) = measured(&models_dir(), "with");
    let (dice_without, error_without) = measured(&without, "without");
    eprintln!(
        "opacity Dice {dice_with:.4} with the rule, {dice_without:.4} without; summed per-lobe \
         PLO error {error_with:.2} / {error_without:.2} pp"
    );
    assert!(
        dice_with > dice_without && error_with < error_without,
        "opacity Dice {dice_with:.4} with the rule, {dice_without:.4} without; summed per-lobe \
         PLO error {error_with:.2} with, {error_without:.2} without"
    );
}

#[test]
fn the_fissure_surface_places_the_middle_lobe_on_thick_slices() {
    // Lobes 1.5.0 add `[output.fissure_surface]`: each fissure of the network taken as one
    // smooth surface and moved onto the faint ridge the CT shows along it. On the 16 small tuning
    // phantoms (2.7-3 mm pixels, 5 mm slices, where the watershed does not act) the middle lobe's
    // mean Dice rose from 0.871 to 0.944, and it fell on a few held-out ones (models/train/
    // README.md, "The fissure as a surface"). With the shipped manifest and with the rule taken
    // out of it, on the small normal tuning phantom 800013 (RML 0.8736 without, 0.9783 with lobes
    // 1.6.0's refinement, 0.9673 with 1.5.0's plane alone; the other lobes 0.948-0.953 without,
    // 0.979-0.989 with): the middle lobe must come closer to the truth by a margin, the five
    // lobes on average too, and the lungs must not change.
    let mut params = Params::new(800_013, Size::Small);
    params.pattern = Pattern::Normal;
    params.noise_hu = 16.9;
    let (dice, same_lungs) = lobe_dice_with_and_without(
        &params,
        |_| models_dir(),
        |dir| models_without(dir, "output.fissure_surface"),
    );
    let mean = |pick: fn(&(f64, f64)) -> f64| dice.iter().map(pick).sum::<f64>() / 5.0;
    let (w, wo) = dice[1];
    assert!(
        w - wo > 0.02,
        "RML Dice {w:.4} with the rule, {wo:.4} without"
    );
    let (mw, mwo) = (mean(|d| d.0), mean(|d| d.1));
    assert!(
        mw > mwo,
        "mean lobe Dice {mw:.4} with the rule, {mwo:.4} without"
    );
    assert!(same_lungs, "the rule changed the lungs");
}

#[test]
fn the_refined_surface_follows_the_fissure_where_no_plane_does() {
    // Lobes 1.6.0 refine the oblique fissures' surfaces column by column after the plane
    // (`refine_mm`, `refine_smooth_mm`) and leave vessels out of the horizontal fissure's ridge
    // (`horizontal_skips_dense`). On the 16 small tuning phantoms the middle lobe's mean Dice rose
    // from 0.944 to 0.954, and none fell by more than 0.001 (models/train/README.md, "The fissure
    // as a surface, refined"). With the shipped manifest and with those three keys taken out of
    // it, on the small severe COVID-19 tuning phantom 800001 (RML 0.932 without, 0.957 with): the
    // middle lobe must come closer to the truth by a margin, the five lobes on average too, and
    // the lungs must not change.
    let mut params = Params::new(800_001, Size::Small);
    params.pattern = Pattern::Covid;
    params.severity = Severity::Severe;
    params.noise_hu = 17.3;
    let keys = ["refine_mm", "refine_smooth_mm", "horizontal_skips_dense"];
    let (dice, same_lungs) = lobe_dice_with_and_without(
        &params,
        |_| models_dir(),
        |dir| {
            models_edited(dir, |text| {
                let out = without_keys(text, &keys);
                (out != text).then_some(out)
            })
        },
    );
    let mean = |pick: fn(&(f64, f64)) -> f64| dice.iter().map(pick).sum::<f64>() / 5.0;
    let (w, wo) = dice[1];
    assert!(
        w - wo > 0.01,
        "RML Dice {w:.4} with the refinement, {wo:.4} without"
    );
    let (mw, mwo) = (mean(|d| d.0), mean(|d| d.1));
    assert!(
        mw > mwo,
        "mean lobe Dice {mw:.4} with the refinement, {mwo:.4} without"
    );
    assert!(same_lungs, "the refinement changed the lungs");
}

/// Per lobe (in `LOBES` order) the Dice against the truth of the lobes `pulmo analyze` finds on
/// the phantom `params` with the models that `with` and `without` copy into the folders they are
/// given, and whether the two runs found the same lungs.
fn lobe_dice_with_and_without(
    params: &Params,
    with: impl FnOnce(&Path) -> PathBuf,
    without: impl FnOnce(&Path) -> PathBuf,
) -> (Vec<(f64, f64)>, bool) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let study = tmp.path().join("study");
    write_phantom(&study, params, Syntax::Explicit, false, false);
    let with = with(&tmp.path().join("models-with"));
    let without = without(&tmp.path().join("models-without"));
    let truth = read_nifti_labels(&study.join("truth/lobes.nii.gz"));
    let lobes = |models: &Path, name: &str| -> Vec<u8> {
        read_nifti_labels(&analyze_with(models, &study, tmp.path(), name).join("lobes.nii.gz"))
    };
    let (with_rule, without_rule) = (lobes(&with, "with"), lobes(&without, "without"));
    let lobe_dice = |found: &[u8], label: u8| -> f64 {
        let only = |m: &[u8]| -> Vec<u8> { m.iter().map(|&v| u8::from(v == label)).collect() };
        dice(&only(found), &only(&truth))
    };
    let pairs: Vec<(f64, f64)> = (1..=5u8)
        .map(|label| {
            (
                lobe_dice(&with_rule, label),
                lobe_dice(&without_rule, label),
            )
        })
        .collect();
    for (name, (w, wo)) in LOBES.into_iter().zip(&pairs) {
        eprintln!("{name} Dice {w:.4} with the rule, {wo:.4} without");
    }
    let lung = |m: &[u8]| -> Vec<u8> { m.iter().map(|&v| u8::from(v > 0)).collect() };
    (pairs, lung(&with_rule) == lung(&without_rule))
}

#[test]
fn the_vessel_rule_clears_vessels_from_clean_lungs() {
    // Opacities 1.4.0 add `[output.vessel_opacities]`: small findings made mostly of a dense
    // structure that goes on beyond them (a vessel) are dropped. On the 28 tuning phantoms nearly
    // all false positives in clean lobes were such pieces of vessels (models/train/README.md).
    // A full-size normal phantom, with the shipped manifest and with the rule taken out of it:
    // the false opacities must shrink and more lobes must score CTSS 0, as the truth does (this
    // phantom: 9655 false opacity voxels and 3 of 5 lobes at CTSS 0 without the rule; none and 5
    // with it).
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut params = Params::new(424_247, Size::Full);
    params.pattern = Pattern::Normal;
    let study = tmp.path().join("study");
    write_phantom(&study, &params, Syntax::Explicit, false, false);
    let without = models_without(
        &tmp.path().join("models-without"),
        "output.vessel_opacities",
    );
    let truth = read_nifti_labels(&study.join("truth/opacities.nii.gz"));
    assert!(
        truth.iter().all(|&v| v == 0),
        "a normal phantom has no opacity"
    );
    let measured = |models: &Path, name: &str| -> (usize, usize) {
        let out = analyze_with(models, &study, tmp.path(), name);
        let f = read_json(&out.join("findings.json"));
        let clean = LOBES
            .into_iter()
            .filter(|l| f["lobes"][l]["ctss"].as_u64() == Some(0))
            .count();
        let opacified = read_nifti_labels(&out.join("opacities.nii.gz"))
            .iter()
            .filter(|&&v| v > 0)
            .count();
        (opacified, clean)
    };
    let (voxels_with, clean_with) = measured(&models_dir(), "with");
    let (voxels_without, clean_without) = measured(&without, "without");
    eprintln!(
        "false opacity voxels {voxels_with} with the rule, {voxels_without} without; lobes at \
         CTSS 0: {clean_with} / {clean_without}"
    );
    assert!(
        voxels_with < voxels_without && clean_with > clean_without,
        "false opacity voxels {voxels_with} with the rule, {voxels_without} without; lobes at \
         CTSS 0: {clean_with} with, {clean_without} without"
    );
}

#[test]
fn the_vessel_rule_keeps_ground_glass_that_a_vessel_runs_through() {
    // Opacities 1.6.0 add `max_ground_glass_iqr_hu` to `[output.vessel_opacities]`: a small
    // finding with a vessel through it is kept when most of it is evenly dense lung (ground glass
    // of its own), where a vessel's halo falls off from the vessel to the lung. A full-size
    // moderate COVID-19 phantom (tuning seed 800028) with the shipped manifest and with the key
    // taken out of it: two ground-glass lesions that a vessel runs through must stay (opacity Dice
    // 0.851 without the key, 0.876 with).
    let mut params = Params::new(800_028, Size::Full);
    params.pattern = Pattern::Covid;
    params.severity = Severity::Moderate;
    params.noise_hu = 16.4;
    let (with_key, without_key) = dice_with_and_without(&params, "opacities.nii.gz", |dir| {
        models_edited(dir, |text| {
            let out = without_keys(text, &["max_ground_glass_iqr_hu"]);
            (out != text).then_some(out)
        })
    });
    // With the lung taken from the CT: 0.7369 with, 0.7256 without.
    assert!(
        with_key > without_key + 0.005,
        "opacity Dice {with_key:.4} with the key, {without_key:.4} without"
    );
}

/// Dice of the foreground of `labels` (a mask `pulmo analyze --masks` writes, named as the
/// phantom's truth names it) against the truth of the phantom `params`, with the shipped models
/// and with the copy of them that `without` makes in the folder it is given.
fn dice_with_and_without(
    params: &Params,
    labels: &str,
    without: impl FnOnce(&Path) -> PathBuf,
) -> (f64, f64) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let study = tmp.path().join("study");
    write_phantom(&study, params, Syntax::Explicit, false, false);
    let without = without(&tmp.path().join("models-without"));
    let truth = read_nifti_labels(&study.join("truth").join(labels));
    let found_dice = |models: &Path, name: &str| -> f64 {
        let out = analyze_with(models, &study, tmp.path(), name);
        dice(&read_nifti_labels(&out.join(labels)), &truth)
    };
    let with = found_dice(&models_dir(), "with");
    let without = found_dice(&without, "without");
    eprintln!("{labels}: Dice {with:.4} with the rule, {without:.4} without");
    (with, without)
}
