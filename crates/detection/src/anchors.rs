//! Anchor boxes over a pyramid of feature maps.

use crate::boxes::Box4;

/// Anchors for every level of a feature pyramid. At each location of level `l` there are
/// `ratios.len() * scales.len()` anchors centred on the location, of area
/// `(sizes[l] * scale)^2` and height-to-width ratio `ratio`.
#[derive(Debug, Clone, PartialEq)]
pub struct AnchorConfig {
    /// Stride of each level in input pixels.
    pub strides: Vec<usize>,
    /// Base anchor side of each level.
    pub sizes: Vec<f32>,
    /// Multipliers of the base side, such as RetinaNet's `2^0, 2^(1/3), 2^(2/3)`.
    pub scales: Vec<f32>,
    /// Height-to-width ratios.
    pub ratios: Vec<f32>,
}

impl AnchorConfig {
    /// RetinaNet's anchors on levels of the given strides, with base side `scale * stride`
    /// (RetinaNet uses 4; smaller objects want smaller).
    pub fn retinanet(strides: &[usize], scale: f32) -> Self {
        AnchorConfig {
            strides: strides.to_vec(),
            sizes: strides.iter().map(|&s| s as f32 * scale).collect(),
            scales: vec![1.0, 2f32.powf(1.0 / 3.0), 2f32.powf(2.0 / 3.0)],
            ratios: vec![0.5, 1.0, 2.0],
        }
    }

    /// Anchors per location.
    pub fn per_location(&self) -> usize {
        self.scales.len() * self.ratios.len()
    }

    /// Every anchor for feature maps of the given `[height, width]`, ordered by level, then
    /// row, then column, then anchor within the location: the order in which a head's
    /// `[N, A*K, H, W]` output reads once permuted to `[N, H, W, A*K]` and flattened.
    pub fn generate(&self, levels: &[[usize; 2]]) -> Vec<Box4> {
        let mut shapes = Vec::with_capacity(self.per_location());
        for &ratio in &self.ratios {
            for &scale in &self.scales {
                shapes.push((ratio, scale));
            }
        }
        let total: usize = levels.iter().map(|[h, w]| h * w).sum::<usize>() * shapes.len();
        let mut out = Vec::with_capacity(total);
        for (l, &[h, w]) in levels.iter().enumerate() {
            let stride = self.strides.get(l).copied().unwrap_or(1) as f32;
            let base = self.sizes.get(l).copied().unwrap_or(stride * 4.0);
            for y in 0..h {
                for x in 0..w {
                    let (cx, cy) = ((x as f32 + 0.5) * stride, (y as f32 + 0.5) * stride);
                    for &(ratio, scale) in &shapes {
                        let side = base * scale;
                        let (aw, ah) = (side / ratio.sqrt(), side * ratio.sqrt());
                        out.push([cx - 0.5 * aw, cy - 0.5 * ah, cx + 0.5 * aw, cy + 0.5 * ah]);
                    }
                }
            }
        }
        out
    }
}

/// A base-size multiplier (`size = scale * stride`) that fits a dataset's boxes: the smallest
/// anchor, on the finest level, is about the size of the dataset's 5th-percentile box, within
/// `[low, high]`. Returns `high` when there are no boxes.
pub fn fit_scale(box_sides: &[f32], finest_stride: usize, low: f32, high: f32) -> f32 {
    let mut sides: Vec<f32> = box_sides
        .iter()
        .copied()
        .filter(|s| s.is_finite() && *s > 0.0)
        .collect();
    if sides.is_empty() {
        return high;
    }
    sides.sort_by(f32::total_cmp);
    let p5 = sides[(sides.len() - 1) * 5 / 100];
    // Round to a quarter so that small changes in the data do not change the model.
    ((p5 / finest_stride as f32 * 4.0).round() / 4.0).clamp(low, high)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchors_are_centred_and_ordered() {
        let cfg = AnchorConfig::retinanet(&[8, 16], 4.0);
        let a = cfg.generate(&[[2, 3], [1, 2]]);
        assert_eq!(a.len(), (6 + 2) * 9);
        // First anchor: level 0, row 0, column 0, ratio 0.5, scale 1: 32 px area, wider than tall.
        let first = a[0];
        assert!(((first[0] + first[2]) / 2.0 - 4.0).abs() < 1e-5);
        assert!(((first[2] - first[0]) * (first[3] - first[1]) - 1024.0).abs() < 1e-2);
        assert!(first[2] - first[0] > first[3] - first[1]);
        // The tenth anchor is the next column's first.
        assert!(((a[9][0] + a[9][2]) / 2.0 - 12.0).abs() < 1e-5);
        // The first anchor of level 1 is centred at (8, 8) with a 64 px side for ratio 1.
        let l1 = a[6 * 9 + 3];
        assert!(((l1[2] - l1[0]) - 64.0).abs() < 1e-4);
        assert!(((l1[0] + l1[2]) / 2.0 - 8.0).abs() < 1e-5);
    }

    #[test]
    fn scale_follows_small_boxes() {
        let sides: Vec<f32> = (0..100).map(|i| 10.0 + i as f32).collect();
        assert_eq!(fit_scale(&sides, 8, 1.5, 4.0), 1.75);
        let big: Vec<f32> = (0..100).map(|i| 40.0 + i as f32).collect();
        assert_eq!(fit_scale(&big, 8, 1.5, 4.0), 4.0);
        let mid: Vec<f32> = vec![20.0; 10];
        assert_eq!(fit_scale(&mid, 8, 1.5, 4.0), 2.5);
        assert_eq!(fit_scale(&[], 8, 1.5, 4.0), 4.0);
    }
}
