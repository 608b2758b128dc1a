//! Glue for pixel-classification families built on a shared backbone: pretrained weights by
//! default, N-band adaptation, and the same training and prediction loops for every head.

use std::path::{Path, PathBuf};

use autodl_api::{PluginError, Progress, TrialResult, TrialSpec};
use autodl_backbones::{Backbone, BackboneConfig};
use burn::module::AutodiffModule;
use burn::tensor::backend::{AutodiffBackend, Backend};

use crate::model_dir::ModelMeta;
use crate::seg::{self, FamilyOptions, SegNet, text_param};

/// Backbones every backbone-based family offers; the first, which has bundled ImageNet
/// weights, is the default.
pub const BACKBONES: &[&str] = &["efficientnet-lite0", "resnet18", "resnet34", "resnet50", "mobilenetv2"];

/// Total stride of the backbones: inputs are padded to a multiple of it.
pub const SIZE_MULTIPLE: usize = 32;

/// Builds the backbone a trial asks for: pretrained unless `pretrained = false` or no
/// weights exist for it.
pub fn backbone<B: Backend>(
    name: &str,
    bands: usize,
    pretrained: bool,
    device: &B::Device,
) -> Result<Backbone<B>, PluginError> {
    let weights = if pretrained { autodl_backbones::default_weights(name) } else { None };
    // Segmentation heads use the features only; the ImageNet classifier would be dead weight.
    BackboneConfig { name: name.to_owned(), bands, weights }
        .init(device)
        .map(Backbone::without_classifier)
        .map_err(|e| PluginError::Training(e.to_string()))
}

/// Whether the spec asks for pretrained weights (the default).
pub fn wants_pretrained(params: &autodl_api::Params) -> bool {
    text_param(params, "pretrained", "true") != "false"
}

/// Trains a head on a backbone. `head` builds the network from a backbone, the class count
/// and the trial's parameters.
pub fn train<B, M, H>(
    spec: &TrialSpec,
    progress: &dyn Progress,
    default_lr: f64,
    device: &B::Device,
    head: H,
) -> Result<TrialResult, PluginError>
where
    B: AutodiffBackend,
    M: SegNet<B> + AutodiffModule<B>,
    M::InnerModule: SegNet<B::InnerBackend>,
    H: Fn(Backbone<B>, usize, &autodl_api::Params, &B::Device) -> M,
{
    if !BACKBONES.contains(&spec.backbone.as_str()) {
        return Err(PluginError::Training(format!(
            "{} has no backbone `{}` (available: {})",
            spec.family,
            spec.backbone,
            BACKBONES.join(", ")
        )));
    }
    let pretrained = wants_pretrained(&spec.params);
    match (pretrained, autodl_backbones::default_weights(&spec.backbone)) {
        (true, Some(path)) => progress.message(&format!("pretrained {} weights from {}", spec.backbone, path.display())),
        (true, None) => progress.message(&format!(
            "no pretrained weights for {} (put {}.safetensors in AUTODL_WEIGHTS_DIR); random initialisation",
            spec.backbone, spec.backbone
        )),
        (false, _) => progress.message("random initialisation (pretrained = false)"),
    }
    let mut params = spec.params.clone();
    params.insert("backbone".into(), autodl_api::ParamValue::Text(spec.backbone.clone()));
    let options = FamilyOptions { size_multiple: SIZE_MULTIPLE, default_tile: 256, params: params.clone(), default_lr };
    seg::train::<B, M, _>(spec, progress, &options, device, |device, bands, classes| {
        let bb = backbone::<B>(&spec.backbone, bands, pretrained, device)?;
        Ok(head(bb, classes, &params, device))
    })
}

/// Runs a trained backbone-based model on images.
pub fn predict<B, M, H>(
    model_dir: &Path,
    images: &[PathBuf],
    out_dir: &Path,
    device: &B::Device,
    head: H,
) -> Result<Vec<PathBuf>, PluginError>
where
    B: Backend,
    M: SegNet<B>,
    H: Fn(Backbone<B>, usize, &autodl_api::Params, &B::Device) -> M,
{
    let meta = ModelMeta::load(model_dir)?;
    let name = text_param(&meta.params, "backbone", &meta.backbone).to_owned();
    // The saved record replaces every parameter, so the backbone starts from fresh values.
    let bb = backbone::<B>(&name, meta.bands, false, device)?;
    let model = head(bb, meta.classes.len(), &meta.params, device);
    crate::predict::predict_segmentation::<B, M, _>(model_dir, images, out_dir, SIZE_MULTIPLE, device, |_, _| model.clone())
}

/// Declares a backbone-based pixel-classification family and registers it: a unit struct
/// named `$family` whose `NetworkFamily` impl trains and predicts `$net<B>` built by `$build`
/// (a `fn(Backbone<B>, classes, &Params, &Device) -> $net<B>`), on whichever backend the trial
/// names. The family crate must depend on `autodl-api` and `autodl-backend`.
#[macro_export]
macro_rules! backbone_family {
    ($(#[$doc:meta])* $family:ident, $name:literal, $net:ident, $build:path, default_lr = $lr:expr) => {
        $(#[$doc])*
        pub struct $family;

        ::autodl_api::inventory::submit!(::autodl_api::NetworkRegistration(&$family));

        impl ::autodl_api::NetworkFamily for $family {
            fn name(&self) -> &'static str {
                $name
            }

            fn task(&self) -> ::autodl_api::Task {
                ::autodl_api::Task::PixelClassification
            }

            fn backbones(&self) -> &'static [&'static str] {
                $crate::backboned::BACKBONES
            }

            fn train(
                &self,
                spec: &::autodl_api::TrialSpec,
                progress: &dyn ::autodl_api::Progress,
            ) -> Result<::autodl_api::TrialResult, ::autodl_api::PluginError> {
                let choice = ::autodl_backend::BackendChoice::resolve(&spec.backend)
                    .map_err(|e| ::autodl_api::PluginError::Other(e.to_string()))?;
                ::autodl_backend::with_backend!(choice, |B, device| $crate::backboned::train::<B, $net<B>, _>(
                    spec, progress, $lr, &device, $build
                ))
                .map_err(|e| ::autodl_api::PluginError::Other(e.to_string()))?
            }

            fn predict(
                &self,
                model_dir: &::std::path::Path,
                images: &[::std::path::PathBuf],
                out_dir: &::std::path::Path,
                backend: &str,
            ) -> Result<Vec<::std::path::PathBuf>, ::autodl_api::PluginError> {
                let choice = ::autodl_backend::BackendChoice::resolve(backend)
                    .map_err(|e| ::autodl_api::PluginError::Other(e.to_string()))?;
                ::autodl_backend::with_backend!(choice, |B, device| $crate::backboned::predict::<B, $net<B>, _>(
                    model_dir, images, out_dir, &device, $build
                ))
                .map_err(|e| ::autodl_api::PluginError::Other(e.to_string()))?
            }
        }
    };
}
