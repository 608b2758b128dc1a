//! Detector training: the trial's settings (tile, ranking metric, the detector's head), batches
//! of augmented tiles, and the fit loop's evaluation and finishing step, for any [`Detector`].

use std::collections::BTreeMap;

use autodl_api::{
    AugSample, DetectedBox, EvalItem, EvalOptions, Evaluation, Evaluator, MetricsFile, ParamValue,
    Params, PluginError, Progress, TrialResult, TrialSpec, TruthBox,
};
use autodl_detection::ScoredBox;
use autodl_detection_metrics::coco_bbox;
use burn::module::AutodiffModule;
use burn::tensor::Tensor;
use burn::tensor::backend::AutodiffBackend;
use rayon::prelude::*;

use super::anchor::AnchorHead;
use super::data::{DetData, DetItem, load_data, make_sample};
use super::detector::{Detector, Targets};
use super::eval::{NMS_CHOICES, evaluate};
use super::net::{DetNet, DetOptions};
use super::write::{write_model, write_reports};
use crate::fit::{self, FitOptions, Fitted, Task};
use crate::infer::SIZE_MULTIPLE;
use crate::sample::images_tensor;
use crate::trial;
use autodl_api::sample_seed;

/// What a detector family tells the training loop besides its head.
#[derive(Debug, Clone, Copy)]
pub struct DetTraining {
    /// Learning rate when the budget is too small for the finder.
    pub default_lr: f64,
    /// Training tile side when the spec gives none.
    pub default_tile: u32,
}

/// The detection task the fit loop drives, for detectors whose head is `H`.
struct DetTask<'a, H> {
    spec: &'a TrialSpec,
    progress: &'a dyn Progress,
    data: &'a DetData,
    tile: usize,
    augment: std::sync::Arc<dyn autodl_api::SampleAugmenter>,
    head: &'a H,
    /// What `model.json` records of the head.
    head_params: Params,
    /// Scores validation.
    evaluator: &'static dyn Evaluator,
    /// The true boxes of each validation item, as the evaluator takes them.
    truth: Vec<Vec<TruthBox>>,
    /// The ranking metric, one the evaluator reports.
    metric_name: String,
}

/// An item's true boxes as an evaluator takes them, with their crowd and difficult flags.
fn truth_boxes(item: &DetItem) -> Vec<TruthBox> {
    item.boxes
        .iter()
        .enumerate()
        .map(|(j, (b, c))| TruthBox {
            bbox: coco_bbox(*b),
            class: *c as u32,
            area: None,
            crowd: item.crowd.get(j).copied().unwrap_or(false),
            difficult: item.difficult.get(j).copied().unwrap_or(false),
        })
        .collect()
}

/// Detections as an evaluator takes them.
fn detected_boxes(found: &[ScoredBox]) -> Vec<DetectedBox> {
    found
        .iter()
        .map(|s| DetectedBox {
            bbox: coco_bbox(s.bbox),
            class: s.class as u32,
            score: f64::from(s.score),
        })
        .collect()
}

impl<B, M, H> Task<B, M> for DetTask<'_, H>
where
    B: AutodiffBackend,
    M: Detector<B, H> + AutodiffModule<B>,
    M::InnerModule: Detector<B::InnerBackend, H>,
    H: Sync,
{
    /// Images and each image's objects.
    type Batch = (Tensor<B, 4>, Vec<Targets>);
    /// The NMS IoU that ranked best and the evaluation of the detections with it.
    type Payload = (f32, Box<dyn Evaluation>);

    fn train_len(&self) -> usize {
        self.data.train.len()
    }

    fn metric_name(&self) -> &str {
        &self.metric_name
    }

    fn batch(&self, indices: &[usize], epoch: u64, device: &B::Device) -> Self::Batch {
        let samples: Vec<AugSample> = indices
            .par_iter()
            .map(|&i| {
                make_sample(
                    &self.data.train,
                    i,
                    self.data.bands,
                    self.tile,
                    sample_seed(self.spec.seed, epoch, i as u64),
                    self.augment.as_ref(),
                )
            })
            .collect();
        let boxes = samples.iter().map(|s| s.boxes.clone()).collect();
        (images_tensor(&samples, device), boxes)
    }

    fn loss(&self, model: &M, (images, boxes): Self::Batch, _: &B::Device) -> Tensor<B, 1> {
        model.loss(self.head, images, &boxes)
    }

    fn evaluate(
        &self,
        model: &M::InnerModule,
        device: &B::Device,
    ) -> Result<fit::Evaluation<Self::Payload>, PluginError> {
        let data = self.data;
        let (loss, per_nms) = evaluate(model, self.head, &data.val, data.bands, self.tile, device)?;
        let mut best: Option<(f64, f32, Box<dyn Evaluation>)> = None;
        for (dets, &nms) in per_nms.into_iter().zip(&NMS_CHOICES) {
            let mut evaluation = self.evaluator.start(&data.classes, &EvalOptions::default());
            for (found, truth) in dets.iter().zip(&self.truth) {
                evaluation.add(EvalItem::Boxes {
                    detections: &detected_boxes(found),
                    truth,
                })?;
            }
            // Undefined (no true box to find) ranks as 0.
            let metric = evaluation.score(&self.metric_name).unwrap_or(0.0);
            if best.as_ref().is_none_or(|b| metric > b.0) {
                best = Some((metric, nms, evaluation));
            }
        }
        let (metric, nms, evaluation) = match best {
            Some(best) => best,
            // No NMS threshold tried: the truth with nothing found.
            None => {
                let mut nothing = self.evaluator.start(&data.classes, &EvalOptions::default());
                for truth in &self.truth {
                    nothing.add(EvalItem::Boxes {
                        detections: &[],
                        truth,
                    })?;
                }
                (0.0, 0.5, nothing)
            }
        };
        Ok(fit::Evaluation {
            loss,
            metric,
            payload: (nms, evaluation),
        })
    }

    fn finish(
        &self,
        fitted: &Fitted<()>,
        (nms, evaluation): Self::Payload,
    ) -> Result<BTreeMap<String, f64>, PluginError> {
        let (spec, data) = (self.spec, self.data);
        let metrics = evaluation.finish();
        let MetricsFile::Detection(detection) = &metrics else {
            return Err(PluginError::Training(format!(
                "evaluator `{}` gave {} metrics for a detector",
                self.evaluator.name(),
                metrics.task()
            )));
        };
        let score_threshold = detection.detail.score_threshold;
        self.progress.message(&format!(
            "NMS IoU {nms} and score threshold {score_threshold:.2} chosen on the validation split"
        ));
        let mut params = self.head_params.clone();
        params.insert("nms-iou".into(), ParamValue::Number(nms as f64));
        params.insert(
            "score-threshold".into(),
            ParamValue::Number(score_threshold),
        );
        write_model(spec, data, self.tile, params)?;
        write_reports(&spec.out_dir, metrics, &fitted.epochs)
    }
}

/// Trains an anchor-head detector as `spec` says and writes its model folder: [`train_with`]
/// with the [`AnchorHead`] the trial asks for (see [`AnchorHead::for_trial`] for its
/// parameters).
pub fn train<B, M, F>(
    spec: &TrialSpec,
    progress: &dyn Progress,
    opts: &DetOptions,
    device: &B::Device,
    build: F,
) -> Result<TrialResult, PluginError>
where
    B: AutodiffBackend,
    M: DetNet<B> + AutodiffModule<B>,
    M::InnerModule: DetNet<B::InnerBackend>,
    F: Fn(&B::Device, usize, usize) -> Result<M, PluginError>,
{
    let training = DetTraining {
        default_lr: opts.default_lr,
        default_tile: opts.default_tile,
    };
    train_with::<B, M, _, _>(
        spec,
        progress,
        training,
        device,
        |data, tile| {
            let head = AnchorHead::for_trial(spec, data, opts)?;
            let (smallest, largest) = head.side_range();
            progress.message(&format!(
                "training tiles {tile} px, anchors {smallest:.0} to {largest:.0} px"
            ));
            let params = head.params();
            Ok((head, params))
        },
        build,
    )
}

/// Trains any [`Detector`] as `spec` says and writes its model folder. `head` gives the
/// detector's head for the trial's data and tile side, with the parameters `model.json`
/// records of it; `build` a fresh network for a band and class count.
///
/// The ranking metric (`spec.training.metric`) is one the trial's evaluator reports (`ap50`, the
/// default, or `coco-ap` for the detection evaluator).
pub fn train_with<B, M, H, F>(
    spec: &TrialSpec,
    progress: &dyn Progress,
    training: DetTraining,
    device: &B::Device,
    head: impl FnOnce(&DetData, usize) -> Result<(H, Params), PluginError>,
    build: F,
) -> Result<TrialResult, PluginError>
where
    B: AutodiffBackend,
    M: Detector<B, H> + AutodiffModule<B>,
    M::InnerModule: Detector<B::InnerBackend, H>,
    H: Sync,
    F: Fn(&B::Device, usize, usize) -> Result<M, PluginError>,
{
    let start = trial::begin::<B>(spec, device)?;
    let data = load_data(&spec.data, spec.seed)?;
    let (bands, classes) = (data.bands, data.classes.len());
    trial::check_splits(data.train.len(), data.val.len())?;
    let largest = data
        .train
        .iter()
        .map(|it| it.width.max(it.height))
        .max()
        .unwrap_or(0);
    let tile = spec
        .tile_size
        .map(|t| t as usize)
        .unwrap_or_else(|| (training.default_tile as usize).min(largest));
    let tile = tile.div_ceil(SIZE_MULTIPLE).max(1) * SIZE_MULTIPLE;
    let augment = trial::augmenter(spec, autodl_api::Task::Detection)?;
    let evaluator = trial::evaluator(spec, autodl_api::Task::Detection)?;
    let metric_name = trial::ranking_metric(spec, evaluator)?;
    let (head, head_params) = head(&data, tile)?;
    let task = DetTask {
        spec,
        progress,
        data: &data,
        tile,
        augment,
        head: &head,
        head_params,
        evaluator,
        truth: data.val.iter().map(truth_boxes).collect(),
        metric_name,
    };
    let fit_opts = FitOptions {
        spec,
        progress,
        default_lr: training.default_lr,
    };
    fit::train(
        &fit_opts,
        start,
        device,
        &|| build(device, bands, classes),
        &task,
    )
}
