//! Object-detection metrics for autodl: the numbers every detector is ranked
//! by.
//!
//! - [`coco_eval`]: the twelve COCO numbers (AP@[.5:.95], AP50, AP75, AP by
//!   object size, AR at 1/10/100 detections, AR by size), reproducing
//!   pycocotools' `COCOeval` with `iouType="bbox"` rule for rule, so a score
//!   printed here can be put next to one from any Python detection library.
//! - [`voc_ap`]: PASCAL VOC AP per class and mAP, with the all-point
//!   (VOC 2010 and later) or 11-point (VOC 2007) interpolation, `difficult`
//!   boxes ignored as the VOC devkit does.
//! - [`arcgis_ap`]: the same VOC computation at IoU 0.1, the threshold ArcGIS
//!   reports by default, so that users can compare with ArcGIS numbers.
//! - [`precision_recall_f1`]: per-class counts and ratios at one score
//!   threshold.
//! - [`read_coco_gt`] and [`read_coco_dets`]: COCO JSON readers for ground
//!   truth files and result lists.
//!
//! Boxes are COCO boxes everywhere: `[x, y, width, height]` in continuous
//! pixel coordinates, areas are `width * height` with no "+1". The VOC
//! functions use the same IoU as COCO rather than the devkit's integer-pixel
//! "+1" convention, because a box here is a continuous rectangle, not a set
//! of pixels.
//!
//! Everything is golden-tested against pycocotools and a NumPy port of the
//! VOC devkit's `voc_eval` on the fixtures written by
//! `tests/fixtures/detection/make_expected.py`.

mod boxes;
mod coco;
mod io;
mod voc;

pub use boxes::{crowd_iou, iou};
pub use coco::{
    AREA_RANGES, CocoCategoryStats, CocoEvaluation, CocoSummary, MAX_DETS, coco_eval,
    coco_evaluate, iou_thresholds, recall_thresholds,
};
pub use io::{
    CocoCategory, CocoGt, CocoImage, CocoPrediction, CocoPredictions, DetectionError, coco_bbox,
    parse_coco_dets, parse_coco_gt, read_coco_dets, read_coco_gt, read_predictions,
};
pub use voc::{
    ARCGIS_IOU, ClassPrf, VocMethod, VocResult, arcgis_ap, pr_curves, precision_recall_f1, voc_ap,
};

use serde::{Deserialize, Serialize};

/// One ground-truth box.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GtBox {
    /// Image the box belongs to.
    pub image_id: u64,
    /// Category (class) id.
    pub category: u32,
    /// `[x, y, width, height]`, COCO style.
    pub bbox: [f64; 4],
    /// Object area used for COCO's small/medium/large split. COCO files carry
    /// the segmentation area here, which can be smaller than the box;
    /// `None` means `width * height`.
    pub area: Option<f64>,
    /// A COCO crowd region: it never counts as a miss, and any number of
    /// detections inside it are ignored rather than counted as false
    /// positives. The VOC functions treat it as an ordinary box.
    pub iscrowd: bool,
    /// A VOC "difficult" object: the VOC functions neither reward nor
    /// penalise finding it. COCO treats it as an ordinary box.
    pub difficult: bool,
}

impl GtBox {
    /// The area COCO sorts the box into a size range by.
    pub fn coco_area(&self) -> f64 {
        self.area.unwrap_or(self.bbox[2] * self.bbox[3])
    }
}

/// One predicted box.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    /// Image the box was predicted on.
    pub image_id: u64,
    /// Predicted category id.
    pub category: u32,
    /// `[x, y, width, height]`, COCO style.
    pub bbox: [f64; 4],
    /// Confidence; higher ranks first. Scores are ordered with
    /// [`f64::total_cmp`], so a NaN score ranks above every number rather
    /// than making the order depend on the sort.
    pub score: f64,
}
