//! The study store: every trial of a run (spec, parameters, per-epoch curve, metric, status,
//! failure reason, result). By default `study.sqlite` in the output folder; a rerun of the same
//! command reads finished trials from it instead of training them again.
//!
//! The same schema lives in SQLite (`sqlite://PATH`, the embedded default) or PostgreSQL
//! (`postgres://USER@HOST/DATABASE`), created and upgraded by versioned migrations. A study can
//! also be a queue shared by workers ([`crate::worker`]): trials are planned as `pending`, a
//! worker claims one (`running`, with row locks on PostgreSQL and the write lock on SQLite),
//! heartbeats while it trains, and records its result only while it still holds the trial; a
//! trial whose worker stops heartbeating is claimed again after the lease, at most
//! [`StudyInfo::max_attempts`] times. `trial_events` keeps who claimed and finished what.

mod db;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use autodl_api::{EpochRecord, TrialResult, TrialSpec, TrialStatus};
use db::{Db, Sql, Value};
use serde::{Deserialize, Serialize};

use crate::runner::RunError;

/// Where a study lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StudyUrl {
    /// An SQLite file (`sqlite://PATH`).
    Sqlite(PathBuf),
    /// A PostgreSQL database (`postgres://...` or `postgresql://...`, any form libpq reads).
    Postgres(String),
}

impl StudyUrl {
    /// Reads `sqlite://PATH` (relative, or absolute as `sqlite:///abs/path`) or
    /// `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?...]`.
    pub fn parse(text: &str) -> Result<StudyUrl, StudyError> {
        if let Some(path) = text.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(StudyError::BadUrl(text.to_owned()));
            }
            return Ok(StudyUrl::Sqlite(PathBuf::from(path)));
        }
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            text.parse::<postgres::Config>()
                .map_err(|e| StudyError::Db {
                    url: redact(text),
                    reason: format!("not a PostgreSQL address: {e}"),
                })?;
            return Ok(StudyUrl::Postgres(text.to_owned()));
        }
        Err(StudyError::BadUrl(redact(text)))
    }

    /// `study.sqlite` in a run's output folder: the default.
    pub fn in_folder(dir: &Path) -> StudyUrl {
        StudyUrl::Sqlite(dir.join("study.sqlite"))
    }

    /// The address for a child process's command line (with its password, if any).
    pub fn to_arg(&self) -> String {
        match self {
            StudyUrl::Sqlite(p) => format!("sqlite://{}", p.display()),
            StudyUrl::Postgres(u) => u.clone(),
        }
    }
}

impl std::str::FromStr for StudyUrl {
    type Err = StudyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        StudyUrl::parse(s)
    }
}

/// The address without its password, for messages.
impl std::fmt::Display for StudyUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StudyUrl::Sqlite(p) => write!(f, "sqlite://{}", p.display()),
            StudyUrl::Postgres(u) => f.write_str(&redact(u)),
        }
    }
}

/// `postgres://user:secret@host/db` as `postgres://user:***@host/db`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.split_once('@') {
        Some((auth, host)) if auth.contains(':') => {
            let user = auth.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{host}")
        }
        _ => url.to_owned(),
    }
}

/// Why a study could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StudyError {
    /// Not an address a study can live at.
    #[error("`{0}` is not a study address: use sqlite://PATH or postgres://USER@HOST/DATABASE")]
    BadUrl(String),
    /// The database refused or failed.
    #[error("study {url}: {reason}")]
    Db {
        /// The study (without its password).
        url: String,
        /// Why.
        reason: String,
    },
    /// A record does not parse as its type.
    #[error(transparent)]
    Contract(#[from] autodl_api::ContractError),
}

/// How a distributed study prunes weak tuning trials (asynchronous successive halving).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct PrunerSettings {
    /// Reduction factor between rungs.
    pub eta: usize,
    /// The first rung's epoch.
    pub min_epochs: u32,
}

/// What the coordinator records about a study shared by workers: the one serde type of the
/// `study` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct StudyInfo {
    /// The artefact folder (trial folders, models) as the coordinator sees it; a worker that
    /// mounts it elsewhere says where with `--artifacts`.
    pub out: PathBuf,
    /// The dataset the trials read (at the same path on every worker).
    pub data: PathBuf,
    /// The planned trials' ids, in plan order: a second plan into the same study must match.
    pub trials: Vec<String>,
    /// When the study's time is up, in milliseconds since the Unix epoch.
    pub deadline_ms: i64,
    /// Seconds without a heartbeat after which a running trial is claimed again.
    pub lease_secs: f64,
    /// Most times a trial is started before its worker's loss fails it.
    pub max_attempts: u32,
    /// Whether a larger ranking metric is better.
    pub higher_is_better: bool,
    /// Pruning of tuning trials, if any.
    pub pruner: Option<PrunerSettings>,
    /// Seconds a trial may overrun its budget before its worker kills it.
    pub grace_secs: f64,
    /// Whether the coordinator may still add trials (advanced mode's tuner); workers stay
    /// while it is open.
    pub open: bool,
}

/// A trial as the study holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct TrialRow {
    /// The trial's id.
    pub id: String,
    /// Its place in the queue.
    pub seq: i64,
    /// `pending`, `running`, or a finished [`TrialStatus::name`].
    pub state: String,
    /// The worker that holds or last held it.
    pub worker: Option<String>,
    /// How many times it was started.
    pub attempts: u32,
    /// Whether the pruner may stop it (tuning trials).
    pub prunable: bool,
    /// The most seconds it may train, when the coordinator capped it (tuning trials); else
    /// its worker gives it a fair share of the time left.
    pub budget_cap: Option<f64>,
    /// The spec it was planned or last run with.
    pub spec: TrialSpec,
    /// Its result, once finished.
    pub result: Option<TrialResult>,
    /// The epochs its worker has reported so far.
    pub progress: Vec<EpochRecord>,
}

impl TrialRow {
    /// Whether it ended (completed, pruned, failed or skipped).
    pub fn is_finished(&self) -> bool {
        !matches!(self.state.as_str(), "pending" | "running")
    }
}

/// A trial a worker claimed.
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    /// Its row as claimed (state `running`, this worker, `attempts` counting this start).
    pub row: TrialRow,
    /// The worker that held it before and stopped heartbeating, when this is a reclaim.
    pub reclaimed_from: Option<String>,
    /// The worker that held it before and gave it back when it was stopped.
    pub released_by: Option<String>,
}

/// One line of a study's audit trail.
#[derive(Debug, Clone, PartialEq)]
pub struct TrialEvent {
    /// The trial.
    pub trial: String,
    /// The worker.
    pub worker: String,
    /// `claimed`, `finished`, `released` (given back by a worker asked to stop),
    /// `discarded` (a result sent after the trial was claimed again) or `gave-up`.
    pub event: String,
    /// Which start of the trial.
    pub attempt: u32,
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// More, such as whose trial was reclaimed.
    pub detail: String,
}

/// Each version's statements, applied in order and recorded in `schema_migrations`. Column
/// types are those both databases read alike: `BIGINT`, `DOUBLE PRECISION`, `TEXT`.
const MIGRATIONS: &[&[&str]] = &[
    // 1: one run's trials (the schema of the first study.sqlite, adopted as it is).
    &["CREATE TABLE IF NOT EXISTS trials (
         id TEXT PRIMARY KEY,
         family TEXT NOT NULL,
         backbone TEXT NOT NULL,
         params TEXT NOT NULL,
         status TEXT NOT NULL,
         reason TEXT NOT NULL,
         metric DOUBLE PRECISION,
         curve TEXT NOT NULL,
         spec TEXT NOT NULL,
         result TEXT NOT NULL,
         updated BIGINT NOT NULL
     )"],
    // 2: a study shared by workers: the queue, the coordinator's record, workers, audit.
    &[
        "ALTER TABLE trials ADD COLUMN seq BIGINT NOT NULL DEFAULT 0",
        "ALTER TABLE trials ADD COLUMN worker TEXT",
        "ALTER TABLE trials ADD COLUMN heartbeat BIGINT NOT NULL DEFAULT 0",
        "ALTER TABLE trials ADD COLUMN attempts BIGINT NOT NULL DEFAULT 0",
        "ALTER TABLE trials ADD COLUMN prunable BIGINT NOT NULL DEFAULT 0",
        "ALTER TABLE trials ADD COLUMN budget_cap DOUBLE PRECISION",
        "ALTER TABLE trials ADD COLUMN progress TEXT NOT NULL DEFAULT '[]'",
        "CREATE INDEX trials_queue ON trials (status, seq)",
        "CREATE TABLE study (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        "CREATE TABLE workers (
             id TEXT PRIMARY KEY,
             host TEXT NOT NULL,
             pid BIGINT NOT NULL,
             heartbeat BIGINT NOT NULL,
             state TEXT NOT NULL
         )",
        "CREATE TABLE trial_events (
             n BIGINT NOT NULL,
             trial TEXT NOT NULL,
             worker TEXT NOT NULL,
             event TEXT NOT NULL,
             attempt BIGINT NOT NULL,
             at BIGINT NOT NULL,
             detail TEXT NOT NULL
         )",
    ],
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: usize = MIGRATIONS.len();

/// This machine's name (`HOSTNAME`, else `/etc/hostname`, else `host`), read once: workers
/// are named after it and record it with every heartbeat.
pub fn hostname() -> &'static str {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        std::env::var("HOSTNAME")
            .ok()
            .filter(|h| !h.is_empty())
            .or_else(|| {
                std::fs::read_to_string("/etc/hostname")
                    .ok()
                    .map(|h| h.trim().to_owned())
                    .filter(|h| !h.is_empty())
            })
            .unwrap_or_else(|| "host".to_owned())
    })
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// An open study.
pub struct Study {
    db: Mutex<Box<dyn Db>>,
    url: StudyUrl,
}

const ROW_COLUMNS: &str =
    "id, seq, status, worker, attempts, prunable, budget_cap, spec, result, progress";

impl Study {
    /// Opens (creating if needed) `study.sqlite` in `dir`.
    pub fn open(dir: &Path) -> Result<Study, RunError> {
        Ok(Study::connect(&StudyUrl::in_folder(dir))?)
    }

    /// Opens the study at `url`, creating its tables or upgrading them to this build's
    /// schema.
    pub fn connect(url: &StudyUrl) -> Result<Study, StudyError> {
        let err = |reason: String| StudyError::Db {
            url: url.to_string(),
            reason,
        };
        let db: Box<dyn Db> = match url {
            StudyUrl::Sqlite(path) => {
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent)
                        .map_err(|e| err(format!("cannot create {}: {e}", parent.display())))?;
                }
                Box::new(db::Sqlite::open(path).map_err(err)?)
            }
            StudyUrl::Postgres(u) => Box::new(db::Postgres::connect(u).map_err(err)?),
        };
        let study = Study {
            db: Mutex::new(db),
            url: url.clone(),
        };
        study.migrate()?;
        Ok(study)
    }

    /// Where the study lives.
    pub fn url(&self) -> &StudyUrl {
        &self.url
    }

    /// Runs `f` on the database. When the server dropped the connection (it restarted, the
    /// network failed), connects again and runs `f` once more: every operation of the study
    /// is one statement or one transaction, so running it again after a failure is safe.
    fn with<T>(
        &self,
        mut f: impl FnMut(&mut dyn Db) -> Result<T, db::DbError>,
    ) -> Result<T, StudyError> {
        let mut db = self.db.lock().unwrap_or_else(|p| p.into_inner());
        let mut outcome = f(db.as_mut());
        if outcome.is_err() && db.is_closed() {
            outcome = db.reconnect().and_then(|()| f(db.as_mut()));
        }
        outcome.map_err(|reason| StudyError::Db {
            url: self.url.to_string(),
            reason,
        })
    }

    fn migrate(&self) -> Result<(), StudyError> {
        let newer = std::cell::Cell::new(None);
        self.with(|db| {
            let lock = db.migration_lock();
            db.transaction(&mut |sql| {
                if let Some(lock) = lock {
                    sql.execute(lock, &[])?;
                }
                sql.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied BIGINT NOT NULL)",
                    &[],
                )?;
                let have = sql
                    .query("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", &[])?
                    .first()
                    .and_then(|r| r.first())
                    .map_or(0, Value::as_int) as usize;
                if have > MIGRATIONS.len() {
                    newer.set(Some(have));
                    return Ok(());
                }
                for (i, statements) in MIGRATIONS.iter().enumerate().skip(have) {
                    for statement in *statements {
                        sql.execute(statement, &[])?;
                    }
                    sql.execute(
                        "INSERT INTO schema_migrations (version, applied) VALUES ($1, $2)",
                        &[Value::Int(i as i64 + 1), Value::Int(now_ms())],
                    )?;
                }
                Ok(())
            })
        })?;
        match newer.get() {
            Some(v) => Err(StudyError::Db {
                url: self.url.to_string(),
                reason: format!(
                    "its schema is version {v}, written by a newer autodl; this one knows up to {SCHEMA_VERSION}"
                ),
            }),
            None => Ok(()),
        }
    }

    /// The schema version the study is at.
    pub fn schema_version(&self) -> Result<usize, StudyError> {
        self.with(|db| {
            Ok(db
                .sql()
                .query(
                    "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                    &[],
                )?
                .first()
                .and_then(|r| r.first())
                .map_or(0, Value::as_int) as usize)
        })
    }

    fn contract(&self, reason: String) -> StudyError {
        StudyError::Contract(autodl_api::ContractError::Invalid {
            path: PathBuf::from(self.url.to_string()),
            reason,
        })
    }

    /// The result of trial `id` if it finished (completed or pruned) in an earlier run, with
    /// the rung of successive halving it finished ([`TrialSpec::rung`]).
    pub fn finished(&self, id: &str) -> Result<Option<(u32, TrialResult)>, RunError> {
        let rows = self.with(|db| {
            db.sql().query(
                "SELECT spec, result FROM trials WHERE id = $1 AND status IN ('completed', 'pruned')",
                &[Value::text(id)],
            )
        })?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        // A record that no longer parses is an error naming the study and the trial, not a
        // trial silently run again.
        let spec: TrialSpec = self.parse(&row[0], id, "spec")?;
        let result: TrialResult = self.parse(&row[1], id, "result")?;
        Ok(Some((spec.rung, result)))
    }

    fn parse<T: serde::de::DeserializeOwned>(
        &self,
        v: &Value,
        id: &str,
        what: &str,
    ) -> Result<T, StudyError> {
        serde_json::from_str(v.as_text().unwrap_or("null"))
            .map_err(|e| self.contract(format!("the {what} of trial `{id}` does not parse: {e}")))
    }

    /// Records a trial's outcome, replacing an earlier record of the same id.
    pub fn record(&self, spec: &TrialSpec, result: &TrialResult) -> Result<(), RunError> {
        let values = outcome_values(spec, result);
        self.with(|db| {
            db.sql().execute(
                "INSERT INTO trials (id, family, backbone, params, status, reason, metric, curve, spec, result, updated)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                 ON CONFLICT (id) DO UPDATE SET family = $2, backbone = $3, params = $4, status = $5,
                     reason = $6, metric = $7, curve = $8, spec = $9, result = $10, updated = $11",
                &values,
            )
        })?;
        Ok(())
    }

    /// Every recorded trial as `(id, status, metric)`, oldest first.
    pub fn list(&self) -> Result<Vec<(String, String, Option<f64>)>, RunError> {
        let rows = self.with(|db| {
            db.sql().query(
                "SELECT id, status, metric FROM trials ORDER BY updated, id",
                &[],
            )
        })?;
        Ok(rows
            .into_iter()
            .map(|r| {
                (
                    r[0].as_text().unwrap_or_default().to_owned(),
                    r[1].as_text().unwrap_or_default().to_owned(),
                    r[2].as_real(),
                )
            })
            .collect())
    }

    // ------------------------------------------------------------ a study shared by workers

    /// The coordinator's record, once a study was planned.
    pub fn info(&self) -> Result<Option<StudyInfo>, StudyError> {
        let rows = self.with(|db| {
            db.sql()
                .query("SELECT value FROM study WHERE key = 'info'", &[])
        })?;
        rows.first()
            .map(|r| self.parse(&r[0], "-", "study record"))
            .transpose()
    }

    fn put_info(sql: &mut dyn Sql, info: &StudyInfo) -> Result<(), db::DbError> {
        sql.execute(
            "INSERT INTO study (key, value) VALUES ('info', $1)
             ON CONFLICT (key) DO UPDATE SET value = $1",
            &[Value::text(json(info))],
        )?;
        Ok(())
    }

    /// Plans a study for workers: records `info` and queues `trials` (in this order) as
    /// pending. Planning the same trials again (a rerun of the coordinator) keeps what
    /// finished and queues failed or skipped trials again; a study of other trials is refused.
    pub fn plan(&self, info: &StudyInfo, trials: &[TrialSpec]) -> Result<(), StudyError> {
        let earlier = self.info()?;
        if let Some(old) = &earlier
            && (old.trials != info.trials || old.data != info.data)
        {
            return Err(StudyError::Db {
                url: self.url.to_string(),
                reason: format!(
                    "it holds another study (data {}, trials {}); this run plans data {}, trials {}: use a new database or file for it",
                    old.data.display(),
                    old.trials.join(", "),
                    info.data.display(),
                    info.trials.join(", ")
                ),
            });
        }
        let now = now_ms();
        self.with(|db| {
            db.transaction(&mut |sql| {
                Study::put_info(sql, info)?;
                for (i, spec) in trials.iter().enumerate() {
                    insert_pending(sql, spec, i as i64 + 1, false, None, now)?;
                }
                sql.execute(
                    "UPDATE trials SET status = 'pending', attempts = 0, worker = NULL
                     WHERE status IN ('failed', 'skipped')",
                    &[],
                )?;
                Ok(())
            })
        })
    }

    /// Queues one more trial (advanced mode's tuner) after every other; `false` when a
    /// trial of that id exists.
    pub fn enqueue(
        &self,
        spec: &TrialSpec,
        prunable: bool,
        budget_cap: Option<f64>,
    ) -> Result<bool, StudyError> {
        let mut added = false;
        self.with(|db| {
            db.transaction(&mut |sql| {
                let next = sql
                    .query("SELECT COALESCE(MAX(seq), 0) FROM trials", &[])?
                    .first()
                    .and_then(|r| r.first())
                    .map_or(0, Value::as_int)
                    + 1;
                added = insert_pending(sql, spec, next, prunable, budget_cap, now_ms())?;
                Ok(())
            })
        })?;
        Ok(added)
    }

    /// Replaces the coordinator's record (a new deadline, the study closed).
    pub fn set_info(&self, info: &StudyInfo) -> Result<(), StudyError> {
        self.with(|db| Study::put_info(db.sql(), info))
    }

    /// Says that the coordinator adds no more trials: workers leave once every trial ended.
    pub fn close(&self) -> Result<(), StudyError> {
        if let Some(mut info) = self.info()? {
            info.open = false;
            self.with(|db| Study::put_info(db.sql(), &info))?;
        }
        Ok(())
    }

    /// Claims the first pending trial, or a running one whose worker has not heartbeaten
    /// for the lease, for `worker`; a trial started `max_attempts` times is failed instead
    /// (with the reason) and the next one is looked at. On PostgreSQL the candidate row is
    /// locked with `FOR UPDATE SKIP LOCKED`, so two workers never claim the same trial; on
    /// SQLite the transaction holds the database's write lock.
    pub fn claim(&self, worker: &str, info: &StudyInfo) -> Result<Option<Claim>, StudyError> {
        let now = now_ms();
        let stale = now - (info.lease_secs * 1000.0) as i64;
        let mut claimed = None;
        let mut rows_err = None;
        self.with(|db| {
            let lock = db.skip_locked();
            let select = format!(
                "SELECT {ROW_COLUMNS} FROM trials
                 WHERE status = 'pending' OR (status = 'running' AND heartbeat < $1)
                 ORDER BY seq, id LIMIT 1 {lock}"
            );
            db.transaction(&mut |sql| {
                // Run afresh if the connection is lost and the transaction runs again.
                (claimed, rows_err) = (None, None);
                loop {
                    let rows = sql.query(&select, &[Value::Int(stale)])?;
                    let Some(raw) = rows.into_iter().next() else {
                        return Ok(());
                    };
                    let row = match self.row(raw) {
                        Ok(r) => r,
                        Err(e) => {
                            rows_err = Some(e);
                            return Ok(());
                        }
                    };
                    let reclaimed_from = (row.state == "running").then(|| row.worker.clone().unwrap_or_default());
                    // A pending trial that names a worker was given back by it (`release`).
                    let released_by = (row.state == "pending").then(|| row.worker.clone()).flatten();
                    if let Some(from) = &reclaimed_from
                        && row.attempts >= info.max_attempts
                    {
                        let why = format!(
                            "its worker stopped heartbeating {} time(s) (last {from}, lease {:.0}s); not started again",
                            row.attempts, info.lease_secs
                        );
                        let result = TrialResult::without_model(
                            TrialStatus::Failed(why.clone()),
                            "metric",
                        );
                        let values = outcome_values(&row.spec, &result);
                        sql.execute(
                            "UPDATE trials SET family = $2, backbone = $3, params = $4, status = $5, reason = $6,
                                 metric = $7, curve = $8, spec = $9, result = $10, updated = $11, worker = NULL
                             WHERE id = $1",
                            &values,
                        )?;
                        event(sql, &row.id, worker, "gave-up", row.attempts, now, &why)?;
                        continue;
                    }
                    let attempt = row.attempts + 1;
                    sql.execute(
                        "UPDATE trials SET status = 'running', worker = $1, heartbeat = $2, attempts = $3,
                             progress = '[]', updated = $2
                         WHERE id = $4",
                        &[
                            Value::text(worker),
                            Value::Int(now),
                            Value::Int(i64::from(attempt)),
                            Value::text(&row.id),
                        ],
                    )?;
                    let detail = match (&reclaimed_from, &released_by) {
                        (Some(from), _) => format!("reclaimed from {from}, whose lease ran out"),
                        (None, Some(by)) => format!("released by {by}"),
                        (None, None) => String::new(),
                    };
                    event(sql, &row.id, worker, "claimed", attempt, now, &detail)?;
                    claimed = Some(Claim {
                        row: TrialRow {
                            state: "running".into(),
                            worker: Some(worker.to_owned()),
                            attempts: attempt,
                            progress: Vec::new(),
                            ..row
                        },
                        reclaimed_from: reclaimed_from.clone(),
                        released_by: released_by.clone(),
                    });
                    return Ok(());
                }
            })
        })?;
        match rows_err {
            Some(e) => Err(e),
            None => Ok(claimed),
        }
    }

    /// Renews `worker`'s hold on trial `id` and records its epochs so far; `false` when the
    /// worker no longer holds it (its lease ran out and another worker claimed it).
    pub fn heartbeat(
        &self,
        id: &str,
        worker: &str,
        progress: &[EpochRecord],
    ) -> Result<bool, StudyError> {
        let n = self.with(|db| {
            db.sql().execute(
                "UPDATE trials SET heartbeat = $1, progress = $2
                 WHERE id = $3 AND worker = $4 AND status = 'running'",
                &[
                    Value::Int(now_ms()),
                    Value::text(json(progress)),
                    Value::text(id),
                    Value::text(worker),
                ],
            )
        })?;
        Ok(n == 1)
    }

    /// Records the result of a trial `worker` holds; `false` (and nothing recorded but the
    /// audit line) when it no longer holds it, so a trial's result is recorded once.
    pub fn finish(
        &self,
        worker: &str,
        spec: &TrialSpec,
        result: &TrialResult,
        attempt: u32,
    ) -> Result<bool, StudyError> {
        let mut values = outcome_values(spec, result);
        values.push(Value::text(worker));
        let now = now_ms();
        let mut done = false;
        self.with(|db| {
            db.transaction(&mut |sql| {
                let n = sql.execute(
                    "UPDATE trials SET family = $2, backbone = $3, params = $4, status = $5, reason = $6,
                         metric = $7, curve = $8, spec = $9, result = $10, updated = $11, heartbeat = $11
                     WHERE id = $1 AND worker = $12 AND status = 'running'",
                    &values,
                )?;
                done = n == 1;
                let what = if done { "finished" } else { "discarded" };
                event(sql, &spec.id, worker, what, attempt, now, result.status.name())?;
                Ok(())
            })
        })?;
        Ok(done)
    }

    /// Gives back trial `id`, which `worker` holds and has stopped training (the worker was
    /// asked to stop): pending again at once, for any worker, without waiting for the lease
    /// and without counting as a start; `false` when `worker` did not hold it.
    pub fn release(&self, id: &str, worker: &str) -> Result<bool, StudyError> {
        let now = now_ms();
        let mut done = false;
        self.with(|db| {
            db.transaction(&mut |sql| {
                done = false;
                let rows = sql.query(
                    "SELECT attempts FROM trials WHERE id = $1 AND worker = $2 AND status = 'running'",
                    &[Value::text(id), Value::text(worker)],
                )?;
                let Some(attempts) = rows.first().and_then(|r| r.first()).map(Value::as_int) else {
                    return Ok(());
                };
                sql.execute(
                    "UPDATE trials SET status = 'pending', attempts = $1, progress = '[]', updated = $2
                     WHERE id = $3 AND worker = $4 AND status = 'running'",
                    &[
                        Value::Int((attempts - 1).max(0)),
                        Value::Int(now),
                        Value::text(id),
                        Value::text(worker),
                    ],
                )?;
                event(sql, id, worker, "released", attempts as u32, now, "")?;
                done = true;
                Ok(())
            })
        })?;
        Ok(done)
    }

    /// Records that `worker` is alive (`state`: `idle`, `training`, `exited`).
    pub fn worker_beat(&self, worker: &str, state: &str) -> Result<(), StudyError> {
        let host = hostname();
        self.with(|db| {
            db.sql().execute(
                "INSERT INTO workers (id, host, pid, heartbeat, state) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (id) DO UPDATE SET host = $2, pid = $3, heartbeat = $4, state = $5",
                &[
                    Value::text(worker),
                    Value::text(host),
                    Value::Int(i64::from(std::process::id())),
                    Value::Int(now_ms()),
                    Value::text(state),
                ],
            )
        })?;
        Ok(())
    }

    /// How many workers heartbeat within `lease_secs` and have not exited.
    pub fn live_workers(&self, lease_secs: f64) -> Result<usize, StudyError> {
        let since = now_ms() - (lease_secs * 1000.0) as i64;
        let rows = self.with(|db| {
            db.sql().query(
                "SELECT COUNT(*) FROM workers WHERE heartbeat >= $1 AND state <> 'exited'",
                &[Value::Int(since)],
            )
        })?;
        Ok(rows
            .first()
            .and_then(|r| r.first())
            .map_or(0, Value::as_int) as usize)
    }

    /// Every trial of the study, in queue order.
    pub fn rows(&self) -> Result<Vec<TrialRow>, StudyError> {
        let rows = self.with(|db| {
            db.sql().query(
                &format!("SELECT {ROW_COLUMNS} FROM trials ORDER BY seq, id"),
                &[],
            )
        })?;
        rows.into_iter().map(|r| self.row(r)).collect()
    }

    /// The audit trail, oldest first.
    pub fn events(&self) -> Result<Vec<TrialEvent>, StudyError> {
        let rows = self.with(|db| {
            db.sql().query(
                "SELECT trial, worker, event, attempt, at, detail FROM trial_events ORDER BY n, at",
                &[],
            )
        })?;
        Ok(rows
            .into_iter()
            .map(|r| TrialEvent {
                trial: r[0].as_text().unwrap_or_default().to_owned(),
                worker: r[1].as_text().unwrap_or_default().to_owned(),
                event: r[2].as_text().unwrap_or_default().to_owned(),
                attempt: r[3].as_int() as u32,
                at_ms: r[4].as_int(),
                detail: r[5].as_text().unwrap_or_default().to_owned(),
            })
            .collect())
    }

    fn row(&self, r: Vec<Value>) -> Result<TrialRow, StudyError> {
        let id = r[0].as_text().unwrap_or_default().to_owned();
        let state = r[2].as_text().unwrap_or_default().to_owned();
        let finished = !matches!(state.as_str(), "pending" | "running");
        Ok(TrialRow {
            seq: r[1].as_int(),
            worker: r[3].as_text().map(str::to_owned),
            attempts: r[4].as_int() as u32,
            prunable: r[5].as_int() != 0,
            budget_cap: r[6].as_real(),
            spec: self.parse(&r[7], &id, "spec")?,
            result: if finished {
                Some(self.parse(&r[8], &id, "result")?)
            } else {
                None
            },
            progress: self.parse(&r[9], &id, "progress")?,
            state,
            id,
        })
    }
}

/// `$1`..`$11`: a trial's id and the columns its outcome sets.
fn outcome_values(spec: &TrialSpec, result: &TrialResult) -> Vec<Value> {
    let curve: Vec<f64> = result.epochs.iter().map(|e| e.metric).collect();
    vec![
        Value::text(&spec.id),
        Value::text(&spec.family),
        Value::text(&spec.backbone),
        Value::text(json(&spec.params)),
        Value::text(result.status.name()),
        Value::text(result.status.reason()),
        Value::Real(result.metric),
        Value::text(json(&curve)),
        Value::text(json(spec)),
        Value::text(json(result)),
        Value::Int(now_ms() / 1000),
    ]
}

fn insert_pending(
    sql: &mut dyn Sql,
    spec: &TrialSpec,
    seq: i64,
    prunable: bool,
    budget_cap: Option<f64>,
    now: i64,
) -> Result<bool, db::DbError> {
    let n = sql.execute(
        "INSERT INTO trials (id, family, backbone, params, status, reason, metric, curve, spec, result,
             updated, seq, prunable, budget_cap)
         VALUES ($1, $2, $3, $4, 'pending', '', NULL, '[]', $5, 'null', $6, $7, $8, $9)
         ON CONFLICT (id) DO NOTHING",
        &[
            Value::text(&spec.id),
            Value::text(&spec.family),
            Value::text(&spec.backbone),
            Value::text(json(&spec.params)),
            Value::text(json(spec)),
            Value::Int(now / 1000),
            Value::Int(seq),
            Value::Int(i64::from(prunable)),
            Value::Real(budget_cap),
        ],
    )?;
    Ok(n == 1)
}

fn event(
    sql: &mut dyn Sql,
    trial: &str,
    worker: &str,
    what: &str,
    attempt: u32,
    at: i64,
    detail: &str,
) -> Result<(), db::DbError> {
    sql.execute(
        "INSERT INTO trial_events (n, trial, worker, event, attempt, at, detail)
         VALUES ((SELECT COALESCE(MAX(n), 0) + 1 FROM trial_events), $1, $2, $3, $4, $5, $6)",
        &[
            Value::text(trial),
            Value::text(worker),
            Value::text(what),
            Value::Int(i64::from(attempt)),
            Value::Int(at),
            Value::text(detail),
        ],
    )?;
    Ok(())
}

/// A plain value as JSON text; these types always serialise.
fn json<T: serde::Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_and_hide_their_password() {
        assert_eq!(
            StudyUrl::parse("sqlite://runs/a/study.sqlite").unwrap(),
            StudyUrl::Sqlite(PathBuf::from("runs/a/study.sqlite"))
        );
        assert_eq!(
            StudyUrl::parse("sqlite:///tmp/s.sqlite").unwrap(),
            StudyUrl::Sqlite(PathBuf::from("/tmp/s.sqlite"))
        );
        let pg = StudyUrl::parse("postgres://autodl:secret@db.example:5433/trees").unwrap();
        assert_eq!(
            pg.to_string(),
            "postgres://autodl:***@db.example:5433/trees"
        );
        assert_eq!(
            pg.to_arg(),
            "postgres://autodl:secret@db.example:5433/trees"
        );
        for bad in ["runs/a/study.sqlite", "mysql://x/y", "sqlite://"] {
            let err = StudyUrl::parse(bad).unwrap_err().to_string();
            assert!(err.contains("sqlite://PATH or postgres://"), "{err}");
        }
    }

    #[test]
    fn a_first_schema_study_is_migrated_and_keeps_its_trials() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("study.sqlite");
        {
            // The schema every study.sqlite had before migrations, with one finished trial.
            let conn = rusqlite::Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0][0]).unwrap();
            conn.execute(
                "INSERT INTO trials VALUES ('a', 'unet', 'r18', '{}', 'failed', 'boom', NULL, '[]', '{}', '{}', 1)",
                [],
            )
            .unwrap();
        }
        let study = Study::open(dir.path()).unwrap();
        assert_eq!(study.schema_version().unwrap(), SCHEMA_VERSION);
        assert_eq!(
            study.list().unwrap(),
            vec![("a".to_owned(), "failed".to_owned(), None)]
        );
        // Opening again applies nothing twice.
        drop(study);
        let again = Study::open(dir.path()).unwrap();
        assert_eq!(again.schema_version().unwrap(), SCHEMA_VERSION);
    }

    #[test]
    fn a_study_of_a_newer_schema_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        Study::open(dir.path()).unwrap();
        let conn = rusqlite::Connection::open(dir.path().join("study.sqlite")).unwrap();
        conn.execute(
            "INSERT INTO schema_migrations VALUES (?1, 0)",
            [SCHEMA_VERSION as i64 + 1],
        )
        .unwrap();
        let err = Study::open(dir.path()).err().unwrap().to_string();
        assert!(err.contains("written by a newer autodl"), "{err}");
        assert!(err.contains("study.sqlite"), "{err}");
    }
}
