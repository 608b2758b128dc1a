//! Chooses a batch size by measuring real training steps.
//!
//! Batches double from the smallest allowed. Each probe is a real step (forward, backward,
//! optimiser) that reports its time and peak memory. Two limits stop the growth:
//!
//! - memory: a line `peak = a + b x batch` fitted by least squares to the probes predicts the
//!   largest batch that fits in the allowed fraction of free memory (what the device had free
//!   before we started, so memory other processes hold is accounted for);
//! - throughput: on a CPU, images per second stop improving long before memory runs out, so
//!   the growth stops when doubling gains less than 10 %.
//!
//! The choice is then verified with one more real step; a probe that fails (out of memory) halves
//! the batch until one succeeds.
//!
//! Compared with Ultralytics' AutoBatch (a linear fit of memory over profiled batches, aimed at
//! 60 % of free memory, forward and backward only) this also counts the optimiser step, keeps
//! the throughput limit for CPUs and verifies the result; compared with ArcGIS (a forward-only
//! halving probe capped at 64) it measures training, not inference, and does not overshoot
//! first.

use autodl_api::{
    BatchDeducer, BatchDeducerRegistration, BatchLimits, PluginError, StepMeasure, inventory,
};

/// The throughput-and-memory batch deducer.
pub struct Throughput;

inventory::submit!(BatchDeducerRegistration(&Throughput));

/// Least-squares line `peak = a + b x batch` through the probes that reported memory.
pub fn fit(measures: &[StepMeasure]) -> Option<(f64, f64)> {
    let pts: Vec<(f64, f64)> = measures
        .iter()
        .filter_map(|m| m.peak_bytes.map(|p| (m.batch_size as f64, p as f64)))
        .collect();
    if pts.len() < 2 {
        return None;
    }
    let n = pts.len() as f64;
    let (sx, sy) = pts.iter().fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let sxx: f64 = pts.iter().map(|(x, _)| (x - mx).powi(2)).sum();
    if sxx == 0.0 {
        return None;
    }
    let slope = pts.iter().map(|(x, y)| (x - mx) * (y - my)).sum::<f64>() / sxx;
    Some((my - slope * mx, slope.max(0.0)))
}

/// The largest batch the fitted line allows in `fraction` of `free` bytes.
pub fn memory_cap(line: (f64, f64), free: u64, fraction: f64) -> Option<u32> {
    let (a, b) = line;
    if b <= 0.0 {
        return None;
    }
    Some(
        ((free as f64 * fraction - a) / b)
            .floor()
            .max(1.0)
            .min(u32::MAX as f64) as u32,
    )
}

impl BatchDeducer for Throughput {
    fn name(&self) -> &'static str {
        "throughput"
    }

    fn deduce(
        &self,
        probe: &mut dyn FnMut(u32) -> Result<StepMeasure, PluginError>,
        limits: &BatchLimits,
    ) -> Result<u32, PluginError> {
        let max = limits.max.max(1);
        let rate = |s: &StepMeasure| s.batch_size as f64 / s.seconds.max(1e-9);
        let mut measures: Vec<StepMeasure> = Vec::new();
        let mut batch = limits.min.clamp(1, max);
        let mut chosen = batch;
        // Grow while the step fits and throughput still improves.
        loop {
            match probe(batch) {
                Ok(m) => {
                    let better = measures
                        .last()
                        .is_none_or(|prev| rate(&m) >= rate(prev) * 1.1);
                    measures.push(m);
                    if !better {
                        break;
                    }
                    chosen = batch;
                }
                // A failed probe (out of memory) ends the growth at the last good size.
                Err(_) if !measures.is_empty() => break,
                Err(e) => {
                    if batch == 1 {
                        return Err(e);
                    }
                    batch /= 2;
                    chosen = batch;
                    continue;
                }
            }
            let next = batch.saturating_mul(2);
            if next > max {
                break;
            }
            if let (Some(line), Some(free)) = (fit(&measures), limits.free_bytes)
                && memory_cap(line, free, limits.memory_fraction).is_some_and(|cap| cap < next)
            {
                // Memory, not throughput, is the limit: take the largest batch that fits.
                chosen = memory_cap(line, free, limits.memory_fraction)
                    .unwrap_or(chosen)
                    .clamp(chosen, max);
                break;
            }
            // With one probe only, extrapolate proportionally.
            if measures.len() == 1
                && let (Some(peak), Some(free)) = (measures[0].peak_bytes, limits.free_bytes)
                && peak as f64 * next as f64 / batch as f64 > free as f64 * limits.memory_fraction
            {
                break;
            }
            batch = next;
        }
        // Verify the choice with one real step, halving on failure.
        let mut verified = chosen.min(max);
        while verified > 1 && probe(verified).is_err() {
            verified /= 2;
        }
        Ok(verified)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(min: u32, max: u32, free: u64) -> BatchLimits {
        BatchLimits {
            min,
            max,
            free_bytes: Some(free),
            memory_fraction: 0.8,
        }
    }

    /// A fake device: `base + per_image x batch` bytes, out of memory above `capacity`, and a
    /// step time of `overhead + per_image_secs x batch`.
    fn device(
        base: u64,
        per_image: u64,
        capacity: u64,
        overhead: f64,
        per_image_secs: f64,
    ) -> impl FnMut(u32) -> Result<StepMeasure, PluginError> {
        move |b: u32| {
            let peak = base + per_image * b as u64;
            if peak > capacity {
                return Err(PluginError::Training("CUDA out of memory".into()));
            }
            Ok(StepMeasure {
                batch_size: b,
                seconds: overhead + per_image_secs * b as f64,
                peak_bytes: Some(peak),
            })
        }
    }

    #[test]
    fn fit_recovers_the_memory_line() {
        let ms: Vec<StepMeasure> = [2u32, 4, 8]
            .iter()
            .map(|&b| StepMeasure {
                batch_size: b,
                seconds: 1.0,
                peak_bytes: Some(1000 + 250 * b as u64),
            })
            .collect();
        let (a, b) = fit(&ms).unwrap();
        assert!((a - 1000.0).abs() < 1e-6 && (b - 250.0).abs() < 1e-6);
        assert_eq!(memory_cap((a, b), 10_000, 0.8), Some(28));
    }

    #[test]
    fn memory_bound_device_fills_the_fraction() {
        // GPU-like: throughput keeps improving; 1 GB fixed + 100 MB per image, 16 GB free.
        let mut probe = device(1 << 30, 100 << 20, 16 << 30, 0.01, 0.0001);
        let b = Throughput
            .deduce(&mut probe, &limits(2, 1024, 16 << 30))
            .unwrap();
        // (0.8 x 16 GiB - 1 GiB) / 100 MiB = 120.8.
        assert_eq!(b, 120);
    }

    #[test]
    fn throughput_bound_device_stops_growing() {
        // CPU-like: 1 s overhead plus 0.5 s per image; plenty of memory.
        let mut probe = device(1000, 10, u64::MAX, 1.0, 0.5);
        assert_eq!(
            Throughput
                .deduce(&mut probe, &limits(1, 64, u64::MAX / 2))
                .unwrap(),
            16
        );
    }

    #[test]
    fn caps_by_the_maximum() {
        let mut probe = device(0, 1, u64::MAX, 10.0, 0.0001);
        assert_eq!(
            Throughput
                .deduce(&mut probe, &limits(2, 12, u64::MAX / 2))
                .unwrap(),
            8
        );
    }

    #[test]
    fn out_of_memory_probe_halves() {
        // The free-memory figure is wrong (another process took memory): the device fails above
        // 20 images although the fit allows more; the verification step halves until it works.
        let mut probe = device(0, 100, 2000, 0.001, 0.00001);
        let b = Throughput
            .deduce(&mut probe, &limits(4, 256, 100_000))
            .unwrap();
        assert!((8..=20).contains(&b), "chose {b}");
        // Out of memory at the very first probe: halve down from the minimum.
        let mut probe = device(0, 100, 250, 0.001, 0.00001);
        assert_eq!(
            Throughput
                .deduce(&mut probe, &limits(8, 256, 100_000))
                .unwrap(),
            2
        );
    }
}
