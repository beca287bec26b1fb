//! The DICOM node against real peers: DCMTK echoscu and storescu, pynetdicom, raw sockets.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::node::*;
use common::*;
use pulmo::iod::transfer_syntax::Syntax;
use pulmo::phantom::{self, Params, Size};

/// A full-size phantom study in explicit VR little endian under `dir`: the data sets it holds.
fn full_study(dir: &Path, seed: u64) -> BTreeMap<String, Vec<u8>> {
    write_phantom(
        dir,
        &Params::new(seed, Size::Full),
        Syntax::Explicit,
        false,
        false,
    );
    sent(&dir.join("dicom"))
}

#[test]
fn echo_and_store_from_dcmtk_and_pynetdicom_byte_identical() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let node = start(tmp.path(), "");
    let (ok, out) = echoscu(node.port, "PULMO", "ECHOSCU");
    assert!(ok, "{out}");
    run_ok(
        pulmo()
            .arg("echo")
            .arg(format!("PULMO@127.0.0.1:{}", node.port)),
    );

    // One study per syntax: the same SOP Instance UIDs sent twice would be de-duplicated.
    let mut expected = 0;
    for (n, syntax) in Syntax::ALL.into_iter().filter(|s| s.writable()).enumerate() {
        let p = phantom::generate(&small(121 + 10 * n as u64));
        let dir = tmp.path().join(format!("{syntax:?}"));
        write_study(&p, &dir, syntax, false, false);
        let files = sent(&dir.join("dicom"));
        storescu(node.port, &dir.join("dicom"), syntax);
        assert_stored(&node, &files, &format!("{syntax:?}"));
        expected = files.len();
    }
    // A full-size study.
    let full = tmp.path().join("full");
    let files = full_study(&full, 122);
    storescu(node.port, &full.join("dicom"), Syntax::Explicit);
    assert_stored(&node, &files, "full");

    // pynetdicom as the SCU.
    let py = tmp.path().join("py");
    write_phantom(&py, &small(123), Syntax::Explicit, false, false);
    let out = run_ok(
        Command::new(python())
            .arg(repo().join("tests/py/pynetdicom_send.py"))
            .arg(format!("PULMO@127.0.0.1:{}", node.port))
            .arg(py.join("dicom")),
    );
    assert!(out.starts_with("ok"), "{out}");
    assert_stored(&node, &sent(&py.join("dicom")), "pynetdicom");

    // Re-sending is de-duplicated: the same instances, once each.
    let before = dicom_files(&node.data.join("spool")).len();
    storescu(node.port, &full.join("dicom"), Syntax::Explicit);
    assert_eq!(dicom_files(&node.data.join("spool")).len(), before);
    let store = pulmo::store::Store::open_existing(&node.data).expect("index");
    let counts = store.counts().expect("counts");
    assert_eq!(counts.instances as usize, before);
    assert!(expected > 0);
}

/// A node with `storage` lines of its own.
fn start_storage(dir: &Path, storage: &str) -> Node {
    std::fs::create_dir_all(dir).expect("node dir");
    start_config(dir, &|port, http_port, data| {
        format!(
            "[node]\nport = {port}\n[storage]\ndata_dir = \"{}\"\n{storage}\n[http]\nport = {http_port}\n",
            data.display()
        )
    })
}

#[test]
fn without_a_journal_and_with_one_far_smaller_than_the_study_every_instance_is_stored() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let study = tmp.path().join("study");
    let files = full_study(&study, 124);
    // Off: each instance fsynced in its own file.
    let off = tmp.path().join("off");
    let node = start_storage(&off, "journal_segments = 0");
    storescu(node.port, &study.join("dicom"), Syntax::Explicit);
    assert_stored(&node, &files, "no journal");
    assert!(!node.data.join("journal").exists());
    drop(node);
    // Two segments of 2 MiB for 160 MB: records are written out under pressure while the study
    // arrives, segments are reused, and instances that find no room take the file path.
    let tiny = tmp.path().join("tiny");
    let node = start_storage(&tiny, "journal_segments = 2\njournal_segment_mib = 2");
    storescu(node.port, &study.join("dicom"), Syntax::Explicit);
    assert_stored(&node, &files, "tiny journal");
    let segments = std::fs::read_dir(node.data.join("journal"))
        .expect("journal")
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "wal"))
        .count();
    assert_eq!(segments, 2);
    assert_eq!(
        node.status()["counts"]["instances"].as_u64(),
        Some(files.len() as u64)
    );
    // Both ways were taken.
    let (_, metrics) = node.http_get("/metrics");
    let count = |how: &str| -> u64 {
        metrics
            .lines()
            .find(|l| {
                l.starts_with(&format!(
                    "pulmo_instances_durable_total{{outcome=\"{how}\"}}"
                ))
            })
            .and_then(|l| l.split_whitespace().last()?.parse().ok())
            .unwrap_or(0)
    };
    let (journal, file) = (count("journal"), count("file"));
    assert!(
        journal > 0 && file > 0,
        "journal {journal}, file {file}:\n{metrics}"
    );
    assert_eq!(journal + file, files.len() as u64);
}

#[test]
fn wrong_called_and_unknown_calling_ae_titles_are_rejected() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let node = start(tmp.path(), "allowed_calling_aes = [\"GOODSCU\"]");
    let (ok, out) = echoscu(node.port, "PULMO", "GOODSCU");
    assert!(ok, "{out}");
    let (ok, out) = echoscu(node.port, "PULMO", "STRANGER");
    assert!(!ok);
    assert!(out.contains("Calling AE Title Not Recognized"), "{out}");
    let (ok, out) = echoscu(node.port, "NOTPULMO", "GOODSCU");
    assert!(!ok);
    assert!(out.contains("Called AE Title Not Recognized"), "{out}");
}

#[test]
fn hostile_input_never_stops_the_node() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let node = start(tmp.path(), "artim_timeout_s = 2");
    let send = |bytes: &[u8]| {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", node.port)) {
            s.set_read_timeout(Some(Duration::from_secs(3))).ok();
            let _ = s.write_all(bytes);
            let mut buf = [0u8; 64];
            let _ = std::io::Read::read(&mut s, &mut buf);
        }
    };
    let mut state = 7u64;
    let random: Vec<u8> = (0..4096)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 56) as u8
        })
        .collect();
    send(&random);
    // A-ASSOCIATE-RQ announcing 200 bytes, then only 10.
    send(&[0x01, 0x00, 0, 0, 0, 200, 0, 1, 0, 0]);
    // A PDU announcing 4 GiB.
    send(&[0x01, 0x00, 0xff, 0xff, 0xff, 0xff, 0, 1]);
    // P-DATA before any association.
    send(&[0x04, 0x00, 0, 0, 0, 10, 0, 0, 0, 6, 1, 3, 0, 0, 0, 0]);
    // Nothing at all until the ARTIM timeout.
    let log = || std::fs::read_to_string(tmp.path().join("node.log")).unwrap_or_default();
    let idle = TcpStream::connect(("127.0.0.1", node.port))
        .unwrap_or_else(|e| panic!("node gone ({e}):\n{}", log()));
    std::thread::sleep(Duration::from_millis(2500));
    drop(idle);
    let (ok, out) = echoscu(node.port, "PULMO", "ECHOSCU");
    assert!(
        ok,
        "the node stopped serving after hostile input: {out}\n{}",
        log()
    );
}

#[test]
fn sigterm_stops_the_node_cleanly() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut node = start(tmp.path(), "");
    run_ok(
        Command::new("kill")
            .arg("-TERM")
            .arg(node.child.id().to_string()),
    );
    let t = Instant::now();
    loop {
        if let Some(status) = node.child.try_wait().expect("wait") {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "pulmo serve ignored SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// C-STORE `data` as the data set of a CT instance over a raw association (dicom-ul client and
/// pulmo's DIMSE encoder): no SCU library would send bytes it cannot parse. Returns the status.
fn raw_store(port: u16, sop: &str, data: &[u8]) -> u16 {
    use dicom_dictionary_std::uids;
    use dicom_ul::Pdu;
    use dicom_ul::association::client::ClientAssociationOptions;
    use dicom_ul::pdu::{PDataValue, PDataValueType};
    use pulmo::net::dimse::{self, Command};
    let mut a = ClientAssociationOptions::new()
        .with_presentation_context(
            uids::CT_IMAGE_STORAGE,
            vec![uids::EXPLICIT_VR_LITTLE_ENDIAN],
        )
        .calling_ae_title("RAWSCU")
        .read_timeout(Duration::from_secs(20))
        .establish_with(&format!("PULMO@127.0.0.1:{port}"))
        .expect("association");
    let pc = a.presentation_contexts()[0].id;
    let rq = Command {
        field: dimse::C_STORE_RQ,
        affected_sop_class_uid: Some(uids::CT_IMAGE_STORAGE.into()),
        message_id: Some(1),
        priority: Some(0),
        data_set_type: dimse::DATA_SET_PRESENT,
        affected_sop_instance_uid: Some(sop.into()),
        ..Command::default()
    };
    let pdv = |value_type, data: Vec<u8>| PDataValue {
        presentation_context_id: pc,
        value_type,
        is_last: true,
        data,
    };
    a.send(&Pdu::PData {
        data: vec![pdv(PDataValueType::Command, rq.encode())],
    })
    .expect("command");
    a.send(&Pdu::PData {
        data: vec![pdv(PDataValueType::Data, data.to_vec())],
    })
    .expect("data");
    let status = match a.receive().expect("response") {
        Pdu::PData { data } => Command::decode(&data[0].data)
            .expect("decode")
            .status
            .expect("status"),
        other => panic!("unexpected {other:?}"),
    };
    let _ = a.release();
    status
}

#[test]
fn a_malformed_data_set_gets_a_failure_status_and_the_node_goes_on() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let node = start(tmp.path(), "");
    // An element announcing 2 GiB, then noise; and plain noise.
    let mut garbage = vec![0x08, 0x00, 0x18, 0x00, b'U', b'I', 0xff, 0x7f];
    garbage.extend_from_slice(&[0x5a; 300]);
    for (n, data) in [garbage, vec![0x5a; 1000]].into_iter().enumerate() {
        let status = raw_store(
            node.port,
            &format!("1.2.826.0.1.3680043.8.498.{}", n + 1),
            &data,
        );
        assert!(
            status & 0xF000 == 0xC000 || status & 0xF000 == 0xA000,
            "a garbage data set was answered with {status:04X}"
        );
    }
    assert!(
        dicom_files(&node.data.join("spool")).is_empty(),
        "garbage was stored"
    );
    // The node still stores a good study afterwards.
    let good = tmp.path().join("good");
    write_phantom(&good, &small(131), Syntax::Explicit, false, false);
    storescu(node.port, &good.join("dicom"), Syntax::Explicit);
    assert_stored(&node, &sent(&good.join("dicom")), "after garbage");
    let log = std::fs::read_to_string(tmp.path().join("node.log")).unwrap_or_default();
    assert!(
        log.contains("C-STORE failed"),
        "no log line for the failure:\n{log}"
    );
}

#[test]
fn eight_concurrent_associations_with_eight_studies_are_all_stored() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // Eight from one address: more than the default share of one peer (4).
    let node = start(
        tmp.path(),
        "max_associations = 9\nmax_associations_per_peer = 8",
    );
    let mut dirs = Vec::new();
    for n in 0..8u64 {
        let d = tmp.path().join(format!("s{n}"));
        write_phantom(&d, &small(140 + n), Syntax::Explicit, false, false);
        dirs.push(d.join("dicom"));
    }
    let children: Vec<_> = dirs
        .iter()
        .map(|d| {
            Command::new(tool("storescu"))
                .env("TCP_NODELAY", "1")
                .args(["-aec", "PULMO", "-xe", "-R", "+sd", "+r", "127.0.0.1"])
                .arg(node.port.to_string())
                .arg(d)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("storescu")
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().expect("wait");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for d in &dirs {
        assert_stored(&node, &sent(d), "concurrent");
    }
    let status = node.status();
    assert_eq!(status["counts"]["studies"], 8);
    let files: usize = dirs.iter().map(|d| dicom_files(d).len()).sum();
    assert_eq!(status["counts"]["instances"].as_u64(), Some(files as u64));
    // Exactly one job per study once they are stable (no models here: the jobs fail, once each).
    wait_for(tmp.path(), "eight jobs", 60, || {
        jobs(&node.status()).len() >= 8
    });
    std::thread::sleep(Duration::from_secs(3));
    let jobs = jobs(&node.status());
    let studies: std::collections::BTreeSet<String> = jobs
        .iter()
        .map(|j| j["study_uid"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(jobs.len(), 8, "{jobs:#?}");
    assert_eq!(studies.len(), 8, "{jobs:#?}");
}

/// The SOP Instance UIDs that storescu -v saw acknowledged with Success, from its log.
fn acknowledged(log: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut current: Option<PathBuf> = None;
    for line in log.lines() {
        if let Some(f) = line.strip_prefix("I: Sending file: ") {
            current = Some(PathBuf::from(f.trim()));
        } else if line.contains("Received Store Response (Success)") {
            out.extend(current.take());
        }
    }
    out
}

#[test]
fn kill_9_during_a_300_instance_transfer_loses_nothing_acknowledged() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let study = tmp.path().join("study");
    let files = full_study(&study, 161);
    assert!(files.len() >= 300, "{} instances", files.len());
    // Stable timeouts far longer than a restart takes (even on a loaded machine), so that the
    // partial study is not analysed before the sender's retry.
    let mut node = start_with(tmp.path(), "", "", 60);
    let log = tmp.path().join("storescu.log");
    // One open file for stdout and stderr: two would each keep their own offset and overwrite
    // each other's lines.
    let log_file = std::fs::File::create(&log).expect("log");
    let mut sender = Command::new(tool("storescu"))
        .env("TCP_NODELAY", "1")
        .args(["-v", "-aec", "PULMO", "-xe", "+sd", "+r", "127.0.0.1"])
        .arg(node.port.to_string())
        .arg(study.join("dicom"))
        .stdout(log_file.try_clone().expect("log"))
        .stderr(log_file)
        .spawn()
        .expect("storescu");
    wait_for(tmp.path(), "100 instances acknowledged", 60, || {
        acknowledged(&std::fs::read_to_string(&log).unwrap_or_default()).len() >= 100
    });
    node.kill_9();
    let _ = sender.wait();
    let acked = acknowledged(&std::fs::read_to_string(&log).expect("log"));
    assert!(
        acked.len() >= 100 && acked.len() < files.len(),
        "{} acknowledged: the kill did not land during the transfer",
        acked.len()
    );
    // Restart on the same data: every instance that got Success is there, byte for byte, and
    // indexed. The last ones acknowledged were durable only in the journal when the kill came
    // (spool files are written once a transfer goes quiet): the restart wrote them out.
    let node = start_with(tmp.path(), "", "", 60);
    let node_log = std::fs::read_to_string(tmp.path().join("node.log")).expect("node log");
    assert!(
        node_log.contains("written from the journal to the spool"),
        "nothing was replayed from the journal:\n{node_log}"
    );
    let store = pulmo::store::Store::open_existing(&node.data).expect("index");
    for f in &acked {
        let uid = dicom_object::OpenFileOptions::new()
            .read_until(dicom_dictionary_std::tags::PIXEL_DATA)
            .open_file(f)
            .expect("sent file")
            .meta()
            .media_storage_sop_instance_uid()
            .trim_end_matches('\0')
            .to_string();
        let stored = store
            .instance_path(&uid)
            .expect("index")
            .unwrap_or_else(|| panic!("acknowledged {uid} is not indexed after kill -9"));
        assert!(
            data_set(&stored) == data_set(f),
            "{uid}: stored data set differs"
        );
    }
    assert!(
        std::fs::read_dir(node.data.join("tmp"))
            .expect("tmp")
            .next()
            .is_none(),
        "a partial transfer was left in tmp/"
    );
    // The sender retries the whole study: de-duplicated, and the study gets exactly one job.
    storescu(node.port, &study.join("dicom"), Syntax::Explicit);
    assert_stored(&node, &files, "after kill -9");
    assert_eq!(
        store.counts().expect("counts").instances as usize,
        files.len()
    );
    assert!(jobs(&node.status()).is_empty());
    // Once the study is quiet it gets exactly one job (a short stable timeout from here on).
    drop(node);
    let node = start_with(tmp.path(), "", "", 1);
    wait_for(tmp.path(), "the study's job", 60, || {
        !jobs(&node.status()).is_empty()
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(jobs(&node.status()).len(), 1, "{:#?}", node.status());
}

#[test]
fn results_are_delivered_to_storescp_valid_and_metrics_count_what_was_sent() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pacs_port = free_port();
    let pacs_out = tmp.path().join("pacs");
    let _pacs = storescp(pacs_port, &pacs_out);
    let tail = models_config_overlay(tmp.path(), true) + &destination("pacs", "PACS", pacs_port);
    let node = start_with(tmp.path(), "", &tail, 2);
    let study = tmp.path().join("study");
    write_phantom(&study, &small(151), Syntax::Explicit, false, false);
    let truth: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(study.join("truth/truth.json")).expect("truth.json"),
    )
    .expect("json");
    let files = sent(&study.join("dicom"));
    storescu(node.port, &study.join("dicom"), Syntax::Explicit);
    wait_for(tmp.path(), "the job to be done", 120, || {
        jobs(&node.status())
            .first()
            .is_some_and(|j| j["state"] == "done")
    });
    // Both SEGs, the SR and the overlay series (a summary and slices), each valid, in the study.
    let got = received(&pacs_out);
    let mut classes = Vec::new();
    let mut overlay_numbers = Vec::new();
    for f in &got {
        let obj = dicom_object::open_file(f).expect("storescp's file");
        let sop_class = obj
            .meta()
            .media_storage_sop_class_uid()
            .trim_end_matches('\0')
            .to_string();
        let text = |tag| {
            obj.element(tag)
                .ok()
                .and_then(|e| e.to_str().ok())
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        };
        assert_eq!(
            text(dicom_dictionary_std::tags::STUDY_INSTANCE_UID),
            truth["study_instance_uid"].as_str().expect("study UID")
        );
        match sop_class.as_str() {
            "1.2.840.10008.5.1.4.1.1.66.4" => dciodvfy_clean(f),
            "1.2.840.10008.5.1.4.1.1.7" => {
                dciodvfy_clean(f);
                let description = text(dicom_dictionary_std::tags::SERIES_DESCRIPTION);
                assert!(description.contains("DERIVED, UNVERIFIED"), "{description}");
                overlay_numbers.push(
                    text(dicom_dictionary_std::tags::INSTANCE_NUMBER)
                        .parse::<u32>()
                        .expect("instance number"),
                );
                continue;
            }
            _ => {}
        }
        classes.push(sop_class);
    }
    classes.sort();
    assert_eq!(
        classes,
        [
            "1.2.840.10008.5.1.4.1.1.66.4",
            "1.2.840.10008.5.1.4.1.1.66.4",
            "1.2.840.10008.5.1.4.1.1.88.22"
        ],
        "storescp holds {got:?}"
    );
    overlay_numbers.sort();
    assert!(
        overlay_numbers.len() >= 2,
        "summary and slices: {overlay_numbers:?}"
    );
    assert_eq!(
        overlay_numbers,
        (1..=overlay_numbers.len() as u32).collect::<Vec<_>>()
    );
    // /healthz and /metrics count what this test sent.
    let (line, body) = node.http_get("/healthz");
    assert!(line.contains("200"), "{line}");
    assert_eq!(body.trim(), "ok");
    let (line, m) = node.http_get("/metrics");
    assert!(line.contains("200"), "{line}");
    let metric = |name: &str| -> f64 {
        m.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} not in /metrics:\n{m}"))
    };
    let bytes: usize = files.values().map(Vec::len).sum();
    assert_eq!(
        metric("pulmo_instances_received_total{outcome=\"stored\"}") as usize,
        files.len()
    );
    assert_eq!(metric("pulmo_received_bytes_total") as usize, bytes);
    assert_eq!(
        metric("pulmo_associations_total{outcome=\"accepted\"}") as usize,
        1
    );
    assert_eq!(metric("pulmo_jobs{state=\"done\"}") as usize, 1);
    assert_eq!(
        metric("pulmo_deliveries{state=\"delivered\"}") as usize,
        got.len()
    );
    assert_eq!(
        metric("pulmo_delivery_attempts_total{outcome=\"delivered\"}") as usize,
        got.len()
    );
    assert_eq!(
        metric("pulmo_stage_seconds_count{stage=\"job\"}") as usize,
        1
    );
    assert!(metric("pulmo_stage_seconds_sum{stage=\"lobes\"}") > 0.0);
}

#[test]
fn a_down_destination_gets_its_results_later_and_a_refusing_one_is_parked_until_retry() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // "ctonly" is another pulmo node: it stores CT and nothing else, so it refuses SEG.
    let ctonly_dir = tmp.path().join("ctonly");
    std::fs::create_dir_all(&ctonly_dir).expect("dir");
    let ctonly = start(&ctonly_dir, "ae_title = \"CTONLY\"");
    let (pacs_port, pacs_out) = (free_port(), tmp.path().join("pacs"));
    let tail = models_config(tmp.path())
        + &destination("pacs", "PACS", pacs_port)
        + &destination("ctonly", "CTONLY", ctonly.port)
        + "[delivery]\nmax_attempts = 1000\ninitial_backoff_s = 1\nmax_backoff_s = 1\ntimeout_s = 10\n";
    let node = start_with(tmp.path(), "", &tail, 2);
    let study = tmp.path().join("study");
    write_phantom(&study, &small(171), Syntax::Explicit, false, false);
    storescu(node.port, &study.join("dicom"), Syntax::Explicit);
    // The PACS is down: its deliveries stay pending, tried again and again, with the reason.
    wait_for(tmp.path(), "retries to the down PACS", 120, || {
        let s = node.status();
        let d = deliveries(&s);
        d.len() == 6
            && d.iter().filter(|d| d["destination"] == "pacs").all(|d| {
                d["state"] == "pending"
                    && d["attempts"].as_i64().unwrap_or(0) >= 2
                    && d["last_error"].as_str().is_some_and(|e| !e.is_empty())
            })
    });
    // The refusing destination is parked at once, with the reason in words.
    let s = node.status();
    for d in deliveries(&s)
        .iter()
        .filter(|d| d["destination"] == "ctonly")
    {
        assert_eq!(d["state"], "failed", "{d:#}");
        let e = d["last_error"].as_str().unwrap_or("");
        assert!(
            e.contains("accepted no presentation context for Segmentation Storage")
                || e.contains("accepted no presentation context for Enhanced SR Storage"),
            "{e}"
        );
    }
    let text = run_ok(pulmo().arg("--config").arg(&node.config).arg("status"));
    assert!(
        text.contains("no presentation context for Segmentation Storage"),
        "{text}"
    );
    // The PACS comes up: its results arrive; the job ends failed, naming what was parked.
    let _pacs = storescp(pacs_port, &pacs_out);
    wait_for(tmp.path(), "delivery to the PACS", 60, || {
        received(&pacs_out).len() == 3
    });
    wait_for(tmp.path(), "the job to settle", 30, || {
        jobs(&node.status())
            .first()
            .is_some_and(|j| j["state"] == "failed")
    });
    let job = jobs(&node.status())[0].clone();
    assert!(
        job["reason"]
            .as_str()
            .is_some_and(|r| r.contains("3 of 6 deliveries parked")),
        "{job:#}"
    );
    // The administrator puts a storage SCP that accepts SEG where the refusing one was, and
    // retries: the parked results are delivered and the job is done.
    let ctonly_port = ctonly.port;
    drop(ctonly);
    let fixed_out = tmp.path().join("fixed");
    let _fixed = storescp(ctonly_port, &fixed_out);
    let out = run_ok(
        pulmo()
            .arg("--config")
            .arg(&node.config)
            .args(["retry", "--all-failed"]),
    );
    assert!(out.contains("3 deliveries queued again"), "{out}");
    wait_for(tmp.path(), "the retried deliveries", 60, || {
        jobs(&node.status())
            .first()
            .is_some_and(|j| j["state"] == "done")
    });
    assert_eq!(received(&fixed_out).len(), 3);
}

#[test]
fn kill_9_while_results_wait_for_a_down_destination_then_they_are_delivered_once() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (pacs_port, pacs_out) = (free_port(), tmp.path().join("pacs"));
    let tail = models_config(tmp.path())
        + &destination("pacs", "PACS", pacs_port)
        + "[delivery]\ninitial_backoff_s = 1\nmax_backoff_s = 1\ntimeout_s = 10\n";
    let mut node = start_with(tmp.path(), "", &tail, 2);
    let study = tmp.path().join("study");
    write_phantom(&study, &small(181), Syntax::Explicit, false, false);
    storescu(node.port, &study.join("dicom"), Syntax::Explicit);
    wait_for(tmp.path(), "pending deliveries", 120, || {
        let s = node.status();
        let d = deliveries(&s);
        d.len() == 3 && d.iter().all(|d| d["attempts"].as_i64().unwrap_or(0) >= 1)
    });
    node.kill_9();
    let _pacs = storescp(pacs_port, &pacs_out);
    let node = start_with(tmp.path(), "", &tail, 2);
    wait_for(tmp.path(), "the job to be done after restart", 60, || {
        jobs(&node.status())
            .first()
            .is_some_and(|j| j["state"] == "done")
    });
    let s = node.status();
    assert_eq!(jobs(&s).len(), 1, "{s:#}");
    assert!(deliveries(&s).iter().all(|d| d["state"] == "delivered"));
    let got = received(&pacs_out);
    assert_eq!(got.len(), 3, "{got:?}");
}

#[test]
fn a_scout_only_study_is_skipped_with_its_reason_and_nothing_is_sent() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (pacs_port, pacs_out) = (free_port(), tmp.path().join("pacs"));
    let _pacs = storescp(pacs_port, &pacs_out);
    let tail = models_config(tmp.path()) + &destination("pacs", "PACS", pacs_port);
    let node = start_with(tmp.path(), "", &tail, 1);
    let study = tmp.path().join("study");
    write_phantom(&study, &small(171), Syntax::Explicit, true, false);
    // The phantom's extra series include a scout: send that series alone.
    let scout = std::fs::read_dir(study.join("dicom"))
        .expect("series folders")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|dir| {
            dicom_files(dir).first().is_some_and(|f| {
                dicom_object::open_file(f)
                    .ok()
                    .and_then(|o| {
                        o.element(dicom_dictionary_std::tags::SERIES_DESCRIPTION)
                            .ok()
                            .and_then(|e| e.to_str().ok().map(|s| s.to_lowercase()))
                    })
                    .is_some_and(|d| d.contains("scout"))
            })
        })
        .expect("a scout series");
    storescu(node.port, &scout, Syntax::Explicit);
    wait_for(tmp.path(), "the scout study's job to end", 60, || {
        jobs(&node.status())
            .first()
            .is_some_and(|j| j["state"] != "stable" && j["state"] != "running")
    });
    let s = node.status();
    let job = &jobs(&s)[0];
    assert_eq!(job["state"], "skipped", "{s:#}");
    let reason = job["reason"].as_str().unwrap_or("");
    assert!(reason.contains("series"), "{reason}");
    std::thread::sleep(Duration::from_secs(2));
    assert!(deliveries(&node.status()).is_empty());
    assert!(received(&pacs_out).is_empty());
    let (_, m) = node.http_get("/metrics");
    assert!(m.contains("pulmo_jobs{state=\"skipped\"} 1"), "{m}");
    // The node goes on: echo still answers.
    assert!(echoscu(node.port, "PULMO", "ECHOSCU").0);
}

#[test]
fn kill_9_during_analysis_then_the_study_is_analysed_and_delivered_once() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (pacs_port, pacs_out) = (free_port(), tmp.path().join("pacs"));
    let _pacs = storescp(pacs_port, &pacs_out);
    let tail = models_config(tmp.path()) + &destination("pacs", "PACS", pacs_port);
    let mut node = start_with(tmp.path(), "", &tail, 1);
    let study = tmp.path().join("study");
    // Full size, so that the analysis lasts long enough to be interrupted.
    write_phantom(
        &study,
        &Params::new(161, Size::Full),
        Syntax::Explicit,
        false,
        false,
    );
    storescu(node.port, &study.join("dicom"), Syntax::Explicit);
    wait_for(tmp.path(), "the analysis to start", 120, || {
        jobs(&node.status())
            .first()
            .is_some_and(|j| j["state"] == "running")
    });
    node.kill_9();
    assert!(received(&pacs_out).is_empty(), "killed before delivering");
    let node = start_with(tmp.path(), "", &tail, 1);
    wait_for(tmp.path(), "the job to be done after restart", 180, || {
        jobs(&node.status())
            .first()
            .is_some_and(|j| j["state"] == "done")
    });
    let s = node.status();
    let jobs = jobs(&s);
    assert_eq!(jobs.len(), 1, "{s:#}");
    assert_eq!(jobs[0]["attempts"].as_i64(), Some(2), "{s:#}");
    let d = deliveries(&s);
    assert_eq!(d.len(), 3, "{s:#}");
    assert!(
        d.iter()
            .all(|d| d["state"] == "delivered" && d["attempts"] == 1)
    );
    assert_eq!(received(&pacs_out).len(), 3);
}

#[test]
fn pulmo_send_reports_each_file_and_fails_on_a_refusal() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (port, out) = (free_port(), tmp.path().join("pacs"));
    let _pacs = storescp(port, &out);
    let study = tmp.path().join("study");
    write_phantom(&study, &small(191), Syntax::Explicit, false, false);
    let files = dicom_files(&study.join("dicom"));
    let text = run_ok(
        pulmo()
            .arg("send")
            .arg(study.join("dicom"))
            .arg("--to")
            .arg(format!("PACS@127.0.0.1:{port}")),
    );
    assert_eq!(
        text.lines().filter(|l| l.starts_with("stored ")).count(),
        files.len()
    );
    assert_eq!(received(&out).len(), files.len());
    // A node that accepts CT only refuses a SEG: non-zero exit, and the reason for the file.
    let node_dir = tmp.path().join("node");
    std::fs::create_dir_all(&node_dir).expect("dir");
    let node = start(&node_dir, "");
    let segs = segs_from_truth(&study, &phantom::generate(&small(191)), 0, "t");
    let out = run(pulmo()
        .arg("send")
        .args(&segs)
        .arg("--to")
        .arg(format!("PULMO@127.0.0.1:{}", node.port)));
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("no presentation context for Segmentation Storage"),
        "{text}"
    );
    // With the SEG class in `extra_sop_classes` the same node stores it as sent; a study of a
    // SEG alone has nothing to measure: its job is skipped, with the reason.
    drop(node);
    let node = start_with(
        &node_dir,
        "extra_sop_classes = [\"1.2.840.10008.5.1.4.1.1.66.4\"]",
        &models_config(&node_dir),
        1,
    );
    run_ok(
        pulmo()
            .arg("send")
            .args(&segs)
            .arg("--to")
            .arg(format!("PULMO@127.0.0.1:{}", node.port)),
    );
    let stored: BTreeMap<String, Vec<u8>> = segs
        .iter()
        .map(|f| {
            let uid = dicom_object::open_file(f)
                .expect("seg")
                .meta()
                .media_storage_sop_instance_uid()
                .trim_end_matches('\0')
                .to_string();
            (uid, data_set(f))
        })
        .collect();
    assert_stored(&node, &stored, "SEGs accepted as an extra SOP class");
    wait_for(&node_dir, "the SEG-only study's job to end", 60, || {
        jobs(&node.status())
            .first()
            .is_some_and(|j| j["state"] == "skipped")
    });
    let job = jobs(&node.status())[0].clone();
    assert!(
        job["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{job:#}"
    );
}
