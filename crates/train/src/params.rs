//! Reading a trial's string-keyed parameters (`TrialSpec::params`, `ModelMeta::params`): one
//! function per value type, each falling back to its default when the key is absent or holds
//! another type.

use autodl_api::{ParamValue, Params};

/// Reads a text parameter with a default.
pub fn text_param<'a>(params: &'a Params, key: &str, default: &'a str) -> &'a str {
    match params.get(key) {
        Some(ParamValue::Text(t)) => t,
        _ => default,
    }
}

/// Reads a number parameter with a default.
pub fn number_param(params: &Params, key: &str, default: f64) -> f64 {
    match params.get(key) {
        Some(ParamValue::Number(n)) => *n,
        _ => default,
    }
}
