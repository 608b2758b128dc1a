//! [`KernelBackend`] for `Autodiff<B>`: the forward methods run `B`'s and record a backward step
//! that calls `B`'s backward methods, so the gradients come from our kernels wherever `B` has
//! them.

use burn::backend::Autodiff;
use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::tensor::TensorMetadata;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::ops::FloatTensor;

use super::{
    BatchNormForward, BatchNormGrads, ConvArgs, GroupNormForward, KernelBackend, PoolArgs,
};

#[derive(Debug)]
struct ConvBackward;

#[derive(Debug)]
struct ConvBiasBackward;

#[derive(Debug)]
struct BatchNormBackward;

#[derive(Debug)]
struct GroupNormBackward;

#[derive(Debug)]
struct ClampBackward;

#[derive(Debug)]
struct MaxPoolBackward;

#[derive(Debug)]
struct ResizeBackward;

#[derive(Debug)]
struct LogSoftmaxBackward;

#[derive(Debug)]
struct CatChannelsBackward;

impl<B: KernelBackend> Backward<B, 2> for CatChannelsBackward {
    /// The first part's channels.
    type State = usize;

    fn backward(
        self,
        ops: Ops<Self::State, 2>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let dy = grads.consume::<B>(&ops.node);
        let [da, db] = B::kernel_cat_channels_backward(dy, ops.state);
        let [node_a, node_b] = ops.parents;
        for (node, grad) in [(node_a, da), (node_b, db)] {
            if let Some(node) = node {
                grads.register::<B>(node.id, grad);
            }
        }
    }
}

impl<B: KernelBackend> Backward<B, 1> for LogSoftmaxBackward {
    /// The output.
    type State = FloatTensor<B>;

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        input_grad::<B, _>(ops, grads, B::kernel_log_softmax_channels_backward);
    }
}

impl<B: KernelBackend> Backward<B, 1> for ResizeBackward {
    /// The input (checkpointed, for its shape) and `align_corners`.
    type State = (NodeId, bool);

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        input_grad::<B, _>(ops, grads, |(x_state, align_corners), dy| {
            let x = checkpointer.retrieve_node_output::<FloatTensor<B>>(x_state);
            B::kernel_resize_bilinear_backward(x, dy, align_corners)
        });
    }
}

impl<B: KernelBackend> Backward<B, 1> for MaxPoolBackward {
    /// The input (checkpointed) and the pooling.
    type State = (NodeId, PoolArgs);

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        input_grad::<B, _>(ops, grads, |(x_state, args), dy| {
            let x = checkpointer.retrieve_node_output::<FloatTensor<B>>(x_state);
            B::kernel_max_pool2d_backward(x, dy, args)
        });
    }
}

/// Registers the gradient of a one-input op's input, `f(state, dy)`, when that input is
/// tracked.
fn input_grad<B: KernelBackend, S>(
    ops: Ops<S, 1>,
    grads: &mut Gradients,
    f: impl FnOnce(S, FloatTensor<B>) -> FloatTensor<B>,
) {
    let dy = grads.consume::<B>(&ops.node);
    if let [Some(node)] = ops.parents {
        grads.register::<B>(node.id, f(ops.state, dy));
    }
}

/// Registers the input and weight gradients of a convolution, computing only those asked for.
fn conv_grads<B: KernelBackend>(
    [node_x, node_w]: [Option<NodeId>; 2],
    grads: &mut Gradients,
    (x, weight, dy): (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>),
    args: ConvArgs,
) {
    let out = B::kernel_conv2d_backward(x, weight, dy, args, [node_x.is_some(), node_w.is_some()]);
    if let (Some(id), Some(grad)) = (node_x, out.input) {
        grads.register::<B>(id, grad);
    }
    if let (Some(id), Some(grad)) = (node_w, out.weight) {
        grads.register::<B>(id, grad);
    }
}

impl<B: KernelBackend> Backward<B, 2> for ConvBackward {
    type State = (NodeId, NodeId, ConvArgs);

    fn backward(
        self,
        ops: Ops<Self::State, 2>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let dy = grads.consume::<B>(&ops.node);
        let (x_state, w_state, args) = ops.state;
        let x = checkpointer.retrieve_node_output::<FloatTensor<B>>(x_state);
        let weight = checkpointer.retrieve_node_output::<FloatTensor<B>>(w_state);
        let ids = ops.parents.map(|node| node.map(|node| node.id));
        conv_grads::<B>(ids, grads, (x, weight, dy), args);
    }
}

impl<B: KernelBackend> Backward<B, 3> for ConvBiasBackward {
    type State = (NodeId, NodeId, ConvArgs);

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let dy = grads.consume::<B>(&ops.node);
        let (x_state, w_state, args) = ops.state;
        let [node_x, node_w, node_b] = ops.parents;
        if let Some(node) = node_b {
            grads.register::<B>(node.id, B::kernel_conv2d_bias_backward(dy.clone()));
        }
        let x = checkpointer.retrieve_node_output::<FloatTensor<B>>(x_state);
        let weight = checkpointer.retrieve_node_output::<FloatTensor<B>>(w_state);
        let ids = [node_x.map(|node| node.id), node_w.map(|node| node.id)];
        conv_grads::<B>(ids, grads, (x, weight, dy), args);
    }
}

/// Registers a norm's input, gamma and beta gradients with the parents that are tracked.
fn norm_grads<B: KernelBackend>(
    [node_x, node_gamma, node_beta]: [Option<NodeId>; 3],
    grads: &mut Gradients,
    out: BatchNormGrads<B>,
) {
    for (node, grad) in [
        (node_x, out.input),
        (node_gamma, out.gamma),
        (node_beta, out.beta),
    ] {
        if let Some(id) = node {
            grads.register::<B>(id, grad);
        }
    }
}

impl<B: KernelBackend> Backward<B, 3> for BatchNormBackward {
    /// Input, gamma and beta (checkpointed), the batch mean and variance, epsilon, the clamp.
    type State = (
        [NodeId; 3],
        FloatTensor<B>,
        FloatTensor<B>,
        f64,
        Option<[f32; 2]>,
    );

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let dy = grads.consume::<B>(&ops.node);
        let ([x_state, gamma_state, beta_state], mean, var, epsilon, clamp) = ops.state;
        let x = checkpointer.retrieve_node_output::<FloatTensor<B>>(x_state);
        let gamma = checkpointer.retrieve_node_output::<FloatTensor<B>>(gamma_state);
        let beta = checkpointer.retrieve_node_output::<FloatTensor<B>>(beta_state);
        let out = B::kernel_batch_norm_backward(x, gamma, beta, mean, var, epsilon, clamp, dy);
        norm_grads::<B>(ops.parents.map(|node| node.map(|node| node.id)), grads, out);
    }
}

impl<B: KernelBackend> Backward<B, 3> for GroupNormBackward {
    /// Input and gamma (checkpointed), the mean and `1 / std` per sample and group, groups.
    type State = (NodeId, NodeId, FloatTensor<B>, FloatTensor<B>, usize);

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let dy = grads.consume::<B>(&ops.node);
        let (x_state, gamma_state, mean, rstd, groups) = ops.state;
        let x = checkpointer.retrieve_node_output::<FloatTensor<B>>(x_state);
        let gamma = checkpointer.retrieve_node_output::<FloatTensor<B>>(gamma_state);
        let out = B::kernel_group_norm_backward(x, gamma, mean, rstd, groups, dy);
        norm_grads::<B>(ops.parents.map(|node| node.map(|node| node.id)), grads, out);
    }
}

impl<B: KernelBackend> Backward<B, 1> for ClampBackward {
    /// The clamp's output and its bounds.
    type State = (FloatTensor<B>, f32, f32);

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        input_grad::<B, _>(ops, grads, |(y, min, max), dy| {
            B::kernel_clamp_backward(y, dy, min, max)
        });
    }
}

impl<B: KernelBackend, C: CheckpointStrategy> KernelBackend for Autodiff<B, C> {
    fn kernel_max_pool2d(x: FloatTensor<Self>, args: PoolArgs) -> FloatTensor<Self> {
        match MaxPoolBackward
            .prepare::<C>([x.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let x_state = prep.checkpoint(&x);
                prep.finish((x_state, args), B::kernel_max_pool2d(x.primitive, args))
            }
            OpsKind::UnTracked(prep) => prep.finish(B::kernel_max_pool2d(x.primitive, args)),
        }
    }

    fn kernel_resize_bilinear(
        x: FloatTensor<Self>,
        size: [usize; 2],
        align_corners: bool,
    ) -> FloatTensor<Self> {
        match ResizeBackward
            .prepare::<C>([x.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let x_state = prep.checkpoint(&x);
                let y = B::kernel_resize_bilinear(x.primitive, size, align_corners);
                prep.finish((x_state, align_corners), y)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::kernel_resize_bilinear(x.primitive, size, align_corners))
            }
        }
    }

    fn kernel_cat_channels(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
        let channels = a.primitive.shape().dims::<4>()[1];
        match CatChannelsBackward
            .prepare::<C>([a.node.clone(), b.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                prep.finish(channels, B::kernel_cat_channels(a.primitive, b.primitive))
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::kernel_cat_channels(a.primitive, b.primitive))
            }
        }
    }

    fn kernel_log_softmax_channels(x: FloatTensor<Self>) -> FloatTensor<Self> {
        match LogSoftmaxBackward
            .prepare::<C>([x.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let y = B::kernel_log_softmax_channels(x.primitive);
                prep.finish(y.clone(), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::kernel_log_softmax_channels(x.primitive)),
        }
    }

    fn kernel_clamp(x: FloatTensor<Self>, min: f32, max: f32) -> FloatTensor<Self> {
        match ClampBackward
            .prepare::<C>([x.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let y = B::kernel_clamp(x.primitive, min, max);
                prep.finish((y.clone(), min, max), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::kernel_clamp(x.primitive, min, max)),
        }
    }

    fn kernel_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
        args: ConvArgs,
    ) -> FloatTensor<Self> {
        match bias {
            None => {
                let nodes = [x.node.clone(), weight.node.clone()];
                match ConvBackward.prepare::<C>(nodes).compute_bound().stateful() {
                    OpsKind::Tracked(mut prep) => {
                        let x_state = prep.checkpoint(&x);
                        let w_state = prep.checkpoint(&weight);
                        let out = B::kernel_conv2d(x.primitive, weight.primitive, None, args);
                        prep.finish((x_state, w_state, args), out)
                    }
                    OpsKind::UnTracked(prep) => {
                        prep.finish(B::kernel_conv2d(x.primitive, weight.primitive, None, args))
                    }
                }
            }
            Some(bias) => {
                let nodes = [x.node.clone(), weight.node.clone(), bias.node.clone()];
                match ConvBiasBackward
                    .prepare::<C>(nodes)
                    .compute_bound()
                    .stateful()
                {
                    OpsKind::Tracked(mut prep) => {
                        let x_state = prep.checkpoint(&x);
                        let w_state = prep.checkpoint(&weight);
                        let out = B::kernel_conv2d(
                            x.primitive,
                            weight.primitive,
                            Some(bias.primitive),
                            args,
                        );
                        prep.finish((x_state, w_state, args), out)
                    }
                    OpsKind::UnTracked(prep) => prep.finish(B::kernel_conv2d(
                        x.primitive,
                        weight.primitive,
                        Some(bias.primitive),
                        args,
                    )),
                }
            }
        }
    }

    fn kernel_batch_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
        clamp: Option<[f32; 2]>,
    ) -> BatchNormForward<Self> {
        let nodes = [x.node.clone(), gamma.node.clone(), beta.node.clone()];
        match BatchNormBackward
            .prepare::<C>(nodes)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let states = [
                    prep.checkpoint(&x),
                    prep.checkpoint(&gamma),
                    prep.checkpoint(&beta),
                ];
                let inner = B::kernel_batch_norm(
                    x.primitive,
                    gamma.primitive,
                    beta.primitive,
                    epsilon,
                    clamp,
                );
                let state = (
                    states,
                    inner.mean.clone(),
                    inner.var.clone(),
                    epsilon,
                    clamp,
                );
                BatchNormForward {
                    output: prep.finish(state, inner.output),
                    mean: Self::from_inner(inner.mean),
                    var: Self::from_inner(inner.var),
                }
            }
            OpsKind::UnTracked(prep) => {
                let inner = B::kernel_batch_norm(
                    x.primitive,
                    gamma.primitive,
                    beta.primitive,
                    epsilon,
                    clamp,
                );
                BatchNormForward {
                    output: prep.finish(inner.output),
                    mean: Self::from_inner(inner.mean),
                    var: Self::from_inner(inner.var),
                }
            }
        }
    }

    fn kernel_group_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        groups: usize,
        epsilon: f64,
    ) -> GroupNormForward<Self> {
        let nodes = [x.node.clone(), gamma.node.clone(), beta.node.clone()];
        match GroupNormBackward
            .prepare::<C>(nodes)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let x_state = prep.checkpoint(&x);
                let gamma_state = prep.checkpoint(&gamma);
                let inner = B::kernel_group_norm(
                    x.primitive,
                    gamma.primitive,
                    beta.primitive,
                    groups,
                    epsilon,
                );
                let state = (
                    x_state,
                    gamma_state,
                    inner.mean.clone(),
                    inner.rstd.clone(),
                    groups,
                );
                GroupNormForward {
                    output: prep.finish(state, inner.output),
                    mean: Self::from_inner(inner.mean),
                    rstd: Self::from_inner(inner.rstd),
                }
            }
            OpsKind::UnTracked(prep) => {
                let inner = B::kernel_group_norm(
                    x.primitive,
                    gamma.primitive,
                    beta.primitive,
                    groups,
                    epsilon,
                );
                GroupNormForward {
                    output: prep.finish(inner.output),
                    mean: Self::from_inner(inner.mean),
                    rstd: Self::from_inner(inner.rstd),
                }
            }
        }
    }
}
