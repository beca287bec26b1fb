//! The lobes model's labels laid on the HU lung (`lung`): every lung voxel in exactly one lobe of
//! its own side, no lobe voxel outside the lung. The model decides only which lobe; the CT decides
//! what is lung. Where the model said background or the other side's lobe, or left a stray island
//! of a lobe, the voxel takes the nearest lobe of its lung, grown breadth first through the lung.

use std::collections::VecDeque;

use super::lung::{LEFT, RIGHT};
use super::postprocess::{largest_component, neighbours6};
use crate::labels::Lobe;

/// What laying the model's lobes on the lung changed, for the quality checks.
#[derive(Debug, Clone, Copy, Default)]
pub struct Laid {
    /// Lung voxels whose lobe the model gave (its side, its lobe's main piece).
    pub from_model: usize,
    /// Lung voxels that took the nearest lobe instead.
    pub grown: usize,
    /// Lung voxels left without a lobe (a lung in which the model found none of its lobes).
    pub without_lobe: usize,
    /// Voxels the model called lobe outside the lung.
    pub model_outside: usize,
}

/// Replace `model` (the lobes model's labels on the source grid) by lobes on `side` (the lung).
pub fn lay(model: &mut [u8], side: &[u8], dims: [usize; 3]) -> Laid {
    let mut laid = Laid::default();
    for (m, &s) in model.iter_mut().zip(side) {
        let lobe = Lobe::from_label(*m);
        if s == 0 {
            laid.model_outside += usize::from(lobe.is_some());
            *m = 0;
        } else if lobe.is_none_or(|l| l.right() != (s == RIGHT)) {
            *m = 0;
        }
    }
    // Each lobe's main piece: islands elsewhere are the model's confusion, not anatomy.
    for lobe in Lobe::ALL {
        let mask: Vec<bool> = model.iter().map(|&m| m == lobe.label()).collect();
        let keep = largest_component(&mask, dims);
        for ((m, &inside), &k) in model.iter_mut().zip(&mask).zip(&keep) {
            if inside && !k {
                *m = 0;
            }
        }
    }
    let mut queue = VecDeque::new();
    for (i, &m) in model.iter().enumerate() {
        if m > 0 {
            laid.from_model += 1;
            queue.push_back(i);
        }
    }
    while let Some(i) = queue.pop_front() {
        for j in neighbours6(i, dims).into_iter().flatten() {
            if model[j] == 0 && side[j] != 0 && side[j] == side[i] {
                model[j] = model[i];
                laid.grown += 1;
                queue.push_back(j);
            }
        }
    }
    laid.without_lobe = side
        .iter()
        .zip(model.iter())
        .filter(|&(&s, &m)| (s == RIGHT || s == LEFT) && m == 0)
        .count();
    laid
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_lung_voxel_gets_a_lobe_of_its_side_and_nothing_outside_keeps_one() {
        // One row of 10 voxels: right lung at 0..4, left lung at 6..10.
        let dims = [1, 1, 10];
        let side = [1, 1, 1, 1, 0, 0, 2, 2, 2, 2];
        let (rul, lul) = (Lobe::RightUpper.label(), Lobe::LeftUpper.label());
        // The model: the right upper lobe on 1, background on 0, 2 and 3; a right lobe in the left
        // lung at 7; the left upper lobe in the mediastinum at 4 and in the left lung at 8.
        let mut labels = [0, rul, 0, 0, lul, 0, 0, rul, lul, 0];
        let laid = lay(&mut labels, &side, dims);
        assert_eq!(labels, [rul, rul, rul, rul, 0, 0, lul, lul, lul, lul]);
        assert_eq!(laid.model_outside, 1);
        assert_eq!(laid.from_model, 2);
        assert_eq!(laid.grown, 6);
        assert_eq!(laid.without_lobe, 0);
    }

    #[test]
    fn a_lung_without_any_of_its_lobes_is_counted() {
        let dims = [1, 1, 4];
        let side = [1, 1, 2, 2];
        let mut labels = [Lobe::RightUpper.label(); 4];
        let laid = lay(&mut labels, &side, dims);
        assert_eq!(laid.without_lobe, 2);
    }
}
