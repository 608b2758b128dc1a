//! Training-step throughput of every backbone on the CPU backend: forward to the four feature
//! maps, backward and an Adam step, on a batch of 8 random 3-band 224x224 images. One warm-up
//! step is excluded; the device is synchronised inside the timed region.
//!
//! ```text
//! cargo run -p autodl-backbones --example bench_backbones [-- [--quick] [NAME ...]]
//! ```
//!
//! `--quick` runs batch 2 at 64x64 with one timed step, to check that it works. Prints one line
//! per backbone: `backbone=<name> img_per_s=<x>`.

use std::process::ExitCode;
use std::time::Instant;

use autodl_backbones::{Backbone, BackboneConfig, NAMES};
use burn::backend::{Autodiff, Flex};
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};

type B = Autodiff<Flex>;

struct Settings {
    batch: usize,
    size: usize,
    steps: usize,
    names: Vec<String>,
}

fn parse() -> Result<Settings, String> {
    let mut s = Settings {
        batch: 8,
        size: 224,
        steps: 3,
        names: Vec::new(),
    };
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--quick" => (s.batch, s.size, s.steps) = (2, 64, 1),
            name if NAMES.contains(&name) => s.names.push(name.to_owned()),
            other => {
                return Err(format!(
                    "unknown argument `{other}`: expected --quick or one of {}",
                    NAMES.join(", ")
                ));
            }
        }
    }
    if s.names.is_empty() {
        s.names = NAMES.iter().map(|n| n.to_string()).collect();
    }
    Ok(s)
}

fn loss(model: &Backbone<B>, x: Tensor<B, 4>) -> Tensor<B, 1> {
    let [a, b, c, d] = model.features(x).map(|f| f.powf_scalar(2.0).mean());
    a + b + c + d
}

/// Images per second and the cores kept busy (CPU time over wall time) in the timed steps.
fn bench(name: &str, s: &Settings) -> Result<(f64, f64), String> {
    let device = burn::backend::flex::FlexDevice;
    let mut model: Backbone<B> = BackboneConfig::new(name, 3)
        .init(&device)
        .map_err(|e| e.to_string())?;
    let mut optim = AdamConfig::new().init::<B, Backbone<B>>();
    let x = Tensor::<B, 4>::random(
        [s.batch, 3, s.size, s.size],
        Distribution::Normal(0.0, 1.0),
        &device,
    );
    let mut elapsed = 0.0;
    let mut cpu = 0.0;
    for step in 0..=s.steps {
        let cpu_start = autodl_backend::process_cpu_seconds().unwrap_or(0.0);
        let start = Instant::now();
        let grads = GradientsParams::from_grads(loss(&model, x.clone()).backward(), &model);
        model = optim.step(1e-4, model, grads);
        B::sync(&device).map_err(|e| format!("{e:?}"))?;
        if step > 0 {
            elapsed += start.elapsed().as_secs_f64();
            cpu += autodl_backend::process_cpu_seconds().unwrap_or(0.0) - cpu_start;
        }
    }
    Ok(((s.batch * s.steps) as f64 / elapsed, cpu / elapsed))
}

fn main() -> ExitCode {
    autodl_backend::tune_allocator();
    let settings = match parse() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    eprintln!(
        "training step (forward, backward, Adam), batch {}, {}x{}, {} timed step(s), CPU",
        settings.batch, settings.size, settings.size, settings.steps
    );
    for name in &settings.names {
        match bench(name, &settings) {
            Ok((rate, cores)) => println!("backbone={name} img_per_s={rate:.2} cores={cores:.2}"),
            Err(e) => {
                eprintln!("error: {name}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
