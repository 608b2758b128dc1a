//! Running trials, each in its own child process.
//!
//! On Burn 0.21 a CUDA out-of-memory or a driver failure is a panic, so a trial runs in a
//! child process of our own binary (`autodl trial --spec FILE`): whatever it does, the
//! orchestrator survives and records why it died. The child speaks JSON lines on stdout.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use autodl_api::{EpochRecord, TrialResult, TrialSpec, TrialStatus};
use serde::{Deserialize, Serialize};

use crate::leaderboard::Leaderboard;
use crate::plan::Plan;
use crate::write_json;

/// One line a trial process writes on stdout.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "event")]
pub enum Event {
    /// An epoch finished.
    Epoch(EpochRecord),
    /// A status line.
    Message {
        /// The text.
        text: String,
    },
    /// The trial's outcome; the last line.
    Result(TrialResult),
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
}

/// Runs one trial and reports its events; a failure of the trial is a `Failed` result, not an
/// error.
pub trait TrialRunner {
    /// Runs `spec`, whose JSON is at `spec_path`.
    fn run(&self, spec: &TrialSpec, spec_path: &Path, on_event: &mut dyn FnMut(&TrialSpec, &Event)) -> TrialResult;
}

/// Runs trials as `EXE trial --spec FILE` child processes.
pub struct ChildRunner {
    /// The binary to start, normally `std::env::current_exe()`.
    pub exe: PathBuf,
    /// Seconds a trial may overrun its budget before it is killed.
    pub grace_secs: f64,
}

fn failed(reason: String, metric: &str) -> TrialResult {
    TrialResult::without_model(TrialStatus::Failed(reason), metric)
}

/// The most telling line of a dead child's stderr: the panic message if there is one.
fn death_reason(stderr: &str, code: Option<i32>) -> String {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    if let Some(i) = lines.iter().position(|l| l.contains("panicked at")) {
        let msg = lines.get(i + 1).copied().unwrap_or(lines[i]);
        return format!("panicked: {}", msg.trim());
    }
    if let Some(last) = lines.last() {
        return last.trim().trim_start_matches("error: ").to_owned();
    }
    match code {
        Some(c) => format!("trial process exited with code {c}"),
        None => "trial process was killed by a signal".to_owned(),
    }
}

impl TrialRunner for ChildRunner {
    fn run(&self, spec: &TrialSpec, spec_path: &Path, on_event: &mut dyn FnMut(&TrialSpec, &Event)) -> TrialResult {
        let mut child = match Command::new(&self.exe)
            .arg("trial")
            .arg("--spec")
            .arg(spec_path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => return failed(format!("cannot start {}: {e}", self.exe.display()), "metric"),
        };
        let (tx, rx) = mpsc::channel::<Event>();
        let stdout = child.stdout.take();
        let reader = std::thread::spawn(move || {
            if let Some(out) = stdout {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if let Ok(ev) = serde_json::from_str::<Event>(&line) {
                        let _ = tx.send(ev);
                    }
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
        let deadline = Instant::now() + Duration::from_secs_f64(spec.time_budget_secs + self.grace_secs);
        let mut result = None;
        let mut killed = false;
        loop {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(Event::Result(r)) => result = Some(r),
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
        if killed {
            return failed(format!("killed after overrunning its {:.0}s budget", spec.time_budget_secs), "metric");
        }
        match (result, status) {
            (Some(r), _) => r,
            (None, Ok(s)) => failed(death_reason(&stderr, s.code()), "metric"),
            (None, Err(e)) => failed(format!("lost the trial process: {e}"), "metric"),
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RunError + '_ {
    move |source| RunError::Io { path: path.to_owned(), source }
}

/// Whether a failure reason looks like running out of memory.
pub fn is_out_of_memory(reason: &str) -> bool {
    let r = reason.to_lowercase();
    r.contains("out of memory") || r.contains("outofmemory") || r.contains("memory allocation")
}

/// Runs every trial of `plan` in turn within its time limit and returns the leaderboard.
///
/// A trial whose `result.json` already exists from an earlier run of the same plan is not run
/// again (resume). A trial that runs out of memory is retried once at half its batch size.
pub fn run_plan(
    plan: &Plan,
    runner: &dyn TrialRunner,
    on_event: &mut dyn FnMut(&TrialSpec, &Event),
    higher_is_better: bool,
) -> Result<Leaderboard, RunError> {
    let start = Instant::now();
    std::fs::create_dir_all(&plan.out).map_err(io(&plan.out))?;
    // Time kept back for the leaderboard, report and packages.
    let reserve = (0.03 * plan.time_limit_secs).max(3.0);
    let mut board = Leaderboard::new(higher_is_better);
    for (name, reason) in &plan.skipped {
        board.push_skipped(name, "", reason);
    }
    let n = plan.trials.len();
    for (i, base) in plan.trials.iter().enumerate() {
        let result_path = base.out_dir.join("result.json");
        if let Some(done) = std::fs::read_to_string(&result_path)
            .ok()
            .and_then(|t| serde_json::from_str::<TrialResult>(&t).ok())
        {
            on_event(base, &Event::Message { text: "finished in an earlier run; not trained again".into() });
            board.push(base, done);
            continue;
        }
        let left = plan.time_limit_secs - start.elapsed().as_secs_f64() - reserve;
        let share = left / (n - i) as f64;
        if share < 5.0 {
            board.push_skipped(&base.family, &base.backbone, &format!("time limit reached ({share:.0}s left for it)"));
            continue;
        }
        std::fs::create_dir_all(&base.out_dir).map_err(io(&base.out_dir))?;
        let mut spec = base.clone();
        spec.time_budget_secs = share;
        let mut result = run_one(runner, &spec, on_event)?;
        if let TrialStatus::Failed(reason) = &result.status
            && is_out_of_memory(reason)
        {
            let half = spec.batch_size.unwrap_or(result.batch_size.max(2)) / 2;
            if half >= 1 {
                on_event(&spec, &Event::Message { text: format!("out of memory; retrying at batch size {half}") });
                spec.batch_size = Some(half);
                spec.time_budget_secs = (plan.time_limit_secs - start.elapsed().as_secs_f64() - reserve) / (n - i) as f64;
                result = run_one(runner, &spec, on_event)?;
            }
        }
        // Only finished trials are kept for resuming; a failure is tried again next time.
        if matches!(result.status, TrialStatus::Completed | TrialStatus::Pruned(_)) {
            write_json(&result_path, &result).map_err(io(&result_path))?;
        }
        board.push(&spec, result);
    }
    Ok(board)
}

fn run_one(runner: &dyn TrialRunner, spec: &TrialSpec, on_event: &mut dyn FnMut(&TrialSpec, &Event)) -> Result<TrialResult, RunError> {
    let spec_path = spec.out_dir.join("spec.json");
    write_json(&spec_path, spec).map_err(io(&spec_path))?;
    Ok(runner.run(spec, &spec_path, on_event))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_panic_message() {
        let err = "noise\nthread 'main' panicked at src/x.rs:1:1:\nCUDA out of memory\nnote: run with RUST_BACKTRACE";
        assert_eq!(death_reason(err, Some(101)), "panicked: CUDA out of memory");
        assert!(is_out_of_memory(&death_reason(err, Some(101))));
        assert_eq!(death_reason("", None), "trial process was killed by a signal");
    }
}
