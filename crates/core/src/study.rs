//! The study store: every trial of a run (spec, parameters, per-epoch curve, metric, status,
//! failure reason, result) in `study.sqlite` in the output folder. A rerun of the same command
//! reads finished trials from it instead of training them again.

use std::path::{Path, PathBuf};

use autodl_api::{TrialResult, TrialSpec};
use rusqlite::{Connection, OptionalExtension, params};

use crate::runner::RunError;

/// An open study database.
pub struct Study {
    conn: Connection,
    path: PathBuf,
}

fn db_err(path: &Path) -> impl Fn(rusqlite::Error) -> RunError + '_ {
    move |e| RunError::Io {
        path: path.to_owned(),
        source: std::io::Error::other(e),
    }
}

impl Study {
    /// Opens (creating if needed) `study.sqlite` in `dir`.
    pub fn open(dir: &Path) -> Result<Study, RunError> {
        let path = dir.join("study.sqlite");
        let conn = Connection::open(&path).map_err(db_err(&path))?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS trials (
                 id TEXT PRIMARY KEY,
                 family TEXT NOT NULL,
                 backbone TEXT NOT NULL,
                 params TEXT NOT NULL,
                 status TEXT NOT NULL,
                 reason TEXT NOT NULL,
                 metric REAL,
                 curve TEXT NOT NULL,
                 spec TEXT NOT NULL,
                 result TEXT NOT NULL,
                 updated INTEGER NOT NULL
             );",
        )
        .map_err(db_err(&path))?;
        Ok(Study { conn, path })
    }

    /// The result of trial `id` if it finished (completed or pruned) in an earlier run, with
    /// the rung of successive halving it finished ([`TrialSpec::rung`]).
    pub fn finished(&self, id: &str) -> Result<Option<(u32, TrialResult)>, RunError> {
        let row: Option<(String, String)> = self
            .conn
            .query_row(
                "SELECT spec, result FROM trials WHERE id = ?1 AND status IN ('completed', 'pruned')",
                params![id],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()
            .map_err(db_err(&self.path))?;
        // A record that no longer parses is an error naming the study and the trial, not a
        // trial silently run again.
        let parse = |what: &str, e: serde_json::Error| autodl_api::ContractError::Invalid {
            path: self.path.clone(),
            reason: format!("the {what} of trial `{id}` does not parse: {e}"),
        };
        row.map(|(spec, result)| {
            let spec: TrialSpec = serde_json::from_str(&spec).map_err(|e| parse("spec", e))?;
            let result = serde_json::from_str(&result).map_err(|e| parse("result", e))?;
            Ok((spec.rung, result))
        })
        .transpose()
        .map_err(|e: autodl_api::ContractError| RunError::from(e))
    }

    /// Records a trial's outcome, replacing an earlier record of the same id.
    pub fn record(&self, spec: &TrialSpec, result: &TrialResult) -> Result<(), RunError> {
        let (status, reason) = (result.status.name(), result.status.reason());
        let curve: Vec<f64> = result.epochs.iter().map(|e| e.metric).collect();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        self.conn
            .execute(
                "INSERT OR REPLACE INTO trials (id, family, backbone, params, status, reason, metric, curve, spec, result, updated)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                params![
                    spec.id,
                    spec.family,
                    spec.backbone,
                    json(&spec.params),
                    status,
                    reason,
                    result.metric,
                    json(&curve),
                    json(spec),
                    json(result),
                    now
                ],
            )
            .map_err(db_err(&self.path))?;
        Ok(())
    }

    /// Every recorded trial as `(id, status, metric)`, oldest first.
    pub fn list(&self) -> Result<Vec<(String, String, Option<f64>)>, RunError> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, status, metric FROM trials ORDER BY updated, id")
            .map_err(db_err(&self.path))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(db_err(&self.path))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(db_err(&self.path))?;
        Ok(rows)
    }
}

/// A plain value as JSON text; these types always serialise.
fn json<T: serde::Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_owned())
}
