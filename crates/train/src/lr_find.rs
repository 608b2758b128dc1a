//! The learning-rate finder's decision rule.
//!
//! The sweep itself lives with the training loop; this module turns its (learning rate, loss)
//! curve into a choice with the "valley" rule that fastai (and so ArcGIS) uses: smooth the
//! loss, find the longest decreasing run of it, take its middle. When no run is long enough
//! the rule falls back to the learning rate of the lowest loss divided by ten.

/// How the learning rate was chosen.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    /// The middle of the longest decreasing stretch of the smoothed loss.
    Valley,
    /// The lowest loss's learning rate divided by 10.
    MinOverTen,
}

/// Exponential moving average with bias correction, as the finder plots it.
pub fn smooth(losses: &[f64], beta: f64) -> Vec<f64> {
    let mut avg = 0.0;
    losses
        .iter()
        .enumerate()
        .map(|(i, &l)| {
            avg = beta * avg + (1.0 - beta) * l;
            avg / (1.0 - beta.powi(i as i32 + 1))
        })
        .collect()
}

/// Picks a learning rate from a sweep. `lrs` increase; `losses` are raw (smoothing is done
/// here). Returns `None` for an empty or mismatched curve.
pub fn suggest(lrs: &[f64], losses: &[f64]) -> Option<(f64, Rule)> {
    if lrs.is_empty() || lrs.len() != losses.len() {
        return None;
    }
    let s = smooth(losses, 0.9);
    let n = s.len();
    // Longest strictly decreasing subsequence, O(n^2) like fastai: n is about 100.
    let mut len = vec![1usize; n];
    let mut prev = vec![usize::MAX; n];
    for i in 1..n {
        for j in 0..i {
            if s[i] < s[j] && len[j] + 1 > len[i] {
                len[i] = len[j] + 1;
                prev[i] = j;
            }
        }
    }
    let (end, &best) = len
        .iter()
        .enumerate()
        .max_by_key(|&(i, l)| (*l, usize::MAX - i))?;
    let mut start = end;
    while prev[start] != usize::MAX {
        start = prev[start];
    }
    if best >= (n / 10).max(3) && end > start {
        let idx = start + (end - start) / 2;
        return Some((lrs[idx], Rule::Valley));
    }
    let (imin, _) = s.iter().enumerate().min_by(|a, b| a.1.total_cmp(b.1))?;
    Some((lrs[imin] / 10.0, Rule::MinOverTen))
}

/// `n` learning rates spaced exponentially from `low` to `high`.
pub fn sweep(low: f64, high: f64, n: usize) -> Vec<f64> {
    let n = n.max(2);
    let ratio = (high / low).powf(1.0 / (n - 1) as f64);
    (0..n).map(|i| low * ratio.powi(i as i32)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_middle_of_a_known_valley() {
        // Creeps up until index 30 (as a noisy plateau does), falls steadily to index 70,
        // then explodes.
        let lrs = sweep(1e-6, 1.0, 100);
        let losses: Vec<f64> = (0..100)
            .map(|i| match i {
                0..=29 => 2.0 + i as f64 * 0.002,
                30..=70 => 2.0 - (i - 30) as f64 * 0.04,
                _ => 0.4 + ((i - 70) as f64).powi(2) * 0.1,
            })
            .collect();
        let (lr, rule) = suggest(&lrs, &losses).unwrap();
        assert_eq!(rule, Rule::Valley);
        // The smoothed decreasing stretch runs from about index 29 to 71.
        let idx = lrs.iter().position(|&x| x == lr).unwrap();
        assert!((45..=56).contains(&idx), "picked index {idx}");
    }

    #[test]
    fn falls_back_without_a_valley() {
        let lrs = sweep(1e-5, 1.0, 50);
        // Rises from the start: no decreasing run longer than one point.
        let losses: Vec<f64> = (0..50).map(|i| 1.0 + i as f64 * 0.1).collect();
        let (lr, rule) = suggest(&lrs, &losses).unwrap();
        assert_eq!(rule, Rule::MinOverTen);
        assert!((lr - lrs[0] / 10.0).abs() < 1e-12);
    }

    #[test]
    fn sweep_is_geometric() {
        let s = sweep(1e-4, 1e-2, 3);
        assert!((s[1] - 1e-3).abs() < 1e-12 && (s[2] - 1e-2).abs() < 1e-12);
    }
}
