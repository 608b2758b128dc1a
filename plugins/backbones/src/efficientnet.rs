//! EfficientNet-Lite0 (no squeeze-excitation, ReLU6, fixed 32-channel stem and 1280-channel
//! head) with the efficientnet_pytorch parameter names of the converted TF checkpoints.
//!
//! Its convolutions use TensorFlow "SAME" padding, which is asymmetric for stride 2 on
//! even-sized inputs (one extra row and column at the bottom and right); see
//! [`Pad::TfSame`](crate::layers::Pad). Batch norm uses epsilon 1e-3 and TF's momentum 0.99
//! (0.01 in PyTorch's and Burn's convention). Inputs are expected as `(x - 127) / 128` for
//! 8-bit pixels. Drop-connect (stochastic depth) is not implemented.

use crate::layers::{BnSpec, Pad};
use crate::mbconv::{NetSpec, Stage};

const fn stage(
    expand: usize,
    kernel: usize,
    stride: usize,
    output: usize,
    repeats: usize,
) -> Stage {
    Stage {
        expand,
        kernel,
        stride,
        output,
        repeats,
    }
}

/// The EfficientNet-B0 block table at width and depth 1.0, as Lite0 uses it.
pub(crate) const SPEC: NetSpec = NetSpec {
    stem: 32,
    stages: &[
        stage(1, 3, 1, 16, 1),
        stage(6, 3, 2, 24, 2),
        stage(6, 5, 2, 40, 2),
        stage(6, 3, 2, 80, 3),
        stage(6, 5, 1, 112, 3),
        stage(6, 5, 2, 192, 4),
        stage(6, 3, 1, 320, 1),
    ],
    head: 1280,
    bn: BnSpec {
        epsilon: 1e-3,
        momentum: 0.01,
    },
    pad: Pad::TfSame,
    // Last block at strides 4 (24 ch), 8 (40), 16 (112) and 32 (320).
    taps: [2, 4, 10, 15],
};

/// (file prefix, module prefix) pairs from efficientnet_pytorch's names to this module's.
pub(crate) fn name_map() -> Vec<(String, String)> {
    let mut map = vec![
        ("_conv_stem.".to_owned(), "stem.conv.".to_owned()),
        ("_bn0.".to_owned(), "stem.bn.".to_owned()),
        ("_conv_head.".to_owned(), "head.conv.conv.".to_owned()),
        ("_bn1.".to_owned(), "head.conv.bn.".to_owned()),
        ("_fc.".to_owned(), "head.fc.".to_owned()),
    ];
    for b in 0..SPEC.blocks().len() {
        for (f, t) in [
            ("_expand_conv.", "expand.conv."),
            ("_bn0.", "expand.bn."),
            ("_depthwise_conv.", "dw.conv."),
            ("_bn1.", "dw.bn."),
            ("_project_conv.", "project.conv."),
            ("_bn2.", "project.bn."),
        ] {
            map.push((format!("_blocks.{b}.{f}"), format!("blocks.{b}.{t}")));
        }
    }
    map
}
