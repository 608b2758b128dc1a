//! The network API of the anchor-head detectors: what a family's module returns for a batch
//! ([`DetOutput`]), the trait it implements ([`DetNet`]), and what the family tells the loop
//! about its anchors, matching and losses ([`DetOptions`]).

use autodl_api::Params;
use autodl_detection::{AnchorConfig, BoxCoder, MatchConfig};
use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

/// What a detector's forward pass returns.
#[derive(Debug, Clone)]
pub struct DetOutput<B: Backend> {
    /// Class logits `[N, anchors, K]`: `K` = classes for sigmoid heads, classes + 1 (background
    /// first) for softmax heads.
    pub logits: Tensor<B, 3>,
    /// Box deltas `[N, anchors, 4]` for the [`BoxCoder`].
    pub deltas: Tensor<B, 3>,
    /// `[height, width]` of each pyramid level, finest first, for anchor generation.
    pub levels: Vec<[usize; 2]>,
}

/// A head's `[N, A*K, H, W]` output as `[N, H*W*A, K]`: location-major, then anchor, the order
/// [`AnchorConfig::generate`] lists anchors in.
pub fn per_anchor<B: Backend>(t: Tensor<B, 4>, k: usize) -> Tensor<B, 3> {
    let [n, ak, h, w] = t.dims();
    t.permute([0, 2, 3, 1])
        .reshape([n, h * w * ak / k.max(1), k])
}

/// A detector: per-anchor logits and deltas for a batch whose sides are multiples of 32.
pub trait DetNet<B: Backend>: Module<B> {
    /// Runs the network.
    fn forward(&self, x: Tensor<B, 4>) -> DetOutput<B>;
}

/// The classification loss of a family.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ClassLoss {
    /// Sigmoid focal loss over every non-ignored anchor (RetinaNet); logits have one column
    /// per class.
    Focal {
        /// Weight of positives.
        alpha: f32,
        /// Focusing exponent.
        gamma: f32,
    },
    /// Softmax cross-entropy on positives and the hardest negatives (SSD); logits have a
    /// background column first.
    HardNegative {
        /// Negatives kept per positive.
        ratio: usize,
    },
}

/// The box-regression loss of a family.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BoxLoss {
    /// Smooth-L1 on encoded deltas.
    SmoothL1 {
        /// Where it turns from quadratic to linear.
        beta: f32,
    },
    /// Generalised IoU on decoded boxes.
    Giou,
}

/// What a detector family tells the loop about its network.
#[derive(Debug, Clone)]
pub struct DetOptions {
    /// Stride of each pyramid level the head predicts on, finest first.
    pub strides: Vec<usize>,
    /// Anchor side multipliers at each location.
    pub anchor_scales: Vec<f32>,
    /// Anchor height-to-width ratios at each location.
    pub anchor_ratios: Vec<f32>,
    /// Anchor-to-object assignment.
    pub matching: MatchConfig,
    /// Classification loss.
    pub class_loss: ClassLoss,
    /// Box loss.
    pub box_loss: BoxLoss,
    /// Box coder.
    pub coder: BoxCoder,
    /// Learning rate when the budget is too small for the finder.
    pub default_lr: f64,
    /// Training tile side when the spec gives none.
    pub default_tile: u32,
    /// Family parameters recorded in `model.json` (the backbone, for one).
    pub params: Params,
}

impl DetOptions {
    /// Anchors per location, which the head's output channels depend on.
    pub fn anchors_per_location(&self) -> usize {
        self.anchor_scales.len() * self.anchor_ratios.len()
    }

    /// Whether logits carry a background column.
    pub fn background_first(&self) -> bool {
        matches!(self.class_loss, ClassLoss::HardNegative { .. })
    }

    /// Anchors with base side `scale * stride` on each level.
    pub fn anchor_config(&self, scale: f32) -> AnchorConfig {
        AnchorConfig {
            strides: self.strides.clone(),
            sizes: self.strides.iter().map(|&s| s as f32 * scale).collect(),
            scales: self.anchor_scales.clone(),
            ratios: self.anchor_ratios.clone(),
        }
    }
}
