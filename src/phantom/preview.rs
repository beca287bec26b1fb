//! Lung-window PNGs of a phantom, with and without lobe and opacity overlays, so that a person
//! can look at what was generated. Radiological convention: patient's right on the image's left,
//! anterior up (axial), superior up (coronal).

use std::io::BufWriter;
use std::path::Path;

use super::Phantom;
use crate::picture::{Picture, render};

fn save(path: &Path, pic: &Picture) -> std::io::Result<()> {
    let file = std::fs::File::create(path)?;
    let mut enc = png::Encoder::new(BufWriter::new(file), pic.width as u32, pic.height as u32);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut w = enc.write_header().map_err(std::io::Error::other)?;
    w.write_image_data(&pic.rgb)
        .map_err(std::io::Error::other)?;
    w.finish().map_err(std::io::Error::other)
}

/// Write axial (upper, middle, lower lung) and coronal previews under `dir`.
pub fn write_all(p: &Phantom, dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let g = &p.volume.geometry;
    let plane = g.rows * g.columns;
    let lung_slices: Vec<usize> = (0..g.slices)
        .filter(|&k| p.lobes[k * plane..(k + 1) * plane].iter().any(|&l| l > 0))
        .collect();
    let (lo, hi) = match (lung_slices.first(), lung_slices.last()) {
        (Some(&a), Some(&b)) => (a, b),
        _ => (0, g.slices.saturating_sub(1)),
    };
    let at = |f: f64| lo + ((hi - lo) as f64 * f).round() as usize;
    for (name, k) in [("upper", at(0.8)), ("middle", at(0.5)), ("lower", at(0.2))] {
        for overlay in [false, true] {
            let pic = render(g.columns, g.rows, overlay, |x, y| {
                let n = k * plane + y * g.columns + x;
                (p.volume.hu[n], p.lobes[n], p.opacities[n])
            });
            let suffix = if overlay { "-overlay" } else { "" };
            save(&dir.join(format!("axial-{name}{suffix}.png")), &pic)?;
        }
    }
    // Coronal through the row with the most lung, stretched to square pixels.
    let row = (0..g.rows)
        .max_by_key(|&j| {
            (0..g.slices)
                .map(|k| {
                    let s = k * plane + j * g.columns;
                    p.lobes[s..s + g.columns].iter().filter(|&&l| l > 0).count()
                })
                .sum::<usize>()
        })
        .unwrap_or(g.rows / 2);
    let height = ((g.slices as f64 * g.spacing[2] / g.spacing[0]).round() as usize).max(1);
    for overlay in [false, true] {
        let pic = render(g.columns, height, overlay, |x, y| {
            let k_from_top = ((y as f64 * g.spacing[0] / g.spacing[2]) as usize).min(g.slices - 1);
            let k = g.slices - 1 - k_from_top;
            let n = k * plane + row * g.columns + x;
            (p.volume.hu[n], p.lobes[n], p.opacities[n])
        });
        let suffix = if overlay { "-overlay" } else { "" };
        save(&dir.join(format!("coronal{suffix}.png")), &pic)?;
    }
    Ok(())
}
