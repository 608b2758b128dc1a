//! A contact sheet of samples with their labels drawn on, to check augmentations by eye.

use std::collections::BTreeSet;

use autodl_api::{AugSample, IGNORE};
use image::{Rgb, RgbImage};
use imageproc::drawing::{draw_filled_rect_mut, draw_hollow_rect_mut};
use imageproc::rect::Rect;

/// Opacity of the mask overlay.
const MASK_ALPHA: f32 = 0.45;
const GAP: u32 = 4;
const LINE: u32 = 10;
const BACKGROUND: Rgb<u8> = Rgb([24, 24, 24]);

fn colour(class: usize) -> Rgb<u8> {
    Rgb(autodl_api::class_colour(class))
}

/// Renders samples in a grid of `cols` columns. Each shows its first three bands as RGB (band 0
/// as grey when there are fewer), each band min-max stretched since images may be normalised or
/// raw; the mask as a translucent colour per class (ignored pixels left clear); boxes as
/// rectangles in their class colour; and under it a legend of the classes present, named from
/// the sample's class names (the index when a name is missing).
pub fn preview_grid(samples: &[(AugSample, Vec<String>)], cols: usize) -> RgbImage {
    let cols = cols.max(1);
    if samples.is_empty() {
        return RgbImage::from_pixel(1, 1, BACKGROUND);
    }
    let cell_w = samples
        .iter()
        .map(|(s, _)| s.width)
        .max()
        .unwrap_or(1)
        .max(8 * 8);
    let legends: Vec<Vec<(usize, String)>> =
        samples.iter().map(|(s, names)| legend(s, names)).collect();
    let lines = legends
        .iter()
        .map(|l| layout(l, cell_w).len() as u32)
        .max()
        .unwrap_or(0);
    let cell_h = samples.iter().map(|(s, _)| s.height).max().unwrap_or(1) + lines * LINE;
    let rows = samples.len().div_ceil(cols) as u32;
    let ncols = cols.min(samples.len()) as u32;
    let mut out = RgbImage::from_pixel(
        ncols * (cell_w + GAP) + GAP,
        rows * (cell_h + GAP) + GAP,
        BACKGROUND,
    );
    for (i, ((s, _), entries)) in samples.iter().zip(&legends).enumerate() {
        let x0 = GAP + (i % cols) as u32 * (cell_w + GAP);
        let y0 = GAP + (i / cols) as u32 * (cell_h + GAP);
        draw_sample(&mut out, s, x0, y0);
        for (line, row) in layout(entries, cell_w).iter().enumerate() {
            let y = y0 + s.height + 1 + line as u32 * LINE;
            let mut x = x0;
            for &k in row {
                let (class, name) = &entries[k];
                draw_filled_rect_mut(
                    &mut out,
                    Rect::at(x as i32, y as i32).of_size(7, 7),
                    colour(*class),
                );
                draw_text(&mut out, name, x + 10, y);
                x += entry_width(name);
            }
        }
    }
    out
}

/// The classes a sample shows, by index, with their names.
fn legend(s: &AugSample, names: &[String]) -> Vec<(usize, String)> {
    let mut present: BTreeSet<usize> = s.boxes.iter().map(|(_, c)| *c).collect();
    if let Some(m) = &s.mask {
        present.extend(m.iter().filter(|&&v| v != IGNORE).map(|&v| v as usize));
    }
    present
        .into_iter()
        .map(|c| (c, names.get(c).cloned().unwrap_or_else(|| c.to_string())))
        .collect()
}

fn entry_width(name: &str) -> u32 {
    10 + 8 * name.chars().count() as u32 + 8
}

/// Legend entries (indices) per line, wrapped to `width`.
fn layout(entries: &[(usize, String)], width: u32) -> Vec<Vec<usize>> {
    let mut lines: Vec<Vec<usize>> = Vec::new();
    let mut used = width;
    for (k, (_, name)) in entries.iter().enumerate() {
        let w = entry_width(name);
        if used + w > width {
            lines.push(Vec::new());
            used = 0;
        }
        used += w;
        if let Some(line) = lines.last_mut() {
            line.push(k);
        }
    }
    lines
}

fn draw_sample(out: &mut RgbImage, s: &AugSample, x0: u32, y0: u32) {
    let (w, h) = (s.width as usize, s.height as usize);
    let plane = w * h;
    if plane == 0 || s.image.len() < plane {
        return;
    }
    let picks: [usize; 3] = if s.bands >= 3 && s.image.len() >= 3 * plane {
        [0, 1, 2]
    } else {
        [0, 0, 0]
    };
    let stretch: Vec<(f32, f32)> = picks
        .iter()
        .map(|&b| {
            let band = &s.image[b * plane..(b + 1) * plane];
            let (lo, hi) = band
                .iter()
                .filter(|v| v.is_finite())
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
                    (lo.min(v), hi.max(v))
                });
            let span = hi - lo;
            (lo, if span > 0.0 { 255.0 / span } else { 0.0 })
        })
        .collect();
    let mask = s.mask.as_ref().filter(|m| m.len() == plane);
    for y in 0..h {
        for x in 0..w {
            let i = y * w + x;
            let mut px = [0f32; 3];
            for (c, (&b, &(lo, k))) in picks.iter().zip(&stretch).enumerate() {
                let v = s.image[b * plane + i];
                px[c] = if v.is_finite() { (v - lo) * k } else { 0.0 };
            }
            if let Some(&class) = mask.map(|m| &m[i]).filter(|&&c| c != IGNORE) {
                let tint = autodl_api::class_colour(class as usize);
                for (p, t) in px.iter_mut().zip(tint) {
                    *p = *p * (1.0 - MASK_ALPHA) + f32::from(t) * MASK_ALPHA;
                }
            }
            out.put_pixel(
                x0 + x as u32,
                y0 + y as u32,
                Rgb(px.map(|v| v.round().clamp(0.0, 255.0) as u8)),
            );
        }
    }
    for &(b, class) in &s.boxes {
        let bx0 = b[0].floor().clamp(0.0, w as f32 - 1.0) as u32;
        let by0 = b[1].floor().clamp(0.0, h as f32 - 1.0) as u32;
        let bx1 = (b[2].ceil() as u32).clamp(bx0 + 1, w as u32);
        let by1 = (b[3].ceil() as u32).clamp(by0 + 1, h as u32);
        let rect = Rect::at((x0 + bx0) as i32, (y0 + by0) as i32).of_size(bx1 - bx0, by1 - by0);
        draw_hollow_rect_mut(out, rect, colour(class));
    }
}

/// Draws ASCII text in the 8x8 public-domain bitmap font (other characters as `?`).
fn draw_text(out: &mut RgbImage, text: &str, x: u32, y: u32) {
    for (k, ch) in text.chars().enumerate() {
        let code = if ch.is_ascii() && !ch.is_ascii_control() {
            ch as usize
        } else {
            '?' as usize
        };
        let glyph = font8x8::legacy::BASIC_LEGACY[code];
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8 {
                if bits & (1 << col) != 0 {
                    let (px, py) = (x + 8 * k as u32 + col, y + row as u32);
                    if px < out.width() && py < out.height() {
                        out.put_pixel(px, py, Rgb([235, 235, 235]));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_shape_overlay_and_boxes() {
        let (w, h) = (80u32, 60u32);
        let n = (w * h) as usize;
        let mut mask = vec![IGNORE; n];
        mask[..n / 2].fill(1);
        let s = AugSample {
            width: w,
            height: h,
            bands: 1,
            image: (0..n).map(|i| (i % w as usize) as f32 - 40.0).collect(),
            mask: Some(mask),
            boxes: vec![([10.0, 35.0, 30.0, 55.0], 3)],
        };
        let names = vec!["a".to_owned(), "b".to_owned()];
        let img = preview_grid(
            &[
                (s.clone(), names.clone()),
                (s.clone(), names.clone()),
                (s, names),
            ],
            2,
        );
        // Two columns, two rows, a legend line under each cell.
        assert_eq!(img.width(), 2 * (w + GAP) + GAP);
        assert_eq!(img.height(), 2 * (h + LINE + GAP) + GAP);
        // Stretched grey: the left column is black, the right one white (below the mask).
        assert_eq!(img.get_pixel(GAP, GAP + h - 1), &Rgb([0, 0, 0]));
        assert_eq!(
            img.get_pixel(GAP + w - 1, GAP + h - 1),
            &Rgb([255, 255, 255])
        );
        // Masked rows are tinted with class 1's colour, unmasked ones are grey.
        let p = img.get_pixel(GAP, GAP);
        assert!(p[0] != p[1] || p[1] != p[2]);
        // The box outline has class 3's colour.
        assert_eq!(img.get_pixel(GAP + 10, GAP + 40), &colour(3));
    }
}
