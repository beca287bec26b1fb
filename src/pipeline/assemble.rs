//! Building the HU volume of a selected series from its pixel data. Slices are placed by the
//! sorted geometry of `select`, never by file order or InstanceNumber; values go through the
//! modality LUT (rescale slope and intercept) to HU.

use std::collections::BTreeMap;
use std::path::PathBuf;

use dicom_dictionary_std::tags;
use dicom_pixeldata::{ConvertOptions, PixelDecoder};
use rayon::prelude::*;
use thiserror::Error;

use super::select::Candidate;
use crate::volume::Volume;

#[derive(Debug, Error)]
pub enum AssembleError {
    #[error("{path}: {reason}")]
    Instance { path: PathBuf, reason: String },
}

fn fail(path: &std::path::Path, reason: impl Into<String>) -> AssembleError {
    AssembleError::Instance {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Decode the frames of `candidate` into its volume.
pub fn assemble(candidate: &Candidate) -> Result<Volume, AssembleError> {
    let g = candidate.geometry.clone();
    let plane = g.rows * g.columns;
    // Slice index of every (file, frame), so each file is opened and decoded once.
    let mut by_file: BTreeMap<PathBuf, Vec<(u32, usize)>> = BTreeMap::new();
    for (k, f) in candidate.frames.iter().enumerate() {
        let Some(f) = f else { continue };
        by_file
            .entry(f.path.clone())
            .or_default()
            .push((f.frame, k));
    }
    let decoded: Vec<Vec<(usize, Vec<i16>)>> = by_file
        .into_par_iter()
        .map(|(path, wanted)| decode_file(&path, &wanted, g.rows, g.columns))
        .collect::<Result<_, _>>()?;
    let mut hu = vec![0i16; plane * g.slices];
    for (k, pixels) in decoded.into_iter().flatten() {
        hu[k * plane..(k + 1) * plane].copy_from_slice(&pixels);
    }
    fill_missing(&mut hu, plane, &candidate.frames);
    Ok(Volume { geometry: g, hu })
}

/// A missing slice is the mean of its two neighbours (`select` only leaves single slices missing
/// between present ones): linear interpolation along z, which is what a viewer's MPR does too.
fn fill_missing<T>(hu: &mut [i16], plane: usize, frames: &[Option<T>]) {
    for k in 1..frames.len().saturating_sub(1) {
        if frames[k].is_none() && frames[k - 1].is_some() && frames[k + 1].is_some() {
            for i in 0..plane {
                let below = i32::from(hu[(k - 1) * plane + i]);
                let above = i32::from(hu[(k + 1) * plane + i]);
                // The mean of two i16 values is an i16.
                hu[k * plane + i] = ((below + above).div_euclid(2)) as i16;
            }
        }
    }
}

/// Decode one image (or one frame) to HU, whatever series it belongs to.
pub fn decode_frame(frame: &super::scan::Frame) -> Result<Vec<i16>, AssembleError> {
    let mut out = decode_file(
        &frame.path,
        &[(frame.frame, 0)],
        usize::from(frame.rows),
        usize::from(frame.columns),
    )?;
    Ok(out.pop().map(|(_, hu)| hu).unwrap_or_default())
}

fn decode_file(
    path: &std::path::Path,
    wanted: &[(u32, usize)],
    rows: usize,
    columns: usize,
) -> Result<Vec<(usize, Vec<i16>)>, AssembleError> {
    let mut obj =
        dicom_object::open_file(path).map_err(|e| fail(path, format!("cannot read: {e}")))?;
    // Some archives drop HighBit (type 1); the decoder needs it, and it is BitsStored − 1 in
    // every CT seen in practice.
    if obj.element_opt(tags::HIGH_BIT).ok().flatten().is_none()
        && let Some(stored) = obj
            .element_opt(tags::BITS_STORED)
            .ok()
            .flatten()
            .and_then(|e| e.to_int::<u16>().ok())
            .filter(|b| (1..=32).contains(b))
    {
        tracing::debug!(path = %path.display(), "HighBit missing; using BitsStored − 1");
        obj.put(dicom_core::DataElement::new(
            tags::HIGH_BIT,
            dicom_core::VR::US,
            dicom_core::PrimitiveValue::from(stored - 1),
        ));
    }
    let pixel = obj
        .element_opt(tags::PIXEL_DATA)
        .map_err(|e| fail(path, e.to_string()))?
        .ok_or_else(|| fail(path, "no PixelData"))?;
    let frames = obj
        .element_opt(tags::NUMBER_OF_FRAMES)
        .ok()
        .flatten()
        .and_then(|e| e.to_int::<u32>().ok())
        .unwrap_or(1)
        .max(1) as usize;
    let bits = obj
        .element_opt(tags::BITS_ALLOCATED)
        .ok()
        .flatten()
        .and_then(|e| e.to_int::<u16>().ok())
        .unwrap_or(0);
    if !matches!(bits, 8 | 16 | 32) {
        return Err(fail(
            path,
            format!("BitsAllocated {bits} is not 8, 16 or 32"),
        ));
    }
    let samples = obj
        .element_opt(tags::SAMPLES_PER_PIXEL)
        .ok()
        .flatten()
        .and_then(|e| e.to_int::<u16>().ok())
        .unwrap_or(1);
    if samples != 1 {
        return Err(fail(
            path,
            format!("SamplesPerPixel {samples}: CT must be grayscale"),
        ));
    }
    // Native pixel data must hold every frame; the decoder would otherwise read past the end.
    if pixel.fragments().is_none() {
        let needed = rows * columns * frames * usize::from(bits / 8);
        let have = pixel
            .to_bytes()
            .map(|b| b.len())
            .map_err(|e| fail(path, e.to_string()))?;
        // One trailing pad byte is allowed (odd lengths are padded to even).
        if have != needed && have != needed + 1 {
            return Err(fail(
                path,
                format!(
                    "PixelData has {have} bytes, but {columns}×{rows}×{frames} pixels of {bits} bits \
                     need {needed} (wrong Rows/Columns, or a truncated file)"
                ),
            ));
        }
    }
    // A decoder bug must not take the node down: turn a panic into this instance's error.
    let decoded =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| obj.decode_pixel_data()))
            .map_err(|_| fail(path, "the pixel data decoder crashed on this file"))?
            .map_err(|e| fail(path, format!("cannot decode pixel data: {e}")))?;
    if decoded.rows() as usize != rows || decoded.columns() as usize != columns {
        return Err(fail(path, "decoded image size differs from Rows/Columns"));
    }
    let options = ConvertOptions::new();
    let mut out = Vec::with_capacity(wanted.len());
    for &(frame, k) in wanted {
        let values: Vec<f32> = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            decoded.to_vec_frame_with_options::<f32>(frame, &options)
        }))
        .map_err(|_| fail(path, "the pixel data decoder crashed on this file"))?
        .map_err(|e| fail(path, format!("cannot convert frame {frame} to HU: {e}")))?;
        if values.len() != rows * columns {
            return Err(fail(
                path,
                format!(
                    "frame {frame} has {} pixels, expected {}",
                    values.len(),
                    rows * columns
                ),
            ));
        }
        let hu = values
            .iter()
            .map(|&v| v.round().clamp(f32::from(i16::MIN), f32::from(i16::MAX)) as i16)
            .collect();
        out.push((k, hu));
    }
    Ok(out)
}
