//! Progress bars on stderr; plain log lines when stderr is not a terminal.

use std::io::IsTerminal;
use std::time::Duration;

use autodl_api::{EpochRecord, TrialSpec};
use autodl_core::Event;
use indicatif::{ProgressBar, ProgressStyle};

/// Shows the running trial: a bar over its epochs and a line per event.
pub struct TrialBars {
    quiet: bool,
    terminal: bool,
    bar: Option<(String, ProgressBar)>,
}

impl TrialBars {
    pub fn new(quiet: bool) -> Self {
        TrialBars {
            quiet,
            terminal: std::io::stderr().is_terminal(),
            bar: None,
        }
    }

    fn bar_for(&mut self, spec: &TrialSpec) -> &ProgressBar {
        if self.bar.as_ref().is_none_or(|(id, _)| id != &spec.id) {
            if let Some((_, old)) = self.bar.take() {
                old.finish_and_clear();
            }
            let bar = if self.quiet {
                ProgressBar::hidden()
            } else {
                ProgressBar::new(spec.max_epochs as u64)
            };
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix:>18} [{bar:30}] {pos}/{len} epochs {elapsed} {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_prefix(spec.id.clone());
            bar.enable_steady_tick(Duration::from_millis(250));
            self.bar = Some((spec.id.clone(), bar));
        }
        match &self.bar {
            Some((_, bar)) => bar,
            None => unreachable!("bar was just set"),
        }
    }

    /// A line that must be seen even without a terminal.
    pub fn line(&mut self, text: &str) {
        if self.quiet {
            return;
        }
        match &self.bar {
            Some((_, bar)) if self.terminal => bar.println(text),
            _ => eprintln!("{text}"),
        }
    }

    pub fn event(&mut self, spec: &TrialSpec, event: &Event) {
        let terminal = self.terminal;
        let bar = self.bar_for(spec).clone();
        let text = match event {
            Event::Epoch(EpochRecord {
                epoch,
                train_loss,
                val_loss,
                metric,
                ..
            }) => {
                bar.set_position(*epoch as u64);
                bar.set_message(format!("metric {metric:.4}"));
                format!(
                    "{}: epoch {epoch} train loss {train_loss:.4} val loss {val_loss:.4} metric {metric:.4}",
                    spec.id
                )
            }
            Event::Message { text } => format!("{}: {text}", spec.id),
            Event::Result(_) | Event::Panicked { .. } => return,
        };
        if !self.quiet {
            if terminal {
                bar.println(text)
            } else {
                eprintln!("{text}")
            }
        }
    }

    pub fn finish(&mut self) {
        if let Some((_, bar)) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

/// A spinner for work of unknown length (reading and validating a dataset).
pub fn spinner(quiet: bool, text: &str) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let s = ProgressBar::new_spinner();
    s.set_message(text.to_owned());
    s.enable_steady_tick(Duration::from_millis(120));
    s
}

/// A bar over the windows of each image `autodl predict` runs (a scene is thousands of them),
/// hidden when stderr is not a terminal or the run is quiet.
pub struct PredictBar {
    bar: ProgressBar,
}

impl PredictBar {
    /// A bar, or a hidden one.
    pub fn new(quiet: bool) -> Self {
        let bar = if quiet || !std::io::stderr().is_terminal() {
            ProgressBar::hidden()
        } else {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:30}] {pos}/{len} windows, {elapsed} (eta {eta})",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar
        };
        PredictBar { bar }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl autodl_api::PredictProgress for PredictBar {
    fn image(&self, path: &std::path::Path, windows: usize) {
        self.bar.reset();
        self.bar.set_length(windows as u64);
        self.bar.set_message(
            path.file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
        );
    }

    fn window(&self) {
        self.bar.inc(1);
    }
}
