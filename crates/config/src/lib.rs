//! The pipeline file schema: what a user writes in a TOML pipeline, parsed and checked.
//!
//! This crate holds data types and their parsing only; what the orchestrator does with a
//! pipeline lives in `autodl-core`. Every table denies unknown keys, so a misspelt key is an
//! error that names the file, line, column and the keys that are valid there.

mod duration;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

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
    pub task: Option<TaskKind>,
    /// `cpu`, `cuda` or `cuda:N`.
    #[serde(default = "default_backend")]
    pub backend: String,
    /// Seed for the split, initialisation, augmentation and search.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Output folder; relative paths are taken from the pipeline file's folder.
    #[serde(default)]
    pub out: Option<PathBuf>,
    /// Where the data is and how to read it.
    pub data: DataSection,
    /// How to train.
    #[serde(default)]
    pub train: TrainSection,
    /// Augmentation.
    #[serde(default)]
    pub augment: AugmentSection,
}

/// The task a pipeline solves.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum TaskKind {
    /// Bounding boxes.
    Detection,
    /// One class per pixel.
    PixelClassification,
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
    /// What to do with a bad sample.
    #[serde(default)]
    pub on_bad_sample: OnBadSample,
    /// Mask value to ignore; overrides the no-data class found in the class list.
    #[serde(default)]
    pub ignore_index: Option<u32>,
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
    /// detection `ap50` (VOC AP at IoU 0.5, the default) or `coco-ap`. It also picks each
    /// model's kept epoch and drives early stopping.
    #[serde(default)]
    pub metric: Option<String>,
    /// Start backbones from pretrained weights where they exist.
    #[serde(default = "default_true")]
    pub pretrained: bool,
    /// `adamw` or `sgd` (with momentum 0.9).
    #[serde(default = "default_optimizer")]
    pub optimizer: String,
    /// `one-cycle` or `cosine`.
    #[serde(default = "default_schedule")]
    pub schedule: String,
    /// Weight rare classes up in the loss (pixel classification).
    #[serde(default)]
    pub class_balance: bool,
    /// Share of soft-dice loss in the total, 0 to 1 (pixel classification).
    #[serde(default)]
    pub dice_fraction: f64,
    /// Focal-loss exponent; 0 is plain cross-entropy.
    #[serde(default)]
    pub focal_gamma: f64,
}

/// `[augment]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AugmentSection {
    /// `default` (chosen per task) or `none`.
    #[serde(default = "default_preset")]
    pub preset: String,
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
            networks: Vec::new(),
            backbone: None,
            max_epochs: default_max_epochs(),
            patience: default_patience(),
            batch_size: Auto::Auto,
            learning_rate: Auto::Auto,
            tile_size: None,
            metric: None,
            pretrained: true,
            optimizer: default_optimizer(),
            schedule: default_schedule(),
            class_balance: false,
            dice_fraction: 0.0,
            focal_gamma: 0.0,
        }
    }
}

impl Default for AugmentSection {
    fn default() -> Self {
        AugmentSection {
            preset: default_preset(),
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
fn default_preset() -> String {
    "default".to_owned()
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
        Ok(pipeline)
    }

    /// Parses pipeline text; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Pipeline, ConfigError> {
        let pipeline: Pipeline = toml::from_str(text).map_err(|e| {
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
        pipeline.check().map_err(|message| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        })?;
        Ok(pipeline)
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
        if !(0.0..=1.0).contains(&self.train.dice_fraction) {
            return Err(format!(
                "train.dice-fraction must be in [0, 1], found {}",
                self.train.dice_fraction
            ));
        }
        if self.train.focal_gamma.is_nan() || self.train.focal_gamma < 0.0 {
            return Err(format!(
                "train.focal-gamma must be at least 0, found {}",
                self.train.focal_gamma
            ));
        }
        if !matches!(self.augment.preset.as_str(), "default" | "none") {
            return Err(format!(
                "augment.preset must be `default` or `none`, found `{}`",
                self.augment.preset
            ));
        }
        Ok(())
    }
}

impl fmt::Display for TaskKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TaskKind::Detection => "detection",
            TaskKind::PixelClassification => "pixel-classification",
        })
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
    fn auto_or_number() {
        let text = format!("{MINIMAL}[train]\nbatch-size = 8\nlearning-rate = \"auto\"\n");
        let p = Pipeline::parse(&text, Path::new("p.toml")).unwrap();
        assert_eq!(p.train.batch_size, Auto::Fixed(8));
        assert_eq!(p.train.learning_rate, Auto::Auto);
        let bad = format!("{MINIMAL}[train]\nbatch-size = \"big\"\n");
        assert!(Pipeline::parse(&bad, Path::new("p.toml")).is_err());
    }

    #[test]
    fn wrong_version_is_refused() {
        let err = Pipeline::parse("version = 7\n[data]\npath = \"d\"\n", Path::new("p.toml"))
            .unwrap_err();
        assert!(err.to_string().contains("unsupported pipeline version 7"));
    }
}
