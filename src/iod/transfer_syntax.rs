//! The transfer syntaxes pulmo names on its command line, and writing a dataset in one of them.

use std::path::Path;

use dicom_core::value::PixelFragmentSequence;
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::tags;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use dicom_pixeldata::Transcode;
use dicom_transfer_syntax_registry::entries;
use thiserror::Error;

use super::{IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME, rle};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
pub enum Syntax {
    /// Implicit VR Little Endian (1.2.840.10008.1.2)
    Implicit,
    /// Explicit VR Little Endian (1.2.840.10008.1.2.1)
    Explicit,
    /// Deflated Explicit VR Little Endian (1.2.840.10008.1.2.1.99)
    Deflated,
    /// JPEG-LS Lossless (1.2.840.10008.1.2.4.80)
    JpegLs,
    /// RLE Lossless (1.2.840.10008.1.2.5)
    Rle,
    /// JPEG Lossless, first-order prediction (1.2.840.10008.1.2.4.70): read only
    JpegLossless,
    /// JPEG 2000 Lossless (1.2.840.10008.1.2.4.90): read only
    Jpeg2000,
}

#[derive(Debug, Error)]
pub enum WriteError {
    #[error(
        "pulmo cannot encode {0}: dicom-rs 0.10 has no encoder for it. pulmo reads it; to make such files, \
         transcode explicit VR little endian output with another tool (dcmcjpeg +e1 for JPEG lossless, \
         pydicom with pylibjpeg-openjpeg for JPEG 2000)"
    )]
    Unsupported(&'static str),
    #[error("cannot build the file meta header: {0}")]
    Meta(String),
    #[error("cannot encode pixel data as {syntax}: {message}")]
    Encode {
        syntax: &'static str,
        message: String,
    },
    #[error("cannot write {path}: {message}")]
    Io { path: String, message: String },
}

impl Syntax {
    pub const ALL: [Syntax; 7] = [
        Syntax::Implicit,
        Syntax::Explicit,
        Syntax::Deflated,
        Syntax::JpegLs,
        Syntax::Rle,
        Syntax::JpegLossless,
        Syntax::Jpeg2000,
    ];

    pub fn uid(self) -> &'static str {
        match self {
            Syntax::Implicit => "1.2.840.10008.1.2",
            Syntax::Explicit => "1.2.840.10008.1.2.1",
            Syntax::Deflated => "1.2.840.10008.1.2.1.99",
            Syntax::JpegLs => "1.2.840.10008.1.2.4.80",
            Syntax::Rle => "1.2.840.10008.1.2.5",
            Syntax::JpegLossless => "1.2.840.10008.1.2.4.70",
            Syntax::Jpeg2000 => "1.2.840.10008.1.2.4.90",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Syntax::Implicit => "Implicit VR Little Endian",
            Syntax::Explicit => "Explicit VR Little Endian",
            Syntax::Deflated => "Deflated Explicit VR Little Endian",
            Syntax::JpegLs => "JPEG-LS Lossless",
            Syntax::Rle => "RLE Lossless",
            Syntax::JpegLossless => "JPEG Lossless (first-order prediction)",
            Syntax::Jpeg2000 => "JPEG 2000 Lossless",
        }
    }

    /// Can pulmo write this syntax itself?
    pub fn writable(self) -> bool {
        !matches!(self, Syntax::JpegLossless | Syntax::Jpeg2000)
    }

    pub fn from_uid(uid: &str) -> Option<Syntax> {
        let uid = uid.trim_end_matches('\0').trim();
        Syntax::ALL.into_iter().find(|s| s.uid() == uid)
    }
}

/// Write `obj` (with native pixel data of `rows × cols`, 16 bits allocated) to `path` in `syntax`.
pub fn write_file(
    mut obj: InMemDicomObject,
    sop_class_uid: &str,
    sop_instance_uid: &str,
    syntax: Syntax,
    path: &Path,
) -> Result<(), WriteError> {
    if !syntax.writable() {
        return Err(WriteError::Unsupported(syntax.name()));
    }
    let meta = |ts: &str| {
        FileMetaTableBuilder::new()
            .media_storage_sop_class_uid(sop_class_uid)
            .media_storage_sop_instance_uid(sop_instance_uid)
            .transfer_syntax(ts)
            .implementation_class_uid(IMPLEMENTATION_CLASS_UID)
            .implementation_version_name(IMPLEMENTATION_VERSION_NAME)
    };
    let io = |e: &dyn std::fmt::Display| WriteError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let file = match syntax {
        Syntax::Rle => {
            let rows = usize::from(
                obj.get(tags::ROWS)
                    .and_then(|e| e.to_int::<u16>().ok())
                    .unwrap_or(0),
            );
            let cols = usize::from(
                obj.get(tags::COLUMNS)
                    .and_then(|e| e.to_int::<u16>().ok())
                    .unwrap_or(0),
            );
            let bytes = obj
                .get(tags::PIXEL_DATA)
                .map(|e| e.to_bytes().map(|b| b.into_owned()))
                .transpose()
                .map_err(|e| WriteError::Encode {
                    syntax: syntax.name(),
                    message: e.to_string(),
                })?
                .unwrap_or_default();
            if rows == 0 || cols == 0 || bytes.len() != rows * cols * 2 {
                return Err(WriteError::Encode {
                    syntax: syntax.name(),
                    message: "expected one frame of 16-bit native pixel data".into(),
                });
            }
            let frame = rle::encode_frame(&bytes, rows, cols, 2);
            obj.put(DataElement::new(
                tags::PIXEL_DATA,
                VR::OB,
                PixelFragmentSequence::new(Vec::<u32>::new(), vec![frame]),
            ));
            obj.with_meta(meta(syntax.uid()))
                .map_err(|e| WriteError::Meta(e.to_string()))?
        }
        Syntax::JpegLs => {
            let had_frames = obj
                .element_opt(tags::NUMBER_OF_FRAMES)
                .ok()
                .flatten()
                .is_some();
            let mut f = obj
                .with_meta(meta(Syntax::Explicit.uid()))
                .map_err(|e| WriteError::Meta(e.to_string()))?;
            f.transcode(&entries::JPEG_LS_LOSSLESS_IMAGE_COMPRESSION.erased())
                .map_err(|e| WriteError::Encode {
                    syntax: syntax.name(),
                    message: e.to_string(),
                })?;
            // The transcoder adds the optional Encapsulated Pixel Data Value Total Length
            // (7FE0,0003), whose UV VR (2019) older parsers do not know: leave it out.
            f.remove_element(dicom_core::Tag(0x7FE0, 0x0003));
            // It also adds NumberOfFrames, which single-frame IODs (CT Image) do not have.
            if !had_frames {
                f.remove_element(tags::NUMBER_OF_FRAMES);
            }
            f
        }
        _ => obj
            .with_meta(meta(syntax.uid()))
            .map_err(|e| WriteError::Meta(e.to_string()))?,
    };
    file.write_to_file(path).map_err(|e| io(&e))
}
