//! Convolutions without im2col: one GEMM per kernel tap on a shifted view of the zero-padded
//! input (split into stride phases when the stride is above 1).
//!
//! With stride 1, output `(oh, ow)` reads padded input `(oh + kh * d, ow + kw * d)`. Laid out
//! on the padded grid (`Wp` columns per row), output position `oh * Wp + ow` reads padded
//! position `oh * Wp + ow + kh * d * Wp + kw * d`: for each tap, the input the GEMM needs is the
//! padded planes themselves, shifted by a constant. So the output is computed on a "wide" grid of
//! `OH x Wp` positions (the `Wp - OW` extra columns per row are discarded, or held at zero when
//! they are an operand) as a sum over taps of `W[:, :, kh, kw] * Xp[shifted]`, reading the input
//! in place where im2col would have copied it `KH * KW` times. The input gradient accumulates
//! `W[:, :, kh, kw]^T * dY_wide` into the shifted padded gradient, and the weight gradient of
//! each tap is `dY_wide * Xp[shifted]^T`, a GEMM whose inner dimension is the whole plane.
//!
//! With stride `s`, the padded input is first split into `s_h * s_w` phases (rows `ph, ph + s_h,
//! ...` and columns `pw, pw + s_w, ...` each): output `(oh, ow)` reads, for tap `(kh, kw)`,
//! phase `(kh * d % s_h, kw * d % s_w)` at `(oh + kh * d / s_h, ow + kw * d / s_w)`, again one
//! phase shifted by a constant, and everything above holds with the phase in place of the
//! padded plane.
//!
//! Measured on one core of this machine against the im2col tiles (64 channels at 56x56; 192 to
//! 64 channels at 64x64): forward 100 -> 125 and 97 -> 122 GFLOP/s, input gradient 93 -> 120
//! and 96 -> 136, weight gradient 82 -> 110 and 80 -> 105.

use rayon::prelude::*;

use super::{Conv2dGeometry, Mat, inner_parallel, matmul, summed_over_batch_runs, with_scratch};

/// Input channels a strided convolution needs to take this path: a tap's GEMM has only the
/// input channels as inner dimension, and for an RGB stem (3 channels) im2col's one product over
/// `3 * KH * KW` rows does better. (4 in the unit tests, so that their small random convolutions
/// cover both paths.)
const MIN_STRIDED_CHANNELS: usize = if cfg!(test) { 4 } else { 16 };

/// Whether `g` takes this path: an ordinary (one-group) convolution with a kernel larger than
/// one pixel, with stride 1 or with enough input channels.
pub(super) fn applies(g: &Conv2dGeometry) -> bool {
    let strided = g.stride != [1, 1];
    g.groups == 1
        && g.kernel != [1, 1]
        && g.positions() > 0
        && (!strided || g.in_channels >= MIN_STRIDED_CHANNELS)
}

/// The padded input of one image split into stride phases: phase `(ph, pw)` holds padded rows
/// `ph, ph + sh, ...` and columns `pw, pw + sw, ...`, so that for every tap the pixels a
/// strided output grid reads are one phase, shifted. With stride 1 there is one phase, the
/// padded plane itself.
#[derive(Debug, Clone)]
struct Grid {
    /// Stride along height and width (the number of phases along each).
    step: [usize; 2],
    /// Rows and columns of one phase: what the output grid reads, `OH + ((KH - 1) * dh) / sh`
    /// by `OW + ((KW - 1) * dw) / sw`.
    hq: usize,
    wq: usize,
    /// Floats per phase: `hq * wq` plus the largest column shift, which the last row's extra
    /// columns read past its end, so that phases never overlap.
    plane: usize,
    /// Floats per channel: every phase of it.
    stride: usize,
    /// Output positions on the wide grid, `OH * wq`.
    wide: usize,
    /// Offset within a channel of each tap's shifted phase, row-major over `(kh, kw)`.
    offsets: Vec<usize>,
}

impl Grid {
    fn new(g: &Conv2dGeometry) -> Grid {
        let [oh, ow] = g.out_size;
        let [kh, kw] = g.kernel;
        let [dh, dw] = g.dilation;
        let [sh, sw] = [g.stride[0].max(1), g.stride[1].max(1)];
        let (hq, wq) = (oh + (kh - 1) * dh / sh, ow + (kw - 1) * dw / sw);
        let plane = hq * wq + (kw - 1) * dw / sw;
        let offsets = (0..kh)
            .flat_map(|i| (0..kw).map(move |j| (i * dh, j * dw)))
            .map(|(r, c)| ((r % sh) * sw + c % sw) * plane + (r / sh) * wq + c / sw)
            .collect();
        Grid {
            step: [sh, sw],
            hq,
            wq,
            plane,
            stride: sh * sw * plane,
            wide: oh * wq,
            offsets,
        }
    }

    /// The phases of the grid, `(phase index, ph, pw)`.
    fn phases(&self) -> impl Iterator<Item = (usize, usize, usize)> + use<> {
        let [sh, sw] = self.step;
        (0..sh * sw).map(move |p| (p, p / sw, p % sw))
    }

    /// For phase column offset `pw`, the phase columns `j0..j1` holding input columns (input
    /// column `j * sw + pw - pl`), and the first of those input columns.
    fn columns(&self, g: &Conv2dGeometry, pw: usize) -> (usize, usize, usize) {
        let sw = self.step[1];
        let (w, pl) = (g.in_size[1], g.pad[1]);
        // Padded column `j * sw + pw` is input column `j * sw + pw - pl`, inside when
        // `pl <= j * sw + pw < pl + w`.
        let j0 = pl.saturating_sub(pw).div_ceil(sw).min(self.wq);
        let j1 = (pl + w).saturating_sub(pw).div_ceil(sw).clamp(j0, self.wq);
        (j0, j1, j0 * sw + pw - pl.min(j0 * sw + pw))
    }

    /// The input row of phase row `i` of phases with row offset `ph`, if it is not padding.
    fn input_row(&self, g: &Conv2dGeometry, ph: usize, i: usize) -> Option<usize> {
        let (h, pt) = (g.in_size[0], g.pad[0]);
        (i * self.step[0] + ph).checked_sub(pt).filter(|&y| y < h)
    }

    /// Writes the padded, phase-split planes of one image (`x`: `[C, H, W]`) into `xp`
    /// (`[C, stride]`).
    fn pad(&self, g: &Conv2dGeometry, x: &[f32], xp: &mut [f32]) {
        let (plane, w) = (g.in_plane(), g.in_size[1]);
        let sw = self.step[1];
        for (x_c, xp_c) in x.chunks_exact(plane).zip(xp.chunks_exact_mut(self.stride)) {
            for (p, ph, pw) in self.phases() {
                let phase = &mut xp_c[p * self.plane..(p + 1) * self.plane];
                phase[self.hq * self.wq..].fill(0.0);
                let (j0, j1, x0) = self.columns(g, pw);
                for (i, row) in phase[..self.hq * self.wq]
                    .chunks_exact_mut(self.wq)
                    .enumerate()
                {
                    let Some(y) = self.input_row(g, ph, i) else {
                        row.fill(0.0);
                        continue;
                    };
                    row[..j0].fill(0.0);
                    let src = &x_c[y * w..(y + 1) * w];
                    if j1 == j0 {
                    } else if sw == 1 {
                        row[j0..j1].copy_from_slice(&src[x0..x0 + (j1 - j0)]);
                    } else {
                        for (d, &v) in row[j0..j1].iter_mut().zip(src[x0..].iter().step_by(sw)) {
                            *d = v;
                        }
                    }
                    row[j1..].fill(0.0);
                }
            }
        }
    }

    /// Copies the input pixels of padded, phase-split planes `dxp` (`[C, stride]`) into `dx`
    /// (`[C, H, W]`); input pixels the convolution never reads get zero.
    fn crop(&self, g: &Conv2dGeometry, dxp: &[f32], dx: &mut [f32]) {
        let (plane, w) = (g.in_plane(), g.in_size[1]);
        let sw = self.step[1];
        for (dx_c, dxp_c) in dx
            .chunks_exact_mut(plane)
            .zip(dxp.chunks_exact(self.stride))
        {
            dx_c.fill(0.0);
            for (p, ph, pw) in self.phases() {
                let phase = &dxp_c[p * self.plane..(p + 1) * self.plane];
                let (j0, j1, x0) = self.columns(g, pw);
                for i in 0..self.hq {
                    let Some(y) = self.input_row(g, ph, i) else {
                        continue;
                    };
                    let src = &phase[i * self.wq + j0..i * self.wq + j1];
                    let dst = &mut dx_c[y * w..(y + 1) * w];
                    if src.is_empty() {
                    } else if sw == 1 {
                        dst[x0..x0 + src.len()].copy_from_slice(src);
                    } else {
                        for (d, &v) in dst[x0..].iter_mut().step_by(sw).zip(src) {
                            *d = v;
                        }
                    }
                }
            }
        }
    }

    /// The output gradient of one image (`[C_out, OH, OW]`) on the wide grid, extra columns
    /// zero.
    fn widen(&self, g: &Conv2dGeometry, dy: &[f32], dyw: &mut [f32]) {
        let ow = g.out_size[1];
        for (row, src) in dyw.chunks_exact_mut(self.wq).zip(dy.chunks_exact(ow)) {
            row[..ow].copy_from_slice(src);
            row[ow..].fill(0.0);
        }
    }
}

/// The OIHW weights laid out tap by tap, each tap's `[C_out, C_in]` matrix contiguous
/// (`transposed`: each tap's `[C_in, C_out]`). Read in place, a tap is a view with a column
/// stride of `KH * KW`, which the GEMM packs 5 to 10 % slower at 128 to 384 channels (measured
/// on one core); the copy is the size of the weights, small beside the activations.
fn tap_major(g: &Conv2dGeometry, weight: &[f32], transposed: bool) -> Vec<f32> {
    let (co, c) = (g.out_channels, g.in_channels);
    let taps = g.kernel[0] * g.kernel[1];
    let mut out = vec![0.0f32; weight.len()];
    if co * c == 0 {
        return out;
    }
    out.par_chunks_mut(co * c)
        .enumerate()
        .take(taps)
        .for_each(|(t, block)| {
            for o in 0..co {
                for i in 0..c {
                    let at = if transposed { i * co + o } else { o * c + i };
                    block[at] = weight[(o * c + i) * taps + t];
                }
            }
        });
    out
}

/// The forward pass, parallel over the batch.
pub(super) fn forward(
    g: &Conv2dGeometry,
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
) -> Vec<f32> {
    let grid = Grid::new(g);
    let (c, co, p) = (g.in_channels, g.out_channels, g.positions());
    let ow = g.out_size[1];
    let w_taps = tap_major(g, weight, false);
    let mut y = vec![0.0f32; g.output_len()];
    let parallel = inner_parallel(g.batch);
    y.par_chunks_mut(co * p).enumerate().for_each(|(b, y_b)| {
        let x_b = &x[b * c * g.in_plane()..][..c * g.in_plane()];
        with_scratch(c * grid.stride + co * grid.wide, |buf| {
            let (xp, yw) = buf.split_at_mut(c * grid.stride);
            grid.pad(g, x_b, xp);
            if let Some(bias) = bias {
                for (row, &v) in yw.chunks_exact_mut(grid.wide).zip(bias) {
                    row.fill(v);
                }
            }
            for (t, &off) in grid.offsets.iter().enumerate() {
                // Yw (co x wide) (+)= W_t (co x c) * Xp[off..] (c x wide)
                matmul(
                    [co, grid.wide, c],
                    yw,
                    grid.wide,
                    bias.is_some() || t > 0,
                    Mat::rows(&w_taps[t * co * c..(t + 1) * co * c], c),
                    Mat::rows(&xp[off..], grid.stride),
                    parallel,
                );
            }
            for (y_c, yw_c) in y_b.chunks_exact_mut(p).zip(yw.chunks_exact(grid.wide)) {
                for (dst, src) in y_c.chunks_exact_mut(ow).zip(yw_c.chunks_exact(grid.wq)) {
                    dst.copy_from_slice(&src[..ow]);
                }
            }
        });
    });
    y
}

/// The input gradient, parallel over the batch.
pub(super) fn input_grad(g: &Conv2dGeometry, weight: &[f32], dy: &[f32]) -> Vec<f32> {
    let grid = Grid::new(g);
    let (c, co, p) = (g.in_channels, g.out_channels, g.positions());
    let x_len = c * g.in_plane();
    let mut dx = vec![0.0f32; g.input_len()];
    if x_len == 0 {
        return dx;
    }
    let w_taps = tap_major(g, weight, true);
    let parallel = inner_parallel(g.batch);
    dx.par_chunks_mut(x_len).enumerate().for_each(|(b, dx_b)| {
        let dy_b = &dy[b * co * p..][..co * p];
        with_scratch(c * grid.stride + co * grid.wide, |buf| {
            let (dxp, dyw) = buf.split_at_mut(c * grid.stride);
            grid.widen(g, dy_b, dyw);
            dxp.fill(0.0);
            for (t, &off) in grid.offsets.iter().enumerate() {
                // dXp[off..] (c x wide) += W_t^T (c x co) * dYw (co x wide). Each plane's run
                // ends inside its own plane (`stride` covers the overrun), so rows never overlap.
                let lhs = Mat::rows(&w_taps[t * co * c..(t + 1) * co * c], co);
                matmul(
                    [c, grid.wide, co],
                    &mut dxp[off..],
                    grid.stride,
                    true,
                    lhs,
                    Mat::rows(dyw, grid.wide),
                    parallel,
                );
            }
            grid.crop(g, dxp, dx_b);
        });
    });
    dx
}

/// The weight gradient: each thread sums a contiguous run of images into its own copy, per tap
/// `dW_t (co x c) += dYw (co x wide) * Xp[off..]^T (wide x c)`; the copies are summed and laid out
/// as OIHW.
pub(super) fn weight_grad(g: &Conv2dGeometry, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let grid = Grid::new(g);
    let (c, co, p) = (g.in_channels, g.out_channels, g.positions());
    let taps = grid.offsets.len();
    let w_len = g.weight_len();
    let parallel = inner_parallel(g.batch);
    // Tap-major: `[taps, co, c]`.
    let dw_taps = summed_over_batch_runs(g.batch, w_len, |images| {
        let mut dw = vec![0.0f32; w_len];
        for b in images {
            let x_b = &x[b * c * g.in_plane()..][..c * g.in_plane()];
            let dy_b = &dy[b * co * p..][..co * p];
            with_scratch(c * grid.stride + co * grid.wide, |buf| {
                let (xp, dyw) = buf.split_at_mut(c * grid.stride);
                grid.pad(g, x_b, xp);
                grid.widen(g, dy_b, dyw);
                for (dw_t, &off) in dw.chunks_exact_mut(co * c).zip(&grid.offsets) {
                    matmul(
                        [co, c, grid.wide],
                        dw_t,
                        c,
                        true,
                        Mat::rows(dyw, grid.wide),
                        Mat::transposed(&xp[off..], grid.stride),
                        parallel,
                    );
                }
            });
        }
        dw
    });
    let mut dw = vec![0.0f32; w_len];
    if co * c == 0 {
        return dw;
    }
    // OIHW: element (o, i, t) is tap-major element (t, o, i).
    dw.par_chunks_mut(c * taps)
        .enumerate()
        .for_each(|(o, dw_o)| {
            for (i, dw_oi) in dw_o.chunks_exact_mut(taps).enumerate() {
                for (t, v) in dw_oi.iter_mut().enumerate() {
                    *v = dw_taps[(t * co + o) * c + i];
                }
            }
        });
    dw
}
