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
///
/// Only boxes that intersect can suppress each other (for a threshold of 0 or more), so a kept box
/// is compared with the boxes sharing a cell of a uniform grid with it, not with every box: the
/// result is the plain greedy one, in time near linear in the number of boxes where the plain
/// loop is quadratic (a 20,000 px scene's windows give hundreds of thousands of boxes).
pub fn nms(boxes: &[Box4], scores: &[f32], threshold: f32) -> Vec<usize> {
    let n = boxes.len().min(scores.len());
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    // A negative or NaN threshold also suppresses (or never suppresses) boxes that do not meet;
    // few boxes are cheaper without the grid.
    if threshold.is_nan() || threshold < 0.0 || n < 64 {
        return greedy(boxes, &order, threshold);
    }
    let mut suppressed = vec![false; boxes.len()];
    let mut keep: Vec<usize> = Vec::new();
    let mut rank = vec![0usize; n];
    for (k, &i) in order.iter().enumerate() {
        rank[i] = k;
    }
    let grid = Grid::new(&boxes[..n]);
    for (k, &i) in order.iter().enumerate() {
        if suppressed[i] {
            continue;
        }
        keep.push(i);
        grid.for_each_near(&boxes[i], |j| {
            if rank[j] > k && !suppressed[j] && iou(&boxes[i], &boxes[j]) > threshold {
                suppressed[j] = true;
            }
        });
    }
    keep
}

/// The plain greedy loop over `order` (highest score first): every kept box against every
/// later one.
fn greedy(boxes: &[Box4], order: &[usize], threshold: f32) -> Vec<usize> {
    let mut suppressed = vec![false; boxes.len()];
    let mut keep = Vec::new();
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

/// Boxes binned by the cells of a uniform grid they cover, in compressed rows: two boxes that
/// overlap with positive area share at least one cell. Empty and non-finite boxes are left
/// out (their IoU with any box is 0).
struct Grid {
    layout: Cells,
    /// `start[c]..start[c + 1]` indexes `members` for cell `c`.
    start: Vec<usize>,
    members: Vec<usize>,
}

/// A uniform grid's geometry.
struct Cells {
    origin: [f32; 2],
    cell: [f32; 2],
    cells: [usize; 2],
}

/// Whether a box can overlap another with positive area.
fn usable(b: &Box4) -> bool {
    b.iter().all(|v| v.is_finite()) && area(b) > 0.0
}

impl Cells {
    /// Cells per axis at most: bounds the grid's memory whatever the boxes' spread.
    const MAX_CELLS: usize = 1024;

    /// Cells about the mean box size over the boxes' extent.
    fn new(boxes: &[Box4]) -> Cells {
        let (mut lo, mut hi) = ([f32::MAX; 2], [f32::MIN; 2]);
        let mut size_sum = 0.0f64;
        let mut count = 0usize;
        for b in boxes.iter().filter(|b| usable(b)) {
            for a in 0..2 {
                lo[a] = lo[a].min(b[a]);
                hi[a] = hi[a].max(b[a + 2]);
            }
            size_sum += f64::from((b[2] - b[0]).max(b[3] - b[1]));
            count += 1;
        }
        if count == 0 {
            return Cells {
                origin: [0.0; 2],
                cell: [1.0; 2],
                cells: [1; 2],
            };
        }
        let mean = (size_sum / count as f64) as f32;
        let mut cells = [1usize; 2];
        let mut cell = [1.0f32; 2];
        for a in 0..2 {
            let extent = (hi[a] - lo[a]).max(0.0);
            let want = (extent / mean).ceil();
            cells[a] = if want.is_finite() {
                (want as usize).clamp(1, Self::MAX_CELLS)
            } else {
                Self::MAX_CELLS
            };
            cell[a] = (extent / cells[a] as f32).max(f32::MIN_POSITIVE);
        }
        Cells {
            origin: lo,
            cell,
            cells,
        }
    }

    /// The cell range `[first, last]` a coordinate span covers on axis `a`.
    fn span(&self, a: usize, from: f32, to: f32) -> (usize, usize) {
        let at = |v: f32| {
            let c = ((v - self.origin[a]) / self.cell[a]).floor();
            if c <= 0.0 {
                0
            } else {
                (c as usize).min(self.cells[a] - 1)
            }
        };
        (at(from), at(to))
    }

    /// Calls `f` with the index of every cell `b` covers.
    fn cover(&self, b: &Box4, mut f: impl FnMut(usize)) {
        let (x0, x1) = self.span(0, b[0], b[2]);
        let (y0, y1) = self.span(1, b[1], b[3]);
        for y in y0..=y1 {
            for x in x0..=x1 {
                f(y * self.cells[0] + x);
            }
        }
    }
}

impl Grid {
    fn new(boxes: &[Box4]) -> Grid {
        let layout = Cells::new(boxes);
        let mut start = vec![0usize; layout.cells[0] * layout.cells[1] + 1];
        for b in boxes.iter().filter(|b| usable(b)) {
            layout.cover(b, |c| start[c] += 1);
        }
        let mut total = 0;
        for s in start.iter_mut() {
            let here = *s;
            *s = total;
            total += here;
        }
        let mut members = vec![0usize; total];
        let mut fill = start.clone();
        for (i, b) in boxes.iter().enumerate().filter(|(_, b)| usable(b)) {
            layout.cover(b, |c| {
                members[fill[c]] = i;
                fill[c] += 1;
            });
        }
        Grid {
            layout,
            start,
            members,
        }
    }

    /// Calls `f` with every box sharing a cell with `b` (a box may come more than once).
    fn for_each_near(&self, b: &Box4, mut f: impl FnMut(usize)) {
        if !usable(b) {
            return;
        }
        self.layout.cover(b, |c| {
            for &j in &self.members[self.start[c]..self.start[c + 1]] {
                f(j);
            }
        });
    }
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

    /// The plain quadratic greedy loop over the score order, the reference for the grid.
    fn reference(boxes: &[Box4], scores: &[f32], threshold: f32) -> Vec<usize> {
        let mut order: Vec<usize> = (0..boxes.len()).collect();
        order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
        greedy(boxes, &order, threshold)
    }

    #[test]
    fn grid_nms_equals_the_greedy_loop() {
        let mut state = 12345u64;
        let mut next = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as f32 / (1u64 << 31) as f32
        };
        for case in 0..40 {
            let n = 64 + (next() * 600.0) as usize;
            let spread = [50.0, 400.0, 5000.0][case % 3];
            let mut boxes = Vec::new();
            let mut scores = Vec::new();
            for i in 0..n {
                let (x, y) = (next() * spread, next() * spread);
                let (w, h) = match i % 50 {
                    0 => (0.0, 10.0),
                    1 => (spread * 2.0, spread),
                    2 => (f32::INFINITY, 3.0),
                    _ => (2.0 + next() * 60.0, 2.0 + next() * 60.0),
                };
                boxes.push([x, y, x + w, y + h]);
                // Coarse scores, so that ties occur.
                scores.push((next() * 20.0).floor() / 20.0);
            }
            for threshold in [0.0, 0.3, 0.5, 0.7, 1.0, -0.1] {
                assert_eq!(
                    nms(&boxes, &scores, threshold),
                    reference(&boxes, &scores, threshold),
                    "case {case}, threshold {threshold}"
                );
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
