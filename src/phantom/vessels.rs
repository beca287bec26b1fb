//! The pulmonary vessel tree: from each hilum, branches that fork, taper and turn toward the
//! pleura, kept inside the lung. Drawn anti-aliased, so vessels thinner than a voxel fade in as
//! partial volume does on a real scanner.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::anatomy::{Anatomy, segment_distance};

#[derive(Debug, Clone)]
pub struct Segment {
    pub a: [f64; 3],
    pub b: [f64; 3],
    pub ra: f64,
    pub rb: f64,
}

impl Segment {
    pub fn z_range(&self) -> (f64, f64) {
        let r = self.ra.max(self.rb);
        (self.a[2].min(self.b[2]) - r, self.a[2].max(self.b[2]) + r)
    }

    /// Radius and distance of p from the axis.
    pub fn radius_distance(&self, p: [f64; 3]) -> (f64, f64) {
        let ab = sub(self.b, self.a);
        let ap = sub(p, self.a);
        let len2 = dot(ab, ab);
        let t = if len2 > 0.0 {
            (dot(ap, ab) / len2).clamp(0.0, 1.0)
        } else {
            0.0
        };
        (
            self.ra + t * (self.rb - self.ra),
            segment_distance(p, self.a, self.b),
        )
    }
}

fn sub(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}

fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

fn normalize(a: [f64; 3]) -> [f64; 3] {
    let n = dot(a, a).sqrt().max(1e-12);
    [a[0] / n, a[1] / n, a[2] / n]
}

fn random_unit(rng: &mut ChaCha8Rng) -> [f64; 3] {
    loop {
        let v = [
            rng.random_range(-1.0..1.0),
            rng.random_range(-1.0..1.0),
            rng.random_range(-1.0..1.0),
        ];
        let n = dot(v, v);
        if n > 0.01 && n <= 1.0 {
            return normalize(v);
        }
    }
}

/// Turn `d` by about `angle` radians toward a random direction.
fn turn(d: [f64; 3], angle: f64, rng: &mut ChaCha8Rng) -> [f64; 3] {
    let r = random_unit(rng);
    let perp = normalize(sub(
        r,
        [d[0] * dot(r, d), d[1] * dot(r, d), d[2] * dot(r, d)],
    ));
    let (s, c) = angle.sin_cos();
    normalize([
        d[0] * c + perp[0] * s,
        d[1] * c + perp[1] * s,
        d[2] * c + perp[2] * s,
    ])
}

/// Grow the tree for both lungs. `min_radius` stops branching below what the grid can show.
pub fn grow(anatomy: &Anatomy, rng: &mut ChaCha8Rng, min_radius: f64) -> Vec<Segment> {
    let mut out = Vec::new();
    for side in 0..2 {
        let h = anatomy.hilum(side);
        let lateral = if side == 0 { -1.0 } else { 1.0 };
        let roots = [
            [0.25 * lateral, -0.1, 1.0],
            [0.9 * lateral, -0.5, -0.1],
            [0.5 * lateral, 0.5, -1.0],
            [0.7 * lateral, 0.6, 0.1],
        ];
        for d in roots {
            branch(anatomy, rng, h, normalize(d), 5.5, 0, min_radius, &mut out);
        }
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn branch(
    anatomy: &Anatomy,
    rng: &mut ChaCha8Rng,
    start: [f64; 3],
    dir: [f64; 3],
    radius: f64,
    depth: u32,
    min_radius: f64,
    out: &mut Vec<Segment>,
) {
    if radius < min_radius || depth > 12 || out.len() > 20_000 {
        return;
    }
    let length = (radius * 6.5 + 6.0) * rng.random_range(0.8..1.2);
    let mut end = None;
    for attempt in 0..6 {
        let d = if attempt == 0 {
            dir
        } else {
            turn(dir, 0.25 * attempt as f64, rng)
        };
        let l = length * if attempt > 3 { 0.5 } else { 1.0 };
        let e = [
            start[0] + d[0] * l,
            start[1] + d[1] * l,
            start[2] + d[2] * l,
        ];
        if anatomy.lung_side(e).is_some() {
            end = Some((e, d));
            break;
        }
    }
    let Some((end, d)) = end else { return };
    out.push(Segment {
        a: start,
        b: end,
        ra: radius,
        rb: radius * 0.92,
    });
    let split = rng.random_range(0.35..0.6);
    let (r1, r2) = (radius * 0.8, radius * 0.66);
    let d1 = turn(d, split * 0.6, rng);
    branch(anatomy, rng, end, d1, r1, depth + 1, min_radius, out);
    let d2 = turn(d, split, rng);
    branch(anatomy, rng, end, d2, r2, depth + 1, min_radius, out);
}
