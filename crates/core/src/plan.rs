//! From a pipeline to a list of trials.

use std::path::PathBuf;

use autodl_api::{DataSpec, NetworkFamily, ParamValue, Params, Task, TrialSpec};
use autodl_config::{Auto, Pipeline};

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
}

/// Plans basic mode: every selected network once with its default (or the chosen) backbone.
pub fn plan(pipeline: &Pipeline, task: Task, out: PathBuf) -> Result<Plan, PlanError> {
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
        ignore_index: pipeline.data.ignore_index,
        fail_on_bad_sample: pipeline.data.on_bad_sample == autodl_config::OnBadSample::Fail,
    };
    let mut params = Params::new();
    let t = &pipeline.train;
    params.insert("optimizer".into(), ParamValue::Text(t.optimizer.clone()));
    params.insert("schedule".into(), ParamValue::Text(t.schedule.clone()));
    params.insert(
        "class-balance".into(),
        ParamValue::Text(if t.class_balance { "balanced" } else { "none" }.into()),
    );
    params.insert("dice-fraction".into(), ParamValue::Number(t.dice_fraction));
    params.insert("focal-gamma".into(), ParamValue::Number(t.focal_gamma));
    params.insert(
        "pretrained".into(),
        ParamValue::Text(t.pretrained.to_string()),
    );
    if let Some(metric) = &t.metric {
        params.insert("metric".into(), ParamValue::Text(metric.clone()));
    }
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
            augment: pipeline.augment.preset.clone(),
            augment_strength: 1.0,
            params: params.clone(),
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
