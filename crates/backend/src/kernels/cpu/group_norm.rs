//! Group norm forward and backward over `[batch, channels, positions]` in contiguous storage.
//! The channels of a group are adjacent, so a group of one sample is one contiguous run of
//! `channels / groups * positions` values: its statistics are a batch norm's over the view
//! `[1, batch * groups, run]`.

use rayon::prelude::*;

use super::{batch_stats, lanes_sum_and_dot_dev, vectorized};

/// The statistics of a group-norm forward pass, per sample and group (`[batch * groups]`).
#[derive(Debug, Clone, PartialEq)]
pub struct GroupStats {
    /// Mean over the group's channels and positions.
    pub mean: Vec<f32>,
    /// `1 / sqrt(var + eps)`, with the biased variance.
    pub rstd: Vec<f32>,
}

/// The shape of a group norm's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupShape {
    /// Samples.
    pub batch: usize,
    /// Channels, a multiple of `groups`.
    pub channels: usize,
    /// Groups.
    pub groups: usize,
    /// Positions per channel (height times width).
    pub positions: usize,
}

impl GroupShape {
    /// The index into [`GroupStats`] of plane `i` (sample `i / channels`, channel
    /// `i % channels`), and its channel.
    fn of_plane(&self, i: usize) -> (usize, usize) {
        let (n, c) = (i / self.channels, i % self.channels);
        (n * self.groups + c / (self.channels / self.groups), c)
    }

    /// Values per group of one sample.
    fn run(&self) -> usize {
        self.channels / self.groups * self.positions
    }
}

/// `y = (x - mean) * rstd * gamma + beta`, with the statistics of each sample's group; parallel
/// over planes.
pub fn group_norm(
    shape: GroupShape,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
) -> (Vec<f32>, GroupStats) {
    let stats = batch_stats(1, shape.batch * shape.groups, shape.run(), x);
    let rstd: Vec<f32> = stats.var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
    let stats = GroupStats {
        mean: stats.mean,
        rstd,
    };
    let mut y = vec![0.0f32; x.len()];
    if shape.positions == 0 {
        return (y, stats);
    }
    y.par_chunks_mut(shape.positions)
        .zip(x.par_chunks(shape.positions))
        .enumerate()
        .for_each(|(i, (y_plane, x_plane))| {
            let (j, c) = shape.of_plane(i);
            let scale = gamma[c] * stats.rstd[j];
            let shift = beta[c] - stats.mean[j] * scale;
            vectorized(|| {
                for (o, &v) in y_plane.iter_mut().zip(x_plane) {
                    *o = v * scale + shift;
                }
            })
        });
    (y, stats)
}

/// Gradients of [`group_norm`] for the output gradient `dy`: `(dx, dgamma, dbeta)`.
pub fn group_norm_backward(
    shape: GroupShape,
    x: &[f32],
    stats: &GroupStats,
    gamma: &[f32],
    dy: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let GroupShape {
        batch,
        channels,
        groups,
        positions,
    } = shape;
    // Per plane: sum(dy) and sum(dy * (x - mean)).
    let sums: Vec<(f32, f32)> = (0..batch * channels)
        .into_par_iter()
        .map(|i| {
            let (j, _) = shape.of_plane(i);
            let at = i * positions;
            let (xs, ds) = (&x[at..at + positions], &dy[at..at + positions]);
            vectorized(|| lanes_sum_and_dot_dev(ds, xs, stats.mean[j]))
        })
        .collect();
    let mut dgamma = vec![0.0f64; channels];
    let mut dbeta = vec![0.0f64; channels];
    // Per sample and group: mean of dxhat = dy * gamma, and of dxhat * xhat.
    let mut m1 = vec![0.0f64; batch * groups];
    let mut m2 = vec![0.0f64; batch * groups];
    for (i, &(a, b)) in sums.iter().enumerate() {
        let (j, c) = shape.of_plane(i);
        let b_hat = b as f64 * stats.rstd[j] as f64;
        dbeta[c] += a as f64;
        dgamma[c] += b_hat;
        m1[j] += gamma[c] as f64 * a as f64;
        m2[j] += gamma[c] as f64 * b_hat;
    }
    let run = shape.run().max(1) as f64;
    let mut dx = vec![0.0f32; x.len()];
    if positions > 0 {
        dx.par_chunks_mut(positions)
            .enumerate()
            .for_each(|(i, dx_plane)| {
                let (j, c) = shape.of_plane(i);
                let at = i * positions;
                let (xs, ds) = (&x[at..at + positions], &dy[at..at + positions]);
                let (m, s) = (stats.mean[j], stats.rstd[j]);
                let k = gamma[c] * s;
                let mean_dxhat = (m1[j] / run) as f32 * s;
                let mean_dxhat_xhat = (m2[j] / run) as f32 * s;
                vectorized(|| {
                    for ((o, &xv), &dv) in dx_plane.iter_mut().zip(xs).zip(ds) {
                        let xhat = (xv - m) * s;
                        *o = k * dv - mean_dxhat - xhat * mean_dxhat_xhat;
                    }
                })
            });
    }
    let narrow = |v: Vec<f64>| v.into_iter().map(|v| v as f32).collect();
    (dx, narrow(dgamma), narrow(dbeta))
}
