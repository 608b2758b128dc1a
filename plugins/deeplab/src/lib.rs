//! DeepLabV3 pixel classification (Chen et al., 2017): atrous spatial pyramid pooling over the
//! backbone's deepest features, with the V3+ decoder (stride-4 features) on by default.
//!
//! The backbones here are not dilated (output stride 32), so the atrous rates are smaller than
//! the paper's 6/12/18 at output stride 16: 2, 4 and 6 cover the same share of a feature map
//! from the small tiles autodl usually trains on.

use autodl_api::Params;
use autodl_backbones::Backbone;
use autodl_backend::kernels;
use autodl_nets::layers::{ConvBnRelu, classifier, resize};
use autodl_train::params::text_param;
use autodl_train::seg::SegNet;
use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use burn::tensor::module::adaptive_avg_pool2d;

const RATES: [usize; 3] = [2, 4, 6];
const ASPP: usize = 128;

/// The DeepLab network.
#[derive(Module, Debug)]
pub struct DeepLab<B: Backend> {
    backbone: Backbone<B>,
    branches: Vec<ConvBnRelu<B>>,
    image_pool: ConvBnRelu<B>,
    project: ConvBnRelu<B>,
    low: Option<ConvBnRelu<B>>,
    decoder: Option<ConvBnRelu<B>>,
    head: Conv2d<B>,
}

impl<B: Backend> DeepLab<B> {
    /// Builds the head on `backbone`; `plus` adds the V3+ decoder.
    pub fn new(backbone: Backbone<B>, classes: usize, plus: bool, device: &B::Device) -> Self {
        let [c4, _, _, c32] = backbone.channels();
        let mut branches = vec![ConvBnRelu::new(c32, ASPP, 1, 1, device)];
        branches.extend(
            RATES
                .iter()
                .map(|&r| ConvBnRelu::new(c32, ASPP, 3, r, device)),
        );
        DeepLab {
            image_pool: ConvBnRelu::new(c32, ASPP, 1, 1, device),
            project: ConvBnRelu::new(ASPP * (RATES.len() + 2), ASPP, 1, 1, device),
            low: plus.then(|| ConvBnRelu::new(c4, 48, 1, 1, device)),
            decoder: plus.then(|| ConvBnRelu::new(ASPP + 48, ASPP, 3, 1, device)),
            head: classifier(ASPP, classes, device),
            branches,
            backbone,
        }
    }
}

impl<B: Backend> SegNet<B> for DeepLab<B> {
    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [_, _, h, w] = x.dims();
        let [f4, _, _, f32] = self.backbone.features(x);
        let [_, _, fh, fw] = f32.dims();
        let mut parts: Vec<Tensor<B, 4>> = self
            .branches
            .iter()
            .map(|b| b.forward(f32.clone()))
            .collect();
        parts.push(resize(
            self.image_pool.forward(adaptive_avg_pool2d(f32, [1, 1])),
            fh,
            fw,
        ));
        let mut y = self.project.forward(kernels::cat_channels(parts));
        if let (Some(low), Some(decoder)) = (&self.low, &self.decoder) {
            let [_, _, lh, lw] = f4.dims();
            y = decoder.forward(kernels::cat_channels(vec![
                resize(y, lh, lw),
                low.forward(f4),
            ]));
        }
        resize(kernels::conv2d(&self.head, y), h, w)
    }
}

fn build<B: Backend>(
    backbone: Backbone<B>,
    classes: usize,
    params: &Params,
    device: &B::Device,
) -> DeepLab<B> {
    DeepLab::new(
        backbone,
        classes,
        text_param(params, "decoder", "v3+") != "v3",
        device,
    )
}

autodl_nets::backbone_family!(
    /// The DeepLab network family; parameter `decoder` is `v3+` (default) or `v3`.
    DeepLabFamily, "deeplab", DeepLab, build, default_lr = 1e-3, params = params(),
    arcgis = "DeepLab"
);

/// DeepLab's own parameter: the decoder.
fn params() -> Vec<autodl_api::ParamDecl> {
    vec![
        autodl_api::ParamDecl::fixed(
            "decoder",
            "`v3+` (ASPP plus a decoder over stride-4 features) or `v3` (ASPP only)",
            autodl_api::ParamKind::Choice {
                options: &["v3+", "v3"],
                default: "v3+",
            },
        )
        .tuned(autodl_api::Dimension::Choice {
            options: vec!["v3+".into(), "v3".into()],
        }),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};

    #[test]
    fn logits_match_the_input_size_with_and_without_decoder() {
        type B = Autodiff<Flex>;
        let device = Default::default();
        for plus in [false, true] {
            let bb =
                autodl_nets::backboned::backbone::<B>("mobilenetv2", 3, false, &device).unwrap();
            let net = DeepLab::new(bb, 5, plus, &device);
            let out = net.forward(Tensor::zeros([2, 3, 64, 64], &device));
            assert_eq!(out.dims(), [2, 5, 64, 64]);
        }
    }
}
