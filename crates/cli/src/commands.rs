//! The subcommands.

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use autodl_api::{EpochRecord, Progress, Task, TrialResult, TrialSpec, TrialStatus};
use autodl_config::{Auto, BudgetSchedule, Mode, Pipeline, TimeLimit};
use autodl_core::{ChildRunner, Event};
use autodl_data::{Format, OnBadSample, ReadOptions};

use crate::Failure;
use crate::progress::{TrialBars, spinner};

pub type Outcome = Result<(), Failure>;

/// `autodl data inspect`.
#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    /// The dataset folder.
    dir: PathBuf,
    /// Force a format instead of detecting it.
    #[arg(long)]
    format: Option<String>,
    /// Image sub-folder (default `images`).
    #[arg(long)]
    images_dir: Option<String>,
    /// Validation fraction when the dataset has no `splits/` folder.
    #[arg(long, default_value_t = 0.2)]
    val_fraction: f64,
    /// Seed of the random split.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// `autodl data preview`.
#[derive(clap::Args, Debug)]
pub struct PreviewArgs {
    /// The dataset folder.
    dir: PathBuf,
    /// Augmented copies to draw beside each sample (the task's default preset, or the
    /// `[augment]` of `--pipeline`).
    #[arg(long, default_value_t = 0)]
    augment: u32,
    /// A pipeline file whose `[augment]` section (preset, or steps with their parameters)
    /// draws the augmented copies.
    #[arg(long)]
    pipeline: Option<PathBuf>,
    /// How many training samples to draw.
    #[arg(long, default_value_t = 6)]
    samples: usize,
    /// Image sub-folder (default `images`).
    #[arg(long)]
    images_dir: Option<String>,
    /// Output PNG.
    #[arg(long, default_value = "preview.png")]
    out: PathBuf,
}

/// `autodl train`.
#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// A dataset folder (the task comes from its format) or a pipeline `.toml` file.
    input: PathBuf,
    /// Total wall-clock budget, such as `10m` or `2h`.
    #[arg(long)]
    time_limit: Option<TimeLimit>,
    /// `basic` or `advanced`.
    #[arg(long)]
    mode: Option<String>,
    /// How basic mode shares the budget: `halving` (successive halving, the default) or
    /// `even` (an equal share per network).
    #[arg(long)]
    schedule: Option<String>,
    /// Comma-separated network families (default: every one for the task).
    #[arg(long, value_delimiter = ',')]
    networks: Vec<String>,
    /// Backbone for every network.
    #[arg(long)]
    backbone: Option<String>,
    /// Output folder (default `runs/<dataset name>`).
    #[arg(long)]
    out: Option<PathBuf>,
    /// `cpu`, `cuda` or `cuda:N`.
    #[arg(long)]
    backend: Option<String>,
    /// Seed for the split, initialisation and augmentation.
    #[arg(long)]
    seed: Option<u64>,
    /// Most epochs per model.
    #[arg(long)]
    max_epochs: Option<u32>,
    /// Fixed batch size instead of deducing one.
    #[arg(long)]
    batch_size: Option<u32>,
    /// Image sub-folder (for example `images_ms` for multispectral tiles).
    #[arg(long)]
    images_dir: Option<String>,
    /// Ranking metric (`miou`, `accuracy`, `dice`, `ap50`, `coco-ap`, `arcgis-ap10`, or
    /// `arcgis` for ArcGIS's rule: pixel accuracy, or AP at IoU 0.1).
    #[arg(long)]
    metric: Option<String>,
    /// Package every trained model (`true`, the default) or only the best (`false`), as
    /// ArcGIS's "Save Evaluated Models".
    #[arg(long)]
    save_evaluated_models: Option<bool>,
    /// Name of the best model's package, `<out>/<NAME>.dlpk` (ArcGIS's "Output Model Name").
    #[arg(long)]
    model_name: Option<String>,
    /// A `.dlpk` (or model folder) to fine-tune on this data: its family and backbone are
    /// trained, starting from its weights (ArcGIS's "Pretrained Model").
    #[arg(long)]
    pretrained_model: Option<PathBuf>,
    /// Ensembles of the best 2 up to N models are tried after ranking (below 2: none).
    #[arg(long)]
    ensemble_top: Option<u32>,
    /// Do not try flip test-time augmentation.
    #[arg(long)]
    no_tta: bool,
    /// Share of the samples held out as a test split when the data has no `splits/` folder;
    /// nothing is tuned or chosen on it, and every packaged model is scored on it once.
    #[arg(long)]
    test_fraction: Option<f64>,
    /// The bands to train on, numbered from 1 (such as `4,3,2`); the model stores them and
    /// prediction picks the same bands from a scene.
    #[arg(long, value_delimiter = ',')]
    bands: Option<Vec<u32>>,
    /// A network-family plugin library to load (repeatable), besides the pipeline's
    /// `plugins` and those in the folders of `AUTODL_PLUGIN_PATH`.
    #[arg(long)]
    plugin: Vec<PathBuf>,
    /// Where the study (every trial and its result) lives: `sqlite://PATH` or
    /// `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE` (default: `AUTODL_STUDY`, else
    /// `study.sqlite` in the output folder).
    #[arg(long)]
    study: Option<String>,
    /// Train through `autodl worker` processes sharing the study: N started here, besides any
    /// started elsewhere; 0 plans the study and waits for workers started elsewhere.
    #[arg(long)]
    workers: Option<u32>,
    /// Seconds without a worker's heartbeat after which its trial is claimed again
    /// (default 60).
    #[arg(long)]
    lease: Option<f64>,
    /// Most starts of one trial whose workers are lost (default 3).
    #[arg(long)]
    max_attempts: Option<u32>,
}

/// `autodl predict`.
#[derive(clap::Args, Debug)]
pub struct PredictArgs {
    /// A `.dlpk` package or a model folder (from a run's `models/`, `best-model/` or `trials/`).
    #[arg(long)]
    model: PathBuf,
    /// Images or folders of images.
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// Output folder.
    #[arg(long, default_value = "predictions")]
    out: PathBuf,
    /// `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    backend: String,
    /// Detectors: keep boxes scoring at least this (default: the model's threshold, the
    /// validation F1 optimum). 0.05, the lowest score kept, gives every box validation's AP
    /// ranked.
    #[arg(long)]
    score_threshold: Option<f64>,
    /// Replace predictions an earlier run left in the output folder (without it, prediction
    /// refuses to overwrite any file).
    #[arg(long)]
    overwrite: bool,
    /// A network-family plugin library to load (repeatable), besides those in the folders
    /// of `AUTODL_PLUGIN_PATH`: the one a plugin family's model needs.
    #[arg(long)]
    plugin: Vec<PathBuf>,
}

/// `autodl plugins`.
#[derive(clap::Args, Debug)]
pub struct PluginsArgs {
    /// A network-family plugin library to load and list (repeatable), besides those in the
    /// folders of `AUTODL_PLUGIN_PATH`.
    #[arg(long)]
    plugin: Vec<PathBuf>,
}

/// Loads the plugin libraries in the folders of `AUTODL_PLUGIN_PATH`, then `explicit`, and
/// registers their families; a library that cannot be loaded is a usage error (exit code 2).
pub fn load_plugins(explicit: &[PathBuf]) -> Outcome {
    let mut paths = match std::env::var_os(autodl_plugin_abi::host::PATH_VAR) {
        Some(value) => autodl_plugin_abi::host::search_path(&value).map_err(|e| {
            Failure::usage(
                anyhow::Error::new(e)
                    .context(format!("cannot read {}", autodl_plugin_abi::host::PATH_VAR)),
            )
        })?,
        None => Vec::new(),
    };
    paths.extend(explicit.iter().cloned());
    for path in &paths {
        autodl_plugin_abi::host::load(path).map_err(Failure::usage)?;
    }
    Ok(())
}

/// `--plugin PATH` for each library loaded, for a child process that must find the same
/// families.
pub fn plugin_args() -> Vec<std::ffi::OsString> {
    autodl_plugin_abi::host::loaded_paths()
        .into_iter()
        .flat_map(|p| [std::ffi::OsString::from("--plugin"), p.into_os_string()])
        .collect()
}

pub fn check(file: &Path) -> Outcome {
    let pipeline = Pipeline::load(file).map_err(Failure::usage)?;
    load_plugins(&pipeline.plugins)?;
    autodl_backend::BackendChoice::resolve_name_only(&pipeline.backend).map_err(Failure::usage)?;
    // Networks, their parameters, the metric, tuner, deducer and augmentations against what
    // is compiled in; the data's task is known only when the pipeline says it.
    autodl_core::check_stages(&pipeline, pipeline.task).map_err(Failure::usage)?;
    outln!("{}: ok", file.display());
    Ok(())
}

fn parse_format(name: Option<&str>) -> Result<Option<Format>, Failure> {
    name.map(|f| {
        f.parse::<Format>()
            .map_err(|e| Failure::usage(anyhow!("{e}")))
    })
    .transpose()
}

pub fn inspect(args: &InspectArgs, quiet: bool) -> Outcome {
    let opts = ReadOptions {
        format: parse_format(args.format.as_deref())?,
        images_dir: args.images_dir.clone(),
        val_fraction: args.val_fraction,
        test_fraction: 0.0,
        seed: args.seed,
        on_bad_sample: OnBadSample::Skip,
        ignore_index: None,
        bands: None,
    };
    let spin = spinner(quiet, "reading and validating images");
    let ds = autodl_data::open(&args.dir, &opts)
        .with_context(|| format!("cannot read dataset {}", args.dir.display()));
    spin.finish_and_clear();
    let ds = ds?;
    let summary = autodl_data::summarize(&ds).context("cannot summarise dataset")?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        outln!("{}", summary.to_text().trim_end());
    }
    Ok(())
}

pub fn preview(args: &PreviewArgs) -> Outcome {
    let opts = ReadOptions {
        images_dir: args.images_dir.clone(),
        ..ReadOptions::default()
    };
    let ds = autodl_data::open(&args.dir, &opts)
        .with_context(|| format!("cannot read dataset {}", args.dir.display()))?;
    let task = ds.format.task();
    let names: Vec<String> = ds.classes.iter().map(|c| c.name.clone()).collect();
    let index: std::collections::HashMap<u32, u32> = ds
        .classes
        .iter()
        .enumerate()
        .map(|(i, c)| (c.value, i as u32))
        .collect();
    let spec = match &args.pipeline {
        Some(file) => {
            let pipeline = Pipeline::load(file).map_err(Failure::usage)?;
            autodl_core::augment_spec(&pipeline).map_err(Failure::usage)?
        }
        None => autodl_api::AugmentSpec::preset("default"),
    };
    // The registered augmentation pipeline builds it, exactly as for training.
    let builder = autodl_api::augment_pipeline(&spec.pipeline)
        .ok_or_else(|| anyhow!("no augmentation pipeline `{}` is registered", spec.pipeline))?;
    let pipeline = builder.build(&spec, task)?;
    let mut tiles = Vec::new();
    for s in ds.train.iter().take(args.samples.max(1)) {
        let img = ds.load_image(s)?;
        let mask = match (&s.label, task) {
            (Some(label), Task::PixelClassification) => {
                let m = autodl_data::load_mask(label)?;
                Some(
                    m.data
                        .iter()
                        .map(|v| index.get(v).copied().unwrap_or(autodl_api::IGNORE))
                        .collect(),
                )
            }
            _ => None,
        };
        // Boxes as continuous coordinates: a VOC box's xmax is the last pixel it covers.
        let boxes = s.boxes.iter().map(|b| (b.corners(), b.class)).collect();
        let sample = autodl_api::AugSample {
            width: img.width,
            height: img.height,
            bands: img.bands,
            image: img.data,
            mask,
            boxes,
        };
        for k in 0..args.augment {
            let mut copy = sample.clone();
            pipeline.apply(&mut copy, u64::from(k) + 1);
            tiles.push((copy, names.clone()));
        }
        tiles.insert(tiles.len() - args.augment as usize, (sample, names.clone()));
    }
    // Small tiles (64 px land-cover chips) are enlarged so their masks and legends are legible.
    let tiles: Vec<_> = tiles
        .into_iter()
        .map(|(s, n)| (enlarge(s, 256), n))
        .collect();
    let grid = autodl_report::preview_grid(&tiles, (args.augment as usize + 1).max(3));
    grid.save(&args.out)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    outln!("{}", args.out.display());
    Ok(())
}

/// Repeats pixels so the sample's longer side is at least `min_side`.
fn enlarge(s: autodl_api::AugSample, min_side: u32) -> autodl_api::AugSample {
    let k = min_side.div_ceil(s.width.max(s.height).max(1));
    if k <= 1 {
        return s;
    }
    let (w, h, kw, kh) = (
        s.width as usize,
        s.height as usize,
        (s.width * k) as usize,
        (s.height * k) as usize,
    );
    let up = |plane: &[u32]| -> Vec<u32> {
        (0..kh * kw)
            .map(|i| plane[(i / kw) / k as usize * w + (i % kw) / k as usize])
            .collect()
    };
    let image = s
        .image
        .chunks(w * h)
        .flat_map(|band| {
            (0..kh * kw).map(move |i| band[(i / kw) / k as usize * w + (i % kw) / k as usize])
        })
        .collect();
    let f = k as f32;
    autodl_api::AugSample {
        width: kw as u32,
        height: kh as u32,
        bands: s.bands,
        image,
        mask: s.mask.as_deref().map(up),
        boxes: s
            .boxes
            .iter()
            .map(|(b, c)| ([b[0] * f, b[1] * f, b[2] * f, b[3] * f], *c))
            .collect(),
    }
}

/// The pipeline for `train`: read from a file, or built from a dataset folder, then overridden
/// by the flags.
fn pipeline_for(args: &TrainArgs) -> Result<Pipeline, Failure> {
    let is_file = args.input.extension().is_some_and(|e| e == "toml");
    let mut p = if is_file {
        Pipeline::load(&args.input).map_err(Failure::usage)?
    } else {
        let text = format!(
            "version = 1\n[data]\npath = {}\n",
            toml_string(&args.input.display().to_string())
        );
        Pipeline::parse(&text, Path::new("<command line>")).map_err(Failure::usage)?
    };
    if let Some(t) = args.time_limit {
        p.train.time_limit = t;
    }
    if let Some(m) = &args.mode {
        p.train.mode = match m.as_str() {
            "basic" => Mode::Basic,
            "advanced" => Mode::Advanced,
            other => {
                return Err(Failure::usage(anyhow!(
                    "unknown mode `{other}`: use basic or advanced"
                )));
            }
        };
    }
    if let Some(schedule) = &args.schedule {
        p.train.budget_schedule = match schedule.as_str() {
            "halving" => BudgetSchedule::Halving,
            "even" => BudgetSchedule::Even,
            other => {
                return Err(Failure::usage(anyhow!(
                    "unknown schedule `{other}`: use halving or even"
                )));
            }
        };
    }
    if !args.networks.is_empty() {
        p.train.networks = args.networks.clone();
    }
    if let Some(b) = &args.backbone {
        p.train.backbone = Some(b.clone());
    }
    if let Some(b) = &args.backend {
        p.backend = b.clone();
    }
    if let Some(s) = args.seed {
        p.seed = s;
    }
    if let Some(e) = args.max_epochs {
        p.train.max_epochs = e.max(1);
    }
    if let Some(b) = args.batch_size {
        p.train.batch_size = Auto::Fixed(b.max(1));
    }
    if let Some(d) = &args.images_dir {
        p.data.images_dir = Some(d.clone());
    }
    if let Some(bands) = &args.bands {
        if bands.is_empty() || bands.contains(&0) {
            return Err(Failure::usage(anyhow!(
                "--bands takes band numbers from 1, such as 4,3,2"
            )));
        }
        p.data.bands = Some(bands.clone());
    }
    if let Some(m) = &args.metric {
        p.train.metric = Some(m.clone());
    }
    if let Some(save) = args.save_evaluated_models {
        p.train.save_evaluated_models = save;
    }
    if let Some(name) = &args.model_name {
        p.train.model_name = Some(name.clone());
    }
    if let Some(model) = &args.pretrained_model {
        p.train.pretrained_model = Some(model.clone());
    }
    if let Some(top) = args.ensemble_top {
        p.ensemble.top = top;
    }
    if args.no_tta {
        p.ensemble.tta = false;
    }
    if let Some(f) = args.test_fraction {
        p.data.test_fraction = f;
    }
    if let Some(o) = &args.out {
        p.out = Some(o.clone());
    }
    if let Some(u) = &args.study {
        p.study.url = Some(u.clone());
    }
    if let Some(w) = args.workers {
        p.study.workers = Some(w);
    }
    if let Some(l) = args.lease {
        if !(l >= 1.0 && l.is_finite()) {
            return Err(Failure::usage(anyhow!(
                "--lease takes seconds, at least 1, found {l}"
            )));
        }
        p.study.lease_secs = l;
    }
    if let Some(m) = args.max_attempts {
        if m == 0 {
            return Err(Failure::usage(anyhow!("--max-attempts must be at least 1")));
        }
        p.study.max_attempts = m;
    }
    Ok(p)
}

fn toml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

pub fn train(args: &TrainArgs, quiet: bool) -> Outcome {
    let started = std::time::Instant::now();
    let mut pipeline = pipeline_for(args)?;
    load_plugins(&[pipeline.plugins.clone(), args.plugin.clone()].concat())?;
    autodl_backend::BackendChoice::resolve(&pipeline.backend).map_err(Failure::usage)?;
    let mut bars = TrialBars::new(quiet);

    // Read and validate the data once here, so bad samples are reported before any training.
    let opts = ReadOptions {
        format: parse_format(pipeline.data.format.as_deref())?,
        images_dir: pipeline.data.images_dir.clone(),
        val_fraction: pipeline.data.val_fraction,
        test_fraction: pipeline.data.test_fraction,
        seed: pipeline.seed,
        on_bad_sample: match pipeline.data.on_bad_sample {
            autodl_config::OnBadSample::Skip => OnBadSample::Skip,
            autodl_config::OnBadSample::Fail => OnBadSample::Fail,
        },
        ignore_index: pipeline.data.ignore_index,
        bands: pipeline.data.band_indices(),
    };
    let spin = spinner(quiet, "reading and validating images");
    let ds = autodl_data::open(&pipeline.data.path, &opts);
    spin.finish_and_clear();
    let ds = ds.with_context(|| format!("cannot read dataset {}", pipeline.data.path.display()))?;
    for bad in &ds.skipped {
        bars.line(&format!("warning: skipped {bad}"));
    }
    let task = ds.format.task();
    if let Some(asked) = pipeline.task
        && asked != task
    {
        return Err(Failure::usage(anyhow!(
            "the pipeline asks for {asked} but {} holds {} data",
            pipeline.data.path.display(),
            ds.format
        )));
    }
    // Fine-tuning: the pretrained model's family and backbone are the run's one network, and
    // its trials start from its weights (unpacked into a folder that lives as long as the run).
    let pretrained = match pipeline.train.pretrained_model.clone() {
        Some(path) => {
            let (holder, dir, meta) = pretrained_model(&path)?;
            if meta.task != task {
                return Err(Failure::usage(anyhow!(
                    "the pretrained model {} is a {} model, but {} holds {} data",
                    path.display(),
                    meta.task,
                    pipeline.data.path.display(),
                    task
                )));
            }
            let names =
                |c: &[autodl_api::ClassInfo]| c.iter().map(|c| c.name.clone()).collect::<Vec<_>>();
            if names(&meta.classes) != names(&ds.classes) {
                return Err(Failure::usage(anyhow!(
                    "the pretrained model {} has the classes {:?}, the data {:?}: fine-tuning needs the same classes in the same order",
                    path.display(),
                    names(&meta.classes),
                    names(&ds.classes)
                )));
            }
            pipeline.train.networks = vec![meta.family.clone()];
            pipeline.train.backbone = Some(meta.backbone.clone());
            bars.line(&format!(
                "fine-tuning {} on {} from {}",
                meta.family,
                meta.backbone,
                path.display()
            ));
            Some((holder, dir))
        }
        None => None,
    };
    let name = pipeline.name.clone().unwrap_or_else(|| {
        pipeline
            .data
            .path
            .file_name()
            .map_or_else(|| "run".to_owned(), |n| n.to_string_lossy().into_owned())
    });
    let out = pipeline
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs").join(&name));
    // Workers, maybe on other machines, are told where trials go: not relative to this
    // process's folder.
    let out = if pipeline.study.workers.is_some() {
        std::path::absolute(&out).unwrap_or(out)
    } else {
        out
    };
    let mut plan = autodl_core::plan(&pipeline, task, out.clone()).map_err(Failure::usage)?;
    // The time limit covers the whole run: what reading and validating the data took comes
    // out of the training budget (the leaderboard, report and packages fit in the reserve
    // `run_plan` keeps).
    let limit_secs = plan.time_limit_secs;
    // Kept for the ensemble stage after ranking: a share of the limit, at most two minutes.
    let ensemble_secs = if pipeline.ensemble.top >= 2 || pipeline.ensemble.tta {
        (0.06 * limit_secs).min(120.0)
    } else {
        0.0
    };
    // And for scoring the packaged models on the test split, after the ensembles.
    let test_secs = if ds.test.is_empty() {
        0.0
    } else {
        (0.03 * limit_secs).min(60.0)
    };
    plan.time_limit_secs =
        (plan.time_limit_secs - started.elapsed().as_secs_f64() - ensemble_secs - test_secs)
            .max(0.0);
    // Held until the run ends: a second run on the same folder would mix its models and
    // study with this one's.
    let _lock = RunLock::acquire(&out)?;
    if let Some((_, dir)) = &pretrained {
        // Workers read it from the output folder they share, not from this machine's
        // temporary folder.
        let dir = if pipeline.study.workers.is_some() {
            let shared = out.join("pretrained-model");
            replace_dir(dir, &shared)
                .context("cannot copy the pretrained model into the output folder")?;
            shared
        } else {
            dir.clone()
        };
        for trial in &mut plan.trials {
            trial.init_from = Some(dir.clone());
        }
    }
    bars.line(&format!(
        "{} data ({}, {} train / {} val / {} test), {} network(s), time limit {}, backend {}, output {}",
        task,
        ds.format,
        ds.train.len(),
        ds.val.len(),
        ds.test.len(),
        plan.trials.len(),
        pipeline.train.time_limit,
        pipeline.backend,
        out.display()
    ));
    let exe = std::env::current_exe().context("cannot find the autodl binary to start trials")?;
    let runner = ChildRunner {
        exe,
        grace_secs: 30.0,
        extra_args: plugin_args(),
        cancel: Default::default(),
    };
    let higher = higher_is_better(&pipeline, task);
    let tuner =
        match pipeline.train.mode {
            Mode::Basic => None,
            // The plan checked the name against the registry.
            Mode::Advanced => Some(autodl_api::tuner(&pipeline.tune.tuner.value).ok_or_else(
                || anyhow!("no tuner `{}` is compiled in", pipeline.tune.tuner.value),
            )?),
        };
    let options = autodl_core::RunOptions {
        higher_is_better: higher,
        tuner,
        tune_top: pipeline.tune.top as usize,
        max_tuning_trials: pipeline.tune.max_trials as usize,
        halving: pipeline.train.budget_schedule == BudgetSchedule::Halving,
        study: crate::study::url_of(&pipeline)?,
        pruner: (pipeline.tune.pruner.value == "asha").then(|| {
            autodl_core::Pruner::with(
                pipeline.tune.prune_eta as usize,
                pipeline.tune.prune_min_epochs,
            )
        }),
    };
    let mut board = match pipeline.study.workers {
        None => autodl_core::run_plan(
            &plan,
            &runner,
            &mut |spec, ev| bars.event(spec, ev),
            &options,
        )?,
        Some(n) => {
            let url = options
                .study
                .clone()
                .unwrap_or_else(|| autodl_core::StudyUrl::in_folder(&out));
            crate::study::coordinate(&plan, &url, n, &pipeline, &options, &runner.exe, &mut bars)?
        }
    };
    bars.finish();
    board.rank();
    if board.best().is_none() && out.join("leaderboard.json").is_file() {
        // A rerun that trained nothing leaves the previous complete set of results alone.
        let failed = out.join("failed-run.md");
        autodl_api::files::write_atomic(&failed, board.to_markdown().as_bytes())
            .with_context(|| format!("cannot write {}", failed.display()))?;
        outln!("{}", board.to_markdown());
        return Err(anyhow!(
            "no network finished training (this run's board: {}); the earlier results in {} are kept",
            failed.display(),
            out.display()
        )
        .into());
    }
    if let Some(evaluator) = evaluator_of(&pipeline, task) {
        let stage = crate::ensemble::Stage {
            exe: &runner.exe,
            ds: &ds,
            out: &out,
            evaluator,
            higher_is_better: higher,
            backend: &pipeline.backend,
            top: pipeline.ensemble.top as usize,
            tta: pipeline.ensemble.tta,
            keep_all: pipeline.ensemble.keep == autodl_config::EnsembleKeep::All,
            // What run_plan keeps for the leaderboard, packages and report stays kept.
            deadline: started
                + std::time::Duration::from_secs_f64((0.97 * limit_secs - test_secs).max(0.0)),
        };
        crate::ensemble::run(&stage, &mut board, &mut |line| bars.line(line))
            .context("the ensemble stage failed")?;
    }
    board
        .write(&out)
        .with_context(|| format!("cannot write the leaderboard into {}", out.display()))?;
    let best_id = board.best().map(|b| b.id.clone());
    let packages = package_models(
        &board,
        &out,
        (!pipeline.train.save_evaluated_models)
            .then_some(best_id.as_deref())
            .flatten(),
    )?;
    if !ds.test.is_empty()
        && let Some(evaluator) = evaluator_of(&pipeline, task)
    {
        // Ranking is done: now, and only now, each packaged model meets the test split, once.
        bars.line(&format!(
            "scoring {} packaged model(s) on the test split ({} images)",
            packages.len(),
            ds.test.len()
        ));
        for row in &mut board.rows {
            let Some(pkg) = packages
                .iter()
                .find(|p| p.file_stem().is_some_and(|s| s.to_string_lossy() == row.id))
            else {
                continue;
            };
            let threshold = row
                .model_dir
                .as_deref()
                .and_then(|d| crate::ensemble::delivered_threshold(Path::new(d)));
            match crate::ensemble::score(
                &runner.exe,
                pkg,
                &ds,
                &ds.test,
                evaluator,
                threshold,
                &pipeline.backend,
            ) {
                Ok(m) => {
                    row.test_metric = m.metric(&row.metric_name);
                    row.test_metrics = autodl_core::metrics_text(&m.scores());
                }
                Err(e) => bars.line(&format!("{}: no test score: {e:#}", row.id)),
            }
        }
        board
            .write(&out)
            .with_context(|| format!("cannot write the leaderboard into {}", out.display()))?;
    }
    let best_package = out.join(format!(
        "{}.dlpk",
        pipeline
            .train
            .model_name
            .as_deref()
            .or(best_id.as_deref())
            .unwrap_or("best")
    ));
    if let Some(best) = board.best()
        && let Some(dir) = &best.model_dir
    {
        replace_dir(Path::new(dir), &out.join("best-model"))
            .context("cannot copy the best model")?;
        if let Some(pkg) = packages.iter().find(|p| {
            p.file_stem()
                .is_some_and(|s| s.to_string_lossy() == best.id)
        }) {
            copy_atomic(pkg, &best_package).context("cannot copy the best package")?;
        }
    }
    let facts = vec![
        (
            "data".to_owned(),
            format!(
                "{} ({}, {} train / {} val / {} test)",
                pipeline.data.path.display(),
                ds.format,
                ds.train.len(),
                ds.val.len(),
                ds.test.len()
            ),
        ),
        ("task".to_owned(), task.to_string()),
        (
            "time limit".to_owned(),
            pipeline.train.time_limit.to_string(),
        ),
        ("backend".to_owned(), pipeline.backend.clone()),
        (
            "wall time".to_owned(),
            format!("{:.0} s", started.elapsed().as_secs_f64()),
        ),
    ];
    let report_path = crate::report::write(&board, &ds, &out, &name, facts, &pipeline.backend)
        .with_context(|| format!("cannot write the report into {}", out.display()))?;
    outln!("{}", board.to_markdown());
    outln!("leaderboard: {}", out.join("leaderboard.md").display());
    outln!("report: {}", report_path.display());
    match board.best() {
        Some(best) => {
            outln!(
                "best model: {} ({} {:.4}): {}",
                best.id,
                best.metric_name,
                best.metric.unwrap_or(f64::NAN),
                best_package.display()
            );
            Ok(())
        }
        None => {
            Err(anyhow!("no network finished training; see the leaderboard for the reasons").into())
        }
    }
}

/// A pretrained model to fine-tune from: a `.dlpk` unpacked into a temporary folder (kept
/// alive by the first value), or a model folder; with its `model.json`.
fn pretrained_model(
    path: &Path,
) -> Result<(Option<tempfile::TempDir>, PathBuf, autodl_api::ModelMeta), Failure> {
    let unreadable = |e: &dyn std::fmt::Display| {
        Failure::usage(anyhow!(
            "cannot read the pretrained model {}: {e}",
            path.display()
        ))
    };
    let (holder, dir) = if path.extension().is_some_and(|e| e == "dlpk") {
        let holder = tempfile::tempdir().context("cannot create a temporary folder")?;
        let dir = autodl_package::unpack(path, holder.path()).map_err(|e| unreadable(&e))?;
        (Some(holder), dir)
    } else {
        (None, path.to_owned())
    };
    let meta = autodl_api::ModelMeta::read(&dir).map_err(|e| unreadable(&e))?;
    // Absolute, because trials run with the path as given.
    let dir = std::path::absolute(&dir).unwrap_or(dir);
    Ok((holder, dir, meta))
}

/// Writes `models/<id>.dlpk` for every trained model, or for the one named `only`; returns
/// the packages written.
fn package_models(
    board: &autodl_core::Leaderboard,
    out: &Path,
    only: Option<&str>,
) -> anyhow::Result<Vec<PathBuf>> {
    let dir = out.join("models");
    let mut written = Vec::new();
    for row in &board.rows {
        let Some(model_dir) = &row.model_dir else {
            continue;
        };
        if only.is_some_and(|id| id != row.id) {
            continue;
        }
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let model_dir = Path::new(model_dir);
        let metrics = autodl_api::MetricsFile::load(model_dir)?;
        let pkg = dir.join(format!("{}.dlpk", row.id));
        if crate::ensemble::is_ensemble(model_dir) {
            autodl_package::write_ensemble(model_dir, &pkg, &row.id, Some(&metrics))?;
        } else {
            autodl_package::write(model_dir, &pkg, &row.id, Some(&metrics))?;
        }
        written.push(pkg);
    }
    Ok(written)
}

/// Whether a larger value of the run's ranking metric is better, as the evaluator that scores
/// `task` (the pipeline's, or the one registered for it) declares it.
fn higher_is_better(pipeline: &Pipeline, task: Task) -> bool {
    let Some(evaluator) = evaluator_of(pipeline, task) else {
        return true;
    };
    let metrics = evaluator.metrics();
    let ranking = match &pipeline.train.metric {
        Some(name) => {
            let name = autodl_api::metric_for_task(name, task);
            metrics.iter().find(|m| m.name == name)
        }
        None => metrics.first(),
    };
    ranking.is_none_or(|m| m.direction == autodl_api::Direction::Maximise)
}

/// The evaluator that scores the run: the pipeline's, or the one registered for `task`.
fn evaluator_of(pipeline: &Pipeline, task: Task) -> Option<&'static dyn autodl_api::Evaluator> {
    match &pipeline.evaluate.evaluator {
        Some(name) => autodl_api::evaluator(&name.value),
        None => autodl_api::default_evaluator(task),
    }
}

/// Copies `from` to `to` under a temporary name, then renames it into place.
fn copy_atomic(from: &Path, to: &Path) -> std::io::Result<()> {
    let mut src = std::fs::File::open(from)?;
    let mut dst = autodl_api::files::AtomicFile::create(to)?;
    std::io::copy(&mut src, &mut dst)?;
    dst.commit()
}

/// Replaces the folder `to` with a copy of `from` (files, and the member folders of an
/// ensemble): the copy is made beside it and swapped in, so `to` is always one whole model.
fn replace_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    let name = to
        .file_name()
        .map_or_else(|| "dir".into(), |n| n.to_string_lossy().into_owned());
    let tmp = to.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let old = to.with_file_name(format!(".{name}.old-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    copy_tree(from, &tmp)?;
    if to.exists() {
        std::fs::rename(to, &old)?;
    }
    std::fs::rename(&tmp, to)?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}

/// Copies the files of `from` into `to` (created), and its folders likewise.
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name()))?;
        } else if kind.is_dir() {
            copy_tree(&entry.path(), &to.join(entry.file_name()))?;
        }
    }
    Ok(())
}

/// An advisory lock on a run's output folder (`.autodl.lock`, holding the owner's PID), held
/// while the run lasts; the operating system releases it when the process ends, however it
/// ends.
struct RunLock {
    _file: std::fs::File,
}

impl RunLock {
    const FILE: &str = ".autodl.lock";

    fn acquire(out: &Path) -> Result<RunLock, Failure> {
        use std::io::Write as _;
        std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
        let path = out.join(Self::FILE);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {
                file.set_len(0)
                    .and_then(|()| writeln!(file, "{}", std::process::id()))
                    .with_context(|| format!("cannot write {}", path.display()))?;
                Ok(RunLock { _file: file })
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                let pid = std::fs::read_to_string(&path)
                    .unwrap_or_default()
                    .trim()
                    .to_owned();
                Err(Failure::usage(anyhow!(
                    "{} is in use by another autodl run (PID {}); wait for it to finish or choose another --out",
                    out.display(),
                    if pid.is_empty() { "unknown" } else { &pid }
                )))
            }
            Err(std::fs::TryLockError::Error(e)) => Err(anyhow::Error::new(e)
                .context(format!("cannot lock {}", path.display()))
                .into()),
        }
    }
}

pub fn predict(args: &PredictArgs, quiet: bool) -> Outcome {
    load_plugins(&args.plugin)?;
    // A package is unpacked into a temporary folder that lives until prediction ends.
    let unpacked = if args.model.extension().is_some_and(|e| e == "dlpk") {
        Some(tempfile::tempdir().context("cannot create a temporary folder")?)
    } else {
        None
    };
    let model_dir = match &unpacked {
        Some(dir) => autodl_package::unpack(&args.model, dir.path()).map_err(Failure::usage)?,
        None => args.model.clone(),
    };
    // Messages name the package, not the temporary folder it was unpacked into.
    let inside = |e: String| match &unpacked {
        Some(dir) => e.replace(
            &dir.path().display().to_string(),
            &args.model.display().to_string(),
        ),
        None => e,
    };
    let ensemble = crate::ensemble::is_ensemble(&model_dir);
    if !ensemble && !model_dir.join(autodl_package::META).is_file() {
        return Err(Failure::usage(anyhow!(
            "{} is not a model folder (no model.json or ensemble.json)",
            args.model.display()
        )));
    }
    // Typed and checked (bands, mean/std, classes, tile size) before any image is read.
    let task = if ensemble {
        autodl_api::EnsembleMeta::read(&model_dir)
            .map_err(|e| Failure::usage(anyhow!("{}", inside(e.to_string()))))?
            .task
    } else {
        let meta = autodl_package::ModelMeta::load(&model_dir)
            .map_err(|e| Failure::usage(anyhow!("{}", inside(e.to_string()))))?;
        let family_name = meta.family.as_str();
        autodl_api::network(family_name)
            .ok_or_else(|| {
                anyhow!("the model needs network `{family_name}`, which this binary lacks")
            })?
            .task()
    };
    let mut images = Vec::new();
    for path in &args.images {
        if path.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(path)
                .with_context(|| format!("cannot list {}", path.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                        matches!(
                            e.to_lowercase().as_str(),
                            "png" | "jpg" | "jpeg" | "tif" | "tiff"
                        )
                    })
                })
                .collect();
            found.sort();
            images.extend(found);
        } else if path.is_file() {
            images.push(path.clone());
        } else {
            return Err(Failure::usage(anyhow!(
                "{}: no such image or folder",
                path.display()
            )));
        }
    }
    if images.is_empty() {
        return Err(Failure::usage(anyhow!(
            "no images (PNG, JPEG or TIFF) in {}",
            args.images
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    check_outputs(&images, &args.out, task, args.overwrite)?;
    let options = autodl_api::PredictOptions {
        backend: args.backend.clone(),
        score_threshold: args.score_threshold,
        hflip: false,
    };
    let bar = crate::progress::PredictBar::new(quiet);
    let written = crate::ensemble::predict_any(&model_dir, &images, &args.out, &options, &bar)
        .map_err(|e| anyhow!("{}", inside(format!("{e:#}"))))?;
    bar.finish();
    for path in &written {
        outln!("{}", path.display());
    }
    Ok(())
}

/// Prediction never touches its inputs: the output folder must not hold any of them, and no
/// file prediction would write may exist already unless `overwrite` says so.
fn check_outputs(images: &[PathBuf], out: &Path, task: Task, overwrite: bool) -> Outcome {
    if out.exists() && !out.is_dir() {
        return Err(Failure::usage(anyhow!(
            "--out {} is a file, not a folder",
            out.display()
        )));
    }
    if let Ok(out_real) = out.canonicalize() {
        for image in images {
            let real = image
                .canonicalize()
                .with_context(|| format!("cannot read {}", image.display()))?;
            if real.starts_with(&out_real) {
                return Err(Failure::usage(anyhow!(
                    "{} lies in the output folder {}: predictions would mix with the images (or overwrite them); choose another --out",
                    image.display(),
                    out.display()
                )));
            }
        }
    }
    if !overwrite {
        // A georeferenced image also gets a GeoTIFF or GeoJSON; a malformed georeference
        // stops the prediction before anything is written.
        let georeferenced = images
            .iter()
            .map(|p| autodl_data::read_georef(p).map(|g| g.is_some()))
            .collect::<Result<Vec<bool>, _>>()
            .map_err(|e| Failure::usage(anyhow!("{e}")))?;
        let existing: Vec<PathBuf> =
            autodl_api::files::planned_outputs(task, out, images, &georeferenced)
                .into_iter()
                .filter(|p| p.exists())
                .collect();
        if let Some(first) = existing.first() {
            return Err(Failure::usage(anyhow!(
                "{} exists ({} of the files this prediction would write do): choose another --out, or pass --overwrite to replace them",
                first.display(),
                existing.len()
            )));
        }
    }
    Ok(())
}

pub fn plugins(args: &PluginsArgs) -> Outcome {
    load_plugins(&args.plugin)?;
    outln!("backends: {}", autodl_backend::compiled().join(", "));
    for n in autodl_api::networks() {
        outln!(
            "network {:<12} {:<22} backbones: {}",
            n.name(),
            n.task().to_string(),
            n.backbones().join(", ")
        );
        if let Some(plugin) = autodl_plugin_abi::host::loaded()
            .into_iter()
            .find(|p| autodl_api::NetworkFamily::name(*p) == n.name())
        {
            outln!("  from the plugin library {}", plugin.path().display());
        }
        if n.tuned_backbones() != n.backbones() {
            outln!(
                "  advanced mode tunes backbones (those with pretrained weights here): {}",
                n.tuned_backbones().join(", ")
            );
        }
        outln!(
            "  metrics: {}",
            n.metrics()
                .iter()
                .map(|m| m.name)
                .collect::<Vec<_>>()
                .join(", ")
        );
        for p in n.params() {
            outln!(
                "  [params.{}] {} = {}: {}; {}{}",
                n.name(),
                p.name,
                p.default_value(),
                p.valid_values(),
                p.doc,
                if p.tune.is_some() { " (tuned)" } else { "" }
            );
        }
    }
    for p in autodl_api::augment_pipelines() {
        outln!(
            "augmentation pipeline {} presets: {}",
            p.name(),
            p.presets().join(", ")
        );
    }
    for a in autodl_api::augmenters() {
        outln!("augmentation {}", a.name());
        for p in a.params() {
            outln!(
                "  {} = {}: {}; {}",
                p.name,
                p.default_value(),
                p.valid_values(),
                p.doc
            );
        }
    }
    for b in autodl_api::batch_deducers() {
        outln!("batch-size deducer {}", b.name());
    }
    for t in autodl_api::tuners() {
        outln!("tuner {}", t.name());
    }
    for e in autodl_api::evaluators() {
        outln!(
            "evaluator {} ({}): {}",
            e.name(),
            e.task(),
            e.metrics()
                .iter()
                .map(|m| m.name)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}

/// Prints events as JSON lines for the parent process.
struct JsonLines;

impl JsonLines {
    fn send(event: &Event) {
        if let Ok(line) = serde_json::to_string(event) {
            outln!("{line}");
        }
    }
}

impl Progress for JsonLines {
    fn epoch(&self, record: &EpochRecord) {
        JsonLines::send(&Event::Epoch(record.clone()));
    }
    fn message(&self, text: &str) {
        JsonLines::send(&Event::Message {
            text: text.to_owned(),
        });
    }
}

/// Ends this process soon after the process that started it dies, however it dies (SIGKILL
/// included): a trial when its orchestrator or worker dies, a local worker when its
/// coordinator does. The orphan is re-parented, so its parent id changes.
#[cfg(unix)]
pub fn exit_with_parent() {
    let parent = std::os::unix::process::parent_id();
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(std::time::Duration::from_millis(200));
            if std::os::unix::process::parent_id() != parent {
                std::process::exit(1);
            }
        }
    });
}

#[cfg(not(unix))]
pub fn exit_with_parent() {}

/// Sends a panic's message as the trial's last line ([`Event::Panicked`]), then lets the
/// default hook print it as usual.
fn report_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_owned());
        let out_of_memory = autodl_core::is_out_of_memory_panic(&message);
        JsonLines::send(&Event::Panicked {
            message,
            out_of_memory,
        });
        default(info);
    }));
}

pub fn trial(spec_path: &Path, plugins: &[PathBuf]) -> Outcome {
    exit_with_parent();
    report_panics();
    load_plugins(plugins)?;
    let text = std::fs::read_to_string(spec_path)
        .with_context(|| format!("cannot read {}", spec_path.display()))?;
    let mut spec: TrialSpec = serde_json::from_str(&text)
        .with_context(|| format!("{}: invalid trial spec", spec_path.display()))?;
    let family = autodl_api::network(&spec.family)
        .ok_or_else(|| anyhow!("unknown network `{}`", spec.family))?;
    // The family reads only what it declared: checked here too, for specs not written by the
    // planner.
    spec.params = autodl_api::resolve_params(&family.params(), &spec.params)
        .map_err(|e| Failure::usage(anyhow!("{}: {e}", spec_path.display())))?;
    let result = family.train(&spec, &JsonLines).unwrap_or_else(|e| {
        TrialResult::without_model(TrialStatus::Failed(e.to_string()), "metric")
    });
    let failed = matches!(result.status, TrialStatus::Failed(_));
    JsonLines::send(&Event::Result(result));
    if failed {
        Err(Failure {
            code: 1,
            error: anyhow!("trial {} failed", spec.id),
        })
    } else {
        Ok(())
    }
}
