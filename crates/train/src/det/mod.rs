//! Object-detection training and prediction, generic over the backend and the detector.
//!
//! Training, validation and prediction go through the [`Detector`] trait (a loss from images
//! and targets, detections from an image), which one-stage, two-stage and anchor-free
//! detectors can implement ([`train_with`], [`predict_with`]). Anchor-head families (SSD,
//! RetinaNet) implement it by supplying a [`DetNet`] (a Burn module mapping `[N, bands, H, W]`
//! to per-anchor class logits and box deltas) and [`DetOptions`] (its pyramid strides, anchor
//! shapes, matching rule and losses), which [`AnchorHead`] turns into a detector
//! ([`train`], [`predict`]). This module has a file per job: the detector API (`detector`), the
//! anchor-head implementation (`anchor`), the network API of anchor heads (`net`), reading
//! boxes and cutting augmented training tiles (`data`), anchor matching and the anchor-head loss (`loss`),
//! validation through the inference path (`eval`), training (`train`: scored by the trial's
//! registered evaluator, which gives VOC and COCO AP, the score threshold and precision-recall
//! curves), the model folder and report files (`write`), and windowed prediction of large
//! images merged with NMS (`predict`).

mod anchor;
mod data;
mod detector;
mod eval;
mod loss;
mod net;
mod predict;
mod train;
mod write;

pub use anchor::AnchorHead;
pub use data::{DetData, DetItem, load_data};
pub use detector::{Detected, Detector, Targets};
pub use net::{BoxLoss, ClassLoss, DetNet, DetOptions, DetOutput, per_anchor};
pub use predict::{DetectionWriter, infer, infer_with, predict, predict_with};
pub use train::{DetTraining, train, train_with};
