//! The orchestrator survives trials that die, resumes finished ones and shares the budget.

mod common;

use std::path::{Path, PathBuf};

use autodl_api::{Params, Task, TrialResult, TrialSpec, TrialStatus};
use autodl_core::{ChildRunner, Event, Plan, Pruner, RunOptions, TrialRunner, run_plan};
use common::spec;

fn plan(out: &Path, ids: &[&str]) -> Plan {
    Plan {
        task: Task::PixelClassification,
        out: out.to_owned(),
        time_limit_secs: 600.0,
        trials: ids.iter().map(|id| spec(id, out)).collect(),
        skipped: vec![],
    }
}

fn basic() -> RunOptions<'static> {
    RunOptions {
        higher_is_better: true,
        tuner: None,
        tune_top: 1,
        max_tuning_trials: 0,
        pruner: None,
        halving: false,
        study: None,
    }
}

#[cfg(unix)]
#[test]
fn a_dying_child_process_is_recorded_and_the_run_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    // `sh trial --spec FILE` fails at once: sh cannot open a script called `trial`.
    let runner = ChildRunner {
        exe: PathBuf::from("/bin/sh"),
        grace_secs: 5.0,
        extra_args: Vec::new(),
        cancel: Default::default(),
    };
    let board = run_plan(
        &plan(dir.path(), &["a", "b"]),
        &runner,
        &mut |_, _| {},
        &basic(),
    )
    .unwrap();
    assert_eq!(board.rows.len(), 2, "both trials were attempted");
    let recorded = autodl_core::Study::open(dir.path())
        .unwrap()
        .list()
        .unwrap();
    assert!(
        recorded.iter().all(|(_, status, _)| status == "failed"),
        "{recorded:?}"
    );
    for row in &board.rows {
        assert_eq!(row.status, "failed");
        assert!(
            row.reason.contains("trial"),
            "reason names what went wrong: {}",
            row.reason
        );
    }
}

/// A runner that counts its calls and fails with out-of-memory above batch size 6.
struct Fake {
    calls: std::cell::RefCell<Vec<(String, Option<u32>)>>,
}

impl TrialRunner for Fake {
    fn run(
        &self,
        spec: &TrialSpec,
        _: &Path,
        _: &mut dyn FnMut(&TrialSpec, &Event),
    ) -> TrialResult {
        self.calls
            .borrow_mut()
            .push((spec.id.clone(), spec.batch_size));
        if spec.batch_size.is_none_or(|b| b > 6) {
            // Like a real trial, it finished two epochs at its deduced batch of 12 first.
            autodl_api::Checkpoint {
                epoch: 2,
                batch_size: 12,
                learning_rate: 0.01,
                planned_epochs: 10,
                epochs: Vec::new(),
                best_epoch: Some(2),
                rung: 0,
                cycle_start: 0,
            }
            .save(&spec.out_dir)
            .expect("the checkpoint is written");
            let mut r = TrialResult::without_model(
                TrialStatus::Failed("CUDA out of memory".into()),
                "miou",
            );
            r.batch_size = 8;
            return r;
        }
        let mut r = TrialResult::without_model(TrialStatus::Completed, "miou");
        r.metric = Some(0.5);
        r.batch_size = spec.batch_size.unwrap_or(0);
        r
    }
}

#[test]
fn out_of_memory_is_retried_at_half_batch_and_finished_trials_resume() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake {
        calls: Default::default(),
    };
    let p = plan(dir.path(), &["a"]);
    let board = run_plan(&p, &fake, &mut |_, _| {}, &basic()).unwrap();
    assert_eq!(
        *fake.calls.borrow(),
        vec![("a".to_owned(), None), ("a".to_owned(), Some(6))]
    );
    let retried: TrialSpec = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("trials/a/spec.json")).unwrap(),
    )
    .unwrap();
    assert!(retried.resume, "the retry resumes from the checkpoint");
    assert_eq!(board.rows[0].status, "completed");
    assert_eq!(
        board.rows[0].batch_size, None,
        "no model folder, so no batch is reported"
    );

    // Second run: the finished trial is read back from the study, not run again.
    let board = run_plan(&p, &fake, &mut |_, _| {}, &basic()).unwrap();
    assert_eq!(fake.calls.borrow().len(), 2);
    assert_eq!(board.rows[0].metric, Some(0.5));
    let study = autodl_core::Study::open(dir.path()).unwrap();
    assert_eq!(
        study.list().unwrap(),
        vec![("a".to_owned(), "completed".to_owned(), Some(0.5))]
    );
}

/// Alternates a good and a bad learning rate.
struct Alternating;

impl autodl_api::Tuner for Alternating {
    fn name(&self) -> &'static str {
        "alternating"
    }
    fn suggest(
        &self,
        _: &autodl_api::SearchSpace,
        history: &[autodl_api::TrialRecord],
        _: u64,
    ) -> Option<Params> {
        let lr = if history.len().is_multiple_of(2) {
            0.5
        } else {
            1e-3
        };
        Some(
            [(
                "learning-rate".to_owned(),
                autodl_api::ParamValue::Number(lr),
            )]
            .into(),
        )
    }
}

/// Emits ten epochs whose metric depends on the learning rate, stopping when asked to.
struct Curves;

/// Like [`Curves`], with a metric where lower is better: good trials near 0, bad ones above 1.
struct Losses;

impl TrialRunner for Losses {
    fn run(
        &self,
        spec: &TrialSpec,
        path: &Path,
        on_event: &mut dyn FnMut(&TrialSpec, &Event),
    ) -> TrialResult {
        curves(spec, path, on_event, |good, e| {
            if good { 0.1 / e } else { 1.0 + 0.1 / e }
        })
    }
}

impl TrialRunner for Curves {
    fn run(
        &self,
        spec: &TrialSpec,
        path: &Path,
        on_event: &mut dyn FnMut(&TrialSpec, &Event),
    ) -> TrialResult {
        curves(spec, path, on_event, |good, e| {
            if good { 0.5 + 0.02 * e } else { 0.02 * e }
        })
    }
}

/// Ten epochs of `metric_at(good, epoch)`, good meaning a learning rate below 0.1.
fn curves(
    spec: &TrialSpec,
    _: &Path,
    on_event: &mut dyn FnMut(&TrialSpec, &Event),
    metric_at: impl Fn(bool, f64) -> f64,
) -> TrialResult {
    let good = spec.learning_rate.is_none_or(|lr| lr < 0.1);
    let mut epochs = Vec::new();
    let mut status = TrialStatus::Completed;
    for e in 1..=10u32 {
        let metric = metric_at(good, e as f64);
        let rec = autodl_api::EpochRecord {
            epoch: e,
            train_loss: 1.0,
            val_loss: 1.0,
            metric,
            elapsed_secs: e as f64,
        };
        on_event(spec, &Event::Epoch(rec.clone()));
        epochs.push(rec);
        if spec.out_dir.join(autodl_api::STOP_FILE).exists() {
            status = TrialStatus::Pruned(format!("stopped after epoch {e}"));
            break;
        }
    }
    let mut r = TrialResult::without_model(status, "miou");
    r.metric = epochs.iter().map(|e| e.metric).reduce(f64::max);
    r.epochs = epochs;
    r.train_secs = 20.0;
    r
}

#[test]
fn advanced_mode_prunes_weak_trials_before_their_last_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let options = RunOptions {
        higher_is_better: true,
        tuner: Some(&Alternating),
        tune_top: 1,
        max_tuning_trials: 4,
        pruner: Some(Pruner::new()),
        halving: false,
        study: None,
    };
    let board = run_plan(&plan(dir.path(), &["a"]), &Curves, &mut |_, _| {}, &options).unwrap();
    assert_eq!(
        board.rows.len(),
        5,
        "one basic trial and four tuning trials"
    );
    let pruned: Vec<_> = board.rows.iter().filter(|r| r.status == "pruned").collect();
    assert!(!pruned.is_empty(), "{:#?}", board.rows);
    for row in &pruned {
        assert!(row.epochs < 10, "{} ran all its epochs", row.id);
    }
    // The good trials ran to the end.
    assert!(
        board
            .rows
            .iter()
            .any(|r| r.id.contains("-t") && r.status == "completed" && r.epochs == 10)
    );
}

#[test]
fn pruning_follows_the_metric_direction_and_can_be_switched_off() {
    // Lower is better here, so the trials whose curve is above 1 are the weak ones.
    let dir = tempfile::tempdir().unwrap();
    let mut options = RunOptions {
        higher_is_better: false,
        tuner: Some(&Alternating),
        tune_top: 1,
        max_tuning_trials: 4,
        pruner: Some(Pruner::new()),
        halving: false,
        study: None,
    };
    let board = run_plan(&plan(dir.path(), &["a"]), &Losses, &mut |_, _| {}, &options).unwrap();
    let pruned: Vec<_> = board.rows.iter().filter(|r| r.status == "pruned").collect();
    assert!(!pruned.is_empty(), "{:#?}", board.rows);
    for row in &pruned {
        assert!(row.metric.is_some_and(|m| m > 1.0), "{row:#?}");
        assert!(row.epochs < 10, "{row:#?}");
    }

    let dir = tempfile::tempdir().unwrap();
    options.pruner = None;
    let board = run_plan(&plan(dir.path(), &["a"]), &Losses, &mut |_, _| {}, &options).unwrap();
    assert_eq!(board.rows.len(), 5);
    for row in &board.rows {
        assert_eq!(
            (row.status.as_str(), row.epochs),
            ("completed", 10),
            "{row:#?}"
        );
    }
}

#[test]
fn pruner_keeps_the_top_half_at_rungs() {
    let p = Pruner {
        eta: 2,
        min_epochs: 2,
        curves: vec![vec![0.1, 0.2, 0.3, 0.4], vec![0.5, 0.6, 0.7, 0.8]],
    };
    assert!(
        p.should_prune(&[0.1, 0.3]),
        "below the better peer at rung 2"
    );
    assert!(!p.should_prune(&[0.1, 0.7]));
    assert!(!p.should_prune(&[0.0, 0.0, 0.0]), "epoch 3 is not a rung");
    assert!(p.should_prune(&[0.0, 0.0, 0.0, 0.5]));
}

/// Trains three epochs per run, going on from its checkpoint when resumed; a trial's metric
/// grows with its epochs, more for a later letter. Records every run's id, rung and share.
struct Rungs {
    calls: std::cell::RefCell<Vec<(String, u32, f64)>>,
}

impl TrialRunner for Rungs {
    fn run(
        &self,
        spec: &TrialSpec,
        _: &Path,
        _: &mut dyn FnMut(&TrialSpec, &Event),
    ) -> TrialResult {
        self.calls
            .borrow_mut()
            .push((spec.id.clone(), spec.rung, spec.time_budget_secs));
        let quality = f64::from(spec.id.as_bytes()[0] - b'a' + 1);
        let mut epochs = match (spec.resume, autodl_api::Checkpoint::load(&spec.out_dir)) {
            (true, Ok(Some(c))) => c.epochs,
            _ => Vec::new(),
        };
        let first = epochs.len() as u32 + 1;
        for e in first..(first + 3).min(spec.max_epochs + 1) {
            epochs.push(autodl_api::EpochRecord {
                epoch: e,
                train_loss: 1.0,
                val_loss: 1.0,
                metric: quality * f64::from(e) / 100.0,
                elapsed_secs: 1.0,
            });
        }
        let last = epochs.last().map_or(0, |e| e.epoch);
        autodl_api::Checkpoint {
            epoch: last,
            batch_size: 4,
            learning_rate: 0.01,
            planned_epochs: 3,
            epochs: epochs.clone(),
            best_epoch: Some(last),
            rung: spec.rung,
            cycle_start: first - 1,
        }
        .save(&spec.out_dir)
        .expect("the checkpoint is written");
        let mut r = TrialResult::without_model(TrialStatus::Completed, "miou");
        r.metric = epochs.last().map(|e| e.metric);
        r.best_epoch = Some(last);
        r.epochs = epochs;
        r.train_secs = 10.0;
        r.model_dir = Some(spec.out_dir.clone());
        r
    }
}

#[test]
fn successive_halving_stops_the_weaker_half_and_continues_the_others_from_their_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = plan(dir.path(), &["a", "b", "c", "d", "e"]);
    for t in &mut p.trials {
        t.max_epochs = 9;
        t.patience = 5;
    }
    let runner = Rungs {
        calls: Default::default(),
    };
    let options = RunOptions {
        halving: true,
        ..basic()
    };
    let board = run_plan(&p, &runner, &mut |_, _| {}, &options).unwrap();
    let calls = runner.calls.borrow().clone();
    let rungs: Vec<(&str, u32)> = calls.iter().map(|(id, r, _)| (id.as_str(), *r)).collect();
    // Five run a first rung; e, d and c (the top three of five, best first) a second; e and
    // d a third, which takes them to their nine epochs.
    assert_eq!(
        rungs,
        vec![
            ("a", 0),
            ("b", 0),
            ("c", 0),
            ("d", 0),
            ("e", 0),
            ("e", 1),
            ("d", 1),
            ("c", 1),
            ("e", 2),
            ("d", 2)
        ]
    );
    // The first rung spends half the budget (less the reserve), evenly; the last the rest.
    let first = calls[0].2;
    assert!(
        (first - (600.0 - 18.0) / 2.0 / 5.0).abs() < 1.0,
        "{calls:?}"
    );
    assert!(calls[8].2 > calls[5].2, "{calls:?}");
    let row = |id: &str| board.rows.iter().find(|r| r.id == id).unwrap().clone();
    for (id, epochs) in [("a", 3), ("b", 3), ("c", 6)] {
        let r = row(id);
        assert_eq!(r.status, "pruned", "{r:?}");
        assert!(r.reason.contains("successive halving"), "{r:?}");
        assert_eq!(r.epochs, epochs, "{r:?}");
    }
    for id in ["d", "e"] {
        let r = row(id);
        assert_eq!(r.status, "completed", "{r:?}");
        assert_eq!(r.epochs, 9, "{r:?}");
        assert_eq!(r.train_secs, 30.0, "the rungs' times add up: {r:?}");
        let spec: TrialSpec = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join(format!("trials/{id}/spec.json"))).unwrap(),
        )
        .unwrap();
        assert!(spec.resume && spec.rung == 2, "{spec:?}");
        // Its epochs go on from its checkpoint: 1 to 9, none trained twice.
        let result: TrialResult = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join(format!("trials/{id}/result.json"))).unwrap(),
        )
        .unwrap();
        let numbers: Vec<u32> = result.epochs.iter().map(|e| e.epoch).collect();
        assert_eq!(numbers, (1..=9).collect::<Vec<_>>());
    }

    // Run again: every rung is read back from the study, nothing trains.
    let again = run_plan(&p, &runner, &mut |_, _| {}, &options).unwrap();
    assert_eq!(runner.calls.borrow().len(), calls.len());
    let statuses = |b: &autodl_core::Leaderboard| {
        let mut v: Vec<(String, String, usize)> = b
            .rows
            .iter()
            .map(|r| (r.id.clone(), r.status.clone(), r.epochs))
            .collect();
        v.sort();
        v
    };
    assert_eq!(statuses(&again), statuses(&board));
}

#[test]
fn with_two_networks_or_an_even_schedule_each_gets_its_share_once() {
    for (ids, halving) in [(&["a", "b"][..], true), (&["a", "b", "c"][..], false)] {
        let dir = tempfile::tempdir().unwrap();
        let mut p = plan(dir.path(), ids);
        for t in &mut p.trials {
            t.max_epochs = 3;
        }
        let runner = Rungs {
            calls: Default::default(),
        };
        let options = RunOptions { halving, ..basic() };
        let board = run_plan(&p, &runner, &mut |_, _| {}, &options).unwrap();
        let calls = runner.calls.borrow();
        assert_eq!(calls.len(), ids.len(), "{calls:?}");
        assert!(
            (calls[0].2 - 582.0 / ids.len() as f64).abs() < 1.0,
            "{calls:?}"
        );
        assert!(board.rows.iter().all(|r| r.status == "completed"));
    }
}

/// Proposes a good learning rate for odd seeds and a bad one for even seeds: the seed counts
/// the tuning trials proposed, so the sequence does not depend on which results arrived first.
struct BySeed;

impl autodl_api::Tuner for BySeed {
    fn name(&self) -> &'static str {
        "by-seed"
    }
    fn suggest(
        &self,
        _: &autodl_api::SearchSpace,
        _: &[autodl_api::TrialRecord],
        seed: u64,
    ) -> Option<Params> {
        let lr = if seed % 2 == 1 { 1e-3 } else { 0.5 };
        Some(
            [(
                "learning-rate".to_owned(),
                autodl_api::ParamValue::Number(lr),
            )]
            .into(),
        )
    }
}

#[test]
fn a_shared_study_tunes_as_results_arrive_and_workers_prune_weak_trials() {
    let dir = tempfile::tempdir().unwrap();
    let url = autodl_core::StudyUrl::Sqlite(dir.path().join("shared.sqlite"));
    let options = RunOptions {
        higher_is_better: true,
        tuner: Some(&BySeed),
        tune_top: 1,
        max_tuning_trials: 4,
        pruner: Some(Pruner::new()),
        halving: false,
        study: None,
    };
    let settings = autodl_core::StudySettings {
        lease_secs: 30.0,
        max_attempts: 3,
        grace_secs: 30.0,
        poll_secs: 0.05,
    };
    let p = plan(dir.path(), &["a"]);
    let (board, summaries) = std::thread::scope(|s| {
        let workers: Vec<_> = (0..2)
            .map(|w| {
                let url = url.clone();
                s.spawn(move || {
                    let study = autodl_core::Study::connect(&url).unwrap();
                    let opts = autodl_core::WorkerOptions {
                        id: format!("w{w}"),
                        artifacts: None,
                        poll_secs: 0.05,
                        wait_for_study_secs: 60.0,
                        stop: Default::default(),
                    };
                    let cancel = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
                    autodl_core::run_worker(&study, &Curves, &cancel, &opts, &mut |_, _| {})
                        .unwrap()
                })
            })
            .collect();
        let study = autodl_core::Study::connect(&url).unwrap();
        let board =
            autodl_core::coordinate(&p, &study, &options, &settings, &mut |_, _| {}).unwrap();
        let summaries: Vec<_> = workers.into_iter().map(|w| w.join().unwrap()).collect();
        (board, summaries)
    });
    let finished: usize = summaries.iter().map(|s| s.finished.len()).sum();
    assert_eq!(finished, 5, "{summaries:?}");
    assert_eq!(
        board.rows.len(),
        5,
        "one basic trial and four tuning trials"
    );
    let ids: Vec<&str> = board.rows.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["a", "fake-t1", "fake-t2", "fake-t3", "fake-t4"]);
    // The bad fourth trial was proposed once an earlier one had finished, so its worker
    // pruned it against their curves.
    let t4 = &board.rows[4];
    assert_eq!(t4.status, "pruned", "{:#?}", board.rows);
    assert!(t4.epochs < 10, "{t4:#?}");
    for row in board.rows.iter().filter(|r| r.status == "completed") {
        assert_eq!(row.epochs, 10, "{row:#?}");
    }
    assert!(
        board.rows[1..]
            .iter()
            .any(|r| r.status == "completed" && r.metric.is_some_and(|m| m > 0.5))
    );
}
