//! Object-detection training and prediction, generic over the backend and the detector.
//!
//! A family supplies a [`DetNet`] (a Burn module mapping `[N, bands, H, W]` to per-anchor class
//! logits and box deltas) and [`DetOptions`] (its pyramid strides, anchor shapes, matching rule
//! and losses); this module does the rest: reading boxes, random training tiles with box-aware
//! augmentation, anchor matching, the loss, the shared fit loop, evaluation with VOC and COCO
//! AP, and windowed prediction of large images merged with NMS.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use autodl_api::{
    AugSample, DataSpec, EpochRecord, ParamValue, Params, PluginError, Progress, TrialResult,
    TrialSpec,
};
use autodl_data::ClassInfo;
use autodl_detection::loss::{
    decode, giou_loss, hard_negative_weights, sigmoid_focal_loss, smooth_l1, softmax_cross_entropy,
};
use autodl_detection::{
    AnchorConfig, Assignment, Box4, BoxCoder, MatchConfig, ScoredBox, match_anchors,
};
use autodl_detection_metrics::{CocoSummary, Detection, GtBox, VocMethod, VocResult};
use burn::module::{AutodiffModule, Module};
use burn::optim::{GradientsParams, Optimizer};
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use serde::Serialize;

use crate::data::{band_stats, data_err, read_options};
use crate::fit::{Evaluation, FitOptions, Steps, fit};
use crate::infer::{self, SIZE_MULTIPLE, View, WindowOutput, normalise};
use crate::model_dir::ModelMeta;
use crate::params::{number_param, text_param};
use crate::seed::sample_seed;

/// What a detector's forward pass returns.
#[derive(Debug, Clone)]
pub struct DetOutput<B: Backend> {
    /// Class logits `[N, anchors, K]`: `K` = classes for sigmoid heads, classes + 1 (background
    /// first) for softmax heads.
    pub logits: Tensor<B, 3>,
    /// Box deltas `[N, anchors, 4]` for the [`BoxCoder`].
    pub deltas: Tensor<B, 3>,
    /// `[height, width]` of each pyramid level, finest first, for anchor generation.
    pub levels: Vec<[usize; 2]>,
}

/// A head's `[N, A*K, H, W]` output as `[N, H*W*A, K]`: location-major, then anchor, the order
/// [`AnchorConfig::generate`] lists anchors in.
pub fn per_anchor<B: Backend>(t: Tensor<B, 4>, k: usize) -> Tensor<B, 3> {
    let [n, ak, h, w] = t.dims();
    t.permute([0, 2, 3, 1])
        .reshape([n, h * w * ak / k.max(1), k])
}

/// A detector: per-anchor logits and deltas for a batch whose sides are multiples of 32.
pub trait DetNet<B: Backend>: Module<B> {
    /// Runs the network.
    fn forward(&self, x: Tensor<B, 4>) -> DetOutput<B>;
}

/// The classification loss of a family.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ClassLoss {
    /// Sigmoid focal loss over every non-ignored anchor (RetinaNet); logits have one column
    /// per class.
    Focal {
        /// Weight of positives.
        alpha: f32,
        /// Focusing exponent.
        gamma: f32,
    },
    /// Softmax cross-entropy on positives and the hardest negatives (SSD); logits have a
    /// background column first.
    HardNegative {
        /// Negatives kept per positive.
        ratio: usize,
    },
}

/// The box-regression loss of a family.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BoxLoss {
    /// Smooth-L1 on encoded deltas.
    SmoothL1 {
        /// Where it turns from quadratic to linear.
        beta: f32,
    },
    /// Generalised IoU on decoded boxes.
    Giou,
}

/// What a detector family tells the loop about its network.
#[derive(Debug, Clone)]
pub struct DetOptions {
    /// Stride of each pyramid level the head predicts on, finest first.
    pub strides: Vec<usize>,
    /// Anchor side multipliers at each location.
    pub anchor_scales: Vec<f32>,
    /// Anchor height-to-width ratios at each location.
    pub anchor_ratios: Vec<f32>,
    /// Anchor-to-object assignment.
    pub matching: MatchConfig,
    /// Classification loss.
    pub class_loss: ClassLoss,
    /// Box loss.
    pub box_loss: BoxLoss,
    /// Box coder.
    pub coder: BoxCoder,
    /// Learning rate when the budget is too small for the finder.
    pub default_lr: f64,
    /// Training tile side when the spec gives none.
    pub default_tile: u32,
    /// Family parameters recorded in `model.json` (the backbone, for one).
    pub params: Params,
}

impl DetOptions {
    /// Anchors per location, which the head's output channels depend on.
    pub fn anchors_per_location(&self) -> usize {
        self.anchor_scales.len() * self.anchor_ratios.len()
    }

    /// Whether logits carry a background column.
    pub fn background_first(&self) -> bool {
        matches!(self.class_loss, ClassLoss::HardNegative { .. })
    }

    /// Anchors with base side `scale * stride` on each level.
    pub fn anchor_config(&self, scale: f32) -> AnchorConfig {
        AnchorConfig {
            strides: self.strides.clone(),
            sizes: self.strides.iter().map(|&s| s as f32 * scale).collect(),
            scales: self.anchor_scales.clone(),
            ratios: self.anchor_ratios.clone(),
        }
    }
}

/// One image and its boxes, normalised.
#[derive(Debug, Clone)]
pub struct DetItem {
    /// Width.
    pub width: usize,
    /// Height.
    pub height: usize,
    /// Normalised band-major pixels.
    pub image: Vec<f32>,
    /// Boxes in continuous pixels with their class index.
    pub boxes: Vec<(Box4, usize)>,
    /// Per box: VOC `difficult`.
    pub difficult: Vec<bool>,
    /// Per box: COCO `iscrowd`.
    pub crowd: Vec<bool>,
}

/// A detection dataset in memory.
#[derive(Debug, Clone)]
pub struct DetData {
    /// Bands per image.
    pub bands: usize,
    /// Classes in logit order.
    pub classes: Vec<ClassInfo>,
    /// Per-band means of the training split.
    pub mean: Vec<f32>,
    /// Per-band standard deviations of the training split.
    pub std: Vec<f32>,
    /// Training items.
    pub train: Vec<DetItem>,
    /// Validation items.
    pub val: Vec<DetItem>,
}

/// Reads a detection dataset and normalises every band with the training split's statistics.
/// Boxes become continuous rectangles: a VOC box from pixel 3 to pixel 5 spans 3 to 6.
pub fn load_data(spec: &DataSpec, seed: u64) -> Result<DetData, PluginError> {
    let ds = autodl_data::open(&spec.root, &read_options(spec, seed)?).map_err(data_err)?;
    if ds.task != autodl_data::Task::Detection {
        return Err(PluginError::Data(format!(
            "{} holds {} data, not boxes",
            spec.root.display(),
            ds.format
        )));
    }
    fn load(
        samples: &[autodl_data::Sample],
    ) -> Result<Vec<(autodl_data::Image, &autodl_data::Sample)>, PluginError> {
        samples
            .par_iter()
            .map(|s| Ok((autodl_data::load_image(&s.image).map_err(data_err)?, s)))
            .collect()
    }
    let train = load(&ds.train)?;
    let val = load(&ds.val)?;
    let bands = train.first().map_or(0, |(img, _)| img.bands as usize);
    if let Some((img, s)) = train
        .iter()
        .chain(&val)
        .find(|(img, _)| img.bands as usize != bands)
    {
        return Err(PluginError::Data(format!(
            "{}: {} bands, other images have {bands}",
            s.image.display(),
            img.bands
        )));
    }
    let (mean, std) = band_stats(train.iter().map(|(img, _)| img), bands);
    let to_items = |v: Vec<(autodl_data::Image, &autodl_data::Sample)>| -> Vec<DetItem> {
        v.into_iter()
            .map(|(img, s)| DetItem {
                width: img.width as usize,
                height: img.height as usize,
                image: normalise(
                    img.data,
                    img.width as usize * img.height as usize,
                    &mean,
                    &std,
                ),
                boxes: s.boxes.iter().map(|b| (b.corners(), b.class)).collect(),
                difficult: s.boxes.iter().map(|b| b.difficult).collect(),
                crowd: s.boxes.iter().map(|b| b.iscrowd).collect(),
            })
            .collect()
    };
    Ok(DetData {
        bands,
        classes: ds.classes.clone(),
        mean: mean.clone(),
        std: std.clone(),
        train: to_items(train),
        val: to_items(val),
    })
}

/// Copies the `w x h` region of `image` at `(x0, y0)` into a zero-padded `pw x ph` canvas.
fn crop(
    image: &[f32],
    width: usize,
    height: usize,
    bands: usize,
    (x0, y0, w, h): (usize, usize, usize, usize),
    pw: usize,
    ph: usize,
) -> Vec<f32> {
    let mut out = vec![0f32; bands * pw * ph];
    let (w, h) = (
        w.min(pw).min(width.saturating_sub(x0)),
        h.min(ph).min(height.saturating_sub(y0)),
    );
    for b in 0..bands {
        for y in 0..h {
            let src = b * width * height + (y0 + y) * width + x0;
            let dst = b * pw * ph + y * pw;
            out[dst..dst + w].copy_from_slice(&image[src..src + w]);
        }
    }
    out
}

/// The boxes seen through the `w x h` region at `(x0, y0)`, in its coordinates: clipped to
/// it, and kept only when at least 40 % of a box stays inside and at least 2 px a side.
fn clip_boxes(
    boxes: &[(Box4, usize)],
    (x0, y0, w, h): (usize, usize, usize, usize),
) -> Vec<(Box4, usize)> {
    let (cw, ch) = (w as f32, h as f32);
    boxes
        .iter()
        .filter_map(|&(b, c)| {
            let s = [
                b[0] - x0 as f32,
                b[1] - y0 as f32,
                b[2] - x0 as f32,
                b[3] - y0 as f32,
            ];
            let clipped = [s[0].max(0.0), s[1].max(0.0), s[2].min(cw), s[3].min(ch)];
            let area = autodl_detection::boxes::area(&clipped);
            (area >= 0.4 * autodl_detection::boxes::area(&s)
                && clipped[2] - clipped[0] >= 2.0
                && clipped[3] - clipped[1] >= 2.0)
                .then_some((clipped, c))
        })
        .collect()
}

/// A `tile`-sided training sample cut from `item` at a seeded random place (zero-padded when
/// the image is smaller), with boxes clipped to it and augmented. A box keeps its place only
/// when at least 40 % of it stays inside the tile.
fn make_sample(
    item: &DetItem,
    bands: usize,
    tile: usize,
    seed: u64,
    augment: &autodl_augment::Pipeline,
) -> AugSample {
    let mut rng = StdRng::seed_from_u64(seed);
    let x0 = if item.width > tile {
        rng.random_range(0..=item.width - tile)
    } else {
        0
    };
    let y0 = if item.height > tile {
        rng.random_range(0..=item.height - tile)
    } else {
        0
    };
    let image = crop(
        &item.image,
        item.width,
        item.height,
        bands,
        (x0, y0, tile, tile),
        tile,
        tile,
    );
    let boxes = clip_boxes(
        &item.boxes,
        (
            x0,
            y0,
            tile.min(item.width - x0),
            tile.min(item.height - y0),
        ),
    );
    let mut sample = AugSample {
        width: tile as u32,
        height: tile as u32,
        bands: bands as u32,
        image,
        mask: None,
        boxes,
    };
    augment.apply(&mut sample, sample_seed(seed, 1, 0));
    sample
}

/// Images as one `[N, bands, H, W]` tensor; every sample must have the same size.
fn images_tensor<B: Backend>(samples: &[AugSample], device: &B::Device) -> Tensor<B, 4> {
    let (b, h, w) = samples.first().map_or((0, 0, 0), |s| {
        (s.bands as usize, s.height as usize, s.width as usize)
    });
    let mut data = Vec::with_capacity(samples.len() * b * h * w);
    for s in samples {
        data.extend_from_slice(&s.image);
    }
    Tensor::from_data(TensorData::new(data, [samples.len(), b, h, w]), device)
}

/// Everything the loss needs besides the network's output.
struct LossSetup<'a> {
    opts: &'a DetOptions,
    anchors: &'a AnchorConfig,
}

/// The detection loss of a batch, divided by the number of positive anchors (at least 1).
fn det_loss<B: Backend>(
    out: DetOutput<B>,
    boxes: &[Vec<(Box4, usize)>],
    setup: &LossSetup<'_>,
    device: &B::Device,
) -> Tensor<B, 1> {
    let anchors = setup.anchors.generate(&out.levels);
    let [n, a, k] = out.logits.dims();
    debug_assert_eq!(
        a,
        anchors.len(),
        "the head's anchor count differs from the anchor generator's"
    );
    let assignments: Vec<Vec<Assignment>> = boxes
        .par_iter()
        .map(|b| {
            let objects: Vec<Box4> = b.iter().map(|(x, _)| *x).collect();
            match_anchors(&anchors, &objects, &setup.opts.matching)
        })
        .collect();
    let giou = matches!(setup.opts.box_loss, BoxLoss::Giou);
    let mut positive = vec![0f32; n * a];
    let mut box_target = vec![0f32; n * a * 4];
    let mut labels = vec![0i64; n * a];
    for (i, assign) in assignments.iter().enumerate() {
        for (j, m) in assign.iter().enumerate() {
            let at = i * a + j;
            match *m {
                Assignment::Object(g) => {
                    let (b, c) = boxes[i][g];
                    positive[at] = 1.0;
                    labels[at] = c as i64 + 1;
                    let t = if giou {
                        b
                    } else {
                        setup.opts.coder.encode(&anchors[j], &b)
                    };
                    box_target[4 * at..4 * at + 4].copy_from_slice(&t);
                }
                Assignment::Ignore => labels[at] = -1,
                Assignment::Background => {}
            }
        }
    }
    let npos = positive.iter().sum::<f32>().max(1.0);
    let pos = Tensor::<B, 2>::from_data(TensorData::new(positive, [n, a]), device);
    let target = Tensor::<B, 3>::from_data(TensorData::new(box_target, [n, a, 4]), device);
    let box_loss = match setup.opts.box_loss {
        BoxLoss::SmoothL1 { beta } => smooth_l1(out.deltas, target, pos, beta),
        BoxLoss::Giou => {
            let flat: Vec<f32> = anchors.iter().flatten().copied().collect();
            let anchor_t = Tensor::<B, 3>::from_data(TensorData::new(flat, [1, a, 4]), device);
            giou_loss(
                decode(anchor_t, out.deltas, setup.opts.coder.weights),
                target,
                pos,
            )
        }
    };
    let class_loss = match setup.opts.class_loss {
        ClassLoss::Focal { alpha, gamma } => {
            let mut one_hot = vec![0f32; n * a * k];
            let mut weight = vec![1f32; n * a];
            for (at, &l) in labels.iter().enumerate() {
                if l < 0 {
                    weight[at] = 0.0;
                } else if l > 0 && (l as usize) <= k {
                    one_hot[at * k + l as usize - 1] = 1.0;
                }
            }
            let one_hot = Tensor::<B, 3>::from_data(TensorData::new(one_hot, [n, a, k]), device);
            let weight = Tensor::<B, 2>::from_data(TensorData::new(weight, [n, a]), device);
            sigmoid_focal_loss(out.logits, one_hot, weight, alpha, gamma)
        }
        ClassLoss::HardNegative { ratio } => {
            let label_t = Tensor::<B, 2, Int>::from_data(
                TensorData::new(
                    labels.iter().map(|&l| l.max(0)).collect::<Vec<i64>>(),
                    [n, a],
                ),
                device,
            );
            let ce = softmax_cross_entropy(out.logits, label_t);
            let host: Vec<f32> = ce.clone().detach().into_data().iter::<f32>().collect();
            let weights = hard_negative_weights(&host, &labels, a, ratio, 16);
            (ce * Tensor::<B, 2>::from_data(TensorData::new(weights, [n, a]), device)).sum()
        }
    };
    (class_loss + box_loss) / npos as f64
}

fn scalar<B: Backend>(t: Tensor<B, 1>) -> f64 {
    t.into_data().iter::<f64>().next().unwrap_or(f64::NAN)
}

struct Trainer<'a> {
    data: &'a DetData,
    tile: usize,
    augment: autodl_augment::Pipeline,
    seed: u64,
    setup: LossSetup<'a>,
}

impl<B: AutodiffBackend, M: DetNet<B> + AutodiffModule<B>> Steps<B, M> for Trainer<'_> {
    fn step<O: Optimizer<M, B>>(
        &self,
        model: M,
        optim: &mut O,
        lr: f64,
        indices: &[usize],
        epoch: u64,
        device: &B::Device,
    ) -> (M, f64) {
        let samples: Vec<AugSample> = indices
            .par_iter()
            .map(|&i| {
                make_sample(
                    &self.data.train[i],
                    self.data.bands,
                    self.tile,
                    sample_seed(self.seed, epoch, i as u64),
                    &self.augment,
                )
            })
            .collect();
        let boxes: Vec<Vec<(Box4, usize)>> = samples.iter().map(|s| s.boxes.clone()).collect();
        let loss = det_loss(
            model.forward(images_tensor(&samples, device)),
            &boxes,
            &self.setup,
            device,
        );
        let value = scalar(loss.clone());
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        (optim.step(lr, model, grads), value)
    }
}

/// The boxes kept on one image.
type ImageBoxes = Vec<ScoredBox>;

/// NMS IoU thresholds tried on the validation split. Dense, rarely overlapping objects (tree
/// crowns: DeepForest uses 0.05) want a low one, crowds of overlapping objects a high one; the
/// best for the data is kept with the model.
const NMS_CHOICES: [f32; 4] = [0.2, 0.35, 0.5, 0.65];

/// Validation loss and detections of every item, once per threshold of [`NMS_CHOICES`],
/// through the inference path `autodl predict` takes ([`infer::detect_windows`] and
/// [`infer::window_boxes`], [`infer::merge_boxes`]). The loss is taken per window, on the boxes the window sees.
fn evaluate<B: Backend, M: DetNet<B>>(
    model: &M,
    items: &[DetItem],
    bands: usize,
    tile: usize,
    setup: &LossSetup<'_>,
    device: &B::Device,
) -> Result<(f64, Vec<Vec<ImageBoxes>>), PluginError> {
    let mut dets = vec![Vec::with_capacity(items.len()); NMS_CHOICES.len()];
    let (mut loss_sum, mut loss_n) = (0.0, 0usize);
    for it in items {
        let view = View::normalised(it.width, it.height, bands, &it.image);
        let mut found = vec![Vec::new(); NMS_CHOICES.len()];
        let windows = infer::detect_windows(
            model,
            view,
            tile,
            setup.opts,
            setup.anchors,
            device,
            |o: &WindowOutput, out| {
                let win = o.window;
                let boxes = clip_boxes(&it.boxes, (win.x0, win.y0, win.w, win.h));
                loss_sum += scalar(det_loss(out, &[boxes], setup, device));
                loss_n += 1;
                for (f, &nms_iou) in found.iter_mut().zip(&NMS_CHOICES) {
                    f.extend(infer::window_boxes(o, setup.opts, nms_iou));
                }
            },
        )?;
        for ((per_nms, f), &nms_iou) in dets.iter_mut().zip(found).zip(&NMS_CHOICES) {
            per_nms.push(infer::merge_boxes(f, windows, nms_iou));
        }
    }
    Ok((loss_sum / loss_n.max(1) as f64, dets))
}

/// Every detection number of one evaluation.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct DetMetrics {
    /// PASCAL VOC AP at IoU 0.5, all-point, difficult boxes ignored: the ranking metric.
    pub ap50: f64,
    /// Per class VOC AP50, by class index.
    pub ap50_per_class: Vec<(u32, Option<f64>)>,
    /// The twelve COCO numbers.
    pub coco: CocoSummary,
    /// VOC AP at IoU 0.1, ArcGIS's default.
    pub arcgis_ap10: f64,
    /// Score threshold with the best mean F1 at IoU 0.5.
    pub score_threshold: f64,
    /// Mean precision at that threshold.
    pub precision: f64,
    /// Mean recall at that threshold.
    pub recall: f64,
    /// Mean F1 at that threshold.
    pub f1: f64,
    /// Per class precision, recall and F1 at that threshold.
    pub per_class: Vec<autodl_detection_metrics::ClassPrf>,
    /// Precision-recall curve of each class at IoU 0.5: `(recall, precision)` points.
    pub pr_curves: Vec<(u32, Vec<(f64, f64)>)>,
}

/// Ground truth in the metrics crate's COCO boxes, image ids being item indices.
fn ground_truth(items: &[DetItem]) -> Vec<GtBox> {
    items
        .iter()
        .enumerate()
        .flat_map(|(i, it)| {
            it.boxes.iter().enumerate().map(move |(j, (b, c))| GtBox {
                image_id: i as u64,
                category: *c as u32,
                bbox: autodl_detection_metrics::coco_bbox(*b),
                area: None,
                iscrowd: it.crowd.get(j).copied().unwrap_or(false),
                difficult: it.difficult.get(j).copied().unwrap_or(false),
            })
        })
        .collect()
}

fn to_detections(dets: &[Vec<ScoredBox>]) -> Vec<Detection> {
    dets.iter()
        .enumerate()
        .flat_map(|(i, d)| {
            d.iter().map(move |s| Detection {
                image_id: i as u64,
                category: s.class as u32,
                bbox: autodl_detection_metrics::coco_bbox(s.bbox),
                score: f64::from(s.score),
            })
        })
        .collect()
}

/// VOC AP50 (the ranking metric) alone, for every epoch.
fn ap50(items: &[DetItem], dets: &[Vec<ScoredBox>]) -> f64 {
    let gts = ground_truth(items);
    autodl_detection_metrics::voc_ap(&gts, &to_detections(dets), 0.5, VocMethod::AllPoint)
        .map
        .unwrap_or(0.0)
}

/// Every metric of the kept epoch.
pub fn det_metrics(items: &[DetItem], dets: &[Vec<ScoredBox>], classes: usize) -> DetMetrics {
    use autodl_detection_metrics as dm;
    let gts = ground_truth(items);
    let dets = to_detections(dets);
    let voc: VocResult = dm::voc_ap(&gts, &dets, 0.5, VocMethod::AllPoint);
    let images: Vec<u64> = (0..items.len() as u64).collect();
    let categories: Vec<u32> = (0..classes as u32).collect();
    let coco = dm::coco_eval(&images, &categories, &gts, &dets);
    let arcgis = dm::arcgis_ap(&gts, &dets).map.unwrap_or(0.0);
    let mean = |v: &[dm::ClassPrf], f: fn(&dm::ClassPrf) -> f64| {
        if v.is_empty() {
            0.0
        } else {
            v.iter().map(f).sum::<f64>() / v.len() as f64
        }
    };
    let mut best = (0.5, Vec::new(), -1.0);
    for step in 1..20 {
        let threshold = step as f64 * 0.05;
        let prf = dm::precision_recall_f1(&gts, &dets, 0.5, threshold);
        let f1 = mean(&prf, |p| p.f1);
        if f1 > best.2 {
            best = (threshold, prf, f1);
        }
    }
    let (score_threshold, per_class, f1) = best;
    DetMetrics {
        ap50: voc.map.unwrap_or(0.0),
        ap50_per_class: voc.per_class,
        coco,
        arcgis_ap10: arcgis,
        score_threshold,
        precision: mean(&per_class, |p| p.precision),
        recall: mean(&per_class, |p| p.recall),
        f1,
        per_class,
        pr_curves: (0..classes as u32)
            .map(|c| (c, pr_curve(&gts, &dets, c)))
            .collect(),
    }
}

/// `(recall, precision)` after each detection of class `class`, best score first, matched
/// greedily at IoU 0.5 as VOC does (difficult boxes neither reward nor penalise).
fn pr_curve(gts: &[GtBox], dets: &[Detection], class: u32) -> Vec<(f64, f64)> {
    let mut by_image: HashMap<u64, Vec<(&GtBox, bool)>> = HashMap::new();
    let mut positives = 0usize;
    for g in gts.iter().filter(|g| g.category == class) {
        positives += usize::from(!g.difficult);
        by_image.entry(g.image_id).or_default().push((g, false));
    }
    let mut mine: Vec<&Detection> = dets.iter().filter(|d| d.category == class).collect();
    mine.sort_by(|a, b| b.score.total_cmp(&a.score));
    let (mut tp, mut fp) = (0usize, 0usize);
    let mut curve = Vec::with_capacity(mine.len());
    for d in mine {
        let mut best: Option<(usize, f64)> = None;
        if let Some(list) = by_image.get(&d.image_id) {
            for (k, (g, _)) in list.iter().enumerate() {
                let v = autodl_detection_metrics::iou(&d.bbox, &g.bbox);
                if best.is_none_or(|(_, b)| v > b) {
                    best = Some((k, v));
                }
            }
        }
        match best {
            Some((k, v)) if v >= 0.5 => {
                let list = by_image.get_mut(&d.image_id).map(|l| &mut l[k]);
                if let Some((g, taken)) = list {
                    if g.difficult {
                        continue;
                    }
                    if *taken {
                        fp += 1;
                    } else {
                        *taken = true;
                        tp += 1;
                    }
                }
            }
            _ => fp += 1,
        }
        curve.push((
            tp as f64 / positives.max(1) as f64,
            tp as f64 / (tp + fp).max(1) as f64,
        ));
    }
    curve
}

/// The anchor base-size multiplier: the spec's `anchor-scale`, or one fitted to the training
/// boxes so that the smallest anchors match the small objects.
fn anchor_scale(spec: &TrialSpec, data: &DetData, opts: &DetOptions) -> f32 {
    match spec.params.get("anchor-scale") {
        Some(ParamValue::Number(s)) => *s as f32,
        _ => {
            let sides: Vec<f32> = data
                .train
                .iter()
                .flat_map(|it| {
                    it.boxes
                        .iter()
                        .map(|(b, _)| ((b[2] - b[0]) * (b[3] - b[1])).sqrt())
                })
                .collect();
            autodl_detection::anchors::fit_scale(
                &sides,
                opts.strides.first().copied().unwrap_or(8),
                1.5,
                4.0,
            )
        }
    }
}

/// Trains a detector as `spec` says and writes its model folder.
///
/// Parameters read from `spec.params` besides the fit loop's: `anchor-scale` (base anchor side
/// in strides; fitted to the data when absent), `box-loss` (`smooth-l1` or `giou`; the family's
/// choice by default) and `metric` (`ap50`, the default, or `coco-ap`).
pub fn train<B, M, F>(
    spec: &TrialSpec,
    progress: &dyn Progress,
    opts: &DetOptions,
    device: &B::Device,
    build: F,
) -> Result<TrialResult, PluginError>
where
    B: AutodiffBackend,
    M: DetNet<B> + AutodiffModule<B>,
    M::InnerModule: DetNet<B::InnerBackend>,
    F: Fn(&B::Device, usize, usize) -> Result<M, PluginError>,
{
    let start = Instant::now();
    std::fs::create_dir_all(&spec.out_dir).map_err(|source| PluginError::Io {
        path: spec.out_dir.clone(),
        source,
    })?;
    B::seed(device, spec.seed);
    let data = load_data(&spec.data, spec.seed)?;
    let (bands, classes) = (data.bands, data.classes.len());
    if data.train.is_empty() || data.val.is_empty() {
        return Err(PluginError::Data(
            "the train or validation split is empty".into(),
        ));
    }
    let largest = data
        .train
        .iter()
        .map(|it| it.width.max(it.height))
        .max()
        .unwrap_or(0);
    let tile = spec
        .tile_size
        .map(|t| t as usize)
        .unwrap_or_else(|| (opts.default_tile as usize).min(largest));
    let tile = tile.div_ceil(SIZE_MULTIPLE).max(1) * SIZE_MULTIPLE;
    let augment = autodl_augment::Pipeline::preset(
        &spec.augment,
        autodl_api::Task::Detection,
        spec.augment_strength,
    )
    .map_err(|e| PluginError::Training(e.to_string()))?;
    let metric_name = text_param(&spec.params, "metric", "ap50").to_owned();
    if !matches!(metric_name.as_str(), "ap50" | "coco-ap") {
        return Err(PluginError::Training(format!(
            "unknown metric `{metric_name}`: use ap50 or coco-ap"
        )));
    }
    let scale = anchor_scale(spec, &data, opts);
    let anchors = opts.anchor_config(scale);
    let mut own = opts.clone();
    own.box_loss = match text_param(&spec.params, "box-loss", "default") {
        "default" => opts.box_loss,
        "smooth-l1" => BoxLoss::SmoothL1 { beta: 1.0 / 9.0 },
        "giou" => BoxLoss::Giou,
        other => {
            return Err(PluginError::Training(format!(
                "unknown box-loss `{other}`: use smooth-l1 or giou"
            )));
        }
    };
    let opts = &own;
    progress.message(&format!(
        "training tiles {tile} px, anchors {:.0} to {:.0} px",
        anchors.sizes.first().copied().unwrap_or(0.0)
            * opts.anchor_scales.first().copied().unwrap_or(1.0),
        anchors.sizes.last().copied().unwrap_or(0.0)
            * opts.anchor_scales.last().copied().unwrap_or(1.0)
    ));
    let trainer = Trainer {
        data: &data,
        tile,
        augment,
        seed: spec.seed,
        setup: LossSetup {
            opts,
            anchors: &anchors,
        },
    };
    let fit_opts = FitOptions {
        spec,
        progress,
        default_lr: opts.default_lr,
        n_train: data.train.len(),
    };
    let fitted = fit::<B, M, _, _>(
        &fit_opts,
        device,
        &|| build(device, bands, classes),
        &trainer,
        &mut |model, _batch| {
            let (loss, per_nms) = evaluate(model, &data.val, bands, tile, &trainer.setup, device)?;
            let mut best: Option<(f64, f32, Vec<Vec<ScoredBox>>)> = None;
            for (dets, &nms) in per_nms.into_iter().zip(&NMS_CHOICES) {
                let metric = if metric_name == "coco-ap" {
                    det_metrics(&data.val, &dets, classes).coco.ap
                } else {
                    ap50(&data.val, &dets)
                };
                if best.as_ref().is_none_or(|b| metric > b.0) {
                    best = Some((metric, nms, dets));
                }
            }
            let (metric, nms, dets) = best.unwrap_or((0.0, 0.5, Vec::new()));
            Ok(Evaluation {
                loss,
                metric,
                payload: (nms, dets),
            })
        },
    )?;
    let (metric, best_epoch, (nms, dets)) = fitted.best;
    let metrics = det_metrics(&data.val, &dets, classes);
    progress.message(&format!(
        "NMS IoU {nms} and score threshold {:.2} chosen on the validation split",
        metrics.score_threshold
    ));
    let mut params = opts.params.clone();
    params.insert("anchor-scale".into(), ParamValue::Number(scale as f64));
    params.insert("nms-iou".into(), ParamValue::Number(nms as f64));
    params.insert(
        "score-threshold".into(),
        ParamValue::Number(metrics.score_threshold),
    );
    let meta = ModelMeta {
        family: spec.family.clone(),
        backbone: spec.backbone.clone(),
        task: autodl_api::Task::Detection,
        bands,
        classes: data.classes.clone(),
        ignore_index: None,
        mean: data.mean.clone(),
        std: data.std.clone(),
        tile_size: tile as u32,
        params,
    };
    meta.save(&spec.out_dir)?;
    write_reports(&spec.out_dir, &metrics, &fitted.epochs, &data.classes)?;
    let mut all = BTreeMap::new();
    all.insert("ap50".to_owned(), metrics.ap50);
    all.insert("coco-ap".to_owned(), metrics.coco.ap);
    all.insert("coco-ap50".to_owned(), metrics.coco.ap50);
    all.insert("coco-ap75".to_owned(), metrics.coco.ap75);
    all.insert("arcgis-ap10".to_owned(), metrics.arcgis_ap10);
    all.insert("precision".to_owned(), metrics.precision);
    all.insert("recall".to_owned(), metrics.recall);
    all.insert("f1".to_owned(), metrics.f1);
    Ok(TrialResult {
        status: fitted.status,
        metric_name,
        metric: Some(metric),
        metrics: all,
        epochs: fitted.epochs,
        best_epoch: Some(best_epoch),
        batch_size: fitted.batch_size as u32,
        learning_rate: fitted.learning_rate,
        train_secs: start.elapsed().as_secs_f64(),
        model_dir: Some(spec.out_dir.clone()),
    })
}

fn write_reports(
    dir: &Path,
    metrics: &DetMetrics,
    epochs: &[EpochRecord],
    classes: &[ClassInfo],
) -> Result<(), PluginError> {
    let io = |path: PathBuf| move |source| PluginError::Io { path, source };
    let summary = serde_json::json!({
        "ap50": metrics.ap50,
        "coco-ap": metrics.coco.ap,
        "coco-ap50": metrics.coco.ap50,
        "coco-ap75": metrics.coco.ap75,
        "arcgis-ap10": metrics.arcgis_ap10,
        "precision": metrics.precision,
        "recall": metrics.recall,
        "f1": metrics.f1,
        "score-threshold": metrics.score_threshold,
    });
    let json = serde_json::json!({ "metrics": summary, "detail": metrics, "classes": classes, "epochs": epochs });
    let path = dir.join("metrics.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&json).unwrap_or_default(),
    )
    .map_err(io(path.clone()))?;
    let mut csv = String::from("epoch,train_loss,val_loss,ap50,elapsed_secs\n");
    for e in epochs {
        csv.push_str(&format!(
            "{},{},{},{},{}\n",
            e.epoch, e.train_loss, e.val_loss, e.metric, e.elapsed_secs
        ));
    }
    let path = dir.join("epochs.csv");
    std::fs::write(&path, csv).map_err(io(path.clone()))
}

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

/// Runs a trained detector on images through the validation's inference path. Writes
/// `<stem>.xml` (PASCAL VOC, each object with its `<score>`) and `previews/<stem>.png` (boxes
/// drawn) per image (stems from [`autodl_api::files::output_stems`]), and `detections.json` (COCO: images, categories, and annotations with
/// scores) for all of them. Keeps boxes scoring at least `score_threshold`, or the model's
/// `score-threshold` (the validation F1 optimum), after NMS at its `nms-iou` (the validation
/// AP optimum). Returns the label files written.
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
    use autodl_detection_metrics::{CocoCategory, CocoImage, CocoPrediction, CocoPredictions};
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
    let scale = number_param(&meta.params, "anchor-scale", 4.0) as f32;
    let threshold =
        score_threshold.unwrap_or_else(|| number_param(&meta.params, "score-threshold", 0.3));
    let nms_iou = number_param(&meta.params, "nms-iou", 0.5) as f32;
    let anchors = opts.anchor_config(scale);
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
            View::raw(&raw, &meta.mean, &meta.std),
            meta.tile_size as usize,
            opts,
            &anchors,
            device,
            |o, _| found.extend(infer::window_boxes(o, opts, nms_iou)),
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
        autodl_augment::preview_grid(&[(preview_sample(&raw, &dets), names.clone())], 1)
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
