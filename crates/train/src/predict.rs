//! Running a trained pixel classifier on images of any size.
//!
//! Images larger than the training tile are cut into overlapping windows; each pixel takes
//! the class with the highest summed probability over the windows that cover it, so window
//! borders leave no seams.

use std::path::{Path, PathBuf};

use autodl_api::PluginError;
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder};
use burn::tensor::activation::softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use crate::model_dir::ModelMeta;
use crate::seg::SegNet;

/// Window origins along one axis of length `len` for windows of `tile` with `overlap` pixels.
pub fn window_starts(len: usize, tile: usize, overlap: usize) -> Vec<usize> {
    if len <= tile {
        return vec![0];
    }
    let stride = tile.saturating_sub(overlap).max(1);
    let mut starts: Vec<usize> = (0..).map(|i| i * stride).take_while(|&s| s + tile < len).collect();
    starts.push(len - tile);
    starts
}

/// Predicts every image, writing `<stem>.png` (class values) and `<stem>_preview.png`
/// (colours) into `out_dir`. Returns the class-value files.
pub fn predict_segmentation<B, M, F>(
    model_dir: &Path,
    images: &[PathBuf],
    out_dir: &Path,
    size_multiple: usize,
    device: &B::Device,
    build: F,
) -> Result<Vec<PathBuf>, PluginError>
where
    B: Backend,
    M: SegNet<B>,
    F: Fn(&B::Device, &ModelMeta) -> M,
{
    let meta = ModelMeta::load(model_dir)?;
    let model = build(device, &meta)
        .load_file(ModelMeta::weights_stem(model_dir), &NamedMpkFileRecorder::<FullPrecisionSettings>::new(), device)
        .map_err(|e| PluginError::Data(format!("{}: cannot load weights: {e}", model_dir.display())))?;
    std::fs::create_dir_all(out_dir).map_err(|source| PluginError::Io { path: out_dir.to_owned(), source })?;
    let mut written = Vec::new();
    for path in images {
        let img = autodl_data::load_image(path).map_err(|e| PluginError::Data(e.to_string()))?;
        if img.bands as usize != meta.bands {
            return Err(PluginError::Data(format!(
                "{}: image has {} bands, the model was trained on {}",
                path.display(),
                img.bands,
                meta.bands
            )));
        }
        let classes = predict_image(&model, &meta, &img, size_multiple, device);
        let stem = path.file_stem().map_or_else(|| "image".into(), |s| s.to_string_lossy().into_owned());
        let (w, h) = (img.width, img.height);
        let values: Vec<u16> = classes.iter().map(|&c| meta.classes.get(c).map_or(0, |k| k.value as u16)).collect();
        let out = out_dir.join(format!("{stem}.png"));
        let save_err = |p: &Path, e: image::ImageError| PluginError::Other(format!("{}: {e}", p.display()));
        if values.iter().all(|&v| v <= 255) {
            let bytes: Vec<u8> = values.iter().map(|&v| v as u8).collect();
            image::GrayImage::from_raw(w, h, bytes)
                .ok_or_else(|| PluginError::Other("mask size mismatch".into()))?
                .save(&out)
                .map_err(|e| save_err(&out, e))?;
        } else {
            image::ImageBuffer::<image::Luma<u16>, _>::from_raw(w, h, values)
                .ok_or_else(|| PluginError::Other("mask size mismatch".into()))?
                .save(&out)
                .map_err(|e| save_err(&out, e))?;
        }
        let preview: Vec<u8> = classes.iter().flat_map(|&c| autodl_api::class_colour(c)).collect();
        let preview_path = out_dir.join(format!("{stem}_preview.png"));
        image::RgbImage::from_raw(w, h, preview)
            .ok_or_else(|| PluginError::Other("preview size mismatch".into()))?
            .save(&preview_path)
            .map_err(|e| save_err(&preview_path, e))?;
        written.push(out);
    }
    Ok(written)
}

/// Class index per pixel of one image.
pub fn predict_image<B: Backend, M: SegNet<B>>(
    model: &M,
    meta: &ModelMeta,
    img: &autodl_data::Image,
    size_multiple: usize,
    device: &B::Device,
) -> Vec<usize> {
    let (w, h, bands) = (img.width as usize, img.height as usize, meta.bands);
    let tile = (meta.tile_size as usize).max(size_multiple);
    let (tw, th) = (tile.min(w.div_ceil(size_multiple) * size_multiple), tile.min(h.div_ceil(size_multiple) * size_multiple));
    let classes = meta.classes.len();
    let mut score = vec![0f32; classes * w * h];
    let plane = w * h;
    for &y0 in &window_starts(h, th, th / 4) {
        for &x0 in &window_starts(w, tw, tw / 4) {
            let mut buf = vec![0f32; bands * tw * th];
            let (cw, ch) = (tw.min(w - x0), th.min(h - y0));
            for b in 0..bands {
                for y in 0..ch {
                    for x in 0..cw {
                        let v = img.data[b * plane + (y0 + y) * w + x0 + x];
                        buf[b * tw * th + y * tw + x] = (v - meta.mean[b]) / meta.std[b];
                    }
                }
            }
            let x = Tensor::<B, 4>::from_data(TensorData::new(buf, [1, bands, th, tw]), device);
            let p: Vec<f32> = softmax(model.forward(x), 1).into_data().iter::<f32>().collect();
            for c in 0..classes {
                for y in 0..ch {
                    for x in 0..cw {
                        score[c * plane + (y0 + y) * w + x0 + x] += p[c * tw * th + y * tw + x];
                    }
                }
            }
        }
    }
    (0..plane)
        .map(|i| (0..classes).max_by(|&a, &b| score[a * plane + i].total_cmp(&score[b * plane + i])).unwrap_or(0))
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
}
