//! Small building blocks the heads share: convolution-batch-norm-ReLU, the logits convolution
//! and bilinear resize for pixel classifiers, and the group-norm tower layer of the detectors'
//! shared heads.

use autodl_backend::kernels;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{
    BatchNorm, BatchNormConfig, GroupNorm, GroupNormConfig, Initializer, PaddingConfig2d,
};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

/// Convolution, batch norm, ReLU.
#[derive(Module, Debug)]
pub struct ConvBnRelu<B: Backend> {
    conv: Conv2d<B>,
    bn: BatchNorm<B>,
}

impl<B: Backend> ConvBnRelu<B> {
    /// A `kernel x kernel` convolution with "same" padding and the given dilation.
    pub fn new(
        input: usize,
        output: usize,
        kernel: usize,
        dilation: usize,
        device: &B::Device,
    ) -> Self {
        let pad = dilation * (kernel - 1) / 2;
        ConvBnRelu {
            conv: Conv2dConfig::new([input, output], [kernel, kernel])
                .with_dilation([dilation, dilation])
                .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
                .with_bias(false)
                .init(device),
            bn: BatchNormConfig::new(output).init(device),
        }
    }

    /// Applies the block.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        kernels::conv_batch_norm_relu(&self.conv, &self.bn, x, false)
    }
}

/// A 1x1 convolution with bias, for the final logits.
pub fn classifier<B: Backend>(input: usize, classes: usize, device: &B::Device) -> Conv2d<B> {
    Conv2dConfig::new([input, classes], [1, 1]).init(device)
}

/// Bilinear resize to `[h, w]` (half-pixel centres, as `align_corners = false`), through the
/// kernel extension on the CPU and as matrix products elsewhere (see
/// [`kernels::resize_bilinear`]).
pub fn resize<B: Backend>(x: Tensor<B, 4>, h: usize, w: usize) -> Tensor<B, 4> {
    let [_, _, xh, xw] = x.dims();
    if xh == h && xw == w {
        return x;
    }
    kernels::resize_bilinear(x, [h, w], false)
}

/// A 3x3 convolution with bias and "same" padding, initialised from N(0, 0.01) as
/// torchvision's RetinaNet and FCOS initialise their heads.
pub fn head_conv3<B: Backend>(input: usize, output: usize, device: &B::Device) -> Conv2d<B> {
    Conv2dConfig::new([input, output], [3, 3])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .with_initializer(Initializer::Normal {
            mean: 0.0,
            std: 0.01,
        })
        .init(device)
}

/// A 3x3 convolution, group norm and ReLU: one layer of a detector's classification or box
/// tower (RetinaNet, FCOS), shared by every pyramid level.
#[derive(Module, Debug)]
pub struct TowerLayer<B: Backend> {
    conv: Conv2d<B>,
    norm: GroupNorm<B>,
}

impl<B: Backend> TowerLayer<B> {
    /// A layer of `channels` in and out; group norm over 16 groups when they divide the
    /// channels, else over one.
    pub fn new(channels: usize, device: &B::Device) -> Self {
        let groups = if channels.is_multiple_of(16) { 16 } else { 1 };
        TowerLayer {
            conv: head_conv3(channels, channels, device),
            norm: GroupNormConfig::new(groups, channels).init(device),
        }
    }

    /// Applies the layer.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        kernels::relu(kernels::group_norm(
            &self.norm,
            kernels::conv2d(&self.conv, x),
        ))
    }
}
