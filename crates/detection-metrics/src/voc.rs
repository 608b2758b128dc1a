//! PASCAL VOC average precision and per-class precision/recall/F1.
//!
//! Matching follows the VOC devkit's `voc_eval`: per class, detections in
//! descending score order (stable, so ties keep their input order) each look
//! at every ground-truth box of their image and class and pick the one of
//! highest IoU (the first of equals). Above the threshold (strictly, as in
//! the devkit) the detection is a true positive if that box is not yet
//! taken, a false positive if it is, and neither if the box is `difficult`;
//! otherwise it is a false positive. A taken box is never given up for the
//! next best one. `npos` counts the non-difficult boxes only.

use std::collections::HashMap;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::boxes::iou;
use crate::{Detection, GtBox};

/// The IoU threshold ArcGIS (`arcgis.learn`'s `average_precision_score`)
/// uses by default.
pub const ARCGIS_IOU: f64 = 0.1;

/// How the precision/recall curve is turned into one number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VocMethod {
    /// Area under the precision envelope at every recall step (VOC 2010 and
    /// later).
    AllPoint,
    /// Mean of the envelope at recall 0, 0.1, ..., 1 (VOC 2007).
    ElevenPoint,
}

/// VOC AP per class and their mean.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VocResult {
    /// Mean AP over the classes that have a non-difficult ground-truth box;
    /// `None` when no class has one.
    pub map: Option<f64>,
    /// Every class found in the ground truth or the detections, ascending by
    /// id, with its AP; `None` for a class without non-difficult ground
    /// truth, where recall is undefined.
    pub per_class: Vec<(u32, Option<f64>)>,
}

/// Detection counts and ratios for one class at one score threshold.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClassPrf {
    /// Category id.
    pub category: u32,
    /// `tp / (tp + fp)`, 0 when nothing was detected.
    pub precision: f64,
    /// `tp / (tp + fn)`, 0 when there is nothing to find.
    pub recall: f64,
    /// Harmonic mean of precision and recall, 0 when both are 0.
    pub f1: f64,
    /// Detections matched to a new non-difficult box.
    pub tp: u64,
    /// Detections matched to nothing, or to a box already taken.
    pub fp: u64,
    /// Non-difficult boxes no detection took.
    pub fn_: u64,
}

/// VOC AP at `iou_threshold` for every class, as the devkit's `voc_eval`
/// computes it (see the module notes for the matching rule).
pub fn voc_ap(
    gts: &[GtBox],
    dets: &[Detection],
    iou_threshold: f64,
    method: VocMethod,
) -> VocResult {
    let per_class: Vec<(u32, Option<f64>)> = classes(gts, dets)
        .into_par_iter()
        .map(|c| {
            let ap = (c.npos > 0).then(|| {
                let outcomes = c.match_sorted(gts, dets, iou_threshold, f64::NEG_INFINITY);
                let (rec, prec) = curve(&outcomes, c.npos);
                match method {
                    VocMethod::AllPoint => all_point_ap(&rec, &prec),
                    VocMethod::ElevenPoint => eleven_point_ap(&rec, &prec),
                }
            });
            (c.category, ap)
        })
        .collect();
    let defined: Vec<f64> = per_class.iter().filter_map(|&(_, ap)| ap).collect();
    let map = (!defined.is_empty()).then(|| defined.iter().sum::<f64>() / defined.len() as f64);
    VocResult { map, per_class }
}

/// ArcGIS's detection AP: [`voc_ap`] with all-point interpolation at IoU
/// [`ARCGIS_IOU`] (0.1). Far more lenient than VOC's 0.5, so it is only for
/// comparing with numbers ArcGIS printed.
pub fn arcgis_ap(gts: &[GtBox], dets: &[Detection]) -> VocResult {
    voc_ap(gts, dets, ARCGIS_IOU, VocMethod::AllPoint)
}

/// Precision, recall and F1 per class, counting only detections scoring at
/// least `score_threshold` and matching them with the VOC rule at
/// `iou_threshold` (`difficult` boxes neither found nor missed). The counts
/// are the VOC curve's at that score, so they agree with [`voc_ap`].
pub fn precision_recall_f1(
    gts: &[GtBox],
    dets: &[Detection],
    iou_threshold: f64,
    score_threshold: f64,
) -> Vec<ClassPrf> {
    classes(gts, dets)
        .into_par_iter()
        .map(|c| {
            let outcomes = c.match_sorted(gts, dets, iou_threshold, score_threshold);
            let tp = outcomes.iter().filter(|&&o| o == Outcome::Tp).count() as u64;
            let fp = outcomes.iter().filter(|&&o| o == Outcome::Fp).count() as u64;
            let npos = c.npos as u64;
            let fn_ = npos - tp;
            let precision = if tp + fp > 0 {
                tp as f64 / (tp + fp) as f64
            } else {
                0.0
            };
            let recall = if npos > 0 {
                tp as f64 / npos as f64
            } else {
                0.0
            };
            let f1 = if precision + recall > 0.0 {
                2.0 * precision * recall / (precision + recall)
            } else {
                0.0
            };
            ClassPrf {
                category: c.category,
                precision,
                recall,
                f1,
                tp,
                fp,
                fn_,
            }
        })
        .collect()
}

/// The precision-recall curve of every class at `iou_threshold`, ascending by id: `(recall,
/// precision)` after each detection, best score first, matched with the VOC rule [`voc_ap`]
/// integrates. A detection matching a `difficult` box adds no point; recall is 0 for a class
/// without non-difficult boxes.
pub fn pr_curves(
    gts: &[GtBox],
    dets: &[Detection],
    iou_threshold: f64,
) -> Vec<(u32, Vec<(f64, f64)>)> {
    classes(gts, dets)
        .into_par_iter()
        .map(|c| {
            let outcomes = c.match_sorted(gts, dets, iou_threshold, f64::NEG_INFINITY);
            let (mut tp, mut fp) = (0u64, 0u64);
            let points = outcomes
                .iter()
                .filter_map(|o| {
                    match o {
                        Outcome::Tp => tp += 1,
                        Outcome::Fp => fp += 1,
                        Outcome::Neither => return None,
                    }
                    Some((
                        tp as f64 / c.npos.max(1) as f64,
                        tp as f64 / (tp + fp) as f64,
                    ))
                })
                .collect();
            (c.category, points)
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Tp,
    Fp,
    /// Matched a difficult box: in the curve, but counted as neither.
    Neither,
}

/// One class's boxes and detections, as indices into the caller's slices.
struct Class {
    category: u32,
    /// Ground-truth indices grouped by image, each group in input order.
    gts: Vec<usize>,
    /// Image id to its range in `gts`.
    by_image: HashMap<u64, (usize, usize)>,
    /// Non-difficult ground-truth boxes.
    npos: usize,
    /// Detection indices in input order.
    dets: Vec<usize>,
}

/// Splits the inputs by class, ascending by id.
fn classes(gts: &[GtBox], dets: &[Detection]) -> Vec<Class> {
    let mut index: HashMap<u32, usize> = HashMap::new();
    let mut out: Vec<Class> = Vec::new();
    let mut slot = |category: u32| {
        *index.entry(category).or_insert_with(|| {
            out.push(Class {
                category,
                gts: Vec::new(),
                by_image: HashMap::new(),
                npos: 0,
                dets: Vec::new(),
            });
            out.len() - 1
        })
    };
    let gt_slots: Vec<usize> = gts.iter().map(|g| slot(g.category)).collect();
    let det_slots: Vec<usize> = dets.iter().map(|d| slot(d.category)).collect();
    for (i, s) in gt_slots.into_iter().enumerate() {
        out[s].gts.push(i);
    }
    for (i, s) in det_slots.into_iter().enumerate() {
        out[s].dets.push(i);
    }
    for c in &mut out {
        // Stable, so boxes keep their input order within an image, which
        // decides which of two equal-IoU boxes a detection takes.
        c.gts.sort_by_key(|&g| gts[g].image_id);
        c.npos = c.gts.iter().filter(|&&g| !gts[g].difficult).count();
        let mut start = 0;
        while start < c.gts.len() {
            let img = gts[c.gts[start]].image_id;
            let len = c.gts[start..]
                .iter()
                .take_while(|&&g| gts[g].image_id == img)
                .count();
            c.by_image.insert(img, (start, start + len));
            start += len;
        }
    }
    out.sort_unstable_by_key(|c| c.category);
    out
}

impl Class {
    /// The outcome of each detection scoring at least `min_score`, in
    /// descending score order.
    fn match_sorted(
        &self,
        gts: &[GtBox],
        dets: &[Detection],
        iou_threshold: f64,
        min_score: f64,
    ) -> Vec<Outcome> {
        let mut order: Vec<usize> = self
            .dets
            .iter()
            .copied()
            .filter(|&d| dets[d].score >= min_score)
            .collect();
        order.sort_by(|&a, &b| dets[b].score.total_cmp(&dets[a].score));
        let mut taken = vec![false; self.gts.len()];
        order
            .iter()
            .map(|&d| {
                let det = &dets[d];
                let Some(&(start, end)) = self.by_image.get(&det.image_id) else {
                    return Outcome::Fp;
                };
                let mut best = f64::NEG_INFINITY;
                let mut best_j = start;
                for j in start..end {
                    let o = iou(&det.bbox, &gts[self.gts[j]].bbox);
                    if o > best {
                        best = o;
                        best_j = j;
                    }
                }
                if best > iou_threshold {
                    if gts[self.gts[best_j]].difficult {
                        Outcome::Neither
                    } else if taken[best_j] {
                        Outcome::Fp
                    } else {
                        taken[best_j] = true;
                        Outcome::Tp
                    }
                } else {
                    Outcome::Fp
                }
            })
            .collect()
    }
}

/// Cumulative recall and precision after each detection, as `voc_eval`
/// computes them.
fn curve(outcomes: &[Outcome], npos: usize) -> (Vec<f64>, Vec<f64>) {
    let (mut tp, mut fp) = (0u64, 0u64);
    let mut rec = Vec::with_capacity(outcomes.len());
    let mut prec = Vec::with_capacity(outcomes.len());
    for o in outcomes {
        match o {
            Outcome::Tp => tp += 1,
            Outcome::Fp => fp += 1,
            Outcome::Neither => {}
        }
        let (tpf, fpf) = (tp as f64, fp as f64);
        rec.push(tpf / npos as f64);
        prec.push(tpf / (tpf + fpf).max(f64::EPSILON));
    }
    (rec, prec)
}

/// VOC 2010+ AP: the area under the precision envelope, summed over the
/// recall steps of the curve (framed by recall 0 and 1, precision 0).
fn all_point_ap(rec: &[f64], prec: &[f64]) -> f64 {
    let mut mrec = Vec::with_capacity(rec.len() + 2);
    mrec.push(0.0);
    mrec.extend_from_slice(rec);
    mrec.push(1.0);
    let mut mpre = Vec::with_capacity(prec.len() + 2);
    mpre.push(0.0);
    mpre.extend_from_slice(prec);
    mpre.push(0.0);
    for i in (1..mpre.len()).rev() {
        mpre[i - 1] = mpre[i - 1].max(mpre[i]);
    }
    (0..mrec.len() - 1)
        .filter(|&i| mrec[i + 1] != mrec[i])
        .map(|i| (mrec[i + 1] - mrec[i]) * mpre[i + 1])
        .sum()
}

/// VOC 2007 AP: the best precision at recall ≥ 0, 0.1, ..., 1, averaged.
fn eleven_point_ap(rec: &[f64], prec: &[f64]) -> f64 {
    let mut ap = 0.0;
    for i in 0..=10 {
        // `i * 0.1` is how np.arange(0., 1.1, 0.1) makes its points
        // (0.30000000000000004 included).
        let t = f64::from(i) * 0.1;
        let p = rec
            .iter()
            .zip(prec)
            .filter(|&(&r, _)| r >= t)
            .map(|(_, &p)| p)
            .fold(None, |m: Option<f64>, p| Some(m.map_or(p, |m| m.max(p))))
            .unwrap_or(0.0);
        ap += p / 11.0;
    }
    ap
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gt(image_id: u64, category: u32, bbox: [f64; 4], difficult: bool) -> GtBox {
        GtBox {
            image_id,
            category,
            bbox,
            area: None,
            iscrowd: false,
            difficult,
        }
    }

    fn det(image_id: u64, category: u32, bbox: [f64; 4], score: f64) -> Detection {
        Detection {
            image_id,
            category,
            bbox,
            score,
        }
    }

    /// Three boxes; detections in score order: hit, miss, hit, miss, hit.
    /// Recall steps 1/3 at precision 1, 2/3 at 2/3, 1 at 3/5.
    fn ranked_case() -> (Vec<GtBox>, Vec<Detection>) {
        let boxes = [
            [0.0, 0.0, 10.0, 10.0],
            [100.0, 0.0, 10.0, 10.0],
            [200.0, 0.0, 10.0, 10.0],
        ];
        let gts = boxes.iter().map(|&b| gt(1, 1, b, false)).collect();
        let far = [500.0, 500.0, 10.0, 10.0];
        let dets = vec![
            det(1, 1, boxes[0], 0.9),
            det(1, 1, far, 0.8),
            det(1, 1, boxes[1], 0.7),
            det(1, 1, far, 0.6),
            det(1, 1, boxes[2], 0.5),
        ];
        (gts, dets)
    }

    #[test]
    fn pr_curves_step_with_each_counted_detection() {
        // Image 0: one box found twice (a true then a false positive); image 1: a difficult
        // box, whose detection adds no point, and a missed box.
        let gts = [
            gt(0, 0, [0.0, 0.0, 10.0, 10.0], false),
            gt(1, 0, [0.0, 0.0, 10.0, 10.0], true),
            gt(1, 0, [50.0, 50.0, 10.0, 10.0], false),
        ];
        let dets = [
            det(0, 0, [0.0, 0.0, 10.0, 10.0], 0.9),
            det(1, 0, [0.0, 0.0, 10.0, 10.0], 0.8),
            det(0, 0, [1.0, 0.0, 10.0, 10.0], 0.7),
        ];
        let curves = pr_curves(&gts, &dets, 0.5);
        assert_eq!(curves, vec![(0, vec![(0.5, 1.0), (0.5, 0.5)])]);
    }

    #[test]
    fn eleven_point_differs_from_all_point() {
        let (gts, dets) = ranked_case();
        let all = voc_ap(&gts, &dets, 0.5, VocMethod::AllPoint);
        let eleven = voc_ap(&gts, &dets, 0.5, VocMethod::ElevenPoint);
        // All point: 1/3 * 1 + 1/3 * 2/3 + 1/3 * 3/5.
        let want_all = (1.0 + 2.0 / 3.0 + 0.6) / 3.0;
        // Eleven point: recall ≥ 0, .1, .2, .3 see precision 1 (4 points),
        // ≥ .4 ... .6 see 2/3 (3 points), ≥ .7 ... 1 see 3/5 (4 points).
        let want_eleven = (4.0 + 3.0 * 2.0 / 3.0 + 4.0 * 0.6) / 11.0;
        assert!((all.map.unwrap() - want_all).abs() < 1e-12);
        assert!((eleven.map.unwrap() - want_eleven).abs() < 1e-12);
        assert!((all.map.unwrap() - eleven.map.unwrap()).abs() > 1e-3);
        assert_eq!(all.per_class, vec![(1, all.map)]);
    }

    #[test]
    fn eleven_point_uses_numpy_arange_points() {
        // Ten boxes; three hits reach recall exactly 0.3, three misses
        // follow, then a fourth hit (recall 0.4, precision 4/7). The devkit's
        // third point is 0.30000000000000004, which recall 0.3 does not
        // reach, so that point reads 4/7 rather than 1.
        let gts: Vec<GtBox> = (0..10)
            .map(|i| gt(1, 1, [100.0 * f64::from(i), 0.0, 10.0, 10.0], false))
            .collect();
        let mut dets: Vec<Detection> = (0..3)
            .map(|i| det(1, 1, gts[i].bbox, 0.9 - 0.01 * i as f64))
            .collect();
        dets.extend((0..3).map(|i| {
            det(
                1,
                1,
                [5000.0, 5000.0, 10.0, 10.0],
                0.5 - 0.01 * f64::from(i),
            )
        }));
        dets.push(det(1, 1, gts[3].bbox, 0.1));
        let ap = voc_ap(&gts, &dets, 0.5, VocMethod::ElevenPoint)
            .map
            .unwrap();
        // The value the NumPy port in make_expected.py gives.
        assert!((ap - 0.37662337662337664).abs() < 1e-12);
        assert!((ap - (3.0 + 2.0 * 4.0 / 7.0) / 11.0).abs() < 1e-12);
    }

    #[test]
    fn difficult_boxes_are_neither_found_nor_missed() {
        let gts = vec![
            gt(1, 1, [0.0, 0.0, 10.0, 10.0], false),
            gt(1, 1, [50.0, 50.0, 10.0, 10.0], true),
        ];
        // Finding the difficult box first neither helps nor hurts.
        let dets = vec![
            det(1, 1, [50.0, 50.0, 10.0, 10.0], 0.9),
            det(1, 1, [0.0, 0.0, 10.0, 10.0], 0.8),
        ];
        let r = voc_ap(&gts, &dets, 0.5, VocMethod::AllPoint);
        assert_eq!(r.map, Some(1.0));
        let prf = precision_recall_f1(&gts, &dets, 0.5, 0.5);
        assert_eq!((prf[0].tp, prf[0].fp, prf[0].fn_), (1, 0, 0));
        // Only difficult ground truth: AP is undefined, not 0.
        let only = voc_ap(&gts[1..], &dets, 0.5, VocMethod::AllPoint);
        assert_eq!(only.map, None);
        assert_eq!(only.per_class, vec![(1, None)]);
    }

    #[test]
    fn duplicate_detection_is_a_false_positive() {
        let gts = vec![gt(1, 1, [0.0, 0.0, 10.0, 10.0], false)];
        let dets = vec![
            det(1, 1, [0.0, 0.0, 10.0, 10.0], 0.9),
            det(1, 1, [1.0, 0.0, 10.0, 10.0], 0.8),
        ];
        let prf = precision_recall_f1(&gts, &dets, 0.5, 0.0);
        assert_eq!((prf[0].tp, prf[0].fp, prf[0].fn_), (1, 1, 0));
    }

    #[test]
    fn arcgis_threshold_accepts_loose_boxes() {
        // IoU 25/175 ≈ 0.14: a hit for ArcGIS's 0.1, a miss for VOC's 0.5.
        let gts = vec![gt(1, 1, [0.0, 0.0, 10.0, 10.0], false)];
        let dets = vec![det(1, 1, [5.0, 5.0, 10.0, 10.0], 0.9)];
        assert!((iou(&gts[0].bbox, &dets[0].bbox) - 25.0 / 175.0).abs() < 1e-15);
        assert_eq!(arcgis_ap(&gts, &dets).map, Some(1.0));
        assert_eq!(
            arcgis_ap(&gts, &dets),
            voc_ap(&gts, &dets, 0.1, VocMethod::AllPoint)
        );
        assert_eq!(voc_ap(&gts, &dets, 0.5, VocMethod::AllPoint).map, Some(0.0));
    }

    #[test]
    fn threshold_is_strict() {
        // IoU exactly 0.5 (overlap 100, union 200) does not pass VOC's
        // `ovmax > ovthresh`.
        let gts = vec![gt(1, 1, [0.0, 0.0, 10.0, 15.0], false)];
        let dets = vec![det(1, 1, [0.0, 5.0, 10.0, 15.0], 0.9)];
        assert_eq!(iou(&gts[0].bbox, &dets[0].bbox), 0.5);
        assert_eq!(voc_ap(&gts, &dets, 0.5, VocMethod::AllPoint).map, Some(0.0));
        assert_eq!(
            voc_ap(&gts, &dets, 0.49, VocMethod::AllPoint).map,
            Some(1.0)
        );
    }

    #[test]
    fn precision_recall_f1_at_a_score_threshold() {
        let (gts, mut dets) = ranked_case();
        // A second class, only predicted: precision 0, recall undefined (0).
        dets.push(det(1, 7, [0.0, 0.0, 10.0, 10.0], 0.95));
        let prf = precision_recall_f1(&gts, &dets, 0.5, 0.6);
        assert_eq!(prf.len(), 2);
        // Scores ≥ 0.6: hit, miss, hit, miss.
        let c = prf[0];
        assert_eq!((c.category, c.tp, c.fp, c.fn_), (1, 2, 2, 1));
        assert_eq!(c.precision, 0.5);
        assert!((c.recall - 2.0 / 3.0).abs() < 1e-15);
        assert!((c.f1 - 2.0 * 0.5 * (2.0 / 3.0) / (0.5 + 2.0 / 3.0)).abs() < 1e-15);
        let o = prf[1];
        assert_eq!((o.category, o.tp, o.fp, o.fn_), (7, 0, 1, 0));
        assert_eq!((o.precision, o.recall, o.f1), (0.0, 0.0, 0.0));
        // The threshold is inclusive: at 0.5 every detection counts.
        let all = precision_recall_f1(&gts, &dets, 0.5, 0.5);
        assert_eq!((all[0].tp, all[0].fp, all[0].fn_), (3, 2, 0));
        assert_eq!(all[0].recall, 1.0);
    }
}
