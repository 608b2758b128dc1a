//! Direct depthwise convolution (one filter per channel), forward and both gradients.
//!
//! Each plane is copied once into a zero-padded buffer split into its stride phases
//! (`phase[ph][pw][r][c] = padded[r * sh + ph][c * sw + pw]`). In that layout every kernel
//! position reads one contiguous run the length of the whole output plane (laid out with the
//! phase's row width, the surplus columns discarded), so a 3x3 filter is nine long
//! multiply-adds or dot products per plane instead of nine short ones per output row, and
//! strides need no gathers. The loops are compiled for the widest SIMD the CPU has
//! ([`super::vectorized`]).

use rayon::prelude::*;

use super::{Conv2dGeometry, vectorized, with_scratch};

/// One kernel position: the phase it reads and where its run starts in that phase.
#[derive(Debug, Clone, Copy)]
struct Tap {
    phase: usize,
    shift: usize,
}

/// The layout of one depthwise convolution's planes.
struct Plan {
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    stride: [usize; 2],
    pad: [usize; 2],
    /// Row width of one phase.
    wq: usize,
    /// Floats per phase: `hq * wq` and one spare row, which runs of the surplus columns
    /// overrun.
    phase_len: usize,
    taps: Vec<Tap>,
}

impl Plan {
    fn new(g: &Conv2dGeometry) -> Plan {
        let [h, w] = g.in_size;
        let [oh, ow] = g.out_size;
        let [sh, sw] = [g.stride[0].max(1), g.stride[1].max(1)];
        let span = |i: usize| g.dilation[i] * (g.kernel[i].max(1) - 1) + 1;
        // Padded extent: the input after the leading padding, and what the last output reads.
        let hp = (g.pad[0] + h).max((oh.max(1) - 1) * sh + span(0));
        let wp = (g.pad[1] + w).max((ow.max(1) - 1) * sw + span(1));
        let (hq, wq) = (hp.div_ceil(sh), wp.div_ceil(sw));
        let mut taps = Vec::with_capacity(g.kernel[0] * g.kernel[1]);
        for a in 0..g.kernel[0] {
            let da = a * g.dilation[0];
            for b in 0..g.kernel[1] {
                let db = b * g.dilation[1];
                taps.push(Tap {
                    phase: (da % sh) * sw + db % sw,
                    shift: (da / sh) * wq + db / sw,
                });
            }
        }
        Plan {
            h,
            w,
            oh,
            ow,
            stride: [sh, sw],
            pad: g.pad,
            wq,
            phase_len: (hq + 1) * wq,
            taps,
        }
    }

    fn phases_len(&self) -> usize {
        self.stride[0] * self.stride[1] * self.phase_len
    }

    /// Floats of one output plane in phase layout (`oh` rows of `wq`).
    fn run_len(&self) -> usize {
        self.oh * self.wq
    }

    /// Index in the phase buffer of input pixel `(r, c)`.
    #[inline(always)]
    fn at(&self, r: usize, c: usize) -> usize {
        let (pr, pc) = (r + self.pad[0], c + self.pad[1]);
        let [sh, sw] = self.stride;
        ((pr % sh) * sw + pc % sw) * self.phase_len + (pr / sh) * self.wq + pc / sw
    }

    /// Copies `plane` into `phases`, zero-padded.
    #[inline(always)]
    fn split(&self, plane: &[f32], phases: &mut [f32]) {
        phases.fill(0.0);
        for r in 0..self.h {
            let row = &plane[r * self.w..(r + 1) * self.w];
            if self.stride[1] == 1 {
                let at = self.at(r, 0);
                phases[at..at + self.w].copy_from_slice(row);
            } else {
                for (c, &v) in row.iter().enumerate() {
                    phases[self.at(r, c)] = v;
                }
            }
        }
    }

    /// The inverse of [`Plan::split`] on the input pixels: `plane[r][c] = phases[at(r, c)]`.
    #[inline(always)]
    fn merge(&self, phases: &[f32], plane: &mut [f32]) {
        for r in 0..self.h {
            let row = &mut plane[r * self.w..(r + 1) * self.w];
            if self.stride[1] == 1 {
                let at = self.at(r, 0);
                row.copy_from_slice(&phases[at..at + self.w]);
            } else {
                for (c, v) in row.iter_mut().enumerate() {
                    *v = phases[self.at(r, c)];
                }
            }
        }
    }

    /// The run of tap `t` in `phases`.
    #[inline(always)]
    fn run<'a>(&self, phases: &'a [f32], t: &Tap) -> &'a [f32] {
        let at = t.phase * self.phase_len + t.shift;
        &phases[at..at + self.run_len()]
    }

    /// The run of tap `t` in `phases`, to write.
    #[inline(always)]
    fn run_mut<'a>(&self, phases: &'a mut [f32], t: &Tap) -> &'a mut [f32] {
        let at = t.phase * self.phase_len + t.shift;
        &mut phases[at..at + self.run_len()]
    }

    /// An output-gradient plane in phase layout, the surplus columns zero.
    #[inline(always)]
    fn widen(&self, dy_plane: &[f32], out: &mut [f32]) {
        for o in 0..self.oh {
            let dst = &mut out[o * self.wq..(o + 1) * self.wq];
            dst[..self.ow].copy_from_slice(&dy_plane[o * self.ow..(o + 1) * self.ow]);
            dst[self.ow..].fill(0.0);
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
fn dot(a: &[f32], b: &[f32]) -> f32 {
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

/// A depthwise convolution, parallel over `(image, channel)` planes.
pub(super) fn forward(
    g: &Conv2dGeometry,
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
) -> Vec<f32> {
    let plan = Plan::new(g);
    let (in_plane, out_plane, taps) = (plan.h * plan.w, plan.oh * plan.ow, plan.taps.len());
    let channels = g.in_channels;
    let mut y = vec![0.0f32; g.output_len()];
    if out_plane == 0 {
        return y;
    }
    let (phases_len, run_len) = (plan.phases_len(), plan.run_len());
    y.par_chunks_mut(out_plane)
        .enumerate()
        .for_each(|(i, y_plane)| {
            let c = i % channels;
            let x_plane = &x[i * in_plane..(i + 1) * in_plane];
            let filter = &weight[c * taps..(c + 1) * taps];
            with_scratch(phases_len + run_len, |buf| {
                let (phases, acc) = buf.split_at_mut(phases_len);
                vectorized(|| {
                    plan.split(x_plane, phases);
                    acc.fill(bias.map_or(0.0, |b| b[c]));
                    for (t, &wv) in plan.taps.iter().zip(filter) {
                        axpy(acc, plan.run(phases, t), wv);
                    }
                    for o in 0..plan.oh {
                        y_plane[o * plan.ow..(o + 1) * plan.ow]
                            .copy_from_slice(&acc[o * plan.wq..o * plan.wq + plan.ow]);
                    }
                })
            });
        });
    y
}

/// Input gradient of a depthwise convolution, parallel over planes.
pub(super) fn input_grad(g: &Conv2dGeometry, weight: &[f32], dy: &[f32]) -> Vec<f32> {
    let plan = Plan::new(g);
    let (in_plane, out_plane, taps) = (plan.h * plan.w, plan.oh * plan.ow, plan.taps.len());
    let channels = g.in_channels;
    let mut dx = vec![0.0f32; g.input_len()];
    if in_plane == 0 || out_plane == 0 {
        return dx;
    }
    let (phases_len, run_len) = (plan.phases_len(), plan.run_len());
    dx.par_chunks_mut(in_plane)
        .enumerate()
        .for_each(|(i, dx_plane)| {
            let c = i % channels;
            let dy_plane = &dy[i * out_plane..(i + 1) * out_plane];
            let filter = &weight[c * taps..(c + 1) * taps];
            with_scratch(phases_len + run_len, |buf| {
                let (phases, dy_wide) = buf.split_at_mut(phases_len);
                vectorized(|| {
                    plan.widen(dy_plane, dy_wide);
                    phases.fill(0.0);
                    for (t, &wv) in plan.taps.iter().zip(filter) {
                        axpy(plan.run_mut(phases, t), dy_wide, wv);
                    }
                    plan.merge(phases, dx_plane);
                })
            });
        });
    dx
}

/// Weight gradient of a depthwise convolution: per channel, over the batch; parallel over
/// channels.
pub(super) fn weight_grad(g: &Conv2dGeometry, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let plan = Plan::new(g);
    let (in_plane, out_plane, taps) = (plan.h * plan.w, plan.oh * plan.ow, plan.taps.len());
    let channels = g.in_channels;
    let mut dw = vec![0.0f32; g.weight_len()];
    if taps == 0 || out_plane == 0 {
        return dw;
    }
    let (phases_len, run_len) = (plan.phases_len(), plan.run_len());
    dw.par_chunks_mut(taps).enumerate().for_each(|(c, acc)| {
        with_scratch(phases_len + run_len, |buf| {
            let (phases, dy_wide) = buf.split_at_mut(phases_len);
            for b in 0..g.batch {
                let i = b * channels + c;
                let x_plane = &x[i * in_plane..(i + 1) * in_plane];
                let dy_plane = &dy[i * out_plane..(i + 1) * out_plane];
                vectorized(|| {
                    plan.split(x_plane, phases);
                    plan.widen(dy_plane, dy_wide);
                    for (t, a) in plan.taps.iter().zip(acc.iter_mut()) {
                        *a += dot(plan.run(phases, t), dy_wide);
                    }
                });
            }
        });
    });
    dw
}
