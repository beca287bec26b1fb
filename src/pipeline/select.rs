//! Series selection (DESIGN.md): the axial CT series that covers the lungs with the thinnest
//! regular slices. Every series not chosen gets a reason in words; a series that cannot be
//! measured honestly (irregular spacing, missing or duplicate slices, mixed orientations, too few
//! slices) is never chosen.

use std::collections::BTreeMap;

use dicom_dictionary_std::uids;
use serde::Serialize;
use thiserror::Error;

use super::scan::Frame;
use crate::config::SelectionConfig;
use crate::volume::{Geometry, cross, dot, norm};

/// A series that passed every check, frames sorted along the slice normal.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub series_uid: String,
    pub series_number: Option<i32>,
    pub description: String,
    /// One entry per slice of the volume; `None` where a single slice is missing between two
    /// present ones and is filled from its neighbours (`SelectionConfig::max_filled_slices`).
    pub frames: Vec<Option<Frame>>,
    pub geometry: Geometry,
    pub slice_thickness: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    pub series_uid: String,
    pub series_number: Option<i32>,
    pub description: String,
    pub images: usize,
    pub reason: String,
}

#[derive(Debug, Clone)]
pub struct Selection {
    pub study_uid: String,
    pub chosen: Candidate,
    pub skipped: Vec<Skipped>,
}

#[derive(Debug, Error)]
pub enum SelectError {
    #[error("no DICOM images were found")]
    NoImages,
    /// Files were there, none readable as an image: say which and why, never "no images".
    #[error(
        "no DICOM image could be read: {files} file(s) could not be read, {first} first: {reason}"
    )]
    Unreadable {
        files: usize,
        first: String,
        reason: String,
    },
    #[error("no series of study {study_uid} can be measured: {}", summary(.skipped))]
    NoSuitableSeries {
        study_uid: String,
        skipped: Vec<Skipped>,
    },
}

fn summary(skipped: &[Skipped]) -> String {
    skipped
        .iter()
        .map(|s| {
            format!(
                "series {} \"{}\": {}",
                s.series_number.map_or("?".into(), |n| n.to_string()),
                s.description,
                s.reason
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Group frames by study, in a stable order.
pub fn by_study(frames: Vec<Frame>) -> BTreeMap<String, Vec<Frame>> {
    let mut out: BTreeMap<String, Vec<Frame>> = BTreeMap::new();
    for f in frames {
        out.entry(f.study_uid.clone()).or_default().push(f);
    }
    out
}

impl Candidate {
    /// How many slices are filled from their neighbours.
    pub fn filled(&self) -> usize {
        self.frames.iter().filter(|f| f.is_none()).count()
    }

    /// The frames read from files, in slice order.
    pub fn present(&self) -> impl Iterator<Item = &Frame> {
        self.frames.iter().flatten()
    }
}

/// Check one series; `Err` is the reason it cannot be measured.
pub fn evaluate(frames: Vec<Frame>, cfg: &SelectionConfig) -> Result<Candidate, String> {
    let Some(f0) = frames.first().cloned() else {
        return Err("the series holds no images".into());
    };
    // Modality is type 1, but some archives drop it; a CT SOP class says the same thing.
    let ct_class = [uids::CT_IMAGE_STORAGE, uids::ENHANCED_CT_IMAGE_STORAGE]
        .contains(&f0.sop_class_uid.as_str());
    if f0.modality.is_empty() && !ct_class {
        return Err("Modality is missing and the SOP class is not CT".into());
    }
    if !f0.modality.is_empty() && f0.modality != "CT" {
        return Err(format!("modality is {}, not CT", f0.modality));
    }
    if f0.image_type.iter().any(|t| t == "LOCALIZER") {
        return Err("image type LOCALIZER: a scout, not a volume".into());
    }
    let desc = f0.series_description.to_lowercase();
    if let Some(word) = cfg
        .exclude_descriptions
        .iter()
        .find(|w| !w.is_empty() && desc.contains(&w.to_lowercase()))
    {
        return Err(format!(
            "description \"{}\" contains the excluded word \"{word}\"",
            f0.series_description
        ));
    }
    let n = frames.len();
    if n < cfg.min_slices.max(2) {
        return Err(format!(
            "{n} slice{}: at least {} are needed to measure a volume",
            if n == 1 { "" } else { "s" },
            cfg.min_slices
        ));
    }
    if f0.rows == 0 || f0.columns == 0 {
        return Err("Rows or Columns is missing or zero".into());
    }
    if let Some(f) = frames
        .iter()
        .find(|f| (f.rows, f.columns) != (f0.rows, f0.columns))
    {
        return Err(format!(
            "image sizes differ: {}×{} and {}×{} (instance {})",
            f0.columns, f0.rows, f.columns, f.rows, f.sop_instance_uid
        ));
    }
    let Some(ori) = f0.orientation else {
        return Err(format!(
            "instance {} has no ImageOrientationPatient",
            f0.sop_instance_uid
        ));
    };
    for f in &frames {
        match f.orientation {
            None => {
                return Err(format!(
                    "instance {} has no ImageOrientationPatient",
                    f.sop_instance_uid
                ));
            }
            Some(o) if o.iter().zip(&ori).any(|(a, b)| (a - b).abs() > 1e-3) => {
                return Err(format!(
                    "mixed orientations: instance {} is oriented differently from instance {}",
                    f.sop_instance_uid, f0.sop_instance_uid
                ));
            }
            _ => {}
        }
    }
    let row = [ori[0], ori[1], ori[2]];
    let col = [ori[3], ori[4], ori[5]];
    if (norm(row) - 1.0).abs() > 0.01
        || (norm(col) - 1.0).abs() > 0.01
        || dot(row, col).abs() > 0.01
    {
        return Err(format!(
            "ImageOrientationPatient {ori:?} is not two orthogonal unit vectors"
        ));
    }
    let normal = cross(row, col);
    let tilt = normal[2].abs().clamp(0.0, 1.0).acos().to_degrees();
    if tilt > cfg.max_axial_tilt_deg {
        return Err(format!(
            "not axial: the slice normal is {tilt:.0}° from the feet-head axis (limit {}°)",
            cfg.max_axial_tilt_deg
        ));
    }
    let Some(ps) = f0.pixel_spacing else {
        return Err(format!(
            "instance {} has no PixelSpacing",
            f0.sop_instance_uid
        ));
    };
    let [lo, hi] = cfg.pixel_spacing_range_mm;
    if !(ps.iter().all(|&p| p >= lo && p <= hi)) {
        return Err(format!(
            "PixelSpacing {ps:?} mm is outside what a chest CT can have ({lo} to {hi} mm)"
        ));
    }
    let fov = (f64::from(f0.rows) * ps[0]).max(f64::from(f0.columns) * ps[1]);
    if fov > cfg.max_field_of_view_mm {
        return Err(format!(
            "the images are {fov:.0} mm across, beyond the {} mm a chest CT can be",
            cfg.max_field_of_view_mm
        ));
    }
    let voxels = u64::from(f0.rows) * u64::from(f0.columns) * n as u64;
    if voxels > cfg.max_voxels {
        return Err(format!(
            "{voxels} voxels, more than the {} limit",
            cfg.max_voxels
        ));
    }
    if let Some(f) = frames.iter().find(|f| {
        f.pixel_spacing
            .is_none_or(|p| (p[0] - ps[0]).abs() > 1e-4 || (p[1] - ps[1]).abs() > 1e-4)
    }) {
        return Err(format!(
            "pixel spacing differs or is missing in instance {}",
            f.sop_instance_uid
        ));
    }
    let mut placed: Vec<(f64, Frame)> = Vec::with_capacity(n);
    for f in frames {
        let Some(p) = f.position else {
            return Err(format!(
                "instance {} has no ImagePositionPatient",
                f.sop_instance_uid
            ));
        };
        placed.push((dot(p, normal), f));
    }
    placed.sort_by(|a, b| a.0.total_cmp(&b.0));
    let gaps: Vec<f64> = placed.windows(2).map(|w| w[1].0 - w[0].0).collect();
    if let Some(i) = gaps.iter().position(|&g| g.abs() < 0.01) {
        return Err(format!(
            "duplicate slice position: instances {} and {} are both at {:.2} mm",
            placed[i].1.sop_instance_uid,
            placed[i + 1].1.sop_instance_uid,
            placed[i].0
        ));
    }
    let mut sorted_gaps = gaps.clone();
    sorted_gaps.sort_by(f64::total_cmp);
    let spacing = sorted_gaps[sorted_gaps.len() / 2];
    if spacing > cfg.max_slice_spacing_mm {
        return Err(format!(
            "slices {spacing:.1} mm apart, beyond the {} mm limit",
            cfg.max_slice_spacing_mm
        ));
    }
    let length = placed[placed.len() - 1].0 - placed[0].0;
    if length > cfg.max_length_mm {
        return Err(format!(
            "the stack is {length:.0} mm long, beyond the {} mm a chest CT can be",
            cfg.max_length_mm
        ));
    }
    // A gap of exactly two spacings is one slice missing (published series lack single slices);
    // a few such gaps are filled from their neighbours, anything else is refused.
    let tolerance = cfg.spacing_tolerance * spacing;
    let single_missing = |g: f64| (g - 2.0 * spacing).abs() <= tolerance;
    let missing = gaps.iter().filter(|&&g| single_missing(g)).count();
    let fillable = missing <= cfg.max_filled_slices;
    if let Some(i) = gaps
        .iter()
        .position(|&g| (g - spacing).abs() > tolerance && !(fillable && single_missing(g)))
    {
        let hint = if single_missing(gaps[i]) {
            format!(
                " (a missing slice: {missing} in this series, more than the {} pulmo fills)",
                cfg.max_filled_slices
            )
        } else if gaps[i] > 1.5 * spacing {
            " (missing slices?)".into()
        } else {
            String::new()
        };
        return Err(format!(
            "irregular slice spacing: {:.2} mm between the slices at {:.2} and {:.2} mm, where the \
             median spacing is {:.2} mm{hint}",
            gaps[i],
            placed[i].0,
            placed[i + 1].0,
            spacing
        ));
    }
    // Slices must be stacked: every origin on the line through the first one along the normal.
    let p0 = placed[0].1.position.unwrap_or_default();
    for (_, f) in &placed {
        let p = f.position.unwrap_or_default();
        let d = [p[0] - p0[0], p[1] - p0[1], p[2] - p0[2]];
        let off = dot(d, row).abs().max(dot(d, col).abs());
        if off > 0.5 * ps[0].min(ps[1]) {
            return Err(format!(
                "slices are not stacked: instance {} is shifted {off:.2} mm in-plane",
                f.sop_instance_uid
            ));
        }
    }
    let thickness = f0.slice_thickness.filter(|t| *t > 0.0).unwrap_or(spacing);
    if thickness > cfg.max_slice_thickness_mm {
        return Err(format!(
            "slices of {thickness} mm are thicker than the {} mm limit",
            cfg.max_slice_thickness_mm
        ));
    }
    let mut slots: Vec<Option<Frame>> = Vec::with_capacity(placed.len() + missing);
    for (k, (_, f)) in placed.into_iter().enumerate() {
        if k > 0 && single_missing(gaps[k - 1]) {
            slots.push(None);
        }
        slots.push(Some(f));
    }
    let geometry = Geometry {
        rows: usize::from(f0.rows),
        columns: usize::from(f0.columns),
        slices: slots.len(),
        origin: p0,
        row_direction: row,
        column_direction: col,
        slice_direction: normal,
        spacing: [ps[1], ps[0], spacing],
    };
    Ok(Candidate {
        series_uid: f0.series_uid.clone(),
        series_number: f0.series_number,
        description: f0.series_description.clone(),
        frames: slots,
        geometry,
        slice_thickness: thickness,
    })
}

/// Choose the series to measure among the frames of one study.
pub fn select(frames: Vec<Frame>, cfg: &SelectionConfig) -> Result<Selection, SelectError> {
    let Some(study_uid) = frames.first().map(|f| f.study_uid.clone()) else {
        return Err(SelectError::NoImages);
    };
    let mut series: BTreeMap<String, Vec<Frame>> = BTreeMap::new();
    for f in frames {
        series.entry(f.series_uid.clone()).or_default().push(f);
    }
    let mut skipped = Vec::new();
    let mut candidates = Vec::new();
    for (uid, frames) in series {
        let info = (
            frames[0].series_number,
            frames[0].series_description.clone(),
            frames.len(),
        );
        match evaluate(frames, cfg) {
            Ok(c) => candidates.push(c),
            Err(reason) => skipped.push(Skipped {
                series_uid: uid,
                series_number: info.0,
                description: info.1,
                images: info.2,
                reason,
            }),
        }
    }
    // Thinnest spacing first, then thinner reconstruction, then more slices.
    candidates.sort_by(|a, b| {
        a.geometry.spacing[2]
            .total_cmp(&b.geometry.spacing[2])
            .then(a.slice_thickness.total_cmp(&b.slice_thickness))
            .then(a.filled().cmp(&b.filled()))
            .then(b.frames.len().cmp(&a.frames.len()))
            .then(a.series_uid.cmp(&b.series_uid))
    });
    let mut iter = candidates.into_iter();
    let Some(chosen) = iter.next() else {
        return Err(SelectError::NoSuitableSeries { study_uid, skipped });
    };
    for c in iter {
        let images = c.frames.len() - c.filled();
        let reason = if c.geometry.spacing[2] > chosen.geometry.spacing[2] + 1e-6 {
            format!(
                "thicker slices ({} mm apart) than the selected series ({} mm)",
                round2(c.geometry.spacing[2]),
                round2(chosen.geometry.spacing[2])
            )
        } else {
            "usable, but the selected series has as thin or thinner slices and at least as many"
                .into()
        };
        skipped.push(Skipped {
            series_uid: c.series_uid,
            series_number: c.series_number,
            description: c.description,
            images,
            reason,
        });
    }
    for s in &skipped {
        tracing::info!(series = %s.series_uid, reason = %s.reason, "series skipped");
    }
    Ok(Selection {
        study_uid,
        chosen,
        skipped,
    })
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An axial series of `n` slices `gap` mm apart, `size` pixels square of `pixel` mm.
    fn series(n: usize, size: u16, pixel: f64, gap: f64) -> Vec<Frame> {
        (0..n)
            .map(|i| Frame {
                path: format!("{i}.dcm").into(),
                frame: 0,
                sop_class_uid: uids::CT_IMAGE_STORAGE.into(),
                sop_instance_uid: format!("1.2.3.{i}"),
                study_uid: "1.2.3".into(),
                series_uid: "1.2.3.4".into(),
                modality: "CT".into(),
                image_type: vec!["ORIGINAL".into(), "PRIMARY".into(), "AXIAL".into()],
                series_description: "LUNG".into(),
                series_number: Some(2),
                rows: size,
                columns: size,
                position: Some([0.0, 0.0, i as f64 * gap]),
                orientation: Some([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]),
                pixel_spacing: Some([pixel, pixel]),
                slice_thickness: Some(gap.min(5.0)),
                kernel: String::new(),
                contrast_agent: String::new(),
                transfer_syntax: uids::EXPLICIT_VR_LITTLE_ENDIAN.into(),
            })
            .collect()
    }

    #[test]
    fn geometry_no_chest_ct_has_is_refused_before_anything_is_allocated() {
        let cfg = SelectionConfig::default();
        assert!(evaluate(series(100, 512, 0.7, 2.0), &cfg).is_ok());
        let refused = |frames, why: &str| {
            let e = evaluate(frames, &cfg).expect_err(why);
            assert!(e.contains(why), "{e}");
        };
        refused(
            series(100, 512, 1e6, 2.0),
            "outside what a chest CT can have",
        );
        refused(
            series(100, 512, 0.01, 2.0),
            "outside what a chest CT can have",
        );
        refused(series(30, 128, 2.7, 1e5), "beyond the 20 mm limit");
        refused(series(100, 2048, 0.7, 2.0), "across, beyond the 1000 mm");
        refused(series(1300, 512, 0.7, 2.0), "long, beyond the 2500 mm");
        let small = SelectionConfig {
            max_voxels: 1000,
            ..SelectionConfig::default()
        };
        let e = evaluate(series(30, 64, 1.0, 2.0), &small).expect_err("voxels");
        assert!(e.contains("more than the 1000 limit"), "{e}");
    }
}
