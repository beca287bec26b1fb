//! `pulmo.toml`: typed, defaulted, validated at load.
//!
//! Every field has a default so that `pulmo serve` with no file listens on loopback only. Validation
//! names the offending field with its TOML path, because integrators edit this file by hand.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML for pulmo: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config field `{field}`: {reason}")]
    Invalid { field: String, reason: String },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub node: NodeConfig,
    pub storage: StorageConfig,
    pub jobs: JobsConfig,
    pub destinations: Vec<Destination>,
    pub delivery: DeliveryConfig,
    pub selection: SelectionConfig,
    pub inference: InferenceConfig,
    pub output: OutputConfig,
    pub http: HttpConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    pub ae_title: String,
    pub bind: String,
    pub port: u16,
    /// Calling AE titles allowed to associate; empty means any.
    pub allowed_calling_aes: Vec<String>,
    pub max_associations: u32,
    pub max_pdu_length: u32,
    /// At most this many associations from one peer address at once (fewer than
    /// `max_associations`, so that one address cannot take every slot).
    pub max_associations_per_peer: u32,
    /// The whole association request must arrive within this many seconds.
    pub artim_timeout_s: u64,
    /// Each PDU must arrive whole within this many seconds of the previous one.
    pub dimse_timeout_s: u64,
    /// A C-STORE data set larger than this is refused (A700).
    pub max_instance_mib: u64,
    /// Storage SOP class UIDs accepted besides CT and Enhanced CT Image Storage (stored as
    /// received; only CT series are analysed).
    pub extra_sop_classes: Vec<String>,
}

impl NodeConfig {
    /// Associations one peer address may hold at once: `max_associations_per_peer`, and always
    /// one slot fewer than `max_associations` (when there is more than one).
    pub fn per_peer_limit(&self) -> u32 {
        self.max_associations_per_peer
            .min(self.max_associations.saturating_sub(1))
            .max(1)
    }
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            ae_title: "PULMO".into(),
            bind: "127.0.0.1".into(),
            port: 11112,
            allowed_calling_aes: Vec::new(),
            max_associations: 8,
            max_associations_per_peer: 4,
            max_pdu_length: 65536,
            artim_timeout_s: 30,
            dimse_timeout_s: 60,
            max_instance_mib: crate::dataset::DEFAULT_MAX_INSTANCE_MIB,
            extra_sop_classes: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    pub data_dir: PathBuf,
    pub stable_after_s: u64,
    /// Most journal segments (preallocated files that received instances are made durable in
    /// before Success); 0 turns the journal off (each instance file is synced on its own).
    pub journal_segments: u32,
    /// Size of one journal segment, in MiB.
    pub journal_segment_mib: u32,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            data_dir: PathBuf::from("pulmo-data"),
            stable_after_s: 10,
            journal_segments: 8,
            journal_segment_mib: 32,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobsConfig {
    /// Studies analysed at the same time.
    pub workers: u32,
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig { workers: 1 }
    }
}

/// Retries of the delivery outbox: exponential back-off from `initial_backoff_s` up to
/// `max_backoff_s`; after `max_attempts` a delivery is parked as failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeliveryConfig {
    pub max_attempts: u32,
    pub initial_backoff_s: u64,
    pub max_backoff_s: u64,
    /// Connection, association and DIMSE response timeout.
    pub timeout_s: u64,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            max_attempts: 30,
            initial_backoff_s: 5,
            max_backoff_s: 300,
            timeout_s: 60,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Destination {
    pub name: String,
    pub ae_title: String,
    pub host: String,
    pub port: u16,
}

/// Rules for picking the chest CT series to measure (DESIGN.md, "Series selection").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SelectionConfig {
    pub min_slices: usize,
    pub max_slice_thickness_mm: f64,
    /// Relative tolerance on slice spacing regularity (0.05 = 5 %).
    pub spacing_tolerance: f64,
    /// Single slices missing between two present ones (a gap of twice the spacing) are filled by
    /// averaging their neighbours, up to this many in a series; more, or wider gaps, are refused.
    /// Only when every DICOM file of the study could be read: a broken file is never papered over.
    pub max_filled_slices: usize,
    /// Largest angle (degrees) between the slice normal and the patient's feet-head axis.
    pub max_axial_tilt_deg: f64,
    /// What a chest CT's geometry can be; a series outside it is not measured (and nothing is
    /// allocated for it): PixelSpacing within this range (mm)...
    pub pixel_spacing_range_mm: [f64; 2],
    /// ...slices at most this far apart (mm)...
    pub max_slice_spacing_mm: f64,
    /// ...an image at most this wide or high (mm)...
    pub max_field_of_view_mm: f64,
    /// ...a stack at most this long (mm)...
    pub max_length_mm: f64,
    /// ...and at most this many voxels.
    pub max_voxels: u64,
    /// Series whose description contains one of these (case-insensitive) are skipped.
    pub exclude_descriptions: Vec<String>,
}

impl Default for SelectionConfig {
    fn default() -> Self {
        SelectionConfig {
            min_slices: 20,
            // Selection is generous; the quality checks flag spacing above 5 mm in the report.
            max_slice_thickness_mm: 10.0,
            spacing_tolerance: 0.05,
            max_filled_slices: 4,
            max_axial_tilt_deg: 10.0,
            pixel_spacing_range_mm: [0.1, 10.0],
            max_slice_spacing_mm: 20.0,
            max_field_of_view_mm: 1000.0,
            max_length_mm: 2500.0,
            max_voxels: 1_000_000_000,
            exclude_descriptions: vec![
                "scout".into(),
                "localizer".into(),
                "topogram".into(),
                "surview".into(),
                "dose".into(),
            ],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InferenceConfig {
    pub models_dir: PathBuf,
    pub execution_providers: Vec<String>,
    /// Path to libonnxruntime; empty means `ORT_DYLIB_PATH`, then the onnxruntime Python package.
    pub onnxruntime_library: Option<PathBuf>,
}

impl Default for InferenceConfig {
    fn default() -> Self {
        InferenceConfig {
            models_dir: PathBuf::from("models"),
            execution_providers: vec!["cuda".into(), "cpu".into()],
            onnxruntime_library: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutputConfig {
    pub overlay_series: bool,
    /// "enhanced" (Enhanced SR) or "comprehensive3d" (Comprehensive 3D SR).
    pub sr_kind: String,
    /// The report's template; unset: the shipped templates/tid1500.xml (built in).
    pub sr_template: Option<PathBuf>,
}

impl Default for OutputConfig {
    fn default() -> Self {
        OutputConfig {
            overlay_series: true,
            sr_kind: "enhanced".into(),
            sr_template: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    pub bind: String,
    pub port: u16,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            bind: "127.0.0.1".into(),
            port: 8089,
        }
    }
}

/// The commented default configuration that `pulmo config --print-default` writes.
/// A unit test proves it parses to `Config::default()`, so the two cannot drift apart.
pub const DEFAULT_TOML: &str = r#"# pulmo.toml: configuration of the pulmo DICOM node.
# Every field is optional; the values below are the defaults.

[node]
# Called AE title this node answers to (1-16 characters, no backslash or control characters).
ae_title = "PULMO"
# Address to listen on. The default is loopback only; use "0.0.0.0" to accept from the network.
bind = "127.0.0.1"
port = 11112
# Calling AE titles allowed to associate. Empty: any calling AE title is accepted.
allowed_calling_aes = []
max_associations = 8
# At most this many at once from one peer address (and never more than max_associations - 1, so
# that one address cannot take every slot). A connection over either limit is answered A-ASSOCIATE-RJ (transient,
# local limit exceeded) and closed.
max_associations_per_peer = 4
# Maximum PDU length we accept, in bytes (4096 to 16777216).
max_pdu_length = 65536
# The whole A-ASSOCIATE-RQ must arrive within this many seconds of the connection...
artim_timeout_s = 30
# ...and each later PDU, whole, within this many seconds of the one before: a peer that trickles
# bytes does not extend it. The connection is closed when either runs out.
dimse_timeout_s = 60
# A C-STORE data set larger than this (MiB) is received, dropped and refused (A700).
max_instance_mib = 1024
# Storage SOP class UIDs accepted besides CT and Enhanced CT Image Storage, stored as received
# (only CT series are analysed). For example Secondary Capture: "1.2.840.10008.5.1.4.1.1.7".
extra_sop_classes = []

[storage]
# Spool directory and SQLite index live here.
data_dir = "pulmo-data"
# A study is stable (and analysed) when no instance arrived for this many seconds.
stable_after_s = 10
# Received instances are made durable in a journal of preallocated segment files (one flush of
# data already allocated on disk, no file-system metadata to commit) before Success, and written
# to their spool files in the background. Up to journal_segments files of journal_segment_mib MiB
# each are created as needed and reused; 0 segments: every instance file is synced on its own.
journal_segments = 8
journal_segment_mib = 32

[jobs]
# Studies analysed at the same time.
workers = 1

# Where results are sent. Repeat the block for several destinations.
# [[destinations]]
# name = "pacs"
# ae_title = "ORTHANC"
# host = "127.0.0.1"
# port = 4242

[delivery]
# A result that cannot be delivered is tried again after 5 s, 10 s, 20 s ... up to max_backoff_s
# between tries (about two hours in all with these values), then parked as failed: `pulmo status`
# shows why, `pulmo retry` sends it again.
max_attempts = 30
initial_backoff_s = 5
max_backoff_s = 300
# Connection, association and response timeout, in seconds.
timeout_s = 60

[selection]
# The thinnest regular axial CT series with at least this many slices is measured.
min_slices = 20
# Thicker series are not measured. Spacing above 5 mm is measured but flagged by a quality check.
max_slice_thickness_mm = 10.0
# Slice spacing may vary by this fraction of the median spacing.
spacing_tolerance = 0.05
# Up to this many single missing slices (a gap of twice the spacing) are filled by averaging their
# neighbours, if every DICOM file of the study could be read; the outputs name them. 0 refuses such
# series.
max_filled_slices = 4
max_axial_tilt_deg = 10.0
# What a chest CT's geometry can be. A series outside these limits is not measured, with the reason,
# before anything is allocated for it: pixel spacing (mm), slice spacing (mm), width or height of an
# image (mm), length of the stack (mm), voxels.
pixel_spacing_range_mm = [0.1, 10.0]
max_slice_spacing_mm = 20.0
max_field_of_view_mm = 1000.0
max_length_mm = 2500.0
max_voxels = 1000000000
# Series whose description contains one of these words (case-insensitive) are skipped.
exclude_descriptions = ["scout", "localizer", "topogram", "surview", "dose"]

[inference]
models_dir = "models"
# Execution providers in order of preference; the first that works is used and reported.
execution_providers = ["cuda", "cpu"]
# Path to libonnxruntime.so. Unset: ORT_DYLIB_PATH, then the onnxruntime Python package.
# onnxruntime_library = "/opt/onnxruntime/lib/libonnxruntime.so"

[output]
# Secondary capture series with the opacities drawn on the CT, for viewers without SEG support.
overlay_series = true
# "enhanced" (Enhanced SR) or "comprehensive3d" (Comprehensive 3D SR).
sr_kind = "enhanced"
# The report's content tree (XML). Unset: the shipped templates/tid1500.xml, built in. A copy can
# change codes, wording or which measurements appear; it is checked at start-up.
# sr_template = "/etc/pulmo/tid1500.xml"

[http]
# /healthz and /metrics. Loopback by default.
bind = "127.0.0.1"
port = 8089
"#;

impl Config {
    /// Load and validate a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_toml(&text, path)
    }

    pub fn from_toml(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_path_buf(),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_ae_title("node.ae_title", &self.node.ae_title)?;
        validate_host("node.bind", &self.node.bind)?;
        validate_port("node.port", self.node.port)?;
        for (i, ae) in self.node.allowed_calling_aes.iter().enumerate() {
            validate_ae_title(&format!("node.allowed_calling_aes[{i}]"), ae)?;
        }
        for (i, uid) in self.node.extra_sop_classes.iter().enumerate() {
            if !crate::iod::uid::is_valid(uid) {
                return Err(invalid(
                    format!("node.extra_sop_classes[{i}]"),
                    format!("{uid:?} is not a valid UID"),
                ));
            }
        }
        if self.node.max_associations == 0 {
            return Err(invalid("node.max_associations", "must be at least 1"));
        }
        if !(4096..=16_777_216).contains(&self.node.max_pdu_length) {
            return Err(invalid(
                "node.max_pdu_length",
                format!("{} is outside 4096..=16777216", self.node.max_pdu_length),
            ));
        }
        if self.node.max_associations_per_peer == 0 {
            return Err(invalid(
                "node.max_associations_per_peer",
                "must be at least 1",
            ));
        }
        if self.node.max_instance_mib == 0 {
            return Err(invalid("node.max_instance_mib", "must be at least 1"));
        }
        if self.node.artim_timeout_s == 0 {
            return Err(invalid("node.artim_timeout_s", "must be at least 1 second"));
        }
        if self.node.dimse_timeout_s == 0 {
            return Err(invalid("node.dimse_timeout_s", "must be at least 1 second"));
        }
        validate_path("storage.data_dir", &self.storage.data_dir)?;
        if !(1..=1024).contains(&self.storage.journal_segment_mib) {
            return Err(invalid(
                "storage.journal_segment_mib",
                "must be between 1 and 1024",
            ));
        }
        if self.storage.journal_segments > 256 {
            return Err(invalid("storage.journal_segments", "must be at most 256"));
        }
        if !(1..=64).contains(&self.jobs.workers) {
            return Err(invalid("jobs.workers", "must be between 1 and 64"));
        }
        let d = &self.delivery;
        if d.max_attempts == 0 {
            return Err(invalid("delivery.max_attempts", "must be at least 1"));
        }
        if d.initial_backoff_s == 0 || d.max_backoff_s < d.initial_backoff_s {
            return Err(invalid(
                "delivery.max_backoff_s",
                "must be at least delivery.initial_backoff_s, which must be at least 1",
            ));
        }
        if d.timeout_s == 0 {
            return Err(invalid("delivery.timeout_s", "must be at least 1 second"));
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, d) in self.destinations.iter().enumerate() {
            let field = format!("destinations[{i}]");
            if d.name.trim().is_empty() {
                return Err(invalid(format!("{field}.name"), "must not be empty"));
            }
            if !names.insert(d.name.clone()) {
                return Err(invalid(
                    format!("{field}.name"),
                    format!("\"{}\" is used by another destination", d.name),
                ));
            }
            validate_ae_title(&format!("{field}.ae_title"), &d.ae_title)?;
            validate_host(&format!("{field}.host"), &d.host)?;
            validate_port(&format!("{field}.port"), d.port)?;
        }
        let s = &self.selection;
        if s.min_slices < 2 {
            return Err(invalid("selection.min_slices", "must be at least 2"));
        }
        if !(s.max_slice_thickness_mm > 0.0 && s.max_slice_thickness_mm <= 20.0) {
            return Err(invalid(
                "selection.max_slice_thickness_mm",
                "must be in (0, 20] mm",
            ));
        }
        if !(s.spacing_tolerance > 0.0 && s.spacing_tolerance < 0.5) {
            return Err(invalid(
                "selection.spacing_tolerance",
                "must be in (0, 0.5)",
            ));
        }
        let [lo, hi] = s.pixel_spacing_range_mm;
        if !(lo > 0.0 && lo < hi && hi.is_finite()) {
            return Err(invalid(
                "selection.pixel_spacing_range_mm",
                "must be [low, high] with 0 < low < high",
            ));
        }
        for (name, v) in [
            ("selection.max_slice_spacing_mm", s.max_slice_spacing_mm),
            ("selection.max_field_of_view_mm", s.max_field_of_view_mm),
            ("selection.max_length_mm", s.max_length_mm),
        ] {
            if !(v > 0.0 && v.is_finite()) {
                return Err(invalid(name, "must be a positive number"));
            }
        }
        if s.max_voxels == 0 {
            return Err(invalid("selection.max_voxels", "must be at least 1"));
        }
        if !(s.max_axial_tilt_deg >= 0.0 && s.max_axial_tilt_deg < 45.0) {
            return Err(invalid(
                "selection.max_axial_tilt_deg",
                "must be in [0, 45)",
            ));
        }
        validate_path("inference.models_dir", &self.inference.models_dir)?;
        if self.inference.execution_providers.is_empty() {
            return Err(invalid(
                "inference.execution_providers",
                "list at least one provider (\"cpu\")",
            ));
        }
        for (i, ep) in self.inference.execution_providers.iter().enumerate() {
            if !matches!(ep.as_str(), "cuda" | "tensorrt" | "cpu") {
                return Err(invalid(
                    format!("inference.execution_providers[{i}]"),
                    format!("unknown provider \"{ep}\" (known: cuda, tensorrt, cpu)"),
                ));
            }
        }
        if let Some(lib) = &self.inference.onnxruntime_library {
            validate_path("inference.onnxruntime_library", lib)?;
        }
        if !matches!(self.output.sr_kind.as_str(), "enhanced" | "comprehensive3d") {
            return Err(invalid(
                "output.sr_kind",
                format!(
                    "\"{}\" is not one of \"enhanced\", \"comprehensive3d\"",
                    self.output.sr_kind
                ),
            ));
        }
        if let Some(t) = &self.output.sr_template {
            validate_path("output.sr_template", t)?;
        }
        validate_host("http.bind", &self.http.bind)?;
        validate_port("http.port", self.http.port)?;
        Ok(())
    }
}

/// PS3.5 AE title: 1-16 characters of the default repertoire, no backslash, no control
/// characters, not only spaces.
pub fn validate_ae_title(field: &str, ae: &str) -> Result<(), ConfigError> {
    if ae.trim().is_empty() {
        return Err(invalid(field, "AE title must not be empty"));
    }
    if ae.len() > 16 {
        return Err(invalid(
            field,
            format!("AE title \"{ae}\" is longer than 16 characters"),
        ));
    }
    if let Some(c) = ae
        .chars()
        .find(|c| !c.is_ascii() || c.is_ascii_control() || *c == '\\')
    {
        return Err(invalid(
            field,
            format!("AE title \"{ae}\" contains the character {c:?}, which DICOM forbids"),
        ));
    }
    Ok(())
}

fn validate_port(field: &str, port: u16) -> Result<(), ConfigError> {
    if port == 0 {
        return Err(invalid(field, "port must be between 1 and 65535"));
    }
    Ok(())
}

fn validate_host(field: &str, host: &str) -> Result<(), ConfigError> {
    let ok = !host.is_empty()
        && host.len() <= 253
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_'));
    if !ok {
        return Err(invalid(
            field,
            format!("\"{host}\" is not a host name or IP address"),
        ));
    }
    Ok(())
}

fn validate_path(field: &str, path: &Path) -> Result<(), ConfigError> {
    let s = path.as_os_str();
    if s.is_empty() {
        return Err(invalid(field, "path must not be empty"));
    }
    if path.to_string_lossy().contains('\0') {
        return Err(invalid(field, "path contains a NUL byte"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, Path::new("test.toml"))
    }

    #[test]
    fn default_toml_is_the_default_config() {
        let parsed = parse(DEFAULT_TOML).expect("default TOML parses");
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn empty_file_gives_defaults() {
        assert_eq!(parse("").expect("empty parses"), Config::default());
    }

    #[test]
    fn bad_values_name_their_field() {
        let cases = [
            (
                "[node]\nae_title = \"THIS_IS_TOO_LONG_AE\"",
                "node.ae_title",
            ),
            ("[node]\nae_title = \"A\\\\B\"", "node.ae_title"),
            ("[node]\nport = 0", "node.port"),
            ("[node]\nbind = \"not a host\"", "node.bind"),
            ("[node]\nmax_pdu_length = 10", "node.max_pdu_length"),
            ("[node]\nmax_instance_mib = 0", "node.max_instance_mib"),
            (
                "[node]\nmax_associations_per_peer = 0",
                "node.max_associations_per_peer",
            ),
            (
                "[selection]\npixel_spacing_range_mm = [2.0, 1.0]",
                "selection.pixel_spacing_range_mm",
            ),
            ("[selection]\nmax_length_mm = -1", "selection.max_length_mm"),
            ("[selection]\nmax_voxels = 0", "selection.max_voxels"),
            ("[storage]\ndata_dir = \"\"", "storage.data_dir"),
            (
                "[[destinations]]\nname=\"p\"\nae_title=\"\"\nhost=\"h\"\nport=1",
                "destinations[0].ae_title",
            ),
            (
                "[inference]\nexecution_providers = [\"tpu\"]",
                "inference.execution_providers[0]",
            ),
            ("[output]\nsr_kind = \"basic\"", "output.sr_kind"),
            ("[jobs]\nworkers = 0", "jobs.workers"),
            (
                "[node]\nextra_sop_classes = [\"1.2.x\"]",
                "node.extra_sop_classes[0]",
            ),
            ("[delivery]\nmax_attempts = 0", "delivery.max_attempts"),
            (
                "[delivery]\ninitial_backoff_s = 10\nmax_backoff_s = 5",
                "delivery.max_backoff_s",
            ),
        ];
        for (text, field) in cases {
            let err = parse(text).expect_err(text).to_string();
            assert!(
                err.contains(field),
                "{text:?} gave {err:?}, not naming {field}"
            );
        }
    }

    #[test]
    fn unknown_field_is_refused() {
        let err = parse("[node]\naetitle = \"X\"").expect_err("unknown field");
        assert!(err.to_string().contains("aetitle"), "{err}");
    }

    #[test]
    fn port_out_of_range_is_refused() {
        let err = parse("[node]\nport = 70000").expect_err("port");
        assert!(err.to_string().contains("port"), "{err}");
    }
}
