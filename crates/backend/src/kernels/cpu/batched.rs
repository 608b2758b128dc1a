//! Convolutions of small planes as one GEMM for the whole batch.
//!
//! Per image, a 7x7 or 14x14 plane (ResNet's last stages, U-Net's deepest) gives GEMMs with
//! only 49 or 196 positions: the matrix kernel's blocks are mostly empty at the edges (49
//! positions fill one and a fiftieth of its 48-row blocks) and the weight gradient sums many
//! thin products. Here the im2col matrices of all images sit side by side, `[K, N * P]`, so
//! each pass is one large GEMM run on every thread, and the output (or the output gradient) is
//! moved between `[N, C_out, P]` and `[C_out, N * P]` by one parallel copy.

use rayon::prelude::*;

use super::{Conv2dGeometry, Mat, Rows, col2im_strided, im2col_strided, matmul, with_scratch};

/// Planes of at most this many output positions take the batched path (ResNet-18's 3x3 layers
/// at batch 8: 7x7 went from 65 to 27 ms a forward and backward, 14x14 from 29 to 25 ms, and
/// 28x28 was slower batched, 32 against 28 ms).
const MAX_POSITIONS: usize = 256;

/// Floats of the batched im2col matrix at most (64 MiB).
const MAX_COL_FLOATS: usize = 1 << 24;

/// Whether `g` takes the batched path: an ordinary (one-group) convolution of several images
/// with small planes. In the unit tests, every other shape takes it, so that the random cases
/// cover both paths.
pub(super) fn applies(g: &Conv2dGeometry) -> bool {
    let p = g.positions();
    let fits =
        g.groups == 1 && g.batch > 1 && p > 0 && g.col_rows() * g.batch * p <= MAX_COL_FLOATS;
    if cfg!(test) {
        fits && p % 2 == 1
    } else {
        fits && p <= MAX_POSITIONS
    }
}

/// One input channel's geometry: im2col of one plane gives that channel's `KH * KW` rows.
fn one_channel(g: &Conv2dGeometry) -> Conv2dGeometry {
    Conv2dGeometry {
        in_channels: 1,
        groups: 1,
        ..*g
    }
}

/// Fills `col` (`[C_in * KH * KW, N * P]`) with every image's patches, in parallel over input
/// channels.
fn im2col_all(g: &Conv2dGeometry, x: &[f32], col: &mut [f32]) {
    let (p, plane) = (g.positions(), g.in_plane());
    let bp = g.batch * p;
    let taps = g.kernel[0] * g.kernel[1];
    let g1 = one_channel(g);
    let whole = Rows {
        r0: 0,
        r1: g.out_size[0],
    };
    col.par_chunks_mut(taps * bp)
        .enumerate()
        .for_each(|(c, block)| {
            for b in 0..g.batch {
                let x_bc = &x[(b * g.in_channels + c) * plane..][..plane];
                im2col_strided(&g1, x_bc, whole, &mut block[b * p..], bp);
            }
        });
}

/// `[N, C, P]` to `[C, N * P]`.
fn to_channel_major(batch: usize, channels: usize, p: usize, src: &[f32], dst: &mut [f32]) {
    dst.par_chunks_mut(batch * p)
        .enumerate()
        .for_each(|(c, row)| {
            for (b, part) in row.chunks_exact_mut(p).enumerate() {
                part.copy_from_slice(&src[(b * channels + c) * p..][..p]);
            }
        });
}

/// A convolution of small planes: `W [C_out, K] * col [K, N * P]`, then back to NCHW with the
/// bias added.
pub(super) fn forward(
    g: &Conv2dGeometry,
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
) -> Vec<f32> {
    let (k, p, co) = (g.col_rows(), g.positions(), g.out_channels);
    let bp = g.batch * p;
    let mut y = vec![0.0f32; g.output_len()];
    with_scratch(k * bp + co * bp, |buf| {
        let (col, yt) = buf.split_at_mut(k * bp);
        im2col_all(g, x, col);
        matmul(
            [co, bp, k],
            yt,
            bp,
            false,
            Mat::rows(weight, k),
            Mat::rows(col, bp),
            true,
        );
        let yt = &*yt;
        y.par_chunks_mut(p).enumerate().for_each(|(i, plane)| {
            let (b, c) = (i / co, i % co);
            plane.copy_from_slice(&yt[c * bp + b * p..][..p]);
            if let Some(bias) = bias {
                let v = bias[c];
                plane.iter_mut().for_each(|o| *o += v);
            }
        });
    });
    y
}

/// The input gradient: `dcol [K, N * P] = Wᵀ * dY [C_out, N * P]`, then each image's columns
/// added back into its planes.
pub(super) fn input_grad(g: &Conv2dGeometry, weight: &[f32], dy: &[f32]) -> Vec<f32> {
    let (k, p, co) = (g.col_rows(), g.positions(), g.out_channels);
    let bp = g.batch * p;
    let x_len = g.in_channels * g.in_plane();
    let mut dx = vec![0.0f32; g.input_len()];
    with_scratch(k * bp + co * bp, |buf| {
        let (dcol, dyt) = buf.split_at_mut(k * bp);
        to_channel_major(g.batch, co, p, dy, dyt);
        matmul(
            [k, bp, co],
            dcol,
            bp,
            false,
            Mat::transposed(weight, k),
            Mat::rows(dyt, bp),
            true,
        );
        let dcol = &*dcol;
        let whole = Rows {
            r0: 0,
            r1: g.out_size[0],
        };
        dx.par_chunks_mut(x_len).enumerate().for_each(|(b, dx_b)| {
            // Written first: see `conv2d_input_grad`.
            dx_b.fill(0.0);
            col2im_strided(g, &dcol[b * p..], whole, dx_b, bp);
        });
    });
    dx
}

/// The weight gradient: `dW [C_out, K] = dY [C_out, N * P] * colᵀ [N * P, K]`.
pub(super) fn weight_grad(g: &Conv2dGeometry, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let (k, p, co) = (g.col_rows(), g.positions(), g.out_channels);
    let bp = g.batch * p;
    let mut dw = vec![0.0f32; g.weight_len()];
    with_scratch(k * bp + co * bp, |buf| {
        let (col, dyt) = buf.split_at_mut(k * bp);
        im2col_all(g, x, col);
        to_channel_major(g.batch, co, p, dy, dyt);
        matmul(
            [co, k, bp],
            &mut dw,
            k,
            false,
            Mat::rows(dyt, bp),
            Mat::transposed(col, bp),
            true,
        );
    });
    dw
}
