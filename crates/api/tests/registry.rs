//! Families registered at run time (what a plugin library loaded by path becomes) beside the
//! compiled-in ones.

use std::path::{Path, PathBuf};

use autodl_api::{
    NetworkFamily, PluginError, PredictOptions, PredictProgress, Progress, Task, TrialResult,
    TrialSpec, network, networks, register_network,
};

struct Loaded;

impl NetworkFamily for Loaded {
    fn name(&self) -> &'static str {
        "loaded-at-run-time"
    }
    fn task(&self) -> Task {
        Task::Detection
    }
    fn backbones(&self) -> &'static [&'static str] {
        &["none"]
    }
    fn train(&self, _: &TrialSpec, _: &dyn Progress) -> Result<TrialResult, PluginError> {
        Err(PluginError::Other("not here".to_owned()))
    }
    fn predict(
        &self,
        _: &Path,
        _: &[PathBuf],
        _: &Path,
        _: &PredictOptions,
        _: &dyn PredictProgress,
    ) -> Result<Vec<PathBuf>, PluginError> {
        Err(PluginError::Other("not here".to_owned()))
    }
}

#[test]
fn a_family_registered_at_run_time_is_found_once() {
    assert!(network("loaded-at-run-time").is_none());
    register_network(&Loaded).expect("a free name");
    assert!(network("loaded-at-run-time").is_some());
    let found = networks()
        .iter()
        .filter(|n| n.name() == "loaded-at-run-time")
        .count();
    assert_eq!(found, 1);
    let again = register_network(&Loaded).expect_err("a taken name");
    assert!(again.to_string().contains("already registered"), "{again}");
}
