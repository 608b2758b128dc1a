//! Training loops shared by the network-family plugins, generic over the Burn backend.
//!
//! A family crate supplies a model (a Burn `Module` that maps a `[N, bands, H, W]` batch to
//! per-pixel logits, or to per-anchor logits and box deltas) and calls [`seg::train`] or
//! [`det::train`]. Those read and normalise the data and implement [`fit::Task`]: batches
//! with augmentation, the loss of a batch, evaluation (through the registered evaluator the
//! trial names, or the one for its task) and the finishing step (the model folder). [`fit`] drives any task: batch-size deduction
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

pub use loss::{LossOptions, balanced_weights, masked_cross_entropy, seg_loss};

/// Marks a pixel the loss and the metrics ignore (one definition, in `autodl-api`).
pub use autodl_api::IGNORE;
