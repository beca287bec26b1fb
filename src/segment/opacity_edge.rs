//! Opacities carried out to the edge the CT shows.
//!
//! The opacities model labels a 1.6 mm grid and pulmo takes its labels to the CT grid; on the
//! phantoms the found opacities stop short of the lesions' edges, and the missed voxels lie one or
//! two CT voxels from a found one at ground-glass density (-700 to -400 HU, where aerated lung is
//! about -850). That shortfall is most of the underestimate of severe and critical COVID-19
//! lobes. Lung next to a found opacity and at least as dense as the manifest's `dense_above_hu`
//! joins it, as far as `reach_mm` in the slice (4-connected steps of a CT pixel each, as many as
//! fit in the reach), each voxel taking the label of the opacity it grew from. Only next to a
//! finding, and only a short way: density alone would also take the vessels, which are as dense.
//! The reach is in millimetres because the shortfall is: about one model voxel (1.6 mm), which is
//! two pixels of a 0.7 mm CT and less than one of a 2.8 mm CT (on the phantoms, growing one such
//! pixel overshot the truth).

use rayon::prelude::*;

use super::flood;
use crate::infer::model::OpacityEdge;

/// Grow `opacities` (labels on the CT grid, `[z][y][x]` of `dims`, `spacing` in mm as `[x, y,
/// z]`) into the lung (`lobes` > 0) wherever the CT (`hu`) is dense enough, slice by slice.
pub fn grow(
    opacities: &mut [u8],
    lobes: &[u8],
    hu: &[i16],
    dims: [usize; 3],
    spacing: [f64; 3],
    rule: &OpacityEdge,
) {
    let plane = dims[1] * dims[2];
    let pixel = spacing[0].max(spacing[1]);
    // A step must fit in the reach along rows and columns alike; the tolerance keeps a reach of
    // exactly n pixels at n steps.
    let steps = if pixel > 0.0 {
        (rule.reach_mm / pixel + 1e-6).floor() as usize
    } else {
        0
    };
    if plane == 0 || steps == 0 {
        return;
    }
    let dense = rule.dense_above_hu;
    opacities
        .par_chunks_mut(plane)
        .zip(lobes.par_chunks(plane))
        .zip(hu.par_chunks(plane))
        .for_each(|((o, l), h)| grow_slice(o, l, h, dims[2], dense, steps));
}

/// One slice (`rows * cols`, row major): breadth-first from every opacity voxel, `steps` deep.
fn grow_slice(
    opacities: &mut [u8],
    lobes: &[u8],
    hu: &[i16],
    cols: usize,
    dense_above_hu: f32,
    steps: usize,
) {
    let seeds: Vec<usize> = (0..opacities.len()).filter(|&i| opacities[i] > 0).collect();
    let len = opacities.len();
    flood::in_slice(seeds, steps, cols, len, |from, to| {
        let joins = opacities[to] == 0 && lobes[to] > 0 && f32::from(hu[to]) >= dense_above_hu;
        if joins {
            opacities[to] = opacities[from];
        }
        joins
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: OpacityEdge = OpacityEdge {
        dense_above_hu: -700.0,
        reach_mm: 1.6,
    };
    /// 0.8 mm pixels: the reach is two steps.
    const PIXELS: [f64; 3] = [0.8, 0.8, 2.5];

    /// One 1 × 1 × 7 row of lung: an opacity at x = 3 and the CT's values around it.
    fn row(hu: [i16; 7]) -> Vec<u8> {
        let mut o = vec![0, 0, 0, 2, 0, 0, 0];
        grow(&mut o, &[1; 7], &hu, [1, 1, 7], PIXELS, &RULE);
        o
    }

    #[test]
    fn dense_lung_beside_an_opacity_joins_it_with_its_label() {
        assert_eq!(
            row([-850, -650, -650, 0, -600, -690, -650]),
            vec![0, 2, 2, 2, 2, 2, 0],
            "two steps each way, no more"
        );
    }

    #[test]
    fn aerated_lung_stops_the_growth() {
        // -750 HU is lighter than the rule's -700: the dense voxel beyond it stays clean.
        assert_eq!(
            row([-600, -600, -750, 0, -850, -600, -600]),
            vec![0, 0, 0, 2, 0, 0, 0]
        );
    }

    #[test]
    fn nothing_grows_outside_the_lungs_or_across_slices() {
        // 2 slices of 1 × 3: the opacity in slice 0; the body wall (lobe 0) beside it.
        let mut o = vec![1, 0, 0, 0, 0, 0];
        let lobes = [1, 0, 1, 1, 1, 1];
        grow(&mut o, &lobes, &[0; 6], [2, 1, 3], PIXELS, &RULE);
        assert_eq!(o, vec![1, 0, 0, 0, 0, 0]);
    }

    /// A 3 × 3 slice of dense lung with an opacity in the centre, grown with `pixel` mm pixels.
    fn centre_grown(pixel: f64) -> Vec<u8> {
        let mut o = vec![0, 0, 0, 0, 1, 0, 0, 0, 0];
        grow(
            &mut o,
            &[3; 9],
            &[-500; 9],
            [1, 3, 3],
            [pixel, pixel, 2.5],
            &RULE,
        );
        o
    }

    #[test]
    fn grows_along_rows_and_columns_alike() {
        // Two 4-connected steps (0.8 mm pixels) reach the whole slice.
        assert_eq!(centre_grown(0.8), vec![1; 9]);
        // 1 mm pixels: one step fits in 1.6 mm.
        assert_eq!(centre_grown(1.0), vec![0, 1, 0, 1, 1, 1, 0, 1, 0]);
    }

    #[test]
    fn pixels_wider_than_the_reach_grow_nothing() {
        assert_eq!(centre_grown(2.8), vec![0, 0, 0, 0, 1, 0, 0, 0, 0]);
    }
}
