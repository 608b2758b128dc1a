//! The inverted-residual network that MobileNetV2 and EfficientNet-Lite share: a strided stem,
//! a chain of expand (1x1) / depthwise / project (1x1) blocks with ReLU6 and linear
//! bottlenecks, then a 1x1 head convolution, global pooling and a linear classifier.
//!
//! The two differ only in their stage tables, padding (symmetric versus TensorFlow "SAME"),
//! batch-norm constants and parameter names, which [`NetSpec`] holds.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use crate::Arch;
use crate::layers::{BnSpec, ConvBn, ConvSpec, Pad, global_pool};

/// One stage: `repeats` blocks, the first with `stride`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stage {
    pub expand: usize,
    pub kernel: usize,
    pub stride: usize,
    pub output: usize,
    pub repeats: usize,
}

/// Everything that tells MobileNetV2 from EfficientNet-Lite0.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NetSpec {
    pub stem: usize,
    pub stages: &'static [Stage],
    pub head: usize,
    pub bn: BnSpec,
    pub pad: Pad,
    /// Index of the block whose output is the feature map at stride 4, 8, 16 and 32.
    pub taps: [usize; 4],
}

impl NetSpec {
    /// (input, output, expand, kernel, stride) of every block.
    pub fn blocks(&self) -> Vec<(usize, usize, usize, usize, usize)> {
        let mut input = self.stem;
        let mut out = Vec::new();
        for s in self.stages {
            for i in 0..s.repeats {
                out.push((
                    input,
                    s.output,
                    s.expand,
                    s.kernel,
                    if i == 0 { s.stride } else { 1 },
                ));
                input = s.output;
            }
        }
        out
    }

    pub fn channels(&self) -> [usize; 4] {
        let blocks = self.blocks();
        self.taps.map(|t| blocks[t].1)
    }
}

/// Expand, depthwise, project, with a shortcut when shapes allow.
#[derive(Module, Debug)]
pub struct InvertedResidual<B: Backend> {
    expand: Option<ConvBn<B>>,
    dw: ConvBn<B>,
    project: ConvBn<B>,
    residual: bool,
}

/// Head convolution and classifier.
#[derive(Module, Debug)]
pub struct Head<B: Backend> {
    conv: ConvBn<B>,
    fc: Linear<B>,
}

/// MobileNetV2 or EfficientNet-Lite0.
#[derive(Module, Debug)]
pub struct MobileNet<B: Backend> {
    stem: ConvBn<B>,
    blocks: Vec<InvertedResidual<B>>,
    head: Option<Head<B>>,
    arch: Arch,
    taps: [usize; 4],
    pub(crate) frozen_bn: bool,
}

impl<B: Backend> MobileNet<B> {
    pub(crate) fn new(
        arch: Arch,
        spec: &NetSpec,
        bands: usize,
        classes: Option<usize>,
        device: &B::Device,
    ) -> Self {
        let cb = |c: ConvSpec| c.pad(spec.pad).conv_bn(spec.bn, device);
        let blocks = spec
            .blocks()
            .into_iter()
            .map(|(input, output, expand, kernel, stride)| {
                let hidden = input * expand;
                InvertedResidual {
                    expand: (expand != 1).then(|| cb(ConvSpec::new(input, hidden, 1, 1))),
                    dw: cb(ConvSpec::depthwise(hidden, kernel, stride)),
                    project: cb(ConvSpec::new(hidden, output, 1, 1)),
                    residual: stride == 1 && input == output,
                }
            })
            .collect::<Vec<_>>();
        let last = spec.blocks().last().map_or(spec.stem, |b| b.1);
        MobileNet {
            stem: cb(ConvSpec::new(bands, spec.stem, 3, 2)),
            blocks,
            head: classes.map(|c| Head {
                conv: cb(ConvSpec::new(last, spec.head, 1, 1)),
                fc: LinearConfig::new(spec.head, c).init(device),
            }),
            arch,
            taps: spec.taps,
            frozen_bn: false,
        }
    }

    pub(crate) fn arch(&self) -> Arch {
        self.arch
    }

    pub(crate) fn has_classifier(&self) -> bool {
        self.head.is_some()
    }

    /// Stops gradients in the stem and every block up to the stride-4 tap.
    pub(crate) fn freeze_stem(&mut self) {
        self.stem = self.stem.clone().no_grad();
        let last = self.taps[0];
        self.blocks = std::mem::take(&mut self.blocks)
            .into_iter()
            .enumerate()
            .map(|(i, b)| if i <= last { b.no_grad() } else { b })
            .collect();
    }

    pub(crate) fn drop_classifier(&mut self) {
        self.head = None;
    }

    /// The four tapped feature maps and the last block's output.
    fn run(&self, x: Tensor<B, 4>) -> ([Tensor<B, 4>; 4], Tensor<B, 4>) {
        let f = self.frozen_bn;
        let mut x = self.stem.forward_relu6(x, f);
        let mut taps: [Option<Tensor<B, 4>>; 4] = [None, None, None, None];
        for (i, block) in self.blocks.iter().enumerate() {
            x = block.forward(x, f);
            if let Some(slot) = self.taps.iter().position(|&t| t == i) {
                taps[slot] = Some(x.clone());
            }
        }
        // Every tap index is a block index (`NetSpec::taps`), so each slot is filled.
        let taps = taps.map(|t| t.unwrap_or_else(|| x.clone()));
        (taps, x)
    }

    pub(crate) fn features(&self, x: Tensor<B, 4>) -> [Tensor<B, 4>; 4] {
        self.run(x).0
    }

    pub(crate) fn classify(&self, x: Tensor<B, 4>) -> Option<Tensor<B, 2>> {
        let head = self.head.as_ref()?;
        let (_, x) = self.run(x);
        let x = head.conv.forward_relu6(x, self.frozen_bn);
        // Dropout before the classifier is a training regulariser only; it is left out.
        Some(head.fc.forward(global_pool(x)))
    }
}

impl<B: Backend> InvertedResidual<B> {
    fn forward(&self, x: Tensor<B, 4>, f: bool) -> Tensor<B, 4> {
        let y = match &self.expand {
            Some(e) => e.forward_relu6(x.clone(), f),
            None => x.clone(),
        };
        let y = self.dw.forward_relu6(y, f);
        let y = self.project.forward(y, f);
        if self.residual { y.add(x) } else { y }
    }
}
