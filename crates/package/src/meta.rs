//! `model.json`: what a trained model's folder holds besides its weights, enough to run it
//! on new images. One type for everyone who writes or reads it (training, packages, predict).

use std::path::{Path, PathBuf};

use autodl_api::{PluginError, Task};
use autodl_data::ClassInfo;
use serde::{Deserialize, Serialize};

/// File name of the weights inside a model folder (Burn's named MessagePack record).
pub const WEIGHTS: &str = "model.mpk";
/// File name of the [`ModelMeta`] inside a model folder.
pub const META: &str = "model.json";

/// Everything needed to rebuild and run a model, stored as `model.json` beside its weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ModelMeta {
    /// Network family.
    pub family: String,
    /// Backbone.
    pub backbone: String,
    /// Task.
    pub task: Task,
    /// Input bands.
    pub bands: usize,
    /// Output classes, in logit order.
    pub classes: Vec<ClassInfo>,
    /// Mask value written for ignored pixels, if the data had one.
    pub ignore_index: Option<u32>,
    /// Per-band mean subtracted before the network.
    pub mean: Vec<f32>,
    /// Per-band standard deviation divided by before the network.
    pub std: Vec<f32>,
    /// Tile side the model was trained on.
    pub tile_size: u32,
    /// Family-specific parameters needed to rebuild the network.
    pub params: autodl_api::Params,
}

impl ModelMeta {
    /// Writes `model.json` into `dir`.
    pub fn save(&self, dir: &Path) -> Result<(), PluginError> {
        let path = dir.join(META);
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| PluginError::Other(format!("cannot serialise model metadata: {e}")))?;
        std::fs::write(&path, text).map_err(|source| PluginError::Io { path, source })
    }

    /// Reads `model.json` from `dir`.
    pub fn load(dir: &Path) -> Result<ModelMeta, PluginError> {
        let path = dir.join(META);
        let text = std::fs::read_to_string(&path).map_err(|source| PluginError::Io {
            path: path.clone(),
            source,
        })?;
        let meta: ModelMeta = serde_json::from_str(&text).map_err(|e| {
            PluginError::Data(format!("{}: invalid model metadata: {e}", path.display()))
        })?;
        meta.check()
            .map_err(|e| PluginError::Data(format!("{}: {e}", path.display())))?;
        Ok(meta)
    }

    /// Checks that the fields agree with each other: one mean and one positive standard
    /// deviation per band, at least one class, a tile side.
    pub fn check(&self) -> Result<(), String> {
        if self.bands == 0 {
            return Err("`bands` is 0".into());
        }
        for (field, v) in [("mean", &self.mean), ("std", &self.std)] {
            if v.len() != self.bands {
                return Err(format!(
                    "`{field}` has {} values for {} bands",
                    v.len(),
                    self.bands
                ));
            }
            if v.iter().any(|x| !x.is_finite()) {
                return Err(format!(
                    "`{field}` holds a value that is not a finite number"
                ));
            }
        }
        if self.std.iter().any(|&s| s <= 0.0) {
            return Err("`std` holds a value that is not positive".into());
        }
        if self.classes.is_empty() {
            return Err("`classes` is empty".into());
        }
        if self.tile_size == 0 {
            return Err("`tile-size` is 0".into());
        }
        Ok(())
    }

    /// Path of the weights file in `dir`, without the extension Burn's recorder adds.
    pub fn weights_stem(dir: &Path) -> PathBuf {
        dir.join("model")
    }
}
