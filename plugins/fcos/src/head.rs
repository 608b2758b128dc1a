//! FCOS as a [`Detector`]: the per-trial head (assignment, box loss), the loss of a batch, and
//! detections from one window.

use autodl_api::{Params, ParamsExt, PluginError, Progress, TrialSpec};
use autodl_detection::loss::{binary_cross_entropy, giou_loss, iou_loss, sigmoid_focal_loss};
use autodl_detection::{Box4, PostprocessConfig, ScoredBox, clip_and_nms};
use autodl_nets::backboned::DetectorHead;
use autodl_train::det::{DetData, DetTraining, Detected, Detector, Targets};
use autodl_train::fit::scalar;
use autodl_train::options::param_error;
use burn::tensor::activation::sigmoid;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use rayon::prelude::*;

use crate::assign::{Assigner, Location, centreness};
use crate::model::{Fcos, FcosOutput, STRIDES};

/// Centre-sampling radius in strides when `centre-sampling` is on (FCOS's later versions).
pub const CENTRE_RADIUS: f32 = 1.5;

/// The focal loss's weight of positives and focusing exponent (the paper's).
const FOCAL: (f32, f32) = (0.25, 2.0);

/// FCOS's box regression loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FcosBoxLoss {
    /// `-ln IoU`, the paper's.
    Iou,
    /// `1 - GIoU`, the choice of FCOS's later versions.
    Giou,
}

/// What FCOS needs besides its weights: the assignment and the box loss, chosen per trial
/// from the family's parameters and read back from `model.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct FcosHead {
    /// Locations, level ranges and centre sampling.
    pub assigner: Assigner,
    /// Box regression loss.
    pub box_loss: FcosBoxLoss,
}

impl FcosHead {
    /// The head the checked parameters `box-loss`, `centre-sampling` and `range-scale` give.
    pub fn from_params(params: &Params) -> Result<Self, PluginError> {
        let box_loss = match params.text("box-loss").map_err(param_error)? {
            "iou" => FcosBoxLoss::Iou,
            "giou" => FcosBoxLoss::Giou,
            other => {
                return Err(PluginError::Training(format!(
                    "unknown box-loss `{other}`: use iou or giou"
                )));
            }
        };
        let radius = params
            .flag("centre-sampling")
            .map_err(param_error)?
            .then_some(CENTRE_RADIUS);
        let scale = params.number("range-scale").map_err(param_error)? as f32;
        Ok(FcosHead {
            assigner: Assigner::new(&STRIDES, scale, radius),
            box_loss,
        })
    }

    /// The level ranges, for the log: `0-20, 20-40, 40-80, 80+ px`.
    pub fn describe(&self) -> String {
        let ranges: Vec<String> = self
            .assigner
            .levels
            .iter()
            .map(|l| {
                if l.high.is_finite() {
                    format!("{}-{}", l.low, l.high)
                } else {
                    format!("{}+", l.low)
                }
            })
            .collect();
        format!(
            "level ranges {} px (largest distance to a box side){}",
            ranges.join(", "),
            if self.assigner.centre_radius.is_some() {
                ", centre sampling"
            } else {
                ""
            }
        )
    }
}

impl DetectorHead for FcosHead {
    fn training() -> DetTraining {
        DetTraining {
            default_lr: 1e-3,
            default_tile: 256,
        }
    }

    fn for_trial(
        spec: &TrialSpec,
        _: &DetData,
        tile: usize,
        progress: &dyn Progress,
    ) -> Result<Self, PluginError> {
        let head = FcosHead::from_params(&spec.params)?;
        progress.message(&format!("training tiles {tile} px, {}", head.describe()));
        Ok(head)
    }

    fn params(&self) -> Params {
        // Everything the head depends on is a declared parameter, recorded with the trial's.
        Params::new()
    }

    fn from_params(params: &Params) -> Result<Self, PluginError> {
        FcosHead::from_params(params)
    }
}

/// Per location of a batch: the assignment's targets as host buffers.
struct LocationTargets {
    /// One-hot classes `[N * L * K]`.
    one_hot: Vec<f32>,
    /// 1 on positive locations `[N * L]`.
    positive: Vec<f32>,
    /// Centre-ness targets `[N * L]` (0 on negatives).
    centreness: Vec<f32>,
    /// The assigned boxes `[N * L * 4]` (0 on negatives).
    boxes: Vec<f32>,
}

/// The assignment of every image's objects to `locations`, as loss targets for `k` classes.
fn location_targets(
    assigner: &Assigner,
    locations: &[Location],
    targets: &[Targets],
    k: usize,
) -> LocationTargets {
    let l = locations.len();
    let n = targets.len();
    let assigned: Vec<Vec<Option<usize>>> = targets
        .par_iter()
        .map(|t| {
            let objects: Vec<Box4> = t.iter().map(|(b, _)| *b).collect();
            assigner.assign(locations, &objects)
        })
        .collect();
    let mut out = LocationTargets {
        one_hot: vec![0.0; n * l * k],
        positive: vec![0.0; n * l],
        centreness: vec![0.0; n * l],
        boxes: vec![0.0; n * l * 4],
    };
    for (i, per_location) in assigned.iter().enumerate() {
        for (j, g) in per_location.iter().enumerate() {
            let Some(g) = *g else { continue };
            let (b, class) = targets[i][g];
            let at = i * l + j;
            if class < k {
                out.one_hot[at * k + class] = 1.0;
            }
            out.positive[at] = 1.0;
            out.centreness[at] = centreness(&locations[j], &b);
            out.boxes[4 * at..4 * at + 4].copy_from_slice(&b);
        }
    }
    out
}

/// FCOS's loss of a batch: focal loss over every location and centre-ness cross-entropy over
/// the positives, each divided by the number of positives, plus the box loss over the
/// positives weighted by their centre-ness targets and divided by their sum (FCOS's later
/// versions; it counts the well-centred locations most).
fn fcos_loss<B: Backend>(
    out: FcosOutput<B>,
    targets: &[Targets],
    head: &FcosHead,
    device: &B::Device,
) -> Tensor<B, 1> {
    let locations = head.assigner.locations(&out.levels);
    let [n, l, k] = out.logits.dims();
    debug_assert_eq!(l, locations.len(), "the head's location count");
    let t = location_targets(&head.assigner, &locations, targets, k);
    let npos = t.positive.iter().sum::<f32>().max(1.0);
    let ctr_sum = t.centreness.iter().sum::<f32>();
    let ctr_sum = if ctr_sum > 0.0 { ctr_sum } else { 1.0 };
    let one_hot = Tensor::<B, 3>::from_data(TensorData::new(t.one_hot, [n, l, k]), device);
    let positive = Tensor::<B, 2>::from_data(TensorData::new(t.positive, [n, l]), device);
    let ctr_target = Tensor::<B, 2>::from_data(TensorData::new(t.centreness, [n, l]), device);
    let box_target = Tensor::<B, 3>::from_data(TensorData::new(t.boxes, [n, l, 4]), device);
    let class_loss = sigmoid_focal_loss(
        out.logits,
        one_hot,
        Tensor::ones([n, l], device),
        FOCAL.0,
        FOCAL.1,
    );
    let xy: Vec<f32> = locations.iter().flat_map(|p| [p.x, p.y]).collect();
    let xy = Tensor::<B, 3>::from_data(TensorData::new(xy, [1, l, 2]), device);
    let part = |t: &Tensor<B, 3>, i: usize| t.clone().narrow(2, i, 1);
    let d = out.distances;
    let pred = Tensor::cat(
        vec![
            part(&xy, 0) - part(&d, 0),
            part(&xy, 1) - part(&d, 1),
            part(&xy, 0) + part(&d, 2),
            part(&xy, 1) + part(&d, 3),
        ],
        2,
    );
    let box_weight = positive.clone() * ctr_target.clone();
    let box_loss = match head.box_loss {
        FcosBoxLoss::Iou => iou_loss(pred, box_target, box_weight),
        FcosBoxLoss::Giou => giou_loss(pred, box_target, box_weight),
    };
    let ctr_loss = binary_cross_entropy(out.centreness, ctr_target, positive);
    (class_loss + ctr_loss) / npos as f64 + box_loss / ctr_sum as f64
}

/// Detections of one image from FCOS's outputs as host buffers: per location, class
/// probabilities (`K` each), centre-ness probability and distances (4 each). A candidate is a
/// location and class whose probability reaches `cfg.score_threshold`; it scores
/// `sqrt(probability * centre-ness)`; each level keeps its `cfg.pre_nms_top_k` best; the
/// boxes are clipped to `size` (boxes under a pixel dropped), and class-wise NMS at
/// `cfg.nms_iou` keeps at most `cfg.max_detections`.
pub fn decode(
    probs: &[f32],
    centre: &[f32],
    distances: &[f32],
    locations: &[Location],
    k: usize,
    size: (f32, f32),
    cfg: &PostprocessConfig,
) -> Vec<ScoredBox> {
    let levels = locations.iter().map(|p| p.level + 1).max().unwrap_or(0);
    let mut per_level: Vec<Vec<(f32, usize, usize)>> = vec![Vec::new(); levels];
    for (j, (row, loc)) in probs.chunks(k.max(1)).zip(locations).enumerate() {
        for (c, &p) in row.iter().enumerate() {
            if p >= cfg.score_threshold {
                per_level[loc.level].push(((p * centre[j]).sqrt(), j, c));
            }
        }
    }
    let mut decoded = Vec::new();
    for mut candidates in per_level {
        if candidates.len() > cfg.pre_nms_top_k {
            candidates.select_nth_unstable_by(cfg.pre_nms_top_k, |x, y| {
                y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)).then(x.2.cmp(&y.2))
            });
            candidates.truncate(cfg.pre_nms_top_k);
        }
        for (score, j, c) in candidates {
            let (p, d) = (&locations[j], &distances[4 * j..4 * j + 4]);
            let b = [p.x - d[0], p.y - d[1], p.x + d[2], p.y + d[3]];
            decoded.push((b, score, c));
        }
    }
    clip_and_nms(decoded, size, cfg)
}

impl<B: Backend> Detector<B, FcosHead> for Fcos<B> {
    fn loss(&self, head: &FcosHead, images: Tensor<B, 4>, targets: &[Targets]) -> Tensor<B, 1> {
        let device = images.device();
        fcos_loss(self.forward(images), targets, head, &device)
    }

    fn detect(
        &self,
        head: &FcosHead,
        window: Tensor<B, 4>,
        region: (usize, usize),
        nms_ious: &[f32],
        targets: Option<&[(Box4, usize)]>,
    ) -> Result<Detected, PluginError> {
        let device = window.device();
        let out = self.forward(window);
        let k = out.logits.dims()[2];
        let probs: Vec<f32> = sigmoid(out.logits.clone())
            .into_data()
            .iter::<f32>()
            .collect();
        let centre: Vec<f32> = sigmoid(out.centreness.clone())
            .into_data()
            .iter::<f32>()
            .collect();
        let distances: Vec<f32> = out.distances.clone().into_data().iter::<f32>().collect();
        let locations = head.assigner.locations(&out.levels);
        if centre.len() != locations.len() || probs.len() != locations.len() * k {
            return Err(PluginError::Data(format!(
                "the network gives {} predictions for {} locations: its levels do not match its head",
                centre.len(),
                locations.len()
            )));
        }
        let loss = targets.map(|t| scalar(fcos_loss(out, &[t.to_vec()], head, &device)));
        let size = (region.0 as f32, region.1 as f32);
        let boxes = nms_ious
            .iter()
            .map(|&nms_iou| {
                let cfg = PostprocessConfig {
                    nms_iou,
                    ..PostprocessConfig::default()
                };
                decode(&probs, &centre, &distances, &locations, k, size, &cfg)
            })
            .collect();
        Ok(Detected { boxes, loss })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use autodl_api::ParamValue;

    fn params(box_loss: &str, centre: bool, scale: f64) -> Params {
        let mut p = Params::new();
        p.insert("box-loss".into(), ParamValue::Text(box_loss.into()));
        p.insert("centre-sampling".into(), ParamValue::Flag(centre));
        p.insert("range-scale".into(), ParamValue::Number(scale));
        p
    }

    #[test]
    fn the_head_reads_its_parameters_and_refuses_missing_ones() {
        let head = FcosHead::from_params(&params("iou", true, 2.5)).unwrap();
        assert_eq!(head.box_loss, FcosBoxLoss::Iou);
        assert_eq!(head.assigner.centre_radius, Some(CENTRE_RADIUS));
        assert_eq!(
            head.describe(),
            "level ranges 0-20, 20-40, 40-80, 80+ px (largest distance to a box side), centre sampling"
        );
        let head = FcosHead::from_params(&params("giou", false, 4.0)).unwrap();
        assert_eq!(head.box_loss, FcosBoxLoss::Giou);
        assert_eq!(head.assigner.levels[0].high, 32.0);
        assert!(FcosHead::from_params(&Params::new()).is_err());
    }

    #[test]
    fn targets_mark_the_assigned_locations() {
        let assigner = Assigner::new(&[8], 2.5, None);
        let locations = assigner.locations(&[[2, 2]]);
        // One 16 px box over the top-left cell's centre (4, 4) only, class 1 of 2.
        let targets = vec![vec![([0.0, 0.0, 8.0, 8.0], 1)]];
        let t = location_targets(&assigner, &locations, &targets, 2);
        assert_eq!(t.positive, vec![1.0, 0.0, 0.0, 0.0]);
        assert_eq!(t.one_hot, vec![0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
        assert_eq!(t.centreness[0], 1.0);
        assert_eq!(&t.boxes[..4], &[0.0, 0.0, 8.0, 8.0]);
    }

    #[test]
    fn decoding_scores_by_centreness_and_suppresses() {
        let assigner = Assigner::new(&[8, 16], 2.5, None);
        // Level 0 is 1 x 2 (centres (4, 4) and (12, 4)), level 1 is 1 x 1 (centre (8, 8)).
        let locations = assigner.locations(&[[1, 2], [1, 1]]);
        // One class. Location 0: box (0, 0)-(8, 8) scoring sqrt(0.9 * 0.25); location 1 is
        // below the threshold; location 2: box (0, 0)-(16, 40), clipped to the 20 x 20 region,
        // scoring sqrt(0.64 * 1).
        let probs = [0.9, 0.01, 0.64];
        let centre = [0.25, 1.0, 1.0];
        let distances = [4.0, 4.0, 4.0, 4.0, 1.0, 1.0, 1.0, 1.0, 8.0, 8.0, 8.0, 32.0];
        let cfg = PostprocessConfig::default();
        let out = decode(
            &probs,
            &centre,
            &distances,
            &locations,
            1,
            (20.0, 20.0),
            &cfg,
        );
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(out[0].bbox, [0.0, 0.0, 16.0, 20.0]);
        assert!((out[0].score - 0.8).abs() < 1e-6);
        assert_eq!(out[1].bbox, [0.0, 0.0, 8.0, 8.0]);
        assert!((out[1].score - 0.225f32.sqrt()).abs() < 1e-6);
        // The two overlap with IoU 64 / 320 = 0.2: NMS at 0.1 keeps the better one.
        let strict = PostprocessConfig {
            nms_iou: 0.1,
            ..cfg
        };
        let out = decode(
            &probs,
            &centre,
            &distances,
            &locations,
            1,
            (20.0, 20.0),
            &strict,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].bbox, [0.0, 0.0, 16.0, 20.0]);
    }
}
