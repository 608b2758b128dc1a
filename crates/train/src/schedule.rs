//! The learning-rate schedules the fit loop steps through.

/// The learning-rate schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// fastai's one-cycle: warm up over 25 % of the steps from peak/25, then cosine to peak/1e4.
    OneCycle,
    /// Warm up over 5 % of the steps from peak/10, then cosine to peak/25.
    Cosine,
}

/// The learning rate at `step` of `total`.
pub fn schedule(kind: Schedule, peak: f64, step: usize, total: usize) -> f64 {
    let total = total.max(1) as f64;
    let (warm_share, start, floor) = match kind {
        Schedule::OneCycle => (0.25, peak / 25.0, peak / 1e4),
        Schedule::Cosine => (0.05, peak / 10.0, peak / 25.0),
    };
    let warm = (warm_share * total).max(1.0);
    let s = step as f64;
    if s < warm {
        return start + (peak - start) * s / warm;
    }
    let t = ((s - warm) / (total - warm).max(1.0)).min(1.0);
    floor + (peak - floor) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_warm_up_then_decay() {
        let s: Vec<f64> = (0..100)
            .map(|i| schedule(Schedule::Cosine, 1.0, i, 100))
            .collect();
        assert!(s[0] < s[4]);
        assert!((s[5] - 1.0).abs() < 1e-9);
        assert!(s[99] < 0.1 && s[99] >= 0.04);
        let c: Vec<f64> = (0..100)
            .map(|i| schedule(Schedule::OneCycle, 1.0, i, 100))
            .collect();
        assert!((c[0] - 0.04).abs() < 1e-9);
        assert!((c[25] - 1.0).abs() < 1e-9);
        assert!(c[99] < 0.01);
    }
}
