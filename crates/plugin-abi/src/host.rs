//! The host's side of the ABI: loads a plugin library, checks it, and registers a
//! [`PluginFamily`] proxy into `autodl_api`'s registry, so that planning, the leaderboard,
//! packages and prediction use it like a compiled-in family.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString, OsStr, c_char, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use autodl_api::{
    Inferred, MetricDecl, NetworkFamily, ParamDecl, Params, PluginError, PredictOptions,
    PredictProgress, Progress, Task, TrialResult, TrialSpec,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::wire::{
    Description, InferRequest, InferredImage, PredictEvent, PredictRequest, ProgressEvent, Reply,
    leak,
};
use crate::{ABI_VERSION, ENTRY_POINT, EntryPoint, InferCallback, PluginTable, ProgressCallback};

/// The environment variable naming folders (separated as `PATH` is) whose plugin libraries
/// (`lib*.so`, `lib*.dylib`, `*.dll`) are loaded by default.
pub const PATH_VAR: &str = "AUTODL_PLUGIN_PATH";

/// Why a plugin library could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file is not there.
    #[error("plugin {}: {source}", path.display())]
    Missing {
        /// The library.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The dynamic loader refused it.
    #[error("plugin {}: cannot load the library: {source}", path.display())]
    Open {
        /// The library.
        path: PathBuf,
        /// The loader's error.
        source: libloading::Error,
    },
    /// It exports no entry point.
    #[error(
        "plugin {}: not an autodl plugin: the library has no `{ENTRY_POINT}` symbol (export one with `autodl_plugin_sdk::export_family!`)",
        path.display()
    )]
    MissingEntryPoint {
        /// The library.
        path: PathBuf,
    },
    /// Its entry point gave no table.
    #[error("plugin {}: `{ENTRY_POINT}` returned no function table", path.display())]
    NoTable {
        /// The library.
        path: PathBuf,
    },
    /// It speaks another version of the ABI.
    #[error(
        "plugin {}: built for plugin ABI version {found}, but this autodl loads version {ABI_VERSION}: rebuild it against this autodl's autodl-plugin-sdk",
        path.display()
    )]
    Version {
        /// The library.
        path: PathBuf,
        /// The version it reports.
        found: u32,
    },
    /// A function failed, panicked or answered nonsense while it was loaded.
    #[error("plugin {}: {source}", path.display())]
    Call {
        /// The library.
        path: PathBuf,
        /// What went wrong.
        source: PluginError,
    },
    /// A folder of the search path cannot be listed.
    #[error("{}: cannot list plugin folder: {source}", dir.display())]
    Search {
        /// The folder.
        dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The functions of a loaded library's table, copied out of it.
#[derive(Clone, Copy)]
struct Functions {
    describe: unsafe extern "C" fn() -> *mut c_char,
    validate: unsafe extern "C" fn(*const c_char) -> *mut c_char,
    train: unsafe extern "C" fn(*const c_char, ProgressCallback, *mut c_void) -> *mut c_char,
    predict: unsafe extern "C" fn(*const c_char, ProgressCallback, *mut c_void) -> *mut c_char,
    infer: unsafe extern "C" fn(*const c_char, InferCallback, *mut c_void) -> *mut c_char,
    free_string: unsafe extern "C" fn(*mut c_char),
}

/// A network family in a plugin library: a [`NetworkFamily`] whose declarations come from the
/// library's description and whose training and prediction call into it, JSON in and out.
pub struct PluginFamily {
    path: PathBuf,
    functions: Functions,
    name: &'static str,
    task: Task,
    backbones: &'static [&'static str],
    tuned_backbones: Vec<&'static str>,
    arcgis_name: Option<&'static str>,
    params: Vec<ParamDecl>,
    metrics: Vec<MetricDecl>,
}

/// Libraries loaded so far, by canonical path: each is loaded once and never unloaded.
static LOADED: Mutex<Vec<(PathBuf, &'static PluginFamily)>> = Mutex::new(Vec::new());

/// The families of the libraries loaded so far, in loading order.
pub fn loaded() -> Vec<&'static PluginFamily> {
    LOADED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .map(|(_, f)| *f)
        .collect()
}

/// The libraries loaded so far, in loading order: what a child process must load too.
pub fn loaded_paths() -> Vec<PathBuf> {
    loaded().iter().map(|f| f.path.clone()).collect()
}

/// The plugin libraries in the folders of a search path ([`PATH_VAR`]'s value), sorted by
/// name within each folder. A folder that does not exist is skipped.
pub fn search_path(value: &OsStr) -> Result<Vec<PathBuf>, LoadError> {
    let mut found = Vec::new();
    for dir in std::env::split_paths(value) {
        if dir.as_os_str().is_empty() || !dir.is_dir() {
            continue;
        }
        let entries = std::fs::read_dir(&dir).map_err(|source| LoadError::Search {
            dir: dir.clone(),
            source,
        })?;
        let mut libs: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.is_file()
                    && p.file_name().and_then(OsStr::to_str).is_some_and(|n| {
                        n.starts_with(std::env::consts::DLL_PREFIX)
                            && n.ends_with(std::env::consts::DLL_SUFFIX)
                    })
            })
            .collect();
        libs.sort();
        found.extend(libs);
    }
    Ok(found)
}

/// Loads the plugin library at `path`, checks its ABI version and its description, and
/// registers its family (once: a library already loaded is returned as it is).
pub fn load(path: &Path) -> Result<&'static PluginFamily, LoadError> {
    let canonical = path.canonicalize().map_err(|source| LoadError::Missing {
        path: path.to_owned(),
        source,
    })?;
    let mut loaded = LOADED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((_, family)) = loaded.iter().find(|(p, _)| *p == canonical) {
        return Ok(family);
    }
    let functions = open(&canonical)?;
    let call_error = |source| LoadError::Call {
        path: canonical.clone(),
        source,
    };
    let description: Description = call(&canonical, functions, "describe", || {
        // SAFETY: `describe` takes nothing and returns a string of the library.
        unsafe { (functions.describe)() }
    })
    .map_err(call_error)?;
    let family = PluginFamily {
        path: canonical.clone(),
        functions,
        name: leak(&description.name),
        task: description.task,
        backbones: Box::leak(
            description
                .backbones
                .iter()
                .map(|b| leak(b))
                .collect::<Box<[_]>>(),
        ),
        tuned_backbones: description
            .tuned_backbones
            .iter()
            .map(|b| leak(b))
            .collect(),
        arcgis_name: description.arcgis_name.as_deref().map(leak),
        params: description.params.iter().map(|p| p.to_decl()).collect(),
        metrics: description.metrics.iter().map(|m| m.to_decl()).collect(),
    };
    if family.backbones.is_empty() {
        return Err(call_error(PluginError::Other(format!(
            "family `{}` names no backbone",
            family.name
        ))));
    }
    // The library's own check must accept what it declared: its defaults.
    family.validate(&Params::new()).map_err(call_error)?;
    let family: &'static PluginFamily = Box::leak(Box::new(family));
    autodl_api::register_network(family).map_err(call_error)?;
    loaded.push((canonical, family));
    Ok(family)
}

/// Opens the library and reads its table, checking the version before anything else.
fn open(path: &Path) -> Result<Functions, LoadError> {
    // SAFETY: loading a library runs its initialisers; a plugin is code the user chose to
    // run, as the binary itself is.
    let library = unsafe { libloading::Library::new(path) }.map_err(|source| LoadError::Open {
        path: path.to_owned(),
        source,
    })?;
    // SAFETY: the symbol, when present, is the ABI's entry point, of type `EntryPoint`.
    let entry: EntryPoint = match unsafe { library.get::<EntryPoint>(ENTRY_POINT.as_bytes()) } {
        Ok(symbol) => *symbol,
        Err(_) => {
            return Err(LoadError::MissingEntryPoint {
                path: path.to_owned(),
            });
        }
    };
    // SAFETY: the entry point takes nothing and returns a pointer to a static table.
    let table: *const PluginTable = unsafe { entry() };
    if table.is_null() {
        return Err(LoadError::NoTable {
            path: path.to_owned(),
        });
    }
    // SAFETY: every version of the table starts with its `u32` version, so this read is valid
    // whatever the rest of the layout is.
    let found = unsafe { table.cast::<u32>().read() };
    if found != ABI_VERSION {
        return Err(LoadError::Version {
            path: path.to_owned(),
            found,
        });
    }
    // SAFETY: the version matches, so the table has this layout; it lives in the library,
    // which is never unloaded.
    let t = unsafe { &*table };
    let functions = Functions {
        describe: t.describe,
        validate: t.validate,
        train: t.train,
        predict: t.predict,
        infer: t.infer,
        free_string: t.free_string,
    };
    // Never unloaded: the family's functions and the strings it hands out must stay valid for
    // the life of the process.
    std::mem::forget(library);
    Ok(functions)
}

/// Calls one function of the library and reads its reply, which is freed by the library.
fn call<T: DeserializeOwned>(
    path: &Path,
    functions: Functions,
    function: &str,
    f: impl FnOnce() -> *mut c_char,
) -> Result<T, PluginError> {
    let raw = f();
    if raw.is_null() {
        return Err(PluginError::Other(format!(
            "the plugin's `{function}` returned nothing"
        )));
    }
    // SAFETY: a non-null reply is a NUL-terminated string of the library's, valid until it is
    // handed back to its `free_string`, which happens right after this copy.
    let bytes = unsafe { CStr::from_ptr(raw) }.to_bytes().to_vec();
    // SAFETY: `raw` came from this library and is freed once.
    unsafe { (functions.free_string)(raw) };
    match serde_json::from_slice::<Reply<T>>(&bytes) {
        Ok(Reply::Ok(value)) => Ok(value),
        Ok(Reply::Error(message)) => Err(PluginError::Other(message)),
        Ok(Reply::Panicked(message)) => Err(PluginError::Other(format!(
            "the plugin {} panicked in `{function}`: {message}",
            path.display()
        ))),
        Err(e) => Err(PluginError::Other(format!(
            "the plugin {} answered `{function}` with an invalid reply: {e}",
            path.display()
        ))),
    }
}

/// The JSON of `value` as a C string for the library.
fn c_json(value: &impl Serialize) -> Result<CString, PluginError> {
    let json = serde_json::to_string(value)
        .map_err(|e| PluginError::Other(format!("cannot write the plugin's input: {e}")))?;
    CString::new(json)
        .map_err(|e| PluginError::Other(format!("cannot write the plugin's input: {e}")))
}

/// Receives one progress event from the library's `train`.
///
/// # Safety
/// `ctx` is the `&&dyn Progress` [`PluginFamily::train`] passed; `event` is null or a
/// NUL-terminated string valid for the call.
unsafe extern "C" fn on_progress(ctx: *mut c_void, event: *const c_char) {
    if ctx.is_null() || event.is_null() {
        return;
    }
    // A panic in our progress sink must not unwind into the library.
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `train` passes a pointer to a `&dyn Progress` that outlives the call.
        let progress: &dyn Progress = unsafe { *ctx.cast::<&dyn Progress>() };
        // SAFETY: the library keeps the string valid for the call.
        let bytes = unsafe { CStr::from_ptr(event) }.to_bytes();
        match serde_json::from_slice::<ProgressEvent>(bytes) {
            Ok(ProgressEvent::Epoch(record)) => progress.epoch(&record),
            Ok(ProgressEvent::Message(text)) => progress.message(&text),
            Err(e) => progress.message(&format!("the plugin sent invalid progress: {e}")),
        }
    }));
}

/// Receives one progress event from the library's `predict`.
///
/// # Safety
/// `ctx` is the `&&dyn PredictProgress` [`PluginFamily`]'s `predict` passed; `event` is null
/// or a NUL-terminated string valid for the call.
unsafe extern "C" fn on_predict_progress(ctx: *mut c_void, event: *const c_char) {
    if ctx.is_null() || event.is_null() {
        return;
    }
    // A panic in our progress sink must not unwind into the library.
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `predict` passes a pointer to a `&dyn PredictProgress` that outlives the
        // call.
        let progress: &dyn PredictProgress = unsafe { *ctx.cast::<&dyn PredictProgress>() };
        // SAFETY: the library keeps the string valid for the call.
        let bytes = unsafe { CStr::from_ptr(event) }.to_bytes();
        match serde_json::from_slice::<PredictEvent>(bytes) {
            Ok(PredictEvent::Image { path, windows }) => progress.image(&path, windows),
            Ok(PredictEvent::Window) => progress.window(),
            // Progress only draws a bar: a malformed event is dropped.
            Err(_) => {}
        }
    }));
}

/// Where `infer`'s predictions go: the caller's `each`, and the first error it returned.
struct InferSink<'a> {
    each: &'a mut dyn FnMut(usize, Inferred) -> Result<(), PluginError>,
    error: Option<PluginError>,
}

/// Receives one image's prediction from the library's `infer`; 0 goes on, 1 stops.
///
/// # Safety
/// `ctx` is the `InferSink` [`PluginFamily`]'s `infer` passed; `inferred` is null or a
/// NUL-terminated string valid for the call.
unsafe extern "C" fn on_inferred(ctx: *mut c_void, index: usize, inferred: *const c_char) -> u8 {
    if ctx.is_null() || inferred.is_null() {
        return 1;
    }
    // Neither a panic in `each` nor one here may unwind into the library.
    catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `infer` passes a pointer to its `InferSink`, alive and not otherwise
        // borrowed for the call.
        let sink = unsafe { &mut *ctx.cast::<InferSink<'_>>() };
        // SAFETY: the library keeps the string valid for the call.
        let bytes = unsafe { CStr::from_ptr(inferred) }.to_bytes();
        let outcome = serde_json::from_slice::<InferredImage>(bytes)
            .map_err(|e| PluginError::Other(format!("the plugin sent an invalid prediction: {e}")))
            .and_then(|image| (sink.each)(index, image.into()));
        match outcome {
            Ok(()) => 0,
            Err(e) => {
                sink.error.get_or_insert(e);
                1
            }
        }
    }))
    .unwrap_or(1)
}

impl PluginFamily {
    /// The library this family comes from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The library's own check of `params`: complete, defaults filled in, or why not.
    pub fn validate(&self, params: &Params) -> Result<Params, PluginError> {
        let json = c_json(params)?;
        call(&self.path, self.functions, "validate", || {
            // SAFETY: `json` is a NUL-terminated string valid for the call.
            unsafe { (self.functions.validate)(json.as_ptr()) }
        })
    }
}

impl NetworkFamily for PluginFamily {
    fn name(&self) -> &'static str {
        self.name
    }

    fn task(&self) -> Task {
        self.task
    }

    fn backbones(&self) -> &'static [&'static str] {
        self.backbones
    }

    fn tuned_backbones(&self) -> Vec<&'static str> {
        self.tuned_backbones.clone()
    }

    fn params(&self) -> Vec<ParamDecl> {
        self.params.clone()
    }

    fn arcgis_name(&self) -> Option<&'static str> {
        self.arcgis_name
    }

    fn metrics(&self) -> Vec<MetricDecl> {
        if self.metrics.is_empty() {
            // A library that links no evaluator reports none; those of the host's evaluator
            // for the task are what its trials are scored by.
            autodl_api::default_evaluator(self.task).map_or_else(Vec::new, |e| e.metrics())
        } else {
            self.metrics.clone()
        }
    }

    fn train(&self, spec: &TrialSpec, progress: &dyn Progress) -> Result<TrialResult, PluginError> {
        let mut spec = spec.clone();
        spec.params = self.validate(&spec.params)?;
        let json = c_json(&spec)?;
        let sink: &dyn Progress = progress;
        let ctx = (&raw const sink).cast_mut().cast::<c_void>();
        call(&self.path, self.functions, "train", || {
            // SAFETY: `json` is valid for the call, and `ctx` points at `sink`, which outlives
            // it, as `on_progress` expects.
            unsafe { (self.functions.train)(json.as_ptr(), on_progress, ctx) }
        })
    }

    fn predict(
        &self,
        model_dir: &Path,
        images: &[PathBuf],
        out_dir: &Path,
        options: &PredictOptions,
        progress: &dyn PredictProgress,
    ) -> Result<Vec<PathBuf>, PluginError> {
        let json = c_json(&PredictRequest {
            model_dir: model_dir.to_owned(),
            images: images.to_vec(),
            out_dir: out_dir.to_owned(),
            options: options.clone(),
        })?;
        let sink: &dyn PredictProgress = progress;
        let ctx = (&raw const sink).cast_mut().cast::<c_void>();
        call(&self.path, self.functions, "predict", || {
            // SAFETY: `json` is valid for the call, and `ctx` points at `sink`, which outlives
            // it, as `on_predict_progress` expects.
            unsafe { (self.functions.predict)(json.as_ptr(), on_predict_progress, ctx) }
        })
    }

    fn infer(
        &self,
        model_dir: &Path,
        images: &[PathBuf],
        options: &PredictOptions,
        each: &mut dyn FnMut(usize, Inferred) -> Result<(), PluginError>,
    ) -> Result<(), PluginError> {
        let json = c_json(&InferRequest {
            model_dir: model_dir.to_owned(),
            images: images.to_vec(),
            options: options.clone(),
        })?;
        let mut sink = InferSink { each, error: None };
        let ctx = (&raw mut sink).cast::<c_void>();
        let replied: Result<(), PluginError> = call(&self.path, self.functions, "infer", || {
            // SAFETY: `json` is valid for the call, and `ctx` points at `sink`, which outlives
            // it, as `on_inferred` expects.
            unsafe { (self.functions.infer)(json.as_ptr(), on_inferred, ctx) }
        });
        // The caller's own error first: the library only saw that it was stopped.
        match sink.error {
            Some(e) => Err(e),
            None => replied,
        }
    }
}
