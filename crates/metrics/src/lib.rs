//! Pixel-classification metrics for autodl, computed from one confusion
//! matrix accumulated over the whole validation set.
//!
//! Averaging per-batch scores (as ArcGIS's mIoU does) weights small batches
//! as much as large ones and lets a class that happens to be missing from a
//! batch drag the mean around; summing counts first and dividing once at the
//! end gives the same number whatever the batching. Accumulate with
//! [`ConfusionMatrix::add`] (one matrix per worker, combined with
//! [`ConfusionMatrix::merge`]) and read the scores with
//! [`ConfusionMatrix::metrics`].
//!
//! # Definitions
//!
//! Pixels whose truth equals the `ignore` value are dropped before anything
//! is counted; `total` below is the number of counted pixels. For a class
//! `c`, `TP` is the diagonal cell, `FN` the rest of row `c` (truth `c`,
//! predicted something else) and `FP` the rest of column `c`.
//!
//! - pixel accuracy = trace / total;
//! - IoU_c = TP / (TP + FP + FN);
//! - precision_c = TP / (TP + FP);
//! - recall_c = TP / (TP + FN);
//! - F1_c = dice_c = 2TP / (2TP + FP + FN).
//!
//! Each ratio is `None` when its denominator is 0.
//!
//! A class is *present* when its truth support (`TP + FN`) is greater than
//! 0. The means (IoU, dice, precision, recall, F1) average over the present
//! classes only, so a class that is merely predicted — or that occurs
//! nowhere — does not move them. Of the ratios of a present class only
//! precision can be undefined (the class was never predicted); the means
//! count it as 0, because a model that never finds a class has no precision
//! to its credit.
//!
//! Frequency-weighted IoU = Σ over present c of support_c / total × IoU_c.
//!
//! When nothing was counted (or no class is present) every mean and the
//! pixel accuracy are 0 rather than NaN, so that the result always
//! serialises to valid JSON.
//!
//! The golden test compares all of this against scikit-learn on the cases
//! made by `tests/fixtures/segmentation/make_expected.py`.

use serde::{Deserialize, Serialize};

/// Errors from building or combining confusion matrices.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetricsError {
    /// The truth and prediction slices have different lengths.
    #[error("truth has {truth} pixels but prediction has {pred}")]
    LengthMismatch {
        /// Length of the truth slice.
        truth: usize,
        /// Length of the prediction slice.
        pred: usize,
    },
    /// A label is not a valid class index (and is not the ignore value).
    #[error("{which} label {value} at pixel {index} is out of range for {num_classes} classes")]
    ClassOutOfRange {
        /// `"truth"` or `"prediction"`.
        which: &'static str,
        /// The offending label.
        value: u32,
        /// Position of the pixel in the slice passed to `add`.
        index: usize,
        /// Number of classes of the matrix.
        num_classes: usize,
    },
    /// Two matrices with different class counts cannot be merged.
    #[error("cannot merge a {other}-class confusion matrix into a {this}-class one")]
    ClassCountMismatch {
        /// Classes of the matrix merged into.
        this: usize,
        /// Classes of the matrix being merged.
        other: usize,
    },
    /// Deserialised counts do not form a `num_classes` × `num_classes` matrix.
    #[error("confusion matrix of {num_classes} classes needs {expected} counts, got {actual}")]
    BadShape {
        /// Declared number of classes.
        num_classes: usize,
        /// `num_classes` squared.
        expected: usize,
        /// Number of counts found.
        actual: usize,
    },
}

/// Pixel counts by (truth, prediction) class pair over a whole data set.
///
/// Rows are truth classes, columns are predicted classes; counts are stored
/// row-major.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawConfusionMatrix")]
pub struct ConfusionMatrix {
    num_classes: usize,
    counts: Vec<u64>,
}

/// The serialised form, checked before it becomes a [`ConfusionMatrix`] so
/// that a hand-edited or truncated file cannot break the shape invariant.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfusionMatrix {
    num_classes: usize,
    counts: Vec<u64>,
}

impl TryFrom<RawConfusionMatrix> for ConfusionMatrix {
    type Error = MetricsError;

    fn try_from(raw: RawConfusionMatrix) -> Result<Self, Self::Error> {
        let expected = raw.num_classes.checked_mul(raw.num_classes);
        if expected != Some(raw.counts.len()) {
            return Err(MetricsError::BadShape {
                num_classes: raw.num_classes,
                expected: expected.unwrap_or(usize::MAX),
                actual: raw.counts.len(),
            });
        }
        Ok(Self {
            num_classes: raw.num_classes,
            counts: raw.counts,
        })
    }
}

impl ConfusionMatrix {
    /// An all-zero matrix for `num_classes` classes (labels `0..num_classes`).
    pub fn new(num_classes: usize) -> Self {
        Self {
            num_classes,
            counts: vec![0; num_classes * num_classes],
        }
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// Counts the pixels of one image or batch.
    ///
    /// `truth` and `pred` hold class indices, one per pixel, in the same
    /// order. A pixel whose truth equals `ignore` is skipped entirely, its
    /// prediction unchecked: models are free to predict anything on void
    /// areas. Any other label must be below [`Self::num_classes`].
    ///
    /// On error the matrix is left unchanged, so a bad batch cannot leave
    /// it half-counted.
    pub fn add(
        &mut self,
        truth: &[u32],
        pred: &[u32],
        ignore: Option<u32>,
    ) -> Result<(), MetricsError> {
        if truth.len() != pred.len() {
            return Err(MetricsError::LengthMismatch {
                truth: truth.len(),
                pred: pred.len(),
            });
        }
        let n = self.num_classes;
        let out_of_range = |which, value, index| MetricsError::ClassOutOfRange {
            which,
            value,
            index,
            num_classes: n,
        };
        // Validate everything before counting anything, for the
        // all-or-nothing guarantee above.
        for (index, (&t, &p)) in truth.iter().zip(pred).enumerate() {
            if Some(t) == ignore {
                continue;
            }
            if t as usize >= n {
                return Err(out_of_range("truth", t, index));
            }
            if p as usize >= n {
                return Err(out_of_range("prediction", p, index));
            }
        }
        for (&t, &p) in truth.iter().zip(pred) {
            if Some(t) != ignore {
                self.counts[t as usize * n + p as usize] += 1;
            }
        }
        Ok(())
    }

    /// Adds the counts of `other`, e.g. a matrix filled by another worker.
    pub fn merge(&mut self, other: &ConfusionMatrix) -> Result<(), MetricsError> {
        if other.num_classes != self.num_classes {
            return Err(MetricsError::ClassCountMismatch {
                this: self.num_classes,
                other: other.num_classes,
            });
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        Ok(())
    }

    /// Pixels of truth class `truth` predicted as class `pred`.
    ///
    /// # Panics
    ///
    /// If either index is not below [`Self::num_classes`], like slice
    /// indexing.
    pub fn get(&self, truth: usize, pred: usize) -> u64 {
        assert!(
            truth < self.num_classes && pred < self.num_classes,
            "confusion matrix index ({truth}, {pred}) out of range for {} classes",
            self.num_classes
        );
        self.counts[truth * self.num_classes + pred]
    }

    /// All counts, row-major (row = truth, column = prediction).
    pub fn counts(&self) -> &[u64] {
        &self.counts
    }

    /// Number of counted (not ignored) pixels.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Truth pixels per class (the row sums).
    pub fn support(&self) -> Vec<u64> {
        self.rows().map(|row| row.iter().sum()).collect()
    }

    /// Predicted pixels per class (the column sums).
    pub fn predicted(&self) -> Vec<u64> {
        let mut cols = vec![0; self.num_classes];
        for row in self.rows() {
            for (col, &v) in cols.iter_mut().zip(row) {
                *col += v;
            }
        }
        cols
    }

    /// The scores defined in the crate documentation.
    pub fn metrics(&self) -> SegMetrics {
        let n = self.num_classes;
        let support = self.support();
        let predicted = self.predicted();
        let total = self.total();
        let correct: u64 = (0..n).map(|c| self.counts[c * n + c]).sum();

        let per_class: Vec<ClassMetrics> = (0..n)
            .map(|c| {
                let tp = self.counts[c * n + c];
                let fn_ = support[c] - tp;
                let fp = predicted[c] - tp;
                ClassMetrics {
                    support: support[c],
                    predicted: predicted[c],
                    iou: ratio(tp, tp + fp + fn_),
                    precision: ratio(tp, tp + fp),
                    recall: ratio(tp, tp + fn_),
                    f1: ratio(2 * tp, 2 * tp + fp + fn_),
                }
            })
            .collect();

        let classes_present: Vec<usize> = (0..n).filter(|&c| support[c] > 0).collect();
        // Present classes always have a defined IoU, recall and F1; only
        // precision can be undefined, and it counts as 0 (see crate docs).
        let mean_of = |f: fn(&ClassMetrics) -> Option<f64>| {
            if classes_present.is_empty() {
                return 0.0;
            }
            let sum: f64 = classes_present
                .iter()
                .map(|&c| f(&per_class[c]).unwrap_or(0.0))
                .sum();
            sum / classes_present.len() as f64
        };
        let mean_iou = mean_of(|m| m.iou);
        let mean_dice = mean_of(|m| m.f1);
        let mean_precision = mean_of(|m| m.precision);
        let mean_recall = mean_of(|m| m.recall);
        let frequency_weighted_iou = if total == 0 {
            0.0
        } else {
            classes_present
                .iter()
                .map(|&c| support[c] as f64 / total as f64 * per_class[c].iou.unwrap_or(0.0))
                .sum()
        };

        SegMetrics {
            pixel_accuracy: ratio(correct, total).unwrap_or(0.0),
            mean_iou,
            mean_dice,
            mean_precision,
            mean_recall,
            mean_f1: mean_dice,
            frequency_weighted_iou,
            total_pixels: total,
            per_class,
            classes_present,
        }
    }

    fn rows(&self) -> impl Iterator<Item = &[u64]> {
        // `max(1)` because `chunks_exact(0)` panics; with 0 classes there
        // are no counts, so the iterator is empty either way.
        self.counts.chunks_exact(self.num_classes.max(1))
    }
}

fn ratio(num: u64, den: u64) -> Option<f64> {
    (den > 0).then(|| num as f64 / den as f64)
}

/// Scores of one class; see the crate documentation for the definitions.
// Unknown fields are refused: a misspelt `Option` field would otherwise read as `None`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassMetrics {
    /// Truth pixels of this class (TP + FN).
    pub support: u64,
    /// Pixels predicted as this class (TP + FP).
    pub predicted: u64,
    /// TP / (TP + FP + FN); `None` if the class is in neither truth nor
    /// prediction.
    pub iou: Option<f64>,
    /// TP / (TP + FP); `None` if the class was never predicted.
    pub precision: Option<f64>,
    /// TP / (TP + FN); `None` if the class is absent from the truth.
    pub recall: Option<f64>,
    /// 2TP / (2TP + FP + FN), which is also the dice coefficient; `None` if
    /// the class is in neither truth nor prediction.
    pub f1: Option<f64>,
}

/// Scores of a whole validation set; see the crate documentation for the
/// definitions.
// Unknown fields are refused: a misspelt `Option` field would otherwise read as `None`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegMetrics {
    /// Correct pixels / counted pixels.
    pub pixel_accuracy: f64,
    /// Mean IoU over the present classes.
    pub mean_iou: f64,
    /// Mean dice over the present classes (equal to `mean_f1`).
    pub mean_dice: f64,
    /// Mean precision over the present classes, an undefined one as 0.
    pub mean_precision: f64,
    /// Mean recall over the present classes.
    pub mean_recall: f64,
    /// Mean F1 over the present classes (equal to `mean_dice`; both names
    /// are kept because reports in the field use either).
    pub mean_f1: f64,
    /// IoU of the present classes weighted by their share of the pixels.
    pub frequency_weighted_iou: f64,
    /// Number of counted (not ignored) pixels.
    pub total_pixels: u64,
    /// Scores per class, indexed by class.
    pub per_class: Vec<ClassMetrics>,
    /// Classes with truth support > 0, ascending; the means run over these.
    pub classes_present: Vec<usize>,
}

/// The scores of a model that predicts the most frequent truth class for
/// every pixel, the floor any trained model must beat.
///
/// Built from the row sums of `cm` alone: every truth pixel of class `c`
/// lands in cell `(c, m)` where `m` is the class with the largest support
/// (the lowest index on ties).
pub fn majority_baseline(cm: &ConfusionMatrix) -> SegMetrics {
    let n = cm.num_classes;
    let support = cm.support();
    let mut baseline = ConfusionMatrix::new(n);
    // `max_by_key` keeps the last maximum; reversing makes ties go to the
    // lowest class index, which is stable across runs and documented above.
    if let Some((majority, _)) = support.iter().enumerate().rev().max_by_key(|&(_, &s)| s) {
        for (c, &s) in support.iter().enumerate() {
            baseline.counts[c * n + majority] = s;
        }
    }
    baseline.metrics()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a panic is how a unit test fails")]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_truth_is_an_error_and_changes_nothing() {
        let mut cm = ConfusionMatrix::new(3);
        let err = cm.add(&[0, 1, 3], &[0, 1, 2], None).unwrap_err();
        assert_eq!(
            err,
            MetricsError::ClassOutOfRange {
                which: "truth",
                value: 3,
                index: 2,
                num_classes: 3
            }
        );
        assert_eq!(
            err.to_string(),
            "truth label 3 at pixel 2 is out of range for 3 classes"
        );
        assert_eq!(cm.total(), 0);
    }

    #[test]
    fn out_of_range_prediction_is_an_error() {
        let mut cm = ConfusionMatrix::new(2);
        let err = cm.add(&[0, 1], &[0, 7], Some(255)).unwrap_err();
        assert!(matches!(
            err,
            MetricsError::ClassOutOfRange {
                which: "prediction",
                value: 7,
                index: 1,
                ..
            }
        ));
        assert_eq!(cm.total(), 0);
    }

    #[test]
    fn ignore_value_is_only_skipped_when_asked() {
        let mut cm = ConfusionMatrix::new(2);
        // Predictions on ignored pixels are not checked.
        cm.add(&[255, 1, 0], &[9, 1, 1], Some(255)).unwrap();
        assert_eq!(cm.counts(), &[0, 1, 0, 1]);
        assert!(matches!(
            cm.add(&[255], &[0], None),
            Err(MetricsError::ClassOutOfRange { value: 255, .. })
        ));
    }

    #[test]
    fn length_mismatch_is_an_error() {
        let mut cm = ConfusionMatrix::new(2);
        assert_eq!(
            cm.add(&[0, 1], &[0], None),
            Err(MetricsError::LengthMismatch { truth: 2, pred: 1 })
        );
    }

    #[test]
    fn merge_needs_equal_class_counts() {
        let mut a = ConfusionMatrix::new(2);
        let b = ConfusionMatrix::new(3);
        assert_eq!(
            a.merge(&b),
            Err(MetricsError::ClassCountMismatch { this: 2, other: 3 })
        );
    }

    #[test]
    fn get_reads_row_truth_column_prediction() {
        let mut cm = ConfusionMatrix::new(3);
        cm.add(&[0, 2, 2], &[1, 0, 2], None).unwrap();
        assert_eq!(cm.get(0, 1), 1);
        assert_eq!(cm.get(2, 0), 1);
        assert_eq!(cm.get(1, 0), 0);
        assert_eq!(cm.support(), vec![1, 0, 2]);
        assert_eq!(cm.predicted(), vec![1, 1, 1]);
    }

    #[test]
    #[should_panic(expected = "out of range")]
    fn get_out_of_range_panics() {
        ConfusionMatrix::new(2).get(0, 2);
    }

    #[test]
    fn majority_baseline_predicts_the_largest_class() {
        let mut cm = ConfusionMatrix::new(3);
        // Supports 2, 5, 3; the predictions must not matter.
        cm.add(
            &[0, 0, 1, 1, 1, 1, 1, 2, 2, 2],
            &[0, 0, 0, 2, 2, 1, 0, 2, 2, 2],
            None,
        )
        .unwrap();
        let m = majority_baseline(&cm);
        assert_eq!(m.pixel_accuracy, 0.5);
        // Class 1: TP 5, FP 5, FN 0.
        let c1 = &m.per_class[1];
        assert_eq!(c1.iou, Some(0.5));
        assert_eq!(c1.precision, Some(0.5));
        assert_eq!(c1.recall, Some(1.0));
        assert_eq!(c1.f1, Some(2.0 / 3.0));
        // The other classes are never predicted.
        for c in [0, 2] {
            assert_eq!(m.per_class[c].iou, Some(0.0));
            assert_eq!(m.per_class[c].precision, None);
            assert_eq!(m.per_class[c].recall, Some(0.0));
        }
        assert_eq!(m.classes_present, vec![0, 1, 2]);
        assert!((m.mean_iou - 0.5 / 3.0).abs() < 1e-12);
        assert!((m.mean_precision - 0.5 / 3.0).abs() < 1e-12);
        assert!((m.mean_recall - 1.0 / 3.0).abs() < 1e-12);
        assert!((m.frequency_weighted_iou - 0.25).abs() < 1e-12);
    }

    #[test]
    fn majority_baseline_breaks_ties_to_the_lowest_class() {
        let mut cm = ConfusionMatrix::new(3);
        cm.add(&[2, 2, 1, 1, 0], &[0, 0, 0, 0, 0], None).unwrap();
        let m = majority_baseline(&cm);
        assert_eq!(m.per_class[1].predicted, 5);
        assert_eq!(m.pixel_accuracy, 0.4);
    }

    #[test]
    fn empty_matrix_gives_zeros_not_nan() {
        for n in [0, 3] {
            let cm = ConfusionMatrix::new(n);
            for m in [cm.metrics(), majority_baseline(&cm)] {
                assert_eq!(m.pixel_accuracy, 0.0);
                assert_eq!(m.mean_iou, 0.0);
                assert_eq!(m.frequency_weighted_iou, 0.0);
                assert!(m.classes_present.is_empty());
                assert!(m.per_class.iter().all(|c| c.iou.is_none()));
                assert_eq!(m.per_class.len(), n);
            }
        }
    }

    #[test]
    fn deserialising_checks_the_shape() {
        let err = serde_json::from_str::<ConfusionMatrix>(r#"{"num_classes":2,"counts":[1,2,3]}"#)
            .unwrap_err();
        assert!(err.to_string().contains("needs 4 counts, got 3"), "{err}");
        let mut cm = ConfusionMatrix::new(2);
        cm.add(&[0, 1, 1], &[1, 1, 0], None).unwrap();
        let json = serde_json::to_string(&cm).unwrap();
        assert_eq!(serde_json::from_str::<ConfusionMatrix>(&json).unwrap(), cm);
    }
}
