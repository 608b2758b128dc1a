//! The FCOS module: backbone, feature pyramid, and classification and box towers shared by
//! every level, with per-level learned scales on the box distances.

use autodl_backbones::Backbone;
use autodl_backend::kernels;
use autodl_detection::{Fpn, FpnConfig};
use autodl_nets::layers::{TowerLayer, head_conv3};
use autodl_train::det::per_anchor;
use autodl_train::params::number_param;
use burn::module::{Module, Param};
use burn::nn::conv::Conv2d;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

/// Strides of the pyramid levels the heads predict on (P3 to P6): the backbone's stride 8, 16
/// and 32 features and one extra level. The paper's P7 (stride 128) would be 2 x 2 on a
/// 256 px tile, for objects far larger than ours.
pub const STRIDES: [usize; 4] = [8, 16, 32, 64];

/// Largest exponent of a box distance (`e^10` strides), so that a diverging step cannot
/// overflow the IoU's areas.
const MAX_LOG_DISTANCE: f32 = 10.0;

/// What FCOS's forward pass returns, per location (level after level, row-major: the order of
/// [`crate::Assigner::locations`]).
#[derive(Debug, Clone)]
pub struct FcosOutput<B: Backend> {
    /// Class logits `[N, locations, classes]` (sigmoid per class).
    pub logits: Tensor<B, 3>,
    /// Distances `[N, locations, 4]` from each location to the box sides `(l, t, r, b)`, in
    /// input pixels, positive.
    pub distances: Tensor<B, 3>,
    /// Centre-ness logits `[N, locations]`.
    pub centreness: Tensor<B, 2>,
    /// `[height, width]` of each level, finest first.
    pub levels: Vec<[usize; 2]>,
}

/// FCOS: backbone, FPN, a classification tower ending in class logits, and a box tower ending
/// in the four distances and centre-ness (on the box tower, as FCOS's later versions put it).
#[derive(Module, Debug)]
pub struct Fcos<B: Backend> {
    backbone: Backbone<B>,
    fpn: Fpn<B>,
    cls_tower: Vec<TowerLayer<B>>,
    box_tower: Vec<TowerLayer<B>>,
    cls_out: Conv2d<B>,
    box_out: Conv2d<B>,
    ctr_out: Conv2d<B>,
    /// Per-level scales `s_i` of the distances `stride_i * exp(s_i * x)`.
    scales: Param<Tensor<B, 1>>,
    classes: usize,
}

impl<B: Backend> Fcos<B> {
    /// Builds the neck and heads on `backbone`. `params` may set `head-channels` (default
    /// 64, narrower than the paper's 256 so that CPU training is affordable) and `head-depth`
    /// (default 2 layers per tower; the paper uses 4).
    pub fn new(
        backbone: Backbone<B>,
        classes: usize,
        params: &autodl_api::Params,
        device: &B::Device,
    ) -> Self {
        let channels = number_param(params, "head-channels", 64.0).max(16.0) as usize;
        let depth = number_param(params, "head-depth", 2.0).max(0.0) as usize;
        let [_, c8, c16, c32] = backbone.channels();
        let mut cls_out = head_conv3(channels, classes, device);
        // Every location starts out predicting background with probability 0.99, so that the
        // many easy negatives do not swamp the first steps (RetinaNet's prior, which FCOS
        // keeps).
        let prior = -((1.0f32 - 0.01) / 0.01).ln();
        cls_out.bias = Some(Param::from_tensor(Tensor::full([classes], prior, device)));
        Fcos {
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
            box_out: head_conv3(channels, 4, device),
            ctr_out: head_conv3(channels, 1, device),
            scales: Param::from_tensor(Tensor::ones([STRIDES.len()], device)),
            classes,
            backbone,
        }
    }

    /// Runs the network on a batch whose sides are multiples of 32.
    pub fn forward(&self, x: Tensor<B, 4>) -> FcosOutput<B> {
        let [_, f8, f16, f32] = self.backbone.features(x);
        let scales = self.scales.val();
        let mut logits = Vec::new();
        let mut distances = Vec::new();
        let mut centreness = Vec::new();
        let mut levels = Vec::new();
        for (i, p) in self.fpn.forward(vec![f8, f16, f32]).into_iter().enumerate() {
            let [_, _, h, w] = p.dims();
            levels.push([h, w]);
            let c = self.cls_tower.iter().fold(p.clone(), |y, l| l.forward(y));
            let b = self.box_tower.iter().fold(p, |y, l| l.forward(y));
            logits.push(per_anchor(kernels::conv2d(&self.cls_out, c), self.classes));
            // Distances in strides through exp, so that they stay positive and a level's
            // scale moves all of its sizes together; in pixels after the stride.
            let scale = scales.clone().narrow(0, i, 1).reshape([1, 1, 1, 1]);
            let d = (kernels::conv2d(&self.box_out, b.clone()) * scale)
                .clamp_max(MAX_LOG_DISTANCE)
                .exp()
                * STRIDES[i] as f32;
            distances.push(per_anchor(d, 4));
            let ctr = per_anchor(kernels::conv2d(&self.ctr_out, b), 1);
            centreness.push(ctr.squeeze_dim::<2>(2));
        }
        FcosOutput {
            logits: Tensor::cat(logits, 1),
            distances: Tensor::cat(distances, 1),
            centreness: Tensor::cat(centreness, 1),
            levels,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use autodl_api::ParamValue;
    use burn::backend::{Autodiff, Flex};

    #[test]
    fn outputs_follow_the_locations() {
        type B = Autodiff<Flex>;
        let device = Default::default();
        let mut params = autodl_api::Params::new();
        params.insert("head-channels".into(), ParamValue::Number(16.0));
        params.insert("head-depth".into(), ParamValue::Number(1.0));
        for (bands, classes) in [(3, 1), (5, 4)] {
            let bb =
                autodl_nets::backboned::backbone::<B>("efficientnet-lite0", bands, false, &device)
                    .unwrap();
            let net = Fcos::new(bb, classes, &params, &device);
            let out = net.forward(Tensor::zeros([2, bands, 64, 96], &device));
            assert_eq!(out.levels, vec![[8, 12], [4, 6], [2, 3], [1, 2]]);
            let n = crate::Assigner::new(&STRIDES, 2.5, None)
                .locations(&out.levels)
                .len();
            assert_eq!(out.logits.dims(), [2, n, classes]);
            assert_eq!(out.distances.dims(), [2, n, 4]);
            assert_eq!(out.centreness.dims(), [2, n]);
            let d: Vec<f32> = out.distances.into_data().to_vec().unwrap();
            assert!(d.iter().all(|&v| v > 0.0 && v.is_finite()));
        }
    }
}
