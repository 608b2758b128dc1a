//! [`KernelBackend`] for flex: convolution forward and backward and batch norm run on the
//! kernels in [`super::cpu`]. Tensors of another dtype than `f32` take the stock ops.

use burn::backend::Flex;
use burn::backend::flex::FlexTensor;
use burn::tensor::{DType, Shape, TensorData, TensorMetadata};

use super::cpu::{self, BatchStats, Conv2dGeometry};
use super::{
    AdamStep, BatchNormForward, BatchNormGrads, ConvArgs, ConvGrads, GroupNormForward,
    KernelBackend, PoolArgs, stock,
};

/// The autodiff backend training runs on, on the CPU.
pub(super) type AutodiffFlex = burn::backend::Autodiff<Flex>;

/// `t` as contiguous `f32` storage, or `None` for another dtype.
fn contiguous(t: &FlexTensor) -> Option<FlexTensor> {
    (t.dtype() == DType::F32).then(|| t.to_contiguous())
}

fn floats(t: &FlexTensor) -> &[f32] {
    // Only called on tensors `contiguous` returned, which are f32 and contiguous.
    t.as_slice::<f32>().unwrap_or(&[])
}

fn from_vec(data: Vec<f32>, shape: impl Into<Shape>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(data, shape.into()))
}

fn dims4(t: &FlexTensor) -> [usize; 4] {
    let s = t.shape();
    let d = |i: usize| s.get(i).copied().unwrap_or(1);
    [d(0), d(1), d(2), d(3)]
}

/// The geometry of a convolution of `x` with `weight` giving `out_size` outputs.
fn geometry(
    x: &FlexTensor,
    weight: &FlexTensor,
    out_size: [usize; 2],
    args: &ConvArgs,
) -> Conv2dGeometry {
    let [n, c, h, w] = dims4(x);
    let [co, _, kh, kw] = dims4(weight);
    Conv2dGeometry {
        batch: n,
        in_channels: c,
        in_size: [h, w],
        out_channels: co,
        out_size,
        kernel: [kh, kw],
        stride: args.stride,
        pad: args.pad_begin,
        dilation: args.dilation,
        groups: args.groups.max(1),
    }
}

impl KernelBackend for Flex {
    fn kernel_conv2d(
        x: FlexTensor,
        weight: FlexTensor,
        bias: Option<FlexTensor>,
        args: ConvArgs,
    ) -> FlexTensor {
        let bias_c = bias.as_ref().map(contiguous);
        let (Some(xc), Some(wc), Some(bias_c)) = (
            contiguous(&x),
            contiguous(&weight),
            bias_c.map_or(Some(None), |b| b.map(Some)),
        ) else {
            return stock::kernel_conv2d::<Self>(x, weight, bias, args);
        };
        let [n, c, h, w] = dims4(&xc);
        let [co, ci_g, kh, kw] = dims4(&wc);
        let groups = args.groups.max(1);
        let fits = |i: usize, size: usize, k: usize| {
            size + args.pad_begin[i] + args.pad_end[i] > args.dilation[i] * k.saturating_sub(1)
        };
        if ci_g * groups != c || co % groups != 0 || !fits(0, h, kh) || !fits(1, w, kw) {
            // Let Burn report the mismatch as it always has.
            return stock::kernel_conv2d::<Self>(x, weight, bias, args);
        }
        let [oh, ow] = args.output_size([h, w], [kh, kw]);
        let g = geometry(&xc, &wc, [oh, ow], &args);
        let y = cpu::conv2d_forward(&g, floats(&xc), floats(&wc), bias_c.as_ref().map(floats));
        from_vec(y, [n, co, oh, ow])
    }

    fn kernel_conv2d_backward(
        x: FlexTensor,
        weight: FlexTensor,
        dy: FlexTensor,
        args: ConvArgs,
        [want_input, want_weight]: [bool; 2],
    ) -> ConvGrads<Self> {
        let (Some(xc), Some(wc), Some(dyc)) =
            (contiguous(&x), contiguous(&weight), contiguous(&dy))
        else {
            return stock::kernel_conv2d_backward::<Self>(
                x,
                weight,
                dy,
                args,
                [want_input, want_weight],
            );
        };
        let [_, _, oh, ow] = dims4(&dyc);
        let g = geometry(&xc, &wc, [oh, ow], &args);
        let input = want_input.then(|| {
            from_vec(
                cpu::conv2d_input_grad(&g, floats(&wc), floats(&dyc)),
                x.shape(),
            )
        });
        let weight = want_weight.then(|| {
            from_vec(
                cpu::conv2d_weight_grad(&g, floats(&xc), floats(&dyc)),
                weight.shape(),
            )
        });
        ConvGrads { input, weight }
    }

    fn kernel_conv2d_bias_backward(dy: FlexTensor) -> FlexTensor {
        let Some(dyc) = contiguous(&dy) else {
            return stock::kernel_conv2d_bias_backward::<Self>(dy);
        };
        let [n, c, h, w] = dims4(&dyc);
        from_vec(cpu::bias_grad(n, c, h * w, floats(&dyc)), [c])
    }

    fn kernel_batch_norm(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        epsilon: f64,
        clamp: Option<[f32; 2]>,
    ) -> BatchNormForward<Self> {
        let (Some(xc), Some(gc), Some(bc)) =
            (contiguous(&x), contiguous(&gamma), contiguous(&beta))
        else {
            return stock::kernel_batch_norm::<Self>(x, gamma, beta, epsilon, clamp);
        };
        let [n, c, h, w] = dims4(&xc);
        let stats = cpu::batch_stats(n, c, h * w, floats(&xc));
        let y = cpu::batch_norm_apply(
            c,
            h * w,
            floats(&xc),
            &stats,
            floats(&gc),
            floats(&bc),
            epsilon as f32,
            clamp,
        );
        BatchNormForward {
            output: from_vec(y, x.shape()),
            mean: from_vec(stats.mean, [c]),
            var: from_vec(stats.var, [c]),
        }
    }

    fn kernel_batch_norm_backward(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        mean: FlexTensor,
        var: FlexTensor,
        epsilon: f64,
        clamp: Option<[f32; 2]>,
        dy: FlexTensor,
    ) -> BatchNormGrads<Self> {
        let all = (
            contiguous(&x),
            contiguous(&gamma),
            contiguous(&beta),
            contiguous(&mean),
            contiguous(&var),
            contiguous(&dy),
        );
        let (Some(xc), Some(gc), Some(bc), Some(mc), Some(vc), Some(mut dyc)) = all else {
            return stock::kernel_batch_norm_backward::<Self>(
                x, gamma, beta, mean, var, epsilon, clamp, dy,
            );
        };
        // `dyc` becomes the input gradient, in place when it is the only holder of its data.
        drop(dy);
        if dyc.shape() != xc.shape() {
            return stock::kernel_batch_norm_backward::<Self>(
                x, gamma, beta, mean, var, epsilon, clamp, dyc,
            );
        }
        let [n, c, h, w] = dims4(&xc);
        let stats = BatchStats {
            mean: floats(&mc).to_vec(),
            var: floats(&vc).to_vec(),
        };
        let (dgamma, dbeta) = cpu::batch_norm_backward(
            n,
            c,
            h * w,
            floats(&xc),
            &stats,
            [floats(&gc), floats(&bc)],
            epsilon as f32,
            clamp,
            dyc.storage_mut::<f32>(),
        );
        BatchNormGrads {
            input: dyc,
            gamma: from_vec(dgamma, [c]),
            beta: from_vec(dbeta, [c]),
        }
    }

    fn kernel_group_norm(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        groups: usize,
        epsilon: f64,
    ) -> GroupNormForward<Self> {
        let (Some(xc), Some(gc), Some(bc)) =
            (contiguous(&x), contiguous(&gamma), contiguous(&beta))
        else {
            return stock::kernel_group_norm::<Self>(x, gamma, beta, groups, epsilon);
        };
        let [n, c, h, w] = dims4(&xc);
        if groups == 0 || c % groups != 0 {
            return stock::kernel_group_norm::<Self>(x, gamma, beta, groups, epsilon);
        }
        let shape = cpu::GroupShape {
            batch: n,
            channels: c,
            groups,
            positions: h * w,
        };
        let (y, stats) =
            cpu::group_norm(shape, floats(&xc), floats(&gc), floats(&bc), epsilon as f32);
        GroupNormForward {
            output: from_vec(y, x.shape()),
            mean: from_vec(stats.mean, [n * groups]),
            rstd: from_vec(stats.rstd, [n * groups]),
        }
    }

    fn kernel_group_norm_backward(
        x: FlexTensor,
        gamma: FlexTensor,
        mean: FlexTensor,
        rstd: FlexTensor,
        groups: usize,
        dy: FlexTensor,
    ) -> BatchNormGrads<Self> {
        let all = (
            contiguous(&x),
            contiguous(&gamma),
            contiguous(&mean),
            contiguous(&rstd),
            contiguous(&dy),
        );
        let (Some(xc), Some(gc), Some(mc), Some(rc), Some(dyc)) = all else {
            return stock::kernel_group_norm_backward::<Self>(x, gamma, mean, rstd, groups, dy);
        };
        let [n, c, h, w] = dims4(&xc);
        let shape = cpu::GroupShape {
            batch: n,
            channels: c,
            groups,
            positions: h * w,
        };
        let stats = cpu::GroupStats {
            mean: floats(&mc).to_vec(),
            rstd: floats(&rc).to_vec(),
        };
        let (dx, dgamma, dbeta) =
            cpu::group_norm_backward(shape, floats(&xc), &stats, floats(&gc), floats(&dyc));
        BatchNormGrads {
            input: from_vec(dx, x.shape()),
            gamma: from_vec(dgamma, [c]),
            beta: from_vec(dbeta, [c]),
        }
    }

    fn kernel_max_pool2d(x: FlexTensor, args: PoolArgs) -> FlexTensor {
        let Some(xc) = contiguous(&x) else {
            return stock::kernel_max_pool2d::<Self>(x, args);
        };
        let [n, c, h, w] = dims4(&xc);
        let [oh, ow] = args.output_size([h, w]);
        let pool = cpu::Pool::new(args.kernel, args.stride, args.padding, [h, w], [oh, ow]);
        from_vec(pool.forward(floats(&xc)), [n, c, oh, ow])
    }

    fn kernel_max_pool2d_backward(x: FlexTensor, dy: FlexTensor, args: PoolArgs) -> FlexTensor {
        let (Some(xc), Some(dyc)) = (contiguous(&x), contiguous(&dy)) else {
            return stock::kernel_max_pool2d_backward::<Self>(x, dy, args);
        };
        let [_, _, h, w] = dims4(&xc);
        let [_, _, oh, ow] = dims4(&dyc);
        let pool = cpu::Pool::new(args.kernel, args.stride, args.padding, [h, w], [oh, ow]);
        from_vec(pool.backward(floats(&xc), floats(&dyc)), x.shape())
    }

    fn kernel_resize_bilinear(x: FlexTensor, size: [usize; 2], align_corners: bool) -> FlexTensor {
        let Some(xc) = contiguous(&x) else {
            return stock::kernel_resize_bilinear::<Self>(x, size, align_corners);
        };
        let [n, c, h, w] = dims4(&xc);
        let resize = cpu::Resize::new([h, w], size, align_corners);
        from_vec(resize.forward(floats(&xc)), [n, c, size[0], size[1]])
    }

    fn kernel_resize_bilinear_backward(
        x: FlexTensor,
        dy: FlexTensor,
        align_corners: bool,
    ) -> FlexTensor {
        let Some(dyc) = contiguous(&dy) else {
            return stock::kernel_resize_bilinear_backward::<Self>(x, dy, align_corners);
        };
        let [_, _, h, w] = dims4(&x);
        let [_, _, oh, ow] = dims4(&dyc);
        let resize = cpu::Resize::new([h, w], [oh, ow], align_corners);
        from_vec(resize.backward(floats(&dyc)), x.shape())
    }

    fn kernel_log_softmax_channels(x: FlexTensor) -> FlexTensor {
        let Some(xc) = contiguous(&x) else {
            return stock::kernel_log_softmax_channels::<Self>(x);
        };
        let [_, c, h, w] = dims4(&xc);
        from_vec(cpu::log_softmax_channels(c, h * w, floats(&xc)), x.shape())
    }

    fn kernel_log_softmax_channels_backward(y: FlexTensor, dy: FlexTensor) -> FlexTensor {
        let (Some(yc), Some(dyc)) = (contiguous(&y), contiguous(&dy)) else {
            return stock::kernel_log_softmax_channels_backward::<Self>(y, dy);
        };
        let [_, c, h, w] = dims4(&yc);
        let dx = cpu::log_softmax_channels_backward(c, h * w, floats(&yc), floats(&dyc));
        from_vec(dx, y.shape())
    }

    fn kernel_clamp(x: FlexTensor, min: f32, max: f32) -> FlexTensor {
        let Some(mut xc) = contiguous(&x) else {
            return stock::kernel_clamp::<Self>(x, min, max);
        };
        drop(x);
        // Clamps in place when `x` was the only holder of its data, on a copy otherwise.
        cpu::clamp(xc.storage_mut::<f32>(), min, max);
        xc
    }

    fn kernel_clamp_backward(y: FlexTensor, dy: FlexTensor, min: f32, max: f32) -> FlexTensor {
        let (Some(yc), Some(mut dyc)) = (contiguous(&y), contiguous(&dy)) else {
            return stock::kernel_clamp_backward::<Self>(y, dy, min, max);
        };
        drop(dy);
        if yc.shape() != dyc.shape() {
            return stock::kernel_clamp_backward::<Self>(y, dyc, min, max);
        }
        // `dyc` is a fresh or uniquely held copy of the gradient: mask it in place.
        cpu::clamp_mask(floats(&yc), dyc.storage_mut::<f32>(), min, max);
        dyc
    }

    fn kernel_adam(
        param: FlexTensor,
        grad: FlexTensor,
        moments: Option<[FlexTensor; 2]>,
        step: AdamStep,
    ) -> [FlexTensor; 3] {
        let same = |t: &FlexTensor| t.shape() == param.shape() && t.dtype() == DType::F32;
        let usable =
            same(&param) && same(&grad) && moments.as_ref().is_none_or(|[m, v]| same(m) && same(v));
        let (Some(gc), true) = (contiguous(&grad), usable) else {
            return stock::kernel_adam::<Self>(param, grad, moments, step);
        };
        let zeros = || from_vec(vec![0.0; param.shape().num_elements()], param.shape());
        let [mut m, mut v] = match moments {
            Some([m, v]) => [m, v],
            None => [zeros(), zeros()],
        };
        let mut p = param;
        // Contiguous copies where needed; in place when each tensor is the only holder of its
        // data (the optimiser's state and the module's parameter usually are).
        for t in [&mut p, &mut m, &mut v] {
            if let Some(c) = contiguous(t) {
                *t = c;
            }
        }
        cpu::adam(
            &step,
            p.storage_mut::<f32>(),
            floats(&gc),
            m.storage_mut::<f32>(),
            v.storage_mut::<f32>(),
        );
        [p, m, v]
    }

    fn kernel_cat_channels(a: FlexTensor, b: FlexTensor) -> FlexTensor {
        let (Some(ac), Some(bc)) = (contiguous(&a), contiguous(&b)) else {
            return stock::kernel_cat_channels::<Self>(a, b);
        };
        let ([n, ca, h, w], [nb, cb, hb, wb]) = (dims4(&ac), dims4(&bc));
        if (n, h, w) != (nb, hb, wb) || a.shape().num_dims() != 4 || b.shape().num_dims() != 4 {
            return stock::kernel_cat_channels::<Self>(a, b);
        }
        let y = cpu::cat_channels(n, [ca * h * w, cb * h * w], floats(&ac), floats(&bc));
        from_vec(y, [n, ca + cb, h, w])
    }

    fn kernel_cat_channels_backward(dy: FlexTensor, channels: usize) -> [FlexTensor; 2] {
        let Some(dyc) = contiguous(&dy) else {
            return stock::kernel_cat_channels_backward::<Self>(dy, channels);
        };
        let [n, c, h, w] = dims4(&dyc);
        let (ca, cb) = (channels.min(c), c - channels.min(c));
        let [da, db] = cpu::split_channels(n, [ca * h * w, cb * h * w], floats(&dyc));
        [from_vec(da, [n, ca, h, w]), from_vec(db, [n, cb, h, w])]
    }
}
