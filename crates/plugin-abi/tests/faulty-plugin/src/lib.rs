//! A plugin library that fails on purpose, for the loader's tests. By feature it reports
//! another ABI version (`wrong-abi`), exports no entry point (`no-entry`) or panics while
//! describing itself (`panic-describe`); by default it loads, and its family panics in
//! `train` and `predict`.

use std::path::{Path, PathBuf};

use autodl_api::{
    NetworkFamily, PluginError, PredictOptions, PredictProgress, Progress, Task, TrialResult,
    TrialSpec,
};

/// A family whose every piece of work panics.
pub struct Faulty;

impl NetworkFamily for Faulty {
    fn name(&self) -> &'static str {
        "faulty"
    }

    fn task(&self) -> Task {
        Task::PixelClassification
    }

    fn backbones(&self) -> &'static [&'static str] {
        if cfg!(feature = "panic-describe") {
            panic!("boom in describe");
        }
        &["resnet18"]
    }

    fn train(&self, _: &TrialSpec, progress: &dyn Progress) -> Result<TrialResult, PluginError> {
        progress.message("about to fail");
        panic!("boom in train");
    }

    fn predict(
        &self,
        _: &Path,
        _: &[PathBuf],
        _: &Path,
        _: &PredictOptions,
        _: &dyn PredictProgress,
    ) -> Result<Vec<PathBuf>, PluginError> {
        panic!("boom in predict");
    }
}

#[cfg(not(any(feature = "wrong-abi", feature = "no-entry")))]
autodl_plugin_abi::export_family!(Faulty);

/// A table of a future ABI: only its leading version is meant to be read.
#[cfg(feature = "wrong-abi")]
#[unsafe(no_mangle)]
pub extern "C" fn autodl_plugin_v1() -> *const u32 {
    static VERSION: u32 = 999;
    &VERSION
}
