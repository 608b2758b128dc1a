//! Weighted box fusion (Solovyev, Wang and Gabruseva, "Weighted boxes fusion: ensembling
//! boxes from different object detection models", 2021), as the authors' `ensemble_boxes`
//! package computes it with `conf_type="avg"`: boxes of several models (or of one model on
//! several views of an image) that overlap are averaged into one, instead of all but one being
//! suppressed as NMS does.

use crate::boxes::{Box4, iou};
use crate::postprocess::ScoredBox;

/// One box in a cluster, with its score times its model's weight.
#[derive(Debug, Clone, Copy)]
struct Member {
    bbox: Box4,
    weighted_score: f32,
}

/// A cluster of boxes and the fused box that stands for it.
struct Cluster {
    members: Vec<Member>,
    fused: Box4,
    score: f32,
}

impl Cluster {
    fn new(m: Member) -> Self {
        Cluster {
            fused: m.bbox,
            score: m.weighted_score,
            members: vec![m],
        }
    }

    /// Adds a box and recomputes the fused box: coordinates averaged with the scores as
    /// weights, the score the members' mean.
    fn add(&mut self, m: Member) {
        self.members.push(m);
        let total: f32 = self.members.iter().map(|m| m.weighted_score).sum();
        let mut fused = [0f32; 4];
        for m in &self.members {
            for (f, v) in fused.iter_mut().zip(m.bbox) {
                *f += m.weighted_score * v;
            }
        }
        if total > 0.0 {
            for f in &mut fused {
                *f /= total;
            }
        } else {
            fused = self.members[0].bbox;
        }
        self.fused = fused;
        self.score = total / self.members.len() as f32;
    }
}

/// Fuses the boxes of several models: `models[i]` are model `i`'s boxes of one image, weighed
/// by `weights[i]`. Per class, boxes are taken in falling order of weighted score and each joins
/// the fused box it overlaps most if that IoU exceeds `iou_threshold`, else starts its own;
/// a fused box's score is its members' mean weighted score, times
/// `min(models, members) / sum of weights`, so a box few models found scores lower. Returns
/// the fused boxes, best first.
pub fn weighted_box_fusion(
    models: &[Vec<ScoredBox>],
    weights: &[f32],
    iou_threshold: f32,
) -> Vec<ScoredBox> {
    let total_weight: f32 = weights.iter().take(models.len()).sum();
    let mut by_class: std::collections::BTreeMap<usize, Vec<Member>> = Default::default();
    for (boxes, &w) in models.iter().zip(weights) {
        for b in boxes {
            by_class.entry(b.class).or_default().push(Member {
                bbox: b.bbox,
                weighted_score: b.score * w,
            });
        }
    }
    let mut out = Vec::new();
    for (class, mut members) in by_class {
        // Stable, so equal scores keep model order, as the reference's sort does.
        members.sort_by(|a, b| b.weighted_score.total_cmp(&a.weighted_score));
        let mut clusters: Vec<Cluster> = Vec::new();
        for m in members {
            let best = clusters
                .iter()
                .enumerate()
                .map(|(i, c)| (i, iou(&c.fused, &m.bbox)))
                .filter(|&(_, v)| v > iou_threshold)
                .max_by(|a, b| a.1.total_cmp(&b.1));
            match best {
                Some((i, _)) => clusters[i].add(m),
                None => clusters.push(Cluster::new(m)),
            }
        }
        for c in clusters {
            let n = c.members.len().min(models.len()) as f32;
            out.push(ScoredBox {
                bbox: c.fused,
                score: if total_weight > 0.0 {
                    c.score * n / total_weight
                } else {
                    0.0
                },
                class,
            });
        }
    }
    out.sort_by(|a, b| b.score.total_cmp(&a.score));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(bbox: Box4, score: f32, class: usize) -> ScoredBox {
        ScoredBox { bbox, score, class }
    }

    #[test]
    fn one_model_alone_is_unchanged_but_for_overlaps() {
        let boxes = vec![
            b([0.0, 0.0, 10.0, 10.0], 0.9, 0),
            b([20.0, 20.0, 30.0, 30.0], 0.5, 0),
        ];
        let fused = weighted_box_fusion(std::slice::from_ref(&boxes), &[1.0], 0.55);
        assert_eq!(fused, boxes);
    }

    #[test]
    fn matches_ensemble_boxes_reference() {
        // ensemble_boxes 1.0.9, weighted_boxes_fusion(..., weights=[2, 1], iou_thr=0.55,
        // skip_box_thr=0.0), coordinates divided by 100 there:
        // model 0: [10,10,50,50] 0.9 class 0, [60,60,90,90] 0.4 class 1
        // model 1: [12,8,52,50] 0.8 class 0, [10,10,50,50] 0.3 class 1
        let models = vec![
            vec![
                b([10.0, 10.0, 50.0, 50.0], 0.9, 0),
                b([60.0, 60.0, 90.0, 90.0], 0.4, 1),
            ],
            vec![
                b([12.0, 8.0, 52.0, 50.0], 0.8, 0),
                b([10.0, 10.0, 50.0, 50.0], 0.3, 1),
            ],
        ];
        let fused = weighted_box_fusion(&models, &[2.0, 1.0], 0.55);
        // Class 0: members 1.8 and 0.8 weighted; box = (1.8 a + 0.8 b) / 2.6; score =
        // (2.6 / 2) * min(2, 2) / 3.
        let x0 = (1.8 * 10.0 + 0.8 * 12.0) / 2.6;
        let y0 = (1.8 * 10.0 + 0.8 * 8.0) / 2.6;
        let x1 = (1.8 * 50.0 + 0.8 * 52.0) / 2.6;
        assert_eq!(fused.len(), 3);
        assert_eq!(fused[0].class, 0);
        assert!((fused[0].score - 2.6 / 2.0 * 2.0 / 3.0).abs() < 1e-6);
        for (got, want) in fused[0].bbox.iter().zip([x0, y0, x1, 50.0]) {
            assert!((got - want).abs() < 1e-4, "{:?}", fused[0].bbox);
        }
        // Class 1: two lone boxes, 0.8 * 1 / 3 and 0.3 * 1 / 3.
        assert_eq!(fused[1].class, 1);
        assert!((fused[1].score - 0.8 / 3.0).abs() < 1e-6);
        assert!((fused[2].score - 0.3 / 3.0).abs() < 1e-6);
    }

    #[test]
    fn boxes_of_different_classes_never_fuse() {
        let models = vec![
            vec![b([0.0, 0.0, 10.0, 10.0], 0.9, 0)],
            vec![b([0.0, 0.0, 10.0, 10.0], 0.9, 1)],
        ];
        assert_eq!(weighted_box_fusion(&models, &[1.0, 1.0], 0.55).len(), 2);
    }
}
