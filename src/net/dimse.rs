//! DIMSE command sets (PS3.7 section 9.3 and annex E): group 0000 elements in implicit VR little
//! endian, led by CommandGroupLength. Written by hand because dicom-ul has no DIMSE layer; a
//! command set is a short, flat list of fixed tags, so a dedicated codec is simpler and stricter
//! than a general dataset parser.

use thiserror::Error;

pub const C_STORE_RQ: u16 = 0x0001;
pub const C_STORE_RSP: u16 = 0x8001;
pub const C_ECHO_RQ: u16 = 0x0030;
pub const C_ECHO_RSP: u16 = 0x8030;

/// CommandDataSetType: no dataset follows.
pub const NO_DATA_SET: u16 = 0x0101;
/// CommandDataSetType: a dataset follows (any other value than 0x0101 means so).
pub const DATA_SET_PRESENT: u16 = 0x0000;

/// Status codes pulmo sends (PS3.7 annex C and PS3.4 B.2.3).
pub mod status {
    pub const SUCCESS: u16 = 0x0000;
    /// Refused: out of resources.
    pub const OUT_OF_RESOURCES: u16 = 0xA700;
    /// Error: data set does not match SOP class.
    pub const DATA_SET_DOES_NOT_MATCH: u16 = 0xA900;
    /// Error: cannot understand.
    pub const CANNOT_UNDERSTAND: u16 = 0xC000;
    /// Refused: SOP class not supported.
    pub const SOP_CLASS_NOT_SUPPORTED: u16 = 0x0122;
}

const GROUP_LENGTH: u16 = 0x0000;
const AFFECTED_SOP_CLASS_UID: u16 = 0x0002;
const COMMAND_FIELD: u16 = 0x0100;
const MESSAGE_ID: u16 = 0x0110;
const MESSAGE_ID_RESPONDED_TO: u16 = 0x0120;
const PRIORITY: u16 = 0x0700;
const COMMAND_DATA_SET_TYPE: u16 = 0x0800;
const STATUS: u16 = 0x0900;
const ERROR_COMMENT: u16 = 0x0902;
const AFFECTED_SOP_INSTANCE_UID: u16 = 0x1000;
const MOVE_ORIGINATOR_AE: u16 = 0x1030;
const MOVE_ORIGINATOR_MESSAGE_ID: u16 = 0x1031;

#[derive(Debug, Error, PartialEq)]
pub enum DimseError {
    #[error("command set is truncated at byte {0}")]
    Truncated(usize),
    #[error("command set element ({0:04X},{1:04X}) is not in group 0000")]
    NotCommandGroup(u16, u16),
    #[error("command set has no CommandField")]
    NoCommandField,
    #[error("command set element (0000,{0:04X}) has length {1}, expected {2}")]
    BadLength(u16, usize, usize),
}

/// The command elements pulmo reads and writes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Command {
    pub field: u16,
    pub affected_sop_class_uid: Option<String>,
    pub message_id: Option<u16>,
    pub message_id_responded_to: Option<u16>,
    pub priority: Option<u16>,
    pub data_set_type: u16,
    pub status: Option<u16>,
    pub error_comment: Option<String>,
    pub affected_sop_instance_uid: Option<String>,
    pub move_originator_ae: Option<String>,
    pub move_originator_message_id: Option<u16>,
}

impl Command {
    pub fn has_data_set(&self) -> bool {
        self.data_set_type != NO_DATA_SET
    }

    /// The response to a request, with `status`.
    pub fn response(&self, field: u16, status: u16) -> Command {
        Command {
            field,
            affected_sop_class_uid: self.affected_sop_class_uid.clone(),
            message_id_responded_to: self.message_id,
            data_set_type: NO_DATA_SET,
            status: Some(status),
            affected_sop_instance_uid: self.affected_sop_instance_uid.clone(),
            ..Command::default()
        }
    }

    /// Encode as implicit VR little endian, with CommandGroupLength first.
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::new();
        let ui = |body: &mut Vec<u8>, el: u16, v: &str| {
            let mut bytes = v.as_bytes().to_vec();
            if bytes.len() % 2 == 1 {
                bytes.push(0); // UI pads with NUL
            }
            put(body, el, &bytes);
        };
        let cs = |body: &mut Vec<u8>, el: u16, v: &str| {
            let mut bytes = v.as_bytes().to_vec();
            if bytes.len() % 2 == 1 {
                bytes.push(b' ');
            }
            put(body, el, &bytes);
        };
        let us = |body: &mut Vec<u8>, el: u16, v: u16| put(body, el, &v.to_le_bytes());
        // Elements in ascending tag order.
        if let Some(v) = &self.affected_sop_class_uid {
            ui(&mut body, AFFECTED_SOP_CLASS_UID, v);
        }
        us(&mut body, COMMAND_FIELD, self.field);
        if let Some(v) = self.message_id {
            us(&mut body, MESSAGE_ID, v);
        }
        if let Some(v) = self.message_id_responded_to {
            us(&mut body, MESSAGE_ID_RESPONDED_TO, v);
        }
        if let Some(v) = self.priority {
            us(&mut body, PRIORITY, v);
        }
        us(&mut body, COMMAND_DATA_SET_TYPE, self.data_set_type);
        if let Some(v) = self.status {
            us(&mut body, STATUS, v);
        }
        if let Some(v) = &self.error_comment {
            // LO, at most 64 characters.
            let v: String = v
                .chars()
                .filter(|c| c.is_ascii() && *c != '\\')
                .take(64)
                .collect();
            cs(&mut body, ERROR_COMMENT, &v);
        }
        if let Some(v) = &self.affected_sop_instance_uid {
            ui(&mut body, AFFECTED_SOP_INSTANCE_UID, v);
        }
        if let Some(v) = &self.move_originator_ae {
            cs(&mut body, MOVE_ORIGINATOR_AE, v);
        }
        if let Some(v) = self.move_originator_message_id {
            us(&mut body, MOVE_ORIGINATOR_MESSAGE_ID, v);
        }
        let mut out = Vec::with_capacity(body.len() + 12);
        put(&mut out, GROUP_LENGTH, &(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// Decode a command set. Unknown group 0000 elements are skipped.
    pub fn decode(bytes: &[u8]) -> Result<Command, DimseError> {
        let mut c = Command {
            data_set_type: NO_DATA_SET,
            ..Command::default()
        };
        let mut field = None;
        let mut at = 0;
        while at < bytes.len() {
            if at + 8 > bytes.len() {
                return Err(DimseError::Truncated(at));
            }
            let group = u16::from_le_bytes([bytes[at], bytes[at + 1]]);
            let el = u16::from_le_bytes([bytes[at + 2], bytes[at + 3]]);
            let len =
                u32::from_le_bytes([bytes[at + 4], bytes[at + 5], bytes[at + 6], bytes[at + 7]])
                    as usize;
            if group != 0 {
                return Err(DimseError::NotCommandGroup(group, el));
            }
            let start = at + 8;
            let end = start.checked_add(len).ok_or(DimseError::Truncated(start))?;
            if end > bytes.len() {
                return Err(DimseError::Truncated(start));
            }
            let v = &bytes[start..end];
            let us = || -> Result<u16, DimseError> {
                if v.len() != 2 {
                    return Err(DimseError::BadLength(el, v.len(), 2));
                }
                Ok(u16::from_le_bytes([v[0], v[1]]))
            };
            let text = || {
                String::from_utf8_lossy(v)
                    .trim_end_matches(['\0', ' '])
                    .to_string()
            };
            match el {
                AFFECTED_SOP_CLASS_UID => c.affected_sop_class_uid = Some(text()),
                COMMAND_FIELD => field = Some(us()?),
                MESSAGE_ID => c.message_id = Some(us()?),
                MESSAGE_ID_RESPONDED_TO => c.message_id_responded_to = Some(us()?),
                PRIORITY => c.priority = Some(us()?),
                COMMAND_DATA_SET_TYPE => c.data_set_type = us()?,
                STATUS => c.status = Some(us()?),
                ERROR_COMMENT => c.error_comment = Some(text()),
                AFFECTED_SOP_INSTANCE_UID => c.affected_sop_instance_uid = Some(text()),
                MOVE_ORIGINATOR_AE => c.move_originator_ae = Some(text()),
                MOVE_ORIGINATOR_MESSAGE_ID => c.move_originator_message_id = Some(us()?),
                _ => {}
            }
            at = end;
        }
        c.field = field.ok_or(DimseError::NoCommandField)?;
        Ok(c)
    }
}

fn put(out: &mut Vec<u8>, element: u16, value: &[u8]) {
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&element.to_le_bytes());
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(value);
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_dictionary_std::tags;
    use dicom_object::InMemDicomObject;
    use dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN;

    fn store_rq() -> Command {
        Command {
            field: C_STORE_RQ,
            affected_sop_class_uid: Some("1.2.840.10008.5.1.4.1.1.2".into()),
            message_id: Some(7),
            priority: Some(0),
            data_set_type: DATA_SET_PRESENT,
            affected_sop_instance_uid: Some("1.2.3.4.5".into()),
            ..Command::default()
        }
    }

    #[test]
    fn round_trip() {
        let c = store_rq();
        assert_eq!(Command::decode(&c.encode()), Ok(c.clone()));
        let r = c.response(C_STORE_RSP, status::SUCCESS);
        let d = Command::decode(&r.encode()).expect("decode");
        assert_eq!(d.message_id_responded_to, Some(7));
        assert!(!d.has_data_set());
        assert_eq!(d.status, Some(0));
    }

    /// dicom-rs, an independent encoder, reads what we write, group length included.
    #[test]
    fn dicom_rs_reads_our_encoding() {
        let bytes = store_rq()
            .response(C_STORE_RSP, status::CANNOT_UNDERSTAND)
            .encode();
        let obj = InMemDicomObject::read_dataset_with_ts(
            bytes.as_slice(),
            &IMPLICIT_VR_LITTLE_ENDIAN.erased(),
        )
        .expect("dicom-rs parses");
        let len = obj
            .element(tags::COMMAND_GROUP_LENGTH)
            .expect("len")
            .to_int::<u32>()
            .expect("u32");
        assert_eq!(len as usize, bytes.len() - 12);
        assert_eq!(
            obj.element(tags::STATUS)
                .expect("status")
                .to_int::<u16>()
                .expect("u16"),
            0xC000
        );
        assert_eq!(
            obj.element(tags::AFFECTED_SOP_INSTANCE_UID)
                .expect("uid")
                .to_str()
                .expect("str"),
            "1.2.3.4.5"
        );
    }

    #[test]
    fn hostile_bytes_are_errors_not_panics() {
        assert_eq!(Command::decode(&[0, 0, 0]), Err(DimseError::Truncated(0)));
        assert!(matches!(
            Command::decode(&[8, 0, 0x10, 0, 2, 0, 0, 0, 1, 2]),
            Err(DimseError::NotCommandGroup(8, 0x10))
        ));
        assert_eq!(
            Command::decode(&[0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff]),
            Err(DimseError::Truncated(8))
        );
        assert_eq!(Command::decode(&[]), Err(DimseError::NoCommandField));
        let mut state = 1u32;
        for _ in 0..2000 {
            let n = (state % 64) as usize;
            let bytes: Vec<u8> = (0..n)
                .map(|_| {
                    state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (state >> 16) as u8
                })
                .collect();
            let _ = Command::decode(&bytes);
        }
    }
}
