//! What a trained model's folder holds besides its weights: [`ModelMeta`], defined with the
//! package that carries it.

pub use autodl_package::{META, ModelMeta, WEIGHTS};

use std::path::Path;

use autodl_api::PluginError;
use burn::module::Module;
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder};
use burn::tensor::backend::Backend;

/// Reads a model folder's [`ModelMeta`], builds the network `build` makes from it and loads
/// the folder's weights into it: how prediction starts, for every task.
pub fn load_trained<B, M, F>(
    model_dir: &Path,
    device: &B::Device,
    build: F,
) -> Result<(ModelMeta, M), PluginError>
where
    B: Backend,
    M: Module<B>,
    F: Fn(&B::Device, &ModelMeta) -> M,
{
    let meta = ModelMeta::load(model_dir)?;
    let model = build(device, &meta)
        .load_file(
            ModelMeta::weights_stem(model_dir),
            &NamedMpkFileRecorder::<FullPrecisionSettings>::new(),
            device,
        )
        .map_err(|e| {
            PluginError::Data(format!("{}: cannot load weights: {e}", model_dir.display()))
        })?;
    Ok((meta, model))
}
