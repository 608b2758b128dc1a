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

/// Registers a network family: `inventory::submit!(NetworkRegistration(&MyFamily));`.
pub struct NetworkRegistration(pub &'static dyn NetworkFamily);

inventory::collect!(NetworkRegistration);

/// Families registered at run time ([`register_network`]): those of plugin libraries loaded
/// by path, beside the compiled-in ones.
static LOADED_NETWORKS: std::sync::RwLock<Vec<&'static dyn NetworkFamily>> =
    std::sync::RwLock::new(Vec::new());

fn loaded_networks() -> Vec<&'static dyn NetworkFamily> {
    // A poisoned lock still holds a consistent list: registration pushes one value.
    LOADED_NETWORKS
        .read()
        .map_or_else(|e| e.into_inner().clone(), |l| l.clone())
}

/// Every registered network family, compiled in or registered at run time, sorted by name.
pub fn networks() -> Vec<&'static dyn NetworkFamily> {
    let mut all: Vec<&'static dyn NetworkFamily> = inventory::iter::<NetworkRegistration>
        .into_iter()
        .map(|r| r.0)
        .chain(loaded_networks())
        .collect();
    all.sort_by_key(|p| p.name());
    all
}

/// The registered network family called `name`, compiled in or registered at run time.
pub fn network(name: &str) -> Option<&'static dyn NetworkFamily> {
    inventory::iter::<NetworkRegistration>
        .into_iter()
        .map(|r| r.0)
        .chain(loaded_networks())
        .find(|p| p.name() == name)
}

/// Registers a network family at run time (a plugin library loaded by path), beside the
/// compiled-in ones; every later [`network`] and [`networks`] sees it. Refuses a second family
/// of the same name, which would make the name ambiguous.
pub fn register_network(family: &'static dyn NetworkFamily) -> Result<(), crate::PluginError> {
    let mut loaded = LOADED_NETWORKS
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let taken = inventory::iter::<NetworkRegistration>
        .into_iter()
        .map(|r| r.0)
        .chain(loaded.iter().copied())
        .any(|p| p.name() == family.name());
    if taken {
        return Err(crate::PluginError::Other(format!(
            "a network family called `{}` is already registered",
            family.name()
        )));
    }
    loaded.push(family);
    Ok(())
}
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
