//! Benchmark helper: build and write both SEGs of a phantom study from its truth masks.
//! Usage: seg_bench STUDY_DIR OUT_DIR (STUDY_DIR as `pulmo phantom` writes it). Prints the seconds
//! spent building and writing the SEGs (reading the study and the masks is not timed).

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context;
use pulmo::config::SelectionConfig;
use pulmo::infer::ModelInfo;
use pulmo::infer::model::Role;
use pulmo::pipeline::{analyze, read_study, scan};

fn labels(path: &Path) -> anyhow::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path)?).read_to_end(&mut bytes)?;
    Ok(bytes.split_off(352))
}

fn main() -> anyhow::Result<()> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [study_dir, out] = args.as_slice() else {
        anyhow::bail!("usage: seg_bench STUDY_DIR OUT_DIR");
    };
    let study = read_study(&study_dir.join("dicom"), &SelectionConfig::default())?;
    let c = &study.selection.chosen;
    let source = scan::source_series(&c.frames, &study.volume.geometry, c.slice_thickness)
        .map_err(anyhow::Error::msg)?;
    let lobes = labels(&study_dir.join("truth/lobes.nii.gz")).context("lobes")?;
    let opacities = labels(&study_dir.join("truth/opacities.nii.gz")).context("opacities")?;
    let models: Vec<ModelInfo> = [Role::Lobes, Role::Opacities]
        .into_iter()
        .map(|role| ModelInfo {
            role,
            name: "truth".into(),
            version: "1".into(),
            sha256: "0".repeat(64),
            execution_provider: "none".into(),
        })
        .collect();
    std::fs::create_dir_all(out)?;
    if std::env::var_os("SEG_BENCH_SPLIT").is_some() {
        use pulmo::iod::seg;
        for (labels, segs) in [
            (&lobes, seg::lobe_segments()),
            (&opacities, seg::opacity_segments()),
        ] {
            let meta = seg::SegMeta {
                series_uid: "1.2.3".into(),
                sop_instance_uid: "1.2.3.4".into(),
                series_number: 1,
                series_description: "x".into(),
                content_label: "X".into(),
                content_description: "x".into(),
                algorithm_name: "x".into(),
                algorithm_version: "1".into(),
            };
            let g = study.volume.geometry.clone();
            let plane = g.rows * g.columns;
            let t0 = std::time::Instant::now();
            let frames = seg::frames_of(labels, plane, &vec![true; g.slices], &segs);
            let t1 = t0.elapsed().as_secs_f64();
            let bits = seg::pack_frames(labels, plane, &frames);
            eprintln!(
                "frames_of {t1:.3} s, pack {:.3} s ({} frames, {} bytes)",
                t0.elapsed().as_secs_f64() - t1,
                frames.len(),
                bits.len()
            );
            let t = std::time::Instant::now();
            let obj = seg::build(&source, labels, &segs, &meta)?;
            let built = t.elapsed().as_secs_f64();
            seg::write(obj, &meta, &out.join("split.dcm"))?;
            eprintln!(
                "build {built:.3} s, write {:.3} s",
                t.elapsed().as_secs_f64() - built
            );
        }
    }
    let t = std::time::Instant::now();
    analyze::write_segs_for(out, &source, &lobes, &opacities, &models)?;
    println!("{:.3}", t.elapsed().as_secs_f64());
    Ok(())
}
