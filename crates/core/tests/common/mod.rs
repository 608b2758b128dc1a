//! What the core's test files share: a trial spec for a fake family.

use std::path::{Path, PathBuf};

use autodl_api::{DataSpec, Params, TrialSpec};

/// Trial `id` of a family `fake`, its folder under `out/trials/`.
pub fn spec(id: &str, out: &Path) -> TrialSpec {
    TrialSpec {
        id: id.to_owned(),
        family: "fake".to_owned(),
        backbone: "none".to_owned(),
        data: DataSpec {
            root: PathBuf::from("x"),
            format: None,
            images_dir: None,
            val_fraction: 0.2,
            test_fraction: 0.0,
            ignore_index: None,
            fail_on_bad_sample: false,
            bands: None,
        },
        backend: "cpu".to_owned(),
        seed: 1,
        batch_size: None,
        learning_rate: None,
        max_epochs: 1,
        patience: 1,
        time_budget_secs: 0.0,
        tile_size: None,
        training: autodl_api::TrainOptions::default(),
        augment: autodl_api::AugmentSpec::preset("none"),
        batch_deducer: "any".to_owned(),
        evaluator: None,
        resume: false,
        rung: 0,
        init_from: None,
        params: Params::new(),
        out_dir: out.join("trials").join(id),
    }
}
