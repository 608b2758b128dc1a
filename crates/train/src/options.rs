//! The parameters each task declares for the families built on it, and the error a training
//! loop reports for one the planner should have resolved.

use autodl_api::{Dimension, ParamDecl, ParamError, ParamKind, PluginError};

/// The parameters every pixel-classification family reads (its loss).
pub fn pixel_params() -> Vec<ParamDecl> {
    vec![
        ParamDecl::fixed(
            "class-balance",
            "weight rare classes up in the loss (`balanced`) or not (`none`)",
            ParamKind::Choice {
                options: &["none", "balanced"],
                default: "none",
            },
        )
        .tuned(Dimension::Choice {
            options: vec!["none".into(), "balanced".into()],
        }),
        ParamDecl::fixed(
            "dice-fraction",
            "share of soft-dice loss in the total",
            ParamKind::Number {
                min: 0.0,
                max: 1.0,
                default: 0.0,
            },
        )
        .tuned(Dimension::Uniform {
            low: 0.0,
            high: 0.5,
        }),
        ParamDecl::fixed(
            "focal-gamma",
            "focal-loss exponent; 0 is plain cross-entropy",
            ParamKind::Number {
                min: 0.0,
                max: 5.0,
                default: 0.0,
            },
        ),
    ]
}

/// The parameters every backbone-based anchor-head detector reads (its box loss and
/// [`freeze_stem_param`]).
pub fn detector_params() -> Vec<ParamDecl> {
    vec![
        ParamDecl::fixed(
            "box-loss",
            "box regression loss: the family's own (`default`), `smooth-l1` or `giou`",
            ParamKind::Choice {
                options: &["default", "smooth-l1", "giou"],
                default: "default",
            },
        )
        .tuned(Dimension::Choice {
            options: vec!["default".into(), "giou".into()],
        }),
        freeze_stem_param(),
    ]
}

/// The parameter every backbone-based detector reads, whatever its head: whether a pretrained
/// backbone's stem and batch norm stay frozen.
pub fn freeze_stem_param() -> ParamDecl {
    ParamDecl::fixed(
        "freeze-stem",
        "keep a pretrained backbone's stem and batch norm frozen, as torchvision's detectors do",
        ParamKind::Flag { default: true },
    )
}

/// A parameter the planner should have resolved but did not: a bug, reported as a failed trial.
pub fn param_error(e: ParamError) -> PluginError {
    PluginError::Training(e.to_string())
}
