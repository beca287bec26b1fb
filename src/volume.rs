//! A CT volume on its own grid: voxel values plus the patient-space geometry that places them.
//!
//! Plain data passed between stages (phantom → iod, pipeline → infer → quant). Index order is
//! `[slice][row][column]`, slices sorted along the slice normal (increasing), so index k of a label
//! volume and of the HU volume always name the same voxel.

use serde::Serialize;

/// Patient-space (LPS, mm) geometry of a regular grid of axial-like slices.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Geometry {
    pub rows: usize,
    pub columns: usize,
    pub slices: usize,
    /// ImagePositionPatient of the first voxel of slice 0.
    pub origin: [f64; 3],
    /// Direction of increasing column index (ImageOrientationPatient row cosines).
    pub row_direction: [f64; 3],
    /// Direction of increasing row index (ImageOrientationPatient column cosines).
    pub column_direction: [f64; 3],
    /// Unit vector from slice k to slice k+1.
    pub slice_direction: [f64; 3],
    /// Spacing between columns, between rows, and between slices (mm).
    pub spacing: [f64; 3],
}

impl Geometry {
    pub fn voxel_count(&self) -> usize {
        self.rows * self.columns * self.slices
    }

    /// Voxel volume in millilitres.
    pub fn voxel_volume_ml(&self) -> f64 {
        self.spacing[0] * self.spacing[1] * self.spacing[2] / 1000.0
    }

    /// ImagePositionPatient of slice `k`.
    pub fn slice_position(&self, k: usize) -> [f64; 3] {
        let d = k as f64 * self.spacing[2];
        [
            self.origin[0] + d * self.slice_direction[0],
            self.origin[1] + d * self.slice_direction[1],
            self.origin[2] + d * self.slice_direction[2],
        ]
    }

    /// Patient position (mm) of voxel centre (column i, row j, slice k).
    pub fn voxel_position(&self, i: f64, j: f64, k: f64) -> [f64; 3] {
        let mut p = [0.0; 3];
        for (a, v) in p.iter_mut().enumerate() {
            *v = self.origin[a]
                + i * self.spacing[0] * self.row_direction[a]
                + j * self.spacing[1] * self.column_direction[a]
                + k * self.spacing[2] * self.slice_direction[a];
        }
        p
    }

    /// ImageOrientationPatient as DICOM writes it.
    pub fn orientation(&self) -> [f64; 6] {
        let r = self.row_direction;
        let c = self.column_direction;
        [r[0], r[1], r[2], c[0], c[1], c[2]]
    }

    /// True when both grids place every voxel at the same position (within `tol_mm`).
    pub fn same_grid(&self, other: &Geometry, tol_mm: f64) -> bool {
        if (self.rows, self.columns, self.slices) != (other.rows, other.columns, other.slices) {
            return false;
        }
        let corners = [
            (0.0, 0.0, 0.0),
            (self.columns as f64 - 1.0, 0.0, 0.0),
            (0.0, self.rows as f64 - 1.0, 0.0),
            (0.0, 0.0, self.slices as f64 - 1.0),
            (
                self.columns as f64 - 1.0,
                self.rows as f64 - 1.0,
                self.slices as f64 - 1.0,
            ),
        ];
        corners.iter().all(|&(i, j, k)| {
            let a = self.voxel_position(i, j, k);
            let b = other.voxel_position(i, j, k);
            (0..3).all(|n| (a[n] - b[n]).abs() <= tol_mm)
        })
    }
}

/// Hounsfield units on a grid. `hu` has `geometry.voxel_count()` values, `[slice][row][column]`.
///
/// HU are stored as i16: CT stores integers and every rescale seen in practice has slope 1; a
/// non-integer rescale is rounded to the nearest HU, far below anything the measurements resolve.
#[derive(Debug, Clone)]
pub struct Volume {
    pub geometry: Geometry,
    pub hu: Vec<i16>,
}

impl Volume {
    pub fn slice(&self, k: usize) -> &[i16] {
        let n = self.geometry.rows * self.geometry.columns;
        &self.hu[k * n..(k + 1) * n]
    }
}

pub fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

pub fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

pub fn norm(a: [f64; 3]) -> f64 {
    dot(a, a).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn axial() -> Geometry {
        Geometry {
            rows: 4,
            columns: 5,
            slices: 3,
            origin: [-10.0, -20.0, 30.0],
            row_direction: [1.0, 0.0, 0.0],
            column_direction: [0.0, 1.0, 0.0],
            slice_direction: [0.0, 0.0, 1.0],
            spacing: [0.5, 0.75, 2.0],
        }
    }

    #[test]
    fn positions_follow_the_axes() {
        let g = axial();
        assert_eq!(g.voxel_position(2.0, 0.0, 0.0), [-9.0, -20.0, 30.0]);
        assert_eq!(g.voxel_position(0.0, 4.0, 0.0), [-10.0, -17.0, 30.0]);
        assert_eq!(g.slice_position(2), [-10.0, -20.0, 34.0]);
        assert!((g.voxel_volume_ml() - 0.00075).abs() < 1e-12);
    }

    #[test]
    fn same_grid_notices_a_shift() {
        let g = axial();
        let mut h = g.clone();
        assert!(g.same_grid(&h, 1e-6));
        h.origin[2] += 0.5;
        assert!(!g.same_grid(&h, 0.01));
    }
}
