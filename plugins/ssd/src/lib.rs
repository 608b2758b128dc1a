//! SSD object detection (Liu et al., 2016) on a shared backbone: per-level convolutional
//! predictors (behind a 1x1 group-norm adapter) on the backbone's stride 8, 16 and 32 features
//! plus a stride-64 extra layer,
//! softmax classification with a background class, hard-negative mining at 3 negatives per
//! positive, and smooth-L1 box regression with SSD's variances. Any number of input bands and
//! classes. [`SsdFamily`] is the plugin that registers it.

mod model;

use autodl_api::Params;
use autodl_backbones::Backbone;
use autodl_detection::{BoxCoder, MatchConfig};
use autodl_train::det::{BoxLoss, ClassLoss, DetOptions};
use burn::tensor::backend::Backend;

pub use model::Ssd;

autodl_nets::detector_family!(
    /// The SSD network family.
    SsdFamily, "ssd", Ssd, build, options = options, arcgis = "SingleShotDetector"
);

/// SSD's anchors (two sizes and three shapes per location), matching and losses.
pub fn options() -> DetOptions {
    DetOptions {
        strides: model::STRIDES.to_vec(),
        anchor_scales: vec![1.0, std::f32::consts::SQRT_2],
        anchor_ratios: vec![0.5, 1.0, 2.0],
        matching: MatchConfig::SSD,
        class_loss: ClassLoss::HardNegative { ratio: 3 },
        box_loss: BoxLoss::SmoothL1 { beta: 1.0 },
        // SSD's variances 0.1 and 0.2, as weights.
        coder: BoxCoder {
            weights: [10.0, 10.0, 5.0, 5.0],
        },
        default_lr: 1e-3,
        default_tile: 256,
        params: Params::new(),
    }
}

fn build<B: Backend>(
    backbone: Backbone<B>,
    classes: usize,
    _: &Params,
    device: &B::Device,
) -> Ssd<B> {
    Ssd::new(backbone, classes, options().anchors_per_location(), device)
}
