//! The conformance suite: what every network family must do, checked through
//! [`autodl_api::NetworkFamily`] alone, so that it runs against an in-tree family, an
//! out-of-tree plugin's proxy or a test double alike.
//!
//! [`run`] trains the family for a few steps on a tiny generated dataset and checks, each as
//! a [`Check`] with its reason:
//!
//! - `metrics`: it declares metrics, each name once;
//! - `bad-parameter`: an unknown parameter and an out-of-range or mistyped value of each
//!   declared one are refused with an error naming the parameter ([`autodl_api::resolve_params`],
//!   what the planner runs), and the family itself refuses a trial whose parameters leave out a
//!   declared one instead of assuming a default;
//! - `train`: the trial completes, one epoch per step, with finite losses and a model folder
//!   whose `model.json` names the family and the data's classes;
//! - `metric-direction`: the result ranks by a declared metric, reports it among its metrics,
//!   and kept the epoch that is best in that metric's direction;
//! - `prediction-shapes`: [`NetworkFamily::infer`] gives, for square training-sized images and
//!   an odd-sized one, probabilities of the image's size summing to one per pixel or boxes inside
//!   the image with valid classes and scores; `predict` writes a label file per image (masks of
//!   the image's size holding only class values);
//! - `reload-identical`: the saved model, loaded again, predicts the same files byte for byte
//!   and infers the same values, and a mask `predict` writes is the most probable class of
//!   `infer` at every pixel.
//!
//! A panic inside the family is a failed check, not the end of the suite.
//!
//! [`bench`] measures a family's training and inference throughput through the same trait, for
//! `autodl bench families`, and holds the one type of the benchmark's JSON report.

pub mod bench;
mod data;

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::Instant;

use autodl_api::{
    AugmentSpec, DataSpec, Direction, Inferred, ModelMeta, NetworkFamily, NoProgress, ParamDecl,
    ParamKind, ParamValue, Params, PredictOptions, Task, TrainOptions, TrialResult, TrialSpec,
    TrialStatus,
};
use serde::{Deserialize, Serialize};

pub use data::{TinyData, write_image, write_tiny_dataset};

/// The checks [`run`] makes, in order.
pub const CHECKS: [&str; 6] = [
    "metrics",
    "bad-parameter",
    "train",
    "metric-direction",
    "prediction-shapes",
    "reload-identical",
];

/// The name given to an undeclared parameter.
const UNKNOWN_PARAM: &str = "conformance-no-such-parameter";

/// Why the suite itself could not run (its folders or data could not be written); a family's
/// failures are [`Check`]s, never this.
#[derive(Debug, thiserror::Error)]
pub enum ConformanceError {
    /// A file or folder of the suite could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// How [`run`] trains and predicts.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// `cpu`, `cuda` or `cuda:N`.
    pub backend: String,
    /// Side of the square training images, in pixels.
    pub image_size: u32,
    /// Training steps: one epoch of one batch each.
    pub steps: u32,
    /// Batch size (and so the number of training images).
    pub batch: u32,
    /// Where the data, models and predictions go; `None` for a temporary folder removed
    /// afterwards.
    pub work_dir: Option<PathBuf>,
}

impl Default for Options {
    /// 64-pixel images, two steps at batch 2, on the CPU.
    fn default() -> Self {
        Options {
            backend: "cpu".to_owned(),
            image_size: 64,
            steps: 2,
            batch: 2,
            work_dir: None,
        }
    }
}

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Check {
    /// One of [`CHECKS`].
    pub name: String,
    /// Whether the family passed it.
    pub passed: bool,
    /// What was found: why it failed, or what passed.
    pub reason: String,
}

/// Every check of one family.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Report {
    /// The family's name.
    pub family: String,
    /// The backend it ran on.
    pub backend: String,
    /// Wall-clock seconds the suite took.
    pub seconds: f64,
    /// The checks, in the order of [`CHECKS`].
    pub checks: Vec<Check>,
}

impl Report {
    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.passed)
    }

    /// The check named `name`.
    pub fn check(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.name == name)
    }
}

impl std::fmt::Display for Report {
    /// One line per check: `family  check  pass|FAIL  reason`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for c in &self.checks {
            writeln!(
                f,
                "{:<12} {:<18} {:<4} {}",
                self.family,
                c.name,
                if c.passed { "pass" } else { "FAIL" },
                c.reason
            )?;
        }
        Ok(())
    }
}

/// What a check returns: `Ok(what passed)` or `Err(why it failed)`.
type Outcome = Result<String, String>;

/// Runs every check of [`CHECKS`] against `family`.
pub fn run(family: &dyn NetworkFamily, options: &Options) -> Result<Report, ConformanceError> {
    let start = Instant::now();
    let temp;
    let work = match &options.work_dir {
        Some(dir) => dir.clone(),
        None => {
            temp = tempfile::tempdir().map_err(|source| ConformanceError::Io {
                path: std::env::temp_dir(),
                source,
            })?;
            temp.path().to_owned()
        }
    };
    let task = family.task();
    let data = write_tiny_dataset(
        task,
        &work.join("data"),
        options.batch as usize,
        2,
        options.image_size,
    )?;
    // An image of another size and shape, neither side a multiple of 32, for prediction only.
    let odd = work.join("odd.png");
    write_image(&odd, options.image_size + 8, options.image_size * 5 / 8)?;
    let mut images = data.val.clone();
    images.push(odd);

    let mut checks = Vec::new();
    let mut record = |name: &str, outcome: Outcome| {
        let (passed, reason) = match outcome {
            Ok(r) => (true, r),
            Err(r) => (false, r),
        };
        checks.push(Check {
            name: name.to_owned(),
            passed,
            reason,
        });
    };
    let metrics = family.metrics();
    record("metrics", check_metrics(&metrics));
    let spec = trial_spec(family, options, &data, &work.join("trial"));
    record("bad-parameter", check_bad_parameter(family, &spec, &work));
    let trained = guarded(|| family.train(&spec, &NoProgress));
    let (result, meta) = match check_train(family, options, &data, trained) {
        Ok((reason, result, meta)) => {
            record("train", Ok(reason));
            (result, meta)
        }
        Err(why) => {
            record("train", Err(why));
            for name in &CHECKS[3..] {
                record(name, Err("not run: training failed".to_owned()));
            }
            return Ok(finish(family, options, start, checks));
        }
    };
    record("metric-direction", check_direction(&metrics, &result));
    let model_dir = result.model_dir.clone().unwrap_or_default();
    let opts = PredictOptions::on(&options.backend);
    let first = infer_all(family, &model_dir, &images, &opts);
    let predicted = guarded(|| {
        family.predict(
            &model_dir,
            &images,
            &work.join("pred-1"),
            &opts,
            &autodl_api::NoProgress,
        )
    });
    record(
        "prediction-shapes",
        check_shapes(
            task,
            &meta,
            &images,
            &first,
            &predicted,
            &work.join("pred-1"),
        ),
    );
    record(
        "reload-identical",
        check_reload(
            family,
            &model_dir,
            &images,
            &work,
            &options.backend,
            &meta,
            (&first, &predicted),
        ),
    );
    Ok(finish(family, options, start, checks))
}

fn finish(
    family: &dyn NetworkFamily,
    options: &Options,
    start: Instant,
    checks: Vec<Check>,
) -> Report {
    Report {
        family: family.name().to_owned(),
        backend: options.backend.clone(),
        seconds: start.elapsed().as_secs_f64(),
        checks,
    }
}

/// The trial the suite trains: `steps` epochs of one batch, fixed batch and learning rate, no
/// augmentation, the family's default backbone and parameters.
fn trial_spec(
    family: &dyn NetworkFamily,
    options: &Options,
    data: &TinyData,
    out_dir: &Path,
) -> TrialSpec {
    short_trial(
        family,
        &options.backend,
        data,
        out_dir,
        (options.batch, options.steps, options.image_size),
    )
}

/// A trial of `epochs` epochs at a fixed `batch` and learning rate on `tile`-pixel tiles of
/// `data`, without augmentation, with the family's default backbone and parameters.
pub(crate) fn short_trial(
    family: &dyn NetworkFamily,
    backend: &str,
    data: &TinyData,
    out_dir: &Path,
    (batch, epochs, tile): (u32, u32, u32),
) -> TrialSpec {
    TrialSpec {
        id: format!("{}-conformance", family.name()),
        family: family.name().to_owned(),
        backbone: family
            .backbones()
            .first()
            .map_or_else(String::new, |b| (*b).to_owned()),
        data: DataSpec {
            root: data.root.clone(),
            format: None,
            images_dir: None,
            val_fraction: 0.5,
            test_fraction: 0.0,
            ignore_index: None,
            fail_on_bad_sample: true,
            bands: None,
        },
        backend: backend.to_owned(),
        seed: 7,
        batch_size: Some(batch),
        learning_rate: Some(1e-3),
        max_epochs: epochs,
        patience: epochs,
        time_budget_secs: 3600.0,
        tile_size: Some(tile),
        training: TrainOptions::default(),
        augment: AugmentSpec::preset("none"),
        batch_deducer: autodl_api::batch_deducers()
            .first()
            .map_or_else(|| "throughput".to_owned(), |d| d.name().to_owned()),
        evaluator: None,
        resume: false,
        rung: 0,
        init_from: None,
        // Defaults that do not resolve fail `bad-parameter`; training then gets none.
        params: autodl_api::resolve_params(&family.params(), &Params::new()).unwrap_or_default(),
        out_dir: out_dir.to_owned(),
    }
}

/// Runs `f`, turning a panic into an error with its message.
pub(crate) fn guarded<T>(
    f: impl FnOnce() -> Result<T, autodl_api::PluginError>,
) -> Result<T, String> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(payload) => Err(format!("panicked: {}", panic_message(payload.as_ref()))),
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned())
}

fn check_metrics(metrics: &[autodl_api::MetricDecl]) -> Outcome {
    if metrics.is_empty() {
        return Err("the family declares no metrics".to_owned());
    }
    let mut seen = std::collections::BTreeSet::new();
    for m in metrics {
        if m.name.is_empty() {
            return Err("a metric has an empty name".to_owned());
        }
        if !seen.insert(m.name) {
            return Err(format!("metric `{}` is declared twice", m.name));
        }
    }
    Ok(metrics
        .iter()
        .map(|m| format!("{} ({})", m.name, direction_name(m.direction)))
        .collect::<Vec<_>>()
        .join(", "))
}

fn direction_name(d: Direction) -> &'static str {
    match d {
        Direction::Maximise => "higher is better",
        Direction::Minimise => "lower is better",
    }
}

/// A value `decl` must refuse: out of its range where it has one, else of the wrong type.
fn bad_value(decl: &ParamDecl) -> ParamValue {
    match &decl.kind {
        ParamKind::Number { max, .. } if max.is_finite() && *max < f64::MAX / 2.0 => {
            ParamValue::Number(max + max.abs() + 1.0)
        }
        ParamKind::Integer { max, .. } if *max < i64::MAX / 2 => {
            ParamValue::Number((max + max.abs() + 1) as f64)
        }
        ParamKind::Number { .. } | ParamKind::Integer { .. } => {
            ParamValue::Text("not-a-number".to_owned())
        }
        ParamKind::Choice { .. } => ParamValue::Text("conformance-no-such-option".to_owned()),
        ParamKind::Flag { .. } => ParamValue::Number(2.0),
    }
}

fn check_bad_parameter(family: &dyn NetworkFamily, spec: &TrialSpec, work: &Path) -> Outcome {
    let decls = family.params();
    let defaults = autodl_api::resolve_params(&decls, &Params::new())
        .map_err(|e| format!("the declared defaults are refused: {e}"))?;
    if let Some(d) = decls.iter().find(|d| !defaults.contains_key(d.name)) {
        return Err(format!("no default for `{}`", d.name));
    }
    let unknown = Params::from([(UNKNOWN_PARAM.to_owned(), ParamValue::Number(1.0))]);
    match autodl_api::resolve_params(&decls, &unknown) {
        Ok(_) => {
            return Err(format!(
                "the undeclared parameter `{UNKNOWN_PARAM}` is accepted"
            ));
        }
        Err(e) if !e.to_string().contains(UNKNOWN_PARAM) => {
            return Err(format!(
                "refusing `{UNKNOWN_PARAM}`, the error does not name it: {e}"
            ));
        }
        Err(_) => {}
    }
    let mut refused = Vec::new();
    for d in &decls {
        let bad = bad_value(d);
        let given = Params::from([(d.name.to_owned(), bad.clone())]);
        match autodl_api::resolve_params(&decls, &given) {
            Ok(_) => return Err(format!("`{}` = {bad} is accepted", d.name)),
            Err(e) if !e.to_string().contains(d.name) => {
                return Err(format!(
                    "refusing `{}` = {bad}, the error does not name it: {e}",
                    d.name
                ));
            }
            Err(_) => refused.push(format!("{} = {bad}", d.name)),
        }
    }
    // The family's own check: a trial whose parameters leave one out (not written by the
    // planner) must fail, naming it, rather than train with a default.
    let Some(first) = decls.first() else {
        return Ok(format!("no parameters declared; `{UNKNOWN_PARAM}` refused"));
    };
    let mut incomplete = spec.clone();
    incomplete.params.remove(first.name);
    incomplete.out_dir = work.join("incomplete-params");
    match guarded(|| family.train(&incomplete, &NoProgress)) {
        Ok(r) if !matches!(r.status, TrialStatus::Failed(_)) => Err(format!(
            "a trial without `{}` trained ({}) instead of failing",
            first.name,
            r.status.name()
        )),
        Ok(r) if !r.status.reason().contains(first.name) => Err(format!(
            "a trial without `{}` failed without naming it: {}",
            first.name,
            r.status.reason()
        )),
        Err(e) if !e.contains(first.name) || e.starts_with("panicked") => Err(format!(
            "a trial without `{}` failed without naming it: {e}",
            first.name
        )),
        _ => Ok(format!(
            "`{UNKNOWN_PARAM}`, {} refused; a trial without `{}` fails naming it",
            refused.join(", "),
            first.name
        )),
    }
}

fn check_train(
    family: &dyn NetworkFamily,
    options: &Options,
    data: &TinyData,
    trained: Result<TrialResult, String>,
) -> Result<(String, TrialResult, ModelMeta), String> {
    let r = trained.map_err(|e| format!("training failed: {e}"))?;
    if r.status != TrialStatus::Completed {
        return Err(format!(
            "the trial ended {}: {}",
            r.status.name(),
            r.status.reason()
        ));
    }
    if r.epochs.len() != options.steps as usize {
        return Err(format!(
            "{} epochs recorded, expected {} (one step each)",
            r.epochs.len(),
            options.steps
        ));
    }
    if let Some(e) = r
        .epochs
        .iter()
        .find(|e| !e.train_loss.is_finite() || !e.val_loss.is_finite() || !e.metric.is_finite())
    {
        return Err(format!(
            "epoch {} has a loss or metric that is not finite: {e:?}",
            e.epoch
        ));
    }
    if r.batch_size != options.batch {
        return Err(format!(
            "trained at batch {}, asked for {}",
            r.batch_size, options.batch
        ));
    }
    let dir = r
        .model_dir
        .as_ref()
        .ok_or_else(|| "the result names no model folder".to_owned())?;
    let meta = ModelMeta::load(dir).map_err(|e| format!("the model folder: {e}"))?;
    if meta.family != family.name() || meta.task != family.task() {
        return Err(format!(
            "model.json says family `{}` ({}), expected `{}` ({})",
            meta.family,
            meta.task,
            family.name(),
            family.task()
        ));
    }
    if meta.classes.len() != data.classes {
        return Err(format!(
            "model.json has {} classes, the data {}",
            meta.classes.len(),
            data.classes
        ));
    }
    Ok((
        format!(
            "{} epochs of one step at batch {} in {:.1} s, losses {}",
            r.epochs.len(),
            r.batch_size,
            r.train_secs,
            r.epochs
                .iter()
                .map(|e| format!("{:.3}", e.train_loss))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        r,
        meta,
    ))
}

fn check_direction(metrics: &[autodl_api::MetricDecl], r: &TrialResult) -> Outcome {
    let decl = metrics
        .iter()
        .find(|m| m.name == r.metric_name)
        .ok_or_else(|| {
            format!(
                "the result ranks by `{}`, which the family does not declare ({})",
                r.metric_name,
                metrics
                    .iter()
                    .map(|m| m.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
    let value = r
        .metric
        .filter(|v| v.is_finite())
        .ok_or_else(|| format!("the result's `{}` is {:?}", r.metric_name, r.metric))?;
    match r.metrics.get(&r.metric_name) {
        Some(v) if (v - value).abs() <= 1e-9 * value.abs().max(1.0) => {}
        other => {
            return Err(format!(
                "the result's metrics give `{}` = {other:?}, its metric {value}",
                r.metric_name
            ));
        }
    }
    let best = r
        .best_epoch
        .ok_or_else(|| "the result names no best epoch".to_owned())?;
    let kept = r
        .epochs
        .iter()
        .find(|e| e.epoch == best)
        .ok_or_else(|| format!("best epoch {best} is not among the epochs"))?;
    let better = |a: f64, b: f64| match decl.direction {
        Direction::Maximise => a > b,
        Direction::Minimise => a < b,
    };
    if let Some(e) = r.epochs.iter().find(|e| better(e.metric, kept.metric)) {
        return Err(format!(
            "kept epoch {best} ({} = {}) though epoch {} scored {} and {}",
            r.metric_name,
            kept.metric,
            e.epoch,
            e.metric,
            direction_name(decl.direction)
        ));
    }
    if (kept.metric - value).abs() > 1e-9 * value.abs().max(1.0) {
        return Err(format!(
            "the result's `{}` = {value} is not its best epoch's {}",
            r.metric_name, kept.metric
        ));
    }
    Ok(format!(
        "{} ({}) = {value:.4}, best of {} epochs at epoch {best}",
        r.metric_name,
        direction_name(decl.direction),
        r.epochs.len()
    ))
}

/// What `infer` handed back per image index, or why it failed.
type Inferences = Result<BTreeMap<usize, Inferred>, String>;

fn infer_all(
    family: &dyn NetworkFamily,
    model_dir: &Path,
    images: &[PathBuf],
    opts: &PredictOptions,
) -> Inferences {
    let mut out = BTreeMap::new();
    let mut twice = None;
    guarded(|| {
        family.infer(model_dir, images, opts, &mut |i, inferred| {
            if out.insert(i, inferred).is_some() {
                twice = Some(i);
            }
            Ok(())
        })
    })?;
    if let Some(i) = twice {
        return Err(format!("infer handed image {i} over twice"));
    }
    if out.len() != images.len() || out.keys().any(|&i| i >= images.len()) {
        return Err(format!(
            "infer handed over images {:?} of {}",
            out.keys().collect::<Vec<_>>(),
            images.len()
        ));
    }
    Ok(out)
}

fn dimensions(path: &Path) -> Result<(u32, u32), String> {
    image::image_dimensions(path).map_err(|e| format!("{}: {e}", path.display()))
}

fn check_shapes(
    task: Task,
    meta: &ModelMeta,
    images: &[PathBuf],
    inferred: &Inferences,
    predicted: &Result<Vec<PathBuf>, String>,
    out_dir: &Path,
) -> Outcome {
    let inferred = inferred
        .as_ref()
        .map_err(|e| format!("infer failed: {e}"))?;
    let classes = meta.classes.len();
    let mut boxes = 0;
    for (i, path) in images.iter().enumerate() {
        let (w, h) = dimensions(path)?;
        let name = path.display();
        match (task, &inferred[&i]) {
            (
                Task::PixelClassification,
                Inferred::Probabilities {
                    width,
                    height,
                    classes: c,
                    values,
                },
            ) => {
                if (*width, *height) != (w, h) {
                    return Err(format!(
                        "{name}: probabilities of {width}x{height} for a {w}x{h} image"
                    ));
                }
                if *c != classes {
                    return Err(format!("{name}: {c} classes, the model has {classes}"));
                }
                let plane = (w * h) as usize;
                if values.len() != classes * plane {
                    return Err(format!(
                        "{name}: {} probabilities for {classes} classes of {w}x{h}",
                        values.len()
                    ));
                }
                for p in 0..plane {
                    let sum: f32 = (0..classes).map(|k| values[k * plane + p]).sum();
                    if (0..classes).any(|k| !(0.0..=1.0).contains(&values[k * plane + p]))
                        || (sum - 1.0).abs() > 1e-3
                    {
                        return Err(format!(
                            "{name}: pixel ({}, {}) has probabilities {:?} (sum {sum})",
                            p as u32 % w,
                            p as u32 / w,
                            (0..classes)
                                .map(|k| values[k * plane + p])
                                .collect::<Vec<_>>()
                        ));
                    }
                }
            }
            (
                Task::Detection,
                Inferred::Boxes {
                    width,
                    height,
                    boxes: found,
                },
            ) => {
                if (*width, *height) != (w, h) {
                    return Err(format!(
                        "{name}: boxes of a {width}x{height} image for a {w}x{h} image"
                    ));
                }
                for b in found {
                    let [x1, y1, x2, y2] = b.bbox;
                    let inside = b.bbox.iter().all(|v| v.is_finite())
                        && 0.0 <= x1
                        && x1 <= x2
                        && x2 <= w as f32
                        && 0.0 <= y1
                        && y1 <= y2
                        && y2 <= h as f32;
                    if !inside {
                        return Err(format!("{name}: box {:?} leaves the {w}x{h} image", b.bbox));
                    }
                    if b.class as usize >= classes {
                        return Err(format!(
                            "{name}: class {} of a model with {classes} classes",
                            b.class
                        ));
                    }
                    if !(0.0..=1.0).contains(&b.score) {
                        return Err(format!("{name}: score {} outside [0, 1]", b.score));
                    }
                }
                boxes += found.len();
            }
            (_, other) => {
                return Err(format!(
                    "{name}: a {task} family inferred {}",
                    match other {
                        Inferred::Probabilities { .. } => "probabilities",
                        Inferred::Boxes { .. } => "boxes",
                    }
                ));
            }
        }
    }
    let files = predicted
        .as_ref()
        .map_err(|e| format!("predict failed: {e}"))?;
    if let Some(f) = files.iter().find(|f| !f.is_file()) {
        return Err(format!(
            "predict listed {}, which it did not write",
            f.display()
        ));
    }
    let stems = autodl_api::files::output_stems(images);
    for (path, stem) in images.iter().zip(&stems) {
        let label = autodl_api::files::prediction_files(task, out_dir, stem).label;
        if !files.contains(&label) {
            return Err(format!(
                "predict wrote no {} for {}",
                label.display(),
                path.display()
            ));
        }
        if task == Task::PixelClassification {
            let (w, h) = dimensions(path)?;
            let mask = read_mask(&label)?;
            if (mask.0, mask.1) != (w, h) {
                return Err(format!(
                    "{}: a {}x{} mask for a {w}x{h} image",
                    label.display(),
                    mask.0,
                    mask.1
                ));
            }
            if let Some(v) = mask.2.iter().find(|&&v| {
                !meta.classes.iter().any(|c| c.value == v) && Some(v) != meta.ignore_index
            }) {
                return Err(format!(
                    "{}: value {v} is no class of the model",
                    label.display()
                ));
            }
        }
    }
    Ok(match task {
        Task::PixelClassification => format!(
            "{} images ({}): probabilities and masks of each image's size over {classes} classes",
            images.len(),
            sizes(images)
        ),
        Task::Detection => format!(
            "{} images ({}): {boxes} boxes, all inside their image with classes below {classes}",
            images.len(),
            sizes(images)
        ),
    })
}

fn sizes(images: &[PathBuf]) -> String {
    let mut seen: Vec<String> = images
        .iter()
        .filter_map(|p| dimensions(p).ok())
        .map(|(w, h)| format!("{w}x{h}"))
        .collect();
    seen.dedup();
    seen.join(", ")
}

/// A single-band mask: width, height, values.
fn read_mask(path: &Path) -> Result<(u32, u32, Vec<u32>), String> {
    let img = image::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    match img {
        image::DynamicImage::ImageLuma8(m) => Ok((
            m.width(),
            m.height(),
            m.pixels().map(|p| u32::from(p.0[0])).collect(),
        )),
        image::DynamicImage::ImageLuma16(m) => Ok((
            m.width(),
            m.height(),
            m.pixels().map(|p| u32::from(p.0[0])).collect(),
        )),
        other => Err(format!(
            "{}: a mask of {:?}, not one band",
            path.display(),
            other.color()
        )),
    }
}

fn check_reload(
    family: &dyn NetworkFamily,
    model_dir: &Path,
    images: &[PathBuf],
    work: &Path,
    backend: &str,
    meta: &ModelMeta,
    (first, predicted): (&Inferences, &Result<Vec<PathBuf>, String>),
) -> Outcome {
    let first = first.as_ref().map_err(|e| format!("infer failed: {e}"))?;
    let files = predicted
        .as_ref()
        .map_err(|e| format!("predict failed: {e}"))?;
    let opts = PredictOptions::on(backend);
    let (dir1, dir2) = (work.join("pred-1"), work.join("pred-2"));
    let again =
        guarded(|| family.predict(model_dir, images, &dir2, &opts, &autodl_api::NoProgress))
            .map_err(|e| format!("predicting again failed: {e}"))?;
    let relative = |list: &[PathBuf], base: &Path| -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = list
            .iter()
            .map(|p| p.strip_prefix(base).unwrap_or(p).to_owned())
            .collect();
        v.sort();
        v
    };
    let (names1, names2) = (relative(files, &dir1), relative(&again, &dir2));
    if names1 != names2 {
        return Err(format!(
            "the second prediction wrote {names2:?}, the first {names1:?}"
        ));
    }
    for name in &names1 {
        let read = |p: PathBuf| std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()));
        if read(dir1.join(name))? != read(dir2.join(name))? {
            return Err(format!(
                "{} differs between two predictions of the saved model",
                name.display()
            ));
        }
    }
    let second = infer_all(family, model_dir, images, &opts)
        .map_err(|e| format!("inferring again failed: {e}"))?;
    if let Some(i) = (0..images.len()).find(|i| first.get(i) != second.get(i)) {
        return Err(format!(
            "{}: infer gave different values the second time",
            images[i].display()
        ));
    }
    let mut agreement = String::new();
    if family.task() == Task::PixelClassification {
        let stems = autodl_api::files::output_stems(images);
        for (i, stem) in stems.iter().enumerate() {
            let label =
                autodl_api::files::prediction_files(Task::PixelClassification, &dir1, stem).label;
            let (_, _, mask) = read_mask(&label)?;
            let Some(Inferred::Probabilities {
                classes, values, ..
            }) = first.get(&i)
            else {
                return Err(format!("{}: no probabilities", images[i].display()));
            };
            let plane = mask.len();
            for (p, &v) in mask.iter().enumerate() {
                let prob = |k: usize| values.get(k * plane + p).copied().unwrap_or(f32::NAN);
                let best = (0..*classes).map(prob).fold(f32::MIN, f32::max);
                let ok = Some(v) == meta.ignore_index
                    || meta
                        .classes
                        .iter()
                        .position(|c| c.value == v)
                        .is_some_and(|k| prob(k) >= best);
                if !ok {
                    return Err(format!(
                        "{}: predict wrote class value {v} at pixel {p}, infer's most probable class has {best}",
                        label.display()
                    ));
                }
            }
        }
        agreement = "; every mask pixel is infer's most probable class".to_owned();
    }
    Ok(format!(
        "{} files identical over two loads, infer identical{agreement}",
        names1.len()
    ))
}
