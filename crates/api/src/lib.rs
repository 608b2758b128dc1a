//! The plugin API: the traits every pipeline stage implements and the plain data types that
//! cross their boundaries.
//!
//! Architecture invariant: nothing here names a concrete plugin or a Burn type. Stages talk in
//! plain data (paths, numbers, `Vec<f32>` images) so that a trial can run in a child process,
//! and later on another machine, with its specification and result as JSON.
//!
//! In-tree plugins register a `&'static` value of their trait into the static registry with
//! [`inventory::submit!`]; the binary names each plugin crate so the linker keeps it.

pub mod contracts;
mod evaluate;
pub mod files;
mod params;
mod registry;
mod types;

pub use contracts::{
    CHECKPOINT, Checkpoint, ClassInfo, ContractError, DetMetrics, DetectionMetricsFile,
    DetectionSummary, ENSEMBLE, EnsembleMember, EnsembleMeta, Event, META, METRICS, MetricsFile,
    ModelMeta, PixelMetricsFile, RESULT, WEIGHTS,
};
pub use evaluate::{DetectedBox, EvalItem, EvalOptions, TruthBox};
pub use inventory;
pub use params::{
    Direction, MetricDecl, ParamDecl, ParamError, ParamKind, ParamsExt, resolve_params,
    search_space_of,
};
pub use registry::{
    ARCGIS_METRIC, AugmentPipelineRegistration, AugmenterRegistration, BatchDeducerRegistration,
    EvaluatorRegistration, NetworkRegistration, TunerRegistration, augment_pipeline,
    augment_pipelines, augmenter, augmenters, batch_deducer, batch_deducers, default_evaluator,
    evaluator, evaluators, metric_for_task, network, networks, register_network, tuner, tuners,
};
pub use types::*;

/// An error a plugin reports.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The input data could not be used.
    #[error("data: {0}")]
    Data(String),
    /// Training failed (diverged, invalid configuration, ...).
    #[error("training failed: {0}")]
    Training(String),
    /// The time budget ran out before anything useful was done.
    #[error("time budget exhausted: {0}")]
    Budget(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Anything else, with its message.
    #[error("{0}")]
    Other(String),
}

/// Marks an ignored pixel in a class mask: no class, left out of the loss and the metrics.
/// Augmentations write it where pixels come from outside the image.
pub const IGNORE: u32 = u32::MAX;

/// A file whose presence in a trial's folder asks the trial to stop after its current epoch
/// (how the orchestrator's pruner reaches a trial in another process).
pub const STOP_FILE: &str = "STOP";

/// The colour class `index` is drawn in, in previews, reports and packages.
pub fn class_colour(index: usize) -> [u8; 3] {
    const PALETTE: [[u8; 3]; 10] = [
        [230, 25, 75],
        [60, 180, 75],
        [255, 225, 25],
        [0, 130, 200],
        [245, 130, 48],
        [145, 30, 180],
        [70, 240, 240],
        [240, 50, 230],
        [210, 245, 60],
        [250, 190, 212],
    ];
    PALETTE[index % PALETTE.len()]
}

/// Reports progress from inside a stage. Only the CLI prints; plugins call this.
pub trait Progress: Send + Sync {
    /// A finished epoch.
    fn epoch(&self, record: &EpochRecord);
    /// A free-form status line.
    fn message(&self, text: &str);
}

/// A progress sink that drops everything, for tests.
pub struct NoProgress;

impl Progress for NoProgress {
    fn epoch(&self, _: &EpochRecord) {}
    fn message(&self, _: &str) {}
}

/// Where prediction reports how far it has got: a scene of tens of thousands of pixels a side
/// is thousands of windows.
pub trait PredictProgress: Send + Sync {
    /// Prediction of the image at `path` starts; it is cut into `windows` windows.
    fn image(&self, path: &std::path::Path, windows: usize);
    /// One more window of the current image is done.
    fn window(&self);
}

impl PredictProgress for NoProgress {
    fn image(&self, _: &std::path::Path, _: usize) {}
    fn window(&self) {}
}

/// A network family (U-Net, RetinaNet, ...): trains one model from a [`TrialSpec`] and runs a
/// trained model on images.
pub trait NetworkFamily: Send + Sync {
    /// Short lowercase name used in pipelines and on the leaderboard, such as `unet`.
    fn name(&self) -> &'static str;
    /// The task this family solves.
    fn task(&self) -> Task;
    /// Backbones this family can be built on; the first is the default.
    fn backbones(&self) -> &'static [&'static str];
    /// The backbones advanced mode's tuners choose among: by default all of
    /// [`NetworkFamily::backbones`]. A family leaves out those a tuning trial would waste its
    /// time on (those without pretrained weights on this machine: on a CPU budget a backbone
    /// trained from scratch cannot compete), which a pipeline can still name.
    fn tuned_backbones(&self) -> Vec<&'static str> {
        self.backbones().to_vec()
    }
    /// The parameters the family reads from [`TrialSpec::params`], with their ranges,
    /// defaults and tuned ranges. The planner checks a pipeline against them and passes the
    /// family exactly these, complete.
    fn params(&self) -> Vec<ParamDecl> {
        Vec::new()
    }
    /// ArcGIS's name for this family (the `.emd`'s `ModelName`, such as `UnetClassifier`),
    /// where ArcGIS has one; packages use the family's own name otherwise.
    fn arcgis_name(&self) -> Option<&'static str> {
        None
    }
    /// The metrics the family reports; the first is the default ranking metric. By default
    /// those of the evaluator registered for its task ([`default_evaluator`]).
    fn metrics(&self) -> Vec<MetricDecl> {
        default_evaluator(self.task()).map_or_else(Vec::new, |e| e.metrics())
    }
    /// Trains a model as the spec says, writing its artefacts under `spec.out_dir`.
    fn train(&self, spec: &TrialSpec, progress: &dyn Progress) -> Result<TrialResult, PluginError>;
    /// Runs a trained model (its folder as `train` wrote it) on images, writing predictions
    /// under `out_dir` through the same inference path as validation, reporting each image
    /// and window to `progress`; returns the files written.
    fn predict(
        &self,
        model_dir: &std::path::Path,
        images: &[std::path::PathBuf],
        out_dir: &std::path::Path,
        options: &PredictOptions,
        progress: &dyn PredictProgress,
    ) -> Result<Vec<std::path::PathBuf>, PluginError>;
    /// Runs a trained model on images through the same inference path as
    /// [`NetworkFamily::predict`] and hands `each` what it predicts for each image (its index
    /// in `images`) as plain data, before any threshold: what ensembles and test-time
    /// augmentation (`options.hflip`) combine. A family that cannot says so.
    fn infer(
        &self,
        model_dir: &std::path::Path,
        images: &[std::path::PathBuf],
        options: &PredictOptions,
        each: &mut dyn FnMut(usize, Inferred) -> Result<(), PluginError>,
    ) -> Result<(), PluginError> {
        let _ = (model_dir, images, options, each);
        Err(PluginError::Other(format!(
            "network `{}` cannot be part of an ensemble",
            self.name()
        )))
    }
}

/// An augmentation: changes one sample, image and labels together, deterministically for a seed.
pub trait Augmenter: Send + Sync {
    /// Name used in pipelines.
    fn name(&self) -> &'static str;
    /// The parameters a `[[augment.steps]]` entry may give it besides `probability`, with
    /// their ranges and defaults (the registered value uses the defaults).
    fn params(&self) -> Vec<ParamDecl> {
        Vec::new()
    }
    /// This augmentation with `params` (checked and complete against
    /// [`Augmenter::params`]) in place of its defaults. An augmentation that declares
    /// parameters implements it; the default accepts only an empty map, for which the
    /// registered value itself is used.
    fn configure(&self, params: &Params) -> Result<Box<dyn Augmenter>, PluginError> {
        let _ = params;
        Err(PluginError::Other(format!(
            "augmentation `{}` takes no parameters",
            self.name()
        )))
    }
    /// Applies the augmentation with the given strength (0 = none, 1 = its default range).
    fn apply(&self, sample: &mut AugSample, strength: f32, seed: u64);
}

/// An augmentation pipeline: knows presets and turns a trial's [`AugmentSpec`] (a preset, or
/// registered [`Augmenter`]s in order with probabilities and parameters) into what the
/// training loop applies to each sample.
pub trait AugmentPipeline: Send + Sync {
    /// Name used in pipelines (`[augment] pipeline = "..."`).
    fn name(&self) -> &'static str;
    /// The preset names it knows (`default` and `none` at least).
    fn presets(&self) -> &'static [&'static str];
    /// Builds the augmentation `spec` describes for `task`.
    fn build(
        &self,
        spec: &AugmentSpec,
        task: Task,
    ) -> Result<std::sync::Arc<dyn SampleAugmenter>, PluginError>;
}

/// A built augmentation pipeline.
pub trait SampleAugmenter: Send + Sync {
    /// Augments one sample; every random draw comes from `seed` (see [`sample_seed`]).
    fn apply(&self, sample: &mut AugSample, seed: u64);

    /// How many samples the training sample seeded `seed` is made of: 1, or more when the
    /// pipeline combines samples (a mosaic of four, a mixup of two). The loader draws the
    /// extra ones and hands them all, un-augmented, to [`SampleAugmenter::compose`].
    fn sources(&self, seed: u64) -> usize {
        let _ = seed;
        1
    }

    /// One training sample from `sources` samples (as many as [`SampleAugmenter::sources`]
    /// asked for, the sample being trained on first), augmented; the default augments the
    /// first.
    fn compose(&self, sources: Vec<AugSample>, seed: u64) -> Option<AugSample> {
        let mut first = sources.into_iter().next()?;
        self.apply(&mut first, seed);
        Some(first)
    }
}

/// The seed of one sample in one epoch of a run: a function of (run seed, epoch, sample index)
/// only, so no random draw depends on thread scheduling or on which other samples share a
/// batch. The one formula for training loops and augmentation alike.
pub fn sample_seed(seed: u64, epoch: u64, index: u64) -> u64 {
    // SplitMix64's finaliser over the three values: cheap, well mixed, no shared state.
    let mut z = seed
        ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ index.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Chooses a batch size by measuring real training steps through `probe`.
pub trait BatchDeducer: Send + Sync {
    /// Name used in pipelines.
    fn name(&self) -> &'static str;
    /// Returns the batch size to train with.
    fn deduce(
        &self,
        probe: &mut dyn FnMut(u32) -> Result<StepMeasure, PluginError>,
        limits: &BatchLimits,
    ) -> Result<u32, PluginError>;
}

/// Proposes hyperparameters for the next trial from the trials so far.
pub trait Tuner: Send + Sync {
    /// Name used in pipelines.
    fn name(&self) -> &'static str;
    /// The next parameters to try, or `None` when the search space is exhausted.
    fn suggest(&self, space: &SearchSpace, history: &[TrialRecord], seed: u64) -> Option<Params>;
}

/// Scores a model's predictions for one task: the metrics a family reports, computed the same
/// way for every epoch of training, for the kept epoch's `metrics.json` and for `autodl
/// evaluate`. Plain data in and out, so that no evaluator sees a tensor.
pub trait Evaluator: Send + Sync {
    /// Name used in pipelines (`[evaluate] evaluator`) and by `autodl evaluate --evaluator`.
    fn name(&self) -> &'static str;
    /// The task it scores.
    fn task(&self) -> Task;
    /// The metrics a pipeline may rank by, with their direction; the first is the default
    /// ranking metric.
    fn metrics(&self) -> Vec<MetricDecl>;
    /// A fresh evaluation over `classes` (in class-index order), to which images are added
    /// one by one.
    fn start(&self, classes: &[ClassInfo], options: &EvalOptions) -> Box<dyn Evaluation>;
}

/// One evaluation in progress: the images added so far.
pub trait Evaluation: Send {
    /// Adds one image's prediction and truth.
    fn add(&mut self, item: EvalItem<'_>) -> Result<(), PluginError>;
    /// One metric over the images so far, computing only what it needs (training asks for the
    /// ranking metric after every epoch). `None` when the evaluator does not know `metric` or
    /// it is undefined on these images (no true box to find, say).
    fn score(&self, metric: &str) -> Option<f64>;
    /// Every number over the images added, for the kept epoch or `autodl evaluate`, as
    /// `metrics.json` holds them; its `epochs` are empty, for training to fill in.
    fn finish(self: Box<Self>) -> MetricsFile;
}
