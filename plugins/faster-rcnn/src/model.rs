//! The Faster R-CNN module: backbone, feature pyramid, the region proposal network shared by
//! every level, and the two-layer box head over RoIAlign features.

use autodl_backbones::Backbone;
use autodl_backend::kernels;
use autodl_detection::{Box4, Fpn, FpnConfig};
use autodl_nets::layers::head_conv3;
use autodl_nets::roi_align::{RoiAlignConfig, roi_align};
use autodl_train::det::per_anchor;
use autodl_train::params::number_param;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use burn::tensor::module::max_pool2d;

use crate::sample::roi_level;

/// Strides of the pyramid levels the region proposal network runs on: the backbone's stride
/// 8, 16 and 32 features and a stride-64 level max-pooled from the last (the FPN paper's P6).
pub const STRIDES: [usize; 4] = [8, 16, 32, 64];

/// The levels regions are pooled from (strides 8, 16 and 32, as the FPN paper pools from all
/// but P6).
pub const POOLED_LEVELS: usize = 3;

/// Height-to-width ratios of the anchors, one size per level.
pub const RATIOS: [f32; 3] = [0.5, 1.0, 2.0];

/// RoIAlign output side.
pub const POOL: usize = 7;

/// RoIAlign samples per bin side.
const SAMPLING_RATIO: usize = 2;

/// What the region proposal network gives for a batch, anchor-major in the order of
/// [`autodl_detection::AnchorConfig::generate`].
#[derive(Debug, Clone)]
pub struct RpnOutput<B: Backend> {
    /// Objectness logits `[N, anchors]`.
    pub objectness: Tensor<B, 2>,
    /// Deltas `[N, anchors, 4]` from each anchor to its proposal.
    pub deltas: Tensor<B, 3>,
    /// `[height, width]` of each level, finest first.
    pub levels: Vec<[usize; 2]>,
}

/// Faster R-CNN with a feature pyramid: backbone, FPN, a region proposal network (a 3x3
/// convolution, then objectness and four deltas per anchor) shared by the levels, and a box
/// head of two fully connected layers over 7 x 7 RoIAlign features giving class scores over
/// the classes and background and class-specific box deltas.
#[derive(Module, Debug)]
pub struct FasterRcnn<B: Backend> {
    backbone: Backbone<B>,
    fpn: Fpn<B>,
    rpn_conv: Conv2d<B>,
    rpn_objectness: Conv2d<B>,
    rpn_deltas: Conv2d<B>,
    fc1: Linear<B>,
    fc2: Linear<B>,
    class_scores: Linear<B>,
    box_deltas: Linear<B>,
    classes: usize,
}

/// A 1x1 convolution initialised from N(0, 0.01), as torchvision's region proposal network's.
fn conv1<B: Backend>(input: usize, output: usize, device: &B::Device) -> Conv2d<B> {
    Conv2dConfig::new([input, output], [1, 1])
        .with_initializer(Initializer::Normal {
            mean: 0.0,
            std: 0.01,
        })
        .init(device)
}

/// A linear layer initialised from N(0, `std`) with zero bias (Fast R-CNN's predictor).
fn linear<B: Backend>(input: usize, output: usize, std: f64, device: &B::Device) -> Linear<B> {
    let mut l = LinearConfig::new(input, output)
        .with_initializer(Initializer::Normal { mean: 0.0, std })
        .init(device);
    l.bias = l.bias.map(|b| b.map(|t| t.zeros_like()));
    l
}

impl<B: Backend> FasterRcnn<B> {
    /// Builds the neck and heads on `backbone`. `params` may set `fpn-channels` (default 64,
    /// narrower than the paper's 256 so that CPU training is affordable) and `fc-channels`
    /// (default 256; the paper's 1024).
    pub fn new(
        backbone: Backbone<B>,
        classes: usize,
        params: &autodl_api::Params,
        device: &B::Device,
    ) -> Self {
        let channels = number_param(params, "fpn-channels", 64.0).max(8.0) as usize;
        let fc = number_param(params, "fc-channels", 256.0).max(16.0) as usize;
        let [_, c8, c16, c32] = backbone.channels();
        let anchors = RATIOS.len();
        // Kaiming-uniform (Burn's default) for the hidden layers, as torchvision's.
        let hidden = |i: usize, o: usize| LinearConfig::new(i, o).init(device);
        FasterRcnn {
            fpn: FpnConfig::new(vec![c8, c16, c32], channels)
                .with_extra_levels(0)
                .init(device),
            rpn_conv: head_conv3(channels, channels, device),
            rpn_objectness: conv1(channels, anchors, device),
            rpn_deltas: conv1(channels, 4 * anchors, device),
            fc1: hidden(channels * POOL * POOL, fc),
            fc2: hidden(fc, fc),
            class_scores: linear(fc, classes + 1, 0.01, device),
            box_deltas: linear(fc, 4 * classes, 0.001, device),
            classes,
            backbone,
        }
    }

    /// Object classes (background excluded).
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// The pyramid of a batch whose sides are multiples of 32: one level per stride of
    /// [`STRIDES`].
    pub fn pyramid(&self, x: Tensor<B, 4>) -> Vec<Tensor<B, 4>> {
        let [_, f8, f16, f32] = self.backbone.features(x);
        let mut levels = self.fpn.forward(vec![f8, f16, f32]);
        if let Some(last) = levels.last().cloned() {
            levels.push(max_pool2d(last, [1, 1], [2, 2], [0, 0], [1, 1], false));
        }
        levels
    }

    /// The region proposal network on every level of `pyramid`.
    pub fn rpn(&self, pyramid: &[Tensor<B, 4>]) -> RpnOutput<B> {
        let mut objectness = Vec::new();
        let mut deltas = Vec::new();
        let mut levels = Vec::new();
        for p in pyramid {
            let [_, _, h, w] = p.dims();
            levels.push([h, w]);
            let t = kernels::relu(kernels::conv2d(&self.rpn_conv, p.clone()));
            let o = per_anchor(kernels::conv2d(&self.rpn_objectness, t.clone()), 1);
            objectness.push(o.squeeze_dim::<2>(2));
            deltas.push(per_anchor(kernels::conv2d(&self.rpn_deltas, t), 4));
        }
        RpnOutput {
            objectness: Tensor::cat(objectness, 1),
            deltas: Tensor::cat(deltas, 1),
            levels,
        }
    }

    /// The box head on regions `(image in the batch, box)`: class logits `[R, classes + 1]`
    /// (column 0 background) and class-specific deltas `[R, classes, 4]`, in the order of
    /// `rois`. Each region is pooled from the level [`roi_level`] gives.
    pub fn box_head(
        &self,
        pyramid: &[Tensor<B, 4>],
        rois: &[(usize, Box4)],
    ) -> (Tensor<B, 2>, Tensor<B, 3>) {
        let r = rois.len();
        let device = pyramid[0].device();
        let channels = pyramid[0].dims()[1];
        let mut pooled = Vec::new();
        let mut order = Vec::with_capacity(r);
        for (level, features) in pyramid.iter().take(POOLED_LEVELS).enumerate() {
            let (idx, members): (Vec<usize>, Vec<(usize, Box4)>) = rois
                .iter()
                .enumerate()
                .filter(|(_, (_, b))| roi_level(b) == level)
                .map(|(i, roi)| (i, *roi))
                .unzip();
            if members.is_empty() {
                continue;
            }
            let config = RoiAlignConfig {
                output_size: POOL,
                spatial_scale: 1.0 / STRIDES[level] as f32,
                sampling_ratio: SAMPLING_RATIO,
                aligned: true,
            };
            pooled.push(roi_align(features.clone(), &members, &config));
            order.extend(idx);
        }
        let k = self.classes;
        if pooled.is_empty() {
            return (
                Tensor::zeros([0, k + 1], &device),
                Tensor::zeros([0, k, 4], &device),
            );
        }
        // Back to the order of `rois`: row `order[j]` of the result is pooled row `j`.
        let mut inverse = vec![0i64; r];
        for (j, &i) in order.iter().enumerate() {
            inverse[i] = j as i64;
        }
        let inverse = Tensor::<B, 1, burn::tensor::Int>::from_data(
            burn::tensor::TensorData::new(inverse, [r]),
            &device,
        );
        let x = Tensor::cat(pooled, 0)
            .reshape([r, channels * POOL * POOL])
            .select(0, inverse);
        let x = kernels::relu(self.fc1.forward(x));
        let x = kernels::relu(self.fc2.forward(x));
        (
            self.class_scores.forward(x.clone()),
            self.box_deltas.forward(x).reshape([r, k, 4]),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use autodl_api::ParamValue;
    use burn::backend::{Autodiff, Flex};

    #[test]
    fn outputs_follow_the_anchors_and_regions() {
        type B = Autodiff<Flex>;
        let device = Default::default();
        let mut params = autodl_api::Params::new();
        params.insert("fpn-channels".into(), ParamValue::Number(16.0));
        params.insert("fc-channels".into(), ParamValue::Number(32.0));
        for (bands, classes) in [(3, 1), (5, 4)] {
            let bb =
                autodl_nets::backboned::backbone::<B>("efficientnet-lite0", bands, false, &device)
                    .unwrap();
            let net = FasterRcnn::new(bb, classes, &params, &device);
            let pyramid = net.pyramid(Tensor::zeros([2, bands, 64, 96], &device));
            let out = net.rpn(&pyramid);
            assert_eq!(out.levels, vec![[8, 12], [4, 6], [2, 3], [1, 2]]);
            let anchors = (96 + 24 + 6 + 2) * RATIOS.len();
            assert_eq!(out.objectness.dims(), [2, anchors]);
            assert_eq!(out.deltas.dims(), [2, anchors, 4]);
            // Regions of every pooled level, in a mixed order.
            let rois = [
                (0, [0.0, 0.0, 100.0, 60.0]),
                (1, [4.0, 4.0, 20.0, 20.0]),
                (0, [0.0, 0.0, 70.0, 70.0]),
                (1, [10.0, 10.0, 30.0, 30.0]),
            ];
            let (logits, deltas) = net.box_head(&pyramid, &rois);
            assert_eq!(logits.dims(), [4, classes + 1]);
            assert_eq!(deltas.dims(), [4, classes, 4]);
        }
    }
}
