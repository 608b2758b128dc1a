//! Presets, the pipeline that applies one to a sample, and batches on rayon threads.

use std::fmt;
use std::sync::Arc;

use autodl_api::{
    AugSample, AugmentPipeline, AugmentSpec, Augmenter, Params, PluginError, SampleAugmenter, Task,
    sample_seed,
};
use rayon::prelude::*;

use crate::affine::{Stage, transform_boxes, warp_pixels};
use crate::geometric::{
    Affine, Dihedral, Geometric, HFlip, RandomResizedCrop, Rotate, VFlip, Zoom,
};
use crate::photometric::{Blur, BrightnessContrast, Cutout, GaussianNoise, SaturationHue};
use crate::settings::Settings;
use crate::{AugmentError, DEFAULT_MIN_VISIBILITY};

/// The preset names [`preset`] knows.
pub const PRESETS: &[&str] = &["default", "none"];

/// A preset's steps for a task: augmentation names with the probability of applying each.
///
/// `default` for detection follows Ultralytics' per-sample steps (mosaic belongs to the loader):
/// horizontal flip, scale and translate, HSV-like colour, plus vertical flips and dihedral turns
/// for overhead imagery. For pixel classification it follows ArcGIS (fastai) transforms: random
/// resized crop, dihedral, brightness and contrast, zoom. `none` has no steps.
pub fn preset(name: &str, task: Task) -> Option<Vec<(&'static str, f32)>> {
    match (name, task) {
        ("none", _) => Some(Vec::new()),
        ("default", Task::Detection) => Some(vec![
            ("hflip", 0.5),
            ("vflip", 0.5),
            ("dihedral", 0.5),
            ("affine", 1.0),
            ("saturation-hue", 1.0),
            ("brightness-contrast", 0.5),
        ]),
        ("default", Task::PixelClassification) => Some(vec![
            ("random-resized-crop", 0.5),
            ("dihedral", 1.0),
            ("zoom", 0.3),
            ("brightness-contrast", 0.75),
        ]),
        _ => None,
    }
}

/// One pipeline step: a geometric transform (which the pipeline can chain into one
/// resampling) or any other augmentation.
#[derive(Clone)]
pub enum Step {
    /// Planned, then resampled together with its geometric neighbours.
    Geometric(Arc<dyn Geometric>),
    /// Applied as it is.
    Other(Arc<dyn Augmenter>),
}

impl Step {
    /// A geometric step.
    pub fn geometric(g: impl Geometric + 'static) -> Self {
        Step::Geometric(Arc::new(g))
    }

    /// Any other step.
    pub fn other(a: impl Augmenter + 'static) -> Self {
        Step::Other(Arc::new(a))
    }

    /// The step's augmentation name.
    pub fn name(&self) -> &'static str {
        match self {
            Step::Geometric(g) => g.name(),
            Step::Other(a) => a.name(),
        }
    }

    /// This crate's augmentation called `name` with its registered preset values.
    pub fn builtin(name: &str) -> Option<Step> {
        Step::builtin_with(name, &Params::new()).ok().flatten()
    }

    /// This crate's augmentation called `name` with `params` (missing ones take their
    /// defaults); `None` when the crate has no augmentation of that name.
    pub fn builtin_with(name: &str, params: &Params) -> Result<Option<Step>, PluginError> {
        fn g<T: Geometric + Settings + 'static>(p: &Params) -> Result<Step, PluginError> {
            Ok(Step::geometric(T::with(p)?))
        }
        fn o<T: Augmenter + Settings + 'static>(p: &Params) -> Result<Step, PluginError> {
            Ok(Step::other(T::with(p)?))
        }
        let build = match name {
            "hflip" => g::<HFlip>,
            "vflip" => g::<VFlip>,
            "dihedral" => g::<Dihedral>,
            "rotate" => g::<Rotate>,
            "random-resized-crop" => g::<RandomResizedCrop>,
            "zoom" => g::<Zoom>,
            "affine" => g::<Affine>,
            "brightness-contrast" => o::<BrightnessContrast>,
            "saturation-hue" => o::<SaturationHue>,
            "gaussian-noise" => o::<GaussianNoise>,
            "blur" => o::<Blur>,
            "cutout" => o::<Cutout>,
            _ => return Ok(None),
        };
        build(params).map(Some)
    }

    /// The augmentation called `name` with `params`: this crate's, or any other registered one
    /// (configured through [`Augmenter::configure`] when it is given parameters).
    pub fn named(name: &str, params: &Params) -> Result<Step, AugmentError> {
        let invalid = |e: PluginError| AugmentError::InvalidParams {
            name: name.to_owned(),
            message: e.to_string(),
        };
        if let Some(step) = Step::builtin_with(name, params).map_err(invalid)? {
            return Ok(step);
        }
        let registered =
            autodl_api::augmenter(name).ok_or_else(|| AugmentError::UnknownAugmenter {
                name: name.to_owned(),
                known: autodl_api::augmenters()
                    .iter()
                    .map(|a| a.name())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        if params.is_empty() {
            Ok(Step::Other(Arc::new(Registered(registered))))
        } else {
            let configured = registered.configure(params).map_err(invalid)?;
            Ok(Step::Other(Arc::from(configured)))
        }
    }
}

impl fmt::Debug for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A registered augmenter from another crate, held by reference.
struct Registered(&'static dyn Augmenter);

impl Augmenter for Registered {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn apply(&self, sample: &mut AugSample, strength: f32, seed: u64) {
        self.0.apply(sample, strength, seed);
    }
}

/// Steps with probabilities and one strength, applied to a sample deterministically from its
/// seed.
///
/// Consecutive geometric steps are chained: boxes go through each step in turn exactly as when
/// the steps are applied one by one, and image and mask are resampled once through the
/// composed map, keeping only the pixels that stepwise application would keep. So the result
/// differs from stepwise application only in being interpolated once instead of several times
/// (sharper, and faster).
#[derive(Clone, Debug)]
pub struct Pipeline {
    steps: Vec<(Step, f32)>,
    strength: f32,
    min_visibility: f32,
    /// Probability of a mosaic of four ([`crate::mosaic`]) before the steps.
    mosaic: f32,
    /// Probability of blending with another augmented sample ([`crate::mixup`]) after them.
    mixup: f32,
}

impl Pipeline {
    /// A pipeline from named steps (as [`preset`] returns), each with its default parameters,
    /// and a strength (0 = identity, 1 = the preset's ranges). Names are this crate's
    /// augmentations or any other registered one.
    pub fn new(steps: &[(&str, f32)], strength: f32) -> Result<Pipeline, AugmentError> {
        let steps = steps
            .iter()
            .map(|&(name, p)| Ok((Step::named(name, &Params::new())?, p)))
            .collect::<Result<Vec<_>, AugmentError>>()?;
        Ok(Pipeline::from_steps(steps, strength))
    }

    /// The pipeline a trial's spec describes for `task`: its steps with their parameters, or
    /// its preset when it lists none, and its mosaic and mixup probabilities.
    pub fn from_spec(spec: &AugmentSpec, task: Task) -> Result<Pipeline, AugmentError> {
        let pipeline = if spec.steps.is_empty() {
            Pipeline::preset(&spec.preset, task, spec.strength)?
        } else {
            let steps = spec
                .steps
                .iter()
                .map(|s| Ok((Step::named(&s.name, &s.params)?, s.probability)))
                .collect::<Result<Vec<_>, AugmentError>>()?;
            Pipeline::from_steps(steps, spec.strength)
        };
        Ok(pipeline.with_mixing(spec.mosaic, spec.mixup))
    }

    /// A pipeline from preset `name` for `task`.
    pub fn preset(name: &str, task: Task, strength: f32) -> Result<Pipeline, AugmentError> {
        let steps = preset(name, task).ok_or_else(|| AugmentError::UnknownPreset {
            name: name.to_owned(),
            known: PRESETS.join(", "),
        })?;
        Pipeline::new(&steps, strength)
    }

    /// A pipeline from steps built in code (custom ranges, output sizes).
    pub fn from_steps(steps: Vec<(Step, f32)>, strength: f32) -> Pipeline {
        Pipeline {
            steps,
            strength,
            min_visibility: DEFAULT_MIN_VISIBILITY,
            mosaic: 0.0,
            mixup: 0.0,
        }
    }

    /// Sets the probabilities of a mosaic of four and of a mixup with a second sample, for
    /// loaders that hand several samples to [`SampleAugmenter::compose`].
    pub fn with_mixing(mut self, mosaic: f32, mixup: f32) -> Pipeline {
        self.mosaic = mosaic.clamp(0.0, 1.0);
        self.mixup = mixup.clamp(0.0, 1.0);
        self
    }

    /// Whether the sample seeded `seed` is a mosaic, and whether it is mixed up.
    fn mixing(&self, seed: u64) -> (bool, bool) {
        let coin = |salt: u64| (mix(seed ^ salt) >> 40) as f32 / (1u64 << 24) as f32;
        (
            self.mosaic > 0.0 && coin(MOSAIC_SALT) < self.mosaic,
            self.mixup > 0.0 && coin(MIXUP_SALT) < self.mixup,
        )
    }

    /// Sets the fraction of a box's area that must stay visible for the box to be kept.
    pub fn with_min_visibility(mut self, min_visibility: f32) -> Pipeline {
        self.min_visibility = min_visibility;
        self
    }

    /// The steps and their probabilities.
    pub fn steps(&self) -> &[(Step, f32)] {
        &self.steps
    }

    /// The strength.
    pub fn strength(&self) -> f32 {
        self.strength
    }

    /// Applies every step, each with its probability, all randomness drawn from `seed`.
    pub fn apply(&self, sample: &mut AugSample, seed: u64) {
        let mut chain: Vec<Stage> = Vec::new();
        let (mut w, mut h) = (sample.width, sample.height);
        for (k, (step, p)) in self.steps.iter().enumerate() {
            let step_seed = mix(seed ^ mix(k as u64 + 1));
            // The top 24 bits give a uniform draw in [0, 1) for the coin.
            let coin = (step_seed >> 40) as f32 / (1u64 << 24) as f32;
            if coin >= *p {
                continue;
            }
            let aug_seed = mix(step_seed);
            match step {
                Step::Geometric(g) => {
                    if let Some(stage) = g.plan(w, h, self.strength, aug_seed) {
                        transform_boxes(&mut sample.boxes, &stage, self.min_visibility);
                        (w, h) = stage.output;
                        chain.push(stage);
                    }
                }
                Step::Other(a) => {
                    warp_pixels(sample, &chain);
                    chain.clear();
                    a.apply(sample, self.strength, aug_seed);
                    (w, h) = (sample.width, sample.height);
                }
            }
        }
        warp_pixels(sample, &chain);
    }
}

/// SplitMix64's finaliser: a well-mixed 64-bit hash.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Salts that draw the mosaic and mixup coins from a sample's seed, apart from the steps'.
const MOSAIC_SALT: u64 = 0x6D6F_7361_6963;
const MIXUP_SALT: u64 = 0x006D_6978_7570;

impl SampleAugmenter for Pipeline {
    fn apply(&self, sample: &mut AugSample, seed: u64) {
        Pipeline::apply(self, sample, seed);
    }

    fn sources(&self, seed: u64) -> usize {
        let (mosaic, mixup) = self.mixing(seed);
        (if mosaic { 4 } else { 1 }) + usize::from(mixup)
    }

    /// A mosaic of the first four sources at the first one's size (each at its own scale,
    /// so small objects stay small), then the steps; a mixup blends in the last source,
    /// augmented with a seed of its own, with a weight from 0.4 to 0.6 (near Ultralytics'
    /// Beta(32, 32)).
    fn compose(&self, sources: Vec<AugSample>, seed: u64) -> Option<AugSample> {
        let (mosaic, mixup) = self.mixing(seed);
        let mut sources = sources.into_iter();
        let mut out = if mosaic {
            let four: [AugSample; 4] = [
                sources.next()?,
                sources.next()?,
                sources.next()?,
                sources.next()?,
            ];
            crate::mosaic(
                &four,
                (four[0].width, four[0].height),
                mix(seed ^ MOSAIC_SALT),
            )
        } else {
            sources.next()?
        };
        self.apply(&mut out, seed);
        if mixup && let Some(mut other) = sources.next() {
            let other_seed = mix(seed ^ MIXUP_SALT);
            self.apply(&mut other, other_seed);
            let lambda = 0.4 + 0.2 * (mix(other_seed) >> 40) as f32 / (1u64 << 24) as f32;
            out = crate::mixup(&out, &other, lambda);
        }
        Some(out)
    }
}

/// The registered augmentation pipeline: [`preset`]s, or steps from any registered
/// augmentation, applied by [`Pipeline`].
pub struct Standard;

impl AugmentPipeline for Standard {
    fn name(&self) -> &'static str {
        autodl_api::DEFAULT_AUGMENT_PIPELINE
    }

    fn presets(&self) -> &'static [&'static str] {
        PRESETS
    }

    fn build(
        &self,
        spec: &AugmentSpec,
        task: Task,
    ) -> Result<Arc<dyn SampleAugmenter>, PluginError> {
        let pipeline =
            Pipeline::from_spec(spec, task).map_err(|e| PluginError::Other(e.to_string()))?;
        Ok(Arc::new(pipeline))
    }
}

/// Applies `pipeline` to every sample on rayon's threads. Sample `i` is seeded by
/// `(seed, epoch, first_index + i)` only, so the output does not depend on the thread count or
/// on how the epoch is cut into batches.
pub fn augment_batch(
    samples: &mut [AugSample],
    pipeline: &Pipeline,
    seed: u64,
    epoch: u64,
    first_index: u64,
) {
    samples
        .par_iter_mut()
        .enumerate()
        .for_each(|(i, s)| pipeline.apply(s, sample_seed(seed, epoch, first_index + i as u64)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_name_known_augmenters() {
        for task in [Task::Detection, Task::PixelClassification] {
            for name in PRESETS {
                let steps = preset(name, task).unwrap();
                for (n, p) in &steps {
                    assert!(
                        Step::builtin(n).is_some() && autodl_api::augmenter(n).is_some(),
                        "{n}"
                    );
                    assert!((0.0..=1.0).contains(p));
                }
                Pipeline::new(&steps, 1.0).unwrap();
            }
            assert!(preset("heavy", task).is_none());
        }
        assert!(preset("none", Task::Detection).unwrap().is_empty());
    }

    #[test]
    fn unknown_names_are_errors() {
        let err = Pipeline::new(&[("hflip", 1.0), ("warp-drive", 1.0)], 1.0).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("warp-drive") && text.contains("hflip"),
            "{text}"
        );
        assert!(Pipeline::preset("heavy", Task::Detection, 1.0).is_err());
    }

    #[test]
    fn probabilities_are_honoured() {
        let p = Pipeline::new(&[("hflip", 0.5)], 1.0).unwrap();
        let base = AugSample {
            width: 2,
            height: 1,
            bands: 1,
            image: vec![0.0, 1.0],
            mask: None,
            boxes: vec![],
        };
        let flipped = (0..1000u64)
            .filter(|&i| {
                let mut s = base.clone();
                p.apply(&mut s, sample_seed(1, 0, i));
                s.image[0] == 1.0
            })
            .count();
        assert!((400..600).contains(&flipped), "{flipped}");
    }

    #[test]
    fn mosaic_and_mixup_combine_the_sources_the_loader_is_asked_for() {
        let tile = |v: f32| AugSample {
            width: 8,
            height: 8,
            bands: 1,
            image: vec![v; 64],
            mask: None,
            boxes: vec![([1.0, 1.0, 7.0, 7.0], v as usize)],
        };
        // Without mixing, one source, augmented exactly as `apply` does.
        let plain = Pipeline::new(&[("hflip", 0.5)], 1.0).unwrap();
        for seed in 0..20 {
            assert_eq!(SampleAugmenter::sources(&plain, seed), 1);
            let mut alone = tile(1.0);
            plain.apply(&mut alone, seed);
            assert_eq!(plain.compose(vec![tile(1.0)], seed), Some(alone));
        }
        // Always a mosaic: four sources, every pixel from one of them.
        let mosaic = Pipeline::new(&[], 1.0).unwrap().with_mixing(1.0, 0.0);
        let m = mosaic
            .compose((0..4).map(|i| tile(i as f32)).collect(), 3)
            .unwrap();
        assert_eq!(SampleAugmenter::sources(&mosaic, 3), 4);
        assert_eq!((m.width, m.height), (8, 8));
        let seen: std::collections::BTreeSet<u32> = m.image.iter().map(|v| *v as u32).collect();
        assert!(seen.len() > 1, "{seen:?}");
        // Always a mixup: two sources blended, boxes of both.
        let mixup = Pipeline::new(&[], 1.0).unwrap().with_mixing(0.0, 1.0);
        assert_eq!(SampleAugmenter::sources(&mixup, 3), 2);
        let m = mixup.compose(vec![tile(0.0), tile(10.0)], 3).unwrap();
        assert!(
            m.image.iter().all(|v| (4.0..=6.0).contains(v)),
            "{:?}",
            m.image
        );
        assert_eq!(m.boxes.len(), 2);
        // Half the samples are mosaics at probability one half.
        let half = Pipeline::new(&[], 1.0).unwrap().with_mixing(0.5, 0.0);
        let n = (0..1000u64)
            .filter(|&s| SampleAugmenter::sources(&half, sample_seed(1, 0, s)) == 4)
            .count();
        assert!((400..600).contains(&n), "{n}");
    }

    #[test]
    fn strength_zero_is_identity() {
        let steps: Vec<(&str, f32)> = crate::NAMES.iter().map(|n| (*n, 1.0)).collect();
        let p = Pipeline::new(&steps, 0.0).unwrap();
        let n = 16 * 12;
        let base = AugSample {
            width: 16,
            height: 12,
            bands: 3,
            image: (0..3 * n).map(|i| (i as f32 * 0.37).sin()).collect(),
            mask: Some((0..n as u32).map(|i| i % 3).collect()),
            boxes: vec![([1.0, 2.0, 9.0, 7.0], 0)],
        };
        let mut s = base.clone();
        p.apply(&mut s, 42);
        assert_eq!(s, base);
    }
}
