//! PSPNet pixel classification (Zhao et al., 2017): a pyramid pooling module over the
//! backbone's deepest features, fused with stride-4 features so small tiles keep their detail.

use autodl_api::Params;
use autodl_backbones::Backbone;
use autodl_backend::kernels;
use autodl_nets::layers::{ConvBnRelu, classifier, resize};
use autodl_train::seg::SegNet;
use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use burn::tensor::module::adaptive_avg_pool2d;

/// Pooled grid sizes of the pyramid, as in the paper.
const BINS: [usize; 4] = [1, 2, 3, 6];

/// The PSPNet network.
#[derive(Module, Debug)]
pub struct PspNet<B: Backend> {
    backbone: Backbone<B>,
    pyramid: Vec<ConvBnRelu<B>>,
    bottleneck: ConvBnRelu<B>,
    low: ConvBnRelu<B>,
    fuse: ConvBnRelu<B>,
    head: Conv2d<B>,
}

impl<B: Backend> PspNet<B> {
    /// Builds the head on `backbone`.
    pub fn new(backbone: Backbone<B>, classes: usize, device: &B::Device) -> Self {
        let [c4, _, _, c32] = backbone.channels();
        let branch = (c32 / 4).clamp(16, 128);
        PspNet {
            pyramid: BINS
                .iter()
                .map(|_| ConvBnRelu::new(c32, branch, 1, 1, device))
                .collect(),
            bottleneck: ConvBnRelu::new(c32 + BINS.len() * branch, 128, 3, 1, device),
            low: ConvBnRelu::new(c4, 48, 1, 1, device),
            fuse: ConvBnRelu::new(128 + 48, 96, 3, 1, device),
            head: classifier(96, classes, device),
            backbone,
        }
    }
}

impl<B: Backend> SegNet<B> for PspNet<B> {
    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [_, _, h, w] = x.dims();
        let [f4, _, _, f32] = self.backbone.features(x);
        let [_, _, fh, fw] = f32.dims();
        let mut parts = vec![f32.clone()];
        for (bins, conv) in BINS.iter().zip(&self.pyramid) {
            let pooled = conv.forward(adaptive_avg_pool2d(f32.clone(), [*bins, *bins]));
            parts.push(resize(pooled, fh, fw));
        }
        let deep = self.bottleneck.forward(kernels::cat_channels(parts));
        let [_, _, lh, lw] = f4.dims();
        let fused = self.fuse.forward(kernels::cat_channels(vec![
            resize(deep, lh, lw),
            self.low.forward(f4),
        ]));
        resize(kernels::conv2d(&self.head, fused), h, w)
    }
}

fn build<B: Backend>(
    backbone: Backbone<B>,
    classes: usize,
    _: &Params,
    device: &B::Device,
) -> PspNet<B> {
    PspNet::new(backbone, classes, device)
}

autodl_nets::backbone_family!(
    /// The PSPNet network family.
    PspNetFamily, "pspnet", PspNet, build, default_lr = 1e-3, arcgis = "PSPNetClassifier"
);

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};

    #[test]
    fn logits_match_the_input_size_for_any_band_count() {
        type B = Autodiff<Flex>;
        let device = Default::default();
        for bands in [1, 6] {
            let bb =
                autodl_nets::backboned::backbone::<B>("resnet18", bands, false, &device).unwrap();
            let net = PspNet::new(bb, 4, &device);
            let out = net.forward(Tensor::zeros([1, bands, 64, 96], &device));
            assert_eq!(out.dims(), [1, 4, 64, 96]);
        }
    }
}
