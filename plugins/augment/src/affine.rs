//! The one resampler behind every geometric transform.
//!
//! Coordinates are continuous pixels: pixel `(i, j)` covers `[i, i + 1) x [j, j + 1)` and its
//! centre is `(i + 0.5, j + 0.5)`; boxes use the same coordinates with exclusive maxima. A
//! geometric transform is a [`Stage`]: a forward map from input to output coordinates plus the
//! two sizes. Boxes go forward through each stage (enclosing box of the four corners, clipped,
//! dropped below a visible fraction); pixels are pulled backwards, once, through the composition
//! of a chain of stages, so that a pipeline of several geometric steps interpolates only once.
//!
//! An output pixel is valid when the centre it comes from lies inside the input of every stage
//! that can map outside its input (which makes a chain keep exactly the pixels that applying the
//! stages one by one would keep). Invalid pixels become 0 in the image and [`IGNORE`] in the
//! mask. Images are sampled bilinearly (edge pixels replicated), masks by nearest neighbour, so
//! ignored pixels stay ignored and no class index is ever blended.

use std::cell::RefCell;

use autodl_api::AugSample;

use crate::IGNORE;

/// A 2-D affine map `x' = a x + b y + c`, `y' = d x + e y + f`, stored as `[a, b, c, d, e, f]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Affine2(pub [f64; 6]);

impl Affine2 {
    /// The identity.
    pub const IDENTITY: Affine2 = Affine2([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]);

    /// A translation.
    pub fn translate(tx: f64, ty: f64) -> Self {
        Affine2([1.0, 0.0, tx, 0.0, 1.0, ty])
    }

    /// A scaling about the origin.
    pub fn scale(sx: f64, sy: f64) -> Self {
        Affine2([sx, 0.0, 0.0, 0.0, sy, 0.0])
    }

    /// A rotation about the origin by `radians` (clockwise on screen, since y points down).
    pub fn rotate(radians: f64) -> Self {
        let (s, c) = radians.sin_cos();
        Affine2([c, -s, 0.0, s, c, 0.0])
    }

    /// A shear: `x' = x + kx y`, `y' = y + ky x`.
    pub fn shear(kx: f64, ky: f64) -> Self {
        Affine2([1.0, kx, 0.0, ky, 1.0, 0.0])
    }

    /// The map that applies `self` first and then `next`.
    pub fn then(&self, next: &Affine2) -> Affine2 {
        let [a, b, c, d, e, f] = self.0;
        let [p, q, r, s, t, u] = next.0;
        Affine2([
            p * a + q * d,
            p * b + q * e,
            p * c + q * f + r,
            s * a + t * d,
            s * b + t * e,
            s * c + t * f + u,
        ])
    }

    /// The inverse map, or `None` when the map is singular.
    pub fn inverse(&self) -> Option<Affine2> {
        let [a, b, c, d, e, f] = self.0;
        let det = a * e - b * d;
        if det.abs() < 1e-12 || !det.is_finite() {
            return None;
        }
        let (ia, ib, id, ie) = (e / det, -b / det, -d / det, a / det);
        Some(Affine2([
            ia,
            ib,
            -(ia * c + ib * f),
            id,
            ie,
            -(id * c + ie * f),
        ]))
    }

    /// Maps one point.
    pub fn apply(&self, x: f64, y: f64) -> (f64, f64) {
        let [a, b, c, d, e, f] = self.0;
        (a * x + b * y + c, d * x + e * y + f)
    }

    /// Whether the map keeps the axes (no rotation or shear), so x' depends on x alone.
    pub fn is_axis_aligned(&self) -> bool {
        self.0[1] == 0.0 && self.0[3] == 0.0
    }
}

/// One geometric transform with its sizes, ready to apply.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stage {
    /// Input coordinates to output coordinates.
    pub forward: Affine2,
    /// Input width and height.
    pub input: (u32, u32),
    /// Output width and height.
    pub output: (u32, u32),
    /// The map is a bijection of the pixel grids (a flip or a dihedral turn), so it moves whole
    /// pixels: no interpolation, nothing falls outside.
    pub exact: bool,
}

impl Stage {
    /// A stage from its forward map and sizes that may interpolate.
    pub fn new(forward: Affine2, input: (u32, u32), output: (u32, u32)) -> Self {
        Stage {
            forward,
            input,
            output,
            exact: false,
        }
    }
}

/// Transforms boxes through one stage: the box enclosing the four transformed corners, clipped
/// to the output, kept when at least `min_visibility` of its area (before clipping) is inside.
pub fn transform_boxes(boxes: &mut Vec<([f32; 4], usize)>, stage: &Stage, min_visibility: f32) {
    let (ow, oh) = (f64::from(stage.output.0), f64::from(stage.output.1));
    boxes.retain_mut(|(b, _)| {
        let [x0, y0, x1, y1] = b.map(f64::from);
        let corners =
            [(x0, y0), (x1, y0), (x0, y1), (x1, y1)].map(|(x, y)| stage.forward.apply(x, y));
        let (mut lx, mut ly, mut hx, mut hy) = (
            f64::INFINITY,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NEG_INFINITY,
        );
        for (x, y) in corners {
            lx = lx.min(x);
            ly = ly.min(y);
            hx = hx.max(x);
            hy = hy.max(y);
        }
        if stage.exact {
            // Flips and turns map integers to integers; remove rounding noise so that a flip
            // twice gives back the very same box.
            (lx, ly, hx, hy) = (snap(lx), snap(ly), snap(hx), snap(hy));
        }
        clip_box(b, [lx, ly, hx, hy], ow, oh, min_visibility)
    });
}

/// Rounds values within a millionth of a pixel of an integer to it.
fn snap(v: f64) -> f64 {
    let r = v.round();
    if (v - r).abs() < 1e-6 { r } else { v }
}

/// Clips `t` to `[0, w] x [0, h]` and writes it to `b`; false when it should be dropped.
pub(crate) fn clip_box(b: &mut [f32; 4], t: [f64; 4], w: f64, h: f64, min_visibility: f32) -> bool {
    clip_box_to(b, t, [0.0, 0.0, w, h], min_visibility)
}

/// Clips `t` to `rect` and writes it to `b`; false when less than `min_visibility` of its area
/// is inside, or nothing is.
pub(crate) fn clip_box_to(
    b: &mut [f32; 4],
    t: [f64; 4],
    rect: [f64; 4],
    min_visibility: f32,
) -> bool {
    let [lx, ly, hx, hy] = t;
    let area = (hx - lx) * (hy - ly);
    let (cx0, cy0) = (lx.clamp(rect[0], rect[2]), ly.clamp(rect[1], rect[3]));
    let (cx1, cy1) = (hx.clamp(rect[0], rect[2]), hy.clamp(rect[1], rect[3]));
    let visible = (cx1 - cx0).max(0.0) * (cy1 - cy0).max(0.0);
    // Written so that NaN areas drop the box too.
    let kept =
        area > 0.0 && visible > 0.0 && visible >= f64::from(min_visibility) * area * (1.0 - 1e-9);
    if !kept {
        return false;
    }
    *b = [cx0 as f32, cy0 as f32, cx1 as f32, cy1 as f32];
    // A box thinner than f32 can tell apart from its edge has no area left.
    b[2] > b[0] && b[3] > b[1]
}

/// Applies a chain of stages to a sample: boxes stage by stage, pixels in one resampling.
/// `stages[0].input` must be the sample's size and each stage's output the next one's input.
pub fn warp(sample: &mut AugSample, stages: &[Stage], min_visibility: f32) {
    for stage in stages {
        transform_boxes(&mut sample.boxes, stage, min_visibility);
    }
    warp_pixels(sample, stages);
}

/// Resamples image and mask through a chain of stages (boxes untouched).
pub fn warp_pixels(sample: &mut AugSample, stages: &[Stage]) {
    if stages.is_empty() {
        return;
    }
    with_scratch(|scratch| {
        let Scratch { image, mask, .. } = scratch;
        let mut image = std::mem::take(image);
        let mut mask = std::mem::take(mask);
        if let Some((ow, oh, has_mask)) = resample(sample, stages, &mut image, &mut mask, scratch) {
            // The output moves into the sample; its old buffers become the scratch for next
            // time, so steady-state augmentation allocates nothing.
            std::mem::swap(&mut sample.image, &mut image);
            match sample.mask.as_mut() {
                Some(m) if has_mask => std::mem::swap(m, &mut mask),
                // A mask of the wrong size cannot follow the image.
                _ => sample.mask = None,
            }
            (sample.width, sample.height) = (ow, oh);
        }
        (scratch.image, scratch.mask) = (image, mask);
    });
}

/// The resampling itself: writes `src` through `stages` into `image` and (when `src` has a
/// mask of the right size) `mask`, and returns the output size and whether the mask was
/// written, or `None` when the chain does not fit the sample or is singular (nothing written
/// then).
fn resample(
    src: &AugSample,
    stages: &[Stage],
    image: &mut Vec<f32>,
    mask: &mut Vec<u32>,
    scratch: &mut Scratch,
) -> Option<(u32, u32, bool)> {
    let (first, last) = (stages.first()?, stages.last()?);
    let (w, h) = (src.width as usize, src.height as usize);
    let plane = w * h;
    let bands = src.bands as usize;
    debug_assert_eq!(
        first.input,
        (src.width, src.height),
        "stage chain does not fit the sample"
    );
    if first.input != (src.width, src.height) || src.image.len() != bands * plane || plane == 0 {
        // A malformed sample is left as it is rather than read out of bounds.
        return None;
    }
    let (ow, oh) = (last.output.0 as usize, last.output.1 as usize);
    let total = stages
        .iter()
        .fold(Affine2::IDENTITY, |acc, s| acc.then(&s.forward));
    let inv = total.inverse()?;
    // Output coordinates to the input of each later stage that can map outside it (the first
    // stage's input, the image itself, is always checked).
    let mut checks = Vec::new();
    let mut suffix = Affine2::IDENTITY;
    for s in stages.iter().skip(1).rev() {
        suffix = s.forward.then(&suffix);
        if !s.exact
            && let Some(m) = suffix.inverse()
        {
            checks.push(Check {
                map: m,
                w: f64::from(s.input.0),
                h: f64::from(s.input.1),
            });
        }
    }
    let src_mask = src.mask.as_deref().filter(|m| m.len() == plane);
    // No clearing: every path writes every output value (invalid ones through
    // `clear_outside`), which saves a pass over memory.
    image.resize(bands * ow * oh, 0.0);
    if src_mask.is_some() {
        mask.resize(ow * oh, IGNORE);
    }
    let source = Source {
        image: &src.image,
        mask: src_mask,
        bands,
        w,
        h,
    };
    let out_mask = src_mask.is_some().then_some(mask);
    let Scratch {
        taps,
        cols,
        rows,
        lines,
        ..
    } = scratch;
    if stages.iter().all(|s| s.exact) {
        permute(&source, (ow, oh), &inv, image, out_mask);
    } else if orientation(&inv).is_some() && checks.iter().all(|c| orientation(&c.map).is_some()) {
        separable(
            &source,
            (ow, oh),
            &inv,
            &checks,
            cols,
            rows,
            lines,
            image,
            out_mask,
        );
    } else {
        general(&source, (ow, oh), &inv, &checks, taps, image, out_mask);
    }
    Some((ow as u32, oh as u32, src_mask.is_some()))
}

/// Buffers reused across calls on one thread.
#[derive(Default)]
struct Scratch {
    image: Vec<f32>,
    mask: Vec<u32>,
    taps: Taps,
    cols: Taps,
    rows: Vec<Tap1>,
    lines: [Vec<f32>; 2],
}

/// Per-pixel (or per-column) taps, one array per field so the loops that fill and read them
/// stay simple enough to vectorise.
#[derive(Default)]
struct Taps {
    base: Vec<u32>,
    tx: Vec<f32>,
    ty: Vec<f32>,
    near: Vec<u32>,
    valid: Vec<bool>,
}

impl Taps {
    fn reset(&mut self, n: usize) {
        for v in [&mut self.base, &mut self.near] {
            v.clear();
            v.resize(n, 0);
        }
        for v in [&mut self.tx, &mut self.ty] {
            v.clear();
            v.resize(n, 0.0);
        }
        self.valid.clear();
        self.valid.resize(n, false);
    }

    /// The valid entries, which form one run because every constraint is convex.
    fn valid_range(&self) -> (usize, usize) {
        let lo = self.valid.iter().position(|&v| v).unwrap_or(0);
        let hi = self.valid.iter().rposition(|&v| v).map_or(0, |i| i + 1);
        (lo, hi.max(lo))
    }
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut s) => f(&mut s),
        // Only reachable if a resampling ever ran inside another on one thread.
        Err(_) => f(&mut Scratch::default()),
    })
}

struct Source<'a> {
    image: &'a [f32],
    mask: Option<&'a [u32]>,
    bands: usize,
    w: usize,
    h: usize,
}

/// Output coordinates must map inside `[0, w) x [0, h)` through `map`.
struct Check {
    map: Affine2,
    w: f64,
    h: f64,
}

/// Whether a map's x' depends on x alone and y' on y alone (`Some(false)`), or x' on y alone
/// and y' on x alone (`Some(true)`, a turn by 90 degrees), or neither (`None`).
fn orientation(m: &Affine2) -> Option<bool> {
    let [a, b, _, d, e, _] = m.0;
    if b == 0.0 && d == 0.0 {
        Some(false)
    } else if a == 0.0 && e == 0.0 {
        Some(true)
    } else {
        None
    }
}

/// One axis of a bilinear sample: offset of the lower neighbour (times the stride), weight of
/// the upper one, offset of the nearest pixel for the mask, and whether the coordinate is inside.
/// The lower neighbour is kept within `0..=n-2` and the weight within `0..=1`, which replicates
/// edge pixels with a fixed step to the upper neighbour.
#[derive(Clone, Copy, Default)]
struct Tap1 {
    off: u32,
    t: f32,
    near: u32,
    valid: bool,
}

/// The tap for continuous coordinate `s` on an axis of `n` pixels, `stride` apart.
#[inline]
fn tap1(s: f64, n: usize, stride: usize) -> Tap1 {
    let valid = s >= 0.0 && s < n as f64;
    let f = s - 0.5;
    let lo = f.clamp(0.0, n.saturating_sub(2) as f64) as usize;
    let t = (f - lo as f64).clamp(0.0, 1.0) as f32;
    let near = (s.max(0.0) as usize).min(n - 1);
    Tap1 {
        off: (lo * stride) as u32,
        t,
        near: (near * stride) as u32,
        valid,
    }
}

/// The step to the upper neighbour on an axis of `n` pixels, `stride` apart.
fn step(n: usize, stride: usize) -> usize {
    if n >= 2 { stride } else { 0 }
}

/// Bilinear interpolation of the four neighbours of `s[i]`, `cs` and `rs` apart, with weights
/// `ct` along `cs` and `rt` along `rs`.
/// Index arithmetic wraps instead of being overflow-checked (the dev profile checks), since
/// the slice indexing that follows bounds-checks it anyway.
#[inline(always)]
fn lerp4(s: &[f32], i: usize, cs: usize, rs: usize, ct: f32, rt: f32) -> f32 {
    let (i01, i10) = (i.wrapping_add(cs), i.wrapping_add(rs));
    let (p00, p01, p10, p11) = (s[i], s[i01], s[i10], s[i10.wrapping_add(cs)]);
    let top = p00 + (p01 - p00) * ct;
    let bot = p10 + (p11 - p10) * ct;
    top + (bot - top) * rt
}

/// Sets the values of row `oy` outside columns `lo..hi` to 0 in every band and to [`IGNORE`]
/// in the mask (the whole row when the range is empty).
fn clear_outside(
    out: &mut [f32],
    mask: Option<&mut Vec<u32>>,
    bands: usize,
    (ow, oh): (usize, usize),
    oy: usize,
    (lo, hi): (usize, usize),
) {
    let (lo, hi) = if lo < hi { (lo, hi) } else { (0, 0) };
    for band in 0..bands {
        let row = &mut out[band * ow * oh + oy * ow..band * ow * oh + (oy + 1) * ow];
        row[..lo].fill(0.0);
        row[hi..].fill(0.0);
    }
    if let Some(m) = mask {
        let row = &mut m[oy * ow..(oy + 1) * ow];
        row[..lo].fill(IGNORE);
        row[hi..].fill(IGNORE);
    }
}

/// Linear samples along one source line for a run of taps, four at a time (see
/// [`bilinear_run`]): element `k` blends `s[line + base[k]]` and the one `step` further.
fn linear_run(s: &[f32], line: usize, step: usize, base: &[u32], t: &[f32], out: &mut [f32]) {
    const N: usize = 4;
    let sample = |c: u32| {
        let i = line.wrapping_add(c as usize);
        (s[i], s[i.wrapping_add(step)])
    };
    let mut outs = out.chunks_exact_mut(N);
    let mut bases = base.chunks_exact(N);
    let mut ts = t.chunks_exact(N);
    for ((o, b), x) in (&mut outs).zip(&mut bases).zip(&mut ts) {
        let (mut p0, mut p1) = ([0f32; N], [0f32; N]);
        for j in 0..N {
            (p0[j], p1[j]) = sample(b[j]);
        }
        for j in 0..N {
            o[j] = p0[j] + (p1[j] - p0[j]) * x[j];
        }
    }
    for ((o, &b), &x) in outs
        .into_remainder()
        .iter_mut()
        .zip(bases.remainder())
        .zip(ts.remainder())
    {
        let (p0, p1) = sample(b);
        *o = p0 + (p1 - p0) * x;
    }
}

/// Bilinear samples of one band for a run of taps, four at a time: the loads stay scalar but
/// the arithmetic runs on whole vectors. Neighbours are 1 and `w` apart.
fn bilinear_run(s: &[f32], w: usize, base: &[u32], tx: &[f32], ty: &[f32], out: &mut [f32]) {
    const N: usize = 4;
    let sample = |i: usize| {
        let q = &s[i..i + w + 2];
        (q[0], q[1], q[w], q[w + 1])
    };
    let mut outs = out.chunks_exact_mut(N);
    let mut bases = base.chunks_exact(N);
    let mut txs = tx.chunks_exact(N);
    let mut tys = ty.chunks_exact(N);
    for (((o, b), x), y) in (&mut outs).zip(&mut bases).zip(&mut txs).zip(&mut tys) {
        let (mut p00, mut p01, mut p10, mut p11) = ([0f32; N], [0f32; N], [0f32; N], [0f32; N]);
        for j in 0..N {
            (p00[j], p01[j], p10[j], p11[j]) = sample(b[j] as usize);
        }
        for j in 0..N {
            let top = p00[j] + (p01[j] - p00[j]) * x[j];
            let bot = p10[j] + (p11[j] - p10[j]) * x[j];
            o[j] = top + (bot - top) * y[j];
        }
    }
    let rest = outs
        .into_remainder()
        .iter_mut()
        .zip(bases.remainder())
        .zip(txs.remainder())
        .zip(tys.remainder());
    for (((o, &b), &x), &y) in rest {
        let (p00, p01, p10, p11) = sample(b as usize);
        let top = p00 + (p01 - p00) * x;
        let bot = p10 + (p11 - p10) * x;
        *o = top + (bot - top) * y;
    }
}

/// Scale, translation, flips and turns by 90 degrees: the source x and y each depend on one
/// output axis, so taps are computed once per column and once per row.
#[allow(clippy::too_many_arguments)]
fn separable(
    src: &Source<'_>,
    (ow, oh): (usize, usize),
    inv: &Affine2,
    checks: &[Check],
    cols: &mut Taps,
    rows: &mut Vec<Tap1>,
    lines: &mut [Vec<f32>; 2],
    out: &mut [f32],
    mut out_mask: Option<&mut Vec<u32>>,
) {
    let (w, h) = (src.w, src.h);
    let [a, b, c, d, e, f] = inv.0;
    let swapped = orientation(inv) == Some(true);
    // Columns run along the source axis that output x maps to, rows along the other.
    let (col_axis, row_axis) = if swapped {
        ((h, w), (w, 1))
    } else {
        ((w, 1), (h, w))
    };
    let (cs, rs) = (step(col_axis.0, col_axis.1), step(row_axis.0, row_axis.1));
    cols.reset(ow);
    for ox in 0..ow {
        let o = ox as f64 + 0.5;
        let t = tap1(
            if swapped { d * o + f } else { a * o + c },
            col_axis.0,
            col_axis.1,
        );
        (cols.base[ox], cols.tx[ox], cols.near[ox], cols.valid[ox]) = (t.off, t.t, t.near, t.valid);
    }
    rows.clear();
    rows.extend((0..oh).map(|oy| {
        let o = oy as f64 + 0.5;
        tap1(
            if swapped { b * o + c } else { e * o + f },
            row_axis.0,
            row_axis.1,
        )
    }));
    for ch in checks {
        let [a, b, c, d, e, f] = ch.map.0;
        // Each constraint is `0 <= k * o + off < n` on one output axis.
        let (col, row) = if orientation(&ch.map) == Some(true) {
            ((d, f, ch.h), (b, c, ch.w))
        } else {
            ((a, c, ch.w), (e, f, ch.h))
        };
        let inside = |(k, off, n): (f64, f64, f64), o: usize| {
            let v = k * (o as f64 + 0.5) + off;
            v >= 0.0 && v < n
        };
        cols.valid
            .iter_mut()
            .enumerate()
            .for_each(|(ox, v)| *v &= inside(col, ox));
        rows.iter_mut()
            .enumerate()
            .for_each(|(oy, t)| t.valid &= inside(row, oy));
    }
    let (lo, hi) = cols.valid_range();
    for (oy, r) in rows.iter().enumerate() {
        let run = if r.valid { (lo, hi) } else { (0, 0) };
        clear_outside(out, out_mask.as_deref_mut(), src.bands, (ow, oh), oy, run);
    }
    if lo < hi {
        // Two passes: a source line (row, or column when turned) is interpolated along itself
        // once into a cached buffer, then output rows blend two cached lines, which
        // vectorises. Lines are reused by neighbouring output rows.
        let (base, tx) = (&cols.base[lo..hi], &cols.tx[lo..hi]);
        let plane = w * h;
        for band in 0..src.bands {
            let s = &src.image[band * plane..(band + 1) * plane];
            let mut keys = [usize::MAX; 2];
            for (oy, r) in rows.iter().enumerate() {
                if !r.valid {
                    continue;
                }
                let l0 = r.off as usize;
                let l1 = l0.wrapping_add(rs);
                let fill =
                    |slot: usize, line: usize, lines: &mut [Vec<f32>; 2], keys: &mut [usize; 2]| {
                        let buf = &mut lines[slot];
                        buf.resize(base.len(), 0.0);
                        linear_run(s, line, cs, base, tx, buf);
                        keys[slot] = line;
                    };
                let find = |keys: &[usize; 2], line: usize| keys.iter().position(|&k| k == line);
                let i0 = match find(&keys, l0) {
                    Some(i) => i,
                    None => {
                        let slot = usize::from(keys[0] == l1);
                        fill(slot, l0, lines, &mut keys);
                        slot
                    }
                };
                let i1 = match find(&keys, l1) {
                    Some(i) => i,
                    None => {
                        fill(1 - i0, l1, lines, &mut keys);
                        1 - i0
                    }
                };
                let row = &mut out[band * ow * oh + oy * ow + lo..band * ow * oh + oy * ow + hi];
                let t = r.t;
                for ((o, &a), &b) in row.iter_mut().zip(&lines[i0]).zip(&lines[i1]) {
                    *o = a + (b - a) * t;
                }
            }
        }
    }
    if let (Some(m), Some(om)) = (src.mask, out_mask) {
        for (r, orow) in rows.iter().zip(om.chunks_exact_mut(ow)) {
            if r.valid {
                for (o, &c) in orow[lo..hi].iter_mut().zip(&cols.near[lo..hi]) {
                    *o = m[(r.near + c) as usize];
                }
            }
        }
    }
}

/// Any affine map (rotation, shear): taps per pixel, computed a row at a time and shared by
/// all bands.
fn general(
    src: &Source<'_>,
    (ow, oh): (usize, usize),
    inv: &Affine2,
    checks: &[Check],
    taps: &mut Taps,
    out: &mut [f32],
    mut out_mask: Option<&mut Vec<u32>>,
) {
    let (w, h) = (src.w, src.h);
    let (dx, dy) = (step(w, 1), step(h, w));
    let [a, _, _, d, _, _] = inv.0;
    // Below 2^23 pixels, indices are exact in f32 and the tap loop can run in f32, vectorised.
    let small = w * h < 1 << 23;
    taps.reset(ow);
    for oy in 0..oh {
        let yc = oy as f64 + 0.5;
        let (sx0, sy0) = inv.apply(0.5, yc);
        // The valid pixels of a row are one run: the intersection of the runs where each
        // constraint (source inside the image, each stage's input inside it) holds.
        let (mut lo, mut hi) = intersect(run(sx0, a, w as f64, ow), run(sy0, d, h as f64, ow));
        for ch in checks {
            let (px, py) = ch.map.apply(0.5, yc);
            (lo, hi) = intersect(
                (lo, hi),
                intersect(
                    run(px, ch.map.0[0], ch.w, ow),
                    run(py, ch.map.0[3], ch.h, ow),
                ),
            );
        }
        clear_outside(
            out,
            out_mask.as_deref_mut(),
            src.bands,
            (ow, oh),
            oy,
            (lo, hi),
        );
        if lo >= hi {
            continue;
        }
        let n = hi - lo;
        if small {
            row_taps_f32(
                taps,
                n,
                (sx0 + a * lo as f64, sy0 + d * lo as f64),
                (a, d),
                (w, h),
            );
        } else {
            row_taps_fixed(
                taps,
                n,
                (sx0 + a * lo as f64, sy0 + d * lo as f64),
                (a, d),
                (w, h),
            );
        }
        let (base, tx, ty) = (&taps.base[..n], &taps.tx[..n], &taps.ty[..n]);
        if dx == 1 && dy == w {
            let plane = w * h;
            for band in 0..src.bands {
                let start = band * ow * oh + oy * ow;
                let s = &src.image[band * plane..(band + 1) * plane];
                bilinear_run(s, w, base, tx, ty, &mut out[start + lo..start + hi]);
            }
        } else {
            // A source one pixel wide or high: neighbours may coincide.
            let plane = w * h;
            for band in 0..src.bands {
                let start = band * ow * oh + oy * ow;
                let s = &src.image[band * plane..(band + 1) * plane];
                for (k, o) in out[start + lo..start + hi].iter_mut().enumerate() {
                    *o = lerp4(s, base[k] as usize, dx, dy, tx[k], ty[k]);
                }
            }
        }
        if let (Some(m), Some(om)) = (src.mask, out_mask.as_deref_mut()) {
            for (o, &i) in om[oy * ow + lo..oy * ow + hi]
                .iter_mut()
                .zip(&taps.near[..n])
            {
                *o = m[i as usize];
            }
        }
    }
}

/// Taps for `n` pixels from source position `(x, y)` stepping by `(a, d)`, in f32 with the
/// floors and the float-to-index conversions done by the 2^23 trick (adding 2^23 rounds to an
/// integer held in the low mantissa bits), so the loop vectorises with SSE2 alone. Needs fewer
/// than 2^23 pixels.
fn row_taps_f32(
    taps: &mut Taps,
    n: usize,
    (x, y): (f64, f64),
    (a, d): (f64, f64),
    (w, h): (usize, usize),
) {
    const MAGIC: f32 = 8_388_608.0;
    const MAGIC_BITS: u32 = 0x4B00_0000;
    #[inline(always)]
    fn floor(v: f32) -> f32 {
        // For 0 <= v < 2^22: round to nearest, then step down when that rounded up.
        let r = (v + MAGIC) - MAGIC;
        if r > v { r - 1.0 } else { r }
    }
    #[inline(always)]
    fn clamp(v: f32, lo: f32, hi: f32) -> f32 {
        let v = if v < lo { lo } else { v };
        if v > hi { hi } else { v }
    }
    let (x, y, a, d) = (x as f32, y as f32, a as f32, d as f32);
    let (wf, xmax, ymax) = (
        w as f32,
        w.saturating_sub(2) as f32,
        h.saturating_sub(2) as f32,
    );
    let (nxmax, nymax) = ((w - 1) as f32, (h - 1) as f32);
    let (base, tx, ty, near) = (
        &mut taps.base[..n],
        &mut taps.tx[..n],
        &mut taps.ty[..n],
        &mut taps.near[..n],
    );
    for k in 0..n {
        let o = k as i32 as f32;
        let (sx, sy) = (x + a * o, y + d * o);
        let (fx, fy) = (sx - 0.5, sy - 0.5);
        let (x0, y0) = (floor(clamp(fx, 0.0, xmax)), floor(clamp(fy, 0.0, ymax)));
        tx[k] = clamp(fx - x0, 0.0, 1.0);
        ty[k] = clamp(fy - y0, 0.0, 1.0);
        base[k] = ((y0 * wf + x0) + MAGIC).to_bits().wrapping_sub(MAGIC_BITS);
        let (nx, ny) = (floor(clamp(sx, 0.0, nxmax)), floor(clamp(sy, 0.0, nymax)));
        near[k] = ((ny * wf + nx) + MAGIC).to_bits().wrapping_sub(MAGIC_BITS);
    }
}

/// The same in 20-bit fixed point, for images of any size.
fn row_taps_fixed(
    taps: &mut Taps,
    n: usize,
    (x, y): (f64, f64),
    (a, d): (f64, f64),
    (w, h): (usize, usize),
) {
    let (xmax, ymax) = (w.saturating_sub(2) as i64, h.saturating_sub(2) as i64);
    let (hi_x, hi_y) = (w as i64 - 1, h as i64 - 1);
    let wi = w as i64;
    let fixed = |v: f64| (v * FIXED_ONE as f64).round() as i64;
    let (mut x, mut y) = (fixed(x), fixed(y));
    let (stepx, stepy) = (fixed(a), fixed(d));
    let (base, tx, ty, near) = (
        &mut taps.base[..n],
        &mut taps.tx[..n],
        &mut taps.ty[..n],
        &mut taps.near[..n],
    );
    // Wrapping arithmetic: every value here is far from i64's limits, and the dev profile's
    // overflow checks would double the loop's cost.
    for k in 0..n {
        let (fx, fy) = (x.wrapping_sub(FIXED_ONE / 2), y.wrapping_sub(FIXED_ONE / 2));
        let (x0, y0) = (
            (fx >> FIXED_BITS).clamp(0, xmax),
            (fy >> FIXED_BITS).clamp(0, ymax),
        );
        tx[k] = fx.wrapping_sub(x0 << FIXED_BITS).clamp(0, FIXED_ONE) as f32 * FIXED_INV;
        ty[k] = fy.wrapping_sub(y0 << FIXED_BITS).clamp(0, FIXED_ONE) as f32 * FIXED_INV;
        base[k] = y0.wrapping_mul(wi).wrapping_add(x0) as u32;
        near[k] = (y >> FIXED_BITS)
            .clamp(0, hi_y)
            .wrapping_mul(wi)
            .wrapping_add((x >> FIXED_BITS).clamp(0, hi_x)) as u32;
        x = x.wrapping_add(stepx);
        y = y.wrapping_add(stepy);
    }
}

const FIXED_BITS: u32 = 20;
const FIXED_ONE: i64 = 1 << FIXED_BITS;
const FIXED_INV: f32 = 1.0 / FIXED_ONE as f32;

/// The columns `ox` in `0..n` where `p0 + k * ox` lies in `[0, bound)`, as a range.
fn run(p0: f64, k: f64, bound: f64, n: usize) -> (usize, usize) {
    let nf = n as f64;
    let (lo, hi) = if k > 0.0 {
        (((0.0 - p0) / k).ceil(), ((bound - p0) / k).ceil())
    } else if k < 0.0 {
        (
            ((bound - p0) / k).floor() + 1.0,
            ((0.0 - p0) / k).floor() + 1.0,
        )
    } else if p0 >= 0.0 && p0 < bound {
        (0.0, nf)
    } else {
        (0.0, 0.0)
    };
    (lo.clamp(0.0, nf) as usize, hi.clamp(0.0, nf) as usize)
}

fn intersect(a: (usize, usize), b: (usize, usize)) -> (usize, usize) {
    (a.0.max(b.0), a.1.min(b.1))
}

/// Moves whole pixels for a chain of flips and turns: each output row reads the source along
/// a fixed integer step.
fn permute(
    src: &Source<'_>,
    (ow, oh): (usize, usize),
    inv: &Affine2,
    out: &mut [f32],
    mut out_mask: Option<&mut Vec<u32>>,
) {
    let (w, h) = (src.w, src.h);
    let (plane, oplane) = (w * h, ow * oh);
    let [a, _, _, d, _, _] = inv.0;
    let step = a.round() as isize + d.round() as isize * w as isize;
    for oy in 0..oh {
        let (sx, sy) = inv.apply(0.5, oy as f64 + 0.5);
        let (sx, sy) = (sx.floor() as isize, sy.floor() as isize);
        let start = sy * w as isize + sx;
        let last = start + step * (ow as isize - 1);
        if start < 0 || last < 0 || start as usize >= plane || last as usize >= plane {
            debug_assert!(false, "exact stage maps outside the image");
            clear_outside(
                out,
                out_mask.as_deref_mut(),
                src.bands,
                (ow, oh),
                oy,
                (0, 0),
            );
            continue;
        }
        for band in 0..src.bands {
            let s = &src.image[band * plane..(band + 1) * plane];
            copy_strided(
                &mut out[band * oplane + oy * ow..band * oplane + (oy + 1) * ow],
                s,
                start,
                step,
            );
        }
        if let (Some(m), Some(om)) = (src.mask, out_mask.as_deref_mut()) {
            copy_strided(&mut om[oy * ow..(oy + 1) * ow], m, start, step);
        }
    }
}

fn copy_strided<T: Copy>(row: &mut [T], src: &[T], start: isize, step: isize) {
    match step {
        1 => row.copy_from_slice(&src[start as usize..start as usize + row.len()]),
        -1 => {
            let lo = start as usize + 1 - row.len();
            for (o, s) in row.iter_mut().zip(src[lo..=start as usize].iter().rev()) {
                *o = *s;
            }
        }
        _ => {
            let mut i = start;
            for o in row.iter_mut() {
                *o = src[i as usize];
                i += step;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Straightforward per-pixel resampling to check the optimised paths against.
    fn reference(s: &AugSample, stages: &[Stage]) -> (Vec<f32>, Vec<u32>, Vec<bool>, Vec<f64>) {
        let (w, h) = (s.width as usize, s.height as usize);
        let (ow, oh) = (
            stages.last().unwrap().output.0 as usize,
            stages.last().unwrap().output.1 as usize,
        );
        let bands = s.bands as usize;
        let mut image = vec![0f32; bands * ow * oh];
        let mut mask = vec![IGNORE; ow * oh];
        let mut valid = vec![false; ow * oh];
        // Distance of each pixel's constraints from their edges, to skip ties in the comparison.
        let mut margin = vec![f64::INFINITY; ow * oh];
        for oy in 0..oh {
            for ox in 0..ow {
                let (cx, cy) = (ox as f64 + 0.5, oy as f64 + 0.5);
                // Walk back through the stages, checking each input.
                let (mut px, mut py) = (cx, cy);
                let mut ok = true;
                let mut m = f64::INFINITY;
                for st in stages.iter().rev() {
                    (px, py) = st.forward.inverse().unwrap().apply(px, py);
                    let (iw, ih) = (f64::from(st.input.0), f64::from(st.input.1));
                    ok &= px >= 0.0 && px < iw && py >= 0.0 && py < ih;
                    m = m
                        .min(px.abs())
                        .min(py.abs())
                        .min((px - iw).abs())
                        .min((py - ih).abs());
                }
                let o = oy * ow + ox;
                margin[o] = m;
                if !ok {
                    continue;
                }
                valid[o] = true;
                let (fx, fy) = (px - 0.5, py - 0.5);
                let (x0, y0) = (fx.floor(), fy.floor());
                let (tx, ty) = (fx - x0, fy - y0);
                let cl = |v: f64, n: usize| (v.max(0.0) as usize).min(n - 1);
                let (xa, xb, ya, yb) = (cl(x0, w), cl(x0 + 1.0, w), cl(y0, h), cl(y0 + 1.0, h));
                for b in 0..bands {
                    let p = |x: usize, y: usize| f64::from(s.image[b * w * h + y * w + x]);
                    let top = p(xa, ya) * (1.0 - tx) + p(xb, ya) * tx;
                    let bot = p(xa, yb) * (1.0 - tx) + p(xb, yb) * tx;
                    image[b * ow * oh + o] = (top * (1.0 - ty) + bot * ty) as f32;
                }
                mask[o] = s.mask.as_ref().unwrap()
                    [(py as usize).min(h - 1) * w + (px as usize).min(w - 1)];
            }
        }
        (image, mask, valid, margin)
    }

    #[test]
    fn every_resampling_path_matches_the_reference() {
        use rand::rngs::StdRng;
        use rand::{Rng, SeedableRng};
        let mut rng = StdRng::seed_from_u64(11);
        for case in 0..300 {
            let (w, h) = (rng.random_range(1..24u32), rng.random_range(1..24u32));
            let bands = rng.random_range(1..5u32);
            let n = (w * h) as usize;
            let s = AugSample {
                width: w,
                height: h,
                bands,
                image: (0..n * bands as usize)
                    .map(|_| rng.random_range(-1.0..1.0f32))
                    .collect(),
                mask: Some((0..n as u32).collect()),
                boxes: vec![],
            };
            let mut stages = Vec::new();
            let (mut cw, mut ch) = (w, h);
            for _ in 0..rng.random_range(1..=3) {
                let (nw, nh) = (rng.random_range(1..24u32), rng.random_range(1..24u32));
                let kind = rng.random_range(0..4);
                let stage = if kind == 0 {
                    let mut st = crate::dihedral_stage(cw, ch, rng.random_range(0..8));
                    st.exact = true;
                    st
                } else {
                    let scale =
                        Affine2::scale(rng.random_range(0.4..2.5), rng.random_range(0.4..2.5));
                    let turn = match kind {
                        1 => Affine2::IDENTITY,
                        2 => Affine2([0.0, 1.0, 0.0, 1.0, 0.0, 0.0]),
                        _ => Affine2::rotate(rng.random_range(-1.0..1.0)),
                    };
                    let f = Affine2::translate(-f64::from(cw) / 2.0, -f64::from(ch) / 2.0)
                        .then(&turn)
                        .then(&scale)
                        .then(&Affine2::translate(
                            f64::from(nw) / 2.0 + rng.random_range(-3.0..3.0),
                            f64::from(nh) / 2.0 + rng.random_range(-3.0..3.0),
                        ));
                    Stage::new(f, (cw, ch), (nw, nh))
                };
                (cw, ch) = stage.output;
                stages.push(stage);
            }
            let (want, want_mask, valid, margin) = reference(&s, &stages);
            let mut got = s.clone();
            warp_pixels(&mut got, &stages);
            assert_eq!((got.width, got.height), (cw, ch), "case {case}");
            let plane = (cw * ch) as usize;
            let got_mask = got.mask.as_ref().unwrap();
            for o in 0..plane {
                if margin[o] < 1e-3 {
                    continue;
                }
                assert_eq!(
                    got_mask[o] != IGNORE,
                    valid[o],
                    "case {case} pixel {o} validity"
                );
                assert_eq!(got_mask[o], want_mask[o], "case {case} pixel {o} mask");
                for b in 0..bands as usize {
                    let (g, r) = (got.image[b * plane + o], want[b * plane + o]);
                    assert!(
                        (g - r).abs() < 2e-3,
                        "case {case} band {b} pixel {o}: {g} vs {r}"
                    );
                }
            }
        }
    }

    #[test]
    fn inverse_and_then_compose() {
        let m = Affine2::rotate(0.3)
            .then(&Affine2::scale(2.0, 0.5))
            .then(&Affine2::translate(3.0, -1.0));
        let inv = m.inverse().unwrap();
        let (x, y) = m.apply(1.5, -2.0);
        let (bx, by) = inv.apply(x, y);
        assert!((bx - 1.5).abs() < 1e-9 && (by + 2.0).abs() < 1e-9);
        let (sx, sy) = Affine2::scale(2.0, 3.0)
            .then(&Affine2::translate(1.0, 1.0))
            .apply(1.0, 1.0);
        assert_eq!((sx, sy), (3.0, 4.0));
    }

    #[test]
    fn half_scale_crop_reads_the_right_pixels() {
        // Upscale 2x: output pixel 1 (centre 1.5) reads source 0.75, between pixels 0 and 1.
        let mut s = AugSample {
            width: 2,
            height: 1,
            bands: 1,
            image: vec![0.0, 4.0],
            mask: Some(vec![7, 8]),
            boxes: vec![],
        };
        warp(
            &mut s,
            &[Stage::new(Affine2::scale(2.0, 1.0), (2, 1), (4, 1))],
            0.3,
        );
        assert_eq!(s.image, vec![0.0, 1.0, 3.0, 4.0]);
        assert_eq!(s.mask, Some(vec![7, 7, 8, 8]));
    }

    #[test]
    fn outside_is_zero_and_ignored() {
        let mut s = AugSample {
            width: 2,
            height: 2,
            bands: 1,
            image: vec![1.0; 4],
            mask: Some(vec![3; 4]),
            boxes: vec![([0.0, 0.0, 1.0, 1.0], 0), ([1.0, 0.0, 2.0, 2.0], 1)],
        };
        warp(
            &mut s,
            &[Stage::new(Affine2::translate(1.0, 0.0), (2, 2), (2, 2))],
            0.3,
        );
        assert_eq!(s.image, vec![0.0, 1.0, 0.0, 1.0]);
        assert_eq!(s.mask, Some(vec![IGNORE, 3, IGNORE, 3]));
        // The second box moved fully outside and is dropped.
        assert_eq!(s.boxes, vec![([1.0, 0.0, 2.0, 1.0], 0)]);
    }
}
