//! Training loops shared by the network-family plugins, generic over the Burn backend.
//!
//! A family crate supplies a model (a Burn `Module` that maps a `[N, bands, H, W]` batch to
//! per-pixel logits, or to per-anchor logits and box deltas) and calls [`seg::train`] or
//! [`det::train`]. Those read and normalise the data and implement [`fit::Task`]: batches
//! with augmentation, the loss of a batch, evaluation (a confusion matrix, or VOC and COCO AP)
//! and the finishing step (the model folder). [`fit`] drives any task: batch-size deduction
//! through a registered deducer, the learning-rate finder, the optimiser and schedule, the
//! backward pass, early stopping, pruning and checkpoints within the time budget.

pub mod data;
pub mod det;
pub mod fit;
pub mod infer;
pub mod lr_find;
pub mod model_dir;
pub mod options;
pub mod outputs;
pub mod params;
pub mod predict;
pub mod sample;
pub mod schedule;
pub mod seg;
pub mod trial;

mod loss;

/// What the exported macros ([`anchor_detector!`]) name, so that a crate invoking them needs
/// no dependency of its own on these.
#[doc(hidden)]
pub mod __private {
    pub use autodl_api::PluginError;
    pub use autodl_detection::Box4;
    pub use burn;
}

pub use loss::{LossOptions, balanced_weights, masked_cross_entropy, seg_loss};

/// Marks a pixel the loss and the metrics ignore (one definition, in `autodl-api`).
pub use autodl_api::IGNORE;

/// Ranks pixel classifiers: mean IoU over the classes present in the validation truth.
pub struct SegmentationEvaluator;

autodl_api::inventory::submit!(autodl_api::EvaluatorRegistration(&SegmentationEvaluator));

impl autodl_api::Evaluator for SegmentationEvaluator {
    fn name(&self) -> &'static str {
        "segmentation"
    }
    fn task(&self) -> autodl_api::Task {
        autodl_api::Task::PixelClassification
    }
    fn metrics(&self) -> &'static [&'static str] {
        &["miou", "accuracy", "dice"]
    }
    fn higher_is_better(&self, _metric: &str) -> bool {
        true
    }
}
