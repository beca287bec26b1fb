//! The PDU reader of an established association, and the command sets in its P-DATA: any bytes
//! give PDUs or an error, never a panic, and never more memory than the PDU length allowed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pulmo::net::dimse::Command;
use pulmo::net::pdata::{Incoming, read_pdu};

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(pdu) = read_pdu(&mut rest, 16_384) {
        if let Incoming::PData(values) = pdu {
            for v in values {
                let _ = Command::decode(&v.data);
            }
        }
    }
    // The association request and the other PDUs, as dicom-ul reads them for the node.
    let _ = dicom_ul::pdu::read_pdu(data, 16_384, true);
});
