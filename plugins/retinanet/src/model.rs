//! The RetinaNet module.

use autodl_api::Params;
use autodl_backbones::Backbone;
use autodl_backend::kernels;
use autodl_detection::{Fpn, FpnConfig};
use autodl_nets::layers::{TowerLayer, head_conv3 as conv3};
use autodl_train::det::{DetNet, DetOutput, per_anchor};
use autodl_train::params::number_param;
use burn::module::{Module, Param};
use burn::nn::conv::Conv2d;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

/// Strides of the pyramid levels the heads predict on.
pub const STRIDES: [usize; 4] = [8, 16, 32, 64];

/// RetinaNet: backbone, FPN, and classification and box towers shared by every level.
#[derive(Module, Debug)]
pub struct RetinaNet<B: Backend> {
    backbone: Backbone<B>,
    fpn: Fpn<B>,
    cls_tower: Vec<TowerLayer<B>>,
    box_tower: Vec<TowerLayer<B>>,
    cls_out: Conv2d<B>,
    box_out: Conv2d<B>,
    classes: usize,
}

impl<B: Backend> RetinaNet<B> {
    /// Builds the neck and heads on `backbone`. `params` may set `head-channels` (default 64,
    /// narrower than the paper's 256 so that CPU training is affordable) and `head-depth`
    /// (default 2 layers per tower; the paper uses 4).
    pub fn new(
        backbone: Backbone<B>,
        classes: usize,
        anchors: usize,
        params: &Params,
        device: &B::Device,
    ) -> Self {
        let channels = number_param(params, "head-channels", 64.0).max(16.0) as usize;
        let depth = number_param(params, "head-depth", 2.0).max(0.0) as usize;
        let [_, c8, c16, c32] = backbone.channels();
        let mut cls_out = conv3(channels, anchors * classes, device);
        // Every anchor starts out predicting background with probability 0.99, so that the
        // many easy negatives do not swamp the first steps (the paper's prior).
        let prior = -((1.0f32 - 0.01) / 0.01).ln();
        cls_out.bias = Some(Param::from_tensor(Tensor::full(
            [anchors * classes],
            prior,
            device,
        )));
        RetinaNet {
            fpn: FpnConfig::new(vec![c8, c16, c32], channels)
                .with_extra_levels(STRIDES.len() - 3)
                .init(device),
            cls_tower: (0..depth)
                .map(|_| TowerLayer::new(channels, device))
                .collect(),
            box_tower: (0..depth)
                .map(|_| TowerLayer::new(channels, device))
                .collect(),
            cls_out,
            box_out: conv3(channels, anchors * 4, device),
            classes,
            backbone,
        }
    }
}

impl<B: Backend> DetNet<B> for RetinaNet<B> {
    fn forward(&self, x: Tensor<B, 4>) -> DetOutput<B> {
        let [_, f8, f16, f32] = self.backbone.features(x);
        let mut logits = Vec::new();
        let mut deltas = Vec::new();
        let mut levels = Vec::new();
        for p in self.fpn.forward(vec![f8, f16, f32]) {
            let [_, _, h, w] = p.dims();
            levels.push([h, w]);
            let c = self.cls_tower.iter().fold(p.clone(), |y, l| l.forward(y));
            let b = self.box_tower.iter().fold(p, |y, l| l.forward(y));
            logits.push(per_anchor(kernels::conv2d(&self.cls_out, c), self.classes));
            deltas.push(per_anchor(kernels::conv2d(&self.box_out, b), 4));
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
        for (bands, classes) in [(3, 1), (5, 4)] {
            let bb =
                autodl_nets::backboned::backbone::<B>("efficientnet-lite0", bands, false, &device)
                    .unwrap();
            let net = RetinaNet::new(
                bb,
                classes,
                opts.anchors_per_location(),
                &Params::new(),
                &device,
            );
            let out = net.forward(Tensor::zeros([2, bands, 64, 96], &device));
            assert_eq!(out.levels, vec![[8, 12], [4, 6], [2, 3], [1, 2]]);
            let anchors = opts.anchor_config(4.0).generate(&out.levels).len();
            assert_eq!(out.logits.dims(), [2, anchors, classes]);
            assert_eq!(out.deltas.dims(), [2, anchors, 4]);
        }
    }
}

#[cfg(test)]
mod layout_tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::TensorData;

    #[test]
    fn per_anchor_reads_location_then_anchor() {
        type B = Autodiff<Flex>;
        let device = Default::default();
        // [1, A*K = 6, H = 2, W = 3] with value = c * 100 + y * 10 + x.
        let mut v = Vec::new();
        for c in 0..6 {
            for y in 0..2 {
                for x in 0..3 {
                    v.push((c * 100 + y * 10 + x) as f32);
                }
            }
        }
        let t = Tensor::<B, 4>::from_data(TensorData::new(v, [1, 6, 2, 3]), &device);
        let out: Vec<f32> = per_anchor(t, 2).into_data().to_vec().unwrap();
        // Row r = (y * 3 + x) * 3 + a holds channels a*2 and a*2+1 at (y, x).
        for y in 0..2 {
            for x in 0..3 {
                for a in 0..3 {
                    let r = (y * 3 + x) * 3 + a;
                    for k in 0..2 {
                        assert_eq!(
                            out[r * 2 + k],
                            ((a * 2 + k) * 100 + y * 10 + x) as f32,
                            "row {r} column {k}"
                        );
                    }
                }
            }
        }
    }
}
