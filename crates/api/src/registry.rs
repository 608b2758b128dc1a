//! The static registry that in-tree plugin crates submit into.

use crate::{AugmentPipeline, Augmenter, BatchDeducer, Evaluator, NetworkFamily, Task, Tuner};

macro_rules! registry {
    ($reg:ident, $tr:ident, $all:ident, $one:ident, $what:literal) => {
        #[doc = concat!("Registers a ", $what, ": `inventory::submit!(", stringify!($reg), "(&MyPlugin));`.")]
        pub struct $reg(pub &'static dyn $tr);

        inventory::collect!($reg);

        #[doc = concat!("Every registered ", $what, ", sorted by name.")]
        pub fn $all() -> Vec<&'static dyn $tr> {
            let mut all: Vec<&'static dyn $tr> = inventory::iter::<$reg>.into_iter().map(|r| r.0).collect();
            all.sort_by_key(|p| p.name());
            all
        }

        #[doc = concat!("The registered ", $what, " called `name`.")]
        pub fn $one(name: &str) -> Option<&'static dyn $tr> {
            inventory::iter::<$reg>.into_iter().map(|r| r.0).find(|p| p.name() == name)
        }
    };
}

registry!(
    NetworkRegistration,
    NetworkFamily,
    networks,
    network,
    "network family"
);
registry!(
    AugmenterRegistration,
    Augmenter,
    augmenters,
    augmenter,
    "augmentation"
);
registry!(
    AugmentPipelineRegistration,
    AugmentPipeline,
    augment_pipelines,
    augment_pipeline,
    "augmentation pipeline"
);
registry!(
    BatchDeducerRegistration,
    BatchDeducer,
    batch_deducers,
    batch_deducer,
    "batch-size deducer"
);
registry!(TunerRegistration, Tuner, tuners, tuner, "tuner");
registry!(
    EvaluatorRegistration,
    Evaluator,
    evaluators,
    evaluator,
    "evaluator"
);

/// The ranking rule that names ArcGIS's metric for whatever task a run has.
pub const ARCGIS_METRIC: &str = "arcgis";

/// The metric a ranking-metric name means for `task`: [`ARCGIS_METRIC`] is ArcGIS's rule (AP
/// at IoU 0.1, `arcgis-ap10`, for detection; pixel accuracy, `accuracy`, for pixel
/// classification); any other name means itself.
pub fn metric_for_task(name: &str, task: Task) -> &str {
    match (name, task) {
        (ARCGIS_METRIC, Task::Detection) => "arcgis-ap10",
        (ARCGIS_METRIC, Task::PixelClassification) => "accuracy",
        _ => name,
    }
}

/// The evaluator a trial of `task` uses when its pipeline names none: the first registered for
/// the task, by name.
pub fn default_evaluator(task: Task) -> Option<&'static dyn Evaluator> {
    evaluators().into_iter().find(|e| e.task() == task)
}
