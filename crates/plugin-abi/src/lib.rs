//! The C ABI through which an out-of-tree network family (a `cdylib` built against
//! `autodl-plugin-sdk`, with its own copy of Burn) is loaded at run time.
//!
//! A plugin library exports one `extern "C"` function, [`ENTRY_POINT`], that returns a
//! [`PluginTable`]: our ABI version ([`ABI_VERSION`]) first, then `extern "C"` functions that
//! take and return JSON as NUL-terminated UTF-8 C strings (the types in [`wire`]). Strings the
//! plugin returns are freed by the plugin's own `free_string`; strings the host passes stay
//! the host's. No Rust or Burn type crosses the boundary, since host and plugin may come from
//! different compilers, and every exported function catches panics ([`guest`]) so that none
//! unwinds across `extern "C"`.
//!
//! The host side ([`host`]) loads a library, checks its version and symbols, asks it to
//! describe itself, and registers a [`host::PluginFamily`] proxy, an ordinary
//! [`autodl_api::NetworkFamily`], beside the compiled-in families. Libraries are never
//! unloaded.

pub mod guest;
pub mod host;
pub mod wire;

use std::ffi::{c_char, c_void};

#[doc(hidden)]
pub use autodl_api as __api;

/// The ABI version this crate speaks; a library reporting another is refused.
pub const ABI_VERSION: u32 = 1;

/// The one symbol a plugin library exports: an [`EntryPoint`].
pub const ENTRY_POINT: &str = "autodl_plugin_v1";

/// What the host passes to `train` (`predict`) to receive progress: called with `ctx` and one
/// [`wire::ProgressEvent`] ([`wire::PredictEvent`]) as JSON, the string owned by the plugin for
/// the call's duration.
pub type ProgressCallback = unsafe extern "C" fn(ctx: *mut c_void, event: *const c_char);

/// What the host passes to `infer` to receive each image's prediction: called with `ctx`, the
/// image's index and one [`wire::InferredImage`] as JSON (the string owned by the plugin for the
/// call's duration); returns 0 to go on, anything else to stop (the host keeps its reason).
pub type InferCallback =
    unsafe extern "C" fn(ctx: *mut c_void, index: usize, inferred: *const c_char) -> u8;

/// The type of [`ENTRY_POINT`]: returns a pointer to a table that lives as long as the
/// library.
pub type EntryPoint = unsafe extern "C" fn() -> *const PluginTable;

/// The functions a plugin library exports, version 1.
///
/// Every function taking a `*const c_char` reads a NUL-terminated UTF-8 JSON string the
/// caller owns; every `*mut c_char` returned is a NUL-terminated JSON [`wire::Reply`] the
/// caller hands back to `free_string` once read.
#[repr(C)]
pub struct PluginTable {
    /// [`ABI_VERSION`] of the SDK the plugin was built with. Always the first field, in every
    /// version, so that the host can read it before trusting the rest of the layout.
    pub abi_version: u32,
    /// The family's [`wire::Description`].
    pub describe: unsafe extern "C" fn() -> *mut c_char,
    /// Checks parameters ([`autodl_api::Params`]) against the family's declarations and
    /// replies with them complete, defaults filled in.
    pub validate: unsafe extern "C" fn(params: *const c_char) -> *mut c_char,
    /// Trains one trial ([`autodl_api::TrialSpec`]), reporting progress through `progress`
    /// with `ctx`; replies with its [`autodl_api::TrialResult`].
    pub train: unsafe extern "C" fn(
        spec: *const c_char,
        progress: ProgressCallback,
        ctx: *mut c_void,
    ) -> *mut c_char,
    /// Runs a trained model ([`wire::PredictRequest`]), reporting each image and window
    /// ([`wire::PredictEvent`]) through `progress` with `ctx`; replies with the files written.
    pub predict: unsafe extern "C" fn(
        request: *const c_char,
        progress: ProgressCallback,
        ctx: *mut c_void,
    ) -> *mut c_char,
    /// Runs a trained model ([`wire::InferRequest`]) and hands each image's prediction,
    /// before any threshold, to `each` with `ctx` (what ensembles and flip TTA combine);
    /// replies with nothing.
    pub infer: unsafe extern "C" fn(
        request: *const c_char,
        each: InferCallback,
        ctx: *mut c_void,
    ) -> *mut c_char,
    /// Frees a string this library returned.
    pub free_string: unsafe extern "C" fn(s: *mut c_char),
}
