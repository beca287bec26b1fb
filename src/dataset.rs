//! Untrusted data sets, checked for structure before anything parses them into memory.
//!
//! dicom-rs builds a data set in memory recursively (one call frame per nested sequence),
//! reserves each value's announced length before reading it, and takes an end of input where a
//! tag should start as the data set's end. A hostile or broken sender used all three (issue 38: a
//! sequence nested 2,000 deep overflowed the node's stack, one element announcing 0xF0000000
//! bytes took 4 GB, a stray byte after the pixel data was stored with Success). So every data set
//! that comes from outside (a C-STORE, a file given to `inspect` or `analyze`, a study's spool
//! files) goes through `check` first: one pass over its bytes, no recursion, no allocation that
//! the input sizes. It refuses
//! - a value, item or sequence whose defined length runs past what holds it (the data set, or the
//!   enclosing item or sequence): checked before a byte of it is read;
//! - sequences nested deeper than `MAX_DEPTH`;
//! - bytes left over after the last element, and a data set that ends inside a sequence;
//! - an instance larger than the configured maximum (`[node] max_instance_mib`).
//!
//! Hand-written: no crate checks a data set's structure without building it.

use std::io::Read;
use std::path::Path;

use dicom_core::dictionary::DataDictionary;
use dicom_core::{Tag, VR};
use dicom_dictionary_std::StandardDataDictionary;
use thiserror::Error;

/// Sequences nested deeper than this are refused. CT, SEG and TID 1500 SR data sets nest a few
/// levels; at this depth dicom-rs's recursive reader parses on a 512 KiB stack (a test below),
/// where the smallest thread stack that parses (an association's, 2 MiB) overflowed at 2,000.
pub const MAX_DEPTH: usize = 32;

/// The default maximum instance size (`[node] max_instance_mib`): an Enhanced CT of a whole
/// chest, 600 frames of 512 × 512 × 16 bits, is about 300 MiB.
pub const DEFAULT_MAX_INSTANCE_MIB: u64 = 1024;

/// Files read from a folder (`inspect`, `analyze`, a study's spool files) may be this large: no
/// DICOM value can be longer, and every length in them is checked against the file's size.
pub const MAX_FILE_BYTES: u64 = 4 << 30;

/// A File Meta Information group larger than this is refused (it holds a few UIDs).
const MAX_META_BYTES: u64 = 64 << 10;

const UNDEFINED: u32 = 0xFFFF_FFFF;
const ITEM: Tag = Tag(0xFFFE, 0xE000);
const ITEM_END: Tag = Tag(0xFFFE, 0xE00D);
const SEQUENCE_END: Tag = Tag(0xFFFE, 0xE0DD);
const PIXEL_DATA: Tag = Tag(0x7FE0, 0x0010);

#[derive(Debug, Error, PartialEq, Eq)]
pub enum Malformed {
    #[error("{what} {tag} at byte {at} announces {len} bytes, but only {left} remain in {within}")]
    Overrun {
        what: &'static str,
        tag: Tag,
        at: u64,
        len: u64,
        left: u64,
        within: &'static str,
    },
    #[error("sequences nested deeper than {max} levels (at byte {at})")]
    TooDeep { at: u64, max: usize },
    #[error("{left} byte(s) left over after the last element (at byte {at})")]
    Trailing { at: u64, left: u64 },
    #[error("the data set ends inside {open} open sequence(s) or item(s)")]
    Unterminated { open: usize },
    #[error("unexpected {what} {tag} at byte {at}")]
    Unexpected {
        what: &'static str,
        tag: Tag,
        at: u64,
    },
    #[error("an element header crosses the end of its item or sequence (at byte {at})")]
    Straddles { at: u64 },
    #[error("the instance is larger than the {max}-byte limit")]
    TooLarge { max: u64 },
    #[error("unknown transfer syntax {0}")]
    UnknownSyntax(String),
    #[error("not a DICOM Part 10 file: {0}")]
    NotPart10(&'static str),
    #[error("cannot read: {0}")]
    Io(String),
}

/// How a transfer syntax encodes the data set's elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encoding {
    explicit_vr: bool,
    big_endian: bool,
    deflated: bool,
}

impl Encoding {
    /// The encoding of a transfer syntax that dicom-rs knows.
    pub fn of(transfer_syntax: &str) -> Result<Encoding, Malformed> {
        use dicom_encoding::TransferSyntaxIndex;
        let uid = transfer_syntax.trim_end_matches(['\0', ' ']);
        if dicom_transfer_syntax_registry::TransferSyntaxRegistry
            .get(uid)
            .is_none()
        {
            return Err(Malformed::UnknownSyntax(uid.to_string()));
        }
        Ok(Encoding {
            explicit_vr: uid != "1.2.840.10008.1.2",
            big_endian: uid == "1.2.840.10008.1.2.2",
            deflated: uid == "1.2.840.10008.1.2.1.99" || uid == "1.2.840.10008.1.2.8.1",
        })
    }
}

/// A data set of `total` bytes (not deflated) read from `source`, checked as the module says.
pub fn check(source: impl Read, total: u64, encoding: Encoding) -> Result<(), Malformed> {
    let mut s = Source {
        inner: source,
        pos: 0,
        total,
        big_endian: encoding.big_endian,
    };
    walk(&mut s, encoding.explicit_vr)
}

/// A Part 10 file, its File Meta Information and its data set (inflated, when it is deflated,
/// up to `max_bytes`), checked as the module says. Returns the transfer syntax UID.
pub fn check_file(path: &Path, max_bytes: u64) -> Result<String, Malformed> {
    let size = std::fs::metadata(path)
        .map_err(|e| Malformed::Io(e.to_string()))?
        .len();
    check_part10(
        || {
            std::fs::File::open(path)
                .map(std::io::BufReader::new)
                .map_err(|e| Malformed::Io(e.to_string()))
        },
        size,
        max_bytes,
    )
}

/// A Part 10 file of `size` bytes that `open` reads from its start (called twice for a
/// deflated one), checked as `check_file` says.
pub fn check_part10<R: std::io::BufRead>(
    open: impl Fn() -> Result<R, Malformed>,
    size: u64,
    max_bytes: u64,
) -> Result<String, Malformed> {
    if size > max_bytes {
        return Err(Malformed::TooLarge { max: max_bytes });
    }
    let mut file = open()?;
    let (ts, meta_end) = read_meta(&mut file, size)?;
    let encoding = Encoding::of(&ts)?;
    if !encoding.deflated {
        check(file, size - meta_end, encoding)?;
        return Ok(ts);
    }
    // Inflated twice: once to learn its size (so that every length can be checked against what
    // really follows), then checked.
    let inflated = |mut f: R| -> Result<_, Malformed> {
        std::io::copy(&mut (&mut f).take(meta_end), &mut std::io::sink())
            .map_err(|e| Malformed::Io(e.to_string()))?;
        Ok(flate2::read::DeflateDecoder::new(f).take(max_bytes + 1))
    };
    let total = std::io::copy(&mut inflated(open()?)?, &mut std::io::sink())
        .map_err(|e| Malformed::Io(format!("cannot inflate the data set: {e}")))?;
    if total > max_bytes {
        return Err(Malformed::TooLarge { max: max_bytes });
    }
    check(inflated(open()?)?, total, encoding)?;
    Ok(ts)
}

/// Read the preamble and File Meta Information of a file of `size` bytes: its transfer syntax
/// and where its data set starts. The reader is left at that start.
fn read_meta(file: &mut impl std::io::BufRead, size: u64) -> Result<(String, u64), Malformed> {
    let mut head = [0u8; 132];
    file.read_exact(&mut head)
        .map_err(|_| Malformed::NotPart10("shorter than a preamble"))?;
    if &head[128..132] != b"DICM" {
        return Err(Malformed::NotPart10(
            "no DICM prefix after the 128-byte preamble",
        ));
    }
    let mut pos = 132u64;
    let mut ts = None;
    loop {
        // Every meta element is explicit VR little endian; the data set starts at the first
        // element of another group (peeked with `fill_buf`, not consumed).
        let peek = file.fill_buf().map_err(|e| Malformed::Io(e.to_string()))?;
        if peek.len() < 2 || u16::from_le_bytes([peek[0], peek[1]]) != 0x0002 {
            break;
        }
        if pos - 132 > MAX_META_BYTES {
            return Err(Malformed::NotPart10("File Meta Information over 64 KiB"));
        }
        let mut s = Source {
            inner: &mut *file,
            pos,
            total: size,
            big_endian: false,
        };
        let tag = s.tag()?;
        let (_, len) = s.explicit_header(tag)?;
        if len == UNDEFINED {
            return Err(Malformed::NotPart10("a meta element of undefined length"));
        }
        s.fits(u64::from(len), &[], "element", tag)?;
        if tag == Tag(0x0002, 0x0010) {
            let mut v = vec![0u8; len as usize];
            s.read(&mut v)?;
            ts = Some(
                String::from_utf8_lossy(&v)
                    .trim_end_matches(['\0', ' '])
                    .to_string(),
            );
        } else {
            s.skip(u64::from(len))?;
        }
        pos = s.pos;
    }
    let ts = ts.ok_or(Malformed::NotPart10(
        "no TransferSyntaxUID in the meta group",
    ))?;
    Ok((ts, pos))
}

/// What is open at a point of the data set: a sequence (items expected), an item (elements
/// expected) or encapsulated pixel data (fragments expected); `end` for a defined length.
#[derive(Debug, Clone, Copy)]
enum Open {
    Sequence { end: Option<u64> },
    Item { end: Option<u64> },
    Pixels,
}

impl Open {
    fn end(self) -> Option<u64> {
        match self {
            Open::Sequence { end } | Open::Item { end } => end,
            Open::Pixels => None,
        }
    }
}

struct Source<R> {
    inner: R,
    pos: u64,
    total: u64,
    big_endian: bool,
}

impl<R: Read> Source<R> {
    fn read(&mut self, buf: &mut [u8]) -> Result<(), Malformed> {
        self.inner
            .read_exact(buf)
            .map_err(|e| Malformed::Io(e.to_string()))?;
        self.pos += buf.len() as u64;
        Ok(())
    }

    /// `N` bytes in the data set's byte order, as a little-endian array.
    fn int<const N: usize>(&mut self) -> Result<[u8; N], Malformed> {
        let mut b = [0u8; N];
        self.read(&mut b)?;
        if self.big_endian {
            b.reverse();
        }
        Ok(b)
    }

    fn u16(&mut self) -> Result<u16, Malformed> {
        self.int().map(u16::from_le_bytes)
    }

    fn u32(&mut self) -> Result<u32, Malformed> {
        self.int().map(u32::from_le_bytes)
    }

    fn tag(&mut self) -> Result<Tag, Malformed> {
        Ok(Tag(self.u16()?, self.u16()?))
    }

    /// VR and length after `tag`, explicit VR (PS3.5 7.1.2), read as dicom-rs reads them: an
    /// unknown VR is UN.
    fn explicit_header(&mut self, tag: Tag) -> Result<(VR, u32), Malformed> {
        if tag.group() == 0xFFFE {
            return Ok((VR::UN, self.u32()?));
        }
        let mut vr = [0u8; 2];
        self.read(&mut vr)?;
        let vr = VR::from_binary(vr).unwrap_or(VR::UN);
        use VR::*;
        let short = matches!(
            vr,
            AE | AS
                | AT
                | CS
                | DA
                | DS
                | DT
                | FL
                | FD
                | IS
                | LO
                | LT
                | PN
                | SH
                | SL
                | SS
                | ST
                | TM
                | UI
                | UL
                | US
        );
        let len = if short {
            u32::from(self.u16()?)
        } else {
            self.u16()?; // reserved
            self.u32()?
        };
        Ok((vr, len))
    }

    /// `len` bytes starting here must lie within the innermost defined length that holds them
    /// and within the data set.
    fn fits(&self, len: u64, open: &[Open], what: &'static str, tag: Tag) -> Result<(), Malformed> {
        let (limit, within) = match open.iter().rev().find_map(|o| o.end()) {
            Some(end) => (end.min(self.total), "its sequence or item"),
            None => (self.total, "the data set"),
        };
        let left = limit.saturating_sub(self.pos);
        if len > left {
            return Err(Malformed::Overrun {
                what,
                tag,
                at: self.pos,
                len,
                left,
                within,
            });
        }
        Ok(())
    }

    /// Skip `len` bytes, already checked to be there, through a fixed buffer.
    fn skip(&mut self, len: u64) -> Result<(), Malformed> {
        let copied = std::io::copy(&mut (&mut self.inner).take(len), &mut std::io::sink())
            .map_err(|e| Malformed::Io(e.to_string()))?;
        if copied != len {
            return Err(Malformed::Io("unexpected end of input".into()));
        }
        self.pos += len;
        Ok(())
    }
}

fn walk<R: Read>(s: &mut Source<R>, explicit_vr: bool) -> Result<(), Malformed> {
    let mut open: Vec<Open> = Vec::new();
    let mut depth = 0usize;
    loop {
        // Close what ends here: defined-length items and sequences (nested ones end together).
        while let Some(o) = open.last().copied() {
            match o.end() {
                Some(end) if end < s.pos => {
                    return Err(Malformed::Straddles { at: end });
                }
                Some(end) if end == s.pos => {}
                _ => break,
            }
            if matches!(o, Open::Sequence { .. }) {
                depth -= 1;
            }
            open.pop();
        }
        if s.pos == s.total {
            return match open.len() {
                0 => Ok(()),
                n => Err(Malformed::Unterminated { open: n }),
            };
        }
        let at = s.pos;
        if s.total - s.pos < 8 {
            return Err(match open.len() {
                0 => Malformed::Trailing {
                    at,
                    left: s.total - s.pos,
                },
                n => Malformed::Unterminated { open: n },
            });
        }
        let tag = s.tag()?;
        match open.last().copied() {
            Some(top @ (Open::Sequence { .. } | Open::Pixels)) => {
                let len = s.u32()?;
                let pixels = matches!(top, Open::Pixels);
                match tag {
                    ITEM if len == UNDEFINED && !pixels => open.push(Open::Item { end: None }),
                    ITEM if len == UNDEFINED => {
                        return Err(Malformed::Unexpected {
                            what: "pixel data fragment of undefined length",
                            tag,
                            at,
                        });
                    }
                    ITEM => {
                        let len = u64::from(len);
                        s.fits(len, &open, "item", tag)?;
                        if pixels {
                            s.skip(len)?;
                        } else {
                            open.push(Open::Item {
                                end: Some(s.pos + len),
                            });
                        }
                    }
                    SEQUENCE_END if top.end().is_none() => {
                        if !pixels {
                            depth -= 1;
                        }
                        open.pop();
                    }
                    _ => {
                        return Err(Malformed::Unexpected {
                            what: "element where an item was expected",
                            tag,
                            at,
                        });
                    }
                }
            }
            _ => {
                if tag == ITEM_END {
                    s.u32()?;
                    match open.last() {
                        Some(Open::Item { end: None }) => {
                            open.pop();
                            continue;
                        }
                        _ => {
                            return Err(Malformed::Unexpected {
                                what: "item delimiter outside an item of undefined length",
                                tag,
                                at,
                            });
                        }
                    }
                }
                if tag.group() == 0xFFFE {
                    return Err(Malformed::Unexpected {
                        what: "item tag where an element was expected",
                        tag,
                        at,
                    });
                }
                let (vr, len) = if explicit_vr {
                    s.explicit_header(tag)?
                } else {
                    let vr = StandardDataDictionary
                        .by_tag(tag)
                        .map(|e| dicom_core::dictionary::DataDictionaryEntry::vr(e).relaxed())
                        .unwrap_or(VR::UN);
                    (vr, s.u32()?)
                };
                if len == UNDEFINED {
                    // Encapsulated pixel data; any other element of undefined length is read as
                    // a sequence (as dicom-rs reads it).
                    if tag == PIXEL_DATA {
                        open.push(Open::Pixels);
                    } else {
                        open.push(Open::Sequence { end: None });
                        depth += 1;
                    }
                } else if vr == VR::SQ {
                    let len = u64::from(len);
                    s.fits(len, &open, "sequence", tag)?;
                    open.push(Open::Sequence {
                        end: Some(s.pos + len),
                    });
                    depth += 1;
                } else {
                    let len = u64::from(len);
                    s.fits(len, &open, "element", tag)?;
                    s.skip(len)?;
                }
                if depth > MAX_DEPTH {
                    return Err(Malformed::TooDeep { at, max: MAX_DEPTH });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPLICIT: &str = "1.2.840.10008.1.2.1";
    const IMPLICIT: &str = "1.2.840.10008.1.2";

    fn explicit(tag: (u16, u16), vr: &[u8; 2], value: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend(tag.0.to_le_bytes());
        v.extend(tag.1.to_le_bytes());
        v.extend(vr);
        if matches!(vr, b"OB" | b"OW" | b"SQ" | b"UN" | b"UT") {
            v.extend([0, 0]);
            v.extend((value.len() as u32).to_le_bytes());
        } else {
            v.extend((value.len() as u16).to_le_bytes());
        }
        v.extend(value);
        v
    }

    fn header(tag: (u16, u16), len: u32) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend(tag.0.to_le_bytes());
        v.extend(tag.1.to_le_bytes());
        v.extend(len.to_le_bytes());
        v
    }

    fn run(bytes: &[u8], ts: &str) -> Result<(), Malformed> {
        check(bytes, bytes.len() as u64, Encoding::of(ts).expect("known"))
    }

    /// A sequence of undefined length nested `depth` deep, as in the hostile sample.
    fn nested(depth: usize) -> Vec<u8> {
        let mut v = explicit((0x0008, 0x0060), b"CS", b"CT");
        for _ in 0..depth {
            v.extend([0x08, 0x00, 0x15, 0x11]); // (0008,1115)
            v.extend(b"SQ\0\0");
            v.extend(UNDEFINED.to_le_bytes());
            v.extend(header((0xFFFE, 0xE000), UNDEFINED));
        }
        for _ in 0..depth {
            v.extend(header((0xFFFE, 0xE00D), 0));
            v.extend(header((0xFFFE, 0xE0DD), 0));
        }
        v
    }

    #[test]
    fn well_formed_data_sets_pass_in_every_encoding() {
        let mut v = explicit((0x0008, 0x0060), b"CS", b"CT");
        v.extend(nested(3).split_off(10));
        v.extend(explicit((0x7FE0, 0x0010), b"OW", &[1, 2, 3, 4]));
        assert_eq!(run(&v, EXPLICIT), Ok(()));
        // Implicit VR: a defined-length sequence known to the dictionary, with one item.
        let item = [header((0x0008, 0x1150), 2), b"1\0".to_vec()].concat();
        let mut v = header((0x0008, 0x1115), (item.len() + 8) as u32);
        v.extend(header((0xFFFE, 0xE000), item.len() as u32));
        v.extend(&item);
        v.extend(header((0x7FE0, 0x0010), 4));
        v.extend([0; 4]);
        assert_eq!(run(&v, IMPLICIT), Ok(()));
        // Encapsulated pixel data: an empty offset table and one fragment.
        let mut v = explicit((0x0028, 0x0010), b"US", &[0, 2]);
        v.extend([0xE0, 0x7F, 0x10, 0x00]);
        v.extend(b"OB\0\0");
        v.extend(UNDEFINED.to_le_bytes());
        v.extend(header((0xFFFE, 0xE000), 0));
        v.extend(header((0xFFFE, 0xE000), 6));
        v.extend([9; 6]);
        v.extend(header((0xFFFE, 0xE0DD), 0));
        assert_eq!(run(&v, "1.2.840.10008.1.2.4.70"), Ok(()));
    }

    #[test]
    fn nesting_beyond_the_limit_is_refused_without_recursion() {
        assert_eq!(run(&nested(MAX_DEPTH), EXPLICIT), Ok(()));
        assert!(matches!(
            run(&nested(MAX_DEPTH + 1), EXPLICIT),
            Err(Malformed::TooDeep { .. })
        ));
        assert!(matches!(
            run(&nested(100_000), EXPLICIT),
            Err(Malformed::TooDeep { .. })
        ));
    }

    #[test]
    fn what_the_limit_lets_through_dicom_rs_parses_on_a_small_stack() {
        // The smallest stack that parses in pulmo is an association's (2 MiB); a quarter of it.
        let bytes = nested(MAX_DEPTH);
        let parsed = std::thread::Builder::new()
            .stack_size(512 << 10)
            .spawn(move || {
                use dicom_encoding::TransferSyntaxIndex;
                let ts = dicom_transfer_syntax_registry::TransferSyntaxRegistry
                    .get(EXPLICIT)
                    .expect("known");
                dicom_object::InMemDicomObject::read_dataset_with_ts(&bytes[..], ts).is_ok()
            })
            .expect("thread")
            .join()
            .expect("no stack overflow");
        assert!(parsed);
    }

    #[test]
    fn lengths_beyond_what_remains_are_refused_before_reading() {
        // One element announcing 0xF0000000 bytes in a 20-byte data set.
        let mut v = explicit((0x0008, 0x0060), b"CS", b"CT");
        v.extend([0x09, 0x00, 0x10, 0x00]);
        v.extend(b"UN\0\0");
        v.extend(0xF000_0000u32.to_le_bytes());
        assert!(matches!(
            run(&v, EXPLICIT),
            Err(Malformed::Overrun {
                len: 0xF000_0000,
                left: 0,
                ..
            })
        ));
        // An element longer than the item that holds it.
        let inner = explicit((0x0008, 0x1150), b"UI", b"1.2");
        let mut v = explicit((0x0008, 0x1115), b"SQ", &[]);
        let n = v.len();
        v[n - 4..].copy_from_slice(&((inner.len() + 8) as u32).to_le_bytes());
        v.extend(header((0xFFFE, 0xE000), (inner.len() - 2) as u32));
        v.extend(&inner);
        assert!(matches!(
            run(&v, EXPLICIT),
            Err(Malformed::Overrun {
                within: "its sequence or item",
                ..
            })
        ));
    }

    #[test]
    fn bytes_left_over_and_open_sequences_are_refused() {
        // PixelData one byte short (odd), then a stray byte: case 6 of issue 38.
        let mut v = explicit((0x0008, 0x0060), b"CS", b"CT");
        v.extend(explicit((0x7FE0, 0x0010), b"OW", &[7; 9]));
        assert_eq!(run(&v, EXPLICIT), Ok(()));
        v.push(0);
        assert_eq!(
            run(&v, EXPLICIT),
            Err(Malformed::Trailing {
                at: v.len() as u64 - 1,
                left: 1
            })
        );
        let mut v = nested(2);
        v.truncate(v.len() - 8);
        assert!(matches!(
            run(&v, EXPLICIT),
            Err(Malformed::Unterminated { .. })
        ));
        // An item tag where an element belongs.
        let v = header((0xFFFE, 0xE000), 0);
        assert!(matches!(
            run(&v, EXPLICIT),
            Err(Malformed::Unexpected { .. })
        ));
    }

    #[test]
    fn unknown_transfer_syntaxes_are_refused() {
        assert!(matches!(
            Encoding::of("1.2.3.4"),
            Err(Malformed::UnknownSyntax(_))
        ));
        assert!(
            Encoding::of("1.2.840.10008.1.2.1.99\0")
                .expect("known")
                .deflated
        );
    }
}
