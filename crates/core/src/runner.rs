//! Running trials, each in its own child process.
//!
//! On Burn 0.21 a CUDA out-of-memory or a driver failure is a panic, so a trial runs in a
//! child process of our own binary (`autodl trial --spec FILE`): whatever it does, the
//! orchestrator survives and records why it died. The child speaks JSON lines on stdout.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use autodl_api::{STOP_FILE, TrialResult, TrialSpec, TrialStatus};

use crate::leaderboard::Leaderboard;
use crate::plan::Plan;
use crate::write_json;

/// One line a trial process writes on stdout (defined with the other boundary types in
/// `autodl-api`).
pub use autodl_api::Event;

/// How failure reasons that mean "out of memory" begin: the runner halves the batch and
/// retries a trial whose reason starts so.
pub const OUT_OF_MEMORY: &str = "out of memory";

/// Whether a panic message is a device allocator's out-of-memory error.
pub fn is_out_of_memory_panic(message: &str) -> bool {
    let m = message.to_lowercase();
    m.contains("out of memory") || m.contains("outofmemory") || m.contains("memory allocation")
}

/// Why the orchestrator could not run a trial at all (not why a trial failed).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Writing the spec, the result or the leaderboard failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file a trial left (its checkpoint) or a study record is not what its type says.
    #[error(transparent)]
    Contract(#[from] autodl_api::ContractError),
    /// The study store failed.
    #[error(transparent)]
    Study(#[from] crate::study::StudyError),
}

/// Runs one trial and reports its events; a failure of the trial is a `Failed` result, not an
/// error.
pub trait TrialRunner {
    /// Runs `spec`, whose JSON is at `spec_path`.
    fn run(
        &self,
        spec: &TrialSpec,
        spec_path: &Path,
        on_event: &mut dyn FnMut(&TrialSpec, &Event),
    ) -> TrialResult;
}

/// Runs trials as `EXE trial --spec FILE` child processes.
pub struct ChildRunner {
    /// The binary to start, normally `std::env::current_exe()`.
    pub exe: PathBuf,
    /// Seconds a trial may overrun its budget before it is killed.
    pub grace_secs: f64,
    /// Arguments after `trial --spec FILE`: the plugin libraries the child must load too
    /// (`--plugin PATH`), so that it finds the families the plan names.
    pub extra_args: Vec<std::ffi::OsString>,
    /// Set from another thread to kill the running trial (a worker that lost its hold on
    /// the trial); its result is then a failure saying so.
    pub cancel: Arc<AtomicBool>,
}

fn failed(reason: String, metric: &str) -> TrialResult {
    TrialResult::without_model(TrialStatus::Failed(reason), metric)
}

/// How a trial process ended without sending its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exit {
    /// It exited with this code.
    Code(i32),
    /// A signal ended it.
    Signal(i32),
    /// Neither is known.
    Unknown,
}

impl Exit {
    fn of(status: &std::process::ExitStatus) -> Exit {
        #[cfg(unix)]
        if let Some(sig) = std::os::unix::process::ExitStatusExt::signal(status) {
            return Exit::Signal(sig);
        }
        status.code().map_or(Exit::Unknown, Exit::Code)
    }
}

/// `SIGKILL` and `SIGABRT` on Linux.
const SIGKILL: i32 = 9;
const SIGABRT: i32 = 6;

/// Why a dead child died, from how it ended and its stderr. Out of memory is read from the
/// exit itself where it can be: a `SIGKILL` the orchestrator did not send is Linux's
/// out-of-memory killer, and an abort after Rust's "memory allocation of N bytes failed" is a
/// failed allocation; both reasons say "out of memory", which restarts the trial at half the
/// batch. Otherwise the panic message, else the last line.
fn death_reason(stderr: &str, exit: Exit) -> String {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    match exit {
        Exit::Signal(SIGKILL) => return "out of memory: the trial process was killed by SIGKILL (the system's out-of-memory killer)".to_owned(),
        Exit::Signal(SIGABRT) => {
            if let Some(line) = lines.iter().find(|l| l.contains("memory allocation of")) {
                return format!("out of memory: {}", line.trim());
            }
        }
        _ => {}
    }
    if let Some(i) = lines.iter().position(|l| l.contains("panicked at")) {
        let msg = lines.get(i + 1).copied().unwrap_or(lines[i]);
        return format!("panicked: {}", msg.trim());
    }
    if let Some(last) = lines.last() {
        return last.trim().trim_start_matches("error: ").to_owned();
    }
    match exit {
        Exit::Code(c) => format!("trial process exited with code {c}"),
        Exit::Signal(sig) => format!("trial process was killed by signal {sig}"),
        Exit::Unknown => "trial process was killed by a signal".to_owned(),
    }
}

/// A failure reason from a trial's [`Event::Panicked`].
fn panic_reason(message: &str, out_of_memory: bool) -> String {
    if out_of_memory {
        format!("{OUT_OF_MEMORY}: {message}")
    } else {
        format!("panicked: {message}")
    }
}

impl TrialRunner for ChildRunner {
    fn run(
        &self,
        spec: &TrialSpec,
        spec_path: &Path,
        on_event: &mut dyn FnMut(&TrialSpec, &Event),
    ) -> TrialResult {
        let mut child = match Command::new(&self.exe)
            .arg("trial")
            .arg("--spec")
            .arg(spec_path)
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => {
                return failed(
                    format!("cannot start {}: {e}", self.exe.display()),
                    "metric",
                );
            }
        };
        let (tx, rx) = mpsc::channel::<Event>();
        let stdout = child.stdout.take();
        let reader = std::thread::spawn(move || {
            if let Some(out) = stdout {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if line.trim().is_empty() {
                        continue;
                    }
                    // A line that is not an event (a library printing to stdout) is passed on
                    // as a message, not dropped; an event that does not parse says why.
                    let ev = serde_json::from_str::<Event>(&line).unwrap_or_else(|e| {
                        let text = if line.trim_start().starts_with('{') {
                            format!("unreadable event from the trial ({e}): {line}")
                        } else {
                            line.clone()
                        };
                        Event::Message { text }
                    });
                    let _ = tx.send(ev);
                }
            }
        });
        let mut stderr = child.stderr.take();
        let err_reader = std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(e) = stderr.as_mut() {
                let _ = e.read_to_string(&mut text);
            }
            // Keep the tail: a long log's end holds the reason.
            let cut = text.len().saturating_sub(8192);
            text[text.ceil_char_boundary(cut)..].to_owned()
        });
        let deadline =
            Instant::now() + Duration::from_secs_f64(spec.time_budget_secs + self.grace_secs);
        let mut result = None;
        let mut panicked = None;
        let mut killed = false;
        let mut cancelled = false;
        loop {
            if self.cancel.load(Ordering::Relaxed) && !cancelled {
                let _ = child.kill();
                cancelled = true;
            }
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(Event::Result(r)) => result = Some(r),
                Ok(Event::Panicked {
                    message,
                    out_of_memory,
                }) => panicked = Some((message, out_of_memory)),
                Ok(ev) => on_event(spec, &ev),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if Instant::now() > deadline && !killed {
                        let _ = child.kill();
                        killed = true;
                    }
                }
            }
        }
        let status = child.wait();
        let _ = reader.join();
        let stderr = err_reader.join().unwrap_or_default();
        if cancelled {
            return failed(
                "cancelled: this worker lost its hold on the trial".to_owned(),
                "metric",
            );
        }
        if killed {
            return failed(
                format!(
                    "killed after overrunning its {:.0}s budget",
                    spec.time_budget_secs
                ),
                "metric",
            );
        }
        match (result, status, panicked) {
            (Some(r), _, _) => r,
            (None, _, Some((message, oom))) => failed(panic_reason(&message, oom), "metric"),
            (None, Ok(s), None) => failed(death_reason(&stderr, Exit::of(&s)), "metric"),
            (None, Err(e), None) => failed(format!("lost the trial process: {e}"), "metric"),
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RunError + '_ {
    move |source| RunError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Whether a failure reason says the trial ran out of memory: the runner's own reasons begin
/// with [`OUT_OF_MEMORY`]; a trial's own (say, a caught device error) may say so anywhere.
pub fn is_out_of_memory(reason: &str) -> bool {
    reason.starts_with(OUT_OF_MEMORY) || is_out_of_memory_panic(reason)
}

/// Stops weak trials early, in the manner of asynchronous successive halving: at rung epochs
/// `min_epochs * eta^k` a trial goes on only if its best metric so far is in the top `1/eta`
/// of what earlier trials had reached by the same epoch.
#[derive(Debug, Clone)]
pub struct Pruner {
    /// Reduction factor between rungs.
    pub eta: usize,
    /// The first rung.
    pub min_epochs: u32,
    /// Earlier trials' metric curves, signed so that higher is better.
    pub curves: Vec<Vec<f64>>,
}

impl Pruner {
    /// A pruner with η = 2 and the first rung at epoch 2.
    pub fn new() -> Self {
        Pruner::with(2, 2)
    }

    /// A pruner with reduction factor `eta` (at least 2) and the first rung at `min_epochs`.
    pub fn with(eta: usize, min_epochs: u32) -> Self {
        Pruner {
            eta: eta.max(2),
            min_epochs: min_epochs.max(1),
            curves: Vec::new(),
        }
    }

    fn is_rung(&self, epoch: u32) -> bool {
        let mut r = self.min_epochs.max(1);
        while r < epoch {
            r = r.saturating_mul(self.eta.max(2) as u32);
        }
        r == epoch
    }

    /// Whether a trial whose curve so far is `curve` should stop now.
    pub fn should_prune(&self, curve: &[f64]) -> bool {
        let epoch = curve.len() as u32;
        if !self.is_rung(epoch) {
            return false;
        }
        let best = |c: &[f64]| {
            c.iter()
                .copied()
                .filter(|v| v.is_finite())
                .fold(f64::NEG_INFINITY, f64::max)
        };
        let mut peers: Vec<f64> = self
            .curves
            .iter()
            .filter(|c| c.len() >= epoch as usize)
            .map(|c| best(&c[..epoch as usize]))
            .collect();
        if peers.len() < self.eta {
            return false;
        }
        peers.sort_by(|a, b| b.total_cmp(a));
        let keep = peers.len().div_ceil(self.eta);
        best(curve) < peers[keep - 1]
    }
}

impl Default for Pruner {
    fn default() -> Self {
        Pruner::new()
    }
}

/// How to run a plan.
pub struct RunOptions<'a> {
    /// Whether a larger metric is better.
    pub higher_is_better: bool,
    /// The tuner for advanced mode; `None` runs basic mode only.
    pub tuner: Option<&'a dyn autodl_api::Tuner>,
    /// How many of the best networks advanced mode tunes.
    pub tune_top: usize,
    /// Most tuning trials, whatever time is left.
    pub max_tuning_trials: usize,
    /// Stops weak tuning trials early; `None` lets every one run out its share.
    pub pruner: Option<Pruner>,
    /// Basic mode by successive halving across networks ([`run_plan`]); `false` gives every
    /// network an equal share in turn.
    pub halving: bool,
    /// Where the study lives; `None`: `study.sqlite` in the output folder.
    pub study: Option<crate::study::StudyUrl>,
}

/// The search space advanced mode explores for a family.
pub fn search_space(family: &str) -> autodl_api::SearchSpace {
    use autodl_api::Dimension;
    let mut space = autodl_api::SearchSpace::new();
    space.insert(
        "learning-rate".into(),
        Dimension::LogUniform {
            low: 1e-4,
            high: 3e-2,
        },
    );
    if let Some(f) = autodl_api::network(family) {
        space.insert(
            "backbone".into(),
            Dimension::Choice {
                options: f.tuned_backbones().iter().map(|b| b.to_string()).collect(),
            },
        );
    }
    space.insert(
        "augment-strength".into(),
        Dimension::Uniform {
            low: 0.0,
            high: 1.5,
        },
    );
    if let Some(f) = autodl_api::network(family) {
        space.extend(autodl_api::search_space_of(&f.params()));
    }
    space
}

/// Applies tuned parameters to a trial spec; the family's own are checked against its
/// declaration (a tuner's real value for a whole-number parameter is rounded).
pub(crate) fn apply(spec: &mut TrialSpec, params: &autodl_api::Params) -> Result<(), String> {
    use autodl_api::ParamValue;
    for (k, v) in params {
        match (k.as_str(), v) {
            ("learning-rate", ParamValue::Number(lr)) => spec.learning_rate = Some(*lr),
            ("backbone", ParamValue::Text(b)) => spec.backbone = b.clone(),
            ("augment-strength", ParamValue::Number(s)) => spec.augment.strength = *s as f32,
            _ => {
                spec.params.insert(k.clone(), v.clone());
            }
        }
    }
    if let Some(family) = autodl_api::network(&spec.family) {
        spec.params = autodl_api::resolve_params(&family.params(), &spec.params)
            .map_err(|e| format!("tuned parameters for {}: {e}", spec.family))?;
    }
    Ok(())
}

/// Runs every trial of `plan` in turn within its time limit and returns the leaderboard.
///
/// A trial whose `result.json` already exists from an earlier run of the same plan is not run
/// again (resume). A trial that runs out of memory is retried once at half its batch size.
/// With a tuner (advanced mode), basic mode gets half the budget and the rest tunes the best
/// networks, with weak trials pruned early.
pub fn run_plan(
    plan: &Plan,
    runner: &dyn TrialRunner,
    on_event: &mut dyn FnMut(&TrialSpec, &Event),
    options: &RunOptions<'_>,
) -> Result<Leaderboard, RunError> {
    let start = Instant::now();
    std::fs::create_dir_all(&plan.out).map_err(io(&plan.out))?;
    // Time kept back for the leaderboard, report and packages.
    let reserve = (0.03 * plan.time_limit_secs).max(3.0);
    let basic_limit = if options.tuner.is_some() {
        0.5 * plan.time_limit_secs
    } else {
        plan.time_limit_secs
    };
    let mut board = Leaderboard::new(options.higher_is_better);
    for (name, reason) in &plan.skipped {
        board.push_skipped(name, "", reason);
    }
    let study = match &options.study {
        Some(url) => crate::study::Study::connect(url)?,
        None => crate::study::Study::open(&plan.out)?,
    };
    let sign = if options.higher_is_better { 1.0 } else { -1.0 };
    let mut pruner = options.pruner.clone();
    let mut results: Vec<(TrialSpec, TrialResult)> = Vec::new();
    let limit = basic_limit - reserve;
    let outcomes = if options.halving && plan.trials.len() > 1 {
        successive_halving(plan, &study, runner, on_event, start, limit, sign)?
    } else {
        let n = plan.trials.len();
        let mut outcomes = Vec::new();
        for (i, base) in plan.trials.iter().enumerate() {
            let share = (limit - start.elapsed().as_secs_f64()) / (n - i) as f64;
            let result = run_resumable(&study, base, share, runner, on_event, None)?;
            outcomes.push(result.ok_or(share));
        }
        outcomes
    };
    for (base, outcome) in plan.trials.iter().zip(outcomes) {
        match outcome {
            Ok(r) => {
                if let Some(p) = &mut pruner {
                    p.curves
                        .push(r.epochs.iter().map(|e| sign * e.metric).collect());
                }
                results.push((base.clone(), r.clone()));
                board.push(base, r);
            }
            Err(share) => board.push_skipped(
                &base.family,
                &base.backbone,
                &format!("time limit reached ({share:.0}s left for it)"),
            ),
        }
    }
    let Some(tuner) = options.tuner else {
        return Ok(board);
    };

    // Advanced mode: tune the best networks with what is left.
    let mut ranked: Vec<&(TrialSpec, TrialResult)> =
        results.iter().filter(|(_, r)| r.metric.is_some()).collect();
    ranked.sort_by(|a, b| {
        (sign * b.1.metric.unwrap_or(0.0)).total_cmp(&(sign * a.1.metric.unwrap_or(0.0)))
    });
    let bases: Vec<TrialSpec> = ranked
        .iter()
        .take(options.tune_top.max(1))
        .map(|(s, _)| s.clone())
        .collect();
    if bases.is_empty() {
        return Ok(board);
    }
    // Each tuning trial gets what the slowest basic trial needed, so the count adapts to the machine.
    let per_trial = results
        .iter()
        .map(|(_, r)| r.train_secs)
        .fold(0.0f64, f64::max)
        .max(10.0);
    let mut histories: Vec<Vec<autodl_api::TrialRecord>> = bases
        .iter()
        .map(|b| {
            results
                .iter()
                .filter(|(s, _)| s.id == b.id)
                .map(|(s, r)| autodl_api::TrialRecord {
                    params: [
                        (
                            "learning-rate".to_owned(),
                            autodl_api::ParamValue::Number(r.learning_rate),
                        ),
                        (
                            "backbone".to_owned(),
                            autodl_api::ParamValue::Text(s.backbone.clone()),
                        ),
                    ]
                    .into(),
                    curve: r.epochs.iter().map(|e| sign * e.metric).collect(),
                    complete: true,
                })
                .collect()
        })
        .collect();
    let mut k = 0usize;
    while k < options.max_tuning_trials {
        let left = plan.time_limit_secs - start.elapsed().as_secs_f64() - reserve;
        if left < per_trial.min(0.5 * plan.time_limit_secs) * 0.5 {
            break;
        }
        let which = k % bases.len();
        let base = &bases[which];
        let space = search_space(&base.family);
        let Some(params) =
            tuner.suggest(&space, &histories[which], base.seed.wrapping_add(k as u64))
        else {
            break;
        };
        let mut spec = base.clone();
        if let Err(reason) = apply(&mut spec, &params) {
            on_event(base, &Event::Message { text: reason });
            break;
        }
        spec.id = format!("{}-t{}", base.family, k + 1);
        spec.out_dir = plan.out.join("trials").join(&spec.id);
        k += 1;
        let share = per_trial.min(left);
        let pr = pruner.clone();
        let watch = pr.as_ref().map(|p| (p, sign));
        let Some(r) = run_resumable(&study, &spec, share, runner, on_event, watch)? else {
            break;
        };
        let curve: Vec<f64> = r.epochs.iter().map(|e| sign * e.metric).collect();
        if let Some(p) = &mut pruner {
            p.curves.push(curve.clone());
        }
        histories[which].push(autodl_api::TrialRecord {
            params,
            curve,
            complete: matches!(r.status, TrialStatus::Completed),
        });
        board.push(&spec, r);
    }
    Ok(board)
}

/// Whether a trial that ended as `r` could train on: it finished with a model and has epochs
/// left. One that stopped early can too: its next rung starts a new learning-rate cycle, with
/// its patience renewed.
fn can_continue(spec: &TrialSpec, r: &TrialResult) -> bool {
    let last = r.epochs.last().map_or(0, |e| e.epoch);
    matches!(r.status, TrialStatus::Completed)
        && r.model_dir.is_some()
        && last > 0
        && last < spec.max_epochs
}

/// Whether a trial stopped early: its metric did not improve within its patience.
fn stopped_early(spec: &TrialSpec, r: &TrialResult) -> bool {
    let last = r.epochs.last().map_or(0, |e| e.epoch);
    r.best_epoch.is_some_and(|b| last - b >= spec.patience)
}

/// Basic mode by successive halving across networks, within `limit` seconds from `start`.
///
/// Every network trains a first rung; while more than two could go on, each rung spends
/// half of the time left, shared evenly, and only the better half (by the ranking metric)
/// goes on to the next: the others keep the model they have, their row saying why they
/// stopped. The last rung (two networks or fewer) spends all that is left, and as long as
/// time is left its networks go on to further rungs. A network goes on from its checkpoint
/// (`resume` at the next `rung`): its epochs continue, with a new learning-rate cycle planned
/// for its new share and its patience renewed (so one that stopped early goes on too). A
/// network that reached its most epochs or failed needs no more time; what it leaves goes to
/// the others.
///
/// Gives each trial of the plan its final result, or the share it had when there was no
/// time left to start it.
fn successive_halving(
    plan: &Plan,
    study: &crate::study::Study,
    runner: &dyn TrialRunner,
    on_event: &mut dyn FnMut(&TrialSpec, &Event),
    start: Instant,
    limit: f64,
    sign: f64,
) -> Result<Vec<Result<TrialResult, f64>>, RunError> {
    let n = plan.trials.len();
    let mut outcomes: Vec<Result<TrialResult, f64>> = vec![Err(0.0); n];
    let mut alive: Vec<usize> = (0..n).collect();
    let mut rung = 0u32;
    while !alive.is_empty() && rung < 16 {
        let k = alive.len();
        let rung_start = start.elapsed().as_secs_f64();
        let left = limit - rung_start;
        let budget = if k <= 2 { left } else { 0.5 * left };
        let mut ran = Vec::new();
        for (j, &i) in alive.iter().enumerate() {
            let spent = start.elapsed().as_secs_f64() - rung_start;
            let share = (budget - spent) / (k - j) as f64;
            let mut spec = plan.trials[i].clone();
            spec.rung = rung;
            spec.resume = rung > 0;
            let before = outcomes[i].as_ref().map_or(0, |r| r.epochs.len());
            match run_resumable(study, &spec, share, runner, on_event, None)? {
                Some(r) if rung > 0 && !matches!(r.status, TrialStatus::Completed) => {
                    // The network keeps the model of its earlier rung.
                    on_event(
                        &spec,
                        &Event::Message {
                            text: format!(
                                "rung {rung} did not finish ({}); keeping the model of rung {}",
                                r.status.reason(),
                                rung - 1
                            ),
                        },
                    );
                }
                Some(r) => {
                    if r.epochs.len() > before {
                        ran.push(i);
                    }
                    outcomes[i] = Ok(r);
                }
                None if rung == 0 => outcomes[i] = Err(share),
                None => {}
            }
        }
        // Rank this rung's networks; the better half goes on.
        let mut ranked: Vec<usize> = alive
            .iter()
            .copied()
            .filter(|&i| outcomes[i].as_ref().is_ok_and(|r| r.metric.is_some()))
            .collect();
        let score = |i: usize| {
            outcomes[i]
                .as_ref()
                .ok()
                .and_then(|r| r.metric)
                .map_or(f64::NEG_INFINITY, |m| sign * m)
        };
        ranked.sort_by(|&a, &b| score(b).total_cmp(&score(a)));
        let keep = if k <= 2 { k } else { k.div_ceil(2) };
        for (place, &i) in ranked.iter().enumerate().skip(keep) {
            let spec = &plan.trials[i];
            let Ok(r) = &mut outcomes[i] else { continue };
            // One that stopped early keeps its own reason for stopping.
            if !can_continue(spec, r) || stopped_early(spec, r) {
                continue;
            }
            let why = format!(
                "stopped by successive halving after rung {rung} ({} epochs): {} {:.4} placed {} of {k}, below the top {keep}",
                r.epochs.len(),
                r.metric_name,
                r.metric.unwrap_or(f64::NAN),
                place + 1
            );
            on_event(spec, &Event::Message { text: why.clone() });
            r.status = TrialStatus::Pruned(why);
            let mut recorded = spec.clone();
            recorded.rung = rung;
            record(study, &recorded, r)?;
        }
        alive = ranked
            .into_iter()
            .take(keep)
            .filter(|&i| {
                ran.contains(&i)
                    && outcomes[i]
                        .as_ref()
                        .is_ok_and(|r| can_continue(&plan.trials[i], r))
            })
            .collect();
        if limit - start.elapsed().as_secs_f64() < 5.0 {
            break;
        }
        rung += 1;
    }
    Ok(outcomes)
}

/// Runs one trial unless an earlier run finished it; `None` when its share is too small.
fn run_resumable(
    study: &crate::study::Study,
    base: &TrialSpec,
    share: f64,
    runner: &dyn TrialRunner,
    on_event: &mut dyn FnMut(&TrialSpec, &Event),
    pruner: Option<(&Pruner, f64)>,
) -> Result<Option<TrialResult>, RunError> {
    let earlier = study.finished(&base.id)?;
    if let Some((rung, done)) = &earlier
        && *rung >= base.rung
    {
        on_event(
            base,
            &Event::Message {
                text: "finished in an earlier run; not trained again".into(),
            },
        );
        return Ok(Some(done.clone()));
    }
    if share < 5.0 {
        return Ok(None);
    }
    let mut result = run_trial(base, share, runner, on_event, pruner)?;
    // A later rung's time adds to what the earlier rungs spent.
    if let Some((_, done)) = &earlier {
        result.1.train_secs += done.train_secs;
    }
    record(study, &result.0, &result.1)?;
    Ok(Some(result.1))
}

/// Runs trial `base` with `share` seconds, stopped early by `pruner` if given. A trial that
/// runs out of memory is restarted once at half its batch size, from its checkpoint when it
/// has one. Gives the spec it last ran with and its result.
pub(crate) fn run_trial(
    base: &TrialSpec,
    share: f64,
    runner: &dyn TrialRunner,
    on_event: &mut dyn FnMut(&TrialSpec, &Event),
    pruner: Option<(&Pruner, f64)>,
) -> Result<(TrialSpec, TrialResult), RunError> {
    std::fs::create_dir_all(&base.out_dir).map_err(io(&base.out_dir))?;
    let _ = std::fs::remove_file(base.out_dir.join(STOP_FILE));
    let mut spec = base.clone();
    spec.time_budget_secs = share;
    let mut curve = Vec::new();
    let mut watch = |s: &TrialSpec, ev: &Event| {
        if let (Event::Epoch(e), Some((p, sign))) = (ev, pruner) {
            curve.push(sign * e.metric);
            if p.should_prune(&curve) {
                let _ = std::fs::write(s.out_dir.join(STOP_FILE), b"pruned");
                on_event(
                    s,
                    &Event::Message {
                        text: format!(
                            "pruned at epoch {}: below the top 1/{} of earlier trials",
                            e.epoch, p.eta
                        ),
                    },
                );
            }
        }
        on_event(s, ev);
    };
    let mut result = run_one(runner, &spec, &mut watch)?;
    if let TrialStatus::Failed(reason) = &result.status
        && is_out_of_memory(reason)
    {
        // A trial that got through an epoch left a checkpoint naming its batch size: it
        // restarts from there at half that batch, keeping its finished epochs.
        let checkpoint = read_checkpoint(&spec.out_dir)?;
        let batch = checkpoint
            .map(|(_, b)| b)
            .or(spec.batch_size)
            .unwrap_or(result.batch_size.max(2));
        let half = batch / 2;
        if half >= 1 {
            let from = match checkpoint {
                Some((epoch, _)) => {
                    spec.resume = true;
                    format!(" from its checkpoint after epoch {epoch}")
                }
                None => String::new(),
            };
            watch(
                &spec,
                &Event::Message {
                    text: format!(
                        "out of memory at batch size {batch}; restarting at batch size {half}{from}"
                    ),
                },
            );
            spec.batch_size = Some(half);
            result = run_one(runner, &spec, &mut watch)?;
        }
    }
    Ok((spec, result))
}

/// Records a trial's outcome in the study and as `result.json` in its folder. Every outcome
/// goes into the study; only finished ones are read back on a rerun, so a failure is tried
/// again next time. result.json beside the model serves the report. The study first: a run
/// killed in between must not leave a result.json the study lacks.
fn record(
    study: &crate::study::Study,
    spec: &TrialSpec,
    result: &TrialResult,
) -> Result<(), RunError> {
    study.record(spec, result)?;
    let path = spec.out_dir.join(autodl_api::RESULT);
    write_json(&path, result).map_err(io(&path))
}

/// The epoch and batch size of a trial folder's `checkpoint.json`, written by the training loop
/// after every epoch; `None` when the trial finished no epoch.
pub(crate) fn read_checkpoint(dir: &std::path::Path) -> Result<Option<(u32, u32)>, RunError> {
    Ok(autodl_api::Checkpoint::load(dir)?
        .map(|c| (c.epoch, u32::try_from(c.batch_size).unwrap_or(u32::MAX))))
}

fn run_one(
    runner: &dyn TrialRunner,
    spec: &TrialSpec,
    on_event: &mut dyn FnMut(&TrialSpec, &Event),
) -> Result<TrialResult, RunError> {
    let spec_path = spec.out_dir.join("spec.json");
    write_json(&spec_path, spec).map_err(io(&spec_path))?;
    Ok(runner.run(spec, &spec_path, on_event))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_misspelt_checkpoint_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        assert!(matches!(read_checkpoint(dir.path()), Ok(None)));
        let path = dir.path().join(autodl_api::CHECKPOINT);
        std::fs::write(&path, r#"{"epoch": 2, "batch-sise": 12}"#).expect("written");
        let err = read_checkpoint(dir.path()).expect_err("a misspelt field is refused");
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn a_panic_line_is_the_reason_and_flags_out_of_memory() {
        let line =
            r#"{"event":"panicked","message":"CUDA error: out of memory","out-of-memory":true}"#;
        let Ok(Event::Panicked {
            message,
            out_of_memory,
        }) = serde_json::from_str::<Event>(line)
        else {
            panic!("not a panic event: {line}");
        };
        let reason = panic_reason(&message, out_of_memory);
        assert_eq!(reason, "out of memory: CUDA error: out of memory");
        assert!(is_out_of_memory(&reason));
        let other = panic_reason("index out of bounds", false);
        assert_eq!(other, "panicked: index out of bounds");
        assert!(!is_out_of_memory(&other));
    }

    #[test]
    fn finds_the_panic_message() {
        let err = "noise\nthread 'main' panicked at src/x.rs:1:1:\nCUDA out of memory\nnote: run with RUST_BACKTRACE";
        assert_eq!(
            death_reason(err, Exit::Code(101)),
            "panicked: CUDA out of memory"
        );
        assert!(is_out_of_memory(&death_reason(err, Exit::Code(101))));
        assert_eq!(
            death_reason("", Exit::Unknown),
            "trial process was killed by a signal"
        );
        assert_eq!(
            death_reason("", Exit::Signal(15)),
            "trial process was killed by signal 15"
        );
    }

    #[test]
    fn out_of_memory_is_read_from_how_the_trial_ended() {
        // Linux's OOM killer leaves no message at all.
        assert!(is_out_of_memory(&death_reason("", Exit::Signal(SIGKILL))));
        // A failed allocation aborts; a trailing note must not hide it.
        let err = "epoch 1\nmemory allocation of 123456789 bytes failed\nnote: run with `RUST_BACKTRACE=1`";
        assert!(is_out_of_memory(&death_reason(err, Exit::Signal(SIGABRT))));
        assert!(!is_out_of_memory(&death_reason(
            "assertion failed",
            Exit::Signal(SIGABRT)
        )));
    }
}
