//! Object-detection training and prediction, generic over the backend and the detector.
//!
//! A family supplies a [`DetNet`] (a Burn module mapping `[N, bands, H, W]` to per-anchor class
//! logits and box deltas) and [`DetOptions`] (its pyramid strides, anchor shapes, matching rule
//! and losses); this module does the rest, a file per job: the network API (`net`), reading
//! boxes and cutting augmented training tiles (`data`), anchor matching and the loss (`loss`),
//! validation through the inference path (`eval`), VOC and COCO AP, thresholds and
//! precision-recall curves (`metrics`), training (`train`), the model folder and report files
//! (`write`), and windowed prediction of large images merged with NMS (`predict`).

mod data;
mod eval;
mod loss;
mod metrics;
mod net;
mod predict;
mod train;
mod write;

pub use data::{DetData, DetItem, load_data};
pub use metrics::{DetMetrics, det_metrics};
pub use net::{BoxLoss, ClassLoss, DetNet, DetOptions, DetOutput, per_anchor};
pub use predict::predict;
pub use train::train;
