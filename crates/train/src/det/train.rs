//! Detector training: the trial's settings (tile, ranking metric, the detector's head), batches
//! of augmented tiles, and the fit loop's evaluation and finishing step, for any [`Detector`].

use std::collections::BTreeMap;

use autodl_api::{AugSample, ParamValue, Params, PluginError, Progress, TrialResult, TrialSpec};
use autodl_detection::ScoredBox;
use burn::module::AutodiffModule;
use burn::tensor::Tensor;
use burn::tensor::backend::AutodiffBackend;
use rayon::prelude::*;

use super::anchor::AnchorHead;
use super::data::{DetData, load_data, make_sample};
use super::detector::{Detector, Targets};
use super::eval::{NMS_CHOICES, evaluate};
use super::metrics::{ap50, det_metrics};
use super::net::{DetNet, DetOptions};
use super::write::{write_model, write_reports};
use crate::fit::{self, Evaluation, FitOptions, Fitted, Task};
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
    /// The ranking metric: `ap50` or `coco-ap`.
    metric_name: String,
}

impl<B, M, H> Task<B, M> for DetTask<'_, H>
where
    B: AutodiffBackend,
    M: Detector<B, Head = H> + AutodiffModule<B>,
    M::InnerModule: Detector<B::InnerBackend, Head = H>,
    H: Sync,
{
    /// Images and each image's objects.
    type Batch = (Tensor<B, 4>, Vec<Targets>);
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
    ) -> Result<Evaluation<Self::Payload>, PluginError> {
        let data = self.data;
        let (loss, per_nms) = evaluate(model, self.head, &data.val, data.bands, self.tile, device)?;
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
        let mut params = self.head_params.clone();
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
    M: DetNet<B> + Detector<B, Head = AnchorHead> + AutodiffModule<B>,
    M::InnerModule: DetNet<B::InnerBackend> + Detector<B::InnerBackend, Head = AnchorHead>,
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
/// Parameters read from `spec.params` besides the fit loop's and the head's: `metric`
/// (`ap50`, the default, or `coco-ap`).
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
    M: Detector<B, Head = H> + AutodiffModule<B>,
    M::InnerModule: Detector<B::InnerBackend, Head = H>,
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
    let metric_name = crate::options::metric_name(spec, "ap50");
    if !matches!(metric_name.as_str(), "ap50" | "coco-ap") {
        return Err(PluginError::Training(format!(
            "unknown metric `{metric_name}`: use ap50 or coco-ap"
        )));
    }
    let (head, head_params) = head(&data, tile)?;
    let task = DetTask {
        spec,
        progress,
        data: &data,
        tile,
        augment,
        head: &head,
        head_params,
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
