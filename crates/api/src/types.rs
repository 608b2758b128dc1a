//! Plain data at the stage boundaries; all of it serialises to JSON.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The task a network family solves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Task {
    /// Bounding boxes.
    Detection,
    /// One class per pixel.
    PixelClassification,
}

impl Task {
    /// The kebab-case name, as in pipelines.
    pub fn as_str(self) -> &'static str {
        match self {
            Task::Detection => "detection",
            Task::PixelClassification => "pixel-classification",
        }
    }
}

impl std::fmt::Display for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a trial reads its data; mirrors the pipeline's `[data]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct DataSpec {
    /// Dataset folder.
    pub root: PathBuf,
    /// Format name, or `None` to detect.
    pub format: Option<String>,
    /// Image sub-folder.
    pub images_dir: Option<String>,
    /// Validation fraction for a random split.
    pub val_fraction: f64,
    /// Test fraction for a random split: samples training never sees.
    #[serde(default)]
    pub test_fraction: f64,
    /// Mask value to ignore.
    pub ignore_index: Option<u32>,
    /// Whether bad samples stop the run.
    pub fail_on_bad_sample: bool,
    /// The bands read from each image, numbered from 0 (`None`: all).
    #[serde(default)]
    pub bands: Option<Vec<u32>>,
}

/// Everything one training trial needs. Written as JSON for the child process that runs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct TrialSpec {
    /// Unique within a run, such as `unet-resnet18-0`.
    pub id: String,
    /// Network family name.
    pub family: String,
    /// Backbone name.
    pub backbone: String,
    /// The data.
    pub data: DataSpec,
    /// `cpu`, `cuda` or `cuda:N`.
    pub backend: String,
    /// Seed for initialisation, shuffling and augmentation.
    pub seed: u64,
    /// Batch size, or `None` to deduce it.
    pub batch_size: Option<u32>,
    /// Learning rate, or `None` to find it.
    pub learning_rate: Option<f64>,
    /// Most epochs.
    pub max_epochs: u32,
    /// Early-stopping patience in epochs.
    pub patience: u32,
    /// Seconds this trial may spend, evaluation and saving included.
    pub time_budget_secs: f64,
    /// Training tile side in pixels, or `None` for the family's default.
    pub tile_size: Option<u32>,
    /// The optimiser, schedule and the other options every family's training loop reads.
    pub training: TrainOptions,
    /// The augmentation applied to training samples.
    pub augment: AugmentSpec,
    /// The registered batch-size deducer that picks the batch when `batch_size` is `None`.
    pub batch_deducer: String,
    /// The registered evaluator that scores validation, or `None` for the one registered for
    /// the family's task ([`crate::default_evaluator`]).
    #[serde(default)]
    pub evaluator: Option<String>,
    /// Continue from the checkpoint in `out_dir` (an out-of-memory restart, or a rung of
    /// successive halving) instead of starting afresh.
    #[serde(default)]
    pub resume: bool,
    /// The rung of successive halving this run of the trial belongs to: 0 for its first run.
    /// A resumed trial whose checkpoint was written at a lower rung continues with a new
    /// learning-rate cycle planned for this run's budget, its epoch count going on; at the
    /// same rung (an out-of-memory restart) it finishes the cycle it was in.
    #[serde(default)]
    pub rung: u32,
    /// A trained model folder (of the same family, backbone, bands and classes) whose weights
    /// the trial starts from instead of a fresh network: fine-tuning, ArcGIS's "Pretrained
    /// Model".
    #[serde(default)]
    pub init_from: Option<PathBuf>,
    /// The family's own parameters, as it declared them ([`crate::ParamDecl`]): checked and
    /// complete (defaults filled in) by the planner.
    pub params: Params,
    /// Folder for this trial's artefacts (weights, curves, metrics).
    pub out_dir: PathBuf,
}

/// The options of the shared training loop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct TrainOptions {
    /// The optimiser.
    pub optimizer: OptimizerKind,
    /// The learning-rate schedule.
    pub schedule: ScheduleKind,
    /// Decoupled weight decay (AdamW) or L2 penalty (SGD).
    pub weight_decay: f64,
    /// Start from pretrained weights where they exist.
    pub pretrained: bool,
    /// The ranking metric, one the family declares; `None` for the family's first.
    pub metric: Option<String>,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            optimizer: OptimizerKind::AdamW,
            schedule: ScheduleKind::OneCycle,
            weight_decay: 1e-4,
            pretrained: true,
            metric: None,
        }
    }
}

/// An optimiser.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OptimizerKind {
    /// Adam with decoupled weight decay.
    #[serde(rename = "adamw")]
    AdamW,
    /// Stochastic gradient descent with momentum 0.9.
    Sgd,
}

/// A learning-rate schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScheduleKind {
    /// Warm-up to the peak, then cosine annealing (fastai's fit_one_cycle).
    OneCycle,
    /// Cosine annealing from the peak.
    Cosine,
}

/// Augmentation of training samples: a named preset or an ordered list of registered
/// augmentations, and one strength for all of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct AugmentSpec {
    /// The registered [`crate::AugmentPipeline`] that builds it.
    #[serde(default = "default_augment_pipeline")]
    pub pipeline: String,
    /// A preset name (`default`, `none`); used when `steps` is empty.
    pub preset: String,
    /// Registered augmentations in order, each with its probability.
    pub steps: Vec<AugmentStep>,
    /// 0 = identity, 1 = each augmentation's default range.
    pub strength: f32,
    /// Probability that a detection training sample is a mosaic of four (YOLOv4's and
    /// Ultralytics' mosaic, at the tile's own scale).
    #[serde(default)]
    pub mosaic: f32,
    /// Probability that a detection training sample is blended with a second one (mixup,
    /// its boxes the union of both).
    #[serde(default)]
    pub mixup: f32,
}

impl AugmentSpec {
    /// The `default` preset at strength 1.
    pub fn preset(name: &str) -> Self {
        AugmentSpec {
            pipeline: DEFAULT_AUGMENT_PIPELINE.to_owned(),
            preset: name.to_owned(),
            steps: Vec::new(),
            strength: 1.0,
            mosaic: 0.0,
            mixup: 0.0,
        }
    }
}

/// The augmentation pipeline used when a pipeline file names none.
pub const DEFAULT_AUGMENT_PIPELINE: &str = "standard";

fn default_augment_pipeline() -> String {
    DEFAULT_AUGMENT_PIPELINE.to_owned()
}

/// One augmentation of a list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct AugmentStep {
    /// A registered augmenter's name.
    pub name: String,
    /// Probability of applying it to a sample.
    pub probability: f32,
    /// Its parameters ([`crate::Augmenter::params`]): checked and complete when the planner
    /// wrote them; missing ones take their defaults.
    #[serde(default, skip_serializing_if = "Params::is_empty")]
    pub params: Params,
}

/// Hyperparameters by name.
pub type Params = BTreeMap<String, ParamValue>;

/// One hyperparameter value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ParamValue {
    /// A number.
    Number(f64),
    /// A choice.
    Text(String),
    /// A flag.
    Flag(bool),
}

impl std::fmt::Display for ParamValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParamValue::Number(n) => write!(f, "{n}"),
            ParamValue::Text(t) => write!(f, "`{t}`"),
            ParamValue::Flag(b) => write!(f, "{b}"),
        }
    }
}

/// One dimension of a tuner's search space.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Dimension {
    /// A number sampled on a log scale.
    LogUniform {
        /// Smallest value.
        low: f64,
        /// Largest value.
        high: f64,
    },
    /// A number sampled uniformly.
    Uniform {
        /// Smallest value.
        low: f64,
        /// Largest value.
        high: f64,
    },
    /// One of a list.
    Choice {
        /// The options.
        options: Vec<String>,
    },
}

/// A tuner's search space: dimensions by parameter name.
pub type SearchSpace = BTreeMap<String, Dimension>;

/// What a tuner sees of a past trial.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialRecord {
    /// The parameters it ran with.
    pub params: Params,
    /// Its ranking metric per epoch, higher is better.
    pub curve: Vec<f64>,
    /// Whether it finished.
    pub complete: bool,
}

/// One measured training step, for batch-size deduction.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StepMeasure {
    /// Batch size measured.
    pub batch_size: u32,
    /// Seconds per step.
    pub seconds: f64,
    /// Peak memory in bytes during the step, when known.
    pub peak_bytes: Option<u64>,
}

/// Bounds for a batch size.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BatchLimits {
    /// Never less than this when it fits (batch norm needs a few samples).
    pub min: u32,
    /// Never more than this (usually the training-set size).
    pub max: u32,
    /// Bytes that may be used, when known.
    pub free_bytes: Option<u64>,
    /// Fraction of `free_bytes` to use.
    pub memory_fraction: f64,
}

/// One sample as augmentations see it: a CHW image with its labels.
#[derive(Debug, Clone, PartialEq)]
pub struct AugSample {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Number of bands.
    pub bands: u32,
    /// Band-major pixels, `bands * height * width`.
    pub image: Vec<f32>,
    /// Class index per pixel, row-major, for pixel classification.
    pub mask: Option<Vec<u32>>,
    /// Boxes as `[xmin, ymin, xmax, ymax]` in pixels, with their class index.
    pub boxes: Vec<([f32; 4], usize)>,
}

/// A finished epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct EpochRecord {
    /// 1-based epoch number.
    pub epoch: u32,
    /// Mean training loss.
    pub train_loss: f64,
    /// Mean validation loss.
    pub val_loss: f64,
    /// The ranking metric on the validation split.
    pub metric: f64,
    /// Seconds since the trial started.
    pub elapsed_secs: f64,
}

/// How a trial ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "status", content = "reason")]
pub enum TrialStatus {
    /// Trained to the end or stopped early on its own.
    Completed,
    /// Stopped by the tuner's pruner.
    Pruned(String),
    /// Failed; the reason says why.
    Failed(String),
    /// Not run; the reason says why.
    Skipped(String),
}

impl TrialStatus {
    /// The status as the study and the leaderboard write it: `completed`, `pruned`, `failed`
    /// or `skipped`.
    pub fn name(&self) -> &'static str {
        match self {
            TrialStatus::Completed => "completed",
            TrialStatus::Pruned(_) => "pruned",
            TrialStatus::Failed(_) => "failed",
            TrialStatus::Skipped(_) => "skipped",
        }
    }

    /// Why it was pruned, failed or skipped; empty when it completed.
    pub fn reason(&self) -> &str {
        match self {
            TrialStatus::Completed => "",
            TrialStatus::Pruned(why) | TrialStatus::Failed(why) | TrialStatus::Skipped(why) => why,
        }
    }
}

/// What a trial hands back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct TrialResult {
    /// How it ended.
    pub status: TrialStatus,
    /// Name of the ranking metric.
    pub metric_name: String,
    /// The ranking metric of the kept weights.
    pub metric: Option<f64>,
    /// Every metric of the kept weights by name.
    pub metrics: BTreeMap<String, f64>,
    /// Per-epoch curve.
    pub epochs: Vec<EpochRecord>,
    /// Epoch whose weights were kept.
    pub best_epoch: Option<u32>,
    /// Batch size actually used.
    pub batch_size: u32,
    /// Learning rate actually used.
    pub learning_rate: f64,
    /// Seconds spent.
    pub train_secs: f64,
    /// Folder holding the trained model, when one was kept.
    pub model_dir: Option<PathBuf>,
}

impl TrialResult {
    /// A result for a trial that produced no model.
    pub fn without_model(status: TrialStatus, metric_name: &str) -> Self {
        TrialResult {
            status,
            metric_name: metric_name.to_owned(),
            metric: None,
            metrics: BTreeMap::new(),
            epochs: Vec::new(),
            best_epoch: None,
            batch_size: 0,
            learning_rate: 0.0,
            train_secs: 0.0,
            model_dir: None,
        }
    }
}

/// How `autodl predict` runs a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct PredictOptions {
    /// `cpu`, `cuda` or `cuda:N`.
    pub backend: String,
    /// Detectors: keep boxes scoring at least this instead of the model's stored threshold
    /// (the validation F1 optimum). Validation's AP counts every box post-processing keeps
    /// (scores from 0.05), so predicting with 0.05 reproduces it.
    pub score_threshold: Option<f64>,
    /// [`NetworkFamily::infer`](crate::NetworkFamily::infer): run the model on each image
    /// mirrored left to right, and mirror what it predicts back (test-time augmentation).
    #[serde(default)]
    pub hflip: bool,
}

impl PredictOptions {
    /// Prediction on `backend` with the model's own thresholds.
    pub fn on(backend: &str) -> Self {
        PredictOptions {
            backend: backend.to_owned(),
            score_threshold: None,
            hflip: false,
        }
    }
}

/// What a model predicts for one image, as plain data, before any class or score threshold:
/// what ensembles and test-time augmentation combine.
#[derive(Debug, Clone, PartialEq)]
pub enum Inferred {
    /// A pixel classifier's class probabilities.
    Probabilities {
        /// Image width.
        width: u32,
        /// Image height.
        height: u32,
        /// Classes, in the model's class order.
        classes: usize,
        /// `classes * height * width` probabilities, class-major; each pixel's sum to 1.
        values: Vec<f32>,
    },
    /// A detector's boxes after its non-maximum suppression, every score it keeps.
    Boxes {
        /// Image width.
        width: u32,
        /// Image height.
        height: u32,
        /// The boxes.
        boxes: Vec<InferredBox>,
    },
}

/// One detected box of [`Inferred::Boxes`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InferredBox {
    /// `[x1, y1, x2, y2]` in pixels, corners exclusive at the right and bottom.
    pub bbox: [f32; 4],
    /// Confidence in `[0, 1]`.
    pub score: f32,
    /// Class index, in the model's class order.
    pub class: u32,
}
