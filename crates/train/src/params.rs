//! Reading a trained model's recorded parameters (`ModelMeta::params`: the family's parameters
//! plus what training chose, such as the anchor scale and thresholds) when rebuilding it: one
//! function per value type, each falling back to its default when the key is absent. A trial's
//! own parameters are complete and read with `autodl_api::ParamsExt`, which never defaults.

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
