//! ResNet-18, -34 and -50 as torchvision builds them (v1.5: the stride of a bottleneck sits on
//! its 3x3 convolution), with torchvision's parameter names.

use autodl_backend::kernels;
use autodl_backend::kernels::relu;
use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, Linear, LinearConfig};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use crate::layers::{ConvBn, ConvSpec, TORCH_BN, batch_norm_layer, global_pool};

/// Blocks per stage and whether they are bottlenecks.
fn layout(depth: usize) -> ([usize; 4], bool) {
    match depth {
        18 => ([2, 2, 2, 2], false),
        34 => ([3, 4, 6, 3], false),
        _ => ([3, 4, 6, 3], true),
    }
}

/// Channels of the four stages' outputs (strides 4, 8, 16, 32).
pub(crate) fn channels(depth: usize) -> [usize; 4] {
    if layout(depth).1 {
        [256, 512, 1024, 2048]
    } else {
        [64, 128, 256, 512]
    }
}

/// Two 3x3 convolutions with a shortcut (ResNet-18 and -34).
#[derive(Module, Debug)]
pub struct BasicBlock<B: Backend> {
    conv1: Conv2d<B>,
    bn1: BatchNorm<B>,
    conv2: Conv2d<B>,
    bn2: BatchNorm<B>,
    downsample: Option<ConvBn<B>>,
}

/// 1x1, 3x3 (strided), 1x1 convolutions with a shortcut (ResNet-50).
#[derive(Module, Debug)]
pub struct Bottleneck<B: Backend> {
    conv1: Conv2d<B>,
    bn1: BatchNorm<B>,
    conv2: Conv2d<B>,
    bn2: BatchNorm<B>,
    conv3: Conv2d<B>,
    bn3: BatchNorm<B>,
    downsample: Option<ConvBn<B>>,
}

/// A residual block of either kind.
// Burn's module derive has no `Box` support; a few kilobytes per block are harmless.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum ResBlock<B: Backend> {
    /// ResNet-18/34 block.
    Basic(BasicBlock<B>),
    /// ResNet-50 block.
    Bottleneck(Bottleneck<B>),
}

/// A ResNet without its classifier unless one was asked for.
#[derive(Module, Debug)]
pub struct ResNet<B: Backend> {
    conv1: Conv2d<B>,
    bn1: BatchNorm<B>,
    layer1: Vec<ResBlock<B>>,
    layer2: Vec<ResBlock<B>>,
    layer3: Vec<ResBlock<B>>,
    layer4: Vec<ResBlock<B>>,
    fc: Option<Linear<B>>,
    depth: usize,
    pub(crate) frozen_bn: bool,
}

fn shortcut<B: Backend>(
    input: usize,
    output: usize,
    stride: usize,
    device: &B::Device,
) -> Option<ConvBn<B>> {
    (stride != 1 || input != output)
        .then(|| ConvSpec::new(input, output, 1, stride).conv_bn(TORCH_BN, device))
}

impl<B: Backend> ResNet<B> {
    /// Stops gradients in the stem and the stride-4 stage.
    pub(crate) fn freeze_stem(&mut self) {
        self.conv1 = self.conv1.clone().no_grad();
        self.bn1 = self.bn1.clone().no_grad();
        self.layer1 = std::mem::take(&mut self.layer1)
            .into_iter()
            .map(Module::no_grad)
            .collect();
    }

    /// Builds ResNet-`depth` (18, 34 or 50) with fresh weights, `bands` input bands and, when
    /// `classes` is given, a classifier.
    pub(crate) fn new(
        depth: usize,
        bands: usize,
        classes: Option<usize>,
        device: &B::Device,
    ) -> Self {
        let (blocks, bottleneck) = layout(depth);
        let expansion = if bottleneck { 4 } else { 1 };
        let mut input = 64;
        let mut stage = |n: usize, width: usize, stride: usize| -> Vec<ResBlock<B>> {
            (0..n)
                .map(|i| {
                    let stride = if i == 0 { stride } else { 1 };
                    let output = width * expansion;
                    let conv = |ci, co, k, s| ConvSpec::new(ci, co, k, s).conv(device);
                    let bn = |c| batch_norm_layer(c, TORCH_BN, device);
                    let block = if bottleneck {
                        ResBlock::Bottleneck(Bottleneck {
                            conv1: conv(input, width, 1, 1),
                            bn1: bn(width),
                            conv2: conv(width, width, 3, stride),
                            bn2: bn(width),
                            conv3: conv(width, output, 1, 1),
                            bn3: bn(output),
                            downsample: shortcut(input, output, stride, device),
                        })
                    } else {
                        ResBlock::Basic(BasicBlock {
                            conv1: conv(input, width, 3, stride),
                            bn1: bn(width),
                            conv2: conv(width, width, 3, 1),
                            bn2: bn(width),
                            downsample: shortcut(input, output, stride, device),
                        })
                    };
                    input = output;
                    block
                })
                .collect()
        };
        let layer1 = stage(blocks[0], 64, 1);
        let layer2 = stage(blocks[1], 128, 2);
        let layer3 = stage(blocks[2], 256, 2);
        let layer4 = stage(blocks[3], 512, 2);
        ResNet {
            conv1: ConvSpec::new(bands, 64, 7, 2).conv(device),
            bn1: batch_norm_layer(64, TORCH_BN, device),
            layer1,
            layer2,
            layer3,
            layer4,
            fc: classes.map(|c| LinearConfig::new(512 * expansion, c).init(device)),
            depth,
            frozen_bn: false,
        }
    }

    pub(crate) fn depth(&self) -> usize {
        self.depth
    }

    pub(crate) fn has_classifier(&self) -> bool {
        self.fc.is_some()
    }

    pub(crate) fn drop_classifier(&mut self) {
        self.fc = None;
    }

    pub(crate) fn features(&self, x: Tensor<B, 4>) -> [Tensor<B, 4>; 4] {
        let f = self.frozen_bn;
        let x = kernels::conv_batch_norm_relu(&self.conv1, &self.bn1, x, f);
        let x = kernels::max_pool2d(x, [3, 3], [2, 2], [1, 1]);
        let run = |x, blocks: &[ResBlock<B>]| blocks.iter().fold(x, |x, b| b.forward(x, f));
        let c2 = run(x, &self.layer1);
        let c3 = run(c2.clone(), &self.layer2);
        let c4 = run(c3.clone(), &self.layer3);
        let c5 = run(c4.clone(), &self.layer4);
        [c2, c3, c4, c5]
    }

    pub(crate) fn classify(&self, x: Tensor<B, 4>) -> Option<Tensor<B, 2>> {
        let fc = self.fc.as_ref()?;
        let [_, _, _, c5] = self.features(x);
        Some(fc.forward(global_pool(c5)))
    }
}

impl<B: Backend> ResBlock<B> {
    fn forward(&self, x: Tensor<B, 4>, f: bool) -> Tensor<B, 4> {
        match self {
            ResBlock::Basic(b) => {
                let identity = match &b.downsample {
                    Some(d) => d.forward(x.clone(), f),
                    None => x.clone(),
                };
                let y = kernels::conv_batch_norm_relu(&b.conv1, &b.bn1, x, f);
                let y = kernels::conv_batch_norm(&b.conv2, &b.bn2, y, f);
                relu(y.add(identity))
            }
            ResBlock::Bottleneck(b) => {
                let identity = match &b.downsample {
                    Some(d) => d.forward(x.clone(), f),
                    None => x.clone(),
                };
                let y = kernels::conv_batch_norm_relu(&b.conv1, &b.bn1, x, f);
                let y = kernels::conv_batch_norm_relu(&b.conv2, &b.bn2, y, f);
                let y = kernels::conv_batch_norm(&b.conv3, &b.bn3, y, f);
                relu(y.add(identity))
            }
        }
    }
}

/// (file prefix, module prefix) pairs from torchvision's names to this module's: only the
/// shortcuts differ (`downsample.0` is the convolution, `downsample.1` its batch norm).
pub(crate) fn name_map(depth: usize) -> Vec<(String, String)> {
    let (blocks, _) = layout(depth);
    let mut map = Vec::new();
    for (l, _) in blocks.iter().enumerate() {
        let p = format!("layer{}.0.downsample", l + 1);
        map.push((format!("{p}.0."), format!("{p}.conv.")));
        map.push((format!("{p}.1."), format!("{p}.bn.")));
    }
    map
}
