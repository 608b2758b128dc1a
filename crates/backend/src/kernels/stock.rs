//! The default methods of [`super::KernelBackend`]: Burn's stock ops, composed as Burn's own
//! modules and autodiff compose them.

use burn::tensor::backend::Backend;
use burn::tensor::module;
use burn::tensor::ops::{ConvOptions, FloatTensor, PadMode, PaddedConvOptions};
use burn::tensor::{Scalar, Tensor, TensorMetadata};

use super::{
    AdamStep, BatchNormForward, BatchNormGrads, ConvArgs, ConvGrads, GroupNormForward, PoolArgs,
    float, tensor,
};

fn options(args: &ConvArgs, padding: [usize; 2]) -> ConvOptions<2> {
    ConvOptions::new(args.stride, padding, args.dilation, args.groups)
}

/// Burn's `conv2d` with the (possibly asymmetric) padding of `args`.
pub(super) fn kernel_conv2d<B: Backend>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    bias: Option<FloatTensor<B>>,
    args: ConvArgs,
) -> FloatTensor<B> {
    let options = PaddedConvOptions::asymmetric(
        args.stride,
        args.pad_begin,
        args.pad_end,
        args.dilation,
        args.groups,
    );
    float(module::conv2d(
        tensor::<B, 4>(x),
        tensor(weight),
        bias.map(tensor::<B, 1>),
        options,
    ))
}

/// Burn's `conv2d_x_backward` and `conv2d_weight_backward`, on the explicitly padded input when
/// the padding is asymmetric (as Burn's own autodiff sees it after `Tensor::pad`).
pub(super) fn kernel_conv2d_backward<B: Backend>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    dy: FloatTensor<B>,
    args: ConvArgs,
    [want_input, want_weight]: [bool; 2],
) -> ConvGrads<B> {
    if args.is_symmetric() {
        let opts = options(&args, args.pad_begin);
        let input = want_input
            .then(|| B::conv2d_x_backward(x.clone(), weight.clone(), dy.clone(), opts.clone()));
        let weight = want_weight.then(|| B::conv2d_weight_backward(x, weight, dy, opts));
        return ConvGrads { input, weight };
    }
    let x = tensor::<B, 4>(x);
    let [_, _, h, w] = x.dims();
    let [top, left] = args.pad_begin;
    let [bottom, right] = args.pad_end;
    let padded = float(x.pad((left, right, top, bottom), PadMode::Constant(0.0)));
    let opts = options(&args, [0, 0]);
    let input = want_input.then(|| {
        let full = tensor::<B, 4>(B::conv2d_x_backward(
            padded.clone(),
            weight.clone(),
            dy.clone(),
            opts.clone(),
        ));
        float(full.narrow(2, top, h).narrow(3, left, w))
    });
    let weight = want_weight.then(|| B::conv2d_weight_backward(padded, weight, dy, opts));
    ConvGrads { input, weight }
}

/// `dy` summed over batch and positions, `[C]`.
pub(super) fn kernel_conv2d_bias_backward<B: Backend>(dy: FloatTensor<B>) -> FloatTensor<B> {
    let dy = tensor::<B, 4>(dy);
    let c = dy.dims()[1];
    float(dy.sum_dim(0).sum_dim(2).sum_dim(3).reshape([c]))
}

/// Burn's `BatchNorm::forward_train`, without the running update.
pub(super) fn kernel_batch_norm<B: Backend>(
    x: FloatTensor<B>,
    gamma: FloatTensor<B>,
    beta: FloatTensor<B>,
    epsilon: f64,
    clamp: Option<[f32; 2]>,
) -> BatchNormForward<B> {
    let x = tensor::<B, 4>(x);
    let [n, c, h, w] = x.dims();
    let mean = x
        .clone()
        .swap_dims(0, 1)
        .reshape([c, n * h * w])
        .mean_dim(1)
        .reshape([1, c, 1, 1]);
    let var = x
        .clone()
        .sub(mean.clone())
        .square()
        .swap_dims(0, 1)
        .reshape([c, n * h * w])
        .mean_dim(1)
        .reshape([1, c, 1, 1]);
    let std = var.clone().add_scalar(epsilon).sqrt();
    let output = x
        .sub(mean.clone())
        .div(std)
        .mul(tensor::<B, 1>(gamma).reshape([1, c, 1, 1]))
        .add(tensor::<B, 1>(beta).reshape([1, c, 1, 1]));
    let output = match clamp {
        Some([min, max]) => output.clamp(min, max),
        None => output,
    };
    BatchNormForward {
        output: float(output),
        mean: float(mean.reshape([c])),
        var: float(var.reshape([c])),
    }
}

/// The gradients of a training-mode batch norm, composed from tensor ops.
#[allow(clippy::too_many_arguments)]
pub(super) fn kernel_batch_norm_backward<B: Backend>(
    x: FloatTensor<B>,
    gamma: FloatTensor<B>,
    beta: FloatTensor<B>,
    mean: FloatTensor<B>,
    var: FloatTensor<B>,
    epsilon: f64,
    clamp: Option<[f32; 2]>,
    dy: FloatTensor<B>,
) -> BatchNormGrads<B> {
    let x = tensor::<B, 4>(x);
    let dy = tensor::<B, 4>(dy);
    let [n, c, h, w] = x.dims();
    let count = (n * h * w).max(1) as f64;
    let per_channel = |t: Tensor<B, 1>| t.reshape([1, c, 1, 1]);
    let inv_std = per_channel(tensor::<B, 1>(var))
        .add_scalar(epsilon)
        .sqrt()
        .recip();
    let xhat = x.sub(per_channel(tensor(mean))).mul(inv_std.clone());
    // The clamp's gradient: `dy` where the unclamped output lies strictly inside the bounds.
    let dy = match clamp {
        Some([min, max]) => {
            let z = xhat
                .clone()
                .mul(per_channel(tensor(gamma.clone())))
                .add(per_channel(tensor(beta)));
            let inside = z.clone().greater_elem(min).float() * z.lower_elem(max).float();
            dy.mul(inside)
        }
        None => dy,
    };
    let sum = |t: Tensor<B, 4>| t.sum_dim(0).sum_dim(2).sum_dim(3);
    let dbeta = sum(dy.clone());
    let dgamma = sum(dy.clone().mul(xhat.clone()));
    let input = dy
        .sub(dbeta.clone().div_scalar(count))
        .sub(xhat.mul(dgamma.clone().div_scalar(count)))
        .mul(inv_std)
        .mul(per_channel(tensor(gamma)));
    BatchNormGrads {
        input: float(input),
        gamma: float(dgamma.reshape([c])),
        beta: float(dbeta.reshape([c])),
    }
}

/// Group norm composed from tensor ops, as Burn's `GroupNorm` composes it.
pub(super) fn kernel_group_norm<B: Backend>(
    x: FloatTensor<B>,
    gamma: FloatTensor<B>,
    beta: FloatTensor<B>,
    groups: usize,
    epsilon: f64,
) -> GroupNormForward<B> {
    let x = tensor::<B, 4>(x);
    let [n, c, h, w] = x.dims();
    let run = c / groups.max(1) * h * w;
    let xg = x.reshape([n, groups, run]);
    let mean = xg.clone().mean_dim(2);
    let centred = xg.sub(mean.clone());
    let var = centred.clone().square().mean_dim(2);
    let rstd = var.add_scalar(epsilon).sqrt().recip();
    let output = centred
        .mul(rstd.clone())
        .reshape([n, c, h, w])
        .mul(tensor::<B, 1>(gamma).reshape([1, c, 1, 1]))
        .add(tensor::<B, 1>(beta).reshape([1, c, 1, 1]));
    GroupNormForward {
        output: float(output),
        mean: float(mean.reshape([n * groups])),
        rstd: float(rstd.reshape([n * groups])),
    }
}

/// The gradients of a group norm, composed from tensor ops.
pub(super) fn kernel_group_norm_backward<B: Backend>(
    x: FloatTensor<B>,
    gamma: FloatTensor<B>,
    mean: FloatTensor<B>,
    rstd: FloatTensor<B>,
    groups: usize,
    dy: FloatTensor<B>,
) -> BatchNormGrads<B> {
    let x = tensor::<B, 4>(x);
    let dy = tensor::<B, 4>(dy);
    let [n, c, h, w] = x.dims();
    let groups = groups.max(1);
    let run = c / groups * h * w;
    let per_group = |t: FloatTensor<B>| tensor::<B, 1>(t).reshape([n, groups, 1]);
    let rstd = per_group(rstd);
    let xhat = x
        .reshape([n, groups, run])
        .sub(per_group(mean))
        .mul(rstd.clone())
        .reshape([n, c, h, w]);
    let sum = |t: Tensor<B, 4>| t.sum_dim(0).sum_dim(2).sum_dim(3).reshape([c]);
    let dbeta = sum(dy.clone());
    let dgamma = sum(dy.clone().mul(xhat.clone()));
    let dxhat = dy.mul(tensor::<B, 1>(gamma).reshape([1, c, 1, 1]));
    let grouped = |t: Tensor<B, 4>| t.reshape([n, groups, run]);
    let mean_dxhat = grouped(dxhat.clone()).mean_dim(2);
    let mean_dxhat_xhat = grouped(dxhat.clone().mul(xhat.clone())).mean_dim(2);
    let input = grouped(dxhat)
        .sub(mean_dxhat)
        .sub(grouped(xhat).mul(mean_dxhat_xhat))
        .mul(rstd)
        .reshape([n, c, h, w]);
    BatchNormGrads {
        input: float(input),
        gamma: float(dgamma),
        beta: float(dbeta),
    }
}

/// Burn's clamp.
pub(super) fn kernel_clamp<B: Backend>(x: FloatTensor<B>, min: f32, max: f32) -> FloatTensor<B> {
    B::float_clamp(x, min.into(), max.into())
}

/// `dy` where `min < y < max`, composed from Burn's comparison and mask ops.
pub(super) fn kernel_clamp_backward<B: Backend>(
    y: FloatTensor<B>,
    dy: FloatTensor<B>,
    min: f32,
    max: f32,
) -> FloatTensor<B> {
    let shape = y.shape();
    let flat =
        |t: FloatTensor<B>| tensor::<B, 1>(B::float_reshape(t, [shape.num_elements()].into()));
    let y = flat(y);
    let outside = y
        .clone()
        .lower_equal_elem(min)
        .bool_or(y.greater_equal_elem(max));
    B::float_reshape(float(flat(dy).mask_fill(outside, 0.0)), shape)
}

/// Burn's max pooling.
pub(super) fn kernel_max_pool2d<B: Backend>(x: FloatTensor<B>, args: PoolArgs) -> FloatTensor<B> {
    B::max_pool2d(x, args.kernel, args.stride, args.padding, [1, 1], false)
}

/// Burn's max-pooling backward pass, through the indices of its forward pass.
pub(super) fn kernel_max_pool2d_backward<B: Backend>(
    x: FloatTensor<B>,
    dy: FloatTensor<B>,
    args: PoolArgs,
) -> FloatTensor<B> {
    let (k, s, p) = (args.kernel, args.stride, args.padding);
    let indices = B::max_pool2d_with_indices(x.clone(), k, s, p, [1, 1], false).indices;
    B::max_pool2d_with_indices_backward(x, k, s, p, [1, 1], false, dy, indices).x_grad
}

fn bilinear(align_corners: bool) -> burn::tensor::ops::InterpolateOptions {
    burn::tensor::ops::InterpolateOptions::new(burn::tensor::ops::InterpolateMode::Bilinear)
        .with_align_corners(align_corners)
}

/// Burn's bilinear `interpolate`.
pub(super) fn kernel_resize_bilinear<B: Backend>(
    x: FloatTensor<B>,
    size: [usize; 2],
    align_corners: bool,
) -> FloatTensor<B> {
    B::interpolate(x, size, bilinear(align_corners))
}

/// Burn's bilinear `interpolate_backward`.
pub(super) fn kernel_resize_bilinear_backward<B: Backend>(
    x: FloatTensor<B>,
    dy: FloatTensor<B>,
    align_corners: bool,
) -> FloatTensor<B> {
    let shape = dy.shape();
    let size = [shape[2], shape[3]];
    B::interpolate_backward(x, dy, size, bilinear(align_corners))
}

/// Burn's `log_softmax` over dimension 1.
pub(super) fn kernel_log_softmax_channels<B: Backend>(x: FloatTensor<B>) -> FloatTensor<B> {
    float(burn::tensor::activation::log_softmax(tensor::<B, 4>(x), 1))
}

/// `dy - exp(y) * sum_c(dy)`, from Burn's ops.
pub(super) fn kernel_log_softmax_channels_backward<B: Backend>(
    y: FloatTensor<B>,
    dy: FloatTensor<B>,
) -> FloatTensor<B> {
    let dy = tensor::<B, 4>(dy);
    let total = dy.clone().sum_dim(1);
    float(dy - tensor::<B, 4>(y).exp() * total)
}

/// Burn's `cat` along the channels.
pub(super) fn kernel_cat_channels<B: Backend>(
    a: FloatTensor<B>,
    b: FloatTensor<B>,
) -> FloatTensor<B> {
    float(Tensor::cat(vec![tensor::<B, 4>(a), tensor::<B, 4>(b)], 1))
}

/// The two channel ranges of `dy`.
pub(super) fn kernel_cat_channels_backward<B: Backend>(
    dy: FloatTensor<B>,
    channels: usize,
) -> [FloatTensor<B>; 2] {
    let dy = tensor::<B, 4>(dy);
    let total = dy.dims()[1];
    [
        float(dy.clone().narrow(1, 0, channels)),
        float(dy.narrow(1, channels, total - channels)),
    ]
}

/// Burn's `Adam` (`penalty`) and `AdamW` (`decay`) update, op for op.
pub(super) fn kernel_adam<B: Backend>(
    param: FloatTensor<B>,
    grad: FloatTensor<B>,
    moments: Option<[FloatTensor<B>; 2]>,
    s: AdamStep,
) -> [FloatTensor<B>; 3] {
    let scalar = |v: f32| Scalar::Float(f64::from(v));
    let grad = match s.penalty {
        Some(penalty) => B::float_add(B::float_mul_scalar(param.clone(), scalar(penalty)), grad),
        None => grad,
    };
    let m_step = B::float_mul_scalar(grad.clone(), scalar(1.0 - s.beta_1));
    let v_step = B::float_mul_scalar(B::float_mul(grad.clone(), grad), scalar(1.0 - s.beta_2));
    let (m, v) = match moments {
        Some([m, v]) => (
            B::float_add(B::float_mul_scalar(m, scalar(s.beta_1)), m_step),
            B::float_add(B::float_mul_scalar(v, scalar(s.beta_2)), v_step),
        ),
        None => (m_step, v_step),
    };
    let m_hat = B::float_div_scalar(m.clone(), scalar(s.correction_1));
    let v_hat = B::float_div_scalar(v.clone(), scalar(s.correction_2));
    let delta = B::float_div(
        m_hat,
        B::float_add_scalar(B::float_sqrt(v_hat), scalar(s.epsilon)),
    );
    let kept = match s.decay {
        Some(decay) => B::float_mul_scalar(param, scalar(decay)),
        None => param,
    };
    [
        B::float_sub(kept, B::float_mul_scalar(delta, scalar(s.lr))),
        m,
        v,
    ]
}
