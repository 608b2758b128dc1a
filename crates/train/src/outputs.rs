//! The report files every trial folder holds beside its model besides `metrics.json` (written
//! through its type, `autodl_api::MetricsFile`): `epochs.csv`, the learning curve.

use std::path::{Path, PathBuf};

use autodl_api::{EpochRecord, PluginError};

fn io(path: PathBuf) -> impl FnOnce(std::io::Error) -> PluginError {
    move |source| PluginError::Io { path, source }
}

/// Writes `epochs.csv`, one row per epoch, the ranking metric's column named `metric_column`.
pub fn write_epochs(
    dir: &Path,
    metric_column: &str,
    epochs: &[EpochRecord],
) -> Result<(), PluginError> {
    let mut csv = format!("epoch,train_loss,val_loss,{metric_column},elapsed_secs\n");
    for e in epochs {
        csv.push_str(&format!(
            "{},{},{},{},{}\n",
            e.epoch, e.train_loss, e.val_loss, e.metric, e.elapsed_secs
        ));
    }
    let path = dir.join("epochs.csv");
    std::fs::write(&path, csv).map_err(io(path.clone()))
}
