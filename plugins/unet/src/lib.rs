//! U-Net pixel classification on a shared backbone, with any number of input bands and
//! classes. [`UnetFamily`] is the plugin that registers it.

mod model;

use std::path::{Path, PathBuf};

use autodl_api::{NetworkFamily, Params, PluginError, Progress, Task, TrialResult, TrialSpec};
use autodl_backbones::Backbone;
use autodl_backend::{BackendChoice, with_backend};
use autodl_train::backboned;
use burn::tensor::backend::Backend;

pub use model::Unet;

/// The U-Net network family.
pub struct UnetFamily;

autodl_api::inventory::submit!(autodl_api::NetworkRegistration(&UnetFamily));

fn build<B: Backend>(backbone: Backbone<B>, classes: usize, _: &Params, device: &B::Device) -> Unet<B> {
    Unet::new(backbone, classes, device)
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
        backboned::BACKBONES
    }

    fn train(&self, spec: &TrialSpec, progress: &dyn Progress) -> Result<TrialResult, PluginError> {
        let choice = BackendChoice::resolve(&spec.backend).map_err(backend_err)?;
        with_backend!(choice, |B, device| backboned::train::<B, Unet<B>, _>(spec, progress, 1e-3, &device, build))
            .map_err(backend_err)?
    }

    fn predict(&self, model_dir: &Path, images: &[PathBuf], out_dir: &Path, backend: &str) -> Result<Vec<PathBuf>, PluginError> {
        let choice = BackendChoice::resolve(backend).map_err(backend_err)?;
        with_backend!(choice, |B, device| backboned::predict::<B, Unet<B>, _>(model_dir, images, out_dir, &device, build))
            .map_err(backend_err)?
    }
}
