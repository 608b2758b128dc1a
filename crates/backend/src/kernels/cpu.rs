//! Plain-slice CPU kernels behind the flex implementation of [`super::KernelBackend`]:
//! convolution forward and backward (GEMMs over im2col tiles of bounded size, reusing one
//! buffer per thread, a direct loop for depthwise convolutions) and batch norm in two passes
//! each way, parallel on rayon.
//!
//! Every tensor here is contiguous `f32` in NCHW order (weights OIHW). Nothing here knows Burn,
//! so the kernels are tested against naive loops as well as against Burn's stock ops.

use rayon::prelude::*;

mod adam;
mod batched;
mod depthwise;
mod group_norm;
mod pool;
mod resize;
mod shifted;
mod softmax;

pub use adam::{AdamStep, adam};
pub use group_norm::{GroupShape, GroupStats, group_norm, group_norm_backward};
pub use pool::Pool;
pub use resize::{Resize, bilinear_matrix};
pub use softmax::{log_softmax_channels, log_softmax_channels_backward};

/// Runs `f` compiled for the widest SIMD instruction set this CPU has (AVX2 with FMA, or
/// AVX-512), chosen at run time; the plain x86-64 build otherwise vectorises only to SSE2.
/// What `f` calls must be `#[inline(always)]` to be compiled that way. `AUTODL_SIMD=scalar`
/// runs the baseline build instead, to check it.
#[inline(always)]
fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    if simd_enabled() {
        pulp::Arch::new().dispatch(f)
    } else {
        f()
    }
}

fn simd_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("AUTODL_SIMD").as_deref() != Ok("scalar"))
}

/// Geometry of one 2-D convolution: NCHW input, OIHW weight, NCHW output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dGeometry {
    /// Images in the batch.
    pub batch: usize,
    /// Input channels (all groups).
    pub in_channels: usize,
    /// Input height and width, unpadded.
    pub in_size: [usize; 2],
    /// Output channels (all groups).
    pub out_channels: usize,
    /// Output height and width.
    pub out_size: [usize; 2],
    /// Kernel height and width.
    pub kernel: [usize; 2],
    /// Stride along height and width.
    pub stride: [usize; 2],
    /// Zero padding before the first row and the first column. The padding after the last
    /// row and column follows from the sizes, so asymmetric ("same") padding needs no copy.
    pub pad: [usize; 2],
    /// Dilation along height and width.
    pub dilation: [usize; 2],
    /// Convolution groups.
    pub groups: usize,
}

impl Conv2dGeometry {
    fn in_per_group(&self) -> usize {
        self.in_channels / self.groups
    }

    fn out_per_group(&self) -> usize {
        self.out_channels / self.groups
    }

    /// Rows of one group's im2col matrix: input channels of the group times kernel positions.
    fn col_rows(&self) -> usize {
        self.in_per_group() * self.kernel[0] * self.kernel[1]
    }

    fn positions(&self) -> usize {
        self.out_size[0] * self.out_size[1]
    }

    fn in_plane(&self) -> usize {
        self.in_size[0] * self.in_size[1]
    }

    /// One filter per channel: every input channel is its own group with one output channel.
    pub fn is_depthwise(&self) -> bool {
        self.groups > 1 && self.groups == self.in_channels && self.groups == self.out_channels
    }

    /// A 1x1 convolution that reads every input pixel once, in order: its im2col matrix is the
    /// input itself.
    fn is_pointwise(&self) -> bool {
        self.kernel == [1, 1]
            && self.stride == [1, 1]
            && self.pad == [0, 0]
            && self.out_size == self.in_size
    }

    /// Elements of the weight tensor.
    pub fn weight_len(&self) -> usize {
        self.out_channels * self.in_per_group() * self.kernel[0] * self.kernel[1]
    }

    /// Elements of the input tensor.
    pub fn input_len(&self) -> usize {
        self.batch * self.in_channels * self.in_plane()
    }

    /// Elements of the output tensor.
    pub fn output_len(&self) -> usize {
        self.batch * self.out_channels * self.positions()
    }
}

/// The output indices `o` in `[lo, hi)` whose input index `o * stride + offset` lies in
/// `[0, size)`, where `offset` is `k * dilation - pad` for one kernel position.
fn valid_range(out: usize, size: usize, stride: usize, offset: isize) -> (usize, usize) {
    let lo = if offset >= 0 {
        0
    } else {
        offset.unsigned_abs().div_ceil(stride)
    };
    let room = size as isize - offset;
    let hi = if room <= 0 {
        0
    } else {
        ((room as usize - 1) / stride + 1).min(out)
    };
    (lo.min(hi), hi)
}

/// The input index of output index `o` (only called inside its valid range).
fn input_index(o: usize, stride: usize, offset: isize) -> usize {
    ((o * stride) as isize + offset) as usize
}

/// Offsets `k * dilation - pad` of every kernel position along one axis.
fn offsets(kernel: usize, dilation: usize, pad: usize) -> Vec<isize> {
    (0..kernel)
        .map(|k| (k * dilation) as isize - pad as isize)
        .collect()
}

/// Output rows `[r0, r1)` of one image's convolution: the tile of positions one im2col
/// buffer holds at a time.
#[derive(Debug, Clone, Copy)]
struct Rows {
    r0: usize,
    r1: usize,
}

impl Rows {
    fn positions(&self, ow: usize) -> usize {
        (self.r1 - self.r0) * ow
    }
}

/// Floats in one im2col tile: 2 MiB, so a tile stays in cache between im2col and the GEMM that
/// reads it, and the buffer each thread keeps stays small however large the image.
/// (A few rows in the unit tests, so that they cover images split into several tiles.)
const TILE_FLOATS: usize = if cfg!(test) { 96 } else { 1 << 19 };

/// The output-row tiles of one image, each of at most [`TILE_FLOATS`] im2col entries (at least
/// one row).
fn row_tiles(g: &Conv2dGeometry) -> impl Iterator<Item = Rows> + use<> {
    let [oh, ow] = g.out_size;
    let per_row = (g.col_rows() * ow).max(1);
    let step = (TILE_FLOATS / per_row).clamp(1, oh.max(1));
    (0..oh).step_by(step).map(move |r0| Rows {
        r0,
        r1: (r0 + step).min(oh),
    })
}

/// Fills `col` (`col_rows x tile positions`, row-major) with the patches of output rows
/// `rows` of one group of one image (`x`: the group's input planes).
fn im2col(g: &Conv2dGeometry, x: &[f32], rows: Rows, col: &mut [f32]) {
    im2col_strided(g, x, rows, col, rows.positions(g.out_size[1]));
}

/// [`im2col`] into a matrix whose rows are `row_stride` apart (at least the tile's positions):
/// one image's block of columns in a matrix that holds several images side by side.
fn im2col_strided(g: &Conv2dGeometry, x: &[f32], rows: Rows, col: &mut [f32], row_stride: usize) {
    let [h, w] = g.in_size;
    let [oh, ow] = g.out_size;
    let tp = rows.positions(ow);
    let off_h = offsets(g.kernel[0], g.dilation[0], g.pad[0]);
    let off_w = offsets(g.kernel[1], g.dilation[1], g.pad[1]);
    let mut dst_rows = col.chunks_mut(row_stride.max(1)).map(|r| &mut r[..tp]);
    for plane in x.chunks_exact(h * w).take(g.in_per_group()) {
        for &dh in &off_h {
            let (h0, h1) = valid_range(oh, h, g.stride[0], dh);
            let (h0, h1) = (h0.clamp(rows.r0, rows.r1), h1.clamp(rows.r0, rows.r1));
            let (h0, h1) = (h0, h1.max(h0));
            for &dw in &off_w {
                let (w0, w1) = valid_range(ow, w, g.stride[1], dw);
                let Some(dst) = dst_rows.next() else { return };
                dst[..(h0 - rows.r0) * ow].fill(0.0);
                dst[(h1 - rows.r0) * ow..].fill(0.0);
                for o in h0..h1 {
                    let ih = input_index(o, g.stride[0], dh);
                    let src = &plane[ih * w..(ih + 1) * w];
                    let at = (o - rows.r0) * ow;
                    let d = &mut dst[at..at + ow];
                    d[..w0].fill(0.0);
                    d[w1..].fill(0.0);
                    if w0 == w1 {
                        continue;
                    }
                    if g.stride[1] == 1 {
                        let s0 = input_index(w0, 1, dw);
                        d[w0..w1].copy_from_slice(&src[s0..s0 + (w1 - w0)]);
                    } else {
                        for (j, v) in d[w0..w1].iter_mut().enumerate() {
                            *v = src[input_index(w0 + j, g.stride[1], dw)];
                        }
                    }
                }
            }
        }
    }
}

/// Adds `col` (`col_rows x tile positions`) of output rows `rows` back into one group's input
/// planes: the adjoint of [`im2col`].
fn col2im(g: &Conv2dGeometry, col: &[f32], rows: Rows, x: &mut [f32]) {
    col2im_strided(g, col, rows, x, rows.positions(g.out_size[1]));
}

/// [`col2im`] from a matrix whose rows are `row_stride` apart: the adjoint of
/// [`im2col_strided`].
fn col2im_strided(g: &Conv2dGeometry, col: &[f32], rows: Rows, x: &mut [f32], row_stride: usize) {
    let [h, w] = g.in_size;
    let [oh, ow] = g.out_size;
    let tp = rows.positions(ow);
    let off_h = offsets(g.kernel[0], g.dilation[0], g.pad[0]);
    let off_w = offsets(g.kernel[1], g.dilation[1], g.pad[1]);
    let mut src_rows = col.chunks(row_stride.max(1)).map(|r| &r[..tp]);
    for plane in x.chunks_exact_mut(h * w).take(g.in_per_group()) {
        for &dh in &off_h {
            let (h0, h1) = valid_range(oh, h, g.stride[0], dh);
            let (h0, h1) = (h0.clamp(rows.r0, rows.r1), h1.clamp(rows.r0, rows.r1));
            for &dw in &off_w {
                let (w0, w1) = valid_range(ow, w, g.stride[1], dw);
                let Some(src) = src_rows.next() else { return };
                if w0 == w1 {
                    continue;
                }
                for o in h0..h1.max(h0) {
                    let ih = input_index(o, g.stride[0], dh);
                    let dst = &mut plane[ih * w..(ih + 1) * w];
                    let at = (o - rows.r0) * ow;
                    let s = &src[at + w0..at + w1];
                    if g.stride[1] == 1 {
                        let d0 = input_index(w0, 1, dw);
                        for (d, v) in dst[d0..d0 + s.len()].iter_mut().zip(s) {
                            *d += v;
                        }
                    } else {
                        for (j, v) in s.iter().enumerate() {
                            dst[input_index(w0 + j, g.stride[1], dw)] += v;
                        }
                    }
                }
            }
        }
    }
}

thread_local! {
    /// Each thread's im2col buffer, kept between calls so no step allocates or zeroes one.
    static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` on this thread's scratch buffer of at least `len` floats (contents unspecified).
/// Reentrant: a nested call (a thread stealing work while a parallel GEMM waits) gets a fresh
/// buffer.
fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    let mut buf = SCRATCH.with(|cell| cell.take());
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    let out = f(&mut buf[..len]);
    SCRATCH.with(|cell| {
        if cell.borrow().len() < buf.len() {
            cell.replace(buf);
        }
    });
    out
}

/// One matrix operand: a slice and its row and column strides in elements.
#[derive(Clone, Copy)]
struct Mat<'a> {
    data: &'a [f32],
    row_stride: usize,
    col_stride: usize,
}

impl<'a> Mat<'a> {
    fn rows(data: &'a [f32], row_stride: usize) -> Self {
        Mat {
            data,
            row_stride,
            col_stride: 1,
        }
    }

    /// The transpose of a row-major matrix with rows `row_stride` long.
    fn transposed(data: &'a [f32], row_stride: usize) -> Self {
        Mat {
            data,
            row_stride: 1,
            col_stride: row_stride,
        }
    }

    fn covers(&self, rows: usize, cols: usize) -> bool {
        rows == 0
            || cols == 0
            || (rows - 1) * self.row_stride + (cols - 1) * self.col_stride < self.data.len()
    }
}

/// `dst (m x n, row-major with rows dst_stride long) (+)= lhs (m x k) * rhs (k x n)`, through
/// the `gemm` crate (the same one flex's matmul uses, dispatched at run time to the widest SIMD
/// the CPU has).
#[allow(unsafe_code)]
fn matmul(
    [m, n, k]: [usize; 3],
    dst: &mut [f32],
    dst_stride: usize,
    accumulate: bool,
    lhs: Mat<'_>,
    rhs: Mat<'_>,
    parallel: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    let dst_covered = (m - 1) * dst_stride + n <= dst.len();
    assert!(
        dst_covered && lhs.covers(m, k) && rhs.covers(k, n) && n <= dst_stride,
        "matmul operands smaller than {m}x{k} * {k}x{n}"
    );
    if k == 0 {
        if !accumulate {
            for row in dst.chunks_mut(dst_stride).take(m) {
                row[..n].fill(0.0);
            }
        }
        return;
    }
    let parallelism = if parallel {
        gemm::Parallelism::Rayon(rayon::current_num_threads())
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the assertion above checks that every index gemm reads or writes,
    // `(i * row_stride + j * col_stride)` for `i < rows` and `j < cols` of each operand, lies
    // inside its slice; `dst` is borrowed mutably, so it aliases neither operand.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_stride as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.data.as_ptr(),
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// Whether the GEMMs inside one batch image should themselves run in parallel: only when the
/// batch alone cannot keep every thread busy.
fn inner_parallel(batch: usize) -> bool {
    batch < rayon::current_num_threads()
}

/// A 2-D convolution, `[N, C_out, OH, OW]`: per image and group, one GEMM of the weights with
/// each im2col tile (with the input itself for a 1x1 convolution), written straight into the
/// output; a direct loop for depthwise convolutions. Parallel over the batch.
pub fn conv2d_forward(
    g: &Conv2dGeometry,
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
) -> Vec<f32> {
    if g.is_depthwise() {
        return depthwise::forward(g, x, weight, bias);
    }
    if batched::applies(g) {
        return batched::forward(g, x, weight, bias);
    }
    if shifted::applies(g) {
        return shifted::forward(g, x, weight, bias);
    }
    let p = g.positions();
    let y_len = g.out_channels * p;
    let mut y = vec![0.0f32; g.output_len()];
    if y_len == 0 {
        return y;
    }
    let k = g.col_rows();
    let (cg, cog) = (g.in_per_group(), g.out_per_group());
    let plane = g.in_plane();
    let x_len = g.in_channels * plane;
    let ow = g.out_size[1];
    let pointwise = g.is_pointwise();
    let parallel = inner_parallel(g.batch);
    y.par_chunks_mut(y_len).enumerate().for_each(|(b, y_b)| {
        if let Some(bias) = bias {
            for (plane, &v) in y_b.chunks_exact_mut(p).zip(bias) {
                plane.fill(v);
            }
        }
        let accumulate = bias.is_some();
        for group in 0..g.groups {
            let w_g = Mat::rows(&weight[group * cog * k..(group + 1) * cog * k], k);
            let x_bg = &x[b * x_len + group * cg * plane..][..cg * plane];
            let y_bg = &mut y_b[group * cog * p..(group + 1) * cog * p];
            if pointwise {
                // Y_g (cog x p) = W_g (cog x cg) * X_g (cg x p)
                matmul(
                    [cog, p, k],
                    y_bg,
                    p,
                    accumulate,
                    w_g,
                    Mat::rows(x_bg, p),
                    parallel,
                );
                continue;
            }
            for rows in row_tiles(g) {
                let tp = rows.positions(ow);
                with_scratch(k * tp, |col| {
                    im2col(g, x_bg, rows, col);
                    // Y_g[:, tile] (cog x tp) = W_g (cog x k) * col (k x tp)
                    let dst = &mut y_bg[rows.r0 * ow..];
                    matmul(
                        [cog, tp, k],
                        dst,
                        p,
                        accumulate,
                        w_g,
                        Mat::rows(col, tp),
                        parallel,
                    );
                });
            }
        }
    });
    y
}

/// The gradient of a convolution with respect to its input, `[N, C_in, H, W]`.
pub fn conv2d_input_grad(g: &Conv2dGeometry, weight: &[f32], dy: &[f32]) -> Vec<f32> {
    if g.is_depthwise() {
        return depthwise::input_grad(g, weight, dy);
    }
    if batched::applies(g) {
        return batched::input_grad(g, weight, dy);
    }
    if shifted::applies(g) {
        return shifted::input_grad(g, weight, dy);
    }
    let x_len = g.in_channels * g.in_plane();
    let mut dx = vec![0.0f32; g.input_len()];
    if x_len == 0 {
        return dx;
    }
    let (k, p) = (g.col_rows(), g.positions());
    let (cg, cog) = (g.in_per_group(), g.out_per_group());
    let plane = g.in_plane();
    let ow = g.out_size[1];
    let pointwise = g.is_pointwise();
    let parallel = inner_parallel(g.batch);
    dx.par_chunks_mut(x_len).enumerate().for_each(|(b, dx_b)| {
        // Written before col2im accumulates into it (see `Pool::backward`: a zeroed allocation
        // read first faults on every page when written).
        dx_b.fill(0.0);
        for group in 0..g.groups {
            let w_g = &weight[group * cog * k..(group + 1) * cog * k];
            let dy_bg = &dy[(b * g.out_channels + group * cog) * p..][..cog * p];
            let dx_bg = &mut dx_b[group * cg * plane..(group + 1) * cg * plane];
            // dcol (k x p) = W_g^T (k x cog) * dY (cog x p)
            let lhs = Mat::transposed(w_g, k);
            if pointwise {
                matmul(
                    [k, p, cog],
                    dx_bg,
                    p,
                    false,
                    lhs,
                    Mat::rows(dy_bg, p),
                    parallel,
                );
                continue;
            }
            for rows in row_tiles(g) {
                let tp = rows.positions(ow);
                with_scratch(k * tp, |dcol| {
                    let rhs = Mat::rows(&dy_bg[rows.r0 * ow..], p);
                    matmul([k, tp, cog], dcol, tp, false, lhs, rhs, parallel);
                    col2im(g, dcol, rows, dx_bg);
                });
            }
        }
    });
    dx
}

/// The gradient of a convolution with respect to its weight, `[C_out, C_in / groups, KH, KW]`:
/// the batch in one contiguous run per thread, each accumulating GEMMs of the output gradient
/// with im2col tiles into its own copy, and the copies summed.
pub fn conv2d_weight_grad(g: &Conv2dGeometry, x: &[f32], dy: &[f32]) -> Vec<f32> {
    if g.is_depthwise() {
        return depthwise::weight_grad(g, x, dy);
    }
    if batched::applies(g) {
        return batched::weight_grad(g, x, dy);
    }
    if shifted::applies(g) {
        return shifted::weight_grad(g, x, dy);
    }
    let (k, p) = (g.col_rows(), g.positions());
    let (cg, cog) = (g.in_per_group(), g.out_per_group());
    let plane = g.in_plane();
    let x_len = g.in_channels * plane;
    let w_len = g.weight_len();
    let ow = g.out_size[1];
    let pointwise = g.is_pointwise();
    let parallel = inner_parallel(g.batch);
    summed_over_batch_runs(g.batch, w_len, |images| {
        let mut dw = vec![0.0f32; w_len];
        for b in images {
            for group in 0..g.groups {
                let x_bg = &x[b * x_len + group * cg * plane..][..cg * plane];
                let dy_bg = &dy[(b * g.out_channels + group * cog) * p..][..cog * p];
                let dw_g = &mut dw[group * cog * k..(group + 1) * cog * k];
                if pointwise {
                    // dW_g (cog x cg) += dY (cog x p) * X^T (p x cg)
                    let (lhs, rhs) = (Mat::rows(dy_bg, p), Mat::transposed(x_bg, p));
                    matmul([cog, k, p], dw_g, k, true, lhs, rhs, parallel);
                    continue;
                }
                for rows in row_tiles(g) {
                    let tp = rows.positions(ow);
                    with_scratch(k * tp, |col| {
                        im2col(g, x_bg, rows, col);
                        // dW_g (cog x k) += dY[:, tile] (cog x tp) * col^T (tp x k)
                        let lhs = Mat::rows(&dy_bg[rows.r0 * ow..], p);
                        let rhs = Mat::transposed(col, tp);
                        matmul([cog, k, tp], dw_g, k, true, lhs, rhs, parallel);
                    });
                }
            }
        }
        dw
    })
}

/// `partial` over the batch split into one contiguous run of images per thread, the runs in
/// parallel, and their results (`len` floats each) summed: a weight gradient accumulated per
/// thread without sharing a buffer.
fn summed_over_batch_runs(
    batch: usize,
    len: usize,
    partial: impl Fn(std::ops::Range<usize>) -> Vec<f32> + Sync,
) -> Vec<f32> {
    let runs = rayon::current_num_threads().clamp(1, batch.max(1));
    let per_run = batch.div_ceil(runs).max(1);
    let mut parts: Vec<Vec<f32>> = (0..runs)
        .into_par_iter()
        .map(|r| partial(r * per_run..((r + 1) * per_run).min(batch)))
        .collect();
    let mut total = parts.pop().unwrap_or_else(|| vec![0.0f32; len]);
    for part in &parts {
        for (t, v) in total.iter_mut().zip(part) {
            *t += v;
        }
    }
    total
}

/// The gradient of a convolution's bias: `dy` summed over batch and positions, `[C_out]`.
pub fn bias_grad(batch: usize, channels: usize, positions: usize, dy: &[f32]) -> Vec<f32> {
    (0..channels)
        .into_par_iter()
        .map(|c| {
            (0..batch)
                .map(|b| {
                    let plane = &dy[(b * channels + c) * positions..][..positions];
                    plane.iter().map(|&v| v as f64).sum::<f64>()
                })
                .sum::<f64>() as f32
        })
        .collect()
}

/// `[N, A]` and `[N, B]` (each image's block contiguous) side by side as `[N, A + B]`, parallel
/// over images.
pub fn cat_channels(batch: usize, [la, lb]: [usize; 2], a: &[f32], b: &[f32]) -> Vec<f32> {
    let mut y = vec![0.0f32; batch * (la + lb)];
    if la + lb == 0 {
        return y;
    }
    y.par_chunks_mut(la + lb).enumerate().for_each(|(i, y_i)| {
        y_i[..la].copy_from_slice(&a[i * la..][..la]);
        y_i[la..].copy_from_slice(&b[i * lb..][..lb]);
    });
    y
}

/// The inverse of [`cat_channels`]: each image's first `A` values and its last `B`.
pub fn split_channels(batch: usize, [la, lb]: [usize; 2], y: &[f32]) -> [Vec<f32>; 2] {
    let (mut a, mut b) = (vec![0.0f32; batch * la], vec![0.0f32; batch * lb]);
    let part = |dst: &mut Vec<f32>, len: usize, at: usize| {
        if len > 0 {
            dst.par_chunks_mut(len)
                .enumerate()
                .for_each(|(i, d)| d.copy_from_slice(&y[i * (la + lb) + at..][..len]));
        }
    };
    part(&mut a, la, 0);
    part(&mut b, lb, la);
    [a, b]
}

/// Independent accumulators of the reductions below: enough to fill an AVX-512 register and
/// to break the dependency chain of a sequential sum.
const LANES: usize = 16;

/// `sum(x)`, in [`LANES`] partial sums.
#[inline(always)]
fn lanes_sum(x: &[f32]) -> f32 {
    let mut lanes = [0.0f32; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for l in 0..LANES {
            lanes[l] += c[l];
        }
    }
    lanes.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()
}

/// `sum((x - m)^2)`, in [`LANES`] partial sums.
#[inline(always)]
fn lanes_sq_dev(x: &[f32], m: f32) -> f32 {
    let mut lanes = [0.0f32; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for l in 0..LANES {
            let d = c[l] - m;
            lanes[l] += d * d;
        }
    }
    let rest: f32 = chunks.remainder().iter().map(|&v| (v - m) * (v - m)).sum();
    lanes.iter().sum::<f32>() + rest
}

/// `(sum(dy), sum(dy * (x - m)))`, in [`LANES`] partial sums each.
#[inline(always)]
fn lanes_sum_and_dot_dev(dy: &[f32], x: &[f32], m: f32) -> (f32, f32) {
    let n = dy.len().min(x.len());
    let (dy, x) = (&dy[..n], &x[..n]);
    let mut sums = [0.0f32; LANES];
    let mut dots = [0.0f32; LANES];
    for (cd, cx) in dy.chunks_exact(LANES).zip(x.chunks_exact(LANES)) {
        for l in 0..LANES {
            sums[l] += cd[l];
            dots[l] += cd[l] * (cx[l] - m);
        }
    }
    let done = n / LANES * LANES;
    let (mut sum, mut dot) = (sums.iter().sum::<f32>(), dots.iter().sum::<f32>());
    for (&d, &v) in dy[done..].iter().zip(&x[done..]) {
        sum += d;
        dot += d * (v - m);
    }
    (sum, dot)
}

/// Batch statistics of a batch-norm forward pass, per channel.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchStats {
    /// Mean over batch and positions.
    pub mean: Vec<f32>,
    /// Biased variance over batch and positions (as Burn's `BatchNorm` computes it).
    pub var: Vec<f32>,
}

/// Per-channel mean and biased variance of `x` (`[batch, channels, positions]`), two passes in
/// `f64`, parallel over channels.
pub fn batch_stats(batch: usize, channels: usize, positions: usize, x: &[f32]) -> BatchStats {
    let count = (batch * positions).max(1) as f64;
    let (mean, var): (Vec<f32>, Vec<f32>) = (0..channels)
        .into_par_iter()
        .map(|c| {
            let planes =
                || (0..batch).map(move |b| &x[(b * channels + c) * positions..][..positions]);
            let sum: f64 = vectorized(|| planes().map(|p| lanes_sum(p) as f64).sum());
            let mean = sum / count;
            let m = mean as f32;
            let sq: f64 = vectorized(|| planes().map(|p| lanes_sq_dev(p, m) as f64).sum());
            (mean as f32, (sq / count) as f32)
        })
        .unzip();
    BatchStats { mean, var }
}

/// A channel's normalisation as one multiply and add, `x * scale + shift`.
#[inline(always)]
fn scale_shift(stats: &BatchStats, gamma: &[f32], beta: &[f32], eps: f32, c: usize) -> (f32, f32) {
    let scale = gamma[c] / (stats.var[c] + eps).sqrt();
    (scale, beta[c] - stats.mean[c] * scale)
}

/// `y = (x - mean) / sqrt(var + eps) * gamma + beta`, per channel, clamped to `clamp` when
/// given; parallel over planes.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_apply(
    channels: usize,
    positions: usize,
    x: &[f32],
    stats: &BatchStats,
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    clamp: Option<[f32; 2]>,
) -> Vec<f32> {
    let mut y = vec![0.0f32; x.len()];
    if positions == 0 {
        return y;
    }
    y.par_chunks_mut(positions)
        .zip(x.par_chunks(positions))
        .enumerate()
        .for_each(|(i, (y_plane, x_plane))| {
            let (scale, shift) = scale_shift(stats, gamma, beta, eps, i % channels);
            vectorized(|| match clamp {
                Some([min, max]) => {
                    for (o, &v) in y_plane.iter_mut().zip(x_plane) {
                        *o = clamp_one(v * scale + shift, min, max);
                    }
                }
                None => {
                    for (o, &v) in y_plane.iter_mut().zip(x_plane) {
                        *o = v * scale + shift;
                    }
                }
            })
        });
    y
}

/// `dy` where `x * scale + shift` (the unclamped output, computed as [`batch_norm_apply`]
/// computes it) lies strictly inside `[min, max]`, zero elsewhere: the clamp's gradient mask,
/// as [`clamp_mask`] takes it from the clamped output.
#[inline(always)]
fn masked(dy: f32, x: f32, (scale, shift): (f32, f32), [min, max]: [f32; 2]) -> f32 {
    let z = x * scale + shift;
    if z > min && z < max { dy } else { 0.0 }
}

/// [`lanes_sum_and_dot_dev`] of `dy` masked by a clamp of the norm's output.
#[inline(always)]
fn lanes_masked_sum_and_dot_dev(
    dy: &[f32],
    x: &[f32],
    m: f32,
    affine: (f32, f32),
    bounds: [f32; 2],
) -> (f32, f32) {
    let n = dy.len().min(x.len());
    let (dy, x) = (&dy[..n], &x[..n]);
    let mut sums = [0.0f32; LANES];
    let mut dots = [0.0f32; LANES];
    for (cd, cx) in dy.chunks_exact(LANES).zip(x.chunks_exact(LANES)) {
        for l in 0..LANES {
            let d = masked(cd[l], cx[l], affine, bounds);
            sums[l] += d;
            dots[l] += d * (cx[l] - m);
        }
    }
    let done = n / LANES * LANES;
    let (mut sum, mut dot) = (sums.iter().sum::<f32>(), dots.iter().sum::<f32>());
    for (&d, &v) in dy[done..].iter().zip(&x[done..]) {
        let d = masked(d, v, affine, bounds);
        sum += d;
        dot += d * (v - m);
    }
    (sum, dot)
}

/// Gradients of a training-mode batch norm (batch statistics), its output clamped to `clamp`
/// when given: `dy` is overwritten with the input gradient (each element depends only on its own
/// `dy` and `x`, so no buffer is allocated, zeroed and faulted in), and `(dgamma, dbeta)` are
/// returned. The clamp's mask is recomputed from `x` in both passes rather than applied to `dy`
/// in a pass of its own.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_backward(
    batch: usize,
    channels: usize,
    positions: usize,
    x: &[f32],
    stats: &BatchStats,
    [gamma, beta]: [&[f32]; 2],
    eps: f32,
    clamp: Option<[f32; 2]>,
    dy: &mut [f32],
) -> (Vec<f32>, Vec<f32>) {
    let count = (batch * positions).max(1) as f64;
    let inv_std: Vec<f32> = stats.var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
    let dy_in: &[f32] = dy;
    let (dgamma, dbeta): (Vec<f32>, Vec<f32>) = (0..channels)
        .into_par_iter()
        .map(|c| {
            let (m, s) = (stats.mean[c], inv_std[c]);
            let mut sum_dy = 0.0f64;
            let mut sum_dy_xhat = 0.0f64;
            for b in 0..batch {
                let at = (b * channels + c) * positions;
                let xs = &x[at..at + positions];
                let ds = &dy_in[at..at + positions];
                let (a, bsum) = vectorized(|| match clamp {
                    Some(bounds) => {
                        let affine = scale_shift(stats, gamma, beta, eps, c);
                        lanes_masked_sum_and_dot_dev(ds, xs, m, affine, bounds)
                    }
                    None => lanes_sum_and_dot_dev(ds, xs, m),
                });
                sum_dy += a as f64;
                sum_dy_xhat += (bsum * s) as f64;
            }
            (sum_dy_xhat as f32, sum_dy as f32)
        })
        .unzip();
    if positions == 0 {
        return (dgamma, dbeta);
    }
    dy.par_chunks_mut(positions)
        .enumerate()
        .for_each(|(i, dx_plane)| {
            let c = i % channels;
            let at = i * positions;
            let xs = &x[at..at + positions];
            let (m, s) = (stats.mean[c], inv_std[c]);
            let k = gamma[c] * s;
            let mean_dy = (dbeta[c] as f64 / count) as f32;
            let mean_dy_xhat = (dgamma[c] as f64 / count) as f32;
            vectorized(|| match clamp {
                Some(bounds) => {
                    let affine = scale_shift(stats, gamma, beta, eps, c);
                    for (o, &xv) in dx_plane.iter_mut().zip(xs) {
                        let xhat = (xv - m) * s;
                        let dv = masked(*o, xv, affine, bounds);
                        *o = k * (dv - mean_dy - xhat * mean_dy_xhat);
                    }
                }
                None => {
                    for (o, &xv) in dx_plane.iter_mut().zip(xs) {
                        let xhat = (xv - m) * s;
                        *o = k * (*o - mean_dy - xhat * mean_dy_xhat);
                    }
                }
            })
        });
    (dgamma, dbeta)
}

/// `v` clamped to `[min, max]`, NaN staying NaN (as in Burn's).
#[inline(always)]
fn clamp_one(v: f32, min: f32, max: f32) -> f32 {
    if v < min {
        min
    } else if v > max {
        max
    } else {
        v
    }
}

/// A clamp to `[min, max]` in place, parallel over chunks (NaN stays NaN, as in Burn's).
pub fn clamp(x: &mut [f32], min: f32, max: f32) {
    const CHUNK: usize = 1 << 15;
    x.par_chunks_mut(CHUNK).for_each(|x| {
        vectorized(|| {
            for v in x.iter_mut() {
                *v = clamp_one(*v, min, max);
            }
        })
    });
}

/// The backward pass of a clamp to `[min, max]`, in place: `dy` is zeroed where the output `y`
/// sits on a bound. Parallel over chunks.
pub fn clamp_mask(y: &[f32], dy: &mut [f32], min: f32, max: f32) {
    const CHUNK: usize = 1 << 15;
    dy.par_chunks_mut(CHUNK)
        .zip(y.par_chunks(CHUNK))
        .for_each(|(d, y)| {
            vectorized(|| {
                for (d, &y) in d.iter_mut().zip(y) {
                    *d = if y > min && y < max { *d } else { 0.0 };
                }
            })
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic pseudo-random sequence in [-1, 1).
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// The plain definition of a convolution, to check the kernels' adjoints against.
    fn naive_forward(g: &Conv2dGeometry, x: &[f32], w: &[f32]) -> Vec<f32> {
        let [h, wd] = g.in_size;
        let [oh, ow] = g.out_size;
        let (cg, cog) = (g.in_per_group(), g.out_per_group());
        let mut y = vec![0.0f32; g.output_len()];
        for b in 0..g.batch {
            for co in 0..g.out_channels {
                let group = co / cog;
                for i in 0..oh {
                    for j in 0..ow {
                        let mut acc = 0.0;
                        for ci in 0..cg {
                            for a in 0..g.kernel[0] {
                                for c in 0..g.kernel[1] {
                                    let ih = (i * g.stride[0] + a * g.dilation[0]) as isize
                                        - g.pad[0] as isize;
                                    let iw = (j * g.stride[1] + c * g.dilation[1]) as isize
                                        - g.pad[1] as isize;
                                    if ih < 0 || iw < 0 || ih >= h as isize || iw >= wd as isize {
                                        continue;
                                    }
                                    let xi = ((b * g.in_channels + group * cg + ci) * h
                                        + ih as usize)
                                        * wd
                                        + iw as usize;
                                    let wi = ((co * cg + ci) * g.kernel[0] + a) * g.kernel[1] + c;
                                    acc += x[xi] * w[wi];
                                }
                            }
                        }
                        y[((b * g.out_channels + co) * oh + i) * ow + j] = acc;
                    }
                }
            }
        }
        y
    }

    fn geometry(
        batch: usize,
        [cin, cout, groups]: [usize; 3],
        in_size: [usize; 2],
        kernel: [usize; 2],
        stride: [usize; 2],
        pad: [[usize; 2]; 2],
        dilation: [usize; 2],
    ) -> Conv2dGeometry {
        let out = |i: usize| {
            (in_size[i] + pad[0][i] + pad[1][i] - dilation[i] * (kernel[i] - 1) - 1) / stride[i] + 1
        };
        Conv2dGeometry {
            batch,
            in_channels: cin,
            in_size,
            out_channels: cout,
            out_size: [out(0), out(1)],
            kernel,
            stride,
            pad: pad[0],
            dilation,
            groups,
        }
    }

    fn dot64(a: &[f32], b: &[f32]) -> f64 {
        a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
    }

    /// `<dy, conv(x, w)> = <dx, x> = <dw, w>` for the kernels' gradients, the defining
    /// property of the adjoint, checked on geometries covering every code path.
    #[test]
    fn gradients_are_the_adjoints_of_the_forward() {
        let cases = [
            geometry(
                2,
                [4, 6, 1],
                [7, 9],
                [3, 3],
                [1, 1],
                [[1, 1], [1, 1]],
                [1, 1],
            ),
            geometry(
                3,
                [3, 5, 1],
                [11, 8],
                [7, 7],
                [2, 2],
                [[3, 3], [3, 3]],
                [1, 1],
            ),
            geometry(
                2,
                [6, 4, 2],
                [6, 6],
                [3, 3],
                [2, 1],
                [[0, 1], [1, 0]],
                [1, 1],
            ),
            geometry(
                1,
                [5, 8, 1],
                [5, 7],
                [1, 1],
                [1, 1],
                [[0, 0], [0, 0]],
                [1, 1],
            ),
            geometry(
                2,
                [5, 8, 1],
                [6, 7],
                [1, 1],
                [2, 2],
                [[0, 0], [0, 0]],
                [1, 1],
            ),
            geometry(
                2,
                [4, 4, 1],
                [9, 9],
                [3, 3],
                [1, 1],
                [[2, 2], [2, 2]],
                [2, 2],
            ),
            geometry(
                3,
                [6, 6, 6],
                [9, 10],
                [3, 3],
                [1, 1],
                [[1, 1], [1, 1]],
                [1, 1],
            ),
            geometry(
                2,
                [5, 5, 5],
                [9, 8],
                [5, 5],
                [2, 2],
                [[1, 2], [1, 2]],
                [1, 1],
            ),
            geometry(
                2,
                [3, 3, 3],
                [8, 8],
                [3, 3],
                [1, 1],
                [[2, 2], [2, 2]],
                [2, 2],
            ),
            geometry(
                2,
                [4, 8, 4],
                [6, 5],
                [3, 3],
                [1, 1],
                [[1, 1], [1, 1]],
                [1, 1],
            ),
            // Stride 1 with an even number of positions: the shifted-GEMM path (one image, so
            // its GEMMs run in parallel; non-square kernels, dilation, asymmetric and wide
            // padding, no padding).
            geometry(
                1,
                [4, 6, 1],
                [8, 9],
                [3, 3],
                [1, 1],
                [[1, 1], [1, 1]],
                [1, 1],
            ),
            geometry(
                3,
                [3, 5, 1],
                [7, 10],
                [3, 5],
                [1, 1],
                [[0, 2], [1, 1]],
                [1, 2],
            ),
            geometry(
                2,
                [5, 4, 1],
                [9, 8],
                [2, 2],
                [1, 1],
                [[0, 0], [0, 0]],
                [1, 1],
            ),
            geometry(
                2,
                [3, 4, 1],
                [4, 5],
                [3, 3],
                [1, 1],
                [[2, 2], [2, 2]],
                [1, 1],
            ),
            // Strided on the shifted path (phases): stride 2, stride 2 by 1 with dilation and
            // asymmetric padding, stride 3.
            geometry(
                1,
                [4, 6, 1],
                [9, 8],
                [3, 3],
                [2, 2],
                [[1, 1], [1, 1]],
                [1, 1],
            ),
            geometry(
                1,
                [5, 3, 1],
                [10, 9],
                [3, 2],
                [2, 1],
                [[2, 0], [1, 1]],
                [2, 1],
            ),
            geometry(
                1,
                [4, 2, 1],
                [11, 10],
                [3, 3],
                [3, 3],
                [[1, 0], [0, 2]],
                [1, 1],
            ),
        ];
        let strided_shifted = cases
            .iter()
            .filter(|g| g.stride != [1, 1] && !batched::applies(g) && shifted::applies(g))
            .count();
        assert!(strided_shifted >= 3, "strided shifted path covered");
        let shifted_cases = cases
            .iter()
            .filter(|g| !batched::applies(g) && shifted::applies(g))
            .count();
        let batched_cases = cases.iter().filter(|g| batched::applies(g)).count();
        assert!(
            shifted_cases >= 4 && batched_cases >= 2,
            "every path covered"
        );
        for (n, g) in cases.iter().enumerate() {
            let x = values(g.input_len(), 1 + n as u64);
            let w = values(g.weight_len(), 100 + n as u64);
            let dy = values(g.output_len(), 200 + n as u64);
            let y = naive_forward(g, &x, &w);
            let bias = values(g.out_channels, 300 + n as u64);
            let got = conv2d_forward(g, &x, &w, None);
            let got_bias = conv2d_forward(g, &x, &w, Some(&bias));
            let p = g.positions();
            for (i, &expect) in y.iter().enumerate() {
                let c = (i / p) % g.out_channels;
                assert!(
                    (got[i] - expect).abs() < 1e-4,
                    "case {n} {g:?}: y[{i}] {} vs {expect}",
                    got[i]
                );
                assert!(
                    (got_bias[i] - expect - bias[c]).abs() < 1e-4,
                    "case {n}: bias at {i}"
                );
            }
            let lhs = dot64(&dy, &y);
            let dx = conv2d_input_grad(g, &w, &dy);
            let dw = conv2d_weight_grad(g, &x, &dy);
            let via_x = dot64(&dx, &x);
            let via_w = dot64(&dw, &w);
            let tol = 1e-4 * lhs.abs().max(1.0);
            assert!(
                (lhs - via_x).abs() < tol,
                "case {n} {g:?}: dx {via_x} vs {lhs}"
            );
            assert!(
                (lhs - via_w).abs() < tol,
                "case {n} {g:?}: dw {via_w} vs {lhs}"
            );
            // And element by element: the weight gradient of each weight is the forward with
            // that weight alone set to one.
            for probe in [0, g.weight_len() / 2, g.weight_len() - 1] {
                let mut e = vec![0.0; g.weight_len()];
                e[probe] = 1.0;
                let expect = dot64(&dy, &naive_forward(g, &x, &e));
                assert!((expect - dw[probe] as f64).abs() < 1e-4 * expect.abs().max(1.0));
            }
        }
    }

    #[test]
    fn bias_gradient_sums_batch_and_positions() {
        let dy = values(2 * 3 * 5, 9);
        let got = bias_grad(2, 3, 5, &dy);
        for c in 0..3 {
            let expect: f32 = (0..2)
                .flat_map(|b| dy[(b * 3 + c) * 5..][..5].to_vec())
                .sum();
            assert!((got[c] - expect).abs() < 1e-5);
        }
    }

    #[test]
    fn batch_norm_backward_matches_finite_differences() {
        let (n, c, s) = (3, 4, 5);
        let x = values(n * c * s, 3);
        let gamma = values(c, 4);
        let beta = values(c, 5);
        let dy = values(n * c * s, 6);
        let eps = 1e-5;
        let loss = |x: &[f32], gamma: &[f32], beta: &[f32]| {
            let stats = batch_stats(n, c, s, x);
            dot64(
                &batch_norm_apply(c, s, x, &stats, gamma, beta, eps, None),
                &dy,
            )
        };
        let stats = batch_stats(n, c, s, &x);
        let mut dx = dy.clone();
        let (dgamma, dbeta) =
            batch_norm_backward(n, c, s, &x, &stats, [&gamma, &beta], eps, None, &mut dx);
        let h = 1e-2f32;
        for i in [0, 7, 33, n * c * s - 1] {
            let (mut up, mut down) = (x.clone(), x.clone());
            up[i] += h;
            down[i] -= h;
            let fd = (loss(&up, &gamma, &beta) - loss(&down, &gamma, &beta)) / (2.0 * h as f64);
            assert!(
                (fd - dx[i] as f64).abs() < 2e-2 * fd.abs().max(0.1),
                "dx[{i}] {fd} vs {}",
                dx[i]
            );
        }
        for i in 0..c {
            let (mut up, mut down) = (gamma.clone(), gamma.clone());
            up[i] += h;
            down[i] -= h;
            let fd = (loss(&x, &up, &beta) - loss(&x, &down, &beta)) / (2.0 * h as f64);
            assert!((fd - dgamma[i] as f64).abs() < 1e-2 * fd.abs().max(0.1));
            let expect: f32 = (0..n)
                .flat_map(|b| dy[(b * c + i) * s..][..s].to_vec())
                .sum();
            assert!((expect - dbeta[i]).abs() < 1e-4);
        }
    }

    /// Batch norm with a fused clamp equals the norm followed by [`clamp`], forward and
    /// backward ([`clamp_mask`] then the unclamped backward pass), bit for bit.
    #[test]
    fn batch_norm_with_a_clamp_equals_norm_then_clamp() {
        let (n, c, s) = (2, 3, 37);
        let x: Vec<f32> = values(n * c * s, 13).iter().map(|v| v * 4.0).collect();
        let gamma = values(c, 14);
        let beta = values(c, 15);
        let dy = values(n * c * s, 16);
        let eps = 1e-5;
        let stats = batch_stats(n, c, s, &x);
        for bounds in [[0.0, f32::INFINITY], [0.0, 0.5], [-0.3, 0.2]] {
            let fused = batch_norm_apply(c, s, &x, &stats, &gamma, &beta, eps, Some(bounds));
            let mut y = batch_norm_apply(c, s, &x, &stats, &gamma, &beta, eps, None);
            clamp(&mut y, bounds[0], bounds[1]);
            assert_eq!(fused, y, "{bounds:?}: forward");
            assert!(y.iter().any(|&v| v == bounds[0]), "{bounds:?}: clamps");
            let mut got_dx = dy.clone();
            let got = batch_norm_backward(
                n,
                c,
                s,
                &x,
                &stats,
                [&gamma, &beta],
                eps,
                Some(bounds),
                &mut got_dx,
            );
            let mut want_dx = dy.clone();
            clamp_mask(&y, &mut want_dx, bounds[0], bounds[1]);
            let want = batch_norm_backward(
                n,
                c,
                s,
                &x,
                &stats,
                [&gamma, &beta],
                eps,
                None,
                &mut want_dx,
            );
            assert_eq!((got, got_dx), (want, want_dx), "{bounds:?}: backward");
        }
    }
}
