//! MobileNetV2 as torchvision builds it, with torchvision's parameter names.

use crate::layers::{Pad, TORCH_BN};
use crate::mbconv::{NetSpec, Stage};

const fn stage(expand: usize, output: usize, repeats: usize, stride: usize) -> Stage {
    Stage {
        expand,
        kernel: 3,
        stride,
        output,
        repeats,
    }
}

/// torchvision's `inverted_residual_setting` (t, c, n, s) at width 1.0.
pub(crate) const SPEC: NetSpec = NetSpec {
    stem: 32,
    stages: &[
        stage(1, 16, 1, 1),
        stage(6, 24, 2, 2),
        stage(6, 32, 3, 2),
        stage(6, 64, 4, 2),
        stage(6, 96, 3, 1),
        stage(6, 160, 3, 2),
        stage(6, 320, 1, 1),
    ],
    head: 1280,
    bn: TORCH_BN,
    pad: Pad::Symmetric,
    // Last block at strides 4 (24 ch), 8 (32), 16 (96) and 32 (320). The 1x1 convolution to
    // 1280 channels (`features.18`) belongs to the classifier head here.
    taps: [2, 5, 12, 16],
};

/// (file prefix, module prefix) pairs from torchvision's names to this module's.
///
/// torchvision nests everything in `features` (`features.0` the stem, `features.1..=17` the
/// blocks, `features.18` the head convolution) and numbers the layers inside a block, so the
/// numbering shifts by one when a block has no expansion.
pub(crate) fn name_map() -> Vec<(String, String)> {
    let mut map = vec![
        ("features.0.0.".to_owned(), "stem.conv.".to_owned()),
        ("features.0.1.".to_owned(), "stem.bn.".to_owned()),
    ];
    for (b, (_, _, expand, _, _)) in SPEC.blocks().into_iter().enumerate() {
        let from = format!("features.{}.conv.", b + 1);
        let to = format!("blocks.{b}.");
        let layers: &[(&str, &str)] = if expand == 1 {
            &[
                ("0.0.", "dw.conv."),
                ("0.1.", "dw.bn."),
                ("1.", "project.conv."),
                ("2.", "project.bn."),
            ]
        } else {
            &[
                ("0.0.", "expand.conv."),
                ("0.1.", "expand.bn."),
                ("1.0.", "dw.conv."),
                ("1.1.", "dw.bn."),
                ("2.", "project.conv."),
                ("3.", "project.bn."),
            ]
        };
        for (f, t) in layers {
            map.push((format!("{from}{f}"), format!("{to}{t}")));
        }
    }
    let last = SPEC.blocks().len() + 1;
    map.push((format!("features.{last}.0."), "head.conv.conv.".to_owned()));
    map.push((format!("features.{last}.1."), "head.conv.bn.".to_owned()));
    map.push(("classifier.1.".to_owned(), "head.fc.".to_owned()));
    map
}
