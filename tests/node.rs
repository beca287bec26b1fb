//! The DICOM node against real peers: DCMTK echoscu and storescu, pynetdicom, raw sockets.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::*;
use pulmo::iod::transfer_syntax::Syntax;
use pulmo::phantom::{self, Params, Size};

/// `pulmo serve` on a free loopback port; killed when dropped.
struct Node {
    child: Child,
    port: u16,
    data: PathBuf,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

fn start(dir: &Path, extra: &str) -> Node {
    // A port found free may be taken by a node of a test running beside this one before ours
    // binds it: then ours exits, and we try another port.
    for _ in 0..5 {
        let port = free_port();
        let data = dir.join("data");
        let cfg = dir.join("pulmo.toml");
        std::fs::write(
            &cfg,
            format!(
                "[node]\nport = {port}\n{extra}\n[storage]\ndata_dir = \"{}\"\n",
                data.display()
            ),
        )
        .expect("config");
        let log = std::fs::File::create(dir.join("node.log")).expect("log");
        let child = pulmo()
            .arg("--config")
            .arg(&cfg)
            .arg("serve")
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("pulmo serve starts");
        let mut node = Node { child, port, data };
        let t = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "pulmo serve did not listen"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_millis(300));
        if node.child.try_wait().expect("wait").is_none() {
            return node;
        }
    }
    panic!("pulmo serve could not get a port");
}

fn echoscu(port: u16, called: &str, calling: &str) -> (bool, String) {
    let out = run(Command::new(tool("echoscu"))
        .args(["-aec", called, "-aet", calling, "127.0.0.1"])
        .arg(port.to_string()));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// storescu proposing exactly `syntax`, so that it sends each file as it is (no conversion).
fn storescu(port: u16, dir: &Path, syntax: Syntax) {
    let propose = match syntax {
        Syntax::Implicit => "-xi",
        Syntax::Explicit => "-xe",
        Syntax::Deflated => "-xd",
        Syntax::Rle => "-xr",
        Syntax::JpegLs => "-xt",
        Syntax::JpegLossless => "-xs",
        Syntax::Jpeg2000 => "-xv",
    };
    run_ok(
        Command::new(tool("storescu"))
            .env("TCP_NODELAY", "1")
            .args(["-aec", "PULMO", propose, "-R", "+sd", "+r", "127.0.0.1"])
            .arg(port.to_string())
            .arg(dir),
    );
}

/// The data set bytes of a Part 10 file (after the file meta group).
fn data_set(path: &Path) -> Vec<u8> {
    let b = std::fs::read(path).expect("read");
    let group_len = u32::from_le_bytes([b[140], b[141], b[142], b[143]]) as usize;
    b[144 + group_len..].to_vec()
}

/// SOP Instance UID → data set bytes, of every file sent.
fn sent(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    dicom_files(dir)
        .into_iter()
        .map(|f| {
            let uid = dicom_object::OpenFileOptions::new()
                .read_until(dicom_dictionary_std::tags::PIXEL_DATA)
                .open_file(&f)
                .expect("open")
                .meta()
                .media_storage_sop_instance_uid()
                .trim_end_matches('\0')
                .to_string();
            (uid, data_set(&f))
        })
        .collect()
}

fn inflate(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::DeflateDecoder::new(bytes), &mut out)
        .expect("inflate");
    out
}

/// Every sent instance is in the spool, data set byte-identical.
fn assert_stored(node: &Node, sent: &BTreeMap<String, Vec<u8>>, what: &str) {
    let stored: BTreeMap<String, PathBuf> = dicom_files(&node.data.join("spool"))
        .into_iter()
        .map(|p| {
            (
                p.file_stem().expect("stem").to_string_lossy().to_string(),
                p,
            )
        })
        .collect();
    for (uid, bytes) in sent {
        let p = stored
            .get(uid)
            .unwrap_or_else(|| panic!("{uid} not stored"));
        let (got, want) = if what == "Deflated" {
            // storescu inflates the file and deflates it again for the wire: the compressed
            // bytes differ with the deflate implementation, the data set they hold must not.
            (inflate(&data_set(p)), inflate(bytes))
        } else {
            (data_set(p), bytes.clone())
        };
        assert!(
            got == want,
            "{what} {uid}: stored data set differs from what was sent"
        );
    }
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
    write_phantom(
        &full,
        &Params::new(122, Size::Full),
        Syntax::Explicit,
        false,
        false,
    );
    let files = sent(&full.join("dicom"));
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
    let store = pulmo::store::Store::open(&node.data).expect("index");
    let counts = store.counts().expect("counts");
    assert_eq!(counts.instances as usize, before);
    assert!(expected > 0);
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
    let node = start(tmp.path(), "");
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
    let counts = pulmo::store::Store::open(&node.data)
        .expect("index")
        .counts()
        .expect("counts");
    assert_eq!(counts.studies, 8);
    let files: usize = dirs.iter().map(|d| dicom_files(d).len()).sum();
    assert_eq!(counts.instances as usize, files);
}
