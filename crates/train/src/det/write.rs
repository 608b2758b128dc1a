//! What a detector trial leaves in its folder besides the weights: the model's metadata
//! (with the anchor scale and thresholds prediction needs) and the report files.

use std::collections::BTreeMap;
use std::path::Path;

use autodl_api::{EpochRecord, MetricsFile, Params, PluginError, TrialSpec};

use super::data::DetData;
use crate::model_dir::ModelMeta;
use crate::outputs::write_epochs;

/// Writes `model.json`: what prediction needs to rebuild the network and reproduce validation
/// (`params` holds the family's parameters, the anchor scale and the chosen thresholds).
pub(crate) fn write_model(
    spec: &TrialSpec,
    data: &DetData,
    tile: usize,
    params: Params,
) -> Result<(), PluginError> {
    ModelMeta {
        family: spec.family.clone(),
        backbone: spec.backbone.clone(),
        task: autodl_api::Task::Detection,
        bands: data.bands,
        classes: data.classes.clone(),
        ignore_index: None,
        mean: data.mean.clone(),
        std: data.std.clone(),
        tile_size: tile as u32,
        params,
        extract_bands: spec.data.bands.clone(),
    }
    .save(&spec.out_dir)
}

/// Writes `metrics.json` (the evaluator's numbers with the finished epochs) and `epochs.csv`,
/// and returns the headline numbers by name.
pub(crate) fn write_reports(
    dir: &Path,
    mut metrics: MetricsFile,
    epochs: &[EpochRecord],
) -> Result<BTreeMap<String, f64>, PluginError> {
    metrics.set_epochs(epochs.to_vec());
    metrics.save(dir)?;
    // The column keeps its historical name whichever metric ranks.
    write_epochs(dir, "ap50", epochs)?;
    Ok(metrics.scores())
}
