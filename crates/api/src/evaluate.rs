//! What an evaluator scores: the plain items validation and `autodl evaluate` hand it (one
//! image's predicted and true classes per pixel, or its detected and true boxes) and the
//! options of one evaluation.
//!
//! Boxes are COCO boxes, `[x, y, width, height]` in pixels, with the class as an index into
//! the classes the evaluation started with; an image is identified by the order it was added
//! in, so whoever adds them decides the order ties between images break in.

/// A true box.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TruthBox {
    /// `[x, y, width, height]` in pixels.
    pub bbox: [f64; 4],
    /// Class index, in the order of the classes the evaluation started with.
    pub class: u32,
    /// The object's area for COCO's small/medium/large split (a COCO file's segmentation
    /// area); `None` for the box's own.
    pub area: Option<f64>,
    /// A COCO crowd region: never missed, and detections inside it are neither right nor
    /// wrong. VOC treats it as an ordinary box.
    pub crowd: bool,
    /// A VOC difficult object: VOC neither rewards nor penalises finding it. COCO treats it as
    /// an ordinary box.
    pub difficult: bool,
}

/// A detected box with its confidence.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DetectedBox {
    /// `[x, y, width, height]` in pixels.
    pub bbox: [f64; 4],
    /// Class index, in the order of the classes the evaluation started with.
    pub class: u32,
    /// Confidence; higher ranks first.
    pub score: f64,
}

/// One image as an evaluation takes it.
#[derive(Debug, Clone, Copy)]
pub enum EvalItem<'a> {
    /// A pixel classifier's output: one class index per pixel, row-major.
    Pixels {
        /// The predicted class of each pixel.
        predicted: &'a [u32],
        /// The true class of each pixel; [`crate::IGNORE`] is not scored.
        truth: &'a [u32],
    },
    /// A detector's output.
    Boxes {
        /// The detected boxes.
        detections: &'a [DetectedBox],
        /// The true boxes.
        truth: &'a [TruthBox],
    },
}

/// How one evaluation scores.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EvalOptions {
    /// Boxes: the score threshold precision, recall and F1 are counted at; `None` searches for
    /// the one with the best mean F1 (what training stores with a detector).
    pub score_threshold: Option<f64>,
}
