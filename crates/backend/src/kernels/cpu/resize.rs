//! Bilinear resizing of NCHW planes, forward and backward, parallel over planes.
//!
//! The sampling positions are Burn's (and PyTorch's): with `align_corners` output index `o`
//! reads input coordinate `o * (in - 1) / (out - 1)`, without it `(o + 0.5) * in / out - 0.5`
//! clamped at 0; each output value blends the two neighbours along each axis. The per-axis
//! neighbours and weights are computed once per call, not per pixel, and the backward pass
//! scatters each plane's gradient into its own input plane, so planes run in parallel.

use rayon::prelude::*;

/// One output index's two input neighbours along an axis and the weight of the second.
#[derive(Debug, Clone, Copy)]
struct Tap {
    lo: usize,
    hi: usize,
    w: f32,
}

/// The taps of every output index along one axis, as Burn's flex backend computes them.
fn taps(input: usize, output: usize, align_corners: bool) -> Vec<Tap> {
    let ratio = if align_corners {
        (input as f64 - 1.0) / (output.max(1) - 1).max(1) as f64
    } else {
        input as f64 / output as f64
    };
    (0..output)
        .map(|o| {
            let at = if align_corners {
                o as f64 * ratio
            } else {
                (o as f64 + 0.5) * ratio - 0.5
            };
            let lo = (at.floor().max(0.0) as usize).min(input.saturating_sub(1));
            Tap {
                lo,
                hi: (lo + 1).min(input.saturating_sub(1)),
                w: (at - lo as f64).max(0.0) as f32,
            }
        })
        .collect()
}

/// The resize along one axis as a dense `output x input` matrix (row-major): row `o` holds
/// the weights output index `o` gives its two neighbours.
pub fn bilinear_matrix(input: usize, output: usize, align_corners: bool) -> Vec<f32> {
    let mut m = vec![0.0f32; output * input];
    for (row, t) in m
        .chunks_exact_mut(input.max(1))
        .zip(taps(input, output, align_corners))
    {
        row[t.lo] += 1.0 - t.w;
        row[t.hi] += t.w;
    }
    m
}

/// A bilinear resize of `planes` planes from `input` (height, width) to `output`.
#[derive(Debug, Clone)]
pub struct Resize {
    input: [usize; 2],
    output: [usize; 2],
    rows: Vec<Tap>,
    cols: Vec<Tap>,
}

impl Resize {
    /// The resize of `input`-sized planes to `output`.
    pub fn new(input: [usize; 2], output: [usize; 2], align_corners: bool) -> Self {
        Resize {
            input,
            output,
            rows: taps(input[0], output[0], align_corners),
            cols: taps(input[1], output[1], align_corners),
        }
    }

    fn in_plane(&self) -> usize {
        self.input[0] * self.input[1]
    }

    fn out_plane(&self) -> usize {
        self.output[0] * self.output[1]
    }

    /// The resized planes of `x` (planes of `input` size, one after another).
    pub fn forward(&self, x: &[f32]) -> Vec<f32> {
        let (ip, op) = (self.in_plane(), self.out_plane());
        let planes = x.len().checked_div(ip).unwrap_or(0);
        let mut y = vec![0.0f32; planes * op];
        if op == 0 || ip == 0 {
            return y;
        }
        let w = self.input[1];
        let ow = self.output[1];
        y.par_chunks_mut(op)
            .zip(x.par_chunks(ip))
            .for_each(|(y_plane, x_plane)| {
                // Each input row blended along the width once, kept while output rows use it.
                let mut lo_row = vec![0.0f32; ow];
                let mut hi_row = vec![0.0f32; ow];
                let blend = |src: &[f32], dst: &mut [f32]| {
                    for (d, t) in dst.iter_mut().zip(&self.cols) {
                        *d = src[t.lo] * (1.0 - t.w) + src[t.hi] * t.w;
                    }
                };
                let mut have = [usize::MAX; 2];
                for (row, t) in y_plane.chunks_exact_mut(ow).zip(&self.rows) {
                    if have[0] != t.lo {
                        if have[1] == t.lo {
                            std::mem::swap(&mut lo_row, &mut hi_row);
                            have.swap(0, 1);
                        } else {
                            blend(&x_plane[t.lo * w..][..w], &mut lo_row);
                            have[0] = t.lo;
                        }
                    }
                    if have[1] != t.hi {
                        blend(&x_plane[t.hi * w..][..w], &mut hi_row);
                        have[1] = t.hi;
                    }
                    for ((o, &a), &b) in row.iter_mut().zip(&lo_row).zip(&hi_row) {
                        *o = a * (1.0 - t.w) + b * t.w;
                    }
                }
            });
        y
    }

    /// The gradient with respect to the input planes of the output gradient `dy`.
    pub fn backward(&self, dy: &[f32]) -> Vec<f32> {
        let (ip, op) = (self.in_plane(), self.out_plane());
        let planes = dy.len().checked_div(op).unwrap_or(0);
        let mut dx = vec![0.0f32; planes * ip];
        if op == 0 || ip == 0 {
            return dx;
        }
        let w = self.input[1];
        let ow = self.output[1];
        dx.par_chunks_mut(ip)
            .zip(dy.par_chunks(op))
            .for_each(|(dx_plane, dy_plane)| {
                // Written first: see `Pool::backward`.
                dx_plane.fill(0.0);
                // Each output row's gradient split along the width into one row, then added to
                // its two input rows.
                let mut split = vec![0.0f32; w];
                for (row, t) in dy_plane.chunks_exact(ow).zip(&self.rows) {
                    split.fill(0.0);
                    for (&g, c) in row.iter().zip(&self.cols) {
                        split[c.lo] += g * (1.0 - c.w);
                        split[c.hi] += g * c.w;
                    }
                    for (d, &s) in dx_plane[t.lo * w..][..w].iter_mut().zip(&split) {
                        *d += s * (1.0 - t.w);
                    }
                    for (d, &s) in dx_plane[t.hi * w..][..w].iter_mut().zip(&split) {
                        *d += s * t.w;
                    }
                }
            });
        dx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The resize as a dense matrix applied point by point, the way Burn's flex computes it.
    fn naive(x: &[f32], r: &Resize) -> Vec<f32> {
        let (ip, w) = (r.in_plane(), r.input[1]);
        let mut y = Vec::new();
        for plane in x.chunks_exact(ip) {
            for ty in &r.rows {
                for tx in &r.cols {
                    let at = |i: usize, j: usize| plane[i * w + j];
                    y.push(
                        at(ty.lo, tx.lo) * (1.0 - tx.w) * (1.0 - ty.w)
                            + at(ty.lo, tx.hi) * tx.w * (1.0 - ty.w)
                            + at(ty.hi, tx.lo) * (1.0 - tx.w) * ty.w
                            + at(ty.hi, tx.hi) * tx.w * ty.w,
                    );
                }
            }
        }
        y
    }

    #[test]
    fn forward_matches_pointwise_blend_and_backward_is_its_adjoint() {
        for (input, output, align) in [
            ([3, 4], [6, 8], false),
            ([5, 3], [7, 11], true),
            ([8, 8], [3, 5], false),
            ([1, 6], [4, 2], false),
            ([4, 4], [4, 4], true),
        ] {
            let r = Resize::new(input, output, align);
            let x: Vec<f32> = (0..2 * input[0] * input[1])
                .map(|i| ((i * 37 % 11) as f32) - 5.0)
                .collect();
            let y = r.forward(&x);
            for (a, b) in y.iter().zip(naive(&x, &r)) {
                assert!((a - b).abs() < 1e-5, "{input:?} -> {output:?}: {a} vs {b}");
            }
            // <R x, g> == <x, R^T g> for a random-ish g.
            let g: Vec<f32> = (0..y.len()).map(|i| ((i * 13 % 7) as f32) - 3.0).collect();
            let dx = r.backward(&g);
            let lhs: f64 = y.iter().zip(&g).map(|(a, b)| (a * b) as f64).sum();
            let rhs: f64 = x.iter().zip(&dx).map(|(a, b)| (a * b) as f64).sum();
            assert!(
                (lhs - rhs).abs() < 1e-3 * lhs.abs().max(1.0),
                "{lhs} vs {rhs}"
            );
        }
    }
}
