//! BINARY Segmentation Storage (PS3.3 A.51), explicit VR little endian, frame by frame aligned with
//! the source CT: one frame per (segment, slice) that holds any voxel of the segment (at least one
//! frame per segment), all frames packed as one bit stream, least significant bit first.

use std::path::Path;

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::InMemDicomObject;
use rayon::prelude::*;
use thiserror::Error;

use super::codes;
use super::common::{
    Code, InstanceHeader, SourceSeries, cielab, code_item, item, put_equipment,
    put_instance_header, put_patient_study, put_seq, put_str, put_us, write_part10,
};
use super::ct::ds;

#[derive(Debug, Error)]
pub enum SegError {
    #[error("cannot build a SEG: {0}")]
    Invalid(String),
    #[error("cannot write {path}: {message}")]
    Write { path: String, message: String },
}

/// One segment: which label value of the label volume it is, and how it is described.
#[derive(Debug, Clone)]
pub struct Segment {
    pub value: u8,
    pub label: String,
    pub category: Code,
    pub property: Code,
    pub modifier: Option<Code>,
    pub anatomic_region: Option<Code>,
    pub rgb: [u8; 3],
}

/// What the SEG says about itself.
#[derive(Debug, Clone)]
pub struct SegMeta {
    pub series_uid: String,
    pub sop_instance_uid: String,
    pub series_number: i32,
    pub series_description: String,
    pub content_label: String,
    pub content_description: String,
    pub algorithm_name: String,
    pub algorithm_version: String,
}

/// The five lobes, with the label values of `quant::Lobe`.
pub fn lobe_segments() -> Vec<Segment> {
    let lobe = |value, label: &str, property, modifier, rgb| Segment {
        value,
        label: label.into(),
        category: codes::ANATOMICAL_STRUCTURE,
        property,
        modifier,
        anatomic_region: None,
        rgb,
    };
    vec![
        lobe(
            1,
            "Right upper lobe",
            codes::UPPER_LOBE_OF_LUNG,
            Some(codes::RIGHT),
            [230, 200, 60],
        ),
        lobe(
            2,
            "Right middle lobe",
            codes::MIDDLE_LOBE_OF_RIGHT_LUNG,
            None,
            [80, 200, 90],
        ),
        lobe(
            3,
            "Right lower lobe",
            codes::LOWER_LOBE_OF_LUNG,
            Some(codes::RIGHT),
            [70, 130, 230],
        ),
        lobe(
            4,
            "Left upper lobe",
            codes::UPPER_LOBE_OF_LUNG,
            Some(codes::LEFT),
            [230, 130, 60],
        ),
        lobe(
            5,
            "Left lower lobe",
            codes::LOWER_LOBE_OF_LUNG,
            Some(codes::LEFT),
            [170, 90, 210],
        ),
    ]
}

/// Ground-glass (1) and consolidation (2), in the lung.
pub fn opacity_segments() -> Vec<Segment> {
    vec![
        Segment {
            value: 1,
            label: "Ground-glass opacity".into(),
            category: codes::MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
            property: codes::GROUND_GLASS_OPACITY,
            modifier: None,
            anatomic_region: Some(codes::LUNG),
            rgb: [255, 240, 0],
        },
        Segment {
            value: 2,
            label: "Consolidation".into(),
            category: codes::MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
            property: codes::LUNG_CONSOLIDATION,
            modifier: None,
            anatomic_region: Some(codes::LUNG),
            rgb: [255, 30, 30],
        },
    ]
}

/// Bit i set where `chunk[i] == value`, for 8 labels at once (SWAR, written by hand: no crate
/// does this one step). A byte of `x` is zero exactly where the label matches; `(x & 0x7f..) +
/// 0x7f..` sets the high bit of every non-zero byte without carrying across bytes; the multiply
/// gathers the eight high bits, least significant first, into the top byte (no partial products
/// overlap there, so nothing carries into it).
fn match_byte(chunk: &[u8], value: u8) -> u8 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut w = [0u8; 8];
    w.copy_from_slice(chunk);
    let x = u64::from_le_bytes(w) ^ (u64::from(value) * 0x0101_0101_0101_0101);
    let nonzero = ((x & LOW7) + LOW7) | x;
    let matches = !nonzero & HIGH;
    ((matches >> 7).wrapping_mul(0x0102_0408_1020_4080) >> 56) as u8
}

/// Pack frames of `labels == value` into one LSB-first bit stream, padded to an even length.
///
/// When frames start on byte boundaries, the frames of each slice are packed together, slices in
/// parallel: a slice is read once while it is in cache, however many segments it holds.
pub fn pack_frames(labels: &[u8], plane: usize, frames: &[(u8, usize)]) -> Vec<u8> {
    let total_bits = plane * frames.len();
    let mut out = vec![0u8; total_bits.div_ceil(8)];
    if plane % 8 == 0 && plane > 0 {
        let bytes = plane / 8;
        let slices = frames.iter().map(|f| f.1 + 1).max().unwrap_or(0);
        let mut by_slice: Vec<Vec<(u8, &mut [u8])>> = (0..slices).map(|_| Vec::new()).collect();
        for (dst, &(value, k)) in out.chunks_mut(bytes).zip(frames) {
            by_slice[k].push((value, dst));
        }
        by_slice
            .into_par_iter()
            .enumerate()
            .for_each(|(k, mut dsts)| {
                let src = &labels[k * plane..(k + 1) * plane];
                for (value, dst) in dsts.iter_mut() {
                    let value = *value;
                    for (b, chunk) in dst.iter_mut().zip(src.chunks_exact(8)) {
                        *b = match_byte(chunk, value);
                    }
                }
            });
    } else {
        let mut bit = 0usize;
        for &(value, k) in frames {
            for &l in &labels[k * plane..(k + 1) * plane] {
                if l == value {
                    out[bit / 8] |= 1 << (bit % 8);
                }
                bit += 1;
            }
        }
    }
    if out.len() % 2 == 1 {
        out.push(0);
    }
    out
}

/// The frames of a SEG: (label value, slice index) for every acquired slice holding the segment,
/// and the middle acquired slice for a segment that is empty everywhere (a SEG must give each
/// segment a frame). A slice pulmo filled in (`acquired[k]` false) has no source image for a frame
/// to reference, and no viewer shows it: it gets no frame.
pub fn frames_of(
    labels: &[u8],
    plane: usize,
    acquired: &[bool],
    segments: &[Segment],
) -> Vec<(u8, usize)> {
    let slices = acquired.len();
    let mut present = vec![[false; 256]; slices];
    present.par_iter_mut().enumerate().for_each(|(k, seen)| {
        for &l in &labels[k * plane..(k + 1) * plane] {
            seen[l as usize] = true;
        }
    });
    let mut frames = Vec::new();
    for s in segments {
        let ks: Vec<usize> = (0..slices)
            .filter(|&k| acquired[k] && present[k][s.value as usize])
            .collect();
        if ks.is_empty() {
            let real: Vec<usize> = (0..slices).filter(|&k| acquired[k]).collect();
            frames.push((
                s.value,
                real.get(real.len() / 2).copied().unwrap_or(slices / 2),
            ));
        } else {
            frames.extend(ks.into_iter().map(|k| (s.value, k)));
        }
    }
    frames
}

/// Build the SEG dataset.
pub fn build(
    source: &SourceSeries,
    labels: &[u8],
    segments: &[Segment],
    meta: &SegMeta,
) -> Result<InMemDicomObject, SegError> {
    let g = source
        .geometry
        .as_ref()
        .ok_or_else(|| SegError::Invalid("the source has no geometry".into()))?;
    let plane = g.rows * g.columns;
    if labels.len() != plane * g.slices || source.slices.len() != g.slices {
        return Err(SegError::Invalid(format!(
            "{} labels and {} source slices for a {}×{}×{} grid",
            labels.len(),
            source.slices.len(),
            g.columns,
            g.rows,
            g.slices
        )));
    }
    let rows = u16::try_from(g.rows).map_err(|_| SegError::Invalid("too many rows".into()))?;
    let cols =
        u16::try_from(g.columns).map_err(|_| SegError::Invalid("too many columns".into()))?;
    let acquired: Vec<bool> = source.slices.iter().map(Option::is_some).collect();
    let frames = frames_of(labels, plane, &acquired, segments);
    let mut o = InMemDicomObject::new_empty();
    put_patient_study(&mut o, source);
    put_instance_header(
        &mut o,
        &InstanceHeader {
            sop_class_uid: uids::SEGMENTATION_STORAGE,
            sop_instance_uid: &meta.sop_instance_uid,
            modality: "SEG",
            series_uid: &meta.series_uid,
            series_number: meta.series_number,
            series_description: &meta.series_description,
        },
    );
    put_str(
        &mut o,
        tags::FRAME_OF_REFERENCE_UID,
        VR::UI,
        &source.frame_of_reference_uid,
    );
    put_str(
        &mut o,
        tags::POSITION_REFERENCE_INDICATOR,
        VR::LO,
        &source.position_reference_indicator,
    );
    put_equipment(&mut o);
    put_str(&mut o, tags::IMAGE_TYPE, VR::CS, "DERIVED\\PRIMARY");
    put_str(&mut o, tags::CONTENT_LABEL, VR::CS, &meta.content_label);
    put_str(
        &mut o,
        tags::CONTENT_DESCRIPTION,
        VR::LO,
        &meta.content_description,
    );
    // Type 2 and a person's name: empty for an algorithm, which is identified per segment.
    put_str(&mut o, tags::CONTENT_CREATOR_NAME, VR::PN, "");
    put_us(&mut o, tags::SAMPLES_PER_PIXEL, 1);
    put_str(
        &mut o,
        tags::PHOTOMETRIC_INTERPRETATION,
        VR::CS,
        "MONOCHROME2",
    );
    put_us(&mut o, tags::ROWS, rows);
    put_us(&mut o, tags::COLUMNS, cols);
    put_us(&mut o, tags::BITS_ALLOCATED, 1);
    put_us(&mut o, tags::BITS_STORED, 1);
    put_us(&mut o, tags::HIGH_BIT, 0);
    put_us(&mut o, tags::PIXEL_REPRESENTATION, 0);
    let lossy = if source.lossy_image_compression.is_empty() {
        "00"
    } else {
        &source.lossy_image_compression
    };
    put_str(&mut o, tags::LOSSY_IMAGE_COMPRESSION, VR::CS, lossy);
    put_str(&mut o, tags::SEGMENTATION_TYPE, VR::CS, "BINARY");
    put_str(&mut o, tags::SEGMENTS_OVERLAP, VR::CS, "NO");
    put_str(
        &mut o,
        tags::NUMBER_OF_FRAMES,
        VR::IS,
        &frames.len().to_string(),
    );

    // Segments, numbered 1..n in the order given.
    let seg_items: Vec<InMemDicomObject> = segments
        .iter()
        .enumerate()
        .map(|(n, s)| {
            item(|i| {
                put_us(i, tags::SEGMENT_NUMBER, (n + 1) as u16);
                put_str(i, tags::SEGMENT_LABEL, VR::LO, &s.label);
                put_seq(
                    i,
                    tags::SEGMENTED_PROPERTY_CATEGORY_CODE_SEQUENCE,
                    vec![code_item(s.category)],
                );
                let mut prop = code_item(s.property);
                if let Some(m) = s.modifier {
                    put_seq(
                        &mut prop,
                        tags::SEGMENTED_PROPERTY_TYPE_MODIFIER_CODE_SEQUENCE,
                        vec![code_item(m)],
                    );
                }
                put_seq(i, tags::SEGMENTED_PROPERTY_TYPE_CODE_SEQUENCE, vec![prop]);
                if let Some(r) = s.anatomic_region {
                    put_seq(i, tags::ANATOMIC_REGION_SEQUENCE, vec![code_item(r)]);
                }
                put_str(i, tags::SEGMENT_ALGORITHM_TYPE, VR::CS, "AUTOMATIC");
                put_str(
                    i,
                    tags::SEGMENT_ALGORITHM_NAME,
                    VR::LO,
                    &meta.algorithm_name,
                );
                put_seq(
                    i,
                    tags::SEGMENTATION_ALGORITHM_IDENTIFICATION_SEQUENCE,
                    vec![item(|a| {
                        put_seq(
                            a,
                            tags::ALGORITHM_FAMILY_CODE_SEQUENCE,
                            vec![code_item(codes::ARTIFICIAL_INTELLIGENCE)],
                        );
                        put_str(a, tags::ALGORITHM_NAME, VR::LO, &meta.algorithm_name);
                        put_str(a, tags::ALGORITHM_VERSION, VR::LO, &meta.algorithm_version);
                    })],
                );
                let lab = cielab(s.rgb);
                i.put(DataElement::new(
                    tags::RECOMMENDED_DISPLAY_CIE_LAB_VALUE,
                    VR::US,
                    PrimitiveValue::U16(lab.to_vec().into()),
                ));
            })
        })
        .collect();
    put_seq(&mut o, tags::SEGMENT_SEQUENCE, seg_items);

    // Dimensions: segment number, then position.
    let dim_uid =
        super::uid::from_name(&format!("{}/dimension-organization", meta.sop_instance_uid));
    put_seq(
        &mut o,
        tags::DIMENSION_ORGANIZATION_SEQUENCE,
        vec![item(|i| {
            put_str(i, tags::DIMENSION_ORGANIZATION_UID, VR::UI, &dim_uid)
        })],
    );
    let dim = |index: dicom_core::Tag, group: dicom_core::Tag, label: &str| {
        item(|i| {
            put_str(i, tags::DIMENSION_ORGANIZATION_UID, VR::UI, &dim_uid);
            i.put(DataElement::new(
                tags::DIMENSION_INDEX_POINTER,
                VR::AT,
                PrimitiveValue::Tags(vec![index].into()),
            ));
            i.put(DataElement::new(
                tags::FUNCTIONAL_GROUP_POINTER,
                VR::AT,
                PrimitiveValue::Tags(vec![group].into()),
            ));
            put_str(i, tags::DIMENSION_DESCRIPTION_LABEL, VR::LO, label);
        })
    };
    put_seq(
        &mut o,
        tags::DIMENSION_INDEX_SEQUENCE,
        vec![
            dim(
                tags::REFERENCED_SEGMENT_NUMBER,
                tags::SEGMENT_IDENTIFICATION_SEQUENCE,
                "ReferencedSegmentNumber",
            ),
            dim(
                tags::IMAGE_POSITION_PATIENT,
                tags::PLANE_POSITION_SEQUENCE,
                "ImagePositionPatient",
            ),
        ],
    );

    // Shared functional groups: pixel measures and orientation.
    put_seq(
        &mut o,
        tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE,
        vec![item(|sh| {
            put_seq(
                sh,
                tags::PIXEL_MEASURES_SEQUENCE,
                vec![item(|m| {
                    put_str(
                        m,
                        tags::PIXEL_SPACING,
                        VR::DS,
                        &format!("{}\\{}", ds(g.spacing[1]), ds(g.spacing[0])),
                    );
                    put_str(
                        m,
                        tags::SLICE_THICKNESS,
                        VR::DS,
                        &ds(if source.slice_thickness > 0.0 {
                            source.slice_thickness
                        } else {
                            g.spacing[2]
                        }),
                    );
                    put_str(m, tags::SPACING_BETWEEN_SLICES, VR::DS, &ds(g.spacing[2]));
                })],
            );
            put_seq(
                sh,
                tags::PLANE_ORIENTATION_SEQUENCE,
                vec![item(|p| {
                    let v: Vec<String> = g.orientation().iter().map(|&x| ds(x)).collect();
                    put_str(p, tags::IMAGE_ORIENTATION_PATIENT, VR::DS, &v.join("\\"));
                })],
            );
        })],
    );

    // Per-frame functional groups.
    let seg_number = |value: u8| {
        segments
            .iter()
            .position(|s| s.value == value)
            .map_or(0, |n| n + 1) as u16
    };
    let per_frame: Vec<InMemDicomObject> = frames
        .par_iter()
        .map(|&(value, k)| {
            // frames_of gives frames on acquired slices only.
            let (sop, frame) = source.slices[k].clone().unwrap_or_default();
            let sop = &sop;
            let p = g.slice_position(k);
            item(|f| {
                put_seq(
                    f,
                    tags::FRAME_CONTENT_SEQUENCE,
                    vec![item(|c| {
                        c.put(DataElement::new(
                            tags::DIMENSION_INDEX_VALUES,
                            VR::UL,
                            PrimitiveValue::U32(
                                vec![u32::from(seg_number(value)), (k + 1) as u32].into(),
                            ),
                        ));
                    })],
                );
                put_seq(
                    f,
                    tags::PLANE_POSITION_SEQUENCE,
                    vec![item(|pp| {
                        put_str(
                            pp,
                            tags::IMAGE_POSITION_PATIENT,
                            VR::DS,
                            &format!("{}\\{}\\{}", ds(p[0]), ds(p[1]), ds(p[2])),
                        );
                    })],
                );
                put_seq(
                    f,
                    tags::DERIVATION_IMAGE_SEQUENCE,
                    vec![item(|d| {
                        put_seq(
                            d,
                            tags::SOURCE_IMAGE_SEQUENCE,
                            vec![item(|si| {
                                put_str(
                                    si,
                                    tags::REFERENCED_SOP_CLASS_UID,
                                    VR::UI,
                                    &source.sop_class_uid,
                                );
                                put_str(si, tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, sop);
                                if let Some(fr) = frame {
                                    put_str(
                                        si,
                                        tags::REFERENCED_FRAME_NUMBER,
                                        VR::IS,
                                        &(fr + 1).to_string(),
                                    );
                                }
                                put_seq(
                                    si,
                                    tags::PURPOSE_OF_REFERENCE_CODE_SEQUENCE,
                                    vec![code_item(codes::SOURCE_IMAGE_FOR_PROCESSING)],
                                );
                                put_str(si, tags::SPATIAL_LOCATIONS_PRESERVED, VR::CS, "YES");
                            })],
                        );
                        put_seq(
                            d,
                            tags::DERIVATION_CODE_SEQUENCE,
                            vec![code_item(codes::SEGMENTATION)],
                        );
                    })],
                );
                put_seq(
                    f,
                    tags::SEGMENT_IDENTIFICATION_SEQUENCE,
                    vec![item(|s| {
                        put_us(s, tags::REFERENCED_SEGMENT_NUMBER, seg_number(value))
                    })],
                );
            })
        })
        .collect();
    put_seq(
        &mut o,
        tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE,
        per_frame,
    );

    // Common Instance Reference: every source instance (OHIF refuses a SEG without it).
    let mut seen = std::collections::BTreeSet::new();
    let refs: Vec<InMemDicomObject> = source
        .slices
        .iter()
        .flatten()
        .filter(|(sop, _)| seen.insert(sop.clone()))
        .map(|(sop, _)| {
            item(|r| {
                put_str(
                    r,
                    tags::REFERENCED_SOP_CLASS_UID,
                    VR::UI,
                    &source.sop_class_uid,
                );
                put_str(r, tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, sop);
            })
        })
        .collect();
    put_seq(
        &mut o,
        tags::REFERENCED_SERIES_SEQUENCE,
        vec![item(|s| {
            put_str(
                s,
                tags::SERIES_INSTANCE_UID,
                VR::UI,
                &source.series_instance_uid,
            );
            put_seq(s, tags::REFERENCED_INSTANCE_SEQUENCE, refs);
        })],
    );

    let bits = pack_frames(labels, plane, &frames);
    o.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OB,
        PrimitiveValue::U8(bits.into()),
    ));
    Ok(o)
}

/// Write a SEG dataset to `path` (explicit VR little endian), through a temporary file.
pub fn write(obj: InMemDicomObject, meta: &SegMeta, path: &Path) -> Result<(), SegError> {
    write_part10(
        obj,
        uids::SEGMENTATION_STORAGE,
        &meta.sop_instance_uid,
        path,
    )
    .map_err(|message| SegError::Write {
        path: path.display().to_string(),
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_are_lsb_first_and_padded_even() {
        // One frame of 8 pixels (aligned) and one of 3 (unaligned), value 1.
        let labels = [1, 0, 0, 0, 0, 0, 0, 1];
        assert_eq!(pack_frames(&labels, 8, &[(1, 0)]), vec![0b1000_0001, 0]);
        let labels = [1, 1, 0, 0, 1, 0];
        // frames: slice 0 [1,1,0], slice 1 [0,1,0] → bits 1,1,0,0,1,0 → 0b010011
        assert_eq!(
            pack_frames(&labels, 3, &[(1, 0), (1, 1)]),
            vec![0b0001_0011, 0]
        );
    }

    #[test]
    fn match_byte_agrees_with_the_plain_loop() {
        let mut state = 0x1234_5678u32;
        for _ in 0..10_000 {
            let mut chunk = [0u8; 8];
            for c in &mut chunk {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                *c = (state >> 29) as u8; // values 0..7, many repeats
            }
            for value in 0..8u8 {
                let plain = chunk
                    .iter()
                    .enumerate()
                    .fold(0u8, |v, (i, &l)| v | (u8::from(l == value) << i));
                assert_eq!(match_byte(&chunk, value), plain, "{chunk:?} {value}");
            }
        }
        assert_eq!(match_byte(&[255; 8], 255), 0xff);
        assert_eq!(
            match_byte(&[0, 128, 0, 128, 0, 128, 0, 128], 128),
            0b1010_1010
        );
    }

    #[test]
    fn empty_segments_keep_one_frame() {
        let labels = [0, 0, 1, 1, 0, 0];
        let segs = opacity_segments();
        let frames = frames_of(&labels, 2, &[true; 3], &segs);
        assert_eq!(frames, vec![(1, 1), (2, 1)]);
    }

    #[test]
    fn filled_slices_get_no_frame() {
        let labels = [1, 1, 1, 1, 2, 0];
        let segs = opacity_segments();
        let frames = frames_of(&labels, 2, &[true, false, true], &segs);
        assert_eq!(frames, vec![(1, 0), (2, 2)]);
        let frames = frames_of(&[0; 6], 2, &[true, false, true], &segs);
        assert!(frames.iter().all(|&(_, k)| k != 1), "{frames:?}");
    }
}
