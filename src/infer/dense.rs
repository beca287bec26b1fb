//! The lung's dense structures (6-connected lung voxels above a density: vessels, consolidation,
//! solid nodules) and how each lies against a found opacity: a vessel goes on beyond a finding,
//! while a consolidation's or a solid nodule's density lies mostly inside its own opacity.

use std::collections::HashMap;

use super::postprocess::{OpacityComponents, run_components_where};

/// Of one found opacity (an `OpacityComponents` root): its voxels, those that belong to dense
/// structures lying mostly outside it and those of dense structures lying mostly inside it.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub(crate) struct Split {
    pub voxels: u64,
    pub outside: u64,
    pub inside: u64,
}

/// The `Split` of each root of `found` that `judge` picks, against the lung (`lobes` > 0) of the
/// CT (`hu`) above `dense_above` HU.
pub(crate) fn split(
    found: &OpacityComponents,
    judge: impl Fn(u32) -> bool,
    lobes: &[u8],
    hu: &[i16],
    dims: [usize; 3],
    dense_above: f32,
) -> HashMap<u32, Split> {
    let mut out: HashMap<u32, Split> = HashMap::new();
    if !found.roots.iter().any(|&root| judge(root)) {
        return out;
    }
    let (dense, dense_roots) =
        run_components_where(dims, |i| lobes[i] > 0 && f32::from(hu[i]) > dense_above);
    let mut dense_size = vec![0u64; dense.len()];
    for (run, &root) in dense.iter().zip(&dense_roots) {
        dense_size[root as usize] += (run.x1 - run.x0) as u64;
    }
    // Dense runs are in raster order: the runs of one row are found by binary search.
    let row_of = |z: usize, y: usize| {
        let start = dense.partition_point(|d| (d.z, d.y) < (z, y));
        let end = dense.partition_point(|d| (d.z, d.y) <= (z, y));
        start..end
    };
    // (opacity component, dense structure) → voxels they share.
    let mut shared: HashMap<(u32, u32), u64> = HashMap::new();
    for (run, &root) in found.runs.iter().zip(&found.roots) {
        if !judge(root) {
            continue;
        }
        let (z, y, x0, x1) = found.global(run);
        out.entry(root).or_default().voxels += (x1 - x0) as u64;
        for i in row_of(z, y) {
            let (a, b) = (dense[i].x0.max(x0), dense[i].x1.min(x1));
            if a < b {
                *shared.entry((root, dense_roots[i])).or_default() += (b - a) as u64;
            }
        }
    }
    for (&(root, d), &both) in &shared {
        let s = out.entry(root).or_default();
        if dense_size[d as usize] - both >= both {
            s.outside += both;
        } else {
            s.inside += both;
        }
    }
    out
}
