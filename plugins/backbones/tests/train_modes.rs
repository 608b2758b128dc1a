//! Batch norm in train, eval and frozen modes, and freezing the backbone.

mod common;

use autodl_backbones::{Arch, Backbone, freeze, unfreeze};
use burn::module::AutodiffModule;
use burn::optim::GradientsParams;
use burn::store::ModuleSnapshot;
use burn::tensor::Tensor;
use common::*;

fn model() -> Backbone<Train> {
    Backbone::new(Arch::MobileNetV2, 3, Some(5), &device())
}

fn input() -> Tensor<Train, 4> {
    pattern::<Train>([2, 3, 32, 32], &device())
}

/// The running mean of the stem's batch norm. Burn keeps a training forward's update pending
/// until the module is synchronised, which `valid()` does.
fn running_mean(m: &Backbone<Train>) -> Vec<f32> {
    let snap = m
        .valid()
        .collect(None, None, true)
        .into_iter()
        .find(|s| s.full_path() == "stem.bn.running_mean")
        .expect("stem batch norm");
    snap.to_data().expect("data").to_vec::<f32>().expect("f32")
}

fn loss(m: &Backbone<Train>) -> Tensor<Train, 1> {
    m.features(input())
        .into_iter()
        .map(|f| f.powf_scalar(2.0).mean())
        .reduce(|a, b| a + b)
        .expect("four maps")
}

/// Trainable tensors: everything but the running statistics.
fn trainable(m: &Backbone<Train>) -> usize {
    m.collect(None, None, true)
        .iter()
        .filter(|s| !s.full_path().contains("running_"))
        .count()
}

#[test]
fn train_mode_updates_running_stats_and_eval_does_not() {
    let m = model();
    let before = running_mean(&m);
    let _ = m.features(input());
    let after = running_mean(&m);
    assert!(
        max_diff(&before, &after) > 1e-6,
        "training forward left running stats alone"
    );

    let eval = m.valid();
    let x = pattern::<Cpu>([2, 3, 32, 32], &device());
    let _ = eval.features(x);
    assert_eq!(
        running_mean(&m),
        after,
        "eval forward changed running stats"
    );
}

#[test]
fn frozen_bn_uses_running_stats_and_keeps_them() {
    let m = model().with_frozen_bn(true);
    assert!(m.is_bn_frozen());
    let before = running_mean(&m);
    let train_out = to_vec(m.features(input())[3].clone());
    assert_eq!(
        running_mean(&m),
        before,
        "frozen batch norm updated its running stats"
    );
    let eval_out = to_vec(
        m.valid()
            .features(pattern::<Cpu>([2, 3, 32, 32], &device()))[3]
            .clone(),
    );
    assert!(
        max_diff(&train_out, &eval_out) < 1e-4,
        "frozen batch norm differs from eval mode"
    );
    let thawed = to_vec(m.with_frozen_bn(false).features(input())[3].clone());
    assert!(
        max_diff(&thawed, &eval_out) > 1e-3,
        "train-mode batch norm matched eval mode"
    );
}

#[test]
fn frozen_bn_still_trains_weights() {
    let m = model().with_frozen_bn(true);
    let grads = GradientsParams::from_grads(loss(&m).backward(), &m);
    assert_eq!(
        grads.len(),
        trainable(&m) - 5,
        "all but the unused classifier's 5 tensors get gradients"
    );
}

#[test]
fn freeze_stops_gradients_and_unfreeze_restores_them() {
    let m = freeze(model());
    assert!(m.is_bn_frozen());
    let before = running_mean(&m);
    let out = loss(&m);
    assert!(
        !out.is_require_grad(),
        "a frozen backbone's output requires gradients"
    );
    assert_eq!(running_mean(&m), before);

    let m = unfreeze(m);
    assert!(!m.is_bn_frozen());
    let grads = GradientsParams::from_grads(loss(&m).backward(), &m);
    // The classifier (head conv, its batch norm, linear layer) is unused by `features`; the
    // running statistics would show up here too if they had gradients.
    assert_eq!(grads.len(), trainable(&m) - 5);
}
