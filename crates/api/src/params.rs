//! What a stage declares about itself: its parameters (typed, with ranges and defaults, and
//! the part of them a tuner may search) and the metrics it reports with their direction.
//!
//! The planner checks a pipeline's values against these declarations before any trial runs,
//! fills in the defaults, and hands the trial a complete, checked [`Params`] map, so a family
//! never falls back to a default on a misspelt key: it reads only what it declared.

use crate::{Dimension, ParamValue, Params, SearchSpace};

/// The type and range of one parameter.
#[derive(Debug, Clone, PartialEq)]
pub enum ParamKind {
    /// A real number in `[min, max]`.
    Number {
        /// Smallest allowed value.
        min: f64,
        /// Largest allowed value.
        max: f64,
        /// The value when the pipeline says nothing.
        default: f64,
    },
    /// A whole number in `[min, max]`.
    Integer {
        /// Smallest allowed value.
        min: i64,
        /// Largest allowed value.
        max: i64,
        /// The value when the pipeline says nothing.
        default: i64,
    },
    /// One of a list of words.
    Choice {
        /// The allowed words.
        options: &'static [&'static str],
        /// The value when the pipeline says nothing.
        default: &'static str,
    },
    /// `true` or `false`.
    Flag {
        /// The value when the pipeline says nothing.
        default: bool,
    },
}

/// One parameter a stage reads.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamDecl {
    /// Kebab-case name, as written in a pipeline.
    pub name: &'static str,
    /// One line saying what it does.
    pub doc: &'static str,
    /// Type, range and default.
    pub kind: ParamKind,
    /// The range advanced mode's tuner searches, or `None` when it is not tuned.
    pub tune: Option<Dimension>,
}

impl ParamDecl {
    /// A declaration that the tuner leaves alone.
    pub const fn fixed(name: &'static str, doc: &'static str, kind: ParamKind) -> Self {
        ParamDecl {
            name,
            doc,
            kind,
            tune: None,
        }
    }

    /// The same declaration, searched by the tuner over `dimension`.
    pub fn tuned(mut self, dimension: Dimension) -> Self {
        self.tune = Some(dimension);
        self
    }

    /// The default value.
    pub fn default_value(&self) -> ParamValue {
        match &self.kind {
            ParamKind::Number { default, .. } => ParamValue::Number(*default),
            ParamKind::Integer { default, .. } => ParamValue::Number(*default as f64),
            ParamKind::Choice { default, .. } => ParamValue::Text((*default).to_owned()),
            ParamKind::Flag { default } => ParamValue::Flag(*default),
        }
    }

    /// What values are valid, for error messages: `a number from 0 to 1`, `one of a, b`.
    pub fn valid_values(&self) -> String {
        match &self.kind {
            ParamKind::Number { min, max, .. } => format!("a number from {min} to {max}"),
            ParamKind::Integer { min, max, .. } => format!("a whole number from {min} to {max}"),
            ParamKind::Choice { options, .. } => format!("one of {}", options.join(", ")),
            ParamKind::Flag { .. } => "true or false".to_owned(),
        }
    }

    /// Checks `value` and returns it in its canonical form (whole numbers rounded from a
    /// tuner's real value, flags as [`ParamValue::Flag`]); the error says what is valid.
    pub fn check(&self, value: &ParamValue) -> Result<ParamValue, String> {
        let bad = || {
            format!(
                "`{}` must be {}, found {}",
                self.name,
                self.valid_values(),
                value
            )
        };
        match (&self.kind, value) {
            (ParamKind::Number { min, max, .. }, ParamValue::Number(v))
                if v.is_finite() && (*min..=*max).contains(v) =>
            {
                Ok(ParamValue::Number(*v))
            }
            (ParamKind::Integer { min, max, .. }, ParamValue::Number(v)) if v.is_finite() => {
                let r = v.round();
                // A tuner samples integers as reals; a pipeline must write a whole number.
                if (*min as f64..=*max as f64).contains(&r) {
                    Ok(ParamValue::Number(r))
                } else {
                    Err(bad())
                }
            }
            (ParamKind::Choice { options, .. }, ParamValue::Text(t))
                if options.contains(&t.as_str()) =>
            {
                Ok(ParamValue::Text(t.clone()))
            }
            (ParamKind::Flag { .. }, ParamValue::Flag(b)) => Ok(ParamValue::Flag(*b)),
            (ParamKind::Flag { .. }, ParamValue::Text(t)) if t == "true" || t == "false" => {
                Ok(ParamValue::Flag(t == "true"))
            }
            _ => Err(bad()),
        }
    }
}

/// Why a set of parameters was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParamError {
    /// A name nobody declared.
    #[error("unknown parameter `{name}`{}", known_list(.known))]
    Unknown {
        /// The name given.
        name: String,
        /// The declared names.
        known: Vec<&'static str>,
    },
    /// A declared parameter with a value out of its range or of the wrong type.
    #[error("{0}")]
    Invalid(String),
}

fn known_list(known: &[&'static str]) -> String {
    if known.is_empty() {
        "; this stage takes no parameters".to_owned()
    } else {
        format!("; valid parameters: {}", known.join(", "))
    }
}

/// Checks `given` against `decls` and returns the complete parameters: every declared one,
/// from `given` when present (in canonical form) and its default otherwise.
pub fn resolve_params(decls: &[ParamDecl], given: &Params) -> Result<Params, ParamError> {
    for name in given.keys() {
        if !decls.iter().any(|d| d.name == name) {
            return Err(ParamError::Unknown {
                name: name.clone(),
                known: decls.iter().map(|d| d.name).collect(),
            });
        }
    }
    let mut out = Params::new();
    for d in decls {
        let value = match given.get(d.name) {
            Some(v) => d.check(v).map_err(ParamError::Invalid)?,
            None => d.default_value(),
        };
        out.insert(d.name.to_owned(), value);
    }
    Ok(out)
}

/// The part of `decls` a tuner searches.
pub fn search_space_of(decls: &[ParamDecl]) -> SearchSpace {
    decls
        .iter()
        .filter_map(|d| d.tune.clone().map(|t| (d.name.to_owned(), t)))
        .collect()
}

/// Reads a parameter the planner resolved; each accessor fails on a missing or mistyped value
/// instead of assuming a default (a trial's parameters are complete by construction).
pub trait ParamsExt {
    /// A number (real or whole).
    fn number(&self, name: &str) -> Result<f64, ParamError>;
    /// A word.
    fn text(&self, name: &str) -> Result<&str, ParamError>;
    /// A flag.
    fn flag(&self, name: &str) -> Result<bool, ParamError>;
}

fn missing(name: &str, what: &str, found: Option<&ParamValue>) -> ParamError {
    ParamError::Invalid(match found {
        Some(v) => format!("parameter `{name}` must be {what}, found {v}"),
        None => format!("parameter `{name}` is missing"),
    })
}

impl ParamsExt for Params {
    fn number(&self, name: &str) -> Result<f64, ParamError> {
        match self.get(name) {
            Some(ParamValue::Number(n)) => Ok(*n),
            other => Err(missing(name, "a number", other)),
        }
    }

    fn text(&self, name: &str) -> Result<&str, ParamError> {
        match self.get(name) {
            Some(ParamValue::Text(t)) => Ok(t),
            other => Err(missing(name, "a word", other)),
        }
    }

    fn flag(&self, name: &str) -> Result<bool, ParamError> {
        match self.get(name) {
            Some(ParamValue::Flag(b)) => Ok(*b),
            other => Err(missing(name, "true or false", other)),
        }
    }
}

/// Whether a larger or a smaller value of a metric is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// Larger is better (accuracy, AP).
    Maximise,
    /// Smaller is better (a loss).
    Minimise,
}

/// A metric a stage reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricDecl {
    /// Name as written in a pipeline's `train.metric` and on the leaderboard.
    pub name: &'static str,
    /// Which way is better.
    pub direction: Direction,
}

impl MetricDecl {
    /// A metric where larger is better.
    pub const fn maximise(name: &'static str) -> Self {
        MetricDecl {
            name,
            direction: Direction::Maximise,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decls() -> Vec<ParamDecl> {
        vec![
            ParamDecl::fixed(
                "depth",
                "tower depth",
                ParamKind::Integer {
                    min: 0,
                    max: 4,
                    default: 2,
                },
            ),
            ParamDecl::fixed(
                "loss",
                "box loss",
                ParamKind::Choice {
                    options: &["l1", "giou"],
                    default: "l1",
                },
            )
            .tuned(Dimension::Choice {
                options: vec!["l1".into(), "giou".into()],
            }),
            ParamDecl::fixed("freeze", "freeze", ParamKind::Flag { default: true }),
        ]
    }

    #[test]
    fn defaults_fill_what_is_not_given_and_values_are_canonical() {
        let given: Params = [
            ("depth".to_owned(), ParamValue::Number(2.6)),
            ("freeze".to_owned(), ParamValue::Text("false".into())),
        ]
        .into();
        let p = resolve_params(&decls(), &given).unwrap();
        assert_eq!(p.number("depth").unwrap(), 3.0);
        assert_eq!(p.text("loss").unwrap(), "l1");
        assert!(!p.flag("freeze").unwrap());
        assert_eq!(search_space_of(&decls()).len(), 1);
    }

    #[test]
    fn unknown_and_out_of_range_values_name_the_valid_ones() {
        let typo: Params = [("dept".to_owned(), ParamValue::Number(1.0))].into();
        let e = resolve_params(&decls(), &typo).unwrap_err().to_string();
        assert!(
            e.contains("`dept`") && e.contains("depth, loss, freeze"),
            "{e}"
        );
        let far: Params = [("depth".to_owned(), ParamValue::Number(9.0))].into();
        let e = resolve_params(&decls(), &far).unwrap_err().to_string();
        assert!(e.contains("from 0 to 4") && e.contains('9'), "{e}");
        let word: Params = [("loss".to_owned(), ParamValue::Text("iou".into()))].into();
        let e = resolve_params(&decls(), &word).unwrap_err().to_string();
        assert!(e.contains("one of l1, giou"), "{e}");
    }

    #[test]
    fn a_missing_value_is_an_error_not_a_default() {
        let p = Params::new();
        assert!(p.number("depth").is_err());
        assert!(p.flag("freeze").is_err());
    }
}
