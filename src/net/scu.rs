//! SCU operations: C-ECHO (and, with the delivery work, C-STORE).

use std::time::Duration;

use dicom_dictionary_std::uids;
use dicom_ul::Pdu;
use dicom_ul::association::client::ClientAssociationOptions;
use dicom_ul::pdu::{PDataValue, PDataValueType};
use thiserror::Error;

use super::dimse::{self, Command};

#[derive(Debug, Error)]
pub enum ScuError {
    #[error("cannot associate with {target}: {message}")]
    Associate { target: String, message: String },
    #[error("{target}: {message}")]
    Protocol { target: String, message: String },
}

/// Verify `target` ("AE@host:port") with C-ECHO; returns the response status.
pub fn echo(target: &str, calling_ae: &str, timeout: Duration) -> Result<u16, ScuError> {
    let err = |message: String| ScuError::Protocol {
        target: target.to_string(),
        message,
    };
    let mut a = ClientAssociationOptions::new()
        .with_abstract_syntax(uids::VERIFICATION)
        .calling_ae_title(calling_ae)
        .read_timeout(timeout)
        .write_timeout(timeout)
        .establish_with(target)
        .map_err(|e| ScuError::Associate {
            target: target.to_string(),
            message: e.to_string(),
        })?;
    let pc = a
        .presentation_contexts()
        .first()
        .map(|p| p.id)
        .ok_or_else(|| err("no presentation context accepted for Verification".into()))?;
    let rq = Command {
        field: dimse::C_ECHO_RQ,
        affected_sop_class_uid: Some(uids::VERIFICATION.into()),
        message_id: Some(1),
        data_set_type: dimse::NO_DATA_SET,
        ..Command::default()
    };
    a.send(&Pdu::PData {
        data: vec![PDataValue {
            presentation_context_id: pc,
            value_type: PDataValueType::Command,
            is_last: true,
            data: rq.encode(),
        }],
    })
    .map_err(|e| err(e.to_string()))?;
    let mut bytes = Vec::new();
    loop {
        match a.receive().map_err(|e| err(e.to_string()))? {
            Pdu::PData { data } => {
                let mut done = false;
                for v in data {
                    bytes.extend_from_slice(&v.data);
                    done |= v.is_last && v.value_type == PDataValueType::Command;
                }
                if done {
                    break;
                }
            }
            other => return Err(err(format!("unexpected {}", other.short_description()))),
        }
    }
    let rsp = Command::decode(&bytes).map_err(|e| err(e.to_string()))?;
    let _ = a.release();
    rsp.status
        .ok_or_else(|| err("C-ECHO response without a status".into()))
}
