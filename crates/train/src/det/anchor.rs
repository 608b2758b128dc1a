//! Anchor-head detectors (SSD, RetinaNet) as one implementation of [`Detector`]: a [`DetNet`]
//! gives per-anchor logits and box deltas, and its [`AnchorHead`] (the family's
//! [`DetOptions`] with anchors sized for the trial) matches, scores and decodes them.

use autodl_api::{ParamValue, Params, ParamsExt, PluginError, TrialSpec};
use autodl_detection::{AnchorConfig, Box4, PostprocessConfig, postprocess};
use burn::tensor::Tensor;
use burn::tensor::activation::{sigmoid, softmax};
use burn::tensor::backend::Backend;

use super::data::DetData;
use super::detector::{Detected, Detector, Targets};
use super::loss::det_loss;
use super::net::{BoxLoss, DetNet, DetOptions};
use crate::fit::scalar;
use crate::params::number_param;

/// Model parameter holding the anchor base-size multiplier.
const ANCHOR_SCALE: &str = "anchor-scale";

/// What an anchor-head network needs besides its weights: the family's options (with the
/// trial's box loss) and anchors of the trial's base size.
#[derive(Debug, Clone)]
pub struct AnchorHead {
    /// The family's anchors, matching and losses.
    pub opts: DetOptions,
    /// Anchors of base side `scale * stride` on each level.
    pub anchors: AnchorConfig,
    /// The anchor base-size multiplier.
    pub scale: f32,
}

impl AnchorHead {
    /// The head with anchors of base side `scale * stride`.
    pub fn new(opts: DetOptions, scale: f32) -> Self {
        AnchorHead {
            anchors: opts.anchor_config(scale),
            opts,
            scale,
        }
    }

    /// The head a trial trains with. Parameters read from `spec.params`: `anchor-scale` (base
    /// anchor side in strides; fitted to the training boxes when absent) and `box-loss`
    /// (`smooth-l1` or `giou`; the family's choice by default).
    pub fn for_trial(
        spec: &TrialSpec,
        data: &DetData,
        opts: &DetOptions,
    ) -> Result<Self, PluginError> {
        let scale = anchor_scale(spec, data, opts);
        let mut own = opts.clone();
        own.box_loss = match spec
            .params
            .text("box-loss")
            .map_err(crate::options::param_error)?
        {
            "default" => opts.box_loss,
            "smooth-l1" => BoxLoss::SmoothL1 { beta: 1.0 / 9.0 },
            "giou" => BoxLoss::Giou,
            other => {
                return Err(PluginError::Training(format!(
                    "unknown box-loss `{other}`: use smooth-l1 or giou"
                )));
            }
        };
        Ok(AnchorHead::new(own, scale))
    }

    /// The head of a trained model, from the parameters its `model.json` records.
    pub fn from_params(opts: DetOptions, params: &Params) -> Self {
        let scale = number_param(params, ANCHOR_SCALE, 4.0) as f32;
        AnchorHead::new(opts, scale)
    }

    /// The parameters `model.json` records for [`AnchorHead::from_params`]: the family's and
    /// the anchor scale.
    pub fn params(&self) -> Params {
        let mut params = self.opts.params.clone();
        params.insert(ANCHOR_SCALE.into(), ParamValue::Number(self.scale as f64));
        params
    }

    /// The smallest and largest anchor sides in pixels, for the log.
    pub fn side_range(&self) -> (f32, f32) {
        let sizes = &self.anchors.sizes;
        let scales = &self.opts.anchor_scales;
        (
            sizes.first().copied().unwrap_or(0.0) * scales.first().copied().unwrap_or(1.0),
            sizes.last().copied().unwrap_or(0.0) * scales.last().copied().unwrap_or(1.0),
        )
    }
}

/// The anchor base-size multiplier: the spec's `anchor-scale`, or one fitted to the training
/// boxes so that the smallest anchors match the small objects.
fn anchor_scale(spec: &TrialSpec, data: &DetData, opts: &DetOptions) -> f32 {
    match spec.params.get(ANCHOR_SCALE) {
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

impl<B: Backend, M: DetNet<B>> Detector<B, AnchorHead> for M {
    fn loss(&self, head: &AnchorHead, images: Tensor<B, 4>, targets: &[Targets]) -> Tensor<B, 1> {
        let device = images.device();
        det_loss(self.forward(images), targets, head, &device)
    }

    fn detect(
        &self,
        head: &AnchorHead,
        window: Tensor<B, 4>,
        region: (usize, usize),
        nms_ious: &[f32],
        targets: Option<&[(Box4, usize)]>,
    ) -> Result<Detected, PluginError> {
        let device = window.device();
        let out = self.forward(window);
        let k = out.logits.dims()[2];
        let background_first = head.opts.background_first();
        let p = if background_first {
            softmax(out.logits.clone(), 2)
        } else {
            sigmoid(out.logits.clone())
        };
        let probs: Vec<f32> = p.into_data().iter::<f32>().collect();
        let deltas: Vec<f32> = out.deltas.clone().into_data().iter::<f32>().collect();
        let anchors = head.anchors.generate(&out.levels);
        if probs.len() != anchors.len() * k || deltas.len() != anchors.len() * 4 {
            return Err(PluginError::Data(format!(
                "the network gives {} box predictions for {} anchors: its anchor settings do not match its weights",
                deltas.len() / 4,
                anchors.len()
            )));
        }
        let loss = targets.map(|t| scalar(det_loss(out, &[t.to_vec()], head, &device)));
        let size = (region.0 as f32, region.1 as f32);
        // Score floor, top-k, NMS, and boxes clipped to the image part of the window.
        let boxes = nms_ious
            .iter()
            .map(|&nms_iou| {
                let post = PostprocessConfig {
                    nms_iou,
                    ..PostprocessConfig::default()
                };
                postprocess(
                    &probs,
                    &deltas,
                    &anchors,
                    k,
                    background_first,
                    &head.opts.coder,
                    size,
                    &post,
                )
            })
            .collect();
        Ok(Detected { boxes, loss })
    }
}
