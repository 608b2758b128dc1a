//! The detector API training, validation and prediction go through: a loss from images and
//! targets, and detections from an image. One-stage, two-stage and anchor-free detectors all
//! fit it: what a detector needs besides its learned weights (anchors, matching, loss choices,
//! proposal settings) is its head `H`, chosen per trial and recorded in `model.json`.
//!
//! The head is a parameter of the trait rather than an associated type so that the blanket
//! implementation for anchor heads (every `DetNet` is a `Detector<B, AnchorHead>`) leaves
//! family crates free to implement `Detector<B, TheirHead>` for their own generic modules:
//! with an associated type the two implementations would overlap, since a downstream crate
//! could implement `DetNet<TheirBackend>` for any of them.

use autodl_api::PluginError;
use autodl_detection::{Box4, ScoredBox};
use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

/// The objects of one image: continuous pixel boxes `[x0, y0, x1, y1]` and class indices.
pub type Targets = Vec<(Box4, usize)>;

/// What a detector found in one window.
#[derive(Debug, Clone, Default)]
pub struct Detected {
    /// Scored boxes in window pixels, clipped to the window's image region, after NMS: one
    /// list per IoU threshold asked for, in the order asked.
    pub boxes: Vec<Vec<ScoredBox>>,
    /// The loss against the window's targets, when they were given.
    pub loss: Option<f64>,
}

/// A trainable object detector on backend `B` whose settings besides the weights are `H`
/// (its head: the same value trains, validates and predicts).
pub trait Detector<B: Backend, H: Sync>: Module<B> {
    /// The training loss of a batch `[N, bands, H, W]` (sides multiples of 32) against each
    /// image's objects: a one-element tensor the fit loop takes the gradients of.
    fn loss(&self, head: &H, images: Tensor<B, 4>, targets: &[Targets]) -> Tensor<B, 1>;

    /// Detections in one window `[1, bands, H, W]` whose image part is the top-left
    /// `region` (width, height; the rest is padding): its boxes after NMS at each IoU of
    /// `nms_ious` and, when `targets` are given, the loss against them, from one forward pass
    /// (validation needs both, on every window).
    fn detect(
        &self,
        head: &H,
        window: Tensor<B, 4>,
        region: (usize, usize),
        nms_ious: &[f32],
        targets: Option<&[(Box4, usize)]>,
    ) -> Result<Detected, PluginError>;
}
