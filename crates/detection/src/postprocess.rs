//! From a detector's outputs to scored boxes.

use crate::boxes::{Box4, BoxCoder, batched_nms};

/// One detection.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoredBox {
    /// The box.
    pub bbox: Box4,
    /// Confidence in `[0, 1]`.
    pub score: f32,
    /// Class index (background excluded).
    pub class: usize,
}

/// Thresholds for [`postprocess`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PostprocessConfig {
    /// Scores below this are dropped before NMS.
    pub score_threshold: f32,
    /// Most candidates kept, by score, before NMS.
    pub pre_nms_top_k: usize,
    /// IoU above which NMS drops the lower-scoring box of a class.
    pub nms_iou: f32,
    /// Most detections per image.
    pub max_detections: usize,
}

impl Default for PostprocessConfig {
    fn default() -> Self {
        PostprocessConfig {
            score_threshold: 0.05,
            pre_nms_top_k: 1000,
            nms_iou: 0.5,
            max_detections: 300,
        }
    }
}

/// Detections of one image from per-anchor class probabilities (`anchors.len() * K`,
/// anchor-major) and deltas (`anchors.len() * 4`). With `background_first` the first of the
/// `K` columns is background (softmax heads) and class `k` is column `k + 1`; otherwise every
/// column is a class (sigmoid heads). Boxes are clipped to `width x height`; boxes narrower or
/// shorter than one pixel are dropped.
#[allow(clippy::too_many_arguments)]
pub fn postprocess(
    probs: &[f32],
    deltas: &[f32],
    anchors: &[Box4],
    k: usize,
    background_first: bool,
    coder: &BoxCoder,
    size: (f32, f32),
    cfg: &PostprocessConfig,
) -> Vec<ScoredBox> {
    let first = usize::from(background_first);
    let mut candidates: Vec<(f32, usize, usize)> = Vec::new();
    for (a, row) in probs.chunks(k.max(1)).enumerate().take(anchors.len()) {
        for (c, &p) in row.iter().enumerate().skip(first) {
            if p >= cfg.score_threshold {
                candidates.push((p, a, c - first));
            }
        }
    }
    if candidates.len() > cfg.pre_nms_top_k {
        candidates.select_nth_unstable_by(cfg.pre_nms_top_k, |x, y| {
            y.0.total_cmp(&x.0).then(x.1.cmp(&y.1))
        });
        candidates.truncate(cfg.pre_nms_top_k);
    }
    let decoded = candidates.iter().map(|&(p, a, c)| {
        let d = [
            deltas[4 * a],
            deltas[4 * a + 1],
            deltas[4 * a + 2],
            deltas[4 * a + 3],
        ];
        (coder.decode(&anchors[a], &d), p, c)
    });
    clip_and_nms(decoded, size, cfg)
}

/// The last step every detector's post-processing shares: each decoded `(box, score, class)`
/// clipped to the image region `size` (width, height), boxes under a pixel on a side dropped,
/// class-wise NMS at `cfg.nms_iou`, and the best `cfg.max_detections` kept, best first.
pub fn clip_and_nms(
    decoded: impl IntoIterator<Item = (Box4, f32, usize)>,
    size: (f32, f32),
    cfg: &PostprocessConfig,
) -> Vec<ScoredBox> {
    let mut boxes = Vec::new();
    let mut scores = Vec::new();
    let mut classes = Vec::new();
    for (b, score, class) in decoded {
        let b = [
            b[0].clamp(0.0, size.0),
            b[1].clamp(0.0, size.1),
            b[2].clamp(0.0, size.0),
            b[3].clamp(0.0, size.1),
        ];
        if b[2] - b[0] < 1.0 || b[3] - b[1] < 1.0 {
            continue;
        }
        boxes.push(b);
        scores.push(score);
        classes.push(class);
    }
    batched_nms(&boxes, &scores, &classes, cfg.nms_iou)
        .into_iter()
        .take(cfg.max_detections)
        .map(|i| ScoredBox {
            bbox: boxes[i],
            score: scores[i],
            class: classes[i],
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_thresholds_and_suppresses() {
        let anchors = [
            [0.0, 0.0, 10.0, 10.0],
            [1.0, 0.0, 11.0, 10.0],
            [20.0, 20.0, 30.0, 30.0],
        ];
        let coder = BoxCoder { weights: [1.0; 4] };
        // Softmax rows: background, class 0, class 1.
        let probs = [0.1, 0.8, 0.1, 0.2, 0.7, 0.1, 0.5, 0.01, 0.49];
        let deltas = [0.0; 12];
        let cfg = PostprocessConfig::default();
        let out = postprocess(
            &probs,
            &deltas,
            &anchors,
            3,
            true,
            &coder,
            (25.0, 25.0),
            &cfg,
        );
        assert_eq!(out.len(), 3);
        assert_eq!(out[0].class, 0);
        assert_eq!(out[0].bbox, [0.0, 0.0, 10.0, 10.0]);
        // The third anchor is clipped to the image; the overlapping class-0 box is suppressed.
        assert_eq!(
            out[1],
            ScoredBox {
                bbox: [20.0, 20.0, 25.0, 25.0],
                score: 0.49,
                class: 1
            }
        );
        assert_eq!((out[2].class, out[2].score, out[2].bbox[0]), (1, 0.1, 0.0));
    }
}
