//! The plugin's side of the ABI: what [`export_family!`](crate::export_family) generates calls
//! these, each of which runs the family inside `catch_unwind` and answers with a JSON
//! [`Reply`], so that no panic unwinds across `extern "C"`.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString, c_char, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};

use autodl_api::{
    EpochRecord, Inferred, NetworkFamily, Params, PluginError, PredictProgress, Progress, TrialSpec,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::wire::{
    Description, InferRequest, InferredImage, PredictEvent, PredictRequest, ProgressEvent, Reply,
};
use crate::{InferCallback, ProgressCallback};

/// The text of a caught panic.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

/// Runs `body` with panics caught and returns its reply as a string for the host, which
/// gives it back to [`free_string`].
fn reply<T: Serialize>(body: impl FnOnce() -> Result<T, String>) -> *mut c_char {
    let reply = match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(value)) => Reply::Ok(value),
        Ok(Err(message)) => Reply::Error(message),
        Err(payload) => Reply::Panicked(panic_message(payload.as_ref())),
    };
    // Serialising our own types cannot fail but for a panicking `Serialize`; answer anyway.
    let json = catch_unwind(AssertUnwindSafe(|| serde_json::to_string(&reply)))
        .unwrap_or_else(|p| Ok(format!("{{\"panicked\":{:?}}}", panic_message(p.as_ref()))))
        .unwrap_or_else(|e| format!("{{\"error\":{:?}}}", e.to_string()));
    // JSON escapes every control character, so it holds no NUL.
    CString::new(json).map_or(std::ptr::null_mut(), CString::into_raw)
}

/// Reads the JSON the host passed.
///
/// # Safety
/// `text` is null or a NUL-terminated string that stays valid for the call.
unsafe fn read<T: DeserializeOwned>(text: *const c_char, what: &str) -> Result<T, String> {
    if text.is_null() {
        return Err(format!("the host passed no {what}"));
    }
    // SAFETY: the caller promises a valid NUL-terminated string.
    let bytes = unsafe { CStr::from_ptr(text) }.to_bytes();
    serde_json::from_slice(bytes).map_err(|e| format!("invalid {what} from the host: {e}"))
}

/// `describe`: the family's [`Description`].
pub fn describe(family: &dyn NetworkFamily) -> *mut c_char {
    reply(|| Ok(Description::of(family)))
}

/// `validate`: `params` checked and completed against the family's declarations.
///
/// # Safety
/// `params` is null or a NUL-terminated string valid for the call.
pub unsafe fn validate(family: &dyn NetworkFamily, params: *const c_char) -> *mut c_char {
    reply(|| {
        // SAFETY: passed on from our caller.
        let params: Params = unsafe { read(params, "parameters") }?;
        autodl_api::resolve_params(&family.params(), &params).map_err(|e| e.to_string())
    })
}

/// Progress reported back to the host through its callback.
struct Callback {
    progress: ProgressCallback,
    ctx: *mut c_void,
}

// SAFETY: the host's context is a `&dyn Progress`, which is `Send + Sync`; the callback only
// reads the event string for the call's duration.
unsafe impl Send for Callback {}
// SAFETY: as above.
unsafe impl Sync for Callback {}

impl Callback {
    fn send(&self, event: &impl Serialize) {
        let Ok(json) = serde_json::to_string(event) else {
            return;
        };
        let Ok(text) = CString::new(json) else {
            return;
        };
        // SAFETY: the host gave this callback and context for the duration of `train`, and
        // the string outlives the call.
        unsafe { (self.progress)(self.ctx, text.as_ptr()) }
    }
}

impl Progress for Callback {
    fn epoch(&self, record: &EpochRecord) {
        self.send(&ProgressEvent::Epoch(record.clone()));
    }
    fn message(&self, text: &str) {
        self.send(&ProgressEvent::Message(text.to_owned()));
    }
}

impl PredictProgress for Callback {
    fn image(&self, path: &std::path::Path, windows: usize) {
        self.send(&PredictEvent::Image {
            path: path.to_owned(),
            windows,
        });
    }
    fn window(&self) {
        self.send(&PredictEvent::Window);
    }
}

/// `train`: one trial, progress through `progress(ctx, event)`.
///
/// # Safety
/// `spec` is null or a NUL-terminated string valid for the call; `progress` may be called
/// with `ctx` until this returns.
pub unsafe fn train(
    family: &dyn NetworkFamily,
    spec: *const c_char,
    progress: ProgressCallback,
    ctx: *mut c_void,
) -> *mut c_char {
    reply(|| {
        // SAFETY: passed on from our caller.
        let spec: TrialSpec = unsafe { read(spec, "trial spec") }?;
        let callback = Callback { progress, ctx };
        family.train(&spec, &callback).map_err(|e| e.to_string())
    })
}

/// `predict`: runs a trained model, progress through `progress(ctx, event)`; replies with the
/// files written.
///
/// # Safety
/// `request` is null or a NUL-terminated string valid for the call; `progress` may be called
/// with `ctx` until this returns.
pub unsafe fn predict(
    family: &dyn NetworkFamily,
    request: *const c_char,
    progress: ProgressCallback,
    ctx: *mut c_void,
) -> *mut c_char {
    reply(|| {
        // SAFETY: passed on from our caller.
        let r: PredictRequest = unsafe { read(request, "prediction request") }?;
        let callback = Callback { progress, ctx };
        family
            .predict(&r.model_dir, &r.images, &r.out_dir, &r.options, &callback)
            .map_err(|e| e.to_string())
    })
}

/// `infer`: runs a trained model and hands each image's prediction to `each(ctx, index, json)`.
///
/// # Safety
/// `request` is null or a NUL-terminated string valid for the call; `each` may be called with
/// `ctx` until this returns.
pub unsafe fn infer(
    family: &dyn NetworkFamily,
    request: *const c_char,
    each: InferCallback,
    ctx: *mut c_void,
) -> *mut c_char {
    reply(|| {
        // SAFETY: passed on from our caller.
        let r: InferRequest = unsafe { read(request, "inference request") }?;
        let mut send = |index: usize, inferred: Inferred| -> Result<(), PluginError> {
            let json = serde_json::to_string(&InferredImage::from(inferred))
                .map_err(|e| PluginError::Other(format!("cannot write a prediction: {e}")))?;
            let text = CString::new(json)
                .map_err(|e| PluginError::Other(format!("cannot write a prediction: {e}")))?;
            // SAFETY: the host gave `each` and `ctx` for the duration of `infer`, and the
            // string outlives the call.
            match unsafe { each(ctx, index, text.as_ptr()) } {
                0 => Ok(()),
                _ => Err(PluginError::Other("the host stopped inference".to_owned())),
            }
        };
        family
            .infer(&r.model_dir, &r.images, &r.options, &mut send)
            .map_err(|e| e.to_string())
    })
}

/// `free_string`: frees a string [`describe`], [`validate`], [`train`], [`predict`] or
/// [`infer`] returned.
///
/// # Safety
/// `s` is null or a pointer one of them returned, not freed before.
pub unsafe fn free_string(s: *mut c_char) {
    if !s.is_null() {
        // SAFETY: `s` came from `CString::into_raw` in `reply`, in this library.
        drop(unsafe { CString::from_raw(s) });
    }
}

/// Exports a network family from a plugin library (a `cdylib`): generates the
/// [`ENTRY_POINT`](crate::ENTRY_POINT) function and its [`PluginTable`](crate::PluginTable).
/// Invoke it once, at the crate root, with a constant expression of a type implementing
/// [`NetworkFamily`] (a unit struct, as `backbone_family!` declares):
/// `autodl_plugin_sdk::export_family!(MyFamily);`.
#[macro_export]
macro_rules! export_family {
    ($family:expr) => {
        #[doc(hidden)]
        #[allow(unsafe_code)]
        mod __autodl_plugin_export {
            #[allow(unused_imports)]
            use super::*;
            use ::std::ffi::{c_char, c_void};

            static FAMILY: &dyn $crate::__api::NetworkFamily = &$family;

            unsafe extern "C" fn describe() -> *mut c_char {
                $crate::guest::describe(FAMILY)
            }
            unsafe extern "C" fn validate(params: *const c_char) -> *mut c_char {
                // SAFETY: the host keeps the ABI's promises for `params`.
                unsafe { $crate::guest::validate(FAMILY, params) }
            }
            unsafe extern "C" fn train(
                spec: *const c_char,
                progress: $crate::ProgressCallback,
                ctx: *mut c_void,
            ) -> *mut c_char {
                // SAFETY: the host keeps the ABI's promises for `spec`, `progress` and `ctx`.
                unsafe { $crate::guest::train(FAMILY, spec, progress, ctx) }
            }
            unsafe extern "C" fn predict(
                request: *const c_char,
                progress: $crate::ProgressCallback,
                ctx: *mut c_void,
            ) -> *mut c_char {
                // SAFETY: the host keeps the ABI's promises for `request`, `progress` and `ctx`.
                unsafe { $crate::guest::predict(FAMILY, request, progress, ctx) }
            }
            unsafe extern "C" fn infer(
                request: *const c_char,
                each: $crate::InferCallback,
                ctx: *mut c_void,
            ) -> *mut c_char {
                // SAFETY: the host keeps the ABI's promises for `request`, `each` and `ctx`.
                unsafe { $crate::guest::infer(FAMILY, request, each, ctx) }
            }
            unsafe extern "C" fn free_string(s: *mut c_char) {
                // SAFETY: the host hands back only strings this library returned, once.
                unsafe { $crate::guest::free_string(s) }
            }

            static TABLE: $crate::PluginTable = $crate::PluginTable {
                abi_version: $crate::ABI_VERSION,
                describe,
                validate,
                train,
                predict,
                infer,
                free_string,
            };

            /// The plugin's entry point: its ABI version and functions.
            #[unsafe(no_mangle)]
            pub extern "C" fn autodl_plugin_v1() -> *const $crate::PluginTable {
                &TABLE
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads and frees a reply.
    fn take(raw: *mut c_char) -> Reply<Params> {
        assert!(!raw.is_null());
        // SAFETY: `raw` came from `reply`, and is freed once, below.
        let text = unsafe { CStr::from_ptr(raw) }
            .to_str()
            .expect("UTF-8")
            .to_owned();
        // SAFETY: as above.
        unsafe { free_string(raw) };
        serde_json::from_str(&text).expect("a reply")
    }

    #[test]
    fn a_panic_becomes_a_reply_and_an_error_stays_one() {
        let panicked = take(reply::<Params>(|| panic!("boom")));
        assert_eq!(panicked, Reply::Panicked("boom".to_owned()));
        let failed = take(reply::<Params>(|| Err("no".to_owned())));
        assert_eq!(failed, Reply::Error("no".to_owned()));
        let ok = take(reply(|| Ok(Params::new())));
        assert_eq!(ok, Reply::Ok(Params::new()));
    }

    #[test]
    fn bad_input_from_the_host_is_an_error_not_a_crash() {
        // SAFETY: null is allowed.
        let none = unsafe { read::<Params>(std::ptr::null(), "parameters") };
        assert_eq!(none, Err("the host passed no parameters".to_owned()));
        let text = CString::new("{not json").expect("no NUL");
        // SAFETY: a valid NUL-terminated string.
        let bad = unsafe { read::<Params>(text.as_ptr(), "parameters") };
        assert!(bad.is_err_and(|e| e.starts_with("invalid parameters from the host")));
    }
}
