//! A transform registered by another crate, with a parameter of its own, is reachable from a
//! pipeline file: the planner checks its parameter against its declaration and the registered
//! augmentation pipeline builds and applies it between this crate's transforms.

use std::path::Path;

use autodl_api::{
    AugSample, Augmenter, AugmenterRegistration, ParamDecl, ParamKind, Params, ParamsExt,
    PluginError, Task, inventory,
};
use autodl_augment as _;
use autodl_config::Pipeline;

/// Adds `offset` to every pixel.
struct Offset {
    offset: f32,
}

impl Augmenter for Offset {
    fn name(&self) -> &'static str {
        "test-offset"
    }

    fn params(&self) -> Vec<ParamDecl> {
        vec![ParamDecl::fixed(
            "offset",
            "added to every pixel",
            ParamKind::Number {
                min: -10.0,
                max: 10.0,
                default: 1.0,
            },
        )]
    }

    fn configure(&self, params: &Params) -> Result<Box<dyn Augmenter>, PluginError> {
        let offset = params
            .number("offset")
            .map_err(|e| PluginError::Other(e.to_string()))?;
        Ok(Box::new(Offset {
            offset: offset as f32,
        }))
    }

    fn apply(&self, sample: &mut AugSample, _strength: f32, _seed: u64) {
        for x in &mut sample.image {
            *x += self.offset;
        }
    }
}

inventory::submit!(AugmenterRegistration(&Offset { offset: 1.0 }));

fn pipeline(steps: &str) -> Result<Pipeline, String> {
    let text = format!("version = 1\n[data]\npath = \"x\"\n{steps}");
    Pipeline::parse(&text, Path::new("p.toml")).map_err(|e| e.to_string())
}

fn sample() -> AugSample {
    AugSample {
        width: 2,
        height: 1,
        bands: 1,
        image: vec![0.0, 1.0],
        mask: None,
        boxes: vec![],
    }
}

#[test]
fn a_registered_transform_with_parameters_runs_from_a_pipeline_file() {
    let p = pipeline(
        "[[augment.steps]]\nname = \"hflip\"\n[[augment.steps]]\nname = \"test-offset\"\noffset = 2.5\n",
    )
    .unwrap();
    let spec = autodl_core::augment_spec(&p).unwrap();
    assert_eq!(spec.steps[1].params["offset"].to_string(), "2.5");
    let built = autodl_api::augment_pipeline(&spec.pipeline)
        .unwrap()
        .build(&spec, Task::Detection)
        .unwrap();
    let mut s = sample();
    built.apply(&mut s, 7);
    assert_eq!(s.image, vec![3.5, 2.5], "flipped, then offset by 2.5");

    // Without the parameter, its declared default applies.
    let p = pipeline("[[augment.steps]]\nname = \"test-offset\"\n").unwrap();
    let spec = autodl_core::augment_spec(&p).unwrap();
    let built = autodl_api::augment_pipeline(&spec.pipeline)
        .unwrap()
        .build(&spec, Task::PixelClassification)
        .unwrap();
    let mut s = sample();
    built.apply(&mut s, 7);
    assert_eq!(s.image, vec![1.0, 2.0]);
}

#[test]
fn a_registered_transform_s_parameters_are_checked_with_their_line() {
    let p = pipeline("[[augment.steps]]\nname = \"test-offset\"\noffset = 50\n").unwrap();
    let err = autodl_core::augment_spec(&p).unwrap_err().to_string();
    assert!(
        err.contains("p.toml:6:") && err.contains("from -10 to 10"),
        "{err}"
    );
    let p = pipeline("[[augment.steps]]\nname = \"test-offset\"\nofset = 2\n").unwrap();
    let err = autodl_core::augment_spec(&p).unwrap_err().to_string();
    assert!(
        err.contains("p.toml:6:") && err.contains("`ofset`") && err.contains("offset"),
        "{err}"
    );
}
