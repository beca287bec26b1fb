//! PDUs of an established association read straight from the socket: a P-DATA-TF PDU's values
//! each into their own buffer, with no copy in between; every other PDU read whole and parsed by
//! dicom-ul.
//!
//! Hand-written because dicom-ul's reader copies every PDV twice on its way (into its read
//! buffer, then out of it), and reads the socket 8 KiB at a time: those copies were a fifth of
//! the node's CPU while receiving a study over four associations (perf; BENCHMARKS.md,
//! "Receiving").

use std::io::Read;

use dicom_ul::Pdu;
use dicom_ul::pdu::{PDataValue, PDataValueType};
use thiserror::Error;

/// PDU type of P-DATA-TF (PS3.8 9.3.1).
const P_DATA_TF: u8 = 0x04;

#[derive(Debug, Error)]
pub enum PduError {
    #[error("cannot read from the peer: {0}")]
    Io(#[from] std::io::Error),
    #[error("a PDU of {len} bytes, longer than the {max} bytes negotiated")]
    TooLong { len: u32, max: u32 },
    #[error("malformed P-DATA-TF PDU: {0}")]
    Malformed(&'static str),
    #[error("malformed PDU: {0}")]
    Unparsable(String),
}

/// What came in: the values of a P-DATA-TF, or any other PDU.
#[derive(Debug)]
pub enum Incoming {
    PData(Vec<PDataValue>),
    Other(Pdu),
}

/// Read the next PDU. A PDU longer than `max_pdu_length` (the length this node announced) is
/// refused before any of it is read into memory.
pub fn read_pdu(stream: &mut impl Read, max_pdu_length: u32) -> Result<Incoming, PduError> {
    let mut head = [0u8; 6];
    stream.read_exact(&mut head)?;
    let len = u32::from_be_bytes([head[2], head[3], head[4], head[5]]);
    if len > max_pdu_length {
        return Err(PduError::TooLong {
            len,
            max: max_pdu_length,
        });
    }
    if head[0] != P_DATA_TF {
        let mut whole = head.to_vec();
        read_exactly(stream, len as usize, &mut whole)?;
        return match dicom_ul::pdu::read_pdu(&whole[..], max_pdu_length, true) {
            Ok(Some(pdu)) => Ok(Incoming::Other(pdu)),
            Ok(None) => Err(PduError::Unparsable("incomplete".into())),
            Err(e) => Err(PduError::Unparsable(e.to_string())),
        };
    }
    let mut left = len as usize;
    let mut values = Vec::new();
    while left > 0 {
        // Item length (4 bytes, counting what follows it), context ID, message control header.
        if left < 6 {
            return Err(PduError::Malformed("a PDV item shorter than its header"));
        }
        let mut item = [0u8; 6];
        stream.read_exact(&mut item)?;
        let item_len = u32::from_be_bytes([item[0], item[1], item[2], item[3]]) as usize;
        if item_len < 2 || item_len > left - 4 {
            return Err(PduError::Malformed("a PDV item longer than its PDU"));
        }
        let mut data = Vec::new();
        read_exactly(stream, item_len - 2, &mut data)?;
        let control = item[5];
        values.push(PDataValue {
            presentation_context_id: item[4],
            value_type: if control & 1 != 0 {
                PDataValueType::Command
            } else {
                PDataValueType::Data
            },
            is_last: control & 2 != 0,
            data,
        });
        left -= 4 + item_len;
    }
    Ok(Incoming::PData(values))
}

/// Append exactly `n` bytes to `out`, read into its spare capacity (not zeroed first).
fn read_exactly(stream: &mut impl Read, n: usize, out: &mut Vec<u8>) -> std::io::Result<()> {
    out.reserve_exact(n);
    let want = out.len() + n;
    stream.take(n as u64).read_to_end(out)?;
    if out.len() != want {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pdv(pc: u8, control: u8, data: &[u8]) -> Vec<u8> {
        let mut v = ((data.len() + 2) as u32).to_be_bytes().to_vec();
        v.extend([pc, control]);
        v.extend_from_slice(data);
        v
    }

    fn pdu(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![kind, 0];
        v.extend((body.len() as u32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn p_data_values_as_dicom_ul_writes_them() {
        let values = vec![
            PDataValue {
                presentation_context_id: 1,
                value_type: PDataValueType::Command,
                is_last: true,
                data: vec![1, 2, 3],
            },
            PDataValue {
                presentation_context_id: 3,
                value_type: PDataValueType::Data,
                is_last: false,
                data: (0..=255).collect(),
            },
        ];
        let mut wire = Vec::new();
        dicom_ul::pdu::write_pdu(
            &mut wire,
            &Pdu::PData {
                data: values.clone(),
            },
        )
        .expect("write");
        // Then a release request, read by dicom-ul's parser.
        dicom_ul::pdu::write_pdu(&mut wire, &Pdu::ReleaseRQ).expect("write");
        let mut r = &wire[..];
        match read_pdu(&mut r, 65536).expect("read") {
            Incoming::PData(got) => assert_eq!(got, values),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            read_pdu(&mut r, 65536).expect("read"),
            Incoming::Other(Pdu::ReleaseRQ)
        ));
        assert!(matches!(read_pdu(&mut r, 65536), Err(PduError::Io(_))));
    }

    #[test]
    fn bad_lengths_are_refused() {
        let body = pdv(1, 2, &[0; 100]);
        let wire = pdu(4, &body);
        assert!(matches!(
            read_pdu(&mut &wire[..], 64),
            Err(PduError::TooLong { len: 106, max: 64 })
        ));
        // An item claiming more than its PDU holds.
        let mut bad = body.clone();
        bad[3] = 200;
        assert!(matches!(
            read_pdu(&mut &pdu(4, &bad)[..], 65536),
            Err(PduError::Malformed(_))
        ));
        // A PDU cut short.
        assert!(matches!(
            read_pdu(&mut &wire[..50], 65536),
            Err(PduError::Io(_))
        ));
        // Trailing bytes too few for an item header.
        let mut short = body;
        short.extend([0, 0, 0]);
        assert!(matches!(
            read_pdu(&mut &pdu(4, &short)[..], 65536),
            Err(PduError::Malformed(_))
        ));
        // Any other PDU goes to dicom-ul's parser whole.
        assert!(matches!(
            read_pdu(&mut &pdu(9, &[0; 4])[..], 65536),
            Ok(Incoming::Other(Pdu::Unknown { pdu_type: 9, .. }))
        ));
        assert!(matches!(
            read_pdu(&mut &pdu(7, &[0; 2])[..], 65536),
            Err(PduError::Unparsable(_))
        ));
    }
}
