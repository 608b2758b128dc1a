//! Pixel-classification training, generic over the backend and the network: the data, the
//! task the fit loop drives, evaluation through the inference path (scored by the trial's
//! registered evaluator), and the report files. The network API is in `net`, which the
//! inference path imports without the rest.

mod net;

pub use net::SegNet;

use std::collections::{BTreeMap, HashMap};

use autodl_api::{
    AugSample, DataSpec, EvalItem, EvalOptions, Evaluation, Evaluator, ParamsExt, PluginError,
    Progress, TrialResult, TrialSpec,
};
use autodl_data::ClassInfo;
use burn::module::AutodiffModule;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use rayon::prelude::*;

use crate::IGNORE;
use crate::data::{band_stats, data_err, read_options};
use crate::fit::{self, FitOptions, Fitted, Task};
use crate::infer::{self, View, normalise};
use crate::model_dir::ModelMeta;
use crate::outputs::write_epochs;
use crate::sample::{crop, images_tensor, tile_origin};
use crate::trial;
use crate::{LossOptions, seg_loss};
use autodl_api::sample_seed;

/// What a family tells the loop about its network.
#[derive(Debug, Clone)]
pub struct FamilyOptions {
    /// Tile side when the spec gives none and the images are larger.
    pub default_tile: u32,
    /// Family-specific parameters recorded in `model.json`.
    pub params: autodl_api::Params,
    /// Learning rate when the budget is too small for the finder.
    pub default_lr: f64,
}

/// One image and its target, normalised and ready to batch.
#[derive(Debug, Clone)]
pub struct Item {
    /// Width.
    pub width: usize,
    /// Height.
    pub height: usize,
    /// Normalised band-major pixels.
    pub image: Vec<f32>,
    /// Class index per pixel, or [`IGNORE`].
    pub target: Vec<u32>,
}

/// A pixel-classification dataset in memory.
#[derive(Debug, Clone)]
pub struct SegData {
    /// Bands per image.
    pub bands: usize,
    /// Classes in logit order.
    pub classes: Vec<ClassInfo>,
    /// Mask value that is ignored.
    pub ignore_index: Option<u32>,
    /// Per-band means of the training split.
    pub mean: Vec<f32>,
    /// Per-band standard deviations of the training split.
    pub std: Vec<f32>,
    /// Training items.
    pub train: Vec<Item>,
    /// Validation items.
    pub val: Vec<Item>,
}

/// Reads the dataset, maps mask values to class indices and normalises every band with the
/// training split's statistics.
pub fn load_data(spec: &DataSpec, seed: u64) -> Result<SegData, PluginError> {
    let ds = autodl_data::open(&spec.root, &read_options(spec, seed)?).map_err(data_err)?;
    if ds.task != autodl_data::Task::PixelClassification {
        return Err(PluginError::Data(format!(
            "{} holds {} data, not classified tiles",
            spec.root.display(),
            ds.format
        )));
    }
    let index: HashMap<u32, u32> = ds
        .classes
        .iter()
        .enumerate()
        .map(|(i, c)| (c.value, i as u32))
        .collect();
    let load = |samples: &[autodl_data::Sample]| -> Result<Vec<(autodl_data::Image, Vec<u32>)>, PluginError> {
        samples
            .par_iter()
            .map(|s| {
                let image = ds.load_image(s).map_err(data_err)?;
                let label = s.label.as_ref().ok_or_else(|| {
                    PluginError::Data(format!("{}: no label", s.image.display()))
                })?;
                let mask = autodl_data::load_mask(label).map_err(data_err)?;
                let target = mask
                    .data
                    .iter()
                    .map(|v| index.get(v).copied().unwrap_or(IGNORE))
                    .collect();
                Ok((image, target))
            })
            .collect()
    };
    let train = load(&ds.train)?;
    let val = load(&ds.val)?;
    let bands = train.first().map_or(0, |(img, _)| img.bands as usize);
    if let Some(((img, _), s)) = train
        .iter()
        .chain(&val)
        .zip(ds.train.iter().chain(&ds.val))
        .find(|((img, _), _)| img.bands as usize != bands)
    {
        return Err(PluginError::Data(format!(
            "{}: {} bands, other images have {bands}",
            s.image.display(),
            img.bands
        )));
    }
    let (mean, std) = band_stats(train.iter().map(|(img, _)| img), bands);
    let to_items = |v: Vec<(autodl_data::Image, Vec<u32>)>| -> Vec<Item> {
        v.into_iter()
            .map(|(img, target)| {
                let image = normalise(img.data, (img.width * img.height) as usize, &mean, &std);
                Item {
                    width: img.width as usize,
                    height: img.height as usize,
                    image,
                    target,
                }
            })
            .collect()
    };
    Ok(SegData {
        bands,
        classes: ds.classes.clone(),
        ignore_index: ds.ignore_index,
        mean: mean.clone(),
        std: std.clone(),
        train: to_items(train),
        val: to_items(val),
    })
}

/// Cuts a `tile`-sided training sample from `item` at a seeded random place, pads with ignored
/// pixels when the image is smaller, and applies the augmentations.
fn make_sample(
    item: &Item,
    bands: usize,
    tile: usize,
    seed: u64,
    augment: &dyn autodl_api::SampleAugmenter,
) -> AugSample {
    let (x0, y0) = tile_origin(seed, item.width, item.height, tile);
    let region = (x0, y0, tile, tile);
    let (w, h) = (item.width, item.height);
    let mut sample = AugSample {
        width: tile as u32,
        height: tile as u32,
        bands: bands as u32,
        image: crop(&item.image, w, h, bands, region, (tile, tile), 0.0),
        mask: Some(crop(&item.target, w, h, 1, region, (tile, tile), IGNORE)),
        boxes: Vec::new(),
    };
    augment.apply(&mut sample, sample_seed(seed, 1, 0));
    sample
}

/// Stacks samples into an image tensor and a target tensor (ignored pixels as -1).
fn to_tensors<B: Backend>(
    samples: &[AugSample],
    device: &B::Device,
) -> (Tensor<B, 4>, Tensor<B, 3, Int>) {
    let (h, w) = samples
        .first()
        .map_or((0, 0), |s| (s.height as usize, s.width as usize));
    let mut targets = Vec::with_capacity(samples.len() * h * w);
    for s in samples {
        if let Some(mask) = &s.mask {
            targets.extend(
                mask.iter()
                    .map(|&v| if v == IGNORE { -1i64 } else { v as i64 }),
            );
        }
    }
    (
        images_tensor(samples, device),
        Tensor::from_data(TensorData::new(targets, [samples.len(), h, w]), device),
    )
}

/// Validation loss of `model` over `items`, each item's predicted classes added to
/// `evaluation`, through the inference path `autodl predict` takes ([`infer::segment`]): the
/// loss is the mean negative log of the delivered (window-averaged) probability of each
/// pixel's true class.
pub fn evaluate<B: Backend, M: SegNet<B>>(
    model: &M,
    items: &[Item],
    bands: usize,
    classes: usize,
    tile: usize,
    device: &B::Device,
    evaluation: &mut dyn Evaluation,
) -> Result<f64, PluginError> {
    let (mut loss_sum, mut loss_n) = (0.0f64, 0usize);
    for item in items {
        let view = View::normalised(item.width, item.height, bands, &item.image);
        let probs = infer::segment(model, view, classes, tile, device)?;
        let pred = infer::classes_of(&probs, classes);
        let plane = item.width * item.height;
        for (i, &t) in item.target.iter().enumerate() {
            if (t as usize) < classes {
                loss_sum -= f64::from(probs[t as usize * plane + i].max(1e-12)).ln();
                loss_n += 1;
            }
        }
        evaluation.add(EvalItem::Pixels {
            predicted: &pred,
            truth: &item.target,
        })?;
    }
    Ok(loss_sum / loss_n.max(1) as f64)
}

/// The pixel-classification task the fit loop drives.
struct SegTask<'a, B: Backend> {
    spec: &'a TrialSpec,
    family: &'a FamilyOptions,
    data: &'a SegData,
    tile: usize,
    augment: std::sync::Arc<dyn autodl_api::SampleAugmenter>,
    loss: LossOptions,
    class_weights: Option<Tensor<B, 1>>,
    /// Scores validation.
    evaluator: &'static dyn Evaluator,
    /// The ranking metric, one the evaluator reports.
    metric_name: String,
}

impl<B, M> Task<B, M> for SegTask<'_, B>
where
    B: AutodiffBackend,
    M: SegNet<B> + AutodiffModule<B>,
    M::InnerModule: SegNet<B::InnerBackend>,
{
    /// Images, targets (ignored pixels as -1) and, when the dice term is on, one-hot targets.
    type Batch = (Tensor<B, 4>, Tensor<B, 3, Int>, Option<Tensor<B, 4>>);
    /// The evaluation of the epoch, finished for the kept one.
    type Payload = Box<dyn Evaluation>;

    fn train_len(&self) -> usize {
        self.data.train.len()
    }

    fn metric_name(&self) -> &str {
        &self.metric_name
    }

    fn batch(&self, indices: &[usize], epoch: u64, device: &B::Device) -> Self::Batch {
        let samples: Vec<AugSample> = indices
            .par_iter()
            .map(|&i| {
                make_sample(
                    &self.data.train[i],
                    self.data.bands,
                    self.tile,
                    sample_seed(self.spec.seed, epoch, i as u64),
                    self.augment.as_ref(),
                )
            })
            .collect();
        let classes = self.data.classes.len();
        let one_hot =
            (self.loss.dice_fraction > 0.0).then(|| one_hot::<B>(&samples, classes, device));
        let (x, y) = to_tensors(&samples, device);
        (x, y, one_hot)
    }

    fn loss(&self, model: &M, (x, y, one_hot): Self::Batch, _: &B::Device) -> Tensor<B, 1> {
        seg_loss(
            model.forward(x),
            y,
            self.class_weights.clone(),
            one_hot,
            &self.loss,
        )
    }

    fn evaluate(
        &self,
        model: &M::InnerModule,
        device: &B::Device,
    ) -> Result<fit::Evaluation<Self::Payload>, PluginError> {
        let (bands, classes) = (self.data.bands, self.data.classes.len());
        let mut evaluation = self
            .evaluator
            .start(&self.data.classes, &EvalOptions::default());
        let loss = evaluate(
            model,
            &self.data.val,
            bands,
            classes,
            self.tile,
            device,
            evaluation.as_mut(),
        )?;
        let metric = evaluation.score(&self.metric_name).unwrap_or(0.0);
        Ok(fit::Evaluation {
            loss,
            metric,
            payload: evaluation,
        })
    }

    fn finish(
        &self,
        fitted: &Fitted<()>,
        evaluation: Self::Payload,
    ) -> Result<BTreeMap<String, f64>, PluginError> {
        let (spec, data) = (self.spec, self.data);
        let meta = ModelMeta {
            family: spec.family.clone(),
            backbone: spec.backbone.clone(),
            task: autodl_api::Task::PixelClassification,
            bands: data.bands,
            classes: data.classes.clone(),
            ignore_index: data.ignore_index,
            mean: data.mean.clone(),
            std: data.std.clone(),
            tile_size: self.tile as u32,
            params: self.family.params.clone(),
            extract_bands: spec.data.bands.clone(),
        };
        meta.save(&spec.out_dir)?;
        let mut metrics = evaluation.finish();
        metrics.set_epochs(fitted.epochs.clone());
        metrics.save(&spec.out_dir)?;
        // The column keeps its historical name whichever metric ranks.
        write_epochs(&spec.out_dir, "miou", &fitted.epochs)?;
        Ok(metrics.scores())
    }
}

/// `[N, C, H, W]` one-hot targets; ignored pixels are all zero.
fn one_hot<B: Backend>(samples: &[AugSample], classes: usize, device: &B::Device) -> Tensor<B, 4> {
    let (h, w) = samples
        .first()
        .map_or((0, 0), |s| (s.height as usize, s.width as usize));
    let mut data = vec![0f32; samples.len() * classes * h * w];
    for (i, s) in samples.iter().enumerate() {
        for (p, &v) in s.mask.as_deref().unwrap_or(&[]).iter().enumerate() {
            if (v as usize) < classes {
                data[(i * classes + v as usize) * h * w + p] = 1.0;
            }
        }
    }
    Tensor::from_data(
        TensorData::new(data, [samples.len(), classes, h, w]),
        device,
    )
}

/// Trains a pixel-classification network as `spec` says and writes its model folder.
///
/// Parameters read from `spec.params`, as [`crate::options::pixel_params`] declares them:
/// `class-balance`, `dice-fraction`, `focal-gamma`; the loop's own options from
/// `spec.training` (optimiser, schedule, weight decay, and the ranking metric: one the trial's
/// evaluator reports, `miou`, `accuracy` or `dice` for the pixel evaluator).
pub fn train<B, M, F>(
    spec: &TrialSpec,
    progress: &dyn Progress,
    family: &FamilyOptions,
    device: &B::Device,
    build: F,
) -> Result<TrialResult, PluginError>
where
    B: AutodiffBackend,
    M: SegNet<B> + AutodiffModule<B>,
    M::InnerModule: SegNet<B::InnerBackend>,
    F: Fn(&B::Device, usize, usize) -> Result<M, PluginError>,
{
    let start = trial::begin::<B>(spec, device)?;
    let data = load_data(&spec.data, spec.seed)?;
    let (bands, classes) = (data.bands, data.classes.len());
    trial::check_splits(data.train.len(), data.val.len())?;
    let m = infer::SIZE_MULTIPLE;
    let smallest = data
        .train
        .iter()
        .map(|it| it.width.min(it.height))
        .min()
        .unwrap_or(0);
    let tile = spec.tile_size.map(|t| t as usize).unwrap_or_else(|| {
        (family.default_tile as usize)
            .min(smallest.div_ceil(m) * m)
            .max(m)
    });
    let tile = tile.div_ceil(m) * m;
    let augment = trial::augmenter(spec, autodl_api::Task::PixelClassification)?;
    let class_weights = match spec
        .params
        .text("class-balance")
        .map_err(crate::options::param_error)?
    {
        "none" => None,
        "balanced" => {
            let mut counts = vec![0u64; classes];
            for it in &data.train {
                for &t in &it.target {
                    if let Some(c) = counts.get_mut(t as usize) {
                        *c += 1;
                    }
                }
            }
            let w = crate::balanced_weights(&counts);
            Some(Tensor::<B, 1>::from_data(
                TensorData::new(w, [classes]),
                device,
            ))
        }
        other => {
            return Err(PluginError::Training(format!(
                "unknown class-balance `{other}`: use none or balanced"
            )));
        }
    };
    let evaluator = trial::evaluator(spec, autodl_api::Task::PixelClassification)?;
    let metric_name = trial::ranking_metric(spec, evaluator)?;
    let loss = LossOptions {
        focal_gamma: spec
            .params
            .number("focal-gamma")
            .map_err(crate::options::param_error)? as f32,
        dice_fraction: spec
            .params
            .number("dice-fraction")
            .map_err(crate::options::param_error)?
            .clamp(0.0, 1.0) as f32,
    };
    let task = SegTask {
        spec,
        family,
        data: &data,
        tile,
        augment,
        loss,
        class_weights,
        evaluator,
        metric_name,
    };
    let opts = FitOptions {
        spec,
        progress,
        default_lr: family.default_lr,
    };
    fit::train(
        &opts,
        start,
        device,
        &|| build(device, bands, classes),
        &task,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixed_band_counts_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for d in ["images", "labels"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(root.join("classes.txt"), "1 a\n2 b\n").unwrap();
        for i in 0..4u8 {
            let path = root.join(format!("images/t{i}.png"));
            if i == 2 {
                image::GrayImage::from_pixel(8, 8, image::Luma([i]))
                    .save(path)
                    .unwrap();
            } else {
                image::RgbImage::from_pixel(8, 8, image::Rgb([i, 1, 2]))
                    .save(path)
                    .unwrap();
            }
            image::GrayImage::from_fn(8, 8, |x, _| image::Luma([1 + (x % 2) as u8]))
                .save(root.join(format!("labels/t{i}.png")))
                .unwrap();
        }
        let spec = DataSpec {
            root: root.to_path_buf(),
            format: None,
            images_dir: None,
            val_fraction: 0.25,
            test_fraction: 0.0,
            ignore_index: None,
            fail_on_bad_sample: false,
            bands: None,
        };
        let Err(err) = load_data(&spec, 1) else {
            panic!("mixed band counts were accepted");
        };
        let err = err.to_string();
        assert!(err.contains("t2.png") && err.contains("1 bands"), "{err}");
    }
}
