//! Running a trained pixel classifier on images of any size, through [`crate::infer`]: the
//! same windows, padding and normalisation as validation, so a package predicts what its
//! leaderboard row scored.

use std::path::{Path, PathBuf};

use autodl_api::PluginError;
use burn::tensor::backend::Backend;

use crate::infer::{self, Scene, View};

use crate::model_dir::ModelMeta;
use crate::seg::SegNet;

/// Predicts every image, writing `<stem>.png` (class values) and `previews/<stem>.png`
/// (colours) into `out_dir`, stems from [`autodl_api::files::output_stems`]. Each image is
/// read a band of rows at a time and its outputs written row by row, so a scene of any size
/// costs one band of windows ([`infer::Scene`]). Returns the class-value files.
pub fn predict_segmentation<B, M, F>(
    model_dir: &Path,
    images: &[PathBuf],
    out_dir: &Path,
    progress: &dyn autodl_api::PredictProgress,
    device: &B::Device,
    build: F,
) -> Result<Vec<PathBuf>, PluginError>
where
    B: Backend,
    M: SegNet<B>,
    F: Fn(&B::Device, &ModelMeta) -> M,
{
    let (meta, model) = crate::model_dir::load_trained(model_dir, device, build)?;
    let mut written = Vec::new();
    let classes = meta.classes.len();
    let tile = meta.tile_size as usize;
    for (path, stem) in images.iter().zip(autodl_api::files::output_stems(images)) {
        let mut reader = infer::open_scene(path, meta.bands)?;
        let (width, height) = (reader.width(), reader.height());
        progress.image(
            path,
            infer::windows(width as usize, height as usize, tile).len(),
        );
        let mut out = ClassWriter::create(out_dir, &stem, path, &meta.classes, width, height)?;
        infer::segment_rows(
            &model,
            Scene::new(&mut reader, &meta.mean, &meta.std, false, progress),
            classes,
            tile,
            device,
            |_, probs| out.row(probs),
        )?;
        written.extend(out.finish()?);
    }
    Ok(written)
}

/// Runs a trained pixel classifier on every image through [`predict_segmentation`]'s path,
/// mirrored left to right when `mirrored` (and mirrored back), handing `each` the image's
/// index and its class probabilities.
pub fn infer_segmentation<B, M, F>(
    model_dir: &Path,
    images: &[PathBuf],
    mirrored: bool,
    device: &B::Device,
    build: F,
    each: &mut dyn FnMut(usize, autodl_api::Inferred) -> Result<(), PluginError>,
) -> Result<(), PluginError>
where
    B: Backend,
    M: SegNet<B>,
    F: Fn(&B::Device, &ModelMeta) -> M,
{
    let (meta, model) = crate::model_dir::load_trained(model_dir, device, build)?;
    let classes = meta.classes.len();
    for (i, path) in images.iter().enumerate() {
        let raw = infer::read(path, meta.bands)?;
        let (w, h) = (raw.width as usize, raw.height as usize);
        let mut values = infer::segment(
            &model,
            View::raw(&raw, &meta.mean, &meta.std).mirror(mirrored),
            classes,
            meta.tile_size as usize,
            device,
        )?;
        if mirrored {
            for row in values.chunks_exact_mut(w.max(1)) {
                row.reverse();
            }
        }
        debug_assert_eq!(values.len(), classes * w * h);
        each(
            i,
            autodl_api::Inferred::Probabilities {
                width: raw.width,
                height: raw.height,
                classes,
                values,
            },
        )?;
    }
    Ok(())
}

/// Writes one image's predicted classes, row by row from class probabilities: `<stem>.png`
/// (class values, 16-bit when a value needs it) and `previews/<stem>.png` (class colours) in
/// an output folder, and for a georeferenced image `<stem>.tif`, the class values as a
/// GeoTIFF with the image's georeference. What `autodl predict` writes for a pixel classifier
/// or an ensemble of them.
pub struct ClassWriter {
    labels: RowWriter,
    preview: RowWriter,
    geotiff: Option<autodl_data::GeoTiffWriter>,
    geo_row: Vec<u16>,
    values: Vec<u16>,
    wide: bool,
    label_row: Vec<u8>,
    preview_row: Vec<u8>,
    label_path: PathBuf,
    geo_path: PathBuf,
}

impl ClassWriter {
    /// Starts the files of output stem `stem` for `image`, `width` x `height`, whose classes
    /// are `classes`; the GeoTIFF too when `image` has a georeference
    /// ([`autodl_data::read_georef`]).
    pub fn create(
        out_dir: &Path,
        stem: &str,
        image: &Path,
        classes: &[autodl_api::ClassInfo],
        width: u32,
        height: u32,
    ) -> Result<Self, PluginError> {
        let files = autodl_api::files::prediction_files(
            autodl_api::Task::PixelClassification,
            out_dir,
            stem,
        );
        if let Some(dir) = files.preview.parent() {
            std::fs::create_dir_all(dir).map_err(|source| PluginError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        // Class values above 255 need a 16-bit file; the class table decides, not the image.
        let wide = classes.iter().any(|c| c.value > 255);
        let depth = if wide {
            png::BitDepth::Sixteen
        } else {
            png::BitDepth::Eight
        };
        let labels = RowWriter::create(
            &files.label,
            width,
            height,
            png::ColorType::Grayscale,
            depth,
        )?;
        let preview = RowWriter::create(
            &files.preview,
            width,
            height,
            png::ColorType::Rgb,
            png::BitDepth::Eight,
        )?;
        let geotiff = match autodl_data::read_georef(image).map_err(data_err)? {
            Some(georef) => Some(
                autodl_data::GeoTiffWriter::create(&files.geo, width, height, wide, &georef)
                    .map_err(data_err)?,
            ),
            None => None,
        };
        Ok(ClassWriter {
            labels,
            preview,
            geotiff,
            geo_row: Vec::with_capacity(width as usize),
            values: classes.iter().map(|c| c.value as u16).collect(),
            wide,
            label_row: Vec::with_capacity(width as usize * 2),
            preview_row: Vec::with_capacity(width as usize * 3),
            label_path: files.label,
            geo_path: files.geo,
        })
    }

    /// Writes the next row from its `classes * width` probabilities, class-major: each pixel
    /// gets its most probable class (the lowest index on ties).
    pub fn row(&mut self, probs: &[f32]) -> Result<(), PluginError> {
        self.label_row.clear();
        self.preview_row.clear();
        self.geo_row.clear();
        for c in infer::classes_of(probs, self.values.len()) {
            let value = self.values.get(c as usize).copied().unwrap_or(0);
            self.geo_row.push(value);
            if self.wide {
                self.label_row.extend(value.to_be_bytes());
            } else {
                self.label_row.push(value as u8);
            }
            self.preview_row
                .extend(autodl_api::class_colour(c as usize));
        }
        if let Some(g) = &mut self.geotiff {
            g.row(&self.geo_row).map_err(data_err)?;
        }
        self.labels.write(&self.label_row)?;
        self.preview.write(&self.preview_row)
    }

    /// Finishes the files; returns the class-value PNG, and the GeoTIFF (with the
    /// `.aux.xml` holding a CRS known only as WKT) when there is one.
    pub fn finish(self) -> Result<Vec<PathBuf>, PluginError> {
        self.labels.finish()?;
        self.preview.finish()?;
        let mut written = vec![self.label_path];
        if let Some(g) = self.geotiff {
            let aux = g.finish().map_err(data_err)?;
            written.push(self.geo_path);
            written.extend(aux);
        }
        Ok(written)
    }
}

/// A data error as a plugin error, with its whole chain.
pub(crate) fn data_err(e: autodl_data::DataError) -> PluginError {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    PluginError::Data(text)
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
