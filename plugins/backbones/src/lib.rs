//! Pretrained CNN backbones for autodl's network families: ResNet-18/34/50, MobileNetV2,
//! EfficientNet-Lite0 and Darknet-53 (YOLOv3's, without pretrained weights) as Burn modules
//! generic over the backend.
//!
//! Every backbone gives feature maps at strides 4, 8, 16 and 32 for FPN, U-Net and DeepLab
//! heads ([`Backbone::features`]), takes any number of input bands (a pretrained RGB first
//! convolution is adapted, see [`adapt_first_conv`]), and, when its weights file holds an
//! ImageNet classifier, also gives class logits ([`Backbone::classify`]) so that loaded weights
//! can be checked.
//!
//! Weights come from local files only, never from the network: safetensors always, PyTorch
//! `.pth` pickles (zip and legacy formats) with the `pytorch` feature, whose burn-store 0.21
//! reader ignores tensor strides (see the `weights` module notes). Names follow torchvision
//! (ResNet, MobileNetV2) and efficientnet_pytorch (EfficientNet-Lite0); Darknet-53's are its
//! module paths (see the `darknet` module notes). The EfficientNet-Lite0 ImageNet weights ship
//! in this crate's `weights/` folder; others are found in the user's weights folder
//! ([`weights_dir`], [`default_weights`]), which [`import_weights`] fills from a torchvision or
//! timm checkpoint with a reader that honours strides (`autodl-checkpoint`).
//!
//! Batch norm follows Burn's convention: on an autodiff backend it trains (batch statistics,
//! running statistics updated), after `valid()` it evaluates. [`freeze`] stops gradients and
//! freezes batch norm for fine-tuning a head on a fixed backbone; [`Backbone::with_frozen_bn`]
//! freezes batch norm alone, the usual choice for fine-tuning with small batches.

mod adapt;
mod darknet;
mod efficientnet;
mod error;
mod import;
mod layers;
mod mbconv;
mod mobilenet;
mod resnet;
mod weights;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

pub use adapt::adapt_first_conv;
pub use darknet::{DarkResidual, DarkStage, Darknet};
pub use error::BackboneError;
pub use import::{ImportError, Imported, import_weights};
pub use layers::ConvBn;
pub use mbconv::{Head, InvertedResidual, MobileNet};
pub use resnet::{BasicBlock, Bottleneck, ResBlock, ResNet};
pub use weights::save_weights;

/// The backbone names, as configs spell them.
pub const NAMES: &[&str] = &[
    "resnet18",
    "resnet34",
    "resnet50",
    "mobilenetv2",
    "efficientnet-lite0",
    "darknet53",
];

/// Environment variable naming the weights folder ([`weights_dir`]): files `<name>.safetensors`
/// or `<name>.pth` that [`default_weights`] prefers to the bundled ones.
pub const WEIGHTS_DIR_ENV: &str = "AUTODL_WEIGHTS_DIR";

/// A backbone architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arch {
    /// ResNet-18.
    ResNet18,
    /// ResNet-34.
    ResNet34,
    /// ResNet-50 (torchvision's v1.5).
    ResNet50,
    /// MobileNetV2 at width 1.0.
    MobileNetV2,
    /// EfficientNet-Lite0.
    EfficientNetLite0,
    /// Darknet-53, YOLOv3's backbone (no pretrained weights ship).
    Darknet53,
}

/// Per-band normalisation a pretrained backbone expects, in 8-bit pixel units:
/// `(x - mean) / std` for the red, green and blue bands.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InputNorm {
    /// Means of red, green, blue.
    pub mean: [f32; 3],
    /// Standard deviations of red, green, blue.
    pub std: [f32; 3],
}

impl Arch {
    /// All architectures, in [`NAMES`] order.
    pub const ALL: [Arch; 6] = [
        Arch::ResNet18,
        Arch::ResNet34,
        Arch::ResNet50,
        Arch::MobileNetV2,
        Arch::EfficientNetLite0,
        Arch::Darknet53,
    ];

    /// The name configs use.
    pub fn name(self) -> &'static str {
        match self {
            Arch::ResNet18 => NAMES[0],
            Arch::ResNet34 => NAMES[1],
            Arch::ResNet50 => NAMES[2],
            Arch::MobileNetV2 => NAMES[3],
            Arch::EfficientNetLite0 => NAMES[4],
            Arch::Darknet53 => NAMES[5],
        }
    }

    /// Channels of the feature maps at strides 4, 8, 16 and 32.
    pub fn channels(self) -> [usize; 4] {
        match self {
            Arch::ResNet18 => resnet::channels(18),
            Arch::ResNet34 => resnet::channels(34),
            Arch::ResNet50 => resnet::channels(50),
            Arch::MobileNetV2 => mobilenet::SPEC.channels(),
            Arch::EfficientNetLite0 => efficientnet::SPEC.channels(),
            Arch::Darknet53 => darknet::channels(),
        }
    }

    /// The normalisation the ImageNet weights were trained with: torchvision's mean and
    /// standard deviation, or `(x - 127) / 128` for the TF EfficientNet-Lite checkpoints.
    /// Darknet-53, which has no pretrained weights here, takes torchvision's too.
    pub fn input_norm(self) -> InputNorm {
        match self {
            Arch::EfficientNetLite0 => InputNorm {
                mean: [127.0; 3],
                std: [128.0; 3],
            },
            _ => InputNorm {
                mean: [123.675, 116.28, 103.53],
                std: [58.395, 57.12, 57.375],
            },
        }
    }

    fn resnet_depth(self) -> Option<usize> {
        match self {
            Arch::ResNet18 => Some(18),
            Arch::ResNet34 => Some(34),
            Arch::ResNet50 => Some(50),
            _ => None,
        }
    }

    /// (file prefix, module prefix) pairs from the file naming to this crate's module paths.
    pub(crate) fn name_map(self) -> Vec<(String, String)> {
        match self {
            Arch::MobileNetV2 => mobilenet::name_map(),
            Arch::EfficientNetLite0 => efficientnet::name_map(),
            Arch::Darknet53 => darknet::name_map(),
            _ => resnet::name_map(self.resnet_depth().unwrap_or(50)),
        }
    }

    /// Module path of the first convolution's weight.
    pub(crate) fn first_conv(self) -> &'static str {
        if self.resnet_depth().is_some() {
            "conv1.weight"
        } else {
            "stem.conv.weight"
        }
    }

    /// Module path prefix of the classifier head.
    pub(crate) fn head_prefix(self) -> &'static str {
        if self.resnet_depth().is_some() || self == Arch::Darknet53 {
            "fc."
        } else {
            "head."
        }
    }

    /// Module path of the classifier's weight.
    pub(crate) fn classifier_weight(self) -> &'static str {
        if self.resnet_depth().is_some() || self == Arch::Darknet53 {
            "fc.weight"
        } else {
            "head.fc.weight"
        }
    }

    /// The weights file's name for the classifier's weight.
    pub(crate) fn classifier_file_name(self) -> String {
        let module = self.classifier_weight();
        self.name_map()
            .into_iter()
            .find_map(|(from, to)| module.strip_prefix(&to).map(|rest| format!("{from}{rest}")))
            .unwrap_or_else(|| module.to_owned())
    }
}

impl FromStr for Arch {
    type Err = BackboneError;

    /// Parses a name of [`NAMES`], ignoring case and accepting `_` for `-`
    /// (`efficientnet_lite0`, `mobilenet_v2`).
    fn from_str(name: &str) -> Result<Self, BackboneError> {
        let key = name.trim().to_ascii_lowercase().replace('_', "-");
        match key.as_str() {
            "resnet18" | "resnet-18" => Ok(Arch::ResNet18),
            "resnet34" | "resnet-34" => Ok(Arch::ResNet34),
            "resnet50" | "resnet-50" => Ok(Arch::ResNet50),
            "mobilenetv2" | "mobilenet-v2" => Ok(Arch::MobileNetV2),
            "efficientnet-lite0" | "efficientnetlite0" => Ok(Arch::EfficientNetLite0),
            "darknet53" | "darknet-53" => Ok(Arch::Darknet53),
            _ => Err(BackboneError::UnknownName {
                name: name.to_owned(),
            }),
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which backbone to build, with how many bands, from which weights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackboneConfig {
    /// One of [`NAMES`].
    pub name: String,
    /// Input bands (1 or more).
    pub bands: usize,
    /// Weights file (`.safetensors`, or `.pth` with the `pytorch` feature); `None` for fresh
    /// weights.
    pub weights: Option<PathBuf>,
}

impl BackboneConfig {
    /// A backbone with fresh weights.
    pub fn new(name: impl Into<String>, bands: usize) -> Self {
        BackboneConfig {
            name: name.into(),
            bands,
            weights: None,
        }
    }

    /// A backbone with the [`default_weights`] for `name` when there are some, fresh otherwise.
    pub fn pretrained(name: impl Into<String>, bands: usize) -> Self {
        let name = name.into();
        let weights = default_weights(&name);
        BackboneConfig {
            name,
            bands,
            weights,
        }
    }

    /// Uses the weights in `path`.
    pub fn with_weights(self, path: impl Into<PathBuf>) -> Self {
        BackboneConfig {
            weights: Some(path.into()),
            ..self
        }
    }

    /// Builds the backbone; with `weights`, loads them, adapting the first convolution to
    /// `bands` and building the classifier when the file holds one.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<Backbone<B>, BackboneError> {
        let arch: Arch = self.name.parse()?;
        if self.bands == 0 {
            return Err(BackboneError::NoBands {
                name: self.name.clone(),
            });
        }
        match &self.weights {
            None => Ok(Backbone::new(arch, self.bands, None, device)),
            Some(path) => weights::load(arch, self.bands, path, device),
        }
    }
}

/// The bundled EfficientNet-Lite0 ImageNet weights, inside the binary: a binary copied away
/// from its source folder (or whose source folder is gone) still starts from them.
const EFFICIENTNET_LITE0: &[u8] = include_bytes!("../weights/efficientnet-lite0.safetensors");

/// The user's weights folder, where `autodl weights import` writes and [`default_weights`]
/// looks: `$AUTODL_WEIGHTS_DIR` when set, else `$XDG_DATA_HOME/autodl/weights`, else
/// `$HOME/.local/share/autodl/weights`; `None` when none of them is set. The folder need not
/// exist.
pub fn weights_dir() -> Option<PathBuf> {
    let var = |key: &str| std::env::var_os(key).filter(|v| !v.is_empty());
    if let Some(dir) = var(WEIGHTS_DIR_ENV) {
        return Some(PathBuf::from(dir));
    }
    // The XDG base-directory rules ignore a relative path.
    if let Some(data) = var("XDG_DATA_HOME").map(PathBuf::from)
        && data.is_absolute()
    {
        return Some(data.join("autodl/weights"));
    }
    var("HOME").map(|home| PathBuf::from(home).join(".local/share/autodl/weights"))
}

/// The file in `dir` that holds weights for `name`: `<name>.safetensors` or `<name>.pth`.
pub fn weights_in(dir: &Path, name: &str) -> Option<PathBuf> {
    let arch: Arch = name.parse().ok()?;
    ["safetensors", "pth"]
        .into_iter()
        .map(|ext| dir.join(format!("{}.{ext}", arch.name())))
        .find(|p| p.is_file())
}

/// Where known weights for `name` are: `<name>.safetensors` or `.pth` in the [`weights_dir`]
/// when that file exists (as `autodl weights import` writes it), else the EfficientNet-Lite0
/// ImageNet weights bundled in this crate (`plugins/backbones/weights/`, located at compile
/// time, or, when that folder is gone, the copy inside the binary written once to the
/// system's temporary folder). `None` when there are none, as for ResNet, MobileNetV2 and
/// Darknet-53 unless the folder has them, or for an unknown name.
pub fn default_weights(name: &str) -> Option<PathBuf> {
    let arch: Arch = name.parse().ok()?;
    if let Some(path) = weights_dir().and_then(|dir| weights_in(&dir, name)) {
        return Some(path);
    }
    let bundled = match arch {
        Arch::EfficientNetLite0 => {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/efficientnet-lite0.safetensors")
        }
        _ => return None,
    };
    if bundled.is_file() {
        return Some(bundled);
    }
    embedded_copy()
}

/// The embedded EfficientNet-Lite0 weights as a file (the loaders read files): written whole
/// into the temporary folder under a name carrying their size, and reused while it matches.
fn embedded_copy() -> Option<PathBuf> {
    let dir = std::env::temp_dir().join("autodl-weights");
    let path = dir.join(format!(
        "efficientnet-lite0-{}.safetensors",
        EFFICIENTNET_LITE0.len()
    ));
    let complete =
        std::fs::metadata(&path).is_ok_and(|m| m.len() == EFFICIENTNET_LITE0.len() as u64);
    if !complete {
        std::fs::create_dir_all(&dir).ok()?;
        // Written to a private name, then renamed: a trial running beside this one never reads
        // a half-written file.
        let part = dir.join(format!("{}.part", std::process::id()));
        std::fs::write(&part, EFFICIENTNET_LITE0).ok()?;
        std::fs::rename(&part, &path).ok()?;
    }
    Some(path)
}

/// Any of the backbones.
// Burn's module derive has no `Box` support; the enum is built once per model.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Backbone<B: Backend> {
    /// ResNet-18, -34 or -50.
    ResNet(ResNet<B>),
    /// MobileNetV2 or EfficientNet-Lite0.
    MobileNet(MobileNet<B>),
    /// Darknet-53.
    Darknet(Darknet<B>),
}

impl<B: Backend> Backbone<B> {
    /// Builds `arch` with fresh weights for `bands` input bands and, when `classes` is given,
    /// a classifier head with that many classes.
    ///
    /// # Panics
    ///
    /// When `bands` is zero ([`BackboneConfig::init`] returns an error instead).
    pub fn new(arch: Arch, bands: usize, classes: Option<usize>, device: &B::Device) -> Self {
        assert!(bands > 0, "a backbone needs at least one input band");
        match (arch, arch.resnet_depth()) {
            (_, Some(depth)) => Backbone::ResNet(ResNet::new(depth, bands, classes, device)),
            (Arch::Darknet53, _) => Backbone::Darknet(Darknet::new(bands, classes, device)),
            (Arch::MobileNetV2, _) => Backbone::MobileNet(MobileNet::new(
                arch,
                &mobilenet::SPEC,
                bands,
                classes,
                device,
            )),
            _ => Backbone::MobileNet(MobileNet::new(
                arch,
                &efficientnet::SPEC,
                bands,
                classes,
                device,
            )),
        }
    }

    /// The architecture.
    pub fn arch(&self) -> Arch {
        match self {
            Backbone::ResNet(m) => match m.depth() {
                18 => Arch::ResNet18,
                34 => Arch::ResNet34,
                _ => Arch::ResNet50,
            },
            Backbone::MobileNet(m) => m.arch(),
            Backbone::Darknet(_) => Arch::Darknet53,
        }
    }

    /// The architecture's name, one of [`NAMES`].
    pub fn name(&self) -> &'static str {
        self.arch().name()
    }

    /// Feature maps at strides 4, 8, 16 and 32 of `x` (`[N, bands, H, W]`); sides are
    /// `ceil(H / stride)` for inputs whose sides are not multiples of 32.
    pub fn features(&self, x: Tensor<B, 4>) -> [Tensor<B, 4>; 4] {
        match self {
            Backbone::ResNet(m) => m.features(x),
            Backbone::MobileNet(m) => m.features(x),
            Backbone::Darknet(m) => m.features(x),
        }
    }

    /// Channels of the four feature maps.
    pub fn channels(&self) -> [usize; 4] {
        self.arch().channels()
    }

    /// Class logits `[N, classes]` when the backbone has a classifier head (built when the
    /// weights file holds one, or when asked for in [`Backbone::new`]).
    pub fn classify(&self, x: Tensor<B, 4>) -> Option<Tensor<B, 2>> {
        match self {
            Backbone::ResNet(m) => m.classify(x),
            Backbone::MobileNet(m) => m.classify(x),
            Backbone::Darknet(m) => m.classify(x),
        }
    }

    /// Whether [`Backbone::classify`] gives logits.
    pub fn has_classifier(&self) -> bool {
        match self {
            Backbone::ResNet(m) => m.has_classifier(),
            Backbone::MobileNet(m) => m.has_classifier(),
            Backbone::Darknet(m) => m.has_classifier(),
        }
    }

    /// Drops the classifier head, which feature extraction never uses: it saves its
    /// parameters (1.7 M for EfficientNet-Lite0, 2 M for ResNet-50) in memory and in saved
    /// models.
    pub fn without_classifier(mut self) -> Self {
        match &mut self {
            Backbone::ResNet(m) => m.drop_classifier(),
            Backbone::MobileNet(m) => m.drop_classifier(),
            Backbone::Darknet(m) => m.drop_classifier(),
        }
        self
    }

    /// Freezes the stem and the stride-4 stage, as torchvision's detectors do by default
    /// (`trainable_backbone_layers = 3`): their high-resolution maps make their backward pass
    /// the most expensive part of a step, and low-level ImageNet filters need little tuning.
    pub fn with_frozen_stem(mut self) -> Self {
        match &mut self {
            Backbone::ResNet(m) => m.freeze_stem(),
            Backbone::MobileNet(m) => m.freeze_stem(),
            Backbone::Darknet(m) => m.freeze_stem(),
        }
        self
    }

    /// Freezes (or thaws) batch norm alone: frozen, it normalises with the running statistics
    /// and never updates them, even on an autodiff backend, while gradients still reach the
    /// weights.
    pub fn with_frozen_bn(mut self, frozen: bool) -> Self {
        match &mut self {
            Backbone::ResNet(m) => m.frozen_bn = frozen,
            Backbone::MobileNet(m) => m.frozen_bn = frozen,
            Backbone::Darknet(m) => m.frozen_bn = frozen,
        }
        self
    }

    /// Whether batch norm is frozen.
    pub fn is_bn_frozen(&self) -> bool {
        match self {
            Backbone::ResNet(m) => m.frozen_bn,
            Backbone::MobileNet(m) => m.frozen_bn,
            Backbone::Darknet(m) => m.frozen_bn,
        }
    }
}

/// Freezes the whole backbone for training a head on top: no parameter takes gradients
/// (`Module::no_grad`, so optimisers skip them) and batch norm is frozen.
pub fn freeze<B: Backend>(backbone: Backbone<B>) -> Backbone<B> {
    backbone.no_grad().with_frozen_bn(true)
}

/// Undoes [`freeze`]: every parameter takes gradients again and batch norm trains. Running
/// statistics stay buffers without gradients.
pub fn unfreeze<B: Backend>(backbone: Backbone<B>) -> Backbone<B> {
    backbone
        .map(&mut RequireGrad::default())
        .with_frozen_bn(false)
}

/// Marks every parameter as requiring gradients, except batch norm's running statistics.
#[derive(Default)]
struct RequireGrad {
    path: Vec<String>,
}

impl<B: Backend> ModuleMapper<B> for RequireGrad {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_owned());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        if self.path.last().is_some_and(|n| n.starts_with("running_")) {
            param
        } else {
            param.set_require_grad(true)
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_embedded_weights_equal_the_bundled_file() {
        let copy = super::embedded_copy().unwrap();
        let bundled = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("weights/efficientnet-lite0.safetensors");
        assert_eq!(
            std::fs::read(copy).unwrap(),
            std::fs::read(bundled).unwrap()
        );
    }
}
