//! Training-step throughput of RetinaNet: forward, backward and an AdamW step on a batch of
//! random 3-band tiles on the CPU backend, with the backbone fully trainable, with frozen batch
//! norm, and with frozen batch norm and stem (the detection default). One warm-up step per
//! variant is excluded.
//!
//! ```text
//! cargo run -p autodl-retinanet --example bench_retinanet [-- --steps N --size S --backbone NAME]
//! ```

use std::time::Instant;

use autodl_backend::optim::Adam;
use autodl_retinanet::RetinaNet;
use autodl_train::det::DetNet;
use burn::backend::{Autodiff, Flex};
use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::Tensor;

type B = Autodiff<Flex>;

fn arg(name: &str) -> Option<String> {
    std::env::args().skip_while(|a| a != name).nth(1)
}

fn main() {
    autodl_backend::tune_allocator();
    let steps: usize = arg("--steps").and_then(|s| s.parse().ok()).unwrap_or(2);
    let size: usize = arg("--size").and_then(|s| s.parse().ok()).unwrap_or(384);
    let name = arg("--backbone").unwrap_or_else(|| "efficientnet-lite0".to_owned());
    let device = Default::default();
    let n = 2;
    let opts = autodl_retinanet::options();
    for variant in ["trainable", "frozen-bn", "frozen-bn+stem"] {
        let backbone = match autodl_nets::backboned::backbone::<B>(&name, 3, false, &device) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("error: {e}");
                std::process::exit(1);
            }
        };
        let backbone = match variant {
            "trainable" => backbone,
            "frozen-bn" => backbone.with_frozen_bn(true),
            _ => backbone.with_frozen_bn(true).with_frozen_stem(),
        };
        let mut model = RetinaNet::new(
            backbone,
            1,
            opts.anchors_per_location(),
            &Default::default(),
            &device,
        );
        let mut optim = Adam::adamw(1e-4).init::<B, RetinaNet<B>>();
        let x = Tensor::<B, 4>::random(
            [n, 3, size, size],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &device,
        );
        let mut step = |model: RetinaNet<B>| {
            let out = model.forward(x.clone());
            let loss = out.logits.sum() + out.deltas.abs().sum();
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            let model = optim.step(1e-3, model, grads);
            let _ = <B as burn::tensor::backend::Backend>::sync(&device);
            model
        };
        model = step(model);
        let t = Instant::now();
        for _ in 0..steps {
            model = step(model);
        }
        let rate = (n * steps) as f64 / t.elapsed().as_secs_f64();
        println!(
            "model=retinanet-{name} variant={variant} batch={n} size={size} img_per_s={rate:.2}"
        );
    }
}
