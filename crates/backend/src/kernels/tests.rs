//! The extension against Burn's stock ops: each kernel on random shapes, and whole forward and
//! backward passes through Burn's modules.

#![cfg(feature = "flex")]

use burn::backend::Flex;
use burn::backend::flex::FlexDevice;
use burn::module::{AutodiffModule, Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor, TensorData};

use super::flex::AutodiffFlex;
use super::*;

/// A small deterministic generator (no dependency on `rand` here).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }
}

fn random(shape: [usize; 4], seed: u64) -> Tensor<Flex, 4> {
    let n = shape.iter().product();
    let mut rng = Rng(seed);
    let data: Vec<f32> = (0..n)
        .map(|_| (rng.next() % 20001) as f32 / 10000.0 - 1.0)
        .collect();
    Tensor::from_data(TensorData::new(data, shape), &FlexDevice)
}

fn values<const D: usize>(t: Tensor<Flex, D>) -> Vec<f32> {
    t.into_data().to_vec::<f32>().unwrap_or_default()
}

/// Largest relative difference, against the largest magnitude of the reference.
fn max_rel(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
    got.iter()
        .zip(want)
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs() / scale))
}

fn close(what: &str, got: &[f32], want: &[f32]) {
    let rel = max_rel(got, want);
    assert!(rel < 1e-4, "{what}: relative difference {rel}");
}

/// A random convolution that has at least one output pixel.
fn random_case(rng: &mut Rng) -> ([usize; 4], [usize; 4], ConvArgs) {
    loop {
        let groups_kind = rng.below(3);
        let base = rng.range(1, 4);
        let groups = match groups_kind {
            0 => 1,
            1 => rng.range(2, 3),
            _ => 0, // depthwise, set below
        };
        let (cin, cout, groups) = if groups == 0 {
            let c = rng.range(2, 7);
            (c, c, c)
        } else {
            (base * groups, rng.range(1, 3) * groups, groups)
        };
        let kernel = [rng.range(1, 5), rng.range(1, 5)];
        let args = ConvArgs {
            stride: [rng.range(1, 3), rng.range(1, 3)],
            pad_begin: [rng.below(3), rng.below(3)],
            pad_end: [rng.below(3), rng.below(3)],
            dilation: [rng.range(1, 2), rng.range(1, 2)],
            groups,
        };
        let size = [rng.range(1, 11), rng.range(1, 11)];
        let fits = (0..2).all(|i| {
            size[i] + args.pad_begin[i] + args.pad_end[i] > args.dilation[i] * (kernel[i] - 1)
        });
        if fits {
            let batch = rng.range(1, 3);
            return (
                [batch, cin, size[0], size[1]],
                [cout, cin / groups, kernel[0], kernel[1]],
                args,
            );
        }
    }
}

#[test]
fn conv_forward_and_gradients_equal_burns_on_random_shapes() {
    let mut rng = Rng(7);
    for case in 0..60 {
        let (x_shape, w_shape, args) = random_case(&mut rng);
        let x = random(x_shape, 10 + case);
        let w = random(w_shape, 1000 + case);
        let y = stock::kernel_conv2d::<Flex>(float(x.clone()), float(w.clone()), None, args);
        let y: Tensor<Flex, 4> = tensor(y);
        let y_shape = y.dims();
        let what = format!("case {case}: x {x_shape:?} w {w_shape:?} {args:?}");
        let ours =
            <Flex as KernelBackend>::kernel_conv2d(float(x.clone()), float(w.clone()), None, args);
        let ours: Tensor<Flex, 4> = tensor(ours);
        assert_eq!(ours.dims(), y_shape, "{what}: output shape");
        close(&format!("{what}: forward"), &values(ours), &values(y));
        let b = random([1, 1, 1, w_shape[0]], 3000 + case).reshape([w_shape[0]]);
        let biased = |f: fn(_, _, _, ConvArgs) -> _| {
            values(tensor::<Flex, 4>(f(
                float(x.clone()),
                float(w.clone()),
                Some(float(b.clone())),
                args,
            )))
        };
        close(
            &format!("{what}: forward with bias"),
            &biased(<Flex as KernelBackend>::kernel_conv2d),
            &biased(stock::kernel_conv2d::<Flex>),
        );
        let dy = random(y_shape, 5000 + case);
        let (xs, ws, dys) = (float(x), float(w), float(dy));
        let ours = <Flex as KernelBackend>::kernel_conv2d_backward(
            xs.clone(),
            ws.clone(),
            dys.clone(),
            args,
            [true, true],
        );
        let theirs = stock::kernel_conv2d_backward::<Flex>(xs, ws, dys.clone(), args, [true, true]);
        let grad = |g: Option<FloatTensor<Flex>>| g.map(|t| values(tensor::<Flex, 4>(t)));
        let (Some(dx), Some(dx_ref)) = (grad(ours.input), grad(theirs.input)) else {
            panic!("{what}: no input gradient");
        };
        close(&format!("{what}: input"), &dx, &dx_ref);
        let (Some(dw), Some(dw_ref)) = (grad(ours.weight), grad(theirs.weight)) else {
            panic!("{what}: no weight gradient");
        };
        close(&format!("{what}: weight"), &dw, &dw_ref);
        let db = values(tensor::<Flex, 1>(
            <Flex as KernelBackend>::kernel_conv2d_bias_backward(dys.clone()),
        ));
        let db_ref = values(tensor::<Flex, 1>(
            stock::kernel_conv2d_bias_backward::<Flex>(dys),
        ));
        close(&format!("{what}: bias"), &db, &db_ref);
    }
}

#[test]
fn batch_norm_equals_burns_on_random_shapes() {
    let mut rng = Rng(11);
    for case in 0..20 {
        let shape = [
            rng.range(1, 4),
            rng.range(1, 6),
            rng.range(1, 9),
            rng.range(1, 9),
        ];
        let c = shape[1];
        let x = random(shape, case).mul_scalar(3.0).add_scalar(0.5);
        let gamma: Tensor<Flex, 1> = random([1, 1, 1, c], 100 + case).reshape([c]);
        let beta: Tensor<Flex, 1> = random([1, 1, 1, c], 200 + case).reshape([c]);
        let dy = random(shape, 300 + case);
        let eps = 1e-5;
        let clamp = [None, Some([0.0, f32::INFINITY]), Some([0.0, 1.5])][case as usize % 3];
        let ours = <Flex as KernelBackend>::kernel_batch_norm(
            float(x.clone()),
            float(gamma.clone()),
            float(beta.clone()),
            eps,
            clamp,
        );
        let theirs = stock::kernel_batch_norm::<Flex>(
            float(x.clone()),
            float(gamma.clone()),
            float(beta.clone()),
            eps,
            clamp,
        );
        let what = format!("case {case}: {shape:?} clamp {clamp:?}");
        close(
            &what,
            &values(tensor::<Flex, 4>(ours.output)),
            &values(tensor::<Flex, 4>(theirs.output)),
        );
        close(
            &what,
            &values(tensor::<Flex, 1>(ours.mean.clone())),
            &values(tensor::<Flex, 1>(theirs.mean)),
        );
        close(
            &what,
            &values(tensor::<Flex, 1>(ours.var.clone())),
            &values(tensor::<Flex, 1>(theirs.var)),
        );
        let (x, gamma, beta, dy) = (float(x), float(gamma), float(beta), float(dy));
        let g = <Flex as KernelBackend>::kernel_batch_norm_backward(
            x.clone(),
            gamma.clone(),
            beta.clone(),
            ours.mean.clone(),
            ours.var.clone(),
            eps,
            clamp,
            dy.clone(),
        );
        let r = stock::kernel_batch_norm_backward::<Flex>(
            x, gamma, beta, ours.mean, ours.var, eps, clamp, dy,
        );
        close(
            &format!("{what}: dx"),
            &values(tensor::<Flex, 4>(g.input)),
            &values(tensor::<Flex, 4>(r.input)),
        );
        close(
            &format!("{what}: dgamma"),
            &values(tensor::<Flex, 1>(g.gamma)),
            &values(tensor::<Flex, 1>(r.gamma)),
        );
        close(
            &format!("{what}: dbeta"),
            &values(tensor::<Flex, 1>(g.beta)),
            &values(tensor::<Flex, 1>(r.beta)),
        );
    }
}

#[test]
fn max_pool_and_its_gradient_equal_burns_on_random_shapes() {
    let mut rng = Rng(23);
    for case in 0..30 {
        let kernel = [rng.range(1, 4), rng.range(1, 4)];
        let stride = [rng.range(1, 3), rng.range(1, 3)];
        let padding = [rng.below(kernel[0] / 2 + 1), rng.below(kernel[1] / 2 + 1)];
        let shape = [
            rng.range(1, 3),
            rng.range(1, 4),
            rng.range(kernel[0], 12),
            rng.range(kernel[1], 12),
        ];
        let x = random(shape, 600 + case);
        // Every third case in a few levels, so that windows hold ties (as after a ReLU).
        let x = if case % 3 == 0 {
            x.mul_scalar(2.0).round()
        } else {
            x
        };
        let run = |fast: bool| {
            let x = Tensor::<AutodiffFlex, 4>::from_inner(x.clone()).require_grad();
            let y = if fast {
                max_pool2d(x.clone(), kernel, stride, padding)
            } else {
                burn::tensor::module::max_pool2d(x.clone(), kernel, stride, padding, [1, 1], false)
            };
            let dy = random(y.dims(), 700 + case);
            let loss = (y.clone() * Tensor::from_inner(dy)).sum();
            let grads = loss.backward();
            let dx = x.grad(&grads).expect("gradient");
            (values(y.inner()), values(dx))
        };
        let (ours, theirs) = (run(true), run(false));
        let what = format!("case {case}: {shape:?} k {kernel:?} s {stride:?} p {padding:?}");
        close(&format!("{what}: y"), &ours.0, &theirs.0);
        close(&format!("{what}: dx"), &ours.1, &theirs.1);
    }
}

#[test]
fn bilinear_resize_and_its_gradient_equal_burns_on_random_shapes() {
    let mut rng = Rng(31);
    for case in 0..30 {
        let shape = [
            rng.range(1, 3),
            rng.range(1, 4),
            rng.range(1, 12),
            rng.range(1, 12),
        ];
        let size = [rng.range(1, 20), rng.range(1, 20)];
        let align = rng.below(2) == 1;
        let x = random(shape, 800 + case);
        // 0: the extension (through the routing), 1: matrix products, 2: Burn's interpolate.
        let run = |way: usize| {
            let x = Tensor::<AutodiffFlex, 4>::from_inner(x.clone()).require_grad();
            let y = match way {
                0 => resize_bilinear(x.clone(), size, align),
                1 => resize_by_products(x.clone(), size, align),
                _ => burn::tensor::module::interpolate(
                    x.clone(),
                    size,
                    burn::tensor::ops::InterpolateOptions::new(
                        burn::tensor::ops::InterpolateMode::Bilinear,
                    )
                    .with_align_corners(align),
                ),
            };
            let dy = random(y.dims(), 900 + case);
            let loss = (y.clone() * Tensor::from_inner(dy)).sum();
            let grads = loss.backward();
            let dx = x.grad(&grads).expect("gradient");
            (values(y.inner()), values(dx))
        };
        let theirs = run(2);
        for (way, name) in [(0, "extension"), (1, "products")] {
            let ours = run(way);
            let what = format!("case {case} {name}: {shape:?} -> {size:?} align {align}");
            close(&format!("{what}: y"), &ours.0, &theirs.0);
            close(&format!("{what}: dx"), &ours.1, &theirs.1);
        }
        // Inference on plain flex takes the extension too.
        let plain = values(resize_bilinear(x.clone(), size, align));
        close(&format!("case {case}: plain flex"), &plain, &theirs.0);
    }
}

#[test]
fn channel_log_softmax_and_its_gradient_equal_burns_on_random_shapes() {
    let mut rng = Rng(41);
    for case in 0..20 {
        let shape = [
            rng.range(1, 3),
            rng.range(1, 9),
            rng.range(1, 9),
            rng.range(1, 9),
        ];
        // Large logits too, where an unshifted exponential would overflow.
        let x = random(shape, 1000 + case) * (1.0 + 40.0 * (case % 3) as f32);
        let run = |fast: bool| {
            let x = Tensor::<AutodiffFlex, 4>::from_inner(x.clone()).require_grad();
            let y = if fast {
                log_softmax_channels(x.clone())
            } else {
                burn::tensor::activation::log_softmax(x.clone(), 1)
            };
            let dy = random(y.dims(), 1100 + case);
            let loss = (y.clone() * Tensor::from_inner(dy)).sum();
            let grads = loss.backward();
            let dx = x.grad(&grads).expect("gradient");
            (values(y.inner()), values(dx))
        };
        let (ours, theirs) = (run(true), run(false));
        close(&format!("case {case} {shape:?}: y"), &ours.0, &theirs.0);
        close(&format!("case {case} {shape:?}: dx"), &ours.1, &theirs.1);
        // The stock backward (for other backends) against Burn's autodiff too.
        let y = Tensor::<Flex, 4>::from_primitive(TensorPrimitive::Float(
            stock::kernel_log_softmax_channels::<Flex>(float(x.clone())),
        ));
        let dy = random(shape, 1100 + case);
        let dx = stock::kernel_log_softmax_channels_backward::<Flex>(float(y), float(dy));
        close(
            &format!("case {case} {shape:?}: stock dx"),
            &values(tensor::<Flex, 4>(dx)),
            &theirs.1,
        );
    }
}

#[test]
fn clamp_relu_and_their_gradients_equal_burns() {
    type Act = fn(Tensor<AutodiffFlex, 4>) -> Tensor<AutodiffFlex, 4>;
    let pairs: [(&str, Act, Act); 2] = [
        ("relu6", |x| clamp(x, 0.0, 6.0), |x| x.clamp(0.0, 6.0)),
        ("relu", relu, burn::tensor::activation::relu),
    ];
    for (name, ours_fn, theirs_fn) in pairs {
        for case in 0..6 {
            let shape = [2, 3, 5 + case as usize, 7];
            // Values spread over and beyond [0, 6], so both bounds are hit.
            let x = random(shape, 400 + case).mul_scalar(4.0).add_scalar(3.0);
            let dy = random(shape, 500 + case);
            let run = |act: Act| {
                let x = Tensor::<AutodiffFlex, 4>::from_inner(x.clone()).require_grad();
                let y = act(x.clone());
                let loss = (y.clone() * Tensor::from_inner(dy.clone())).sum();
                let grads = loss.backward();
                let dx = x.grad(&grads).expect("gradient");
                (values(y.inner()), values(dx))
            };
            let (ours, theirs) = (run(ours_fn), run(theirs_fn));
            close(&format!("{name} case {case}: y"), &ours.0, &theirs.0);
            close(&format!("{name} case {case}: dx"), &ours.1, &theirs.1);
        }
    }
}

/// Two convolutions (one with bias and asymmetric "same" padding, one depthwise) and two batch
/// norms: the network shapes the backbones use.
#[derive(Module, Debug)]
struct Net<B: Backend> {
    conv1: Conv2d<B>,
    bn1: BatchNorm<B>,
    conv2: Conv2d<B>,
    bn2: BatchNorm<B>,
}

/// A tensor of fixed pseudo-random values in [-0.5, 0.5), on any backend.
fn fixed<B: Backend, const D: usize>(
    shape: [usize; D],
    seed: u64,
    device: &B::Device,
) -> Tensor<B, D> {
    let mut rng = Rng(seed);
    let data: Vec<f32> = (0..shape.iter().product::<usize>())
        .map(|_| (rng.next() % 10001) as f32 / 10000.0 - 0.5)
        .collect();
    Tensor::from_data(TensorData::new(data, shape), device)
}

impl<B: Backend> Net<B> {
    /// The same weights every time, from a fixed sequence rather than the global RNG (which
    /// other tests draw from concurrently).
    fn new(device: &B::Device) -> Self {
        let mut net = Net::init(device);
        net.conv1.weight = Param::from_tensor(fixed([6, 3, 3, 3], 1, device));
        net.conv1.bias = Some(Param::from_tensor(fixed([6], 2, device)));
        net.conv2.weight = Param::from_tensor(fixed([6, 1, 5, 5], 3, device));
        net
    }

    fn init(device: &B::Device) -> Self {
        Net {
            conv1: Conv2dConfig::new([3, 6], [3, 3])
                .with_stride([2, 2])
                .with_padding(PaddingConfig2d::Same)
                .init(device),
            bn1: BatchNormConfig::new(6).init(device),
            conv2: Conv2dConfig::new([6, 6], [5, 5])
                .with_groups(6)
                .with_padding(PaddingConfig2d::Explicit(2, 2, 2, 2))
                .with_bias(false)
                .init(device),
            bn2: BatchNormConfig::new(6).init(device),
        }
    }

    /// `fast[i]` sends layer `i` (conv1, bn1, conv2, bn2) through the extension.
    fn forward(&self, x: Tensor<B, 4>, fast: [bool; 4]) -> Tensor<B, 4> {
        let conv = |c: &Conv2d<B>, x, fast| if fast { conv2d(c, x) } else { c.forward(x) };
        let norm = |n: &BatchNorm<B>, x, fast| if fast { batch_norm(n, x) } else { n.forward(x) };
        let x = norm(&self.bn1, conv(&self.conv1, x, fast[0]), fast[1]);
        let x = if fast[1] {
            clamp(x, 0.0, 6.0)
        } else {
            x.clamp(0.0, 6.0)
        };
        norm(&self.bn2, conv(&self.conv2, x, fast[2]), fast[3])
    }
}

/// Everything one training step produces: the loss, every parameter's gradient and the
/// updated running statistics.
fn step(x: Tensor<AutodiffFlex, 4>, fast: [bool; 4]) -> Vec<Vec<f32>> {
    // A fresh network with the same weights: clones would share the running statistics.
    let net = Net::<AutodiffFlex>::new(&FlexDevice);
    let y = net.forward(x, fast);
    let loss = y.clone().powf_scalar(2.0).mean() + y.sum().mul_scalar(0.01);
    let grads = loss.backward();
    let g = |p: &Tensor<AutodiffFlex, 4>| values(p.grad(&grads).expect("gradient").reshape([-1]));
    let g1 = |p: &Tensor<AutodiffFlex, 1>| values(p.grad(&grads).expect("gradient"));
    vec![
        values(loss.inner()),
        g(&net.conv1.weight.val()),
        g1(&net.conv1.bias.as_ref().expect("bias").val()),
        g(&net.conv2.weight.val()),
        g1(&net.bn1.gamma.val()),
        g1(&net.bn1.beta.val()),
        g1(&net.bn2.gamma.val()),
        values(net.bn1.running_mean.value().inner()),
        values(net.bn2.running_var.value().inner()),
    ]
}

#[test]
fn a_training_step_through_the_extension_equals_burns() {
    let x = Tensor::<AutodiffFlex, 4>::random(
        [2, 3, 13, 12],
        Distribution::Normal(0.0, 1.0),
        &FlexDevice,
    );
    let stock = step(x.clone(), [false; 4]);
    let names = [
        "loss", "conv1.w", "conv1.b", "conv2.w", "bn1.g", "bn1.b", "bn2.g", "bn1.mean", "bn2.var",
    ];
    // Each layer alone through the extension, then all of them.
    let mut failures = Vec::new();
    for fast in [
        [true, false, false, false],
        [false, true, false, false],
        [false, false, true, false],
        [false, false, false, true],
        [true; 4],
    ] {
        let ours = step(x.clone(), fast);
        let diffs: Vec<(&str, f32)> = names
            .iter()
            .zip(&ours)
            .zip(&stock)
            .map(|((name, a), b)| (*name, max_rel(a, b)))
            // Each kernel alone agrees to 1e-4 (the tests above); chained through two batch
            // norms, summation order moves the gradients by a few 1e-4.
            .filter(|(_, d)| *d >= 1e-3)
            .collect();
        if !diffs.is_empty() {
            failures.push((fast, diffs));
        }
    }
    assert!(failures.is_empty(), "relative differences: {failures:?}");
}

/// A batch norm with the given running statistics, scale and shift.
fn norm_with<B: Backend>(stats: [Tensor<Flex, 1>; 4], device: &B::Device) -> BatchNorm<B> {
    let [mean, var, gamma, beta] = stats.map(|t| Tensor::<B, 1>::from_data(t.into_data(), device));
    let mut bn = BatchNormConfig::new(mean.dims()[0]).init(device);
    bn.running_mean = burn::module::RunningState::new(mean);
    bn.running_var = burn::module::RunningState::new(var.abs().add_scalar(0.1));
    bn.gamma = Param::from_tensor(gamma);
    bn.beta = Param::from_tensor(beta);
    bn
}

#[test]
fn batch_norm_folded_into_the_convolution_equals_conv_then_norm() {
    let mut rng = Rng(23);
    for case in 0..12u64 {
        let (x_shape, w_shape, args) = random_case(&mut rng);
        let co = w_shape[0];
        let stat = |k: u64| random([1, 1, 1, co], 7000 + 10 * case + k).reshape([co]);
        let stats = [stat(0), stat(1), stat(2), stat(3)];
        let device = FlexDevice;
        let mut conv: Conv2d<AutodiffFlex> =
            Conv2dConfig::new([x_shape[1], co], [w_shape[2], w_shape[3]])
                .with_stride(args.stride)
                .with_padding(PaddingConfig2d::Explicit(
                    args.pad_begin[0],
                    args.pad_begin[1],
                    args.pad_end[0],
                    args.pad_end[1],
                ))
                .with_dilation(args.dilation)
                .with_groups(args.groups)
                .with_bias(case % 2 == 0)
                .init(&device);
        conv.weight = Param::from_tensor(Tensor::from_inner(random(w_shape, 100 + case)));
        let bn = norm_with::<AutodiffFlex>(stats.clone(), &device);
        let what = format!("case {case}: x {x_shape:?} w {w_shape:?} {args:?}");
        let x = random(x_shape, 200 + case);

        // Frozen, with autodiff: output and gradients against the conv then a broadcast affine.
        let run = |folded: bool| {
            let x = Tensor::<AutodiffFlex, 4>::from_inner(x.clone()).require_grad();
            let y = if folded {
                conv_batch_norm(&conv, &bn, x.clone(), true)
            } else {
                let var = bn.running_var.value().add_scalar(bn.epsilon).sqrt();
                let scale = bn.gamma.val().div(var);
                let shift = bn
                    .beta
                    .val()
                    .sub(bn.running_mean.value().mul(scale.clone()));
                conv_then_affine(&conv, x.clone(), scale, shift)
            };
            let dy = random(y.dims(), 300 + case);
            let grads = y.clone().mul(Tensor::from_inner(dy)).sum().backward();
            let g4 = |p: &Tensor<AutodiffFlex, 4>| values(p.grad(&grads).expect("gradient"));
            let g1 = |p: &Tensor<AutodiffFlex, 1>| values(p.grad(&grads).expect("gradient"));
            let mut out = vec![
                values(y.inner()),
                g4(&x),
                g4(&conv.weight.val()),
                g1(&bn.gamma.val()),
                g1(&bn.beta.val()),
            ];
            if let Some(b) = &conv.bias {
                out.push(g1(&b.val()));
            }
            out
        };
        let (ours, theirs) = (run(true), run(false));
        for (i, name) in ["output", "input", "weight", "gamma", "beta", "bias"]
            .iter()
            .enumerate()
            .take(ours.len())
        {
            close(&format!("{what}: frozen {name}"), &ours[i], &theirs[i]);
        }
        let running = values(bn.running_mean.value().inner());
        assert_eq!(
            running,
            values(stats[0].clone()),
            "{what}: running mean moved"
        );

        // Without autodiff (inference): Burn's own `BatchNorm` uses the running statistics.
        let conv = conv.valid();
        let bn = norm_with::<Flex>(stats, &device);
        let ours = conv_batch_norm(&conv, &bn, x.clone(), false);
        let theirs = bn.forward(conv.forward(x));
        close(
            &format!("{what}: inference"),
            &values(ours),
            &values(theirs),
        );
    }
}

#[test]
fn group_norm_and_its_gradients_equal_burns_on_random_shapes() {
    let mut rng = Rng(31);
    for case in 0..24u64 {
        let groups = rng.range(1, 4);
        let channels = groups * rng.range(1, 4);
        let shape = [rng.range(1, 3), channels, rng.range(1, 9), rng.range(1, 9)];
        let what = format!("case {case}: x {shape:?} groups {groups}");
        let device = FlexDevice;
        let mut norm =
            burn::nn::GroupNormConfig::new(groups, channels).init::<AutodiffFlex>(&device);
        let param = |k: u64| {
            Param::from_tensor(Tensor::from_inner(
                random([1, 1, 1, channels], 900 + 10 * case + k).reshape([channels]),
            ))
        };
        norm.gamma = Some(param(0));
        norm.beta = Some(param(1));
        let x = random(shape, 400 + case).mul_scalar(3.0).add_scalar(1.0);
        let dy = random(shape, 500 + case);
        let run = |ours: bool| {
            let x = Tensor::<AutodiffFlex, 4>::from_inner(x.clone()).require_grad();
            let y = if ours {
                group_norm(&norm, x.clone())
            } else {
                norm.forward(x.clone())
            };
            let grads = y
                .clone()
                .mul(Tensor::from_inner(dy.clone()))
                .sum()
                .backward();
            let g1 = |p: &Option<Param<Tensor<AutodiffFlex, 1>>>| {
                let p = p.as_ref().expect("affine");
                values(p.val().grad(&grads).expect("gradient"))
            };
            [
                values(y.inner()),
                values(x.grad(&grads).expect("gradient")),
                g1(&norm.gamma),
                g1(&norm.beta),
            ]
        };
        let (ours, theirs) = (run(true), run(false));
        for (i, name) in ["output", "input", "gamma", "beta"].iter().enumerate() {
            close(&format!("{what}: {name}"), &ours[i], &theirs[i]);
        }
        // The stock default methods, which other backends would take, agree too.
        let (gamma, beta) = (norm.gamma.as_ref(), norm.beta.as_ref());
        let (Some(gamma), Some(beta)) = (gamma, beta) else {
            panic!("affine");
        };
        let (gamma, beta) = (gamma.val().inner(), beta.val().inner());
        let f = stock::kernel_group_norm::<Flex>(
            float(x.clone()),
            float(gamma.clone()),
            float(beta),
            groups,
            norm.epsilon,
        );
        close(
            &format!("{what}: stock output"),
            &values(tensor::<Flex, 4>(f.output)),
            &ours[0],
        );
        let g = stock::kernel_group_norm_backward::<Flex>(
            float(x),
            float(gamma),
            f.mean,
            f.rstd,
            groups,
            float(dy),
        );
        close(
            &format!("{what}: stock input"),
            &values(tensor::<Flex, 4>(g.input)),
            &ours[1],
        );
        close(
            &format!("{what}: stock gamma"),
            &values(tensor::<Flex, 1>(g.gamma)),
            &ours[2],
        );
        close(
            &format!("{what}: stock beta"),
            &values(tensor::<Flex, 1>(g.beta)),
            &ours[3],
        );
    }
}

#[test]
fn routing_reaches_the_extension_only_on_flex_with_autodiff() {
    assert!(is::<AutodiffFlex, AutodiffFlex>());
    assert!(!is::<Flex, AutodiffFlex>());
    assert_eq!(cast::<u8, u8>(3), Ok(3));
    assert_eq!(cast::<u8, u16>(3), Err(3));
}

#[test]
fn conv_args_follow_burns_padding() {
    let device = FlexDevice;
    let conv: Conv2d<Flex> = Conv2dConfig::new([1, 1], [3, 3])
        .with_stride([2, 2])
        .with_padding(PaddingConfig2d::Same)
        .init(&device);
    let args = ConvArgs::of(&conv, [8, 7]);
    assert_eq!(args.pad_begin, [0, 1]);
    assert_eq!(args.pad_end, [1, 1]);
    let x = random([1, 1, 8, 7], 1);
    let ours = conv2d_with(&conv, x.clone());
    assert_eq!(ours.dims(), conv.forward(x.clone()).dims());
    close("same padding", &values(ours), &values(conv.forward(x)));
}

#[test]
fn fused_adam_equals_the_stock_update_bit_for_bit() {
    let shape = [3, 5, 7, 11];
    let step = |time: i32, decay: Option<f32>, penalty: Option<f32>| AdamStep {
        lr: 3e-3,
        beta_1: 0.9,
        beta_2: 0.999,
        epsilon: 1e-5,
        correction_1: 1.0 - 0.9f32.powi(time),
        correction_2: 1.0 - 0.999f32.powi(time),
        penalty,
        decay,
    };
    for (case, (decay, penalty)) in [(None, None), (Some(0.99997), None), (None, Some(1e-3))]
        .into_iter()
        .enumerate()
    {
        let seed = 100 * case as u64;
        let param = random(shape, seed + 1);
        let moments = [random(shape, seed + 2), random(shape, seed + 3).abs()];
        for (time, moments) in [(1, None), (5, Some(moments))] {
            let grad = random(shape, seed + 4 + time as u64);
            let s = step(time, decay, penalty);
            let fused = Flex::kernel_adam(
                float(param.clone()),
                float(grad.clone()),
                moments.clone().map(|m| m.map(float)),
                s,
            );
            let stock = stock::kernel_adam::<Flex>(
                float(param.clone()),
                float(grad),
                moments.map(|m| m.map(float)),
                s,
            );
            for (what, (a, b)) in ["param", "m", "v"].iter().zip(fused.into_iter().zip(stock)) {
                let (a, b) = (values(tensor::<Flex, 4>(a)), values(tensor::<Flex, 4>(b)));
                assert!(a == b, "case {case}, step {time}: {what} differs");
            }
        }
    }
}

#[test]
fn channel_concatenation_and_its_gradients_equal_burns() {
    for (case, (n, ca, cb, h, w)) in [(2, 3, 5, 4, 6), (1, 1, 2, 3, 3), (3, 4, 1, 2, 5)]
        .into_iter()
        .enumerate()
    {
        let a = random([n, ca, h, w], 600 + case as u64);
        let b = random([n, cb, h, w], 700 + case as u64);
        let dy = random([n, ca + cb, h, w], 800 + case as u64);
        // `b` is used twice, so its gradient from the concatenation is added to another one (the
        // accumulation that met Burn's strided views).
        let run = |cat: fn(Vec<Tensor<AutodiffFlex, 4>>) -> Tensor<AutodiffFlex, 4>| {
            let a = Tensor::<AutodiffFlex, 4>::from_inner(a.clone()).require_grad();
            let b = Tensor::<AutodiffFlex, 4>::from_inner(b.clone()).require_grad();
            let y = cat(vec![a.clone(), b.clone()]);
            let loss = (y.clone() * Tensor::from_inner(dy.clone())).sum() + b.clone().sum();
            let grads = loss.backward();
            let grad = |t: &Tensor<AutodiffFlex, 4>| values(t.grad(&grads).expect("gradient"));
            (values(y.inner()), grad(&a), grad(&b))
        };
        let ours = run(cat_channels);
        let theirs = run(|parts| Tensor::cat(parts, 1));
        assert_eq!(ours, theirs, "case {case}");
    }
}
