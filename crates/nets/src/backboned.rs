//! Glue for pixel-classification and detection families built on a shared backbone: pretrained
//! weights by default, N-band adaptation, and the same training and prediction loops for every
//! head.

use std::path::{Path, PathBuf};

use autodl_api::{ParamsExt, PluginError, Progress, TrialResult, TrialSpec};
use autodl_backbones::{Backbone, BackboneConfig};
use burn::module::AutodiffModule;
use burn::tensor::backend::{AutodiffBackend, Backend};

use autodl_train::det::{self, DetData, DetNet, DetOptions, DetTraining, Detector};
use autodl_train::model_dir::ModelMeta;
use autodl_train::params::text_param;

/// The parameters every anchor-head detector on a backbone declares.
pub use autodl_train::options::detector_params;
/// The parameter every detector on a backbone declares, whatever its head.
pub use autodl_train::options::freeze_stem_param;
/// The parameters every pixel-classification family on a backbone declares (its loss).
pub use autodl_train::options::pixel_params;
use autodl_train::seg::{self, FamilyOptions, SegNet};

/// Backbones every backbone-based family offers; the first, which has bundled ImageNet
/// weights, is the default. Those after [`TUNED_BACKBONES`] are chosen by name only.
pub const BACKBONES: &[&str] = &[
    "efficientnet-lite0",
    "resnet18",
    "resnet34",
    "resnet50",
    "mobilenetv2",
    "darknet53",
];

/// The backbones advanced mode searches: all of [`BACKBONES`] but Darknet-53, which has no
/// pretrained weights (none ship, and Darknet's own are not in a format we load) and is the
/// largest (40.6 M parameters, twice ResNet-50's cost per step): a tuning trial on it would
/// spend its share training 52 layers from scratch. `--backbone darknet53` still picks it.
pub const TUNED_BACKBONES: &[&str] = BACKBONES.split_at(5).0;

/// The backbones advanced mode tunes: those of [`TUNED_BACKBONES`] whose pretrained weights
/// are on this machine (bundled, or in the user's weights folder, `autodl_backbones::weights_dir`,
/// where `autodl weights import` puts them), since on a CPU
/// budget a backbone trained from scratch cannot compete (on trees_voc in 10 minutes PyTorch
/// reaches AP50 0.07 from scratch against 0.42 pretrained); the default backbone when none
/// has weights.
pub fn pretrained_backbones() -> Vec<&'static str> {
    let with_weights: Vec<&'static str> = TUNED_BACKBONES
        .iter()
        .copied()
        .filter(|b| autodl_backbones::default_weights(b).is_some())
        .collect();
    if with_weights.is_empty() {
        vec![BACKBONES[0]]
    } else {
        with_weights
    }
}

/// Builds the backbone a trial asks for: pretrained unless `pretrained = false` or no
/// weights exist for it.
pub fn backbone<B: Backend>(
    name: &str,
    bands: usize,
    pretrained: bool,
    device: &B::Device,
) -> Result<Backbone<B>, PluginError> {
    let weights = if pretrained {
        autodl_backbones::default_weights(name)
    } else {
        None
    };
    // Segmentation heads use the features only; the ImageNet classifier would be dead weight.
    BackboneConfig {
        name: name.to_owned(),
        bands,
        weights,
    }
    .init(device)
    .map(Backbone::without_classifier)
    .map_err(|e| PluginError::Training(e.to_string()))
}

/// Model parameter recording whether the backbone's batch norm was frozen in training.
const FROZEN_BN: &str = "frozen-bn";

/// Checks the backbone name, says where the weights come from, and returns whether they are
/// pretrained and the family parameters to record (the backbone among them).
fn prepare(
    spec: &TrialSpec,
    progress: &dyn Progress,
) -> Result<(bool, autodl_api::Params), PluginError> {
    if !BACKBONES.contains(&spec.backbone.as_str()) {
        return Err(PluginError::Training(format!(
            "{} has no backbone `{}` (available: {})",
            spec.family,
            spec.backbone,
            BACKBONES.join(", ")
        )));
    }
    // Pretrained only when weights exist: a randomly initialised backbone must not be treated
    // as a pretrained one (a detector would freeze its batch norm at the identity and its
    // random stem).
    let pretrained = match (
        spec.training.pretrained,
        autodl_backbones::default_weights(&spec.backbone),
    ) {
        (true, Some(path)) => {
            progress.message(&format!(
                "pretrained {} weights from {}",
                spec.backbone,
                path.display()
            ));
            true
        }
        (true, None) => {
            progress.message(&format!(
                "no pretrained weights for {} (`autodl weights import` a torchvision or timm checkpoint); random initialisation",
                spec.backbone
            ));
            false
        }
        (false, _) => {
            progress.message("random initialisation (pretrained = false)");
            false
        }
    };
    let mut params = spec.params.clone();
    params.insert(
        "backbone".into(),
        autodl_api::ParamValue::Text(spec.backbone.clone()),
    );
    Ok((pretrained, params))
}

/// Trains a pixel-classification head on a backbone. `head` builds the network from a
/// backbone, the class count and the trial's parameters.
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
    let (pretrained, params) = prepare(spec, progress)?;
    let options = FamilyOptions {
        default_tile: 256,
        params: params.clone(),
        default_lr,
    };
    seg::train::<B, M, _>(
        spec,
        progress,
        &options,
        device,
        |device, bands, classes| {
            let bb = backbone::<B>(&spec.backbone, bands, pretrained, device)?;
            Ok(head(bb, classes, &params, device))
        },
    )
}

/// What a detector on a backbone records and builds besides its head: whether the pretrained
/// backbone is frozen, and the family parameters `model.json` records (the trial's, the
/// backbone and [`FROZEN_BN`]).
struct DetectorBackbone {
    pretrained: bool,
    freeze: bool,
    params: autodl_api::Params,
}

impl DetectorBackbone {
    /// Checks the trial's backbone and reads `freeze-stem`.
    fn for_trial(spec: &TrialSpec, progress: &dyn Progress) -> Result<Self, PluginError> {
        let (pretrained, params) = prepare(spec, progress)?;
        // Detectors train on small batches, where batch statistics are noise: like
        // torchvision's detectors, a pretrained backbone keeps its ImageNet batch norm and its
        // stem frozen, which also makes a CPU step about 2.4 times faster
        // (`cargo xtask bench retinanet`).
        let freeze = pretrained
            && spec
                .params
                .flag("freeze-stem")
                .map_err(autodl_train::options::param_error)?;
        Ok(DetectorBackbone {
            pretrained,
            freeze,
            params,
        })
    }

    /// The parameters to record: the trial's and the backbone, and whether batch norm was
    /// frozen (frozen batch norm computes its affine map differently from Burn's inference
    /// mode; prediction rebuilds it the same way, so that it reproduces validation to the bit).
    fn recorded(&self) -> autodl_api::Params {
        let mut params = self.params.clone();
        params.insert(
            FROZEN_BN.into(),
            autodl_api::ParamValue::Text(self.freeze.to_string()),
        );
        params
    }

    /// A fresh network from the trial's backbone, frozen as asked.
    fn build<B: Backend, M, H>(
        &self,
        spec: &TrialSpec,
        head: &H,
        bands: usize,
        classes: usize,
        device: &B::Device,
    ) -> Result<M, PluginError>
    where
        H: Fn(Backbone<B>, usize, &autodl_api::Params, &B::Device) -> M,
    {
        let bb = backbone::<B>(&spec.backbone, bands, self.pretrained, device)?;
        let bb = if self.freeze {
            bb.with_frozen_bn(true).with_frozen_stem()
        } else {
            bb
        };
        Ok(head(bb, classes, &self.params, device))
    }
}

/// Trains a detection head on a backbone; like [`train`], with the family's [`DetOptions`].
pub fn train_detector<B, M, H>(
    spec: &TrialSpec,
    progress: &dyn Progress,
    options: DetOptions,
    device: &B::Device,
    head: H,
) -> Result<TrialResult, PluginError>
where
    B: AutodiffBackend,
    M: DetNet<B> + AutodiffModule<B>,
    M::InnerModule: DetNet<B::InnerBackend>,
    H: Fn(Backbone<B>, usize, &autodl_api::Params, &B::Device) -> M,
{
    let setup = DetectorBackbone::for_trial(spec, progress)?;
    let mut options = options;
    options.params.extend(setup.recorded());
    det::train::<B, M, _>(
        spec,
        progress,
        &options,
        device,
        |device, bands, classes| setup.build(spec, &head, bands, classes, device),
    )
}

/// The head of a backbone-based detector that is not an anchor head (the `head = ...` form of
/// [`detector_family!`]): what the trial chooses besides the weights, what `model.json`
/// records of it, and how a trained model's head is read back.
pub trait DetectorHead: Sized + Sync {
    /// Learning rate and tile side when the trial gives none.
    fn training() -> DetTraining;

    /// The head a trial trains with, from its checked parameters, its data and its tile side;
    /// what it chose may be reported through `progress`.
    fn for_trial(
        spec: &TrialSpec,
        data: &DetData,
        tile: usize,
        progress: &dyn Progress,
    ) -> Result<Self, PluginError>;

    /// What `model.json` records of the head besides the trial's parameters (which it records
    /// anyway): what [`DetectorHead::from_params`] needs and the trial did not give.
    fn params(&self) -> autodl_api::Params;

    /// The head of a trained model, from the parameters its `model.json` records.
    fn from_params(params: &autodl_api::Params) -> Result<Self, PluginError>;
}

/// Trains any [`det::Detector`] on a backbone whose head is a [`DetectorHead`]; like
/// [`train_detector`].
pub fn train_detector_with<B, M, D, H>(
    spec: &TrialSpec,
    progress: &dyn Progress,
    device: &B::Device,
    head: H,
) -> Result<TrialResult, PluginError>
where
    B: AutodiffBackend,
    D: DetectorHead,
    M: Detector<B, D> + AutodiffModule<B>,
    M::InnerModule: Detector<B::InnerBackend, D>,
    H: Fn(Backbone<B>, usize, &autodl_api::Params, &B::Device) -> M,
{
    let setup = DetectorBackbone::for_trial(spec, progress)?;
    det::train_with::<B, M, D, _>(
        spec,
        progress,
        D::training(),
        device,
        |data, tile| {
            let chosen = D::for_trial(spec, data, tile, progress)?;
            let mut params = setup.recorded();
            params.extend(chosen.params());
            Ok((chosen, params))
        },
        |device, bands, classes| setup.build(spec, &head, bands, classes, device),
    )
}

/// Rebuilds a trained model's network with fresh values (its record replaces them all).
fn rebuild<B: Backend, M, H>(
    meta: &ModelMeta,
    device: &B::Device,
    head: &H,
) -> Result<M, PluginError>
where
    H: Fn(Backbone<B>, usize, &autodl_api::Params, &B::Device) -> M,
{
    let name = text_param(&meta.params, "backbone", &meta.backbone).to_owned();
    let bb = backbone::<B>(&name, meta.bands, false, device)?
        .with_frozen_bn(text_param(&meta.params, FROZEN_BN, "false") == "true");
    Ok(head(bb, meta.classes.len(), &meta.params, device))
}

/// Runs a trained backbone-based detector on images (see [`det::predict`]).
#[allow(clippy::too_many_arguments)]
pub fn predict_detector<B, M, H>(
    model_dir: &Path,
    images: &[PathBuf],
    out_dir: &Path,
    options: DetOptions,
    score_threshold: Option<f64>,
    progress: &dyn autodl_api::PredictProgress,
    device: &B::Device,
    head: H,
) -> Result<Vec<PathBuf>, PluginError>
where
    B: Backend,
    M: DetNet<B>,
    H: Fn(Backbone<B>, usize, &autodl_api::Params, &B::Device) -> M,
{
    let model = rebuild::<B, M, H>(&ModelMeta::load(model_dir)?, device, &head)?;
    det::predict::<B, M, _>(
        model_dir,
        images,
        out_dir,
        &options,
        score_threshold,
        progress,
        device,
        |_, _| model.clone(),
    )
}

/// Runs a trained backbone-based [`det::Detector`] whose head is a [`DetectorHead`] on images
/// (see [`det::predict_with`]).
#[allow(clippy::too_many_arguments)]
pub fn predict_detector_with<B, M, D, H>(
    model_dir: &Path,
    images: &[PathBuf],
    out_dir: &Path,
    score_threshold: Option<f64>,
    progress: &dyn autodl_api::PredictProgress,
    device: &B::Device,
    head: H,
) -> Result<Vec<PathBuf>, PluginError>
where
    B: Backend,
    D: DetectorHead,
    M: Detector<B, D>,
    H: Fn(Backbone<B>, usize, &autodl_api::Params, &B::Device) -> M,
{
    let meta = ModelMeta::load(model_dir)?;
    let model = rebuild::<B, M, H>(&meta, device, &head)?;
    let trained = D::from_params(&meta.params)?;
    det::predict_with::<B, M, D, _>(
        model_dir,
        images,
        out_dir,
        |_| trained,
        score_threshold,
        progress,
        device,
        |_, _| model.clone(),
    )
}

/// Runs a trained backbone-based model on images.
pub fn predict<B, M, H>(
    model_dir: &Path,
    images: &[PathBuf],
    out_dir: &Path,
    progress: &dyn autodl_api::PredictProgress,
    device: &B::Device,
    head: H,
) -> Result<Vec<PathBuf>, PluginError>
where
    B: Backend,
    M: SegNet<B>,
    H: Fn(Backbone<B>, usize, &autodl_api::Params, &B::Device) -> M,
{
    let model = rebuild::<B, M, H>(&ModelMeta::load(model_dir)?, device, &head)?;
    autodl_train::predict::predict_segmentation::<B, M, _>(
        model_dir,
        images,
        out_dir,
        progress,
        device,
        |_, _| model.clone(),
    )
}

/// Runs a trained backbone-based anchor-head detector on images for an ensemble or
/// test-time augmentation (see [`det::infer`]).
pub fn infer_detector<B, M, H>(
    model_dir: &Path,
    images: &[PathBuf],
    options: DetOptions,
    mirrored: bool,
    device: &B::Device,
    head: H,
    each: &mut dyn FnMut(usize, autodl_api::Inferred) -> Result<(), PluginError>,
) -> Result<(), PluginError>
where
    B: Backend,
    M: DetNet<B>,
    H: Fn(Backbone<B>, usize, &autodl_api::Params, &B::Device) -> M,
{
    let model = rebuild::<B, M, H>(&ModelMeta::load(model_dir)?, device, &head)?;
    det::infer::<B, M, _>(
        model_dir,
        images,
        &options,
        mirrored,
        device,
        |_, _| model.clone(),
        each,
    )
}

/// Runs a trained backbone-based [`det::Detector`] whose head is a [`DetectorHead`] on images
/// for an ensemble or test-time augmentation (see [`det::infer_with`]).
pub fn infer_detector_with<B, M, D, H>(
    model_dir: &Path,
    images: &[PathBuf],
    mirrored: bool,
    device: &B::Device,
    head: H,
    each: &mut dyn FnMut(usize, autodl_api::Inferred) -> Result<(), PluginError>,
) -> Result<(), PluginError>
where
    B: Backend,
    D: DetectorHead,
    M: Detector<B, D>,
    H: Fn(Backbone<B>, usize, &autodl_api::Params, &B::Device) -> M,
{
    let meta = ModelMeta::load(model_dir)?;
    let model = rebuild::<B, M, H>(&meta, device, &head)?;
    let trained = D::from_params(&meta.params)?;
    det::infer_with::<B, M, D, _>(
        model_dir,
        images,
        |_| trained,
        mirrored,
        device,
        |_, _| model.clone(),
        each,
    )
}

/// Runs a trained backbone-based pixel classifier on images for an ensemble or test-time
/// augmentation (see [`autodl_train::predict::infer_segmentation`]).
pub fn infer<B, M, H>(
    model_dir: &Path,
    images: &[PathBuf],
    mirrored: bool,
    device: &B::Device,
    head: H,
    each: &mut dyn FnMut(usize, autodl_api::Inferred) -> Result<(), PluginError>,
) -> Result<(), PluginError>
where
    B: Backend,
    M: SegNet<B>,
    H: Fn(Backbone<B>, usize, &autodl_api::Params, &B::Device) -> M,
{
    let model = rebuild::<B, M, H>(&ModelMeta::load(model_dir)?, device, &head)?;
    autodl_train::predict::infer_segmentation::<B, M, _>(
        model_dir,
        images,
        mirrored,
        device,
        |_, _| model.clone(),
        each,
    )
}

/// Declares a backbone-based pixel-classification family and registers it: a unit struct
/// named `$family` whose `NetworkFamily` impl trains and predicts `$net<B>` built by `$build`
/// (a `fn(Backbone<B>, classes, &Params, &Device) -> $net<B>`), on whichever backend the trial
/// names. The family crate must depend on `autodl-api` and `autodl-backend`.
#[macro_export]
macro_rules! backbone_family {
    ($(#[$doc:meta])* $family:ident, $name:literal, $net:ident, $build:path, default_lr = $lr:expr $(, params = $params:expr)? $(, arcgis = $arcgis:literal)?) => {
        $crate::__network_family!(
            $(#[$doc])* $family, $name, PixelClassification,
            arcgis = { None::<&'static str> $(.or(Some($arcgis)))? },
            params = {
                #[allow(unused_mut)]
                let mut decls = $crate::backboned::pixel_params();
                $(decls.extend($params);)?
                decls
            },
            |B, device, spec, progress| $crate::backboned::train::<B, $net<B>, _>(spec, progress, $lr, &device, $build),
            |B, device, model_dir, images, out_dir, _options, progress| $crate::backboned::predict::<B, $net<B>, _>(model_dir, images, out_dir, progress, &device, $build),
            |B3, device3, model_dir, images, options, each| $crate::backboned::infer::<B3, $net<B3>, _>(model_dir, images, options.hflip, &device3, $build, each)
        );
    };
}

/// Declares a backbone-based detector family and registers it, like [`backbone_family!`].
///
/// Two forms: an anchor head names `options = $options`, a `fn() -> DetOptions` giving its
/// anchors, matching and losses (its `$net` implements `DetNet`); any other detector names
/// `head = $head`, a [`DetectorHead`] type (its `$net` implements `Detector` with that head).
/// The first form declares [`detector_params`], the second [`freeze_stem_param`], before the
/// family's own `params`.
#[macro_export]
macro_rules! detector_family {
    ($(#[$doc:meta])* $family:ident, $name:literal, $net:ident, $build:path, options = $options:path $(, params = $params:expr)? $(, arcgis = $arcgis:literal)?) => {
        $crate::__network_family!(
            $(#[$doc])* $family, $name, Detection,
            arcgis = { None::<&'static str> $(.or(Some($arcgis)))? },
            params = {
                #[allow(unused_mut)]
                let mut decls = $crate::backboned::detector_params();
                $(decls.extend($params);)?
                decls
            },
            |B, device, spec, progress| $crate::backboned::train_detector::<B, $net<B>, _>(spec, progress, $options(), &device, $build),
            |B, device, model_dir, images, out_dir, predict, progress| $crate::backboned::predict_detector::<B, $net<B>, _>(model_dir, images, out_dir, $options(), predict.score_threshold, progress, &device, $build),
            |B3, device3, model_dir, images, options, each| $crate::backboned::infer_detector::<B3, $net<B3>, _>(model_dir, images, $options(), options.hflip, &device3, $build, each)
        );
    };
    ($(#[$doc:meta])* $family:ident, $name:literal, $net:ident, $build:path, head = $head:ty $(, params = $params:expr)? $(, arcgis = $arcgis:literal)?) => {
        $crate::__network_family!(
            $(#[$doc])* $family, $name, Detection,
            arcgis = { None::<&'static str> $(.or(Some($arcgis)))? },
            params = {
                #[allow(unused_mut)]
                let mut decls = vec![$crate::backboned::freeze_stem_param()];
                $(decls.extend($params);)?
                decls
            },
            |B, device, spec, progress| $crate::backboned::train_detector_with::<B, $net<B>, $head, _>(spec, progress, &device, $build),
            |B, device, model_dir, images, out_dir, predict, progress| $crate::backboned::predict_detector_with::<B, $net<B>, $head, _>(model_dir, images, out_dir, predict.score_threshold, progress, &device, $build),
            |B3, device3, model_dir, images, options, each| $crate::backboned::infer_detector_with::<B3, $net<B3>, $head, _>(model_dir, images, options.hflip, &device3, $build, each)
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __network_family {
    (
        $(#[$doc:meta])* $family:ident, $name:literal, $task:ident,
        arcgis = $arcgis:expr,
        params = $params:expr,
        |$B:ident, $device:ident, $spec:ident, $progress:ident| $train:expr,
        |$B2:ident, $device2:ident, $model_dir:ident, $images:ident, $out_dir:ident, $options:ident, $progress2:ident| $predict:expr,
        |$B3:ident, $device3:ident, $model_dir3:ident, $images3:ident, $options3:ident, $each:ident| $infer:expr
    ) => {
        $(#[$doc])*
        pub struct $family;

        $crate::__api::inventory::submit!($crate::__api::NetworkRegistration(&$family));

        impl $crate::__api::NetworkFamily for $family {
            fn name(&self) -> &'static str {
                $name
            }

            fn task(&self) -> $crate::__api::Task {
                $crate::__api::Task::$task
            }

            fn backbones(&self) -> &'static [&'static str] {
                $crate::backboned::BACKBONES
            }

            fn tuned_backbones(&self) -> Vec<&'static str> {
                $crate::backboned::pretrained_backbones()
            }

            fn params(&self) -> Vec<$crate::__api::ParamDecl> {
                $params
            }

            fn arcgis_name(&self) -> Option<&'static str> {
                $arcgis
            }

            fn train(
                &self,
                $spec: &$crate::__api::TrialSpec,
                $progress: &dyn $crate::__api::Progress,
            ) -> Result<$crate::__api::TrialResult, $crate::__api::PluginError> {
                let choice = $crate::__backend::BackendChoice::resolve(&$spec.backend)
                    .map_err(|e| $crate::__api::PluginError::Other(e.to_string()))?;
                $crate::__backend::with_backend!(choice, |$B, $device| $train)
                    .map_err(|e| $crate::__api::PluginError::Other(e.to_string()))?
            }

            fn predict(
                &self,
                $model_dir: &::std::path::Path,
                $images: &[::std::path::PathBuf],
                $out_dir: &::std::path::Path,
                $options: &$crate::__api::PredictOptions,
                $progress2: &dyn $crate::__api::PredictProgress,
            ) -> Result<Vec<::std::path::PathBuf>, $crate::__api::PluginError> {
                let choice = $crate::__backend::BackendChoice::resolve(&$options.backend)
                    .map_err(|e| $crate::__api::PluginError::Other(e.to_string()))?;
                // Inference runs on the backend without autodiff, as validation does: on an
                // autodiff backend batch norm would normalise with each image's own statistics.
                $crate::__backend::with_backend!(choice, |Trainable, $device2| {
                    #[allow(dead_code)]
                    type $B2 = <Trainable as $crate::__backend::burn::tensor::backend::AutodiffBackend>::InnerBackend;
                    $predict
                })
                .map_err(|e| $crate::__api::PluginError::Other(e.to_string()))?
            }

            fn infer(
                &self,
                $model_dir3: &::std::path::Path,
                $images3: &[::std::path::PathBuf],
                $options3: &$crate::__api::PredictOptions,
                $each: &mut dyn FnMut(usize, $crate::__api::Inferred) -> Result<(), $crate::__api::PluginError>,
            ) -> Result<(), $crate::__api::PluginError> {
                let choice = $crate::__backend::BackendChoice::resolve(&$options3.backend)
                    .map_err(|e| $crate::__api::PluginError::Other(e.to_string()))?;
                // On the backend without autodiff, as `predict` (and validation) run.
                $crate::__backend::with_backend!(choice, |Trainable, $device3| {
                    #[allow(dead_code)]
                    type $B3 = <Trainable as $crate::__backend::burn::tensor::backend::AutodiffBackend>::InnerBackend;
                    $infer
                })
                .map_err(|e| $crate::__api::PluginError::Other(e.to_string()))?
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_backbone_is_a_backbone_and_tuning_leaves_out_darknet53() {
        for name in BACKBONES {
            assert!(autodl_backbones::NAMES.contains(name), "{name}");
        }
        assert!(BACKBONES.contains(&"darknet53"));
        assert!(!TUNED_BACKBONES.contains(&"darknet53"));
        assert_eq!(TUNED_BACKBONES, &BACKBONES[..BACKBONES.len() - 1]);
        assert_eq!(TUNED_BACKBONES[0], BACKBONES[0]);
    }
}
