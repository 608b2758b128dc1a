//! Faster R-CNN's host-side steps, pure functions of boxes and scores: which anchors the
//! region proposal network learns from, the proposals it makes, which regions the box head
//! learns from, and the pyramid level a region is pooled from. Unit-tested on hand-computed
//! cases.

use autodl_detection::{Assignment, Box4, BoxCoder, MatchConfig, batched_nms, iou, match_anchors};
use rand::Rng;
use rand::seq::index::sample;

/// The region proposal network's matching (the paper's): positive from IoU 0.7, background
/// below 0.3, and each object's best anchors positive however low their IoU.
pub const RPN_MATCH: MatchConfig = MatchConfig {
    positive_iou: 0.7,
    negative_iou: 0.3,
    low_quality: true,
};

/// Anchors sampled per image for the region proposal network's loss (the paper's 256).
pub const RPN_BATCH: usize = 256;

/// Largest share of positives among the sampled anchors.
pub const RPN_POSITIVE_FRACTION: f32 = 0.5;

/// A region is foreground for the box head from this IoU with an object, background below.
pub const FOREGROUND_IOU: f32 = 0.5;

/// Largest share of foreground among the sampled regions (the paper's 25 %).
pub const FOREGROUND_FRACTION: f32 = 0.25;

/// Proposals narrower or shorter than this many pixels are dropped.
pub const MIN_PROPOSAL_SIDE: f32 = 1.0;

/// The region proposal network's NMS IoU (the paper's).
pub const PROPOSAL_NMS_IOU: f32 = 0.7;

/// The region proposal network's box coding: plain deltas.
pub const RPN_CODER: BoxCoder = BoxCoder { weights: [1.0; 4] };

/// The box head's box coding (Fast R-CNN's standard deviations 0.1, 0.1, 0.2, 0.2).
pub const ROI_CODER: BoxCoder = BoxCoder {
    weights: [10.0, 10.0, 5.0, 5.0],
};

/// The pyramid level (an index into the strides 8, 16, 32) a region of this side is pooled
/// from in the FPN paper, `k = floor(k0 + log2(sqrt(wh) / 224))` with `k0 = 4`, is for 800 px
/// images; ours are 256 px tiles with smaller objects, so the canonical side that lands on
/// stride 16 is 64 px: regions under 64 px are pooled at stride 8, up to 128 px at stride 16,
/// larger ones at stride 32.
pub const CANONICAL_SIDE: f32 = 64.0;

/// The pyramid level of the canonical side (`k0`), counting stride 8 as level 3.
const CANONICAL_LEVEL: f32 = 4.0;

/// The finest and coarsest level regions are pooled from (strides 8 and 32).
const POOLED_LEVELS: (f32, f32) = (3.0, 5.0);

/// The index of the level (0 for stride 8, 1 for 16, 2 for 32) that `b` is pooled from.
pub fn roi_level(b: &Box4) -> usize {
    let side = ((b[2] - b[0]).max(0.0) * (b[3] - b[1]).max(0.0)).sqrt();
    // The small epsilon keeps an exact power of two on its own level, as torchvision does.
    let k = (CANONICAL_LEVEL + (side / CANONICAL_SIDE + 1e-6).log2()).floor();
    (k.clamp(POOLED_LEVELS.0, POOLED_LEVELS.1) - POOLED_LEVELS.0) as usize
}

/// The anchors the region proposal network learns from in one image: `(positives,
/// negatives)` as anchor indices with, for each positive, its object. At most
/// `per_image * positive_fraction` positives are drawn at random from the matched anchors,
/// and negatives fill the rest of `per_image`.
pub fn sample_anchors(
    assignments: &[Assignment],
    per_image: usize,
    positive_fraction: f32,
    rng: &mut impl Rng,
) -> (Vec<(usize, usize)>, Vec<usize>) {
    let mut positives = Vec::new();
    let mut negatives = Vec::new();
    for (a, assignment) in assignments.iter().enumerate() {
        match *assignment {
            Assignment::Object(g) => positives.push((a, g)),
            Assignment::Background => negatives.push(a),
            Assignment::Ignore => {}
        }
    }
    let most = (per_image as f32 * positive_fraction) as usize;
    let positives = draw(positives, most, rng);
    let negatives = draw(negatives, per_image - positives.len(), rng);
    (positives, negatives)
}

/// Up to `n` of `items` drawn at random without replacement, in their original order.
fn draw<T: Copy>(items: Vec<T>, n: usize, rng: &mut impl Rng) -> Vec<T> {
    if items.len() <= n {
        return items;
    }
    let mut picked = sample(rng, items.len(), n).into_vec();
    picked.sort_unstable();
    picked.into_iter().map(|i| items[i]).collect()
}

/// A region the box head learns from: its box and the object it is foreground for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampledRoi {
    /// The region in image pixels.
    pub bbox: Box4,
    /// Index of the object it overlaps by [`FOREGROUND_IOU`] or more, or `None` for
    /// background.
    pub object: Option<usize>,
}

/// The regions the box head learns from in one image: the proposals and the objects
/// themselves (so that every object has foreground regions from the first step), each
/// foreground for its best-overlapping object from `FOREGROUND_IOU`, else background; at most
/// `per_image * fg_fraction` foreground drawn at random, background filling the rest of
/// `per_image`. Foreground comes first.
pub fn sample_rois(
    proposals: &[Box4],
    objects: &[Box4],
    per_image: usize,
    fg_fraction: f32,
    rng: &mut impl Rng,
) -> Vec<SampledRoi> {
    let mut fg = Vec::new();
    let mut bg = Vec::new();
    for b in proposals.iter().chain(objects) {
        let best = objects
            .iter()
            .enumerate()
            .map(|(g, o)| (iou(b, o), g))
            .max_by(|x, y| x.0.total_cmp(&y.0).then(y.1.cmp(&x.1)));
        match best {
            Some((v, g)) if v >= FOREGROUND_IOU => fg.push(SampledRoi {
                bbox: *b,
                object: Some(g),
            }),
            _ => bg.push(SampledRoi {
                bbox: *b,
                object: None,
            }),
        }
    }
    let most = (per_image as f32 * fg_fraction) as usize;
    let mut out = draw(fg, most, rng);
    let rest = per_image - out.len();
    out.extend(draw(bg, rest, rng));
    out
}

/// Which proposals to keep, before and after NMS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopN {
    /// Best anchors per level decoded before NMS.
    pub pre_nms: usize,
    /// Proposals kept per image after NMS.
    pub post_nms: usize,
}

/// The region proposal network's proposals for one image, best first, with their objectness
/// logits: per level (`levels` are ranges of anchor indices), the `top.pre_nms` anchors with
/// the highest objectness are decoded from their `deltas` (4 per anchor), clipped to `size`
/// (width, height) and dropped when under [`MIN_PROPOSAL_SIDE`]; NMS at
/// [`PROPOSAL_NMS_IOU`] within each level then keeps at most `top.post_nms` over all levels.
pub fn proposals(
    objectness: &[f32],
    deltas: &[f32],
    anchors: &[Box4],
    levels: &[std::ops::Range<usize>],
    size: (f32, f32),
    top: TopN,
) -> Vec<(Box4, f32)> {
    let mut boxes = Vec::new();
    let mut scores = Vec::new();
    let mut level_of = Vec::new();
    for (l, range) in levels.iter().enumerate() {
        let mut order: Vec<usize> = range.clone().collect();
        if order.len() > top.pre_nms {
            order.select_nth_unstable_by(top.pre_nms, |&a, &b| {
                objectness[b].total_cmp(&objectness[a]).then(a.cmp(&b))
            });
            order.truncate(top.pre_nms);
        }
        for a in order {
            let d = [
                deltas[4 * a],
                deltas[4 * a + 1],
                deltas[4 * a + 2],
                deltas[4 * a + 3],
            ];
            let b = RPN_CODER.decode(&anchors[a], &d);
            let b = [
                b[0].clamp(0.0, size.0),
                b[1].clamp(0.0, size.1),
                b[2].clamp(0.0, size.0),
                b[3].clamp(0.0, size.1),
            ];
            if b[2] - b[0] < MIN_PROPOSAL_SIDE
                || b[3] - b[1] < MIN_PROPOSAL_SIDE
                || !objectness[a].is_finite()
            {
                continue;
            }
            boxes.push(b);
            scores.push(objectness[a]);
            level_of.push(l);
        }
    }
    batched_nms(&boxes, &scores, &level_of, PROPOSAL_NMS_IOU)
        .into_iter()
        .take(top.post_nms)
        .map(|i| (boxes[i], scores[i]))
        .collect()
}

/// The share of `objects` that some box of `found` overlaps by IoU 0.5 or more (the region
/// proposal network's recall), as `(found, total)`.
pub fn recall(found: &[Box4], objects: &[Box4]) -> (usize, usize) {
    let hit = objects
        .iter()
        .filter(|o| found.iter().any(|b| iou(b, o) >= 0.5))
        .count();
    (hit, objects.len())
}

/// The anchor assignment of the region proposal network for one image.
pub fn match_rpn(anchors: &[Box4], objects: &[Box4]) -> Vec<Assignment> {
    match_anchors(anchors, objects, &RPN_MATCH)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn levels_follow_the_adapted_fpn_formula() {
        // Under 64 px at stride 8; 64 up to 128 at stride 16; 128 and more at stride 32.
        assert_eq!(roi_level(&[0.0, 0.0, 16.0, 16.0]), 0);
        assert_eq!(roi_level(&[0.0, 0.0, 63.0, 63.0]), 0);
        assert_eq!(roi_level(&[0.0, 0.0, 64.0, 64.0]), 1);
        // 32 x 128 has the side of a 64 px square.
        assert_eq!(roi_level(&[0.0, 0.0, 32.0, 128.0]), 1);
        assert_eq!(roi_level(&[0.0, 0.0, 127.0, 127.0]), 1);
        assert_eq!(roi_level(&[10.0, 10.0, 138.0, 138.0]), 2);
        assert_eq!(roi_level(&[0.0, 0.0, 1000.0, 1000.0]), 2);
        assert_eq!(roi_level(&[5.0, 5.0, 5.0, 5.0]), 0);
    }

    #[test]
    fn rpn_matching_uses_the_papers_thresholds() {
        let object = [0.0, 0.0, 10.0, 10.0];
        let anchors = [
            // IoU 1: positive.
            [0.0, 0.0, 10.0, 10.0],
            // IoU 80 / 100 = 0.8: positive.
            [0.0, 0.0, 10.0, 8.0],
            // IoU 50 / 100 = 0.5: ignored.
            [0.0, 0.0, 10.0, 5.0],
            // IoU 20 / 100 = 0.2: background.
            [0.0, 0.0, 10.0, 2.0],
            // No overlap: background.
            [20.0, 20.0, 30.0, 30.0],
        ];
        assert_eq!(
            match_rpn(&anchors, &[object]),
            vec![
                Assignment::Object(0),
                Assignment::Object(0),
                Assignment::Ignore,
                Assignment::Background,
                Assignment::Background
            ]
        );
        // An object whose best anchor overlaps by 0.25 only still gets that anchor.
        let small = [0.0, 0.0, 5.0, 5.0];
        let out = match_rpn(&anchors[..1], &[small]);
        assert_eq!(out, vec![Assignment::Object(0)]);
    }

    #[test]
    fn anchor_sampling_caps_positives_at_half() {
        let mut rng = StdRng::seed_from_u64(1);
        // 3 positives, 1 ignored, 10 negatives; 8 sampled: 3 positives and 5 negatives.
        let mut a = vec![Assignment::Object(0); 3];
        a.push(Assignment::Ignore);
        a.extend(vec![Assignment::Background; 10]);
        let (pos, neg) = sample_anchors(&a, 8, 0.5, &mut rng);
        assert_eq!(pos, vec![(0, 0), (1, 0), (2, 0)]);
        assert_eq!(neg.len(), 5);
        assert!(neg.iter().all(|&i| i >= 4));
        // 4 sampled: at most 2 positives, 2 negatives.
        let (pos, neg) = sample_anchors(&a, 4, 0.5, &mut rng);
        assert_eq!((pos.len(), neg.len()), (2, 2));
        // Too few negatives: all of them.
        let (pos, neg) = sample_anchors(&a[..6], 256, 0.5, &mut rng);
        assert_eq!((pos.len(), neg.len()), (3, 2));
    }

    #[test]
    fn roi_sampling_adds_the_objects_and_caps_foreground() {
        let mut rng = StdRng::seed_from_u64(2);
        let objects = [[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]];
        let proposals = [
            // IoU 0.8 with object 0: foreground.
            [0.0, 0.0, 10.0, 8.0],
            // IoU 0.4 with object 0: background.
            [0.0, 0.0, 10.0, 4.0],
            // No overlap: background.
            [40.0, 40.0, 50.0, 50.0],
        ];
        let out = sample_rois(&proposals, &objects, 16, 0.25, &mut rng);
        assert_eq!(
            out,
            vec![
                SampledRoi {
                    bbox: proposals[0],
                    object: Some(0)
                },
                SampledRoi {
                    bbox: objects[0],
                    object: Some(0)
                },
                SampledRoi {
                    bbox: objects[1],
                    object: Some(1)
                },
                SampledRoi {
                    bbox: proposals[1],
                    object: None
                },
                SampledRoi {
                    bbox: proposals[2],
                    object: None
                },
            ]
        );
        // 4 sampled: one foreground (25 %), three background.
        let out = sample_rois(&proposals, &objects, 4, 0.25, &mut rng);
        assert_eq!(out.len(), 3);
        assert_eq!(out.iter().filter(|r| r.object.is_some()).count(), 1);
        // No objects: all background.
        let out = sample_rois(&proposals, &[], 16, 0.25, &mut rng);
        assert!(out.iter().all(|r| r.object.is_none()) && out.len() == 3);
    }

    #[test]
    fn proposals_are_topped_clipped_and_suppressed() {
        let anchors = [
            [0.0, 0.0, 10.0, 10.0],
            [1.0, 0.0, 11.0, 10.0],
            [30.0, 30.0, 40.0, 40.0],
            [-5.0, -5.0, 5.0, 5.0],
            [30.0, 30.0, 30.5, 40.0],
        ];
        let objectness = [3.0, 2.0, 1.0, 0.5, 4.0];
        let deltas = [0.0; 20];
        let levels = [0..3, 3..5];
        let top = TopN {
            pre_nms: 10,
            post_nms: 10,
        };
        let out = proposals(&objectness, &deltas, &anchors, &levels, (35.0, 35.0), top);
        // Anchor 1 overlaps anchor 0 by IoU 0.82 > 0.7 and is suppressed; anchor 2 is
        // clipped to (30, 30)-(35, 35); anchor 3 to (0, 0)-(5, 5); anchor 4 is too narrow.
        let boxes: Vec<Box4> = out.iter().map(|p| p.0).collect();
        assert_eq!(
            boxes,
            vec![
                [0.0, 0.0, 10.0, 10.0],
                [30.0, 30.0, 35.0, 35.0],
                [0.0, 0.0, 5.0, 5.0]
            ]
        );
        // One per level before NMS: anchors 0 and 4 (dropped); then one after NMS.
        let top = TopN {
            pre_nms: 1,
            post_nms: 1,
        };
        let out = proposals(&objectness, &deltas, &anchors, &levels, (35.0, 35.0), top);
        assert_eq!(out, vec![([0.0, 0.0, 10.0, 10.0], 3.0)]);
    }

    #[test]
    fn recall_counts_objects_found_at_half_iou() {
        let objects = [[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]];
        let found = [[0.0, 0.0, 10.0, 6.0], [20.0, 20.0, 30.0, 24.0]];
        assert_eq!(recall(&found, &objects), (1, 2));
    }
}
