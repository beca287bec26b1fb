//! pulmo: a DICOM node that measures lung opacification per lobe on chest CT.
//!
//! Data flows one way (DESIGN.md): net → store → pipeline → infer → quant → iod → store → net.
//! This crate holds every stage as a module; `main.rs` is only the command line.
//!
//! Medical disclaimer: the reference models and the phantom are synthetic, for integration and
//! testing. Nothing here is validated for clinical use.

pub mod config;
pub mod dataset;
pub mod infer;
pub mod iod;
pub mod labels;
pub mod metrics;
pub mod net;
pub mod nifti;
pub mod phantom;
pub mod picture;
pub mod pipeline;
pub mod quant;
pub mod segment;
pub mod store;
pub mod volume;
