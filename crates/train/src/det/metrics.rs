//! Detection metrics of an evaluation through `autodl-detection-metrics`: VOC AP50 (the ranking
//! metric), COCO AP, ArcGIS's AP10, the F1-optimal score threshold with its precision and
//! recall, and precision-recall curves.

use autodl_detection::ScoredBox;
use autodl_detection_metrics::{Detection, GtBox, VocMethod, VocResult};

use super::data::DetItem;

/// Every detection number of one evaluation, defined with `metrics.json` in `autodl-api`.
pub use autodl_api::DetMetrics;

/// Ground truth in the metrics crate's COCO boxes, image ids being item indices.
fn ground_truth(items: &[DetItem]) -> Vec<GtBox> {
    items
        .iter()
        .enumerate()
        .flat_map(|(i, it)| {
            it.boxes.iter().enumerate().map(move |(j, (b, c))| GtBox {
                image_id: i as u64,
                category: *c as u32,
                bbox: autodl_detection_metrics::coco_bbox(*b),
                area: None,
                iscrowd: it.crowd.get(j).copied().unwrap_or(false),
                difficult: it.difficult.get(j).copied().unwrap_or(false),
            })
        })
        .collect()
}

fn to_detections(dets: &[Vec<ScoredBox>]) -> Vec<Detection> {
    dets.iter()
        .enumerate()
        .flat_map(|(i, d)| {
            d.iter().map(move |s| Detection {
                image_id: i as u64,
                category: s.class as u32,
                bbox: autodl_detection_metrics::coco_bbox(s.bbox),
                score: f64::from(s.score),
            })
        })
        .collect()
}

/// VOC AP50 (the ranking metric) alone, for every epoch.
pub(crate) fn ap50(items: &[DetItem], dets: &[Vec<ScoredBox>]) -> f64 {
    let gts = ground_truth(items);
    autodl_detection_metrics::voc_ap(&gts, &to_detections(dets), 0.5, VocMethod::AllPoint)
        .map
        .unwrap_or(0.0)
}

/// Every metric of the kept epoch.
pub fn det_metrics(items: &[DetItem], dets: &[Vec<ScoredBox>], classes: usize) -> DetMetrics {
    use autodl_detection_metrics as dm;
    let gts = ground_truth(items);
    let dets = to_detections(dets);
    let voc: VocResult = dm::voc_ap(&gts, &dets, 0.5, VocMethod::AllPoint);
    let images: Vec<u64> = (0..items.len() as u64).collect();
    let categories: Vec<u32> = (0..classes as u32).collect();
    let coco = dm::coco_eval(&images, &categories, &gts, &dets);
    let arcgis = dm::arcgis_ap(&gts, &dets).map.unwrap_or(0.0);
    let mean = |v: &[dm::ClassPrf], f: fn(&dm::ClassPrf) -> f64| {
        if v.is_empty() {
            0.0
        } else {
            v.iter().map(f).sum::<f64>() / v.len() as f64
        }
    };
    let mut best = (0.5, Vec::new(), -1.0);
    for step in 1..20 {
        let threshold = step as f64 * 0.05;
        let prf = dm::precision_recall_f1(&gts, &dets, 0.5, threshold);
        let f1 = mean(&prf, |p| p.f1);
        if f1 > best.2 {
            best = (threshold, prf, f1);
        }
    }
    let (score_threshold, per_class, f1) = best;
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
            let mut curves = dm::pr_curves(&gts, &dets, 0.5);
            (0..classes as u32)
                .map(|c| {
                    let at = curves.iter().position(|(k, _)| *k == c);
                    (c, at.map_or_else(Vec::new, |i| curves.swap_remove(i).1))
                })
                .collect()
        },
    }
}
