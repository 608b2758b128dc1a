//! Max pooling, forward and backward, parallel over `(image, channel)` planes. Each output row
//! first takes the maximum down its window's rows for the whole plane width (contiguous rows,
//! vectorised), then across each window's columns. The backward pass finds each window's
//! maximum the same way and routes the gradient to its first occurrence in row-major order
//! (as Burn's indices do) instead of keeping an index tensor.

use rayon::prelude::*;

/// One max pooling's geometry: window, stride and padding over `[h, w]` planes giving
/// `[oh, ow]` outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
    in_size: [usize; 2],
    out_size: [usize; 2],
}

impl Pool {
    /// The geometry; `out_size` is the pooled size the caller computed.
    pub fn new(
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
        in_size: [usize; 2],
        out_size: [usize; 2],
    ) -> Pool {
        Pool {
            kernel,
            stride: [stride[0].max(1), stride[1].max(1)],
            padding,
            in_size,
            out_size,
        }
    }

    /// The input rows (or columns, `axis` 1) of output `o`'s window inside the plane.
    #[inline(always)]
    fn window(&self, axis: usize, o: usize) -> (usize, usize) {
        let start = (o * self.stride[axis]) as isize - self.padding[axis] as isize;
        let end = start + self.kernel[axis] as isize;
        let size = self.in_size[axis] as isize;
        (start.clamp(0, size) as usize, end.clamp(0, size) as usize)
    }

    /// The maximum over each column of output row `o`'s window rows, into `colmax` (one entry
    /// per input column); `false` when the window holds no input row.
    #[inline(always)]
    fn column_max(&self, plane: &[f32], o: usize, colmax: &mut [f32]) -> bool {
        let (r0, r1) = self.window(0, o);
        if r0 == r1 {
            return false;
        }
        let w = self.in_size[1];
        colmax.copy_from_slice(&plane[r0 * w..(r0 + 1) * w]);
        for r in r0 + 1..r1 {
            for (m, &v) in colmax.iter_mut().zip(&plane[r * w..(r + 1) * w]) {
                *m = nan_max(*m, v);
            }
        }
        true
    }

    /// The maximum of output `(o, j)`'s window from its row's column maxima, if the window holds
    /// any input pixel.
    #[inline(always)]
    fn window_max(&self, colmax: &[f32], j: usize) -> Option<f32> {
        let (c0, c1) = self.window(1, j);
        let (&first, rest) = colmax[c0..c1].split_first()?;
        Some(rest.iter().fold(first, |m, &v| nan_max(m, v)))
    }

    fn planes(&self, len: usize) -> usize {
        len / (self.in_size[0] * self.in_size[1]).max(1)
    }

    /// The pooled planes of `x`.
    pub fn forward(&self, x: &[f32]) -> Vec<f32> {
        let in_plane = self.in_size[0] * self.in_size[1];
        let [oh, ow] = self.out_size;
        let mut y = vec![0.0f32; self.planes(x.len()) * oh * ow];
        if oh * ow == 0 || in_plane == 0 {
            return y;
        }
        let w = self.in_size[1];
        y.par_chunks_mut(oh * ow)
            .zip(x.par_chunks(in_plane))
            .for_each(|(y_plane, plane)| {
                let mut colmax = vec![0.0f32; w];
                for (o, y_row) in y_plane.chunks_exact_mut(ow).enumerate() {
                    if !super::vectorized(|| self.column_max(plane, o, &mut colmax)) {
                        y_row.fill(f32::NEG_INFINITY);
                        continue;
                    }
                    for (j, out) in y_row.iter_mut().enumerate() {
                        *out = self.window_max(&colmax, j).unwrap_or(f32::NEG_INFINITY);
                    }
                }
            });
        y
    }

    /// The input gradient for the output gradient `dy`: each output's gradient goes to the first
    /// element (row-major) of its window that holds the window's maximum. Per output row, one
    /// vectorised pass down the window's rows gives each column's maximum and the first row
    /// holding it; each output then compares its few columns.
    pub fn backward(&self, x: &[f32], dy: &[f32]) -> Vec<f32> {
        let in_plane = self.in_size[0] * self.in_size[1];
        let [oh, ow] = self.out_size;
        let mut dx = vec![0.0f32; x.len()];
        if oh * ow == 0 || in_plane == 0 {
            return dx;
        }
        let w = self.in_size[1];
        let cols: Vec<(usize, usize)> = (0..ow).map(|j| self.window(1, j)).collect();
        dx.par_chunks_mut(in_plane)
            .zip(x.par_chunks(in_plane))
            .zip(dy.par_chunks(oh * ow))
            .for_each(|((dx_plane, plane), dy_plane)| {
                // Written here rather than relying on the zeroed allocation: fresh zeroed pages
                // are the kernel's shared zero page until written, and the scattered `+=` below
                // would then fault on each page to copy it, with a TLB shootdown across cores.
                dx_plane.fill(0.0);
                let mut colmax = vec![0.0f32; w];
                let mut colrow = vec![0u32; w];
                for (o, dy_row) in dy_plane.chunks_exact(ow).enumerate() {
                    let (r0, r1) = self.window(0, o);
                    if r0 == r1 {
                        continue;
                    }
                    super::vectorized(|| {
                        column_first_max(plane, w, (r0, r1), &mut colmax, &mut colrow)
                    });
                    for (&g, &(c0, c1)) in dy_row.iter().zip(&cols) {
                        let (Some(&first), Some(&first_row)) = (colmax.get(c0), colrow.get(c0))
                        else {
                            continue;
                        };
                        let (mut bv, mut at) = (first, first_row as usize * w + c0);
                        for ((&v, &r), c) in colmax[c0..c1]
                            .iter()
                            .zip(&colrow[c0..c1])
                            .zip(c0..c1)
                            .skip(1)
                        {
                            let here = r as usize * w + c;
                            let equal = v == bv || (v.is_nan() && bv.is_nan());
                            // A larger maximum (or the first NaN), or the same one earlier in
                            // row-major order; selects, not branches (random data mispredicts).
                            let better = takes(bv, v) | (equal & (here < at));
                            bv = if better { v } else { bv };
                            at = if better { here } else { at };
                        }
                        dx_plane[at] += g;
                    }
                }
            });
        dx
    }
}

/// Whether [`nan_max`]`(a, b)` is `b` rather than `a`: `b` strictly larger, or `b` the first NaN.
#[inline(always)]
fn takes(a: f32, b: f32) -> bool {
    b > a || (b.is_nan() && !a.is_nan())
}

/// For each column of the plane, the maximum over rows `r0..r1` (under [`nan_max`]) into
/// `colmax` and the first row holding it into `colrow`.
#[inline(always)]
fn column_first_max(
    plane: &[f32],
    w: usize,
    (r0, r1): (usize, usize),
    colmax: &mut [f32],
    colrow: &mut [u32],
) {
    colmax.copy_from_slice(&plane[r0 * w..(r0 + 1) * w]);
    colrow.fill(r0 as u32);
    for r in r0 + 1..r1 {
        let row = r as u32;
        for ((m, at), &v) in colmax
            .iter_mut()
            .zip(colrow.iter_mut())
            .zip(&plane[r * w..(r + 1) * w])
        {
            // Selects rather than a branch, so that the loop vectorises.
            let t = takes(*m, v);
            *m = if t { v } else { *m };
            *at = if t { row } else { *at };
        }
    }
}

/// The larger of `a` and `b`, NaN winning (as in Burn's kernels, so it propagates); `a` on a tie.
#[inline(always)]
fn nan_max(a: f32, b: f32) -> f32 {
    if takes(a, b) { b } else { a }
}
