//! What every task's training does around the fit loop: the trial folder and the backend's
//! seed before it, the augmentation pipeline and the split check.

use std::sync::Arc;
use std::time::Instant;

use autodl_api::{PluginError, SampleAugmenter, TrialSpec};
use burn::tensor::backend::Backend;

/// Starts a trial: creates its folder and seeds the backend. Returns the start time, which the
/// result's training time counts from.
pub fn begin<B: Backend>(spec: &TrialSpec, device: &B::Device) -> Result<Instant, PluginError> {
    let start = Instant::now();
    std::fs::create_dir_all(&spec.out_dir).map_err(|source| PluginError::Io {
        path: spec.out_dir.clone(),
        source,
    })?;
    B::seed(device, spec.seed);
    Ok(start)
}

/// Refuses a dataset with an empty training or validation split.
pub fn check_splits(n_train: usize, n_val: usize) -> Result<(), PluginError> {
    if n_train == 0 || n_val == 0 {
        return Err(PluginError::Data(
            "the train or validation split is empty".into(),
        ));
    }
    Ok(())
}

/// The augmentation the spec asks for, built by the registered augmentation pipeline it names:
/// its list of registered augmentations, or its preset for `task`.
pub fn augmenter(
    spec: &TrialSpec,
    task: autodl_api::Task,
) -> Result<Arc<dyn SampleAugmenter>, PluginError> {
    let name = &spec.augment.pipeline;
    let pipeline = autodl_api::augment_pipeline(name).ok_or_else(|| {
        PluginError::Training(format!(
            "unknown augmentation pipeline `{name}`; registered: {}",
            autodl_api::augment_pipelines()
                .iter()
                .map(|p| p.name())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })?;
    pipeline.build(&spec.augment, task)
}
