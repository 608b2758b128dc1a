//! `autodl bench train`: training-step throughput of the backbones and of U-Net on any compiled
//! backend, with the protocol of `../shared/bench/pytorch_train_step.py` so the two can run side
//! by side (`cargo xtask bench train` does).
//!
//! - Backbones (ResNet-18/34/50, MobileNetV2, EfficientNet-Lite0, Darknet-53): forward to the
//!   four feature maps, loss = sum over them of `mean(f^2)`, backward, Adam at 1e-4; batch 8,
//!   224x224.
//! - `unet-resnet18`: U-Net on ResNet-18, 7 classes, cross-entropy, AdamW; batch 8, 256x256.
//!
//! One warm-up step is excluded; the device is synchronised inside every timed step. Prints
//! one line per net, `model=NAME img_per_s=X cores=C` (C: CPU time over wall time).

use std::time::Instant;

use anyhow::{Context, bail};
use autodl_backbones::{Backbone, BackboneConfig, NAMES};
use autodl_backend::BackendChoice;
use autodl_backend::burn::optim::{GradientsParams, Optimizer};
use autodl_backend::burn::tensor::backend::{AutodiffBackend, Backend};
use autodl_backend::burn::tensor::{Distribution, Int, Tensor, TensorData};
use autodl_backend::optim::Adam;
use autodl_train::seg::SegNet;
use autodl_unet::Unet;

use crate::Failure;

/// The U-Net net's name (the backbones go by their own).
const UNET: &str = "unet-resnet18";

/// Arguments of `autodl bench train`.
#[derive(clap::Args, Debug)]
pub struct BenchTrainArgs {
    /// Nets to time (default: every backbone, then unet-resnet18).
    names: Vec<String>,
    /// The backend: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    backend: String,
    /// Timed steps per net (after one warm-up step).
    #[arg(long, default_value_t = 3)]
    steps: usize,
    /// Batch 2 at 64x64 with one timed step: checks that it runs, measures nothing.
    #[arg(long)]
    quick: bool,
}

/// Batch, image side and timed steps of one measurement.
#[derive(Debug, Clone, Copy)]
struct Shape {
    batch: usize,
    size: usize,
    steps: usize,
}

/// `autodl bench train`.
pub fn bench_train(args: &BenchTrainArgs) -> Result<(), Failure> {
    let backend = BackendChoice::resolve(&args.backend).map_err(Failure::usage)?;
    let names: Vec<String> = if args.names.is_empty() {
        NAMES
            .iter()
            .map(|n| n.to_string())
            .chain([UNET.into()])
            .collect()
    } else {
        args.names.clone()
    };
    if let Some(bad) = names
        .iter()
        .find(|n| *n != UNET && !NAMES.contains(&n.as_str()))
    {
        return Err(Failure::usage(anyhow::anyhow!(
            "unknown net `{bad}`: expected {} or {UNET}",
            NAMES.join(", ")
        )));
    }
    if args.steps == 0 {
        return Err(Failure::usage(anyhow::anyhow!(
            "--steps must be at least 1"
        )));
    }
    eprintln!(
        "training step (forward, backward, optimiser), {} timed step(s) after one warm-up, {backend}",
        if args.quick { 1 } else { args.steps }
    );
    for name in &names {
        let default_size = if name == UNET { 256 } else { 224 };
        let shape = if args.quick {
            Shape {
                batch: 2,
                size: 64,
                steps: 1,
            }
        } else {
            Shape {
                batch: 8,
                size: default_size,
                steps: args.steps,
            }
        };
        let (rate, cores) = autodl_backend::with_backend!(backend, |B, device| {
            if name == UNET {
                unet_steps::<B>(shape, &device)
            } else {
                backbone_steps::<B>(name, shape, &device)
            }
        })
        .map_err(Failure::usage)?
        .with_context(|| format!("benchmark of {name}"))?;
        outln!(
            "model={name} batch={} size={} img_per_s={rate:.2} cores={cores:.2}",
            shape.batch,
            shape.size
        );
    }
    Ok(())
}

/// Times `step` (warm-up first): images per second and the cores kept busy.
fn time_steps<M>(
    shape: Shape,
    mut model: M,
    mut step: impl FnMut(M) -> anyhow::Result<M>,
) -> anyhow::Result<(f64, f64)> {
    model = step(model)?;
    let cpu = autodl_backend::process_cpu_seconds().unwrap_or(0.0);
    let start = Instant::now();
    for _ in 0..shape.steps {
        model = step(model)?;
    }
    let wall = start.elapsed().as_secs_f64();
    if wall <= 0.0 {
        bail!("no time elapsed");
    }
    let cores = (autodl_backend::process_cpu_seconds().unwrap_or(0.0) - cpu) / wall;
    Ok(((shape.batch * shape.steps) as f64 / wall, cores))
}

fn sync<B: Backend>(device: &B::Device) -> anyhow::Result<()> {
    B::sync(device).map_err(|e| anyhow::anyhow!("device synchronisation failed: {e:?}"))
}

/// A backbone's training step: features, `sum(mean(f^2))`, backward, Adam.
fn backbone_steps<B: AutodiffBackend>(
    name: &str,
    shape: Shape,
    device: &B::Device,
) -> anyhow::Result<(f64, f64)> {
    let model: Backbone<B> = BackboneConfig::new(name, 3).init(device)?;
    let mut optim = Adam::new().init::<B, Backbone<B>>();
    let x = Tensor::<B, 4>::random(
        [shape.batch, 3, shape.size, shape.size],
        Distribution::Normal(0.0, 1.0),
        device,
    );
    time_steps(shape, model, |model| {
        let [a, b, c, d] = model.features(x.clone()).map(|f| f.powf_scalar(2.0).mean());
        let grads = GradientsParams::from_grads((a + b + c + d).backward(), &model);
        let model = optim.step(1e-4, model, grads);
        sync::<B>(device)?;
        Ok(model)
    })
}

/// U-Net on ResNet-18's training step: 7-class cross-entropy, backward, AdamW.
fn unet_steps<B: AutodiffBackend>(shape: Shape, device: &B::Device) -> anyhow::Result<(f64, f64)> {
    let classes = 7;
    let (n, size) = (shape.batch, shape.size);
    let backbone = autodl_nets::backboned::backbone::<B>("resnet18", 3, false, device)?;
    let model = Unet::new(backbone, classes, device);
    let mut optim = Adam::adamw(1e-4).init::<B, Unet<B>>();
    let x = Tensor::<B, 4>::random([n, 3, size, size], Distribution::Normal(0.0, 1.0), device);
    let y: Vec<i64> = (0..n * size * size).map(|i| (i % classes) as i64).collect();
    let y = Tensor::<B, 3, Int>::from_data(TensorData::new(y, [n, size, size]), device);
    time_steps(shape, model, |model| {
        let loss = autodl_train::masked_cross_entropy(model.forward(x.clone()), y.clone());
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let model = optim.step(1e-3, model, grads);
        sync::<B>(device)?;
        Ok(model)
    })
}

/// The suites of `autodl bench families`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suite {
    /// Tiny sizes and few iterations: checks that every measurement runs (CI runs it).
    Smoke,
    /// The sizes whose figures mean something.
    Full,
}

impl Suite {
    fn name(self) -> &'static str {
        match self {
            Suite::Smoke => "smoke",
            Suite::Full => "full",
        }
    }
}

/// Arguments of `autodl bench families`.
#[derive(clap::Args, Debug)]
pub struct BenchFamiliesArgs {
    /// Families to measure (default: every registered one).
    names: Vec<String>,
    /// Backends, comma-separated: cpu, cuda, cuda:N. One not compiled in, or without a
    /// device, is reported as skipped.
    #[arg(long, default_value = "cpu", value_delimiter = ',')]
    backend: Vec<String>,
    /// `smoke`: tiny sizes, few iterations; `full`: figures that mean something.
    #[arg(long, value_enum, default_value_t = Suite::Full)]
    suite: Suite,
    /// Also write the report here as JSON.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// A PASCAL VOC folder whose tiles the augmentation benchmark augments (default: generated
    /// 256-pixel tiles).
    #[arg(long)]
    voc: Option<std::path::PathBuf>,
    /// Measure the families only, not augmentation and evaluation.
    #[arg(long)]
    families_only: bool,
}

/// `autodl bench families`: every family's training and inference throughput on each
/// backend (through `NetworkFamily`, as `autodl-conformance` measures it), augmentation and
/// evaluation speed; a table on stdout, and the JSON report.
pub fn bench_families(args: &BenchFamiliesArgs) -> Result<(), Failure> {
    use autodl_conformance::bench::{BackendBench, BackendStatus, BenchReport, BenchSizes};

    let families = if args.names.is_empty() {
        autodl_api::networks()
    } else {
        args.names
            .iter()
            .map(|n| {
                autodl_api::network(n).ok_or_else(|| {
                    Failure::usage(anyhow::anyhow!(
                        "unknown network `{n}`: registered are {}",
                        autodl_api::networks()
                            .iter()
                            .map(|f| f.name())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?
    };
    let sizes = match args.suite {
        Suite::Smoke => BenchSizes::SMOKE,
        Suite::Full => BenchSizes::FULL,
    };
    let mut backends = Vec::new();
    for name in &args.backend {
        let status = match BackendChoice::resolve(name) {
            Ok(_) => BackendStatus::Ran,
            Err(e @ autodl_backend::BackendError::Unknown(_)) => return Err(Failure::usage(e)),
            Err(e @ autodl_backend::BackendError::NotCompiled { .. }) => {
                BackendStatus::NotCompiled {
                    reason: e.to_string(),
                    device_present: name.starts_with("cuda")
                        && autodl_backend::cuda_device_count().is_ok_and(|n| n > 0),
                }
            }
            Err(e @ autodl_backend::BackendError::Unavailable { .. }) => BackendStatus::NoDevice {
                reason: e.to_string(),
            },
        };
        let mut bench = BackendBench {
            backend: name.clone(),
            status,
            families: Vec::new(),
        };
        if bench.status == BackendStatus::Ran {
            for family in &families {
                eprintln!("bench: {} on {name}", family.name());
                let work = tempfile::tempdir().context("cannot make a temporary folder")?;
                bench.families.push(autodl_conformance::bench::measure(
                    *family,
                    name,
                    &sizes,
                    work.path(),
                )?);
            }
        }
        backends.push(bench);
    }
    let (augmentation, evaluation) = if args.families_only {
        (None, None)
    } else {
        eprintln!("bench: augmentation and evaluation");
        (
            Some(augment_throughput(args.suite, args.voc.as_deref())?),
            Some(coco_speed()),
        )
    };
    let report = BenchReport {
        suite: args.suite.name().to_owned(),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        backends,
        augmentation,
        evaluation,
        baselines: Vec::new(),
    };
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report)?;
        autodl_api::files::write_atomic(path, text.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    outln!("{report}");
    Ok(())
}

/// Images per second of the registered `standard` augmentation pipeline's default detection
/// preset, on one thread, over the tiles of `voc` (decoded and normalised beforehand) or
/// generated ones.
fn augment_throughput(
    suite: Suite,
    voc: Option<&std::path::Path>,
) -> Result<autodl_conformance::bench::AugmentBench, Failure> {
    use autodl_api::{AugSample, AugmentSpec, Task};

    let pipeline = autodl_api::augment_pipeline(autodl_api::DEFAULT_AUGMENT_PIPELINE)
        .context("the standard augmentation pipeline is not registered")?
        .build(&AugmentSpec::preset("default"), Task::Detection)
        .map_err(|e| anyhow::anyhow!("building the default detection preset: {e}"))?;
    let (samples, source) = match voc {
        Some(root) => {
            let ds = autodl_data::open(root, &autodl_data::ReadOptions::default())
                .with_context(|| format!("cannot read {}", root.display()))?;
            let mut samples = Vec::new();
            for (_, s) in ds.samples() {
                let img = autodl_data::load_image(&s.image)
                    .with_context(|| format!("cannot read {}", s.image.display()))?;
                let (w, h) = (img.width as f32, img.height as f32);
                // Each band to mean 0 and standard deviation 1, as training feeds them.
                let plane = (img.width * img.height) as usize;
                let mut image = img.data;
                for band in image.chunks_exact_mut(plane.max(1)) {
                    let n = band.len() as f32;
                    let mean = band.iter().sum::<f32>() / n;
                    let sd = (band.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / n)
                        .sqrt()
                        .max(1e-6);
                    band.iter_mut().for_each(|v| *v = (*v - mean) / sd);
                }
                samples.push(AugSample {
                    width: img.width,
                    height: img.height,
                    bands: img.bands,
                    image,
                    mask: None,
                    boxes: s
                        .boxes
                        .iter()
                        .map(|b| {
                            (
                                [
                                    b.xmin.max(0.0),
                                    b.ymin.max(0.0),
                                    (b.xmax + 1.0).min(w),
                                    (b.ymax + 1.0).min(h),
                                ],
                                b.class,
                            )
                        })
                        .collect(),
                });
            }
            (samples, format!("{} tiles", root.display()))
        }
        None => {
            let side = 256u32;
            let samples = (0..16u32)
                .map(|i| AugSample {
                    width: side,
                    height: side,
                    bands: 3,
                    image: (0..3 * side * side)
                        .map(|k| ((k * 7 + i * 13) % 255) as f32 / 255.0)
                        .collect(),
                    mask: None,
                    boxes: vec![
                        ([10.0 + i as f32, 20.0, 90.0, 100.0 + i as f32], 0),
                        ([120.0, 130.0 + i as f32, 200.0, 220.0], 1),
                    ],
                })
                .collect();
            (samples, format!("16 generated {side}x{side} tiles"))
        }
    };
    if samples.is_empty() {
        return Err(Failure::usage(anyhow::anyhow!("{source}: no samples")));
    }
    let seconds = match suite {
        Suite::Smoke => 0.5,
        Suite::Full => 5.0,
    };
    let start = Instant::now();
    let mut images = 0usize;
    let mut epoch = 0u64;
    while start.elapsed().as_secs_f64() < seconds {
        for (i, s) in samples.iter().enumerate() {
            let mut sample = s.clone();
            pipeline.apply(&mut sample, autodl_api::sample_seed(0, epoch, i as u64));
            images += 1;
        }
        epoch += 1;
    }
    Ok(autodl_conformance::bench::AugmentBench {
        what: format!("standard pipeline, default detection preset, one thread, {source}"),
        images,
        images_per_sec: images as f64 / start.elapsed().as_secs_f64(),
    })
}

/// COCO evaluation of the pycocotools baseline's workload (`../shared/bench/pycocotools_eval.py`:
/// 200 images of 10 boxes of 5 to 40 pixels and 3 classes, 5 detections jittered by 3 pixels
/// around each), from a seeded generator of our own: best of 3 runs.
fn coco_speed() -> autodl_conformance::bench::EvalBench {
    use autodl_detection_metrics::{Detection, GtBox, coco_eval};

    let mut state = 0u64;
    let mut unit = move || {
        // SplitMix64.
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    };
    let (mut gts, mut dets) = (Vec::new(), Vec::new());
    for image_id in 1..=200u64 {
        for _ in 0..10 {
            let (x, y) = (600.0 * unit(), 600.0 * unit());
            let (w, h) = (5.0 + 35.0 * unit(), 5.0 + 35.0 * unit());
            let category = 1 + (3.0 * unit()) as u32 % 3;
            gts.push(GtBox {
                image_id,
                category,
                bbox: [x, y, w, h],
                area: Some(w * h),
                iscrowd: false,
                difficult: false,
            });
            for _ in 0..5 {
                // Box-Muller.
                let (u, v) = (1.0 - unit(), unit());
                let r = (-2.0 * u.ln()).sqrt();
                let (dx, dy) = (
                    3.0 * r * (std::f64::consts::TAU * v).cos(),
                    3.0 * r * (std::f64::consts::TAU * v).sin(),
                );
                dets.push(Detection {
                    image_id,
                    category,
                    bbox: [x + dx, y + dy, w, h],
                    score: unit(),
                });
            }
        }
    }
    let images: Vec<u64> = (1..=200).collect();
    let mut best = f64::INFINITY;
    let mut ap = 0.0;
    for _ in 0..3 {
        let start = Instant::now();
        let summary = coco_eval(&images, &[1, 2, 3], &gts, &dets);
        best = best.min(start.elapsed().as_secs_f64());
        ap = summary.as_array()[0];
    }
    autodl_conformance::bench::EvalBench {
        detections: dets.len(),
        truths: gts.len(),
        seconds: best,
        ap,
    }
}
