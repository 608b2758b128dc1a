//! YOLOv3 as an `autodl_train::det::Detector`: its head (the k-means priors and the loss
//! settings, chosen per trial and recorded in `model.json`), its loss (the paper's assignment
//! with Ultralytics' YOLOv3 loss: GIoU boxes, objectness learning the IoU of its box, per-scale
//! means), and its post-processing (score = objectness x class probability, score floor, NMS).

use autodl_api::{ParamValue, Params, ParamsExt, PluginError, Progress, TrialSpec};
use autodl_detection::loss::{binary_cross_entropy, smooth_l1};
use autodl_detection::{Box4, PostprocessConfig, ScoredBox, clip_and_nms};
use autodl_nets::backboned::DetectorHead;
use autodl_train::det::{DetData, DetTraining, Detected, Detector, Targets};
use autodl_train::fit::scalar;
use autodl_train::options::param_error;
use burn::tensor::activation::sigmoid;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use rayon::prelude::*;

use crate::assign::{Layout, PER_SCALE, STRIDES, assign};
use crate::kmeans::{Size, kmeans};
use crate::model::{BOX_OUTPUTS, YoloV3};

/// The `model.json` parameter holding the priors.
pub const ANCHORS: &str = "anchors";

/// The priors when the training data has no box to cluster: the paper's nine COCO priors (for
/// 416 px inputs).
pub const COCO_ANCHORS: [Size; 9] = [
    [10.0, 13.0],
    [16.0, 30.0],
    [33.0, 23.0],
    [30.0, 61.0],
    [62.0, 45.0],
    [59.0, 119.0],
    [116.0, 90.0],
    [156.0, 198.0],
    [373.0, 326.0],
];

/// The least score [`decode`] keeps when detecting: Ultralytics' validation floor. A score is
/// a product of two probabilities, and objectness learns the IoU of the box, so good boxes
/// score lower than the one probability of the other heads (whose floor is 0.05); validation
/// ranks every box kept (the pre-NMS top-k and the detections cap bound them), and prediction
/// keeps those above the score threshold chosen on validation.
pub const SCORE_FLOOR: f32 = 0.001;

/// Largest `|log size ratio|` decoded, so that an untrained network cannot overflow `exp`
/// (the anchor heads' bound).
const MAX_LOG_RATIO: f32 = 4.135;

/// The box loss of the assigned predictions (each averaged over them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum YoloBoxLoss {
    /// `1 - GIoU` of the decoded box with the object (Ultralytics' YOLOv3): the default.
    Giou,
    /// The paper's, as Darknet computes it: the x/y offsets through the sigmoid, with the
    /// gradient Darknet applies to their logits (`sigmoid(x) - t`, which is that of binary
    /// cross-entropy against the fractional offset, not of the squared error the paper names:
    /// through the sigmoid the latter learns slowly), and the squared error of the log
    /// width/height (halved: gradient `w - t`).
    Darknet,
    /// Smooth-L1 of the same quantities (beta 1/9, the anchor heads' choice).
    SmoothL1,
}

/// What YOLOv3 needs besides its weights: its nine priors and its loss settings.
#[derive(Debug, Clone, PartialEq)]
pub struct YoloHead {
    /// Width and height in pixels of the nine priors, smallest area first: three per scale,
    /// finest scale first.
    pub anchors: Vec<Size>,
    /// A prediction that learns no object but whose prior overlaps one by more than this is
    /// left out of the objectness loss.
    pub ignore_iou: f32,
    /// The box loss.
    pub box_loss: YoloBoxLoss,
    /// Weight of the box loss (a mean over the assigned predictions; Ultralytics' 0.05).
    pub box_weight: f32,
    /// Weight of the objectness loss of predictions without an object, relative to those
    /// with one (within each scale's mean over its predictions; 1 in Ultralytics' loss).
    pub noobj_weight: f32,
    /// Weight of the class loss (a mean over the assigned predictions and the classes;
    /// Ultralytics' 0.5).
    pub class_weight: f32,
}

impl YoloHead {
    /// The loss settings of the checked `params` (a trial's, or a trained model's record) with
    /// the given priors.
    fn with_anchors(anchors: Vec<Size>, params: &Params) -> Result<Self, PluginError> {
        let number = |name: &str| params.number(name).map(|v| v as f32).map_err(param_error);
        Ok(YoloHead {
            anchors,
            ignore_iou: number("ignore-iou")?,
            box_loss: box_loss(params.text("box-loss").map_err(param_error)?)?,
            box_weight: number("box-weight")?,
            noobj_weight: number("noobj-weight")?,
            class_weight: number("class-weight")?,
        })
    }
}

/// The box loss a `box-loss` parameter names.
fn box_loss(name: &str) -> Result<YoloBoxLoss, PluginError> {
    match name {
        "giou" => Ok(YoloBoxLoss::Giou),
        "darknet" => Ok(YoloBoxLoss::Darknet),
        "smooth-l1" => Ok(YoloBoxLoss::SmoothL1),
        other => Err(PluginError::Training(format!(
            "unknown box-loss `{other}`: use giou, darknet or smooth-l1"
        ))),
    }
}

/// The priors as `model.json` records them: `WxH` pairs separated by spaces, each number
/// written in the shortest form that reads back to the same `f32`, so that prediction decodes
/// with exactly the priors validation used.
pub fn format_anchors(anchors: &[Size]) -> String {
    anchors
        .iter()
        .map(|a| format!("{}x{}", a[0], a[1]))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Reads [`format_anchors`]'s text back: nine positive sizes.
pub fn parse_anchors(text: &str) -> Result<Vec<Size>, PluginError> {
    let bad = || {
        PluginError::Data(format!(
            "`{ANCHORS}` in model.json must be {} sizes `WxH`, found `{text}`",
            STRIDES.len() * PER_SCALE
        ))
    };
    let anchors = text
        .split_whitespace()
        .map(|pair| {
            let (w, h) = pair.split_once('x').ok_or_else(bad)?;
            let size = [
                w.parse::<f32>().map_err(|_| bad())?,
                h.parse::<f32>().map_err(|_| bad())?,
            ];
            if size.iter().all(|v| v.is_finite() && *v > 0.0) {
                Ok(size)
            } else {
                Err(bad())
            }
        })
        .collect::<Result<Vec<Size>, PluginError>>()?;
    if anchors.len() == STRIDES.len() * PER_SCALE {
        Ok(anchors)
    } else {
        Err(bad())
    }
}

impl DetectorHead for YoloHead {
    fn training() -> DetTraining {
        DetTraining {
            default_lr: 1e-3,
            default_tile: 256,
        }
    }

    /// Clusters the training boxes' sizes into nine priors (k-means with the IoU distance,
    /// seeded by the trial's seed), says them through `progress`, and records them as
    /// [`ANCHORS`]. Reads `ignore-iou`, `box-loss`, `box-weight`, `noobj-weight` and
    /// `class-weight` from the trial's parameters.
    fn for_trial(
        spec: &TrialSpec,
        data: &DetData,
        _tile: usize,
        progress: &dyn Progress,
    ) -> Result<Self, PluginError> {
        let sizes: Vec<Size> = data
            .train
            .iter()
            .flat_map(|it| it.boxes.iter().map(|(b, _)| [b[2] - b[0], b[3] - b[1]]))
            .collect();
        let anchors = match kmeans(&sizes, STRIDES.len() * PER_SCALE, spec.seed) {
            Some(c) => {
                progress.message(&format!(
                    "YOLOv3 priors by k-means (IoU distance) over {} training boxes, mean IoU {:.2}: {}",
                    sizes.len(),
                    c.mean_iou,
                    describe(&c.centres)
                ));
                c.centres
            }
            None => {
                progress.message(&format!(
                    "no training box to cluster: YOLOv3 keeps the paper's COCO priors: {}",
                    describe(&COCO_ANCHORS)
                ));
                COCO_ANCHORS.to_vec()
            }
        };
        YoloHead::with_anchors(anchors, &spec.params)
    }

    /// The priors, which the trial's parameters do not give: [`ANCHORS`].
    fn params(&self) -> Params {
        let mut recorded = Params::new();
        recorded.insert(
            ANCHORS.into(),
            ParamValue::Text(format_anchors(&self.anchors)),
        );
        recorded
    }

    fn from_params(params: &Params) -> Result<Self, PluginError> {
        let anchors = match params.get(ANCHORS) {
            Some(ParamValue::Text(t)) => parse_anchors(t)?,
            _ => {
                return Err(PluginError::Data(format!(
                    "model.json records no YOLOv3 priors (`{ANCHORS}`)"
                )));
            }
        };
        YoloHead::with_anchors(anchors, params)
    }
}

/// The priors per stride, rounded to the pixel, for the log.
fn describe(anchors: &[Size]) -> String {
    anchors
        .chunks(PER_SCALE)
        .zip(STRIDES)
        .map(|(group, stride)| {
            let sizes: Vec<String> = group
                .iter()
                .map(|a| format!("{:.0}x{:.0}", a[0], a[1]))
                .collect();
            format!("stride {stride}: {}", sizes.join(" "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A prediction's box in window pixels from its raw outputs `[tx, ty, tw, th, ..]`: centre
/// `(cell + sigmoid(t)) * stride`, size `prior * exp(t)`.
fn decode_box(row: &[f32], layout: &Layout, index: usize, anchors: &[Size]) -> Box4 {
    let p = layout.place(index);
    let stride = STRIDES[p.scale] as f32;
    let anchor = anchors[p.scale * PER_SCALE + p.prior];
    let cx = (p.x as f32 + sigmoid_host(row[0])) * stride;
    let cy = (p.y as f32 + sigmoid_host(row[1])) * stride;
    let w = anchor[0] * row[2].clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO).exp();
    let h = anchor[1] * row[3].clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO).exp();
    [cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h]
}

fn sigmoid_host(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Detections of one image from YOLOv3's raw outputs as a host buffer (`[predictions, 5 + K]`
/// in `layout` order): a candidate is a prediction and class whose score, objectness times
/// class probability (both sigmoids), reaches `cfg.score_threshold`; the `cfg.pre_nms_top_k`
/// best are decoded ([`decode_box`]) and clipped to `size` (boxes under a pixel dropped), and
/// class-wise NMS at `cfg.nms_iou` keeps at most `cfg.max_detections`.
pub fn decode(
    rows: &[f32],
    layout: &Layout,
    anchors: &[Size],
    size: (f32, f32),
    cfg: &PostprocessConfig,
) -> Vec<ScoredBox> {
    let d = rows.len() / layout.len().max(1);
    let mut candidates: Vec<(f32, usize, usize)> = Vec::new();
    if d > BOX_OUTPUTS {
        for (i, row) in rows.chunks(d).take(layout.len()).enumerate() {
            let objectness = sigmoid_host(row[4]);
            if objectness < cfg.score_threshold {
                // A score is at most its objectness.
                continue;
            }
            for (c, &logit) in row[BOX_OUTPUTS..].iter().enumerate() {
                let score = objectness * sigmoid_host(logit);
                if score >= cfg.score_threshold {
                    candidates.push((score, i, c));
                }
            }
        }
    }
    if candidates.len() > cfg.pre_nms_top_k {
        candidates.select_nth_unstable_by(cfg.pre_nms_top_k, |x, y| {
            y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)).then(x.2.cmp(&y.2))
        });
        candidates.truncate(cfg.pre_nms_top_k);
    }
    let decoded = candidates.into_iter().map(|(score, i, c)| {
        let b = decode_box(&rows[i * d..(i + 1) * d], layout, i, anchors);
        (b, score, c)
    });
    clip_and_nms(decoded, size, cfg)
}

/// Weight of each scale's objectness loss, finest first (Ultralytics' YOLOv3 "balance"): the
/// stride-8 grid has 16 times the predictions of the stride-32 one, and its mean per
/// prediction is the smallest, so the fine scales are weighted up and the coarse one down.
pub const OBJECTNESS_BALANCE: [f32; 3] = [4.0, 1.0, 0.4];

/// Generalised IoU `[N, T]` of boxes `[N, T, 4]` (corners) with targets `[N or 1, T, 4]`,
/// finite for boxes without area.
fn giou<B: Backend>(pred: Tensor<B, 3>, target: Tensor<B, 3>) -> Tensor<B, 2> {
    autodl_detection::loss::giou(pred, target).squeeze_dim::<2>(2)
}

/// The YOLOv3 loss of a batch of `N` images' predictions (`[N, predictions, 5 + K]` in `layout`
/// order) against each image's objects, as Ultralytics' YOLOv3 computes it (with the paper's
/// assignment and ignored priors, see [`assign`]), times `N`:
///
/// - box: `box_weight` times the mean over the assigned predictions of the box loss
///   ([`YoloBoxLoss`]; `1 - GIoU` by default);
/// - objectness: per scale, the mean over all its predictions (of the batch) of binary
///   cross-entropy, weighted by [`OBJECTNESS_BALANCE`]; an assigned prediction's target is the
///   GIoU of its decoded box with its object (clamped at 0, no gradient through it), so that
///   objectness learns how good the box is; predictions without an object (target 0) are
///   weighted by `noobj_weight`, ignored ones by 0;
/// - classes: `class_weight` times the mean over the assigned predictions and the `K` classes
///   of binary cross-entropy.
///
/// Ultralytics' weights are box 0.05, objectness 1 and classes 0.5 (this family's defaults).
pub fn yolo_loss<B: Backend>(
    rows: Tensor<B, 3>,
    layout: &Layout,
    targets: &[Targets],
    head: &YoloHead,
    device: &B::Device,
) -> Tensor<B, 1> {
    let [n, t, d] = rows.dims();
    let k = d - BOX_OUTPUTS;
    let assigned: Vec<_> = targets
        .par_iter()
        .map(|objects| {
            let boxes: Vec<Box4> = objects.iter().map(|(b, _)| *b).collect();
            assign(&boxes, &head.anchors, layout, head.ignore_iou)
        })
        .collect();
    // Each prediction's share of its scale's mean objectness loss (per image: the batch's mean
    // times N is the sum of the images' means).
    let level_weight: Vec<f32> = (0..t)
        .map(|j| {
            let p = layout.place(j);
            let [gh, gw] = layout.grids[p.scale];
            OBJECTNESS_BALANCE.get(p.scale).copied().unwrap_or(1.0)
                / (gh * gw * PER_SCALE).max(1) as f32
        })
        .collect();
    let mut positive = vec![0f32; n * t];
    let mut obj_weight: Vec<f32> = (0..n)
        .flat_map(|_| level_weight.iter().map(|w| w * head.noobj_weight))
        .collect();
    let mut object_box = vec![0f32; n * t * 4];
    let mut darknet_target = vec![0f32; n * t * 4];
    let mut class_target = vec![0f32; n * t * k];
    for (i, (image, objects)) in assigned.iter().zip(targets).enumerate() {
        for (j, &ignored) in image.ignored.iter().enumerate() {
            if ignored {
                obj_weight[i * t + j] = 0.0;
            }
        }
        for a in &image.assigned {
            let at = i * t + a.index;
            let (b, class) = objects[a.object];
            positive[at] = 1.0;
            obj_weight[at] = level_weight[a.index];
            object_box[4 * at..4 * at + 4].copy_from_slice(&b);
            darknet_target[4 * at..4 * at + 4].copy_from_slice(&[
                a.offset[0],
                a.offset[1],
                a.log_size[0],
                a.log_size[1],
            ]);
            if class < k {
                class_target[at * k + class] = 1.0;
            }
        }
    }
    let offset_entropy: f64 = darknet_target
        .chunks(4)
        .zip(&positive)
        .filter(|(_, p)| **p > 0.0)
        .flat_map(|(t, _)| &t[..2])
        .map(|&o| {
            let o = f64::from(o);
            let h = |p: f64| if p > 0.0 { -p * p.ln() } else { 0.0 };
            h(o) + h(1.0 - o)
        })
        .sum();
    let npos = f64::from(positive.iter().sum::<f32>().max(1.0));
    let pos = Tensor::<B, 2>::from_data(TensorData::new(positive, [n, t]), device);
    let object_box = Tensor::<B, 3>::from_data(TensorData::new(object_box, [n, t, 4]), device);
    // Every prediction's decoded box, and its GIoU with its object (meaningful where assigned).
    let (corner, stride, prior) = grid_tensors::<B>(layout, &head.anchors, device);
    let xy = sigmoid(rows.clone().narrow(2, 0, 2));
    let wh = rows.clone().narrow(2, 2, 2);
    let centre = corner + xy.clone() * stride;
    let half = wh.clone().clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO).exp() * prior * 0.5;
    let pred = Tensor::cat(vec![centre.clone() - half.clone(), centre + half], 2);
    let overlap = giou(pred, object_box);
    let box_sum = match head.box_loss {
        YoloBoxLoss::Darknet => {
            let target =
                Tensor::<B, 3>::from_data(TensorData::new(darknet_target, [n, t, 4]), device);
            let mask = pos.clone().unsqueeze_dim::<3>(2);
            let flat = |x: Tensor<B, 3>| x.reshape([n, 2 * t]);
            let xy_loss = binary_cross_entropy(
                flat(rows.clone().narrow(2, 0, 2)),
                flat(target.clone().narrow(2, 0, 2)),
                flat(mask.clone().repeat_dim(2, 2)),
            );
            let wh_loss = (wh - target.narrow(2, 2, 2)).square() * 0.5 * mask;
            // Less the entropy of the offsets, the least binary cross-entropy can reach, so
            // that a perfect box costs 0.
            (xy_loss + wh_loss.sum()).sub_scalar(offset_entropy)
        }
        YoloBoxLoss::SmoothL1 => {
            let target =
                Tensor::<B, 3>::from_data(TensorData::new(darknet_target, [n, t, 4]), device);
            smooth_l1(Tensor::cat(vec![xy, wh], 2), target, pos.clone(), 1.0 / 9.0)
        }
        YoloBoxLoss::Giou => (overlap.clone().neg().add_scalar(1.0) * pos.clone()).sum(),
    };
    let obj_target = overlap.detach().clamp_min(0.0) * pos.clone();
    let obj = rows.clone().narrow(2, 4, 1).reshape([n, t]);
    let obj_loss = binary_cross_entropy(
        obj,
        obj_target,
        Tensor::from_data(TensorData::new(obj_weight, [n, t]), device),
    );
    let cls = rows.narrow(2, BOX_OUTPUTS, k).reshape([n, t * k]);
    let class_sum = binary_cross_entropy(
        cls,
        Tensor::from_data(TensorData::new(class_target, [n, t * k]), device),
        pos.unsqueeze_dim::<3>(2)
            .repeat_dim(2, k)
            .reshape([n, t * k]),
    );
    let images = n as f64;
    box_sum * (f64::from(head.box_weight) * images / npos)
        + obj_loss
        + class_sum * (f64::from(head.class_weight) * images / (npos * k.max(1) as f64))
}

/// Per prediction: its cell's top-left corner in pixels (`[1, T, 2]`), its stride
/// (`[1, T, 1]`) and its prior's width and height (`[1, T, 2]`), for decoding on the device.
fn grid_tensors<B: Backend>(
    layout: &Layout,
    anchors: &[Size],
    device: &B::Device,
) -> (Tensor<B, 3>, Tensor<B, 3>, Tensor<B, 3>) {
    let t = layout.len();
    let mut corner = Vec::with_capacity(2 * t);
    let mut stride = Vec::with_capacity(t);
    let mut prior = Vec::with_capacity(2 * t);
    for i in 0..t {
        let p = layout.place(i);
        let s = STRIDES[p.scale] as f32;
        corner.extend([p.x as f32 * s, p.y as f32 * s]);
        stride.push(s);
        prior.extend(anchors[p.scale * PER_SCALE + p.prior]);
    }
    (
        Tensor::from_data(TensorData::new(corner, [1, t, 2]), device),
        Tensor::from_data(TensorData::new(stride, [1, t, 1]), device),
        Tensor::from_data(TensorData::new(prior, [1, t, 2]), device),
    )
}

impl<B: Backend> Detector<B, YoloHead> for YoloV3<B> {
    fn loss(&self, head: &YoloHead, images: Tensor<B, 4>, targets: &[Targets]) -> Tensor<B, 1> {
        let device = images.device();
        let (rows, layout) = self.rows(images);
        yolo_loss(rows, &layout, targets, head, &device)
    }

    fn detect(
        &self,
        head: &YoloHead,
        window: Tensor<B, 4>,
        region: (usize, usize),
        nms_ious: &[f32],
        targets: Option<&[(Box4, usize)]>,
    ) -> Result<Detected, PluginError> {
        let device = window.device();
        let (rows, layout) = self.rows(window);
        if head.anchors.len() != layout.grids.len() * PER_SCALE {
            return Err(PluginError::Data(format!(
                "YOLOv3 has {} priors for {} scales of {PER_SCALE}",
                head.anchors.len(),
                layout.grids.len()
            )));
        }
        let host: Vec<f32> = rows.clone().into_data().iter::<f32>().collect();
        let loss = targets.map(|t| scalar(yolo_loss(rows, &layout, &[t.to_vec()], head, &device)));
        let size = (region.0 as f32, region.1 as f32);
        let boxes = nms_ious
            .iter()
            .map(|&nms_iou| {
                let cfg = PostprocessConfig {
                    nms_iou,
                    score_threshold: SCORE_FLOOR,
                    ..PostprocessConfig::default()
                };
                decode(&host, &layout, &head.anchors, size, &cfg)
            })
            .collect();
        Ok(Detected { boxes, loss })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchors_round_trip_through_model_json_exactly() {
        let anchors: Vec<Size> = (0..9)
            .map(|i| [10.0 / 3.0 + i as f32 * 7.1, 0.1 + i as f32 * 1.37])
            .collect();
        let text = format_anchors(&anchors);
        assert_eq!(parse_anchors(&text).unwrap(), anchors);
        assert!(parse_anchors("3x4 5x6").is_err());
        assert!(parse_anchors(&text.replace('x', ",")).is_err());
        assert!(parse_anchors(&format_anchors(&[[1.0, -2.0]; 9])).is_err());
        let mut params = Params::new();
        params.insert(ANCHORS.into(), ParamValue::Text(text));
        // The loss settings are the trial's checked parameters, which model.json records.
        assert!(YoloHead::from_params(&params).is_err());
        for (name, value) in [
            ("ignore-iou", ParamValue::Number(0.5)),
            ("box-loss", ParamValue::Text("darknet".into())),
            ("box-weight", ParamValue::Number(1.0)),
            ("noobj-weight", ParamValue::Number(1.0)),
            ("class-weight", ParamValue::Number(1.0)),
        ] {
            params.insert(name.into(), value);
        }
        let head = YoloHead::from_params(&params).unwrap();
        assert_eq!(head.anchors, anchors);
        assert_eq!(head.box_loss, YoloBoxLoss::Darknet);
        assert!(YoloHead::from_params(&Params::new()).is_err());
    }

    #[test]
    fn the_loss_of_untrained_outputs_by_hand() {
        use burn::backend::Flex;
        let device = Default::default();
        // A 16 px window: grids 2x2, 1x1 and 1x1, 18 predictions of 5 + 2 outputs, all 0 but
        // the objectness logits, 1.
        let layout = Layout::new(vec![[2, 2], [1, 1], [1, 1]]);
        let rows = |n: usize| {
            let data: Vec<f32> = (0..n * 18 * 7)
                .map(|i| if i % 7 == 4 { 1.0 } else { 0.0 })
                .collect();
            Tensor::<Flex, 3>::from_data(TensorData::new(data, [n, 18, 7]), &device)
        };
        let mut head = YoloHead {
            anchors: vec![
                [8.0, 8.0],
                [6.0, 6.0],
                [16.0, 4.0],
                [24.0, 24.0],
                [32.0, 32.0],
                [40.0, 40.0],
                [64.0, 64.0],
                [80.0, 80.0],
                [100.0, 100.0],
            ],
            ignore_iou: 0.5,
            box_loss: YoloBoxLoss::Giou,
            box_weight: 2.0,
            noobj_weight: 0.5,
            class_weight: 3.0,
        };
        // An 8 x 8 object centred at (5, 5): the 8 x 8 prior of cell (0, 0), whose untrained
        // box is [0, 0, 8, 8]: IoU 49 / 79 with the object, hull 81. The 6 x 6 prior there
        // overlaps the object by 36 / 64 and is ignored; 16 predictions have no object: 10 of
        // the 12 on stride 8 (objectness weight 4 / 12 each), 3 on stride 16 (1 / 3) and 3 on
        // stride 32 (0.4 / 3).
        let targets = vec![vec![([1.0, 1.0, 9.0, 9.0], 1)]];
        let ln2 = std::f64::consts::LN_2;
        let softplus1 = 1f64.exp().ln_1p();
        let giou = 49.0 / 79.0 - 2.0 / 81.0;
        // Binary cross-entropy of logit 1 against 0 is softplus(1), against the GIoU
        // softplus(1) - GIoU.
        let objectness = 4.0 / 12.0 * (10.0 * 0.5 * softplus1 + softplus1 - giou)
            + (1.0 + 0.4) * 0.5 * softplus1;
        // Both classes' cross-entropy of logit 0, averaged over them.
        let classes = 3.0 * ln2;
        let want = 2.0 * (1.0 - giou) + objectness + classes;
        let got = scalar(yolo_loss(rows(1), &layout, &targets, &head, &device));
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        // The paper's box loss: binary cross-entropy of logit 0 against the offsets 0.625, less
        // its least value, and log sizes 0 as predicted; the objectness target is still the
        // GIoU.
        head.box_loss = YoloBoxLoss::Darknet;
        let entropy = -(0.625f64 * 0.625f64.ln() + 0.375 * 0.375f64.ln());
        let darknet = 2.0 * 2.0 * (ln2 - entropy) + objectness + classes;
        let got = scalar(yolo_loss(rows(1), &layout, &targets, &head, &device));
        assert!((got - darknet).abs() < 1e-5, "{got} vs {darknet}");
        // Without objects: only the objectness of the 18 predictions.
        let empty = (4.0 + 1.0 + 0.4) * 0.5 * softplus1;
        let got = scalar(yolo_loss(rows(1), &layout, &[Vec::new()], &head, &device));
        assert!((got - empty).abs() < 1e-5, "{got} vs {empty}");
        // A batch of both: the box and class means over its one object, times 2 images, and
        // each image's objectness.
        head.box_loss = YoloBoxLoss::Giou;
        let both = 2.0 * (2.0 * (1.0 - giou) + classes) + objectness + empty;
        let batch = vec![targets[0].clone(), Vec::new()];
        let got = scalar(yolo_loss(rows(2), &layout, &batch, &head, &device));
        assert!((got - both).abs() < 1e-5, "{got} vs {both}");
    }

    #[test]
    fn decoding_puts_a_zero_output_at_its_prior_on_the_cell_centre() {
        let layout = Layout::new(vec![[4, 4], [2, 2], [1, 1]]);
        let anchors = COCO_ANCHORS.to_vec();
        let at = layout.index(crate::assign::Place {
            scale: 1,
            y: 1,
            x: 0,
            prior: 2,
        });
        let b = decode_box(&[0.0; 6], &layout, at, &anchors);
        // Cell centre (8, 24) at stride 16, prior 59 x 119.
        assert_eq!(b, [8.0 - 29.5, 24.0 - 59.5, 8.0 + 29.5, 24.0 + 59.5]);
    }
}

#[cfg(test)]
mod learning {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::module::AutodiffModule;
    use burn::optim::{AdamConfig, GradientsParams, Optimizer};

    /// Intersection over union of two boxes `[x0, y0, x1, y1]`.
    fn overlap(a: &[f32; 4], b: &[f32; 4]) -> f32 {
        let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
        let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
        let area = |r: &[f32; 4]| (r[2] - r[0]) * (r[3] - r[1]);
        w * h / (area(a) + area(b) - w * h)
    }

    /// YOLOv3 on the paper's Darknet-53 (fresh weights, batch norm training): three scales of
    /// predictions, and a training step that lowers the loss of its batch.
    #[test]
    fn one_training_step_on_darknet53() {
        type B = Autodiff<Flex>;
        let device = Default::default();
        let bb = autodl_nets::backboned::backbone::<B>("darknet53", 3, true, &device).unwrap();
        assert_eq!(bb.name(), "darknet53");
        let mut net = YoloV3::new(bb, 2, &Params::new(), &device);
        let image = Tensor::<B, 4>::random(
            [2, 3, 64, 64],
            burn::tensor::Distribution::Uniform(-1.0, 1.0),
            &device,
        );
        let dims: Vec<[usize; 4]> = net
            .forward(image.clone())
            .iter()
            .map(|o| o.dims())
            .collect();
        assert_eq!(dims, vec![[2, 21, 8, 8], [2, 21, 4, 4], [2, 21, 2, 2]]);
        let head = YoloHead {
            anchors: vec![
                [8.0, 8.0],
                [12.0, 12.0],
                [16.0, 16.0],
                [20.0, 20.0],
                [24.0, 24.0],
                [28.0, 28.0],
                [32.0, 32.0],
                [40.0, 40.0],
                [48.0, 48.0],
            ],
            ignore_iou: 0.5,
            box_loss: YoloBoxLoss::Giou,
            box_weight: 0.05,
            noobj_weight: 1.0,
            class_weight: 0.5,
        };
        let targets = vec![
            vec![([8.0, 10.0, 30.0, 28.0], 1)],
            vec![([40.0, 36.0, 60.0, 58.0], 0)],
        ];
        let mut optim = AdamConfig::new().init();
        let mut losses = Vec::new();
        for _ in 0..2 {
            let loss = net.loss(&head, image.clone(), &targets);
            losses.push(scalar(loss.clone()));
            let grads = GradientsParams::from_grads(loss.backward(), &net);
            net = optim.step(1e-4, net, grads);
        }
        assert!(losses.iter().all(|l| l.is_finite()), "{losses:?}");
        assert!(losses[1] < losses[0], "{losses:?}");
    }

    /// The loss and the decoding agree: a network that fits one image's objects finds them
    /// there (IoU above 0.8: after 100 steps the sides are within a pixel or two, and the
    /// thread count of the run changes the last digits of training).
    #[test]
    fn fitting_one_image_finds_its_objects() {
        type B = Autodiff<Flex>;
        let device = Default::default();
        let bb = autodl_nets::backboned::backbone::<B>("efficientnet-lite0", 3, true, &device)
            .unwrap()
            .with_frozen_bn(true)
            .with_frozen_stem();
        let mut net = YoloV3::new(bb, 2, &Params::new(), &device);
        let objects = vec![
            ([7.0f32, 11.0, 25.0, 29.0], 1usize),
            ([43.0, 41.0, 55.0, 53.0], 0),
        ];
        let mut image = vec![-1.0f32; 3 * 64 * 64];
        for (b, class) in &objects {
            for c in 0..3 {
                for y in b[1] as usize..b[3] as usize {
                    for x in b[0] as usize..b[2] as usize {
                        image[c * 4096 + y * 64 + x] = if c == *class { 1.0 } else { 0.5 };
                    }
                }
            }
        }
        let head = YoloHead {
            anchors: vec![
                [10.0, 10.0],
                [12.0, 12.0],
                [14.0, 14.0],
                [18.0, 18.0],
                [20.0, 20.0],
                [22.0, 22.0],
                [30.0, 30.0],
                [40.0, 40.0],
                [50.0, 50.0],
            ],
            ignore_iou: 0.5,
            box_loss: YoloBoxLoss::Giou,
            box_weight: 0.05,
            noobj_weight: 1.0,
            class_weight: 0.5,
        };
        let targets = vec![objects.clone()];
        let mut optim = AdamConfig::new().init();
        let batch = TensorData::new(image, [1, 3, 64, 64]);
        for _ in 0..100 {
            let loss = net.loss(&head, Tensor::from_data(batch.clone(), &device), &targets);
            let grads = GradientsParams::from_grads(loss.backward(), &net);
            net = optim.step(2e-3, net, grads);
        }
        let window = Tensor::<Flex, 4>::from_data(batch, &device);
        let found = net
            .valid()
            .detect(&head, window, (64, 64), &[0.5], Some(&objects))
            .unwrap();
        assert!(found.loss.unwrap() < 0.1, "{:?}", found.loss);
        let best: Vec<_> = found.boxes[0].iter().filter(|b| b.score > 0.5).collect();
        assert_eq!(best.len(), 2, "{:?}", found.boxes[0]);
        for (b, class) in &objects {
            assert!(
                best.iter()
                    .any(|d| d.class == *class && overlap(&d.bbox, b) > 0.8),
                "{b:?} not found in {best:?}"
            );
        }
    }
}
