//! The overlay series: Secondary Capture Image Storage (single frame, RGB), for PACS viewers that
//! show neither SEG nor SR. Image 1 is a summary (the per-lobe table, the COVID-19 probability, the
//! models, failed checks); the others are the CT in a lung window with the lobes and opacities
//! drawn on, about every `OVERLAY_STEP_MM` through the lungs. Every image says, burned in and in
//! its header, that it is derived and unverified.
//!
//! Classic single-frame SC rather than the multi-frame true-colour SC: it is the one every PACS
//! and viewer has displayed for decades, which is the point of this series.

use std::path::{Path, PathBuf};

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::InMemDicomObject;
use thiserror::Error;

use super::common::{
    InstanceHeader, Kind, ResultUids, SourceSeries, item, put_equipment, put_instance_header,
    put_patient_study, put_seq, put_str, put_us, write_part10,
};
use crate::picture::{
    CONSOLIDATION_COLOUR, GROUND_GLASS_COLOUR, LOBE_COLOURS, Picture, render, text_width,
};
use crate::quant::{Lobe, Measurements};
use crate::volume::Volume;

/// Distance between overlay images through the lungs (a reading slab radiologists know).
pub const OVERLAY_STEP_MM: f64 = 5.0;
pub const SERIES_DESCRIPTION: &str = "pulmo overlay (DERIVED, UNVERIFIED, not for clinical use)";
const BANNER: &str = "pulmo: DERIVED, UNVERIFIED - not for clinical use";

#[derive(Debug, Error)]
pub enum ScError {
    #[error("cannot build the overlay series: {0}")]
    Invalid(String),
    #[error("cannot write {path}: {message}")]
    Write { path: String, message: String },
}

/// What the summary image shows besides the measurements.
#[derive(Debug, Clone)]
pub struct Summary<'a> {
    pub measurements: &'a Measurements,
    pub covid_probability: f64,
    /// "name version" of each model.
    pub models: Vec<String>,
    /// Failed quality checks, in words.
    pub failed_checks: Vec<String>,
    pub disclaimer: &'a str,
}

/// The label volumes and CT the overlay draws, on the source grid (`[slice][row][column]`).
pub struct Planes<'a> {
    pub volume: &'a Volume,
    pub lobes: &'a [u8],
    pub opacities: &'a [u8],
}

/// Source slices the overlay shows: every slice with lung, about `OVERLAY_STEP_MM` apart.
pub fn chosen_slices(planes: &Planes<'_>) -> Vec<usize> {
    let g = &planes.volume.geometry;
    let plane = g.rows * g.columns;
    let with_lung: Vec<usize> = (0..g.slices)
        .filter(|&k| {
            planes.lobes[k * plane..(k + 1) * plane]
                .iter()
                .any(|&l| l > 0)
        })
        .collect();
    let step = ((OVERLAY_STEP_MM / g.spacing[2].abs().max(1e-3)).round() as usize).max(1);
    let (Some(&lo), Some(&hi)) = (with_lung.first(), with_lung.last()) else {
        return Vec::new();
    };
    // Centred in the lung range, so the top and bottom images are both inside the lungs.
    let first = lo + (hi - lo) % step / 2;
    (first..=hi).step_by(step).collect()
}

/// Slice images are at least this wide (small grids are enlarged) so that the text fits.
const MIN_WIDTH: usize = 512;
/// The summary image's size: 64 characters a line at twice the font's size.
const SUMMARY_SIZE: usize = 1024;

fn text_scale(width: usize) -> usize {
    (width / 512).max(1)
}

fn slice_picture(planes: &Planes<'_>, k: usize, position_mm: f64) -> Picture {
    let g = &planes.volume.geometry;
    let plane = g.rows * g.columns;
    let pic = render(g.columns, g.rows, true, |x, y| {
        let n = k * plane + y * g.columns + x;
        (planes.volume.hu[n], planes.lobes[n], planes.opacities[n])
    });
    let mut pic = pic.upscale(MIN_WIDTH.div_ceil(g.columns.max(1)).min(4));
    let (width, height) = (pic.width, pic.height);
    let s = text_scale(width);
    let line = 10 * s;
    pic.fill_rect(0, 0, width, line + 2 * s, [0, 0, 0]);
    pic.text(2 * s, s, BANNER, s, [255, 255, 255]);
    let y = height.saturating_sub(line + 2 * s);
    pic.fill_rect(0, y, width, line + 2 * s, [0, 0, 0]);
    let mut x = 2 * s;
    x = pic.text(x, y + s, "GGO", s, GROUND_GLASS_COLOUR);
    x = pic.text(x + 8 * s, y + s, "consolidation", s, CONSOLIDATION_COLOUR);
    let z = format!("z {position_mm:.1} mm");
    let zx = width
        .saturating_sub(text_width(&z, s) + 2 * s)
        .max(x + 8 * s);
    pic.text(zx, y + s, &z, s, [255, 255, 255]);
    pic
}

fn summary_picture(s: &Summary<'_>) -> Picture {
    let (width, height) = (SUMMARY_SIZE, SUMMARY_SIZE);
    let mut pic = Picture::new(width, height);
    let sc = text_scale(width);
    let line = 12 * sc;
    let white = [255, 255, 255];
    let mut y = 2 * sc;
    let per_line = (width.saturating_sub(4 * sc) / (8 * sc)).max(10);
    let put = |pic: &mut Picture, y: &mut usize, text: &str, c: [u8; 3]| {
        pic.text(2 * sc, *y, text, sc, c);
        *y += line;
    };
    put(&mut pic, &mut y, BANNER, white);
    y += line / 2;
    put(
        &mut pic,
        &mut y,
        "Lobe   Vol ml   PLO %  GGO %  Cons %  CTSS",
        white,
    );
    for lobe in Lobe::ALL {
        if let Some(m) = s.measurements.lobes.get(lobe.key()) {
            let row = format!(
                "{:<5}{:>8.0}{:>9.1}{:>7.1}{:>8.1}{:>6}",
                lobe.key(),
                m.volume_ml,
                m.plo_percent,
                m.ggo_percent,
                m.consolidation_percent,
                m.ctss
            );
            put(
                &mut pic,
                &mut y,
                &row,
                LOBE_COLOURS[usize::from(lobe.label()).min(5)],
            );
        }
    }
    let w = &s.measurements.whole_lung;
    let row = format!(
        "{:<5}{:>8.0}{:>9.1}{:>29}",
        "lung", w.volume_ml, w.plo_percent, w.ctss_total
    );
    put(&mut pic, &mut y, &row, white);
    y += line / 2;
    put(
        &mut pic,
        &mut y,
        &format!("COVID-19 pattern probability: {:.2}", s.covid_probability),
        white,
    );
    y += line / 2;
    if s.failed_checks.is_empty() {
        put(&mut pic, &mut y, "Quality checks: all passed", white);
    } else {
        put(&mut pic, &mut y, "NUMBERS NOT RELIABLE:", [255, 80, 80]);
        for f in &s.failed_checks {
            for l in wrap(&format!("- {f}"), per_line) {
                put(&mut pic, &mut y, &l, [255, 80, 80]);
            }
        }
    }
    y += line / 2;
    put(&mut pic, &mut y, "Models:", white);
    for m in &s.models {
        put(&mut pic, &mut y, &format!("  {m}"), white);
    }
    y += line / 2;
    for l in wrap(s.disclaimer, per_line) {
        put(&mut pic, &mut y, &l, [200, 200, 200]);
    }
    pic
}

/// `text` broken at spaces into lines of at most `per_line` characters (a longer word is cut).
fn wrap(text: &str, per_line: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut current = String::new();
    for word in text.split_whitespace() {
        if !current.is_empty() && current.chars().count() + 1 + word.chars().count() > per_line {
            lines.push(std::mem::take(&mut current));
        }
        if !current.is_empty() {
            current.push(' ');
        }
        current.push_str(word);
        while current.chars().count() > per_line {
            let rest: String = current.chars().skip(per_line).collect();
            lines.push(current.chars().take(per_line).collect());
            current = rest;
        }
    }
    if !current.is_empty() {
        lines.push(current);
    }
    lines
}

/// Patient orientation (row direction, column direction) of a plane, as its dominant letters.
fn orientation(dir: [f64; 3]) -> &'static str {
    let (i, v) = dir.iter().enumerate().fold((0, 0.0f64), |best, (i, v)| {
        if v.abs() > best.1.abs() {
            (i, *v)
        } else {
            best
        }
    });
    match (i, v >= 0.0) {
        (0, true) => "L",
        (0, false) => "R",
        (1, true) => "P",
        (1, false) => "A",
        (_, true) => "H",
        (_, false) => "F",
    }
}

struct Image<'a> {
    number: usize,
    picture: Picture,
    source: Option<&'a (String, Option<u32>)>,
    comment: String,
}

fn dataset(
    img: &Image<'_>,
    source: &SourceSeries,
    uids: &ResultUids,
    patient_orientation: &str,
) -> (InMemDicomObject, String) {
    let sop = uids.other(Kind::Overlay, &format!("instance/{}", img.number));
    let series = uids.series(Kind::Overlay);
    let mut o = InMemDicomObject::new_empty();
    put_patient_study(&mut o, source);
    put_instance_header(
        &mut o,
        &InstanceHeader {
            sop_class_uid: uids::SECONDARY_CAPTURE_IMAGE_STORAGE,
            sop_instance_uid: &sop,
            modality: "OT",
            series_uid: &series,
            series_number: Kind::Overlay.series_number(),
            series_description: SERIES_DESCRIPTION,
        },
    );
    put_str(
        &mut o,
        tags::INSTANCE_NUMBER,
        VR::IS,
        &img.number.to_string(),
    );
    put_equipment(&mut o);
    // SC Equipment: made on a workstation.
    put_str(&mut o, tags::CONVERSION_TYPE, VR::CS, "WSD");
    put_str(&mut o, tags::IMAGE_TYPE, VR::CS, "DERIVED\\SECONDARY");
    put_str(
        &mut o,
        tags::PATIENT_ORIENTATION,
        VR::CS,
        patient_orientation,
    );
    // Both lungs: a bilateral image (dciodvfy asks for a laterality when none is given).
    put_str(&mut o, tags::IMAGE_LATERALITY, VR::CS, "B");
    put_str(&mut o, tags::BURNED_IN_ANNOTATION, VR::CS, "YES");
    put_str(&mut o, tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00");
    put_str(&mut o, tags::IMAGE_COMMENTS, VR::LT, &img.comment);
    put_str(
        &mut o,
        tags::DERIVATION_DESCRIPTION,
        VR::ST,
        "CT in a lung window with pulmo's lobe and opacity segmentations drawn on; \
         derived, unverified, not for clinical use",
    );
    if let Some((sop_ref, frame)) = img.source {
        put_seq(
            &mut o,
            tags::SOURCE_IMAGE_SEQUENCE,
            vec![item(|s| {
                put_str(
                    s,
                    tags::REFERENCED_SOP_CLASS_UID,
                    VR::UI,
                    &source.sop_class_uid,
                );
                put_str(s, tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, sop_ref);
                if let Some(f) = frame {
                    put_str(s, tags::REFERENCED_FRAME_NUMBER, VR::IS, &f.to_string());
                }
            })],
        );
    }
    let p = &img.picture;
    put_us(&mut o, tags::SAMPLES_PER_PIXEL, 3);
    put_str(&mut o, tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "RGB");
    put_us(&mut o, tags::PLANAR_CONFIGURATION, 0);
    put_us(&mut o, tags::ROWS, p.height as u16);
    put_us(&mut o, tags::COLUMNS, p.width as u16);
    put_us(&mut o, tags::BITS_ALLOCATED, 8);
    put_us(&mut o, tags::BITS_STORED, 8);
    put_us(&mut o, tags::HIGH_BIT, 7);
    put_us(&mut o, tags::PIXEL_REPRESENTATION, 0);
    let mut pixels = p.rgb.clone();
    if pixels.len() % 2 == 1 {
        pixels.push(0);
    }
    o.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OB,
        PrimitiveValue::U8(pixels.into()),
    ));
    (o, sop)
}

/// Build and write the overlay series into `dir` (one file per image, `overlay-NNN.dcm`).
pub fn write_series(
    dir: &Path,
    planes: &Planes<'_>,
    source: &SourceSeries,
    uids: &ResultUids,
    summary: &Summary<'_>,
) -> Result<Vec<PathBuf>, ScError> {
    let g = &planes.volume.geometry;
    let n = g.voxel_count();
    if planes.lobes.len() != n || planes.opacities.len() != n || planes.volume.hu.len() != n {
        return Err(ScError::Invalid(
            "the label volumes and the CT differ in size".into(),
        ));
    }
    if g.rows * 4 > usize::from(u16::MAX) || g.columns * 4 > usize::from(u16::MAX) {
        return Err(ScError::Invalid(format!(
            "{} × {} is too large",
            g.columns, g.rows
        )));
    }
    let orient = format!(
        "{}\\{}",
        orientation(g.row_direction),
        orientation(g.column_direction)
    );
    // A slice pulmo filled in is no image of the series: the next acquired one is shown instead.
    let acquired = |k: usize| source.slices.get(k).is_some_and(Option::is_some);
    let mut slices: Vec<usize> = chosen_slices(planes)
        .into_iter()
        .filter_map(|k| (k..g.slices).chain((0..k).rev()).find(|&j| acquired(j)))
        .collect();
    slices.dedup();
    use rayon::prelude::*;
    let mut images: Vec<(usize, Option<usize>)> = vec![(1, None)];
    images.extend(slices.iter().enumerate().map(|(i, &k)| (i + 2, Some(k))));
    images
        .into_par_iter()
        .map(|(number, k)| {
            let (picture, src, comment) = match k {
                None => (
                    summary_picture(summary),
                    None,
                    "Summary of pulmo's measurements. Derived, unverified.".to_string(),
                ),
                Some(k) => {
                    let z = g.origin[2] + g.spacing[2] * k as f64 * g.slice_direction[2];
                    (
                        slice_picture(planes, k, z),
                        source.slices.get(k).and_then(Option::as_ref),
                        format!(
                            "Source slice {} of {}. Derived, unverified.",
                            k + 1,
                            g.slices
                        ),
                    )
                }
            };
            let img = Image {
                number,
                picture,
                source: src,
                comment,
            };
            let (obj, sop) = dataset(&img, source, uids, &orient);
            let path = dir.join(format!("overlay-{number:03}.dcm"));
            write_part10(obj, uids::SECONDARY_CAPTURE_IMAGE_STORAGE, &sop, &path).map_err(
                |message| ScError::Write {
                    path: path.display().to_string(),
                    message,
                },
            )?;
            Ok(path)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::Geometry;

    fn planes_geometry(slices: usize, dz: f64) -> Geometry {
        Geometry {
            rows: 8,
            columns: 8,
            slices,
            origin: [0.0; 3],
            row_direction: [1.0, 0.0, 0.0],
            column_direction: [0.0, 1.0, 0.0],
            slice_direction: [0.0, 0.0, 1.0],
            spacing: [1.0, 1.0, dz],
        }
    }

    #[test]
    fn slices_every_five_mm_inside_the_lungs() {
        let g = planes_geometry(40, 1.0);
        let mut lobes = vec![0u8; g.voxel_count()];
        // Lung on slices 10..=30.
        for k in 10..=30 {
            lobes[k * 64 + 9] = 1;
        }
        let v = Volume {
            geometry: g.clone(),
            hu: vec![-800; g.voxel_count()],
        };
        let ops = vec![0u8; g.voxel_count()];
        let p = Planes {
            volume: &v,
            lobes: &lobes,
            opacities: &ops,
        };
        assert_eq!(chosen_slices(&p), vec![10, 15, 20, 25, 30]);
        let none = vec![0u8; g.voxel_count()];
        let p = Planes {
            volume: &v,
            lobes: &none,
            opacities: &ops,
        };
        assert!(chosen_slices(&p).is_empty());
    }

    #[test]
    fn wrap_keeps_lines_short_and_words_whole() {
        let lines = wrap("lung_coverage 0.308 (limit at most 0.05 % of the lung)", 20);
        assert!(lines.iter().all(|l| l.chars().count() <= 20), "{lines:?}");
        assert_eq!(
            lines.join(" "),
            "lung_coverage 0.308 (limit at most 0.05 % of the lung)"
        );
        assert_eq!(wrap("abcdefghij", 4), ["abcd", "efgh", "ij"]);
    }

    #[test]
    fn orientation_letters() {
        assert_eq!(orientation([1.0, 0.0, 0.0]), "L");
        assert_eq!(orientation([0.0, -1.0, 0.1]), "A");
        assert_eq!(orientation([0.0, 0.2, -0.9]), "F");
    }
}
