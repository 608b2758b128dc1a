//! What every task's training does around the fit loop: the trial folder and the backend's
//! seed before it, the augmentation pipeline, the evaluator and ranking metric, and the split
//! check.

use std::sync::Arc;
use std::time::Instant;

use autodl_api::{Evaluator, PluginError, SampleAugmenter, Task, TrialSpec};
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

/// The registered evaluator that scores the trial: the one its spec names, or the one
/// registered for `task`. Refuses one that scores another task.
pub fn evaluator(spec: &TrialSpec, task: Task) -> Result<&'static dyn Evaluator, PluginError> {
    let evaluator = match &spec.evaluator {
        Some(name) => autodl_api::evaluator(name).ok_or_else(|| {
            let known: Vec<&str> = autodl_api::evaluators().iter().map(|e| e.name()).collect();
            PluginError::Training(format!(
                "unknown evaluator `{name}`; registered evaluators: {}",
                known.join(", ")
            ))
        })?,
        None => autodl_api::default_evaluator(task).ok_or_else(|| {
            PluginError::Training(format!("no evaluator for {task} is compiled in"))
        })?,
    };
    if evaluator.task() != task {
        return Err(PluginError::Training(format!(
            "evaluator `{}` scores {}, not {task}",
            evaluator.name(),
            evaluator.task()
        )));
    }
    Ok(evaluator)
}

/// The ranking metric, which decides the kept epoch, early stopping and the leaderboard: the
/// spec's, or the evaluator's first; one the evaluator reports.
pub fn ranking_metric(spec: &TrialSpec, evaluator: &dyn Evaluator) -> Result<String, PluginError> {
    let metrics = evaluator.metrics();
    let name = match &spec.training.metric {
        Some(m) => m.clone(),
        None => metrics.first().map(|m| m.name.to_owned()).ok_or_else(|| {
            PluginError::Training(format!(
                "evaluator `{}` reports no metric",
                evaluator.name()
            ))
        })?,
    };
    if !metrics.iter().any(|m| m.name == name) {
        let known: Vec<&str> = metrics.iter().map(|m| m.name).collect();
        return Err(PluginError::Training(format!(
            "unknown metric `{name}`: use {}",
            known.join(", ")
        )));
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use autodl_api::{ClassInfo, EvalOptions, Evaluation, EvaluatorRegistration, MetricDecl};

    /// An evaluator of boxes for these tests only (the crate links no evaluator plugin).
    struct TestBoxes;

    autodl_api::inventory::submit!(EvaluatorRegistration(&TestBoxes));

    impl Evaluator for TestBoxes {
        fn name(&self) -> &'static str {
            "test-boxes"
        }
        fn task(&self) -> Task {
            Task::Detection
        }
        fn metrics(&self) -> Vec<MetricDecl> {
            vec![
                MetricDecl::maximise("first"),
                MetricDecl::maximise("second"),
            ]
        }
        fn start(&self, _: &[ClassInfo], _: &EvalOptions) -> Box<dyn Evaluation> {
            unreachable!("these tests only resolve the evaluator")
        }
    }

    fn spec(evaluator: Option<&str>, metric: Option<&str>) -> TrialSpec {
        let mut spec: TrialSpec = serde_json::from_value(serde_json::json!({
            "id": "t", "family": "f", "backbone": "b",
            "data": {"root": "d", "format": null, "images-dir": null, "val-fraction": 0.25,
                     "ignore-index": null, "fail-on-bad-sample": true},
            "backend": "cpu", "seed": 1, "batch-size": 4, "learning-rate": 1e-3, "max-epochs": 1,
            "patience": 5, "time-budget-secs": 1.0, "tile-size": 64,
            "training": {"optimizer": "adamw", "schedule": "one-cycle", "weight-decay": 1e-4,
                         "pretrained": true, "metric": null},
            "augment": {"preset": "none", "steps": [], "strength": 1.0},
            "batch-deducer": "any", "params": {}, "out-dir": "o",
        }))
        .expect("a spec without `evaluator` reads, as older specs do");
        assert_eq!(spec.evaluator, None);
        spec.evaluator = evaluator.map(str::to_owned);
        spec.training.metric = metric.map(str::to_owned);
        spec
    }

    #[test]
    fn the_evaluator_is_the_named_one_or_the_tasks() {
        let e = evaluator(&spec(None, None), Task::Detection).unwrap();
        assert_eq!(e.name(), "test-boxes");
        let e = evaluator(&spec(Some("test-boxes"), None), Task::Detection).unwrap();
        assert_eq!(e.name(), "test-boxes");
        let err = evaluator(&spec(Some("nope"), None), Task::Detection)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("`nope`") && err.contains("test-boxes"),
            "{err}"
        );
        let err = evaluator(&spec(Some("test-boxes"), None), Task::PixelClassification)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("scores detection"), "{err}");
        let err = evaluator(&spec(None, None), Task::PixelClassification)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("no evaluator for pixel-classification"),
            "{err}"
        );
    }

    #[test]
    fn the_ranking_metric_is_one_the_evaluator_reports() {
        assert_eq!(
            ranking_metric(&spec(None, None), &TestBoxes).unwrap(),
            "first"
        );
        assert_eq!(
            ranking_metric(&spec(None, Some("second")), &TestBoxes).unwrap(),
            "second"
        );
        let err = ranking_metric(&spec(None, Some("third")), &TestBoxes)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`third`: use first, second"), "{err}");
    }
}
