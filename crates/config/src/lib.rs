//! The pipeline file schema: what a user writes in a TOML pipeline, parsed and checked.
//!
//! This crate holds data types and their parsing only; what the orchestrator does with a
//! pipeline lives in `autodl-core`. Every table denies unknown keys, so a misspelt key is an
//! error that names the file, line, column and the keys that are valid there.

mod duration;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use autodl_api::Task;

pub use duration::{TimeLimit, parse_duration};

/// The pipeline schema version this build reads.
pub const SCHEMA_VERSION: u32 = 1;

/// A whole pipeline file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Pipeline {
    /// Schema version; must equal [`SCHEMA_VERSION`].
    pub version: u32,
    /// A name for the run; the output folder defaults to `runs/<name>`.
    #[serde(default)]
    pub name: Option<String>,
    /// The task; inferred from the data format when absent.
    #[serde(default)]
    pub task: Option<Task>,
    /// `cpu`, `cuda` or `cuda:N`.
    #[serde(default = "default_backend")]
    pub backend: String,
    /// Seed for the split, initialisation, augmentation and search.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Output folder; relative paths are taken from the pipeline file's folder.
    #[serde(default)]
    pub out: Option<PathBuf>,
    /// Network-family plugin libraries (each a `cdylib` exporting `autodl_plugin_v1`, built
    /// with `autodl-plugin-sdk`) to load before the networks are planned; relative paths are
    /// taken from the pipeline file's folder.
    #[serde(default)]
    pub plugins: Vec<PathBuf>,
    /// Where the data is and how to read it.
    pub data: DataSection,
    /// How to train.
    #[serde(default)]
    pub train: TrainSection,
    /// Augmentation.
    #[serde(default)]
    pub augment: AugmentSection,
    /// Batch-size deduction.
    #[serde(default)]
    pub batch: BatchSection,
    /// How trained models are scored.
    #[serde(default)]
    pub evaluate: EvaluateSection,
    /// Advanced mode's search.
    #[serde(default)]
    pub tune: TuneSection,
    /// Flip test-time augmentation and ensembles of the best models, tried after ranking.
    #[serde(default)]
    pub ensemble: EnsembleSection,
    /// Where the study lives and who trains it.
    #[serde(default)]
    pub study: StudySection,
    /// Each network family's own parameters, `[params.<family>]`, checked against what the
    /// family declares.
    #[serde(default)]
    pub params: BTreeMap<String, BTreeMap<String, Located<toml::Value>>>,
    /// The file this pipeline was read from (`<command line>` when built from flags), for
    /// error messages.
    #[serde(skip)]
    pub source: PathBuf,
}

/// A value with the line it was written on (0 when it is a default, not from the file).
#[derive(Debug, Clone, PartialEq)]
pub struct Located<T> {
    /// The value.
    pub value: T,
    /// 1-based line in the pipeline file, or 0.
    pub line: usize,
    /// Byte offset in the file, until [`Pipeline::parse`] turns it into `line`.
    offset: Option<usize>,
}

impl<T> Located<T> {
    /// A value that comes from no file.
    pub fn new(value: T) -> Self {
        Located {
            value,
            line: 0,
            offset: None,
        }
    }

    /// `value` as written on `line` (another value's line, carried over).
    pub fn at_line(value: T, line: usize) -> Self {
        Located {
            value,
            line,
            offset: None,
        }
    }

    fn locate(&mut self, text: &str) {
        if let Some(offset) = self.offset {
            self.line = line_column(text, offset).0;
        }
    }
}

impl<T: Serialize> Serialize for Located<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(s)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Located<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let spanned = toml::Spanned::<T>::deserialize(d)?;
        let offset = spanned.span().start;
        Ok(Located {
            value: spanned.into_inner(),
            line: 0,
            offset: Some(offset),
        })
    }
}

impl Pipeline {
    /// `file:line` of a value for an error message (just the file when it has no line).
    pub fn at<T>(&self, value: &Located<T>) -> String {
        if value.line == 0 {
            self.source.display().to_string()
        } else {
            format!("{}:{}", self.source.display(), value.line)
        }
    }
}

/// `[data]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DataSection {
    /// The dataset folder; relative paths are taken from the pipeline file's folder.
    pub path: PathBuf,
    /// `pascal-voc`, `kitti`, `coco`, `yolo` or `classified-tiles`; detected when absent.
    #[serde(default)]
    pub format: Option<String>,
    /// Sub-folder holding the images (default `images`).
    #[serde(default)]
    pub images_dir: Option<String>,
    /// Fraction of samples held out when the dataset has no `splits/` folder.
    #[serde(default = "default_val_fraction")]
    pub val_fraction: f64,
    /// Fraction of samples held out as the test split when the dataset has no `splits/`
    /// folder (0, the default: none; with `splits/`, `splits/test.txt` is the test split).
    /// Nothing is tuned or chosen on it; every packaged model is scored on it once, after
    /// ranking.
    #[serde(default)]
    pub test_fraction: f64,
    /// What to do with a bad sample.
    #[serde(default)]
    pub on_bad_sample: OnBadSample,
    /// Mask value to ignore; overrides the no-data class found in the class list.
    #[serde(default)]
    pub ignore_index: Option<u32>,
    /// The bands to train on, numbered from 1 in each image (such as `[4, 3, 2]`), in this
    /// order; all of them when absent. The model stores them, and prediction picks the same
    /// bands from a scene that has more.
    #[serde(default)]
    pub bands: Option<Vec<u32>>,
}

impl DataSection {
    /// [`DataSection::bands`] numbered from 0, as the readers take them.
    pub fn band_indices(&self) -> Option<Vec<u32>> {
        self.bands
            .as_ref()
            .map(|b| b.iter().map(|&n| n.saturating_sub(1)).collect())
    }
}

/// What to do with a sample that fails validation.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum OnBadSample {
    /// Leave it out with a warning naming the file and the reason.
    #[default]
    Skip,
    /// Stop before training.
    Fail,
}

/// `[train]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TrainSection {
    /// Total wall-clock budget for the run, such as `10m` or `2h`.
    #[serde(default = "default_time_limit")]
    pub time_limit: TimeLimit,
    /// `basic` or `advanced`.
    #[serde(default)]
    pub mode: Mode,
    /// How basic mode shares the budget between networks: `halving` (successive halving:
    /// every network trains a first rung, the weaker half stop, the others continue from
    /// their checkpoints with the time freed) or `even` (an equal share each).
    #[serde(default)]
    pub budget_schedule: BudgetSchedule,
    /// Network families to train; empty means every registered family for the task.
    #[serde(default)]
    pub networks: Vec<String>,
    /// Backbone for every network; empty means each family's default.
    #[serde(default)]
    pub backbone: Option<String>,
    /// Most epochs a model may train for.
    #[serde(default = "default_max_epochs")]
    pub max_epochs: u32,
    /// Stop a model after this many epochs without improvement.
    #[serde(default = "default_patience")]
    pub patience: u32,
    /// A fixed batch size, or `auto`.
    #[serde(default)]
    pub batch_size: Auto<u32>,
    /// A fixed learning rate, or `auto`.
    #[serde(default)]
    pub learning_rate: Auto<f64>,
    /// Side of the square tiles the network trains on, in pixels.
    #[serde(default)]
    pub tile_size: Option<u32>,
    /// Leaderboard metric: `miou` (pixel classification's default), `accuracy` or `dice`; for
    /// detection `ap50` (VOC AP at IoU 0.5, the default) or `coco-ap`; `arcgis` for ArcGIS's
    /// rule (pixel accuracy, or AP at IoU 0.1). It also picks each model's kept epoch and
    /// drives early stopping.
    #[serde(default)]
    pub metric: Option<String>,
    /// ArcGIS's "Save Evaluated Models": package every trained model into `models/` (the
    /// default), or only the best.
    #[serde(default = "default_true")]
    pub save_evaluated_models: bool,
    /// ArcGIS's "Output Model Name": the best model's package is `<out>/<name>.dlpk` (by
    /// default it is named after its trial).
    #[serde(default)]
    pub model_name: Option<String>,
    /// ArcGIS's "Pretrained Model": a `.dlpk` (or model folder) from an earlier run to
    /// fine-tune on this data; the run trains its family and backbone only, starting from its
    /// weights. Relative to the pipeline file's folder.
    #[serde(default)]
    pub pretrained_model: Option<PathBuf>,
    /// Start backbones from pretrained weights where they exist.
    #[serde(default = "default_true")]
    pub pretrained: bool,
    /// `adamw` or `sgd` (with momentum 0.9).
    #[serde(default = "default_optimizer")]
    pub optimizer: String,
    /// `one-cycle` or `cosine`.
    #[serde(default = "default_schedule")]
    pub schedule: String,
    /// Weight decay (AdamW's decoupled decay, SGD's L2 penalty).
    #[serde(default = "default_weight_decay")]
    pub weight_decay: f64,
    /// Weight rare classes up in the loss: shorthand for the `class-balance` parameter
    /// (`balanced` or `none`) of every family that declares it (the pixel classifiers).
    #[serde(default)]
    pub class_balance: Option<Located<bool>>,
    /// Share of soft-dice loss in the total, 0 to 1: shorthand for the `dice-fraction`
    /// parameter of every family that declares it (the pixel classifiers).
    #[serde(default)]
    pub dice_fraction: Option<Located<f64>>,
    /// Focal-loss exponent (0 is plain cross-entropy): shorthand for the `focal-gamma`
    /// parameter of every family that declares it (the pixel classifiers).
    #[serde(default)]
    pub focal_gamma: Option<Located<f64>>,
}

/// `[augment]`: a preset, or an ordered list of registered augmentations.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AugmentSection {
    /// The registered augmentation pipeline that builds and applies the steps.
    #[serde(default = "default_augment_pipeline")]
    pub pipeline: Located<String>,
    /// A preset of the pipeline: `default` (chosen per task) or `none`; ignored when `steps`
    /// is given.
    #[serde(default = "default_preset")]
    pub preset: Located<String>,
    /// Registered augmentations applied in order, `[[augment.steps]]` with `name`,
    /// `probability` and the augmentation's own parameters; `autodl plugins` lists them.
    #[serde(default)]
    pub steps: Vec<AugmentStepSection>,
    /// 0 is no augmentation, 1 each augmentation's default range.
    #[serde(default = "default_strength")]
    pub strength: f64,
    /// Detection: the probability that a training sample is a mosaic of four tiles.
    #[serde(default = "default_mixing")]
    pub mosaic: Located<f64>,
    /// Detection: the probability that a training sample is blended with a second one.
    #[serde(default = "default_mixing")]
    pub mixup: Located<f64>,
}

/// One `[[augment.steps]]` entry: `name`, `probability`, and any other key is a parameter of
/// the augmentation (checked against what it declares by the planner).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(
    try_from = "BTreeMap<String, Located<toml::Value>>",
    into = "BTreeMap<String, Located<toml::Value>>"
)]
pub struct AugmentStepSection {
    /// A registered augmentation.
    pub name: Located<String>,
    /// Probability of applying it to a sample.
    pub probability: f64,
    /// The augmentation's own parameters, as written.
    pub params: BTreeMap<String, Located<toml::Value>>,
}

impl TryFrom<BTreeMap<String, Located<toml::Value>>> for AugmentStepSection {
    type Error = String;

    fn try_from(mut table: BTreeMap<String, Located<toml::Value>>) -> Result<Self, String> {
        let name = match table.remove("name") {
            Some(Located {
                value: toml::Value::String(name),
                line,
                offset,
            }) => Located {
                value: name,
                line,
                offset,
            },
            Some(_) => return Err("an augmentation's `name` must be a string".to_owned()),
            None => return Err("an [[augment.steps]] entry needs a `name`".to_owned()),
        };
        let probability = match table.remove("probability").map(|v| v.value) {
            None => default_probability(),
            Some(toml::Value::Float(p)) => p,
            Some(toml::Value::Integer(p)) => p as f64,
            Some(other) => {
                return Err(format!(
                    "the probability of augmentation `{}` must be a number, found {other}",
                    name.value
                ));
            }
        };
        Ok(AugmentStepSection {
            name,
            probability,
            params: table,
        })
    }
}

impl From<AugmentStepSection> for BTreeMap<String, Located<toml::Value>> {
    fn from(step: AugmentStepSection) -> Self {
        let mut table = step.params;
        table.insert(
            "name".to_owned(),
            Located::new(toml::Value::String(step.name.value)),
        );
        table.insert(
            "probability".to_owned(),
            Located::new(toml::Value::Float(step.probability)),
        );
        table
    }
}

/// `[batch]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct BatchSection {
    /// The registered batch-size deducer used when `train.batch-size` is `auto`.
    #[serde(default = "default_deducer")]
    pub deducer: Located<String>,
}

/// `[evaluate]`: how validation scores a model.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct EvaluateSection {
    /// The registered evaluator that computes the metrics; `None` for the one registered for
    /// the data's task.
    #[serde(default)]
    pub evaluator: Option<Located<String>>,
}

/// `[tune]`: advanced mode's search.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TuneSection {
    /// The registered tuner (`tpe`, `random`).
    #[serde(default = "default_tuner")]
    pub tuner: Located<String>,
    /// How many of basic mode's best networks are tuned.
    #[serde(default = "default_tune_top")]
    pub top: u32,
    /// Most tuning trials, whatever time is left.
    #[serde(default = "default_max_trials")]
    pub max_trials: u32,
    /// `asha` stops weak tuning trials at rung epochs (asynchronous successive halving);
    /// `none` lets each run out its share of the time.
    #[serde(default = "default_pruner")]
    pub pruner: Located<String>,
    /// ASHA's reduction factor: at each rung only the best 1/eta of the trials go on.
    #[serde(default = "default_prune_eta")]
    pub prune_eta: u32,
    /// ASHA's first rung, in epochs; later rungs are this times powers of `prune-eta`.
    #[serde(default = "default_prune_min_epochs")]
    pub prune_min_epochs: u32,
}

/// `[ensemble]`: after ranking, flip test-time augmentation of the best model and ensembles
/// of the best ones are scored on validation, each kept as a leaderboard row (and packaged)
/// when it beats the best single model.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct EnsembleSection {
    /// Ensembles of the best 2, 3, ... up to this many models are tried; below 2, none.
    #[serde(default = "default_ensemble_top")]
    pub top: u32,
    /// Try flip test-time augmentation of the best model (and, when it wins, in ensembles).
    #[serde(default = "default_true")]
    pub tta: bool,
    /// `better` keeps a candidate only when it beats the best single model; `all` keeps every
    /// one scored, for comparison.
    #[serde(default)]
    pub keep: EnsembleKeep,
}

/// `[study]`: the store of the run's trials, and workers sharing it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct StudySection {
    /// `sqlite://PATH` or `postgres://USER@HOST/DATABASE`; default `study.sqlite` in the output
    /// folder.
    #[serde(default)]
    pub url: Option<String>,
    /// Train through workers (`autodl worker`): this many started here, besides any started
    /// elsewhere on the same study; 0 plans the study and waits for workers started elsewhere.
    /// Absent: this process trains every trial itself.
    #[serde(default)]
    pub workers: Option<u32>,
    /// Seconds without a worker's heartbeat after which its trial is claimed again.
    #[serde(default = "default_lease")]
    pub lease_secs: f64,
    /// Most starts of one trial when its workers are lost.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
}

fn default_lease() -> f64 {
    60.0
}

fn default_max_attempts() -> u32 {
    3
}

impl Default for StudySection {
    fn default() -> Self {
        StudySection {
            url: None,
            workers: None,
            lease_secs: default_lease(),
            max_attempts: default_max_attempts(),
        }
    }
}

/// Which ensemble candidates become leaderboard rows.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum EnsembleKeep {
    /// Those that beat the best single model on validation.
    #[default]
    Better,
    /// Every candidate scored.
    All,
}

fn default_ensemble_top() -> u32 {
    3
}

impl Default for EnsembleSection {
    fn default() -> Self {
        EnsembleSection {
            top: default_ensemble_top(),
            tta: true,
            keep: EnsembleKeep::Better,
        }
    }
}

/// The pruners `[tune] pruner` may name.
pub const PRUNERS: &[&str] = &["asha", "none"];

impl Default for BatchSection {
    fn default() -> Self {
        BatchSection {
            deducer: default_deducer(),
        }
    }
}

impl Default for TuneSection {
    fn default() -> Self {
        TuneSection {
            tuner: default_tuner(),
            top: default_tune_top(),
            max_trials: default_max_trials(),
            pruner: default_pruner(),
            prune_eta: default_prune_eta(),
            prune_min_epochs: default_prune_min_epochs(),
        }
    }
}

/// How much search a run does.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Each network once with its defaults.
    #[default]
    Basic,
    /// Basic, then tuning of the best networks.
    Advanced,
}

/// How basic mode shares the time limit between the networks it trains.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum BudgetSchedule {
    /// Successive halving across networks, survivors continuing from their checkpoints.
    #[default]
    Halving,
    /// The same share for every network, in turn.
    Even,
}

/// A value the user may fix or leave to autodl.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub enum Auto<T> {
    /// Let autodl decide.
    #[default]
    Auto,
    /// Use this value.
    Fixed(T),
}

impl<T: Serialize> Serialize for Auto<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Auto::Auto => s.serialize_str("auto"),
            Auto::Fixed(v) => v.serialize(s),
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Auto<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw<T> {
            Word(String),
            Value(T),
        }
        match Raw::<T>::deserialize(d)? {
            Raw::Word(w) if w == "auto" => Ok(Auto::Auto),
            Raw::Word(w) => Err(serde::de::Error::custom(format!(
                "expected `auto` or a number, found `{w}`"
            ))),
            Raw::Value(v) => Ok(Auto::Fixed(v)),
        }
    }
}

impl Default for TrainSection {
    fn default() -> Self {
        TrainSection {
            time_limit: default_time_limit(),
            mode: Mode::default(),
            budget_schedule: BudgetSchedule::default(),
            networks: Vec::new(),
            backbone: None,
            max_epochs: default_max_epochs(),
            patience: default_patience(),
            batch_size: Auto::Auto,
            learning_rate: Auto::Auto,
            tile_size: None,
            metric: None,
            save_evaluated_models: true,
            model_name: None,
            pretrained_model: None,
            pretrained: true,
            optimizer: default_optimizer(),
            schedule: default_schedule(),
            weight_decay: default_weight_decay(),
            class_balance: None,
            dice_fraction: None,
            focal_gamma: None,
        }
    }
}

impl Default for AugmentSection {
    fn default() -> Self {
        AugmentSection {
            pipeline: default_augment_pipeline(),
            preset: default_preset(),
            steps: Vec::new(),
            strength: default_strength(),
            mosaic: default_mixing(),
            mixup: default_mixing(),
        }
    }
}

fn default_backend() -> String {
    "cpu".to_owned()
}
fn default_seed() -> u64 {
    42
}
fn default_val_fraction() -> f64 {
    0.2
}
fn default_time_limit() -> TimeLimit {
    TimeLimit::from_secs(600)
}
fn default_max_epochs() -> u32 {
    100
}
fn default_patience() -> u32 {
    8
}
fn default_true() -> bool {
    true
}
fn default_optimizer() -> String {
    "adamw".to_owned()
}
fn default_schedule() -> String {
    "one-cycle".to_owned()
}
fn default_augment_pipeline() -> Located<String> {
    Located::new(autodl_api::DEFAULT_AUGMENT_PIPELINE.to_owned())
}
fn default_preset() -> Located<String> {
    Located::new("default".to_owned())
}
fn default_strength() -> f64 {
    1.0
}
fn default_mixing() -> Located<f64> {
    Located::new(0.0)
}
fn default_probability() -> f64 {
    1.0
}
fn default_weight_decay() -> f64 {
    1e-4
}
fn default_deducer() -> Located<String> {
    Located::new("throughput".to_owned())
}
fn default_tuner() -> Located<String> {
    Located::new("tpe".to_owned())
}
fn default_tune_top() -> u32 {
    2
}
fn default_max_trials() -> u32 {
    100
}
fn default_pruner() -> Located<String> {
    Located::new("asha".to_owned())
}
fn default_prune_eta() -> u32 {
    2
}
fn default_prune_min_epochs() -> u32 {
    2
}

/// An error in a pipeline file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read pipeline {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML is malformed or does not fit the schema.
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong; for an unknown key, the valid keys.
        message: String,
    },
    /// The TOML fits the schema but a value is wrong.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl Pipeline {
    /// Reads and checks a pipeline file. Relative paths inside it are resolved against the
    /// file's folder.
    pub fn load(path: &Path) -> Result<Pipeline, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut pipeline = Pipeline::parse(&text, path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        pipeline.data.path = base.join(&pipeline.data.path);
        if let Some(out) = &pipeline.out {
            pipeline.out = Some(base.join(out));
        }
        if let Some(model) = &pipeline.train.pretrained_model {
            pipeline.train.pretrained_model = Some(base.join(model));
        }
        for plugin in &mut pipeline.plugins {
            *plugin = base.join(&*plugin);
        }
        Ok(pipeline)
    }

    /// Parses pipeline text; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Pipeline, ConfigError> {
        let mut pipeline: Pipeline = toml::from_str(text).map_err(|e| {
            let (line, column) = e
                .span()
                .map(|span| line_column(text, span.start))
                .unwrap_or((1, 1));
            ConfigError::Parse {
                path: path.to_owned(),
                line,
                column,
                message: e.message().trim().to_owned(),
            }
        })?;
        pipeline.source = path.to_owned();
        pipeline.locate(text);
        pipeline.check().map_err(|message| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        })?;
        Ok(pipeline)
    }

    /// Turns every located value's byte offset into its line.
    fn locate(&mut self, text: &str) {
        self.augment.pipeline.locate(text);
        self.augment.preset.locate(text);
        self.augment.mosaic.locate(text);
        self.augment.mixup.locate(text);
        for step in &mut self.augment.steps {
            step.name.locate(text);
            for value in step.params.values_mut() {
                value.locate(text);
            }
        }
        self.batch.deducer.locate(text);
        if let Some(v) = &mut self.evaluate.evaluator {
            v.locate(text);
        }
        self.tune.tuner.locate(text);
        self.tune.pruner.locate(text);
        if let Some(v) = &mut self.train.class_balance {
            v.locate(text);
        }
        if let Some(v) = &mut self.train.dice_fraction {
            v.locate(text);
        }
        if let Some(v) = &mut self.train.focal_gamma {
            v.locate(text);
        }
        for table in self.params.values_mut() {
            for v in table.values_mut() {
                v.locate(text);
            }
        }
    }

    fn check(&self) -> Result<(), String> {
        if self.version != SCHEMA_VERSION {
            return Err(format!(
                "unsupported pipeline version {}, this autodl reads version {SCHEMA_VERSION}",
                self.version
            ));
        }
        if !(0.0..1.0).contains(&self.data.val_fraction) {
            return Err(format!(
                "data.val-fraction must be in [0, 1), found {}",
                self.data.val_fraction
            ));
        }
        if let Some(bands) = &self.data.bands
            && (bands.is_empty() || bands.contains(&0))
        {
            return Err(format!(
                "data.bands must list band numbers from 1, found {bands:?}"
            ));
        }
        if self.train.max_epochs == 0 {
            return Err("train.max-epochs must be at least 1".to_owned());
        }
        if let Some(t) = self.train.tile_size
            && !(32..=4096).contains(&t)
        {
            return Err(format!(
                "train.tile-size must be from 32 to 4096 pixels, found {t}"
            ));
        }
        if let Auto::Fixed(0) = self.train.batch_size {
            return Err("train.batch-size must be at least 1".to_owned());
        }
        if !(self.study.lease_secs >= 1.0 && self.study.lease_secs.is_finite()) {
            return Err(format!(
                "study.lease-secs must be at least 1 second, found {}",
                self.study.lease_secs
            ));
        }
        if self.study.max_attempts == 0 {
            return Err("study.max-attempts must be at least 1".to_owned());
        }
        if let Auto::Fixed(lr) = self.train.learning_rate
            && !(lr > 0.0 && lr.is_finite())
        {
            return Err(format!("train.learning-rate must be positive, found {lr}"));
        }
        if !matches!(self.train.optimizer.as_str(), "adamw" | "sgd") {
            return Err(format!(
                "train.optimizer must be `adamw` or `sgd`, found `{}`",
                self.train.optimizer
            ));
        }
        if !matches!(self.train.schedule.as_str(), "one-cycle" | "cosine") {
            return Err(format!(
                "train.schedule must be `one-cycle` or `cosine`, found `{}`",
                self.train.schedule
            ));
        }
        let wd = self.train.weight_decay;
        if wd.is_nan() || wd < 0.0 || wd.is_infinite() {
            return Err(format!(
                "train.weight-decay must be at least 0, found {}",
                self.train.weight_decay
            ));
        }
        if !(0.0..=4.0).contains(&self.augment.strength) {
            return Err(format!(
                "augment.strength must be from 0 to 4, found {}",
                self.augment.strength
            ));
        }
        for (key, p) in [
            ("mosaic", &self.augment.mosaic),
            ("mixup", &self.augment.mixup),
        ] {
            if !(0.0..=1.0).contains(&p.value) {
                return Err(format!(
                    "line {}: augment.{key} is a probability from 0 to 1, found {}",
                    p.line, p.value
                ));
            }
        }
        for step in &self.augment.steps {
            if !(0.0..=1.0).contains(&step.probability) {
                return Err(format!(
                    "line {}: the probability of augmentation `{}` must be from 0 to 1, found {}",
                    step.name.line, step.name.value, step.probability
                ));
            }
        }
        if !PRUNERS.contains(&self.tune.pruner.value.as_str()) {
            return Err(format!(
                "line {}: tune.pruner must be one of {}, found `{}`",
                self.tune.pruner.line,
                PRUNERS.join(", "),
                self.tune.pruner.value
            ));
        }
        if !(2..=10).contains(&self.tune.prune_eta) {
            return Err(format!(
                "tune.prune-eta must be from 2 to 10, found {}",
                self.tune.prune_eta
            ));
        }
        if self.tune.prune_min_epochs == 0 {
            return Err("tune.prune-min-epochs must be at least 1".to_owned());
        }
        if self.tune.top == 0 {
            return Err("tune.top must be at least 1".to_owned());
        }
        Ok(())
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Basic => "basic",
            Mode::Advanced => "advanced",
        })
    }
}

/// 1-based line and column of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "version = 1\n[data]\npath = \"d\"\n";

    #[test]
    fn minimal_pipeline_gets_defaults() {
        let p = Pipeline::parse(MINIMAL, Path::new("p.toml")).unwrap();
        assert_eq!(p.backend, "cpu");
        assert_eq!(p.train.time_limit.as_secs(), 600);
        assert_eq!(p.train.batch_size, Auto::Auto);
    }

    #[test]
    fn misspelt_key_names_line_column_and_valid_keys() {
        let text = "version = 1\n[data]\npath = \"d\"\n[train]\ntime-limt = \"5m\"\n";
        let err = Pipeline::parse(text, Path::new("pipe.toml")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("pipe.toml:5:1:"), "{msg}");
        assert!(msg.contains("time-limt"), "{msg}");
        assert!(
            msg.contains("`time-limit`") && msg.contains("`max-epochs`"),
            "{msg}"
        );
    }

    #[test]
    fn bands_are_numbered_from_one() {
        let text = format!("{MINIMAL}bands = [4, 3, 2]\n");
        let p = Pipeline::parse(&text, Path::new("p.toml")).unwrap();
        assert_eq!(p.data.band_indices(), Some(vec![3, 2, 1]));
        let zero = format!("{MINIMAL}bands = [0, 1]\n");
        let msg = Pipeline::parse(&zero, Path::new("p.toml"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("data.bands"), "{msg}");
    }

    #[test]
    fn plugin_libraries_are_a_list_of_paths() {
        let text = "version = 1\nplugins = [\"libs/libmy.so\"]\n[data]\npath = \"d\"\n";
        let p = Pipeline::parse(text, Path::new("p.toml")).unwrap();
        assert_eq!(p.plugins, vec![PathBuf::from("libs/libmy.so")]);
        assert!(
            Pipeline::parse(MINIMAL, Path::new("p.toml"))
                .unwrap()
                .plugins
                .is_empty()
        );
        let one = "version = 1\nplugins = \"libmy.so\"\n[data]\npath = \"d\"\n";
        assert!(Pipeline::parse(one, Path::new("p.toml")).is_err());
    }

    #[test]
    fn auto_or_number() {
        let text = format!("{MINIMAL}[train]\nbatch-size = 8\nlearning-rate = \"auto\"\n");
        let p = Pipeline::parse(&text, Path::new("p.toml")).unwrap();
        assert_eq!(p.train.batch_size, Auto::Fixed(8));
        assert_eq!(p.train.learning_rate, Auto::Auto);
        let bad = format!("{MINIMAL}[train]\nbatch-size = \"big\"\n");
        assert!(Pipeline::parse(&bad, Path::new("p.toml")).is_err());
    }

    #[test]
    fn the_evaluator_keeps_its_line() {
        let p = Pipeline::parse(MINIMAL, Path::new("p.toml")).unwrap();
        assert_eq!(p.evaluate.evaluator, None);
        let text = format!("{MINIMAL}[evaluate]\nevaluator = \"mine\"\n");
        let p = Pipeline::parse(&text, Path::new("p.toml")).unwrap();
        let e = p.evaluate.evaluator.expect("an evaluator");
        assert_eq!((e.value.as_str(), e.line), ("mine", 5));
    }

    #[test]
    fn wrong_version_is_refused() {
        let err = Pipeline::parse("version = 7\n[data]\npath = \"d\"\n", Path::new("p.toml"))
            .unwrap_err();
        assert!(err.to_string().contains("unsupported pipeline version 7"));
    }
}
