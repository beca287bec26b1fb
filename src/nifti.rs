//! Writing label volumes as gzipped NIfTI-1 (`.nii.gz`), the format of the phantom's truth.
//!
//! Written by hand: the header is 348 fixed bytes, and the `nifti` crate would bring a second
//! ndarray version beside the one ONNX Runtime's binding needs. Readers (nibabel, ITK) check it
//! in the tests. NIfTI world space is RAS; DICOM patient space is LPS, so x and y flip sign.

use std::io::Write;
use std::path::Path;

use flate2::Compression;
use flate2::write::GzEncoder;
use thiserror::Error;

use crate::volume::Geometry;

#[derive(Debug, Error)]
pub enum NiftiError {
    #[error("cannot write {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("label volume has {got} voxels but the grid has {expected}")]
    Size { got: usize, expected: usize },
    #[error("grid dimension {0} does not fit in a NIfTI-1 header (max 32767)")]
    TooLarge(usize),
}

const HEADER_SIZE: usize = 348;
const VOX_OFFSET: usize = 352;

/// Affine from voxel (i = column, j = row, k = slice) to RAS mm, as the rows of a 3×4 matrix.
pub fn ras_affine(g: &Geometry) -> [[f64; 4]; 3] {
    let mut m = [[0.0; 4]; 3];
    let flip = [-1.0, -1.0, 1.0];
    for a in 0..3 {
        m[a][0] = flip[a] * g.spacing[0] * g.row_direction[a];
        m[a][1] = flip[a] * g.spacing[1] * g.column_direction[a];
        m[a][2] = flip[a] * g.spacing[2] * g.slice_direction[a];
        m[a][3] = flip[a] * g.origin[a];
    }
    m
}

/// The NIfTI-1 header for a uint8 volume on `g`.
fn header(g: &Geometry, description: &str) -> Result<Vec<u8>, NiftiError> {
    let mut h = vec![0u8; VOX_OFFSET];
    let put_i16 =
        |h: &mut Vec<u8>, at: usize, v: i16| h[at..at + 2].copy_from_slice(&v.to_le_bytes());
    let put_f32 =
        |h: &mut Vec<u8>, at: usize, v: f32| h[at..at + 4].copy_from_slice(&v.to_le_bytes());
    h[0..4].copy_from_slice(&(HEADER_SIZE as i32).to_le_bytes());
    h[38] = b'r';
    let dims = [g.columns, g.rows, g.slices];
    put_i16(&mut h, 40, 3);
    for (n, &d) in dims.iter().enumerate() {
        let d16 = i16::try_from(d).map_err(|_| NiftiError::TooLarge(d))?;
        put_i16(&mut h, 42 + 2 * n, d16);
    }
    for n in 3..7 {
        put_i16(&mut h, 42 + 2 * n, 1);
    }
    put_i16(&mut h, 70, 2); // datatype: DT_UNSIGNED_CHAR
    put_i16(&mut h, 72, 8); // bitpix
    put_f32(&mut h, 108, VOX_OFFSET as f32);
    put_f32(&mut h, 112, 1.0); // scl_slope
    h[123] = 2; // xyzt_units: mm
    let d = description.as_bytes();
    let n = d.len().min(79);
    h[148..148 + n].copy_from_slice(&d[..n]);

    // qform: rotation + qfac, so that readers preferring qform (ITK) agree with the sform.
    let a = ras_affine(g);
    let mut r = [[0.0f64; 3]; 3];
    for row in 0..3 {
        for col in 0..3 {
            r[row][col] = a[row][col] / g.spacing[col];
        }
    }
    let det = r[0][0] * (r[1][1] * r[2][2] - r[1][2] * r[2][1])
        - r[0][1] * (r[1][0] * r[2][2] - r[1][2] * r[2][0])
        + r[0][2] * (r[1][0] * r[2][1] - r[1][1] * r[2][0]);
    let qfac = if det < 0.0 { -1.0 } else { 1.0 };
    if qfac < 0.0 {
        for row in &mut r {
            row[2] = -row[2];
        }
    }
    let (b, c, dq) = quaternion_bcd(&r);
    put_f32(&mut h, 76, qfac as f32);
    for n in 0..3 {
        put_f32(&mut h, 80 + 4 * n, g.spacing[n] as f32);
    }
    put_i16(&mut h, 252, 1); // qform_code: scanner
    put_i16(&mut h, 254, 1); // sform_code: scanner
    put_f32(&mut h, 256, b as f32);
    put_f32(&mut h, 260, c as f32);
    put_f32(&mut h, 264, dq as f32);
    for (n, row) in a.iter().enumerate() {
        put_f32(&mut h, 268 + 4 * n, row[3] as f32);
        // srow_x, srow_y, srow_z
        for (col, &v) in row.iter().enumerate() {
            put_f32(&mut h, 280 + 16 * n + 4 * col, v as f32);
        }
    }
    h[344..348].copy_from_slice(b"n+1\0");
    Ok(h)
}

/// Quaternion (b, c, d) of a proper rotation matrix, with a = sqrt(1 - b² - c² - d²) ≥ 0, as the
/// NIfTI-1 standard (nifti1_io.c, nifti_mat44_to_quatern) defines it.
fn quaternion_bcd(r: &[[f64; 3]; 3]) -> (f64, f64, f64) {
    let trace = r[0][0] + r[1][1] + r[2][2] + 1.0;
    let (a, b, c, d);
    if trace > 0.5 {
        let s = trace.sqrt() * 2.0;
        a = 0.25 * s;
        b = (r[2][1] - r[1][2]) / s;
        c = (r[0][2] - r[2][0]) / s;
        d = (r[1][0] - r[0][1]) / s;
    } else {
        let xd = 1.0 + r[0][0] - (r[1][1] + r[2][2]);
        let yd = 1.0 + r[1][1] - (r[0][0] + r[2][2]);
        let zd = 1.0 + r[2][2] - (r[0][0] + r[1][1]);
        if xd > 1.0 {
            let bb = 0.5 * xd.sqrt();
            b = bb;
            c = 0.25 * (r[0][1] + r[1][0]) / bb;
            d = 0.25 * (r[0][2] + r[2][0]) / bb;
            a = 0.25 * (r[2][1] - r[1][2]) / bb;
        } else if yd > 1.0 {
            let cc = 0.5 * yd.sqrt();
            c = cc;
            b = 0.25 * (r[0][1] + r[1][0]) / cc;
            d = 0.25 * (r[1][2] + r[2][1]) / cc;
            a = 0.25 * (r[0][2] - r[2][0]) / cc;
        } else {
            let dd = 0.5 * zd.sqrt();
            d = dd;
            b = 0.25 * (r[0][2] + r[2][0]) / dd;
            c = 0.25 * (r[1][2] + r[2][1]) / dd;
            a = 0.25 * (r[1][0] - r[0][1]) / dd;
        }
    }
    if a < 0.0 { (-b, -c, -d) } else { (b, c, d) }
}

/// Write a uint8 label volume (`[slice][row][column]`) as `.nii.gz`.
pub fn write_labels(
    path: &Path,
    g: &Geometry,
    labels: &[u8],
    description: &str,
) -> Result<(), NiftiError> {
    if labels.len() != g.voxel_count() {
        return Err(NiftiError::Size {
            got: labels.len(),
            expected: g.voxel_count(),
        });
    }
    let io = |source| NiftiError::Io {
        path: path.display().to_string(),
        source,
    };
    let file = std::fs::File::create(path).map_err(io)?;
    let mut gz = GzEncoder::new(std::io::BufWriter::new(file), Compression::fast());
    gz.write_all(&header(g, description)?).map_err(io)?;
    gz.write_all(labels).map_err(io)?;
    let mut inner = gz.finish().map_err(io)?;
    inner.flush().map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_quaternion_for_lps_axial() {
        // LPS axial → RAS rotation diag(-1,-1,1): a 180° turn about z, quaternion (0,0,0,1).
        let r = [[-1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]];
        let (b, c, d) = quaternion_bcd(&r);
        assert!(b.abs() < 1e-12 && c.abs() < 1e-12 && (d - 1.0).abs() < 1e-12);
    }

    #[test]
    fn header_has_magic_and_dims() {
        let g = Geometry {
            rows: 3,
            columns: 4,
            slices: 2,
            origin: [1.0, 2.0, 3.0],
            row_direction: [1.0, 0.0, 0.0],
            column_direction: [0.0, 1.0, 0.0],
            slice_direction: [0.0, 0.0, 1.0],
            spacing: [0.5, 0.5, 2.0],
        };
        let h = header(&g, "x").expect("header");
        assert_eq!(&h[344..348], b"n+1\0");
        assert_eq!(i16::from_le_bytes([h[42], h[43]]), 4);
        assert_eq!(i16::from_le_bytes([h[44], h[45]]), 3);
        assert_eq!(i16::from_le_bytes([h[46], h[47]]), 2);
        let a = ras_affine(&g);
        assert_eq!(a[0][3], -1.0);
        assert_eq!(a[1][3], -2.0);
        assert_eq!(a[2][3], 3.0);
    }
}
