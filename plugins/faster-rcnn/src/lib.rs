//! Faster R-CNN (Ren et al., 2015) with a feature pyramid (Lin et al., 2017) on a shared
//! backbone: an FPN over the backbone's stride 8, 16 and 32 features plus a max-pooled
//! stride-64 level; a region proposal network shared by the levels (a 3x3 convolution, then
//! objectness and four deltas for each of three anchor shapes, one anchor size per level)
//! trained on 256 sampled anchors per image; proposals decoded, clipped, cut to the best per
//! level, suppressed at IoU 0.7 and cut again; a box head of two fully connected layers over
//! 7 x 7 RoIAlign features from the level the region's size picks, trained on sampled regions
//! (the objects added, a quarter foreground) with softmax cross-entropy over the classes and
//! background and class-specific smooth-L1 deltas. Inference decodes each class's box per
//! proposal and applies class-wise NMS. Any number of input bands and classes.
//! [`FasterRcnnFamily`] is the plugin that registers it; ArcGIS calls it `FasterRCNN`.
//!
//! The host-side steps (anchor and region sampling, proposals, level choice) are in
//! [`sample`], unit-tested on hand-computed cases; `examples/rpn_recall.rs` measures the
//! recall of a trained model's proposals.

mod head;
mod model;
pub mod sample;

use autodl_api::{Dimension, ParamDecl, ParamKind, Params};
use autodl_backbones::Backbone;
use burn::tensor::backend::Backend;

pub use head::{ANCHOR_SCALE, FasterRcnnHead, decode};
pub use model::{FasterRcnn, POOL, POOLED_LEVELS, RATIOS, RpnOutput, STRIDES};

autodl_nets::detector_family!(
    /// The Faster R-CNN network family.
    FasterRcnnFamily, "faster-rcnn", FasterRcnn, build, head = FasterRcnnHead, params = params(), arcgis = "FasterRCNN"
);

/// A proposal count the tuner searches over `low..=high`.
fn top_n(name: &'static str, doc: &'static str, default: i64, low: f64, high: f64) -> ParamDecl {
    ParamDecl::fixed(
        name,
        doc,
        ParamKind::Integer {
            min: 10,
            max: 5000,
            default,
        },
    )
    .tuned(Dimension::Uniform { low, high })
}

/// Faster R-CNN's own parameters: proposal counts (ArcGIS's `rpn_pre_nms_top_n_train` and
/// the like, scaled down from torchvision's 2000/2000 and 1000/1000 for 256 px tiles on a
/// CPU), regions per image and layer widths.
fn params() -> Vec<ParamDecl> {
    vec![
        top_n(
            "rpn-pre-nms-top-n-train",
            "proposals per pyramid level kept by objectness before NMS in training",
            1000,
            300.0,
            2000.0,
        ),
        top_n(
            "rpn-post-nms-top-n-train",
            "proposals per image kept after NMS in training",
            500,
            100.0,
            1000.0,
        ),
        top_n(
            "rpn-pre-nms-top-n-test",
            "proposals per pyramid level kept by objectness before NMS in inference",
            600,
            200.0,
            1000.0,
        ),
        top_n(
            "rpn-post-nms-top-n-test",
            "proposals per image kept after NMS in inference",
            300,
            100.0,
            1000.0,
        ),
        ParamDecl::fixed(
            "rois-per-image",
            "regions per image the box head learns from, at most a quarter foreground",
            ParamKind::Integer {
                min: 16,
                max: 512,
                default: 128,
            },
        )
        .tuned(Dimension::Uniform {
            low: 64.0,
            high: 256.0,
        }),
        ParamDecl::fixed(
            "fpn-channels",
            "channels of the feature pyramid and the region proposal network",
            ParamKind::Integer {
                min: 16,
                max: 256,
                default: 64,
            },
        ),
        ParamDecl::fixed(
            "fc-channels",
            "width of the box head's two fully connected layers (the paper's 1024)",
            ParamKind::Integer {
                min: 32,
                max: 1024,
                default: 256,
            },
        ),
    ]
}

fn build<B: Backend>(
    backbone: Backbone<B>,
    classes: usize,
    params: &Params,
    device: &B::Device,
) -> FasterRcnn<B> {
    FasterRcnn::new(backbone, classes, params, device)
}
