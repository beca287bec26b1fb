//! Hostile and malformed input at the node (issue 38): each case gets a failure status or a clear
//! error, the node keeps serving (a C-ECHO from another peer address answers within a second,
//! during and after), its memory stays bounded, and nothing acknowledged is lost or changed.
//! The hostile peer is pynetdicom sending files as they are (tests/py/hostile_peer.py), or raw
//! bytes on a socket where no DICOM library would send them.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::node::*;
use common::*;
use pulmo::iod::transfer_syntax::Syntax;

/// A peer address other than the hostile one (the whole 127/8 is loopback on Linux).
const OTHER_PEER: &str = "127.0.0.2";

fn hostile_peer(args: &[&str]) -> String {
    let out = run(Command::new(python())
        .arg(repo().join("tests/py/hostile_peer.py"))
        .args(args));
    assert!(
        out.status.success(),
        "hostile_peer.py {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// A C-ECHO from `OTHER_PEER` answered with Success within a second.
fn assert_echo_within_a_second(node: &Node, when: &str) {
    let out = hostile_peer(&["echo", &node.port.to_string(), OTHER_PEER]);
    let secs: f64 = out
        .trim()
        .strip_prefix("ok ")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("C-ECHO {when}: {out}\n{}", node_log(node)));
    assert!(secs < 1.0, "C-ECHO {when} took {secs} s");
}

fn node_log(node: &Node) -> String {
    let dir = node.data.parent().expect("node dir");
    std::fs::read_to_string(dir.join("node.log")).unwrap_or_default()
}

/// Where a Part 10 file's Pixel Data element starts (explicit VR little endian, top level: the
/// phantom's files hold no sequence after it).
fn pixel_data_at(file: &[u8]) -> usize {
    file.windows(6)
        .rposition(|w| w == [0xE0, 0x7F, 0x10, 0x00, b'O', b'W'])
        .expect("PixelData OW")
}

/// `file` with a sequence nested `depth` deep (undefined lengths) before its pixel data, its SOP
/// Instance UID kept: the hostile data set of cases 1 and 2.
fn nested(file: &[u8], depth: usize) -> Vec<u8> {
    let at = pixel_data_at(file);
    let mut seq = Vec::new();
    for _ in 0..depth {
        seq.extend([0x08, 0x00, 0x15, 0x11]);
        seq.extend(b"SQ\0\0");
        seq.extend([0xFF; 4]);
        seq.extend([0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
    }
    for _ in 0..depth {
        seq.extend([0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0]);
        seq.extend([0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
    }
    [&file[..at], &seq, &file[at..]].concat()
}

/// `file` with its Pixel Data announcing `len` bytes (the bytes that follow unchanged).
fn pixel_length(file: &[u8], len: u32) -> Vec<u8> {
    let at = pixel_data_at(file) + 8;
    let mut v = file.to_vec();
    v[at..at + 4].copy_from_slice(&len.to_le_bytes());
    v
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).expect("write");
    p
}

/// A small phantom study sent with storescu: the node, and the data sets it acknowledged.
fn node_with_a_study(
    tmp: &Path,
    node_extra: &str,
) -> (Node, Vec<PathBuf>, BTreeMap<String, Vec<u8>>) {
    // Never stable during the test: no analysis competes with what is measured here.
    let node = start_with(tmp, node_extra, "", 3600);
    let study = tmp.join("study");
    write_phantom(&study, &small(381), Syntax::Explicit, false, false);
    storescu(node.port, &study.join("dicom"), Syntax::Explicit);
    let files = dicom_files(&study.join("dicom"));
    let acknowledged = sent(&study.join("dicom"));
    (node, files, acknowledged)
}

/// Cases 1, 2, 3 (one association) and 6: malformed data sets, three of them reusing the SOP
/// Instance UID of an instance already stored with Success, get failure statuses; the node goes on;
/// the stored instances stay byte-identical, across a kill -9 and the journal replay after it.
#[test]
fn malformed_instances_are_refused_and_acknowledged_ones_survive_unchanged() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (mut node, files, acknowledged) = node_with_a_study(tmp.path(), "");
    assert_stored(&node, &acknowledged, "before");
    let hostile = tmp.path().join("hostile");
    std::fs::create_dir_all(&hostile).expect("dir");
    let slice = |i: usize| std::fs::read(&files[i]).expect("slice");
    let shared = real_data().parent().expect("data").join("hostile");
    let stray = |f: Vec<u8>| {
        let value = f.len() - pixel_data_at(&f) - 12;
        pixel_length(&f, value as u32 - 1)
    };
    let cases: Vec<(&str, PathBuf)> = vec![
        (
            "a sequence nested 2,000 deep",
            write(&hostile, "nested.dcm", &nested(&slice(0), 2000)),
        ),
        (
            "the shared 10,000-deep file",
            shared.join("seq-nested-10000.dcm"),
        ),
        (
            "PixelData announcing 0xFFFFFFF0 bytes",
            write(&hostile, "huge.dcm", &pixel_length(&slice(1), 0xFFFF_FFF0)),
        ),
        (
            "the shared 0xF0000000-byte element",
            shared.join("huge-length-un.dcm"),
        ),
        // Case 6: PixelData one byte short (odd), its last byte left over as a stray one.
        (
            "odd PixelData and a stray byte",
            write(&hostile, "stray.dcm", &stray(slice(2))),
        ),
    ];
    for (what, file) in &cases {
        let out = hostile_peer(&[
            "store",
            &node.port.to_string(),
            "127.0.0.1",
            &file.to_string_lossy(),
        ]);
        let status = out.trim();
        assert!(
            status == "status 0xC000" || status == "status 0xA700",
            "{what}: {status}\n{}",
            node_log(&node)
        );
        assert_echo_within_a_second(&node, &format!("after {what}"));
    }
    let log = node_log(&node);
    assert!(log.contains("nested deeper than 32"), "{log}");
    assert!(log.contains("announces 4294967280 bytes"), "{log}");
    assert!(log.contains("left over after the last element"), "{log}");
    assert_stored(&node, &acknowledged, "after the malformed ones");
    // The journal replay at the next start must not bring any of them back.
    node.kill_9();
    let node = start_with(tmp.path(), "", "", 3600);
    assert_echo_within_a_second(&node, "after the restart");
    assert_stored(&node, &acknowledged, "after kill -9 and replay");
    assert_eq!(
        dicom_files(&node.data.join("spool")).len(),
        acknowledged.len(),
        "something else was stored"
    );
}

/// The node's peak resident memory (kB), from the kernel.
fn peak_rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("status")
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

/// Case 3: eight associations at once, each sending a data set whose PixelData announces
/// 0xFFFFFFF0 bytes: every one refused, the node's peak memory stays under 256 MiB (it reached
/// 8 GB with two before), C-ECHO from another peer answers meanwhile.
#[test]
fn eight_associations_announcing_4_gib_at_once_leave_memory_bounded() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (node, files, acknowledged) = node_with_a_study(
        tmp.path(),
        "max_associations = 9\nmax_associations_per_peer = 8",
    );
    let huge = write(
        tmp.path(),
        "huge.dcm",
        &pixel_length(&std::fs::read(&files[0]).expect("slice"), 0xFFFF_FFF0),
    );
    let before = peak_rss_kb(node.child.id());
    let port = node.port.to_string();
    let huge_arg = huge.to_string_lossy().to_string();
    let sender =
        std::thread::spawn(move || hostile_peer(&["parallel", &port, "127.0.0.1", "8", &huge_arg]));
    std::thread::sleep(Duration::from_millis(300));
    assert_echo_within_a_second(&node, "while eight associations send");
    let out = sender.join().expect("sender");
    let statuses: Vec<&str> = out.lines().collect();
    assert_eq!(statuses.len(), 8, "{out}");
    assert!(
        statuses.iter().all(|s| *s == "status 0xC000"),
        "{out}\n{}",
        node_log(&node)
    );
    let peak = peak_rss_kb(node.child.id());
    eprintln!("node peak RSS: {before} kB before, {peak} kB after eight 4 GiB announcements");
    assert!(peak < 256 * 1024, "peak RSS {peak} kB");
    assert_echo_within_a_second(&node, "after");
    assert_stored(&node, &acknowledged, "after");
}

/// Case 5: eight connections from one address that send nothing, and one that trickles a byte at
/// a time, neither hold the node: the address gets at most its share of slots (the rest an
/// A-ASSOCIATE-RJ, local limit exceeded), another peer is served at once, and a slow peer is cut
/// off when its association request or PDU is not complete in time, however it trickles.
#[test]
fn silent_and_trickling_peers_cannot_hold_the_node() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let node = start_with(
        tmp.path(),
        // ARTIM long enough that the eight silent connections still hold their slots when the
        // ninth peer's Python has started on a loaded machine (with 3 s it raced under `make test`).
        "artim_timeout_s = 6\ndimse_timeout_s = 3",
        "",
        3600,
    );
    let silent: Vec<TcpStream> = (0..8)
        .map(|_| TcpStream::connect(("127.0.0.1", node.port)).expect("connect"))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    assert_echo_within_a_second(&node, "while eight silent connections are open");
    // A ninth from the same address, with a real association request: rejected, with the reason.
    // Under `make test`'s load pynetdicom now and then gives up on its own connection within 0.1 s
    // ("Requesting Association", then "Aborting Association", with no reply read) while the node
    // logs the rejection; such a try is made again, twice at most. A reply other than the
    // rejection still fails the test.
    let mut out = String::new();
    for _ in 0..3 {
        out = hostile_peer(&["echo", &node.port.to_string(), "127.0.0.1"]);
        if !out.starts_with("not established") {
            break;
        }
        eprintln!("ninth peer, tried again: {out}");
    }
    assert!(
        out.starts_with("rejected") && out.contains("Local limit exceeded"),
        "{out}\n{}",
        node_log(&node)
    );
    let log = node_log(&node);
    assert!(log.contains("association rejected"), "{log}");

    // Trickling the association request, then a P-DATA PDU, one byte every 0.5 s.
    let trickle = |bytes: &[u8]| -> Duration {
        let mut s = TcpStream::connect(("127.0.0.1", node.port)).expect("connect");
        let t = Instant::now();
        for b in bytes.iter().cycle() {
            if s.write_all(&[*b]).is_err() || t.elapsed() > Duration::from_secs(20) {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        t.elapsed()
    };
    drop(silent);
    std::thread::sleep(Duration::from_millis(500));
    let took = trickle(&[0x01, 0x00, 0, 0, 0xFF, 0x00]);
    assert!(
        took < Duration::from_secs(10),
        "a trickled request held its slot {took:?}"
    );

    let mut assoc = dicom_ul::association::client::ClientAssociationOptions::new()
        .with_presentation_context(
            dicom_dictionary_std::uids::CT_IMAGE_STORAGE,
            vec![dicom_dictionary_std::uids::EXPLICIT_VR_LITTLE_ENDIAN],
        )
        .calling_ae_title("TRICKLE")
        .establish_with(&format!("PULMO@127.0.0.1:{}", node.port))
        .expect("association");
    let s = assoc.inner_stream();
    s.write_all(&[0x04, 0x00, 0x00, 0x00, 0x01, 0x00])
        .expect("PDU header");
    let t = Instant::now();
    let mut closed = false;
    while t.elapsed() < Duration::from_secs(20) {
        if s.write_all(&[0]).is_err() {
            closed = true;
            break;
        }
        s.set_read_timeout(Some(Duration::from_millis(500))).ok();
        match s.read(&mut [0u8; 16]) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => {
                closed = true;
                break;
            }
        }
    }
    let took = t.elapsed();
    assert!(
        closed && took < Duration::from_secs(8),
        "a trickled PDU held its association {took:?} (closed: {closed})\n{}",
        node_log(&node)
    );
    assert!(node_log(&node).contains("peer too slow"));
    assert_echo_within_a_second(&node, "after the slow peers");
}

/// Case 4 in the node: series whose slices are 1e5 mm apart, or whose pixels are 1e6 mm wide,
/// are skipped with the reason before anything is allocated for them; the node goes on.
#[test]
fn absurd_geometry_is_skipped_with_its_reason() {
    let shared = real_data().parent().expect("data").join("hostile");
    // The two series share their UIDs: one node each.
    for (series, why) in [
        ("slices-100-m-apart", "beyond the 20 mm limit"),
        ("pixel-spacing-1e6", "outside what a chest CT can have"),
    ] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let tail = models_config(tmp.path());
        let node = start_with(tmp.path(), "", &tail, 1);
        run_ok(
            Command::new(tool("storescu"))
                .args(["-aec", "PULMO", "+sd", "+r", "127.0.0.1"])
                .arg(node.port.to_string())
                .arg(shared.join(series)),
        );
        let reason = first_job_reason(&node, "skipped", 120);
        assert!(reason.contains(why), "{series}: {reason}");
        assert_echo_within_a_second(&node, &format!("after {series}"));
    }
}

/// An analysis that crashes (here: killed, as the out-of-memory killer would) fails its job with
/// the reason, at once and for good, and the node goes on serving.
#[test]
fn a_crashed_analysis_fails_its_job_and_the_node_goes_on() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let tail = models_config(tmp.path());
    let mut node = start_with(tmp.path(), "", &tail, 1);
    let study = tmp.path().join("study");
    // Full size, so that the analysis lasts long enough to be killed.
    write_phantom(
        &study,
        &pulmo::phantom::Params::new(171, pulmo::phantom::Size::Full),
        Syntax::Explicit,
        false,
        false,
    );
    storescu(node.port, &study.join("dicom"), Syntax::Explicit);
    let node_pid = node.child.id();
    let mut child = None;
    wait_for(tmp.path(), "the analysis process", 120, || {
        child = analysis_child(node_pid);
        child.is_some()
    });
    let child = child.expect("child");
    run_ok(Command::new("kill").arg("-9").arg(child.to_string()));
    let reason = first_job_reason(&node, "failed", 60);
    assert!(
        reason.contains("SIGKILL") && reason.contains("not tried again"),
        "{reason}"
    );
    assert_echo_within_a_second(&node, "after the analysis crashed");
    // Not retried at the next start either.
    node.kill_9();
    let node = start_with(tmp.path(), "", &tail, 1);
    std::thread::sleep(Duration::from_secs(3));
    let s = node.status();
    assert_eq!(jobs(&s).len(), 1, "{s:#}");
    assert_eq!(jobs(&s)[0]["state"], "failed", "{s:#}");
}

/// The reason of the node's first job, once it is in `state` (within `secs`).
fn first_job_reason(node: &Node, state: &str, secs: u64) -> String {
    let dir = node.data.parent().expect("node dir");
    wait_for(dir, &format!("the job to be {state}"), secs, || {
        jobs(&node.status())
            .first()
            .is_some_and(|j| j["state"] == state)
    });
    jobs(&node.status())[0]["reason"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// The pid of `pulmo analyze-job` started by the node `parent`, if one runs.
fn analysis_child(parent: u32) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
        // Fields after the command name in parentheses: state, then the parent's pid.
        let ppid: u32 = stat
            .rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        (ppid == parent && cmdline.windows(11).any(|w| w == b"analyze-job")).then_some(pid)
    })
}
