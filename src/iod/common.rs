//! What every object pulmo creates shares: patient and study attributes copied from the source
//! CT, equipment, deterministic UIDs, series numbers that sort after the source, and small helpers
//! for building datasets (codes, sequences, decimal strings).

use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::uid;
use crate::volume::Geometry;

/// The source CT series as result objects need it (plain data, read by the pipeline).
#[derive(Debug, Clone, Default, Serialize)]
pub struct SourceSeries {
    pub specific_character_set: String,
    pub patient_name: String,
    pub patient_id: String,
    pub patient_birth_date: String,
    pub patient_sex: String,
    pub study_instance_uid: String,
    pub study_date: String,
    pub study_time: String,
    pub study_id: String,
    pub accession_number: String,
    pub referring_physician_name: String,
    pub study_description: String,
    pub series_instance_uid: String,
    pub series_number: Option<i32>,
    pub frame_of_reference_uid: String,
    pub position_reference_indicator: String,
    pub lossy_image_compression: String,
    pub sop_class_uid: String,
    /// SOP Instance UID (and frame number, for multi-frame sources) of every slice, in slice order;
    /// `None` for a missing slice that pulmo filled from its neighbours (no image to reference).
    pub slices: Vec<Option<(String, Option<u32>)>>,
    #[serde(skip)]
    pub geometry: Option<Geometry>,
    pub slice_thickness: f64,
}

/// A coded concept (code value, coding scheme designator, code meaning).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Code {
    pub value: &'static str,
    pub scheme: &'static str,
    pub meaning: &'static str,
}

pub const fn code(value: &'static str, scheme: &'static str, meaning: &'static str) -> Code {
    Code {
        value,
        scheme,
        meaning,
    }
}

/// What kind of result object a UID is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    SegLobes,
    SegOpacities,
    Report,
    Overlay,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::SegLobes => "seg-lobes",
            Kind::SegOpacities => "seg-opacities",
            Kind::Report => "sr",
            Kind::Overlay => "overlay",
        }
    }

    /// Series numbers after any a scanner uses, in the order a radiologist reads them.
    pub fn series_number(self) -> i32 {
        match self {
            Kind::SegLobes => 9001,
            Kind::SegOpacities => 9002,
            Kind::Report => 9003,
            Kind::Overlay => 9004,
        }
    }
}

/// Deterministic result UIDs (DESIGN.md): UUID v5 of the source series UID, a hash of the input
/// instance UIDs, the model set version and the object kind. The same input analysed by the same
/// models gives the same UIDs, so a re-delivery is idempotent at the PACS.
#[derive(Debug, Clone)]
pub struct ResultUids {
    base: String,
}

impl ResultUids {
    pub fn new(source: &SourceSeries, model_set_version: &str) -> ResultUids {
        let mut h = Sha256::new();
        for (sop, frame) in source.slices.iter().flatten() {
            h.update(sop.as_bytes());
            h.update(frame.map(|f| f.to_string()).unwrap_or_default().as_bytes());
            h.update(b"\n");
        }
        let inputs: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        ResultUids {
            base: format!(
                "{}/{}/{}",
                source.series_instance_uid, inputs, model_set_version
            ),
        }
    }

    pub fn series(&self, kind: Kind) -> String {
        uid::from_name(&format!("{}/{}/series", self.base, kind.name()))
    }

    pub fn instance(&self, kind: Kind) -> String {
        uid::from_name(&format!("{}/{}/instance", self.base, kind.name()))
    }

    pub fn other(&self, kind: Kind, what: &str) -> String {
        uid::from_name(&format!("{}/{}/{what}", self.base, kind.name()))
    }
}

pub fn put_str(o: &mut InMemDicomObject, tag: Tag, vr: VR, value: &str) {
    o.put(DataElement::new(tag, vr, PrimitiveValue::from(value)));
}

pub fn put_us(o: &mut InMemDicomObject, tag: Tag, value: u16) {
    o.put(DataElement::new(tag, VR::US, PrimitiveValue::from(value)));
}

pub fn put_seq(o: &mut InMemDicomObject, tag: Tag, items: Vec<InMemDicomObject>) {
    o.put(DataElement::new(tag, VR::SQ, DataSetSequence::from(items)));
}

pub fn item(build: impl FnOnce(&mut InMemDicomObject)) -> InMemDicomObject {
    let mut o = InMemDicomObject::new_empty();
    build(&mut o);
    o
}

/// A code sequence item.
pub fn code_item(c: Code) -> InMemDicomObject {
    item(|o| {
        put_str(o, tags::CODE_VALUE, VR::SH, c.value);
        put_str(o, tags::CODING_SCHEME_DESIGNATOR, VR::SH, c.scheme);
        put_str(o, tags::CODE_MEANING, VR::LO, c.meaning);
    })
}

/// Current date and time as DA and TM.
pub fn now() -> (String, String) {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm): no date crate needed
    // for one conversion.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    (
        format!("{y:04}{m:02}{d:02}"),
        format!("{:02}{:02}{:02}", rem / 3600, rem % 3600 / 60, rem % 60),
    )
}

/// Patient, General Study, Frame of Reference and the equipment modules, copied from the source.
pub fn put_patient_study(o: &mut InMemDicomObject, s: &SourceSeries) {
    if !s.specific_character_set.is_empty() {
        put_str(
            o,
            tags::SPECIFIC_CHARACTER_SET,
            VR::CS,
            &s.specific_character_set,
        );
    }
    put_str(o, tags::PATIENT_NAME, VR::PN, &s.patient_name);
    put_str(o, tags::PATIENT_ID, VR::LO, &s.patient_id);
    put_str(o, tags::PATIENT_BIRTH_DATE, VR::DA, &s.patient_birth_date);
    put_str(o, tags::PATIENT_SEX, VR::CS, &s.patient_sex);
    put_str(o, tags::STUDY_INSTANCE_UID, VR::UI, &s.study_instance_uid);
    put_str(o, tags::STUDY_DATE, VR::DA, &s.study_date);
    put_str(o, tags::STUDY_TIME, VR::TM, &s.study_time);
    put_str(o, tags::STUDY_ID, VR::SH, &s.study_id);
    put_str(o, tags::ACCESSION_NUMBER, VR::SH, &s.accession_number);
    put_str(
        o,
        tags::REFERRING_PHYSICIAN_NAME,
        VR::PN,
        &s.referring_physician_name,
    );
    if !s.study_description.is_empty() {
        put_str(o, tags::STUDY_DESCRIPTION, VR::LO, &s.study_description);
    }
}

/// What identifies a result instance and its series.
pub struct InstanceHeader<'a> {
    pub sop_class_uid: &'a str,
    pub sop_instance_uid: &'a str,
    pub modality: &'a str,
    pub series_uid: &'a str,
    pub series_number: i32,
    pub series_description: &'a str,
}

/// SOP Common, series and content attributes every result object carries, dated now.
pub fn put_instance_header(o: &mut InMemDicomObject, h: &InstanceHeader<'_>) {
    let (date, time) = now();
    put_str(o, tags::SOP_CLASS_UID, VR::UI, h.sop_class_uid);
    put_str(o, tags::SOP_INSTANCE_UID, VR::UI, h.sop_instance_uid);
    put_str(o, tags::INSTANCE_CREATION_DATE, VR::DA, &date);
    put_str(o, tags::INSTANCE_CREATION_TIME, VR::TM, &time);
    put_str(o, tags::SERIES_DATE, VR::DA, &date);
    put_str(o, tags::SERIES_TIME, VR::TM, &time);
    put_str(o, tags::CONTENT_DATE, VR::DA, &date);
    put_str(o, tags::CONTENT_TIME, VR::TM, &time);
    put_str(o, tags::MODALITY, VR::CS, h.modality);
    put_str(o, tags::SERIES_INSTANCE_UID, VR::UI, h.series_uid);
    put_str(o, tags::SERIES_NUMBER, VR::IS, &h.series_number.to_string());
    put_str(o, tags::SERIES_DESCRIPTION, VR::LO, h.series_description);
    put_str(o, tags::INSTANCE_NUMBER, VR::IS, "1");
}

/// Write a result object as a Part 10 file in explicit VR little endian, through a temporary
/// file renamed into place (a reader never sees half a file). The error is in words.
pub fn write_part10(
    obj: InMemDicomObject,
    sop_class_uid: &str,
    sop_instance_uid: &str,
    path: &std::path::Path,
) -> Result<(), String> {
    use dicom_dictionary_std::uids;
    let file = obj
        .with_meta(
            dicom_object::FileMetaTableBuilder::new()
                .media_storage_sop_class_uid(sop_class_uid)
                .media_storage_sop_instance_uid(sop_instance_uid)
                .transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN)
                .implementation_class_uid(super::IMPLEMENTATION_CLASS_UID)
                .implementation_version_name(super::IMPLEMENTATION_VERSION_NAME),
        )
        .map_err(|e| e.to_string())?;
    let tmp = path.with_extension("dcm.tmp");
    file.write_to_file(&tmp).map_err(|e| e.to_string())?;
    std::fs::rename(&tmp, path).map_err(|e| e.to_string())
}

pub fn put_equipment(o: &mut InMemDicomObject) {
    put_str(o, tags::MANUFACTURER, VR::LO, "pulmo");
    put_str(o, tags::MANUFACTURER_MODEL_NAME, VR::LO, "pulmo");
    put_str(o, tags::DEVICE_SERIAL_NUMBER, VR::LO, "pulmo-1");
    put_str(
        o,
        tags::SOFTWARE_VERSIONS,
        VR::LO,
        env!("CARGO_PKG_VERSION"),
    );
}

/// DICOM's RecommendedDisplayCIELabValue of an sRGB colour (PS3.3 C.10.7.1.1: L* 0..100 and
/// a*, b* −128..127 scaled to 0..65535), via CIE XYZ under D65.
pub fn cielab(rgb: [u8; 3]) -> [u16; 3] {
    let lin = |c: u8| {
        let c = f64::from(c) / 255.0;
        if c <= 0.04045 {
            c / 12.92
        } else {
            ((c + 0.055) / 1.055).powf(2.4)
        }
    };
    let (r, g, b) = (lin(rgb[0]), lin(rgb[1]), lin(rgb[2]));
    let x = (0.4124 * r + 0.3576 * g + 0.1805 * b) / 0.95047;
    let y = 0.2126 * r + 0.7152 * g + 0.0722 * b;
    let z = (0.0193 * r + 0.1192 * g + 0.9505 * b) / 1.08883;
    let f = |t: f64| {
        if t > 216.0 / 24389.0 {
            t.cbrt()
        } else {
            (24389.0 / 27.0 * t + 16.0) / 116.0
        }
    };
    let (fx, fy, fz) = (f(x), f(y), f(z));
    let l = 116.0 * fy - 16.0;
    let a = 500.0 * (fx - fy);
    let bb = 200.0 * (fy - fz);
    let scale_l = |v: f64| (v.clamp(0.0, 100.0) / 100.0 * 65535.0).round() as u16;
    let scale_ab = |v: f64| ((v.clamp(-128.0, 127.0) + 128.0) / 255.0 * 65535.0).round() as u16;
    [scale_l(l), scale_ab(a), scale_ab(bb)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cielab_of_white_and_black() {
        assert_eq!(cielab([255, 255, 255])[0], 65535);
        assert_eq!(cielab([0, 0, 0]), [0, 32896, 32896]);
    }

    #[test]
    fn result_uids_depend_on_inputs_and_kind() {
        let mut s = SourceSeries {
            series_instance_uid: "1.2.3".into(),
            slices: vec![
                Some(("1.2.3.1".into(), None)),
                Some(("1.2.3.2".into(), None)),
            ],
            ..Default::default()
        };
        let a = ResultUids::new(&s, "m1");
        assert_eq!(
            a.series(Kind::SegLobes),
            ResultUids::new(&s, "m1").series(Kind::SegLobes)
        );
        assert_ne!(a.series(Kind::SegLobes), a.series(Kind::SegOpacities));
        assert_ne!(
            a.series(Kind::SegLobes),
            ResultUids::new(&s, "m2").series(Kind::SegLobes)
        );
        s.slices.pop();
        assert_ne!(
            a.series(Kind::SegLobes),
            ResultUids::new(&s, "m1").series(Kind::SegLobes)
        );
        assert!(uid::is_valid(&a.instance(Kind::Report)));
    }

    #[test]
    fn dates_are_well_formed() {
        let (d, t) = now();
        assert_eq!(d.len(), 8);
        assert_eq!(t.len(), 6);
        assert!(d.starts_with("20"));
    }
}
