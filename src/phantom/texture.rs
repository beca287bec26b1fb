//! Smooth pseudo-random fields and image blur for the phantom.
//!
//! Value noise is hashed from lattice coordinates rather than stored, so any voxel can be
//! evaluated independently and in any order: slices are generated in parallel and still match
//! bit for bit whatever the thread count.

/// SplitMix64 finaliser: a fast, well-mixed hash of 64 bits.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn lattice(seed: u64, x: i64, y: i64, z: i64) -> f32 {
    let h = mix(seed
        ^ mix((x as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ mix((y as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F) ^ mix(z as u64))));
    // 24 high bits → [-1, 1)
    ((h >> 40) as f32 / (1u64 << 23) as f32) - 1.0
}

fn smooth(t: f32) -> f32 {
    t * t * (3.0 - 2.0 * t)
}

/// Trilinear value noise in [-1, 1] with lattice spacing `scale` mm.
pub fn noise3(seed: u64, p: [f64; 3], scale: f64) -> f32 {
    let (fx, fy, fz) = (p[0] / scale, p[1] / scale, p[2] / scale);
    let (x0, y0, z0) = (fx.floor(), fy.floor(), fz.floor());
    let (tx, ty, tz) = (
        smooth((fx - x0) as f32),
        smooth((fy - y0) as f32),
        smooth((fz - z0) as f32),
    );
    let (x0, y0, z0) = (x0 as i64, y0 as i64, z0 as i64);
    let mut acc = 0.0;
    for (dz, wz) in [(0, 1.0 - tz), (1, tz)] {
        for (dy, wy) in [(0, 1.0 - ty), (1, ty)] {
            let a = lattice(seed, x0, y0 + dy, z0 + dz);
            let b = lattice(seed, x0 + 1, y0 + dy, z0 + dz);
            acc += wz * wy * (a * (1.0 - tx) + b * tx);
        }
    }
    acc
}

/// Two octaves of value noise, roughly in [-1, 1].
pub fn fractal3(seed: u64, p: [f64; 3], scale: f64) -> f32 {
    0.65 * noise3(seed, p, scale) + 0.35 * noise3(seed ^ 0x5555, p, scale * 0.45)
}

/// Separable [1 2 1]/4 blur of one `rows × cols` image, in place; edges are clamped.
pub fn blur_121(img: &mut [f32], rows: usize, cols: usize, tmp: &mut Vec<f32>) {
    tmp.clear();
    tmp.resize(img.len(), 0.0);
    for r in 0..rows {
        let row = &img[r * cols..(r + 1) * cols];
        let out = &mut tmp[r * cols..(r + 1) * cols];
        for c in 0..cols {
            let l = row[c.saturating_sub(1)];
            let rr = row[(c + 1).min(cols - 1)];
            out[c] = 0.25 * l + 0.5 * row[c] + 0.25 * rr;
        }
    }
    for r in 0..rows {
        let up = r.saturating_sub(1);
        let down = (r + 1).min(rows - 1);
        for c in 0..cols {
            img[r * cols + c] =
                0.25 * tmp[up * cols + c] + 0.5 * tmp[r * cols + c] + 0.25 * tmp[down * cols + c];
        }
    }
}

pub fn smoothstep(edge0: f64, edge1: f64, x: f64) -> f64 {
    let t = ((x - edge0) / (edge1 - edge0)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_is_deterministic_and_bounded() {
        let p = [12.3, -4.5, 77.0];
        assert_eq!(noise3(7, p, 5.0), noise3(7, p, 5.0));
        assert_ne!(noise3(7, p, 5.0), noise3(8, p, 5.0));
        for i in 0..1000 {
            let v = noise3(1, [i as f64 * 0.37, i as f64 * 0.11, -(i as f64)], 3.0);
            assert!((-1.0..=1.0).contains(&v));
        }
    }

    #[test]
    fn blur_keeps_a_constant_image() {
        let mut img = vec![5.0f32; 12];
        let mut tmp = Vec::new();
        blur_121(&mut img, 3, 4, &mut tmp);
        assert!(img.iter().all(|&v| (v - 5.0).abs() < 1e-6));
    }
}
