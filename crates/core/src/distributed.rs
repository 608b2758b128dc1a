//! A study shared by workers: the coordinator plans trials into the store and builds the
//! leaderboard from it as they finish ([`coordinate`]); any number of workers, on any
//! machines that reach the store and see the artefact folder, claim and train them
//! ([`run_worker`]).
//!
//! The store does the arbitration (see [`crate::study`]): a claim is one transaction, a
//! worker heartbeats its trial while the trial trains, a trial whose heartbeats stop is
//! claimed again after the lease and resumed from its last checkpoint, and a result is
//! recorded only by the worker that holds the trial. Basic mode gives each network an even
//! share of the time left (`--schedule halving` needs the whole field at each rung and stays
//! with single-process runs); advanced mode's tuner proposes new trials as results arrive,
//! keeping every live worker busy, and workers prune weak tuning trials against every curve
//! the store holds (asynchronous successive halving).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use autodl_api::{
    EpochRecord, Event, ParamValue, TrialRecord, TrialResult, TrialSpec, TrialStatus,
};

use crate::leaderboard::Leaderboard;
use crate::plan::Plan;
use crate::runner::{
    Pruner, RunError, RunOptions, TrialRunner, apply, read_checkpoint, run_trial, search_space,
};
use crate::study::{Claim, PrunerSettings, Study, StudyInfo, TrialRow, now_ms};

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Its name in the study (unique among the study's workers).
    pub id: String,
    /// Where this machine sees the study's artefact folder, when not at the coordinator's
    /// path ([`StudyInfo::out`]).
    pub artifacts: Option<PathBuf>,
    /// Seconds between looks at the store while there is nothing to claim.
    pub poll_secs: f64,
    /// Most seconds to wait for a study to be planned before giving up.
    pub wait_for_study_secs: f64,
    /// Set (by a signal handler) to stop the worker: the trial in hand is killed and given
    /// back to the study at once, and the worker returns.
    pub stop: Arc<AtomicBool>,
}

/// What a worker did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkerSummary {
    /// Trials it finished and recorded.
    pub finished: Vec<String>,
    /// Trials whose result it could not record (another worker held them by then).
    pub discarded: Vec<String>,
    /// The trial it gave back when it was stopped.
    pub released: Vec<String>,
}

/// How a claimed trial ended for its worker.
enum Ran {
    /// Its result is recorded.
    Recorded,
    /// Another worker held it by the time it ended.
    Discarded,
    /// The worker was stopped and gave it back.
    Released,
}

/// `path` under `from` moved under `to`; unchanged when it is not under `from`.
fn rebase(path: &Path, from: &Path, to: &Path) -> PathBuf {
    match path.strip_prefix(from) {
        Ok(rest) => to.join(rest),
        Err(_) => path.to_owned(),
    }
}

/// Claims and trains the study's trials until the study is closed and every trial ended.
///
/// `cancel` is the runner's cancel flag: set when the worker loses its hold on the trial it
/// trains (its heartbeats did not reach the store for the lease, and another worker claimed
/// it), which kills the trial process.
pub fn run_worker(
    study: &Study,
    runner: &dyn TrialRunner,
    cancel: &Arc<AtomicBool>,
    opts: &WorkerOptions,
    on_event: &mut dyn FnMut(&TrialSpec, &Event),
) -> Result<WorkerSummary, RunError> {
    let mut summary = WorkerSummary::default();
    let waiting_since = Instant::now();
    let poll = Duration::from_secs_f64(opts.poll_secs.max(0.05));
    loop {
        if opts.stop.load(Ordering::Relaxed) {
            break;
        }
        study.worker_beat(&opts.id, "idle")?;
        let Some(info) = study.info()? else {
            if waiting_since.elapsed().as_secs_f64() > opts.wait_for_study_secs {
                return Err(RunError::Study(crate::study::StudyError::Db {
                    url: study.url().to_string(),
                    reason: format!(
                        "no study was planned there within {:.0}s (start `autodl train --study URL --workers 0`)",
                        opts.wait_for_study_secs
                    ),
                }));
            }
            std::thread::sleep(poll);
            continue;
        };
        match study.claim(&opts.id, &info)? {
            Some(claim) => {
                let id = claim.row.id.clone();
                match run_claim(study, runner, cancel, opts, &info, claim, on_event)? {
                    Ran::Recorded => summary.finished.push(id),
                    Ran::Discarded => summary.discarded.push(id),
                    Ran::Released => summary.released.push(id),
                }
            }
            None => {
                let rows = study.rows()?;
                if !info.open && rows.iter().all(TrialRow::is_finished) {
                    break;
                }
                std::thread::sleep(poll);
            }
        }
    }
    study.worker_beat(&opts.id, "exited")?;
    Ok(summary)
}

/// Trains one claimed trial, heartbeating meanwhile.
fn run_claim(
    study: &Study,
    runner: &dyn TrialRunner,
    cancel: &Arc<AtomicBool>,
    opts: &WorkerOptions,
    info: &StudyInfo,
    claim: Claim,
    on_event: &mut dyn FnMut(&TrialSpec, &Event),
) -> Result<Ran, RunError> {
    let row = claim.row;
    let mut spec = row.spec.clone();
    let local_out = opts.artifacts.clone().unwrap_or_else(|| info.out.clone());
    spec.out_dir = rebase(&spec.out_dir, &info.out, &local_out);
    if let Some(dir) = &spec.init_from {
        spec.init_from = Some(rebase(dir, &info.out, &local_out));
    }
    let to_study = |mut r: TrialResult| {
        r.model_dir = r.model_dir.map(|d| rebase(&d, &local_out, &info.out));
        r
    };
    // The time left to the study, shared fairly with the trials nobody has started: a
    // worker of one trains them in turn, as a single-process run does.
    let left = (info.deadline_ms - now_ms()) as f64 / 1000.0;
    let share = match row.budget_cap {
        Some(cap) => cap.min(left),
        None => {
            let rows = study.rows()?;
            let unstarted = 1 + rows
                .iter()
                .filter(|r| r.state == "pending" && r.id != row.id)
                .count();
            let live = study.live_workers(info.lease_secs)?.max(1);
            left.min(left * live as f64 / unstarted as f64)
        }
    };
    if share < 5.0 {
        let result = TrialResult::without_model(
            TrialStatus::Skipped(format!("time limit reached ({share:.0}s left for it)")),
            "metric",
        );
        return Ok(
            if study.finish(&opts.id, &row.spec, &result, row.attempts)? {
                Ran::Recorded
            } else {
                Ran::Discarded
            },
        );
    }
    // Taken over from a worker that was lost or stopped: on from its last checkpoint.
    let before = match (&claim.reclaimed_from, &claim.released_by) {
        (Some(from), _) => Some(format!(
            "reclaimed from worker {from} (attempt {})",
            row.attempts
        )),
        (None, Some(by)) => Some(format!(
            "released by worker {by} (attempt {})",
            row.attempts
        )),
        (None, None) => None,
    };
    if let Some(before) = before {
        let text = match read_checkpoint(&spec.out_dir)? {
            Some((epoch, _)) => {
                spec.resume = true;
                format!("{before}: resuming from its checkpoint after epoch {epoch}")
            }
            None => format!("{before}: no checkpoint, starting again"),
        };
        on_event(&spec, &Event::Message { text });
    }
    let sign = if info.higher_is_better { 1.0 } else { -1.0 };
    // Asynchronous successive halving: at each epoch the trial's curve is set against every
    // other trial's in the store as it stands then (finished, or as far as it has got), so the
    // rungs fill as results arrive.
    let mut pruner = match (row.prunable, info.pruner) {
        (true, Some(PrunerSettings { eta, min_epochs })) => Some(Pruner::with(eta, min_epochs)),
        _ => None,
    };
    let peers = |p: &mut Pruner| -> Result<(), RunError> {
        p.curves = study
            .rows()?
            .iter()
            .filter(|other| other.id != row.id)
            .map(|other| {
                let epochs = other.result.as_ref().map_or(&other.progress, |r| &r.epochs);
                epochs.iter().map(|e| sign * e.metric).collect()
            })
            .collect();
        Ok(())
    };
    let mut curve: Vec<f64> = Vec::new();

    cancel.store(false, Ordering::Relaxed);
    let progress: std::sync::Mutex<Vec<EpochRecord>> = std::sync::Mutex::new(Vec::new());
    let done = AtomicBool::new(false);
    let beat = Duration::from_secs_f64((info.lease_secs / 4.0).clamp(0.2, 15.0));
    let outcome = std::thread::scope(|scope| {
        // Heartbeats from their own thread: the trial may take hours between events.
        scope.spawn(|| {
            let mut next = Instant::now();
            while !done.load(Ordering::Relaxed) {
                if opts.stop.load(Ordering::Relaxed) {
                    cancel.store(true, Ordering::Relaxed);
                }
                if Instant::now() >= next {
                    let epochs = progress.lock().map(|p| p.clone()).unwrap_or_default();
                    match study.heartbeat(&row.id, &opts.id, &epochs) {
                        Ok(true) => {}
                        // Another worker holds it now: stop training it.
                        Ok(false) => cancel.store(true, Ordering::Relaxed),
                        // The store is unreachable: keep trying until the lease is lost.
                        Err(_) => {}
                    }
                    let _ = study.worker_beat(&opts.id, "training");
                    next = Instant::now() + beat;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let mut watch = |s: &TrialSpec, ev: &Event| {
            if let Event::Epoch(e) = ev {
                if let Ok(mut p) = progress.lock() {
                    p.push(e.clone());
                }
                curve.push(sign * e.metric);
                if let Some(p) = &mut pruner
                    && peers(p).is_ok()
                    && p.should_prune(&curve)
                {
                    let _ = std::fs::write(s.out_dir.join(autodl_api::STOP_FILE), b"pruned");
                    on_event(
                        s,
                        &Event::Message {
                            text: format!(
                                "pruned at epoch {}: below the top 1/{} of the study's trials at this rung",
                                e.epoch, p.eta
                            ),
                        },
                    );
                }
            }
            on_event(s, ev);
        };
        let r = run_trial(&spec, share, runner, &mut watch, None);
        done.store(true, Ordering::Relaxed);
        r
    });
    let (ran, result) = outcome?;
    if opts.stop.load(Ordering::Relaxed) {
        study.release(&row.id, &opts.id)?;
        on_event(
            &spec,
            &Event::Message {
                text: "stopped: given back to the study".into(),
            },
        );
        return Ok(Ran::Released);
    }
    let path = ran.out_dir.join(autodl_api::RESULT);
    // Recorded in the study's terms (its artefact folder, the spec as planned).
    let mut recorded = ran.clone();
    recorded.out_dir = row.spec.out_dir.clone();
    recorded.init_from = row.spec.init_from.clone();
    let result = to_study(result);
    if !study.finish(&opts.id, &recorded, &result, row.attempts)? {
        return Ok(Ran::Discarded);
    }
    crate::write_json(&path, &result).map_err(|source| RunError::Io { path, source })?;
    Ok(Ran::Recorded)
}

/// How the coordinator runs a study shared by workers.
#[derive(Debug, Clone)]
pub struct StudySettings {
    /// Seconds without a heartbeat after which a trial is claimed again.
    pub lease_secs: f64,
    /// Most starts of one trial.
    pub max_attempts: u32,
    /// Seconds a trial may overrun its budget before its worker kills it.
    pub grace_secs: f64,
    /// Seconds between looks at the store.
    pub poll_secs: f64,
}

/// The tuner's view of a trial: the search space's parameters as the spec holds them.
fn params_of(spec: &TrialSpec, space: &autodl_api::SearchSpace) -> autodl_api::Params {
    space
        .keys()
        .filter_map(|k| {
            let v = match k.as_str() {
                "learning-rate" => ParamValue::Number(spec.learning_rate?),
                "backbone" => ParamValue::Text(spec.backbone.clone()),
                "augment-strength" => ParamValue::Number(f64::from(spec.augment.strength)),
                other => spec.params.get(other)?.clone(),
            };
            Some((k.clone(), v))
        })
        .collect()
}

/// Plans `plan` into `study` and waits while workers train it, reporting what they do
/// through `on_event`; then builds the leaderboard from the store, in the order a
/// single-process run pushes its rows (so ranking gives the same board for the same
/// results).
pub fn coordinate(
    plan: &Plan,
    study: &Study,
    options: &RunOptions<'_>,
    settings: &StudySettings,
    on_event: &mut dyn FnMut(&TrialSpec, &Event),
) -> Result<Leaderboard, RunError> {
    std::fs::create_dir_all(&plan.out).map_err(|source| RunError::Io {
        path: plan.out.clone(),
        source,
    })?;
    let start = Instant::now();
    let reserve = (0.03 * plan.time_limit_secs).max(3.0);
    let ms = |secs: f64| now_ms() + (secs * 1000.0) as i64;
    let basic_limit = if options.tuner.is_some() {
        0.5 * plan.time_limit_secs
    } else {
        plan.time_limit_secs
    };
    let mut info = StudyInfo {
        out: plan.out.clone(),
        data: plan
            .trials
            .first()
            .map(|t| t.data.root.clone())
            .unwrap_or_default(),
        trials: plan.trials.iter().map(|t| t.id.clone()).collect(),
        deadline_ms: ms(basic_limit - reserve),
        lease_secs: settings.lease_secs,
        max_attempts: settings.max_attempts.max(1),
        higher_is_better: options.higher_is_better,
        pruner: options.pruner.as_ref().map(|p| PrunerSettings {
            eta: p.eta,
            min_epochs: p.min_epochs,
        }),
        grace_secs: settings.grace_secs,
        open: options.tuner.is_some(),
    };
    study.plan(&info, &plan.trials)?;
    let sign = if options.higher_is_better { 1.0 } else { -1.0 };
    let n_basic = plan.trials.len();
    let poll = Duration::from_secs_f64(settings.poll_secs.max(0.05));
    // What was last reported of each trial: its state, attempts and epochs.
    let mut seen: std::collections::HashMap<String, (String, u32, usize)> = Default::default();
    let mut tuning: Option<Tuning> = None;
    loop {
        let rows = study.rows()?;
        report_changes(&rows, &mut seen, on_event);
        let basic_done = rows.iter().take(n_basic).all(TrialRow::is_finished);
        if let Some(tuner) = options.tuner
            && info.open
            && basic_done
        {
            let t = match &mut tuning {
                Some(t) => t,
                None => {
                    // The second half of the budget: the study's deadline moves to its end.
                    info.deadline_ms =
                        ms(plan.time_limit_secs - start.elapsed().as_secs_f64() - reserve);
                    study.set_info(&info)?;
                    tuning.insert(Tuning::new(&rows[..n_basic.min(rows.len())], options, sign))
                }
            };
            let more = t.propose(study, &rows, tuner, options, plan, &info, sign, on_event)?;
            if !more {
                info.open = false;
                study.set_info(&info)?;
            }
        }
        if !info.open && rows.iter().all(TrialRow::is_finished) {
            break;
        }
        // Past the deadline by more than a trial's grace and a lease, nothing will finish.
        let overdue = (now_ms() - info.deadline_ms) as f64 / 1000.0;
        if overdue > settings.grace_secs + 2.0 * settings.lease_secs + 10.0 {
            info.open = false;
            study.set_info(&info)?;
            break;
        }
        std::thread::sleep(poll);
    }
    let rows = study.rows()?;
    let mut board = Leaderboard::new(options.higher_is_better);
    for (name, reason) in &plan.skipped {
        board.push_skipped(name, "", reason);
    }
    for row in rows {
        match row.result {
            Some(r) if matches!(r.status, TrialStatus::Skipped(_)) => {
                board.push_skipped(&row.spec.family, &row.spec.backbone, r.status.reason());
            }
            Some(r) => board.push(&row.spec, r),
            None => board.push_skipped(
                &row.spec.family,
                &row.spec.backbone,
                &format!("the study's time ran out while it was {}", row.state),
            ),
        }
    }
    Ok(board)
}

/// Advanced mode's state: the networks tuned and how many trials were proposed.
struct Tuning {
    bases: Vec<TrialSpec>,
    per_trial: f64,
    proposed: usize,
}

impl Tuning {
    fn new(basic: &[TrialRow], options: &RunOptions<'_>, sign: f64) -> Tuning {
        let mut ranked: Vec<(&TrialSpec, &TrialResult)> = basic
            .iter()
            .filter_map(|r| r.result.as_ref().map(|res| (&r.spec, res)))
            .filter(|(_, r)| r.metric.is_some())
            .collect();
        ranked.sort_by(|a, b| {
            (sign * b.1.metric.unwrap_or(0.0)).total_cmp(&(sign * a.1.metric.unwrap_or(0.0)))
        });
        let per_trial = basic
            .iter()
            .filter_map(|r| r.result.as_ref())
            .map(|r| r.train_secs)
            .fold(0.0f64, f64::max)
            .max(10.0);
        Tuning {
            bases: ranked
                .iter()
                .take(options.tune_top.max(1))
                .map(|(s, _)| (*s).clone())
                .collect(),
            per_trial,
            proposed: 0,
        }
    }

    /// Proposes tuning trials until every live worker has one; `false` once no more will be
    /// proposed (the most trials, the time, or the tuner ran out).
    #[allow(clippy::too_many_arguments)]
    fn propose(
        &mut self,
        study: &Study,
        rows: &[TrialRow],
        tuner: &dyn autodl_api::Tuner,
        options: &RunOptions<'_>,
        plan: &Plan,
        info: &StudyInfo,
        sign: f64,
        on_event: &mut dyn FnMut(&TrialSpec, &Event),
    ) -> Result<bool, RunError> {
        if self.bases.is_empty() {
            return Ok(false);
        }
        // Trials proposed by an earlier coordinator of this study count too.
        let tuned: Vec<&TrialRow> = rows.iter().skip(plan.trials.len()).collect();
        self.proposed = self.proposed.max(tuned.len());
        let in_flight = tuned.iter().filter(|r| !r.is_finished()).count();
        let target = study.live_workers(info.lease_secs)?.max(1);
        let mut queued = in_flight;
        while queued < target {
            let left = (info.deadline_ms - now_ms()) as f64 / 1000.0;
            if self.proposed >= options.max_tuning_trials
                || left < self.per_trial.min(0.5 * plan.time_limit_secs) * 0.5
            {
                return Ok(in_flight > 0 || queued > in_flight);
            }
            let which = self.proposed % self.bases.len();
            let base = &self.bases[which];
            let space = search_space(&base.family);
            // The base network's own trial, then every tuning trial of it so far.
            let history: Vec<TrialRecord> = rows
                .iter()
                .enumerate()
                .filter(|(i, r)| {
                    r.id == base.id
                        || (*i >= plan.trials.len()
                            && (i - plan.trials.len()) % self.bases.len() == which)
                })
                .filter_map(|(_, r)| {
                    let res = r.result.as_ref()?;
                    let mut params = params_of(&r.spec, &space);
                    if r.id == base.id {
                        params.insert(
                            "learning-rate".into(),
                            ParamValue::Number(res.learning_rate),
                        );
                    }
                    Some(TrialRecord {
                        params,
                        curve: res.epochs.iter().map(|e| sign * e.metric).collect(),
                        complete: matches!(res.status, TrialStatus::Completed),
                    })
                })
                .collect();
            let Some(params) = tuner.suggest(
                &space,
                &history,
                base.seed.wrapping_add(self.proposed as u64),
            ) else {
                return Ok(false);
            };
            let mut spec = base.clone();
            if let Err(reason) = apply(&mut spec, &params) {
                on_event(base, &Event::Message { text: reason });
                return Ok(false);
            }
            self.proposed += 1;
            spec.id = format!("{}-t{}", base.family, self.proposed);
            spec.out_dir = plan.out.join("trials").join(&spec.id);
            let cap = self.per_trial.min(left);
            spec.time_budget_secs = cap;
            study.enqueue(&spec, true, Some(cap))?;
            on_event(
                &spec,
                &Event::Message {
                    text: format!("proposed by the tuner ({cap:.0}s)"),
                },
            );
            queued += 1;
        }
        Ok(true)
    }
}

/// Reports what changed in the store since the last look: a trial started (or was
/// reclaimed), reported epochs, or ended.
fn report_changes(
    rows: &[TrialRow],
    seen: &mut std::collections::HashMap<String, (String, u32, usize)>,
    on_event: &mut dyn FnMut(&TrialSpec, &Event),
) {
    for row in rows {
        let epochs = row.result.as_ref().map_or(&row.progress, |r| &r.epochs);
        // `shown`: the last epoch reported (a resumed trial reports from its checkpoint on).
        let (state, attempts, shown) = seen
            .entry(row.id.clone())
            .or_insert_with(|| ("pending".to_owned(), 0, 0));
        if row.attempts > *attempts && row.state == "running" {
            let worker = row.worker.as_deref().unwrap_or("?");
            let text = if row.attempts > 1 {
                format!(
                    "claimed again by worker {worker} (attempt {})",
                    row.attempts
                )
            } else {
                format!("started on worker {worker}")
            };
            on_event(&row.spec, &Event::Message { text });
        }
        for e in epochs {
            if e.epoch as usize > *shown {
                on_event(&row.spec, &Event::Epoch(e.clone()));
                *shown = e.epoch as usize;
            }
        }
        if row.is_finished() && *state != row.state {
            let text = match &row.result {
                Some(r) => match r.metric {
                    Some(m) => format!("{}: {} {m:.4}", row.state, r.metric_name),
                    None => format!("{}: {}", row.state, r.status.reason()),
                },
                None => row.state.clone(),
            };
            on_event(&row.spec, &Event::Message { text });
        }
        *state = row.state.clone();
        *attempts = row.attempts;
    }
}
