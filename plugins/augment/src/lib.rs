//! Augmentations that keep images, masks and boxes in step.
//!
//! Each augmentation is deterministic for its seed, so a sample's augmented form depends only
//! on (run seed, epoch, sample index), never on thread scheduling.

use autodl_api::{AugSample, Augmenter, AugmenterRegistration, inventory};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The eight dihedral transforms (flips and 90-degree turns), which suit overhead imagery.
/// Non-square samples get only the four that keep their shape.
pub struct Dihedral;

/// Random brightness and contrast on every band (images are already normalised per band).
pub struct BrightnessContrast;

inventory::submit!(AugmenterRegistration(&Dihedral));
inventory::submit!(AugmenterRegistration(&BrightnessContrast));

/// Applies dihedral transform `k` (bit 0: flip x, bit 1: flip y, bit 2: transpose) to a
/// row-major `w x h` plane, returning the new plane and its width and height.
pub fn dihedral_plane<T: Copy>(src: &[T], w: usize, h: usize, k: u8) -> (Vec<T>, usize, usize) {
    let transpose = k & 4 != 0;
    let (ow, oh) = if transpose { (h, w) } else { (w, h) };
    let mut out = Vec::with_capacity(src.len());
    for oy in 0..oh {
        for ox in 0..ow {
            let (mut x, mut y) = if transpose { (oy, ox) } else { (ox, oy) };
            if k & 1 != 0 {
                x = w - 1 - x;
            }
            if k & 2 != 0 {
                y = h - 1 - y;
            }
            out.push(src[y * w + x]);
        }
    }
    (out, ow, oh)
}

/// The same transform on a box `[xmin, ymin, xmax, ymax]` in continuous pixel coordinates.
pub fn dihedral_box(b: [f32; 4], w: f32, h: f32, k: u8) -> [f32; 4] {
    let [mut x0, mut y0, mut x1, mut y1] = b;
    if k & 4 != 0 {
        // Output pixel (ox, oy) reads source (oy, ox) before the flips, so flips act on the
        // source axes first: apply them, then swap.
        if k & 1 != 0 {
            (x0, x1) = (w - x1, w - x0);
        }
        if k & 2 != 0 {
            (y0, y1) = (h - y1, h - y0);
        }
        return [y0, x0, y1, x1];
    }
    if k & 1 != 0 {
        (x0, x1) = (w - x1, w - x0);
    }
    if k & 2 != 0 {
        (y0, y1) = (h - y1, h - y0);
    }
    [x0, y0, x1, y1]
}

impl Augmenter for Dihedral {
    fn name(&self) -> &'static str {
        "dihedral"
    }

    fn apply(&self, s: &mut AugSample, strength: f32, seed: u64) {
        let mut rng = StdRng::seed_from_u64(seed);
        if strength <= 0.0 {
            return;
        }
        let square = s.width == s.height;
        let k: u8 = rng.random_range(0..if square { 8 } else { 4 });
        if k == 0 {
            return;
        }
        let (w, h) = (s.width as usize, s.height as usize);
        let plane = w * h;
        let mut image = Vec::with_capacity(s.image.len());
        let (mut ow, mut oh) = (w, h);
        for band in s.image.chunks(plane) {
            let (p, a, b) = dihedral_plane(band, w, h, k);
            image.extend(p);
            (ow, oh) = (a, b);
        }
        s.image = image;
        if let Some(mask) = &s.mask {
            s.mask = Some(dihedral_plane(mask, w, h, k).0);
        }
        for (b, _) in &mut s.boxes {
            *b = dihedral_box(*b, w as f32, h as f32, k);
        }
        (s.width, s.height) = (ow as u32, oh as u32);
    }
}

impl Augmenter for BrightnessContrast {
    fn name(&self) -> &'static str {
        "brightness-contrast"
    }

    fn apply(&self, s: &mut AugSample, strength: f32, seed: u64) {
        let mut rng = StdRng::seed_from_u64(seed);
        // In normalised units: shift by up to 0.2 sigma, scale by 0.8..1.2 at strength 1.
        let shift = rng.random_range(-0.2..=0.2f32) * strength;
        let scale = 1.0 + rng.random_range(-0.2..=0.2f32) * strength;
        for x in &mut s.image {
            *x = *x * scale + shift;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> AugSample {
        let (w, h) = (4u32, 3u32);
        AugSample {
            width: w,
            height: h,
            bands: 2,
            image: (0..24).map(|i| i as f32).collect(),
            mask: Some((0..12).collect()),
            boxes: vec![([0.0, 0.0, 2.0, 1.0], 0)],
        }
    }

    #[test]
    fn flips_twice_are_identity() {
        for k in [1u8, 2, 3] {
            let s = sample();
            let (once, w, h) = dihedral_plane(s.mask.as_ref().unwrap(), 4, 3, k);
            let (twice, _, _) = dihedral_plane(&once, w, h, k);
            assert_eq!(&twice, s.mask.as_ref().unwrap());
            let b = dihedral_box(dihedral_box(s.boxes[0].0, 4.0, 3.0, k), 4.0, 3.0, k);
            assert_eq!(b, s.boxes[0].0);
        }
    }

    #[test]
    fn box_follows_mask_under_every_transform() {
        // A box rasterised into a mask, transformed both ways, covers the same pixels.
        let (w, h) = (5usize, 5usize);
        let bx = [1.0f32, 0.0, 3.0, 2.0];
        let mut mask = vec![0u8; w * h];
        for y in 0..2 {
            for x in 1..3 {
                mask[y * w + x] = 1;
            }
        }
        for k in 0..8u8 {
            let (m, ow, _) = dihedral_plane(&mask, w, h, k);
            let b = dihedral_box(bx, w as f32, h as f32, k);
            for (i, &v) in m.iter().enumerate() {
                let (x, y) = ((i % ow) as f32 + 0.5, (i / ow) as f32 + 0.5);
                let inside = x > b[0] && x < b[2] && y > b[1] && y < b[3];
                assert_eq!(v == 1, inside, "k={k} pixel {i}");
            }
        }
    }

    #[test]
    fn same_seed_same_result() {
        let (mut a, mut b) = (sample(), sample());
        Dihedral.apply(&mut a, 1.0, 7);
        Dihedral.apply(&mut b, 1.0, 7);
        assert_eq!(a, b);
    }
}
