//! Faster R-CNN as a [`Detector`]: the per-trial head (anchor size, proposal counts, regions
//! per image), the two-stage loss of a batch, and detections from one window.

use std::sync::atomic::{AtomicU64, Ordering};

use autodl_api::{ParamValue, Params, ParamsExt, PluginError, Progress, TrialSpec};
use autodl_detection::loss::{binary_cross_entropy, smooth_l1, softmax_cross_entropy};
use autodl_detection::{
    AnchorConfig, Assignment, Box4, PostprocessConfig, ScoredBox, clip_and_nms,
};
use autodl_nets::backboned::DetectorHead;
use autodl_train::det::{DetData, DetTraining, Detected, Detector, Targets};
use autodl_train::fit::scalar;
use autodl_train::options::param_error;
use burn::tensor::activation::softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::model::{FasterRcnn, RATIOS, RpnOutput, STRIDES};
use crate::sample::{
    FOREGROUND_FRACTION, ROI_CODER, RPN_BATCH, RPN_CODER, RPN_POSITIVE_FRACTION, TopN, match_rpn,
    proposals, sample_anchors, sample_rois,
};

/// The parameter `model.json` records the anchor size in: the base anchor side of each level
/// in strides, fitted to the training boxes.
pub const ANCHOR_SCALE: &str = "anchor-scale";

/// Smooth-L1's `beta` on box deltas (torchvision's 1/9 for both stages).
const SMOOTH_L1_BETA: f32 = 1.0 / 9.0;

/// Most detections per image (torchvision's 100).
const DETECTIONS_PER_IMAGE: usize = 100;

/// What Faster R-CNN needs besides its weights: anchor size, how many proposals each stage
/// keeps in training and in inference, and how many regions per image the box head learns
/// from; chosen per trial and read back from `model.json`.
#[derive(Debug)]
pub struct FasterRcnnHead {
    /// Base anchor side of each level in strides (one size per level, three shapes).
    pub anchor_scale: f32,
    /// Proposals in training.
    pub train: TopN,
    /// Proposals in validation and prediction.
    pub test: TopN,
    /// Regions per image the box head learns from.
    pub rois_per_image: usize,
    /// Seed of the anchor and region sampling.
    seed: u64,
    /// Batches sampled so far, so that each batch draws differently but reproducibly.
    draws: AtomicU64,
}

impl FasterRcnnHead {
    /// The head the checked parameters give, with anchors of `anchor_scale` strides.
    pub fn with_scale(params: &Params, anchor_scale: f32, seed: u64) -> Result<Self, PluginError> {
        let count = |name: &str| -> Result<usize, PluginError> {
            Ok(params.number(name).map_err(param_error)?.max(1.0) as usize)
        };
        Ok(FasterRcnnHead {
            anchor_scale,
            train: TopN {
                pre_nms: count("rpn-pre-nms-top-n-train")?,
                post_nms: count("rpn-post-nms-top-n-train")?,
            },
            test: TopN {
                pre_nms: count("rpn-pre-nms-top-n-test")?,
                post_nms: count("rpn-post-nms-top-n-test")?,
            },
            rois_per_image: count("rois-per-image")?,
            seed,
            draws: AtomicU64::new(0),
        })
    }

    /// The anchors of levels of `[height, width]`, anchor-major as the network's outputs.
    pub fn anchors(&self, levels: &[[usize; 2]]) -> (Vec<Box4>, Vec<std::ops::Range<usize>>) {
        let config = AnchorConfig {
            strides: STRIDES.to_vec(),
            sizes: STRIDES
                .iter()
                .map(|&s| s as f32 * self.anchor_scale)
                .collect(),
            scales: vec![1.0],
            ratios: RATIOS.to_vec(),
        };
        let mut ranges = Vec::new();
        let mut start = 0;
        for [h, w] in levels {
            let end = start + h * w * RATIOS.len();
            ranges.push(start..end);
            start = end;
        }
        (config.generate(levels), ranges)
    }

    /// A generator for the next batch's sampling.
    fn rng(&self) -> StdRng {
        let draw = self.draws.fetch_add(1, Ordering::Relaxed);
        StdRng::seed_from_u64(self.seed ^ draw.wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }
}

/// The proposals of image `i` of a batch from the region proposal network's outputs as
/// host buffers.
fn proposals_of(
    objectness: &[f32],
    deltas: &[f32],
    anchors: &[Box4],
    ranges: &[std::ops::Range<usize>],
    i: usize,
    size: (f32, f32),
    top: TopN,
) -> Vec<(Box4, f32)> {
    let a = anchors.len();
    proposals(
        &objectness[i * a..(i + 1) * a],
        &deltas[4 * i * a..4 * (i + 1) * a],
        anchors,
        ranges,
        size,
        top,
    )
}

/// The base anchor side in strides that fits the training boxes: the anchors of the finest
/// level about the size of the 5th-percentile box, from 1 to 4 strides.
fn fitted_scale(data: &DetData) -> f32 {
    let sides: Vec<f32> = data
        .train
        .iter()
        .flat_map(|it| {
            it.boxes
                .iter()
                .map(|(b, _)| ((b[2] - b[0]) * (b[3] - b[1])).sqrt())
        })
        .collect();
    autodl_detection::anchors::fit_scale(&sides, STRIDES[0], 1.0, 4.0)
}

impl DetectorHead for FasterRcnnHead {
    fn training() -> DetTraining {
        DetTraining {
            default_lr: 1e-3,
            default_tile: 256,
        }
    }

    fn for_trial(
        spec: &TrialSpec,
        data: &DetData,
        tile: usize,
        progress: &dyn Progress,
    ) -> Result<Self, PluginError> {
        let head = FasterRcnnHead::with_scale(&spec.params, fitted_scale(data), spec.seed)?;
        let sides: Vec<String> = STRIDES
            .iter()
            .map(|&s| format!("{:.0}", s as f32 * head.anchor_scale))
            .collect();
        progress.message(&format!(
            "training tiles {tile} px, anchors {} px, proposals {}/{} in training and {}/{} in inference (before/after NMS), {} regions per image",
            sides.join(", "),
            head.train.pre_nms,
            head.train.post_nms,
            head.test.pre_nms,
            head.test.post_nms,
            head.rois_per_image
        ));
        Ok(head)
    }

    fn params(&self) -> Params {
        let mut p = Params::new();
        p.insert(
            ANCHOR_SCALE.into(),
            ParamValue::Number(self.anchor_scale as f64),
        );
        p
    }

    fn from_params(params: &Params) -> Result<Self, PluginError> {
        let scale = params.number(ANCHOR_SCALE).map_err(param_error)? as f32;
        FasterRcnnHead::with_scale(params, scale, 0)
    }
}

/// Host copies of a tensor's values.
fn host<B: Backend, const D: usize>(t: &Tensor<B, D>) -> Vec<f32> {
    t.clone().into_data().iter::<f32>().collect()
}

/// Faster R-CNN's loss of a batch of `size` (width, height) from its pyramid and region
/// proposal outputs: the region proposal network's objectness cross-entropy and smooth-L1
/// deltas over the sampled anchors, each divided by their count, plus the box head's softmax
/// cross-entropy over the sampled regions and smooth-L1 on the foreground regions' deltas of
/// their object's class, each divided by the regions' count (torchvision's normalisation).
/// Proposals are data: no gradient flows through them.
#[allow(clippy::too_many_arguments)]
fn frcnn_loss<B: Backend>(
    net: &FasterRcnn<B>,
    head: &FasterRcnnHead,
    pyramid: &[Tensor<B, 4>],
    rpn: RpnOutput<B>,
    targets: &[Targets],
    size: (f32, f32),
    mut rng: StdRng,
) -> Tensor<B, 1> {
    let device = rpn.objectness.device();
    let (anchors, ranges) = head.anchors(&rpn.levels);
    let [n, a] = rpn.objectness.dims();
    let objectness = host(&rpn.objectness);
    let deltas = host(&rpn.deltas);

    // The region proposal network's targets.
    let mut obj_target = vec![0f32; n * a];
    let mut obj_weight = vec![0f32; n * a];
    let mut box_target = vec![0f32; n * a * 4];
    let mut box_mask = vec![0f32; n * a];
    let mut sampled = 0usize;
    let mut rois: Vec<(usize, Box4)> = Vec::new();
    let mut labels: Vec<i64> = Vec::new();
    let mut roi_target: Vec<f32> = Vec::new();
    let mut fg: Vec<f32> = Vec::new();
    let k = net.classes();
    let mut class_mask: Vec<f32> = Vec::new();
    for (i, t) in targets.iter().enumerate().take(n) {
        let objects: Vec<Box4> = t.iter().map(|(b, _)| *b).collect();
        let assignments = match_rpn(&anchors, &objects);
        let (pos, neg) = sample_anchors(&assignments, RPN_BATCH, RPN_POSITIVE_FRACTION, &mut rng);
        sampled += pos.len() + neg.len();
        for &(j, g) in &pos {
            let at = i * a + j;
            obj_target[at] = 1.0;
            obj_weight[at] = 1.0;
            box_mask[at] = 1.0;
            box_target[4 * at..4 * at + 4]
                .copy_from_slice(&RPN_CODER.encode(&anchors[j], &objects[g]));
        }
        for &j in &neg {
            obj_weight[i * a + j] = 1.0;
        }
        debug_assert!(
            pos.iter()
                .all(|&(j, _)| matches!(assignments[j], Assignment::Object(_)))
        );

        // The box head's regions.
        let found: Vec<Box4> =
            proposals_of(&objectness, &deltas, &anchors, &ranges, i, size, head.train)
                .into_iter()
                .map(|(b, _)| b)
                .collect();
        for roi in sample_rois(
            &found,
            &objects,
            head.rois_per_image,
            FOREGROUND_FRACTION,
            &mut rng,
        ) {
            rois.push((i, roi.bbox));
            let mut mask = vec![0f32; k];
            match roi.object {
                Some(g) if t[g].1 < k => {
                    let (b, class) = t[g];
                    labels.push(class as i64 + 1);
                    roi_target.extend(ROI_CODER.encode(&roi.bbox, &b));
                    fg.push(1.0);
                    mask[class] = 1.0;
                }
                _ => {
                    labels.push(0);
                    roi_target.extend([0.0; 4]);
                    fg.push(0.0);
                }
            }
            class_mask.extend(mask);
        }
    }
    let tensor2 =
        |v: Vec<f32>, d: [usize; 2]| Tensor::<B, 2>::from_data(TensorData::new(v, d), &device);
    let tensor3 =
        |v: Vec<f32>, d: [usize; 3]| Tensor::<B, 3>::from_data(TensorData::new(v, d), &device);
    let rpn_loss = (binary_cross_entropy(
        rpn.objectness,
        tensor2(obj_target, [n, a]),
        tensor2(obj_weight, [n, a]),
    ) + smooth_l1(
        rpn.deltas,
        tensor3(box_target, [n, a, 4]),
        tensor2(box_mask, [n, a]),
        SMOOTH_L1_BETA,
    )) / sampled.max(1) as f64;
    let r = rois.len();
    if r == 0 {
        return rpn_loss;
    }
    let (logits, roi_deltas) = net.box_head(pyramid, &rois);
    let labels = Tensor::<B, 2, Int>::from_data(TensorData::new(labels, [1, r]), &device);
    let class_loss = softmax_cross_entropy(logits.unsqueeze_dim::<3>(0), labels).sum();
    // Each region's deltas for its object's class (zero for background, which the mask drops).
    let chosen = (roi_deltas * tensor3(class_mask, [r, k, 1]))
        .sum_dim(1)
        .reshape([1, r, 4]);
    let box_loss = smooth_l1(
        chosen,
        tensor3(roi_target, [1, r, 4]),
        tensor2(fg, [1, r]),
        SMOOTH_L1_BETA,
    );
    rpn_loss + (class_loss + box_loss) / r as f64
}

/// Detections of one image from the box head's outputs as host buffers: per proposal,
/// probabilities over background and the `k` classes and class-specific deltas (`4 * k`).
/// A candidate is a proposal and class whose probability reaches `cfg.score_threshold`; its
/// box is the class's deltas decoded on the proposal, clipped to `size` (boxes under a pixel
/// dropped); class-wise NMS at `cfg.nms_iou` keeps at most `cfg.max_detections`.
pub fn decode(
    proposals: &[Box4],
    probs: &[f32],
    deltas: &[f32],
    k: usize,
    size: (f32, f32),
    cfg: &PostprocessConfig,
) -> Vec<ScoredBox> {
    let mut decoded = Vec::new();
    for (i, p) in proposals.iter().enumerate() {
        for c in 0..k {
            let score = probs[i * (k + 1) + c + 1];
            if score < cfg.score_threshold || !score.is_finite() {
                continue;
            }
            let at = 4 * (i * k + c);
            let d = [deltas[at], deltas[at + 1], deltas[at + 2], deltas[at + 3]];
            decoded.push((ROI_CODER.decode(p, &d), score, c));
        }
    }
    clip_and_nms(decoded, size, cfg)
}

impl<B: Backend> FasterRcnn<B> {
    /// The region proposal network's proposals (inference top-n) for a window
    /// `[1, bands, H, W]` whose image part is `region`, best first, with the pyramid they
    /// came from and the network's outputs.
    pub fn propose(
        &self,
        head: &FasterRcnnHead,
        window: Tensor<B, 4>,
        region: (usize, usize),
    ) -> (Vec<Box4>, Vec<Tensor<B, 4>>, RpnOutput<B>) {
        let pyramid = self.pyramid(window);
        let rpn = self.rpn(&pyramid);
        let (anchors, ranges) = head.anchors(&rpn.levels);
        let size = (region.0 as f32, region.1 as f32);
        let found = proposals_of(
            &host(&rpn.objectness),
            &host(&rpn.deltas),
            &anchors,
            &ranges,
            0,
            size,
            head.test,
        )
        .into_iter()
        .map(|(b, _)| b)
        .collect();
        (found, pyramid, rpn)
    }
}

impl<B: Backend> Detector<B, FasterRcnnHead> for FasterRcnn<B> {
    fn loss(
        &self,
        head: &FasterRcnnHead,
        images: Tensor<B, 4>,
        targets: &[Targets],
    ) -> Tensor<B, 1> {
        let [_, _, h, w] = images.dims();
        let pyramid = self.pyramid(images);
        let rpn = self.rpn(&pyramid);
        frcnn_loss(
            self,
            head,
            &pyramid,
            rpn,
            targets,
            (w as f32, h as f32),
            head.rng(),
        )
    }

    fn detect(
        &self,
        head: &FasterRcnnHead,
        window: Tensor<B, 4>,
        region: (usize, usize),
        nms_ious: &[f32],
        targets: Option<&[(Box4, usize)]>,
    ) -> Result<Detected, PluginError> {
        let size = (region.0 as f32, region.1 as f32);
        let (found, pyramid, rpn) = self.propose(head, window, region);
        // The validation loss samples with a fixed seed, so that it does not vary between
        // epochs for the sampling alone.
        let loss = targets.map(|t| {
            scalar(frcnn_loss(
                self,
                head,
                &pyramid,
                rpn,
                &[t.to_vec()],
                size,
                StdRng::seed_from_u64(head.seed),
            ))
        });
        if found.is_empty() {
            return Ok(Detected {
                boxes: vec![Vec::new(); nms_ious.len()],
                loss,
            });
        }
        let rois: Vec<(usize, Box4)> = found.iter().map(|b| (0, *b)).collect();
        let (logits, deltas) = self.box_head(&pyramid, &rois);
        let k = self.classes();
        let probs = host(&softmax(logits, 1));
        let deltas = host(&deltas);
        if probs.len() != found.len() * (k + 1) || deltas.len() != found.len() * k * 4 {
            return Err(PluginError::Data(format!(
                "the box head gives {} scores for {} regions of {k} classes",
                probs.len(),
                found.len()
            )));
        }
        let boxes = nms_ious
            .iter()
            .map(|&nms_iou| {
                let cfg = PostprocessConfig {
                    nms_iou,
                    max_detections: DETECTIONS_PER_IMAGE,
                    ..PostprocessConfig::default()
                };
                decode(&found, &probs, &deltas, k, size, &cfg)
            })
            .collect();
        Ok(Detected { boxes, loss })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> Params {
        let mut p = Params::new();
        for (name, v) in [
            ("rpn-pre-nms-top-n-train", 1000.0),
            ("rpn-post-nms-top-n-train", 500.0),
            ("rpn-pre-nms-top-n-test", 600.0),
            ("rpn-post-nms-top-n-test", 300.0),
            ("rois-per-image", 128.0),
        ] {
            p.insert(name.into(), ParamValue::Number(v));
        }
        p
    }

    #[test]
    fn the_head_reads_its_parameters_and_records_its_anchors() {
        let head = FasterRcnnHead::with_scale(&params(), 1.75, 3).unwrap();
        assert_eq!(
            head.train,
            TopN {
                pre_nms: 1000,
                post_nms: 500
            }
        );
        assert_eq!(head.rois_per_image, 128);
        let mut recorded = params();
        recorded.extend(head.params());
        let back = FasterRcnnHead::from_params(&recorded).unwrap();
        assert_eq!(back.anchor_scale, 1.75);
        assert_eq!(back.test, head.test);
        assert!(FasterRcnnHead::from_params(&params()).is_err());
        // One size per level, three shapes per location, anchor-major.
        let (anchors, ranges) = head.anchors(&[[2, 2], [1, 1]]);
        assert_eq!(anchors.len(), 15);
        assert_eq!(ranges, vec![0..12, 12..15]);
        let square = anchors[1];
        assert!((square[2] - square[0] - 14.0).abs() < 1e-4, "{square:?}");
        let coarse = anchors[13];
        assert!((coarse[2] - coarse[0] - 28.0).abs() < 1e-4, "{coarse:?}");
    }

    #[test]
    fn decoding_scores_each_class_and_suppresses() {
        // Two proposals, two classes; zero deltas keep the proposals' boxes.
        let proposals = [[0.0, 0.0, 10.0, 10.0], [1.0, 0.0, 11.0, 10.0]];
        let probs = [0.1, 0.8, 0.1, 0.3, 0.6, 0.1];
        let deltas = [0.0; 16];
        let cfg = PostprocessConfig::default();
        let out = decode(&proposals, &probs, &deltas, 2, (20.0, 20.0), &cfg);
        // Class 0: both, IoU 0.82 > 0.5, the better kept; class 1: both, likewise.
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!((out[0].class, out[0].score), (0, 0.8));
        assert_eq!((out[1].class, out[1].score), (1, 0.1));
        assert_eq!(out[1].bbox, [0.0, 0.0, 10.0, 10.0]);
        // At NMS 0.9 nothing is suppressed.
        let loose = PostprocessConfig {
            nms_iou: 0.9,
            ..cfg
        };
        assert_eq!(
            decode(&proposals, &probs, &deltas, 2, (20.0, 20.0), &loose).len(),
            4
        );
    }
}
