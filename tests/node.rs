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
        phantom::study::write(
            &p,
            &dir,
            phantom::study::StudyOptions {
                syntax,
                extra_series: false,
                shuffle: false,
            },
        )
        .expect("written");
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
