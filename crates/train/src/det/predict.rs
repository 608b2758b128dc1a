//! Running a trained detector on images through the validation's inference path, and writing
//! what it found: VOC XML and a preview per image, COCO JSON for all of them.

use std::path::{Path, PathBuf};

use autodl_api::{AugSample, PluginError};
use autodl_detection::ScoredBox;
use burn::tensor::backend::Backend;

use super::anchor::AnchorHead;
use super::detector::Detector;
use super::net::{DetNet, DetOptions};
use crate::infer::{self, View};
use crate::model_dir::ModelMeta;
use crate::params::number_param;

/// Previews are at most this many pixels a side: a larger image is shown scaled down.
const PREVIEW_SIDE: u32 = 4096;

/// What a detection preview draws: the image's first three bands (or band 0), subsampled to
/// at most [`PREVIEW_SIDE`] a side, with the boxes scaled alike.
fn preview_sample(raw: &autodl_data::RawImage, dets: &[ScoredBox]) -> AugSample {
    let step = raw.width.max(raw.height).div_ceil(PREVIEW_SIDE).max(1) as usize;
    let (w, h) = (raw.width as usize, raw.height as usize);
    let (pw, ph) = (w.div_ceil(step), h.div_ceil(step));
    let bands = (raw.bands as usize).min(3);
    let mut image = vec![0f32; bands * pw * ph];
    let mut row = vec![0f32; w];
    for b in 0..bands {
        for y in 0..ph {
            raw.band_row(b, y * step, 0, &mut row);
            for (o, v) in image[b * pw * ph + y * pw..b * pw * ph + (y + 1) * pw]
                .iter_mut()
                .zip(row.iter().step_by(step))
            {
                *o = *v;
            }
        }
    }
    let s = step as f32;
    AugSample {
        width: pw as u32,
        height: ph as u32,
        bands: bands as u32,
        image,
        mask: None,
        boxes: dets
            .iter()
            .map(|d| (d.bbox.map(|v| v / s), d.class))
            .collect(),
    }
}

/// Runs a trained anchor-head detector on images: [`predict_with`] with the [`AnchorHead`] its
/// `model.json` records.
pub fn predict<B, M, F>(
    model_dir: &Path,
    images: &[PathBuf],
    out_dir: &Path,
    opts: &DetOptions,
    score_threshold: Option<f64>,
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
        device,
        build,
    )
}

/// Runs a trained detector on images through the validation's inference path. Writes
/// `<stem>.xml` (PASCAL VOC, each object with its `<score>`) and `previews/<stem>.png` (boxes
/// drawn) per image (stems from [`autodl_api::files::output_stems`]), and `detections.json`
/// (COCO: images, categories, and annotations with scores) for all of them. Keeps boxes
/// scoring at least `score_threshold`, or the model's `score-threshold` (the validation F1
/// optimum), after NMS at its `nms-iou` (the validation AP optimum). `head` gives the
/// detector's head from the model's metadata. Returns the label files written.
pub fn predict_with<B, M, H, F>(
    model_dir: &Path,
    images: &[PathBuf],
    out_dir: &Path,
    head: impl FnOnce(&ModelMeta) -> H,
    score_threshold: Option<f64>,
    device: &B::Device,
    build: F,
) -> Result<Vec<PathBuf>, PluginError>
where
    B: Backend,
    M: Detector<B, H>,
    H: Sync,
    F: Fn(&B::Device, &ModelMeta) -> M,
{
    use autodl_detection_metrics::{CocoCategory, CocoImage, CocoPrediction, CocoPredictions};
    let (meta, model) = crate::model_dir::load_trained(model_dir, device, build)?;
    let head = head(&meta);
    let threshold =
        score_threshold.unwrap_or_else(|| number_param(&meta.params, "score-threshold", 0.3));
    let nms_iou = number_param(&meta.params, "nms-iou", 0.5) as f32;
    let previews = out_dir.join(autodl_api::files::PREVIEWS);
    std::fs::create_dir_all(&previews).map_err(|source| PluginError::Io {
        path: previews,
        source,
    })?;
    let names: Vec<String> = meta.classes.iter().map(|c| c.name.clone()).collect();
    let mut written = Vec::new();
    let mut coco = CocoPredictions {
        images: Vec::new(),
        categories: meta
            .classes
            .iter()
            .enumerate()
            .map(|(i, c)| CocoCategory {
                id: i as u32,
                name: c.name.clone(),
            })
            .collect(),
        annotations: Vec::new(),
    };
    for (id, (path, stem)) in images
        .iter()
        .zip(autodl_api::files::output_stems(images))
        .enumerate()
    {
        let files =
            autodl_api::files::prediction_files(autodl_api::Task::Detection, out_dir, &stem);
        let raw = infer::read(path, meta.bands)?;
        let mut found = Vec::new();
        let windows = infer::detect_windows(
            &model,
            &head,
            View::raw(&raw, &meta.mean, &meta.std),
            meta.tile_size as usize,
            &[nms_iou],
            |_| None,
            device,
            |_, detected| found.extend(detected.boxes.into_iter().flatten()),
        )?;
        // Validation scores every box; a box is delivered when its f32 score reaches the
        // threshold, the comparison precision_recall_f1 makes in f64 on the same value.
        let dets: Vec<ScoredBox> = infer::merge_boxes(found, windows, nms_iou)
            .into_iter()
            .filter(|d| f64::from(d.score) >= threshold)
            .collect();
        let sample = autodl_data::Sample {
            stem: stem.clone(),
            image: path.clone(),
            label: None,
            width: raw.width,
            height: raw.height,
            bands: raw.bands,
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
        let xml_path = files.label;
        std::fs::write(
            &xml_path,
            autodl_data::voc_xml(&sample, &meta.classes, &folder, Some(&scores)),
        )
        .map_err(|source| PluginError::Io {
            path: xml_path.clone(),
            source,
        })?;
        written.push(xml_path);
        let (w, h) = (raw.width, raw.height);
        let png = files.preview;
        autodl_report::preview_grid(&[(preview_sample(&raw, &dets), names.clone())], 1)
            .save(&png)
            .map_err(|e| PluginError::Other(format!("cannot write {}: {e}", png.display())))?;
        let file_name = path
            .file_name()
            .map_or_else(|| stem.clone(), |f| f.to_string_lossy().into_owned());
        coco.images.push(CocoImage {
            id: id as u64,
            file_name,
            width: w,
            height: h,
        });
        for d in &dets {
            let bbox = autodl_detection_metrics::coco_bbox(d.bbox);
            coco.annotations.push(CocoPrediction {
                id: coco.annotations.len() as u64 + 1,
                image_id: id as u64,
                category_id: d.class as u32,
                bbox,
                area: bbox[2] * bbox[3],
                iscrowd: 0,
                score: f64::from(d.score),
            });
        }
    }
    let path = out_dir.join(autodl_api::files::DETECTIONS_JSON);
    let text = serde_json::to_string_pretty(&coco)
        .map_err(|e| PluginError::Other(format!("cannot serialise detections: {e}")))?;
    std::fs::write(&path, text).map_err(|source| PluginError::Io {
        path: path.clone(),
        source,
    })?;
    written.push(path);
    Ok(written)
}
