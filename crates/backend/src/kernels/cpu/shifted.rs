//! Stride-1 convolutions without im2col: one GEMM per kernel tap on a shifted view of the
//! zero-padded input.
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
//! Measured on one core of this machine against the im2col tiles (64 channels at 56x56; 192 to
//! 64 channels at 64x64): forward 100 -> 125 and 97 -> 122 GFLOP/s, input gradient 93 -> 120
//! and 96 -> 136, weight gradient 82 -> 110 and 80 -> 105.

use rayon::prelude::*;

use super::{Conv2dGeometry, Mat, inner_parallel, matmul, with_scratch};

/// Whether `g` takes this path: an ordinary (one-group) convolution with stride 1 and a kernel
/// larger than one pixel.
pub(super) fn applies(g: &Conv2dGeometry) -> bool {
    g.groups == 1 && g.stride == [1, 1] && g.kernel != [1, 1] && g.positions() > 0
}

/// The padded grid of one image.
#[derive(Debug, Clone)]
struct Grid {
    /// Padded rows and columns: exactly what the output reads, `OH + (KH - 1) * d` by
    /// `OW + (KW - 1) * d`.
    hp: usize,
    wp: usize,
    /// Floats per padded plane: `hp * wp` plus the `(KW - 1) * d` floats the last row's extra
    /// columns read past its end, so that planes never overlap.
    stride: usize,
    /// Output positions on the wide grid, `OH * wp`.
    wide: usize,
    /// Plane offset of each tap, row-major over `(kh, kw)`.
    offsets: Vec<usize>,
}

impl Grid {
    fn new(g: &Conv2dGeometry) -> Grid {
        let [oh, ow] = g.out_size;
        let [kh, kw] = g.kernel;
        let [dh, dw] = g.dilation;
        let (hp, wp) = (oh + (kh - 1) * dh, ow + (kw - 1) * dw);
        let offsets = (0..kh)
            .flat_map(|i| (0..kw).map(move |j| i * dh * wp + j * dw))
            .collect();
        Grid {
            hp,
            wp,
            stride: hp * wp + (kw - 1) * dw,
            wide: oh * wp,
            offsets,
        }
    }

    /// The input pixels of padded row `r`: `(input row, first padded column, columns)`, or
    /// `None` for a row of padding. Padded columns `pl..pl + W` hold input columns `0..W`,
    /// clipped to the grid (a convolution may not read the last input columns).
    fn row(&self, g: &Conv2dGeometry, r: usize) -> Option<(usize, usize, usize)> {
        let [h, w] = g.in_size;
        let [pt, pl] = g.pad;
        let y = r.checked_sub(pt).filter(|&y| y < h)?;
        let c0 = pl.min(self.wp);
        let c1 = (pl + w).min(self.wp);
        Some((y, c0, c1 - c0))
    }

    /// Writes the padded planes of one image (`x`: `[C, H, W]`) into `xp` (`[C, stride]`).
    fn pad(&self, g: &Conv2dGeometry, x: &[f32], xp: &mut [f32]) {
        let (plane, w) = (g.in_plane(), g.in_size[1]);
        for (x_c, xp_c) in x.chunks_exact(plane).zip(xp.chunks_exact_mut(self.stride)) {
            xp_c[self.hp * self.wp..].fill(0.0);
            for (r, row) in xp_c[..self.hp * self.wp]
                .chunks_exact_mut(self.wp)
                .enumerate()
            {
                match self.row(g, r) {
                    Some((y, c0, n)) => {
                        row[..c0].fill(0.0);
                        row[c0..c0 + n].copy_from_slice(&x_c[y * w..][..n]);
                        row[c0 + n..].fill(0.0);
                    }
                    None => row.fill(0.0),
                }
            }
        }
    }

    /// Copies the interior of padded planes `dxp` (`[C, stride]`) into `dx` (`[C, H, W]`);
    /// input pixels the convolution never reads get zero.
    fn crop(&self, g: &Conv2dGeometry, dxp: &[f32], dx: &mut [f32]) {
        let (plane, w) = (g.in_plane(), g.in_size[1]);
        for (dx_c, dxp_c) in dx
            .chunks_exact_mut(plane)
            .zip(dxp.chunks_exact(self.stride))
        {
            dx_c.fill(0.0);
            for r in 0..self.hp {
                if let Some((y, c0, n)) = self.row(g, r) {
                    dx_c[y * w..][..n].copy_from_slice(&dxp_c[r * self.wp + c0..][..n]);
                }
            }
        }
    }

    /// The output gradient of one image (`[C_out, OH, OW]`) on the wide grid, extra columns
    /// zero.
    fn widen(&self, g: &Conv2dGeometry, dy: &[f32], dyw: &mut [f32]) {
        let ow = g.out_size[1];
        for (row, src) in dyw.chunks_exact_mut(self.wp).zip(dy.chunks_exact(ow)) {
            row[..ow].copy_from_slice(src);
            row[ow..].fill(0.0);
        }
    }

    /// The weights of tap `t` as a `[C_out, C_in]` matrix (a strided view of OIHW).
    fn tap<'a>(&self, g: &Conv2dGeometry, weight: &'a [f32], t: usize) -> Mat<'a> {
        let taps = self.offsets.len();
        Mat {
            data: &weight[t..],
            row_stride: g.in_channels * taps,
            col_stride: taps,
        }
    }
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
                    grid.tap(g, weight, t),
                    Mat::rows(&xp[off..], grid.stride),
                    parallel,
                );
            }
            for (y_c, yw_c) in y_b.chunks_exact_mut(p).zip(yw.chunks_exact(grid.wide)) {
                for (dst, src) in y_c.chunks_exact_mut(ow).zip(yw_c.chunks_exact(grid.wp)) {
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
                let w_t = grid.tap(g, weight, t);
                let lhs = Mat {
                    data: w_t.data,
                    row_stride: w_t.col_stride,
                    col_stride: w_t.row_stride,
                };
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
    let runs = rayon::current_num_threads().clamp(1, g.batch.max(1));
    let per_run = g.batch.div_ceil(runs).max(1);
    let partial = |images: std::ops::Range<usize>| {
        // Tap-major: `[taps, co, c]`.
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
    };
    let parts: Vec<Vec<f32>> = (0..runs)
        .into_par_iter()
        .map(|r| partial(r * per_run..((r + 1) * per_run).min(g.batch)))
        .collect();
    let mut dw = vec![0.0f32; w_len];
    if co * c == 0 {
        return dw;
    }
    // OIHW: element (o, i, t) is tap-major element (t, o, i), summed over the parts.
    dw.par_chunks_mut(c * taps)
        .enumerate()
        .for_each(|(o, dw_o)| {
            for (i, dw_oi) in dw_o.chunks_exact_mut(taps).enumerate() {
                for (t, v) in dw_oi.iter_mut().enumerate() {
                    *v = parts.iter().map(|part| part[(t * co + o) * c + i]).sum();
                }
            }
        });
    dw
}
