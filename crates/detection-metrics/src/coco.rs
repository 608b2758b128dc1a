//! COCO box evaluation, reproducing pycocotools' `COCOeval` (`iouType="bbox"`,
//! default parameters).
//!
//! The work splits the way `COCOeval` splits it. `evaluate` takes each
//! (image, category) pair that has a ground-truth box or a detection, keeps
//! its 100 best-scored detections, and matches them greedily to the ground
//! truth at each of the ten IoU thresholds and each of the four area ranges.
//! `accumulate` then pools one category's detections over all images, sorts
//! them by score, and reads precision at 101 recall points off the cumulative
//! counts. The rules that decide the numbers, each mirrored below:
//!
//! - detections are ordered by descending score with a *stable* sort: ties
//!   keep their input order within an image, and across images the image
//!   order (ascending id) comes first;
//! - a ground-truth box is ignored for an area range when it is a crowd or
//!   its `area` is outside `[lo, hi]` (both ends inclusive); ignored boxes
//!   are tried after all the others;
//! - a detection takes the ground-truth box of highest IoU that is at least
//!   the threshold (capped at `1 - 1e-10`), ties going to the later box; a
//!   box already taken is skipped unless it is a crowd; once a regular box
//!   is held, the search stops at the first ignored one;
//! - a detection matched to an ignored box is ignored, and so is an
//!   unmatched one whose own `w * h` is outside the area range;
//! - crowd regions are compared by intersection over the detection's area;
//! - precision is made non-increasing from the right, sampled at the first
//!   detection whose recall reaches each of `linspace(0, 1, 101)` (0 past the
//!   last), and recall is the final recall (0 with no detections);
//! - a category with no pair in the image set, or no non-ignored ground
//!   truth for an area range, is undefined (-1) there, and every summary
//!   averages over the defined entries only, or is -1 when there are none.

use std::collections::HashMap;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::boxes::{crowd_iou, iou};
use crate::{Detection, GtBox};

/// Number of IoU thresholds, 0.50 to 0.95 by 0.05.
const T: usize = 10;
/// Number of recall points, 0.00 to 1.00 by 0.01.
const R: usize = 101;
/// Number of area ranges: all, small, medium, large.
const A: usize = 4;
/// Number of detection caps.
const M: usize = 3;

/// Index of IoU 0.75 in [`iou_thresholds`].
const T75: usize = 5;
/// Index of the 100-detection cap in [`MAX_DETS`].
const M100: usize = 2;

/// Area ranges `[lo, hi]` (inclusive, in pixels²) for all, small, medium and
/// large objects. The upper bound is pycocotools' `1e5 ** 2`.
pub const AREA_RANGES: [(f64, f64); A] = [
    (0.0, 1e10),
    (0.0, 32.0 * 32.0),
    (32.0 * 32.0, 96.0 * 96.0),
    (96.0 * 96.0, 1e10),
];

/// Detection caps per image for the AR numbers; the last one also bounds
/// every AP number.
pub const MAX_DETS: [usize; M] = [1, 10, 100];

/// The mask of all ten thresholds in a per-detection bit set.
const ALL_T: u16 = (1 << T) - 1;

/// `np.linspace(start, stop, num)` with the same arithmetic as NumPy
/// (`i * step + start`, last value exactly `stop`), so that comparisons
/// against these thresholds agree bit for bit.
fn linspace<const N: usize>(start: f64, stop: f64) -> [f64; N] {
    let step = (stop - start) / (N - 1) as f64;
    let mut out = [0.0; N];
    for (i, v) in out.iter_mut().enumerate() {
        *v = i as f64 * step + start;
    }
    out[N - 1] = stop;
    out
}

/// The IoU thresholds 0.50, 0.55, ..., 0.95 exactly as pycocotools builds
/// them (`0.8999999999999999` included).
pub fn iou_thresholds() -> [f64; T] {
    linspace(0.5, 0.95)
}

/// The recall points 0.00, 0.01, ..., 1.00 exactly as pycocotools builds
/// them.
pub fn recall_thresholds() -> [f64; R] {
    linspace(0.0, 1.0)
}

/// The twelve numbers of pycocotools' `COCOeval.summarize()` for boxes.
///
/// A number that is undefined (no ground truth anywhere it looks) is -1, as
/// in pycocotools, so that these can be compared with Python output as is.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CocoSummary {
    /// AP at IoU 0.50:0.95, all areas, 100 detections.
    pub ap: f64,
    /// AP at IoU 0.50.
    pub ap50: f64,
    /// AP at IoU 0.75.
    pub ap75: f64,
    /// AP for small objects (area ≤ 32²).
    pub ap_small: f64,
    /// AP for medium objects (32² ≤ area ≤ 96²).
    pub ap_medium: f64,
    /// AP for large objects (area ≥ 96²).
    pub ap_large: f64,
    /// AR with 1 detection per image.
    pub ar1: f64,
    /// AR with 10 detections per image.
    pub ar10: f64,
    /// AR with 100 detections per image.
    pub ar100: f64,
    /// AR for small objects.
    pub ar_small: f64,
    /// AR for medium objects.
    pub ar_medium: f64,
    /// AR for large objects.
    pub ar_large: f64,
}

impl CocoSummary {
    /// The numbers in the order of pycocotools' `COCOeval.stats`.
    pub fn as_array(&self) -> [f64; 12] {
        [
            self.ap,
            self.ap50,
            self.ap75,
            self.ap_small,
            self.ap_medium,
            self.ap_large,
            self.ar1,
            self.ar10,
            self.ar100,
            self.ar_small,
            self.ar_medium,
            self.ar_large,
        ]
    }

    /// The inverse of [`CocoSummary::as_array`].
    pub fn from_array(s: [f64; 12]) -> Self {
        Self {
            ap: s[0],
            ap50: s[1],
            ap75: s[2],
            ap_small: s[3],
            ap_medium: s[4],
            ap_large: s[5],
            ar1: s[6],
            ar10: s[7],
            ar100: s[8],
            ar_small: s[9],
            ar_medium: s[10],
            ar_large: s[11],
        }
    }
}

/// One category's share of the summary (all areas, 100 detections), the
/// numbers detectron2 and mmdetection print per class. -1 when the category
/// has no non-crowd ground truth in the image set.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CocoCategoryStats {
    /// Category id.
    pub category: u32,
    /// AP at IoU 0.50:0.95.
    pub ap: f64,
    /// AP at IoU 0.50.
    pub ap50: f64,
    /// AP at IoU 0.75.
    pub ap75: f64,
    /// AR at IoU 0.50:0.95.
    pub ar100: f64,
}

/// The summary and its per-category breakdown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CocoEvaluation {
    /// The twelve COCO numbers.
    pub summary: CocoSummary,
    /// One entry per evaluated category, ascending by id.
    pub per_category: Vec<CocoCategoryStats>,
}

/// The twelve COCO box numbers, as pycocotools' `COCOeval` computes them.
///
/// `images` and `categories` play the part of the GT file's `images` and
/// `categories` lists: boxes and detections on other images or of other
/// categories are left out, as `COCOeval` leaves them out. Duplicates and
/// order in either list do not matter. Order in `dets` matters only between
/// detections of equal score on the same image and category.
pub fn coco_eval(
    images: &[u64],
    categories: &[u32],
    gts: &[GtBox],
    dets: &[Detection],
) -> CocoSummary {
    coco_evaluate(images, categories, gts, dets).summary
}

/// [`coco_eval`] with the per-category breakdown.
pub fn coco_evaluate(
    images: &[u64],
    categories: &[u32],
    gts: &[GtBox],
    dets: &[Detection],
) -> CocoEvaluation {
    let mut img_ids = images.to_vec();
    img_ids.sort_unstable();
    img_ids.dedup();
    let mut cat_ids = categories.to_vec();
    cat_ids.sort_unstable();
    cat_ids.dedup();

    let groups = group(&img_ids, &cat_ids, gts, dets);
    let thresholds = iou_thresholds();
    let evals: Vec<PairEval> = groups
        .par_iter()
        .map(|g| evaluate_pair(g, gts, dets, &thresholds))
        .collect();

    // Pairs are sorted by (category, image), so each category owns one
    // contiguous run of `evals`, already in image order.
    let mut runs = Vec::with_capacity(cat_ids.len());
    let mut start = 0;
    for k in 0..cat_ids.len() {
        let end = start + groups[start..].iter().take_while(|g| g.cat == k).count();
        runs.push(start..end);
        start = end;
    }
    let recall_points = recall_thresholds();
    let cells: Vec<CategoryCells> = runs
        .into_par_iter()
        .map(|run| accumulate(&evals[run], &recall_points))
        .collect();

    let summary = CocoSummary::from_array([
        mean_precision(&cells, 0, M100, 0..T),
        mean_precision(&cells, 0, M100, 0..1),
        mean_precision(&cells, 0, M100, T75..T75 + 1),
        mean_precision(&cells, 1, M100, 0..T),
        mean_precision(&cells, 2, M100, 0..T),
        mean_precision(&cells, 3, M100, 0..T),
        mean_recall(&cells, 0, 0),
        mean_recall(&cells, 0, 1),
        mean_recall(&cells, 0, M100),
        mean_recall(&cells, 1, M100),
        mean_recall(&cells, 2, M100),
        mean_recall(&cells, 3, M100),
    ]);
    let per_category = cat_ids
        .iter()
        .zip(&cells)
        .map(|(&category, c)| {
            let one = std::slice::from_ref(c);
            CocoCategoryStats {
                category,
                ap: mean_precision(one, 0, M100, 0..T),
                ap50: mean_precision(one, 0, M100, 0..1),
                ap75: mean_precision(one, 0, M100, T75..T75 + 1),
                ar100: mean_recall(one, 0, M100),
            }
        })
        .collect();
    CocoEvaluation {
        summary,
        per_category,
    }
}

/// The boxes and detections of one (image, category) pair, as indices into
/// the caller's slices in their original order.
struct Pair {
    cat: usize,
    img: usize,
    gts: Vec<usize>,
    dets: Vec<usize>,
}

/// Buckets the inputs by (category, image), dropping those outside the
/// evaluated sets. Only pairs with something in them exist: `COCOeval`'s
/// `evaluateImg` returns `None` for the others and `accumulate` skips them.
fn group(img_ids: &[u64], cat_ids: &[u32], gts: &[GtBox], dets: &[Detection]) -> Vec<Pair> {
    let img_index: HashMap<u64, usize> = img_ids.iter().enumerate().map(|(i, &v)| (v, i)).collect();
    let cat_index: HashMap<u32, usize> = cat_ids.iter().enumerate().map(|(i, &v)| (v, i)).collect();
    let mut slot: HashMap<(usize, usize), usize> = HashMap::with_capacity(img_ids.len());
    let mut pairs: Vec<Pair> = Vec::new();
    let mut pair_of = |image_id: u64, category: u32| -> Option<usize> {
        let img = *img_index.get(&image_id)?;
        let cat = *cat_index.get(&category)?;
        Some(*slot.entry((cat, img)).or_insert_with(|| {
            pairs.push(Pair {
                cat,
                img,
                gts: Vec::new(),
                dets: Vec::new(),
            });
            pairs.len() - 1
        }))
    };
    let mut gt_slots = Vec::with_capacity(gts.len());
    for g in gts {
        gt_slots.push(pair_of(g.image_id, g.category));
    }
    let mut det_slots = Vec::with_capacity(dets.len());
    for d in dets {
        det_slots.push(pair_of(d.image_id, d.category));
    }
    for (i, s) in gt_slots.into_iter().enumerate() {
        if let Some(s) = s {
            pairs[s].gts.push(i);
        }
    }
    for (i, s) in det_slots.into_iter().enumerate() {
        if let Some(s) = s {
            pairs[s].dets.push(i);
        }
    }
    pairs.sort_unstable_by_key(|p| (p.cat, p.img));
    pairs
}

/// One pair's matching for one area range.
struct AreaEval {
    /// Ground-truth boxes that count (not crowd, area in range).
    npig: usize,
    /// Bit `t` set: the detection matched a box at threshold `t`.
    matched: Vec<u16>,
    /// Bit `t` set: the detection is ignored at threshold `t`.
    ignored: Vec<u16>,
}

/// One pair's result, detections in descending score order.
struct PairEval {
    scores: Vec<f64>,
    areas: [AreaEval; A],
}

/// `COCOeval.computeIoU` and `evaluateImg` for one pair, all area ranges.
fn evaluate_pair(
    pair: &Pair,
    gts: &[GtBox],
    dets: &[Detection],
    thresholds: &[f64; T],
) -> PairEval {
    let mut order = pair.dets.clone();
    // `sort_by` is stable, like the mergesort pycocotools asks NumPy for.
    order.sort_by(|&a, &b| dets[b].score.total_cmp(&dets[a].score));
    order.truncate(MAX_DETS[M - 1]);
    let nd = order.len();
    let ng = pair.gts.len();

    let crowd: Vec<bool> = pair.gts.iter().map(|&g| gts[g].iscrowd).collect();
    let gt_area: Vec<f64> = pair.gts.iter().map(|&g| gts[g].coco_area()).collect();
    let mut ious = Vec::with_capacity(nd * ng);
    for &d in &order {
        let db = &dets[d].bbox;
        for &g in &pair.gts {
            let gt = &gts[g];
            ious.push(if gt.iscrowd {
                crowd_iou(db, &gt.bbox)
            } else {
                iou(db, &gt.bbox)
            });
        }
    }

    let mut ignore = vec![false; ng];
    let mut gt_order: Vec<usize> = Vec::with_capacity(ng);
    let mut taken = vec![false; ng];
    let areas = AREA_RANGES.map(|(lo, hi)| {
        for (i, ig) in ignore.iter_mut().enumerate() {
            *ig = crowd[i] || gt_area[i] < lo || gt_area[i] > hi;
        }
        gt_order.clear();
        gt_order.extend((0..ng).filter(|&i| !ignore[i]));
        let npig = gt_order.len();
        gt_order.extend((0..ng).filter(|&i| ignore[i]));

        let mut matched = vec![0u16; nd];
        let mut ignored = vec![0u16; nd];
        if ng > 0 {
            for (t, &thr) in thresholds.iter().enumerate() {
                let bit = 1u16 << t;
                taken.fill(false);
                for di in 0..nd {
                    let row = &ious[di * ng..(di + 1) * ng];
                    let mut best = thr.min(1.0 - 1e-10);
                    let mut m: Option<usize> = None;
                    for &gi in &gt_order {
                        if taken[gi] && !crowd[gi] {
                            continue;
                        }
                        // Ignored boxes come last: once a real match is
                        // held, none of them may replace it.
                        if m.is_some_and(|mi| !ignore[mi]) && ignore[gi] {
                            break;
                        }
                        if row[gi] < best {
                            continue;
                        }
                        best = row[gi];
                        m = Some(gi);
                    }
                    if let Some(mi) = m {
                        matched[di] |= bit;
                        if ignore[mi] {
                            ignored[di] |= bit;
                        }
                        taken[mi] = true;
                    }
                }
            }
        }
        // A detection that found nothing is not held against the model in a
        // size range it does not itself belong to.
        for (di, &d) in order.iter().enumerate() {
            let b = &dets[d].bbox;
            let area = b[2] * b[3];
            if area < lo || area > hi {
                ignored[di] |= !matched[di] & ALL_T;
            }
        }
        AreaEval {
            npig,
            matched,
            ignored,
        }
    });

    PairEval {
        scores: order.iter().map(|&d| dets[d].score).collect(),
        areas,
    }
}

/// One (area range, detection cap) cell of a category: `None` where
/// pycocotools leaves -1.
#[derive(Clone, Copy)]
struct Cell {
    /// Per threshold, the sum of the 101 interpolated precisions.
    precision_sum: [f64; T],
    /// Per threshold, the final recall.
    recall: [f64; T],
}

type CategoryCells = [[Option<Cell>; M]; A];

/// `COCOeval.accumulate` for one category, given its pairs in image order.
fn accumulate(pairs: &[PairEval], recall_points: &[f64; R]) -> CategoryCells {
    let mut cells: CategoryCells = [[None; M]; A];
    if pairs.is_empty() {
        return cells;
    }
    // (score, pair, rank within the pair). Sorting this list once serves
    // every cap: the stable order of a cap's subset is the subset of the
    // stable order of the whole.
    let mut pooled: Vec<(f64, u32, u32)> =
        Vec::with_capacity(pairs.iter().map(|p| p.scores.len()).sum());
    for (pi, p) in pairs.iter().enumerate() {
        for (rank, &s) in p.scores.iter().enumerate() {
            pooled.push((s, pi as u32, rank as u32));
        }
    }
    pooled.sort_by(|a, b| b.0.total_cmp(&a.0));

    let mut flags: Vec<(u16, u16)> = Vec::with_capacity(pooled.len());
    let mut rc: Vec<f64> = Vec::with_capacity(pooled.len());
    let mut pr: Vec<f64> = Vec::with_capacity(pooled.len());
    for (a, row) in cells.iter_mut().enumerate() {
        let npig: usize = pairs.iter().map(|p| p.areas[a].npig).sum();
        if npig == 0 {
            continue;
        }
        let npig = npig as f64;
        for (m, cell) in row.iter_mut().enumerate() {
            let cap = MAX_DETS[m] as u32;
            flags.clear();
            flags.extend(pooled.iter().filter(|e| e.2 < cap).map(|&(_, pi, rank)| {
                let ae = &pairs[pi as usize].areas[a];
                (ae.matched[rank as usize], ae.ignored[rank as usize])
            }));
            let mut out = Cell {
                precision_sum: [0.0; T],
                recall: [0.0; T],
            };
            for t in 0..T {
                let bit = 1u16 << t;
                rc.clear();
                pr.clear();
                let (mut tp, mut fp) = (0u64, 0u64);
                for &(matched, ignored) in &flags {
                    if ignored & bit == 0 {
                        if matched & bit != 0 {
                            tp += 1;
                        } else {
                            fp += 1;
                        }
                    }
                    // Ignored detections still take a place in the curve,
                    // repeating the previous point, as in pycocotools.
                    let (tpf, fpf) = (tp as f64, fp as f64);
                    rc.push(tpf / npig);
                    pr.push(tpf / (fpf + tpf + f64::EPSILON));
                }
                out.recall[t] = rc.last().copied().unwrap_or(0.0);
                for i in (1..pr.len()).rev() {
                    if pr[i] > pr[i - 1] {
                        pr[i - 1] = pr[i];
                    }
                }
                // np.searchsorted(rc, recall_points, side="left"): the
                // first index whose recall reaches the point; points beyond
                // the last recall read precision 0.
                let mut i = 0;
                let mut sum = 0.0;
                for &r in recall_points {
                    while i < rc.len() && rc[i] < r {
                        i += 1;
                    }
                    if i == rc.len() {
                        break;
                    }
                    sum += pr[i];
                }
                out.precision_sum[t] = sum;
            }
            *cell = Some(out);
        }
    }
    cells
}

/// Mean interpolated precision over the given thresholds, all recall points
/// and every category where it is defined; -1 when it is nowhere defined.
fn mean_precision(cells: &[CategoryCells], a: usize, m: usize, ts: std::ops::Range<usize>) -> f64 {
    let mut sum = 0.0;
    let mut n = 0usize;
    for c in cells.iter().filter_map(|c| c[a][m].as_ref()) {
        for t in ts.clone() {
            sum += c.precision_sum[t];
            n += R;
        }
    }
    if n == 0 { -1.0 } else { sum / n as f64 }
}

/// Mean recall over all thresholds and every category where it is defined;
/// -1 when it is nowhere defined.
fn mean_recall(cells: &[CategoryCells], a: usize, m: usize) -> f64 {
    let mut sum = 0.0;
    let mut n = 0usize;
    for c in cells.iter().filter_map(|c| c[a][m].as_ref()) {
        sum += c.recall.iter().sum::<f64>();
        n += T;
    }
    if n == 0 { -1.0 } else { sum / n as f64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gt(image_id: u64, category: u32, bbox: [f64; 4]) -> GtBox {
        GtBox {
            image_id,
            category,
            bbox,
            area: None,
            iscrowd: false,
            difficult: false,
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

    /// Precision carries pycocotools' `np.spacing(1)` in its denominator, so
    /// a perfect score is 1 - 2⁻⁵², not 1.
    fn approx(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn thresholds_match_numpy_linspace() {
        let t = iou_thresholds();
        assert_eq!(t[0], 0.5);
        assert_eq!(t[T75], 0.75);
        assert_eq!(t[8], 0.8999999999999999);
        assert_eq!(t[9], 0.95);
        let r = recall_thresholds();
        assert_eq!(r[30], 0.3);
        assert_eq!(r[100], 1.0);
    }

    #[test]
    fn perfect_detections_score_one() {
        let gts = [
            gt(1, 1, [0.0, 0.0, 50.0, 50.0]),
            gt(2, 1, [10.0, 10.0, 20.0, 20.0]),
        ];
        let dets = [
            det(1, 1, [0.0, 0.0, 50.0, 50.0], 0.9),
            det(2, 1, [10.0, 10.0, 20.0, 20.0], 0.8),
        ];
        let s = coco_eval(&[1, 2], &[1], &gts, &dets);
        assert!(approx(s.ap, 1.0));
        assert_eq!(s.ar1, 1.0);
        // Both boxes are medium or small; no large ground truth at all.
        assert_eq!(s.ap_large, -1.0);
        assert_eq!(s.ar_large, -1.0);
        assert!(approx(s.ap_small, 1.0));
        assert!(approx(s.ap_medium, 1.0));
    }

    #[test]
    fn no_ground_truth_is_undefined() {
        let dets = [det(1, 1, [0.0, 0.0, 5.0, 5.0], 0.9)];
        let s = coco_eval(&[1], &[1], &[], &dets);
        assert_eq!(s.as_array(), [-1.0; 12]);
    }

    #[test]
    fn missed_category_counts_as_zero() {
        let gts = [
            gt(1, 1, [0.0, 0.0, 50.0, 50.0]),
            gt(1, 2, [0.0, 0.0, 50.0, 50.0]),
        ];
        let dets = [det(1, 1, [0.0, 0.0, 50.0, 50.0], 0.9)];
        let e = coco_evaluate(&[1], &[1, 2], &gts, &dets);
        assert!(approx(e.summary.ap, 0.5));
        assert!(approx(e.per_category[0].ap, 1.0));
        assert_eq!(e.per_category[1].ap, 0.0);
        assert_eq!(e.per_category[1].ar100, 0.0);
    }

    #[test]
    fn detections_inside_a_crowd_are_ignored() {
        let mut crowd = gt(1, 1, [0.0, 0.0, 100.0, 100.0]);
        crowd.iscrowd = true;
        let gts = [gt(1, 1, [200.0, 200.0, 20.0, 20.0]), crowd];
        // The crowd hits outrank the true hit; were they false positives the
        // AP would drop below 1.
        let dets = [
            det(1, 1, [10.0, 10.0, 10.0, 10.0], 0.99),
            det(1, 1, [50.0, 50.0, 10.0, 10.0], 0.98),
            det(1, 1, [200.0, 200.0, 20.0, 20.0], 0.5),
        ];
        let s = coco_eval(&[1], &[1], &gts, &dets);
        assert!(approx(s.ap, 1.0));
        assert_eq!(s.ar100, 1.0);
    }

    #[test]
    fn max_dets_caps_recall() {
        // Two objects on one image: one detection per image finds half.
        let gts = [
            gt(1, 1, [0.0, 0.0, 40.0, 40.0]),
            gt(1, 1, [100.0, 100.0, 40.0, 40.0]),
        ];
        let dets = [
            det(1, 1, [0.0, 0.0, 40.0, 40.0], 0.9),
            det(1, 1, [100.0, 100.0, 40.0, 40.0], 0.8),
        ];
        let s = coco_eval(&[1], &[1], &gts, &dets);
        assert_eq!(s.ar1, 0.5);
        assert_eq!(s.ar10, 1.0);
    }
}
