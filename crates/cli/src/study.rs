//! Studies shared by workers: `autodl worker`, and `autodl train --workers N`'s coordinator,
//! which plans the study, starts N local workers and builds the leaderboard from the store.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::{Context, anyhow};
use autodl_config::Pipeline;
use autodl_core::{ChildRunner, Event, Leaderboard, Study, StudyUrl};

use crate::Failure;
use crate::commands::{Outcome, load_plugins, plugin_args};
use crate::progress::TrialBars;

/// The environment variable a study's address is read from when no flag or key gives it
/// (so that a Kubernetes secret or a Slurm script can hold the password).
pub const STUDY_VAR: &str = "AUTODL_STUDY";

/// `autodl worker`.
#[derive(clap::Args, Debug)]
pub struct WorkerArgs {
    /// The study: `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE` or `sqlite://PATH`
    /// (default: `AUTODL_STUDY`).
    #[arg(long)]
    study: Option<String>,
    /// Where this machine sees the study's output folder, when it is mounted at another path
    /// than the coordinator's `--out`.
    #[arg(long)]
    artifacts: Option<PathBuf>,
    /// This worker's name in the study (default HOST-PID).
    #[arg(long)]
    id: Option<String>,
    /// Most seconds to wait for the study to be planned.
    #[arg(long, default_value_t = 600.0)]
    wait: f64,
    /// Seconds between looks at the store while there is nothing to claim.
    #[arg(long, default_value_t = 1.0, hide = true)]
    poll: f64,
    /// A network-family plugin library to load (repeatable), besides those in the folders
    /// of `AUTODL_PLUGIN_PATH`.
    #[arg(long)]
    plugin: Vec<PathBuf>,
    /// End when the process that started this worker ends (the workers `train --workers N`
    /// starts).
    #[arg(long, hide = true)]
    exit_with_parent: bool,
}

/// The study address a pipeline (or `AUTODL_STUDY`) gives; `None`: the default file.
pub fn url_of(pipeline: &Pipeline) -> Result<Option<StudyUrl>, Failure> {
    let text = pipeline
        .study
        .url
        .clone()
        .or_else(|| std::env::var(STUDY_VAR).ok().filter(|s| !s.is_empty()));
    text.map(|t| StudyUrl::parse(&t).map_err(Failure::usage))
        .transpose()
}

pub fn worker(args: &WorkerArgs, quiet: bool) -> Outcome {
    if args.exit_with_parent {
        crate::commands::exit_with_parent();
    }
    load_plugins(&args.plugin)?;
    let text = args
        .study
        .clone()
        .or_else(|| std::env::var(STUDY_VAR).ok().filter(|s| !s.is_empty()))
        .ok_or_else(|| Failure::usage(anyhow!("give the study with --study URL or {STUDY_VAR}")))?;
    let url = StudyUrl::parse(&text).map_err(Failure::usage)?;
    let study = Study::connect(&url)?;
    let id = args
        .id
        .clone()
        .unwrap_or_else(|| format!("{}-{}", autodl_core::hostname(), std::process::id()));
    let cancel = Arc::new(AtomicBool::new(false));
    let runner = ChildRunner {
        exe: std::env::current_exe().context("cannot find the autodl binary to start trials")?,
        grace_secs: 30.0,
        extra_args: plugin_args(),
        cancel: cancel.clone(),
    };
    // SIGTERM (Kubernetes, Slurm's scancel) or Ctrl-C: kill the trial in hand and give it
    // back to the study, so that another worker takes it at once from its checkpoint.
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, stop.clone())
            .context("cannot install the worker's signal handler")?;
    }
    let opts = autodl_core::WorkerOptions {
        id: id.clone(),
        artifacts: args.artifacts.clone(),
        poll_secs: args.poll,
        wait_for_study_secs: args.wait,
        stop: stop.clone(),
    };
    if !quiet {
        eprintln!("worker {id}: study {url}");
    }
    let summary = autodl_core::run_worker(&study, &runner, &cancel, &opts, &mut |spec, ev| {
        if quiet {
            return;
        }
        match ev {
            Event::Epoch(e) => eprintln!(
                "worker {id}: {}: epoch {} train loss {:.4} val loss {:.4} metric {:.4}",
                spec.id, e.epoch, e.train_loss, e.val_loss, e.metric
            ),
            Event::Message { text } => eprintln!("worker {id}: {}: {text}", spec.id),
            Event::Result(_) | Event::Panicked { .. } => {}
        }
    })?;
    if stop.load(std::sync::atomic::Ordering::Relaxed) {
        return Err(anyhow!(
            "worker {id} stopped by a signal after finishing {} trial(s){}",
            summary.finished.len(),
            if summary.released.is_empty() {
                String::new()
            } else {
                format!("; gave back {}", summary.released.join(", "))
            }
        )
        .into());
    }
    outln!(
        "worker {id}: finished {} trial(s){}{}",
        summary.finished.len(),
        if summary.finished.is_empty() {
            String::new()
        } else {
            format!(" ({})", summary.finished.join(", "))
        },
        if summary.discarded.is_empty() {
            String::new()
        } else {
            format!(
                "; lost {} to other workers ({})",
                summary.discarded.len(),
                summary.discarded.join(", ")
            )
        }
    );
    Ok(())
}

/// Workers started by the coordinator, each logging to `<out>/workers/worker-<i>.log`.
struct LocalWorkers(Vec<Child>);

impl LocalWorkers {
    fn start(exe: &Path, url: &StudyUrl, out: &Path, n: u32) -> anyhow::Result<LocalWorkers> {
        let logs = out.join("workers");
        std::fs::create_dir_all(&logs)
            .with_context(|| format!("cannot create {}", logs.display()))?;
        let host = autodl_core::hostname();
        let mut children = Vec::new();
        for i in 1..=n {
            let path = logs.join(format!("worker-{i}.log"));
            let log = std::fs::File::create(&path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            let err = log
                .try_clone()
                .with_context(|| format!("cannot share {}", path.display()))?;
            let child = Command::new(exe)
                .arg("worker")
                .arg("--exit-with-parent")
                .arg("--id")
                .arg(format!("{host}-{}-{i}", std::process::id()))
                .args(plugin_args())
                // The address (and its password) through the environment, not `ps`.
                .env(STUDY_VAR, url.to_arg())
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(err)
                .spawn()
                .with_context(|| format!("cannot start worker {i} ({})", exe.display()))?;
            children.push(child);
        }
        Ok(LocalWorkers(children))
    }
}

impl Drop for LocalWorkers {
    /// Workers leave by themselves once the study is closed and every trial ended; any still
    /// running now (the coordinator failed) are stopped.
    fn drop(&mut self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        for child in &mut self.0 {
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if std::time::Instant::now() < deadline => {
                        std::thread::sleep(std::time::Duration::from_millis(100));
                    }
                    Ok(None) => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
        }
    }
}

/// Plans `plan` into the study at `url`, starts `workers` local workers, and waits for the
/// study's trials, reporting progress on `bars`.
pub fn coordinate(
    plan: &autodl_core::Plan,
    url: &StudyUrl,
    workers: u32,
    pipeline: &Pipeline,
    options: &autodl_core::RunOptions<'_>,
    exe: &Path,
    bars: &mut TrialBars,
) -> Result<Leaderboard, Failure> {
    let study = Study::connect(url)?;
    let settings = autodl_core::StudySettings {
        lease_secs: pipeline.study.lease_secs,
        max_attempts: pipeline.study.max_attempts,
        grace_secs: 30.0,
        poll_secs: 0.5,
    };
    let note = if options.halving && plan.trials.len() > 1 {
        "; workers give each network an even share of the time (successive halving needs a single-process run)"
    } else {
        ""
    };
    bars.line(&format!(
        "study {url}: {}{note}",
        if workers == 0 {
            "planned; waiting for workers started elsewhere (`autodl worker --study URL`)"
                .to_owned()
        } else {
            format!(
                "{workers} worker(s) started here, logging to {}",
                plan.out.join("workers").display()
            )
        }
    ));
    // Workers that start before the study is planned wait for it.
    let local = if workers > 0 {
        Some(LocalWorkers::start(exe, url, &plan.out, workers)?)
    } else {
        None
    };
    let board = autodl_core::coordinate(plan, &study, options, &settings, &mut |spec, ev| {
        bars.event(spec, ev)
    });
    drop(local);
    Ok(board?)
}
