//! The ranked table of trials, written as CSV, JSON and Markdown.

use std::path::Path;

use autodl_api::{TrialResult, TrialSpec};
use serde::Serialize;

/// One leaderboard line.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Row {
    /// 1-based rank among models with a metric; `None` for the rest.
    pub rank: Option<usize>,
    /// Trial id.
    pub id: String,
    /// Network family.
    pub model: String,
    /// Backbone.
    pub backbone: String,
    /// Ranking metric name.
    pub metric_name: String,
    /// Ranking metric.
    pub metric: Option<f64>,
    /// Other metrics, as `name=value` pairs.
    pub metrics: String,
    /// Training loss at the kept epoch.
    pub train_loss: Option<f64>,
    /// Validation loss at the kept epoch.
    pub val_loss: Option<f64>,
    /// Learning rate used.
    pub learning_rate: Option<f64>,
    /// Batch size used.
    pub batch_size: Option<u32>,
    /// Epochs trained.
    pub epochs: usize,
    /// Seconds spent.
    pub train_secs: f64,
    /// `completed`, `pruned`, `failed` or `skipped`.
    pub status: String,
    /// Why it failed, was pruned or skipped.
    pub reason: String,
    /// Folder of the trained model.
    pub model_dir: Option<String>,
    /// The ranking metric on the test split, scored once after ranking (packaged models of a
    /// run whose data has a test split).
    pub test_metric: Option<f64>,
    /// Other metrics on the test split, as `name=value` pairs.
    pub test_metrics: String,
}

/// Named numbers as a row shows them: `name=value` pairs, four decimals, space-separated.
pub fn metrics_text(scores: &std::collections::BTreeMap<String, f64>) -> String {
    scores
        .iter()
        .map(|(k, v)| format!("{k}={v:.4}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A model made of trained ones, for [`Leaderboard::push_combined`].
#[derive(Debug, Clone)]
pub struct Combined {
    /// Its id (its package's name).
    pub id: String,
    /// What it is: `ensemble` or `tta`.
    pub model: String,
    /// Its members' ids, joined by `+`.
    pub backbone: String,
    /// Ranking metric name.
    pub metric_name: String,
    /// Ranking metric on validation.
    pub metric: f64,
    /// Every headline number on validation.
    pub scores: std::collections::BTreeMap<String, f64>,
    /// Seconds spent building and scoring it.
    pub secs: f64,
    /// How it combines its members.
    pub reason: String,
    /// Its folder.
    pub model_dir: std::path::PathBuf,
}

/// Every trial of a run, best first.
#[derive(Debug, Clone, Serialize)]
pub struct Leaderboard {
    higher_is_better: bool,
    /// The rows, ranked once [`Leaderboard::rank`] ran.
    pub rows: Vec<Row>,
}

impl Leaderboard {
    /// An empty board.
    pub fn new(higher_is_better: bool) -> Self {
        Leaderboard {
            higher_is_better,
            rows: Vec::new(),
        }
    }

    /// Adds a trial's result.
    pub fn push(&mut self, spec: &TrialSpec, r: TrialResult) {
        let (status, reason) = (r.status.name(), r.status.reason().to_owned());
        let kept = r
            .best_epoch
            .and_then(|b| r.epochs.iter().find(|e| e.epoch == b));
        let has_model = r.model_dir.is_some();
        self.rows.push(Row {
            rank: None,
            id: spec.id.clone(),
            model: spec.family.clone(),
            backbone: spec.backbone.clone(),
            metric_name: r.metric_name.clone(),
            metric: r.metric,
            metrics: metrics_text(&r.metrics),
            train_loss: kept.map(|e| e.train_loss),
            val_loss: kept.map(|e| e.val_loss),
            learning_rate: has_model.then_some(r.learning_rate),
            batch_size: has_model.then_some(r.batch_size),
            epochs: r.epochs.len(),
            train_secs: r.train_secs,
            status: status.to_owned(),
            reason,
            model_dir: r.model_dir.map(|p| p.display().to_string()),
            test_metric: None,
            test_metrics: String::new(),
        });
    }

    /// Adds a model made of trained ones (an ensemble, a model with test-time augmentation),
    /// scored after the trials.
    pub fn push_combined(&mut self, c: Combined) {
        self.rows.push(Row {
            rank: None,
            id: c.id,
            model: c.model,
            backbone: c.backbone,
            metric_name: c.metric_name,
            metric: Some(c.metric),
            metrics: metrics_text(&c.scores),
            train_loss: None,
            val_loss: None,
            learning_rate: None,
            batch_size: None,
            epochs: 0,
            train_secs: c.secs,
            status: "completed".to_owned(),
            reason: c.reason,
            model_dir: Some(c.model_dir.display().to_string()),
            test_metric: None,
            test_metrics: String::new(),
        });
    }

    /// Adds a network that did not run.
    pub fn push_skipped(&mut self, model: &str, backbone: &str, reason: &str) {
        self.rows.push(Row {
            rank: None,
            id: format!("{model}-{backbone}")
                .trim_end_matches('-')
                .to_owned(),
            model: model.to_owned(),
            backbone: backbone.to_owned(),
            metric_name: String::new(),
            metric: None,
            metrics: String::new(),
            train_loss: None,
            val_loss: None,
            learning_rate: None,
            batch_size: None,
            epochs: 0,
            train_secs: 0.0,
            status: "skipped".to_owned(),
            reason: reason.to_owned(),
            model_dir: None,
            test_metric: None,
            test_metrics: String::new(),
        });
    }

    /// Sorts best first and numbers the rows that have a metric.
    pub fn rank(&mut self) {
        let hib = self.higher_is_better;
        self.rows.sort_by(|a, b| match (a.metric, b.metric) {
            (Some(x), Some(y)) if hib => y.total_cmp(&x),
            (Some(x), Some(y)) => x.total_cmp(&y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => a.id.cmp(&b.id),
        });
        let mut n = 0;
        for row in &mut self.rows {
            if row.metric.is_some() {
                n += 1;
                row.rank = Some(n);
            }
        }
    }

    /// The best row with a model.
    pub fn best(&self) -> Option<&Row> {
        self.rows.iter().find(|r| r.rank == Some(1))
    }

    /// Writes `leaderboard.csv`, `leaderboard.json` and `leaderboard.md` into `dir`.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        // Each file is renamed into place whole, so a crash never leaves a torn board.
        let mut csv = csv::Writer::from_writer(Vec::new());
        for row in &self.rows {
            csv.serialize(row).map_err(std::io::Error::other)?;
        }
        let bytes = csv
            .into_inner()
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        autodl_api::files::write_atomic(&dir.join("leaderboard.csv"), &bytes)?;
        crate::write_json(&dir.join("leaderboard.json"), &self.rows)?;
        autodl_api::files::write_atomic(&dir.join("leaderboard.md"), self.to_markdown().as_bytes())
    }

    /// The board as a Markdown table (also readable in a terminal).
    pub fn to_markdown(&self) -> String {
        let f = |v: Option<f64>, p: usize| v.map_or("-".to_owned(), |x| format!("{x:.p$}"));
        // The test column only when the data had a test split.
        let test = self.rows.iter().any(|r| r.test_metric.is_some());
        let mut out = String::from(if test {
            "| rank | model | backbone | metric | value | test | train loss | val loss | lr | batch | epochs | time (s) | status |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
        } else {
            "| rank | model | backbone | metric | value | train loss | val loss | lr | batch | epochs | time (s) | status |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n"
        });
        for r in &self.rows {
            let status = if r.reason.is_empty() {
                r.status.clone()
            } else {
                format!("{}: {}", r.status, r.reason)
            };
            let value = if test {
                format!("{} | {}", f(r.metric, 4), f(r.test_metric, 4))
            } else {
                f(r.metric, 4)
            };
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0} | {} |\n",
                r.rank.map_or("-".to_owned(), |n| n.to_string()),
                r.model,
                r.backbone,
                r.metric_name,
                value,
                f(r.train_loss, 4),
                f(r.val_loss, 4),
                r.learning_rate
                    .map_or("-".to_owned(), |x| format!("{x:.2e}")),
                r.batch_size.map_or("-".to_owned(), |b| b.to_string()),
                r.epochs,
                r.train_secs,
                status.replace('|', "/"),
            ));
        }
        out
    }
}
