//! Feature-map shapes of every backbone for 1, 3 and 6 bands at two input sizes.

mod common;

use autodl_backbones::{Arch, Backbone, BackboneConfig, NAMES};
use common::*;

#[test]
fn features_have_strides_4_to_32_for_any_band_count() {
    let device = device();
    for name in NAMES {
        let arch: Arch = name.parse().expect("known name");
        for bands in [1, 3, 6] {
            let model: Backbone<Cpu> = BackboneConfig::new(*name, bands)
                .init(&device)
                .expect("builds");
            assert_eq!(model.name(), *name);
            assert!(
                !model.has_classifier(),
                "fresh backbones have no classifier"
            );
            // A square size that is a multiple of 32 and an oblong one that is not.
            for [h, w] in [[64, 64], [72, 88]] {
                let x = pattern::<Cpu>([2, bands, h, w], &device);
                let maps = model.features(x);
                for ((map, stride), channels) in
                    maps.iter().zip([4, 8, 16, 32]).zip(model.channels())
                {
                    assert_eq!(
                        map.dims(),
                        [2, channels, h.div_ceil(stride), w.div_ceil(stride)],
                        "{name}, {bands} bands, {h}x{w}, stride {stride}"
                    );
                }
            }
        }
        assert_eq!(
            arch.channels(),
            Backbone::<Cpu>::new(arch, 3, None, &device).channels()
        );
    }
}

#[test]
fn channels_are_the_usual_ones() {
    assert_eq!(Arch::ResNet18.channels(), [64, 128, 256, 512]);
    assert_eq!(Arch::ResNet34.channels(), [64, 128, 256, 512]);
    assert_eq!(Arch::ResNet50.channels(), [256, 512, 1024, 2048]);
    assert_eq!(Arch::MobileNetV2.channels(), [24, 32, 96, 320]);
    assert_eq!(Arch::EfficientNetLite0.channels(), [24, 40, 112, 320]);
    assert_eq!(Arch::Darknet53.channels(), [128, 256, 512, 1024]);
}

#[test]
fn classifier_heads_give_logits() {
    let device = device();
    for arch in Arch::ALL {
        let model = Backbone::<Cpu>::new(arch, 4, Some(7), &device);
        let logits = model
            .classify(pattern::<Cpu>([2, 4, 32, 32], &device))
            .expect("head");
        assert_eq!(logits.dims(), [2, 7], "{arch}");
        let model = model.without_classifier();
        assert!(
            !model.has_classifier()
                && model
                    .classify(pattern::<Cpu>([1, 4, 32, 32], &device))
                    .is_none()
        );
    }
}
