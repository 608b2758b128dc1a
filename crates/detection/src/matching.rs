//! Assigning anchors to ground-truth boxes.

use crate::boxes::{Box4, iou};

/// What an anchor learns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assignment {
    /// Background: no object.
    Background,
    /// Between the thresholds: the classification loss skips it.
    Ignore,
    /// The object at this index in the ground truth.
    Object(usize),
}

/// IoU thresholds for [`match_anchors`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MatchConfig {
    /// An anchor whose best IoU reaches this is positive.
    pub positive_iou: f32,
    /// An anchor whose best IoU is below this is background; between the two it is ignored.
    pub negative_iou: f32,
    /// Also make each object's best anchors positive, however low their IoU, so that no object
    /// goes unlearned (Faster R-CNN's "low-quality matches", SSD's bipartite step).
    pub low_quality: bool,
}

impl MatchConfig {
    /// RetinaNet's thresholds: positive from 0.5, background below 0.4.
    pub const RETINANET: MatchConfig = MatchConfig {
        positive_iou: 0.5,
        negative_iou: 0.4,
        low_quality: true,
    };
    /// SSD's: positive from 0.5, background otherwise.
    pub const SSD: MatchConfig = MatchConfig {
        positive_iou: 0.5,
        negative_iou: 0.5,
        low_quality: true,
    };
}

/// Assigns every anchor to its best-overlapping object, background, or neither.
pub fn match_anchors(anchors: &[Box4], objects: &[Box4], cfg: &MatchConfig) -> Vec<Assignment> {
    if objects.is_empty() {
        return vec![Assignment::Background; anchors.len()];
    }
    let mut best = vec![(0f32, 0usize); anchors.len()];
    let mut best_per_object = vec![0f32; objects.len()];
    for (g, object) in objects.iter().enumerate() {
        for (a, anchor) in anchors.iter().enumerate() {
            // Cheap rejection: most anchors are far from any one object.
            if anchor[0] >= object[2]
                || anchor[2] <= object[0]
                || anchor[1] >= object[3]
                || anchor[3] <= object[1]
            {
                continue;
            }
            let v = iou(anchor, object);
            if v > best[a].0 {
                best[a] = (v, g);
            }
            if v > best_per_object[g] {
                best_per_object[g] = v;
            }
        }
    }
    let mut out: Vec<Assignment> = best
        .iter()
        .map(|&(v, g)| {
            if v >= cfg.positive_iou {
                Assignment::Object(g)
            } else if v < cfg.negative_iou {
                Assignment::Background
            } else {
                Assignment::Ignore
            }
        })
        .collect();
    if cfg.low_quality {
        for (g, object) in objects.iter().enumerate() {
            let top = best_per_object[g];
            if top <= 0.0 {
                continue;
            }
            for (a, anchor) in anchors.iter().enumerate() {
                if iou(anchor, object) >= top {
                    // Torchvision keeps the anchor's own best object, which is `g` unless the
                    // anchor overlaps another object even more.
                    out[a] = Assignment::Object(best[a].1);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_and_low_quality_matches() {
        let anchors = [
            [0.0, 0.0, 10.0, 10.0],
            [0.0, 0.0, 10.0, 14.0],
            [5.0, 0.0, 15.0, 10.0],
            [50.0, 50.0, 60.0, 60.0],
        ];
        let objects = [[0.0, 0.0, 10.0, 10.0], [40.0, 40.0, 60.0, 60.0]];
        let cfg = MatchConfig {
            low_quality: false,
            ..MatchConfig::RETINANET
        };
        let m = match_anchors(&anchors, &objects, &cfg);
        // IoU 1, 10/14 = 0.71, 50/150 = 0.33, and 0.25 with the second object.
        assert_eq!(
            m,
            vec![
                Assignment::Object(0),
                Assignment::Object(0),
                Assignment::Background,
                Assignment::Background
            ]
        );
        let m = match_anchors(&anchors, &objects, &MatchConfig::RETINANET);
        // The second object's best anchor becomes positive.
        assert_eq!(m[3], Assignment::Object(1));
        let ignore = match_anchors(&[[0.0, 0.0, 10.0, 10.0]], &[[0.0, 0.0, 10.0, 22.0]], &cfg);
        assert_eq!(ignore, vec![Assignment::Ignore]);
        assert_eq!(
            match_anchors(&anchors, &[], &cfg),
            vec![Assignment::Background; 4]
        );
    }
}
