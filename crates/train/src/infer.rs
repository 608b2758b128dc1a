//! The one inference path. Validation, `autodl predict` and the report's sample predictions
//! all run a model through these functions, so what the leaderboard scores is what a package
//! delivers: the same image loading and normalisation, the same windows and padding, one
//! window per forward pass (so no result depends on which other images share a batch), and
//! the same post-processing.

use std::path::Path;

use autodl_data::{RawImage, SceneReader};

use autodl_api::PluginError;
use autodl_detection::{Box4, ScoredBox, batched_nms};
use burn::tensor::activation::softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use crate::det::{Detected, Detector, Targets};
use crate::seg::SegNet;

/// Input sides are padded to a multiple of this, the backbones' total stride.
pub const SIZE_MULTIPLE: usize = 32;

/// `(x - mean) / std` per band of a band-major image with `plane` pixels per band. A band
/// without statistics is left as it is (callers check band counts first).
pub fn normalise(mut image: Vec<f32>, plane: usize, mean: &[f32], std: &[f32]) -> Vec<f32> {
    for (b, chunk) in image.chunks_mut(plane.max(1)).enumerate() {
        normalise_band(chunk, b, mean, std);
    }
    image
}

/// `(x - mean[band]) / std[band]` in place: the one formula every pixel goes through.
fn normalise_band(values: &mut [f32], band: usize, mean: &[f32], std: &[f32]) {
    let (m, s) = (
        mean.get(band).copied().unwrap_or(0.0),
        std.get(band).copied().unwrap_or(1.0),
    );
    for x in values {
        *x = (*x - m) / s;
    }
}

/// Reads an image file's samples as stored (see [`autodl_data::load_raw_image`]), refusing
/// one whose band count is not `bands`.
pub fn read(path: &Path, bands: usize) -> Result<RawImage, PluginError> {
    let img = autodl_data::load_raw_image(path).map_err(|e| PluginError::Data(e.to_string()))?;
    if img.bands as usize != bands {
        return Err(PluginError::Data(format!(
            "{}: image has {} bands, the model was trained on {bands}",
            path.display(),
            img.bands
        )));
    }
    Ok(img)
}

/// Opens an image file to be read a band of rows at a time (see
/// [`autodl_data::SceneReader`]), refusing one whose band count is not `bands`.
pub fn open_scene(path: &Path, bands: usize) -> Result<SceneReader, PluginError> {
    let scene = SceneReader::open(path).map_err(crate::predict::data_err)?;
    if scene.bands() as usize != bands {
        return Err(PluginError::Data(format!(
            "{}: image has {} bands, the model was trained on {bands}",
            path.display(),
            scene.bands()
        )));
    }
    Ok(scene)
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
    let xs = window_starts(width, win, win / 4);
    // Row-major, top band first: [`segment_rows`] finishes rows as the bands pass.
    window_starts(height, win, win / 4)
        .into_iter()
        .flat_map(|y0| {
            xs.iter().map(move |&x0| Window {
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

/// Where a [`View`]'s pixels come from.
#[derive(Debug, Clone, Copy)]
pub enum Pixels<'a> {
    /// `bands * height * width` values already normalised, band-major (training's items).
    Normalised(&'a [f32]),
    /// Samples as the file holds them, normalised window by window (predict: an image too
    /// large to hold as `f32` costs only its own sample size).
    Raw {
        /// The image, or a band of its rows.
        image: &'a RawImage,
        /// The image row of `image`'s first row.
        row0: usize,
        /// Per-band mean.
        mean: &'a [f32],
        /// Per-band standard deviation.
        std: &'a [f32],
    },
}

/// A borrowed image: what the inference functions read.
#[derive(Debug, Clone, Copy)]
pub struct View<'a> {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Bands.
    pub bands: usize,
    /// The pixels.
    pub pixels: Pixels<'a>,
    /// Seen mirrored left to right (flip test-time augmentation): column `x` of the view is
    /// column `width - 1 - x` of the pixels.
    pub mirrored: bool,
}

impl<'a> View<'a> {
    /// A view of normalised band-major values.
    pub fn normalised(width: usize, height: usize, bands: usize, data: &'a [f32]) -> Self {
        View {
            width,
            height,
            bands,
            pixels: Pixels::Normalised(data),
            mirrored: false,
        }
    }

    /// A view of a raw image, normalised with `mean` and `std` as it is read.
    pub fn raw(image: &'a RawImage, mean: &'a [f32], std: &'a [f32]) -> Self {
        View {
            width: image.width as usize,
            height: image.height as usize,
            bands: image.bands as usize,
            pixels: Pixels::Raw {
                image,
                row0: 0,
                mean,
                std,
            },
            mirrored: false,
        }
    }

    /// The same pixels mirrored left to right, or not.
    pub fn mirror(self, mirrored: bool) -> Self {
        View { mirrored, ..self }
    }

    /// The window's pixels as a `[1, bands, ph, pw]` tensor.
    pub fn window_tensor<B: Backend>(&self, win: &Window, device: &B::Device) -> Tensor<B, 4> {
        let (pw, ph, bands) = (win.pw, win.ph, self.bands);
        let mut out = vec![0f32; bands * pw * ph];
        let plane = self.width * self.height;
        // A mirrored window reads the mirror image of its columns, then reverses each row.
        let x0 = if self.mirrored {
            self.width - win.x0 - win.w
        } else {
            win.x0
        };
        for b in 0..bands {
            for y in 0..win.h {
                let dst = &mut out[b * pw * ph + y * pw..b * pw * ph + y * pw + win.w];
                match self.pixels {
                    Pixels::Normalised(data) => {
                        let src = b * plane + (win.y0 + y) * self.width + x0;
                        dst.copy_from_slice(&data[src..src + win.w]);
                    }
                    Pixels::Raw {
                        image,
                        row0,
                        mean,
                        std,
                    } => {
                        image.band_row(b, win.y0 + y - row0, x0, dst);
                        normalise_band(dst, b, mean, std);
                    }
                }
                if self.mirrored {
                    dst.reverse();
                }
            }
        }
        Tensor::from_data(TensorData::new(out, [1, bands, ph, pw]), device)
    }
}

/// What windows are cut from: an image held whole ([`View`]) or a scene read a band of rows
/// at a time ([`Scene`]). Windows are asked for top band first, as [`windows`] lists them.
pub trait WindowSource {
    /// Width in pixels.
    fn width(&self) -> usize;
    /// Height in pixels.
    fn height(&self) -> usize;
    /// The window's pixels as a `[1, bands, ph, pw]` tensor.
    fn window<B: Backend>(
        &mut self,
        win: &Window,
        device: &B::Device,
    ) -> Result<Tensor<B, 4>, PluginError>;
}

impl WindowSource for View<'_> {
    fn width(&self) -> usize {
        self.width
    }

    fn height(&self) -> usize {
        self.height
    }

    fn window<B: Backend>(
        &mut self,
        win: &Window,
        device: &B::Device,
    ) -> Result<Tensor<B, 4>, PluginError> {
        Ok(self.window_tensor(win, device))
    }
}

/// A scene read a band of rows at a time and normalised window by window: prediction over a
/// raster of any size holds one band of its rows. Each window read is reported to `progress`.
pub struct Scene<'a> {
    reader: &'a mut SceneReader,
    mean: &'a [f32],
    std: &'a [f32],
    mirrored: bool,
    progress: &'a dyn autodl_api::PredictProgress,
}

impl<'a> Scene<'a> {
    /// `reader`'s pixels normalised with `mean` and `std`, mirrored left to right when
    /// `mirrored`.
    pub fn new(
        reader: &'a mut SceneReader,
        mean: &'a [f32],
        std: &'a [f32],
        mirrored: bool,
        progress: &'a dyn autodl_api::PredictProgress,
    ) -> Self {
        Scene {
            reader,
            mean,
            std,
            mirrored,
            progress,
        }
    }
}

impl WindowSource for Scene<'_> {
    fn width(&self) -> usize {
        self.reader.width() as usize
    }

    fn height(&self) -> usize {
        self.reader.height() as usize
    }

    fn window<B: Backend>(
        &mut self,
        win: &Window,
        device: &B::Device,
    ) -> Result<Tensor<B, 4>, PluginError> {
        let (width, height) = (self.width(), self.height());
        let bands = self.reader.bands() as usize;
        let block = self
            .reader
            .rows(win.y0, win.h)
            .map_err(crate::predict::data_err)?;
        let view = View {
            width,
            height,
            bands,
            pixels: Pixels::Raw {
                image: block.image,
                row0: block.row0,
                mean: self.mean,
                std: self.std,
            },
            mirrored: self.mirrored,
        };
        let tensor = view.window_tensor(win, device);
        self.progress.window();
        Ok(tensor)
    }
}

/// Window-averaged class probabilities of the rows a band of windows covers, emitted row by
/// row once no later window reaches them, so memory is one band of windows, not the image.
struct RowAverager {
    classes: usize,
    width: usize,
    /// Rows held: the windows' height.
    rows: usize,
    /// Image row of the first held row.
    base: usize,
    /// `classes * rows * width` probability sums.
    sum: Vec<f32>,
    /// `rows * width` window counts.
    cover: Vec<u16>,
    /// One emitted row, `classes * width`, class-major.
    row: Vec<f32>,
}

impl RowAverager {
    fn new(classes: usize, width: usize, rows: usize) -> Self {
        RowAverager {
            classes,
            width,
            rows,
            base: 0,
            sum: vec![0.0; classes * rows * width],
            cover: vec![0; rows * width],
            row: vec![0.0; classes * width],
        }
    }

    /// Adds a window's `classes * ph * pw` probabilities; the window starts at row `base`.
    fn add(&mut self, win: &Window, p: &[f32]) {
        let (pw, ph, w, held) = (win.pw, win.ph, self.width, self.rows * self.width);
        for y in 0..win.h {
            let row = (win.y0 - self.base + y) * w + win.x0;
            for c in self.cover[row..row + win.w].iter_mut() {
                *c += 1;
            }
            for c in 0..self.classes {
                let src = &p[c * pw * ph + y * pw..c * pw * ph + y * pw + win.w];
                for (s, &v) in self.sum[c * held + row..c * held + row + win.w]
                    .iter_mut()
                    .zip(src)
                {
                    *s += v;
                }
            }
        }
    }

    /// Emits held rows up to image row `to` (exclusive, at most `base + rows`) and shifts the
    /// rest up.
    fn emit(
        &mut self,
        to: usize,
        each_row: &mut impl FnMut(usize, &[f32]) -> Result<(), PluginError>,
    ) -> Result<(), PluginError> {
        let (w, held) = (self.width, self.rows * self.width);
        let n = to.saturating_sub(self.base).min(self.rows);
        for r in 0..n {
            for c in 0..self.classes {
                let src = &self.sum[c * held + r * w..c * held + (r + 1) * w];
                for ((o, &s), &k) in self.row[c * w..(c + 1) * w]
                    .iter_mut()
                    .zip(src)
                    .zip(&self.cover[r * w..(r + 1) * w])
                {
                    *o = s / f32::from(k.max(1));
                }
            }
            each_row(self.base + r, &self.row)?;
        }
        for c in 0..self.classes {
            let band = &mut self.sum[c * held..(c + 1) * held];
            band.copy_within(n * w.., 0);
            band[held - n * w..].fill(0.0);
        }
        self.cover.copy_within(n * w.., 0);
        self.cover[held - n * w..].fill(0);
        self.base += n;
        Ok(())
    }
}

/// Per-pixel class probabilities of an image, averaged over the windows that cover each pixel
/// so window borders leave no seams, handed to `each_row` one image row at a time, top to
/// bottom (`classes * width` values, class-major). Memory is one band of windows whatever the
/// image's height.
pub fn segment_rows<B: Backend, M: SegNet<B>>(
    model: &M,
    mut image: impl WindowSource,
    classes: usize,
    tile: usize,
    device: &B::Device,
    mut each_row: impl FnMut(usize, &[f32]) -> Result<(), PluginError>,
) -> Result<(), PluginError> {
    let (width, height) = (image.width(), image.height());
    let wins = windows(width, height, tile);
    let rows = wins.first().map_or(0, |w| w.h);
    let mut avg = RowAverager::new(classes, width, rows);
    for win in wins {
        if win.y0 > avg.base {
            avg.emit(win.y0, &mut each_row)?;
        }
        let logits = model.forward(image.window::<B>(&win, device)?);
        let k = logits.dims()[1];
        if k != classes {
            return Err(PluginError::Data(format!(
                "the network gives {k} class scores, the model lists {classes} classes"
            )));
        }
        let p: Vec<f32> = softmax(logits, 1).into_data().iter::<f32>().collect();
        avg.add(&win, &p);
    }
    avg.emit(height, &mut each_row)
}

/// [`segment_rows`] gathered into one `classes * height * width` buffer, class-major.
pub fn segment<B: Backend, M: SegNet<B>>(
    model: &M,
    image: View<'_>,
    classes: usize,
    tile: usize,
    device: &B::Device,
) -> Result<Vec<f32>, PluginError> {
    let (w, plane) = (image.width, image.width * image.height);
    let mut score = vec![0f32; classes * plane];
    segment_rows(model, image, classes, tile, device, |y, row| {
        for c in 0..classes {
            score[c * plane + y * w..c * plane + (y + 1) * w]
                .copy_from_slice(&row[c * w..(c + 1) * w]);
        }
        Ok(())
    })?;
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

/// Runs a detector on every window of an image, one forward pass each, handing `each` the
/// window and what the detector found there: boxes in image coordinates, one list per IoU of
/// `nms_ious`, and the loss against `targets(window)` when that gives any (validation's). So
/// nothing per window is kept. Returns the number of windows.
#[allow(clippy::too_many_arguments)]
pub fn detect_windows<B: Backend, H: Sync, D: Detector<B, H>>(
    model: &D,
    head: &H,
    mut image: impl WindowSource,
    tile: usize,
    nms_ious: &[f32],
    targets: impl Fn(&Window) -> Option<Targets>,
    device: &B::Device,
    mut each: impl FnMut(&Window, Detected),
) -> Result<usize, PluginError> {
    let wins = windows(image.width(), image.height(), tile);
    let n = wins.len();
    for window in wins {
        let objects = targets(&window);
        let mut found = model.detect(
            head,
            image.window::<B>(&window, device)?,
            (window.w, window.h),
            nms_ious,
            objects.as_deref(),
        )?;
        let (x0, y0) = (window.x0 as f32, window.y0 as f32);
        for d in found.boxes.iter_mut().flatten() {
            d.bbox = [
                d.bbox[0] + x0,
                d.bbox[1] + y0,
                d.bbox[2] + x0,
                d.bbox[3] + y0,
            ];
        }
        each(&window, found);
    }
    Ok(n)
}

/// An image's boxes from the [`detect_windows`] boxes of its `windows` windows: as they are for one
/// window, else merged with class-wise NMS at `nms_iou`.
pub fn merge_boxes(all: Vec<ScoredBox>, windows: usize, nms_iou: f32) -> Vec<ScoredBox> {
    if windows <= 1 {
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
    fn a_mirrored_view_reads_each_window_mirrored() {
        type B = autodl_backend::burn::backend::Flex;
        let device = Default::default();
        // Two bands, 5 x 3, every value distinct; windows 4 wide (with a 1-column overlap
        // that makes the two windows' columns differ from their mirrors').
        let (w, h) = (5usize, 3usize);
        let data: Vec<f32> = (0..2 * w * h).map(|i| i as f32).collect();
        let view = View::normalised(w, h, 2, &data);
        let mirrored_data: Vec<f32> = data
            .chunks(w)
            .flat_map(|row| row.iter().rev().copied())
            .collect();
        let reference = View::normalised(w, h, 2, &mirrored_data);
        for win in windows(w, h, 4) {
            let got: Vec<f32> = view
                .mirror(true)
                .window_tensor::<B>(&win, &device)
                .into_data()
                .iter::<f32>()
                .collect();
            let want: Vec<f32> = reference
                .window_tensor::<B>(&win, &device)
                .into_data()
                .iter::<f32>()
                .collect();
            assert_eq!(got, want, "{win:?}");
        }
    }

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
    fn rows_stream_out_as_the_average_over_covering_windows() {
        // Windows of a 1300 x 1100 image (tile 512: 4 x 3 windows overlapping by 128 or more), each
        // giving pixel (x, y) of class c the value f(window, c, x, y); the streamed rows must
        // equal the average over the windows covering each pixel, computed whole.
        let (width, height, classes) = (1300, 1100, 2);
        let wins = windows(width, height, 512);
        assert_eq!(wins.len(), 12);
        let f = |i: usize, c: usize, x: usize, y: usize| ((i * 7 + c * 3 + x + 2 * y) % 17) as f32;
        let mut sum = vec![0f64; classes * width * height];
        let mut cover = vec![0u32; width * height];
        for (i, win) in wins.iter().enumerate() {
            for y in win.y0..win.y0 + win.h {
                for x in win.x0..win.x0 + win.w {
                    cover[y * width + x] += 1;
                    for c in 0..classes {
                        sum[c * width * height + y * width + x] += f64::from(f(i, c, x, y));
                    }
                }
            }
        }
        let mut avg = RowAverager::new(classes, width, wins[0].h);
        let mut got = vec![f32::NAN; classes * width * height];
        let mut next_row = 0;
        let mut each = |y: usize, row: &[f32]| {
            assert_eq!(y, next_row, "rows come top to bottom, each once");
            next_row += 1;
            for c in 0..classes {
                got[c * width * height + y * width..c * width * height + (y + 1) * width]
                    .copy_from_slice(&row[c * width..(c + 1) * width]);
            }
            Ok(())
        };
        for (i, win) in wins.iter().enumerate() {
            if win.y0 > avg.base {
                avg.emit(win.y0, &mut each).unwrap();
            }
            let mut p = vec![0f32; classes * win.pw * win.ph];
            for c in 0..classes {
                for y in 0..win.h {
                    for x in 0..win.w {
                        p[c * win.pw * win.ph + y * win.pw + x] = f(i, c, win.x0 + x, win.y0 + y);
                    }
                }
            }
            avg.add(win, &p);
        }
        avg.emit(height, &mut each).unwrap();
        assert_eq!(next_row, height);
        for (i, (g, s)) in got.iter().zip(&sum).enumerate() {
            let want = *s / f64::from(cover[i % (width * height)]);
            assert!(
                (f64::from(*g) - want).abs() < 1e-4,
                "value {i}: {g} vs {want}"
            );
        }
    }

    #[test]
    fn ties_go_to_the_lowest_class() {
        assert_eq!(classes_of(&[0.5, 0.2, 0.5, 0.8], 2), vec![0, 1]);
    }
}
