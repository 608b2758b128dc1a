//! Running a trained pixel classifier on images of any size, through [`crate::infer`]: the
//! same windows, padding and normalisation as validation, so a package predicts what its
//! leaderboard row scored.

use std::path::{Path, PathBuf};

use autodl_api::PluginError;
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder};
use burn::tensor::backend::Backend;

use crate::infer::{self, Normalised};

use crate::model_dir::ModelMeta;
use crate::seg::SegNet;

/// Predicts every image, writing `<stem>.png` (class values) and `previews/<stem>.png`
/// (colours) into `out_dir`, stems from [`autodl_api::files::output_stems`]. Returns the
/// class-value files.
pub fn predict_segmentation<B, M, F>(
    model_dir: &Path,
    images: &[PathBuf],
    out_dir: &Path,
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
        .load_file(
            ModelMeta::weights_stem(model_dir),
            &NamedMpkFileRecorder::<FullPrecisionSettings>::new(),
            device,
        )
        .map_err(|e| {
            PluginError::Data(format!("{}: cannot load weights: {e}", model_dir.display()))
        })?;
    let previews = out_dir.join(autodl_api::files::PREVIEWS);
    std::fs::create_dir_all(&previews).map_err(|source| PluginError::Io {
        path: previews,
        source,
    })?;
    let mut written = Vec::new();
    for (path, stem) in images.iter().zip(autodl_api::files::output_stems(images)) {
        let files = autodl_api::files::prediction_files(
            autodl_api::Task::PixelClassification,
            out_dir,
            &stem,
        );
        let image = Normalised::new(Normalised::read(path, meta.bands)?, &meta.mean, &meta.std);
        let probs = infer::segment(
            &model,
            image.view(),
            meta.classes.len(),
            meta.tile_size as usize,
            device,
        )?;
        let classes = infer::classes_of(&probs, meta.classes.len());
        let (w, h) = (image.width as u32, image.height as u32);
        let values: Vec<u16> = classes
            .iter()
            .map(|&c| meta.classes.get(c as usize).map_or(0, |k| k.value as u16))
            .collect();
        let out = files.label;
        let save_err =
            |p: &Path, e: image::ImageError| PluginError::Other(format!("{}: {e}", p.display()));
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
        let preview: Vec<u8> = classes
            .iter()
            .flat_map(|&c| autodl_api::class_colour(c as usize))
            .collect();
        let preview_path = files.preview;
        image::RgbImage::from_raw(w, h, preview)
            .ok_or_else(|| PluginError::Other("preview size mismatch".into()))?
            .save(&preview_path)
            .map_err(|e| save_err(&preview_path, e))?;
        written.push(out);
    }
    Ok(written)
}
