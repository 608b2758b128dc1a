//! Box arithmetic on the host.

/// `[x0, y0, x1, y1]` in continuous pixel coordinates.
pub type Box4 = [f32; 4];

/// Area of a box; zero when it is empty.
pub fn area(b: &Box4) -> f32 {
    (b[2] - b[0]).max(0.0) * (b[3] - b[1]).max(0.0)
}

/// Intersection over union; zero when either box is empty.
pub fn iou(a: &Box4, b: &Box4) -> f32 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    let union = area(a) + area(b) - inter;
    if union > 0.0 { inter / union } else { 0.0 }
}

/// Encodes boxes as deltas from anchors, as Faster R-CNN does: centre offsets in anchor sizes
/// and log size ratios, each divided by a standard deviation (`1 / weight`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BoxCoder {
    /// Weights for (dx, dy, dw, dh); torchvision's RetinaNet uses 1, SSD uses 10, 10, 5, 5.
    pub weights: [f32; 4],
}

/// Largest log size ratio decoded, so that an untrained network cannot overflow `exp`.
const MAX_LOG_RATIO: f32 = 4.135; // ln(1000 / 16)

impl BoxCoder {
    /// Deltas that turn `anchor` into `target`.
    pub fn encode(&self, anchor: &Box4, target: &Box4) -> [f32; 4] {
        let (aw, ah) = (
            (anchor[2] - anchor[0]).max(1e-6),
            (anchor[3] - anchor[1]).max(1e-6),
        );
        let (ax, ay) = (anchor[0] + 0.5 * aw, anchor[1] + 0.5 * ah);
        let (tw, th) = (
            (target[2] - target[0]).max(1e-6),
            (target[3] - target[1]).max(1e-6),
        );
        let (tx, ty) = (target[0] + 0.5 * tw, target[1] + 0.5 * th);
        let w = self.weights;
        [
            w[0] * (tx - ax) / aw,
            w[1] * (ty - ay) / ah,
            w[2] * (tw / aw).ln(),
            w[3] * (th / ah).ln(),
        ]
    }

    /// The box that `deltas` make of `anchor`.
    pub fn decode(&self, anchor: &Box4, deltas: &[f32; 4]) -> Box4 {
        let (aw, ah) = (anchor[2] - anchor[0], anchor[3] - anchor[1]);
        let (ax, ay) = (anchor[0] + 0.5 * aw, anchor[1] + 0.5 * ah);
        let w = self.weights;
        let (dx, dy) = (deltas[0] / w[0], deltas[1] / w[1]);
        let dw = (deltas[2] / w[2]).clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO);
        let dh = (deltas[3] / w[3]).clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO);
        let (cx, cy) = (ax + dx * aw, ay + dy * ah);
        let (bw, bh) = (aw * dw.exp(), ah * dh.exp());
        [cx - 0.5 * bw, cy - 0.5 * bh, cx + 0.5 * bw, cy + 0.5 * bh]
    }
}

/// Greedy non-maximum suppression: indices of the kept boxes, highest score first. A box is
/// dropped when its IoU with a kept, higher-scoring box exceeds `threshold`. Ties in score keep
/// the lower index first, so the result does not depend on the sort.
pub fn nms(boxes: &[Box4], scores: &[f32], threshold: f32) -> Vec<usize> {
    let mut order: Vec<usize> = (0..boxes.len().min(scores.len())).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    let mut keep: Vec<usize> = Vec::new();
    let mut suppressed = vec![false; boxes.len()];
    for (k, &i) in order.iter().enumerate() {
        if suppressed[i] {
            continue;
        }
        keep.push(i);
        for &j in &order[k + 1..] {
            if !suppressed[j] && iou(&boxes[i], &boxes[j]) > threshold {
                suppressed[j] = true;
            }
        }
    }
    keep
}

/// NMS within each class: boxes of different classes never suppress each other. Returns kept
/// indices, highest score first.
pub fn batched_nms(
    boxes: &[Box4],
    scores: &[f32],
    classes: &[usize],
    threshold: f32,
) -> Vec<usize> {
    let mut by_class: std::collections::BTreeMap<usize, Vec<usize>> =
        std::collections::BTreeMap::new();
    for (i, &c) in classes.iter().enumerate().take(boxes.len()) {
        by_class.entry(c).or_default().push(i);
    }
    let mut keep = Vec::new();
    for members in by_class.values() {
        let b: Vec<Box4> = members.iter().map(|&i| boxes[i]).collect();
        let s: Vec<f32> = members.iter().map(|&i| scores[i]).collect();
        keep.extend(nms(&b, &s, threshold).into_iter().map(|k| members[k]));
    }
    keep.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    keep
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iou_of_known_boxes() {
        assert_eq!(iou(&[0.0, 0.0, 2.0, 2.0], &[1.0, 1.0, 3.0, 3.0]), 1.0 / 7.0);
        assert_eq!(iou(&[0.0, 0.0, 1.0, 1.0], &[2.0, 2.0, 3.0, 3.0]), 0.0);
        assert_eq!(iou(&[0.0, 0.0, 0.0, 1.0], &[0.0, 0.0, 0.0, 1.0]), 0.0);
    }

    #[test]
    fn coder_round_trips() {
        for weights in [[1.0; 4], [10.0, 10.0, 5.0, 5.0]] {
            let coder = BoxCoder { weights };
            let anchor = [10.0, 20.0, 42.0, 36.0];
            let target = [5.0, 25.0, 60.0, 31.0];
            let back = coder.decode(&anchor, &coder.encode(&anchor, &target));
            for (a, b) in back.iter().zip(&target) {
                assert!((a - b).abs() < 1e-3, "{back:?} != {target:?}");
            }
        }
    }

    #[test]
    fn nms_keeps_the_best_of_each_cluster() {
        let boxes = [
            [0.0, 0.0, 10.0, 10.0],
            [1.0, 1.0, 11.0, 11.0],
            [20.0, 20.0, 30.0, 30.0],
            [0.0, 0.0, 10.0, 9.0],
        ];
        let scores = [0.5, 0.9, 0.3, 0.8];
        assert_eq!(nms(&boxes, &scores, 0.5), vec![1, 2]);
        // A different class is never suppressed.
        assert_eq!(
            batched_nms(&boxes, &scores, &[0, 0, 0, 1], 0.5),
            vec![1, 3, 2]
        );
        assert_eq!(nms(&boxes, &scores, 1.0), vec![1, 3, 0, 2]);
    }
}
