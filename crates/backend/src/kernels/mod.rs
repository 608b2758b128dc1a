//! Our own training kernels, as a Burn backend extension.
//!
//! [`KernelBackend`] is a trait over Burn's `Backend` whose default methods are Burn's stock
//! ops. Flex implements it with the kernels in [`cpu`] (convolution backward passes as GEMMs
//! over im2col tiles, direct depthwise gradients, batch norm in two passes each way), and
//! `Autodiff<B>` implements its forward methods by recording our own backward step, which calls
//! `B`'s backward methods. Any other backend (CUDA) keeps Burn's own kernels.
//!
//! Model code stays generic over `B: Backend` and reaches the extension through
//! [`conv2d`] and [`batch_norm`], which take Burn's own `Conv2d` and `BatchNorm` modules (so
//! records and pretrained weights are unchanged) and route to the extension when `B` is flex
//! (with or without autodiff). Routing by type rather than by a trait bound keeps the bound off
//! every model, record and function in the workspace; the routing is exact (a `TypeId`
//! comparison) and every other backend falls through to the module's own `forward`.
//!
//! `AUTODL_KERNELS=stock` turns the extension off (Burn's stock ops everywhere), for
//! comparison and for benchmarks.

mod autodiff;
pub mod cpu;
pub use cpu::AdamStep;
#[cfg(feature = "flex")]
mod flex;
mod stock;

#[cfg(feature = "flex")]
use std::any::{Any, TypeId};
use std::sync::OnceLock;

use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, GroupNorm};
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Tensor, TensorPrimitive};

/// How a convolution is applied: stride, padding before and after (possibly asymmetric),
/// dilation and groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvArgs {
    /// Stride along height and width.
    pub stride: [usize; 2],
    /// Zero padding before the first row and column (top, left).
    pub pad_begin: [usize; 2],
    /// Zero padding after the last row and column (bottom, right).
    pub pad_end: [usize; 2],
    /// Dilation along height and width.
    pub dilation: [usize; 2],
    /// Groups.
    pub groups: usize,
}

impl ConvArgs {
    /// The arguments Burn's `Conv2d::forward` would use for an input of height `h` and width
    /// `w` (its "same" padding depends on the input size).
    pub fn of<B: Backend>(conv: &Conv2d<B>, [h, w]: [usize; 2]) -> ConvArgs {
        let ((top, bottom), (left, right)) = match &conv.padding {
            PaddingConfig2d::Valid => ((0, 0), (0, 0)),
            PaddingConfig2d::Same => (
                same_padding(conv.kernel_size[0], conv.stride[0], h),
                same_padding(conv.kernel_size[1], conv.stride[1], w),
            ),
            PaddingConfig2d::Explicit(top, left, bottom, right) => {
                ((*top, *bottom), (*left, *right))
            }
        };
        ConvArgs {
            stride: conv.stride,
            pad_begin: [top, left],
            pad_end: [bottom, right],
            dilation: conv.dilation,
            groups: conv.groups,
        }
    }

    /// Whether the padding after equals the padding before on both axes.
    pub fn is_symmetric(&self) -> bool {
        self.pad_begin == self.pad_end
    }

    /// The output height and width for an input of `[h, w]` and a `[kh, kw]` kernel.
    pub fn output_size(&self, [h, w]: [usize; 2], [kh, kw]: [usize; 2]) -> [usize; 2] {
        let out = |i: usize, size: usize, k: usize| {
            let padded = size + self.pad_begin[i] + self.pad_end[i];
            let span = self.dilation[i] * (k.max(1) - 1) + 1;
            padded.saturating_sub(span) / self.stride[i] + 1
        };
        [out(0, h, kh), out(1, w, kw)]
    }
}

/// Burn's "same" padding (`burn-nn`'s `calculate_same_padding`): the total that keeps
/// `ceil(size / stride)` outputs, the odd pixel after.
fn same_padding(kernel: usize, stride: usize, size: usize) -> (usize, usize) {
    let out = size.div_ceil(stride);
    let total = if out > 0 {
        ((out - 1) * stride + kernel).saturating_sub(size)
    } else {
        0
    };
    (total / 2, total - total / 2)
}

/// How a max pooling is applied (no dilation, floor mode: what the backbones use).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolArgs {
    /// Window height and width.
    pub kernel: [usize; 2],
    /// Stride along height and width.
    pub stride: [usize; 2],
    /// Padding on each side (padded positions never win).
    pub padding: [usize; 2],
}

impl PoolArgs {
    /// The output height and width for an input of `[h, w]`.
    pub fn output_size(&self, [h, w]: [usize; 2]) -> [usize; 2] {
        let out = |i: usize, size: usize| {
            (size + 2 * self.padding[i]).saturating_sub(self.kernel[i]) / self.stride[i].max(1) + 1
        };
        [out(0, h), out(1, w)]
    }
}

/// Gradients of a convolution, each present when asked for.
#[derive(Debug)]
pub struct ConvGrads<B: Backend> {
    /// With respect to the input.
    pub input: Option<FloatTensor<B>>,
    /// With respect to the weight.
    pub weight: Option<FloatTensor<B>>,
}

/// A training-mode batch-norm forward pass: the output and the batch statistics it used.
#[derive(Debug)]
pub struct BatchNormForward<B: Backend> {
    /// The normalised, scaled and shifted input.
    pub output: FloatTensor<B>,
    /// Per-channel batch mean, `[C]` (not tracked by autodiff).
    pub mean: FloatTensor<B>,
    /// Per-channel biased batch variance, `[C]` (not tracked by autodiff).
    pub var: FloatTensor<B>,
}

/// Gradients of a training-mode batch norm.
#[derive(Debug)]
pub struct BatchNormGrads<B: Backend> {
    /// With respect to the input.
    pub input: FloatTensor<B>,
    /// With respect to the scale `gamma`, `[C]`.
    pub gamma: FloatTensor<B>,
    /// With respect to the shift `beta`, `[C]`.
    pub beta: FloatTensor<B>,
}

/// A group-norm forward pass: the output and the statistics it used.
#[derive(Debug)]
pub struct GroupNormForward<B: Backend> {
    /// The normalised, scaled and shifted input.
    pub output: FloatTensor<B>,
    /// Mean per sample and group, `[N * G]` (not tracked by autodiff).
    pub mean: FloatTensor<B>,
    /// `1 / sqrt(var + epsilon)` per sample and group, `[N * G]` (not tracked by autodiff).
    pub rstd: FloatTensor<B>,
}

/// The kernel extension. Every method defaults to Burn's stock ops, so a backend opts in by
/// overriding what it has faster kernels for.
pub trait KernelBackend: Backend {
    /// A 2-D convolution, `x: [N, C_in, H, W]`, `weight: [C_out, C_in / groups, KH, KW]`.
    fn kernel_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
        args: ConvArgs,
    ) -> FloatTensor<Self> {
        stock::kernel_conv2d::<Self>(x, weight, bias, args)
    }

    /// The input and weight gradients of [`KernelBackend::kernel_conv2d`] for the output
    /// gradient `dy`; `want` says which of the two to compute.
    fn kernel_conv2d_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        args: ConvArgs,
        want: [bool; 2],
    ) -> ConvGrads<Self> {
        stock::kernel_conv2d_backward::<Self>(x, weight, dy, args, want)
    }

    /// The bias gradient of a convolution: `dy` summed over batch and positions.
    fn kernel_conv2d_bias_backward(dy: FloatTensor<Self>) -> FloatTensor<Self> {
        stock::kernel_conv2d_bias_backward::<Self>(dy)
    }

    /// Batch norm with the batch's own statistics, `x: [N, C, H, W]`, its output clamped to
    /// `clamp` when given (ReLU is `[0, inf]`, ReLU6 `[0, 6]`): the activation fused into the
    /// norm's passes instead of two more over the activations each way.
    fn kernel_batch_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
        clamp: Option<[f32; 2]>,
    ) -> BatchNormForward<Self> {
        stock::kernel_batch_norm::<Self>(x, gamma, beta, epsilon, clamp)
    }

    /// The gradients of [`KernelBackend::kernel_batch_norm`] for the output gradient `dy`,
    /// given the statistics the forward pass used.
    #[allow(clippy::too_many_arguments)]
    fn kernel_batch_norm_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        var: FloatTensor<Self>,
        epsilon: f64,
        clamp: Option<[f32; 2]>,
        dy: FloatTensor<Self>,
    ) -> BatchNormGrads<Self> {
        stock::kernel_batch_norm_backward::<Self>(x, gamma, beta, mean, var, epsilon, clamp, dy)
    }

    /// Group norm with `groups` groups and a per-channel scale and shift, `x: [N, C, H, W]`.
    fn kernel_group_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        groups: usize,
        epsilon: f64,
    ) -> GroupNormForward<Self> {
        stock::kernel_group_norm::<Self>(x, gamma, beta, groups, epsilon)
    }

    /// The gradients of [`KernelBackend::kernel_group_norm`] for the output gradient `dy`,
    /// given the statistics the forward pass used (`gamma` and `beta` as in batch norm).
    fn kernel_group_norm_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        rstd: FloatTensor<Self>,
        groups: usize,
        dy: FloatTensor<Self>,
    ) -> BatchNormGrads<Self> {
        stock::kernel_group_norm_backward::<Self>(x, gamma, mean, rstd, groups, dy)
    }

    /// A 2-D max pooling, `x: [N, C, H, W]`.
    fn kernel_max_pool2d(x: FloatTensor<Self>, args: PoolArgs) -> FloatTensor<Self> {
        stock::kernel_max_pool2d::<Self>(x, args)
    }

    /// The input gradient of [`KernelBackend::kernel_max_pool2d`]: `dy` routed to the
    /// maximum of each window.
    fn kernel_max_pool2d_backward(
        x: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        args: PoolArgs,
    ) -> FloatTensor<Self> {
        stock::kernel_max_pool2d_backward::<Self>(x, dy, args)
    }

    /// A bilinear resize of `x: [N, C, H, W]` to `[N, C, size[0], size[1]]` (Burn's
    /// `interpolate` in bilinear mode).
    fn kernel_resize_bilinear(
        x: FloatTensor<Self>,
        size: [usize; 2],
        align_corners: bool,
    ) -> FloatTensor<Self> {
        stock::kernel_resize_bilinear::<Self>(x, size, align_corners)
    }

    /// The input gradient of [`KernelBackend::kernel_resize_bilinear`] for the output
    /// gradient `dy` (`x` gives the input's shape).
    fn kernel_resize_bilinear_backward(
        x: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        align_corners: bool,
    ) -> FloatTensor<Self> {
        stock::kernel_resize_bilinear_backward::<Self>(x, dy, align_corners)
    }

    /// `log_softmax(x, 1)` of `x: [N, C, H, W]`: log-probabilities over the channels.
    fn kernel_log_softmax_channels(x: FloatTensor<Self>) -> FloatTensor<Self> {
        stock::kernel_log_softmax_channels::<Self>(x)
    }

    /// The input gradient of [`KernelBackend::kernel_log_softmax_channels`] from its output `y`
    /// and the output gradient `dy`: `dy - exp(y) * sum_c(dy)`.
    fn kernel_log_softmax_channels_backward(
        y: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        stock::kernel_log_softmax_channels_backward::<Self>(y, dy)
    }

    /// `a` and `b` (`[N, C_a, H, W]`, `[N, C_b, H, W]`) concatenated along the channels.
    fn kernel_cat_channels(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
        stock::kernel_cat_channels::<Self>(a, b)
    }

    /// The gradients of [`KernelBackend::kernel_cat_channels`]: `dy`'s first `channels`
    /// channels and the rest, each its own contiguous tensor (Burn's own concatenation hands
    /// back views into `dy`, which flex adds into other gradients element by element).
    fn kernel_cat_channels_backward(
        dy: FloatTensor<Self>,
        channels: usize,
    ) -> [FloatTensor<Self>; 2] {
        stock::kernel_cat_channels_backward::<Self>(dy, channels)
    }

    /// One Adam or AdamW update of a parameter from its gradient: the new parameter and first
    /// and second moments. `moments` is `None` on the first step (zero moments). Optimisers
    /// run on the inner backend, so autodiff never records it.
    fn kernel_adam(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        moments: Option<[FloatTensor<Self>; 2]>,
        step: AdamStep,
    ) -> [FloatTensor<Self>; 3] {
        stock::kernel_adam::<Self>(param, grad, moments, step)
    }

    /// `x` clamped to `[min, max]` (ReLU6 is `[0, 6]`).
    fn kernel_clamp(x: FloatTensor<Self>, min: f32, max: f32) -> FloatTensor<Self> {
        stock::kernel_clamp::<Self>(x, min, max)
    }

    /// The input gradient of [`KernelBackend::kernel_clamp`] from its output `y`: `dy` where
    /// `min < y < max`, zero elsewhere.
    fn kernel_clamp_backward(
        y: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        min: f32,
        max: f32,
    ) -> FloatTensor<Self> {
        stock::kernel_clamp_backward::<Self>(y, dy, min, max)
    }
}

/// One Adam or AdamW update ([`KernelBackend::kernel_adam`]) of a parameter tensor of any
/// backend: on flex one parallel pass, elsewhere Burn's stock ops in the order Burn's own
/// optimisers apply them. Gives the new parameter, first and second moments.
pub fn adam_update<B: Backend, const D: usize>(
    param: Tensor<B, D>,
    grad: Tensor<B, D>,
    moments: Option<[Tensor<B, D>; 2]>,
    step: AdamStep,
) -> [Tensor<B, D>; 3] {
    #[cfg(feature = "flex")]
    if enabled() && is::<B, burn::backend::Flex>() {
        type F = burn::backend::Flex;
        let (Ok(param), Ok(grad), Ok(moments)) = (
            cast::<_, Tensor<F, D>>(param),
            cast::<_, Tensor<F, D>>(grad),
            cast::<_, Option<[Tensor<F, D>; 2]>>(moments),
        ) else {
            unreachable!("B is flex")
        };
        let out = F::kernel_adam(
            float(param),
            float(grad),
            moments.map(|m| m.map(float)),
            step,
        )
        .map(tensor::<F, D>);
        return match cast::<_, [Tensor<B, D>; 3]>(out) {
            Ok(out) => out,
            Err(_) => unreachable!("B is flex"),
        };
    }
    stock::kernel_adam::<B>(
        float(param),
        float(grad),
        moments.map(|m| m.map(float)),
        step,
    )
    .map(tensor::<B, D>)
}

/// Whether the extension is on: unless `AUTODL_KERNELS=stock`.
pub fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| {
        !matches!(
            std::env::var("AUTODL_KERNELS").as_deref(),
            Ok("stock") | Ok("burn")
        )
    })
}

/// Moves `value` into type `U` when `T` is `U`; gives it back otherwise.
#[cfg(feature = "flex")]
fn cast<T: 'static, U: 'static>(value: T) -> Result<U, T> {
    let mut slot = Some(value);
    if let Some(target) = (&mut slot as &mut dyn Any).downcast_mut::<Option<U>>()
        && let Some(moved) = target.take()
    {
        return Ok(moved);
    }
    match slot {
        Some(value) => Err(value),
        None => unreachable!("a value is moved out only on success"),
    }
}

#[cfg(feature = "flex")]
fn is<T: 'static, U: 'static>() -> bool {
    TypeId::of::<T>() == TypeId::of::<U>()
}

/// Applies Burn's `conv` to `x` through [`KernelBackend`] where `B` has it (flex, with or
/// without autodiff), and through `conv.forward` otherwise. Same result, same record.
pub fn conv2d<B: Backend>(conv: &Conv2d<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    #[cfg(feature = "flex")]
    if enabled() && is::<B, flex::AutodiffFlex>() {
        return route::<B, flex::AutodiffFlex, _, _>((conv, x), |(conv, x)| conv2d_with(conv, x));
    }
    #[cfg(feature = "flex")]
    if enabled() && is::<B, burn::backend::Flex>() {
        return route::<B, burn::backend::Flex, _, _>((conv, x), |(conv, x)| conv2d_with(conv, x));
    }
    conv.forward(x)
}

/// `conv` then batch norm `bn`. In training, batch norm uses the batch's statistics and
/// updates the running ones ([`batch_norm`]). When `frozen`, or on a backend without autodiff
/// (where Burn's own `BatchNorm` normalises with the running statistics too), the statistics
/// are fixed and the norm is a per-channel scale and shift folded into the convolution
/// ([`conv2d_affine`]; with `AUTODL_KERNELS=stock`, a broadcast multiply and add after the
/// convolution); frozen, it leaves the running statistics alone even on an autodiff backend. Gradients still flow to the input, and to `gamma` and `beta` unless they were
/// marked `no_grad`.
pub fn conv_batch_norm<B: Backend>(
    conv: &Conv2d<B>,
    bn: &BatchNorm<B>,
    x: Tensor<B, 4>,
    frozen: bool,
) -> Tensor<B, 4> {
    let device = x.device();
    if !frozen && B::ad_enabled(&device) {
        return batch_norm(bn, conv2d(conv, x));
    }
    // `value_sync` folds in an update still pending from an earlier training-mode forward.
    let mean = bn.running_mean.value_sync().to_device(&device);
    let var = bn.running_var.value_sync().to_device(&device);
    let scale = bn.gamma.val().div(var.add_scalar(bn.epsilon).sqrt());
    let shift = bn.beta.val().sub(mean.mul(scale.clone()));
    if !enabled() {
        return conv_then_affine(conv, x, scale, shift);
    }
    conv2d_affine(conv, x, scale, shift)
}

/// The stock composition of [`conv2d_affine`]: the convolution, then a broadcast multiply and
/// add, as Burn's modules would compute it.
fn conv_then_affine<B: Backend>(
    conv: &Conv2d<B>,
    x: Tensor<B, 4>,
    scale: Tensor<B, 1>,
    shift: Tensor<B, 1>,
) -> Tensor<B, 4> {
    let [co, ..] = conv.weight.dims();
    conv.forward(x)
        .mul(scale.reshape([1, co, 1, 1]))
        .add(shift.reshape([1, co, 1, 1]))
}

/// `conv` followed by a per-output-channel affine map, `y = conv(x) * scale + shift`, as one
/// convolution: `scale` is folded into the weight and `shift` into the bias (the small weight
/// tensors carry the products, and autodiff takes their gradients back to `scale` and
/// `shift`). This is batch norm with fixed statistics (frozen, or in inference) at no cost
/// beyond the convolution, where the broadcast multiply and add would each be a full pass
/// over the activations forward and backward.
pub fn conv2d_affine<B: Backend>(
    conv: &Conv2d<B>,
    x: Tensor<B, 4>,
    scale: Tensor<B, 1>,
    shift: Tensor<B, 1>,
) -> Tensor<B, 4> {
    let dims = conv.weight.dims();
    let [co, ci, kh, kw] = dims;
    // `scale` spread over the weight's shape by an outer product with ones: a broadcasting
    // multiply takes flex's strided element-by-element path, forward and backward, which costs
    // more than the rest of a frozen backbone's norms; two tensors of one shape take its fast
    // path.
    let ones = Tensor::<B, 2>::ones([1, ci * kh * kw], &x.device());
    let spread = scale.clone().reshape([co, 1]).matmul(ones).reshape(dims);
    let weight = conv.weight.val().mul(spread);
    let bias = match &conv.bias {
        Some(b) => b.val().mul(scale).add(shift),
        None => shift,
    };
    let [_, _, h, w] = x.dims();
    let args = ConvArgs::of(conv, [h, w]);
    #[cfg(feature = "flex")]
    let (x, weight, bias) = match on_flex_conv::<B, flex::AutodiffFlex>(x, weight, bias, args) {
        Ok(y) => return y,
        Err(back) => back,
    };
    #[cfg(feature = "flex")]
    let (x, weight, bias) = match on_flex_conv::<B, burn::backend::Flex>(x, weight, bias, args) {
        Ok(y) => return y,
        Err(back) => back,
    };
    tensor(stock::kernel_conv2d::<B>(
        float(x),
        float(weight),
        Some(float(bias)),
        args,
    ))
}

/// The tensors of a convolution: input, weight and bias.
#[cfg(feature = "flex")]
type ConvTensors<B> = (Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 1>);

/// Runs [`KernelBackend::kernel_conv2d`] on `K` when the extension is on and `B` is `K`;
/// gives the tensors back otherwise.
#[cfg(feature = "flex")]
fn on_flex_conv<B: Backend, K: KernelBackend>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 4>,
    bias: Tensor<B, 1>,
    args: ConvArgs,
) -> Result<Tensor<B, 4>, ConvTensors<B>> {
    if !enabled() || !is::<B, K>() {
        return Err((x, weight, bias));
    }
    let (Ok(x), Ok(weight), Ok(bias)) = (
        cast::<_, Tensor<K, 4>>(x),
        cast::<_, Tensor<K, 4>>(weight),
        cast::<_, Tensor<K, 1>>(bias),
    ) else {
        unreachable!("B is K")
    };
    let y: Tensor<K, 4> = tensor(K::kernel_conv2d(
        float(x),
        float(weight),
        Some(float(bias)),
        args,
    ));
    match cast::<_, Tensor<B, 4>>(y) {
        Ok(y) => Ok(y),
        Err(_) => unreachable!("B is K"),
    }
}

/// Applies a batch norm as Burn's `BatchNorm::forward` does (batch statistics and a running
/// update on an autodiff backend, running statistics otherwise), through [`KernelBackend`]
/// where `B` has it.
pub fn batch_norm<B: Backend>(bn: &BatchNorm<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    #[cfg(feature = "flex")]
    if enabled() && is::<B, flex::AutodiffFlex>() {
        return route::<B, flex::AutodiffFlex, _, _>((bn, x), |(bn, x)| {
            batch_norm_train_with(bn, x, None)
        });
    }
    bn.forward(x)
}

/// [`batch_norm`] followed by a clamp to `[min, max]` ([`relu`] when that is `[0, inf]`). On
/// flex with autodiff the clamp is fused into the norm's passes forward and backward
/// ([`KernelBackend::kernel_batch_norm`]); elsewhere it is the norm, then the activation.
pub fn batch_norm_clamp<B: Backend>(
    bn: &BatchNorm<B>,
    x: Tensor<B, 4>,
    [min, max]: [f32; 2],
) -> Tensor<B, 4> {
    #[cfg(feature = "flex")]
    #[cfg(feature = "flex")]
    if enabled() && is::<B, flex::AutodiffFlex>() {
        return route::<B, flex::AutodiffFlex, _, _>((bn, x), |(bn, x)| {
            batch_norm_train_with(bn, x, Some([min, max]))
        });
    }
    activation(bn.forward(x), [min, max])
}

/// A clamp to `[min, max]`: [`relu`] for `[0, inf]`, [`clamp`] otherwise.
fn activation<B: Backend>(x: Tensor<B, 4>, [min, max]: [f32; 2]) -> Tensor<B, 4> {
    if min == 0.0 && max == f32::INFINITY {
        relu(x)
    } else {
        clamp(x, min, max)
    }
}

/// [`conv_batch_norm`] then a clamp to `[min, max]` (ReLU is `[0, inf]`, ReLU6 `[0, 6]`), the
/// clamp fused into the norm where [`batch_norm_clamp`] fuses it (training on flex).
pub fn conv_batch_norm_clamp<B: Backend>(
    conv: &Conv2d<B>,
    bn: &BatchNorm<B>,
    x: Tensor<B, 4>,
    frozen: bool,
    bounds: [f32; 2],
) -> Tensor<B, 4> {
    if !frozen && B::ad_enabled(&x.device()) {
        return batch_norm_clamp(bn, conv2d(conv, x), bounds);
    }
    activation(conv_batch_norm(conv, bn, x, frozen), bounds)
}

/// [`conv_batch_norm_clamp`] to `[0, inf]`: convolution, batch norm, ReLU.
pub fn conv_batch_norm_relu<B: Backend>(
    conv: &Conv2d<B>,
    bn: &BatchNorm<B>,
    x: Tensor<B, 4>,
    frozen: bool,
) -> Tensor<B, 4> {
    conv_batch_norm_clamp(conv, bn, x, frozen, [0.0, f32::INFINITY])
}

/// Applies Burn's `GroupNorm` to `x` through [`KernelBackend`] where `B` has it (flex, with or
/// without autodiff) and the norm is affine (as every head here uses it); through
/// `norm.forward` otherwise. Same result, same record.
pub fn group_norm<B: Backend>(norm: &GroupNorm<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    #[cfg(feature = "flex")]
    if enabled() && norm.affine && is::<B, flex::AutodiffFlex>() {
        return route::<B, flex::AutodiffFlex, _, _>((norm, x), |(norm, x)| {
            group_norm_with(norm, x)
        });
    }
    #[cfg(feature = "flex")]
    if enabled() && norm.affine && is::<B, burn::backend::Flex>() {
        return route::<B, burn::backend::Flex, _, _>((norm, x), |(norm, x)| {
            group_norm_with(norm, x)
        });
    }
    norm.forward(x)
}

/// [`group_norm`] on a backend with the extension (an affine norm; one without gamma and beta
/// takes the module's own forward).
pub fn group_norm_with<K: KernelBackend>(norm: &GroupNorm<K>, x: Tensor<K, 4>) -> Tensor<K, 4> {
    let (Some(gamma), Some(beta)) = (&norm.gamma, &norm.beta) else {
        return norm.forward(x);
    };
    let out = K::kernel_group_norm(
        float(x),
        float(gamma.val()),
        float(beta.val()),
        norm.num_groups,
        norm.epsilon,
    );
    tensor(out.output)
}

/// `x.clamp(min, max)` through [`KernelBackend`] where `B` has it: one pass forward and one
/// backward, where Burn's autodiff composes the clamp from masks and differentiates each.
pub fn clamp<B: Backend, const D: usize>(x: Tensor<B, D>, min: f32, max: f32) -> Tensor<B, D> {
    #[cfg(feature = "flex")]
    let x = match on_flex(x, |x| clamp_with(x, min, max)) {
        Ok(y) => return y,
        Err(x) => x,
    };
    x.clamp(min, max)
}

/// Burn's `max_pool2d(x, kernel, stride, padding, [1, 1], false)` through [`KernelBackend`]
/// where `B` has it.
pub fn max_pool2d<B: Backend>(
    x: Tensor<B, 4>,
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
) -> Tensor<B, 4> {
    #[cfg(feature = "flex")]
    let x = match on_flex(x, |x| {
        let args = PoolArgs {
            kernel,
            stride,
            padding,
        };
        tensor(<flex::AutodiffFlex as KernelBackend>::kernel_max_pool2d(
            float(x),
            args,
        ))
    }) {
        Ok(y) => return y,
        Err(x) => x,
    };
    burn::tensor::module::max_pool2d(x, kernel, stride, padding, [1, 1], false)
}

/// `Tensor::cat(parts, 1)` of 4-D tensors. Two parts on flex with autodiff take
/// [`KernelBackend::kernel_cat_channels`], whose backward pass gives contiguous gradients;
/// otherwise Burn's own concatenation.
pub fn cat_channels<B: Backend>(parts: Vec<Tensor<B, 4>>) -> Tensor<B, 4> {
    #[cfg(feature = "flex")]
    let mut parts = parts;
    #[cfg(feature = "flex")]
    if enabled() && parts.len() == 2 && is::<B, flex::AutodiffFlex>() {
        type K = flex::AutodiffFlex;
        let (b, a) = (parts.pop(), parts.pop());
        let (Some(Ok(a)), Some(Ok(b))) = (
            a.map(cast::<_, Tensor<K, 4>>),
            b.map(cast::<_, Tensor<K, 4>>),
        ) else {
            unreachable!("B is K and there are two parts")
        };
        let y: Tensor<K, 4> = tensor(K::kernel_cat_channels(float(a), float(b)));
        return match cast::<_, Tensor<B, 4>>(y) {
            Ok(y) => y,
            Err(_) => unreachable!("B is K"),
        };
    }
    Tensor::cat(parts, 1)
}

/// A bilinear resize of `x` to `[h, w]`, as Burn's `interpolate` in bilinear mode computes it.
/// On flex (with or without autodiff) through [`KernelBackend`]: per-axis taps computed once,
/// planes in parallel, forward and backward (flex's own backward runs one plane after another).
/// On any other backend as two products with the per-axis interpolation matrices, whose
/// gradient every backend has: Burn's CUDA backend has no backward pass for bilinear
/// `interpolate` (it panics), so a pixel classifier could not train there.
pub fn resize_bilinear<B: Backend>(
    x: Tensor<B, 4>,
    [h, w]: [usize; 2],
    align_corners: bool,
) -> Tensor<B, 4> {
    #[cfg(feature = "flex")]
    let x = match on_flex(x, |x| resize_bilinear_with(x, [h, w], align_corners)) {
        Ok(y) => return y,
        Err(x) => x,
    };
    #[cfg(feature = "flex")]
    let x = match on_backend::<B, burn::backend::Flex, 4, 4>(x, |x| {
        resize_bilinear_with(x, [h, w], align_corners)
    }) {
        Ok(y) => return y,
        Err(x) => x,
    };
    #[cfg(feature = "flex")]
    if is::<B, burn::backend::Flex>() || is::<B, flex::AutodiffFlex>() {
        // `AUTODL_KERNELS=stock`: flex's own op, forward and backward.
        return burn::tensor::module::interpolate(
            x,
            [h, w],
            burn::tensor::ops::InterpolateOptions::new(
                burn::tensor::ops::InterpolateMode::Bilinear,
            )
            .with_align_corners(align_corners),
        );
    }
    resize_by_products(x, [h, w], align_corners)
}

/// [`resize_bilinear`] on a backend with the extension.
pub fn resize_bilinear_with<K: KernelBackend>(
    x: Tensor<K, 4>,
    size: [usize; 2],
    align_corners: bool,
) -> Tensor<K, 4> {
    tensor(K::kernel_resize_bilinear(float(x), size, align_corners))
}

/// A bilinear resize as `R_h · X · R_wᵀ` per plane, from 2-D matrix products and transposes
/// only, so that its gradient exists on every backend.
pub fn resize_by_products<B: Backend>(
    x: Tensor<B, 4>,
    [oh, ow]: [usize; 2],
    align_corners: bool,
) -> Tensor<B, 4> {
    let [n, c, h, w] = x.dims();
    if [h, w] == [oh, ow] {
        return x;
    }
    let device = x.device();
    let matrix = |input: usize, output: usize| {
        let m = cpu::bilinear_matrix(input, output, align_corners);
        Tensor::<B, 2>::from_data(burn::tensor::TensorData::new(m, [output, input]), &device)
    };
    let planes = n * c;
    // Along the width: [planes * h, w] · R_wᵀ [w, ow].
    let x = x.reshape([planes * h, w]).matmul(matrix(w, ow).transpose());
    // Along the height, on the transposed planes: [planes * ow, h] · R_hᵀ [h, oh].
    let x = x
        .reshape([planes, h, ow])
        .swap_dims(1, 2)
        .reshape([planes * ow, h]);
    let x = x.matmul(matrix(h, oh).transpose());
    x.reshape([planes, ow, oh])
        .swap_dims(1, 2)
        .reshape([n, c, oh, ow])
}

/// `log_softmax(x, 1)` (log-probabilities over the channels of `x: [N, C, H, W]`) through
/// [`KernelBackend`] where `B` has it: contiguous channel passes forward and backward, where
/// Burn composes it from broadcasts that flex runs through strided iteration.
pub fn log_softmax_channels<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    #[cfg(feature = "flex")]
    let x = match on_flex(x, |x| {
        tensor(<flex::AutodiffFlex as KernelBackend>::kernel_log_softmax_channels(float(x)))
    }) {
        Ok(y) => return y,
        Err(x) => x,
    };
    burn::tensor::activation::log_softmax(x, 1)
}

/// Runs `f` on the autodiff flex backend when `B` is that backend and the extension is on;
/// gives `x` back otherwise.
#[cfg(feature = "flex")]
fn on_flex<B: Backend, const D: usize, const E: usize>(
    x: Tensor<B, D>,
    f: impl FnOnce(Tensor<flex::AutodiffFlex, D>) -> Tensor<flex::AutodiffFlex, E>,
) -> Result<Tensor<B, E>, Tensor<B, D>> {
    on_backend(x, f)
}

/// Runs `f` on backend `K` when `B` is `K` and the extension is on; gives `x` back otherwise.
#[cfg(feature = "flex")]
fn on_backend<B: Backend, K: Backend, const D: usize, const E: usize>(
    x: Tensor<B, D>,
    f: impl FnOnce(Tensor<K, D>) -> Tensor<K, E>,
) -> Result<Tensor<B, E>, Tensor<B, D>> {
    if !enabled() || !is::<B, K>() {
        return Err(x);
    }
    let x_k = cast::<_, Tensor<K, D>>(x)?;
    match cast::<_, Tensor<B, E>>(f(x_k)) {
        Ok(y) => Ok(y),
        Err(_) => unreachable!("B is K"),
    }
}

/// `relu(x)` through [`KernelBackend`] where `B` has it: a clamp to `[0, inf]`, whose
/// gradient mask (`0 < y`) is ReLU's.
pub fn relu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    #[cfg(feature = "flex")]
    if enabled() && is::<B, flex::AutodiffFlex>() {
        return clamp(x, 0.0, f32::INFINITY);
    }
    burn::tensor::activation::relu(x)
}

/// [`clamp`] on a backend with the extension.
pub fn clamp_with<K: KernelBackend, const D: usize>(
    x: Tensor<K, D>,
    min: f32,
    max: f32,
) -> Tensor<K, D> {
    tensor(K::kernel_clamp(float(x), min, max))
}

/// Runs `f` on `K` when `B` is `K`: casts the module reference and the input in, and the
/// output back. The caller has checked that the types are equal, so no cast can fail.
#[cfg(feature = "flex")]
fn route<B, K, M, F>((module, x): (&M, Tensor<B, 4>), f: F) -> Tensor<B, 4>
where
    B: Backend,
    K: KernelBackend,
    M: Routable<B, K>,
    F: FnOnce((&M::Target, Tensor<K, 4>)) -> Tensor<K, 4>,
{
    let (Some(module_k), Ok(x_k)) = (module.as_backend(), cast::<_, Tensor<K, 4>>(x)) else {
        unreachable!("route is called only when B and K are the same type")
    };
    match cast::<_, Tensor<B, 4>>(f((module_k, x_k))) {
        Ok(y) => y,
        Err(_) => unreachable!("route is called only when B and K are the same type"),
    }
}

/// A module that can be viewed as the same module on backend `K` when `B` is `K`.
#[cfg(feature = "flex")]
trait Routable<B: Backend, K: Backend> {
    type Target;
    fn as_backend(&self) -> Option<&Self::Target>;
}

#[cfg(feature = "flex")]
impl<B: Backend, K: Backend> Routable<B, K> for Conv2d<B> {
    type Target = Conv2d<K>;
    fn as_backend(&self) -> Option<&Conv2d<K>> {
        (self as &dyn Any).downcast_ref::<Conv2d<K>>()
    }
}

#[cfg(feature = "flex")]
impl<B: Backend, K: Backend> Routable<B, K> for BatchNorm<B> {
    type Target = BatchNorm<K>;
    fn as_backend(&self) -> Option<&BatchNorm<K>> {
        (self as &dyn Any).downcast_ref::<BatchNorm<K>>()
    }
}

#[cfg(feature = "flex")]
impl<B: Backend, K: Backend> Routable<B, K> for GroupNorm<B> {
    type Target = GroupNorm<K>;
    fn as_backend(&self) -> Option<&GroupNorm<K>> {
        (self as &dyn Any).downcast_ref::<GroupNorm<K>>()
    }
}

fn float<K: Backend, const D: usize>(t: Tensor<K, D>) -> FloatTensor<K> {
    t.into_primitive().tensor()
}

fn tensor<K: Backend, const D: usize>(t: FloatTensor<K>) -> Tensor<K, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

/// [`conv2d`] on a backend with the extension.
pub fn conv2d_with<K: KernelBackend>(conv: &Conv2d<K>, x: Tensor<K, 4>) -> Tensor<K, 4> {
    let [_, _, h, w] = x.dims();
    let args = ConvArgs::of(conv, [h, w]);
    tensor(K::kernel_conv2d(
        float(x),
        float(conv.weight.val()),
        conv.bias.as_ref().map(|b| float(b.val())),
        args,
    ))
}

/// A training-mode batch norm on a backend with the extension, updating the running
/// statistics exactly as Burn's `BatchNorm` does (momentum, biased variance); its output clamped to
/// `clamp` when given.
pub fn batch_norm_train_with<K: KernelBackend>(
    bn: &BatchNorm<K>,
    x: Tensor<K, 4>,
    clamp: Option<[f32; 2]>,
) -> Tensor<K, 4> {
    if !K::ad_enabled(&x.device()) {
        return match clamp {
            Some(bounds) => activation(bn.forward(x), bounds),
            None => bn.forward(x),
        };
    }
    let device = x.device();
    let out = K::kernel_batch_norm(
        float(x),
        float(bn.gamma.val()),
        float(bn.beta.val()),
        bn.epsilon,
        clamp,
    );
    let mean: Tensor<K, 1> = tensor(out.mean);
    let var: Tensor<K, 1> = tensor(out.var);
    let running_mean = bn.running_mean.value_sync().to_device(&device);
    let running_var = bn.running_var.value_sync().to_device(&device);
    let m = bn.momentum;
    bn.running_mean.update(
        running_mean
            .mul_scalar(1.0 - m)
            .add(mean.detach().mul_scalar(m))
            .detach(),
    );
    bn.running_var.update(
        running_var
            .mul_scalar(1.0 - m)
            .add(var.detach().mul_scalar(m))
            .detach(),
    );
    tensor(out.output)
}

#[cfg(test)]
mod tests;
