//! From a pipeline to a list of trials.

use std::path::PathBuf;

use autodl_api::{
    AugmentSpec, AugmentStep, DataSpec, Evaluator, NetworkFamily, OptimizerKind, ParamValue,
    Params, ScheduleKind, Task, TrainOptions, TrialSpec,
};
use autodl_config::{Auto, Located, Pipeline};

/// The trials of a run and what they share.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The task, from the pipeline or the data.
    pub task: Task,
    /// Output folder.
    pub out: PathBuf,
    /// Whole-run budget in seconds.
    pub time_limit_secs: f64,
    /// Trials in the order they run.
    pub trials: Vec<TrialSpec>,
    /// Networks asked for that cannot run, with the reason; they go on the leaderboard.
    pub skipped: Vec<(String, String)>,
}

/// Why no plan could be made.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// A network name is not registered.
    #[error("unknown network `{name}`; registered networks: {known}")]
    UnknownNetwork {
        /// The name asked for.
        name: String,
        /// The registered names.
        known: String,
    },
    /// No network is registered for the task.
    #[error("no network family for {0} is compiled into this binary")]
    NoNetwork(Task),
    /// Every network asked for is unusable here (wrong task, unknown backbone).
    #[error("nothing to train: {0}")]
    NothingToTrain(String),
    /// A value the registered stages refuse, with `file:line` and the valid values.
    #[error("{0}")]
    Invalid(String),
}

/// The families a pipeline trains: the ones it names, or every registered one; only those for
/// `task` when it is known.
fn selected(
    pipeline: &Pipeline,
    task: Option<Task>,
) -> Result<Vec<&'static dyn NetworkFamily>, PlanError> {
    let all = autodl_api::networks();
    let for_task = |f: &&'static dyn NetworkFamily| task.is_none_or(|t| f.task() == t);
    if pipeline.train.networks.is_empty() {
        return Ok(all.iter().copied().filter(for_task).collect());
    }
    let mut families = Vec::new();
    for name in &pipeline.train.networks {
        let family = autodl_api::network(name).ok_or_else(|| PlanError::UnknownNetwork {
            name: name.clone(),
            known: all.iter().map(|n| n.name()).collect::<Vec<_>>().join(", "),
        })?;
        if for_task(&family) {
            families.push(family);
        }
    }
    Ok(families)
}

fn names<T>(items: &[T], name: impl Fn(&T) -> &str) -> String {
    items.iter().map(name).collect::<Vec<_>>().join(", ")
}

/// A pipeline value in a family's parameter table, as the family's parameters hold it.
fn param_value(value: &toml::Value) -> Option<ParamValue> {
    Some(match value {
        toml::Value::Integer(i) => ParamValue::Number(*i as f64),
        toml::Value::Float(f) => ParamValue::Number(*f),
        toml::Value::String(s) => ParamValue::Text(s.clone()),
        toml::Value::Boolean(b) => ParamValue::Flag(*b),
        _ => return None,
    })
}

/// The `[train]` keys that are shorthand for a parameter of every family declaring it.
fn shared_params(pipeline: &Pipeline) -> Vec<(&'static str, Located<ParamValue>)> {
    let t = &pipeline.train;
    let mut out = Vec::new();
    if let Some(b) = &t.class_balance {
        let word = if b.value { "balanced" } else { "none" };
        out.push((
            "class-balance",
            Located::at_line(ParamValue::Text(word.into()), b.line),
        ));
    }
    if let Some(d) = &t.dice_fraction {
        out.push((
            "dice-fraction",
            Located::at_line(ParamValue::Number(d.value), d.line),
        ));
    }
    if let Some(g) = &t.focal_gamma {
        out.push((
            "focal-gamma",
            Located::at_line(ParamValue::Number(g.value), g.line),
        ));
    }
    out
}

/// `family`'s parameters for a trial: its `[params.<family>]` table and the `[train]`
/// shorthands it declares, each checked against the family's declaration (an error names the
/// file, line and valid values), with the defaults filled in.
pub fn family_params(pipeline: &Pipeline, family: &dyn NetworkFamily) -> Result<Params, PlanError> {
    let decls = family.params();
    let mut given = Vec::new();
    for (key, value) in shared_params(pipeline) {
        if decls.iter().any(|d| d.name == key) {
            let at = pipeline.at(&value);
            given.push((key.to_owned(), value.value, at));
        }
    }
    if let Some(table) = pipeline.params.get(family.name()) {
        given.extend(table_values(pipeline, table)?);
    }
    checked_params(
        family.name(),
        &decls,
        given,
        &pipeline.source.display().to_string(),
    )
}

/// A `[params.<family>]` or `[[augment.steps]]` table's values as parameter values, each with
/// its `file:line`.
fn table_values<'a>(
    pipeline: &Pipeline,
    table: impl IntoIterator<Item = (&'a String, &'a Located<toml::Value>)>,
) -> Result<Vec<(String, ParamValue, String)>, PlanError> {
    table
        .into_iter()
        .map(|(key, value)| {
            let at = pipeline.at(value);
            let v = param_value(&value.value).ok_or_else(|| {
                PlanError::Invalid(format!(
                    "{at}: parameter `{key}` must be a number, a word or true/false"
                ))
            })?;
            Ok((key.clone(), v, at))
        })
        .collect()
}

/// The trials' augmentation from a pipeline's `[augment]`: the registered augmentation
/// pipeline, its preset, or the listed augmentations with their parameters checked against
/// what each declares (an error names the file, line and valid values) and completed with
/// their defaults.
pub fn augment_spec(pipeline: &Pipeline) -> Result<AugmentSpec, PlanError> {
    let a = &pipeline.augment;
    let Some(builder) = autodl_api::augment_pipeline(&a.pipeline.value) else {
        return Err(PlanError::Invalid(format!(
            "{}: unknown augmentation pipeline `{}`; registered augmentation pipelines: {}",
            pipeline.at(&a.pipeline),
            a.pipeline.value,
            names(&autodl_api::augment_pipelines(), |p| p.name())
        )));
    };
    if !builder.presets().contains(&a.preset.value.as_str()) {
        return Err(PlanError::Invalid(format!(
            "{}: unknown augmentation preset `{}`; {} presets: {}",
            pipeline.at(&a.preset),
            a.preset.value,
            builder.name(),
            builder.presets().join(", ")
        )));
    }
    let mut steps = Vec::new();
    for step in &a.steps {
        let Some(augmenter) = autodl_api::augmenter(&step.name.value) else {
            return Err(PlanError::Invalid(format!(
                "{}: unknown augmentation `{}`; registered augmentations: {}",
                pipeline.at(&step.name),
                step.name.value,
                names(&autodl_api::augmenters(), |a| a.name())
            )));
        };
        let params = checked_params(
            &format!("augmentation {}", augmenter.name()),
            &augmenter.params(),
            table_values(pipeline, &step.params)?,
            &pipeline.at(&step.name),
        )?;
        let checked = AugmentStep {
            name: step.name.value.clone(),
            probability: step.probability as f32,
            params,
        };
        // What only the augmentation knows (a range given upside down) shows in building it.
        let alone = AugmentSpec {
            pipeline: a.pipeline.value.clone(),
            preset: a.preset.value.clone(),
            steps: vec![checked.clone()],
            strength: a.strength as f32,
            mosaic: 0.0,
            mixup: 0.0,
        };
        for task in [Task::Detection, Task::PixelClassification] {
            if let Err(e) = builder.build(&alone, task) {
                return Err(PlanError::Invalid(format!(
                    "{}: {e}",
                    pipeline.at(&step.name)
                )));
            }
        }
        steps.push(checked);
    }
    Ok(AugmentSpec {
        pipeline: a.pipeline.value.clone(),
        preset: a.preset.value.clone(),
        steps,
        strength: a.strength as f32,
        mosaic: a.mosaic.value as f32,
        mixup: a.mixup.value as f32,
    })
}

/// Checks values given for a stage's parameters (`(key, value, file:line)`) against its
/// declarations and fills in the defaults. `what` names the stage in errors; `at` is where
/// missing values would have been written.
fn checked_params(
    what: &str,
    decls: &[autodl_api::ParamDecl],
    given: Vec<(String, ParamValue, String)>,
    at: &str,
) -> Result<Params, PlanError> {
    let mut checked = Params::new();
    for (key, value, at) in given {
        let Some(decl) = decls.iter().find(|d| d.name == key) else {
            return Err(PlanError::Invalid(format!(
                "{at}: {what} has no parameter `{key}`; {}",
                if decls.is_empty() {
                    "it takes none".to_owned()
                } else {
                    format!("valid parameters: {}", names(decls, |d| d.name))
                }
            )));
        };
        let value = decl
            .check(&value)
            .map_err(|e| PlanError::Invalid(format!("{at}: {what}: {e}")))?;
        checked.insert(key, value);
    }
    autodl_api::resolve_params(decls, &checked)
        .map_err(|e| PlanError::Invalid(format!("{at}: {what}: {e}")))
}

/// Checks every stage a pipeline names against what is registered: networks and their
/// parameters, the ranking metric, tuner, batch deducer, evaluator and augmentations. `task` narrows the
/// networks when the data's task is known (`autodl check` does not read the data).
pub fn check_stages(pipeline: &Pipeline, task: Option<Task>) -> Result<(), PlanError> {
    let families = selected(pipeline, task)?;
    let tuner = &pipeline.tune.tuner;
    if autodl_api::tuner(&tuner.value).is_none() {
        return Err(PlanError::Invalid(format!(
            "{}: unknown tuner `{}`; registered tuners: {}",
            pipeline.at(tuner),
            tuner.value,
            names(&autodl_api::tuners(), |t| t.name())
        )));
    }
    let deducer = &pipeline.batch.deducer;
    if autodl_api::batch_deducer(&deducer.value).is_none() {
        return Err(PlanError::Invalid(format!(
            "{}: unknown batch deducer `{}`; registered deducers: {}",
            pipeline.at(deducer),
            deducer.value,
            names(&autodl_api::batch_deducers(), |d| d.name())
        )));
    }
    // As training does: a family without the backbone is left out, and none with it is an
    // error.
    if let Some(b) = &pipeline.train.backbone
        && !families.is_empty()
        && !families.iter().any(|f| f.backbones().contains(&b.as_str()))
    {
        let mut available: Vec<&str> = families
            .iter()
            .flat_map(|f| f.backbones().iter().copied())
            .collect();
        available.sort_unstable();
        available.dedup();
        return Err(PlanError::Invalid(format!(
            "{}: train.backbone `{b}` is offered by none of {}; backbones: {}",
            pipeline.source.display(),
            names(&families, |f| f.name()),
            available.join(", ")
        )));
    }
    let evaluator = check_evaluator(pipeline, task, &families)?;
    augment_spec(pipeline)?;
    let a = &pipeline.augment;
    for mixing in [&a.mosaic, &a.mixup] {
        let detects = families.iter().any(|f| f.task() == Task::Detection);
        if mixing.value > 0.0 && !families.is_empty() && !detects {
            return Err(PlanError::Invalid(format!(
                "{}: mosaic and mixup combine detection samples; this pipeline trains {}",
                pipeline.at(mixing),
                names(&families, |f| f.name())
            )));
        }
    }
    for (name, table) in &pipeline.params {
        if autodl_api::network(name).is_none() {
            let line = table.values().map(|v| v.line).min().unwrap_or(0);
            let at = pipeline.at(&Located::at_line((), line));
            return Err(PlanError::Invalid(format!(
                "{at}: [params.{name}] names no registered network; registered networks: {}",
                names(&autodl_api::networks(), |n| n.name())
            )));
        }
    }
    for family in &families {
        family_params(pipeline, *family)?;
    }
    for (key, value) in shared_params(pipeline) {
        let readers: Vec<_> = families
            .iter()
            .filter(|f| f.params().iter().any(|d| d.name == key))
            .collect();
        if readers.is_empty() && !families.is_empty() {
            return Err(PlanError::Invalid(format!(
                "{}: train.{key} is read by {}; this pipeline trains {}",
                pipeline.at(&value),
                readers_of(key),
                names(&families, |f| f.name())
            )));
        }
    }
    if let Some(name) = &pipeline.train.model_name
        && (name.is_empty()
            || name.starts_with('.')
            || name.contains(['/', '\\', ':'])
            || name.chars().any(char::is_control))
    {
        return Err(PlanError::Invalid(format!(
            "{}: train.model-name `{name}` must be a plain file name (no folder, no leading dot)",
            pipeline.source.display()
        )));
    }
    if let Some(asked) = &pipeline.train.metric {
        for family in &families {
            let metric = autodl_api::metric_for_task(asked, family.task());
            let metrics = family.metrics();
            if !metrics.iter().any(|m| m.name == metric) {
                return Err(PlanError::Invalid(format!(
                    "{}: train.metric `{metric}` is not reported by {}; it reports {}",
                    pipeline.source.display(),
                    family.name(),
                    names(&metrics, |m| m.name)
                )));
            }
        }
        if let Some(e) = evaluator {
            let metric = autodl_api::metric_for_task(asked, e.task());
            let metrics = e.metrics();
            if !metrics.iter().any(|m| m.name == metric) {
                return Err(PlanError::Invalid(format!(
                    "{}: train.metric `{metric}` is not reported by evaluator {}; it reports {}",
                    pipeline.source.display(),
                    e.name(),
                    names(&metrics, |m| m.name)
                )));
            }
        }
    }
    Ok(())
}

/// The evaluator `[evaluate]` names, checked: registered, and scoring the task of the data
/// (when known) and of every network the pipeline lists. `None` when the pipeline names none
/// (each trial then uses the one registered for its task).
fn check_evaluator(
    pipeline: &Pipeline,
    task: Option<Task>,
    families: &[&'static dyn NetworkFamily],
) -> Result<Option<&'static dyn Evaluator>, PlanError> {
    let Some(name) = &pipeline.evaluate.evaluator else {
        return Ok(None);
    };
    let all = autodl_api::evaluators();
    let Some(evaluator) = autodl_api::evaluator(&name.value) else {
        return Err(PlanError::Invalid(format!(
            "{}: unknown evaluator `{}`; registered evaluators: {}",
            pipeline.at(name),
            name.value,
            names(&all, |e| e.name())
        )));
    };
    let for_task = |t: Task| {
        let fit: Vec<_> = all.iter().filter(|e| e.task() == t).collect();
        if fit.is_empty() {
            format!("no evaluator for {t} is registered")
        } else {
            format!(
                "registered evaluators for {t}: {}",
                names(&fit, |e| e.name())
            )
        }
    };
    if let Some(t) = task
        && evaluator.task() != t
    {
        return Err(PlanError::Invalid(format!(
            "{}: evaluator `{}` scores {}, the data is {t}; {}",
            pipeline.at(name),
            name.value,
            evaluator.task(),
            for_task(t)
        )));
    }
    // Without a task, every registered network is selected and the data decides which train.
    if !pipeline.train.networks.is_empty()
        && let Some(family) = families.iter().find(|f| f.task() != evaluator.task())
    {
        return Err(PlanError::Invalid(format!(
            "{}: evaluator `{}` scores {}, but {} solves {}; {}",
            pipeline.at(name),
            name.value,
            evaluator.task(),
            family.name(),
            family.task(),
            for_task(family.task())
        )));
    }
    Ok(Some(evaluator))
}

/// The registered families that declare parameter `key`.
fn readers_of(key: &str) -> String {
    let readers: Vec<&str> = autodl_api::networks()
        .iter()
        .filter(|f| f.params().iter().any(|d| d.name == key))
        .map(|f| f.name())
        .collect();
    if readers.is_empty() {
        "no registered network".to_owned()
    } else {
        readers.join(", ")
    }
}

/// Plans basic mode: every selected network once with its default (or the chosen) backbone.
pub fn plan(pipeline: &Pipeline, task: Task, out: PathBuf) -> Result<Plan, PlanError> {
    check_stages(pipeline, Some(task))?;
    let all = autodl_api::networks();
    let known = || all.iter().map(|n| n.name()).collect::<Vec<_>>().join(", ");
    let mut families: Vec<&'static dyn NetworkFamily> = Vec::new();
    let mut skipped = Vec::new();
    if pipeline.train.networks.is_empty() {
        families.extend(all.iter().copied().filter(|n| n.task() == task));
    } else {
        for name in &pipeline.train.networks {
            let family = autodl_api::network(name).ok_or_else(|| PlanError::UnknownNetwork {
                name: name.clone(),
                known: known(),
            })?;
            if family.task() == task {
                families.push(family);
            } else {
                skipped.push((
                    name.clone(),
                    format!("{name} solves {}, the data is {task}", family.task()),
                ));
            }
        }
    }
    if families.is_empty() && skipped.is_empty() {
        return Err(PlanError::NoNetwork(task));
    }
    let data = DataSpec {
        root: pipeline.data.path.clone(),
        format: pipeline.data.format.clone(),
        images_dir: pipeline.data.images_dir.clone(),
        val_fraction: pipeline.data.val_fraction,
        test_fraction: pipeline.data.test_fraction,
        ignore_index: pipeline.data.ignore_index,
        fail_on_bad_sample: pipeline.data.on_bad_sample == autodl_config::OnBadSample::Fail,
        bands: pipeline.data.band_indices(),
    };
    let t = &pipeline.train;
    let training = TrainOptions {
        optimizer: match t.optimizer.as_str() {
            "sgd" => OptimizerKind::Sgd,
            _ => OptimizerKind::AdamW,
        },
        schedule: match t.schedule.as_str() {
            "cosine" => ScheduleKind::Cosine,
            _ => ScheduleKind::OneCycle,
        },
        weight_decay: t.weight_decay,
        pretrained: t.pretrained,
        metric: t
            .metric
            .as_deref()
            .map(|m| autodl_api::metric_for_task(m, task).to_owned()),
    };
    let augment = augment_spec(pipeline)?;
    let mut trials = Vec::new();
    for family in families {
        let backbone = match &pipeline.train.backbone {
            Some(b) if family.backbones().contains(&b.as_str()) => b.clone(),
            Some(b) => {
                skipped.push((
                    family.name().to_owned(),
                    format!(
                        "no backbone `{b}` (available: {})",
                        family.backbones().join(", ")
                    ),
                ));
                continue;
            }
            None => family
                .backbones()
                .first()
                .copied()
                .unwrap_or("default")
                .to_owned(),
        };
        let params = family_params(pipeline, family)?;
        let id = format!("{}-{}", family.name(), backbone);
        trials.push(TrialSpec {
            out_dir: out.join("trials").join(&id),
            id,
            family: family.name().to_owned(),
            backbone,
            data: data.clone(),
            backend: pipeline.backend.clone(),
            seed: pipeline.seed,
            batch_size: match pipeline.train.batch_size {
                Auto::Auto => None,
                Auto::Fixed(b) => Some(b),
            },
            learning_rate: match pipeline.train.learning_rate {
                Auto::Auto => None,
                Auto::Fixed(lr) => Some(lr),
            },
            max_epochs: pipeline.train.max_epochs,
            patience: pipeline.train.patience,
            time_budget_secs: 0.0,
            tile_size: pipeline.train.tile_size,
            training: training.clone(),
            augment: augment.clone(),
            batch_deducer: pipeline.batch.deducer.value.clone(),
            evaluator: pipeline
                .evaluate
                .evaluator
                .as_ref()
                .map(|e| e.value.clone()),
            resume: false,
            rung: 0,
            init_from: None,
            params,
        });
    }
    // A run that could train nothing is a usage error, found before any work.
    if trials.is_empty() {
        let reasons: Vec<String> = skipped
            .iter()
            .map(|(name, why)| format!("{name}: {why}"))
            .collect();
        return Err(PlanError::NothingToTrain(reasons.join("; ")));
    }
    Ok(Plan {
        task,
        out,
        time_limit_secs: pipeline.train.time_limit.as_secs() as f64,
        trials,
        skipped,
    })
}
