//! A family's training and inference throughput, measured through
//! [`autodl_api::NetworkFamily`] alone ([`measure`]), and `bench.json` ([`BenchReport`]):
//! what `autodl bench families` measures and `cargo xtask bench` completes with the Python
//! baselines, one serde type on both sides of the process boundary.

use std::path::Path;
use std::time::Instant;

use autodl_api::{NetworkFamily, NoProgress, PredictOptions, Task};
use serde::{Deserialize, Serialize};

use crate::{ConformanceError, guarded, short_trial, write_image, write_tiny_dataset};

/// The sizes of one family's measurement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BenchSizes {
    /// Side of the square training images.
    pub image_size: u32,
    /// Training batch size.
    pub batch: u32,
    /// Training images (an epoch is `train_images / batch` steps).
    pub train_images: usize,
    /// Epochs: the first is warm-up, the others are timed.
    pub epochs: u32,
    /// Images inferred (the first is warm-up, with the model's loading).
    pub infer_images: usize,
    /// Side of the square images inferred.
    pub infer_size: u32,
}

impl BenchSizes {
    /// Tiny sizes and few iterations: checks that everything runs, in seconds per family.
    pub const SMOKE: BenchSizes = BenchSizes {
        image_size: 64,
        batch: 2,
        train_images: 4,
        epochs: 2,
        infer_images: 3,
        infer_size: 64,
    };

    /// Training tiles of 128 pixels at batch 4, two timed epochs of two steps, and eight
    /// 256-pixel images inferred.
    pub const FULL: BenchSizes = BenchSizes {
        image_size: 128,
        batch: 4,
        train_images: 8,
        epochs: 3,
        infer_images: 9,
        infer_size: 256,
    };
}

/// Trains `family` on a generated dataset in `work` and times its epochs and its `infer`.
/// What fails is recorded in [`FamilyBench::error`]; only the suite's own files failing is an
/// error.
pub fn measure(
    family: &dyn NetworkFamily,
    backend: &str,
    sizes: &BenchSizes,
    work: &Path,
) -> Result<FamilyBench, ConformanceError> {
    let task = family.task();
    let data = write_tiny_dataset(
        task,
        &work.join("data"),
        sizes.train_images,
        1,
        sizes.image_size,
    )?;
    let mut out = FamilyBench {
        family: family.name().to_owned(),
        task,
        backbone: family
            .backbones()
            .first()
            .map_or_else(String::new, |b| (*b).to_owned()),
        image_size: sizes.image_size,
        batch: sizes.batch,
        train_images_per_sec: None,
        infer_images_per_sec: None,
        infer_size: sizes.infer_size,
        error: None,
    };
    let spec = short_trial(
        family,
        backend,
        &data,
        &work.join("trial"),
        (sizes.batch, sizes.epochs.max(2), sizes.image_size),
    );
    let result = match guarded(|| family.train(&spec, &NoProgress)) {
        Ok(r) if r.model_dir.is_some() => r,
        Ok(r) => {
            out.error = Some(format!(
                "training ended {}: {}",
                r.status.name(),
                r.status.reason()
            ));
            return Ok(out);
        }
        Err(e) => {
            out.error = Some(format!("training failed: {e}"));
            return Ok(out);
        }
    };
    if let (Some(first), Some(last)) = (result.epochs.first(), result.epochs.last()) {
        let timed = (result.epochs.len() - 1) * sizes.train_images;
        let secs = last.elapsed_secs - first.elapsed_secs;
        if timed > 0 && secs > 0.0 {
            out.train_images_per_sec = Some(timed as f64 / secs);
        }
    }
    let mut images = Vec::new();
    for i in 0..sizes.infer_images.max(2) {
        let path = work.join(format!("infer-{i}.png"));
        write_image(&path, sizes.infer_size, sizes.infer_size)?;
        images.push(path);
    }
    let model_dir = result.model_dir.unwrap_or_default();
    let mut times = Vec::new();
    let inferred = guarded(|| {
        family.infer(
            &model_dir,
            &images,
            &PredictOptions::on(backend),
            &mut |_, _| {
                times.push(Instant::now());
                Ok(())
            },
        )
    });
    match inferred {
        Err(e) => out.error = Some(format!("infer failed: {e}")),
        Ok(()) => {
            if let (Some(first), Some(last)) = (times.first(), times.last()) {
                let secs = last.duration_since(*first).as_secs_f64();
                if secs > 0.0 {
                    out.infer_images_per_sec = Some((times.len() - 1) as f64 / secs);
                }
            }
        }
    }
    Ok(out)
}

/// The whole benchmark: every requested backend, augmentation, evaluation and the baselines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct BenchReport {
    /// `smoke` (tiny sizes, few iterations: checks that everything runs) or `full`.
    pub suite: String,
    /// Logical CPUs of the machine.
    pub cpus: usize,
    /// One entry per requested backend, in the order asked.
    pub backends: Vec<BackendBench>,
    /// Augmentation throughput (on the CPU, whatever the backend).
    pub augmentation: Option<AugmentBench>,
    /// Box evaluation speed (on the CPU).
    pub evaluation: Option<EvalBench>,
    /// The Python baselines run beside ours, or why each was not.
    #[serde(default)]
    pub baselines: Vec<Baseline>,
}

/// One backend's measurements, or why it was skipped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct BackendBench {
    /// `cpu`, `cuda` or `cuda:N`.
    pub backend: String,
    /// Whether it ran, and if not why.
    pub status: BackendStatus,
    /// One entry per registered family (empty when skipped).
    pub families: Vec<FamilyBench>,
}

/// Whether a backend was measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "status", deny_unknown_fields)]
pub enum BackendStatus {
    /// Measured.
    Ran,
    /// This binary was built without it.
    NotCompiled {
        /// What the binary said.
        reason: String,
        /// Whether a device for it exists (a build with the feature could measure it).
        device_present: bool,
    },
    /// Compiled in, but no device to run on.
    NoDevice {
        /// What the driver said.
        reason: String,
    },
}

/// One family's throughput on one backend, through [`crate::NetworkFamily`] alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct FamilyBench {
    /// The family.
    pub family: String,
    /// Its task.
    pub task: Task,
    /// The backbone it trained on (its default).
    pub backbone: String,
    /// Side of the square training images.
    pub image_size: u32,
    /// Training batch size.
    pub batch: u32,
    /// Training images per second over the timed epochs (every epoch after the first; an
    /// epoch also validates one image and writes its checkpoint).
    pub train_images_per_sec: Option<f64>,
    /// Images per second of `infer` over every image after the first (the first carries the
    /// model's loading).
    pub infer_images_per_sec: Option<f64>,
    /// Side of the square images inferred.
    pub infer_size: u32,
    /// Why the family could not be measured, when it could not.
    pub error: Option<String>,
}

/// Augmentation throughput of the registered pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct AugmentBench {
    /// What was augmented: the pipeline, preset and images.
    pub what: String,
    /// Images augmented.
    pub images: usize,
    /// Images per second, all threads.
    pub images_per_sec: f64,
}

/// COCO box evaluation speed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct EvalBench {
    /// Detections scored.
    pub detections: usize,
    /// Ground-truth boxes.
    pub truths: usize,
    /// Best wall time of the runs, in seconds.
    pub seconds: f64,
    /// COCO AP, to check against the baseline's.
    pub ap: f64,
}

/// A Python baseline beside one of our figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Baseline {
    /// What was compared, such as `augmentation` or `train-step resnet18`.
    pub name: String,
    /// The library, such as `albumentations`.
    pub library: String,
    /// Its figure, when it ran.
    pub value: Option<f64>,
    /// Ours, measured the same way.
    pub ours: Option<f64>,
    /// The unit of both figures, such as `img/s` or `s`.
    pub unit: String,
    /// How many times faster ours is (above 1: faster), when both ran.
    pub speedup: Option<f64>,
    /// Why it did not run, or what differs between the two.
    pub note: String,
}

fn rate(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"))
}

impl std::fmt::Display for BenchReport {
    /// The report as a table: a row per family and backend, then augmentation, evaluation and
    /// the baselines with their speed-ups.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "== bench, suite {}, {} CPUs", self.suite, self.cpus)?;
        writeln!(
            f,
            "{:<8} {:<12} {:<20} {:>6} {:>5} {:>12} {:>6} {:>12}",
            "backend", "family", "backbone", "tile", "batch", "train img/s", "size", "infer img/s"
        )?;
        for b in &self.backends {
            match &b.status {
                BackendStatus::Ran => {}
                BackendStatus::NotCompiled {
                    reason,
                    device_present,
                } => {
                    writeln!(
                        f,
                        "{:<8} skipped: {reason} ({})",
                        b.backend,
                        if *device_present {
                            "a device is present"
                        } else {
                            "no device either"
                        }
                    )?;
                    continue;
                }
                BackendStatus::NoDevice { reason } => {
                    writeln!(f, "{:<8} skipped: {reason}", b.backend)?;
                    continue;
                }
            }
            for r in &b.families {
                write!(
                    f,
                    "{:<8} {:<12} {:<20} {:>6} {:>5} {:>12} {:>6} {:>12}",
                    b.backend,
                    r.family,
                    r.backbone,
                    r.image_size,
                    r.batch,
                    rate(r.train_images_per_sec),
                    r.infer_size,
                    rate(r.infer_images_per_sec)
                )?;
                match &r.error {
                    Some(e) => writeln!(f, "  error: {e}")?,
                    None => writeln!(f)?,
                }
            }
        }
        if let Some(a) = &self.augmentation {
            writeln!(
                f,
                "augmentation: {:.0} img/s ({} images; {})",
                a.images_per_sec, a.images, a.what
            )?;
        }
        if let Some(e) = &self.evaluation {
            writeln!(
                f,
                "evaluation: COCO box AP of {} detections against {} boxes in {:.4} s (best of 3), AP {:.4}",
                e.detections, e.truths, e.seconds, e.ap
            )?;
        }
        for b in &self.baselines {
            write!(f, "baseline {:<40} {:<15}", b.name, b.library)?;
            match (b.ours, b.value, b.speedup) {
                (Some(o), Some(v), Some(s)) => write!(
                    f,
                    " ours {o:.3} {u}, theirs {v:.3} {u}: {s:.2}x",
                    u = b.unit
                )?,
                _ => write!(f, " not run")?,
            }
            if b.note.is_empty() {
                writeln!(f)?;
            } else {
                writeln!(f, " ({})", b.note)?;
            }
        }
        Ok(())
    }
}
