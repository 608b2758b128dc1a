//! The detection evaluator (`box-metrics`), over `autodl-detection-metrics`: PASCAL VOC AP50
//! (all-point, difficult boxes ignored; the default ranking metric), the twelve COCO numbers
//! (pycocotools' rules), ArcGIS's AP at IoU 0.1, precision, recall and F1 at the score
//! threshold with the best mean F1 (or a given one), and precision-recall curves.

use autodl_api::{
    ClassInfo, DetMetrics, DetectionMetricsFile, DetectionSummary, EvalItem, EvalOptions,
    Evaluation, Evaluator, EvaluatorRegistration, MetricDecl, MetricsFile, PluginError, Task,
    inventory,
};
use autodl_detection_metrics::{self as dm, Detection, GtBox, VocMethod};

/// Scores detectors; ranks by VOC AP50 by default.
pub struct BoxMetrics;

inventory::submit!(EvaluatorRegistration(&BoxMetrics));

impl Evaluator for BoxMetrics {
    fn name(&self) -> &'static str {
        "box-metrics"
    }

    fn task(&self) -> Task {
        Task::Detection
    }

    fn metrics(&self) -> Vec<MetricDecl> {
        vec![
            MetricDecl::maximise("ap50"),
            MetricDecl::maximise("coco-ap"),
            // ArcGIS's ranking rule for detectors (`metric = "arcgis"`).
            MetricDecl::maximise("arcgis-ap10"),
        ]
    }

    fn start(&self, classes: &[ClassInfo], options: &EvalOptions) -> Box<dyn Evaluation> {
        Box::new(BoxEvaluation {
            classes: classes.to_vec(),
            options: *options,
            images: 0,
            truth: Vec::new(),
            detections: Vec::new(),
        })
    }
}

/// Score thresholds searched for the best mean F1: 0.05 to 0.95 in steps of 0.05, then
/// lower ones, which win only when strictly better: a detector whose scores are products of
/// probabilities (YOLOv3's objectness times class) can score every true box under 0.05 early
/// in training, and a threshold above all of its scores would make `autodl predict` find
/// nothing.
fn searched_thresholds() -> impl Iterator<Item = f64> {
    (1..20)
        .map(|step| step as f64 * 0.05)
        .chain([0.04, 0.03, 0.02, 0.01, 0.005, 0.002, 0.001])
}

/// Every box added so far, image ids being the order images were added in.
struct BoxEvaluation {
    classes: Vec<ClassInfo>,
    options: EvalOptions,
    images: u64,
    truth: Vec<GtBox>,
    detections: Vec<Detection>,
}

/// The mean of `f` over the classes, 0 for none.
fn mean(v: &[dm::ClassPrf], f: fn(&dm::ClassPrf) -> f64) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().map(f).sum::<f64>() / v.len() as f64
    }
}

impl BoxEvaluation {
    fn image_ids(&self) -> Vec<u64> {
        (0..self.images).collect()
    }

    fn categories(&self) -> Vec<u32> {
        (0..self.classes.len() as u32).collect()
    }

    fn coco(&self) -> dm::CocoSummary {
        dm::coco_eval(
            &self.image_ids(),
            &self.categories(),
            &self.truth,
            &self.detections,
        )
    }

    /// VOC AP50 with the given interpolation; `None` without a true box to find.
    fn voc(&self, method: VocMethod) -> dm::VocResult {
        dm::voc_ap(&self.truth, &self.detections, 0.5, method)
    }

    /// Per-class precision, recall and F1 at IoU 0.5 at the given threshold, or at the one
    /// with the best mean F1, with the threshold and that mean.
    fn at_threshold(&self) -> (f64, Vec<dm::ClassPrf>, f64) {
        let (gts, dets) = (&self.truth, &self.detections);
        if let Some(threshold) = self.options.score_threshold {
            let prf = dm::precision_recall_f1(gts, dets, 0.5, threshold);
            let f1 = mean(&prf, |p| p.f1);
            return (threshold, prf, f1);
        }
        let mut best = (0.5, Vec::new(), -1.0);
        for threshold in searched_thresholds() {
            let prf = dm::precision_recall_f1(gts, dets, 0.5, threshold);
            let f1 = mean(&prf, |p| p.f1);
            if f1 > best.2 {
                best = (threshold, prf, f1);
            }
        }
        best
    }

    fn detail(&self) -> DetMetrics {
        let (gts, dets) = (&self.truth, &self.detections);
        let voc = self.voc(VocMethod::AllPoint);
        let coco = self.coco();
        let arcgis = dm::arcgis_ap(gts, dets).map.unwrap_or(0.0);
        let (score_threshold, per_class, f1) = self.at_threshold();
        let classes = self.classes.len() as u32;
        DetMetrics {
            ap50: voc.map.unwrap_or(0.0),
            ap50_per_class: voc.per_class,
            coco,
            arcgis_ap10: arcgis,
            score_threshold,
            precision: mean(&per_class, |p| p.precision),
            recall: mean(&per_class, |p| p.recall),
            f1,
            per_class,
            pr_curves: {
                let mut curves = dm::pr_curves(gts, dets, 0.5);
                (0..classes)
                    .map(|c| {
                        let at = curves.iter().position(|(k, _)| *k == c);
                        (c, at.map_or_else(Vec::new, |i| curves.swap_remove(i).1))
                    })
                    .collect()
            },
        }
    }
}

impl Evaluation for BoxEvaluation {
    fn add(&mut self, item: EvalItem<'_>) -> Result<(), PluginError> {
        let EvalItem::Boxes { detections, truth } = item else {
            return Err(PluginError::Data(
                "box-metrics scores boxes, not classes per pixel".into(),
            ));
        };
        let image_id = self.images;
        self.truth.extend(truth.iter().map(|t| GtBox {
            image_id,
            category: t.class,
            bbox: t.bbox,
            area: t.area,
            iscrowd: t.crowd,
            difficult: t.difficult,
        }));
        self.detections.extend(detections.iter().map(|d| Detection {
            image_id,
            category: d.class,
            bbox: d.bbox,
            score: d.score,
        }));
        self.images += 1;
        Ok(())
    }

    /// `ap50`, `coco-ap`, `coco-ap50`, `coco-ap75`, `arcgis-ap10` and `voc07-ap50` (VOC AP50
    /// with the 11-point interpolation of VOC 2007) compute only their own number; the other
    /// names of [`MetricsFile::scores`] need the threshold search.
    fn score(&self, metric: &str) -> Option<f64> {
        match metric {
            "ap50" => self.voc(VocMethod::AllPoint).map,
            "voc07-ap50" => self.voc(VocMethod::ElevenPoint).map,
            "arcgis-ap10" => dm::arcgis_ap(&self.truth, &self.detections).map,
            "coco-ap" => Some(self.coco().ap),
            "coco-ap50" => Some(self.coco().ap50),
            "coco-ap75" => Some(self.coco().ap75),
            _ => {
                let detail = self.detail();
                file(&self.classes, detail).metric(metric)
            }
        }
    }

    fn finish(self: Box<Self>) -> MetricsFile {
        let detail = self.detail();
        file(&self.classes, detail)
    }
}

fn file(classes: &[ClassInfo], detail: DetMetrics) -> MetricsFile {
    MetricsFile::Detection(DetectionMetricsFile {
        metrics: DetectionSummary::from(&detail),
        detail,
        classes: classes.to_vec(),
        epochs: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use autodl_api::{DetectedBox, TruthBox};

    fn classes() -> Vec<ClassInfo> {
        (0..2)
            .map(|i| ClassInfo {
                value: i + 7,
                name: format!("c{i}"),
            })
            .collect()
    }

    fn truth(x: f64, class: u32) -> TruthBox {
        TruthBox {
            bbox: [x, 0.0, 10.0, 10.0],
            class,
            area: None,
            crowd: false,
            difficult: false,
        }
    }

    fn det(x: f64, class: u32, score: f64) -> DetectedBox {
        DetectedBox {
            bbox: [x, 0.0, 10.0, 10.0],
            class,
            score,
        }
    }

    /// Two images: the first with a found and a missed box, the second with a false alarm.
    fn evaluation(options: EvalOptions) -> Box<dyn Evaluation> {
        let mut e = BoxMetrics.start(&classes(), &options);
        e.add(EvalItem::Boxes {
            detections: &[det(0.0, 0, 0.9), det(50.0, 1, 0.2)],
            truth: &[truth(0.0, 0), truth(20.0, 1)],
        })
        .unwrap();
        e.add(EvalItem::Boxes {
            detections: &[det(0.0, 0, 0.6)],
            truth: &[],
        })
        .unwrap();
        e
    }

    /// The same boxes for the metrics crate, image ids in the order added.
    fn raw() -> (Vec<GtBox>, Vec<Detection>) {
        let gt = |image_id, x, category| GtBox {
            image_id,
            category,
            bbox: [x, 0.0, 10.0, 10.0],
            area: None,
            iscrowd: false,
            difficult: false,
        };
        let d = |image_id, x, category, score| Detection {
            image_id,
            category,
            bbox: [x, 0.0, 10.0, 10.0],
            score,
        };
        (
            vec![gt(0, 0.0, 0), gt(0, 20.0, 1)],
            vec![d(0, 0.0, 0, 0.9), d(0, 50.0, 1, 0.2), d(1, 0.0, 0, 0.6)],
        )
    }

    #[test]
    fn low_scores_get_a_low_threshold() {
        // Every box is right but scores under 0.05: the grid from 0.05 would keep none.
        let mut e = BoxMetrics.start(&classes(), &EvalOptions::default());
        e.add(EvalItem::Boxes {
            detections: &[det(0.0, 0, 0.03), det(20.0, 1, 0.012)],
            truth: &[truth(0.0, 0), truth(20.0, 1)],
        })
        .unwrap();
        let MetricsFile::Detection(file) = e.finish() else {
            panic!("a detection file")
        };
        assert_eq!(file.detail.score_threshold, 0.01);
        assert_eq!(file.metrics.f1, 1.0);
    }

    #[test]
    fn scores_as_the_metrics_crate_does() {
        let e = evaluation(EvalOptions::default());
        let (gts, dets) = raw();
        let voc = dm::voc_ap(&gts, &dets, 0.5, VocMethod::AllPoint);
        let coco = dm::coco_eval(&[0, 1], &[0, 1], &gts, &dets);
        assert_eq!(e.score("ap50"), voc.map);
        assert_eq!(e.score("coco-ap"), Some(coco.ap));
        assert_eq!(e.score("arcgis-ap10"), dm::arcgis_ap(&gts, &dets).map);
        assert_eq!(
            e.score("voc07-ap50"),
            dm::voc_ap(&gts, &dets, 0.5, VocMethod::ElevenPoint).map
        );
        assert_eq!(e.score("miou"), None);
        let f1 = e.score("f1");
        let MetricsFile::Detection(file) = e.finish() else {
            panic!("a detection file")
        };
        assert_eq!(file.detail.ap50, voc.map.unwrap_or(0.0));
        assert_eq!(file.detail.coco, coco);
        assert_eq!(file.classes, classes());
        assert_eq!(Some(file.metrics.f1), f1);
        // Class 0 is found at 0.9 and falsely at 0.6, class 1 never: the best mean F1 (1/2)
        // starts at the first threshold searched that leaves out the false alarm, 12 * 0.05
        // (a hair above 0.6 in floating point).
        assert_eq!(file.detail.score_threshold, 12.0 * 0.05);
        assert_eq!(file.metrics.f1, 0.5);
        assert_eq!(file.detail.pr_curves.len(), 2);
        assert!(file.epochs.is_empty());
    }

    #[test]
    fn a_given_threshold_is_used_as_given() {
        let e = evaluation(EvalOptions {
            score_threshold: Some(0.1),
        });
        let (gts, dets) = raw();
        let prf = dm::precision_recall_f1(&gts, &dets, 0.5, 0.1);
        let MetricsFile::Detection(file) = e.finish() else {
            panic!("a detection file")
        };
        assert_eq!(file.detail.score_threshold, 0.1);
        assert_eq!(file.detail.per_class, prf);
    }

    #[test]
    fn every_declared_metric_is_scored() {
        let e = evaluation(EvalOptions::default());
        for m in BoxMetrics.metrics() {
            assert!(e.score(m.name).is_some(), "{}", m.name);
        }
    }

    #[test]
    fn pixels_are_refused() {
        let mut e = BoxMetrics.start(&classes(), &EvalOptions::default());
        let err = e.add(EvalItem::Pixels {
            predicted: &[0],
            truth: &[0],
        });
        assert!(err.is_err());
    }
}
