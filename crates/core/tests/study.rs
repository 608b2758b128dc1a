//! A study shared by workers, on SQLite and on a throwaway PostgreSQL server: concurrent
//! claims never hand one trial to two workers, a lost lease is reclaimed and the loser's late
//! result is discarded, and a trial whose workers keep dying is failed with the reason.

// Its helpers run only inside tests.
#![allow(clippy::unwrap_used)]

mod common;
#[path = "../../../tests/support/postgres.rs"]
mod postgres;

use common::spec;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use autodl_api::{TrialResult, TrialSpec, TrialStatus};
use autodl_core::{Study, StudyInfo, StudyUrl};

fn info(out: &Path, ids: &[String], lease_secs: f64, max_attempts: u32) -> StudyInfo {
    StudyInfo {
        out: out.to_owned(),
        data: PathBuf::from("x"),
        trials: ids.to_vec(),
        deadline_ms: autodl_core::now_ms() + 600_000,
        lease_secs,
        max_attempts,
        higher_is_better: true,
        pruner: None,
        grace_secs: 30.0,
        open: false,
    }
}

fn completed(metric: f64) -> TrialResult {
    TrialResult {
        metric: Some(metric),
        ..TrialResult::without_model(TrialStatus::Completed, "miou")
    }
}

/// Eight workers (threads, each with its own connection) claim and finish 40 trials as fast
/// as they can: every trial is claimed once and finished once.
fn concurrent_claims_hand_each_trial_to_one_worker(url: &StudyUrl) {
    let dir = tempfile::tempdir().unwrap();
    let ids: Vec<String> = (0..40).map(|i| format!("t{i:02}")).collect();
    let specs: Vec<TrialSpec> = ids.iter().map(|id| spec(id, dir.path())).collect();
    let planner = Study::connect(url).unwrap();
    let info = info(dir.path(), &ids, 600.0, 3);
    planner.plan(&info, &specs).unwrap();
    let claimed: Vec<Vec<String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|w| {
                let info = info.clone();
                s.spawn(move || {
                    let study = Study::connect(url).unwrap();
                    let me = format!("w{w}");
                    let mut mine = Vec::new();
                    while let Some(c) = study.claim(&me, &info).unwrap() {
                        assert!(study.heartbeat(&c.row.id, &me, &[]).unwrap());
                        assert!(
                            study
                                .finish(&me, &c.row.spec, &completed(0.5), c.row.attempts)
                                .unwrap()
                        );
                        mine.push(c.row.id);
                    }
                    mine
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut all: Vec<String> = claimed.concat();
    all.sort();
    assert_eq!(all, ids, "each trial claimed exactly once");
    let mut per_trial: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in planner.events().unwrap() {
        per_trial.entry(e.trial).or_default().push(e.event);
    }
    for id in &ids {
        assert_eq!(per_trial[id], ["claimed", "finished"], "{id}");
    }
    assert!(
        planner
            .rows()
            .unwrap()
            .iter()
            .all(|r| r.state == "completed")
    );
}

/// A worker that stops heartbeating loses its trial after the lease; its late result is
/// discarded, the new holder's kept; after `max_attempts` starts the trial fails with why.
fn a_lost_lease_is_reclaimed_once_and_the_late_result_discarded(url: &StudyUrl) {
    let dir = tempfile::tempdir().unwrap();
    let ids = vec!["a".to_owned(), "b".to_owned()];
    let specs: Vec<TrialSpec> = ids.iter().map(|id| spec(id, dir.path())).collect();
    let study = Study::connect(url).unwrap();
    let info = info(dir.path(), &ids, 0.3, 2);
    study.plan(&info, &specs).unwrap();
    let first = study.claim("lost", &info).unwrap().unwrap();
    assert_eq!((first.row.id.as_str(), first.row.attempts), ("a", 1));
    assert_eq!(first.reclaimed_from, None);
    // While the lease holds, the next worker gets the other trial.
    let other = study.claim("keeper", &info).unwrap().unwrap();
    assert_eq!(other.row.id, "b");
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(study.heartbeat("b", "keeper", &[]).unwrap());
    let again = study.claim("rescuer", &info).unwrap().unwrap();
    assert_eq!(again.row.id, "a");
    assert_eq!(again.row.attempts, 2);
    assert_eq!(again.reclaimed_from.as_deref(), Some("lost"));
    assert!(
        !study.heartbeat("a", "lost", &[]).unwrap(),
        "the old holder lost it"
    );
    assert!(
        !study
            .finish("lost", &first.row.spec, &completed(0.1), 1)
            .unwrap(),
        "a late result is discarded"
    );
    // The rescuer stops heartbeating too: a third start would pass max_attempts.
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(study.heartbeat("b", "keeper", &[]).unwrap());
    assert!(study.claim("third", &info).unwrap().is_none());
    let a = study
        .rows()
        .unwrap()
        .into_iter()
        .find(|r| r.id == "a")
        .unwrap();
    assert_eq!(a.state, "failed");
    let reason = a.result.unwrap().status.reason().to_owned();
    assert!(
        reason.contains("stopped heartbeating 2 time(s)"),
        "{reason}"
    );
    assert!(
        study
            .finish("keeper", &other.row.spec, &completed(0.7), 1)
            .unwrap()
    );
    let events: Vec<(String, String, String)> = study
        .events()
        .unwrap()
        .into_iter()
        .map(|e| (e.trial, e.worker, e.event))
        .collect();
    let of_a: Vec<&(String, String, String)> = events.iter().filter(|e| e.0 == "a").collect();
    assert_eq!(
        of_a.iter()
            .map(|e| (e.1.as_str(), e.2.as_str()))
            .collect::<Vec<_>>(),
        [
            ("lost", "claimed"),
            ("rescuer", "claimed"),
            ("lost", "discarded"),
            ("third", "gave-up")
        ]
    );
}

/// A worker asked to stop gives its trial back: pending at once, without waiting for the
/// lease or counting as a start, and the next worker knows who gave it back.
fn a_released_trial_is_pending_again_at_once(url: &StudyUrl) {
    let dir = tempfile::tempdir().unwrap();
    let ids = vec!["r".to_owned()];
    let study = Study::connect(url).unwrap();
    let info = info(dir.path(), &ids, 600.0, 1);
    study.plan(&info, &[spec("r", dir.path())]).unwrap();
    let first = study.claim("stopping", &info).unwrap().unwrap();
    assert!(!study.release("r", "someone-else").unwrap());
    assert!(study.release("r", "stopping").unwrap());
    let next = study.claim("next", &info).unwrap().unwrap();
    assert_eq!(next.row.id, "r");
    assert_eq!(
        next.row.attempts, first.row.attempts,
        "a release is not a start"
    );
    assert_eq!(next.released_by.as_deref(), Some("stopping"));
    assert_eq!(next.reclaimed_from, None);
    let kinds: Vec<String> = study
        .events()
        .unwrap()
        .into_iter()
        .map(|e| e.event)
        .collect();
    assert_eq!(kinds, ["claimed", "released", "claimed"]);
}

/// A coordinator planning other trials into an existing study is refused, naming both.
fn a_second_study_in_one_store_is_refused(url: &StudyUrl) {
    let dir = tempfile::tempdir().unwrap();
    let study = Study::connect(url).unwrap();
    let ids = vec!["x1".to_owned()];
    study
        .plan(&info(dir.path(), &ids, 60.0, 3), &[spec("x1", dir.path())])
        .unwrap();
    // The same plan again (a restarted coordinator) is welcome.
    study
        .plan(&info(dir.path(), &ids, 60.0, 3), &[spec("x1", dir.path())])
        .unwrap();
    let other = vec!["y1".to_owned()];
    let err = study
        .plan(
            &info(dir.path(), &other, 60.0, 3),
            &[spec("y1", dir.path())],
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("holds another study") && err.contains("x1") && err.contains("y1"),
        "{err}"
    );
}

#[test]
fn sqlite_studies_arbitrate_workers() {
    let dir = tempfile::tempdir().unwrap();
    let url = |name: &str| StudyUrl::Sqlite(dir.path().join(format!("{name}.sqlite")));
    concurrent_claims_hand_each_trial_to_one_worker(&url("race"));
    a_lost_lease_is_reclaimed_once_and_the_late_result_discarded(&url("lease"));
    a_released_trial_is_pending_again_at_once(&url("release"));
    a_second_study_in_one_store_is_refused(&url("other"));
}

#[test]
fn postgres_studies_arbitrate_workers() {
    let pg = postgres::Postgres::start();
    let url = |name: &str| StudyUrl::parse(&pg.database(name)).unwrap();
    let race = url("race");
    concurrent_claims_hand_each_trial_to_one_worker(&race);
    assert_eq!(
        Study::connect(&race).unwrap().schema_version().unwrap(),
        autodl_core::SCHEMA_VERSION
    );
    a_lost_lease_is_reclaimed_once_and_the_late_result_discarded(&url("lease"));
    a_released_trial_is_pending_again_at_once(&url("release"));
    a_second_study_in_one_store_is_refused(&url("other"));
    // A restarted server: the study connects again and goes on.
    let study = Study::connect(&race).unwrap();
    let before = study.rows().unwrap().len();
    pg.restart();
    assert_eq!(study.rows().unwrap().len(), before);
    study.worker_beat("after-restart", "idle").unwrap();
    // A server that does not answer is an error naming the study, not a hang.
    let err = Study::connect(&StudyUrl::parse("postgres://postgres@127.0.0.1:9/none").unwrap())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("study postgres://postgres@127.0.0.1:9/none"),
        "{err}"
    );
}
