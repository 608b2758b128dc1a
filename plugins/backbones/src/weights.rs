//! Loading pretrained weights from a local file with burn-store.
//!
//! The file is read as lazy tensor snapshots by burn-store's `SafetensorsStore` (or
//! `PytorchStore` with the `pytorch` feature), renamed by a `KeyRemapper` from the file's naming
//! to this crate's module paths, the first convolution is adapted to the model's band count,
//! and `ModuleSnapshot::apply` writes them into the module with `PyTorchToBurnAdapter` (which
//! transposes linear weights and maps batch norm's `weight`/`bias` to `gamma`/`beta`). Burn's
//! result lists every missing, mismatched and unused tensor; the first of each becomes an error
//! naming the tensor as the file names it.
//!
//! PyTorch files: burn-store 0.21's reader handles the zip and the legacy pickle formats but
//! ignores tensor strides (tracel-ai/burn#5383, fixed after 0.21.0), so tensors saved
//! non-contiguous load scrambled, silently. torchvision's checkpoints are contiguous; the
//! converted EfficientNet-Lite0 `.pth` is not (its safetensors twin is bundled instead). Hence
//! the `pytorch` feature is opt-in, and without it a `.pth` is an error that says how to
//! convert it to safetensors with `.contiguous()` tensors.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::rc::Rc;

use burn::module::{Module, ParamId};
use burn::store::{
    ApplyError, BurnToPyTorchAdapter, KeyRemapper, ModuleSnapshot, ModuleStore,
    PyTorchToBurnAdapter, SafetensorsStore, TensorSnapshot,
};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Element, TensorData};

use crate::{Arch, Backbone, BackboneError, adapt_first_conv};

/// How to turn a PyTorch file into safetensors without this crate's `pytorch` feature.
#[cfg(not(feature = "pytorch"))]
const CONVERT_HINT: &str = "python -c \"import torch, safetensors.torch as st; \
    st.save_file({k: v.contiguous() for k, v in torch.load('IN.pth', map_location='cpu').items()}, 'OUT.safetensors')\"";

fn weights_error(path: &Path, reason: impl ToString) -> BackboneError {
    BackboneError::Weights {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Every tensor in the file, under the file's names.
fn read_snapshots(path: &Path) -> Result<Vec<TensorSnapshot>, BackboneError> {
    if !path.is_file() {
        return Err(weights_error(path, "file not found"));
    }
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("safetensors") => {
            let mut store = SafetensorsStore::from_file(path);
            let snapshots = store
                .get_all_snapshots()
                .map_err(|e| weights_error(path, e))?;
            Ok(snapshots.values().cloned().collect())
        }
        Some("pth" | "pt" | "bin" | "ckpt") => read_pytorch(path),
        _ => Err(weights_error(
            path,
            "unknown format: expected a .safetensors or a PyTorch .pth file",
        )),
    }
}

#[cfg(feature = "pytorch")]
fn read_pytorch(path: &Path) -> Result<Vec<TensorSnapshot>, BackboneError> {
    let mut store = burn::store::PytorchStore::from_file(path);
    let snapshots = store
        .get_all_snapshots()
        .map_err(|e| weights_error(path, e))?;
    Ok(snapshots.values().cloned().collect())
}

#[cfg(not(feature = "pytorch"))]
fn read_pytorch(path: &Path) -> Result<Vec<TensorSnapshot>, BackboneError> {
    Err(weights_error(
        path,
        format!(
            "reading PyTorch files needs autodl-backbones built with its `pytorch` feature; \
             or convert the file once to safetensors: {CONVERT_HINT}"
        ),
    ))
}

/// Renames from the file's naming to module paths and back.
struct Names {
    arch: Arch,
    /// Module path to file name, for the tensors in the file.
    to_file: HashMap<String, String>,
}

/// A regex matching `prefix` at the start of a name (names hold no other metacharacter).
fn prefix_pattern(prefix: &str) -> String {
    format!("^{}", prefix.replace('.', r"\."))
}

impl Names {
    fn remapper(arch: Arch) -> Result<KeyRemapper, String> {
        // Checkpoints saved from `nn.DataParallel` or as `{"state_dict": ...}` carry a prefix.
        let mut patterns = vec![
            (r"^module\.".to_owned(), String::new()),
            (r"^state_dict\.".to_owned(), String::new()),
        ];
        patterns.extend(
            arch.name_map()
                .into_iter()
                .map(|(from, to)| (prefix_pattern(&from), to)),
        );
        KeyRemapper::from_patterns(patterns).map_err(|e| e.to_string())
    }

    /// The file's name for a module path, whether or not the file has the tensor.
    fn file_name(&self, module_path: &str) -> String {
        let torch = torch_param_name(module_path);
        for p in [module_path, torch.as_str()] {
            if let Some(name) = self.to_file.get(p) {
                return name.clone();
            }
        }
        for (from, to) in self.arch.name_map() {
            if let Some(rest) = torch.strip_prefix(&to) {
                return format!("{from}{rest}");
            }
        }
        torch
    }
}

/// Batch norm's `gamma`/`beta` under PyTorch's `weight`/`bias`.
fn torch_param_name(path: &str) -> String {
    match path.rsplit_once('.') {
        Some((module, "gamma")) => format!("{module}.weight"),
        Some((module, "beta")) => format!("{module}.bias"),
        _ => path.to_owned(),
    }
}

/// A snapshot under a new name with new data.
fn replace_data(snapshot: &TensorSnapshot, data: TensorData) -> TensorSnapshot {
    TensorSnapshot::from_data(
        data,
        snapshot.path_stack.clone().unwrap_or_default(),
        Vec::new(),
        ParamId::new(),
    )
}

/// A float snapshot converted lazily to `dtype`.
fn cast(snapshot: TensorSnapshot, dtype: DType) -> TensorSnapshot {
    if !snapshot.dtype.is_float() || snapshot.dtype == dtype {
        return snapshot;
    }
    let data = snapshot.clone_data_fn();
    TensorSnapshot::from_closure(
        Rc::new(move || data().map(|d| d.convert_dtype(dtype))),
        dtype,
        snapshot.shape.clone(),
        snapshot.path_stack.clone().unwrap_or_default(),
        snapshot.container_stack.clone().unwrap_or_default(),
        snapshot.tensor_id.unwrap_or_default(),
    )
}

/// Builds `arch` for `bands` bands from the weights in `path`.
pub(crate) fn load<B: Backend>(
    arch: Arch,
    bands: usize,
    path: &Path,
    device: &B::Device,
) -> Result<Backbone<B>, BackboneError> {
    let raw = read_snapshots(path)?;
    let remapper = Names::remapper(arch).map_err(|e| weights_error(path, e))?;
    let (snapshots, renamed) = remapper.remap(raw);
    let names = Names {
        arch,
        to_file: renamed.into_iter().collect(),
    };
    let float = <B::FloatElem as Element>::dtype();
    let mut snapshots: Vec<TensorSnapshot> =
        snapshots.into_iter().map(|s| cast(s, float)).collect();

    // A classifier in the file gets a head of its size (PyTorch layout: [classes, features]).
    let classes = snapshots
        .iter()
        .find(|s| s.full_path() == arch.classifier_weight())
        .and_then(|s| s.shape.first().copied());
    let mut model = Backbone::<B>::new(arch, bands, classes, device);

    if let Some(first) = snapshots
        .iter_mut()
        .find(|s| s.full_path() == arch.first_conv())
        && let [out, c, kh, kw] = first.shape[..]
        && c != bands
    {
        let data = first
            .to_data()
            .map_err(|e| weights_error(path, format!("{e:?}")))?;
        let values = data
            .convert_dtype(DType::F32)
            .to_vec::<f32>()
            .map_err(|e| weights_error(path, format!("{e:?}")))?;
        let adapted = adapt_first_conv(&values, [out, c, kh, kw], bands);
        let data = TensorData::new(adapted, [out, bands, kh, kw]).convert_dtype(float);
        *first = replace_data(first, data);
    }

    // Module paths in visiting order, so that the first missing one reported is the first
    // layer's rather than the alphabetically first.
    let order: Vec<String> = model
        .collect(None, None, true)
        .iter()
        .map(TensorSnapshot::full_path)
        .collect();
    let result = model.apply(snapshots, None, Some(Box::new(PyTorchToBurnAdapter)), true);

    let backbone = arch.name().to_owned();
    if let Some(error) = result.errors.first() {
        return Err(match error {
            ApplyError::ShapeMismatch {
                path: module_path,
                expected,
                found,
            } => {
                // Report linear weights in the file's [out, in] layout, as the file has them.
                let linear = module_path.ends_with("fc.weight");
                let layout = |s: &[usize]| {
                    if linear {
                        s.iter().rev().copied().collect()
                    } else {
                        s.to_vec()
                    }
                };
                BackboneError::ShapeMismatch {
                    path: path.to_path_buf(),
                    name: names.file_name(module_path),
                    backbone,
                    expected: layout(expected),
                    found: layout(found),
                }
            }
            other => weights_error(path, other),
        });
    }
    let missing: HashSet<&str> = result.missing.iter().map(|(p, _)| p.as_str()).collect();
    if let Some(first) = order.iter().find(|p| missing.contains(p.as_str())) {
        return Err(BackboneError::MissingTensor {
            path: path.to_path_buf(),
            name: names.file_name(first),
            backbone,
            missing: missing.len(),
            expected: order.len(),
        });
    }
    // Burn lists tensors it applied under batch norm's alternative names as unused too.
    let applied: HashSet<&str> = result.applied.iter().map(String::as_str).collect();
    let used_as = |p: &str| {
        let alt = match p.rsplit_once('.') {
            Some((m, "weight")) => format!("{m}.gamma"),
            Some((m, "bias")) => format!("{m}.beta"),
            _ => return false,
        };
        applied.contains(alt.as_str())
    };
    let has_head = model.has_classifier();
    if let Some(extra) = result.unused.iter().find(|p| {
        !p.ends_with("num_batches_tracked")
            && !used_as(p)
            && (has_head || !p.starts_with(arch.head_prefix()))
    }) {
        return Err(BackboneError::UnexpectedTensor {
            path: path.to_path_buf(),
            name: names.file_name(extra),
            backbone,
        });
    }
    Ok(model)
}

/// Writes the backbone's weights to a safetensors file in the naming it loads from
/// (torchvision or efficientnet_pytorch, PyTorch layouts), so that [`crate::BackboneConfig`]
/// with `weights` reads them back, including an adapted band count and the classifier.
pub fn save_weights<B: Backend>(backbone: &Backbone<B>, path: &Path) -> Result<(), BackboneError> {
    let patterns = backbone
        .arch()
        .name_map()
        .into_iter()
        .map(|(from, to)| (prefix_pattern(&to), from));
    let remapper =
        KeyRemapper::from_patterns(patterns.collect()).map_err(|e| weights_error(path, e))?;
    let mut store = SafetensorsStore::from_file(path)
        .with_to_adapter(BurnToPyTorchAdapter)
        .skip_enum_variants(true)
        .remap(remapper)
        .overwrite(true);
    // Training-mode forwards leave batch norm's running statistics pending until the module
    // is synchronised, which `into_record` does; a clone shares that state.
    let _ = backbone.clone().into_record();
    backbone
        .save_into(&mut store)
        .map_err(|e| weights_error(path, e))
}
