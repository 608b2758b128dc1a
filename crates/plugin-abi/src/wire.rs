//! The JSON that crosses the plugin boundary: one serde type per message, each denying
//! unknown fields, so that a plugin built against another SDK fails loudly instead of being
//! misread.

use std::path::PathBuf;

use autodl_api::{
    Dimension, Direction, EpochRecord, Inferred, InferredBox, MetricDecl, NetworkFamily, ParamDecl,
    ParamKind, PredictOptions, Task,
};
use serde::{Deserialize, Serialize};

/// What a plugin's `describe` says about its family: everything the host's proxy answers
/// without calling the library again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Description {
    /// [`NetworkFamily::name`].
    pub name: String,
    /// [`NetworkFamily::task`].
    pub task: Task,
    /// [`NetworkFamily::backbones`]; the first is the default.
    pub backbones: Vec<String>,
    /// [`NetworkFamily::tuned_backbones`].
    pub tuned_backbones: Vec<String>,
    /// [`NetworkFamily::arcgis_name`].
    pub arcgis_name: Option<String>,
    /// [`NetworkFamily::params`].
    pub params: Vec<Param>,
    /// [`NetworkFamily::metrics`].
    pub metrics: Vec<Metric>,
}

impl Description {
    /// The description of `family`.
    pub fn of(family: &dyn NetworkFamily) -> Self {
        let strings = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect();
        Description {
            name: family.name().to_owned(),
            task: family.task(),
            backbones: strings(family.backbones()),
            tuned_backbones: strings(&family.tuned_backbones()),
            arcgis_name: family.arcgis_name().map(str::to_owned),
            params: family.params().iter().map(Param::from).collect(),
            metrics: family
                .metrics()
                .iter()
                .map(|m| Metric {
                    name: m.name.to_owned(),
                    direction: m.direction,
                })
                .collect(),
        }
    }
}

/// A [`ParamDecl`] as data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Param {
    /// Kebab-case name.
    pub name: String,
    /// One line saying what it does.
    pub doc: String,
    /// Type, range and default.
    pub kind: Kind,
    /// The range advanced mode's tuner searches.
    pub tune: Option<Dimension>,
}

/// A [`ParamKind`] as data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "type", deny_unknown_fields)]
pub enum Kind {
    /// [`ParamKind::Number`].
    Number {
        /// Smallest allowed value.
        min: f64,
        /// Largest allowed value.
        max: f64,
        /// Default.
        default: f64,
    },
    /// [`ParamKind::Integer`].
    Integer {
        /// Smallest allowed value.
        min: i64,
        /// Largest allowed value.
        max: i64,
        /// Default.
        default: i64,
    },
    /// [`ParamKind::Choice`].
    Choice {
        /// The allowed words.
        options: Vec<String>,
        /// Default.
        default: String,
    },
    /// [`ParamKind::Flag`].
    Flag {
        /// Default.
        default: bool,
    },
}

impl From<&ParamDecl> for Param {
    fn from(d: &ParamDecl) -> Self {
        let kind = match &d.kind {
            ParamKind::Number { min, max, default } => Kind::Number {
                min: *min,
                max: *max,
                default: *default,
            },
            ParamKind::Integer { min, max, default } => Kind::Integer {
                min: *min,
                max: *max,
                default: *default,
            },
            ParamKind::Choice { options, default } => Kind::Choice {
                options: options.iter().map(|o| (*o).to_owned()).collect(),
                default: (*default).to_owned(),
            },
            ParamKind::Flag { default } => Kind::Flag { default: *default },
        };
        Param {
            name: d.name.to_owned(),
            doc: d.doc.to_owned(),
            kind,
            tune: d.tune.clone(),
        }
    }
}

/// Moves a string into the `'static` lifetime the API's declarations use. Only the host's
/// proxy does this, once per loaded library (which is never unloaded either).
pub(crate) fn leak(s: &str) -> &'static str {
    Box::leak(s.to_owned().into_boxed_str())
}

impl Param {
    /// The declaration, its strings leaked (see [`leak`]).
    pub(crate) fn to_decl(&self) -> ParamDecl {
        let kind = match &self.kind {
            Kind::Number { min, max, default } => ParamKind::Number {
                min: *min,
                max: *max,
                default: *default,
            },
            Kind::Integer { min, max, default } => ParamKind::Integer {
                min: *min,
                max: *max,
                default: *default,
            },
            Kind::Choice { options, default } => ParamKind::Choice {
                options: Box::leak(options.iter().map(|o| leak(o)).collect::<Box<[_]>>()),
                default: leak(default),
            },
            Kind::Flag { default } => ParamKind::Flag { default: *default },
        };
        ParamDecl {
            name: leak(&self.name),
            doc: leak(&self.doc),
            kind,
            tune: self.tune.clone(),
        }
    }
}

/// A [`MetricDecl`] as data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Metric {
    /// Name.
    pub name: String,
    /// Which way is better.
    pub direction: Direction,
}

impl Metric {
    /// The declaration, its name leaked (see [`leak`]).
    pub(crate) fn to_decl(&self) -> MetricDecl {
        MetricDecl {
            name: leak(&self.name),
            direction: self.direction,
        }
    }
}

/// What `predict` is asked to do: [`NetworkFamily::predict`]'s arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct PredictRequest {
    /// The trained model's folder.
    pub model_dir: PathBuf,
    /// The images.
    pub images: Vec<PathBuf>,
    /// Where predictions go.
    pub out_dir: PathBuf,
    /// How to run the model.
    pub options: PredictOptions,
}

/// What `infer` is asked to do: [`NetworkFamily::infer`]'s arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct InferRequest {
    /// The trained model's folder.
    pub model_dir: PathBuf,
    /// The images.
    pub images: Vec<PathBuf>,
    /// How to run the model (`hflip` for test-time augmentation).
    pub options: PredictOptions,
}

/// An [`Inferred`] as data: what a model predicts for one image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum InferredImage {
    /// [`Inferred::Probabilities`].
    Probabilities {
        /// Image width.
        width: u32,
        /// Image height.
        height: u32,
        /// Classes.
        classes: usize,
        /// `classes * height * width` probabilities, class-major.
        values: Vec<f32>,
    },
    /// [`Inferred::Boxes`].
    Boxes {
        /// Image width.
        width: u32,
        /// Image height.
        height: u32,
        /// `[x1, y1, x2, y2]`, score and class of each box.
        boxes: Vec<([f32; 4], f32, u32)>,
    },
}

impl From<Inferred> for InferredImage {
    fn from(i: Inferred) -> Self {
        match i {
            Inferred::Probabilities {
                width,
                height,
                classes,
                values,
            } => InferredImage::Probabilities {
                width,
                height,
                classes,
                values,
            },
            Inferred::Boxes {
                width,
                height,
                boxes,
            } => InferredImage::Boxes {
                width,
                height,
                boxes: boxes.iter().map(|b| (b.bbox, b.score, b.class)).collect(),
            },
        }
    }
}

impl From<InferredImage> for Inferred {
    fn from(i: InferredImage) -> Self {
        match i {
            InferredImage::Probabilities {
                width,
                height,
                classes,
                values,
            } => Inferred::Probabilities {
                width,
                height,
                classes,
                values,
            },
            InferredImage::Boxes {
                width,
                height,
                boxes,
            } => Inferred::Boxes {
                width,
                height,
                boxes: boxes
                    .into_iter()
                    .map(|(bbox, score, class)| InferredBox { bbox, score, class })
                    .collect(),
            },
        }
    }
}

/// One progress report from `train`: what [`autodl_api::Progress`] carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum ProgressEvent {
    /// A finished epoch.
    Epoch(EpochRecord),
    /// A status line.
    Message(String),
}

/// One progress report from `predict`: what [`autodl_api::PredictProgress`] carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum PredictEvent {
    /// Prediction of an image starts, cut into `windows` windows.
    Image {
        /// The image.
        path: PathBuf,
        /// How many windows.
        windows: usize,
    },
    /// One more window of the current image is done.
    Window,
}

/// Every reply of a plugin function.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum Reply<T> {
    /// It worked.
    Ok(T),
    /// It failed, saying why.
    Error(String),
    /// It panicked (caught before the boundary), with the panic's message.
    Panicked(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declarations_survive_the_wire() {
        let decls = vec![
            ParamDecl::fixed(
                "width",
                "channels",
                ParamKind::Integer {
                    min: 8,
                    max: 256,
                    default: 32,
                },
            )
            .tuned(Dimension::Uniform {
                low: 16.0,
                high: 64.0,
            }),
            ParamDecl::fixed(
                "mode",
                "a word",
                ParamKind::Choice {
                    options: &["a", "b"],
                    default: "b",
                },
            ),
            ParamDecl::fixed("on", "a flag", ParamKind::Flag { default: true }),
            ParamDecl::fixed(
                "rate",
                "a number",
                ParamKind::Number {
                    min: 0.0,
                    max: 1.0,
                    default: 0.5,
                },
            ),
        ];
        let wire: Vec<Param> = decls.iter().map(Param::from).collect();
        let json = serde_json::to_string(&wire).expect("serialises");
        let back: Vec<Param> = serde_json::from_str(&json).expect("parses");
        let back: Vec<ParamDecl> = back.iter().map(Param::to_decl).collect();
        assert_eq!(back, decls);
    }

    #[test]
    fn predictions_survive_the_wire() {
        for inferred in [
            Inferred::Boxes {
                width: 8,
                height: 6,
                boxes: vec![InferredBox {
                    bbox: [1.0, 2.0, 5.5, 6.0],
                    score: 0.75,
                    class: 2,
                }],
            },
            Inferred::Probabilities {
                width: 2,
                height: 1,
                classes: 2,
                values: vec![0.25, 0.5, 0.75, 0.5],
            },
        ] {
            let json =
                serde_json::to_string(&InferredImage::from(inferred.clone())).expect("serialises");
            let back: InferredImage = serde_json::from_str(&json).expect("parses");
            assert_eq!(Inferred::from(back), inferred);
        }
    }

    #[test]
    fn an_unknown_field_is_refused() {
        let json = r#"{"name":"m","direction":"maximise","extra":1}"#;
        assert!(serde_json::from_str::<Metric>(json).is_err());
        let ok = r#"{"name":"m","direction":"maximise"}"#;
        assert_eq!(
            serde_json::from_str::<Metric>(ok)
                .expect("parses")
                .to_decl(),
            MetricDecl::maximise("m")
        );
    }
}
