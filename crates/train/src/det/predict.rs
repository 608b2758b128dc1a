//! Running a trained detector on images through the validation's inference path, and writing
//! what it found: VOC XML and a preview per image, COCO JSON for all of them.

use std::path::{Path, PathBuf};

use autodl_api::{AugSample, PluginError};
use autodl_detection::ScoredBox;
use burn::tensor::backend::Backend;

use super::anchor::AnchorHead;
use super::detector::Detector;
use super::net::{DetNet, DetOptions};
use crate::infer::{self, Scene, WindowSource};
use crate::model_dir::ModelMeta;
use crate::params::number_param;

/// Previews are at most this many pixels a side: a larger image is shown scaled down.
const PREVIEW_SIDE: u32 = 4096;

/// Rows read at a time for a preview.
const PREVIEW_ROWS: usize = 256;

/// What a detection preview draws: the image's first three bands (or band 0), subsampled to
/// at most [`PREVIEW_SIDE`] a side, with the boxes scaled alike. Read a band of rows at a
/// time, so a scene's preview costs the preview.
fn preview_sample(
    scene: &mut autodl_data::SceneReader,
    dets: &[ScoredBox],
) -> Result<AugSample, PluginError> {
    let step = scene
        .width()
        .max(scene.height())
        .div_ceil(PREVIEW_SIDE)
        .max(1) as usize;
    let (w, h) = (scene.width() as usize, scene.height() as usize);
    let (pw, ph) = (w.div_ceil(step), h.div_ceil(step));
    let bands = (scene.bands() as usize).min(3);
    let mut image = vec![0f32; bands * pw * ph];
    let mut row = vec![0f32; w];
    let mut y = 0;
    while y < ph {
        let block = scene
            .rows(y * step, PREVIEW_ROWS.max(step))
            .map_err(crate::predict::data_err)?;
        let end = block.row0 + block.image.height as usize;
        while y < ph && y * step < end {
            for b in 0..bands {
                block.band_row(b, y * step, 0, &mut row);
                for (o, v) in image[b * pw * ph + y * pw..b * pw * ph + (y + 1) * pw]
                    .iter_mut()
                    .zip(row.iter().step_by(step))
                {
                    *o = *v;
                }
            }
            y += 1;
        }
    }
    let s = step as f32;
    Ok(AugSample {
        width: pw as u32,
        height: ph as u32,
        bands: bands as u32,
        image,
        mask: None,
        boxes: dets
            .iter()
            .map(|d| (d.bbox.map(|v| v / s), d.class))
            .collect(),
    })
}

/// Runs a trained anchor-head detector on images: [`predict_with`] with the [`AnchorHead`] its
/// `model.json` records.
#[allow(clippy::too_many_arguments)]
pub fn predict<B, M, F>(
    model_dir: &Path,
    images: &[PathBuf],
    out_dir: &Path,
    opts: &DetOptions,
    score_threshold: Option<f64>,
    progress: &dyn autodl_api::PredictProgress,
    device: &B::Device,
    build: F,
) -> Result<Vec<PathBuf>, PluginError>
where
    B: Backend,
    M: DetNet<B>,
    F: Fn(&B::Device, &ModelMeta) -> M,
{
    predict_with::<B, M, AnchorHead, _>(
        model_dir,
        images,
        out_dir,
        |meta| AnchorHead::from_params(opts.clone(), &meta.params),
        score_threshold,
        progress,
        device,
        build,
    )
}

/// [`infer_with`] for an anchor-head detector, with the [`AnchorHead`] its `model.json`
/// records.
pub fn infer<B, M, F>(
    model_dir: &Path,
    images: &[PathBuf],
    opts: &DetOptions,
    mirrored: bool,
    device: &B::Device,
    build: F,
    each: &mut dyn FnMut(usize, autodl_api::Inferred) -> Result<(), PluginError>,
) -> Result<(), PluginError>
where
    B: Backend,
    M: DetNet<B>,
    F: Fn(&B::Device, &ModelMeta) -> M,
{
    infer_with::<B, M, AnchorHead, _>(
        model_dir,
        images,
        |meta| AnchorHead::from_params(opts.clone(), &meta.params),
        mirrored,
        device,
        build,
        each,
    )
}

/// Runs a trained detector on images through the validation's inference path. Writes
/// `<stem>.xml` (PASCAL VOC, each object with its `<score>`) and `previews/<stem>.png` (boxes
/// drawn) per image (stems from [`autodl_api::files::output_stems`]), and `detections.json`
/// (COCO: images, categories, and annotations with scores) for all of them. Keeps boxes
/// scoring at least `score_threshold`, or the model's `score-threshold` (the validation F1
/// optimum), after NMS at its `nms-iou` (the validation AP optimum). `head` gives the
/// detector's head from the model's metadata. Returns the label files written.
#[allow(clippy::too_many_arguments)]
pub fn predict_with<B, M, H, F>(
    model_dir: &Path,
    images: &[PathBuf],
    out_dir: &Path,
    head: impl FnOnce(&ModelMeta) -> H,
    score_threshold: Option<f64>,
    progress: &dyn autodl_api::PredictProgress,
    device: &B::Device,
    build: F,
) -> Result<Vec<PathBuf>, PluginError>
where
    B: Backend,
    M: Detector<B, H>,
    H: Sync,
    F: Fn(&B::Device, &ModelMeta) -> M,
{
    let (meta, model) = crate::model_dir::load_trained(model_dir, device, build)?;
    let head = head(&meta);
    let threshold =
        score_threshold.unwrap_or_else(|| number_param(&meta.params, "score-threshold", 0.3));
    let nms_iou = number_param(&meta.params, "nms-iou", 0.5) as f32;
    let mut out = DetectionWriter::create(out_dir, &meta.classes)?;
    let tile = meta.tile_size as usize;
    for (path, stem) in images.iter().zip(autodl_api::files::output_stems(images)) {
        let mut reader = infer::open_scene(path, meta.bands)?;
        let (width, height) = (reader.width() as usize, reader.height() as usize);
        progress.image(path, infer::windows(width, height, tile).len());
        let dets = detect_image(
            &model,
            &head,
            tile,
            Scene::new(&mut reader, &meta.mean, &meta.std, false, progress),
            nms_iou,
            false,
            device,
        )?;
        out.add(path, &stem, &mut reader, &dets, threshold)?;
    }
    out.finish()
}

/// An image's boxes as validation finds them: every window, merged with NMS at `nms_iou`, no
/// score threshold; when the image is seen `mirrored` left to right, mirrored back.
fn detect_image<B, M, H>(
    model: &M,
    head: &H,
    tile: usize,
    image: impl WindowSource,
    nms_iou: f32,
    mirrored: bool,
    device: &B::Device,
) -> Result<Vec<ScoredBox>, PluginError>
where
    B: Backend,
    M: Detector<B, H>,
    H: Sync,
{
    let mut found = Vec::new();
    let width = image.width() as f32;
    let windows = infer::detect_windows(
        model,
        head,
        image,
        tile,
        &[nms_iou],
        |_| None,
        device,
        |_, detected| found.extend(detected.boxes.into_iter().flatten()),
    )?;
    let mut dets = infer::merge_boxes(found, windows, nms_iou);
    if mirrored {
        let w = width;
        for d in &mut dets {
            d.bbox = [w - d.bbox[2], d.bbox[1], w - d.bbox[0], d.bbox[3]];
        }
    }
    Ok(dets)
}

/// Runs a trained detector on every image through [`predict_with`]'s path, mirrored left to
/// right when `mirrored` (and mirrored back), handing `each` the image's index and every box
/// its NMS keeps.
pub fn infer_with<B, M, H, F>(
    model_dir: &Path,
    images: &[PathBuf],
    head: impl FnOnce(&ModelMeta) -> H,
    mirrored: bool,
    device: &B::Device,
    build: F,
    each: &mut dyn FnMut(usize, autodl_api::Inferred) -> Result<(), PluginError>,
) -> Result<(), PluginError>
where
    B: Backend,
    M: Detector<B, H>,
    H: Sync,
    F: Fn(&B::Device, &ModelMeta) -> M,
{
    let (meta, model) = crate::model_dir::load_trained(model_dir, device, build)?;
    let head = head(&meta);
    let nms_iou = number_param(&meta.params, "nms-iou", 0.5) as f32;
    for (i, path) in images.iter().enumerate() {
        let mut reader = infer::open_scene(path, meta.bands)?;
        let (width, height) = (reader.width(), reader.height());
        let dets = detect_image(
            &model,
            &head,
            meta.tile_size as usize,
            Scene::new(
                &mut reader,
                &meta.mean,
                &meta.std,
                mirrored,
                &autodl_api::NoProgress,
            ),
            nms_iou,
            mirrored,
            device,
        )?;
        each(
            i,
            autodl_api::Inferred::Boxes {
                width,
                height,
                boxes: dets
                    .into_iter()
                    .map(|d| autodl_api::InferredBox {
                        bbox: d.bbox,
                        score: d.score,
                        class: d.class as u32,
                    })
                    .collect(),
            },
        )?;
    }
    Ok(())
}

/// Writes what a detector found: `<stem>.xml` (PASCAL VOC with scores) and
/// `previews/<stem>.png` per image, `<stem>.geojson` (the boxes as map polygons) for a
/// georeferenced image, and `detections.json` (COCO) for all of them when finished. What `autodl predict` writes for a detector or an ensemble of them.
pub struct DetectionWriter {
    out_dir: PathBuf,
    classes: Vec<autodl_api::ClassInfo>,
    coco: autodl_detection_metrics::CocoPredictions,
    written: Vec<PathBuf>,
}

impl DetectionWriter {
    /// Starts writing into `out_dir` for a model whose classes are `classes`.
    pub fn create(out_dir: &Path, classes: &[autodl_api::ClassInfo]) -> Result<Self, PluginError> {
        use autodl_detection_metrics::{CocoCategory, CocoPredictions};
        let previews = out_dir.join(autodl_api::files::PREVIEWS);
        std::fs::create_dir_all(&previews).map_err(|source| PluginError::Io {
            path: previews,
            source,
        })?;
        Ok(DetectionWriter {
            out_dir: out_dir.to_owned(),
            classes: classes.to_vec(),
            coco: CocoPredictions {
                images: Vec::new(),
                categories: classes
                    .iter()
                    .enumerate()
                    .map(|(i, c)| CocoCategory {
                        id: i as u32,
                        name: c.name.clone(),
                    })
                    .collect(),
                annotations: Vec::new(),
            },
            written: Vec::new(),
        })
    }

    /// Writes image `path`'s files under the output stem `stem`, with the boxes of `dets`
    /// that score at least `threshold`.
    pub fn add(
        &mut self,
        path: &Path,
        stem: &str,
        scene: &mut autodl_data::SceneReader,
        dets: &[ScoredBox],
        threshold: f64,
    ) -> Result<(), PluginError> {
        use autodl_detection_metrics::{CocoImage, CocoPrediction};
        let files =
            autodl_api::files::prediction_files(autodl_api::Task::Detection, &self.out_dir, stem);
        // Validation scores every box; a box is delivered when its f32 score reaches the
        // threshold, the comparison precision_recall_f1 makes in f64 on the same value.
        let dets: Vec<ScoredBox> = dets
            .iter()
            .filter(|d| f64::from(d.score) >= threshold)
            .copied()
            .collect();
        let sample = autodl_data::Sample {
            stem: stem.to_owned(),
            image: path.to_owned(),
            label: None,
            width: scene.width(),
            height: scene.height(),
            bands: scene.bands(),
            boxes: dets
                .iter()
                .map(|d| autodl_data::BoxAnn {
                    class: d.class,
                    xmin: d.bbox[0].round(),
                    ymin: d.bbox[1].round(),
                    xmax: (d.bbox[2].round() - 1.0).max(d.bbox[0].round()),
                    ymax: (d.bbox[3].round() - 1.0).max(d.bbox[1].round()),
                    difficult: false,
                    iscrowd: false,
                })
                .collect(),
        };
        let folder = path
            .parent()
            .and_then(|p| p.file_name())
            .map_or_else(String::new, |f| f.to_string_lossy().into_owned());
        let scores: Vec<f32> = dets.iter().map(|d| d.score).collect();
        if let Some(georef) = autodl_data::read_georef(path).map_err(crate::predict::data_err)? {
            let text = serde_json::to_string_pretty(&geojson(&georef, &dets, &self.classes))
                .map_err(|e| PluginError::Other(format!("cannot serialise boxes: {e}")))?;
            std::fs::write(&files.geo, text).map_err(|source| PluginError::Io {
                path: files.geo.clone(),
                source,
            })?;
            self.written.push(files.geo.clone());
        }
        let xml_path = files.label;
        std::fs::write(
            &xml_path,
            autodl_data::voc_xml(&sample, &self.classes, &folder, Some(&scores)),
        )
        .map_err(|source| PluginError::Io {
            path: xml_path.clone(),
            source,
        })?;
        self.written.push(xml_path);
        let names: Vec<String> = self.classes.iter().map(|c| c.name.clone()).collect();
        let png = files.preview;
        autodl_report::preview_grid(&[(preview_sample(scene, &dets)?, names)], 1)
            .save(&png)
            .map_err(|e| PluginError::Other(format!("cannot write {}: {e}", png.display())))?;
        let file_name = path
            .file_name()
            .map_or_else(|| stem.to_owned(), |f| f.to_string_lossy().into_owned());
        let id = self.coco.images.len() as u64;
        self.coco.images.push(CocoImage {
            id,
            file_name,
            width: scene.width(),
            height: scene.height(),
        });
        for d in &dets {
            let bbox = autodl_detection_metrics::coco_bbox(d.bbox);
            self.coco.annotations.push(CocoPrediction {
                id: self.coco.annotations.len() as u64 + 1,
                image_id: id,
                category_id: d.class as u32,
                bbox,
                area: bbox[2] * bbox[3],
                iscrowd: 0,
                score: f64::from(d.score),
            });
        }
        Ok(())
    }

    /// Writes `detections.json`; returns every label file written, and it last.
    pub fn finish(mut self) -> Result<Vec<PathBuf>, PluginError> {
        let path = self.out_dir.join(autodl_api::files::DETECTIONS_JSON);
        let text = serde_json::to_string_pretty(&self.coco)
            .map_err(|e| PluginError::Other(format!("cannot serialise detections: {e}")))?;
        std::fs::write(&path, text).map_err(|source| PluginError::Io {
            path: path.clone(),
            source,
        })?;
        self.written.push(path);
        Ok(self.written)
    }
}

/// A GeoJSON FeatureCollection (RFC 7946 in shape, in the raster's CRS, named the way GDAL
/// names it).
#[derive(serde::Serialize)]
struct FeatureCollection {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    crs: Option<NamedCrs>,
    features: Vec<Feature>,
}

#[derive(serde::Serialize)]
struct NamedCrs {
    #[serde(rename = "type")]
    kind: &'static str,
    properties: CrsName,
}

#[derive(serde::Serialize)]
struct CrsName {
    name: String,
}

#[derive(serde::Serialize)]
struct Feature {
    #[serde(rename = "type")]
    kind: &'static str,
    properties: BoxProperties,
    geometry: Polygon,
}

#[derive(serde::Serialize)]
struct BoxProperties {
    class: String,
    score: f64,
    pixel_box: [f64; 4],
}

#[derive(serde::Serialize)]
struct Polygon {
    #[serde(rename = "type")]
    kind: &'static str,
    coordinates: Vec<Vec<[f64; 2]>>,
}

/// The boxes `dets` of an image with georeference `georef` as map polygons: each box's
/// corners through the affine transform, a closed ring counter-clockwise on the map.
fn geojson(
    georef: &autodl_data::GeoRef,
    dets: &[ScoredBox],
    classes: &[autodl_api::ClassInfo],
) -> FeatureCollection {
    let t = &georef.transform;
    // North-up rasters flip y, which makes the pixel-space clockwise ring counter-clockwise.
    let flips = t[1] * t[5] - t[2] * t[4] < 0.0;
    let features = dets
        .iter()
        .map(|d| {
            let [x1, y1, x2, y2] = d.bbox.map(f64::from);
            let mut corners = [(x1, y1), (x2, y1), (x2, y2), (x1, y2)];
            if !flips {
                corners.reverse();
            }
            let mut ring: Vec<[f64; 2]> =
                corners.iter().map(|&(x, y)| georef.apply(x, y)).collect();
            ring.push(ring[0]);
            Feature {
                kind: "Feature",
                properties: BoxProperties {
                    class: classes
                        .get(d.class)
                        .map_or_else(|| d.class.to_string(), |c| c.name.clone()),
                    score: f64::from(d.score),
                    pixel_box: [x1, y1, x2, y2],
                },
                geometry: Polygon {
                    kind: "Polygon",
                    coordinates: vec![ring],
                },
            }
        })
        .collect();
    FeatureCollection {
        kind: "FeatureCollection",
        // GDAL names a CRS by its EPSG URN; one known only as WKT is named by the WKT, which
        // GDAL's GeoJSON reader accepts as a name (any string its SetFromUserInput reads).
        crs: match (georef.epsg, &georef.wkt) {
            (Some(code), _) => Some(format!("urn:ogc:def:crs:EPSG::{code}")),
            (None, Some(wkt)) => Some(wkt.clone()),
            (None, None) => None,
        }
        .map(|name| NamedCrs {
            kind: "name",
            properties: CrsName { name },
        }),
        features,
    }
}
