//! RGB pictures of CT planes: a lung window with the lobes (tinted, borders drawn) and the
//! opacities (ground-glass yellow, consolidation red) on top, and text in a fixed 8 × 8 bitmap
//! font. The phantom's PNG previews and the overlay series (Secondary Capture) both draw with it,
//! so what a person checks in a preview is what a PACS viewer shows.

use crate::quant::opacity;

/// Display colours of the lobes, by label (0 background): RUL, RML, RLL, LUL, LLL.
pub const LOBE_COLOURS: [[u8; 3]; 6] = [
    [0, 0, 0],
    [230, 200, 60],
    [80, 200, 90],
    [70, 130, 230],
    [230, 130, 60],
    [170, 90, 210],
];
pub const GROUND_GLASS_COLOUR: [u8; 3] = [255, 240, 0];
pub const CONSOLIDATION_COLOUR: [u8; 3] = [255, 30, 30];

/// Lung window (centre −600 HU, width 1500 HU) to 8 bits.
pub fn lung_window(hu: i16) -> u8 {
    let (c, w) = (-600.0, 1500.0);
    ((f32::from(hu) - (c - w / 2.0)) / w * 255.0).clamp(0.0, 255.0) as u8
}

/// An 8-bit RGB picture, rows top to bottom, pixels interleaved (R, G, B).
#[derive(Debug, Clone)]
pub struct Picture {
    pub width: usize,
    pub height: usize,
    pub rgb: Vec<u8>,
}

impl Picture {
    pub fn new(width: usize, height: usize) -> Picture {
        Picture {
            width,
            height,
            rgb: vec![0; width * height * 3],
        }
    }

    pub fn fill_rect(&mut self, x: usize, y: usize, w: usize, h: usize, c: [u8; 3]) {
        for yy in y..(y + h).min(self.height) {
            for xx in x..(x + w).min(self.width) {
                let o = (yy * self.width + xx) * 3;
                self.rgb[o..o + 3].copy_from_slice(&c);
            }
        }
    }

    /// The picture enlarged `f` times by pixel repetition (small CT grids, so text fits).
    pub fn upscale(&self, f: usize) -> Picture {
        let f = f.max(1);
        let mut out = Picture::new(self.width * f, self.height * f);
        for y in 0..out.height {
            for x in 0..out.width {
                let s = ((y / f) * self.width + x / f) * 3;
                let o = (y * out.width + x) * 3;
                out.rgb[o..o + 3].copy_from_slice(&self.rgb[s..s + 3]);
            }
        }
        out
    }

    /// Draw `text` with its top-left corner at (x, y), each font pixel `scale` × `scale`;
    /// characters the font lacks are drawn as '?'. Returns the x after the last character.
    pub fn text(&mut self, x: usize, y: usize, text: &str, scale: usize, c: [u8; 3]) -> usize {
        use font8x8::UnicodeFonts;
        let scale = scale.max(1);
        let mut cx = x;
        for ch in text.chars() {
            let glyph = font8x8::BASIC_FONTS
                .get(ch)
                .or_else(|| font8x8::LATIN_FONTS.get(ch))
                .or_else(|| font8x8::BASIC_FONTS.get('?'))
                .unwrap_or([0; 8]);
            for (row, bits) in glyph.iter().enumerate() {
                for col in 0..8 {
                    if bits >> col & 1 == 1 {
                        self.fill_rect(cx + col * scale, y + row * scale, scale, scale, c);
                    }
                }
            }
            cx += 8 * scale;
        }
        cx
    }
}

/// Width in pixels of `text` drawn at `scale`.
pub fn text_width(text: &str, scale: usize) -> usize {
    text.chars().count() * 8 * scale.max(1)
}

/// Render a plane given by a sampler (x, y) → (HU, lobe label, opacity label). Without
/// `overlay`, the lung window only.
pub fn render(
    width: usize,
    height: usize,
    overlay: bool,
    sample: impl Fn(usize, usize) -> (i16, u8, u8),
) -> Picture {
    let mut pic = Picture::new(width, height);
    for y in 0..height {
        for x in 0..width {
            let (hu, lobe, op) = sample(x, y);
            let g = f32::from(lung_window(hu));
            let mut px = [g, g, g];
            if overlay {
                if lobe > 0 {
                    let border =
                        [(1i64, 0i64), (-1, 0), (0, 1), (0, -1)]
                            .iter()
                            .any(|&(dx, dy)| {
                                let (nx, ny) = (x as i64 + dx, y as i64 + dy);
                                nx >= 0
                                    && ny >= 0
                                    && (nx as usize) < width
                                    && (ny as usize) < height
                                    && sample(nx as usize, ny as usize).1 != lobe
                            });
                    let c = LOBE_COLOURS[usize::from(lobe).min(5)];
                    let a = if border { 0.9 } else { 0.22 };
                    for n in 0..3 {
                        px[n] = px[n] * (1.0 - a) + f32::from(c[n]) * a;
                    }
                }
                let (c, a) = match op {
                    opacity::GROUND_GLASS => (GROUND_GLASS_COLOUR, 0.5),
                    opacity::CONSOLIDATION => (CONSOLIDATION_COLOUR, 0.65),
                    _ => ([0; 3], 0.0),
                };
                for n in 0..3 {
                    px[n] = px[n] * (1.0 - a) + f32::from(c[n]) * a;
                }
            }
            let o = (y * width + x) * 3;
            for (dst, v) in pic.rgb[o..o + 3].iter_mut().zip(px) {
                *dst = v.round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    pic
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_sets_pixels_in_the_glyph_box_only() {
        let mut p = Picture::new(40, 20);
        let end = p.text(2, 3, "Hi", 2, [255, 0, 0]);
        assert_eq!(end, 2 + 2 * 16);
        let lit: Vec<(usize, usize)> = (0..20)
            .flat_map(|y| (0..40).map(move |x| (x, y)))
            .filter(|&(x, y)| p.rgb[(y * 40 + x) * 3] == 255)
            .collect();
        assert!(!lit.is_empty());
        assert!(
            lit.iter()
                .all(|&(x, y)| (2..34).contains(&x) && (3..19).contains(&y))
        );
    }

    #[test]
    fn upscale_repeats_pixels() {
        let mut p = Picture::new(2, 1);
        p.fill_rect(1, 0, 1, 1, [9, 9, 9]);
        let u = p.upscale(2);
        assert_eq!((u.width, u.height), (4, 2));
        assert_eq!(&u.rgb[..12], &[0, 0, 0, 0, 0, 0, 9, 9, 9, 9, 9, 9]);
    }

    #[test]
    fn overlay_tints_opacities_and_draws_lobe_borders() {
        // Left half lobe 1, right half lobe 4; a consolidated pixel at (1, 1).
        let pic = render(4, 3, true, |x, y| {
            (
                -800,
                if x < 2 { 1 } else { 4 },
                u8::from((x, y) == (1, 1)) * 2,
            )
        });
        let at = |x: usize, y: usize| &pic.rgb[(y * 4 + x) * 3..(y * 4 + x) * 3 + 3];
        let plain = render(4, 3, false, |_, _| (-800, 0, 0));
        assert!(at(1, 1)[0] > at(1, 1)[1], "consolidation is red");
        assert_ne!(
            at(1, 0),
            at(0, 0),
            "the border column differs from the inside"
        );
        assert_eq!(plain.rgb[0], plain.rgb[1], "no overlay: grey");
    }
}
