//! Darknet-53, the backbone of YOLOv3 (Redmon & Farhadi, 2018; Darknet's `darknet53.cfg`).
//!
//! A 3x3 convolution of 32 channels, then five stages, each a 3x3 stride-2 convolution (64,
//! 128, 256, 512 and 1024 channels) followed by 1, 2, 8, 8 and 4 residual blocks: a 1x1
//! convolution to half the channels and a 3x3 one back, added to the block's input. Every
//! convolution is bias-free, with batch norm (PyTorch's constants) and leaky ReLU of slope 0.1.
//! The features at strides 4, 8, 16 and 32 are the outputs of stages 2 to 5. An optional
//! classifier (global average pool and a linear layer, Darknet's 1x1 convolution with bias)
//! stands for the ImageNet one.
//!
//! No pretrained weights ship: Darknet's own ones are in its binary format, not safetensors.
//! Inputs are normalised with torchvision's ImageNet mean and standard deviation, as for the
//! ResNets (Darknet itself scales pixels to [0, 1]; without pretrained weights the choice only
//! sets the input's scale).
//!
//! Tensor names in files are the module paths, with PyTorch's names for batch norm (`weight`,
//! `bias`, `running_mean`, `running_var`): `stem.conv.weight`, `stages.S.down.conv.weight`,
//! `stages.S.blocks.B.reduce.bn.running_var`, `stages.S.blocks.B.expand.conv.weight`,
//! `fc.weight`. `tests/fixtures/backbones/darknet53_reference.py` builds the same network in
//! PyTorch under the same names. The convolutions come in Darknet's layer order, so a converter
//! from a `.weights` file can fill them in sequence.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::Tensor;
use burn::tensor::activation::leaky_relu;
use burn::tensor::backend::Backend;

use crate::layers::{ConvBn, ConvSpec, TORCH_BN, global_pool};

/// Output channels of the five stages.
const WIDTHS: [usize; 5] = [64, 128, 256, 512, 1024];
/// Residual blocks of the five stages.
const BLOCKS: [usize; 5] = [1, 2, 8, 8, 4];
/// Channels of the stem.
const STEM: usize = 32;
/// Darknet's leaky ReLU slope.
const SLOPE: f64 = 0.1;

/// Channels of the feature maps at strides 4, 8, 16 and 32 (stages 2 to 5).
pub(crate) fn channels() -> [usize; 4] {
    [WIDTHS[1], WIDTHS[2], WIDTHS[3], WIDTHS[4]]
}

/// Convolution, batch norm, leaky ReLU. The autodl kernels have no leaky ReLU; Burn's own op
/// (a fused one on flex, a mask and a select elsewhere) follows the fused convolution and norm.
fn cbl<B: Backend>(layer: &ConvBn<B>, x: Tensor<B, 4>, frozen_bn: bool) -> Tensor<B, 4> {
    leaky_relu(layer.forward(x, frozen_bn), SLOPE)
}

/// A 1x1 convolution to half the channels and a 3x3 one back, added to the input.
#[derive(Module, Debug)]
pub struct DarkResidual<B: Backend> {
    reduce: ConvBn<B>,
    expand: ConvBn<B>,
}

/// A stride-2 convolution and residual blocks.
#[derive(Module, Debug)]
pub struct DarkStage<B: Backend> {
    down: ConvBn<B>,
    blocks: Vec<DarkResidual<B>>,
}

impl<B: Backend> DarkStage<B> {
    fn forward(&self, x: Tensor<B, 4>, f: bool) -> Tensor<B, 4> {
        self.blocks.iter().fold(cbl(&self.down, x, f), |x, b| {
            let y = cbl(&b.expand, cbl(&b.reduce, x.clone(), f), f);
            x.add(y)
        })
    }
}

/// Darknet-53 without its classifier unless one was asked for.
#[derive(Module, Debug)]
pub struct Darknet<B: Backend> {
    stem: ConvBn<B>,
    stages: Vec<DarkStage<B>>,
    fc: Option<Linear<B>>,
    pub(crate) frozen_bn: bool,
}

impl<B: Backend> Darknet<B> {
    /// Builds Darknet-53 with fresh weights, `bands` input bands and, when `classes` is given,
    /// a classifier.
    pub(crate) fn new(bands: usize, classes: Option<usize>, device: &B::Device) -> Self {
        let cb = |input, output, kernel, stride| {
            ConvSpec::new(input, output, kernel, stride).conv_bn(TORCH_BN, device)
        };
        let mut input = STEM;
        let stages = WIDTHS
            .iter()
            .zip(BLOCKS)
            .map(|(&width, n)| {
                let stage = DarkStage {
                    down: cb(input, width, 3, 2),
                    blocks: (0..n)
                        .map(|_| DarkResidual {
                            reduce: cb(width, width / 2, 1, 1),
                            expand: cb(width / 2, width, 3, 1),
                        })
                        .collect(),
                };
                input = width;
                stage
            })
            .collect();
        Darknet {
            stem: cb(bands, STEM, 3, 1),
            stages,
            fc: classes.map(|c| LinearConfig::new(WIDTHS[4], c).init(device)),
            frozen_bn: false,
        }
    }

    pub(crate) fn has_classifier(&self) -> bool {
        self.fc.is_some()
    }

    pub(crate) fn drop_classifier(&mut self) {
        self.fc = None;
    }

    /// Stops gradients in the stem and the stages up to the stride-4 one.
    pub(crate) fn freeze_stem(&mut self) {
        self.stem = self.stem.clone().no_grad();
        self.stages = std::mem::take(&mut self.stages)
            .into_iter()
            .enumerate()
            .map(|(i, s)| if i <= 1 { s.no_grad() } else { s })
            .collect();
    }

    pub(crate) fn features(&self, x: Tensor<B, 4>) -> [Tensor<B, 4>; 4] {
        let f = self.frozen_bn;
        // `new` builds five stages, and a record can only fill those in.
        let run = |x, i: usize| self.stages[i].forward(x, f);
        let c1 = run(cbl(&self.stem, x, f), 0);
        let c2 = run(c1, 1);
        let c3 = run(c2.clone(), 2);
        let c4 = run(c3.clone(), 3);
        let c5 = run(c4.clone(), 4);
        [c2, c3, c4, c5]
    }

    pub(crate) fn classify(&self, x: Tensor<B, 4>) -> Option<Tensor<B, 2>> {
        let fc = self.fc.as_ref()?;
        let [_, _, _, c5] = self.features(x);
        Some(fc.forward(global_pool(c5)))
    }
}

/// (file prefix, module prefix) pairs: none, files use the module paths.
pub(crate) fn name_map() -> Vec<(String, String)> {
    Vec::new()
}

#[cfg(test)]
mod tests {
    #[test]
    fn stages_end_at_the_feature_channels() {
        assert_eq!(super::channels(), [128, 256, 512, 1024]);
    }
}
