//! The orchestrator: turns a pipeline into trials, runs each trial in a child process within
//! the time budget, and ranks the results on a leaderboard.
//!
//! Architecture invariant: the core names no concrete plugin. It sees network families only
//! through the registry in `autodl-api`, and trials only as JSON crossing a process boundary.

mod distributed;
mod leaderboard;
mod plan;
mod runner;
mod study;

pub use distributed::{StudySettings, WorkerOptions, WorkerSummary, coordinate, run_worker};
pub use leaderboard::{Combined, Leaderboard, Row, metrics_text};
pub use plan::{Plan, PlanError, augment_spec, check_stages, family_params, plan};
pub use runner::{
    ChildRunner, Event, OUT_OF_MEMORY, Pruner, RunError, RunOptions, TrialRunner, is_out_of_memory,
    is_out_of_memory_panic, run_plan, search_space,
};
pub use study::{
    Claim, PrunerSettings, SCHEMA_VERSION, Study, StudyError, StudyInfo, StudyUrl, TrialEvent,
    TrialRow, hostname, now_ms,
};

/// Writes `value` as pretty JSON to `path`, whole or not at all.
pub(crate) fn write_json(
    path: &std::path::Path,
    value: &impl serde::Serialize,
) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(std::io::Error::other)?;
    autodl_api::files::write_atomic(path, text.as_bytes())
}
