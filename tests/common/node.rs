//! A `pulmo serve` node, DCMTK storescp as a stand-in PACS, and the config pieces tests give them.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use super::*;
use pulmo::iod::transfer_syntax::Syntax;

/// `pulmo serve` on a free loopback port; killed when dropped.
pub struct Node {
    pub child: Child,
    pub port: u16,
    pub http_port: u16,
    pub data: PathBuf,
    pub config: PathBuf,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

impl Node {
    /// `pulmo status --json` of this node's data.
    pub fn status(&self) -> serde_json::Value {
        let out = run_ok(
            pulmo()
                .arg("--config")
                .arg(&self.config)
                .args(["status", "--json"]),
        );
        serde_json::from_str(&out).expect("status JSON")
    }

    /// GET a path of the HTTP endpoint: (status line, body).
    pub fn http_get(&self, path: &str) -> (String, String) {
        use std::io::Read;
        let mut s = TcpStream::connect(("127.0.0.1", self.http_port)).expect("HTTP endpoint");
        write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").expect("request");
        let mut text = String::new();
        s.read_to_string(&mut text).expect("response");
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        (
            head.lines().next().unwrap_or("").to_string(),
            body.to_string(),
        )
    }

    pub fn kill_9(&mut self) {
        run_ok(
            Command::new("kill")
                .arg("-9")
                .arg(self.child.id().to_string()),
        );
        self.child.wait().ok();
    }
}

pub fn start(dir: &Path, node_extra: &str) -> Node {
    start_with(dir, node_extra, "", 2)
}

/// A node whose data lives in `dir/data` (kept across restarts), with `node_extra` in its [node]
/// table, `tail` (more tables) after the rest of its configuration, and studies stable after
/// `stable_after_s`.
pub fn start_with(dir: &Path, node_extra: &str, tail: &str, stable_after_s: u64) -> Node {
    start_config(dir, &|port, http_port, data| {
        format!(
            "[node]\nport = {port}\n{node_extra}\n[storage]\ndata_dir = \"{}\"\n\
             stable_after_s = {stable_after_s}\n[http]\nport = {http_port}\n{tail}\n",
            data.display()
        )
    })
}

/// A node whose configuration `config(port, http_port, data_dir)` writes, data in `dir/data`.
pub fn start_config(dir: &Path, config: &dyn Fn(u16, u16, &Path) -> String) -> Node {
    // A port found free may be taken by a node of a test running beside this one before ours
    // binds it: then ours exits, and we try another port.
    for _ in 0..5 {
        let (port, http_port) = (free_port(), free_port());
        let data = dir.join("data");
        let cfg = dir.join("pulmo.toml");
        std::fs::write(&cfg, config(port, http_port, &data)).expect("config");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("node.log"))
            .expect("log");
        let child = pulmo()
            .arg("--config")
            .arg(&cfg)
            .arg("serve")
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("pulmo serve starts");
        let mut node = Node {
            child,
            port,
            http_port,
            data,
            config: cfg,
        };
        let t = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if node.child.try_wait().ok().flatten().is_some()
                || t.elapsed() > Duration::from_secs(20)
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_millis(300));
        if node.child.try_wait().expect("wait").is_none() {
            return node;
        }
    }
    panic!(
        "pulmo serve could not start:\n{}",
        std::fs::read_to_string(dir.join("node.log")).unwrap_or_default()
    );
}

/// Wait until `done` holds, for at most `secs`; panics with `what` and the node's log.
pub fn wait_for(dir: &Path, what: &str, secs: u64, mut done: impl FnMut() -> bool) {
    let t = Instant::now();
    while !done() {
        assert!(
            t.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what}; node log:\n{}",
            std::fs::read_to_string(dir.join("node.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// DCMTK storescp, the stand-in PACS, writing into `out`; killed when dropped.
pub struct Storescp(pub Child);

impl Drop for Storescp {
    fn drop(&mut self) {
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

pub fn storescp(port: u16, out: &Path) -> Storescp {
    std::fs::create_dir_all(out).expect("storescp dir");
    let child = Command::new(tool("storescp"))
        .env("TCP_NODELAY", "1")
        .args(["-aet", "PACS", "-od"])
        .arg(out)
        .arg(port.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("storescp");
    let t = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "storescp did not listen"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Storescp(child)
}

/// The stand-in models (tests/py/make_models.py) and the config tables that use them.
/// `models_config` without the overlay series: the delivery tests count SEGs and SR only.
pub fn models_config(dir: &Path) -> String {
    models_config_overlay(dir, false)
}

pub fn models_config_overlay(dir: &Path, overlay: bool) -> String {
    format!(
        "[inference]\nmodels_dir = \"{}\"\nexecution_providers = [\"cpu\"]\n\
         [output]\noverlay_series = {overlay}\n",
        stand_in_models(dir).display()
    )
}

pub fn destination(name: &str, ae: &str, port: u16) -> String {
    format!(
        "[[destinations]]\nname = \"{name}\"\nae_title = \"{ae}\"\nhost = \"127.0.0.1\"\nport = {port}\n"
    )
}

/// Files storescp has written (it names them after the SOP class and instance).
pub fn received(out: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(out)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

pub fn jobs(status: &serde_json::Value) -> Vec<serde_json::Value> {
    status["jobs"].as_array().cloned().unwrap_or_default()
}

pub fn deliveries(status: &serde_json::Value) -> Vec<serde_json::Value> {
    status["deliveries"].as_array().cloned().unwrap_or_default()
}

pub fn echoscu(port: u16, called: &str, calling: &str) -> (bool, String) {
    let out = run(Command::new(tool("echoscu"))
        .args(["-aec", called, "-aet", calling, "127.0.0.1"])
        .arg(port.to_string()));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// storescu proposing exactly `syntax`, so that it sends each file as it is (no conversion).
pub fn storescu(port: u16, dir: &Path, syntax: Syntax) {
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
pub fn data_set(path: &Path) -> Vec<u8> {
    let b = std::fs::read(path).expect("read");
    let group_len = u32::from_le_bytes([b[140], b[141], b[142], b[143]]) as usize;
    b[144 + group_len..].to_vec()
}

/// SOP Instance UID → data set bytes, of every file sent.
pub fn sent(dir: &Path) -> BTreeMap<String, Vec<u8>> {
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

pub fn inflate(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::DeflateDecoder::new(bytes), &mut out)
        .expect("inflate");
    out
}

/// Every sent instance is in the spool, data set byte-identical.
pub fn assert_stored(node: &Node, sent: &BTreeMap<String, Vec<u8>>, what: &str) {
    // Acknowledged instances are durable in the journal; their spool files are written once the
    // transfer has gone quiet.
    let in_spool = || {
        let names: std::collections::BTreeSet<String> = dicom_files(&node.data.join("spool"))
            .iter()
            .filter_map(|p| Some(p.file_stem()?.to_string_lossy().to_string()))
            .collect();
        sent.keys().all(|k| names.contains(k))
    };
    let dir = node.data.parent().expect("node dir");
    wait_for(dir, "every instance in the spool", 60, in_spool);
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
