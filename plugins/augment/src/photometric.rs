//! Augmentations that change pixel values and leave the geometry alone (cutout also hides
//! labels). Images are normalised per band where training calls these, so ranges are in units
//! of one standard deviation.

use autodl_api::{AugSample, Augmenter};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::geometric::{between, sym};
use crate::settings::settings_methods;
use crate::{DEFAULT_MIN_VISIBILITY, IGNORE};

/// Random brightness (shift) and contrast (gain about 0, the band mean once normalised) on
/// every band.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BrightnessContrast {
    /// Largest shift at strength 1, in normalised units (standard deviations).
    pub brightness: f32,
    /// Contrast gain range at strength 1: the gain is `1 ± contrast`.
    pub contrast: f32,
}

impl BrightnessContrast {
    /// The registered preset: shift by up to 0.2 sigma, gain 0.8..1.2.
    pub const DEFAULT: BrightnessContrast = BrightnessContrast {
        brightness: 0.2,
        contrast: 0.2,
    };
}

impl Default for BrightnessContrast {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl Augmenter for BrightnessContrast {
    fn name(&self) -> &'static str {
        "brightness-contrast"
    }

    settings_methods!();

    fn apply(&self, s: &mut AugSample, strength: f32, seed: u64) {
        let mut rng = StdRng::seed_from_u64(seed);
        if strength <= 0.0 {
            return;
        }
        // In normalised units, so a shift is in standard deviations of the band.
        let shift = sym(&mut rng, self.brightness) * strength;
        let scale = 1.0 + sym(&mut rng, self.contrast) * strength;
        for x in &mut s.image {
            *x = *x * scale + shift;
        }
    }
}

/// Saturation and hue on the first three bands (taken as RGB), only when there are at least
/// three. Both are one linear colour matrix: hue turns the colour about the grey axis, saturation
/// scales the distance from it. Being linear, it is defined for normalised (negative) values too,
/// where HSV is not.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SaturationHue {
    /// Saturation gain range: the gain is `1 ± saturation`.
    pub saturation: f32,
    /// Hue turn range in degrees.
    pub hue_degrees: f32,
}

impl SaturationHue {
    /// The registered preset, near Ultralytics' HSV gains: saturation 0.5..1.5, hue ±18 degrees.
    pub const DEFAULT: SaturationHue = SaturationHue {
        saturation: 0.5,
        hue_degrees: 18.0,
    };
}

impl Default for SaturationHue {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl Augmenter for SaturationHue {
    fn name(&self) -> &'static str {
        "saturation-hue"
    }

    settings_methods!();

    fn apply(&self, s: &mut AugSample, strength: f32, seed: u64) {
        let mut rng = StdRng::seed_from_u64(seed);
        if strength <= 0.0 || s.bands < 3 {
            return;
        }
        let gain = (1.0 + sym(&mut rng, self.saturation * strength)).max(0.0);
        let theta = sym(&mut rng, self.hue_degrees * strength).to_radians();
        let m = colour_matrix(gain, theta);
        let plane = s.width as usize * s.height as usize;
        if s.image.len() < 3 * plane {
            return;
        }
        let (r, rest) = s.image.split_at_mut(plane);
        let (g, rest) = rest.split_at_mut(plane);
        let b = &mut rest[..plane];
        for ((r, g), b) in r.iter_mut().zip(g.iter_mut()).zip(b.iter_mut()) {
            let (x, y, z) = (*r, *g, *b);
            *r = m[0] * x + m[1] * y + m[2] * z;
            *g = m[3] * x + m[4] * y + m[5] * z;
            *b = m[6] * x + m[7] * y + m[8] * z;
        }
    }
}

/// `J + gain * (cos(theta) (I - J) + sin(theta) K)`: `J` projects on the grey axis, `K` is the
/// cross product with its unit vector, so the chroma turns by `theta` and scales by `gain`.
pub(crate) fn colour_matrix(gain: f32, theta: f32) -> [f32; 9] {
    let (sn, cs) = theta.sin_cos();
    let third = 1.0 / 3.0;
    let u = 1.0 / 3f32.sqrt();
    let j = third;
    let diag = j + gain * cs * (1.0 - j);
    let off = j - gain * cs * j;
    let k = gain * sn * u;
    [
        diag,
        off - k,
        off + k,
        off + k,
        diag,
        off - k,
        off - k,
        off + k,
        diag,
    ]
}

/// Additive gaussian noise on every band with a standard deviation drawn from
/// `[0.5, 1] * sigma * strength`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GaussianNoise {
    /// Largest standard deviation at strength 1, in normalised units.
    pub sigma: f32,
}

impl GaussianNoise {
    /// The registered preset: up to 0.1 sigma.
    pub const DEFAULT: GaussianNoise = GaussianNoise { sigma: 0.1 };
}

impl Default for GaussianNoise {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl Augmenter for GaussianNoise {
    fn name(&self) -> &'static str {
        "gaussian-noise"
    }

    settings_methods!();

    fn apply(&self, s: &mut AugSample, strength: f32, seed: u64) {
        let mut rng = StdRng::seed_from_u64(seed);
        if strength <= 0.0 {
            return;
        }
        let top = self.sigma * strength;
        let sd = between(&mut rng, 0.5 * top, top);
        add_noise(&mut s.image, sd, rng.random());
    }
}

/// Adds approximately gaussian noise of standard deviation `sd`: Irwin-Hall with four 16-bit
/// uniforms, drawn from eight xorshift32 lanes stepped together so that the loop vectorises
/// (StdRng's ChaCha would cost several times more per value, for no visible gain). Tails stop
/// at 3.5 sd, which augmentation does not miss.
pub(crate) fn add_noise(values: &mut [f32], sd: f32, seed: u64) {
    let mut z = seed;
    let mut lanes = [0u32; 8];
    for lane in &mut lanes {
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut v = (z ^ (z >> 31)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        v ^= v >> 29;
        // xorshift32 must not start at 0.
        *lane = (v as u32) | 1;
    }
    // Four uniforms on 0..65536 have mean 131070 and variance 4 * 65536^2 / 12.
    let k = sd * 3f32.sqrt() / 65536.0;
    let mid = 4.0 * 32767.5;
    let mut chunks = values.chunks_exact_mut(8);
    for chunk in &mut chunks {
        for (x, lane) in chunk.iter_mut().zip(lanes.iter_mut()) {
            *x += (draw(lane) as i32 as f32 - mid) * k;
        }
    }
    for (x, lane) in chunks.into_remainder().iter_mut().zip(lanes.iter_mut()) {
        *x += (draw(lane) as i32 as f32 - mid) * k;
    }
}

/// Two xorshift32 steps, summed as four 16-bit halves.
#[inline(always)]
fn draw(lane: &mut u32) -> u32 {
    let mut x = *lane;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    let r1 = x;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    *lane = x;
    (r1 & 0xffff) + (r1 >> 16) + (x & 0xffff) + (x >> 16)
}

/// Gaussian blur with a standard deviation drawn from `[0, max_sigma * strength]` pixels,
/// separable, edges replicated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Blur {
    /// Largest standard deviation at strength 1, in pixels.
    pub max_sigma: f32,
}

impl Blur {
    /// The registered preset: up to 1.5 pixels.
    pub const DEFAULT: Blur = Blur { max_sigma: 1.5 };
}

impl Default for Blur {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl Augmenter for Blur {
    fn name(&self) -> &'static str {
        "blur"
    }

    settings_methods!();

    fn apply(&self, s: &mut AugSample, strength: f32, seed: u64) {
        let mut rng = StdRng::seed_from_u64(seed);
        if strength <= 0.0 {
            return;
        }
        let sigma = between(&mut rng, 0.0, self.max_sigma * strength);
        gaussian_blur(s, sigma);
    }
}

/// Blurs every band of `s` with a gaussian of standard deviation `sigma` pixels.
pub fn gaussian_blur(s: &mut AugSample, sigma: f32) {
    if sigma < 0.2 {
        return;
    }
    let (w, h) = (s.width as usize, s.height as usize);
    let plane = w * h;
    if plane == 0 || !s.image.len().is_multiple_of(plane) {
        return;
    }
    let r = ((3.0 * sigma).ceil() as usize).max(1);
    let mut kernel: Vec<f32> = (0..=2 * r)
        .map(|i| (-((i as f32 - r as f32).powi(2)) / (2.0 * sigma * sigma)).exp())
        .collect();
    let total: f32 = kernel.iter().sum();
    kernel.iter_mut().for_each(|k| *k /= total);
    let mut tmp = vec![0f32; plane];
    let mut padded = vec![0f32; w + 2 * r];
    for band in s.image.chunks_exact_mut(plane) {
        // Rows: through an edge-replicated copy, so the inner loop has no clamping.
        for (src, dst) in band.chunks_exact(w).zip(tmp.chunks_exact_mut(w)) {
            padded[r..r + w].copy_from_slice(src);
            let (first, last) = (src[0], src[w - 1]);
            padded[..r].fill(first);
            padded[r + w..].fill(last);
            for (x, d) in dst.iter_mut().enumerate() {
                *d = padded[x..x + 2 * r + 1]
                    .iter()
                    .zip(&kernel)
                    .map(|(p, k)| p * k)
                    .sum();
            }
        }
        // Columns: whole rows at a time, which vectorises.
        for (y, dst) in band.chunks_exact_mut(w).enumerate() {
            dst.fill(0.0);
            for (i, k) in kernel.iter().enumerate() {
                let sy = (y + i).saturating_sub(r).min(h - 1);
                for (d, t) in dst.iter_mut().zip(&tmp[sy * w..(sy + 1) * w]) {
                    *d += k * t;
                }
            }
        }
    }
}

/// Cuts 1 to `holes` rectangles out: 0 in the image, ignored in the mask; a box is dropped when
/// less than the minimum visible fraction of it is left uncovered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cutout {
    /// Most holes.
    pub holes: u32,
    /// Largest hole side as a fraction of the image side, at strength 1.
    pub size: f32,
}

impl Cutout {
    /// The registered preset: up to 3 holes of up to a fifth of each side.
    pub const DEFAULT: Cutout = Cutout {
        holes: 3,
        size: 0.2,
    };
}

impl Default for Cutout {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl Augmenter for Cutout {
    fn name(&self) -> &'static str {
        "cutout"
    }

    settings_methods!();

    fn apply(&self, s: &mut AugSample, strength: f32, seed: u64) {
        let mut rng = StdRng::seed_from_u64(seed);
        if strength <= 0.0 || self.holes == 0 {
            return;
        }
        let (w, h) = (s.width as usize, s.height as usize);
        let plane = w * h;
        if plane == 0 || !s.image.len().is_multiple_of(plane) {
            return;
        }
        let n = rng.random_range(1..=self.holes);
        let top = (self.size * strength).min(1.0);
        let holes: Vec<[usize; 4]> = (0..n)
            .map(|_| {
                let hw =
                    ((between(&mut rng, 0.25 * top, top) * w as f32).round() as usize).clamp(1, w);
                let hh =
                    ((between(&mut rng, 0.25 * top, top) * h as f32).round() as usize).clamp(1, h);
                let x0 = rng.random_range(0..=w - hw);
                let y0 = rng.random_range(0..=h - hh);
                [x0, y0, x0 + hw, y0 + hh]
            })
            .collect();
        for &[x0, y0, x1, y1] in &holes {
            for band in s.image.chunks_exact_mut(plane) {
                for y in y0..y1 {
                    band[y * w + x0..y * w + x1].fill(0.0);
                }
            }
            if let Some(m) = s.mask.as_mut().filter(|m| m.len() == plane) {
                for y in y0..y1 {
                    m[y * w + x0..y * w + x1].fill(IGNORE);
                }
            }
        }
        let rects: Vec<[f64; 4]> = holes.iter().map(|h| h.map(|v| v as f64)).collect();
        s.boxes.retain(|(b, _)| {
            let b = b.map(f64::from);
            let area = (b[2] - b[0]) * (b[3] - b[1]);
            area > 0.0
                && area - covered_area(b, &rects)
                    >= f64::from(DEFAULT_MIN_VISIBILITY) * area * (1.0 - 1e-9)
        });
    }
}

/// Area of `b` covered by the union of `rects`, exactly, by compressing coordinates.
pub(crate) fn covered_area(b: [f64; 4], rects: &[[f64; 4]]) -> f64 {
    let clipped: Vec<[f64; 4]> = rects
        .iter()
        .map(|r| {
            [
                r[0].max(b[0]),
                r[1].max(b[1]),
                r[2].min(b[2]),
                r[3].min(b[3]),
            ]
        })
        .filter(|r| r[2] > r[0] && r[3] > r[1])
        .collect();
    if clipped.is_empty() {
        return 0.0;
    }
    let mut xs: Vec<f64> = clipped.iter().flat_map(|r| [r[0], r[2]]).collect();
    let mut ys: Vec<f64> = clipped.iter().flat_map(|r| [r[1], r[3]]).collect();
    xs.sort_by(f64::total_cmp);
    ys.sort_by(f64::total_cmp);
    let mut total = 0.0;
    for xw in xs.windows(2) {
        for yw in ys.windows(2) {
            let (cx, cy) = ((xw[0] + xw[1]) / 2.0, (yw[0] + yw[1]) / 2.0);
            if clipped
                .iter()
                .any(|r| cx > r[0] && cx < r[2] && cy > r[1] && cy < r[3])
            {
                total += (xw[1] - xw[0]) * (yw[1] - yw[0]);
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_matrix_identity_and_grey() {
        let m = colour_matrix(1.0, 0.0);
        for (i, v) in m.iter().enumerate() {
            let want = if i % 4 == 0 { 1.0 } else { 0.0 };
            assert!((v - want).abs() < 1e-6, "{m:?}");
        }
        // Grey stays grey under any hue turn and saturation gain.
        let m = colour_matrix(0.3, 1.0);
        for row in m.chunks(3) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
        // Saturation 0 gives grey: every output is the mean.
        let m = colour_matrix(0.0, 0.7);
        assert!(m.iter().all(|v| (v - 1.0 / 3.0).abs() < 1e-6));
    }

    #[test]
    fn noise_has_the_drawn_spread() {
        let mut s = AugSample {
            width: 200,
            height: 200,
            bands: 1,
            image: vec![0.0; 40000],
            mask: None,
            boxes: vec![],
        };
        GaussianNoise { sigma: 1.0 }.apply(&mut s, 1.0, 3);
        let n = s.image.len() as f32;
        let mean = s.image.iter().sum::<f32>() / n;
        let sd = (s.image.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / n).sqrt();
        assert!(
            mean.abs() < 0.02 && (0.45..=1.05).contains(&sd),
            "mean {mean} sd {sd}"
        );
    }

    #[test]
    fn blur_keeps_constant_images_and_mean() {
        let mut s = AugSample {
            width: 9,
            height: 7,
            bands: 2,
            image: vec![2.0; 126],
            mask: None,
            boxes: vec![],
        };
        gaussian_blur(&mut s, 1.3);
        assert!(s.image.iter().all(|v| (v - 2.0).abs() < 1e-5));
        let mut s = AugSample {
            width: 9,
            height: 9,
            bands: 1,
            image: vec![0.0; 81],
            mask: None,
            boxes: vec![],
        };
        s.image[40] = 1.0;
        gaussian_blur(&mut s, 1.0);
        assert!((s.image.iter().sum::<f32>() - 1.0).abs() < 1e-4);
        assert!(s.image[40] < 0.5 && s.image[41] > 0.0);
    }

    #[test]
    fn covered_area_counts_overlaps_once() {
        let b = [0.0, 0.0, 10.0, 10.0];
        assert_eq!(
            covered_area(b, &[[0.0, 0.0, 5.0, 10.0], [2.0, 0.0, 6.0, 10.0]]),
            60.0
        );
        assert_eq!(covered_area(b, &[[20.0, 0.0, 30.0, 10.0]]), 0.0);
    }

    #[test]
    fn cutout_hides_pixels_in_image_and_mask() {
        let mut s = AugSample {
            width: 20,
            height: 20,
            bands: 1,
            image: vec![1.0; 400],
            mask: Some(vec![1; 400]),
            boxes: vec![],
        };
        Cutout::DEFAULT.apply(&mut s, 1.0, 9);
        let mask = s.mask.unwrap();
        let zeros = s.image.iter().filter(|v| **v == 0.0).count();
        assert!(zeros > 0);
        assert_eq!(zeros, mask.iter().filter(|m| **m == IGNORE).count());
        assert!(
            s.image
                .iter()
                .zip(&mask)
                .all(|(v, m)| (*v == 0.0) == (*m == IGNORE))
        );
    }
}
