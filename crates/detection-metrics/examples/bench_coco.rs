//! Times [`coco_eval`] on 10,000 detections against 2,000 ground-truth boxes
//! (200 images, 3 classes), the workload of the pycocotools baseline in
//! `shared/bench/pycocotools_eval.py`.
//!
//! For a like-for-like ratio, evaluate the baseline's own boxes:
//!
//! ```text
//! python3 tests/fixtures/detection/make_bench_data.py /tmp/coco-bench
//! cargo run --release -p autodl-detection-metrics --example bench_coco -- /tmp/coco-bench
//! python3 ../shared/bench/pycocotools_eval.py
//! ```
//!
//! Without a directory the example makes data of the same shape and noise
//! from its own seeded generator; the two runs then differ only by the
//! random numbers drawn.
//!
//! Prints the best of 5 wall times as `seconds=<x>`, plus AP and the twelve
//! stats so the two runs can be checked to agree. JSON parsing is outside the
//! timed region, as it is in the baseline, which builds its data in memory.

use std::error::Error;
use std::path::PathBuf;
use std::time::Instant;

use autodl_detection_metrics::{Detection, GtBox, coco_eval, read_coco_dets, read_coco_gt};

const RUNS: usize = 5;

fn main() -> Result<(), Box<dyn Error>> {
    let (images, categories, gts, dets, source) = match std::env::args_os().nth(1) {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            let gt = read_coco_gt(dir.join("gt.json"))?;
            let dets = read_coco_dets(dir.join("dets.json"))?;
            (
                gt.images,
                gt.categories,
                gt.annotations,
                dets,
                dir.display().to_string(),
            )
        }
        None => {
            let (gts, dets) = synthetic();
            (
                (1..=200).collect(),
                vec![1, 2, 3],
                gts,
                dets,
                "synthetic".to_owned(),
            )
        }
    };

    let mut best = f64::INFINITY;
    let mut summary = None;
    for _ in 0..RUNS {
        let start = Instant::now();
        let s = coco_eval(&images, &categories, &gts, &dets);
        best = best.min(start.elapsed().as_secs_f64());
        summary = Some(s);
    }
    let stats = summary.map_or([-1.0; 12], |s| s.as_array());
    println!(
        "autodl-detection-metrics: {} dets vs {} gt ({source}), best of {RUNS}: seconds={best:.6} AP={:.4}",
        dets.len(),
        gts.len(),
        stats[0]
    );
    // The full stats vector, in pycocotools' order, for checking agreement.
    println!("stats={stats:?}");
    Ok(())
}

/// The baseline's generator with SplitMix64 in place of Python's Mersenne
/// Twister: per image 10 boxes of 5..40 px at 0..600, a random class, and 5
/// detections each, jittered by N(0, 3) px with uniform scores.
fn synthetic() -> (Vec<GtBox>, Vec<Detection>) {
    let mut rng = SplitMix64(0);
    let mut gts = Vec::with_capacity(2000);
    let mut dets = Vec::with_capacity(10_000);
    for image_id in 1..=200u64 {
        for _ in 0..10 {
            let (x, y) = (rng.uniform(0.0, 600.0), rng.uniform(0.0, 600.0));
            let (w, h) = (rng.uniform(5.0, 40.0), rng.uniform(5.0, 40.0));
            let category = 1 + (rng.next() % 3) as u32;
            gts.push(GtBox {
                image_id,
                category,
                bbox: [x, y, w, h],
                area: Some(w * h),
                iscrowd: false,
                difficult: false,
            });
            for _ in 0..5 {
                let (dx, dy) = (3.0 * rng.gauss(), 3.0 * rng.gauss());
                dets.push(Detection {
                    image_id,
                    category,
                    bbox: [x + dx, y + dy, w, h],
                    score: rng.unit(),
                });
            }
        }
    }
    (gts, dets)
}

/// A small seeded generator; the benchmark only needs reproducible,
/// well-spread numbers.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    /// Standard normal by Box-Muller.
    fn gauss(&mut self) -> f64 {
        let u = 1.0 - self.unit();
        let v = self.unit();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}
