//! Geometric augmentations: each one only plans a [`Stage`] (a map and sizes) from its seed;
//! [`warp`] applies it, so a [`crate::Pipeline`] can chain several into one resampling.

use autodl_api::{AugSample, Augmenter};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::DEFAULT_MIN_VISIBILITY;
use crate::affine::{Affine2, Stage, warp};
use crate::settings::settings_methods;

/// A geometric augmentation: plans its transform for an image of the given size, or `None`
/// for the identity (always at strength 0).
pub trait Geometric: Augmenter {
    /// The transform this seed draws for a `width x height` image.
    fn plan(&self, width: u32, height: u32, strength: f32, seed: u64) -> Option<Stage>;
}

macro_rules! geometric {
    ($t:ty, $name:literal) => {
        impl Augmenter for $t {
            fn name(&self) -> &'static str {
                $name
            }

            settings_methods!();

            fn apply(&self, sample: &mut AugSample, strength: f32, seed: u64) {
                if let Some(stage) = self.plan(sample.width, sample.height, strength, seed) {
                    warp(sample, &[stage], DEFAULT_MIN_VISIBILITY);
                }
            }
        }
    };
}

/// A uniform draw from `[-r, r]` (0 when `r` is not positive).
pub(crate) fn sym(rng: &mut StdRng, r: f32) -> f32 {
    if r > 0.0 {
        rng.random_range(-r..=r)
    } else {
        0.0
    }
}

/// A uniform draw from `[lo, hi]` (`lo` when the range is empty).
pub(crate) fn between(rng: &mut StdRng, lo: f32, hi: f32) -> f32 {
    if hi > lo {
        rng.random_range(lo..=hi)
    } else {
        lo
    }
}

/// Dihedral element `k` (bit 0: flip x, bit 1: flip y, bit 2: transpose, the transpose read
/// first) of a `w x h` image, as a stage.
pub fn dihedral_stage(w: u32, h: u32, k: u8) -> Stage {
    let (wf, hf) = (f64::from(w), f64::from(h));
    // Output coordinates to input coordinates, in the order `dihedral_plane` reads them.
    let mut inv = if k & 4 != 0 {
        Affine2([0.0, 1.0, 0.0, 1.0, 0.0, 0.0])
    } else {
        Affine2::IDENTITY
    };
    if k & 1 != 0 {
        inv = inv.then(&Affine2([-1.0, 0.0, wf, 0.0, 1.0, 0.0]));
    }
    if k & 2 != 0 {
        inv = inv.then(&Affine2([1.0, 0.0, 0.0, 0.0, -1.0, hf]));
    }
    // Every dihedral map is invertible; the fallback is never taken.
    let forward = inv.inverse().unwrap_or(Affine2::IDENTITY);
    let output = if k & 4 != 0 { (h, w) } else { (w, h) };
    Stage {
        forward,
        input: (w, h),
        output,
        exact: true,
    }
}

/// Mirrors left to right (always, when strength > 0: the pipeline owns the probability).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct HFlip;

/// Mirrors top to bottom (always, when strength > 0: the pipeline owns the probability).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct VFlip;

/// One of the eight dihedral transforms (flips and 90-degree turns, identity included), drawn
/// uniformly; they suit overhead imagery. Non-square samples get only the four that keep their
/// shape, so a batch of equal tiles stays stackable.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Dihedral;

impl Geometric for HFlip {
    fn plan(&self, w: u32, h: u32, strength: f32, _seed: u64) -> Option<Stage> {
        (strength > 0.0).then(|| dihedral_stage(w, h, 1))
    }
}

impl Geometric for VFlip {
    fn plan(&self, w: u32, h: u32, strength: f32, _seed: u64) -> Option<Stage> {
        (strength > 0.0).then(|| dihedral_stage(w, h, 2))
    }
}

impl Geometric for Dihedral {
    fn plan(&self, w: u32, h: u32, strength: f32, seed: u64) -> Option<Stage> {
        let mut rng = StdRng::seed_from_u64(seed);
        if strength <= 0.0 {
            return None;
        }
        let k: u8 = rng.random_range(0..if w == h { 8 } else { 4 });
        (k != 0).then(|| dihedral_stage(w, h, k))
    }
}

geometric!(HFlip, "hflip");
geometric!(VFlip, "vflip");
geometric!(Dihedral, "dihedral");

/// Rotation about the centre by an angle drawn from `±max_degrees * strength`; corners that
/// come from outside the image become 0 and ignored.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rotate {
    /// Largest angle at strength 1.
    pub max_degrees: f32,
}

impl Rotate {
    /// The registered preset: up to 30 degrees either way.
    pub const DEFAULT: Rotate = Rotate { max_degrees: 30.0 };
}

impl Default for Rotate {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl Geometric for Rotate {
    fn plan(&self, w: u32, h: u32, strength: f32, seed: u64) -> Option<Stage> {
        let mut rng = StdRng::seed_from_u64(seed);
        if strength <= 0.0 {
            return None;
        }
        let deg = sym(&mut rng, self.max_degrees * strength);
        let (cx, cy) = (f64::from(w) / 2.0, f64::from(h) / 2.0);
        let forward = Affine2::translate(-cx, -cy)
            .then(&Affine2::rotate(f64::from(deg).to_radians()))
            .then(&Affine2::translate(cx, cy));
        Some(Stage::new(forward, (w, h), (w, h)))
    }
}

geometric!(Rotate, "rotate");

/// Crops a random window of random area and aspect ratio and resizes it, as torchvision and
/// albumentations do.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RandomResizedCrop {
    /// Output width and height; `None` keeps the input size (what training needs to stack tiles).
    pub size: Option<(u32, u32)>,
    /// Range of the window's area as a fraction of the image's, at strength 1.
    pub scale: (f32, f32),
    /// Range of the window's aspect ratio (width / height), at strength 1, drawn log-uniformly.
    pub ratio: (f32, f32),
}

impl RandomResizedCrop {
    /// The registered preset: half to all of the area, aspect 3/4 to 4/3, same size out.
    pub const DEFAULT: RandomResizedCrop = RandomResizedCrop {
        size: None,
        scale: (0.5, 1.0),
        ratio: (0.75, 4.0 / 3.0),
    };
}

impl Default for RandomResizedCrop {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl Geometric for RandomResizedCrop {
    fn plan(&self, w: u32, h: u32, strength: f32, seed: u64) -> Option<Stage> {
        let mut rng = StdRng::seed_from_u64(seed);
        let (ow, oh) = self.size.map_or((w, h), |(a, b)| (a.max(1), b.max(1)));
        let s = strength.max(0.0);
        let (wf, hf) = (w as f32, h as f32);
        let mut window = (0.0f32, 0.0f32, wf, hf);
        if s > 0.0 {
            // Strength pulls the ranges towards "all of the image, same shape".
            let lo = (1.0 - (1.0 - self.scale.0) * s).clamp(0.01, 1.0);
            let hi = (1.0 - (1.0 - self.scale.1) * s).clamp(lo, 1.0);
            let (r0, r1) = (
                self.ratio.0.max(1e-3).ln() * s,
                self.ratio.1.max(1e-3).ln() * s,
            );
            for _ in 0..10 {
                let area = wf * hf * between(&mut rng, lo, hi);
                let aspect = between(&mut rng, r0.min(r1), r0.max(r1)).exp();
                let cw = (area * aspect).sqrt().round();
                let ch = (area / aspect).sqrt().round();
                if cw >= 1.0 && ch >= 1.0 && cw <= wf && ch <= hf {
                    let x0 = rng.random_range(0..=(w - cw as u32)) as f32;
                    let y0 = rng.random_range(0..=(h - ch as u32)) as f32;
                    window = (x0, y0, cw, ch);
                    break;
                }
            }
        }
        let (x0, y0, cw, ch) = window;
        if (x0, y0, cw, ch) == (0.0, 0.0, wf, hf) && (ow, oh) == (w, h) {
            return None;
        }
        let forward = Affine2::translate(-f64::from(x0), -f64::from(y0)).then(&Affine2::scale(
            f64::from(ow) / f64::from(cw),
            f64::from(oh) / f64::from(ch),
        ));
        Some(Stage::new(forward, (w, h), (ow, oh)))
    }
}

geometric!(RandomResizedCrop, "random-resized-crop");

/// Zooms in by a factor from 1 to `1 + (max_zoom - 1) * strength` on a random window that stays
/// inside the image (so nothing comes from outside), as fastai's zoom.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Zoom {
    /// Largest zoom factor at strength 1.
    pub max_zoom: f32,
}

impl Zoom {
    /// The registered preset: up to 1.2x.
    pub const DEFAULT: Zoom = Zoom { max_zoom: 1.2 };
}

impl Default for Zoom {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl Geometric for Zoom {
    fn plan(&self, w: u32, h: u32, strength: f32, seed: u64) -> Option<Stage> {
        let mut rng = StdRng::seed_from_u64(seed);
        if strength <= 0.0 {
            return None;
        }
        let z = between(
            &mut rng,
            1.0,
            1.0 + (self.max_zoom - 1.0).max(0.0) * strength,
        );
        if z <= 1.0 {
            return None;
        }
        let (wf, hf) = (w as f32, h as f32);
        let x0 = between(&mut rng, 0.0, wf - wf / z);
        let y0 = between(&mut rng, 0.0, hf - hf / z);
        let forward = Affine2::translate(-f64::from(x0), -f64::from(y0))
            .then(&Affine2::scale(f64::from(z), f64::from(z)));
        Some(Stage::new(forward, (w, h), (w, h)))
    }
}

geometric!(Zoom, "zoom");

/// Scale, translation, rotation and shear about the centre, each drawn from `±range * strength`;
/// the output keeps the input size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Affine {
    /// Scale gain range: the gain is `1 ± scale`.
    pub scale: f32,
    /// Translation range as a fraction of width and height.
    pub translate: f32,
    /// Rotation range in degrees.
    pub rotate_degrees: f32,
    /// Shear range in degrees, drawn for x and y independently.
    pub shear_degrees: f32,
}

impl Affine {
    /// The registered preset, after Ultralytics' `random_perspective` for detection (scale and
    /// translate) with a little shear: gain 0.75..1.25, shift up to 10 %, shear up to 5 degrees.
    pub const DEFAULT: Affine = Affine {
        scale: 0.25,
        translate: 0.1,
        rotate_degrees: 0.0,
        shear_degrees: 5.0,
    };
}

impl Default for Affine {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl Geometric for Affine {
    fn plan(&self, w: u32, h: u32, strength: f32, seed: u64) -> Option<Stage> {
        let mut rng = StdRng::seed_from_u64(seed);
        if strength <= 0.0 {
            return None;
        }
        let gain = (1.0 + sym(&mut rng, self.scale * strength)).max(0.05);
        let tx = sym(&mut rng, self.translate * strength) * w as f32;
        let ty = sym(&mut rng, self.translate * strength) * h as f32;
        let deg = sym(&mut rng, self.rotate_degrees * strength);
        let kx = sym(&mut rng, self.shear_degrees * strength)
            .to_radians()
            .tan();
        let ky = sym(&mut rng, self.shear_degrees * strength)
            .to_radians()
            .tan();
        let (cx, cy) = (f64::from(w) / 2.0, f64::from(h) / 2.0);
        let forward = Affine2::translate(-cx, -cy)
            .then(&Affine2::shear(f64::from(kx), f64::from(ky)))
            .then(&Affine2::rotate(f64::from(deg).to_radians()))
            .then(&Affine2::scale(f64::from(gain), f64::from(gain)))
            .then(&Affine2::translate(cx + f64::from(tx), cy + f64::from(ty)));
        Some(Stage::new(forward, (w, h), (w, h)))
    }
}

geometric!(Affine, "affine");

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
    if k & 1 != 0 {
        (x0, x1) = (w - x1, w - x0);
    }
    if k & 2 != 0 {
        (y0, y1) = (h - y1, h - y0);
    }
    if k & 4 != 0 {
        // Output pixel (ox, oy) reads source (oy, ox) before the flips, so flips act on the
        // source axes first: apply them, then swap.
        return [y0, x0, y1, x1];
    }
    [x0, y0, x1, y1]
}
