//! The files that cross a crate or process boundary, each one serde type defined here and
//! written and read only through it: `model.json` ([`ModelMeta`]), `checkpoint.json`
//! ([`Checkpoint`]) and `metrics.json` ([`MetricsFile`]); `result.json` ([`RESULT`]) holds a
//! [`crate::TrialResult`]; a trial process speaks [`Event`]s, one JSON line each, on stdout.
//!
//! Architecture invariant: no reader parses these files as an untyped JSON value or a map with
//! defaults. Every type denies unknown fields, so a renamed or misspelt field is an error that
//! names the file (through [`read_json`]) instead of a value silently replaced by its default.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::{EpochRecord, Params, PluginError, Task, TrialResult};

/// Why a boundary file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ContractError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not the JSON its type describes (a missing, unknown or mistyped field).
    #[error("{path}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// What serde found, with its line and column.
        source: serde_json::Error,
    },
    /// The file parses but its fields disagree with each other.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl From<ContractError> for PluginError {
    fn from(e: ContractError) -> Self {
        match e {
            ContractError::Io { path, source } => PluginError::Io { path, source },
            other => PluginError::Data(other.to_string()),
        }
    }
}

/// Reads `path` as JSON of type `T`; any error names the file.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, ContractError> {
    let text = std::fs::read_to_string(path).map_err(|source| ContractError::Io {
        path: path.to_owned(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| ContractError::Json {
        path: path.to_owned(),
        source,
    })
}

/// Reads `path` as JSON of type `T` if the file exists: `Ok(None)` when it does not, an error
/// naming the file when it exists but cannot be read or parsed.
pub fn read_json_if_exists<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, ContractError> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        _ => read_json(path).map(Some),
    }
}

/// Writes `value` as pretty JSON to `path`, renamed into place whole (see
/// [`crate::files::write_atomic`]).
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), ContractError> {
    let text = serde_json::to_string_pretty(value).map_err(|source| ContractError::Json {
        path: path.to_owned(),
        source,
    })?;
    crate::files::write_atomic(path, text.as_bytes()).map_err(|source| ContractError::Io {
        path: path.to_owned(),
        source,
    })
}

/// One class: its value (the mask value for pixels, the class id for boxes) and its name.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClassInfo {
    /// Mask value (pixel classification) or class id (detection).
    pub value: u32,
    /// Human-readable name.
    pub name: String,
}

/// File name of the weights inside a model folder (Burn's named MessagePack record).
pub const WEIGHTS: &str = "model.mpk";
/// File name of the [`ModelMeta`] inside a model folder.
pub const META: &str = "model.json";

/// `model.json`: everything needed to rebuild and run a model, stored beside its weights. One
/// type for everyone who writes or reads it (training, packages, predict).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ModelMeta {
    /// Network family.
    pub family: String,
    /// Backbone.
    pub backbone: String,
    /// Task.
    pub task: Task,
    /// Input bands.
    pub bands: usize,
    /// Output classes, in logit order.
    pub classes: Vec<ClassInfo>,
    /// Mask value written for ignored pixels, if the data had one.
    pub ignore_index: Option<u32>,
    /// Per-band mean subtracted before the network.
    pub mean: Vec<f32>,
    /// Per-band standard deviation divided by before the network.
    pub std: Vec<f32>,
    /// Tile side the model was trained on.
    pub tile_size: u32,
    /// Family-specific parameters needed to rebuild the network.
    pub params: Params,
    /// The bands read from each input image, numbered from 0, when training selected some
    /// (`[data] bands`); absent: all of an image's `bands`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extract_bands: Option<Vec<u32>>,
}

impl ModelMeta {
    /// Writes `model.json` into `dir`.
    pub fn save(&self, dir: &Path) -> Result<(), PluginError> {
        Ok(write_json(&dir.join(META), self)?)
    }

    /// Reads `model.json` from `dir` and checks it (see [`ModelMeta::check`]).
    pub fn load(dir: &Path) -> Result<ModelMeta, PluginError> {
        Ok(Self::read(dir)?)
    }

    /// Reads `model.json` from `dir` and checks it, with the contract's own error.
    pub fn read(dir: &Path) -> Result<ModelMeta, ContractError> {
        let path = dir.join(META);
        let meta: ModelMeta = read_json(&path)?;
        meta.check()
            .map_err(|reason| ContractError::Invalid { path, reason })?;
        Ok(meta)
    }

    /// Checks that the fields agree with each other: one mean and one positive standard
    /// deviation per band, at least one class, a tile side.
    pub fn check(&self) -> Result<(), String> {
        if self.bands == 0 {
            return Err("`bands` is 0".into());
        }
        for (field, v) in [("mean", &self.mean), ("std", &self.std)] {
            if v.len() != self.bands {
                return Err(format!(
                    "`{field}` has {} values for {} bands",
                    v.len(),
                    self.bands
                ));
            }
            if v.iter().any(|x| !x.is_finite()) {
                return Err(format!(
                    "`{field}` holds a value that is not a finite number"
                ));
            }
        }
        if self.std.iter().any(|&s| s <= 0.0) {
            return Err("`std` holds a value that is not positive".into());
        }
        if self.classes.is_empty() {
            return Err("`classes` is empty".into());
        }
        if self.tile_size == 0 {
            return Err("`tile-size` is 0".into());
        }
        if let Some(b) = &self.extract_bands
            && b.len() != self.bands
        {
            return Err(format!(
                "`extract-bands` lists {} bands for {} bands",
                b.len(),
                self.bands
            ));
        }
        Ok(())
    }

    /// Path of the weights file in `dir`, without the extension Burn's recorder adds.
    pub fn weights_stem(dir: &Path) -> PathBuf {
        dir.join("model")
    }
}

/// File name of the [`EnsembleMeta`] of an ensemble folder.
pub const ENSEMBLE: &str = "ensemble.json";

/// `ensemble.json`: a model made of trained models (each a model folder inside the ensemble's
/// folder) whose predictions are combined: class probabilities averaged for pixel
/// classifiers, boxes joined by weighted box fusion for detectors. One member with `hflip` is
/// a single model with flip test-time augmentation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct EnsembleMeta {
    /// Task.
    pub task: Task,
    /// Output classes, in every member's logit order.
    pub classes: Vec<ClassInfo>,
    /// Mask value written for ignored pixels, if the data had one.
    pub ignore_index: Option<u32>,
    /// The members.
    pub members: Vec<EnsembleMember>,
    /// Each member also runs on the image mirrored left to right, its prediction mirrored
    /// back and combined like another member's.
    pub hflip: bool,
    /// Detection: the IoU from which weighted box fusion joins boxes of one class.
    pub fusion_iou: f64,
    /// Detection: boxes scoring below this are not delivered (the validation F1 optimum).
    pub score_threshold: f64,
}

/// One model of an [`EnsembleMeta`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct EnsembleMember {
    /// Its model folder, a plain name inside the ensemble's folder.
    pub dir: String,
    /// The trial it came from.
    pub id: String,
    /// Network family.
    pub family: String,
    /// Backbone.
    pub backbone: String,
    /// Weight of its prediction in the combination.
    pub weight: f64,
}

impl EnsembleMeta {
    /// Writes `ensemble.json` into `dir`.
    pub fn save(&self, dir: &Path) -> Result<(), ContractError> {
        write_json(&dir.join(ENSEMBLE), self)
    }

    /// Reads `ensemble.json` from `dir` and checks it.
    pub fn read(dir: &Path) -> Result<EnsembleMeta, ContractError> {
        let path = dir.join(ENSEMBLE);
        let meta: EnsembleMeta = read_json(&path)?;
        meta.check()
            .map_err(|reason| ContractError::Invalid { path, reason })?;
        Ok(meta)
    }

    /// Checks that there is a member, that members' folders are plain names, that weights are
    /// positive and that there is a class.
    pub fn check(&self) -> Result<(), String> {
        if self.members.is_empty() {
            return Err("`members` is empty".into());
        }
        if self.classes.is_empty() {
            return Err("`classes` is empty".into());
        }
        for m in &self.members {
            let plain =
                !m.dir.is_empty() && !m.dir.starts_with('.') && !m.dir.contains(['/', '\\']);
            if !plain {
                return Err(format!(
                    "member folder `{}` is not a plain folder name",
                    m.dir
                ));
            }
            if !(m.weight.is_finite() && m.weight > 0.0) {
                return Err(format!(
                    "member `{}` has weight {}, not a positive number",
                    m.id, m.weight
                ));
            }
        }
        if !(0.0..=1.0).contains(&self.fusion_iou) {
            return Err(format!("`fusion-iou` {} is not in [0, 1]", self.fusion_iou));
        }
        Ok(())
    }
}

/// File name of the [`Checkpoint`] in a trial folder.
pub const CHECKPOINT: &str = "checkpoint.json";

/// `checkpoint.json`: what a trial writes after every epoch (beside `checkpoint.mpk`), so
/// that a trial the orchestrator restarts (after running out of memory) goes on from there.
/// Written by the training loop, read by it on a resume and by the orchestrator for the batch
/// size to halve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Checkpoint {
    /// Last finished epoch.
    pub epoch: u32,
    /// Batch size it trained with.
    pub batch_size: usize,
    /// Peak learning rate.
    pub learning_rate: f64,
    /// Epochs the schedule was planned for.
    pub planned_epochs: usize,
    /// Every finished epoch.
    pub epochs: Vec<EpochRecord>,
    /// The best epoch so far (its weights are `model.mpk`).
    pub best_epoch: Option<u32>,
    /// The rung of successive halving that wrote it ([`crate::TrialSpec::rung`]).
    #[serde(default)]
    pub rung: u32,
    /// Epochs finished before the current learning-rate cycle began (0 for the first
    /// cycle; a continued trial's new cycle starts after them).
    #[serde(default)]
    pub cycle_start: u32,
}

impl Checkpoint {
    /// Reads a trial folder's checkpoint: `Ok(None)` when it has none, an error naming the
    /// file when it has one that does not parse.
    pub fn load(dir: &Path) -> Result<Option<Checkpoint>, ContractError> {
        read_json_if_exists(&dir.join(CHECKPOINT))
    }

    /// Writes the checkpoint into a trial folder.
    pub fn save(&self, dir: &Path) -> Result<(), ContractError> {
        write_json(&dir.join(CHECKPOINT), self)
    }
}

/// File name of a trial's [`crate::TrialResult`] in its folder, written by the orchestrator when
/// the trial ends and read by the report.
pub const RESULT: &str = "result.json";

/// File name of the [`MetricsFile`] in a model folder.
pub const METRICS: &str = "metrics.json";

/// `metrics.json`: every number of a trained model's kept epoch, written by training beside
/// the model and read by the CLI (packages, the report) and by users. Tagged by task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "task", rename_all = "kebab-case")]
pub enum MetricsFile {
    /// A pixel classifier's.
    PixelClassification(PixelMetricsFile),
    /// A detector's.
    Detection(DetectionMetricsFile),
}

impl MetricsFile {
    /// Reads `metrics.json` from a model folder.
    pub fn load(dir: &Path) -> Result<MetricsFile, ContractError> {
        read_json(&dir.join(METRICS))
    }

    /// Writes `metrics.json` into a model folder.
    pub fn save(&self, dir: &Path) -> Result<(), ContractError> {
        write_json(&dir.join(METRICS), self)
    }

    /// The classes, in logit order.
    pub fn classes(&self) -> &[ClassInfo] {
        match self {
            MetricsFile::PixelClassification(m) => &m.classes,
            MetricsFile::Detection(m) => &m.classes,
        }
    }

    /// Every finished epoch.
    pub fn epochs(&self) -> &[EpochRecord] {
        match self {
            MetricsFile::PixelClassification(m) => &m.epochs,
            MetricsFile::Detection(m) => &m.epochs,
        }
    }

    /// Replaces the finished epochs (an evaluator's file has none until training adds them).
    pub fn set_epochs(&mut self, epochs: Vec<EpochRecord>) {
        match self {
            MetricsFile::PixelClassification(m) => m.epochs = epochs,
            MetricsFile::Detection(m) => m.epochs = epochs,
        }
    }

    /// The task whose numbers these are.
    pub fn task(&self) -> Task {
        match self {
            MetricsFile::PixelClassification(_) => Task::PixelClassification,
            MetricsFile::Detection(_) => Task::Detection,
        }
    }

    /// The headline numbers by name, as a trial's result and the leaderboard list them: `miou`,
    /// `accuracy`, `dice` and `baseline-miou` (the mean IoU of always predicting the most
    /// frequent class) for pixels; `ap50`, `coco-ap`, `coco-ap50`, `coco-ap75`,
    /// `arcgis-ap10`, and `precision`, `recall` and `f1` at the score threshold for boxes.
    pub fn scores(&self) -> BTreeMap<String, f64> {
        let named: Vec<(&str, f64)> = match self {
            MetricsFile::PixelClassification(m) => vec![
                ("miou", m.metrics.mean_iou),
                ("accuracy", m.metrics.pixel_accuracy),
                ("dice", m.metrics.mean_dice),
                (
                    "baseline-miou",
                    autodl_metrics::majority_baseline(&m.confusion_matrix).mean_iou,
                ),
            ],
            MetricsFile::Detection(m) => {
                let s = &m.metrics;
                vec![
                    ("ap50", s.ap50),
                    ("coco-ap", s.coco_ap),
                    ("coco-ap50", s.coco_ap50),
                    ("coco-ap75", s.coco_ap75),
                    ("arcgis-ap10", s.arcgis_ap10),
                    ("precision", s.precision),
                    ("recall", s.recall),
                    ("f1", s.f1),
                ]
            }
        };
        named
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value))
            .collect()
    }

    /// One of [`MetricsFile::scores`] by name.
    pub fn metric(&self, name: &str) -> Option<f64> {
        self.scores().get(name).copied()
    }
}

/// A pixel classifier's `metrics.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct PixelMetricsFile {
    /// The scores of the kept epoch on the whole validation set.
    pub metrics: autodl_metrics::SegMetrics,
    /// The classes, in logit order.
    pub classes: Vec<ClassInfo>,
    /// The validation confusion matrix the scores come from.
    pub confusion_matrix: autodl_metrics::ConfusionMatrix,
    /// Every finished epoch.
    pub epochs: Vec<EpochRecord>,
}

/// A detector's `metrics.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct DetectionMetricsFile {
    /// The headline numbers (what a package's `.emd` carries).
    pub metrics: DetectionSummary,
    /// Every number, per class and the precision-recall curves.
    pub detail: DetMetrics,
    /// The classes, in logit order.
    pub classes: Vec<ClassInfo>,
    /// Every finished epoch.
    pub epochs: Vec<EpochRecord>,
}

/// A detector's headline numbers.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct DetectionSummary {
    /// PASCAL VOC AP at IoU 0.5, the ranking metric.
    pub ap50: f64,
    /// COCO AP at IoU 0.50:0.95.
    pub coco_ap: f64,
    /// COCO AP at IoU 0.5.
    pub coco_ap50: f64,
    /// COCO AP at IoU 0.75.
    pub coco_ap75: f64,
    /// VOC AP at IoU 0.1, ArcGIS's default.
    pub arcgis_ap10: f64,
    /// Mean precision at the score threshold.
    pub precision: f64,
    /// Mean recall at the score threshold.
    pub recall: f64,
    /// Mean F1 at the score threshold.
    pub f1: f64,
    /// Score threshold with the best mean F1 at IoU 0.5.
    pub score_threshold: f64,
}

impl From<&DetMetrics> for DetectionSummary {
    fn from(m: &DetMetrics) -> Self {
        DetectionSummary {
            ap50: m.ap50,
            coco_ap: m.coco.ap,
            coco_ap50: m.coco.ap50,
            coco_ap75: m.coco.ap75,
            arcgis_ap10: m.arcgis_ap10,
            precision: m.precision,
            recall: m.recall,
            f1: m.f1,
            score_threshold: m.score_threshold,
        }
    }
}

/// Every detection number of one evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct DetMetrics {
    /// PASCAL VOC AP at IoU 0.5, all-point, difficult boxes ignored: the ranking metric.
    pub ap50: f64,
    /// Per class VOC AP50, by class index.
    pub ap50_per_class: Vec<(u32, Option<f64>)>,
    /// The twelve COCO numbers.
    pub coco: autodl_detection_metrics::CocoSummary,
    /// VOC AP at IoU 0.1, ArcGIS's default.
    pub arcgis_ap10: f64,
    /// Score threshold with the best mean F1 at IoU 0.5.
    pub score_threshold: f64,
    /// Mean precision at that threshold.
    pub precision: f64,
    /// Mean recall at that threshold.
    pub recall: f64,
    /// Mean F1 at that threshold.
    pub f1: f64,
    /// Per class precision, recall and F1 at that threshold.
    pub per_class: Vec<autodl_detection_metrics::ClassPrf>,
    /// Precision-recall curve of each class at IoU 0.5: `(recall, precision)` points.
    pub pr_curves: Vec<(u32, Vec<(f64, f64)>)>,
}

/// One line a trial process writes on stdout.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "event")]
pub enum Event {
    /// An epoch finished.
    Epoch(EpochRecord),
    /// A status line.
    Message {
        /// The text.
        text: String,
    },
    /// The trial's outcome; the last line.
    Result(TrialResult),
    /// The trial process panicked: its last line when it sends no result. Read instead of
    /// its stderr, where the message may be anywhere.
    #[serde(rename_all = "kebab-case")]
    Panicked {
        /// The panic message.
        message: String,
        /// Whether the panic was a device's out-of-memory error (Burn 0.21's CUDA backend
        /// panics on one).
        out_of_memory: bool,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epoch() -> EpochRecord {
        EpochRecord {
            epoch: 1,
            train_loss: 0.5,
            val_loss: 0.6,
            metric: 0.7,
            elapsed_secs: 1.5,
        }
    }

    fn classes() -> Vec<ClassInfo> {
        vec![
            ClassInfo {
                value: 1,
                name: "forest".into(),
            },
            ClassInfo {
                value: 2,
                name: "water".into(),
            },
        ]
    }

    fn meta() -> ModelMeta {
        let mut params = Params::new();
        params.insert("anchor-scale".into(), crate::ParamValue::Number(4.0));
        ModelMeta {
            family: "unet".into(),
            backbone: "resnet18".into(),
            task: Task::PixelClassification,
            bands: 3,
            classes: classes(),
            ignore_index: Some(0),
            mean: vec![0.1, 0.2, 0.3],
            std: vec![1.0, 1.0, 1.0],
            tile_size: 64,
            params,
            extract_bands: None,
        }
    }

    fn checkpoint() -> Checkpoint {
        Checkpoint {
            epoch: 3,
            batch_size: 12,
            learning_rate: 0.01,
            planned_epochs: 20,
            epochs: vec![epoch()],
            best_epoch: Some(1),
            rung: 1,
            cycle_start: 2,
        }
    }

    fn pixel_metrics() -> MetricsFile {
        let mut cm = autodl_metrics::ConfusionMatrix::new(2);
        cm.add(&[0, 1, 1], &[0, 1, 0], None)
            .expect("labels are in range");
        MetricsFile::PixelClassification(PixelMetricsFile {
            metrics: cm.metrics(),
            classes: classes(),
            confusion_matrix: cm,
            epochs: vec![epoch()],
        })
    }

    fn detection_metrics() -> MetricsFile {
        let coco = autodl_detection_metrics::CocoSummary {
            ap: 0.4,
            ap50: 0.6,
            ap75: 0.3,
            ap_small: -1.0,
            ap_medium: 0.2,
            ap_large: 0.5,
            ar1: 0.1,
            ar10: 0.3,
            ar100: 0.4,
            ar_small: -1.0,
            ar_medium: 0.3,
            ar_large: 0.6,
        };
        let detail = DetMetrics {
            ap50: 0.6,
            ap50_per_class: vec![(0, Some(0.6)), (1, None)],
            coco,
            arcgis_ap10: 0.7,
            score_threshold: 0.35,
            precision: 0.5,
            recall: 0.4,
            f1: 0.45,
            per_class: vec![autodl_detection_metrics::ClassPrf {
                category: 0,
                precision: 0.5,
                recall: 0.4,
                f1: 0.45,
                tp: 4,
                fp: 4,
                fn_: 6,
            }],
            pr_curves: vec![(0, vec![(0.1, 1.0), (0.4, 0.5)])],
        };
        MetricsFile::Detection(DetectionMetricsFile {
            metrics: DetectionSummary::from(&detail),
            detail,
            classes: classes(),
            epochs: vec![epoch()],
        })
    }

    /// Writes `value` into a fresh folder, reads it back through `load` and compares.
    fn round_trip<T: PartialEq + std::fmt::Debug>(
        value: &T,
        save: impl Fn(&T, &Path) -> Result<(), ContractError>,
        load: impl Fn(&Path) -> Result<T, ContractError>,
    ) {
        let dir = tempfile::tempdir().expect("a temporary folder");
        save(value, dir.path()).expect("the file is written");
        assert_eq!(&load(dir.path()).expect("the file reads back"), value);
    }

    #[test]
    fn every_file_round_trips() {
        round_trip(
            &meta(),
            |m, d| write_json(&d.join(META), m),
            ModelMeta::read,
        );
        round_trip(&checkpoint(), Checkpoint::save, |d| {
            Checkpoint::load(d)?.ok_or_else(|| ContractError::Invalid {
                path: d.to_owned(),
                reason: "no checkpoint".into(),
            })
        });
        round_trip(&pixel_metrics(), MetricsFile::save, MetricsFile::load);
        round_trip(&detection_metrics(), MetricsFile::save, MetricsFile::load);
        round_trip(&ensemble(), EnsembleMeta::save, EnsembleMeta::read);
    }

    fn ensemble() -> EnsembleMeta {
        EnsembleMeta {
            task: Task::Detection,
            classes: classes(),
            ignore_index: None,
            members: vec![EnsembleMember {
                dir: "retinanet-resnet18".into(),
                id: "retinanet-resnet18".into(),
                family: "retinanet".into(),
                backbone: "resnet18".into(),
                weight: 1.0,
            }],
            hflip: true,
            fusion_iou: 0.55,
            score_threshold: 0.3,
        }
    }

    #[test]
    fn an_ensemble_member_outside_its_folder_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["../elsewhere", "a/b", ".hidden", ""] {
            let mut e = ensemble();
            e.members[0].dir = bad.into();
            write_json(&dir.path().join(ENSEMBLE), &e).unwrap();
            let err = EnsembleMeta::read(dir.path()).unwrap_err().to_string();
            assert!(err.contains("plain folder name"), "{bad}: {err}");
        }
        let mut e = ensemble();
        e.members[0].weight = 0.0;
        assert!(e.check().unwrap_err().contains("positive"));
    }

    #[test]
    fn named_scores_read_the_file() {
        let pixels = pixel_metrics();
        let MetricsFile::PixelClassification(p) = &pixels else {
            panic!("a pixel file")
        };
        assert_eq!(pixels.metric("miou"), Some(p.metrics.mean_iou));
        assert_eq!(pixels.metric("dice"), Some(p.metrics.mean_dice));
        assert!(pixels.metric("baseline-miou").is_some());
        assert_eq!(pixels.task(), Task::PixelClassification);
        let mut boxes = detection_metrics();
        assert_eq!(boxes.metric("ap50"), Some(0.6));
        assert_eq!(boxes.metric("coco-ap"), Some(0.4));
        assert_eq!(boxes.metric("f1"), Some(0.45));
        assert_eq!(boxes.metric("miou"), None);
        assert_eq!(boxes.scores().len(), 8);
        boxes.set_epochs(Vec::new());
        assert!(boxes.epochs().is_empty());
    }

    #[test]
    fn a_missing_checkpoint_is_none() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        assert!(
            Checkpoint::load(dir.path())
                .expect("no file is no error")
                .is_none()
        );
    }

    /// Writes `value`, renames its first occurrence of `field` (a JSON key) to a misspelling,
    /// and returns the error reading it back gives.
    fn misspelt<T: Serialize>(
        value: &T,
        name: &str,
        field: &str,
        load: impl Fn(&Path) -> Result<(), ContractError>,
    ) -> String {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let text = serde_json::to_string_pretty(value).expect("serialises");
        let key = format!("\"{field}\"");
        assert!(text.contains(&key), "{name} has no field {field}: {text}");
        let text = text.replacen(&key, &format!("\"{field}x\""), 1);
        std::fs::write(dir.path().join(name), text).expect("the file is written");
        let err = load(dir.path()).expect_err("a misspelt field must not read");
        let shown = err.to_string();
        assert!(
            shown.contains(&dir.path().join(name).display().to_string()),
            "the error names the file: {shown}"
        );
        shown
    }

    #[test]
    fn a_misspelt_field_is_an_error_naming_the_file() {
        let e = misspelt(&meta(), META, "tile-size", |d| ModelMeta::read(d).map(drop));
        assert!(e.contains("tile-sizex"), "{e}");
        // A field that may be null or absent must still not take a misspelling.
        misspelt(&meta(), META, "ignore-index", |d| {
            ModelMeta::read(d).map(drop)
        });
        misspelt(&checkpoint(), CHECKPOINT, "batch-size", |d| {
            Checkpoint::load(d).map(drop)
        });
        misspelt(&checkpoint(), CHECKPOINT, "best-epoch", |d| {
            Checkpoint::load(d).map(drop)
        });
        for (file, field) in [
            (pixel_metrics(), "confusion-matrix"),
            (pixel_metrics(), "mean_iou"),
            (pixel_metrics(), "iou"),
            (detection_metrics(), "score-threshold"),
            (detection_metrics(), "pr-curves"),
            (detection_metrics(), "value"),
        ] {
            misspelt(&file, METRICS, field, |d| MetricsFile::load(d).map(drop));
        }
    }

    #[test]
    fn an_inconsistent_model_meta_names_the_file() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let mut m = meta();
        m.std[1] = 0.0;
        m.save(dir.path()).expect("written");
        let err = ModelMeta::read(dir.path()).expect_err("a zero std is refused");
        assert!(
            matches!(&err, ContractError::Invalid { path, .. } if path.ends_with(META)),
            "{err}"
        );
    }
}
