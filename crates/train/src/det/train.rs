//! Detector training: the trial's settings (tile, anchors fitted to the data, losses, ranking
//! metric), one optimiser step on augmented tiles, and the fit loop's evaluation and finish.

use std::collections::BTreeMap;

use autodl_api::{AugSample, ParamValue, PluginError, Progress, TrialResult, TrialSpec};
use autodl_detection::{Box4, ScoredBox};
use burn::module::AutodiffModule;
use burn::tensor::Tensor;
use burn::tensor::backend::AutodiffBackend;
use rayon::prelude::*;

use super::data::{DetData, load_data, make_sample};
use super::eval::{NMS_CHOICES, evaluate};
use super::loss::{LossSetup, det_loss};
use super::metrics::{ap50, det_metrics};
use super::net::{BoxLoss, DetNet, DetOptions};
use super::write::{write_model, write_reports};
use crate::fit::{self, Evaluation, FitOptions, Fitted, Task};
use crate::infer::SIZE_MULTIPLE;
use crate::params::text_param;
use crate::sample::images_tensor;
use crate::seed::sample_seed;
use crate::trial;

/// The detection task the fit loop drives.
struct DetTask<'a> {
    spec: &'a TrialSpec,
    progress: &'a dyn Progress,
    data: &'a DetData,
    tile: usize,
    augment: autodl_augment::Pipeline,
    setup: LossSetup<'a>,
    /// The anchor base-size multiplier, recorded for prediction.
    scale: f32,
    /// The ranking metric: `ap50` or `coco-ap`.
    metric_name: String,
}

impl<B, M> Task<B, M> for DetTask<'_>
where
    B: AutodiffBackend,
    M: DetNet<B> + AutodiffModule<B>,
    M::InnerModule: DetNet<B::InnerBackend>,
{
    /// Images and each image's boxes with their class.
    type Batch = (Tensor<B, 4>, Vec<Vec<(Box4, usize)>>);
    /// The NMS IoU that ranked best and the detections of every validation image with it.
    type Payload = (f32, Vec<Vec<ScoredBox>>);

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
                    &self.data.train[i],
                    self.data.bands,
                    self.tile,
                    sample_seed(self.spec.seed, epoch, i as u64),
                    &self.augment,
                )
            })
            .collect();
        let boxes = samples.iter().map(|s| s.boxes.clone()).collect();
        (images_tensor(&samples, device), boxes)
    }

    fn loss(&self, model: &M, (images, boxes): Self::Batch, device: &B::Device) -> Tensor<B, 1> {
        det_loss(model.forward(images), &boxes, &self.setup, device)
    }

    fn evaluate(
        &self,
        model: &M::InnerModule,
        device: &B::Device,
    ) -> Result<Evaluation<Self::Payload>, PluginError> {
        let data = self.data;
        let (loss, per_nms) =
            evaluate(model, &data.val, data.bands, self.tile, &self.setup, device)?;
        let mut best: Option<(f64, f32, Vec<Vec<ScoredBox>>)> = None;
        for (dets, &nms) in per_nms.into_iter().zip(&NMS_CHOICES) {
            let metric = if self.metric_name == "coco-ap" {
                det_metrics(&data.val, &dets, data.classes.len()).coco.ap
            } else {
                ap50(&data.val, &dets)
            };
            if best.as_ref().is_none_or(|b| metric > b.0) {
                best = Some((metric, nms, dets));
            }
        }
        let (metric, nms, dets) = best.unwrap_or((0.0, 0.5, Vec::new()));
        Ok(Evaluation {
            loss,
            metric,
            payload: (nms, dets),
        })
    }

    fn finish(
        &self,
        fitted: &Fitted<()>,
        (nms, dets): Self::Payload,
    ) -> Result<BTreeMap<String, f64>, PluginError> {
        let (spec, data) = (self.spec, self.data);
        let metrics = det_metrics(&data.val, &dets, data.classes.len());
        self.progress.message(&format!(
            "NMS IoU {nms} and score threshold {:.2} chosen on the validation split",
            metrics.score_threshold
        ));
        let mut params = self.setup.opts.params.clone();
        params.insert("anchor-scale".into(), ParamValue::Number(self.scale as f64));
        params.insert("nms-iou".into(), ParamValue::Number(nms as f64));
        params.insert(
            "score-threshold".into(),
            ParamValue::Number(metrics.score_threshold),
        );
        write_model(spec, data, self.tile, params)?;
        write_reports(&spec.out_dir, &metrics, &fitted.epochs, &data.classes)?;
        let mut all = BTreeMap::new();
        all.insert("ap50".to_owned(), metrics.ap50);
        all.insert("coco-ap".to_owned(), metrics.coco.ap);
        all.insert("coco-ap50".to_owned(), metrics.coco.ap50);
        all.insert("coco-ap75".to_owned(), metrics.coco.ap75);
        all.insert("arcgis-ap10".to_owned(), metrics.arcgis_ap10);
        all.insert("precision".to_owned(), metrics.precision);
        all.insert("recall".to_owned(), metrics.recall);
        all.insert("f1".to_owned(), metrics.f1);
        Ok(all)
    }
}

/// The anchor base-size multiplier: the spec's `anchor-scale`, or one fitted to the training
/// boxes so that the smallest anchors match the small objects.
fn anchor_scale(spec: &TrialSpec, data: &DetData, opts: &DetOptions) -> f32 {
    match spec.params.get("anchor-scale") {
        Some(ParamValue::Number(s)) => *s as f32,
        _ => {
            let sides: Vec<f32> = data
                .train
                .iter()
                .flat_map(|it| {
                    it.boxes
                        .iter()
                        .map(|(b, _)| ((b[2] - b[0]) * (b[3] - b[1])).sqrt())
                })
                .collect();
            autodl_detection::anchors::fit_scale(
                &sides,
                opts.strides.first().copied().unwrap_or(8),
                1.5,
                4.0,
            )
        }
    }
}

/// Trains a detector as `spec` says and writes its model folder.
///
/// Parameters read from `spec.params` besides the fit loop's: `anchor-scale` (base anchor side
/// in strides; fitted to the data when absent), `box-loss` (`smooth-l1` or `giou`; the family's
/// choice by default) and `metric` (`ap50`, the default, or `coco-ap`).
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
        .unwrap_or_else(|| (opts.default_tile as usize).min(largest));
    let tile = tile.div_ceil(SIZE_MULTIPLE).max(1) * SIZE_MULTIPLE;
    let augment = trial::augmenter(spec, autodl_api::Task::Detection)?;
    let metric_name = text_param(&spec.params, "metric", "ap50").to_owned();
    if !matches!(metric_name.as_str(), "ap50" | "coco-ap") {
        return Err(PluginError::Training(format!(
            "unknown metric `{metric_name}`: use ap50 or coco-ap"
        )));
    }
    let scale = anchor_scale(spec, &data, opts);
    let anchors = opts.anchor_config(scale);
    let mut own = opts.clone();
    own.box_loss = match text_param(&spec.params, "box-loss", "default") {
        "default" => opts.box_loss,
        "smooth-l1" => BoxLoss::SmoothL1 { beta: 1.0 / 9.0 },
        "giou" => BoxLoss::Giou,
        other => {
            return Err(PluginError::Training(format!(
                "unknown box-loss `{other}`: use smooth-l1 or giou"
            )));
        }
    };
    let opts = &own;
    progress.message(&format!(
        "training tiles {tile} px, anchors {:.0} to {:.0} px",
        anchors.sizes.first().copied().unwrap_or(0.0)
            * opts.anchor_scales.first().copied().unwrap_or(1.0),
        anchors.sizes.last().copied().unwrap_or(0.0)
            * opts.anchor_scales.last().copied().unwrap_or(1.0)
    ));
    let task = DetTask {
        spec,
        progress,
        data: &data,
        tile,
        augment,
        setup: LossSetup {
            opts,
            anchors: &anchors,
        },
        scale,
        metric_name,
    };
    let fit_opts = FitOptions {
        spec,
        progress,
        default_lr: opts.default_lr,
    };
    fit::train(
        &fit_opts,
        start,
        device,
        &|| build(device, bands, classes),
        &task,
    )
}
