//! Reading DICOM headers from a folder: every file is opened up to its pixel data, and each image
//! (or each frame of an Enhanced CT) becomes a `Frame` with the attributes that series selection
//! and volume assembly need. Files that are not readable DICOM are listed with the reason.

use std::path::{Path, PathBuf};

use dicom_core::Tag;
use dicom_dictionary_std::{tags, uids};
use dicom_object::{DefaultDicomObject, InMemDicomObject, OpenFileOptions};
use walkdir::WalkDir;

/// One image plane: a single-frame instance, or one frame of a multi-frame instance.
#[derive(Debug, Clone)]
pub struct Frame {
    pub path: PathBuf,
    /// 0-based frame number within the file.
    pub frame: u32,
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub study_uid: String,
    pub series_uid: String,
    pub modality: String,
    pub image_type: Vec<String>,
    pub series_description: String,
    pub series_number: Option<i32>,
    pub rows: u16,
    pub columns: u16,
    pub position: Option<[f64; 3]>,
    pub orientation: Option<[f64; 6]>,
    /// Row spacing, column spacing (PixelSpacing order).
    pub pixel_spacing: Option<[f64; 2]>,
    pub slice_thickness: Option<f64>,
    pub kernel: String,
    /// The contrast agent the header names (ContrastBolusAgent, or the first item of the Enhanced
    /// CT's Contrast/Bolus Agent Sequence); empty when none is named.
    pub contrast_agent: String,
    pub transfer_syntax: String,
}

#[derive(Debug, Clone)]
pub struct Rejected {
    pub path: PathBuf,
    pub reason: String,
    /// The file starts as a DICOM file does (the "DICM" prefix): a broken image, perhaps a slice,
    /// not a stray text or XML file.
    pub dicom: bool,
}

/// Whether `path` has the Part 10 preamble's "DICM" prefix.
fn starts_as_dicom(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 132];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|()| &head[128..] == b"DICM")
}

#[derive(Debug, Default)]
pub struct Scan {
    pub frames: Vec<Frame>,
    pub rejected: Vec<Rejected>,
}

fn text(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    obj.element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim_end_matches(['\0', ' ']).trim().to_string())
        .filter(|s| !s.is_empty())
}

fn floats<const N: usize>(obj: &InMemDicomObject, tag: Tag) -> Option<[f64; N]> {
    let v = obj
        .element_opt(tag)
        .ok()
        .flatten()?
        .to_multi_float64()
        .ok()?;
    if v.len() != N || v.iter().any(|x| !x.is_finite()) {
        return None;
    }
    let mut out = [0.0; N];
    out.copy_from_slice(&v);
    Some(out)
}

fn first_item(obj: &InMemDicomObject, tag: Tag) -> Option<&InMemDicomObject> {
    obj.element_opt(tag).ok().flatten()?.items()?.first()
}

/// Read the header of one file; `Err` says why it cannot be used.
pub fn read_header(path: &Path) -> Result<Vec<Frame>, String> {
    use crate::dataset::Malformed;
    crate::dataset::check_file(path, crate::dataset::MAX_FILE_BYTES).map_err(|e| match e {
        Malformed::NotPart10(_) | Malformed::Io(_) => format!("not a readable DICOM file: {e}"),
        _ => format!("malformed DICOM file: {e}"),
    })?;
    let obj: DefaultDicomObject = OpenFileOptions::new()
        .read_until(tags::PIXEL_DATA)
        .open_file(path)
        .map_err(|e| format!("not a readable DICOM file: {e}"))?;
    let ts = obj
        .meta()
        .transfer_syntax()
        .trim_end_matches('\0')
        .to_string();
    let req = |tag: Tag, name: &str| text(&obj, tag).ok_or_else(|| format!("{name} is missing"));
    let sop_class_uid = req(tags::SOP_CLASS_UID, "SOPClassUID")?;
    let sop_instance_uid = req(tags::SOP_INSTANCE_UID, "SOPInstanceUID")?;
    let study_uid = req(tags::STUDY_INSTANCE_UID, "StudyInstanceUID")?;
    let series_uid = req(tags::SERIES_INSTANCE_UID, "SeriesInstanceUID")?;
    let rows = obj
        .element_opt(tags::ROWS)
        .ok()
        .flatten()
        .and_then(|e| e.to_int::<u16>().ok())
        .unwrap_or(0);
    let columns = obj
        .element_opt(tags::COLUMNS)
        .ok()
        .flatten()
        .and_then(|e| e.to_int::<u16>().ok())
        .unwrap_or(0);
    let frames = obj
        .element_opt(tags::NUMBER_OF_FRAMES)
        .ok()
        .flatten()
        .and_then(|e| e.to_int::<u32>().ok())
        .unwrap_or(1)
        .max(1);
    let image_type: Vec<String> = text(&obj, tags::IMAGE_TYPE)
        .map(|s| s.split('\\').map(|p| p.trim().to_uppercase()).collect())
        .unwrap_or_default();
    let base = Frame {
        path: path.to_path_buf(),
        frame: 0,
        sop_class_uid: sop_class_uid.clone(),
        sop_instance_uid,
        study_uid,
        series_uid,
        modality: text(&obj, tags::MODALITY).unwrap_or_default(),
        image_type,
        series_description: text(&obj, tags::SERIES_DESCRIPTION).unwrap_or_default(),
        series_number: text(&obj, tags::SERIES_NUMBER).and_then(|s| s.parse().ok()),
        rows,
        columns,
        position: floats(&obj, tags::IMAGE_POSITION_PATIENT),
        orientation: floats(&obj, tags::IMAGE_ORIENTATION_PATIENT),
        pixel_spacing: floats(&obj, tags::PIXEL_SPACING),
        slice_thickness: text(&obj, tags::SLICE_THICKNESS).and_then(|s| s.parse().ok()),
        kernel: text(&obj, tags::CONVOLUTION_KERNEL).unwrap_or_default(),
        contrast_agent: contrast_agent(&obj),
        transfer_syntax: ts,
    };
    if sop_class_uid != uids::ENHANCED_CT_IMAGE_STORAGE {
        return Ok(vec![base]);
    }
    // Enhanced CT: geometry lives in the functional groups, shared or per frame.
    let shared = first_item(&obj, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE);
    let per_frame: Vec<&InMemDicomObject> = obj
        .element_opt(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)
        .ok()
        .flatten()
        .and_then(|e| e.items())
        .map(|items| items.iter().collect())
        .unwrap_or_default();
    if per_frame.len() != frames as usize {
        return Err(format!(
            "Enhanced CT with {frames} frames has {} per-frame functional group items",
            per_frame.len()
        ));
    }
    let group = |pf: &InMemDicomObject, seq: Tag| -> Option<InMemDicomObject> {
        first_item(pf, seq)
            .or_else(|| shared.and_then(|s| first_item(s, seq)))
            .cloned()
    };
    let mut out = Vec::with_capacity(frames as usize);
    for (n, pf) in per_frame.iter().enumerate() {
        let mut f = base.clone();
        f.frame = n as u32;
        let pos = group(pf, tags::PLANE_POSITION_SEQUENCE);
        f.position = pos.and_then(|p| floats(&p, tags::IMAGE_POSITION_PATIENT));
        let ori = group(pf, tags::PLANE_ORIENTATION_SEQUENCE);
        f.orientation = ori.and_then(|o| floats(&o, tags::IMAGE_ORIENTATION_PATIENT));
        if let Some(m) = group(pf, tags::PIXEL_MEASURES_SEQUENCE) {
            f.pixel_spacing = floats(&m, tags::PIXEL_SPACING);
            f.slice_thickness = text(&m, tags::SLICE_THICKNESS).and_then(|s| s.parse().ok());
        }
        out.push(f);
    }
    Ok(out)
}

/// The contrast agent a header names. Scanners write "NONE", "NO" or "-" for none; those count as
/// none, as does an empty value.
fn contrast_agent(obj: &DefaultDicomObject) -> String {
    let named = text(obj, tags::CONTRAST_BOLUS_AGENT).or_else(|| {
        first_item(obj, tags::CONTRAST_BOLUS_AGENT_SEQUENCE).map(|item| {
            text(item, tags::CODE_MEANING)
                .or_else(|| text(item, tags::CODE_VALUE))
                .unwrap_or_else(|| "named in the Contrast/Bolus Agent Sequence".into())
        })
    });
    let none = ["", "NONE", "NO", "N", "NIL", "0", "-"];
    named
        .map(|v| v.trim().to_string())
        .filter(|v| !none.contains(&v.to_uppercase().as_str()))
        .unwrap_or_default()
}

/// Every file under `dir` (recursively), in a stable order.
pub fn files_under(dir: &Path) -> Result<Vec<PathBuf>, std::io::Error> {
    if !dir.exists() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{} does not exist", dir.display()),
        ));
    }
    let mut paths: Vec<PathBuf> = Vec::new();
    for entry in WalkDir::new(dir).follow_links(false) {
        let entry = entry.map_err(std::io::Error::other)?;
        if entry.file_type().is_file() {
            paths.push(entry.into_path());
        }
    }
    paths.sort();
    Ok(paths)
}

/// Read every file under `dir` (recursively), in a stable order.
pub fn scan(dir: &Path) -> Result<Scan, std::io::Error> {
    Ok(scan_files(files_under(dir)?))
}

/// Read the headers of `paths`.
pub fn scan_files(paths: Vec<PathBuf>) -> Scan {
    use rayon::prelude::*;
    let results: Vec<(PathBuf, Result<Vec<Frame>, String>)> = paths
        .into_par_iter()
        .map(|p| {
            let r = read_header(&p);
            (p, r)
        })
        .collect();
    let mut scan = Scan::default();
    for (path, r) in results {
        match r {
            Ok(frames) => scan.frames.extend(frames),
            Err(reason) => {
                tracing::warn!(path = %path.display(), %reason, "file skipped");
                let dicom = starts_as_dicom(&path);
                scan.rejected.push(Rejected {
                    path,
                    reason,
                    dicom,
                });
            }
        }
    }
    scan
}

/// The attributes result objects copy from the source series: patient and study from the first
/// image's header, and every slice's SOP Instance UID (and frame) in slice order.
pub fn source_series(
    frames: &[Option<Frame>],
    geometry: &crate::volume::Geometry,
    slice_thickness: f64,
) -> Result<crate::iod::common::SourceSeries, String> {
    let first = frames
        .iter()
        .flatten()
        .next()
        .ok_or("the series holds no images")?;
    let obj: DefaultDicomObject = OpenFileOptions::new()
        .read_until(tags::PIXEL_DATA)
        .open_file(&first.path)
        .map_err(|e| format!("cannot read {}: {e}", first.path.display()))?;
    let t = |tag: Tag| text(&obj, tag).unwrap_or_default();
    let multi = first.sop_class_uid == uids::ENHANCED_CT_IMAGE_STORAGE;
    Ok(crate::iod::common::SourceSeries {
        specific_character_set: t(tags::SPECIFIC_CHARACTER_SET),
        patient_name: t(tags::PATIENT_NAME),
        patient_id: t(tags::PATIENT_ID),
        patient_birth_date: t(tags::PATIENT_BIRTH_DATE),
        patient_sex: t(tags::PATIENT_SEX),
        study_instance_uid: first.study_uid.clone(),
        study_date: t(tags::STUDY_DATE),
        study_time: t(tags::STUDY_TIME),
        study_id: t(tags::STUDY_ID),
        accession_number: t(tags::ACCESSION_NUMBER),
        referring_physician_name: t(tags::REFERRING_PHYSICIAN_NAME),
        study_description: t(tags::STUDY_DESCRIPTION),
        series_instance_uid: first.series_uid.clone(),
        series_number: first.series_number,
        frame_of_reference_uid: t(tags::FRAME_OF_REFERENCE_UID),
        position_reference_indicator: t(tags::POSITION_REFERENCE_INDICATOR),
        lossy_image_compression: t(tags::LOSSY_IMAGE_COMPRESSION),
        sop_class_uid: first.sop_class_uid.clone(),
        slices: frames
            .iter()
            .map(|f| {
                f.as_ref()
                    .map(|f| (f.sop_instance_uid.clone(), multi.then_some(f.frame)))
            })
            .collect(),
        geometry: Some(geometry.clone()),
        slice_thickness,
    })
}
