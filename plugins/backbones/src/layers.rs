//! Building blocks shared by the networks: convolution plus batch norm, with a frozen mode.

use autodl_backend::kernels;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

/// Batch-norm settings of a network family.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BnSpec {
    pub epsilon: f64,
    pub momentum: f64,
}

/// torchvision's defaults (`nn.BatchNorm2d`).
pub(crate) const TORCH_BN: BnSpec = BnSpec {
    epsilon: 1e-5,
    momentum: 0.1,
};

/// How a convolution pads its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pad {
    /// `(k - 1) / 2` on every side, as PyTorch's convolutions here use.
    Symmetric,
    /// TensorFlow's "SAME": the total padding that keeps `ceil(size / stride)` outputs, with the
    /// odd pixel at the bottom and right. Burn's `PaddingConfig2d::Same` computes exactly this
    /// from the input size at each call (then pads explicitly and runs a valid convolution), so
    /// stride-2 layers get the asymmetric (0, 1) or (1, 2) padding the TF checkpoints expect.
    TfSame,
}

/// A bias-free convolution followed by batch norm.
#[derive(Module, Debug)]
pub struct ConvBn<B: Backend> {
    /// The convolution.
    pub conv: Conv2d<B>,
    /// Its batch norm.
    pub bn: BatchNorm<B>,
}

/// Shape of a [`ConvBn`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConvSpec {
    pub input: usize,
    pub output: usize,
    pub kernel: usize,
    pub stride: usize,
    pub groups: usize,
    pub pad: Pad,
}

impl ConvSpec {
    pub fn new(input: usize, output: usize, kernel: usize, stride: usize) -> Self {
        ConvSpec {
            input,
            output,
            kernel,
            stride,
            groups: 1,
            pad: Pad::Symmetric,
        }
    }

    pub fn depthwise(channels: usize, kernel: usize, stride: usize) -> Self {
        ConvSpec {
            groups: channels,
            ..ConvSpec::new(channels, channels, kernel, stride)
        }
    }

    pub fn pad(self, pad: Pad) -> Self {
        ConvSpec { pad, ..self }
    }

    pub fn conv<B: Backend>(&self, device: &B::Device) -> Conv2d<B> {
        let padding = match self.pad {
            Pad::Symmetric => {
                let p = (self.kernel - 1) / 2;
                PaddingConfig2d::Explicit(p, p, p, p)
            }
            Pad::TfSame => PaddingConfig2d::Same,
        };
        Conv2dConfig::new([self.input, self.output], [self.kernel, self.kernel])
            .with_stride([self.stride, self.stride])
            .with_groups(self.groups)
            .with_padding(padding)
            .with_bias(false)
            .init(device)
    }

    pub fn conv_bn<B: Backend>(&self, bn: BnSpec, device: &B::Device) -> ConvBn<B> {
        ConvBn {
            conv: self.conv(device),
            bn: batch_norm_layer(self.output, bn, device),
        }
    }
}

pub(crate) fn batch_norm_layer<B: Backend>(
    channels: usize,
    spec: BnSpec,
    device: &B::Device,
) -> BatchNorm<B> {
    BatchNormConfig::new(channels)
        .with_epsilon(spec.epsilon)
        .with_momentum(spec.momentum)
        .init(device)
}

impl<B: Backend> ConvBn<B> {
    pub(crate) fn forward(&self, x: Tensor<B, 4>, frozen_bn: bool) -> Tensor<B, 4> {
        kernels::conv_batch_norm(&self.conv, &self.bn, x, frozen_bn)
    }

    /// [`ConvBn::forward`] then ReLU6, fused into the norm where the backend fuses it.
    pub(crate) fn forward_relu6(&self, x: Tensor<B, 4>, frozen_bn: bool) -> Tensor<B, 4> {
        kernels::conv_batch_norm_clamp(&self.conv, &self.bn, x, frozen_bn, [0.0, 6.0])
    }
}

/// Global average pool to `[N, C]`.
pub(crate) fn global_pool<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 2> {
    let [n, c, _, _] = x.dims();
    x.mean_dims(&[2, 3]).reshape([n, c])
}
