//! The lung's dense structures (6-connected lung voxels above a density: vessels, consolidation,
//! solid nodules) and how each lies against a found opacity: a vessel goes on beyond a finding,
//! while a consolidation's or a solid nodule's density lies mostly inside its own opacity.

use std::collections::HashMap;

use super::postprocess::{OpacityComponents, Run, row_runs, run_components_where};

/// Of one found opacity (an `OpacityComponents` root): its voxels, those that belong to dense
/// structures lying mostly outside it and those of dense structures lying mostly inside it.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub(crate) struct Split {
    pub voxels: u64,
    pub outside: u64,
    pub inside: u64,
}

/// The lung (`lobes` > 0) of a CT (`hu`), whose dense structures are labelled once, when a rule
/// first asks for them, and then shared: the solid-lesion rule and the vessel rule judge the
/// same lung at the same density, and labelling the whole volume is most of what they cost.
pub struct Lung<'a> {
    lobes: &'a [u8],
    hu: &'a [i16],
    dims: [usize; 3],
    labelled: Option<Structures>,
}

/// The dense structures above one density: runs in raster order, the root of each, and each
/// root's size in voxels.
struct Structures {
    above: f32,
    runs: Vec<Run>,
    roots: Vec<u32>,
    size: Vec<u64>,
}

impl<'a> Lung<'a> {
    /// The lung of `hu` where `lobes` > 0, both `[z][y][x]` of `dims`.
    pub fn new(lobes: &'a [u8], hu: &'a [i16], dims: [usize; 3]) -> Self {
        Self {
            lobes,
            hu,
            dims,
            labelled: None,
        }
    }

    /// The CT, `[z][y][x]` of the lung's dims.
    pub(crate) fn hu(&self) -> &'a [i16] {
        self.hu
    }

    /// Its dense structures above `above` HU, labelled now unless they already were at that
    /// density.
    fn structures(&mut self, above: f32) -> &Structures {
        if self.labelled.as_ref().is_some_and(|s| s.above != above) {
            self.labelled = None;
        }
        let (lobes, hu, dims) = (self.lobes, self.hu, self.dims);
        self.labelled.get_or_insert_with(|| {
            let (runs, roots) =
                run_components_where(dims, |i| lobes[i] > 0 && f32::from(hu[i]) > above);
            let mut size = vec![0u64; runs.len()];
            for (run, &root) in runs.iter().zip(&roots) {
                size[root as usize] += (run.x1 - run.x0) as u64;
            }
            Structures {
                above,
                runs,
                roots,
                size,
            }
        })
    }
}

/// The `Split` of each root of `found` that `judge` picks, against the dense structures of `lung`
/// above `dense_above` HU.
pub(crate) fn split(
    found: &OpacityComponents,
    judge: impl Fn(u32) -> bool,
    lung: &mut Lung,
    dense_above: f32,
) -> HashMap<u32, Split> {
    let mut out: HashMap<u32, Split> = HashMap::new();
    if !found.roots.iter().any(|&root| judge(root)) {
        return out;
    }
    let Structures {
        runs: dense,
        roots: dense_roots,
        size: dense_size,
        ..
    } = lung.structures(dense_above);
    // (opacity component, dense structure) → voxels they share.
    let mut shared: HashMap<(u32, u32), u64> = HashMap::new();
    for (run, &root) in found.runs.iter().zip(&found.roots) {
        if !judge(root) {
            continue;
        }
        let (z, y, x0, x1) = found.global(run);
        out.entry(root).or_default().voxels += (x1 - x0) as u64;
        for i in row_runs(dense, z, y) {
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

#[cfg(test)]
mod tests {
    use super::*;

    const DIMS: [usize; 3] = [3, 5, 12];

    fn at(z: usize, y: usize, x: usize) -> usize {
        (z * DIMS[1] + y) * DIMS[2] + x
    }

    /// Lung at -850 HU with a vessel (40 HU) along row 2 of slice 1, a faint band (-400 HU) along
    /// row 3 beside it, and a finding over columns 4-6 of rows 2-3 of slice 1.
    fn case() -> (Vec<u8>, Vec<i16>, Vec<u8>) {
        let n = DIMS.iter().product();
        let lobes = vec![1u8; n];
        let mut hu = vec![-850i16; n];
        let mut o = vec![0u8; n];
        for x in 0..DIMS[2] {
            hu[at(1, 2, x)] = 40;
        }
        for x in 3..8 {
            hu[at(1, 3, x)] = -400;
        }
        for y in 2..4 {
            for x in 4..7 {
                o[at(1, y, x)] = 1;
            }
        }
        (lobes, hu, o)
    }

    #[test]
    fn a_shared_lung_splits_as_a_fresh_one_at_each_density() {
        let (lobes, hu, o) = case();
        let Some(found) = OpacityComponents::without_depth(&o, DIMS) else {
            panic!("the finding is there");
        };
        let fresh = |above| split(&found, |_| true, &mut Lung::new(&lobes, &hu, DIMS), above);
        let mut shared = Lung::new(&lobes, &hu, DIMS);
        let at_300 = split(&found, |_| true, &mut shared, -300.0);
        // Above -300 HU only the vessel, which goes on beyond the finding (3 of its 12 voxels).
        let s = at_300.values().next().copied().unwrap_or_default();
        assert_eq!((s.voxels, s.outside, s.inside), (6, 3, 0));
        // Above -500 HU the band joins the vessel's structure (17 voxels, 6 of them in the
        // finding): all of the finding's dense voxels now go on beyond it. A lung that labelled
        // at -300 HU must label again, and back.
        let at_500 = split(&found, |_| true, &mut shared, -500.0);
        let s = at_500.values().next().copied().unwrap_or_default();
        assert_eq!((s.voxels, s.outside, s.inside), (6, 6, 0));
        assert_eq!(at_500, fresh(-500.0));
        assert_eq!(split(&found, |_| true, &mut shared, -300.0), fresh(-300.0));
    }
}
