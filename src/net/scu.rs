//! SCU operations: C-ECHO, and C-STORE of Part 10 files over one association per call.
//!
//! C-STORE proposes one presentation context per (SOP class, transfer syntax) the files need: a
//! compressed syntax alone (the file is sent as it is), an uncompressed one together with the
//! other uncompressed syntaxes (the data set is re-encoded if the destination picks another).
//! Every file gets its own outcome, with a reason in words when it was not stored.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use dicom_core::dictionary::{UidDictionary, UidDictionaryEntry};
use dicom_dictionary_std::{StandardSopClassDictionary, uids};
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::FileMetaTable;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use dicom_ul::Pdu;
use dicom_ul::association::client::{ClientAssociation, ClientAssociationOptions};
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

/// The name of a SOP class for messages ("Segmentation Storage"), or its UID when unknown.
pub fn sop_class_name(uid: &str) -> String {
    StandardSopClassDictionary
        .by_uid(uid)
        .map(|e| e.name().to_string())
        .unwrap_or_else(|| uid.to_string())
}

fn syntax_name(uid: &str) -> String {
    TransferSyntaxRegistry
        .get(uid)
        .map(|t| t.name().to_string())
        .unwrap_or_else(|| uid.to_string())
}

const UNCOMPRESSED: [&str; 2] = [
    uids::EXPLICIT_VR_LITTLE_ENDIAN,
    uids::IMPLICIT_VR_LITTLE_ENDIAN,
];

/// Verify `target` ("AE@host:port") with C-ECHO; returns the response status.
pub fn echo(target: &str, calling_ae: &str, timeout: Duration) -> Result<u16, ScuError> {
    let err = |message: String| ScuError::Protocol {
        target: target.to_string(),
        message,
    };
    let mut a = associate(
        target,
        calling_ae,
        timeout,
        &[(uids::VERIFICATION.to_string(), vec![])],
    )?;
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
    send_command(&mut a, pc, &rq).map_err(err)?;
    let rsp = receive_command(&mut a).map_err(err)?;
    let _ = a.release();
    rsp.status
        .ok_or_else(|| err("C-ECHO response without a status".into()))
}

fn associate(
    target: &str,
    calling_ae: &str,
    timeout: Duration,
    contexts: &[(String, Vec<String>)],
) -> Result<ClientAssociation<TcpStream>, ScuError> {
    let mut options = ClientAssociationOptions::new()
        .calling_ae_title(calling_ae)
        .max_pdu_length(65536)
        .read_timeout(timeout)
        .write_timeout(timeout)
        .connection_timeout(timeout);
    for (sop, syntaxes) in contexts {
        options = if syntaxes.is_empty() {
            options.with_abstract_syntax(sop.as_str())
        } else {
            options.with_presentation_context(
                sop.as_str(),
                syntaxes.iter().map(String::as_str).collect(),
            )
        };
    }
    let mut a = options
        .establish_with(target)
        .map_err(|e| ScuError::Associate {
            target: target.to_string(),
            message: match e {
                dicom_ul::association::Error::NoAcceptedPresentationContexts { .. } => {
                    no_context_reason(contexts)
                }
                other => other.to_string(),
            },
        })?;
    a.inner_stream().set_nodelay(true).ok();
    Ok(a)
}

fn no_context_reason(contexts: &[(String, Vec<String>)]) -> String {
    let mut names: Vec<String> = contexts.iter().map(|(s, _)| sop_class_name(s)).collect();
    names.dedup();
    format!(
        "destination accepted no presentation context for {}",
        names.join(", ")
    )
}

fn send_command(a: &mut ClientAssociation<TcpStream>, pc: u8, cmd: &Command) -> Result<(), String> {
    a.send(&Pdu::PData {
        data: vec![PDataValue {
            presentation_context_id: pc,
            value_type: PDataValueType::Command,
            is_last: true,
            data: cmd.encode(),
        }],
    })
    .map_err(|e| e.to_string())
}

fn receive_command(a: &mut ClientAssociation<TcpStream>) -> Result<Command, String> {
    let mut bytes = Vec::new();
    loop {
        match a.receive().map_err(|e| e.to_string())? {
            Pdu::PData { data } => {
                let mut done = false;
                for v in data {
                    if v.value_type == PDataValueType::Command {
                        bytes.extend_from_slice(&v.data);
                        done |= v.is_last;
                    }
                }
                if done {
                    break;
                }
            }
            Pdu::AbortRQ { source } => return Err(format!("destination aborted ({source:?})")),
            other => return Err(format!("unexpected {}", other.short_description())),
        }
    }
    Command::decode(&bytes).map_err(|e| e.to_string())
}

/// A Part 10 file ready to send.
struct Outgoing {
    sop_class_uid: String,
    sop_instance_uid: String,
    transfer_syntax_uid: String,
}

fn read_meta(path: &Path) -> Result<Outgoing, String> {
    let mut f = std::fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let mut preamble = [0u8; 128];
    f.read_exact(&mut preamble)
        .map_err(|_| "not a DICOM Part 10 file (too short)".to_string())?;
    let meta = FileMetaTable::from_reader(std::io::BufReader::new(f))
        .map_err(|e| format!("not a DICOM Part 10 file: {e}"))?;
    let t = |s: &str| s.trim_end_matches(['\0', ' ']).to_string();
    Ok(Outgoing {
        sop_class_uid: t(&meta.media_storage_sop_class_uid),
        sop_instance_uid: t(&meta.media_storage_sop_instance_uid),
        transfer_syntax_uid: t(&meta.transfer_syntax),
    })
}

/// The data set of a Part 10 file in `ts`: the file's own bytes when it is already in `ts`, else
/// re-encoded (only between uncompressed syntaxes, which is all that is proposed that way).
fn data_set(path: &Path, file_ts: &str, ts: &str) -> Result<Vec<u8>, String> {
    if file_ts == ts {
        let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
        if bytes.len() < 144 || &bytes[128..132] != b"DICM" {
            return Err("not a DICOM Part 10 file".into());
        }
        // (0002,0000) FileMetaInformationGroupLength, explicit VR: its value ends at byte 144.
        let group_len = u32::from_le_bytes([bytes[140], bytes[141], bytes[142], bytes[143]]);
        let start = 144usize.saturating_add(group_len as usize);
        return bytes
            .get(start..)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| "file meta group longer than the file".into());
    }
    // Sent as it is above; parsed here, so checked first (a hostile file must not take the
    // sender down either).
    crate::dataset::check_file(path, crate::dataset::MAX_FILE_BYTES)
        .map_err(|e| format!("malformed: {e}"))?;
    let obj = dicom_object::open_file(path).map_err(|e| format!("cannot parse: {e}"))?;
    let target = TransferSyntaxRegistry
        .get(ts)
        .ok_or_else(|| format!("unknown transfer syntax {ts}"))?;
    let mut out = Vec::new();
    obj.write_dataset_with_ts(&mut out, target)
        .map_err(|e| format!("cannot re-encode in {}: {e}", target.name()))?;
    Ok(out)
}

/// One file's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreOutcome {
    /// Stored; a warning status (Bxxx) is reported but counts as stored.
    Stored { status: u16 },
    /// Not stored. `permanent` when trying again cannot help until something is changed (the
    /// destination accepts no presentation context for it, or the file cannot be read).
    Failed { reason: String, permanent: bool },
}

/// C-STORE `files` to `target` over one association; one outcome per file, in order. An error
/// means no association could be made at all (nothing was sent).
pub fn store(
    target: &str,
    calling_ae: &str,
    files: &[PathBuf],
    timeout: Duration,
) -> Result<Vec<StoreOutcome>, ScuError> {
    let metas: Vec<Result<Outgoing, String>> = files.iter().map(|p| read_meta(p)).collect();
    // One presentation context per (SOP class, transfer syntax) needed.
    let mut contexts: Vec<(String, Vec<String>)> = Vec::new();
    for m in metas.iter().flatten() {
        let syntaxes: Vec<String> = if UNCOMPRESSED.contains(&m.transfer_syntax_uid.as_str()) {
            std::iter::once(m.transfer_syntax_uid.as_str())
                .chain(
                    UNCOMPRESSED
                        .into_iter()
                        .filter(|t| *t != m.transfer_syntax_uid),
                )
                .map(String::from)
                .collect()
        } else {
            vec![m.transfer_syntax_uid.clone()]
        };
        if !contexts
            .iter()
            .any(|(s, t)| *s == m.sop_class_uid && t[0] == syntaxes[0])
        {
            contexts.push((m.sop_class_uid.clone(), syntaxes));
        }
    }
    let unreadable = |r: &Result<Outgoing, String>| match r {
        Err(reason) => Some(StoreOutcome::Failed {
            reason: reason.clone(),
            permanent: true,
        }),
        Ok(_) => None,
    };
    if contexts.is_empty() {
        return Ok(metas
            .iter()
            .map(|m| {
                unreadable(m).unwrap_or(StoreOutcome::Failed {
                    reason: "nothing to send".into(),
                    permanent: true,
                })
            })
            .collect());
    }
    let mut a = associate(target, calling_ae, timeout, &contexts)?;
    let accepted = a.presentation_contexts().to_vec();
    let mut outcomes = Vec::with_capacity(files.len());
    let mut message_id: u16 = 0;
    for (path, meta) in files.iter().zip(&metas) {
        let m = match meta {
            Ok(m) => m,
            Err(_) => {
                outcomes.extend(unreadable(meta));
                continue;
            }
        };
        let uncompressed = UNCOMPRESSED.contains(&m.transfer_syntax_uid.as_str());
        // The file's own syntax if accepted, else another uncompressed one for an uncompressed file.
        let pc = accepted
            .iter()
            .filter(|pc| pc.abstract_syntax.trim_end_matches('\0') == m.sop_class_uid)
            .map(|pc| (pc, pc.transfer_syntax.trim_end_matches('\0').to_string()))
            .find(|(_, ts)| {
                *ts == m.transfer_syntax_uid
                    || (uncompressed && UNCOMPRESSED.contains(&ts.as_str()))
            });
        let Some((pc, ts)) = pc else {
            outcomes.push(StoreOutcome::Failed {
                reason: format!(
                    "destination accepted no presentation context for {} in {}",
                    sop_class_name(&m.sop_class_uid),
                    syntax_name(&m.transfer_syntax_uid)
                ),
                permanent: true,
            });
            continue;
        };
        let data = match data_set(path, &m.transfer_syntax_uid, &ts) {
            Ok(d) => d,
            Err(reason) => {
                outcomes.push(StoreOutcome::Failed {
                    reason,
                    permanent: true,
                });
                continue;
            }
        };
        message_id = message_id.wrapping_add(1);
        let rq = Command {
            field: dimse::C_STORE_RQ,
            affected_sop_class_uid: Some(m.sop_class_uid.clone()),
            message_id: Some(message_id),
            priority: Some(0),
            data_set_type: dimse::DATA_SET_PRESENT,
            affected_sop_instance_uid: Some(m.sop_instance_uid.clone()),
            ..Command::default()
        };
        let sent = send_command(&mut a, pc.id, &rq).and_then(|()| {
            let mut w = a.send_pdata(pc.id);
            w.write_all(&data).map_err(|e| e.to_string())?;
            w.finish().map_err(|e| e.to_string())
        });
        let rsp = sent.and_then(|()| receive_command(&mut a));
        match rsp {
            Ok(rsp) => {
                let status = rsp.status.unwrap_or(0xFFFF);
                outcomes.push(if status == 0 || status & 0xF000 == 0xB000 {
                    StoreOutcome::Stored { status }
                } else {
                    StoreOutcome::Failed {
                        reason: format!(
                            "destination answered status 0x{status:04X}{}",
                            rsp.error_comment
                                .map(|c| format!(" ({c})"))
                                .unwrap_or_default()
                        ),
                        permanent: false,
                    }
                });
            }
            Err(e) => {
                // The association is broken: this file and every one after it are not stored.
                let reason = format!("association lost: {e}");
                outcomes.push(StoreOutcome::Failed {
                    reason: reason.clone(),
                    permanent: false,
                });
                for _ in outcomes.len()..files.len() {
                    outcomes.push(StoreOutcome::Failed {
                        reason: reason.clone(),
                        permanent: false,
                    });
                }
                let _ = a.abort();
                return Ok(outcomes);
            }
        }
    }
    let _ = a.release();
    Ok(outcomes)
}
