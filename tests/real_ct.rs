//! The fast part of the real-CT evaluation of record (bench/real_ct.py) on two real chest CTs of
//! ../shared/data/real/: a normal chest and a COVID-19 pneumonia. The bounds are loose on purpose:
//! they catch a lung that misses aerated lung or paints the mediastinum, lobes that spill out of
//! the lung, and a normal chest called opacified; they do not claim accuracy.

mod common;

use common::*;

fn evaluate(cases: &str) -> Vec<serde_json::Value> {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("real-ct");
    run_ok(
        std::process::Command::new(python())
            .current_dir(repo())
            .arg(repo().join("bench/real_ct.py"))
            .arg("--pulmo")
            .arg(env!("CARGO_BIN_EXE_pulmo"))
            .arg("--cases")
            .arg(cases)
            .arg("--out")
            .arg(&out),
    );
    for case in cases.split(',') {
        let png = out.join("overlays").join(format!("{case}.png"));
        assert!(png.is_file(), "no overlay for {case}");
    }
    let rows: Vec<serde_json::Value> = serde_json::from_str(
        &std::fs::read_to_string(out.join("results.json")).expect("results.json"),
    )
    .expect("json");
    rows
}

fn num(row: &serde_json::Value, key: &str) -> f64 {
    row[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} missing in {row}"))
}

/// What holds on any chest: a lung of adult size, no aerated lung without a lobe, no lobe outside
/// the lung, five lobes of plausible share.
fn assert_lung(row: &serde_json::Value) {
    let case = row["case"].as_str().unwrap_or("?");
    assert!(row.get("refused").is_none(), "{case} refused: {row}");
    let lung = num(row, "lung_ml");
    assert!((2500.0..=8000.0).contains(&lung), "{case}: lung {lung} ml");
    let missed = num(row, "aerated_without_lobe_pct");
    assert!(
        missed <= 1.0,
        "{case}: {missed} % of aerated lung without lobe"
    );
    for (lobe, share) in row["lobe_share_pct"].as_object().expect("shares") {
        let s = share.as_f64().expect("share");
        assert!(
            (4.0..=40.0).contains(&s),
            "{case}: {lobe} is {s} % of the lung"
        );
    }
}

#[test]
fn a_normal_chest_and_a_covid_pneumonia_on_real_ct() {
    let rows = evaluate("normal001,P001");
    let normal = &rows[0];
    assert_lung(normal);
    let outside = num(normal, "lobe_outside_lung_pct");
    assert!(
        outside <= 1.0,
        "normal001: {outside} % of lobe voxels outside the lung"
    );
    // Normal lungs: a few vessels or dependent density may be called opacity, not a pneumonia.
    let plo = num(normal, "plo_pct");
    assert!(plo <= 5.0, "normal001: PLO {plo} %");

    let covid = &rows[1];
    assert_lung(covid);
    // The radiologists marked infection on 80 slices: pulmo finds opacity on most of them.
    let found = covid["slices_tp_fp_fn_tn"][0].as_f64().expect("tp");
    assert!(
        found >= 40.0,
        "P001: opacity found on {found} of 80 infected slices"
    );
    let plo = num(covid, "plo_pct");
    assert!(plo >= 0.5, "P001: PLO {plo} %");
}
