//! Augmentations that keep images, masks and boxes in step, on 1 to N bands.
//!
//! Single-sample augmentations register themselves as [`Augmenter`]s by kebab-case name
//! ([`NAMES`]); [`preset`] lists the steps of a named preset per task and [`Pipeline`] applies
//! them with their probabilities; [`augment_batch`] runs a pipeline over a batch on rayon's
//! threads. [`mosaic`] and [`mixup`] combine several samples. ([`Standard`] is the registered
//! augmentation pipeline the training loop builds from a trial's spec.)
//!
//! Conventions. Boxes are `[xmin, ymin, xmax, ymax]` in continuous pixel coordinates with
//! exclusive maxima (pixel `i` covers `[i, i + 1)`). After a geometric transform a box is the box
//! enclosing its transformed corners, clipped to the image, and dropped when less than
//! [`DEFAULT_MIN_VISIBILITY`] of its area before clipping is left. Masks hold class indices with
//! [`IGNORE`] for ignored pixels; they are resampled by nearest neighbour, images bilinearly;
//! pixels that come from outside the image are [`IGNORE`] in the mask and 0 in the image (the
//! band mean once normalised). Colour transforms act on the first three bands only when there
//! are at least three; the rest act on every band.
//!
//! Determinism. Every augmentation is a pure function of (sample, strength, seed), and a
//! batch's seeds derive from (run seed, epoch, sample index) only, never from thread scheduling.
//! `strength` scales each transform's range: 0 is the identity, 1 the preset's default.

mod affine;
mod geometric;
mod multi;
mod photometric;
mod pipeline;
mod settings;

use autodl_api::{AugmentPipelineRegistration, AugmenterRegistration, inventory};

pub use affine::{Affine2, Stage, transform_boxes, warp, warp_pixels};
pub use autodl_api::sample_seed;
pub use autodl_api::{AugSample, Augmenter};
pub use geometric::{
    Affine, Dihedral, Geometric, HFlip, RandomResizedCrop, Rotate, VFlip, Zoom, dihedral_box,
    dihedral_plane, dihedral_stage,
};
pub use multi::{mixup, mosaic};
pub use photometric::{
    Blur, BrightnessContrast, Cutout, GaussianNoise, SaturationHue, gaussian_blur,
};
pub use pipeline::{PRESETS, Pipeline, Standard, Step, augment_batch, preset};
pub use settings::Settings;

/// Mask value of an ignored pixel (one definition, in `autodl-api`).
pub use autodl_api::IGNORE;

/// Fraction of a box's area (before clipping) that must stay in the image for it to be kept.
pub const DEFAULT_MIN_VISIBILITY: f32 = 0.3;

/// Every augmentation this crate registers, by name.
pub const NAMES: &[&str] = &[
    "hflip",
    "vflip",
    "dihedral",
    "rotate",
    "random-resized-crop",
    "zoom",
    "affine",
    "brightness-contrast",
    "saturation-hue",
    "gaussian-noise",
    "blur",
    "cutout",
];

inventory::submit!(AugmenterRegistration(&HFlip));
inventory::submit!(AugmenterRegistration(&VFlip));
inventory::submit!(AugmenterRegistration(&Dihedral));
inventory::submit!(AugmenterRegistration(&Rotate::DEFAULT));
inventory::submit!(AugmenterRegistration(&RandomResizedCrop::DEFAULT));
inventory::submit!(AugmenterRegistration(&Zoom::DEFAULT));
inventory::submit!(AugmenterRegistration(&Affine::DEFAULT));
inventory::submit!(AugmenterRegistration(&BrightnessContrast::DEFAULT));
inventory::submit!(AugmenterRegistration(&SaturationHue::DEFAULT));
inventory::submit!(AugmenterRegistration(&GaussianNoise::DEFAULT));
inventory::submit!(AugmenterRegistration(&Blur::DEFAULT));
inventory::submit!(AugmenterRegistration(&Cutout::DEFAULT));
inventory::submit!(AugmentPipelineRegistration(&Standard));

/// Errors building a pipeline.
#[derive(Debug, thiserror::Error)]
pub enum AugmentError {
    /// No augmentation has this name.
    #[error("unknown augmentation `{name}` (known: {known})")]
    UnknownAugmenter {
        /// The name asked for.
        name: String,
        /// The registered names.
        known: String,
    },
    /// An augmentation's parameters are not what it takes.
    #[error("augmentation `{name}`: {message}")]
    InvalidParams {
        /// The augmentation.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// No preset has this name.
    #[error("unknown augmentation preset `{name}` (known: {known})")]
    UnknownPreset {
        /// The name asked for.
        name: String,
        /// The preset names.
        known: String,
    },
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
    fn every_name_is_registered_once() {
        let registered: Vec<&str> = autodl_api::augmenters().iter().map(|a| a.name()).collect();
        for name in NAMES {
            assert_eq!(
                registered.iter().filter(|n| *n == name).count(),
                1,
                "{name}"
            );
            assert!(Step::builtin(name).is_some(), "{name}");
        }
    }

    #[test]
    fn dihedral_stage_matches_plane_and_box_functions() {
        for (w, h) in [(4usize, 3usize), (5, 5)] {
            let n = w * h;
            let plane: Vec<f32> = (0..n).map(|i| i as f32).collect();
            for k in 0..8u8 {
                let mut s = AugSample {
                    width: w as u32,
                    height: h as u32,
                    bands: 1,
                    image: plane.clone(),
                    mask: Some((0..n as u32).collect()),
                    boxes: vec![([1.0, 0.0, 3.0, 2.0], 0)],
                };
                warp(
                    &mut s,
                    &[dihedral_stage(w as u32, h as u32, k)],
                    DEFAULT_MIN_VISIBILITY,
                );
                let (want, ow, oh) = dihedral_plane(&plane, w, h, k);
                assert_eq!((s.width as usize, s.height as usize), (ow, oh));
                assert_eq!(s.image, want, "k={k}");
                assert_eq!(
                    s.boxes[0].0,
                    dihedral_box([1.0, 0.0, 3.0, 2.0], w as f32, h as f32, k),
                    "k={k}"
                );
            }
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
    fn box_follows_mask_under_every_dihedral_transform() {
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
        for name in NAMES {
            let aug = autodl_api::augmenter(name).unwrap();
            let (mut a, mut b) = (sample(), sample());
            aug.apply(&mut a, 1.0, 7);
            aug.apply(&mut b, 1.0, 7);
            assert_eq!(a, b, "{name}");
        }
    }

    #[test]
    fn colour_steps_skip_fewer_than_three_bands() {
        let mut s = sample();
        SaturationHue::DEFAULT.apply(&mut s, 1.0, 3);
        assert_eq!(s, sample());
    }
}
