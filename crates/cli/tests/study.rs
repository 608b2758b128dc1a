//! A study shared by worker processes through a throwaway PostgreSQL server on loopback, run
//! with the real `autodl` binary: three workers, one killed with SIGKILL in the middle of a
//! trial, give the leaderboard a single-process run gives; two workers racing for one trial
//! never both train it.

// The fixture builders below are test code too: a failure in them should stop the test.
#![allow(clippy::unwrap_used)]

#[path = "../../../tests/support/postgres.rs"]
mod postgres;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_autodl")
}

fn shared(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data")
        .join(name);
    assert!(
        p.is_dir(),
        "{} is missing: the tests need ../shared/data beside the repo",
        p.display()
    );
    std::fs::canonicalize(p).unwrap()
}

/// A pipeline whose trials are the same whoever runs them: fixed seed, batch size, learning
/// rate and epochs, a budget no trial reaches, no ensembles.
fn pipeline(dir: &Path, networks: &[&str], epochs: u32) -> PathBuf {
    let path = dir.join("pipeline.toml");
    let nets: Vec<String> = networks.iter().map(|n| format!("\"{n}\"")).collect();
    std::fs::write(
        &path,
        format!(
            "version = 1\nseed = 7\n\n[data]\npath = \"{}\"\n\n[train]\ntime-limit = \"30m\"\nnetworks = [{}]\nmax-epochs = {epochs}\npatience = 20\nbatch-size = 4\nlearning-rate = 0.001\nbudget-schedule = \"even\"\n\n[ensemble]\ntop = 0\ntta = false\n",
            shared("nc_landcover").display(),
            nets.join(", ")
        ),
    )
    .unwrap();
    path
}

fn spawn(args: &[&str], log: &Path) -> Child {
    let out = std::fs::File::create(log).unwrap();
    Command::new(bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap()
}

fn wait(child: &mut Child, what: &str, log: &Path, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!(
                "{what} did not finish in {limit:?}:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// [`wait`], asserting that the process succeeded (its log when not).
fn wait_ok(child: &mut Child, what: &str, log: &Path, limit: Duration) {
    let status = wait(child, what, log, limit);
    assert!(
        status.success(),
        "{}",
        std::fs::read_to_string(log).unwrap()
    );
}

/// Starts a coordinator that plans the study at `url` and waits for workers started apart
/// from it (`train FILE --out OUT --study URL --workers 0 EXTRA...`), logging to
/// `dir/coordinator.log`.
fn coordinator(dir: &Path, file: &Path, out: &Path, url: &str, extra: &[&str]) -> (Child, PathBuf) {
    let log = dir.join("coordinator.log");
    let mut args = vec![
        "train",
        file.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--study",
        url,
        "--workers",
        "0",
    ];
    args.extend_from_slice(extra);
    (spawn(&args, &log), log)
}

/// Starts worker `id` on the study at `url`, polling the store five times a second, logging
/// to `dir/<id>.log`.
fn worker(dir: &Path, url: &str, id: &str) -> (Child, PathBuf) {
    let log = dir.join(format!("{id}.log"));
    let child = spawn(
        &["worker", "--study", url, "--id", id, "--poll", "0.2"],
        &log,
    );
    (child, log)
}

/// The leaderboard's rows without their timings: what must not depend on who trained them.
fn board(out: &Path) -> Vec<BTreeMap<String, serde_json::Value>> {
    let text = std::fs::read_to_string(out.join("leaderboard.json")).unwrap();
    let rows: Vec<BTreeMap<String, serde_json::Value>> = serde_json::from_str(&text).unwrap();
    rows.into_iter()
        .map(|mut r| {
            for k in ["train-secs", "model-dir"] {
                r.remove(k);
            }
            r
        })
        .collect()
}

/// `(trial, worker, event, attempt, detail)` of the study's audit trail, oldest first.
fn events(pg: &postgres::Postgres, db: &str) -> Vec<Vec<String>> {
    pg.psql(
        db,
        "SELECT trial, worker, event, attempt, detail FROM trial_events ORDER BY n, at",
    )
    .lines()
    .map(|l| l.split('|').map(str::to_owned).collect())
    .collect()
}

#[test]
fn three_workers_one_killed_mid_trial_give_the_single_process_leaderboard() {
    let pg = postgres::Postgres::start();
    let url = pg.database("three");
    let dir = tempfile::tempdir().unwrap();
    let file = pipeline(dir.path(), &["unet", "pspnet", "deeplab"], 3);

    // The single-process run, with its own SQLite study.
    let base = dir.path().join("single");
    let log = dir.path().join("single.log");
    let mut single = spawn(
        &[
            "train",
            file.to_str().unwrap(),
            "--out",
            base.to_str().unwrap(),
        ],
        &log,
    );
    wait_ok(
        &mut single,
        "the single-process run",
        &log,
        Duration::from_secs(1800),
    );

    // The same study through PostgreSQL: a coordinator that only plans and waits, and three
    // workers started apart from it, as on three machines.
    let dist = dir.path().join("shared");
    let (mut coordinator, coord_log) =
        coordinator(dir.path(), &file, &dist, &url, &["--lease", "3"]);
    let mut workers: Vec<(String, Child, PathBuf)> = ["w1", "w2", "w3"]
        .iter()
        .map(|id| {
            let (child, log) = worker(dir.path(), &url, id);
            (id.to_string(), child, log)
        })
        .collect();

    // Kill w1 with SIGKILL once its trial has a checkpoint, mid-trial.
    let start = Instant::now();
    let killed_trial = loop {
        // (An error until the first process has created the tables.)
        let running = pg
            .try_psql(
                "three",
                "SELECT id FROM trials WHERE worker = 'w1' AND status = 'running'",
            )
            .unwrap_or_default();
        if let Some(id) = running.lines().next()
            && dist
                .join("trials")
                .join(id)
                .join("checkpoint.json")
                .is_file()
        {
            workers[0].1.kill().unwrap();
            workers[0].1.wait().unwrap();
            break id.to_owned();
        }
        assert!(
            start.elapsed() < Duration::from_secs(900),
            "w1 never held a trial with a checkpoint:\n{}",
            std::fs::read_to_string(&workers[0].2).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    };

    wait_ok(
        &mut coordinator,
        "the coordinator",
        &coord_log,
        Duration::from_secs(1800),
    );
    for (id, child, log) in workers.iter_mut().skip(1) {
        wait_ok(child, id, log, Duration::from_secs(120));
    }

    // Every trial finished exactly once; the killed one was claimed again by another worker,
    // which resumed it from its checkpoint.
    let trail = events(&pg, "three");
    let mut finished: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for e in &trail {
        if e[2] == "finished" {
            finished.entry(&e[0]).or_default().push(&e[1]);
        }
    }
    assert_eq!(finished.len(), 3, "{trail:?}");
    assert!(finished.values().all(|w| w.len() == 1), "{trail:?}");
    let claims: Vec<&Vec<String>> = trail
        .iter()
        .filter(|e| e[0] == killed_trial && e[2] == "claimed")
        .collect();
    assert_eq!(claims.len(), 2, "{trail:?}");
    assert_eq!((claims[0][1].as_str(), claims[0][3].as_str()), ("w1", "1"));
    let rescuer = claims[1][1].clone();
    assert_ne!(rescuer, "w1");
    assert_eq!(claims[1][3], "2");
    assert!(claims[1][4].contains("reclaimed from w1"), "{trail:?}");
    assert_eq!(finished[killed_trial.as_str()], [rescuer.as_str()]);
    let rescuer_log = &workers.iter().find(|w| w.0 == rescuer).unwrap().2;
    let rescuer_text = std::fs::read_to_string(rescuer_log).unwrap();
    assert!(
        rescuer_text.contains(&format!("{killed_trial}: reclaimed from worker w1 (attempt 2): resuming from its checkpoint after epoch")),
        "{rescuer_text}"
    );
    assert_eq!(
        pg.psql(
            "three",
            "SELECT id, status, attempts FROM trials ORDER BY id"
        )
        .lines()
        .filter(|l| l.ends_with("|completed|1") || l.ends_with("|completed|2"))
        .count(),
        3
    );

    // And the leaderboard is the single-process run's, row for row.
    let (a, b) = (board(&base), board(&dist));
    assert_eq!(a.len(), 3);
    assert_eq!(a, b, "single-process and shared-study leaderboards differ");
}

#[test]
fn two_workers_racing_for_one_trial_never_both_train_it() {
    let pg = postgres::Postgres::start();
    let url = pg.database("race");
    let dir = tempfile::tempdir().unwrap();
    let file = pipeline(dir.path(), &["unet"], 1);
    let out = dir.path().join("out");
    let (mut coordinator, coord_log) = coordinator(dir.path(), &file, &out, &url, &[]);
    // Both start together and poll the store five times a second.
    let mut racers: Vec<(Child, PathBuf)> = ["r1", "r2"]
        .iter()
        .map(|id| worker(dir.path(), &url, id))
        .collect();
    wait_ok(
        &mut coordinator,
        "the coordinator",
        &coord_log,
        Duration::from_secs(900),
    );
    let mut trained = 0;
    for (child, log) in &mut racers {
        wait_ok(child, "a worker", log, Duration::from_secs(120));
        let text = std::fs::read_to_string(&*log).unwrap();
        if text.contains("epoch 1 train loss") {
            trained += 1;
        }
    }
    assert_eq!(trained, 1, "exactly one worker trained the trial");
    let trail = events(&pg, "race");
    let kinds: Vec<&str> = trail.iter().map(|e| e[2].as_str()).collect();
    assert_eq!(kinds, ["claimed", "finished"], "{trail:?}");
    assert_eq!(trail[0][1], trail[1][1], "the claimer finished it");
}

#[test]
fn a_worker_stopped_by_sigterm_gives_its_trial_back_and_another_resumes_it() {
    // Workers on one machine can share an SQLite study too.
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("study.sqlite").display());
    let file = pipeline(dir.path(), &["unet"], 3);
    let out = dir.path().join("out");
    let (mut coordinator, coord_log) = coordinator(dir.path(), &file, &out, &url, &[]);
    let (mut first, first_log) = worker(dir.path(), &url, "s1");
    let checkpoint = out.join("trials/unet-efficientnet-lite0/checkpoint.json");
    let start = Instant::now();
    while !checkpoint.is_file() {
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "no checkpoint:\n{}",
            std::fs::read_to_string(&first_log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let sent = Command::new("kill")
        .args(["-TERM", &first.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let status = wait(
        &mut first,
        "the stopped worker",
        &first_log,
        Duration::from_secs(60),
    );
    let first_text = std::fs::read_to_string(&first_log).unwrap();
    assert_eq!(status.code(), Some(1), "{first_text}");
    assert!(
        first_text.contains(
            "stopped by a signal after finishing 0 trial(s); gave back unet-efficientnet-lite0"
        ),
        "{first_text}"
    );
    // No lease to wait for: the next worker takes it at once, from its checkpoint.
    let (mut second, second_log) = worker(dir.path(), &url, "s2");
    wait_ok(
        &mut coordinator,
        "the coordinator",
        &coord_log,
        Duration::from_secs(900),
    );
    wait_ok(&mut second, "s2", &second_log, Duration::from_secs(120));
    let second_text = std::fs::read_to_string(&second_log).unwrap();
    assert!(
        second_text.contains(
            "unet-efficientnet-lite0: released by worker s1 (attempt 1): resuming from its checkpoint after epoch"
        ),
        "{second_text}"
    );
    let rows = board(&out);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["status"], "completed");
    assert_eq!(rows[0]["epochs"], 3);
}
