//! RoIAlign against the independent numpy reference in `tests/fixtures/roi_align/`
//! (`make_expected.py`, itself checked against torchvision): forward values and the gradient
//! with respect to the features, to 1e-4, for boxes inside, across every border and outside
//! the map, below a pixel, with sampling ratios 0 (adaptive), 1, 2 and 3, aligned or not.

use std::path::Path;

use autodl_nets::roi_align::{Roi, RoiAlignConfig, roi_align};
use burn::backend::{Autodiff, Flex};
use burn::tensor::{Tensor, TensorData};
use serde::Deserialize;

type Train = Autodiff<Flex>;

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Expected {
    features_shape: [usize; 4],
    features: Vec<f32>,
    rois: Vec<[f32; 5]>,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Case {
    output_size: usize,
    spatial_scale: f32,
    sampling_ratio: usize,
    aligned: bool,
    upstream: Vec<f32>,
    output: Vec<f32>,
    gradient: Vec<f32>,
}

fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= 1e-4, "{what}[{i}]: {g} vs {w}");
    }
}

#[test]
fn roi_align_matches_the_numpy_reference_forward_and_backward() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/roi_align/expected.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let expected: Expected = serde_json::from_str(&text).unwrap();
    let device = Default::default();
    let rois: Vec<Roi> = expected
        .rois
        .iter()
        .map(|r| (r[0] as usize, [r[1], r[2], r[3], r[4]]))
        .collect();
    assert_eq!(expected.cases.len(), 4);
    for case in &expected.cases {
        let what = format!(
            "size {} ratio {} aligned {}",
            case.output_size, case.sampling_ratio, case.aligned
        );
        let features = Tensor::<Train, 4>::from_data(
            TensorData::new(expected.features.clone(), expected.features_shape),
            &device,
        )
        .require_grad();
        let config = RoiAlignConfig {
            output_size: case.output_size,
            spatial_scale: case.spatial_scale,
            sampling_ratio: case.sampling_ratio,
            aligned: case.aligned,
        };
        let out = roi_align(features.clone(), &rois, &config);
        let p = case.output_size;
        assert_eq!(out.dims(), [rois.len(), expected.features_shape[1], p, p]);
        let got: Vec<f32> = out.to_data().to_vec().unwrap();
        assert_close(&format!("{what}: output"), &got, &case.output);
        let upstream = Tensor::<Train, 4>::from_data(
            TensorData::new(case.upstream.clone(), out.dims()),
            &device,
        );
        let grads = (out * upstream).sum().backward();
        let grad: Vec<f32> = features.grad(&grads).unwrap().to_data().to_vec().unwrap();
        assert_close(&format!("{what}: gradient"), &grad, &case.gradient);
    }
}

#[test]
fn no_regions_give_an_empty_output() {
    let device = Default::default();
    let features = Tensor::<Flex, 4>::ones([1, 2, 4, 4], &device);
    let config = RoiAlignConfig {
        output_size: 7,
        spatial_scale: 1.0,
        sampling_ratio: 2,
        aligned: true,
    };
    assert_eq!(roi_align(features, &[], &config).dims(), [0, 2, 7, 7]);
}
