//! The one inference path. Validation, `autodl predict` and the report's sample predictions
//! all run a model through these functions, so what the leaderboard scores is what a package
//! delivers: the same image loading and normalisation, the same windows and padding, one
//! window per forward pass (so no result depends on which other images share a batch), and
//! the same post-processing.

use std::path::Path;

use autodl_api::PluginError;
use autodl_detection::{Box4, PostprocessConfig, ScoredBox, batched_nms, postprocess};
use burn::tensor::activation::{sigmoid, softmax};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use crate::det::{DetNet, DetOptions, DetOutput};
use crate::seg::SegNet;

/// Input sides are padded to a multiple of this, the backbones' total stride.
pub const SIZE_MULTIPLE: usize = 32;

/// An image ready for a network: band-major `(x - mean) / std` pixels.
#[derive(Debug, Clone)]
pub struct Normalised {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Bands.
    pub bands: usize,
    /// `bands * height * width` values.
    pub data: Vec<f32>,
}

/// `(x - mean) / std` per band of a band-major image with `plane` pixels per band. A band
/// without statistics is left as it is (callers check band counts first).
pub fn normalise(mut image: Vec<f32>, plane: usize, mean: &[f32], std: &[f32]) -> Vec<f32> {
    for (b, chunk) in image.chunks_mut(plane.max(1)).enumerate() {
        let (m, s) = (
            mean.get(b).copied().unwrap_or(0.0),
            std.get(b).copied().unwrap_or(1.0),
        );
        for x in chunk {
            *x = (*x - m) / s;
        }
    }
    image
}

impl Normalised {
    /// Normalises a decoded image with a model's (or a training split's) statistics.
    pub fn new(img: autodl_data::Image, mean: &[f32], std: &[f32]) -> Normalised {
        let (width, height, bands) = (img.width as usize, img.height as usize, img.bands as usize);
        Normalised {
            width,
            height,
            bands,
            data: normalise(img.data, width * height, mean, std),
        }
    }

    /// Reads an image file, refusing one whose band count is not `bands`.
    pub fn read(path: &Path, bands: usize) -> Result<autodl_data::Image, PluginError> {
        let img = autodl_data::load_image(path).map_err(|e| PluginError::Data(e.to_string()))?;
        if img.bands as usize != bands {
            return Err(PluginError::Data(format!(
                "{}: image has {} bands, the model was trained on {bands}",
                path.display(),
                img.bands
            )));
        }
        Ok(img)
    }
}

/// Window side for inference: the training tile, at least 512 px (few windows on large
/// images), a multiple of [`SIZE_MULTIPLE`].
pub fn window_side(tile: usize) -> usize {
    tile.max(512).div_ceil(SIZE_MULTIPLE) * SIZE_MULTIPLE
}

/// Window origins along one axis of length `len` for windows of `tile` with `overlap` pixels.
pub fn window_starts(len: usize, tile: usize, overlap: usize) -> Vec<usize> {
    if len <= tile {
        return vec![0];
    }
    let stride = tile.saturating_sub(overlap).max(1);
    let mut starts: Vec<usize> = (0..)
        .map(|i| i * stride)
        .take_while(|&s| s + tile < len)
        .collect();
    starts.push(len - tile);
    starts
}

/// One window of an image: the `w x h` region at `(x0, y0)`, zero-padded to `pw x ph` (zero
/// being the mean after normalisation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Left edge in the image.
    pub x0: usize,
    /// Top edge in the image.
    pub y0: usize,
    /// Width of the image region.
    pub w: usize,
    /// Height of the image region.
    pub h: usize,
    /// Padded width given to the network.
    pub pw: usize,
    /// Padded height given to the network.
    pub ph: usize,
}

/// The windows covering a `width x height` image for a model trained on `tile`-sided tiles:
/// one padded window when the image fits, else windows of [`window_side`] overlapping by a
/// quarter, so that an object cut by one border lies whole in the next.
pub fn windows(width: usize, height: usize, tile: usize) -> Vec<Window> {
    let win = window_side(tile);
    let (w, h) = (win.min(width), win.min(height));
    let (pw, ph) = (
        w.div_ceil(SIZE_MULTIPLE) * SIZE_MULTIPLE,
        h.div_ceil(SIZE_MULTIPLE) * SIZE_MULTIPLE,
    );
    let ys = window_starts(height, win, win / 4);
    window_starts(width, win, win / 4)
        .into_iter()
        .flat_map(|x0| {
            ys.iter().map(move |&y0| Window {
                x0,
                y0,
                w,
                h,
                pw,
                ph,
            })
        })
        .collect()
}

/// A borrowed normalised image: what the inference functions read.
#[derive(Debug, Clone, Copy)]
pub struct View<'a> {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Bands.
    pub bands: usize,
    /// `bands * height * width` normalised values, band-major.
    pub data: &'a [f32],
}

impl Normalised {
    /// The image as a [`View`].
    pub fn view(&self) -> View<'_> {
        View {
            width: self.width,
            height: self.height,
            bands: self.bands,
            data: &self.data,
        }
    }
}

impl View<'_> {
    /// The window's pixels as a `[1, bands, ph, pw]` tensor.
    pub fn window_tensor<B: Backend>(&self, win: &Window, device: &B::Device) -> Tensor<B, 4> {
        let (pw, ph, bands) = (win.pw, win.ph, self.bands);
        let mut out = vec![0f32; bands * pw * ph];
        let plane = self.width * self.height;
        for b in 0..bands {
            for y in 0..win.h {
                let src = b * plane + (win.y0 + y) * self.width + win.x0;
                let dst = b * pw * ph + y * pw;
                out[dst..dst + win.w].copy_from_slice(&self.data[src..src + win.w]);
            }
        }
        Tensor::from_data(TensorData::new(out, [1, bands, ph, pw]), device)
    }
}

/// Per-pixel class probabilities of an image (`classes * height * width`, class-major),
/// averaged over the windows that cover each pixel, so window borders leave no seams.
pub fn segment<B: Backend, M: SegNet<B>>(
    model: &M,
    image: View<'_>,
    classes: usize,
    tile: usize,
    device: &B::Device,
) -> Result<Vec<f32>, PluginError> {
    let (w, plane) = (image.width, image.width * image.height);
    let mut score = vec![0f32; classes * plane];
    let mut cover = vec![0u16; plane];
    for win in windows(image.width, image.height, tile) {
        let logits = model.forward(image.window_tensor::<B>(&win, device));
        let k = logits.dims()[1];
        if k != classes {
            return Err(PluginError::Data(format!(
                "the network gives {k} class scores, the model lists {classes} classes"
            )));
        }
        let p: Vec<f32> = softmax(logits, 1).into_data().iter::<f32>().collect();
        let (pw, ph) = (win.pw, win.ph);
        for y in 0..win.h {
            let row = (win.y0 + y) * w + win.x0;
            for c in cover[row..row + win.w].iter_mut() {
                *c += 1;
            }
            for c in 0..classes {
                let src = &p[c * pw * ph + y * pw..c * pw * ph + y * pw + win.w];
                for (s, &v) in score[c * plane + row..c * plane + row + win.w]
                    .iter_mut()
                    .zip(src)
                {
                    *s += v;
                }
            }
        }
    }
    for c in 0..classes {
        for (s, &n) in score[c * plane..(c + 1) * plane].iter_mut().zip(&cover) {
            *s /= f32::from(n.max(1));
        }
    }
    Ok(score)
}

/// The most probable class of each pixel from [`segment`]'s probabilities (the lowest index
/// on ties).
pub fn classes_of(probs: &[f32], classes: usize) -> Vec<u32> {
    let plane = probs.len() / classes.max(1);
    (0..plane)
        .map(|i| {
            let mut best = 0;
            for c in 1..classes {
                if probs[c * plane + i] > probs[best * plane + i] {
                    best = c;
                }
            }
            best as u32
        })
        .collect()
}

/// A detector's raw output on one window, on the host.
#[derive(Debug, Clone)]
pub struct WindowOutput {
    /// The window.
    pub window: Window,
    /// Class probabilities, `anchors * k`.
    pub probs: Vec<f32>,
    /// Box deltas, `anchors * 4`.
    pub deltas: Vec<f32>,
    /// The anchors, in window coordinates.
    pub anchors: Vec<Box4>,
    /// Columns per anchor.
    pub k: usize,
}

/// Runs a detector on every window of an image. `each` sees every window with the network's
/// output (validation computes its loss there).
pub fn detect_windows<B: Backend, M: DetNet<B>>(
    model: &M,
    image: View<'_>,
    tile: usize,
    opts: &DetOptions,
    anchors: &autodl_detection::AnchorConfig,
    device: &B::Device,
    mut each: impl FnMut(&Window, DetOutput<B>),
) -> Result<Vec<WindowOutput>, PluginError> {
    let mut outputs = Vec::new();
    for window in windows(image.width, image.height, tile) {
        let out = model.forward(image.window_tensor::<B>(&window, device));
        let k = out.logits.dims()[2];
        let p = if opts.background_first() {
            softmax(out.logits.clone(), 2)
        } else {
            sigmoid(out.logits.clone())
        };
        let probs: Vec<f32> = p.into_data().iter::<f32>().collect();
        let deltas: Vec<f32> = out.deltas.clone().into_data().iter::<f32>().collect();
        let window_anchors = anchors.generate(&out.levels);
        if probs.len() != window_anchors.len() * k || deltas.len() != window_anchors.len() * 4 {
            return Err(PluginError::Data(format!(
                "the network gives {} box predictions for {} anchors: its anchor settings do not match its weights",
                deltas.len() / 4,
                window_anchors.len()
            )));
        }
        each(&window, out);
        outputs.push(WindowOutput {
            window,
            probs,
            deltas,
            anchors: window_anchors,
            k,
        });
    }
    Ok(outputs)
}

/// Scored boxes of an image from its windows: each window post-processed (score floor, top-k,
/// NMS at `nms_iou`, boxes clipped to the image part of the window), shifted into image
/// coordinates, and, when there are several windows, merged with class-wise NMS.
pub fn boxes(outputs: &[WindowOutput], opts: &DetOptions, nms_iou: f32) -> Vec<ScoredBox> {
    let post = PostprocessConfig {
        nms_iou,
        ..PostprocessConfig::default()
    };
    let mut all = Vec::new();
    for o in outputs {
        let size = (o.window.w as f32, o.window.h as f32);
        let (x0, y0) = (o.window.x0 as f32, o.window.y0 as f32);
        for mut d in postprocess(
            &o.probs,
            &o.deltas,
            &o.anchors,
            o.k,
            opts.background_first(),
            &opts.coder,
            size,
            &post,
        ) {
            d.bbox = [
                d.bbox[0] + x0,
                d.bbox[1] + y0,
                d.bbox[2] + x0,
                d.bbox[3] + y0,
            ];
            all.push(d);
        }
    }
    if outputs.len() <= 1 {
        return all;
    }
    let bxs: Vec<Box4> = all.iter().map(|d| d.bbox).collect();
    let scores: Vec<f32> = all.iter().map(|d| d.score).collect();
    let classes: Vec<usize> = all.iter().map(|d| d.class).collect();
    batched_nms(&bxs, &scores, &classes, nms_iou)
        .into_iter()
        .map(|i| all[i])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_cover_the_axis() {
        assert_eq!(window_starts(50, 64, 16), vec![0]);
        let s = window_starts(200, 64, 16);
        assert_eq!(s.first(), Some(&0));
        assert_eq!(s.last(), Some(&136));
        assert!(s.windows(2).all(|p| p[1] - p[0] <= 48));
    }

    #[test]
    fn a_small_image_is_one_padded_window() {
        assert_eq!(
            windows(400, 160, 256),
            vec![Window {
                x0: 0,
                y0: 0,
                w: 400,
                h: 160,
                pw: 416,
                ph: 160
            }]
        );
        let big = windows(1200, 500, 256);
        assert_eq!(big.len(), 3);
        assert!(big.iter().all(|w| w.w == 512 && w.h == 500 && w.ph == 512));
        assert_eq!(big.last().map(|w| w.x0 + w.w), Some(1200));
    }

    #[test]
    fn ties_go_to_the_lowest_class() {
        assert_eq!(classes_of(&[0.5, 0.2, 0.5, 0.8], 2), vec![0, 1]);
    }
}
