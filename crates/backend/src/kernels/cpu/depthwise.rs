//! Direct depthwise convolution (one filter per channel), forward and both gradients.
//!
//! Every kernel walks output rows and, per kernel position, runs one contiguous multiply-add
//! or dot product along the row. A stride along the width would make those reads gathers, so a
//! strided plane is first split into its column phases (`phase[p][r][j] = plane[r][j * s + p]`),
//! where every kernel position reads (or, for the input gradient, writes) one contiguous run.
//! The loops are compiled for the widest SIMD the CPU has ([`super::vectorized`]).

use rayon::prelude::*;

use super::{Conv2dGeometry, offsets, valid_range, vectorized, with_scratch};

/// One kernel column: the column phase it reads, the shift within that phase, and the output
/// columns `[w0, w1)` whose input lies inside the image.
#[derive(Debug, Clone, Copy)]
struct Column {
    phase: usize,
    shift: isize,
    w0: usize,
    w1: usize,
}

/// One kernel row: its input-row offset and the output rows `[h0, h1)` it reaches.
#[derive(Debug, Clone, Copy)]
struct Row {
    offset: isize,
    h0: usize,
    h1: usize,
}

/// The loop plan of one depthwise convolution.
struct Plan {
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    /// Column stride, the number of phases.
    sw: usize,
    /// Width of one phase row (`w` when unstrided).
    wp: usize,
    stride_h: usize,
    rows: Vec<Row>,
    cols: Vec<Column>,
}

impl Plan {
    fn new(g: &Conv2dGeometry) -> Plan {
        let [h, w] = g.in_size;
        let [oh, ow] = g.out_size;
        let sw = g.stride[1].max(1);
        let rows = offsets(g.kernel[0], g.dilation[0], g.pad[0])
            .into_iter()
            .map(|offset| {
                let (h0, h1) = valid_range(oh, h, g.stride[0], offset);
                Row { offset, h0, h1 }
            })
            .collect();
        let cols = offsets(g.kernel[1], g.dilation[1], g.pad[1])
            .into_iter()
            .map(|d| {
                let (w0, w1) = valid_range(ow, w, sw, d);
                Column {
                    phase: d.rem_euclid(sw as isize) as usize,
                    shift: d.div_euclid(sw as isize),
                    w0,
                    w1,
                }
            })
            .collect();
        Plan {
            h,
            w,
            oh,
            ow,
            sw,
            wp: if sw == 1 { w } else { w.div_ceil(sw) },
            stride_h: g.stride[0],
            rows,
            cols,
        }
    }

    fn taps(&self) -> usize {
        self.rows.len() * self.cols.len()
    }

    /// Floats of a plane's phase split (zero when unstrided: the plane is read in place).
    fn phases_len(&self) -> usize {
        if self.sw == 1 {
            0
        } else {
            self.sw * self.h * self.wp
        }
    }

    /// Input row of output row `o` under kernel row `row`.
    #[inline(always)]
    fn input_row(&self, o: usize, row: &Row) -> usize {
        (o as isize * self.stride_h as isize + row.offset) as usize
    }

    /// Start, in `split` layout (the plane itself when unstrided), of the run kernel column
    /// `col` reads on input row `ih`.
    #[inline(always)]
    fn start(&self, ih: usize, col: &Column) -> usize {
        (((col.phase * self.h + ih) * self.wp) as isize + col.w0 as isize + col.shift) as usize
    }

    /// Splits `plane` into column phases in `out`.
    #[inline(always)]
    fn split(&self, plane: &[f32], out: &mut [f32]) {
        let (h, w, s, wp) = (self.h, self.w, self.sw, self.wp);
        for r in 0..h {
            let src = &plane[r * w..(r + 1) * w];
            for p in 0..s {
                let dst = &mut out[(p * h + r) * wp..(p * h + r + 1) * wp];
                let mut n = 0;
                for (d, v) in dst.iter_mut().zip(src.iter().skip(p).step_by(s)) {
                    *d = *v;
                    n += 1;
                }
                dst[n..].fill(0.0);
            }
        }
    }

    /// The inverse of [`Plan::split`]: interleaves the phases back into `plane`.
    #[inline(always)]
    fn merge(&self, phases: &[f32], plane: &mut [f32]) {
        let (h, w, s, wp) = (self.h, self.w, self.sw, self.wp);
        for r in 0..h {
            let dst = &mut plane[r * w..(r + 1) * w];
            for p in 0..s {
                let src = &phases[(p * h + r) * wp..(p * h + r + 1) * wp];
                for (d, v) in dst.iter_mut().skip(p).step_by(s).zip(src) {
                    *d = *v;
                }
            }
        }
    }
}

/// `dst += a * src`.
#[inline(always)]
fn axpy(dst: &mut [f32], src: &[f32], a: f32) {
    for (d, v) in dst.iter_mut().zip(src) {
        *d += a * v;
    }
}

/// A dot product in sixteen independent lanes, so the compiler vectorises it.
#[inline(always)]
pub(super) fn dot(a: &[f32], b: &[f32]) -> f32 {
    const L: usize = 16;
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut lanes = [0.0f32; L];
    for (ca, cb) in a.chunks_exact(L).zip(b.chunks_exact(L)) {
        for l in 0..L {
            lanes[l] += ca[l] * cb[l];
        }
    }
    let done = n / L * L;
    let mut rest = 0.0f32;
    for (x, y) in a[done..].iter().zip(&b[done..]) {
        rest += x * y;
    }
    lanes.iter().sum::<f32>() + rest
}

/// Runs `f` on `plane` read through its column phases (in a per-thread buffer when strided).
#[inline(always)]
fn with_split<R>(plan: &Plan, plane: &[f32], f: impl FnOnce(&[f32]) -> R) -> R {
    if plan.sw == 1 {
        f(plane)
    } else {
        with_scratch(plan.phases_len(), |phases| {
            plan.split(plane, phases);
            f(phases)
        })
    }
}

/// One output plane: `y_plane` (holding the bias or zero) accumulates the filter over
/// `src` (the input plane in split layout).
#[inline(always)]
fn forward_plane(plan: &Plan, src: &[f32], filter: &[f32], y_plane: &mut [f32]) {
    let kw = plan.cols.len();
    for o in 0..plan.oh {
        let y_row = &mut y_plane[o * plan.ow..(o + 1) * plan.ow];
        for (a, row) in plan.rows.iter().enumerate() {
            if o < row.h0 || o >= row.h1 {
                continue;
            }
            let ih = plan.input_row(o, row);
            for (b, col) in plan.cols.iter().enumerate() {
                let len = col.w1.saturating_sub(col.w0);
                if len == 0 {
                    continue;
                }
                let at = plan.start(ih, col);
                axpy(
                    &mut y_row[col.w0..col.w1],
                    &src[at..at + len],
                    filter[a * kw + b],
                );
            }
        }
    }
}

/// One input-gradient plane in split layout: `dst` (zeroed) gathers the output gradient
/// through the filter.
#[inline(always)]
fn input_grad_plane(plan: &Plan, dy_plane: &[f32], filter: &[f32], dst: &mut [f32]) {
    let kw = plan.cols.len();
    for o in 0..plan.oh {
        let dy_row = &dy_plane[o * plan.ow..(o + 1) * plan.ow];
        for (a, row) in plan.rows.iter().enumerate() {
            if o < row.h0 || o >= row.h1 {
                continue;
            }
            let ih = plan.input_row(o, row);
            for (b, col) in plan.cols.iter().enumerate() {
                let len = col.w1.saturating_sub(col.w0);
                if len == 0 {
                    continue;
                }
                let at = plan.start(ih, col);
                axpy(
                    &mut dst[at..at + len],
                    &dy_row[col.w0..col.w1],
                    filter[a * kw + b],
                );
            }
        }
    }
}

/// One image's contribution to one channel's filter gradient, added into `acc`.
#[inline(always)]
fn weight_grad_plane(plan: &Plan, src: &[f32], dy_plane: &[f32], acc: &mut [f32]) {
    let kw = plan.cols.len();
    for o in 0..plan.oh {
        let dy_row = &dy_plane[o * plan.ow..(o + 1) * plan.ow];
        for (a, row) in plan.rows.iter().enumerate() {
            if o < row.h0 || o >= row.h1 {
                continue;
            }
            let ih = plan.input_row(o, row);
            for (b, col) in plan.cols.iter().enumerate() {
                let len = col.w1.saturating_sub(col.w0);
                if len == 0 {
                    continue;
                }
                let at = plan.start(ih, col);
                acc[a * kw + b] += dot(&src[at..at + len], &dy_row[col.w0..col.w1]);
            }
        }
    }
}

/// A depthwise convolution, parallel over `(image, channel)` planes.
pub(super) fn forward(
    g: &Conv2dGeometry,
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
) -> Vec<f32> {
    let plan = Plan::new(g);
    let (in_plane, out_plane, taps) = (plan.h * plan.w, plan.oh * plan.ow, plan.taps());
    let channels = g.in_channels;
    let mut y = vec![0.0f32; g.output_len()];
    if out_plane == 0 {
        return y;
    }
    y.par_chunks_mut(out_plane)
        .enumerate()
        .for_each(|(i, y_plane)| {
            let c = i % channels;
            if let Some(bias) = bias {
                y_plane.fill(bias[c]);
            }
            let x_plane = &x[i * in_plane..(i + 1) * in_plane];
            let filter = &weight[c * taps..(c + 1) * taps];
            vectorized(|| {
                with_split(&plan, x_plane, |src| {
                    forward_plane(&plan, src, filter, y_plane)
                })
            });
        });
    y
}

/// Input gradient of a depthwise convolution, parallel over planes.
pub(super) fn input_grad(g: &Conv2dGeometry, weight: &[f32], dy: &[f32]) -> Vec<f32> {
    let plan = Plan::new(g);
    let (in_plane, out_plane, taps) = (plan.h * plan.w, plan.oh * plan.ow, plan.taps());
    let channels = g.in_channels;
    let mut dx = vec![0.0f32; g.input_len()];
    if in_plane == 0 {
        return dx;
    }
    dx.par_chunks_mut(in_plane)
        .enumerate()
        .for_each(|(i, dx_plane)| {
            let c = i % channels;
            let dy_plane = &dy[i * out_plane..(i + 1) * out_plane];
            let filter = &weight[c * taps..(c + 1) * taps];
            vectorized(|| {
                if plan.sw == 1 {
                    input_grad_plane(&plan, dy_plane, filter, dx_plane);
                } else {
                    with_scratch(plan.phases_len(), |phases| {
                        phases.fill(0.0);
                        input_grad_plane(&plan, dy_plane, filter, phases);
                        plan.merge(phases, dx_plane);
                    });
                }
            });
        });
    dx
}

/// Weight gradient of a depthwise convolution: per channel, over the batch; parallel over
/// channels.
pub(super) fn weight_grad(g: &Conv2dGeometry, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let plan = Plan::new(g);
    let (in_plane, out_plane, taps) = (plan.h * plan.w, plan.oh * plan.ow, plan.taps());
    let channels = g.in_channels;
    let mut dw = vec![0.0f32; g.weight_len()];
    if taps == 0 {
        return dw;
    }
    dw.par_chunks_mut(taps).enumerate().for_each(|(c, acc)| {
        for b in 0..g.batch {
            let i = b * channels + c;
            let x_plane = &x[i * in_plane..(i + 1) * in_plane];
            let dy_plane = &dy[i * out_plane..(i + 1) * out_plane];
            vectorized(|| {
                with_split(&plan, x_plane, |src| {
                    weight_grad_plane(&plan, src, dy_plane, acc)
                })
            });
        }
    });
    dw
}
