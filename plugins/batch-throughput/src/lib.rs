//! Chooses a batch size by measuring real training steps.
//!
//! Batches double from the smallest allowed while the measured throughput (images per second) still improves by
//! at least 10 % and the step's peak memory, extrapolated linearly, fits in the allowed share
//! of free memory. On a CPU the throughput stops improving long before memory runs out; on a
//! GPU memory is usually the limit.

use autodl_api::{BatchDeducer, BatchDeducerRegistration, BatchLimits, PluginError, StepMeasure, inventory};

/// The throughput-and-memory batch deducer.
pub struct Throughput;

inventory::submit!(BatchDeducerRegistration(&Throughput));

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
        let mut best = probe(limits.min.clamp(1, max))?;
        let mut batch = best.batch_size * 2;
        while batch <= max {
            if let (Some(free), Some(peak)) = (limits.free_bytes, best.peak_bytes) {
                // Predict this batch's peak from the last one, proportional to batch size.
                let predicted = peak as f64 * batch as f64 / best.batch_size as f64;
                if predicted > free as f64 * limits.memory_fraction {
                    break;
                }
            }
            let m = probe(batch)?;
            let rate = |s: &StepMeasure| s.batch_size as f64 / s.seconds.max(1e-9);
            if rate(&m) < rate(&best) * 1.1 {
                break;
            }
            best = m;
            batch *= 2;
        }
        Ok(best.batch_size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: u32) -> BatchLimits {
        BatchLimits { min: 1, max, free_bytes: Some(1000), memory_fraction: 0.8 }
    }

    #[test]
    fn stops_where_throughput_saturates() {
        // Fixed overhead 1 s per step plus 0.5 s per image: 32 is under 10 % faster than 16.
        let mut probe = |b: u32| Ok(StepMeasure { batch_size: b, seconds: 1.0 + 0.5 * b as f64, peak_bytes: Some(10 * b as u64) });
        assert_eq!(Throughput.deduce(&mut probe, &limits(64)).unwrap(), 16);
    }

    #[test]
    fn respects_memory_fraction_and_cap() {
        // 100 bytes per image, 800 allowed: 8 fits, 16 would not.
        let mut probe = |b: u32| Ok(StepMeasure { batch_size: b, seconds: 1.0, peak_bytes: Some(100 * b as u64) });
        assert_eq!(Throughput.deduce(&mut probe, &limits(64)).unwrap(), 8);
        let mut probe = |b: u32| Ok(StepMeasure { batch_size: b, seconds: 1.0, peak_bytes: Some(b as u64) });
        assert_eq!(Throughput.deduce(&mut probe, &limits(4)).unwrap(), 4);
    }
}
