//! Pixel-classification losses: cross-entropy with an ignore index, optional class weights,
//! focal modulation and a soft-dice term.

use autodl_backend::kernels::log_softmax_channels;
use burn::tensor::activation::softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

/// Which loss terms to use.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LossOptions {
    /// Focal-loss exponent; 0 is plain cross-entropy.
    pub focal_gamma: f32,
    /// Share of the soft-dice loss in the total, 0 to 1.
    pub dice_fraction: f32,
}

/// Mean cross-entropy over the pixels whose target is not negative.
///
/// `logits` is `[N, C, H, W]`, `targets` is `[N, H, W]` with class indices, negative meaning
/// ignore. Returns a one-element tensor; zero when every pixel is ignored.
pub fn masked_cross_entropy<B: Backend>(
    logits: Tensor<B, 4>,
    targets: Tensor<B, 3, Int>,
) -> Tensor<B, 1> {
    seg_loss(logits, targets, None, None, &LossOptions::default())
}

/// The training loss: (1 - dice_fraction) x (weighted, optionally focal) cross-entropy +
/// dice_fraction x soft dice. `class_weights` is `[C]`; `one_hot` is `[N, C, H, W]` and is
/// needed only when the dice term is on. Ignored pixels (negative targets) count in neither.
pub fn seg_loss<B: Backend>(
    logits: Tensor<B, 4>,
    targets: Tensor<B, 3, Int>,
    class_weights: Option<Tensor<B, 1>>,
    one_hot: Option<Tensor<B, 4>>,
    opts: &LossOptions,
) -> Tensor<B, 1> {
    let [n, _, h, w] = logits.dims();
    let keep = targets.clone().greater_equal_elem(0).float();
    let safe = targets.clamp_min(0);
    let logp = log_softmax_channels(logits.clone());
    let picked = logp
        .gather(1, safe.clone().unsqueeze_dim::<4>(1))
        .squeeze_dim::<3>(1);
    let mut weight = keep.clone();
    if let Some(cw) = &class_weights {
        let per_pixel = cw
            .clone()
            .select(0, safe.reshape([n * h * w]))
            .reshape([n, h, w]);
        weight = weight * per_pixel;
    }
    let mut nll = picked.clone().neg();
    if opts.focal_gamma > 0.0 {
        let p = picked.exp();
        nll = nll * (p.neg() + 1.0).clamp_min(0.0).powf_scalar(opts.focal_gamma);
    }
    let ce = (nll * weight.clone()).sum() / weight.sum().clamp_min(1e-6);
    match one_hot {
        Some(y) if opts.dice_fraction > 0.0 => {
            let mask = keep.unsqueeze_dim::<4>(1);
            let p = softmax(logits, 1) * mask.clone();
            let y = y * mask;
            let inter = (p.clone() * y.clone()).sum_dim(3).sum_dim(2).sum_dim(0);
            let denom = (p.sum_dim(3).sum_dim(2).sum_dim(0) + y.sum_dim(3).sum_dim(2).sum_dim(0))
                .clamp_min(1e-6);
            let dice = (inter * 2.0 / denom).mean();
            let f = opts.dice_fraction as f64;
            ce * (1.0 - f) + (dice.neg() + 1.0).reshape([1]) * f
        }
        _ => ce,
    }
}

/// Class weights that balance rare classes: median frequency over each class's frequency,
/// clipped to [0.1, 10]. Absent classes get weight 1.
pub fn balanced_weights(pixel_counts: &[u64]) -> Vec<f32> {
    let mut present: Vec<u64> = pixel_counts.iter().copied().filter(|&c| c > 0).collect();
    if present.is_empty() {
        return vec![1.0; pixel_counts.len()];
    }
    present.sort_unstable();
    let median = present[present.len() / 2] as f64;
    pixel_counts
        .iter()
        .map(|&c| {
            if c == 0 {
                1.0
            } else {
                (median / c as f64).clamp(0.1, 10.0) as f32
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rare_classes_weigh_more() {
        let w = balanced_weights(&[1000, 10, 100, 0]);
        assert!(w[1] > w[2] && w[2] > w[0]);
        assert_eq!(w[3], 1.0);
        assert!((w[2] - 1.0).abs() < 1e-6, "the median class has weight 1");
    }
}
