//! U-Net pixel classification on a shared backbone, with any number of input bands and
//! classes. [`UnetFamily`] is the plugin that registers it.

mod model;

use autodl_api::Params;
use autodl_backbones::Backbone;
use burn::tensor::backend::Backend;

pub use model::Unet;

autodl_nets::backbone_family!(
    /// The U-Net network family.
    UnetFamily, "unet", Unet, build, default_lr = 1e-3, arcgis = "UnetClassifier"
);

fn build<B: Backend>(
    backbone: Backbone<B>,
    classes: usize,
    _: &Params,
    device: &B::Device,
) -> Unet<B> {
    Unet::new(backbone, classes, device)
}
