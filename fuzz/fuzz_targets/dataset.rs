//! The data set check (`pulmo::dataset`) and, for whatever it lets through, dicom-rs's parser,
//! as the node runs them on a C-STORE's data set (explicit and implicit VR) and on a Part 10
//! file: no panic, no stack overflow, no allocation beyond the input's size.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pulmo::dataset::{Encoding, check, check_part10};

fuzz_target!(|data: &[u8]| {
    use dicom_encoding::TransferSyntaxIndex;
    for ts in [
        "1.2.840.10008.1.2.1",
        "1.2.840.10008.1.2",
        "1.2.840.10008.1.2.4.70",
    ] {
        let Ok(encoding) = Encoding::of(ts) else {
            return;
        };
        if check(data, data.len() as u64, encoding).is_ok() {
            let Some(syntax) = dicom_transfer_syntax_registry::TransferSyntaxRegistry.get(ts)
            else {
                return;
            };
            let _ = dicom_object::InMemDicomObject::read_dataset_with_ts(data, syntax);
        }
    }
    if check_part10(
        || Ok(std::io::Cursor::new(data)),
        data.len() as u64,
        64 << 20,
    )
    .is_ok()
    {
        let _ = dicom_object::from_reader(std::io::Cursor::new(data));
    }
});
