//! RoIAlign (He et al., 2017, Mask R-CNN): a fixed-size feature per region of interest, each
//! output bin the mean of bilinear samples on a regular grid inside it, as torchvision's
//! `roi_align` computes it (golden-tested against an independent numpy reference in
//! `tests/fixtures/roi_align/`).
//!
//! It is composed from Burn ops, so every backend runs it and autodiff gives its backward pass
//! (the gradient with respect to the features; boxes are data). The sampling plan (which
//! feature pixels feed which bin, with what weight) depends only on the boxes and shapes, so it
//! is computed on the host; the features are then gathered once and summed into the bins with
//! one scatter-add.

use burn::tensor::backend::Backend;
use burn::tensor::{IndexingUpdateOp, Int, Tensor, TensorData};

/// How regions are pooled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoiAlignConfig {
    /// Output bins per side.
    pub output_size: usize,
    /// Feature-map pixels per image pixel (1 / the level's stride).
    pub spatial_scale: f32,
    /// Samples per bin side; 0 takes `ceil(region side / output_size)` per region.
    pub sampling_ratio: usize,
    /// Shift boxes by half a pixel so that pixel centres are at integer + 0.5 (Detectron2's
    /// and torchvision's `aligned=True`).
    pub aligned: bool,
}

/// One region: the index of its image in the batch and its box `[x0, y0, x1, y1]` in image
/// pixels.
pub type Roi = (usize, [f32; 4]);

/// Where the samples of every bin come from: rows of the output `[R * P * P]`, rows of the
/// flattened features `[B * H * W]`, and weights, one entry per bilinear corner.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct SamplingPlan {
    /// The output row (region, bin) each term adds to.
    pub out_rows: Vec<i64>,
    /// The feature row (image, y, x) each term reads.
    pub feature_rows: Vec<i64>,
    /// Each term's weight (bilinear weight over the bin's sample count).
    pub weights: Vec<f32>,
}

/// The four corners of a bilinear sample at `(y, x)` on an `h x w` map as
/// `(weight, y, x)`, or none when the sample lies more than one pixel outside.
fn bilinear(y: f32, x: f32, h: usize, w: usize) -> Option<[(f32, usize, usize); 4]> {
    let (hf, wf) = (h as f32, w as f32);
    if y < -1.0 || y > hf || x < -1.0 || x > wf {
        return None;
    }
    let (mut y, mut x) = (y.max(0.0), x.max(0.0));
    let (mut y0, mut x0) = (y as usize, x as usize);
    let (y1, x1);
    if y0 >= h - 1 {
        y0 = h - 1;
        y1 = h - 1;
        y = y0 as f32;
    } else {
        y1 = y0 + 1;
    }
    if x0 >= w - 1 {
        x0 = w - 1;
        x1 = w - 1;
        x = x0 as f32;
    } else {
        x1 = x0 + 1;
    }
    let (ly, lx) = (y - y0 as f32, x - x0 as f32);
    let (hy, hx) = (1.0 - ly, 1.0 - lx);
    Some([
        (hy * hx, y0, x0),
        (hy * lx, y0, x1),
        (ly * hx, y1, x0),
        (ly * lx, y1, x1),
    ])
}

/// The sampling plan of `rois` on a feature map of `height x width` pixels.
pub fn sampling_plan(
    rois: &[Roi],
    height: usize,
    width: usize,
    config: &RoiAlignConfig,
) -> SamplingPlan {
    let mut plan = SamplingPlan::default();
    if height == 0 || width == 0 {
        return plan;
    }
    let p = config.output_size.max(1);
    let offset = if config.aligned { 0.5 } else { 0.0 };
    for (r, &(image, b)) in rois.iter().enumerate() {
        let s = config.spatial_scale;
        let (sx, sy) = (b[0] * s - offset, b[1] * s - offset);
        let (mut rw, mut rh) = (b[2] * s - offset - sx, b[3] * s - offset - sy);
        if !config.aligned {
            rw = rw.max(1.0);
            rh = rh.max(1.0);
        }
        let (bin_w, bin_h) = (rw / p as f32, rh / p as f32);
        let grid = |side: f32| match config.sampling_ratio {
            0 => (side / p as f32).ceil().max(0.0) as usize,
            n => n,
        };
        let (grid_h, grid_w) = (grid(rh), grid(rw));
        let count = (grid_h * grid_w).max(1) as f32;
        for ph in 0..p {
            for pw in 0..p {
                let row = ((r * p + ph) * p + pw) as i64;
                for iy in 0..grid_h {
                    let y = sy + ph as f32 * bin_h + (iy as f32 + 0.5) * bin_h / grid_h as f32;
                    for ix in 0..grid_w {
                        let x = sx + pw as f32 * bin_w + (ix as f32 + 0.5) * bin_w / grid_w as f32;
                        let Some(corners) = bilinear(y, x, height, width) else {
                            continue;
                        };
                        for (wt, yy, xx) in corners {
                            plan.out_rows.push(row);
                            plan.feature_rows
                                .push(((image * height + yy) * width + xx) as i64);
                            plan.weights.push(wt / count);
                        }
                    }
                }
            }
        }
    }
    plan
}

/// RoIAlign of `features` `[B, C, H, W]` over `rois`: `[R, C, P, P]`, differentiable with
/// respect to the features. Regions name their image by its index in the batch.
pub fn roi_align<B: Backend>(
    features: Tensor<B, 4>,
    rois: &[Roi],
    config: &RoiAlignConfig,
) -> Tensor<B, 4> {
    let [batch, channels, height, width] = features.dims();
    let p = config.output_size.max(1);
    let device = features.device();
    let bins = rois.len() * p * p;
    let plan = sampling_plan(rois, height, width, config);
    let out = Tensor::<B, 2>::zeros([bins, channels], &device);
    if plan.weights.is_empty() || rois.is_empty() {
        return out
            .reshape([rois.len(), p, p, channels])
            .permute([0, 3, 1, 2]);
    }
    let n = plan.weights.len();
    let flat = features
        .permute([0, 2, 3, 1])
        .reshape([batch * height * width, channels]);
    let feature_rows =
        Tensor::<B, 1, Int>::from_data(TensorData::new(plan.feature_rows, [n]), &device);
    let out_rows = Tensor::<B, 1, Int>::from_data(TensorData::new(plan.out_rows, [n]), &device);
    let weights = Tensor::<B, 1>::from_data(TensorData::new(plan.weights, [n]), &device);
    let terms = flat.select(0, feature_rows) * weights.reshape([n, 1]);
    out.select_assign(0, out_rows, terms, IndexingUpdateOp::Add)
        .reshape([rois.len(), p, p, channels])
        .permute([0, 3, 1, 2])
}
