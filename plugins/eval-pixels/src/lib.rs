//! The pixel-classification evaluator (`pixel-metrics`): one confusion matrix over every
//! validation pixel (through `autodl-metrics`), from which mean IoU, pixel accuracy and mean
//! dice come.

use autodl_api::{
    ClassInfo, EvalItem, EvalOptions, Evaluation, Evaluator, EvaluatorRegistration, MetricDecl,
    MetricsFile, PixelMetricsFile, PluginError, Task, inventory,
};
use autodl_metrics::ConfusionMatrix;

/// Scores pixel classifiers over one confusion matrix of the whole validation set; ranks by
/// mean IoU over the classes present in the truth by default.
pub struct PixelMetrics;

inventory::submit!(EvaluatorRegistration(&PixelMetrics));

impl Evaluator for PixelMetrics {
    fn name(&self) -> &'static str {
        "pixel-metrics"
    }

    fn task(&self) -> Task {
        Task::PixelClassification
    }

    fn metrics(&self) -> Vec<MetricDecl> {
        vec![
            MetricDecl::maximise("miou"),
            MetricDecl::maximise("accuracy"),
            MetricDecl::maximise("dice"),
        ]
    }

    fn start(&self, classes: &[ClassInfo], _: &EvalOptions) -> Box<dyn Evaluation> {
        Box::new(PixelEvaluation {
            classes: classes.to_vec(),
            matrix: ConfusionMatrix::new(classes.len()),
        })
    }
}

/// The confusion matrix so far.
struct PixelEvaluation {
    classes: Vec<ClassInfo>,
    matrix: ConfusionMatrix,
}

impl PixelEvaluation {
    fn file(&self) -> MetricsFile {
        MetricsFile::PixelClassification(PixelMetricsFile {
            metrics: self.matrix.metrics(),
            classes: self.classes.clone(),
            confusion_matrix: self.matrix.clone(),
            epochs: Vec::new(),
        })
    }
}

impl Evaluation for PixelEvaluation {
    fn add(&mut self, item: EvalItem<'_>) -> Result<(), PluginError> {
        match item {
            EvalItem::Pixels { predicted, truth } => self
                .matrix
                .add(truth, predicted, Some(autodl_api::IGNORE))
                .map_err(|e| PluginError::Data(e.to_string())),
            EvalItem::Boxes { .. } => Err(PluginError::Data(
                "pixel-metrics scores classes per pixel, not boxes".into(),
            )),
        }
    }

    fn score(&self, metric: &str) -> Option<f64> {
        // The matrix is classes x classes: building the whole file is cheap.
        self.file().metric(metric)
    }

    fn finish(self: Box<Self>) -> MetricsFile {
        self.file()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classes() -> Vec<ClassInfo> {
        ["a", "b", "c"]
            .iter()
            .enumerate()
            .map(|(i, n)| ClassInfo {
                value: i as u32 + 1,
                name: (*n).to_owned(),
            })
            .collect()
    }

    #[test]
    fn scores_the_confusion_matrix_of_every_image_added() {
        let mut e = PixelMetrics.start(&classes(), &EvalOptions::default());
        let ignore = autodl_api::IGNORE;
        e.add(EvalItem::Pixels {
            predicted: &[0, 1, 1, 2],
            truth: &[0, 1, 2, ignore],
        })
        .unwrap();
        e.add(EvalItem::Pixels {
            predicted: &[2, 0],
            truth: &[2, 0],
        })
        .unwrap();
        let mut cm = ConfusionMatrix::new(3);
        cm.add(&[0, 1, 2, 2, 0], &[0, 1, 1, 2, 0], None).unwrap();
        let want = cm.metrics();
        assert_eq!(e.score("miou"), Some(want.mean_iou));
        assert_eq!(e.score("accuracy"), Some(want.pixel_accuracy));
        assert_eq!(e.score("dice"), Some(want.mean_dice));
        assert_eq!(e.score("ap50"), None);
        let MetricsFile::PixelClassification(file) = e.finish() else {
            panic!("a pixel file")
        };
        assert_eq!(file.confusion_matrix, cm);
        assert_eq!(file.metrics, want);
        assert_eq!(file.classes, classes());
        assert!(file.epochs.is_empty());
    }

    #[test]
    fn every_declared_metric_is_scored() {
        let mut e = PixelMetrics.start(&classes(), &EvalOptions::default());
        e.add(EvalItem::Pixels {
            predicted: &[0, 1],
            truth: &[0, 2],
        })
        .unwrap();
        for m in PixelMetrics.metrics() {
            assert!(e.score(m.name).is_some(), "{}", m.name);
        }
    }

    #[test]
    fn a_class_out_of_range_or_boxes_are_refused() {
        let mut e = PixelMetrics.start(&classes(), &EvalOptions::default());
        assert!(
            e.add(EvalItem::Pixels {
                predicted: &[3],
                truth: &[0],
            })
            .is_err()
        );
        assert!(
            e.add(EvalItem::Boxes {
                detections: &[],
                truth: &[],
            })
            .is_err()
        );
    }
}
