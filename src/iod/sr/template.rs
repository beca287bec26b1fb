//! SR templates: the report's content tree as XML (templates/*.xml), read with quick-xml, checked
//! when it is loaded, and filled with a report's values when a report is written.
//!
//! One element per content item, named after its value type (`container`, `text`, `code`, `num`,
//! `uidref`, `image`), with its relationship to its parent (`rel`), its concept name (`code`,
//! `scheme`, `meaning`) and its value (`value`; `value-code`, `value-scheme`, `value-meaning`;
//! `unit-code`, `unit-meaning`; `sop-class`, `sop-instance`, `segment`). `<for-each lobe|check|image>`
//! repeats its children once per lobe, quality check or source image. Attribute values may hold
//! `{placeholders}`; a placeholder that the scope does not define, a missing or unknown attribute,
//! or a relationship that the value types forbid is refused at load with the line and the reason.

use std::collections::BTreeMap;

use quick_xml::events::{BytesStart, Event};
use thiserror::Error;

#[derive(Debug, Error, PartialEq)]
#[error("{origin}, line {line}: {reason}")]
pub struct TemplateError {
    pub origin: String,
    pub line: usize,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueType {
    Container,
    Text,
    Code,
    Num,
    UidRef,
    Image,
    /// A point or outline on one image (SCOORD), SELECTED FROM its IMAGE.
    Scoord,
}

impl ValueType {
    fn parse(tag: &str) -> Option<ValueType> {
        Some(match tag {
            "container" => ValueType::Container,
            "text" => ValueType::Text,
            "code" => ValueType::Code,
            "num" => ValueType::Num,
            "uidref" => ValueType::UidRef,
            "image" => ValueType::Image,
            "scoord" => ValueType::Scoord,
            _ => return None,
        })
    }

    pub fn dicom(self) -> &'static str {
        match self {
            ValueType::Container => "CONTAINER",
            ValueType::Text => "TEXT",
            ValueType::Code => "CODE",
            ValueType::Num => "NUM",
            ValueType::UidRef => "UIDREF",
            ValueType::Image => "IMAGE",
            ValueType::Scoord => "SCOORD",
        }
    }

    /// Attributes that carry this type's value: (required, optional).
    fn value_attributes(self) -> (&'static [&'static str], &'static [&'static str]) {
        match self {
            ValueType::Container => (&[], &["template", "continuity"]),
            ValueType::Text | ValueType::UidRef => (&["value"], &[]),
            ValueType::Code => (&["value-code", "value-scheme", "value-meaning"], &[]),
            ValueType::Num => (&["value", "unit-code", "unit-meaning"], &[]),
            ValueType::Image => (&["sop-class", "sop-instance"], &["segment"]),
            ValueType::Scoord => (&["graphic-type", "graphic-data"], &[]),
        }
    }
}

/// The relationships a template may use, and the value types each may point to (PS3.3
/// C.17.3.2.4, as Enhanced SR restricts them; INFERRED FROM and HAS PROPERTIES are not needed by
/// TID 1500 and are left out). A SCOORD must name its image by SELECTED FROM.
fn allowed(parent: ValueType, rel: &str, child: ValueType) -> Result<(), String> {
    use ValueType::*;
    let ok = match rel {
        "CONTAINS" => parent == Container,
        "HAS OBS CONTEXT" => parent == Container && matches!(child, Text | Code | Num | UidRef),
        "HAS CONCEPT MOD" => parent != Image && matches!(child, Text | Code),
        "SELECTED FROM" => parent == Scoord && child == Image,
        other => return Err(format!("unknown relationship \"{other}\"")),
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "a {} may not have a {} child by {rel}",
            parent.dicom(),
            child.dicom()
        ))
    }
}

/// What a placeholder stands for, per scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Report,
    Lobe,
    Check,
    Image,
}

impl Scope {
    fn parse(s: &str) -> Option<Scope> {
        Some(match s {
            "lobe" => Scope::Lobe,
            "check" => Scope::Check,
            "image" => Scope::Image,
            _ => return None,
        })
    }

    /// The placeholders defined in this scope (a loop's scope also sees the report's), and
    /// whether each is a number.
    pub fn placeholders(self) -> &'static [(&'static str, bool)] {
        match self {
            Scope::Report => &[
                ("language", false),
                ("device.uid", false),
                ("device.name", false),
                ("device.manufacturer", false),
                ("device.model", false),
                ("device.serial", false),
                ("device.version", false),
                ("algorithm", false),
                ("execution_provider", false),
                ("note", false),
                ("source.series_uid", false),
                ("source.sop_class", false),
                ("source.lung_slice", false),
                ("source.lung_column", true),
                ("source.lung_row", true),
                ("lung.volume_ml", true),
                ("lung.plo_percent", true),
                ("lung.ctss_total", true),
                ("lung.tracking_uid", false),
                ("covid.probability", true),
                ("covid.tracking_uid", false),
                ("qc.summary", false),
            ],
            Scope::Lobe => &[
                ("lobe.key", false),
                ("lobe.name", false),
                ("lobe.code", false),
                ("lobe.code_meaning", false),
                ("lobe.laterality_code", false),
                ("lobe.laterality_meaning", false),
                ("lobe.tracking_uid", false),
                ("lobe.seg_sop_class", false),
                ("lobe.seg_sop_instance", false),
                ("lobe.slice", false),
                ("lobe.column", true),
                ("lobe.row", true),
                ("lobe.segment", true),
                ("lobe.volume_ml", true),
                ("lobe.plo_percent", true),
                ("lobe.ggo_percent", true),
                ("lobe.consolidation_percent", true),
                ("lobe.ctss", true),
            ],
            Scope::Check => &[
                ("check.name", false),
                ("check.meaning", false),
                ("check.result_code", false),
                ("check.result_meaning", false),
                ("check.message", false),
            ],
            Scope::Image => &[("image.sop_class", false), ("image.sop_instance", false)],
        }
    }

    fn lookup(scopes: &[Scope], name: &str) -> Option<bool> {
        scopes.iter().find_map(|s| {
            s.placeholders()
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, numeric)| *numeric)
        })
    }
}

/// A template content item (placeholders not yet filled).
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub value_type: ValueType,
    pub rel: Option<String>,
    /// Concept name: code, scheme, meaning (absent only for an IMAGE).
    pub concept: Option<[String; 3]>,
    pub attrs: BTreeMap<String, String>,
    pub children: Vec<Node>,
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    Item(Item),
    ForEach { scope: Scope, children: Vec<Node> },
}

/// A loaded, checked template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pub root: Item,
}

/// Placeholders in an attribute value: `{name}` runs (`{{` and `}}` stand for literal braces, as
/// UCUM's `{score}` needs).
fn placeholders(value: &str) -> Result<Vec<&str>, String> {
    let mut out = Vec::new();
    let b = value.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'{' if b.get(i + 1) == Some(&b'{') => i += 2,
            b'}' if b.get(i + 1) == Some(&b'}') => i += 2,
            b'{' => {
                let end = value[i..]
                    .find('}')
                    .ok_or_else(|| format!("unclosed placeholder in \"{value}\""))?;
                out.push(&value[i + 1..i + end]);
                i += end + 1;
            }
            b'}' => {
                return Err(format!(
                    "stray '}}' in \"{value}\" (write }}}} for a brace)"
                ));
            }
            _ => i += 1,
        }
    }
    Ok(out)
}

struct Parser<'a> {
    text: &'a str,
    origin: String,
}

impl Parser<'_> {
    fn line_at(&self, pos: usize) -> usize {
        self.text[..pos.min(self.text.len())]
            .bytes()
            .filter(|b| *b == b'\n')
            .count()
            + 1
    }

    fn err(&self, line: usize, reason: impl Into<String>) -> TemplateError {
        TemplateError {
            origin: self.origin.clone(),
            line,
            reason: reason.into(),
        }
    }

    fn attributes(
        &self,
        e: &BytesStart<'_>,
        line: usize,
    ) -> Result<BTreeMap<String, String>, TemplateError> {
        let mut out = BTreeMap::new();
        for a in e.attributes() {
            let a = a.map_err(|x| self.err(line, format!("bad attribute: {x}")))?;
            let key = String::from_utf8_lossy(a.key.as_ref()).to_string();
            let value = a
                .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .map_err(|x| self.err(line, format!("bad value of {key}: {x}")))?
                .to_string();
            out.insert(key, value);
        }
        Ok(out)
    }

    /// Check one element's attributes and build the item (children come later).
    fn item(
        &self,
        tag: &str,
        mut attrs: BTreeMap<String, String>,
        line: usize,
        scopes: &[Scope],
    ) -> Result<Item, TemplateError> {
        let value_type = ValueType::parse(tag).ok_or_else(|| {
            self.err(
                line,
                format!(
                    "unknown element <{tag}> (value types: container, text, code, num, uidref, \
                     image; and for-each)"
                ),
            )
        })?;
        for (k, v) in &attrs {
            for p in placeholders(v).map_err(|r| self.err(line, r))? {
                match Scope::lookup(scopes, p) {
                    None => {
                        return Err(self.err(
                            line,
                            format!("unknown placeholder {{{p}}} in {k} (not defined here)"),
                        ));
                    }
                    Some(false) if value_type == ValueType::Num && k == "value" => {
                        return Err(self.err(
                            line,
                            format!("a NUM value must be a number; {{{p}}} is text"),
                        ));
                    }
                    _ => {}
                }
            }
        }
        let rel = attrs.remove("rel");
        let concept = match (
            attrs.remove("code"),
            attrs.remove("scheme"),
            attrs.remove("meaning"),
        ) {
            (Some(c), Some(s), Some(m)) => Some([c, s, m]),
            (None, None, None) if value_type == ValueType::Image => None,
            _ => {
                return Err(self.err(
                    line,
                    format!("<{tag}> needs a concept name: code, scheme and meaning attributes"),
                ));
            }
        };
        let (required, optional) = value_type.value_attributes();
        for r in required {
            if !attrs.contains_key(*r) {
                return Err(self.err(line, format!("<{tag}> needs the attribute {r}")));
            }
        }
        if let Some(k) = attrs
            .keys()
            .find(|k| !required.contains(&k.as_str()) && !optional.contains(&k.as_str()))
        {
            return Err(self.err(line, format!("<{tag}> has no attribute {k}")));
        }
        if value_type == ValueType::Num
            && let Some(v) = attrs.get("value")
            && placeholders(v).map(|p| p.is_empty()).unwrap_or(false)
            && v.parse::<f64>().is_err()
        {
            return Err(self.err(line, format!("a NUM value must be a number, not \"{v}\"")));
        }
        Ok(Item {
            value_type,
            rel,
            concept,
            attrs,
            children: Vec::new(),
            line,
        })
    }
}

/// An open element while reading.
enum Open {
    Item(Item),
    ForEach(Scope, Vec<Node>, usize),
}

impl Template {
    /// Load and check a template; `origin` names it in errors (a path).
    pub fn parse(text: &str, origin: &str) -> Result<Template, TemplateError> {
        let p = Parser {
            text,
            origin: origin.to_string(),
        };
        let mut reader = quick_xml::Reader::from_str(text);
        reader.config_mut().trim_text(true);
        let mut stack: Vec<Open> = Vec::new();
        let mut root: Option<Item> = None;
        let mut in_report = false;
        loop {
            let event = reader
                .read_event()
                .map_err(|e| p.err(p.line_at(reader.error_position() as usize), e.to_string()))?;
            // The line where the element just read starts (attribute values cannot hold '<').
            let end = (reader.buffer_position() as usize).min(text.len());
            let line = p.line_at(text[..end].rfind('<').unwrap_or(end));
            let scopes = |stack: &[Open]| -> Vec<Scope> {
                std::iter::once(Scope::Report)
                    .chain(stack.iter().filter_map(|o| match o {
                        Open::ForEach(s, _, _) => Some(*s),
                        Open::Item(_) => None,
                    }))
                    .collect()
            };
            let (start, empty) = match &event {
                Event::Start(e) => (Some(e.clone()), false),
                Event::Empty(e) => (Some(e.clone()), true),
                _ => (None, false),
            };
            if let Some(e) = start {
                let tag = String::from_utf8_lossy(e.name().as_ref()).to_string();
                let attrs = p.attributes(&e, line)?;
                if !in_report {
                    if tag != "report" {
                        return Err(p.err(line, "the template must start with <report>"));
                    }
                    in_report = true;
                    continue;
                }
                if root.is_some() && stack.is_empty() {
                    return Err(p.err(line, "<report> holds one root container"));
                }
                let open = if tag == "for-each" {
                    let (key, _) = attrs.iter().next().ok_or_else(|| {
                        p.err(
                            line,
                            "<for-each> names what it repeats: lobe, check or image",
                        )
                    })?;
                    let scope =
                        Scope::parse(key)
                            .filter(|_| attrs.len() == 1)
                            .ok_or_else(|| {
                                p.err(
                                    line,
                                    format!(
                                        "<for-each {key}>: repeats one of lobe, check or image"
                                    ),
                                )
                            })?;
                    if stack.is_empty() {
                        return Err(p.err(line, "<for-each> must be inside the root container"));
                    }
                    Open::ForEach(scope, Vec::new(), line)
                } else {
                    let item = p.item(&tag, attrs, line, &scopes(&stack))?;
                    // The relationship to the nearest enclosing item.
                    let parent = stack.iter().rev().find_map(|o| match o {
                        Open::Item(i) => Some(i.value_type),
                        Open::ForEach(..) => None,
                    });
                    match (parent, &item.rel) {
                        (None, None) if item.value_type == ValueType::Container => {}
                        (None, _) => {
                            return Err(p.err(
                                line,
                                "the root must be a <container> without a rel attribute",
                            ));
                        }
                        (Some(_), None) => {
                            return Err(p.err(line, format!("<{tag}> needs a rel attribute")));
                        }
                        (Some(parent), Some(rel)) => {
                            allowed(parent, rel, item.value_type).map_err(|r| p.err(line, r))?;
                        }
                    }
                    Open::Item(item)
                };
                stack.push(open);
                if !empty {
                    continue;
                }
            }
            let closing = matches!(event, Event::End(_)) || empty;
            if closing {
                let Some(done) = stack.pop() else {
                    // </report>
                    continue;
                };
                let node = match done {
                    Open::Item(i) => Node::Item(i),
                    Open::ForEach(scope, children, line) => {
                        if children.is_empty() {
                            return Err(p.err(line, "<for-each> repeats nothing"));
                        }
                        Node::ForEach { scope, children }
                    }
                };
                match stack.last_mut() {
                    Some(Open::Item(parent)) => parent.children.push(node),
                    Some(Open::ForEach(_, children, _)) => children.push(node),
                    None => match node {
                        Node::Item(i) => root = Some(i),
                        Node::ForEach { .. } => {}
                    },
                }
                continue;
            }
            match event {
                Event::Eof => break,
                Event::Text(t) if !t.is_empty() => {
                    return Err(p.err(line, "text is not allowed here; values are attributes"));
                }
                _ => {}
            }
        }
        let root = root.ok_or_else(|| p.err(p.line_at(text.len()), "no root container"))?;
        Ok(Template { root })
    }

    pub fn load(path: &std::path::Path) -> Result<Template, TemplateError> {
        let text = std::fs::read_to_string(path).map_err(|e| TemplateError {
            origin: path.display().to_string(),
            line: 0,
            reason: format!("cannot read: {e}"),
        })?;
        Template::parse(&text, &path.display().to_string())
    }
}

/// Fill `{placeholders}` of `value` from `lookup`; `{{` and `}}` become braces.
pub fn fill(value: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(i) = rest.find(['{', '}']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if tail.starts_with("{{") || tail.starts_with("}}") {
            out.push_str(&tail[..1]);
            rest = &tail[2..];
        } else if tail.starts_with('{') {
            let Some(end) = tail.find('}') else {
                out.push_str(tail);
                return out;
            };
            out.push_str(&lookup(&tail[1..end]).unwrap_or_default());
            rest = &tail[end + 1..];
        } else {
            out.push('}');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"<report>
  <container code="126000" scheme="DCM" meaning="Imaging Measurement Report" template="1500">
    <container rel="CONTAINS" code="126010" scheme="DCM" meaning="Imaging Measurements">
      <for-each lobe="">
        <num rel="CONTAINS" code="118565006" scheme="SCT" meaning="Volume"
             value="{lobe.volume_ml}" unit-code="ml" unit-meaning="milliliter"/>
      </for-each>
    </container>
  </container>
</report>"#;

    #[test]
    fn a_good_template_loads() {
        let t = Template::parse(OK, "t.xml").expect("loads");
        assert_eq!(t.root.children.len(), 1);
    }

    #[test]
    fn broken_templates_are_refused_with_line_and_reason() {
        let cases = [
            (
                OK.replace("{lobe.volume_ml}", "{lobe.volume}"),
                5,
                "unknown placeholder {lobe.volume}",
            ),
            (
                OK.replace("{lobe.volume_ml}", "{lobe.name}"),
                5,
                "must be a number",
            ),
            (
                OK.replace("<for-each lobe=\"\">", "")
                    .replace("</for-each>", ""),
                5,
                "unknown placeholder",
            ),
            (
                OK.replace(
                    "rel=\"CONTAINS\" code=\"118565006\"",
                    "rel=\"HAS CONCEPT MOD\" code=\"118565006\"",
                ),
                5,
                "may not have a NUM child",
            ),
            (
                OK.replace(
                    "rel=\"CONTAINS\" code=\"118565006\"",
                    "rel=\"SELECTED FROM\" code=\"118565006\"",
                ),
                5,
                "a CONTAINER may not have a NUM child by SELECTED FROM",
            ),
            (
                OK.replace("<num ", "<number "),
                5,
                "unknown element <number>",
            ),
            (
                OK.replace(" unit-code=\"ml\"", ""),
                5,
                "needs the attribute unit-code",
            ),
            (
                OK.replace("Volume\"", "Volume\" colour=\"red\""),
                5,
                "has no attribute colour",
            ),
            (
                OK.replace("</container>\n  </container>", "</container>"),
                0,
                "",
            ),
        ];
        for (text, line, reason) in cases {
            let err = Template::parse(&text, "t.xml").expect_err(reason);
            if line > 0 {
                assert_eq!(err.line, line, "{err}");
                assert!(err.reason.contains(reason), "{err}");
            }
            assert!(err.to_string().starts_with("t.xml, line "), "{err}");
        }
    }

    #[test]
    fn placeholders_are_filled() {
        let f = |n: &str| (n == "a").then(|| "1".to_string());
        assert_eq!(fill("x{a}y{a}", &f), "x1y1");
        assert_eq!(fill("{{score}}", &f), "{score}");
        assert_eq!(placeholders("{{score}} {a}"), Ok(vec!["a"]));
    }
}
