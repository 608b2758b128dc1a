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
