//! Darknet-53 against its PyTorch reference (`tests/fixtures/backbones/darknet53_reference.py`):
//! parameter count, feature shapes, tensor names; saving and loading; freezing.

mod common;

use autodl_backbones::{
    Arch, Backbone, BackboneConfig, NAMES, default_weights, freeze, save_weights,
};
use burn::module::AutodiffModule;
use burn::optim::GradientsParams;
use burn::store::{ModuleSnapshot, ModuleStore, SafetensorsStore};
use common::*;

/// Parameters of Darknet-53 without its classifier, as
/// `tests/fixtures/backbones/darknet53_reference.py` counts them in PyTorch
/// (`sum(p.numel() for p in model.parameters())`: convolution weights and batch norm's weight
/// and bias, not its running statistics).
const REFERENCE_PARAMS: usize = 40_584_928;
/// The same with Darknet's 1000-class ImageNet classifier (the script's second line).
const REFERENCE_PARAMS_WITH_CLASSIFIER: usize = 41_609_928;

/// Trainable parameters: every tensor but batch norm's running statistics.
fn params<B: burn::tensor::backend::Backend>(model: &Backbone<B>) -> usize {
    model
        .collect(None, None, true)
        .iter()
        .filter(|s| !s.full_path().contains("running_"))
        .map(|s| s.shape.iter().product::<usize>())
        .sum()
}

#[test]
fn parameter_count_equals_the_pytorch_reference() {
    let model = Backbone::<Cpu>::new(Arch::Darknet53, 3, None, &device());
    assert_eq!(params(&model), REFERENCE_PARAMS);
    let model = Backbone::<Cpu>::new(Arch::Darknet53, 3, Some(1000), &device());
    assert_eq!(params(&model), REFERENCE_PARAMS_WITH_CLASSIFIER);
}

#[test]
fn features_at_strides_4_to_32_as_the_reference_gives_them() {
    // The script's shapes for a 2x3x64x64 input.
    let model: Backbone<Cpu> = BackboneConfig::new("darknet53", 3)
        .init(&device())
        .expect("builds");
    assert_eq!(model.arch(), Arch::Darknet53);
    assert_eq!(model.channels(), [128, 256, 512, 1024]);
    let dims = model
        .features(pattern::<Cpu>([2, 3, 64, 64], &device()))
        .map(|f| f.dims());
    assert_eq!(
        dims,
        [
            [2, 128, 16, 16],
            [2, 256, 8, 8],
            [2, 512, 4, 4],
            [2, 1024, 2, 2]
        ]
    );
    assert!(
        model
            .classify(pattern::<Cpu>([1, 3, 32, 32], &device()))
            .is_none()
    );
}

#[test]
fn names_parse_and_no_weights_ship() {
    assert!(NAMES.contains(&"darknet53"));
    for name in ["darknet53", "Darknet-53", "darknet_53"] {
        assert_eq!(name.parse::<Arch>(), Ok(Arch::Darknet53), "{name}");
    }
    assert_eq!(Arch::Darknet53.to_string(), "darknet53");
    assert_eq!(Arch::Darknet53.input_norm(), Arch::ResNet50.input_norm());
    if std::env::var_os(autodl_backbones::WEIGHTS_DIR_ENV).is_none() {
        assert_eq!(default_weights("darknet53"), None);
    }
}

#[test]
fn saved_names_are_the_pytorch_reference_state_dict_and_load_back() {
    let dir = tempfile::tempdir().expect("temp dir");
    let model = Backbone::<Cpu>::new(Arch::Darknet53, 3, None, &device());
    let path = dir.path().join("darknet53.safetensors");
    save_weights(&model, &path).expect("saves");

    // `darknet53_names.txt`: the reference's state dict, `name [shape]` a line.
    let reference = std::fs::read_to_string(fixture("darknet53_names.txt")).expect("fixture");
    let mut want: Vec<String> = reference.lines().map(str::to_owned).collect();
    want.sort();
    let mut store = SafetensorsStore::from_file(&path);
    let mut got: Vec<String> = store
        .get_all_snapshots()
        .expect("readable")
        .iter()
        .map(|(k, s)| format!("{k} {:?}", s.shape.to_vec()))
        .collect();
    got.sort();
    assert_eq!(got.len(), 260);
    assert_eq!(got, want);

    let loaded = BackboneConfig::new("darknet53", 3)
        .with_weights(&path)
        .init::<Cpu>(&device())
        .expect("loads");
    assert!(!loaded.has_classifier());
    let x = pattern::<Cpu>([1, 3, 64, 64], &device());
    for (a, b) in model
        .features(x.clone())
        .into_iter()
        .zip(loaded.features(x))
    {
        assert_eq!(max_diff(&to_vec(a), &to_vec(b)), 0.0);
    }

    // Another band count adapts the stem; a classifier in the file comes back with it.
    let five = BackboneConfig::new("darknet53", 5)
        .with_weights(&path)
        .init::<Cpu>(&device())
        .expect("adapts");
    assert_eq!(
        five.features(pattern::<Cpu>([1, 5, 32, 32], &device()))[3].dims(),
        [1, 1024, 1, 1]
    );
    let classifier = Backbone::<Cpu>::new(Arch::Darknet53, 3, Some(4), &device());
    save_weights(&classifier, &path).expect("saves");
    let loaded = BackboneConfig::new("darknet53", 3)
        .with_weights(&path)
        .init::<Cpu>(&device())
        .expect("loads");
    let x = pattern::<Cpu>([1, 3, 32, 32], &device());
    let (a, b) = (
        classifier.classify(x.clone()).expect("head"),
        loaded.classify(x).expect("head"),
    );
    assert_eq!(max_diff(&to_vec(a), &to_vec(b)), 0.0);
}

#[test]
fn frozen_stem_frozen_bn_and_freeze() {
    let x = || pattern::<Train>([2, 3, 32, 32], &device());
    let loss = |m: &Backbone<Train>| {
        m.features(x())
            .into_iter()
            .map(|f| f.powf_scalar(2.0).mean())
            .reduce(|a, b| a + b)
            .expect("four maps")
    };
    let trainable = |m: &Backbone<Train>| {
        m.collect(None, None, true)
            .iter()
            .filter(|s| !s.full_path().contains("running_"))
            .count()
    };
    // Stem, stage 1 (down and one block) and stage 2 (down and two blocks): 9 convolutions
    // of 3 tensors each stop taking gradients.
    let m = Backbone::<Train>::new(Arch::Darknet53, 3, None, &device()).with_frozen_stem();
    let grads = GradientsParams::from_grads(loss(&m).backward(), &m);
    assert_eq!(trainable(&m), 52 * 3);
    assert_eq!(grads.len(), (52 - 9) * 3);

    let stem_mean = |m: &Backbone<Train>| {
        let snap = m
            .valid()
            .collect(None, None, true)
            .into_iter()
            .find(|s| s.full_path() == "stem.bn.running_mean")
            .expect("stem batch norm");
        snap.to_data().expect("data").to_vec::<f32>().expect("f32")
    };
    let m = Backbone::<Train>::new(Arch::Darknet53, 3, None, &device()).with_frozen_bn(true);
    assert!(m.is_bn_frozen());
    let before = stem_mean(&m);
    let grads = GradientsParams::from_grads(loss(&m).backward(), &m);
    assert_eq!(grads.len(), 52 * 3);
    assert_eq!(
        stem_mean(&m),
        before,
        "frozen batch norm updated its statistics"
    );
    let m = m.with_frozen_bn(false);
    let _ = loss(&m);
    assert!(max_diff(&stem_mean(&m), &before) > 1e-6);

    let m = freeze(m);
    assert!(!loss(&m).is_require_grad());
}
