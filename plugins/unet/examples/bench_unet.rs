//! Training-step throughput of U-Net on ResNet-18: forward, backward and an AdamW step on a
//! batch of 8 random 3-band 256x256 tiles, on the CPU backend. One warm-up step is excluded.
//!
//! ```text
//! cargo run -p autodl-unet --example bench_unet [-- --steps N]
//! ```

use std::time::Instant;

use autodl_train::seg::SegNet;
use autodl_unet::Unet;
use burn::backend::{Autodiff, Flex};
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::{Int, Tensor, TensorData};

type B = Autodiff<Flex>;

fn main() {
    autodl_backend::tune_allocator();
    let steps: usize = std::env::args()
        .skip_while(|a| a != "--steps")
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let device = Default::default();
    let (n, size, classes) = (8, 256, 7);
    let backbone = match autodl_train::backboned::backbone::<B>("resnet18", 3, false, &device) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    let mut model = Unet::new(backbone, classes, &device);
    let mut optim = AdamWConfig::new().init::<B, Unet<B>>();
    let x = Tensor::<B, 4>::random(
        [n, 3, size, size],
        burn::tensor::Distribution::Normal(0.0, 1.0),
        &device,
    );
    let y: Vec<i64> = (0..n * size * size).map(|i| (i % classes) as i64).collect();
    let y = Tensor::<B, 3, Int>::from_data(TensorData::new(y, [n, size, size]), &device);
    let mut step = |model: Unet<B>| {
        let loss = autodl_train::masked_cross_entropy(model.forward(x.clone()), y.clone());
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let model = optim.step(1e-3, model, grads);
        // Synchronise inside the timed region (a no-op on the CPU, needed on a GPU).
        let _ = <B as burn::tensor::backend::Backend>::sync(&device);
        model
    };
    model = step(model);
    let t = Instant::now();
    let cpu = autodl_backend::process_cpu_seconds().unwrap_or(0.0);
    for _ in 0..steps {
        model = step(model);
    }
    let wall = t.elapsed().as_secs_f64();
    let cores = (autodl_backend::process_cpu_seconds().unwrap_or(0.0) - cpu) / wall;
    let rate = (n * steps) as f64 / wall;
    println!("model=unet-resnet18 batch={n} size={size} img_per_s={rate:.2} cores={cores:.2}");
}
