//! The suite against a pixel classifier written in plain Rust: conforming, it passes every
//! check; with one defect each, it fails exactly the check that names that defect.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use autodl_api::{
    ClassInfo, EpochRecord, Inferred, MetricDecl, ModelMeta, NetworkFamily, ParamDecl, ParamKind,
    ParamsExt, PluginError, PredictOptions, Progress, Task, TrialResult, TrialSpec, TrialStatus,
};
use autodl_conformance::{CHECKS, Options, Report, run};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Defect {
    None,
    NoMetrics,
    AcceptsMissingParameter,
    Diverges,
    UndeclaredMetric,
    KeepsWorseEpoch,
    MaskOfTileSize,
    BoxesFromPixelClassifier,
    DifferentEachLoad,
    PanicsInPredict,
}

/// Classifies a pixel as `roof` (value 2) when it is bright, else `ground` (value 1).
struct Fake {
    defect: Defect,
    loads: AtomicU32,
}

impl Fake {
    fn new(defect: Defect) -> Self {
        Fake {
            defect,
            loads: AtomicU32::new(0),
        }
    }

    /// The roof probability of every pixel of `path`, its width and height.
    fn roof(&self, path: &Path) -> (u32, u32, Vec<f32>) {
        let img = image::open(path).unwrap().to_luma8();
        let (w, h) = if self.defect == Defect::MaskOfTileSize {
            (64, 64)
        } else {
            img.dimensions()
        };
        let p = (0..w * h)
            .map(|i| {
                let v = img.get_pixel((i % w).min(img.width() - 1), (i / w).min(img.height() - 1));
                if v.0[0] > 128 { 0.75 } else { 0.25 }
            })
            .collect();
        (w, h, p)
    }
}

fn classes() -> Vec<ClassInfo> {
    [(1, "ground"), (2, "roof")]
        .map(|(value, name)| ClassInfo {
            value,
            name: name.to_owned(),
        })
        .to_vec()
}

impl NetworkFamily for Fake {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn task(&self) -> Task {
        Task::PixelClassification
    }

    fn backbones(&self) -> &'static [&'static str] {
        &["none"]
    }

    fn params(&self) -> Vec<ParamDecl> {
        vec![ParamDecl::fixed(
            "smoothing",
            "how much to smooth",
            ParamKind::Number {
                min: 0.0,
                max: 1.0,
                default: 0.5,
            },
        )]
    }

    fn metrics(&self) -> Vec<MetricDecl> {
        if self.defect == Defect::NoMetrics {
            return Vec::new();
        }
        vec![
            MetricDecl::maximise("miou"),
            MetricDecl::maximise("accuracy"),
        ]
    }

    fn train(&self, spec: &TrialSpec, _: &dyn Progress) -> Result<TrialResult, PluginError> {
        if self.defect != Defect::AcceptsMissingParameter {
            spec.params
                .number("smoothing")
                .map_err(|e| PluginError::Training(e.to_string()))?;
        }
        std::fs::create_dir_all(&spec.out_dir).unwrap();
        ModelMeta {
            family: "fake".into(),
            backbone: spec.backbone.clone(),
            task: Task::PixelClassification,
            bands: 3,
            classes: classes(),
            ignore_index: Some(0),
            mean: vec![0.0; 3],
            std: vec![1.0; 3],
            tile_size: 64,
            params: spec.params.clone(),
            extract_bands: None,
        }
        .save(&spec.out_dir)?;
        let metric = |e: u32| [0.4, 0.6, 0.5][(e as usize - 1) % 3];
        let epochs: Vec<EpochRecord> = (1..=spec.max_epochs)
            .map(|epoch| EpochRecord {
                epoch,
                train_loss: if self.defect == Defect::Diverges {
                    f64::NAN
                } else {
                    1.0 / f64::from(epoch)
                },
                val_loss: 1.0,
                metric: metric(epoch),
                elapsed_secs: f64::from(epoch),
            })
            .collect();
        let best = if self.defect == Defect::KeepsWorseEpoch {
            1
        } else {
            2
        };
        let name = if self.defect == Defect::UndeclaredMetric {
            "dice"
        } else {
            "miou"
        };
        Ok(TrialResult {
            status: TrialStatus::Completed,
            metric_name: name.to_owned(),
            metric: Some(metric(best)),
            metrics: BTreeMap::from([(name.to_owned(), metric(best))]),
            epochs,
            best_epoch: Some(best),
            batch_size: spec.batch_size.unwrap(),
            learning_rate: 1e-3,
            train_secs: 0.1,
            model_dir: Some(spec.out_dir.clone()),
        })
    }

    fn predict(
        &self,
        model_dir: &Path,
        images: &[PathBuf],
        out_dir: &Path,
        options: &PredictOptions,
        _: &dyn autodl_api::PredictProgress,
    ) -> Result<Vec<PathBuf>, PluginError> {
        if self.defect == Defect::PanicsInPredict {
            panic!("index out of bounds");
        }
        ModelMeta::load(model_dir)?;
        let load = self.loads.fetch_add(1, Ordering::SeqCst);
        std::fs::create_dir_all(out_dir).unwrap();
        let mut files = Vec::new();
        let stems = autodl_api::files::output_stems(images);
        for (i, path) in images.iter().enumerate() {
            let mut mask = Vec::new();
            self.infer(model_dir, &images[i..=i], options, &mut |_, inferred| {
                let Inferred::Probabilities {
                    width,
                    height,
                    values,
                    ..
                } = inferred
                else {
                    unreachable!()
                };
                let plane = (width * height) as usize;
                mask = (0..plane)
                    .map(|p| if values[plane + p] > values[p] { 2 } else { 1 })
                    .collect();
                mask[0] = if self.defect == Defect::DifferentEachLoad && load > 0 {
                    2
                } else {
                    1
                };
                mask.extend([width as u8, height as u8]);
                Ok(())
            })?;
            let (h, w) = (mask.pop().unwrap(), mask.pop().unwrap());
            let label =
                autodl_api::files::prediction_files(Task::PixelClassification, out_dir, &stems[i])
                    .label;
            image::GrayImage::from_raw(u32::from(w), u32::from(h), mask)
                .unwrap()
                .save(&label)
                .unwrap();
            let _ = path;
            files.push(label);
        }
        Ok(files)
    }

    fn infer(
        &self,
        model_dir: &Path,
        images: &[PathBuf],
        _: &PredictOptions,
        each: &mut dyn FnMut(usize, Inferred) -> Result<(), PluginError>,
    ) -> Result<(), PluginError> {
        ModelMeta::load(model_dir)?;
        for (i, path) in images.iter().enumerate() {
            let (width, height, roof) = self.roof(path);
            if self.defect == Defect::BoxesFromPixelClassifier {
                each(
                    i,
                    Inferred::Boxes {
                        width,
                        height,
                        boxes: Vec::new(),
                    },
                )?;
                continue;
            }
            let mut values: Vec<f32> = roof.iter().map(|p| 1.0 - p).collect();
            values.extend(&roof);
            each(
                i,
                Inferred::Probabilities {
                    width,
                    height,
                    classes: 2,
                    values,
                },
            )?;
        }
        Ok(())
    }
}

fn report(defect: Defect) -> Report {
    let report = run(&Fake::new(defect), &Options::default()).unwrap();
    assert_eq!(
        report
            .checks
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>(),
        CHECKS,
        "{report}"
    );
    report
}

/// Asserts that `defect` fails `check` with a reason containing `why`, and passes the checks
/// before it.
fn fails(defect: Defect, check: &str, why: &str) {
    let report = report(defect);
    let at = CHECKS.iter().position(|c| *c == check).unwrap();
    for c in &report.checks[..at] {
        assert!(c.passed, "{defect:?} should pass {}: {report}", c.name);
    }
    let c = report.check(check).unwrap();
    assert!(!c.passed, "{defect:?} should fail {check}: {report}");
    assert!(c.reason.contains(why), "{defect:?}: {report}");
}

#[test]
fn a_conforming_family_passes_every_check() {
    let report = report(Defect::None);
    assert!(report.passed(), "{report}");
    let json = serde_json::to_string(&report).unwrap();
    assert_eq!(serde_json::from_str::<Report>(&json).unwrap(), report);
}

#[test]
fn each_defect_fails_its_check() {
    fails(Defect::NoMetrics, "metrics", "declares no metrics");
    fails(
        Defect::AcceptsMissingParameter,
        "bad-parameter",
        "without `smoothing` trained",
    );
    fails(Defect::Diverges, "train", "not finite");
    fails(
        Defect::UndeclaredMetric,
        "metric-direction",
        "does not declare",
    );
    fails(Defect::KeepsWorseEpoch, "metric-direction", "kept epoch 1");
    fails(
        Defect::MaskOfTileSize,
        "prediction-shapes",
        "for a 72x40 image",
    );
    fails(
        Defect::BoxesFromPixelClassifier,
        "prediction-shapes",
        "inferred boxes",
    );
    fails(Defect::DifferentEachLoad, "reload-identical", "differs");
    fails(Defect::PanicsInPredict, "prediction-shapes", "panicked");
}

#[test]
fn a_failed_training_skips_the_checks_that_need_a_model() {
    let report = report(Defect::Diverges);
    for name in &CHECKS[3..] {
        let c = report.check(name).unwrap();
        assert!(
            !c.passed && c.reason.contains("training failed"),
            "{report}"
        );
    }
}
