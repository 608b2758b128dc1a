//! Running a trained pixel classifier on images of any size, through [`crate::infer`]: the
//! same windows, padding and normalisation as validation, so a package predicts what its
//! leaderboard row scored.

use std::path::{Path, PathBuf};

use autodl_api::PluginError;
use burn::tensor::backend::Backend;

use crate::infer::{self, View};

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
    let (meta, model) = crate::model_dir::load_trained(model_dir, device, build)?;
    let previews = out_dir.join(autodl_api::files::PREVIEWS);
    std::fs::create_dir_all(&previews).map_err(|source| PluginError::Io {
        path: previews,
        source,
    })?;
    let mut written = Vec::new();
    let classes = meta.classes.len();
    // Class values above 255 need a 16-bit file; the class table decides, not the image.
    let wide = meta.classes.iter().any(|c| c.value > 255);
    for (path, stem) in images.iter().zip(autodl_api::files::output_stems(images)) {
        let files = autodl_api::files::prediction_files(
            autodl_api::Task::PixelClassification,
            out_dir,
            &stem,
        );
        let raw = infer::read(path, meta.bands)?;
        let (w, h) = (raw.width, raw.height);
        let depth = if wide {
            png::BitDepth::Sixteen
        } else {
            png::BitDepth::Eight
        };
        let mut labels = RowWriter::create(&files.label, w, h, png::ColorType::Grayscale, depth)?;
        let mut preview = RowWriter::create(
            &files.preview,
            w,
            h,
            png::ColorType::Rgb,
            png::BitDepth::Eight,
        )?;
        let mut label_row = Vec::with_capacity(w as usize * 2);
        let mut preview_row = Vec::with_capacity(w as usize * 3);
        infer::segment_rows(
            &model,
            View::raw(&raw, &meta.mean, &meta.std),
            classes,
            meta.tile_size as usize,
            device,
            |_, probs| {
                label_row.clear();
                preview_row.clear();
                for c in infer::classes_of(probs, classes) {
                    let value = meta.classes.get(c as usize).map_or(0, |k| k.value as u16);
                    if wide {
                        label_row.extend(value.to_be_bytes());
                    } else {
                        label_row.push(value as u8);
                    }
                    preview_row.extend(autodl_api::class_colour(c as usize));
                }
                labels.write(&label_row)?;
                preview.write(&preview_row)
            },
        )?;
        labels.finish()?;
        preview.finish()?;
        written.push(files.label);
    }
    Ok(written)
}

/// A PNG written row by row, so an image's output never exists whole in memory.
struct RowWriter {
    path: PathBuf,
    writer: png::StreamWriter<'static, std::io::BufWriter<std::fs::File>>,
}

impl RowWriter {
    fn create(
        path: &Path,
        width: u32,
        height: u32,
        color: png::ColorType,
        depth: png::BitDepth,
    ) -> Result<Self, PluginError> {
        let err = |e: png::EncodingError| {
            PluginError::Other(format!("cannot write {}: {e}", path.display()))
        };
        let file = std::fs::File::create(path).map_err(|source| PluginError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut enc = png::Encoder::new(std::io::BufWriter::new(file), width, height);
        enc.set_color(color);
        enc.set_depth(depth);
        let writer = enc
            .write_header()
            .map_err(err)?
            .into_stream_writer()
            .map_err(err)?;
        Ok(RowWriter {
            path: path.to_path_buf(),
            writer,
        })
    }

    fn write(&mut self, row: &[u8]) -> Result<(), PluginError> {
        use std::io::Write;
        self.writer
            .write_all(row)
            .map_err(|source| PluginError::Io {
                path: self.path.clone(),
                source,
            })
    }

    fn finish(self) -> Result<(), PluginError> {
        let path = self.path;
        self.writer
            .finish()
            .map_err(|e| PluginError::Other(format!("cannot write {}: {e}", path.display())))
    }
}
