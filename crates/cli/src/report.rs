//! Gathers a finished run's files into `report.html`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use autodl_api::{DetectionMetricsFile, MetricsFile, PixelMetricsFile, TrialResult};
use autodl_core::Leaderboard;
use autodl_data::Dataset;
use autodl_report::{Confusion, ModelEntry, Report, Sample};

/// Validation images shown with their predictions.
const SAMPLES: usize = 4;

/// Writes `out/report.html` and returns its path.
pub fn write(
    board: &Leaderboard,
    ds: &Dataset,
    out: &Path,
    title: &str,
    facts: Vec<(String, String)>,
    backend: &str,
) -> anyhow::Result<PathBuf> {
    let mut models = Vec::new();
    for row in &board.rows {
        let result: Option<TrialResult> = match &row.model_dir {
            Some(d) => {
                autodl_api::contracts::read_json_if_exists(&Path::new(d).join(autodl_api::RESULT))?
            }
            None => None,
        };
        models.push(ModelEntry {
            id: row.id.clone(),
            metric_name: row.metric_name.clone(),
            metric: row.metric,
            status: row.status.clone(),
            reason: row.reason.clone(),
            epochs: result.map(|r| r.epochs).unwrap_or_default(),
        });
    }
    let mut report = Report {
        title: format!("autodl run: {title}"),
        facts,
        leaderboard_markdown: board.to_markdown(),
        models,
        confusion: None,
        pr_curves: Vec::new(),
        samples: Vec::new(),
    };
    if let Some(best) = board.best()
        && let Some(dir) = &best.model_dir
    {
        let dir = Path::new(dir);
        match MetricsFile::load(dir)? {
            MetricsFile::PixelClassification(m) => report.confusion = Some(confusion(&m)),
            MetricsFile::Detection(m) => report.pr_curves = pr_curves(&m),
        }
        report.samples = samples(dir, ds, out, backend).unwrap_or_default();
    }
    let html = autodl_report::render(&report)?;
    let path = out.join("report.html");
    autodl_api::files::write_atomic(&path, html.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

fn confusion(metrics: &PixelMetricsFile) -> Confusion {
    Confusion {
        classes: metrics.classes.iter().map(|c| c.name.clone()).collect(),
        counts: metrics.confusion_matrix.counts().to_vec(),
    }
}

/// A detector's precision-recall curves from its `metrics.json`, named by class.
fn pr_curves(metrics: &DetectionMetricsFile) -> Vec<(String, Vec<(f64, f64)>)> {
    metrics
        .detail
        .pr_curves
        .iter()
        .map(|(class, points)| {
            let name = metrics
                .classes
                .get(*class as usize)
                .map_or_else(|| class.to_string(), |c| c.name.clone());
            (name, points.clone())
        })
        .collect()
}

/// The ground-truth boxes of a detection sample drawn on its image.
fn truth_boxes(s: &autodl_data::Sample, names: &[String]) -> anyhow::Result<Vec<u8>> {
    let img = autodl_data::load_image(&s.image)?;
    let sample = autodl_api::AugSample {
        width: img.width,
        height: img.height,
        bands: img.bands,
        image: img.data,
        mask: None,
        boxes: s.boxes.iter().map(|b| (b.corners(), b.class)).collect(),
    };
    let mut png = Vec::new();
    autodl_report::preview_grid(&[(sample, names.to_vec())], 1)
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)?;
    Ok(png)
}

/// Truth and prediction, side by side in class colours, for the first validation images.
fn samples(
    model_dir: &Path,
    ds: &Dataset,
    out: &Path,
    backend: &str,
) -> anyhow::Result<Vec<Sample>> {
    let picked: Vec<_> = ds.val.iter().take(SAMPLES).collect();
    let images: Vec<PathBuf> = picked.iter().map(|s| s.image.clone()).collect();
    let pred_dir = out.join("report-samples");
    crate::ensemble::predict_any(
        model_dir,
        &images,
        &pred_dir,
        &autodl_api::PredictOptions::on(backend),
        &autodl_api::NoProgress,
    )?;
    let stems = autodl_api::files::output_stems(&images);
    let index: std::collections::HashMap<u32, usize> = ds
        .classes
        .iter()
        .enumerate()
        .map(|(i, c)| (c.value, i))
        .collect();
    let mut samples = Vec::new();
    let names: Vec<String> = ds.classes.iter().map(|c| c.name.clone()).collect();
    for (s, stem) in picked.into_iter().zip(stems) {
        if ds.task == autodl_data::Task::Detection {
            samples.push(Sample {
                caption: format!("{}: truth", s.stem),
                png: truth_boxes(s, &names)?,
            });
        }
        let pred =
            std::fs::read(autodl_api::files::prediction_files(ds.task, &pred_dir, &stem).preview)?;
        if let Some(label) = &s.label
            && let Ok(mask) = autodl_data::load_mask(label)
        {
            let rgb: Vec<u8> = mask
                .data
                .iter()
                .flat_map(|v| {
                    index
                        .get(v)
                        .map_or([0, 0, 0], |&i| autodl_api::class_colour(i))
                })
                .collect();
            if let Some(img) = image::RgbImage::from_raw(mask.width, mask.height, rgb) {
                let mut png = Vec::new();
                img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)?;
                samples.push(Sample {
                    caption: format!("{}: truth", s.stem),
                    png,
                });
            }
        }
        samples.push(Sample {
            caption: format!("{}: prediction", s.stem),
            png: pred,
        });
    }
    Ok(samples)
}
