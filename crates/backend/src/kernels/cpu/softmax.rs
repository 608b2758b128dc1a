//! Log-softmax over the channels of NCHW tensors, forward and backward, parallel over images.
//!
//! Burn composes `log_softmax(x, 1)` from a max and a log-sum-exp over the channel axis and
//! broadcast subtractions, which flex runs element by element through strided iteration, and
//! differentiates each step. Here the channel reductions are whole-plane passes (channel `c`
//! of an image is one contiguous run), so everything is a sequence of contiguous loops.

use rayon::prelude::*;

/// `log_softmax(x, 1)` of `x` (`[N, C, P]`, contiguous).
pub fn log_softmax_channels(channels: usize, positions: usize, x: &[f32]) -> Vec<f32> {
    let image = channels * positions;
    let mut y = vec![0.0f32; x.len()];
    if image == 0 {
        return y;
    }
    y.par_chunks_mut(image)
        .zip(x.par_chunks(image))
        .for_each(|(y_n, x_n)| {
            let mut max = x_n[..positions].to_vec();
            for plane in x_n.chunks_exact(positions).skip(1) {
                for (m, &v) in max.iter_mut().zip(plane) {
                    *m = m.max(v);
                }
            }
            let mut sum = vec![0.0f32; positions];
            for plane in x_n.chunks_exact(positions) {
                for ((s, &v), &m) in sum.iter_mut().zip(plane).zip(&max) {
                    *s += (v - m).exp();
                }
            }
            // log-sum-exp per position, kept in `max`.
            for (m, s) in max.iter_mut().zip(&sum) {
                *m += s.ln();
            }
            for (out, plane) in y_n
                .chunks_exact_mut(positions)
                .zip(x_n.chunks_exact(positions))
            {
                for ((o, &v), &l) in out.iter_mut().zip(plane).zip(&max) {
                    *o = v - l;
                }
            }
        });
    y
}

/// The input gradient of [`log_softmax_channels`] from its output `y` and the output gradient
/// `dy`: `dx = dy - exp(y) * sum_c(dy)`.
pub fn log_softmax_channels_backward(
    channels: usize,
    positions: usize,
    y: &[f32],
    dy: &[f32],
) -> Vec<f32> {
    let image = channels * positions;
    let mut dx = vec![0.0f32; y.len()];
    if image == 0 {
        return dx;
    }
    dx.par_chunks_mut(image)
        .zip(y.par_chunks(image).zip(dy.par_chunks(image)))
        .for_each(|(dx_n, (y_n, dy_n))| {
            let mut total = vec![0.0f32; positions];
            for plane in dy_n.chunks_exact(positions) {
                for (t, &g) in total.iter_mut().zip(plane) {
                    *t += g;
                }
            }
            let planes = dx_n.chunks_exact_mut(positions).zip(
                y_n.chunks_exact(positions)
                    .zip(dy_n.chunks_exact(positions)),
            );
            for (out, (y_c, dy_c)) in planes {
                for (((o, &v), &g), &t) in out.iter_mut().zip(y_c).zip(dy_c).zip(&total) {
                    *o = g - v.exp() * t;
                }
            }
        });
    dx
}
