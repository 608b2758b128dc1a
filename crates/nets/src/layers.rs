//! Small building blocks the heads share.

use autodl_backend::kernels;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, GroupNorm, GroupNormConfig, PaddingConfig2d};
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

/// Convolution, group norm, ReLU: for detector heads, which train on batches too small for
/// batch statistics (and whose batch norm would normalise differently in training and in
/// inference).
#[derive(Module, Debug)]
pub struct ConvGnRelu<B: Backend> {
    conv: Conv2d<B>,
    norm: GroupNorm<B>,
}

impl<B: Backend> ConvGnRelu<B> {
    /// A `kernel x kernel` convolution with "same" padding, then group norm over 16 groups
    /// (8, 4, 2 or 1 when `output` does not divide by 16).
    pub fn new(input: usize, output: usize, kernel: usize, device: &B::Device) -> Self {
        let pad = (kernel - 1) / 2;
        let groups = [16, 8, 4, 2]
            .into_iter()
            .find(|g| output.is_multiple_of(*g))
            .unwrap_or(1);
        ConvGnRelu {
            conv: Conv2dConfig::new([input, output], [kernel, kernel])
                .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
                .with_bias(false)
                .init(device),
            norm: GroupNormConfig::new(groups, output).init(device),
        }
    }

    /// Applies the block.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        kernels::relu(kernels::group_norm(
            &self.norm,
            kernels::conv2d(&self.conv, x),
        ))
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
