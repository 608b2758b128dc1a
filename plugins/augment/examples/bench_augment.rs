//! Augmentation throughput on the trees_voc tiles and boxes, to compare with
//! `shared/bench/albumentations_detection.py` run beside it.
//!
//! Usage: `cargo run -p autodl-augment --example bench_augment -- [VOC_DIR] [--seconds S]
//! [--preset baseline|default] [--threads N] [--repeat N]` (`--repeat`: passes over the tiles
//! per batch, 4 by default). Images are decoded and normalised once, outside the
//! timing, as the baseline does; each pass copies every decoded sample into a reused buffer (the
//! baseline also gets a fresh output per call) and augments it right away on rayon's threads, as
//! the training loader does. Prints `images_per_sec=<x>`.
//!
//! `baseline` (the default) is the albumentations script's list with its sizes: horizontal and
//! vertical flips and a 90-degree turn (here a dihedral element) at 0.5, a random resized crop to
//! 384x384 of 0.5 to 1 of the area, an affine at 0.5 (scale 0.9..1.1, shift 10 %, rotation
//! 15 degrees), hue/saturation and brightness/contrast at 0.5, noise at 0.3. `default` is this
//! crate's default detection preset.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use autodl_augment::{
    Affine, AugSample, BrightnessContrast, Dihedral, GaussianNoise, HFlip, Pipeline,
    RandomResizedCrop, SaturationHue, Step, VFlip, sample_seed,
};
use rayon::prelude::*;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let mut root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/trees_voc");
    let (mut seconds, mut preset, mut threads, mut repeat) =
        (10.0f64, "baseline".to_owned(), None::<usize>, 4usize);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--seconds" => seconds = value()?.parse().map_err(|e| format!("--seconds: {e}"))?,
            "--preset" => preset = value()?,
            "--threads" => threads = Some(value()?.parse().map_err(|e| format!("--threads: {e}"))?),
            "--repeat" => repeat = value()?.parse().map_err(|e| format!("--repeat: {e}"))?,
            _ => root = PathBuf::from(a),
        }
    }
    if let Some(n) = threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .map_err(|e| e.to_string())?;
    }

    let items = load(&root)?;
    let pipeline = match preset.as_str() {
        "baseline" => Pipeline::from_steps(
            vec![
                (Step::geometric(HFlip), 0.5),
                (Step::geometric(VFlip), 0.5),
                (Step::geometric(Dihedral), 0.5),
                (
                    Step::geometric(RandomResizedCrop {
                        size: Some((384, 384)),
                        scale: (0.5, 1.0),
                        ratio: (0.75, 4.0 / 3.0),
                    }),
                    1.0,
                ),
                (
                    Step::geometric(Affine {
                        scale: 0.1,
                        translate: 0.1,
                        rotate_degrees: 15.0,
                        shear_degrees: 0.0,
                    }),
                    0.5,
                ),
                (Step::other(SaturationHue::DEFAULT), 0.5),
                (Step::other(BrightnessContrast::DEFAULT), 0.5),
                (Step::other(GaussianNoise::DEFAULT), 0.3),
            ],
            1.0,
        ),
        name => {
            Pipeline::preset(name, autodl_api::Task::Detection, 1.0).map_err(|e| e.to_string())?
        }
    };

    // Several passes per batch so that the threads do not wait on one another at every pass.
    // Each sample is copied from the decoded tiles into the batch's reused buffers right before
    // it is augmented, on the same thread, as the training loader cuts a tile and augments it
    // (`make_sample` in autodl-train); the per-sample work and seeds are `augment_batch`'s.
    let template: Vec<AugSample> = (0..repeat.max(1))
        .flat_map(|_| items.iter().cloned())
        .collect();
    let mut batch = template.clone();
    let mut epoch = 0u64;
    let mut run_batch = |epoch: u64| {
        batch
            .par_iter_mut()
            .zip(&template)
            .enumerate()
            .for_each(|(i, (dst, src))| {
                (dst.width, dst.height, dst.bands) = (src.width, src.height, src.bands);
                dst.image.clone_from(&src.image);
                dst.mask.clone_from(&src.mask);
                dst.boxes.clone_from(&src.boxes);
                pipeline.apply(dst, sample_seed(0, epoch, i as u64));
            });
        let boxes: usize = batch.iter().map(|s| s.boxes.len()).sum();
        (batch.len(), boxes)
    };
    run_batch(u64::MAX); // warm-up: allocator, caches, thread pool
    let (mut images, mut boxes) = (0usize, 0usize);
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    while t0.elapsed().as_secs_f64() < seconds {
        let (n, b) = run_batch(epoch);
        images += n;
        boxes += b;
        epoch += 1;
    }
    let dt = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds().zip(cpu0).map(|(b, a)| b - a);
    println!(
        "autodl-augment {preset} preset on {} trees_voc tiles, {} threads, decode excluded: {images} images, {:.1} boxes/image kept, {dt:.1} s",
        items.len(),
        rayon::current_num_threads(),
        boxes as f64 / images.max(1) as f64
    );
    if let Some(cpu) = cpu.filter(|c| *c > 0.0) {
        // On a shared machine wall time hides how much CPU the run actually got.
        println!(
            "cpu_seconds={cpu:.2} images_per_cpu_sec={:.0}",
            images as f64 / cpu
        );
    }
    println!("images_per_sec={:.0}", images as f64 / dt);
    Ok(())
}

/// User plus system CPU seconds of this process, from `/proc/self/stat` (Linux only).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // The kernel reports clock ticks, 100 per second on every mainstream Linux configuration.
    Some(ticks / 100.0)
}

/// Decodes every tile once, normalises each band to mean 0 and standard deviation 1 (as training
/// does), and turns VOC's inclusive pixel boxes into exclusive ones, as the baseline does.
fn load(root: &std::path::Path) -> Result<Vec<AugSample>, String> {
    let ds = autodl_data::open(root, &autodl_data::ReadOptions::default())
        .map_err(|e| format!("{}: {e}", root.display()))?;
    let mut items = Vec::new();
    for (_, s) in ds.samples() {
        let img = autodl_data::load_image(&s.image).map_err(|e| e.to_string())?;
        let (w, h) = (img.width as f32, img.height as f32);
        let plane = (img.width * img.height) as usize;
        let mut image = img.data;
        for band in image.chunks_exact_mut(plane.max(1)) {
            let n = band.len() as f64;
            let mean = band.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
            let var = band
                .iter()
                .map(|&v| (f64::from(v) - mean).powi(2))
                .sum::<f64>()
                / n;
            let sd = var.sqrt().max(1e-6);
            band.iter_mut()
                .for_each(|v| *v = ((f64::from(*v) - mean) / sd) as f32);
        }
        let boxes = s
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
            .collect();
        items.push(AugSample {
            width: img.width,
            height: img.height,
            bands: img.bands,
            image,
            mask: None,
            boxes,
        });
    }
    if items.is_empty() {
        return Err(format!("{}: no samples", root.display()));
    }
    Ok(items)
}
