//! Deterministic UIDs: `2.25.` followed by the decimal value of a UUID v5 (PS3.5 B.2), so that
//! the same input always yields the same UID and a re-delivery is idempotent at the PACS.

use uuid::Uuid;

/// pulmo's UUID namespace (a fixed, randomly drawn UUID).
const NAMESPACE: Uuid = Uuid::from_u128(0x6b1f_2a53_9c0e_4d8e_a4a1_3f0c_27d5_90e1);

/// UID for a name, unique to pulmo's namespace.
pub fn from_name(name: &str) -> String {
    format!(
        "2.25.{}",
        Uuid::new_v5(&NAMESPACE, name.as_bytes()).as_u128()
    )
}

/// A UID is at most 64 characters of digits and dots, with no empty component and no leading
/// zero in a component (PS3.5 9.1).
pub fn is_valid(uid: &str) -> bool {
    !uid.is_empty()
        && uid.len() <= 64
        && uid.split('.').all(|c| {
            !c.is_empty()
                && c.bytes().all(|b| b.is_ascii_digit())
                && (c == "0" || !c.starts_with('0'))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_are_valid_and_deterministic() {
        let a = from_name("phantom/1/study");
        assert_eq!(a, from_name("phantom/1/study"));
        assert_ne!(a, from_name("phantom/2/study"));
        assert!(is_valid(&a), "{a}");
        assert!(a.len() <= 64);
    }

    #[test]
    fn invalid_uids_are_refused() {
        for bad in ["", "1..2", "1.02", "1.2a", "../etc", &"1".repeat(65)] {
            assert!(!is_valid(bad), "{bad}");
        }
        assert!(is_valid("1.2.840.10008.1.2.1"));
        assert!(is_valid("1.0.2"));
    }
}
