//! A feature pyramid network (Lin et al., 2017) over backbone features.

use autodl_backend::kernels;
use autodl_backend::kernels::relu;
use burn::config::Config;
use burn::module::Module;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};

/// Shape of an [`Fpn`].
#[derive(Config, Debug)]
pub struct FpnConfig {
    /// Channels of each input level, finest first.
    pub in_channels: Vec<usize>,
    /// Channels of every output level.
    pub channels: usize,
    /// Coarser levels added after the last input by stride-2 convolutions (RetinaNet's P6, P7).
    #[config(default = 1)]
    pub extra_levels: usize,
}

/// Lateral 1x1 convolutions, a top-down pathway with nearest-neighbour upsampling, 3x3 output
/// convolutions, and stride-2 extra levels.
#[derive(Module, Debug)]
pub struct Fpn<B: Backend> {
    lateral: Vec<Conv2d<B>>,
    output: Vec<Conv2d<B>>,
    extra: Vec<Conv2d<B>>,
}

fn conv3<B: Backend>(input: usize, output: usize, stride: usize, device: &B::Device) -> Conv2d<B> {
    Conv2dConfig::new([input, output], [3, 3])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .init(device)
}

impl FpnConfig {
    /// Builds the network.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Fpn<B> {
        let c = self.channels;
        Fpn {
            lateral: self
                .in_channels
                .iter()
                .map(|&i| Conv2dConfig::new([i, c], [1, 1]).init(device))
                .collect(),
            output: self
                .in_channels
                .iter()
                .map(|_| conv3(c, c, 1, device))
                .collect(),
            extra: (0..self.extra_levels)
                .map(|_| conv3(c, c, 2, device))
                .collect(),
        }
    }
}

impl<B: Backend> Fpn<B> {
    /// Pyramid levels, finest first: one per input, then the extra levels.
    pub fn forward(&self, features: Vec<Tensor<B, 4>>) -> Vec<Tensor<B, 4>> {
        let lateral: Vec<Tensor<B, 4>> = features
            .into_iter()
            .zip(&self.lateral)
            .map(|(f, l)| kernels::conv2d(l, f))
            .collect();
        let mut merged: Vec<Tensor<B, 4>> = Vec::with_capacity(lateral.len());
        for lat in lateral.into_iter().rev() {
            let next = match merged.last() {
                Some(coarser) => {
                    let [_, _, h, w] = lat.dims();
                    let up = interpolate(
                        coarser.clone(),
                        [h, w],
                        InterpolateOptions::new(InterpolateMode::Nearest),
                    );
                    lat + up
                }
                None => lat,
            };
            merged.push(next);
        }
        merged.reverse();
        let mut out: Vec<Tensor<B, 4>> = merged
            .into_iter()
            .zip(&self.output)
            .map(|(m, o)| kernels::conv2d(o, m))
            .collect();
        for (i, conv) in self.extra.iter().enumerate() {
            let Some(last) = out.last().cloned() else {
                break;
            };
            // RetinaNet applies ReLU before P7 but not before P6.
            let input = if i == 0 { last } else { relu(last) };
            out.push(kernels::conv2d(conv, input));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use autodl_backend::burn::backend::Flex;

    #[test]
    fn levels_halve_in_size() {
        let device = Default::default();
        let fpn = FpnConfig::new(vec![8, 16, 32], 12)
            .with_extra_levels(2)
            .init::<Flex>(&device);
        let feats = vec![
            Tensor::zeros([2, 8, 16, 20], &device),
            Tensor::zeros([2, 16, 8, 10], &device),
            Tensor::zeros([2, 32, 4, 5], &device),
        ];
        let dims: Vec<[usize; 4]> = fpn.forward(feats).iter().map(|t| t.dims()).collect();
        assert_eq!(
            dims,
            vec![
                [2, 12, 16, 20],
                [2, 12, 8, 10],
                [2, 12, 4, 5],
                [2, 12, 2, 3],
                [2, 12, 1, 2]
            ]
        );
    }
}
