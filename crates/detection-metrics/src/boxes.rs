//! Box overlap, written with the same floating-point operations in the same
//! order as pycocotools' `bbIou` (maskApi.c), so that an IoU lying exactly on
//! a threshold (0.5, 0.75, ...) falls on the same side as it does there.

/// Width and height of the overlap of two `[x, y, w, h]` boxes, or `None`
/// when they do not overlap (touching edges do not overlap).
#[inline]
fn intersection(d: &[f64; 4], g: &[f64; 4]) -> Option<f64> {
    let w = (d[2] + d[0]).min(g[2] + g[0]) - d[0].max(g[0]);
    if w <= 0.0 {
        return None;
    }
    let h = (d[3] + d[1]).min(g[3] + g[1]) - d[1].max(g[1]);
    if h <= 0.0 {
        return None;
    }
    Some(w * h)
}

/// Intersection over union of two `[x, y, w, h]` boxes; 0 when they do not
/// overlap. Areas are `w * h` (no "+1").
#[inline]
pub fn iou(a: &[f64; 4], b: &[f64; 4]) -> f64 {
    match intersection(a, b) {
        Some(i) => i / (a[2] * a[3] + b[2] * b[3] - i),
        None => 0.0,
    }
}

/// Overlap of a detection with a crowd region as COCO measures it: the
/// intersection over the *detection's* area, so that a detection lying
/// wholly inside a large crowd scores 1 however small it is.
#[inline]
pub fn crowd_iou(det: &[f64; 4], crowd: &[f64; 4]) -> f64 {
    match intersection(det, crowd) {
        Some(i) => i / (det[2] * det[3]),
        None => 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iou_of_identical_boxes_is_one() {
        let b = [3.5, 4.0, 10.0, 20.0];
        assert_eq!(iou(&b, &b), 1.0);
    }

    #[test]
    fn iou_of_half_shifted_boxes() {
        // Overlap 5x10 = 50, union 100 + 100 - 50 = 150.
        let a = [0.0, 0.0, 10.0, 10.0];
        let b = [5.0, 0.0, 10.0, 10.0];
        assert!((iou(&a, &b) - 50.0 / 150.0).abs() < 1e-15);
        assert_eq!(iou(&a, &b), iou(&b, &a));
    }

    #[test]
    fn iou_has_no_plus_one() {
        // With the VOC "+1" convention these would overlap by one pixel
        // column; as continuous rectangles they only touch.
        let a = [0.0, 0.0, 10.0, 10.0];
        let b = [10.0, 0.0, 10.0, 10.0];
        assert_eq!(iou(&a, &b), 0.0);
        // A box inside another: IoU is the area ratio, 25 / 100.
        let inner = [2.0, 2.0, 5.0, 5.0];
        assert_eq!(iou(&a, &inner), 0.25);
    }

    #[test]
    fn iou_of_disjoint_or_degenerate_boxes_is_zero() {
        let a = [0.0, 0.0, 10.0, 10.0];
        assert_eq!(iou(&a, &[20.0, 20.0, 5.0, 5.0]), 0.0);
        assert_eq!(iou(&a, &[2.0, 2.0, 0.0, 5.0]), 0.0);
    }

    #[test]
    fn crowd_iou_divides_by_detection_area() {
        let crowd = [0.0, 0.0, 100.0, 100.0];
        // Wholly inside: 1 although the ordinary IoU is 0.01.
        let small = [10.0, 10.0, 10.0, 10.0];
        assert_eq!(crowd_iou(&small, &crowd), 1.0);
        assert_eq!(iou(&small, &crowd), 0.01);
        // Half outside: intersection 50 over detection area 100.
        let half = [95.0, 0.0, 10.0, 10.0];
        assert_eq!(crowd_iou(&half, &crowd), 0.5);
        // The values pycocotools' maskUtils.iou gives for
        // dt [0,0,10,10] against gt [5,5,10,10] (not crowd) and
        // [0,0,20,20] (crowd): 1/7 and 1.
        let d = [0.0, 0.0, 10.0, 10.0];
        assert!((iou(&d, &[5.0, 5.0, 10.0, 10.0]) - 1.0 / 7.0).abs() < 1e-15);
        assert_eq!(crowd_iou(&d, &[0.0, 0.0, 20.0, 20.0]), 1.0);
    }
}
