//! Losses.

use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

/// Mean cross-entropy over the pixels whose target is not negative.
///
/// `logits` is `[N, C, H, W]`, `targets` is `[N, H, W]` with class indices, negative meaning
/// ignore. Returns a one-element tensor; zero when every pixel is ignored.
pub fn masked_cross_entropy<B: Backend>(
    logits: Tensor<B, 4>,
    targets: Tensor<B, 3, Int>,
) -> Tensor<B, 1> {
    let keep = targets.clone().greater_equal_elem(0);
    let safe = targets.clamp_min(0).unsqueeze_dim::<4>(1);
    let picked = log_softmax(logits, 1).gather(1, safe).squeeze_dim::<3>(1);
    let weight = keep.float();
    let count = weight.clone().sum().clamp_min(1.0);
    (picked * weight).sum().neg() / count
}
