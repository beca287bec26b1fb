//! CT Image Storage instances (PS3.3 A.3): the phantom's series.

use dicom_core::value::C;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::InMemDicomObject;

#[derive(Debug, Clone)]
pub struct Patient {
    pub name: String,
    pub id: String,
    pub birth_date: String,
    pub sex: String,
    pub age: String,
}

#[derive(Debug, Clone)]
pub struct Study {
    pub uid: String,
    pub date: String,
    pub time: String,
    pub id: String,
    pub accession: String,
    pub description: String,
}

#[derive(Debug, Clone)]
pub struct Equipment {
    pub manufacturer: String,
    pub model: String,
    pub serial: String,
    pub software: String,
    pub institution: String,
}

/// What every instance of one CT series shares.
#[derive(Debug, Clone)]
pub struct Series {
    pub patient: Patient,
    pub study: Study,
    pub equipment: Equipment,
    pub uid: String,
    pub number: i32,
    pub description: String,
    pub frame_of_reference_uid: String,
    /// Value 3 of ImageType: AXIAL or LOCALIZER.
    pub image_kind: String,
    pub kernel: String,
    pub slice_thickness: f64,
    pub window: (f64, f64, String),
    pub protocol: String,
}

/// One image of a series. `stored` are the stored values (HU + 1024), 12 of 16 bits used.
#[derive(Debug, Clone)]
pub struct Slice<'a> {
    pub sop_instance_uid: String,
    pub instance_number: i32,
    pub position: [f64; 3],
    pub orientation: [f64; 6],
    /// Row spacing then column spacing, as PixelSpacing orders them.
    pub pixel_spacing: [f64; 2],
    pub rows: u16,
    pub columns: u16,
    pub stored: &'a [u16],
}

/// RescaleIntercept of every image pulmo writes: stored 0 is −1024 HU.
pub const RESCALE_INTERCEPT: i32 = -1024;

/// A decimal string within the 16 characters DS allows.
pub fn ds(v: f64) -> String {
    for precision in (0..=8).rev() {
        let mut s = format!("{v:.precision$}");
        if s.contains('.') {
            while s.ends_with('0') {
                s.pop();
            }
            if s.ends_with('.') {
                s.pop();
            }
        }
        if s == "-0" {
            s = "0".into();
        }
        if s.len() <= 16 {
            return s;
        }
    }
    format!("{v:.0}")
}

fn ds_multi(values: &[f64]) -> String {
    values.iter().map(|&v| ds(v)).collect::<Vec<_>>().join("\\")
}

fn put(obj: &mut InMemDicomObject, tag: Tag, vr: VR, value: &str) {
    obj.put(DataElement::new(tag, vr, PrimitiveValue::from(value)));
}

fn put_us(obj: &mut InMemDicomObject, tag: Tag, value: u16) {
    obj.put(DataElement::new(tag, VR::US, PrimitiveValue::from(value)));
}

/// Build one CT Image Storage dataset (no file meta).
pub fn instance(series: &Series, slice: &Slice<'_>) -> InMemDicomObject {
    let mut o = InMemDicomObject::new_empty();
    let s = series;
    put(&mut o, tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 100");
    put(
        &mut o,
        tags::IMAGE_TYPE,
        VR::CS,
        &format!("ORIGINAL\\PRIMARY\\{}", s.image_kind),
    );
    put(&mut o, tags::INSTANCE_CREATION_DATE, VR::DA, &s.study.date);
    put(&mut o, tags::INSTANCE_CREATION_TIME, VR::TM, &s.study.time);
    put(&mut o, tags::SOP_CLASS_UID, VR::UI, uids::CT_IMAGE_STORAGE);
    put(
        &mut o,
        tags::SOP_INSTANCE_UID,
        VR::UI,
        &slice.sop_instance_uid,
    );
    for tag in [
        tags::STUDY_DATE,
        tags::SERIES_DATE,
        tags::ACQUISITION_DATE,
        tags::CONTENT_DATE,
    ] {
        put(&mut o, tag, VR::DA, &s.study.date);
    }
    for tag in [
        tags::STUDY_TIME,
        tags::SERIES_TIME,
        tags::ACQUISITION_TIME,
        tags::CONTENT_TIME,
    ] {
        put(&mut o, tag, VR::TM, &s.study.time);
    }
    put(&mut o, tags::ACCESSION_NUMBER, VR::SH, &s.study.accession);
    put(&mut o, tags::MODALITY, VR::CS, "CT");
    put(
        &mut o,
        tags::MANUFACTURER,
        VR::LO,
        &s.equipment.manufacturer,
    );
    put(
        &mut o,
        tags::INSTITUTION_NAME,
        VR::LO,
        &s.equipment.institution,
    );
    put(&mut o, tags::REFERRING_PHYSICIAN_NAME, VR::PN, "");
    put(
        &mut o,
        tags::STUDY_DESCRIPTION,
        VR::LO,
        &s.study.description,
    );
    put(&mut o, tags::SERIES_DESCRIPTION, VR::LO, &s.description);
    put(
        &mut o,
        tags::MANUFACTURER_MODEL_NAME,
        VR::LO,
        &s.equipment.model,
    );
    put(&mut o, tags::PATIENT_NAME, VR::PN, &s.patient.name);
    put(&mut o, tags::PATIENT_ID, VR::LO, &s.patient.id);
    put(
        &mut o,
        tags::PATIENT_BIRTH_DATE,
        VR::DA,
        &s.patient.birth_date,
    );
    put(&mut o, tags::PATIENT_SEX, VR::CS, &s.patient.sex);
    put(&mut o, tags::PATIENT_AGE, VR::AS, &s.patient.age);
    put(&mut o, tags::BODY_PART_EXAMINED, VR::CS, "CHEST");
    put(
        &mut o,
        tags::SLICE_THICKNESS,
        VR::DS,
        &ds(s.slice_thickness),
    );
    put(&mut o, tags::KVP, VR::DS, "120");
    put(&mut o, tags::DATA_COLLECTION_DIAMETER, VR::DS, "500");
    put(
        &mut o,
        tags::DEVICE_SERIAL_NUMBER,
        VR::LO,
        &s.equipment.serial,
    );
    put(
        &mut o,
        tags::SOFTWARE_VERSIONS,
        VR::LO,
        &s.equipment.software,
    );
    put(&mut o, tags::PROTOCOL_NAME, VR::LO, &s.protocol);
    let recon = f64::from(slice.columns) * slice.pixel_spacing[1];
    put(&mut o, tags::RECONSTRUCTION_DIAMETER, VR::DS, &ds(recon));
    put(&mut o, tags::GANTRY_DETECTOR_TILT, VR::DS, "0");
    put(&mut o, tags::TABLE_HEIGHT, VR::DS, "160");
    put(&mut o, tags::ROTATION_DIRECTION, VR::CS, "CW");
    put(&mut o, tags::EXPOSURE_TIME, VR::IS, "500");
    put(&mut o, tags::X_RAY_TUBE_CURRENT, VR::IS, "200");
    put(&mut o, tags::EXPOSURE, VR::IS, "100");
    put(&mut o, tags::FILTER_TYPE, VR::SH, "BODY");
    put(&mut o, tags::CONVOLUTION_KERNEL, VR::SH, &s.kernel);
    put(&mut o, tags::PATIENT_POSITION, VR::CS, "HFS");
    put(&mut o, tags::STUDY_INSTANCE_UID, VR::UI, &s.study.uid);
    put(&mut o, tags::SERIES_INSTANCE_UID, VR::UI, &s.uid);
    put(&mut o, tags::STUDY_ID, VR::SH, &s.study.id);
    put(&mut o, tags::SERIES_NUMBER, VR::IS, &s.number.to_string());
    put(&mut o, tags::ACQUISITION_NUMBER, VR::IS, "1");
    put(
        &mut o,
        tags::INSTANCE_NUMBER,
        VR::IS,
        &slice.instance_number.to_string(),
    );
    put(
        &mut o,
        tags::IMAGE_POSITION_PATIENT,
        VR::DS,
        &ds_multi(&slice.position),
    );
    put(
        &mut o,
        tags::IMAGE_ORIENTATION_PATIENT,
        VR::DS,
        &ds_multi(&slice.orientation),
    );
    put(
        &mut o,
        tags::FRAME_OF_REFERENCE_UID,
        VR::UI,
        &s.frame_of_reference_uid,
    );
    put(&mut o, tags::POSITION_REFERENCE_INDICATOR, VR::LO, "");
    if s.image_kind == "AXIAL" {
        put(&mut o, tags::SLICE_LOCATION, VR::DS, &ds(slice.position[2]));
    }
    put_us(&mut o, tags::SAMPLES_PER_PIXEL, 1);
    put(
        &mut o,
        tags::PHOTOMETRIC_INTERPRETATION,
        VR::CS,
        "MONOCHROME2",
    );
    put_us(&mut o, tags::ROWS, slice.rows);
    put_us(&mut o, tags::COLUMNS, slice.columns);
    put(
        &mut o,
        tags::PIXEL_SPACING,
        VR::DS,
        &ds_multi(&slice.pixel_spacing),
    );
    put_us(&mut o, tags::BITS_ALLOCATED, 16);
    put_us(&mut o, tags::BITS_STORED, 12);
    put_us(&mut o, tags::HIGH_BIT, 11);
    put_us(&mut o, tags::PIXEL_REPRESENTATION, 0);
    put(&mut o, tags::WINDOW_CENTER, VR::DS, &ds(s.window.0));
    put(&mut o, tags::WINDOW_WIDTH, VR::DS, &ds(s.window.1));
    put(
        &mut o,
        tags::WINDOW_CENTER_WIDTH_EXPLANATION,
        VR::LO,
        &s.window.2,
    );
    put(
        &mut o,
        tags::RESCALE_INTERCEPT,
        VR::DS,
        &RESCALE_INTERCEPT.to_string(),
    );
    put(&mut o, tags::RESCALE_SLOPE, VR::DS, "1");
    // A localizer's values are not calibrated HU; dciodvfy wants no RescaleType "HU" on an
    // ORIGINAL LOCALIZER and does not know "US", so the scout carries none.
    if s.image_kind != "LOCALIZER" {
        put(&mut o, tags::RESCALE_TYPE, VR::LO, "HU");
    }
    put(&mut o, tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00");
    o.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OW,
        PrimitiveValue::U16(C::from_vec(slice.stored.to_vec())),
    ));
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ds_fits_sixteen_characters() {
        assert_eq!(ds(1.0), "1");
        assert_eq!(ds(-0.0), "0");
        assert_eq!(ds(0.703125), "0.703125");
        assert_eq!(ds(-179.6484375), "-179.6484375");
        for v in [1.0 / 3.0, -123456.789012345, 1e-9, 98765.4321098] {
            assert!(ds(v).len() <= 16, "{v} → {}", ds(v));
            assert!((ds(v).parse::<f64>().unwrap() - v).abs() < 1e-3);
        }
    }
}
