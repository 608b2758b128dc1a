//! YOLOv3 object detection (Redmon & Farhadi, 2018) on a shared backbone: three detection
//! scales (strides 8, 16 and 32) fed by the paper's top-down neck, three priors per scale
//! clustered from the training boxes by k-means with the IoU distance ([`kmeans`], recorded in
//! `model.json`), each object assigned to the one prior that fits it best at the cell of its
//! centre ([`assign`]), sigmoid x/y offsets and exp-scaled priors for the box, and
//! Ultralytics' YOLOv3 loss ([`detector::yolo_loss`]): the paper's box loss by default
//! (sigmoid offsets and log sizes; `box-loss = "giou"` takes Ultralytics' `1 - GIoU`, which
//! trained half as well here), binary cross-entropy for objectness (its target the GIoU of the
//! predicted box, a mean per scale, well-fitting unassigned priors ignored) and for classes; scores are objectness times class
//! probability ([`detector`]). Any number of input bands and
//! classes. [`YoloV3Family`] is the plugin that registers it; its `.emd` names it `YOLOv3`, as
//! ArcGIS does.
//!
//! The backbone is one of the shared ones (`autodl_nets::backboned::BACKBONES`), the paper's
//! Darknet-53 among them (`--backbone darknet53`; it has no pretrained weights, so the default
//! stays the pretrained EfficientNet-Lite0).

pub mod assign;
pub mod detector;
pub mod kmeans;
mod model;

use autodl_api::{Dimension, ParamDecl, ParamKind, Params};
use autodl_backbones::Backbone;
use burn::tensor::backend::Backend;

pub use detector::{YoloBoxLoss, YoloHead};
pub use model::YoloV3;

autodl_nets::detector_family!(
    /// The YOLOv3 network family.
    YoloV3Family, "yolov3", YoloV3, build, head = YoloHead, params = params(),
    arcgis = "YOLOv3"
);

/// YOLOv3's own parameters: its box loss, the ignore threshold and loss weights, and the
/// neck's size.
fn params() -> Vec<ParamDecl> {
    vec![
        ParamDecl::fixed(
            "box-loss",
            "box regression loss: `darknet` (the paper's: sigmoid offsets and log sizes), `giou` (1 - GIoU of the decoded box, Ultralytics') or `smooth-l1` of the paper's targets",
            // The paper's loss by measurement: alone on trees_voc for 10 minutes, AP50 0.48
            // (COCO AP 0.130, 69 epochs) against GIoU's 0.25 (0.067, early stop at 23).
            ParamKind::Choice {
                options: &["giou", "darknet", "smooth-l1"],
                default: "darknet",
            },
        )
        .tuned(Dimension::Choice {
            options: vec!["giou".into(), "darknet".into()],
        }),
        ParamDecl::fixed(
            "ignore-iou",
            "IoU with an object above which an unassigned prior is left out of the objectness loss",
            ParamKind::Number {
                min: 0.0,
                max: 1.0,
                default: 0.5,
            },
        )
        .tuned(Dimension::Uniform {
            low: 0.3,
            high: 0.7,
        }),
        ParamDecl::fixed(
            "box-weight",
            "weight of the box loss, a mean over the assigned predictions (objectness, a mean over each scale's predictions, weighs 1)",
            ParamKind::Number {
                min: 0.0,
                max: 100.0,
                default: 0.05,
            },
        )
        .tuned(Dimension::LogUniform {
            low: 0.02,
            high: 0.2,
        }),
        ParamDecl::fixed(
            "noobj-weight",
            "weight of the objectness loss of predictions without an object, relative to those with one",
            ParamKind::Number {
                min: 0.0,
                max: 100.0,
                default: 1.0,
            },
        )
        .tuned(Dimension::LogUniform {
            low: 0.25,
            high: 2.0,
        }),
        ParamDecl::fixed(
            "class-weight",
            "weight of the class loss, a mean over the assigned predictions and the classes",
            ParamKind::Number {
                min: 0.0,
                max: 100.0,
                default: 0.5,
            },
        )
        .tuned(Dimension::LogUniform {
            low: 0.2,
            high: 2.0,
        }),
        ParamDecl::fixed(
            "neck-channels",
            "width of the stride-8 neck block, doubled at each coarser scale (the paper's is 128)",
            ParamKind::Integer {
                min: 8,
                max: 256,
                default: 32,
            },
        ),
        ParamDecl::fixed(
            "neck-depth",
            "pairs of 3x3 and 1x1 convolutions after each neck block's first layer (the paper's is 2)",
            ParamKind::Integer {
                min: 0,
                max: 3,
                default: 2,
            },
        ),
    ]
}

fn build<B: Backend>(
    backbone: Backbone<B>,
    classes: usize,
    params: &Params,
    device: &B::Device,
) -> YoloV3<B> {
    YoloV3::new(backbone, classes, params, device)
}
