//! The TID 1500 Measurement Report (Enhanced SR by default, Comprehensive 3D SR as an option),
//! built from a template (`template`) filled with one study's findings.
//!
//! Private concepts use the coding scheme 99PULMO, declared in CodingSchemeIdentificationSequence;
//! every private code is listed in `PRIVATE_CODES` (and in the conformance statement).

pub mod template;

use std::path::Path;

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::InMemDicomObject;
use thiserror::Error;

use self::template::{Item, Node, Scope, Template, ValueType, fill};
use super::common::{
    InstanceHeader, SourceSeries, item, put_equipment, put_instance_header, put_patient_study,
    put_seq, put_str, write_part10,
};
use super::{codes, uid};
use crate::infer::ModelInfo;
use crate::infer::model::Role;
use crate::quant::{Findings, Lobe};

pub const PRIVATE_SCHEME: &str = "99PULMO";

/// Every private code the shipped template uses: (code, meaning).
pub const PRIVATE_CODES: [(&str, &str); 20] = [
    ("PULMO-PLO", "Percentage of lobe opacified"),
    ("PULMO-GGO", "Percentage of lobe with ground-glass opacity"),
    ("PULMO-CONS", "Percentage of lobe with consolidation"),
    ("PULMO-CTSS", "CT severity score"),
    ("PULMO-PLUNG", "Percentage of lungs opacified"),
    ("PULMO-CTSS-TOTAL", "Total CT severity score"),
    ("PULMO-COVID-P", "Probability of COVID-19 pneumonia pattern"),
    ("PULMO-QC-LUNGVOL", "Quality check: lung volume"),
    ("PULMO-QC-LOBES", "Quality check: five lobes"),
    ("PULMO-QC-COVER", "Quality check: lung coverage"),
    ("PULMO-QC-SPACING", "Quality check: slice spacing"),
    (
        "PULMO-QC-MASK",
        "Quality check: lobes model against the CT's lung",
    ),
    (
        "PULMO-QC-AERATED",
        "Quality check: aerated lung without lobe",
    ),
    ("PULMO-QC-SIDES", "Quality check: both lungs"),
    ("PULMO-QC-NOISE", "Quality check: image noise"),
    (
        "PULMO-QC-AIRWAY",
        "Quality check: airway told from the lung",
    ),
    ("PULMO-QC-AGENT", "Quality check: no contrast agent"),
    ("PULMO-PASS", "Passed"),
    ("PULMO-FAIL", "Failed"),
    ("PULMO-EP", "Execution provider"),
];

#[derive(Debug, Error)]
pub enum SrError {
    #[error(transparent)]
    Template(#[from] template::TemplateError),
    #[error("cannot write {path}: {message}")]
    Write { path: String, message: String },
}

/// Enhanced SR (read by OHIF and 3D Slicer) or Comprehensive 3D SR (IHE AI Results).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SrKind {
    Enhanced,
    Comprehensive3d,
}

impl SrKind {
    pub fn from_config(s: &str) -> SrKind {
        if s == "comprehensive3d" {
            SrKind::Comprehensive3d
        } else {
            SrKind::Enhanced
        }
    }

    pub fn sop_class(self) -> &'static str {
        match self {
            SrKind::Enhanced => uids::ENHANCED_SR_STORAGE,
            SrKind::Comprehensive3d => uids::COMPREHENSIVE3_DSR_STORAGE,
        }
    }
}

/// A SEG the report references.
#[derive(Debug, Clone)]
pub struct SegRef {
    pub series_uid: String,
    pub sop_instance_uid: String,
}

/// Everything one report says, as plain data.
pub struct ReportInput<'a> {
    pub source: &'a SourceSeries,
    pub findings: &'a Findings,
    pub models: &'a [ModelInfo],
    pub execution_provider: &'a str,
    /// The disclaimer every report carries (the models are synthetic-data reference models).
    pub note: &'a str,
    pub lobes_seg: SegRef,
    pub opacities_seg: SegRef,
    pub series_uid: String,
    pub sop_instance_uid: String,
    pub series_number: i32,
    pub kind: SrKind,
    /// SOP Instance UID of the CT slice where each lobe (by key) is largest, and where the lungs
    /// are: the "Source of Measurement" a viewer opens with each group.
    pub lobe_slices: std::collections::BTreeMap<String, Spot>,
    pub lung_slice: Spot,
}

/// Where a structure is shown: the slice (SOP Instance UID) where it is largest, and its centroid
/// there in image pixels (column, row).
#[derive(Debug, Clone, Default)]
pub struct Spot {
    pub sop_instance_uid: String,
    pub column: f64,
    pub row: f64,
}

fn lobe_codes(l: Lobe) -> (&'static str, &'static str, &'static str, &'static str) {
    let (site, side) = match l {
        Lobe::RightUpper => (codes::UPPER_LOBE_OF_LUNG, codes::RIGHT),
        Lobe::RightMiddle => (codes::MIDDLE_LOBE_OF_RIGHT_LUNG, codes::RIGHT),
        Lobe::RightLower => (codes::LOWER_LOBE_OF_LUNG, codes::RIGHT),
        Lobe::LeftUpper => (codes::UPPER_LOBE_OF_LUNG, codes::LEFT),
        Lobe::LeftLower => (codes::LOWER_LOBE_OF_LUNG, codes::LEFT),
    };
    (site.value, site.meaning, side.value, side.meaning)
}

/// A decimal string (DS, at most 16 characters) for a measurement.
fn ds(v: f64) -> String {
    let s = format!("{v:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.').to_string();
    if s.len() <= 16 { s } else { format!("{v:.6e}") }
}

fn qc_code(name: &str) -> &'static str {
    match name {
        "lung_volume" => "PULMO-QC-LUNGVOL",
        "five_lobes" => "PULMO-QC-LOBES",
        "lung_coverage" => "PULMO-QC-COVER",
        "slice_spacing" => "PULMO-QC-SPACING",
        "aerated_lung_without_lobe" => "PULMO-QC-AERATED",
        "both_lungs" => "PULMO-QC-SIDES",
        "noise" => "PULMO-QC-NOISE",
        "airway" => "PULMO-QC-AIRWAY",
        "contrast" => "PULMO-QC-AGENT",
        // "lobes_model_agreement"
        _ => "PULMO-QC-MASK",
    }
}

/// One loop iteration's values.
type Values = Vec<(&'static str, String)>;

impl ReportInput<'_> {
    fn tracking_uid(&self, what: &str) -> String {
        uid::from_name(&format!("{}/tracking/{what}", self.sop_instance_uid))
    }

    fn report_values(&self) -> Values {
        let f = self.findings;
        let w = &f.measurements.whole_lung;
        let model = |role: Role| {
            self.models
                .iter()
                .find(|m| m.role == role)
                .map(|m| format!("{} {}", m.name, m.version))
                .unwrap_or_else(|| "unknown".into())
        };
        let failed: Vec<&str> =
            f.qc.iter()
                .filter(|c| !c.passed)
                .map(|c| c.message.as_str())
                .collect();
        vec![
            ("language", "en-US".into()),
            ("device.uid", uid::from_name("pulmo/device/pulmo-1")),
            ("device.name", "pulmo".into()),
            ("device.manufacturer", "pulmo".into()),
            ("device.model", "pulmo".into()),
            ("device.serial", "pulmo-1".into()),
            ("device.version", env!("CARGO_PKG_VERSION").into()),
            (
                "algorithm",
                format!(
                    "pulmo {}; lobes: {}; opacities: {}; classifier: {}",
                    env!("CARGO_PKG_VERSION"),
                    model(Role::Lobes),
                    model(Role::Opacities),
                    model(Role::Covid)
                ),
            ),
            ("execution_provider", self.execution_provider.to_string()),
            ("note", self.note.to_string()),
            ("source.series_uid", self.source.series_instance_uid.clone()),
            ("source.sop_class", self.source.sop_class_uid.clone()),
            (
                "source.lung_slice",
                self.lung_slice.sop_instance_uid.clone(),
            ),
            ("source.lung_column", ds(self.lung_slice.column)),
            ("source.lung_row", ds(self.lung_slice.row)),
            ("lung.volume_ml", ds(w.volume_ml)),
            ("lung.plo_percent", ds(w.plo_percent)),
            ("lung.ctss_total", w.ctss_total.to_string()),
            ("lung.tracking_uid", self.tracking_uid("lung")),
            ("covid.probability", ds(f.covid_probability)),
            ("covid.tracking_uid", self.tracking_uid("covid")),
            (
                "qc.summary",
                if failed.is_empty() {
                    "all quality checks passed".into()
                } else {
                    format!(
                        "THE NUMBERS IN THIS REPORT ARE NOT RELIABLE: {}",
                        failed.join("; ")
                    )
                },
            ),
        ]
    }

    fn lobe_values(&self) -> Vec<Values> {
        Lobe::ALL
            .into_iter()
            .filter_map(|l| {
                let m = self.findings.measurements.lobes.get(l.key())?;
                let (code, meaning, side, side_meaning) = lobe_codes(l);
                let spot = self.lobe_slices.get(l.key()).unwrap_or(&self.lung_slice);
                Some(vec![
                    ("lobe.key", l.key().to_string()),
                    ("lobe.name", l.name().to_string()),
                    ("lobe.code", code.into()),
                    ("lobe.code_meaning", meaning.into()),
                    ("lobe.laterality_code", side.into()),
                    ("lobe.laterality_meaning", side_meaning.into()),
                    ("lobe.tracking_uid", self.tracking_uid(l.key())),
                    ("lobe.seg_sop_class", uids::SEGMENTATION_STORAGE.into()),
                    (
                        "lobe.seg_sop_instance",
                        self.lobes_seg.sop_instance_uid.clone(),
                    ),
                    ("lobe.segment", l.label().to_string()),
                    ("lobe.slice", spot.sop_instance_uid.clone()),
                    ("lobe.column", ds(spot.column)),
                    ("lobe.row", ds(spot.row)),
                    ("lobe.volume_ml", ds(m.volume_ml)),
                    ("lobe.plo_percent", ds(m.plo_percent)),
                    ("lobe.ggo_percent", ds(m.ggo_percent)),
                    ("lobe.consolidation_percent", ds(m.consolidation_percent)),
                    ("lobe.ctss", m.ctss.to_string()),
                ])
            })
            .collect()
    }

    fn check_values(&self) -> Vec<Values> {
        self.findings
            .qc
            .iter()
            .map(|c| {
                let (result, result_meaning) = if c.passed {
                    ("PULMO-PASS", "Passed")
                } else {
                    ("PULMO-FAIL", "Failed")
                };
                let name = qc_code(c.name);
                let meaning = PRIVATE_CODES
                    .iter()
                    .find(|(code, _)| *code == name)
                    .map_or(name, |(_, m)| *m);
                vec![
                    ("check.name", name.to_string()),
                    ("check.meaning", meaning.to_string()),
                    ("check.result_code", result.into()),
                    ("check.result_meaning", result_meaning.into()),
                    // TEXT is UT; the message stays short anyway.
                    ("check.message", c.message.clone()),
                ]
            })
            .collect()
    }

    fn image_values(&self) -> Vec<Values> {
        self.source
            .slices
            .iter()
            .flatten()
            .map(|(sop, _)| {
                vec![
                    ("image.sop_class", self.source.sop_class_uid.clone()),
                    ("image.sop_instance", sop.clone()),
                ]
            })
            .collect()
    }
}

/// Build one content item (and its children) with the values in scope.
fn content(it: &Item, values: &[&Values], input: &ReportInput<'_>) -> InMemDicomObject {
    let lookup = |name: &str| {
        values
            .iter()
            .rev()
            .find_map(|v| v.iter().find(|(k, _)| *k == name).map(|(_, x)| x.clone()))
    };
    let get = |k: &str| fill(it.attrs.get(k).map(String::as_str).unwrap_or(""), &lookup);
    let mut o = InMemDicomObject::new_empty();
    if let Some(rel) = &it.rel {
        put_str(&mut o, tags::RELATIONSHIP_TYPE, VR::CS, rel);
    }
    put_str(&mut o, tags::VALUE_TYPE, VR::CS, it.value_type.dicom());
    if let Some([c, s, m]) = &it.concept {
        let (c, s, m) = (fill(c, &lookup), fill(s, &lookup), fill(m, &lookup));
        put_seq(
            &mut o,
            tags::CONCEPT_NAME_CODE_SEQUENCE,
            vec![code_item(&c, &s, &m)],
        );
    }
    match it.value_type {
        ValueType::Container => {
            put_str(
                &mut o,
                tags::CONTINUITY_OF_CONTENT,
                VR::CS,
                it.attrs
                    .get("continuity")
                    .map(String::as_str)
                    .unwrap_or("SEPARATE"),
            );
            if let Some(t) = it.attrs.get("template") {
                put_seq(
                    &mut o,
                    tags::CONTENT_TEMPLATE_SEQUENCE,
                    vec![item(|i| {
                        put_str(i, tags::MAPPING_RESOURCE, VR::CS, "DCMR");
                        put_str(i, tags::TEMPLATE_IDENTIFIER, VR::CS, t);
                    })],
                );
            }
        }
        ValueType::Text => put_str(&mut o, tags::TEXT_VALUE, VR::UT, &get("value")),
        ValueType::UidRef => put_str(&mut o, tags::UID, VR::UI, &get("value")),
        ValueType::Code => put_seq(
            &mut o,
            tags::CONCEPT_CODE_SEQUENCE,
            vec![code_item(
                &get("value-code"),
                &get("value-scheme"),
                &get("value-meaning"),
            )],
        ),
        ValueType::Num => {
            let (unit, unit_meaning) = (get("unit-code"), get("unit-meaning"));
            let value = get("value");
            put_seq(
                &mut o,
                tags::MEASURED_VALUE_SEQUENCE,
                vec![item(|m| {
                    put_seq(
                        m,
                        tags::MEASUREMENT_UNITS_CODE_SEQUENCE,
                        vec![code_item(&unit, "UCUM", &unit_meaning)],
                    );
                    put_str(m, tags::NUMERIC_VALUE, VR::DS, &value);
                })],
            );
        }
        ValueType::Scoord => {
            put_str(&mut o, tags::GRAPHIC_TYPE, VR::CS, &get("graphic-type"));
            // Column and row pairs, separated by backslashes as DICOM writes them.
            let points: Vec<f32> = get("graphic-data")
                .split('\\')
                .filter_map(|v| v.trim().parse::<f32>().ok())
                .collect();
            o.put(DataElement::new(
                tags::GRAPHIC_DATA,
                VR::FL,
                PrimitiveValue::F32(points.into()),
            ));
        }
        ValueType::Image => {
            let segment = it.attrs.contains_key("segment").then(|| get("segment"));
            let (class, instance) = (get("sop-class"), get("sop-instance"));
            put_seq(
                &mut o,
                tags::REFERENCED_SOP_SEQUENCE,
                vec![item(|r| {
                    put_str(r, tags::REFERENCED_SOP_CLASS_UID, VR::UI, &class);
                    put_str(r, tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, &instance);
                    if let Some(n) = segment.as_deref().and_then(|s| s.parse::<u16>().ok()) {
                        r.put(DataElement::new(
                            tags::REFERENCED_SEGMENT_NUMBER,
                            VR::US,
                            PrimitiveValue::from(n),
                        ));
                    }
                })],
            );
        }
    }
    let children = expand(&it.children, values, input);
    if !children.is_empty() {
        put_seq(&mut o, tags::CONTENT_SEQUENCE, children);
    }
    o
}

fn expand(nodes: &[Node], values: &[&Values], input: &ReportInput<'_>) -> Vec<InMemDicomObject> {
    let mut out = Vec::new();
    for n in nodes {
        match n {
            Node::Item(i) => out.push(content(i, values, input)),
            Node::ForEach { scope, children } => {
                let rows = match scope {
                    Scope::Lobe => input.lobe_values(),
                    Scope::Check => input.check_values(),
                    Scope::Image => input.image_values(),
                    Scope::Report => Vec::new(),
                };
                for row in &rows {
                    let mut v: Vec<&Values> = values.to_vec();
                    v.push(row);
                    out.extend(expand(children, &v, input));
                }
            }
        }
    }
    out
}

fn code_item(value: &str, scheme: &str, meaning: &str) -> InMemDicomObject {
    item(|i| {
        put_str(i, tags::CODE_VALUE, VR::SH, value);
        put_str(i, tags::CODING_SCHEME_DESIGNATOR, VR::SH, scheme);
        put_str(i, tags::CODE_MEANING, VR::LO, meaning);
    })
}

/// The whole SR data set.
pub fn build(template: &Template, input: &ReportInput<'_>) -> InMemDicomObject {
    let s = input.source;
    let report = input.report_values();
    let mut o = content(&template.root, &[&report], input);
    put_patient_study(&mut o, s);
    put_equipment(&mut o);
    put_instance_header(
        &mut o,
        &InstanceHeader {
            sop_class_uid: input.kind.sop_class(),
            sop_instance_uid: &input.sop_instance_uid,
            modality: "SR",
            series_uid: &input.series_uid,
            series_number: input.series_number,
            series_description: "pulmo lung report (SR, unverified)",
        },
    );
    put_seq(
        &mut o,
        tags::REFERENCED_PERFORMED_PROCEDURE_STEP_SEQUENCE,
        vec![],
    );
    put_str(&mut o, tags::COMPLETION_FLAG, VR::CS, "COMPLETE");
    put_str(&mut o, tags::VERIFICATION_FLAG, VR::CS, "UNVERIFIED");
    put_seq(&mut o, tags::PERFORMED_PROCEDURE_CODE_SEQUENCE, vec![]);
    // The CT instances and both SEGs: 3D Slicer finds the SEGs through this.
    let series = |uid: &str, class: &str, instances: Vec<String>| {
        item(|se| {
            put_str(se, tags::SERIES_INSTANCE_UID, VR::UI, uid);
            put_seq(
                se,
                tags::REFERENCED_SOP_SEQUENCE,
                instances
                    .iter()
                    .map(|i| {
                        item(|r| {
                            put_str(r, tags::REFERENCED_SOP_CLASS_UID, VR::UI, class);
                            put_str(r, tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, i);
                        })
                    })
                    .collect(),
            );
        })
    };
    let mut ct: Vec<String> = s.slices.iter().flatten().map(|(i, _)| i.clone()).collect();
    ct.dedup();
    let evidence = item(|st| {
        put_str(st, tags::STUDY_INSTANCE_UID, VR::UI, &s.study_instance_uid);
        put_seq(
            st,
            tags::REFERENCED_SERIES_SEQUENCE,
            vec![
                series(&s.series_instance_uid, &s.sop_class_uid, ct),
                series(
                    &input.lobes_seg.series_uid,
                    uids::SEGMENTATION_STORAGE,
                    vec![input.lobes_seg.sop_instance_uid.clone()],
                ),
                series(
                    &input.opacities_seg.series_uid,
                    uids::SEGMENTATION_STORAGE,
                    vec![input.opacities_seg.sop_instance_uid.clone()],
                ),
            ],
        );
    });
    put_seq(
        &mut o,
        tags::CURRENT_REQUESTED_PROCEDURE_EVIDENCE_SEQUENCE,
        vec![evidence],
    );
    put_seq(
        &mut o,
        tags::CODING_SCHEME_IDENTIFICATION_SEQUENCE,
        vec![item(|c| {
            put_str(c, tags::CODING_SCHEME_DESIGNATOR, VR::SH, PRIVATE_SCHEME);
            put_str(
                c,
                tags::CODING_SCHEME_NAME,
                VR::ST,
                "pulmo private concepts",
            );
            put_str(
                c,
                tags::CODING_SCHEME_RESPONSIBLE_ORGANIZATION,
                VR::ST,
                "pulmo project",
            );
        })],
    );
    o
}

/// Write the SR to `path` (explicit VR little endian), through a temporary file.
pub fn write(obj: InMemDicomObject, kind: SrKind, sop: &str, path: &Path) -> Result<(), SrError> {
    write_part10(obj, kind.sop_class(), sop, path).map_err(|message| SrError::Write {
        path: path.display().to_string(),
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_quality_check_has_its_own_private_code() {
        let names = [
            "lung_volume",
            "five_lobes",
            "lung_coverage",
            "slice_spacing",
            "lobes_model_agreement",
            "aerated_lung_without_lobe",
            "airway",
            "contrast",
            "both_lungs",
            "noise",
        ];
        let codes: std::collections::BTreeSet<&str> = names.iter().map(|n| qc_code(n)).collect();
        assert_eq!(codes.len(), names.len());
        for c in codes {
            assert!(PRIVATE_CODES.iter().any(|(code, _)| *code == c), "{c}");
        }
        // Code Value is SH: at most 16 characters.
        for (code, _) in PRIVATE_CODES {
            assert!(code.len() <= 16, "{code}");
        }
    }
}
