//! The U-Net module: a backbone encoder and a decoder that upsamples with skip connections.

use autodl_backend::kernels;
use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use autodl_backbones::Backbone;
use autodl_nets::layers::{ConvBnRelu, classifier, resize};
use autodl_train::seg::SegNet;

/// Two 3x3 convolution blocks.
#[derive(Module, Debug)]
pub struct DecoderBlock<B: Backend> {
    a: ConvBnRelu<B>,
    b: ConvBnRelu<B>,
}

impl<B: Backend> DecoderBlock<B> {
    fn new(input: usize, output: usize, device: &B::Device) -> Self {
        DecoderBlock {
            a: ConvBnRelu::new(input, output, 3, 1, device),
            b: ConvBnRelu::new(output, output, 3, 1, device),
        }
    }

    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.b.forward(self.a.forward(x))
    }
}

/// U-Net (Ronneberger et al., 2015) on a backbone: decoder stages at strides 16, 8, 4 and 2,
/// each fed by the backbone's features at that stride, then logits at full resolution.
#[derive(Module, Debug)]
pub struct Unet<B: Backend> {
    backbone: Backbone<B>,
    d16: DecoderBlock<B>,
    d8: DecoderBlock<B>,
    d4: DecoderBlock<B>,
    d2: DecoderBlock<B>,
    head: Conv2d<B>,
}

/// Decoder widths at strides 16, 8, 4 and 2.
const WIDTHS: [usize; 4] = [128, 64, 48, 32];

impl<B: Backend> Unet<B> {
    /// Builds the decoder on `backbone`.
    pub fn new(backbone: Backbone<B>, classes: usize, device: &B::Device) -> Self {
        let [c4, c8, c16, c32] = backbone.channels();
        Unet {
            d16: DecoderBlock::new(c32 + c16, WIDTHS[0], device),
            d8: DecoderBlock::new(WIDTHS[0] + c8, WIDTHS[1], device),
            d4: DecoderBlock::new(WIDTHS[1] + c4, WIDTHS[2], device),
            d2: DecoderBlock::new(WIDTHS[2], WIDTHS[3], device),
            head: classifier(WIDTHS[3], classes, device),
            backbone,
        }
    }
}

fn up_cat<B: Backend>(x: Tensor<B, 4>, skip: Tensor<B, 4>) -> Tensor<B, 4> {
    let [_, _, h, w] = skip.dims();
    kernels::cat_channels(vec![resize(x, h, w), skip])
}

impl<B: Backend> SegNet<B> for Unet<B> {
    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [_, _, h, w] = x.dims();
        let [f4, f8, f16, f32] = self.backbone.features(x);
        let y = self.d16.forward(up_cat(f32, f16));
        let y = self.d8.forward(up_cat(y, f8));
        let y = self.d4.forward(up_cat(y, f4));
        let y = self.d2.forward(resize(y, h / 2, w / 2));
        resize(kernels::conv2d(&self.head, y), h, w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};

    #[test]
    fn output_matches_input_size_for_any_band_count() {
        type B = Autodiff<Flex>;
        let device = Default::default();
        for bands in [1, 3, 6] {
            let bb =
                autodl_nets::backboned::backbone::<B>("efficientnet-lite0", bands, false, &device)
                    .unwrap();
            let net = Unet::new(bb, 5, &device);
            assert_eq!(
                net.forward(Tensor::zeros([2, bands, 64, 96], &device))
                    .dims(),
                [2, 5, 64, 96]
            );
        }
    }
}
