//! Anchor priors from the training boxes: k-means over box widths and heights with the distance
//! `1 - IoU` of two boxes aligned at a corner (YOLOv2 introduced it; YOLOv3 takes its nine
//! priors from it). Euclidean k-means would let large boxes dominate; the IoU distance weighs a
//! 4 px error on a 10 px box like a 40 px error on a 100 px one.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Width and height of a box, in pixels.
pub type Size = [f32; 2];

/// Seeded k-means++ starts tried; the clustering with the highest mean IoU wins.
const RESTARTS: u64 = 4;

/// Lloyd iterations at most per start (they usually settle within a few dozen).
const MAX_ITERATIONS: usize = 300;

/// IoU of two boxes of sizes `a` and `b` placed at the same corner: the overlap is the smaller
/// width by the smaller height. Zero when either box is empty.
pub fn wh_iou(a: Size, b: Size) -> f32 {
    let inter = a[0].min(b[0]).max(0.0) * a[1].min(b[1]).max(0.0);
    let union = a[0] * a[1] + b[0] * b[1] - inter;
    if union > 0.0 { inter / union } else { 0.0 }
}

/// The result of [`kmeans`].
#[derive(Debug, Clone, PartialEq)]
pub struct Clusters {
    /// `k` centres (mean width and height of their members), smallest area first (ties by
    /// width).
    pub centres: Vec<Size>,
    /// Mean over the boxes of the IoU with their closest centre: how well the priors fit.
    pub mean_iou: f32,
}

/// The centre closest to `b` by IoU (the first of equals) and that IoU.
fn closest(b: Size, centres: &[Size]) -> (usize, f32) {
    let mut best = (0, f32::NEG_INFINITY);
    for (i, &c) in centres.iter().enumerate() {
        let v = wh_iou(b, c);
        if v > best.1 {
            best = (i, v);
        }
    }
    best
}

/// k-means++ seeding with the IoU distance: the first centre uniform, each next one a box drawn
/// with probability proportional to its squared distance to the nearest centre so far.
fn seed_centres(boxes: &[Size], k: usize, rng: &mut ChaCha8Rng) -> Vec<Size> {
    let mut centres = vec![boxes[rng.random_range(0..boxes.len())]];
    while centres.len() < k {
        let weights: Vec<f64> = boxes
            .iter()
            .map(|&b| f64::from(1.0 - closest(b, &centres).1).powi(2))
            .collect();
        let total: f64 = weights.iter().sum();
        let pick = if total > 0.0 {
            let mut r = rng.random::<f64>() * total;
            let mut pick = boxes.len() - 1;
            for (i, w) in weights.iter().enumerate() {
                if r < *w {
                    pick = i;
                    break;
                }
                r -= w;
            }
            pick
        } else {
            // Every box coincides with a centre: fewer distinct sizes than `k`.
            rng.random_range(0..boxes.len())
        };
        centres.push(boxes[pick]);
    }
    centres
}

/// Lloyd's iterations from `centres`: each box to its closest centre by IoU, each centre to
/// its members' mean size. A centre left without members moves to the box its centre fits
/// worst. Returns the final centres and their mean IoU.
fn refine(boxes: &[Size], mut centres: Vec<Size>) -> Clusters {
    let mut owner = vec![usize::MAX; boxes.len()];
    for _ in 0..MAX_ITERATIONS {
        let mut changed = false;
        for (o, &b) in owner.iter_mut().zip(boxes) {
            let (c, _) = closest(b, &centres);
            changed |= *o != c;
            *o = c;
        }
        if !changed {
            break;
        }
        let mut sums = vec![[0f64; 3]; centres.len()];
        for (&o, &b) in owner.iter().zip(boxes) {
            sums[o][0] += f64::from(b[0]);
            sums[o][1] += f64::from(b[1]);
            sums[o][2] += 1.0;
        }
        for (i, s) in sums.iter().enumerate() {
            if s[2] > 0.0 {
                centres[i] = [(s[0] / s[2]) as f32, (s[1] / s[2]) as f32];
            } else {
                let worst = boxes
                    .iter()
                    .enumerate()
                    .map(|(j, &b)| (j, wh_iou(b, centres[owner[j]])))
                    .min_by(|x, y| x.1.total_cmp(&y.1).then(x.0.cmp(&y.0)));
                if let Some((j, fit)) = worst
                    && fit < 1.0
                {
                    centres[i] = boxes[j];
                    owner[j] = i;
                }
            }
        }
    }
    let mean_iou = boxes
        .iter()
        .map(|&b| f64::from(closest(b, &centres).1))
        .sum::<f64>()
        / boxes.len().max(1) as f64;
    centres.sort_by(|a, b| {
        (a[0] * a[1])
            .total_cmp(&(b[0] * b[1]))
            .then(a[0].total_cmp(&b[0]))
    });
    Clusters {
        centres,
        mean_iou: mean_iou as f32,
    }
}

/// `k` box-size clusters of `boxes` by k-means with the distance `1 - IoU` ([`wh_iou`]): the
/// best of a few k-means++ starts drawn from `seed`, so the same boxes and seed give the same
/// centres. Boxes without a positive, finite width and height are left out; `None` when none
/// is left or `k` is 0. With fewer distinct sizes than `k`, some centres repeat.
pub fn kmeans(boxes: &[Size], k: usize, seed: u64) -> Option<Clusters> {
    let boxes: Vec<Size> = boxes
        .iter()
        .copied()
        .filter(|b| b.iter().all(|v| v.is_finite() && *v > 0.0))
        .collect();
    if boxes.is_empty() || k == 0 {
        return None;
    }
    let mut best: Option<Clusters> = None;
    for start in 0..RESTARTS {
        let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_mul(RESTARTS).wrapping_add(start));
        let found = refine(&boxes, seed_centres(&boxes, k, &mut rng));
        if best.as_ref().is_none_or(|b| found.mean_iou > b.mean_iou) {
            best = Some(found);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iou_of_corner_aligned_boxes() {
        // 2x4 against 4x2: overlap 2x2 = 4, union 8 + 8 - 4 = 12.
        assert_eq!(wh_iou([2.0, 4.0], [4.0, 2.0]), 1.0 / 3.0);
        assert_eq!(wh_iou([3.0, 5.0], [3.0, 5.0]), 1.0);
        // A box inside another: its area over the larger's.
        assert_eq!(wh_iou([10.0, 10.0], [5.0, 4.0]), 0.2);
        assert_eq!(wh_iou([0.0, 4.0], [0.0, 4.0]), 0.0);
    }

    #[test]
    fn two_separated_clusters_give_their_centres() {
        let boxes = [
            [10.0, 10.0],
            [100.0, 50.0],
            [12.0, 12.0],
            [110.0, 55.0],
            [11.0, 11.0],
            [90.0, 45.0],
        ];
        for seed in 0..5 {
            let c = kmeans(&boxes, 2, seed).unwrap();
            assert_eq!(c.centres, vec![[11.0, 11.0], [100.0, 50.0]], "seed {seed}");
            // Members' IoU with their centre: 100/121, 121/144, 1 and 4050/5000, 5000/6050, 1.
            let want =
                (100.0 / 121.0 + 121.0 / 144.0 + 1.0 + 4050.0 / 5000.0 + 5000.0 / 6050.0 + 1.0)
                    / 6.0;
            assert!((c.mean_iou - want).abs() < 1e-6, "{} vs {want}", c.mean_iou);
        }
    }

    #[test]
    fn one_cluster_is_the_mean_size() {
        let c = kmeans(&[[4.0, 8.0], [6.0, 10.0], [8.0, 12.0]], 1, 7).unwrap();
        assert_eq!(c.centres, vec![[6.0, 10.0]]);
    }

    #[test]
    fn the_same_seed_gives_the_same_anchors() {
        // Sizes spread so that several clusterings are plausible.
        let boxes: Vec<Size> = (0..200u32)
            .map(|i| {
                let w = 5.0 + ((i * 37) % 97) as f32;
                let h = 5.0 + ((i * 53) % 89) as f32;
                [w, h]
            })
            .collect();
        let a = kmeans(&boxes, 9, 42).unwrap();
        assert_eq!(a, kmeans(&boxes, 9, 42).unwrap());
        assert_eq!(a.centres.len(), 9);
        let areas: Vec<f32> = a.centres.iter().map(|c| c[0] * c[1]).collect();
        assert!(areas.windows(2).all(|p| p[0] <= p[1]), "{areas:?}");
        // More clusters fit at least as well as fewer.
        assert!(a.mean_iou > kmeans(&boxes, 3, 42).unwrap().mean_iou);
    }

    #[test]
    fn few_sizes_and_bad_boxes() {
        assert_eq!(kmeans(&[], 9, 0), None);
        assert_eq!(kmeans(&[[0.0, 3.0], [f32::NAN, 2.0]], 9, 0), None);
        let c = kmeans(&[[4.0, 4.0], [8.0, 8.0], [-1.0, 3.0]], 3, 1).unwrap();
        assert_eq!(c.centres.len(), 3);
        assert_eq!(c.mean_iou, 1.0);
        assert!(c.centres.contains(&[4.0, 4.0]) && c.centres.contains(&[8.0, 8.0]));
    }
}
