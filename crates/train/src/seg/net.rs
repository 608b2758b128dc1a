//! The network API of pixel classifiers.

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

/// A network that maps `[N, bands, H, W]` to per-pixel logits `[N, classes, H, W]`.
pub trait SegNet<B: Backend>: Module<B> {
    /// Logits for a batch. `H` and `W` are multiples of the family's size multiple.
    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4>;
}
