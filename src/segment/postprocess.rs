//! Connected components, holes and distances on the source grid, shared by the stages; opacities
//! kept inside the lungs and, where the opacities model's manifest asks, thin opacity components
//! dropped.

use std::collections::VecDeque;

use rayon::prelude::*;

/// A run of set voxels along x: slice z, row y, columns x0..x1 (exclusive).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Run {
    pub z: usize,
    pub y: usize,
    pub x0: usize,
    pub x1: usize,
}

fn find(parent: &mut [u32], mut i: u32) -> u32 {
    while parent[i as usize] != i {
        let p = parent[i as usize];
        parent[i as usize] = parent[p as usize];
        i = p;
    }
    i
}

/// Union the runs of row `b` with the overlapping runs of row `a` (both sorted by x0).
fn union_rows(
    parent: &mut [u32],
    a: std::ops::Range<usize>,
    b: std::ops::Range<usize>,
    runs: &[Run],
) {
    let (mut i, mut j) = (a.start, b.start);
    while i < a.end && j < b.end {
        let (ra, rb) = (runs[i], runs[j]);
        if ra.x0 < rb.x1 && rb.x0 < ra.x1 {
            let (pa, pb) = (find(parent, i as u32), find(parent, j as u32));
            if pa != pb {
                parent[pa.max(pb) as usize] = pa.min(pb);
            }
        }
        if ra.x1 <= rb.x1 {
            i += 1;
        } else {
            j += 1;
        }
    }
}

/// The runs of `mask` (`[z][y][x]` of `dims`) and the root of each run's 6-connected component.
///
/// The indices of the runs of row `y` of slice `z` among `runs` in raster order (as
/// `run_components_where` makes them), by binary search.
pub(crate) fn row_runs(runs: &[Run], z: usize, y: usize) -> std::ops::Range<usize> {
    let start = runs.partition_point(|r| (r.z, r.y) < (z, y));
    let end = runs.partition_point(|r| (r.z, r.y) <= (z, y));
    start..end
}

/// Connected components over runs of voxels rather than voxels: a chest CT has a few runs per
/// row, so union-find touches hundreds of thousands of runs instead of tens of millions of voxels.
fn run_components(mask: &[bool], dims: [usize; 3]) -> (Vec<Run>, Vec<u32>) {
    run_components_where(dims, |i| mask[i])
}

/// As `run_components`, for the voxels (indices into `[z][y][x]` of `dims`) where `set` holds:
/// no mask of the whole volume is built.
pub(crate) fn run_components_where(
    dims: [usize; 3],
    set: impl Fn(usize) -> bool,
) -> (Vec<Run>, Vec<u32>) {
    let (nz, ny, nx) = (dims[0], dims[1], dims[2]);
    let mut runs = Vec::new();
    // row_start[z * ny + y] = index of the row's first run; one more entry closes the last row.
    let mut row_start = Vec::with_capacity(nz * ny + 1);
    for z in 0..nz {
        for y in 0..ny {
            row_start.push(runs.len());
            let base = (z * ny + y) * nx;
            let mut x = 0;
            while x < nx {
                if set(base + x) {
                    let x0 = x;
                    while x < nx && set(base + x) {
                        x += 1;
                    }
                    runs.push(Run { z, y, x0, x1: x });
                } else {
                    x += 1;
                }
            }
        }
    }
    row_start.push(runs.len());
    let mut parent: Vec<u32> = (0..runs.len() as u32).collect();
    let row = |z: usize, y: usize| row_start[z * ny + y]..row_start[z * ny + y + 1];
    for z in 0..nz {
        for y in 0..ny {
            if y > 0 {
                union_rows(&mut parent, row(z, y - 1), row(z, y), &runs);
            }
            if z > 0 {
                union_rows(&mut parent, row(z - 1, y), row(z, y), &runs);
            }
        }
    }
    let roots = (0..runs.len() as u32)
        .map(|i| find(&mut parent, i))
        .collect();
    (runs, roots)
}

/// Keep only the largest 6-connected component of `mask` (`[z][y][x]` of `dims`).
pub fn largest_component(mask: &[bool], dims: [usize; 3]) -> Vec<bool> {
    let (ny, nx) = (dims[1], dims[2]);
    let (runs, roots) = run_components(mask, dims);
    let mut size = vec![0usize; runs.len()];
    for (run, &r) in runs.iter().zip(&roots) {
        size[r as usize] += run.x1 - run.x0;
    }
    let mut keep = vec![false; mask.len()];
    let Some(best) = (0..runs.len()).max_by_key(|&i| (size[i], std::cmp::Reverse(i))) else {
        return keep;
    };
    for (r, &root) in runs.iter().zip(&roots) {
        if root as usize == best {
            let base = (r.z * ny + r.y) * nx;
            keep[base + r.x0..base + r.x1].fill(true);
        }
    }
    keep
}

/// The 6-neighbours of voxel `i` of `dims`.
pub(crate) fn neighbours6(i: usize, dims: [usize; 3]) -> [Option<usize>; 6] {
    let (ny, nx) = (dims[1], dims[2]);
    let plane = ny * nx;
    let (z, y, x) = (i / plane, (i / nx) % ny, i % nx);
    [
        (x > 0).then(|| i - 1),
        (x + 1 < nx).then(|| i + 1),
        (y > 0).then(|| i - nx),
        (y + 1 < ny).then(|| i + nx),
        (z > 0).then(|| i - plane),
        (z + 1 < dims[0]).then(|| i + plane),
    ]
}

/// The 4-neighbours of pixel `i` in an `nx × ny` image.
pub(crate) fn neighbours4(i: usize, nx: usize, ny: usize) -> [Option<usize>; 4] {
    let (x, y) = (i % nx, i / nx);
    [
        (x > 0).then(|| i - 1),
        (x + 1 < nx).then(|| i + 1),
        (y > 0).then(|| i - nx),
        (y + 1 < ny).then(|| i + nx),
    ]
}

/// The set pixels of one `nx × ny` slice that the slice's border reaches through set pixels
/// (4-connected): background outside a lung, or the air around a patient.
pub(crate) fn reached_from_border(set: &[bool], nx: usize, ny: usize) -> Vec<bool> {
    let mut reached = vec![false; set.len()];
    let mut queue = VecDeque::new();
    for i in 0..set.len() {
        let (x, y) = (i % nx, i / nx);
        if (x == 0 || y == 0 || x + 1 == nx || y + 1 == ny) && set[i] {
            reached[i] = true;
            queue.push_back(i);
        }
    }
    while let Some(i) = queue.pop_front() {
        for j in neighbours4(i, nx, ny).into_iter().flatten() {
            if set[j] && !reached[j] {
                reached[j] = true;
                queue.push_back(j);
            }
        }
    }
    reached
}

/// Fill, slice by slice, background enclosed by lung with the label of the lung around it: the
/// vessels, nodules and enclosed consolidation of one lung of `segment::lung`.
pub fn fill_holes_per_slice(labels: &mut [u8], dims: [usize; 3]) {
    let (ny, nx) = (dims[1], dims[2]);
    let plane = ny * nx;
    labels.par_chunks_mut(plane).for_each(|slab| {
        // Background reachable from the slice border is outside; the rest is a hole.
        let background: Vec<bool> = slab.iter().map(|&l| l == 0).collect();
        let mut outside = reached_from_border(&background, nx, ny);
        // Grow the surrounding labels into the holes, breadth first from their rims: each hole
        // voxel takes the label of the nearest lung voxel, in time linear in the hole's size.
        let mut queue = VecDeque::new();
        for i in 0..plane {
            if slab[i] != 0 || outside[i] {
                continue;
            }
            let nb = neighbours4(i, nx, ny);
            if nb.into_iter().flatten().any(|j| slab[j] > 0) {
                queue.push_back(i);
                outside[i] = true; // queued
            }
        }
        while let Some(i) = queue.pop_front() {
            let nb = neighbours4(i, nx, ny);
            if slab[i] == 0
                && let Some(l) = nb.into_iter().flatten().map(|j| slab[j]).find(|&l| l > 0)
            {
                slab[i] = l;
            }
            for j in nb.into_iter().flatten() {
                if slab[j] == 0 && !outside[j] {
                    outside[j] = true;
                    queue.push_back(j);
                }
            }
        }
    });
}

/// Opacities only count inside the lungs.
pub fn opacities_inside_lungs(opacities: &mut [u8], lobes: &[u8]) {
    for (o, &l) in opacities.iter_mut().zip(lobes) {
        if l == 0 {
            *o = 0;
        }
    }
}

/// Squared distances along one line (Felzenszwalb & Huttenlocher's lower envelope of parabolas):
/// `line[p]` becomes `min_q ((p - q)·step)² + line[q]`, infinite where every `line[q]` is.
/// By hand: the one maintained Rust distance-transform crate found (`dt`) is isotropic and
/// copies the whole volume into `IxDyn` arrays of `f64`.
fn envelope_1d(line: &mut [f32], step: f32, sites: &mut Vec<(f32, f32)>, bounds: &mut Vec<f32>) {
    // sites: (position, value) of the parabolas of the envelope; bounds[k]: where site k starts.
    sites.clear();
    bounds.clear();
    for (q, &f) in line.iter().enumerate() {
        if !f.is_finite() {
            continue;
        }
        let xq = q as f32 * step;
        while let (Some(&(xp, fp)), Some(&b)) = (sites.last(), bounds.last()) {
            let meet = ((f + xq * xq) - (fp + xp * xp)) / (2.0 * (xq - xp));
            if meet <= b {
                sites.pop();
                bounds.pop();
            } else {
                sites.push((xq, f));
                bounds.push(meet);
                break;
            }
        }
        if sites.is_empty() {
            sites.push((xq, f));
            bounds.push(f32::NEG_INFINITY);
        }
    }
    if sites.is_empty() {
        return;
    }
    let mut k = 0;
    for (p, d) in line.iter_mut().enumerate() {
        let xp = p as f32 * step;
        while k + 1 < sites.len() && bounds[k + 1] < xp {
            k += 1;
        }
        let (xs, fs) = sites[k];
        *d = (xp - xs) * (xp - xs) + fs;
    }
}

/// Squared Euclidean distance (mm²) from each set voxel of `mask` (`[z][y][x]` of `dims`) to the
/// nearest unset voxel of the volume; 0 on unset voxels. `spacing` is x, y, z in mm, as in
/// `Geometry`. Outside the volume does not count as unset (as scipy's `distance_transform_edt`).
pub(crate) fn squared_depth(mask: &[bool], dims: [usize; 3], spacing: [f64; 3]) -> Vec<f32> {
    let (nz, ny, nx) = (dims[0], dims[1], dims[2]);
    let plane = ny * nx;
    // Along z first, from the mask itself: slices to the nearest unset voxel, both ways.
    let mut slices = vec![f32::INFINITY; mask.len()];
    for z in 0..nz {
        for i in 0..plane {
            if !mask[z * plane + i] {
                slices[z * plane + i] = 0.0;
            } else if z > 0 {
                slices[z * plane + i] = slices[(z - 1) * plane + i] + 1.0;
            }
        }
    }
    for z in (0..nz.saturating_sub(1)).rev() {
        for i in 0..plane {
            let below = slices[(z + 1) * plane + i] + 1.0;
            if below < slices[z * plane + i] {
                slices[z * plane + i] = below;
            }
        }
    }
    let sz = spacing[2] as f32;
    let mut d: Vec<f32> = slices.into_iter().map(|n| (n * sz) * (n * sz)).collect();
    // Then along y within each slice, then along x within each row.
    let (sy, sx) = (spacing[1] as f32, spacing[0] as f32);
    d.par_chunks_mut(plane).for_each(|slab| {
        let (mut sites, mut bounds, mut column) = (Vec::new(), Vec::new(), vec![0.0; ny]);
        for x in 0..nx {
            for (y, c) in column.iter_mut().enumerate() {
                *c = slab[y * nx + x];
            }
            envelope_1d(&mut column, sy, &mut sites, &mut bounds);
            for (y, c) in column.iter().enumerate() {
                slab[y * nx + x] = *c;
            }
        }
    });
    d.par_chunks_mut(nx).for_each_init(
        || (Vec::new(), Vec::new()),
        |(sites, bounds), row| envelope_1d(row, sx, sites, bounds),
    );
    d
}

/// Drop opacity components (6-connected, any opacity label) in which no ball of radius
/// `min_radius_voxels` in-plane voxels fits: thin, tubular findings. On the phantoms the opacity
/// model's false positives are vessel-like, and this is what separated them from true opacities
/// best (models/train/misses.py; models/train/README.md has the figures).
pub fn drop_thin_opacities(
    opacities: &mut [u8],
    dims: [usize; 3],
    spacing: [f64; 3],
    min_radius_voxels: f64,
) {
    let Some(found) = OpacityComponents::of(opacities, dims, spacing) else {
        return;
    };
    let r = (min_radius_voxels * spacing[0].min(spacing[1])) as f32;
    // The same tolerance as misses.py, so that a radius exactly on the limit is kept.
    let limit = (r - 1e-6) * (r - 1e-6);
    found.clear(opacities, dims, |root| found.deepest[root as usize] < limit);
}

/// The 6-connected components of an opacity map (any label), found in the box around them, each
/// with the square of the radius in mm of the largest ball that fits in it.
pub(crate) struct OpacityComponents {
    /// The box's first voxel, `[z, y, x]` of the whole volume; runs are relative to it (`global`
    /// places them).
    lo: [usize; 3],
    pub runs: Vec<Run>,
    pub roots: Vec<u32>,
    /// Indexed by root: squared mm.
    pub deepest: Vec<f32>,
}

impl OpacityComponents {
    pub fn of(opacities: &[u8], dims: [usize; 3], spacing: [f64; 3]) -> Option<Self> {
        Self::build(opacities, dims, Some(spacing))
    }

    /// As `of`, without the inscribed radius (every `deepest` is 0): the distance transform is
    /// most of what `of` costs, and the tests of the dense-lung rules do not need it.
    #[cfg(test)]
    pub fn without_depth(opacities: &[u8], dims: [usize; 3]) -> Option<Self> {
        Self::build(opacities, dims, None)
    }

    fn build(opacities: &[u8], dims: [usize; 3], spacing: Option<[f64; 3]>) -> Option<Self> {
        let (ny, nx) = (dims[1], dims[2]);
        // The inscribed radius is the largest distance to outside the component; the search is
        // limited to the box around all opacities, one voxel wider where the volume allows
        // (outside that box everything is background, so no distance changes).
        let (lo, end) = bounding_box(opacities, dims)?;
        let lo = lo.map(|v| v.saturating_sub(1));
        let hi = [0, 1, 2].map(|a| (end[a] + 1).min(dims[a]));
        let sub = [hi[0] - lo[0], hi[1] - lo[1], hi[2] - lo[2]];
        let mut mask = Vec::with_capacity(sub.iter().product());
        for z in lo[0]..hi[0] {
            for y in lo[1]..hi[1] {
                let base = (z * ny + y) * nx;
                mask.extend(opacities[base + lo[2]..base + hi[2]].iter().map(|&o| o > 0));
            }
        }
        let (runs, roots) = run_components(&mask, sub);
        let mut deepest = vec![0.0f32; runs.len()];
        let Some(spacing) = spacing else {
            return Some(Self {
                lo,
                runs,
                roots,
                deepest,
            });
        };
        let depth = squared_depth(&mask, sub, spacing);
        for (r, &root) in runs.iter().zip(&roots) {
            let base = (r.z * sub[1] + r.y) * sub[2];
            let m = depth[base + r.x0..base + r.x1]
                .iter()
                .fold(0.0f32, |a, &b| a.max(b));
            let d = &mut deepest[root as usize];
            *d = d.max(m);
        }
        Some(Self {
            lo,
            runs,
            roots,
            deepest,
        })
    }

    /// A run's place in the whole volume: slice, row and its first and one-past-last column.
    pub fn global(&self, run: &Run) -> (usize, usize, usize, usize) {
        let lo = self.lo;
        (run.z + lo[0], run.y + lo[1], run.x0 + lo[2], run.x1 + lo[2])
    }

    /// Set to background every component whose root `drop` picks.
    pub fn clear(&self, opacities: &mut [u8], dims: [usize; 3], drop: impl Fn(u32) -> bool) {
        let (ny, nx) = (dims[1], dims[2]);
        for (run, &root) in self.runs.iter().zip(&self.roots) {
            if drop(root) {
                let (z, y, x0, x1) = self.global(run);
                let base = (z * ny + y) * nx;
                opacities[base + x0..base + x1].fill(0);
            }
        }
    }
}

/// The box around the non-zero voxels, if any: its first `[z, y, x]` and one past its last.
pub(crate) fn bounding_box(labels: &[u8], dims: [usize; 3]) -> Option<([usize; 3], [usize; 3])> {
    let (ny, nx) = (dims[1], dims[2]);
    let mut b: Option<([usize; 3], [usize; 3])> = None;
    for (row, values) in labels.chunks(nx).enumerate() {
        let Some(x0) = values.iter().position(|&v| v > 0) else {
            continue;
        };
        let x1 = values.iter().rposition(|&v| v > 0).unwrap_or(x0) + 1;
        let (z, y) = (row / ny, row % ny);
        let (lo, end) = b.get_or_insert(([z, y, x0], [z + 1, y + 1, x1]));
        *lo = [lo[0].min(z), lo[1].min(y), lo[2].min(x0)];
        *end = [end[0].max(z + 1), end[1].max(y + 1), end[2].max(x1)];
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_largest_component() {
        // 1 × 1 × 7: components of size 2 and 3.
        let mask = [true, true, false, true, true, true, false];
        let keep = largest_component(&mask, [1, 1, 7]);
        assert_eq!(keep, vec![false, false, false, true, true, true, false]);
    }

    #[test]
    fn components_connect_across_rows_and_slices_only_through_faces() {
        // 2 × 3 × 3: an L through two slices (5 voxels) and a diagonal neighbour (not connected).
        #[rustfmt::skip]
        let mask = [
            true,  true,  false,
            false, false, false,
            false, false, true,
            // slice 1
            true,  false, false,
            true,  false, false,
            false, false, false,
        ];
        let keep = largest_component(&mask, [2, 3, 3]);
        let kept: Vec<usize> = (0..18).filter(|&i| keep[i]).collect();
        assert_eq!(kept, vec![0, 1, 9, 12]);
    }

    #[test]
    fn depth_is_the_exact_distance_to_the_nearest_unset_voxel() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let dims = [5, 6, 7];
        let spacing = [0.7, 0.8, 2.5];
        let mask: Vec<bool> = (0..5 * 6 * 7).map(|_| rng.random_bool(0.8)).collect();
        let d = squared_depth(&mask, dims, spacing);
        let at = |i: usize| [(i % 7) as f64, ((i / 7) % 6) as f64, (i / 42) as f64];
        for (i, &m) in mask.iter().enumerate() {
            let p = at(i);
            let brute = (0..mask.len())
                .filter(|&j| !mask[j])
                .map(|j| {
                    let q = at(j);
                    (0..3)
                        .map(|a| ((p[a] - q[a]) * spacing[a]).powi(2))
                        .sum::<f64>()
                })
                .fold(f64::INFINITY, f64::min);
            let want = if m { brute } else { 0.0 };
            assert!(
                (d[i] as f64 - want).abs() < 1e-3,
                "voxel {i}: {} vs {want}",
                d[i]
            );
        }
    }

    #[test]
    fn depth_without_any_unset_voxel_is_infinite() {
        let d = squared_depth(&[true; 8], [2, 2, 2], [1.0, 1.0, 1.0]);
        assert!(d.iter().all(|v| v.is_infinite()));
    }

    #[test]
    fn drops_thin_opacities_and_keeps_thick_ones_whole() {
        // 9 × 20 × 30 at 1 × 1 × 1 mm: a tube 2 voxels wide along x (inscribed radius 1 voxel)
        // and a 7 × 7 × 7 block (radius 4: its centre is 4 voxels from outside) of both labels.
        let dims = [9, 20, 30];
        let idx = |z: usize, y: usize, x: usize| (z * 20 + y) * 30 + x;
        let mut o = vec![0u8; 9 * 20 * 30];
        for x in 2..28 {
            for (z, y) in [(1, 2), (1, 3), (2, 2), (2, 3)] {
                o[idx(z, y, x)] = 1;
            }
        }
        for z in 1..8 {
            for y in 10..17 {
                for x in 10..17 {
                    o[idx(z, y, x)] = if x < 13 { 1 } else { 2 };
                }
            }
        }
        let before = o.clone();
        drop_thin_opacities(&mut o, dims, [1.0, 1.0, 1.0], 2.5);
        for (i, (&a, &b)) in before.iter().zip(&o).enumerate() {
            let in_tube = (i / 30) % 20 < 5;
            assert_eq!(b, if in_tube { 0 } else { a }, "voxel {i}");
        }
        // The block's radius is 4 voxels: a limit above it drops it too.
        drop_thin_opacities(&mut o, dims, [1.0, 1.0, 1.0], 4.5);
        assert!(o.iter().all(|&v| v == 0));
    }

    #[test]
    fn thin_means_in_plane_voxels_whatever_the_slice_spacing() {
        // One slice of a 5 × 5 square: radius 3 in-plane voxels at 0.5 mm in-plane is 1.5 mm,
        // reached in-plane (the square's centre) but not through 2.5 mm slices (one slice: no
        // unset voxel above or below inside the volume).
        let mut o = vec![0u8; 9 * 9];
        for y in 2..7 {
            for x in 2..7 {
                o[y * 9 + x] = 2;
            }
        }
        let kept = o.clone();
        drop_thin_opacities(&mut o, [1, 9, 9], [0.5, 0.5, 2.5], 3.0);
        assert_eq!(o, kept);
        drop_thin_opacities(&mut o, [1, 9, 9], [0.5, 0.5, 2.5], 3.5);
        assert!(o.iter().all(|&v| v == 0));
    }
}
