//! The YOLOv3 module: a shared backbone's stride 8, 16 and 32 features, the paper's top-down
//! neck (a block of alternating 1x1 and 3x3 convolutions per scale; its output reduced by a
//! 1x1 convolution, upsampled by two and concatenated with the next finer backbone feature), and
//! per scale a 3x3 convolution and a 1x1 output of `3 * (5 + classes)` channels.
//!
//! Two departures from Darknet's layers: group norm instead of batch norm (detectors train on
//! small batches here, whose statistics are noise, and group norm normalises alike in training
//! and inference), and ReLU instead of leaky ReLU (the CPU kernels fuse it).

use autodl_api::Params;
use autodl_backbones::Backbone;
use autodl_backend::kernels;
use autodl_train::det::per_anchor;
use autodl_train::params::number_param;
use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{GroupNorm, GroupNormConfig, Initializer, PaddingConfig2d};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use crate::assign::{Layout, PER_SCALE};

/// Outputs per prior: x and y offsets, log width and height, objectness, then the classes.
pub const BOX_OUTPUTS: usize = 5;

/// Convolution, group norm, ReLU: a layer of the neck (1x1 or 3x3, unlike the detectors'
/// shared 3x3 `TowerLayer`, whose input and output widths are equal).
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

    /// Applies the layer.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        kernels::relu(kernels::group_norm(
            &self.norm,
            kernels::conv2d(&self.conv, x),
        ))
    }
}

/// Nearest-neighbour upsampling by 2 (Darknet's upsample layer), as a broadcast and a reshape
/// so that every backend has its backward pass.
fn upsample2<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let [n, c, h, w] = x.dims();
    x.reshape([n, c, h, 1, w, 1])
        .expand([n, c, h, 2, w, 2])
        .reshape([n, c, 2 * h, 2 * w])
}

/// The window side the initial objectness is set for: the detectors' default training tile.
const REFERENCE_TILE: f32 = 256.0;

/// The initial objectness and class logits of a scale of stride `stride`, after Ultralytics'
/// YOLOv3 (`ln(8 / (640 / s)^2)`) with its 640 px reference image replaced by
/// [`REFERENCE_TILE`]: objectness probability `8 / cells` (about 8 objects per prior of the
/// scale in a reference window: far below 0.5, so that the many empty cells do not swamp the
/// first steps, and near enough the objects' share that their scores soon pass the decoding
/// floor), and class logit `ln(0.6 / (K - 0.99))` (probability 0.98 for one class).
pub fn initial_biases(stride: usize, classes: usize) -> (f32, f32) {
    let logit = |p: f32| (p / (1.0 - p)).ln();
    let cells = (REFERENCE_TILE / stride as f32).powi(2);
    let objectness = logit((8.0 / cells).min(0.5));
    let class = (0.6 / (classes.max(1) as f32 - 0.99)).ln();
    (objectness, class)
}

/// One scale's part of the neck and its head.
#[derive(Module, Debug)]
pub struct Scale<B: Backend> {
    /// 1x1 and 3x3 convolutions alternating, starting and ending with a 1x1 one.
    block: Vec<ConvGnRelu<B>>,
    /// The 3x3 convolution in front of the output.
    head: ConvGnRelu<B>,
    /// The 1x1 output convolution.
    output: Conv2d<B>,
}

impl<B: Backend> Scale<B> {
    /// `input` channels in, `width` channels through the block (twice that in its 3x3 layers),
    /// `pairs` 3x3-1x1 pairs after the first 1x1 layer (Darknet-53's YOLOv3 has 2), for the
    /// scale of stride `stride`.
    fn new(
        input: usize,
        width: usize,
        pairs: usize,
        classes: usize,
        stride: usize,
        device: &B::Device,
    ) -> Self {
        let mut block = vec![ConvGnRelu::new(input, width, 1, device)];
        for _ in 0..pairs {
            block.push(ConvGnRelu::new(width, 2 * width, 3, device));
            block.push(ConvGnRelu::new(2 * width, width, 1, device));
        }
        let per_prior = BOX_OUTPUTS + classes;
        // Small initial weights make every prediction start at its prior; the biases start
        // objectness and classes where Ultralytics' YOLOv3 does ([`initial_biases`]).
        let mut output = Conv2dConfig::new([2 * width, PER_SCALE * per_prior], [1, 1])
            .with_initializer(Initializer::Normal {
                mean: 0.0,
                std: 0.01,
            })
            .init(device);
        let (objectness, class) = initial_biases(stride, classes);
        let bias: Vec<f32> = (0..PER_SCALE * per_prior)
            .map(|c| match c % per_prior {
                4 => objectness,
                o if o >= BOX_OUTPUTS => class,
                _ => 0.0,
            })
            .collect();
        output.bias = Some(Param::from_tensor(Tensor::from_data(
            TensorData::new(bias, [PER_SCALE * per_prior]),
            device,
        )));
        Scale {
            block,
            head: ConvGnRelu::new(width, 2 * width, 3, device),
            output,
        }
    }

    /// The block's output (what the next scale's path starts from) and the scale's predictions.
    fn forward(&self, x: Tensor<B, 4>) -> (Tensor<B, 4>, Tensor<B, 4>) {
        let route = self.block.iter().fold(x, |y, l| l.forward(y));
        let out = kernels::conv2d(&self.output, self.head.forward(route.clone()));
        (route, out)
    }
}

/// YOLOv3 on a shared backbone.
#[derive(Module, Debug)]
pub struct YoloV3<B: Backend> {
    backbone: Backbone<B>,
    /// The scales, coarsest (stride 32) first, the order the neck runs in.
    scales: Vec<Scale<B>>,
    /// The 1x1 convolutions that narrow a scale's block output before it is upsampled into the
    /// next finer scale.
    lateral: Vec<ConvGnRelu<B>>,
    classes: usize,
}

impl<B: Backend> YoloV3<B> {
    /// Builds the neck and heads on `backbone`. `params` may set `neck-channels` (default 32:
    /// the stride-8 block's width, doubled at each coarser scale; Darknet-53's YOLOv3 has 128)
    /// and `neck-depth` (default 2 pairs of 3x3 and 1x1 convolutions after each block's first
    /// layer, as in the paper).
    pub fn new(backbone: Backbone<B>, classes: usize, params: &Params, device: &B::Device) -> Self {
        let width = number_param(params, "neck-channels", 32.0).max(1.0) as usize;
        let pairs = number_param(params, "neck-depth", 2.0).max(0.0) as usize;
        let [_, c8, c16, c32] = backbone.channels();
        let widths = [4 * width, 2 * width, width];
        let inputs = [c32, c16 + widths[1], c8 + widths[2]];
        YoloV3 {
            scales: (0..3)
                .map(|i| Scale::new(inputs[i], widths[i], pairs, classes, 32 >> i, device))
                .collect(),
            lateral: (0..2)
                .map(|i| ConvGnRelu::new(widths[i], widths[i + 1], 1, device))
                .collect(),
            classes,
            backbone,
        }
    }

    /// The raw predictions of each scale, finest first: `[N, 3 * (5 + classes), H / s, W / s]`
    /// for strides `s` of 8, 16 and 32 (sides multiples of 32).
    pub fn forward(&self, x: Tensor<B, 4>) -> Vec<Tensor<B, 4>> {
        let [_, f8, f16, f32] = self.backbone.features(x);
        let mut up: Option<Tensor<B, 4>> = None;
        let mut outs = Vec::with_capacity(3);
        for (i, (scale, feature)) in self.scales.iter().zip([f32, f16, f8]).enumerate() {
            let input = match up.take() {
                Some(coarser) => {
                    // The backbone's strides double from scale to scale, and windows are
                    // multiples of 32, so the upsampled map matches the feature exactly.
                    kernels::cat_channels(vec![upsample2(coarser), feature])
                }
                None => feature,
            };
            let (route, out) = scale.forward(input);
            outs.push(out);
            if let Some(lateral) = self.lateral.get(i) {
                up = Some(lateral.forward(route));
            }
        }
        outs.reverse();
        outs
    }

    /// Every prediction as a row `[N, predictions, 5 + classes]` in [`Layout`] order, with the
    /// layout.
    pub fn rows(&self, x: Tensor<B, 4>) -> (Tensor<B, 3>, Layout) {
        let per_prior = BOX_OUTPUTS + self.classes;
        let mut grids = Vec::with_capacity(3);
        let mut parts = Vec::with_capacity(3);
        for out in self.forward(x) {
            let [_, _, h, w] = out.dims();
            grids.push([h, w]);
            parts.push(per_anchor(out, per_prior));
        }
        (Tensor::cat(parts, 1), Layout::new(grids))
    }

    /// Classes it predicts.
    pub fn classes(&self) -> usize {
        self.classes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};

    #[test]
    fn three_scales_of_three_priors() {
        type B = Autodiff<Flex>;
        let device = Default::default();
        for (bands, classes) in [(3, 1), (5, 4)] {
            let bb =
                autodl_nets::backboned::backbone::<B>("efficientnet-lite0", bands, false, &device)
                    .unwrap();
            let net = YoloV3::new(bb, classes, &Params::new(), &device);
            let outs = net.forward(Tensor::zeros([2, bands, 64, 96], &device));
            let dims: Vec<[usize; 4]> = outs.iter().map(|o| o.dims()).collect();
            let c = 3 * (5 + classes);
            assert_eq!(dims, vec![[2, c, 8, 12], [2, c, 4, 6], [2, c, 2, 3]]);
            let (rows, layout) = net.rows(Tensor::zeros([2, bands, 64, 96], &device));
            assert_eq!(layout.grids, vec![[8, 12], [4, 6], [2, 3]]);
            assert_eq!(rows.dims(), [2, layout.len(), 5 + classes]);
        }
    }
}
