//! The product as a hospital meets it: Orthanc (the PACS) receives a full-size chest CT from
//! storescu, the routing rule of conformance/orthanc/ sends it to `pulmo serve`, which analyses it
//! (stand-in models of tests/py/make_models.py until the reference models land) and sends the two
//! SEGs, the SR and the overlay series back into the same study. Orthanc is down while pulmo
//! delivers: the results arrive once it is back. Everything Orthanc then holds from pulmo passes
//! conformance/validate, and OHIF over that Orthanc's DICOMweb shows the opacities SEG and the SR.

mod common;

use std::path::Path;
use std::process::Command;

use common::node::*;
use common::orthanc::Orthanc;
use common::*;
use pulmo::iod::transfer_syntax::Syntax;
use pulmo::phantom::{Params, Severity, Size};

const SEG: &str = "SEG";

/// Orthanc configured from conformance/orthanc/orthanc.json (ports and folders replaced by the
/// test's own), with the committed routing rule pointing at `pulmo_port`, on `dicom_port`.
fn orthanc_from_example(dir: &Path, pulmo_port: u16, dicom_port: u16) -> Orthanc {
    let example: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("conformance/orthanc/orthanc.json"))
            .expect("conformance/orthanc/orthanc.json"),
    )
    .expect("example config is JSON");
    let mut extra = serde_json::Map::new();
    for key in ["DicomAet", "UserMetadata", "DicomModalities"] {
        extra.insert(key.into(), example[key].clone());
    }
    let pulmo = &example["DicomModalities"]["pulmo"];
    extra.insert(
        "DicomModalities".into(),
        serde_json::json!({"pulmo": [pulmo[0], "127.0.0.1", pulmo_port]}),
    );
    extra.insert(
        "LuaScripts".into(),
        serde_json::json!([repo().join("conformance/orthanc/route-to-pulmo.lua")]),
    );
    extra.insert("DicomPort".into(), dicom_port.into());
    // The example waits 10 s for a study to be stable; the test 2 s.
    extra.insert("StableAge".into(), serde_json::json!(2));
    Orthanc::start(dir, serde_json::Value::Object(extra))
}

/// pulmo configured from conformance/orthanc/pulmo.toml (ports, data folder and the destination's
/// port replaced), with `models` on CPU and a short delivery back-off.
fn pulmo_from_example(dir: &Path, orthanc_dicom_port: u16, models: &Path) -> Node {
    let example: toml::Table =
        std::fs::read_to_string(repo().join("conformance/orthanc/pulmo.toml"))
            .expect("conformance/orthanc/pulmo.toml")
            .parse()
            .expect("example config is TOML");
    start_config(dir, &|port, http_port, data| {
        let mut cfg = example.clone();
        let table = |cfg: &mut toml::Table, name: &str| -> toml::Table {
            cfg.get(name)
                .and_then(|t| t.as_table())
                .cloned()
                .unwrap_or_default()
        };
        let mut node = table(&mut cfg, "node");
        node.insert("port".into(), (port as i64).into());
        cfg.insert("node".into(), node.into());
        let mut storage = table(&mut cfg, "storage");
        storage.insert("data_dir".into(), data.display().to_string().into());
        storage.insert("stable_after_s".into(), 2.into());
        cfg.insert("storage".into(), storage.into());
        if let Some(dests) = cfg.get_mut("destinations").and_then(|d| d.as_array_mut()) {
            for d in dests {
                if let Some(t) = d.as_table_mut() {
                    t.insert("port".into(), (orthanc_dicom_port as i64).into());
                }
            }
        }
        let mut http = toml::Table::new();
        http.insert("port".into(), (http_port as i64).into());
        cfg.insert("http".into(), http.into());
        let mut inference = toml::Table::new();
        inference.insert("models_dir".into(), models.display().to_string().into());
        inference.insert("execution_providers".into(), vec!["cpu"].into());
        cfg.insert("inference".into(), inference.into());
        let mut delivery = toml::Table::new();
        delivery.insert("initial_backoff_s".into(), 1.into());
        delivery.insert("max_backoff_s".into(), 2.into());
        cfg.insert("delivery".into(), delivery.into());
        toml::to_string(&cfg).expect("config TOML")
    })
}

fn modalities(o: &Orthanc, study_id: &str) -> Vec<String> {
    let mut m: Vec<String> = o
        .series_of(study_id)
        .iter()
        .filter_map(|s| s["MainDicomTags"]["Modality"].as_str().map(String::from))
        .collect();
    m.sort();
    m
}

#[test]
fn orthanc_routes_a_ct_to_pulmo_and_gets_segs_sr_and_overlay_back_even_after_an_outage() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (pacs_dir, node_dir) = (tmp.path().join("orthanc"), tmp.path().join("pulmo"));
    std::fs::create_dir_all(&node_dir).expect("dir");
    // Orthanc's DICOM port is chosen first: pulmo's destination, kept across Orthanc's restart.
    let orthanc_port = free_port();
    // The stand-in models of the inference tests (the reference models are not trained yet).
    let models = stand_in_models(tmp.path());
    let node = pulmo_from_example(&node_dir, orthanc_port, &models);
    let o = orthanc_from_example(&pacs_dir, node.port, orthanc_port);

    // A full-size COVID-19 phantom, sent to Orthanc by storescu.
    let study = tmp.path().join("study");
    let mut params = Params::new(808, Size::Full);
    params.severity = Severity::Moderate;
    write_phantom(&study, &params, Syntax::Explicit, false, false);
    let truth: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(study.join("truth/truth.json")).expect("truth.json"),
    )
    .expect("json");
    let study_uid = truth["study_instance_uid"]
        .as_str()
        .expect("uid")
        .to_string();
    let slices = dicom_files(&study.join("dicom")).len();
    run_ok(
        Command::new(tool("storescu"))
            .env("TCP_NODELAY", "1")
            .args([
                "-aet",
                "MODALITY",
                "-aec",
                "ORTHANC",
                "+sd",
                "+r",
                "127.0.0.1",
            ])
            .arg(o.dicom_port.to_string())
            .arg(study.join("dicom")),
    );

    // The rule routes it; pulmo receives every slice and starts its job.
    wait_for(&node_dir, "pulmo's job to start", 120, || {
        node.status()["jobs"]
            .as_array()
            .and_then(|j| j.first().cloned())
            .is_some_and(|j| j["state"] == "running")
    });
    assert_eq!(
        node.status()["studies"][0]["instances"].as_u64(),
        Some(slices as u64),
        "{:#}",
        node.status()
    );
    let study_id = o.study_id(&study_uid).expect("Orthanc has the study");
    let ct = o
        .series_of(&study_id)
        .into_iter()
        .find(|s| s["MainDicomTags"]["Modality"] == "CT")
        .expect("CT series");
    let meta = o.get(&format!(
        "/series/{}/metadata",
        ct["ID"].as_str().unwrap_or("")
    ));
    assert!(
        meta.as_array()
            .is_some_and(|m| m.iter().any(|v| v == "SentToPulmo")),
        "the rule marks what it sent: {meta}"
    );

    // Orthanc goes down while pulmo analyses; pulmo retries until it is back.
    drop(o);
    wait_for(&node_dir, "a failed delivery attempt", 300, || {
        node.status()["deliveries"].as_array().is_some_and(|d| {
            d.iter().any(|r| {
                r["state"] == "pending"
                    && r["attempts"].as_u64().unwrap_or(0) >= 1
                    && r["last_error"].is_string()
            })
        })
    });
    let o = orthanc_from_example(&pacs_dir, node.port, orthanc_port);
    wait_for(&node_dir, "the results in Orthanc", 300, || {
        modalities(&o, &study_id) == ["CT", "OT", SEG, SEG, "SR"]
    });
    wait_for(&node_dir, "every delivery done", 120, || {
        node.status()["jobs"][0]["state"] == "done"
    });

    // What Orthanc holds from pulmo: fetched through its REST API, validated.
    let fetched = tmp.path().join("fetched");
    std::fs::create_dir_all(&fetched).expect("dir");
    let mut overlay_images = 0;
    for s in o.series_of(&study_id) {
        if s["MainDicomTags"]["Modality"] == "CT" {
            continue;
        }
        for (i, inst) in s["Instances"]
            .as_array()
            .expect("instances")
            .iter()
            .enumerate()
        {
            let id = inst.as_str().expect("id");
            let m = s["MainDicomTags"]["Modality"].as_str().unwrap_or("x");
            overlay_images += usize::from(m == "OT");
            o.download(
                &format!("/instances/{id}/file"),
                &fetched.join(format!("{m}-{i:03}-{id}.dcm")),
            );
        }
    }
    assert!(overlay_images >= 10, "{overlay_images} overlay images");
    let r = run(Command::new(repo().join("conformance/validate")).arg(&fetched));
    let text = String::from_utf8_lossy(&r.stdout).to_string();
    assert!(
        r.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&r.stderr)
    );
    assert!(text.contains(" 0 failed"), "{text}");

    // OHIF over this Orthanc's DICOMweb shows the opacities SEG on the CT, and the SR's
    // measurements placed on it.
    let shots = repo().join("build/screenshots");
    std::fs::create_dir_all(&shots).expect("dir");
    let ohif = |env: &[(&str, &str)], shot: &str| -> serde_json::Value {
        ohif_check(&o.url, &study_uid, "-", &shots.join(shot), &[], env)
    };
    let seg = ohif(
        &[("OHIF_THUMB_TEXT", "lung opacities")],
        "orthanc-ohif-seg.png",
    );
    let labels = seg["labels"].as_array().map(Vec::len).unwrap_or(0);
    assert!(labels >= 1, "{seg}");
    let sr = ohif(
        &[("OHIF_MODE", "sr"), ("OHIF_THUMB_TEXT", "lung report")],
        "orthanc-ohif-sr.png",
    );
    let placed = sr["measurements"]
        .as_array()
        .map(|m| m.iter().filter(|m| m["loaded"] == true).count())
        .unwrap_or(0);
    assert_eq!(placed, 7, "5 lobes, whole lung, classifier: {sr}");

    // The results made the study stable again in Orthanc: the rule did not send it twice, and
    // pulmo analysed it once.
    std::thread::sleep(std::time::Duration::from_secs(5));
    let status = node.status();
    assert_eq!(
        status["jobs"].as_array().map(Vec::len),
        Some(1),
        "{status:#}"
    );
    assert_eq!(
        status["studies"][0]["instances"].as_u64(),
        Some(slices as u64)
    );
}
