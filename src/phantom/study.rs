//! Writing a generated phantom as a DICOM study with its ground truth and previews:
//!
//! ```text
//! DIR/dicom/          the CT series (SE02 thin lung series; with extra series SE01 scout, SE03 5 mm)
//! DIR/truth/          lobes.nii.gz, opacities.nii.gz, truth.json
//! DIR/preview/        lung-window PNGs with and without overlays
//! ```

use std::path::{Path, PathBuf};

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::Serialize;
use thiserror::Error;

use super::{Pattern, Phantom};
use crate::iod::ct::{self, Equipment, Patient, Series, Slice};
use crate::iod::transfer_syntax::{Syntax, WriteError, write_file};
use crate::iod::uid;
use crate::nifti;
use crate::quant::{self, Measurements};
use crate::volume::Geometry;

#[derive(Debug, Error)]
pub enum StudyError {
    #[error("cannot create {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Dicom(#[from] WriteError),
    #[error(transparent)]
    Nifti(#[from] nifti::NiftiError),
    #[error("cannot write {path}: {message}")]
    Write { path: PathBuf, message: String },
}

#[derive(Debug, Clone, Copy)]
pub struct StudyOptions {
    pub syntax: Syntax,
    pub extra_series: bool,
    pub shuffle: bool,
}

/// The phantom's ground truth as `truth.json` holds it.
#[derive(Debug, Serialize)]
pub struct Truth {
    pub generator: String,
    pub note: &'static str,
    pub seed: u64,
    pub size: super::Size,
    pub pattern: Pattern,
    /// The COVID-19 severity profile; null for the other patterns.
    pub severity: Option<super::Severity>,
    pub noise_hu: f32,
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    pub transfer_syntax: &'static str,
    pub geometry: Geometry,
    pub lesion_count: usize,
    pub target_plo_percent: f64,
    #[serde(flatten)]
    pub measurements: Measurements,
}

/// What was written, for the command line to report.
#[derive(Debug)]
pub struct Written {
    pub files: usize,
    pub truth: Truth,
    /// Time spent encoding and writing the DICOM files, and the truth and previews.
    pub dicom_seconds: f64,
    pub truth_seconds: f64,
}

fn uid_for(seed: u64, what: &str) -> String {
    uid::from_name(&format!("pulmo-phantom/{seed}/{what}"))
}

fn mkdir(path: &Path) -> Result<(), StudyError> {
    std::fs::create_dir_all(path).map_err(|source| StudyError::Dir {
        path: path.to_path_buf(),
        source,
    })
}

fn base_series(p: &Phantom) -> Series {
    let seed = p.params.seed;
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xD1C0);
    let sex = if rng.random_bool(0.5) { "M" } else { "F" };
    let age: u32 = rng.random_range(28..86);
    let minute: u32 = rng.random_range(0..60);
    Series {
        patient: Patient {
            name: format!("PHANTOM^CHEST^{seed}"),
            id: format!("PULMO-PH-{seed:06}"),
            birth_date: format!("{}0101", 2026 - age),
            sex: sex.into(),
            age: format!("{age:03}Y"),
        },
        study: ct::Study {
            uid: uid_for(seed, "study"),
            date: "20260315".into(),
            time: format!("09{minute:02}00"),
            id: format!("{}", seed % 100_000),
            accession: format!("PH{seed:08}"),
            description: "CT CHEST WITHOUT CONTRAST".into(),
        },
        equipment: Equipment {
            manufacturer: "pulmo".into(),
            model: "pulmo phantom (synthetic CT)".into(),
            serial: "PHANTOM-1".into(),
            software: env!("CARGO_PKG_VERSION").into(),
            institution: "Synthetic data, not a patient".into(),
        },
        uid: uid_for(seed, "series/thin"),
        number: 2,
        description: String::new(),
        frame_of_reference_uid: uid_for(seed, "frame-of-reference"),
        image_kind: "AXIAL".into(),
        kernel: "LUNG".into(),
        slice_thickness: p.volume.geometry.spacing[2],
        window: (-600.0, 1500.0, "LUNG".into()),
        protocol: "CHEST ROUTINE".into(),
    }
}

fn stored(hu: &[i16]) -> Vec<u16> {
    hu.iter()
        .map(|&v| (i32::from(v) - ct::RESCALE_INTERCEPT).clamp(0, 4095) as u16)
        .collect()
}

struct Image {
    series: usize,
    instance: i32,
    position: [f64; 3],
    orientation: [f64; 6],
    spacing: [f64; 2],
    rows: usize,
    columns: usize,
    pixels: Vec<u16>,
}

/// Write the study, its truth and its previews under `out`.
pub fn write(p: &Phantom, out: &Path, opts: StudyOptions) -> Result<Written, StudyError> {
    if !opts.syntax.writable() {
        return Err(WriteError::Unsupported(opts.syntax.name()).into());
    }
    let g = &p.volume.geometry;
    let dicom_dir = out.join("dicom");
    let truth_dir = out.join("truth");
    mkdir(&dicom_dir)?;
    mkdir(&truth_dir)?;

    let thin = {
        let mut s = base_series(p);
        s.description = format!("LUNG {} mm", ct::ds(g.spacing[2]));
        s
    };
    let mut series = vec![thin.clone()];
    let plane = g.rows * g.columns;
    let mut images: Vec<Image> = (0..g.slices)
        .map(|k| Image {
            series: 0,
            // Scanners number head to feet; slice k = 0 is the lowest.
            instance: (g.slices - k) as i32,
            position: g.slice_position(k),
            orientation: g.orientation(),
            spacing: [g.spacing[1], g.spacing[0]],
            rows: g.rows,
            columns: g.columns,
            pixels: stored(p.volume.slice(k)),
        })
        .collect();

    if opts.extra_series {
        // Scout: an anteroposterior projection, as a coronal localizer.
        let mut scout = base_series(p);
        scout.uid = uid_for(p.params.seed, "series/scout");
        scout.number = 1;
        scout.description = "SCOUT".into();
        scout.image_kind = "LOCALIZER".into();
        scout.window = (300.0, 1200.0, "SCOUT".into());
        scout.slice_thickness = g.spacing[0];
        series.push(scout);
        let mut pix = vec![0u16; g.slices * g.columns];
        for (r, k) in (0..g.slices).rev().enumerate() {
            let s = p.volume.slice(k);
            for i in 0..g.columns {
                let sum: f64 = (0..g.rows)
                    .map(|j| f64::from(s[j * g.columns + i]) + 1000.0)
                    .sum();
                pix[r * g.columns + i] = (sum / g.rows as f64 * 3.0).clamp(0.0, 4095.0) as u16;
            }
        }
        let top = g.slice_position(g.slices - 1);
        images.push(Image {
            series: 1,
            instance: 1,
            position: [top[0], 0.0, top[2]],
            orientation: [1.0, 0.0, 0.0, 0.0, 0.0, -1.0],
            spacing: [g.spacing[2], g.spacing[0]],
            rows: g.slices,
            columns: g.columns,
            pixels: pix,
        });

        // Soft-tissue series: thick slices averaged from the thin ones.
        let m = if g.spacing[2] < 2.0 { 5 } else { 2 };
        let mut soft = base_series(p);
        soft.uid = uid_for(p.params.seed, "series/soft");
        soft.number = 3;
        soft.kernel = "STANDARD".into();
        soft.slice_thickness = g.spacing[2] * m as f64;
        soft.description = format!("CHEST {} mm STANDARD", ct::ds(soft.slice_thickness));
        soft.window = (40.0, 400.0, "MEDIASTINUM".into());
        series.push(soft);
        let n_thick = g.slices / m;
        for t in 0..n_thick {
            let mut acc = vec![0i32; plane];
            for k in t * m..(t + 1) * m {
                for (a, &v) in acc.iter_mut().zip(p.volume.slice(k)) {
                    *a += i32::from(v);
                }
            }
            let hu: Vec<i16> = acc
                .iter()
                .map(|&a| (f64::from(a) / m as f64).round() as i16)
                .collect();
            let z_mid = (t * m) as f64 + (m as f64 - 1.0) / 2.0;
            images.push(Image {
                series: 2,
                instance: (n_thick - t) as i32,
                position: g.voxel_position(0.0, 0.0, z_mid),
                orientation: g.orientation(),
                spacing: [g.spacing[1], g.spacing[0]],
                rows: g.rows,
                columns: g.columns,
                pixels: stored(&hu),
            });
        }
    }

    // File names: tidy by series and instance, or random names in random order.
    let mut names: Vec<PathBuf> = images
        .iter()
        .map(|im| {
            dicom_dir
                .join(format!("SE{:02}", series[im.series].number))
                .join(format!("IM{:04}.dcm", im.instance))
        })
        .collect();
    let mut order: Vec<usize> = (0..images.len()).collect();
    if opts.shuffle {
        let mut rng = ChaCha8Rng::seed_from_u64(p.params.seed ^ 0x0540_7F1E);
        for name in &mut names {
            *name = dicom_dir.join(format!("{:016x}.dcm", rng.random::<u64>()));
        }
        order.shuffle(&mut rng);
    } else {
        for s in &series {
            mkdir(&dicom_dir.join(format!("SE{:02}", s.number)))?;
        }
    }
    let t_dicom = std::time::Instant::now();
    order.par_iter().try_for_each(|&n| {
        let im = &images[n];
        let s = &series[im.series];
        let sop = uid_for(
            p.params.seed,
            &format!("instance/{}/{}", s.number, im.instance),
        );
        let slice = Slice {
            sop_instance_uid: sop.clone(),
            instance_number: im.instance,
            position: im.position,
            orientation: im.orientation,
            pixel_spacing: im.spacing,
            rows: im.rows as u16,
            columns: im.columns as u16,
            stored: &im.pixels,
        };
        let obj = ct::instance(s, &slice);
        write_file(
            obj,
            dicom_dictionary_std::uids::CT_IMAGE_STORAGE,
            &sop,
            opts.syntax,
            &names[n],
        )
    })?;

    let dicom_seconds = t_dicom.elapsed().as_secs_f64();
    let t_truth = std::time::Instant::now();
    nifti::write_labels(
        &truth_dir.join("lobes.nii.gz"),
        g,
        &p.lobes,
        "pulmo phantom lobes: 1 RUL 2 RML 3 RLL 4 LUL 5 LLL",
    )?;
    nifti::write_labels(
        &truth_dir.join("opacities.nii.gz"),
        g,
        &p.opacities,
        "pulmo phantom opacities: 1 ground-glass 2 consolidation",
    )?;
    let truth = Truth {
        generator: format!("pulmo phantom {}", env!("CARGO_PKG_VERSION")),
        note: "Synthetic CT generated by pulmo for integration and testing; not a patient, \
               not for clinical use.",
        seed: p.params.seed,
        size: p.params.size,
        pattern: p.params.pattern,
        severity: (p.params.pattern == Pattern::Covid).then_some(p.params.severity),
        noise_hu: p.params.noise_hu,
        study_instance_uid: thin.study.uid.clone(),
        series_instance_uid: thin.uid.clone(),
        transfer_syntax: opts.syntax.uid(),
        geometry: g.clone(),
        lesion_count: p.lesion_count,
        target_plo_percent: p.target_plo,
        measurements: quant::measure(&p.lobes, &p.opacities, g.voxel_volume_ml()),
    };
    let json_path = truth_dir.join("truth.json");
    let json = serde_json::to_string_pretty(&truth).map_err(|e| StudyError::Write {
        path: json_path.clone(),
        message: e.to_string(),
    })?;
    std::fs::write(&json_path, json + "\n").map_err(|e| StudyError::Write {
        path: json_path.clone(),
        message: e.to_string(),
    })?;
    super::preview::write_all(p, &out.join("preview")).map_err(|e| StudyError::Write {
        path: out.join("preview"),
        message: e.to_string(),
    })?;
    Ok(Written {
        files: images.len(),
        truth,
        dicom_seconds,
        truth_seconds: t_truth.elapsed().as_secs_f64(),
    })
}
