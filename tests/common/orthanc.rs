//! Orthanc (the Debian package) as the PACS: on loopback, with its own storage and the DICOMweb
//! plugin, and a few REST helpers (through curl).

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use super::*;

/// Orthanc on loopback with its own storage; stopped when dropped.
pub struct Orthanc {
    pub child: Child,
    pub url: String,
    pub dicom_port: u16,
    pub config: PathBuf,
    pub log: PathBuf,
}

impl Drop for Orthanc {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

fn merge(base: &mut serde_json::Value, extra: serde_json::Value) {
    if let (Some(b), serde_json::Value::Object(e)) = (base.as_object_mut(), extra) {
        for (k, v) in e {
            b.insert(k, v);
        }
    }
}

impl Orthanc {
    /// Start Orthanc with storage under `dir`, free ports, DICOMweb, and `extra` settings on top.
    pub fn start(dir: &Path, extra: serde_json::Value) -> Orthanc {
        let plugin = PathBuf::from("/usr/share/orthanc/plugins/libOrthancDicomWeb.so");
        assert!(
            plugin.is_file(),
            "orthanc-dicomweb is missing: run `make test`, which installs it"
        );
        let (http, dicom) = (free_port(), free_port());
        std::fs::create_dir_all(dir.join("db")).expect("dir");
        let mut cfg = serde_json::json!({
            "Name": "PULMO-TEST",
            "StorageDirectory": dir.join("db"),
            "IndexDirectory": dir.join("db"),
            "HttpPort": http,
            "DicomPort": dicom,
            "RemoteAccessAllowed": false,
            "AuthenticationEnabled": false,
            "Plugins": [plugin],
            "DicomWeb": {"Enable": true, "Root": "/dicom-web/", "EnableWado": true, "WadoRoot": "/wado"},
        });
        merge(&mut cfg, extra);
        let http = cfg["HttpPort"].as_u64().map_or(http, |p| p as u16);
        let path = dir.join("orthanc.json");
        std::fs::write(&path, cfg.to_string()).expect("config");
        let log_path = dir.join("orthanc.log");
        let log = std::fs::File::create(&log_path).expect("log");
        let child = Command::new(tool("Orthanc"))
            .arg(&path)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("Orthanc starts");
        let dicom_port = cfg["DicomPort"].as_u64().map_or(dicom, |p| p as u16);
        let o = Orthanc {
            child,
            url: format!("http://127.0.0.1:{http}"),
            dicom_port,
            config: path,
            log: log_path,
        };
        let start = Instant::now();
        while o.try_get("/system").is_none() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "Orthanc did not start:\n{}",
                std::fs::read_to_string(&o.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        o
    }

    /// GET a REST path as JSON; None when Orthanc does not answer 2xx.
    pub fn try_get(&self, path: &str) -> Option<serde_json::Value> {
        let out = Command::new("curl")
            .args(["-sf", "--max-time", "30"])
            .arg(format!("{}{path}", self.url))
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    pub fn get(&self, path: &str) -> serde_json::Value {
        self.try_get(path)
            .unwrap_or_else(|| panic!("Orthanc GET {path} failed"))
    }

    /// Download a REST resource (an instance's file, say) to `to`.
    pub fn download(&self, path: &str, to: &Path) {
        run_ok(
            Command::new("curl")
                .args(["-sf", "--max-time", "60", "-o"])
                .arg(to)
                .arg(format!("{}{path}", self.url)),
        );
    }

    /// Orthanc's id of a study, by Study Instance UID.
    pub fn study_id(&self, study_uid: &str) -> Option<String> {
        let out = Command::new("curl")
            .args(["-sf", "--max-time", "30", "-X", "POST", "-d", study_uid])
            .arg(format!("{}/tools/lookup", self.url))
            .output()
            .ok()?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        v.as_array()?
            .iter()
            .find(|r| r["Type"] == "Study")
            .and_then(|r| r["ID"].as_str())
            .map(String::from)
    }

    /// The series of a study, expanded (MainDicomTags, Instances, ID).
    pub fn series_of(&self, study_id: &str) -> Vec<serde_json::Value> {
        self.try_get(&format!("/studies/{study_id}/series?expand"))
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    }
}
