//! `autodl evaluate`: scores boxes or masks against ground truth through the registered
//! evaluator training scores with, so that a user can check a package on their own labelled
//! images and get the numbers its leaderboard row promised.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use autodl_api::{ClassInfo, DetectedBox, EvalItem, EvalOptions, Evaluator, MetricsFile, TruthBox};
use autodl_data::{Dataset, ReadOptions, Task};
use autodl_detection_metrics as dm;

use crate::Failure;

type Outcome = Result<(), Failure>;

/// `autodl evaluate`.
#[derive(clap::Args, Debug)]
pub struct EvaluateArgs {
    /// Ground truth: a COCO JSON file, or a dataset folder autodl reads (PASCAL VOC, KITTI,
    /// COCO, YOLO or classified tiles); images are matched to it by file name.
    #[arg(long)]
    gt: PathBuf,
    /// Detections: a COCO result JSON array (`image_id`, `category_id`, `bbox`, `score`), or
    /// the `detections.json` that `autodl predict` writes; each on an image the ground truth
    /// lists (as pycocotools requires).
    #[arg(long, required_unless_present = "masks", conflicts_with = "masks")]
    dets: Option<PathBuf>,
    /// Predicted masks: a folder of class-value `<stem>.png` files as `autodl predict`
    /// writes them (its `previews/` are passed over); `--gt` is then a classified-tiles
    /// folder, or a folder of truth masks named by stem.
    #[arg(long)]
    masks: Option<PathBuf>,
    /// Score threshold for precision, recall and F1 (a model's stored threshold is in its
    /// `model.json` as `score-threshold`).
    #[arg(long, default_value_t = 0.5)]
    score_threshold: f64,
    /// Masks: the truth value that is not scored (default: the class a dataset's class list
    /// names "no data"; none for a plain folder of masks).
    #[arg(long)]
    ignore_value: Option<u32>,
    /// Image sub-folder of a dataset folder (default `images`).
    #[arg(long)]
    images_dir: Option<String>,
    /// The registered evaluator that scores (`autodl plugins` lists them; default: the one
    /// registered for the task, as training uses).
    #[arg(long)]
    evaluator: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// The evaluator `--evaluator` names, or the one registered for `task`; it must score `task`.
fn evaluator_for(args: &EvaluateArgs, task: Task) -> Result<&'static dyn Evaluator, Failure> {
    let evaluator = match &args.evaluator {
        Some(name) => autodl_api::evaluator(name).ok_or_else(|| {
            let known: Vec<&str> = autodl_api::evaluators().iter().map(|e| e.name()).collect();
            Failure::usage(anyhow!(
                "unknown evaluator `{name}`; registered evaluators: {}",
                known.join(", ")
            ))
        })?,
        None => autodl_api::default_evaluator(task)
            .ok_or_else(|| anyhow!("no evaluator for {task} is compiled in"))?,
    };
    if evaluator.task() != task {
        return Err(Failure::usage(anyhow!(
            "evaluator `{}` scores {}, not {task}",
            evaluator.name(),
            evaluator.task()
        )));
    }
    Ok(evaluator)
}

pub fn evaluate(args: &EvaluateArgs) -> Outcome {
    match (&args.dets, &args.masks) {
        (Some(dets), None) => boxes(args, dets),
        (None, Some(masks)) => pixels(args, masks),
        _ => Err(Failure::usage(anyhow!(
            "give --dets (boxes) or --masks (pixels)"
        ))),
    }
}

fn open_dataset(args: &EvaluateArgs) -> Result<Dataset, Failure> {
    let opts = ReadOptions {
        images_dir: args.images_dir.clone(),
        ..ReadOptions::default()
    };
    autodl_data::open(&args.gt, &opts)
        .with_context(|| format!("cannot read the ground truth {}", args.gt.display()))
        .map_err(Failure::usage)
}

/// Every sample of a dataset by its image's file name and by its stem.
fn by_name(ds: &Dataset) -> HashMap<String, &autodl_data::Sample> {
    let mut map = HashMap::new();
    for (_, s) in ds.samples() {
        if let Some(name) = s.image.file_name() {
            map.insert(name.to_string_lossy().into_owned(), s);
        }
        map.entry(s.stem.clone()).or_insert(s);
    }
    map
}

/// Ground truth for the images of `autodl predict`'s output, from a dataset folder, with
/// boxes converted exactly as validation converts them, and the dataset's class names.
fn gt_from_folder(args: &EvaluateArgs, dets: &Path) -> Result<(dm::CocoGt, Vec<String>), Failure> {
    let ds = open_dataset(args)?;
    if ds.task != Task::Detection {
        return Err(Failure::usage(anyhow!(
            "{} holds {} data, not boxes: score masks with --masks",
            args.gt.display(),
            ds.format
        )));
    }
    let preds = dm::read_predictions(dets)
        .with_context(|| format!("{}: a dataset folder as --gt needs `autodl predict`'s detections.json, which names the images", dets.display()))
        .map_err(Failure::usage)?;
    let samples = by_name(&ds);
    let mut annotations = Vec::new();
    for img in &preds.images {
        let s = samples.get(&img.file_name).ok_or_else(|| {
            Failure::usage(anyhow!(
                "{}: image `{}` is not in the dataset {}",
                dets.display(),
                img.file_name,
                args.gt.display()
            ))
        })?;
        for b in &s.boxes {
            annotations.push(dm::GtBox {
                image_id: img.id,
                category: b.class as u32,
                bbox: dm::coco_bbox(b.corners()),
                area: None,
                iscrowd: b.iscrowd,
                difficult: b.difficult,
            });
        }
    }
    let gt = dm::CocoGt {
        images: preds.images.iter().map(|i| i.id).collect(),
        categories: (0..ds.classes.len() as u32).collect(),
        annotations,
    };
    Ok((gt, ds.classes.iter().map(|c| c.name.clone()).collect()))
}

/// What the evaluator scored, with its ids mapped back to the files' category ids.
struct BoxScores {
    /// Every number, at `--score-threshold`.
    detail: autodl_api::DetMetrics,
    /// VOC AP50 (all-point), undefined without a true box.
    voc: Option<f64>,
    /// VOC AP50 (11-point).
    voc07: Option<f64>,
    /// ArcGIS's AP at IoU 0.1.
    arcgis: Option<f64>,
}

/// Scores `dets` against `gt` through the evaluator, image by image in ascending id order
/// (each image's boxes in file order). The evaluator numbers classes from 0: the categories of
/// the ground truth and the detections are given indices in ascending id order, so that a
/// category only detections name counts as VOC counts it (false alarms) and COCO, finding no
/// true box of it, leaves it out of its means. Boxes on images the ground truth does not list,
/// and true boxes of a category it does not list, are refused (pycocotools refuses the first).
fn score_boxes(
    args: &EvaluateArgs,
    gt: &dm::CocoGt,
    names: Option<&[String]>,
    dets: &[dm::Detection],
    dets_path: &Path,
) -> Result<BoxScores, Failure> {
    let evaluator = evaluator_for(args, Task::Detection)?;
    let known: BTreeSet<u32> = gt.categories.iter().copied().collect();
    if let Some(a) = gt.annotations.iter().find(|a| !known.contains(&a.category)) {
        return Err(Failure::usage(anyhow!(
            "{}: a true box of category {} on image {}, which its categories do not list",
            args.gt.display(),
            a.category,
            a.image_id
        )));
    }
    let ids: Vec<u32> = known
        .iter()
        .copied()
        .chain(dets.iter().map(|d| d.category))
        .collect::<BTreeSet<u32>>()
        .into_iter()
        .collect();
    let index: HashMap<u32, u32> = ids
        .iter()
        .enumerate()
        .map(|(i, &id)| (id, i as u32))
        .collect();
    let classes: Vec<ClassInfo> = ids
        .iter()
        .map(|&id| ClassInfo {
            value: id,
            name: names
                .and_then(|n| n.get(id as usize).cloned())
                .unwrap_or_else(|| id.to_string()),
        })
        .collect();
    let images: BTreeSet<u64> = gt.images.iter().copied().collect();
    let mut per_image: HashMap<u64, (Vec<TruthBox>, Vec<DetectedBox>)> = HashMap::new();
    for a in &gt.annotations {
        if !images.contains(&a.image_id) {
            return Err(Failure::usage(anyhow!(
                "{}: a true box on image {}, which its images do not list",
                args.gt.display(),
                a.image_id
            )));
        }
        per_image.entry(a.image_id).or_default().0.push(TruthBox {
            bbox: a.bbox,
            class: index[&a.category],
            area: a.area,
            crowd: a.iscrowd,
            difficult: a.difficult,
        });
    }
    for d in dets {
        if !images.contains(&d.image_id) {
            return Err(Failure::usage(anyhow!(
                "{}: a detection on image {}, which the ground truth {} does not list",
                dets_path.display(),
                d.image_id,
                args.gt.display()
            )));
        }
        per_image
            .entry(d.image_id)
            .or_default()
            .1
            .push(DetectedBox {
                bbox: d.bbox,
                class: index[&d.category],
                score: d.score,
            });
    }
    let options = EvalOptions {
        score_threshold: Some(args.score_threshold),
    };
    let mut evaluation = evaluator.start(&classes, &options);
    for image in &images {
        let (truth, detections) = per_image.remove(image).unwrap_or_default();
        evaluation.add(EvalItem::Boxes {
            detections: &detections,
            truth: &truth,
        })?;
    }
    let (voc, voc07, arcgis) = (
        evaluation.score("ap50"),
        evaluation.score("voc07-ap50"),
        evaluation.score("arcgis-ap10"),
    );
    let MetricsFile::Detection(file) = evaluation.finish() else {
        return Err(anyhow!("evaluator `{}` gave no detection metrics", evaluator.name()).into());
    };
    let mut detail = file.detail;
    let id = |class: u32| ids.get(class as usize).copied().unwrap_or(class);
    for c in &mut detail.per_class {
        c.category = id(c.category);
    }
    for c in &mut detail.ap50_per_class {
        c.0 = id(c.0);
    }
    Ok(BoxScores {
        detail,
        voc,
        voc07,
        arcgis,
    })
}

fn boxes(args: &EvaluateArgs, dets_path: &Path) -> Outcome {
    let (gt, names) = if args.gt.is_dir() {
        let (gt, names) = gt_from_folder(args, dets_path)?;
        (gt, Some(names))
    } else {
        (dm::read_coco_gt(&args.gt).map_err(Failure::usage)?, None)
    };
    let dets = dm::read_coco_dets(dets_path).map_err(Failure::usage)?;
    let scores = score_boxes(args, &gt, names.as_deref(), &dets, dets_path)?;
    let d = &scores.detail;
    let (coco, prf) = (&d.coco, &d.per_class);
    // Means over the classes, as a trial's metrics report them.
    let (precision, recall, f1) = (d.precision, d.recall, d.f1);
    if args.json {
        let v = serde_json::json!({
            "coco": coco, "voc-ap50": scores.voc, "voc07-ap50": scores.voc07,
            "arcgis-ap10": scores.arcgis, "voc-ap50-per-class": d.ap50_per_class,
            "score-threshold": args.score_threshold,
            "precision": precision, "recall": recall, "f1": f1, "precision-recall-f1": prf,
        });
        outln!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let names = [
        "AP @[.50:.95]",
        "AP50",
        "AP75",
        "AP small",
        "AP medium",
        "AP large",
        "AR 1",
        "AR 10",
        "AR 100",
        "AR small",
        "AR medium",
        "AR large",
    ];
    outln!(
        "{} images, {} ground-truth boxes, {} detections",
        gt.images.len(),
        gt.annotations.len(),
        dets.len()
    );
    outln!("COCO (pycocotools rules)");
    for (name, v) in names.iter().zip(coco.as_array()) {
        outln!("  {name:<14} {v:.4}");
    }
    let f = |m: Option<f64>| m.map_or("-".to_owned(), |v| format!("{v:.4}"));
    outln!(
        "VOC AP50 (all-point) {}   VOC AP50 (11-point) {}   ArcGIS AP (IoU 0.1) {}",
        f(scores.voc),
        f(scores.voc07),
        f(scores.arcgis)
    );
    outln!(
        "at score >= {} and IoU 0.5: precision {precision:.4} recall {recall:.4} F1 {f1:.4} (mean over classes)",
        args.score_threshold
    );
    for c in prf {
        outln!(
            "  class {:<4} precision {:.4} recall {:.4} F1 {:.4} (TP {}, FP {}, FN {})",
            c.category,
            c.precision,
            c.recall,
            c.f1,
            c.tp,
            c.fp,
            c.fn_
        );
    }
    Ok(())
}

/// Predicted mask files in `dir` (not its `previews/` folder): PNG or TIFF, sorted.
fn mask_files(dir: &Path) -> Result<Vec<PathBuf>, Failure> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))
        .map_err(Failure::usage)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && matches!(
                    p.extension()
                        .and_then(|e| e.to_str())
                        .map(str::to_lowercase)
                        .as_deref(),
                    Some("png" | "tif" | "tiff")
                )
        })
        .collect();
    files.sort();
    // `autodl predict` writes `<stem>.tif` beside `<stem>.png` for a georeferenced image: the
    // same classes, so each stem counts once, as its PNG.
    let png_stems: HashSet<std::ffi::OsString> = files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("png")))
        .filter_map(|p| p.file_stem().map(|s| s.to_owned()))
        .collect();
    files.retain(|p| {
        p.extension().is_some_and(|e| e.eq_ignore_ascii_case("png"))
            || p.file_stem().is_none_or(|s| !png_stems.contains(s))
    });
    if files.is_empty() {
        return Err(Failure::usage(anyhow!(
            "{} holds no predicted masks (<stem>.png)",
            dir.display()
        )));
    }
    Ok(files)
}

/// Truth masks and their classes: a classified-tiles dataset's, or a plain folder of masks
/// named by stem (classes are then the values seen, less `--ignore-value`).
struct MaskTruth {
    classes: Vec<autodl_data::ClassInfo>,
    labels: HashMap<String, PathBuf>,
}

fn mask_truth(args: &EvaluateArgs, predicted: &[PathBuf]) -> Result<MaskTruth, Failure> {
    let stem = |p: &Path| {
        p.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let opts = ReadOptions {
        images_dir: args.images_dir.clone(),
        ignore_index: args.ignore_value,
        ..ReadOptions::default()
    };
    match autodl_data::open(&args.gt, &opts) {
        Ok(ds) => {
            if ds.task != Task::PixelClassification {
                return Err(Failure::usage(anyhow!(
                    "{} holds {} data, not classified tiles: score boxes with --dets",
                    args.gt.display(),
                    ds.format
                )));
            }
            let labels = ds
                .samples()
                .filter_map(|(_, s)| Some((s.stem.clone(), s.label.clone()?)))
                .collect();
            Ok(MaskTruth {
                classes: ds.classes.clone(),
                labels,
            })
        }
        Err(err) => {
            // Not a dataset: a folder holding the truth masks themselves.
            let files = mask_files(&args.gt).map_err(|_| {
                Failure::usage(anyhow!(
                    "cannot read the ground truth {}: {err}",
                    args.gt.display()
                ))
            })?;
            let labels: HashMap<String, PathBuf> =
                files.into_iter().map(|f| (stem(&f), f)).collect();
            let mut values = BTreeSet::new();
            for p in predicted {
                values.extend(autodl_data::load_mask(p)?.data);
                if let Some(t) = labels.get(&stem(p)) {
                    values.extend(autodl_data::load_mask(t)?.data);
                }
            }
            values.retain(|v| Some(*v) != args.ignore_value);
            let classes = values
                .into_iter()
                .map(|v| autodl_data::ClassInfo {
                    value: v,
                    name: v.to_string(),
                })
                .collect();
            Ok(MaskTruth { classes, labels })
        }
    }
}

fn pixels(args: &EvaluateArgs, masks: &Path) -> Outcome {
    let files = mask_files(masks)?;
    let truth = mask_truth(args, &files)?;
    // Mask values to class indices, as training maps them; other values (the ignore value)
    // are not scored.
    let index: HashMap<u32, u32> = truth
        .classes
        .iter()
        .enumerate()
        .map(|(i, c)| (c.value, i as u32))
        .collect();
    let evaluator = evaluator_for(args, Task::PixelClassification)?;
    let mut evaluation = evaluator.start(&truth.classes, &EvalOptions::default());
    for file in &files {
        let stem = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let label = truth.labels.get(&stem).ok_or_else(|| {
            Failure::usage(anyhow!(
                "{}: no truth mask `{stem}` in {}",
                file.display(),
                args.gt.display()
            ))
        })?;
        let t = autodl_data::load_mask(label)?;
        let pred = autodl_data::load_mask(file)?;
        if (t.width, t.height) != (pred.width, pred.height) {
            return Err(Failure::usage(anyhow!(
                "{}: {}x{} pixels, but its truth {} is {}x{}",
                file.display(),
                pred.width,
                pred.height,
                label.display(),
                t.width,
                t.height
            )));
        }
        let t: Vec<u32> = t
            .data
            .iter()
            .map(|v| index.get(v).copied().unwrap_or(autodl_api::IGNORE))
            .collect();
        let pred = pred
            .data
            .iter()
            .map(|v| {
                index.get(v).copied().ok_or_else(|| {
                    Failure::usage(anyhow!(
                        "{}: value {v} is not a class of {}",
                        file.display(),
                        args.gt.display()
                    ))
                })
            })
            .collect::<Result<Vec<u32>, Failure>>()?;
        evaluation
            .add(EvalItem::Pixels {
                predicted: &pred,
                truth: &t,
            })
            .map_err(|e| anyhow!("{}: {e}", file.display()))?;
    }
    let MetricsFile::PixelClassification(scored) = evaluation.finish() else {
        return Err(anyhow!("evaluator `{}` gave no pixel metrics", evaluator.name()).into());
    };
    let (metrics, cm) = (scored.metrics, scored.confusion_matrix);
    let classes = &truth.classes;
    if args.json {
        let v = serde_json::json!({ "images": files.len(), "metrics": metrics, "classes": classes, "confusion-matrix": cm });
        outln!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    outln!(
        "{} images, {} scored pixels",
        files.len(),
        metrics.total_pixels
    );
    outln!(
        "mIoU {:.4}   accuracy {:.4}   dice {:.4}   frequency-weighted IoU {:.4}",
        metrics.mean_iou,
        metrics.pixel_accuracy,
        metrics.mean_dice,
        metrics.frequency_weighted_iou
    );
    let f = |m: Option<f64>| m.map_or("-".to_owned(), |v| format!("{v:.4}"));
    outln!("  value class                 IoU    precision recall  support");
    for (c, m) in classes.iter().zip(&metrics.per_class) {
        outln!(
            "  {:>5} {:<20} {:<6} {:<9} {:<7} {}",
            c.value,
            c.name,
            f(m.iou),
            f(m.precision),
            f(m.recall),
            m.support
        );
    }
    outln!("confusion matrix (rows truth, columns prediction, in class order):");
    for t in 0..classes.len() {
        let row: Vec<String> = (0..classes.len())
            .map(|p| cm.get(t, p).to_string())
            .collect();
        outln!("  {}", row.join(" "));
    }
    Ok(())
}
