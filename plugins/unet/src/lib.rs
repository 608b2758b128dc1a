//! U-Net pixel classification: an encoder-decoder with skip connections, after Ronneberger et
//! al. (2015), with batch norm and any number of input bands and classes.
//!
//! The network is generic over the Burn backend; [`UnetFamily`] is the plugin that registers it.

mod model;

use std::path::{Path, PathBuf};

use autodl_api::{NetworkFamily, ParamValue, PluginError, Progress, Task, TrialResult, TrialSpec};
use autodl_backend::{BackendChoice, with_backend};
use autodl_train::seg::{self, FamilyOptions};

pub use model::{Unet, UnetConfig};

/// The U-Net network family.
pub struct UnetFamily;

autodl_api::inventory::submit!(autodl_api::NetworkRegistration(&UnetFamily));

const BACKBONES: &[&str] = &["plain"];

fn width_of(params: &autodl_api::Params) -> usize {
    match params.get("width") {
        Some(ParamValue::Number(w)) if *w >= 4.0 => *w as usize,
        _ => 32,
    }
}

fn backend_err(e: autodl_backend::BackendError) -> PluginError {
    PluginError::Other(e.to_string())
}

impl NetworkFamily for UnetFamily {
    fn name(&self) -> &'static str {
        "unet"
    }

    fn task(&self) -> Task {
        Task::PixelClassification
    }

    fn backbones(&self) -> &'static [&'static str] {
        BACKBONES
    }

    fn train(&self, spec: &TrialSpec, progress: &dyn Progress) -> Result<TrialResult, PluginError> {
        if !BACKBONES.contains(&spec.backbone.as_str()) {
            return Err(PluginError::Training(format!(
                "unet has no backbone `{}` (available: {})",
                spec.backbone,
                BACKBONES.join(", ")
            )));
        }
        let width = width_of(&spec.params);
        let mut params = spec.params.clone();
        params.insert("width".to_owned(), ParamValue::Number(width as f64));
        let options = FamilyOptions { size_multiple: 8, default_tile: 256, params, default_lr: 1e-3 };
        let choice = BackendChoice::resolve(&spec.backend).map_err(backend_err)?;
        with_backend!(choice, |B, device| seg::train::<B, Unet<B>, _>(
            spec,
            progress,
            &options,
            &device,
            |device, bands, classes| Ok(UnetConfig { bands, classes, width }.init(device)),
        ))
        .map_err(backend_err)?
    }

    fn predict(
        &self,
        model_dir: &Path,
        images: &[PathBuf],
        out_dir: &Path,
        backend: &str,
    ) -> Result<Vec<PathBuf>, PluginError> {
        let choice = BackendChoice::resolve(backend).map_err(backend_err)?;
        with_backend!(choice, |B, device| autodl_train::predict::predict_segmentation::<B, Unet<B>, _>(
            model_dir,
            images,
            out_dir,
            8,
            &device,
            |device, meta| UnetConfig { bands: meta.bands, classes: meta.classes.len(), width: width_of(&meta.params) }.init(device),
        ))
        .map_err(backend_err)?
    }
}
