//! The detection core every detector family shares.
//!
//! - [`boxes`]: IoU, the box coder (anchor-relative deltas), greedy and class-wise NMS.
//! - [`anchors`]: anchor boxes for a pyramid of feature maps, in the order the heads emit them.
//! - [`matching`]: assigning anchors to ground-truth boxes by IoU.
//! - [`loss`]: sigmoid focal loss, softmax cross-entropy with hard-negative mining, binary
//!   cross-entropy, smooth-L1, IoU and GIoU box losses, as Burn tensors so gradients flow.
//! - [`fpn`]: a feature pyramid neck over backbone features.
//! - [`postprocess`]: logits and deltas to scored boxes.
//! - [`fusion`]: weighted box fusion of several models' boxes (ensembles, test-time
//!   augmentation).
//!
//! Boxes are `[x0, y0, x1, y1]` in continuous pixel coordinates (a one-pixel box at column 3
//! spans 3 to 4). Everything that is not a tensor runs on the host: matching and NMS handle a few
//! thousand boxes, which a plain loop does in microseconds, and burn-vision's NMS takes one
//! class at a time on device tensors, which would need a device round trip per class.

pub mod anchors;
pub mod boxes;
pub mod fpn;
pub mod fusion;
pub mod loss;
pub mod matching;
pub mod postprocess;

pub use anchors::AnchorConfig;
pub use boxes::{Box4, BoxCoder, batched_nms, iou, nms};
pub use fpn::{Fpn, FpnConfig};
pub use fusion::weighted_box_fusion;
pub use matching::{Assignment, MatchConfig, match_anchors};
pub use postprocess::{PostprocessConfig, ScoredBox, clip_and_nms, postprocess};
