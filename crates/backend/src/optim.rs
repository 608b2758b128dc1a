//! Adam and AdamW as Burn optimisers whose update is one kernel call per parameter
//! ([`crate::kernels::adam_update`]): one parallel pass on flex, Burn's own ops elsewhere.
//!
//! The update equals Burn's `Adam` and `AdamW` (same defaults, same operations in the same
//! order, the same state record), so swapping them changes speed, not results.

use burn::module::AutodiffModule;
use burn::optim::{
    AdaptiveMomentumState, LearningRate, SimpleOptimizer, adaptor::OptimizerAdaptor,
};
use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};

use crate::kernels::{AdamStep, adam_update};

/// Adam (an optional L2 penalty added to the gradient) or AdamW (decoupled weight decay).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Adam {
    beta_1: f32,
    beta_2: f32,
    epsilon: f32,
    penalty: Option<f32>,
    weight_decay: Option<f32>,
}

impl Default for Adam {
    fn default() -> Adam {
        Adam::new()
    }
}

impl Adam {
    /// Burn's `AdamConfig::new()`: betas 0.9 and 0.999, epsilon 1e-5, no weight decay.
    pub fn new() -> Adam {
        Adam {
            beta_1: 0.9,
            beta_2: 0.999,
            epsilon: 1e-5,
            penalty: None,
            weight_decay: None,
        }
    }

    /// Burn's `AdamWConfig::new().with_weight_decay(weight_decay)`.
    pub fn adamw(weight_decay: f32) -> Adam {
        Adam {
            weight_decay: Some(weight_decay),
            ..Adam::new()
        }
    }

    /// With Adam's L2 penalty (Burn's `AdamConfig::with_weight_decay`).
    pub fn with_penalty(self, penalty: f32) -> Adam {
        Adam {
            penalty: Some(penalty),
            ..self
        }
    }

    /// As a Burn optimiser for module `M`.
    pub fn init<B: AutodiffBackend, M: AutodiffModule<B>>(self) -> OptimizerAdaptor<Adam, M, B> {
        OptimizerAdaptor::from(self)
    }

    /// The coefficients of step `time` (1 for the first) at learning rate `lr`, rounded to
    /// `f32` where Burn's ops round them.
    fn coefficients(&self, lr: LearningRate, time: usize) -> AdamStep {
        let t = i32::try_from(time).unwrap_or(i32::MAX);
        AdamStep {
            lr: lr as f32,
            beta_1: self.beta_1,
            beta_2: self.beta_2,
            epsilon: self.epsilon,
            correction_1: 1.0 - self.beta_1.powi(t),
            correction_2: 1.0 - self.beta_2.powi(t),
            penalty: self.penalty,
            decay: self
                .weight_decay
                .filter(|&wd| lr * f64::from(wd) != 0.0)
                .map(|wd| (1.0 - lr * f64::from(wd)) as f32),
        }
    }
}

impl<B: Backend> SimpleOptimizer<B> for Adam {
    type State<const D: usize> = AdaptiveMomentumState<B, D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<B, D>,
        grad: Tensor<B, D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<B, D>, Option<Self::State<D>>) {
        let time = state.as_ref().map_or(1, |s| s.time + 1);
        let moments = state.map(|s| [s.moment_1, s.moment_2]);
        let [tensor, moment_1, moment_2] =
            adam_update(tensor, grad, moments, self.coefficients(lr, time));
        (
            tensor,
            Some(AdaptiveMomentumState::new(time, moment_1, moment_2)),
        )
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &B::Device) -> Self::State<D> {
        state.to_device(device)
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use burn::backend::{Autodiff, Flex};
    use burn::module::Param;
    use burn::nn::{Linear, LinearConfig};
    use burn::optim::decay::WeightDecayConfig;
    use burn::optim::{AdamConfig, AdamWConfig, GradientsParams, Optimizer};
    use burn::tensor::Tensor;

    use super::Adam;

    type B = Autodiff<Flex>;

    /// A fixed pseudo-random `[rows, cols]` tensor (the global random state is shared by tests
    /// running in parallel, so it is not used here).
    fn fixed(rows: usize, cols: usize, seed: usize) -> Tensor<B, 2> {
        let values: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 7919 + seed * 104_729) % 997) as f32 / 997.0 - 0.5)
            .collect();
        Tensor::<B, 1>::from_floats(values.as_slice(), &Default::default()).reshape([rows, cols])
    }

    /// The weights of a linear layer after `steps` optimiser steps on a regression loss.
    fn train<O: Optimizer<Linear<B>, B>>(mut optim: O, seed: usize, steps: usize) -> Vec<f32> {
        let mut linear: Linear<B> = LinearConfig::new(37, 29)
            .with_bias(false)
            .init(&Default::default());
        linear.weight = Param::from_tensor(fixed(37, 29, seed));
        for step in 0..steps {
            let x = fixed(5, 37, seed + step + 1).mul_scalar(1.0 + step as f32);
            let loss = linear.forward(x).powf_scalar(2.0).mean();
            let grads = GradientsParams::from_grads(loss.backward(), &linear);
            linear = optim.step(1e-2, linear, grads);
        }
        linear
            .weight
            .val()
            .into_data()
            .to_vec::<f32>()
            .unwrap_or_default()
    }

    fn assert_same(ours: &[f32], burns: &[f32]) {
        assert_eq!(ours.len(), burns.len());
        for (i, (a, b)) in ours.iter().zip(burns).enumerate() {
            assert!(
                (a - b).abs() <= 1e-6 * b.abs().max(1.0),
                "weight {i}: ours {a}, Burn's {b}"
            );
        }
    }

    #[test]
    fn adamw_equals_burns() {
        let ours = train(Adam::adamw(1e-2).init::<B, Linear<B>>(), 7, 4);
        let burns = train(
            AdamWConfig::new()
                .with_weight_decay(1e-2)
                .init::<B, Linear<B>>(),
            7,
            4,
        );
        assert_same(&ours, &burns);
    }

    #[test]
    fn adam_with_penalty_equals_burns() {
        let ours = train(Adam::new().with_penalty(1e-3).init::<B, Linear<B>>(), 11, 4);
        let config = AdamConfig::new().with_weight_decay(Some(WeightDecayConfig::new(1e-3)));
        let burns = train(config.init::<B, Linear<B>>(), 11, 4);
        assert_same(&ours, &burns);
    }
}
