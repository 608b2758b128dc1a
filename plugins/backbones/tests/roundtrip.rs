//! Saving in torchvision / efficientnet_pytorch naming and loading back, and the errors for
//! files of another architecture.

mod common;

use autodl_backbones::{Arch, Backbone, BackboneConfig, BackboneError, save_weights};
use burn::store::{ModuleSnapshot, ModuleStore, SafetensorsStore};
use common::*;

/// Names and shapes in a safetensors file.
fn file_tensors(path: &std::path::Path) -> std::collections::BTreeMap<String, Vec<usize>> {
    let mut store = SafetensorsStore::from_file(path);
    store
        .get_all_snapshots()
        .expect("readable")
        .iter()
        .map(|(k, s)| (k.clone(), s.shape.to_vec()))
        .collect()
}

#[test]
fn tensor_counts_match_the_reference_implementations() {
    // torchvision's state dicts (and the EfficientNet file) without `num_batches_tracked`.
    for (arch, count) in [
        (Arch::ResNet18, 102),
        (Arch::ResNet34, 182),
        (Arch::ResNet50, 267),
        (Arch::MobileNetV2, 262),
        (Arch::EfficientNetLite0, 247),
        // darknet53_reference.py's 260 and the classifier's weight and bias.
        (Arch::Darknet53, 262),
    ] {
        let model = Backbone::<Cpu>::new(arch, 3, Some(1000), &device());
        assert_eq!(model.collect(None, None, true).len(), count, "{arch}");
    }
}

/// Tensor names and shapes expected in a file.
type Names = &'static [(&'static str, &'static [usize])];

#[test]
fn saved_weights_use_the_file_naming_and_load_back() {
    let dir = tempfile::tempdir().expect("temp dir");
    let expected: [(Arch, Names); 3] = [
        (
            Arch::ResNet18,
            &[
                ("conv1.weight", &[64, 4, 7, 7]),
                ("bn1.running_var", &[64]),
                ("layer2.0.downsample.0.weight", &[128, 64, 1, 1]),
                ("layer2.0.downsample.1.weight", &[128]),
                ("layer4.1.bn2.bias", &[512]),
                ("fc.weight", &[10, 512]),
            ],
        ),
        (
            Arch::MobileNetV2,
            &[
                ("features.0.0.weight", &[32, 4, 3, 3]),
                ("features.1.conv.0.0.weight", &[32, 1, 3, 3]),
                ("features.1.conv.2.running_mean", &[16]),
                ("features.2.conv.0.0.weight", &[96, 16, 1, 1]),
                ("features.2.conv.3.weight", &[24]),
                ("features.17.conv.2.weight", &[320, 960, 1, 1]),
                ("features.18.0.weight", &[1280, 320, 1, 1]),
                ("features.18.1.bias", &[1280]),
                ("classifier.1.weight", &[10, 1280]),
            ],
        ),
        (
            Arch::EfficientNetLite0,
            &[
                ("_conv_stem.weight", &[32, 4, 3, 3]),
                ("_blocks.0._depthwise_conv.weight", &[32, 1, 3, 3]),
                ("_blocks.15._bn2.running_var", &[320]),
                ("_bn1.weight", &[1280]),
                ("_fc.weight", &[10, 1280]),
            ],
        ),
    ];
    for (arch, names) in expected {
        let model = Backbone::<Cpu>::new(arch, 4, Some(10), &device());
        let path = dir.path().join(format!("{arch}.safetensors"));
        save_weights(&model, &path).expect("saves");
        let tensors = file_tensors(&path);
        for (name, shape) in names {
            assert_eq!(
                tensors.get(*name).map(Vec::as_slice),
                Some(*shape),
                "{arch}: {name}"
            );
        }
        if arch == Arch::EfficientNetLite0 {
            // Same names and shapes as the real checkpoint, but for the bands and classes.
            let real = file_tensors(&lite0_weights());
            let real: Vec<&String> = real
                .keys()
                .filter(|k| !k.ends_with("num_batches_tracked"))
                .collect();
            assert_eq!(tensors.keys().collect::<Vec<_>>(), real);
        }

        let loaded = BackboneConfig::new(arch.name(), 4)
            .with_weights(&path)
            .init::<Cpu>(&device())
            .expect("loads");
        let x = pattern::<Cpu>([1, 4, 32, 32], &device());
        let (a, b) = (
            model.classify(x.clone()).expect("head"),
            loaded.classify(x.clone()).expect("head"),
        );
        assert_eq!(
            max_diff(&to_vec(a), &to_vec(b)),
            0.0,
            "{arch} logits after a round trip"
        );
        let (a, b) = (model.features(x.clone()), loaded.features(x));
        assert_eq!(
            max_diff(&to_vec(a[1].clone()), &to_vec(b[1].clone())),
            0.0,
            "{arch} features"
        );

        // Loading into another band count adapts the first convolution.
        let three = BackboneConfig::new(arch.name(), 3)
            .with_weights(&path)
            .init::<Cpu>(&device())
            .expect("adapts");
        assert_eq!(
            three.features(pattern::<Cpu>([1, 3, 32, 32], &device()))[0].dims()[1],
            arch.channels()[0]
        );
    }
}

#[test]
fn other_resnet_weights_are_clear_errors() {
    let dir = tempfile::tempdir().expect("temp dir");
    let r18 = dir.path().join("r18.safetensors");
    save_weights(
        &Backbone::<Cpu>::new(Arch::ResNet18, 3, None, &device()),
        &r18,
    )
    .expect("saves");

    let err = BackboneConfig::new("resnet50", 3)
        .with_weights(&r18)
        .init::<Cpu>(&device())
        .unwrap_err();
    match &err {
        BackboneError::ShapeMismatch {
            name,
            expected,
            found,
            ..
        } => {
            assert_eq!(name, "layer1.0.conv1.weight");
            assert_eq!(
                (expected.as_slice(), found.as_slice()),
                (&[64, 64, 1, 1][..], &[64, 64, 3, 3][..])
            );
        }
        other => panic!("expected a shape mismatch, got {other:?}"),
    }
    assert!(err.to_string().contains("layer1.0.conv1.weight"), "{err}");

    let err = BackboneConfig::new("resnet34", 3)
        .with_weights(&r18)
        .init::<Cpu>(&device())
        .unwrap_err();
    assert!(
        matches!(&err, BackboneError::MissingTensor { name, .. } if name == "layer1.2.conv1.weight"),
        "{err:?}"
    );

    // A classifier-less file builds no classifier; extra blocks are an error.
    let r34 = dir.path().join("r34.safetensors");
    save_weights(
        &Backbone::<Cpu>::new(Arch::ResNet34, 3, None, &device()),
        &r34,
    )
    .expect("saves");
    let err = BackboneConfig::new("resnet18", 3)
        .with_weights(&r34)
        .init::<Cpu>(&device())
        .unwrap_err();
    assert!(
        matches!(&err, BackboneError::UnexpectedTensor { name, .. } if name.starts_with("layer")),
        "{err:?}"
    );
    let ok = BackboneConfig::new("resnet18", 3)
        .with_weights(&r18)
        .init::<Cpu>(&device())
        .expect("loads");
    assert!(!ok.has_classifier());
}
