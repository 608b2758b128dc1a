//! FCOS anchor-free object detection (Tian et al., 2019) on a shared backbone: a feature
//! pyramid over the backbone's stride 8, 16 and 32 features plus a stride-64 level,
//! classification and box towers with group norm shared by every level, per-location sigmoid
//! focal loss, box regression as the distances `(l, t, r, b)` from a location to the four
//! sides (`stride * exp(s * x)` with a learned scale `s` per level) under an IoU or GIoU loss,
//! and centre-ness (binary cross-entropy). Locations are assigned to objects by the paper's
//! size range per level, scaled to our tiles and objects (see [`assign`]), optionally with
//! centre sampling. Inference scores `sqrt(class probability * centre-ness)`, keeps the best
//! per level, decodes and applies NMS. Any number of input bands and classes.
//! [`FcosFamily`] is the plugin that registers it; ArcGIS has no FCOS model, so packages name
//! it `fcos`.

pub mod assign;
mod head;
mod model;

use autodl_api::{Dimension, ParamDecl, ParamKind, Params};
use autodl_backbones::Backbone;
use burn::tensor::backend::Backend;

pub use assign::{Assigner, Level, Location, centreness};
pub use head::{CENTRE_RADIUS, FcosBoxLoss, FcosHead, decode};
pub use model::{Fcos, FcosOutput, STRIDES};

autodl_nets::detector_family!(
    /// The FCOS network family.
    FcosFamily, "fcos", Fcos, build, head = FcosHead, params = params()
);

/// FCOS's own parameters: its box loss, assignment and tower size.
fn params() -> Vec<ParamDecl> {
    vec![
        ParamDecl::fixed(
            "box-loss",
            "box regression loss: `iou` (-ln IoU, the paper's) or `giou` (1 - GIoU)",
            ParamKind::Choice {
                options: &["iou", "giou"],
                default: "giou",
            },
        )
        .tuned(Dimension::Choice {
            options: vec!["iou".into(), "giou".into()],
        }),
        ParamDecl::fixed(
            "centre-sampling",
            "count a location inside a box as positive only within 1.5 strides of its centre",
            ParamKind::Flag { default: true },
        )
        .tuned(Dimension::Choice {
            options: vec!["true".into(), "false".into()],
        }),
        ParamDecl::fixed(
            "range-scale",
            "where the size ranges of adjacent levels meet, in strides of the finer level (the paper's 8 is for 800 px images)",
            ParamKind::Number {
                min: 1.0,
                max: 16.0,
                default: 2.5,
            },
        )
        .tuned(Dimension::Uniform {
            low: 1.5,
            high: 5.0,
        }),
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
            "convolutions in each tower before its output layers",
            ParamKind::Integer {
                min: 0,
                max: 4,
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
) -> Fcos<B> {
    Fcos::new(backbone, classes, params, device)
}
