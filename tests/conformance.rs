//! The conformance statement matches the code and the node's behaviour: its SOP class, transfer
//! syntax and private code tables against pulmo's constants, and every (SOP class, transfer
//! syntax) it lists negotiated for real with `pulmo serve`, while others are refused.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::node::*;
use common::*;
use dicom_ul::association::client::ClientAssociationOptions;
use pulmo::iod::sr::{PRIVATE_CODES, SrKind};
use pulmo::iod::transfer_syntax::Syntax;
use pulmo::net::scp::STORAGE_SOP_CLASSES;

fn statement() -> String {
    std::fs::read_to_string(repo().join("conformance/CONFORMANCE_STATEMENT.md")).expect("statement")
}

/// The table rows between `<!-- name -->` and the next `<!-- end -->`, as cells.
fn table(name: &str) -> Vec<Vec<String>> {
    let text = statement();
    let start = text
        .find(&format!("<!-- {name} -->"))
        .unwrap_or_else(|| panic!("no {name} table"));
    let rest = &text[start..];
    let end = rest.find("<!-- end -->").expect("end marker");
    rest[..end]
        .lines()
        .filter(|l| l.starts_with('|') && !l.contains("---"))
        .skip(1)
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().trim_matches('`').to_string())
                .collect()
        })
        .collect()
}

fn column(name: &str, i: usize) -> BTreeSet<String> {
    table(name).into_iter().map(|r| r[i].clone()).collect()
}

#[test]
fn the_tables_match_the_code() {
    let mut scp: BTreeSet<String> = STORAGE_SOP_CLASSES.iter().map(|s| s.to_string()).collect();
    scp.insert("1.2.840.10008.1.1".into());
    assert_eq!(column("scp-sop-classes", 1), scp);
    let syntaxes: BTreeSet<String> = Syntax::ALL.iter().map(|s| s.uid().to_string()).collect();
    assert_eq!(column("scp-transfer-syntaxes", 1), syntaxes);
    let scu: BTreeSet<String> = [
        "1.2.840.10008.1.1",
        "1.2.840.10008.5.1.4.1.1.66.4",
        SrKind::Enhanced.sop_class(),
        SrKind::Comprehensive3d.sop_class(),
        "1.2.840.10008.5.1.4.1.1.7",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(column("scu-sop-classes", 1), scu);
    let codes: BTreeSet<(String, String)> = table("private-codes")
        .into_iter()
        .map(|r| (r[0].clone(), r[1].clone()))
        .collect();
    let want: BTreeSet<(String, String)> = PRIVATE_CODES
        .iter()
        .map(|(c, m)| (c.to_string(), m.to_string()))
        .collect();
    assert_eq!(codes, want);
    let text = statement();
    assert!(text.contains(pulmo::iod::IMPLEMENTATION_CLASS_UID));
    assert!(text.contains(pulmo::iod::IMPLEMENTATION_VERSION_NAME));
    // Every private code the shipped template uses is in the statement.
    let template = std::fs::read_to_string(repo().join("templates/tid1500.xml")).expect("template");
    for part in template.split("code=\"PULMO-").skip(1) {
        let code = format!("PULMO-{}", &part[..part.find('"').expect("quote")]);
        assert!(
            codes.iter().any(|(c, _)| *c == code),
            "{code} is not in the statement"
        );
    }
}

#[test]
fn the_node_accepts_exactly_what_the_statement_lists() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let node = start_with(tmp.path(), "", "", 60);
    let target = format!("PULMO@127.0.0.1:{}", node.port);
    let negotiate = |sop: &str, ts: &str| -> Option<String> {
        ClientAssociationOptions::new()
            .with_presentation_context(sop, vec![ts])
            .calling_ae_title("CONFORMANCE")
            .read_timeout(Duration::from_secs(10))
            .establish_with(&target)
            .ok()
            .map(|a| {
                let ts = a.presentation_contexts()[0].transfer_syntax.clone();
                let _ = a.release();
                ts.trim_end_matches('\0').to_string()
            })
    };
    for sop in column("scp-sop-classes", 1) {
        for ts in column("scp-transfer-syntaxes", 1) {
            assert_eq!(
                negotiate(&sop, &ts).as_deref(),
                Some(ts.as_str()),
                "{sop} in {ts} is listed but not accepted"
            );
        }
    }
    // Not listed, not accepted: another SOP class, a lossy syntax.
    assert_eq!(
        negotiate("1.2.840.10008.5.1.4.1.1.4", "1.2.840.10008.1.2.1"),
        None
    );
    assert_eq!(
        negotiate("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.4.50"),
        None
    );
}
