//! Ensembles and flip test-time augmentation: running an ensemble folder (`autodl predict`),
//! and, after a run's ranking, building candidates from its best models, scoring each on the
//! validation split through `autodl predict` in a child process, and keeping those that beat
//! the best single model as leaderboard rows.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, anyhow};
use autodl_api::{EnsembleMember, EnsembleMeta, Inferred, MetricsFile, ModelMeta, PredictOptions};
use autodl_core::Leaderboard;
use autodl_data::{Dataset, Sample, Task};
use autodl_detection::ScoredBox;

/// Images inferred at once: every member's predictions of them are held until fused.
const CHUNK: usize = 8;

/// Whether `dir` holds an ensemble (`ensemble.json`) rather than one model.
pub fn is_ensemble(dir: &Path) -> bool {
    dir.join(autodl_api::ENSEMBLE).is_file()
}

/// Runs a model folder or an ensemble folder on `images`, writing what `autodl predict`
/// writes into `out`; returns the files written.
pub fn predict_any(
    dir: &Path,
    images: &[PathBuf],
    out: &Path,
    options: &PredictOptions,
    progress: &dyn autodl_api::PredictProgress,
) -> anyhow::Result<Vec<PathBuf>> {
    if is_ensemble(dir) {
        return predict(dir, images, out, options);
    }
    let meta = ModelMeta::read(dir)?;
    let family = autodl_api::network(&meta.family).ok_or_else(|| {
        anyhow!(
            "the model needs network `{}`, which this binary lacks",
            meta.family
        )
    })?;
    Ok(family.predict(dir, images, out, options, progress)?)
}

/// The score from which a model or ensemble folder delivers boxes (its validation F1
/// optimum); `None` for a pixel classifier.
pub fn delivered_threshold(dir: &Path) -> Option<f64> {
    if is_ensemble(dir) {
        let meta = EnsembleMeta::read(dir).ok()?;
        return (meta.task == Task::Detection).then_some(meta.score_threshold);
    }
    let meta = ModelMeta::read(dir).ok()?;
    if meta.task != Task::Detection {
        return None;
    }
    match meta.params.get("score-threshold") {
        Some(autodl_api::ParamValue::Number(v)) => Some(*v),
        _ => None,
    }
}

/// The most class probabilities a pixel-classifier ensemble holds for one image.
const ENSEMBLE_MAX_BYTES: u64 = 4 << 30;

/// An image's width and height from its header (a multi-band TIFF from its directory).
fn dimensions(path: &Path) -> anyhow::Result<(u32, u32)> {
    if let Ok(d) = image::image_dimensions(path) {
        return Ok(d);
    }
    let scene = autodl_data::SceneReader::open(path)?;
    Ok((scene.width(), scene.height()))
}

/// Runs the ensemble in `dir` on `images`: every member (and its mirrored view when the
/// ensemble says so) through its family's [`autodl_api::NetworkFamily::infer`], class
/// probabilities averaged or boxes fused, written as a single model's prediction is.
pub fn predict(
    dir: &Path,
    images: &[PathBuf],
    out: &Path,
    options: &PredictOptions,
) -> anyhow::Result<Vec<PathBuf>> {
    let meta = EnsembleMeta::read(dir)?;
    let mut members = Vec::new();
    for m in &meta.members {
        let family = autodl_api::network(&m.family).ok_or_else(|| {
            anyhow!(
                "ensemble member {} needs network `{}`, which this binary lacks",
                m.id,
                m.family
            )
        })?;
        if family.task() != meta.task {
            return Err(anyhow!(
                "{}: member {} is a {} model in a {} ensemble",
                dir.display(),
                m.id,
                family.task(),
                meta.task
            ));
        }
        let member_dir = dir.join(&m.dir);
        let member = ModelMeta::read(&member_dir)?;
        members.push((family, member_dir, m.weight as f32, member));
    }
    let views: &[bool] = if meta.hflip { &[false, true] } else { &[false] };
    if meta.task == Task::PixelClassification {
        // Every member view's class probabilities of a whole image are held to be averaged.
        let per_pixel = (meta.classes.len() * members.len() * views.len() * 4) as u64;
        for path in images {
            let (w, h) = dimensions(path)?;
            let bytes = u64::from(w) * u64::from(h) * per_pixel;
            if bytes > ENSEMBLE_MAX_BYTES {
                return Err(anyhow!(
                    "{}: {w} x {h} is too large for an ensemble, which holds every member's \
                     class probabilities of a whole image ({} MiB, over {} MiB); predict it \
                     with one of the member models in the package's folders, which reads a \
                     scene window by window",
                    path.display(),
                    bytes >> 20,
                    ENSEMBLE_MAX_BYTES >> 20
                ));
            }
        }
    }
    let stems = autodl_api::files::output_stems(images);
    let threshold = options.score_threshold.unwrap_or(meta.score_threshold);
    let mut boxes_out = match meta.task {
        Task::Detection => Some(autodl_train::det::DetectionWriter::create(
            out,
            &meta.classes,
        )?),
        Task::PixelClassification => None,
    };
    let mut written = Vec::new();
    for (chunk_no, chunk) in images.chunks(CHUNK).enumerate() {
        let first = chunk_no * CHUNK;
        // Per image: each member view's prediction with its weight.
        let mut preds: Vec<Vec<(Inferred, f32)>> = vec![Vec::new(); chunk.len()];
        for (family, member_dir, weight, _) in &members {
            for &hflip in views {
                let opts = PredictOptions {
                    hflip,
                    ..options.clone()
                };
                family
                    .infer(member_dir, chunk, &opts, &mut |i, p| {
                        preds[i].push((p, *weight));
                        Ok(())
                    })
                    .with_context(|| format!("member {} failed", member_dir.display()))?;
            }
        }
        for (i, views) in preds.into_iter().enumerate() {
            let (path, stem) = (&images[first + i], &stems[first + i]);
            match &mut boxes_out {
                Some(writer) => {
                    let fused = fuse_boxes(&views, meta.fusion_iou as f32)?;
                    let mut scene = autodl_train::infer::open_scene(path, &members[0].3)?;
                    writer.add(path, stem, &mut scene, &fused, threshold)?;
                }
                None => {
                    let (width, height, classes, probs) = mean_probabilities(&views)?;
                    let mut w = autodl_train::predict::ClassWriter::create(
                        out,
                        stem,
                        path,
                        &meta.classes,
                        width,
                        height,
                    )?;
                    let (wi, plane) = (width as usize, width as usize * height as usize);
                    let mut row = vec![0f32; classes * wi];
                    for y in 0..height as usize {
                        for c in 0..classes {
                            row[c * wi..(c + 1) * wi].copy_from_slice(
                                &probs[c * plane + y * wi..c * plane + (y + 1) * wi],
                            );
                        }
                        w.row(&row)?;
                    }
                    written.extend(w.finish()?);
                }
            }
        }
    }
    if let Some(writer) = boxes_out {
        written.extend(writer.finish()?);
    }
    Ok(written)
}

/// The weighted mean of the views' class probabilities: `(width, height, classes, values)`.
fn mean_probabilities(views: &[(Inferred, f32)]) -> anyhow::Result<(u32, u32, usize, Vec<f32>)> {
    let mut sum: Option<(u32, u32, usize, Vec<f32>)> = None;
    let mut total = 0f32;
    for (p, w) in views {
        let Inferred::Probabilities {
            width,
            height,
            classes,
            values,
        } = p
        else {
            return Err(anyhow!(
                "a member gave boxes in a pixel-classification ensemble"
            ));
        };
        total += w;
        match &mut sum {
            None => {
                sum = Some((
                    *width,
                    *height,
                    *classes,
                    values.iter().map(|v| v * w).collect(),
                ))
            }
            Some((sw, sh, sc, acc)) => {
                if (*sw, *sh, *sc) != (*width, *height, *classes) {
                    return Err(anyhow!(
                        "members disagree on the prediction's shape: {sw}x{sh}x{sc} and {width}x{height}x{classes}"
                    ));
                }
                for (a, v) in acc.iter_mut().zip(values) {
                    *a += v * w;
                }
            }
        }
    }
    let (w, h, c, mut acc) = sum.ok_or_else(|| anyhow!("an ensemble without members"))?;
    for a in &mut acc {
        *a /= total;
    }
    Ok((w, h, c, acc))
}

/// The views' boxes joined by weighted box fusion.
fn fuse_boxes(views: &[(Inferred, f32)], iou: f32) -> anyhow::Result<Vec<ScoredBox>> {
    let mut models = Vec::new();
    let mut weights = Vec::new();
    for (p, w) in views {
        let Inferred::Boxes { boxes, .. } = p else {
            return Err(anyhow!(
                "a member gave class probabilities in a detection ensemble"
            ));
        };
        models.push(
            boxes
                .iter()
                .map(|b| ScoredBox {
                    bbox: b.bbox,
                    score: b.score,
                    class: b.class as usize,
                })
                .collect::<Vec<_>>(),
        );
        weights.push(*w);
    }
    Ok(autodl_detection::weighted_box_fusion(
        &models, &weights, iou,
    ))
}

/// Scores a model or ensemble folder on `samples` of `ds`: `autodl predict` runs it in a child
/// process (every box kept for detectors), and its output is scored by `evaluator` as
/// `autodl evaluate` scores it. `score_threshold` is where detection's precision, recall and F1
/// are taken (`None`: the F1 optimum).
pub fn score(
    exe: &Path,
    dir: &Path,
    ds: &Dataset,
    samples: &[Sample],
    evaluator: &dyn autodl_api::Evaluator,
    score_threshold: Option<f64>,
    backend: &str,
) -> anyhow::Result<MetricsFile> {
    let work = tempfile::tempdir().context("cannot create a temporary folder")?;
    let images: Vec<PathBuf> = samples.iter().map(|s| s.image.clone()).collect();
    let out = work.path().join("pred");
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("--quiet")
        .arg("predict")
        .arg("--model")
        .arg(dir)
        .arg("--out")
        .arg(&out)
        .arg("--backend")
        .arg(backend)
        .args(crate::commands::plugin_args());
    if ds.task == Task::Detection {
        // Every box the model keeps, as validation scores them.
        cmd.arg("--score-threshold").arg("0");
    }
    let output = cmd
        .args(&images)
        .output()
        .with_context(|| format!("cannot start {}", exe.display()))?;
    if !output.status.success() {
        let err = String::from_utf8_lossy(&output.stderr);
        return Err(anyhow!(
            "predicting with {} failed: {}",
            dir.display(),
            err.trim()
        ));
    }
    let options = autodl_api::EvalOptions { score_threshold };
    let mut evaluation = evaluator.start(&ds.classes, &options);
    match ds.task {
        Task::Detection => {
            let path = out.join(autodl_api::files::DETECTIONS_JSON);
            let preds = autodl_detection_metrics::read_predictions(&path)?;
            let mut per_image: Vec<Vec<autodl_api::DetectedBox>> = vec![Vec::new(); samples.len()];
            for a in &preds.annotations {
                let i = a.image_id as usize;
                let slot = per_image
                    .get_mut(i)
                    .ok_or_else(|| anyhow!("{}: image id {i} out of range", path.display()))?;
                slot.push(autodl_api::DetectedBox {
                    bbox: a.bbox,
                    class: a.category_id,
                    score: a.score,
                });
            }
            for (s, detections) in samples.iter().zip(&per_image) {
                let truth: Vec<autodl_api::TruthBox> = s
                    .boxes
                    .iter()
                    .map(|b| autodl_api::TruthBox {
                        bbox: autodl_detection_metrics::coco_bbox(b.corners()),
                        class: b.class as u32,
                        area: None,
                        crowd: b.iscrowd,
                        difficult: b.difficult,
                    })
                    .collect();
                evaluation.add(autodl_api::EvalItem::Boxes {
                    detections,
                    truth: &truth,
                })?;
            }
        }
        Task::PixelClassification => {
            let index: std::collections::HashMap<u32, u32> = ds
                .classes
                .iter()
                .enumerate()
                .map(|(i, c)| (c.value, i as u32))
                .collect();
            let class_of = |v: &u32| index.get(v).copied().unwrap_or(autodl_api::IGNORE);
            for (s, stem) in samples.iter().zip(autodl_api::files::output_stems(&images)) {
                let label = s
                    .label
                    .as_ref()
                    .ok_or_else(|| anyhow!("{}: no label mask", s.image.display()))?;
                let truth: Vec<u32> = autodl_data::load_mask(label)?
                    .data
                    .iter()
                    .map(class_of)
                    .collect();
                let file = autodl_api::files::prediction_files(ds.task, &out, &stem).label;
                let predicted: Vec<u32> = autodl_data::load_mask(&file)?
                    .data
                    .iter()
                    .map(class_of)
                    .collect();
                evaluation
                    .add(autodl_api::EvalItem::Pixels {
                        predicted: &predicted,
                        truth: &truth,
                    })
                    .map_err(|e| anyhow!("{}: {e}", file.display()))?;
            }
        }
    }
    Ok(evaluation.finish())
}

/// What the ensemble stage may do.
pub struct Stage<'a> {
    /// The `autodl` binary, run as `autodl predict` to score a candidate.
    pub exe: &'a Path,
    /// The run's data.
    pub ds: &'a Dataset,
    /// The run's output folder.
    pub out: &'a Path,
    /// The evaluator that scored the trials.
    pub evaluator: &'a dyn autodl_api::Evaluator,
    /// Whether a larger ranking metric is better.
    pub higher_is_better: bool,
    /// Backend to predict on.
    pub backend: &'a str,
    /// The most models an ensemble joins (fewer than 2: no ensembles).
    pub top: usize,
    /// Whether to try flip test-time augmentation.
    pub tta: bool,
    /// Keep every candidate as a row, not only those that beat the best single model.
    pub keep_all: bool,
    /// When the stage must have finished.
    pub deadline: Instant,
}

/// One candidate: a name, its members (leaderboard rows), and whether it mirrors.
struct Candidate {
    name: String,
    members: Vec<autodl_core::Row>,
    hflip: bool,
}

/// Builds, scores and keeps candidates: flip TTA of the best model, then ensembles of the top
/// 2 .. `top` models (mirrored too if TTA won). A candidate that beats the best single model
/// (or any, with `keep_all`) becomes a row whose `model_dir` is its ensemble folder under
/// `out/ensembles/`. Each line of what happened goes to `say`. The board is re-ranked.
pub fn run(
    stage: &Stage<'_>,
    board: &mut Leaderboard,
    say: &mut dyn FnMut(&str),
) -> anyhow::Result<()> {
    let ranked: Vec<autodl_core::Row> = board
        .rows
        .iter()
        .filter(|r| r.rank.is_some() && r.model_dir.is_some() && r.metric.is_some())
        .filter(|r| {
            r.model_dir
                .as_deref()
                .is_some_and(|d| !is_ensemble(Path::new(d)))
        })
        .cloned()
        .collect();
    let Some(best) = ranked.first().cloned() else {
        return Ok(());
    };
    let best_metric = best.metric.unwrap_or(f64::NAN);
    let beats = |m: f64| {
        if stage.higher_is_better {
            m > best_metric
        } else {
            m < best_metric
        }
    };
    let root = stage.out.join("ensembles");
    let mut tta_pending = stage.tta;
    let mut tta_won = false;
    let mut k = 2;
    // Seconds one member view took to score, measured on the first candidate.
    let mut per_view: Option<f64> = None;
    // Flip TTA of the best first, then the top 2, 3, ... (mirrored when TTA won).
    let mut next = |tta_won: bool| {
        if std::mem::take(&mut tta_pending) {
            return Some(Candidate {
                name: format!("{}-tta", best.id),
                members: vec![best.clone()],
                hflip: true,
            });
        }
        (k <= stage.top.min(ranked.len())).then(|| {
            k += 1;
            Candidate {
                name: format!("ensemble-top{}", k - 1),
                members: ranked[..k - 1].to_vec(),
                hflip: tta_won,
            }
        })
    };
    while let Some(candidate) = next(tta_won) {
        let views = candidate.members.len() * if candidate.hflip { 2 } else { 1 };
        let left = stage
            .deadline
            .saturating_duration_since(Instant::now())
            .as_secs_f64();
        let needed = per_view.map_or(1.0, |s| s * views as f64 + 1.0);
        if left < needed {
            say(&format!(
                "{}: not tried, {left:.0} s left of the time limit",
                candidate.name
            ));
            break;
        }
        let started = Instant::now();
        let dir = root.join(&candidate.name);
        let scored = build(&dir, &candidate, stage.ds).and_then(|()| {
            let m = score(
                stage.exe,
                &dir,
                stage.ds,
                &stage.ds.val,
                stage.evaluator,
                None,
                stage.backend,
            )?;
            Ok(m)
        });
        let secs = started.elapsed().as_secs_f64();
        per_view = Some(secs / views as f64);
        let metrics = match scored {
            Ok(m) => m,
            Err(e) => {
                say(&format!("{}: {e:#}", candidate.name));
                let _ = std::fs::remove_dir_all(&dir);
                continue;
            }
        };
        let Some(value) = metrics.metric(&best.metric_name) else {
            say(&format!(
                "{}: the evaluator gave no {}",
                candidate.name, best.metric_name
            ));
            let _ = std::fs::remove_dir_all(&dir);
            continue;
        };
        let won = beats(value);
        if candidate.hflip && candidate.members.len() == 1 {
            tta_won = won;
        }
        let verdict = if won { "beats" } else { "does not beat" };
        say(&format!(
            "{}: {} {value:.4} on validation {verdict} the best single model's {best_metric:.4}",
            candidate.name, best.metric_name
        ));
        if !(won || stage.keep_all) {
            let _ = std::fs::remove_dir_all(&dir);
            continue;
        }
        if let MetricsFile::Detection(d) = &metrics {
            // Delivered boxes: the F1 optimum on validation, as a single detector's.
            let mut meta = EnsembleMeta::read(&dir)?;
            meta.score_threshold = d.detail.score_threshold;
            meta.save(&dir)?;
        }
        metrics.save(&dir)?;
        let ids: Vec<&str> = candidate.members.iter().map(|m| m.id.as_str()).collect();
        let (model, how) = match (candidate.members.len(), stage.ds.task) {
            (1, _) => ("tta", format!("flip test-time augmentation of {}", ids[0])),
            (_, Task::Detection) => ("ensemble", "weighted box fusion".to_owned()),
            (_, Task::PixelClassification) => ("ensemble", "mean class probabilities".to_owned()),
        };
        let how = if candidate.hflip && candidate.members.len() > 1 {
            format!("{how}, each also mirrored")
        } else {
            how
        };
        board.push_combined(autodl_core::Combined {
            id: candidate.name.clone(),
            model: model.to_owned(),
            backbone: ids.join("+"),
            metric_name: best.metric_name.clone(),
            metric: value,
            scores: metrics.scores(),
            secs,
            reason: how,
            model_dir: dir,
        });
    }
    board.rank();
    Ok(())
}

/// Writes a candidate's ensemble folder: each member's model files, hard-linked where the file
/// system allows, and `ensemble.json`.
fn build(dir: &Path, candidate: &Candidate, ds: &Dataset) -> anyhow::Result<()> {
    let _ = std::fs::remove_dir_all(dir);
    let mut members = Vec::new();
    for row in &candidate.members {
        let from = PathBuf::from(row.model_dir.as_deref().unwrap_or_default());
        let to = dir.join(&row.id);
        std::fs::create_dir_all(&to).with_context(|| format!("cannot create {}", to.display()))?;
        for entry in
            std::fs::read_dir(&from).with_context(|| format!("cannot list {}", from.display()))?
        {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            // The model, not the trial's checkpoint for resuming it.
            if !entry.file_type()?.is_file()
                || name == autodl_api::STOP_FILE
                || name.starts_with("checkpoint.")
            {
                continue;
            }
            let target = to.join(entry.file_name());
            if std::fs::hard_link(entry.path(), &target).is_err() {
                std::fs::copy(entry.path(), &target)
                    .with_context(|| format!("cannot copy {}", entry.path().display()))?;
            }
        }
        members.push(EnsembleMember {
            dir: row.id.clone(),
            id: row.id.clone(),
            family: row.model.clone(),
            backbone: row.backbone.clone(),
            weight: 1.0,
        });
    }
    EnsembleMeta {
        task: ds.task,
        classes: ds.classes.clone(),
        ignore_index: ds.ignore_index,
        members,
        hflip: candidate.hflip,
        fusion_iou: 0.55,
        score_threshold: 0.0,
    }
    .save(dir)?;
    Ok(())
}
