//! RetinaNet object detection (Lin et al., 2017) on a shared backbone: a feature pyramid over
//! the backbone's stride 8, 16 and 32 features plus a stride-64 level, shared classification
//! and box towers with group norm, sigmoid focal loss and smooth-L1 box regression. Any number
//! of input bands and classes. [`RetinaNetFamily`] is the plugin that registers it.

mod model;

use autodl_api::Params;
use autodl_backbones::Backbone;
use autodl_detection::{BoxCoder, MatchConfig};
use autodl_train::det::{BoxLoss, ClassLoss, DetOptions};
use burn::tensor::backend::Backend;

pub use model::RetinaNet;

autodl_nets::detector_family!(
    /// The RetinaNet network family.
    RetinaNetFamily, "retinanet", RetinaNet, build, options = options, params = params(),
    arcgis = "RetinaNet"
);

/// RetinaNet's own parameters: the size of its classification and box towers.
fn params() -> Vec<autodl_api::ParamDecl> {
    use autodl_api::{ParamDecl, ParamKind};
    vec![
        ParamDecl::fixed(
            "head-channels",
            "channels of the classification and box towers",
            ParamKind::Integer {
                min: 16,
                max: 256,
                default: 64,
            },
        ),
        ParamDecl::fixed(
            "head-depth",
            "convolutions in each tower before its output layer",
            ParamKind::Integer {
                min: 0,
                max: 4,
                default: 2,
            },
        ),
    ]
}

/// RetinaNet's anchors (three sizes and three shapes per location), matching and losses.
pub fn options() -> DetOptions {
    DetOptions {
        strides: model::STRIDES.to_vec(),
        anchor_scales: vec![1.0, 2f32.powf(1.0 / 3.0), 2f32.powf(2.0 / 3.0)],
        anchor_ratios: vec![0.5, 1.0, 2.0],
        matching: MatchConfig::RETINANET,
        class_loss: ClassLoss::Focal {
            alpha: 0.25,
            gamma: 2.0,
        },
        box_loss: BoxLoss::SmoothL1 { beta: 1.0 / 9.0 },
        coder: BoxCoder { weights: [1.0; 4] },
        default_lr: 1e-3,
        default_tile: 256,
        params: Params::new(),
    }
}

fn build<B: Backend>(
    backbone: Backbone<B>,
    classes: usize,
    params: &Params,
    device: &B::Device,
) -> RetinaNet<B> {
    RetinaNet::new(
        backbone,
        classes,
        options().anchors_per_location(),
        params,
        device,
    )
}
