//! The SSD module.

use autodl_backbones::Backbone;
use autodl_backend::kernels;
use autodl_backend::kernels::relu;
use autodl_nets::layers::ConvBnRelu;
use autodl_train::det::{DetNet, DetOutput, per_anchor};
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{GroupNorm, GroupNormConfig, Initializer, PaddingConfig2d};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

/// Strides of the levels the predictors run on.
pub const STRIDES: [usize; 4] = [8, 16, 32, 64];

/// Channels of the extra stride-64 level.
const EXTRA: usize = 256;

/// SSD's extra feature layer: a 1x1 bottleneck, then a stride-2 3x3 convolution.
#[derive(Module, Debug)]
pub struct ExtraLayer<B: Backend> {
    reduce: ConvBnRelu<B>,
    down: Conv2d<B>,
}

/// A 1x1 convolution, group norm and ReLU in front of a level's predictors. Backbone features
/// differ in scale by orders of magnitude between levels; the original SSD rescaled its
/// finest level with a learnt L2 norm for the same reason.
#[derive(Module, Debug)]
pub struct Adapter<B: Backend> {
    conv: Conv2d<B>,
    norm: GroupNorm<B>,
}

impl<B: Backend> Adapter<B> {
    fn new(input: usize, device: &B::Device) -> Self {
        Adapter {
            conv: Conv2dConfig::new([input, WIDTH], [1, 1]).init(device),
            norm: GroupNormConfig::new(16, WIDTH).init(device),
        }
    }

    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        relu(kernels::group_norm(
            &self.norm,
            kernels::conv2d(&self.conv, x),
        ))
    }
}

/// Channels the predictors see on every level.
const WIDTH: usize = 128;

/// SSD: backbone features, one extra level, and per level an adapter and a 3x3 class and box
/// predictor.
#[derive(Module, Debug)]
pub struct Ssd<B: Backend> {
    backbone: Backbone<B>,
    extra: ExtraLayer<B>,
    adapters: Vec<Adapter<B>>,
    cls: Vec<Conv2d<B>>,
    boxes: Vec<Conv2d<B>>,
    classes: usize,
}

fn conv3<B: Backend>(input: usize, output: usize, stride: usize, device: &B::Device) -> Conv2d<B> {
    Conv2dConfig::new([input, output], [3, 3])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .init(device)
}

/// A predictor: small initial weights, so that training starts from near-uniform scores and
/// near-zero deltas.
fn predictor<B: Backend>(output: usize, device: &B::Device) -> Conv2d<B> {
    Conv2dConfig::new([WIDTH, output], [3, 3])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .with_initializer(Initializer::Normal {
            mean: 0.0,
            std: 0.01,
        })
        .init(device)
}

impl<B: Backend> Ssd<B> {
    /// Builds the extra layer and predictors on `backbone`; logits have a background column
    /// first, so `classes + 1` per anchor.
    pub fn new(backbone: Backbone<B>, classes: usize, anchors: usize, device: &B::Device) -> Self {
        let [_, c8, c16, c32] = backbone.channels();
        let channels = [c8, c16, c32, EXTRA];
        Ssd {
            extra: ExtraLayer {
                reduce: ConvBnRelu::new(c32, EXTRA / 2, 1, 1, device),
                down: conv3(EXTRA / 2, EXTRA, 2, device),
            },
            adapters: channels.iter().map(|&c| Adapter::new(c, device)).collect(),
            cls: channels
                .iter()
                .map(|_| predictor(anchors * (classes + 1), device))
                .collect(),
            boxes: channels
                .iter()
                .map(|_| predictor(anchors * 4, device))
                .collect(),
            classes: classes + 1,
            backbone,
        }
    }
}

impl<B: Backend> DetNet<B> for Ssd<B> {
    fn forward(&self, x: Tensor<B, 4>) -> DetOutput<B> {
        let [_, f8, f16, f32] = self.backbone.features(x);
        let f64 = kernels::conv2d(&self.extra.down, self.extra.reduce.forward(f32.clone()));
        let mut logits = Vec::new();
        let mut deltas = Vec::new();
        let mut levels = Vec::new();
        for (((f, adapter), cls), boxes) in [f8, f16, f32, f64]
            .into_iter()
            .zip(&self.adapters)
            .zip(&self.cls)
            .zip(&self.boxes)
        {
            let [_, _, h, w] = f.dims();
            let f = adapter.forward(f);
            levels.push([h, w]);
            logits.push(per_anchor(kernels::conv2d(cls, f.clone()), self.classes));
            deltas.push(per_anchor(kernels::conv2d(boxes, f), 4));
        }
        DetOutput {
            logits: Tensor::cat(logits, 1),
            deltas: Tensor::cat(deltas, 1),
            levels,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};

    #[test]
    fn outputs_match_the_anchor_generator() {
        type B = Autodiff<Flex>;
        let device = Default::default();
        let opts = crate::options();
        for (bands, classes) in [(3, 1), (4, 3)] {
            let bb =
                autodl_nets::backboned::backbone::<B>("efficientnet-lite0", bands, false, &device)
                    .unwrap();
            let net = Ssd::new(bb, classes, opts.anchors_per_location(), &device);
            let out = net.forward(Tensor::zeros([2, bands, 64, 96], &device));
            assert_eq!(out.levels, vec![[8, 12], [4, 6], [2, 3], [1, 2]]);
            let anchors = opts.anchor_config(4.0).generate(&out.levels).len();
            assert_eq!(out.logits.dims(), [2, anchors, classes + 1]);
            assert_eq!(out.deltas.dims(), [2, anchors, 4]);
        }
    }
}
