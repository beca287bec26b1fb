//! DICOM writers: the only module that knows how DICOM objects are built.
//!
//! - `uid`: deterministic UIDs (`2.25.<UUID v5>`).
//! - `transfer_syntax`: the syntaxes pulmo writes, and encoding pixel data into them.
//! - `rle`: RLE Lossless encoding (PS3.5 Annex G), which dicom-rs cannot encode.
//! - `ct`: CT Image Storage instances (the phantom's series).
//! - `seg`: DICOM Segmentation; `sr`: the TID 1500 report from a template.
//! - `sc`: the overlay series (Secondary Capture) for viewers without SEG or SR support.

pub mod codes;
pub mod common;
pub mod ct;
pub mod rle;
pub mod sc;
pub mod seg;
pub mod sr;
pub mod transfer_syntax;
pub mod uid;

/// Implementation Class UID and version name written in every file meta header pulmo creates.
pub const IMPLEMENTATION_CLASS_UID: &str = "2.25.207186837301418306377262632598014453291";
pub const IMPLEMENTATION_VERSION_NAME: &str = concat!("PULMO_", env!("CARGO_PKG_VERSION"));
