//! Augmentations that combine several samples: mosaic and mixup. They are free functions, not
//! registered augmenters, because the loader, which holds the other samples, calls them.

use autodl_api::AugSample;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::affine::{Affine2, Stage, clip_box_to, warp};
use crate::{DEFAULT_MIN_VISIBILITY, IGNORE};

/// Four samples around a random centre, as in YOLOv4 and Ultralytics: the centre is drawn from
/// the middle half of the `out_size` (width, height) canvas, sample 0 ends at it from the top
/// left, 1 from the top right, 2 from the bottom left and 3 from the bottom right; each is cut to
/// its quadrant. Pixels move whole (no resampling); uncovered canvas is 0 and ignored. Boxes are
/// cut to their quadrant and dropped below the minimum visible fraction. The output has the
/// first sample's band count (missing bands of the others are 0) and a mask when any input has
/// one (samples without are ignored there). For training tiles of side `s`, a `2s` canvas then a
/// crop or resize back to `s` is the usual recipe.
pub fn mosaic(samples: &[AugSample; 4], out_size: (u32, u32), seed: u64) -> AugSample {
    let mut rng = StdRng::seed_from_u64(seed);
    let (ow, oh) = (out_size.0 as usize, out_size.1 as usize);
    let bands = samples[0].bands as usize;
    let oplane = ow * oh;
    let xc = if ow > 0 {
        rng.random_range(ow / 4..=(3 * ow) / 4)
    } else {
        0
    };
    let yc = if oh > 0 {
        rng.random_range(oh / 4..=(3 * oh) / 4)
    } else {
        0
    };
    let mut image = vec![0f32; bands * oplane];
    let want_mask = samples.iter().any(|s| s.mask.is_some());
    let mut mask = want_mask.then(|| vec![IGNORE; oplane]);
    let mut boxes = Vec::new();
    for (q, s) in samples.iter().enumerate() {
        let (w, h) = (s.width as isize, s.height as isize);
        let (xc, yc, owi, ohi) = (xc as isize, yc as isize, ow as isize, oh as isize);
        // Where the sample's top-left corner lands, and the quadrant it is cut to.
        let (dx, dy, quad) = match q {
            0 => (xc - w, yc - h, [0, 0, xc, yc]),
            1 => (xc, yc - h, [xc, 0, owi, yc]),
            2 => (xc - w, yc, [0, yc, xc, ohi]),
            _ => (xc, yc, [xc, yc, owi, ohi]),
        };
        let x0 = quad[0].max(dx);
        let x1 = quad[2].min(dx + w);
        let y0 = quad[1].max(dy);
        let y1 = quad[3].min(dy + h);
        let plane = (w * h) as usize;
        if x1 > x0 && y1 > y0 && s.image.len() >= plane * (s.bands as usize) {
            let (sx0, n) = ((x0 - dx) as usize, (x1 - x0) as usize);
            for y in y0..y1 {
                let sy = (y - dy) as usize;
                let src = sy * w as usize + sx0;
                let dst = y as usize * ow + x0 as usize;
                for b in 0..bands.min(s.bands as usize) {
                    image[b * oplane + dst..b * oplane + dst + n]
                        .copy_from_slice(&s.image[b * plane + src..b * plane + src + n]);
                }
                if let (Some(om), Some(m)) =
                    (mask.as_mut(), s.mask.as_ref().filter(|m| m.len() == plane))
                {
                    om[dst..dst + n].copy_from_slice(&m[src..src + n]);
                }
            }
        }
        let rect = quad.map(|v| v as f64);
        for &(b, class) in &s.boxes {
            let t = [
                b[0] as f64 + dx as f64,
                b[1] as f64 + dy as f64,
                b[2] as f64 + dx as f64,
                b[3] as f64 + dy as f64,
            ];
            let mut nb = b;
            if clip_box_to(&mut nb, t, rect, DEFAULT_MIN_VISIBILITY) {
                boxes.push((nb, class));
            }
        }
    }
    AugSample {
        width: ow as u32,
        height: oh as u32,
        bands: bands as u32,
        image,
        mask: mask.take(),
        boxes,
    }
}

/// Blends two samples: `lambda * a + (1 - lambda) * b` (`lambda` clamped to 0..=1), with `b`
/// resized to `a`'s size when they differ. Boxes are the union of both; the mask is the
/// dominant sample's (`a`'s when `lambda >= 0.5`), since class indices cannot be blended. The
/// output has `a`'s bands; bands `b` lacks count as 0.
pub fn mixup(a: &AugSample, b: &AugSample, lambda: f32) -> AugSample {
    let lambda = if lambda.is_nan() {
        0.5
    } else {
        lambda.clamp(0.0, 1.0)
    };
    let mut b = b.clone();
    if (b.width, b.height) != (a.width, a.height) && b.width > 0 && b.height > 0 {
        let sx = f64::from(a.width) / f64::from(b.width);
        let sy = f64::from(a.height) / f64::from(b.height);
        let stage = Stage::new(
            Affine2::scale(sx, sy),
            (b.width, b.height),
            (a.width, a.height),
        );
        warp(&mut b, &[stage], DEFAULT_MIN_VISIBILITY);
    }
    let mut out = a.clone();
    let plane = a.width as usize * a.height as usize;
    let shared = (a.bands.min(b.bands) as usize * plane)
        .min(out.image.len())
        .min(b.image.len());
    for (x, y) in out.image[..shared].iter_mut().zip(&b.image[..shared]) {
        *x = lambda * *x + (1.0 - lambda) * *y;
    }
    for x in &mut out.image[shared..] {
        *x *= lambda;
    }
    if lambda < 0.5 {
        out.mask = b.mask.take();
    }
    out.boxes.extend(b.boxes);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(w: u32, h: u32, v: f32, class: u32) -> AugSample {
        let n = (w * h) as usize;
        AugSample {
            width: w,
            height: h,
            bands: 2,
            image: vec![v; 2 * n],
            mask: Some(vec![class; n]),
            boxes: vec![([0.0, 0.0, w as f32, h as f32], class as usize)],
        }
    }

    #[test]
    fn mosaic_places_each_sample_in_its_quadrant() {
        let s = [
            filled(48, 48, 1.0, 0),
            filled(48, 48, 2.0, 1),
            filled(48, 48, 3.0, 2),
            filled(48, 48, 4.0, 3),
        ];
        let m = mosaic(&s, (64, 64), 5);
        assert_eq!((m.width, m.height, m.image.len()), (64, 64, 2 * 64 * 64));
        let mask = m.mask.as_ref().unwrap();
        // Corners come from samples 0..3 when the centre is in the middle half and tiles are big.
        assert_eq!(
            [mask[0], mask[63], mask[63 * 64], mask[64 * 64 - 1]],
            [0, 1, 2, 3]
        );
        assert_eq!(m.image[0], 1.0);
        for (b, _) in &m.boxes {
            assert!(b[0] >= 0.0 && b[1] >= 0.0 && b[2] <= 64.0 && b[3] <= 64.0);
        }
    }

    #[test]
    fn mixup_blends_and_keeps_dominant_mask() {
        let a = filled(8, 8, 1.0, 1);
        let b = filled(4, 4, 3.0, 2);
        let m = mixup(&a, &b, 0.75);
        assert!(m.image.iter().all(|v| (v - 1.5).abs() < 1e-6));
        assert_eq!(m.mask, a.mask);
        assert_eq!(m.boxes.len(), 2);
        assert_eq!(m.boxes[1].0, [0.0, 0.0, 8.0, 8.0]);
        assert_eq!(mixup(&a, &b, 0.25).mask, Some(vec![2; 64]));
    }
}
