//! Max pooling, forward and backward, parallel over `(image, channel)` planes. The backward
//! pass finds each window's maximum again (the first one in row-major order, as the forward
//! pass takes it) instead of keeping an index tensor.

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

    /// Index in the plane of the first maximum of output `(o, j)`'s window, if the window
    /// holds any input pixel.
    #[inline(always)]
    fn argmax(&self, plane: &[f32], o: usize, j: usize) -> Option<usize> {
        let (r0, r1) = self.window(0, o);
        let (c0, c1) = self.window(1, j);
        let w = self.in_size[1];
        let mut best: Option<(usize, f32)> = None;
        for r in r0..r1 {
            for (c, &v) in plane[r * w + c0..r * w + c1].iter().enumerate() {
                // NaN wins, as in Burn's kernels, so it propagates.
                if best.is_none_or(|(_, b)| v > b || (v.is_nan() && !b.is_nan())) {
                    best = Some((r * w + c0 + c, v));
                }
            }
        }
        best.map(|(i, _)| i)
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
        y.par_chunks_mut(oh * ow)
            .zip(x.par_chunks(in_plane))
            .for_each(|(y_plane, plane)| {
                for o in 0..oh {
                    for j in 0..ow {
                        y_plane[o * ow + j] = self
                            .argmax(plane, o, j)
                            .map_or(f32::NEG_INFINITY, |i| plane[i]);
                    }
                }
            });
        y
    }

    /// The input gradient for the output gradient `dy`.
    pub fn backward(&self, x: &[f32], dy: &[f32]) -> Vec<f32> {
        let in_plane = self.in_size[0] * self.in_size[1];
        let [oh, ow] = self.out_size;
        let mut dx = vec![0.0f32; x.len()];
        if oh * ow == 0 || in_plane == 0 {
            return dx;
        }
        dx.par_chunks_mut(in_plane)
            .zip(x.par_chunks(in_plane))
            .zip(dy.par_chunks(oh * ow))
            .for_each(|((dx_plane, plane), dy_plane)| {
                for o in 0..oh {
                    for j in 0..ow {
                        if let Some(i) = self.argmax(plane, o, j) {
                            dx_plane[i] += dy_plane[o * ow + j];
                        }
                    }
                }
            });
        dx
    }
}
