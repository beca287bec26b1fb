//! The series reader: a file's header read as `inspect` and `analyze` read it, then a series of
//! that file's frames through selection, and the volume built from it when selection takes it.
//! No panic, and nothing allocated for a geometry selection refuses.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pulmo::config::SelectionConfig;
use pulmo::pipeline::{assemble, scan, select};

fuzz_target!(|data: &[u8]| {
    // pulmo runs the pixel data decoders in `catch_unwind` (dicom-transfer-syntax-registry
    // 0.10.1's RLE decoder indexes past a segment it was not given: a panic pulmo turns into
    // "the pixel data decoder crashed on this file"). libfuzzer-sys's hook aborts on any panic,
    // caught or not; a panic that escapes the target still fails the run.
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        std::panic::set_hook(Box::new(|info| eprintln!("caught by pulmo? {info}")));
    });
    let dir = std::env::temp_dir().join(format!("pulmo-fuzz-series-{}", std::process::id()));
    if std::fs::create_dir_all(&dir).is_err() {
        return;
    }
    let path = dir.join("slice.dcm");
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let Ok(frames) = scan::read_header(&path) else {
        return;
    };
    // The file's frames, and the same frame restacked along its normal: a series of 20 slices.
    let mut series = frames.clone();
    if let Some(f) = frames.first() {
        for i in 1..20 {
            let mut g = f.clone();
            if let Some(p) = g.position.as_mut() {
                p[2] += f64::from(i) * 2.5;
            }
            series.push(g);
        }
    }
    // Smaller than the node's limit, so that a volume the fuzzer lets through stays small.
    let config = SelectionConfig {
        max_voxels: 20_000_000,
        ..SelectionConfig::default()
    };
    if let Ok(candidate) = select::evaluate(series, &config) {
        let _ = assemble::assemble(&candidate);
    }
});
