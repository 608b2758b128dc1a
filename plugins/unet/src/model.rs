//! The U-Net module.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d};
use burn::tensor::Tensor;
use burn::tensor::activation::relu;
use burn::tensor::backend::Backend;
use burn::tensor::module::{interpolate, max_pool2d};
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};

use autodl_train::seg::SegNet;

/// Two 3x3 convolutions, each followed by batch norm and ReLU.
#[derive(Module, Debug)]
pub struct ConvBlock<B: Backend> {
    conv1: Conv2d<B>,
    bn1: BatchNorm<B>,
    conv2: Conv2d<B>,
    bn2: BatchNorm<B>,
}

impl<B: Backend> ConvBlock<B> {
    fn new(input: usize, output: usize, device: &B::Device) -> Self {
        let conv = |i, o| {
            Conv2dConfig::new([i, o], [3, 3])
                .with_padding(PaddingConfig2d::Same)
                .with_bias(false)
                .init(device)
        };
        ConvBlock {
            conv1: conv(input, output),
            bn1: BatchNormConfig::new(output).init(device),
            conv2: conv(output, output),
            bn2: BatchNormConfig::new(output).init(device),
        }
    }

    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let x = relu(self.bn1.forward(self.conv1.forward(x)));
        relu(self.bn2.forward(self.conv2.forward(x)))
    }
}

/// Shape of a [`Unet`].
#[derive(Debug, Clone, Copy)]
pub struct UnetConfig {
    /// Input bands.
    pub bands: usize,
    /// Output classes.
    pub classes: usize,
    /// Channels of the first level; each deeper level doubles them.
    pub width: usize,
}

/// A four-level U-Net (total stride 8).
#[derive(Module, Debug)]
pub struct Unet<B: Backend> {
    enc1: ConvBlock<B>,
    enc2: ConvBlock<B>,
    enc3: ConvBlock<B>,
    bottom: ConvBlock<B>,
    dec3: ConvBlock<B>,
    dec2: ConvBlock<B>,
    dec1: ConvBlock<B>,
    head: Conv2d<B>,
}

impl UnetConfig {
    /// Builds the network with fresh weights.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Unet<B> {
        let w = self.width;
        Unet {
            enc1: ConvBlock::new(self.bands, w, device),
            enc2: ConvBlock::new(w, 2 * w, device),
            enc3: ConvBlock::new(2 * w, 4 * w, device),
            bottom: ConvBlock::new(4 * w, 8 * w, device),
            dec3: ConvBlock::new(8 * w + 4 * w, 4 * w, device),
            dec2: ConvBlock::new(4 * w + 2 * w, 2 * w, device),
            dec1: ConvBlock::new(2 * w + w, w, device),
            head: Conv2dConfig::new([w, self.classes], [1, 1]).init(device),
        }
    }
}

fn down<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    max_pool2d(x, [2, 2], [2, 2], [0, 0], [1, 1], false)
}

fn up_cat<B: Backend>(x: Tensor<B, 4>, skip: Tensor<B, 4>) -> Tensor<B, 4> {
    let [_, _, h, w] = skip.dims();
    let x = interpolate(x, [h, w], InterpolateOptions::new(InterpolateMode::Bilinear).with_align_corners(false));
    Tensor::cat(vec![x, skip], 1)
}

impl<B: Backend> SegNet<B> for Unet<B> {
    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let e1 = self.enc1.forward(x);
        let e2 = self.enc2.forward(down(e1.clone()));
        let e3 = self.enc3.forward(down(e2.clone()));
        let b = self.bottom.forward(down(e3.clone()));
        let d3 = self.dec3.forward(up_cat(b, e3));
        let d2 = self.dec2.forward(up_cat(d3, e2));
        let d1 = self.dec1.forward(up_cat(d2, e1));
        self.head.forward(d1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_matches_input_size() {
        type B = burn::backend::Autodiff<burn::backend::Flex>;
        let device = Default::default();
        for bands in [1, 3, 6] {
            let net = UnetConfig { bands, classes: 5, width: 4 }.init::<B>(&device);
            let x = Tensor::<B, 4>::zeros([2, bands, 32, 48], &device);
            assert_eq!(net.forward(x).dims(), [2, 5, 32, 48]);
        }
    }
}
