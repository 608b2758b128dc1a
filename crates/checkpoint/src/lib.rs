//! Reads the float tensors of a checkpoint without Python: PyTorch's zip format
//! (`archive/data.pkl` with the storages in `archive/data/<key>`), its legacy format (pickles
//! followed by the raw storages) and safetensors. `autodl weights import` converts ImageNet
//! checkpoints with it (`autodl-backbones`' `import_weights`).
//!
//! Unlike burn-store 0.21's reader (tracel-ai/burn#5383), a tensor is read through its storage
//! offset, size and stride, so tensors saved non-contiguous (transposed, channels-last, views
//! into a shared storage) come out right. Float tensors (float32, float16, bfloat16, float64)
//! become contiguous float32; integer ones (batch norm's `num_batches_tracked`) are listed as
//! skipped. The state dict is found under the usual wrappers (`state_dict`,
//! `model_state_dict`, `model`) and nested dicts are flattened with `.`; `module.` prefixes
//! from `DataParallel` are removed.
//!
//! The input is untrusted (a downloaded file): the pickle is evaluated by a small machine
//! that calls nothing (see the `pickle` module), and every size it announces is checked
//! against the file's before anything is allocated. `crates/fuzz` has a target for [`read`].

mod pickle;

use std::collections::HashMap;
use std::io::{Cursor, Read};

use crate::pickle::{Id, Obj, Pickle};

/// A contiguous float32 tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// Its dimensions.
    pub shape: Vec<usize>,
    /// Its elements in C order.
    pub data: Vec<f32>,
}

/// The tensors of a checkpoint, in file order, under names without wrapper prefixes.
#[derive(Debug, Default)]
pub struct StateDict {
    /// Float tensors by name.
    pub tensors: Vec<(String, Tensor)>,
    /// Entries that are not float tensors (integer tensors, tensors built by unknown
    /// functions), by name.
    pub skipped: Vec<String>,
}

/// Why a checkpoint could not be read: what is wrong, and where when known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CheckpointError(String);

/// Wrappers a training script puts around the state dict, in the order tried.
const WRAPPERS: [&str; 3] = ["state_dict", "model_state_dict", "model"];
/// Nesting depth beyond which dicts are not searched (cycles, hostile input).
const MAX_DEPTH: usize = 8;
/// The legacy format's first pickle: `0x1950a86a20f9469cfc6c`, little-endian.
const LEGACY_MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];

/// Element types of storages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dtype {
    F32,
    F16,
    BF16,
    F64,
    /// An integer or boolean type of this many bytes, not converted.
    Other(usize),
}

impl Dtype {
    fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::BF16 => 2,
            Dtype::F64 => 8,
            Dtype::Other(n) => n,
        }
    }

    /// The dtype of a `torch.XStorage` class.
    fn of_storage(name: &str) -> Option<Dtype> {
        Some(match name {
            "FloatStorage" => Dtype::F32,
            "HalfStorage" => Dtype::F16,
            "BFloat16Storage" => Dtype::BF16,
            "DoubleStorage" => Dtype::F64,
            "LongStorage" => Dtype::Other(8),
            "IntStorage" => Dtype::Other(4),
            "ShortStorage" => Dtype::Other(2),
            "CharStorage" | "ByteStorage" | "BoolStorage" => Dtype::Other(1),
            _ => return None,
        })
    }

    /// Element `i` of `bytes` as float32; `None` for non-float types or out of range.
    fn value(self, bytes: &[u8], i: usize, big_endian: bool) -> Option<f32> {
        let size = self.size();
        let chunk = bytes.get(i.checked_mul(size)?..i.checked_mul(size)?.checked_add(size)?)?;
        let mut w = [0u8; 8];
        w[..size].copy_from_slice(chunk);
        if big_endian {
            w[..size].reverse();
        }
        Some(match self {
            Dtype::F32 => f32::from_le_bytes([w[0], w[1], w[2], w[3]]),
            Dtype::F16 => half::f16::from_le_bytes([w[0], w[1]]).to_f32(),
            Dtype::BF16 => half::bf16::from_le_bytes([w[0], w[1]]).to_f32(),
            // Rounded to the nearest float32, as `tensor.float()` does.
            Dtype::F64 => f64::from_le_bytes(w) as f32,
            Dtype::Other(_) => return None,
        })
    }

    /// Every element of `bytes` as float32.
    fn all(self, bytes: &[u8]) -> Option<Vec<f32>> {
        (0..bytes.len() / self.size())
            .map(|i| self.value(bytes, i, false))
            .collect()
    }
}

/// A storage a persistent id names: its key and element type, and, for a legacy view, the
/// element offset into the storage under that key.
#[derive(Debug, Clone)]
struct StorageRef {
    key: String,
    dtype: Dtype,
    offset: usize,
}

/// `_rebuild_tensor_v2`'s arguments.
#[derive(Debug, Clone)]
struct TensorRef {
    storage: StorageRef,
    offset: usize,
    size: Vec<usize>,
    stride: Vec<usize>,
}

/// Reads a checkpoint in any of the three formats, told apart by their first bytes.
pub fn read(bytes: &[u8]) -> Result<StateDict, CheckpointError> {
    read_any(bytes).map_err(CheckpointError)
}

fn read_any(bytes: &[u8]) -> Result<StateDict, String> {
    let mut dict = if bytes.starts_with(b"PK\x03\x04") {
        read_zip(bytes)?
    } else if bytes.first() == Some(&0x80) {
        read_legacy(bytes)?
    } else if bytes.len() > 8 && bytes[8] == b'{' {
        read_safetensors(bytes)?
    } else {
        return Err(
            "not a PyTorch checkpoint (zip or legacy pickle) or a safetensors file".to_owned(),
        );
    };
    let names = dict.tensors.iter_mut().map(|(n, _)| n);
    for name in names.chain(dict.skipped.iter_mut()) {
        while let Some(rest) = name.strip_prefix("module.") {
            *name = rest.to_owned();
        }
    }
    Ok(dict)
}

fn read_safetensors(bytes: &[u8]) -> Result<StateDict, String> {
    let file = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| format!("bad safetensors file: {e}"))?;
    let mut dict = StateDict::default();
    let mut tensors = file.tensors();
    // The header is a JSON object, whose order is lost; sort for a stable order.
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, view) in tensors {
        let dtype = match view.dtype() {
            safetensors::Dtype::F32 => Dtype::F32,
            safetensors::Dtype::F16 => Dtype::F16,
            safetensors::Dtype::BF16 => Dtype::BF16,
            safetensors::Dtype::F64 => Dtype::F64,
            _ => {
                dict.skipped.push(name);
                continue;
            }
        };
        let data = dtype
            .all(view.data())
            .ok_or_else(|| format!("tensor `{name}`: unreadable data"))?;
        dict.tensors.push((
            name,
            Tensor {
                shape: view.shape().to_vec(),
                data,
            },
        ));
    }
    Ok(dict)
}

fn read_zip(bytes: &[u8]) -> Result<StateDict, String> {
    let mut zip =
        zip::ZipArchive::new(Cursor::new(bytes)).map_err(|e| format!("bad zip file: {e}"))?;
    // The folder inside is named after the file it was saved as; take the shortest match.
    let pkl = zip
        .file_names()
        .filter(|n| *n == "data.pkl" || n.ends_with("/data.pkl"))
        .min_by_key(|n| n.len())
        .map(str::to_owned)
        .ok_or("a zip file without data.pkl: not a PyTorch checkpoint")?;
    let prefix = pkl.trim_end_matches("data.pkl").to_owned();
    // An entry may not inflate past this (torch stores its entries uncompressed).
    let limit = bytes.len().saturating_mul(64).max(1 << 20);
    let mut entry = |name: &str| -> Result<Option<Vec<u8>>, String> {
        let mut file = match zip.by_name(name) {
            Ok(f) => f,
            Err(zip::result::ZipError::FileNotFound) => return Ok(None),
            Err(e) => return Err(format!("{name}: {e}")),
        };
        let mut out = Vec::with_capacity((file.size() as usize).min(limit));
        (&mut file)
            .take(limit as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| format!("{name}: {e}"))?;
        if out.len() > limit {
            return Err(format!("{name}: inflates past {limit} bytes"));
        }
        Ok(Some(out))
    };
    let data = entry(&pkl)?.ok_or("data.pkl vanished")?;
    let big_endian =
        entry(&format!("{prefix}byteorder"))?.is_some_and(|b| b.trim_ascii() == b"big");
    let pickle = crate::pickle::parse(&data).map_err(|e| format!("data.pkl: {e}"))?;
    let refs = collect(&pickle)?;
    let mut storages: HashMap<String, Vec<u8>> = HashMap::new();
    let mut dict = StateDict::default();
    for (name, r) in refs {
        let Some(r) = r else {
            dict.skipped.push(name);
            continue;
        };
        if !storages.contains_key(&r.storage.key) {
            let path = format!("{prefix}data/{}", r.storage.key);
            let bytes = entry(&path)?.ok_or_else(|| format!("tensor `{name}`: no {path}"))?;
            storages.insert(r.storage.key.clone(), bytes);
        }
        let storage = &storages[&r.storage.key];
        materialise(&mut dict, name, &r, storage, big_endian, bytes.len())?;
    }
    Ok(dict)
}

fn read_legacy(bytes: &[u8]) -> Result<StateDict, String> {
    let mut pos = 0;
    let mut next = |what: &str| -> Result<Pickle, String> {
        let p = crate::pickle::parse(&bytes[pos..]).map_err(|e| format!("{what}: {e}"))?;
        pos += p.end;
        Ok(p)
    };
    let magic = next("magic number")?;
    if magic.get(magic.root) != &Obj::BigInt(LEGACY_MAGIC.to_vec()) {
        return Err("a pickle without PyTorch's magic number: not a PyTorch checkpoint".to_owned());
    }
    let version = next("protocol version")?;
    if version.int(version.root) != Some(1001) {
        return Err("unknown legacy PyTorch protocol version".to_owned());
    }
    let info = next("system information")?;
    let big_endian = info
        .dict_get(info.root, "little_endian")
        .is_some_and(|v| info.get(v) == &Obj::Bool(false));
    let pickle = next("checkpoint")?;
    let refs = collect(&pickle)?;
    let keys = next("storage keys")?;
    let keys: Vec<String> = keys
        .items(keys.root)
        .ok_or("storage keys are not a list")?
        .iter()
        .map(|&k| keys.str(k).map(str::to_owned))
        .collect::<Option<_>>()
        .ok_or("a storage key is not a string")?;
    // Each storage: its element count (int64), then its elements, in the listed order.
    let dtypes: HashMap<&str, Dtype> = refs
        .iter()
        .filter_map(|(_, r)| r.as_ref())
        .map(|r| (r.storage.key.as_str(), r.storage.dtype))
        .collect();
    let mut storages: HashMap<&str, &[u8]> = HashMap::new();
    for key in &keys {
        let take = |pos: &mut usize, n: usize| -> Result<&[u8], String> {
            let end = pos
                .checked_add(n)
                .filter(|&e| e <= bytes.len())
                .ok_or_else(|| format!("storage {key} runs past the end of the file"))?;
            let out = &bytes[*pos..end];
            *pos = end;
            Ok(out)
        };
        let mut count = [0u8; 8];
        count.copy_from_slice(take(&mut pos, 8)?);
        if big_endian {
            count.reverse();
        }
        let size = dtypes
            .get(key.as_str())
            .map(|d| d.size())
            .ok_or_else(|| format!("storage {key} is not used by any tensor"))?;
        let n = usize::try_from(u64::from_le_bytes(count))
            .ok()
            .and_then(|n| n.checked_mul(size))
            .ok_or_else(|| format!("storage {key} is too large"))?;
        storages.insert(key.as_str(), take(&mut pos, n)?);
    }
    let mut dict = StateDict::default();
    for (name, r) in refs {
        let Some(r) = r else {
            dict.skipped.push(name);
            continue;
        };
        let storage = storages
            .get(r.storage.key.as_str())
            .ok_or_else(|| format!("tensor `{name}`: storage {} is missing", r.storage.key))?;
        materialise(&mut dict, name, &r, storage, big_endian, bytes.len())?;
    }
    Ok(dict)
}

/// Reads the elements of `r` from its storage's bytes, honouring offset and strides.
fn materialise(
    dict: &mut StateDict,
    name: String,
    r: &TensorRef,
    storage: &[u8],
    big_endian: bool,
    file_len: usize,
) -> Result<(), String> {
    let dtype = r.storage.dtype;
    if matches!(dtype, Dtype::Other(_)) {
        dict.skipped.push(name);
        return Ok(());
    }
    let bad = |what: &str| format!("tensor `{name}`: {what}");
    let elems = storage.len() / dtype.size();
    let numel = r
        .size
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| bad("size overflows"))?;
    // A stride-0 (expanded) tensor could claim any size; no real checkpoint is larger than
    // its file.
    if numel > file_len.saturating_mul(4).max(1 << 16) {
        return Err(bad("larger than the file"));
    }
    let mut data = Vec::with_capacity(numel);
    if numel > 0 {
        let start = r
            .storage
            .offset
            .checked_add(r.offset)
            .ok_or_else(|| bad("offset overflows"))?;
        let last = r
            .size
            .iter()
            .zip(&r.stride)
            .try_fold(start, |acc, (&d, &s)| {
                (d - 1).checked_mul(s).and_then(|x| x.checked_add(acc))
            })
            .ok_or_else(|| bad("strides overflow"))?;
        if last >= elems {
            return Err(bad(&format!(
                "reaches element {last} of a storage of {elems}"
            )));
        }
        // Walk the index in C order, carrying the storage position along (wrapping: the
        // stride of a dimension of size 1 may be anything).
        let dims = r.size.len();
        let mut index = vec![0usize; dims];
        let mut at = start;
        for _ in 0..numel {
            data.push(
                dtype
                    .value(storage, at, big_endian)
                    .ok_or_else(|| bad("unreadable element"))?,
            );
            for d in (0..dims).rev() {
                index[d] += 1;
                at = at.wrapping_add(r.stride[d]);
                if index[d] < r.size[d] {
                    break;
                }
                at = at.wrapping_sub(r.stride[d].wrapping_mul(r.size[d]));
                index[d] = 0;
            }
        }
    }
    dict.tensors.push((
        name,
        Tensor {
            shape: r.size.clone(),
            data,
        },
    ));
    Ok(())
}

/// The state dict's entries: a tensor reference, or `None` for a value that is no tensor
/// this reader knows how to build.
fn collect(p: &Pickle) -> Result<Vec<(String, Option<TensorRef>)>, String> {
    let root = state_dict(p, p.root, 0)?;
    let mut out = Vec::new();
    flatten(p, root, "", 0, &mut out)?;
    if out.is_empty() {
        return Err("the state dict holds no tensors".to_owned());
    }
    Ok(out)
}

/// Whether `id` is a tensor (or parameter) rebuild.
fn is_tensor(p: &Pickle, id: Id) -> bool {
    matches!(p.get(id), Obj::Call { callable, .. }
        if p.global(*callable).is_some_and(|(m, _)| m.starts_with("torch")))
}

fn has_tensors(p: &Pickle, id: Id) -> bool {
    match p.get(id) {
        Obj::Dict(entries) => entries.iter().any(|&(_, v)| is_tensor(p, v)),
        _ => false,
    }
}

/// The dict holding the tensors: the root, or one under a wrapper key.
fn state_dict(p: &Pickle, id: Id, depth: usize) -> Result<Id, String> {
    let Obj::Dict(entries) = p.get(id) else {
        return Err(describe_non_dict(p, id));
    };
    if has_tensors(p, id) || depth >= MAX_DEPTH {
        return Ok(id);
    }
    for key in WRAPPERS {
        if let Some(inner) = p.dict_get(id, key) {
            return match p.get(inner) {
                Obj::Dict(_) => state_dict(p, inner, depth + 1),
                _ => Err(format!(
                    "its `{key}` entry is {}",
                    describe_non_dict(p, inner)
                )),
            };
        }
    }
    let keys: Vec<&str> = entries
        .iter()
        .filter_map(|&(k, _)| p.str(k))
        .take(8)
        .collect();
    Err(format!(
        "found no tensors, nor a {} entry; its keys: {}",
        WRAPPERS.join(" or "),
        keys.join(", ")
    ))
}

fn describe_non_dict(p: &Pickle, id: Id) -> String {
    match p.get(id) {
        Obj::Call { callable, .. } => match p.global(*callable) {
            Some((m, n)) if m.starts_with("torch.nn") || m.starts_with("torchvision") => {
                format!(
                    "a whole pickled model ({m}.{n}), not a state dict; save model.state_dict() instead"
                )
            }
            Some((m, n)) => format!("a {m}.{n} object, not a state dict"),
            None => "an object, not a state dict".to_owned(),
        },
        other => format!("{}, not a state dict", kind(other)),
    }
}

fn kind(obj: &Obj) -> &'static str {
    match obj {
        Obj::None => "None",
        Obj::Bool(_) => "a bool",
        Obj::Int(_) | Obj::BigInt(_) => "an int",
        Obj::Float(_) => "a float",
        Obj::Str(_) => "a string",
        Obj::Bytes(_) => "bytes",
        Obj::Tuple(_) => "a tuple",
        Obj::List(_) => "a list",
        Obj::Dict(_) => "a dict",
        Obj::Global { .. } => "a global",
        Obj::Call { .. } => "an object",
        Obj::Persistent(_) => "a persistent id",
    }
}

fn flatten(
    p: &Pickle,
    id: Id,
    prefix: &str,
    depth: usize,
    out: &mut Vec<(String, Option<TensorRef>)>,
) -> Result<(), String> {
    let Obj::Dict(entries) = p.get(id) else {
        return Ok(());
    };
    for &(k, v) in entries {
        let Some(key) = p.str(k) else { continue };
        let name = format!("{prefix}{key}");
        match p.get(v) {
            Obj::Dict(_) if depth < MAX_DEPTH => {
                flatten(p, v, &format!("{name}."), depth + 1, out)?;
            }
            Obj::Call { .. } if is_tensor(p, v) => {
                let tensor = tensor(p, v, 0).map_err(|e| format!("tensor `{name}`: {e}"))?;
                out.retain(|(n, _)| *n != name);
                out.push((name, tensor));
            }
            _ => {}
        }
    }
    Ok(())
}

/// The tensor a `torch._utils` rebuild call makes; `None` for one this reader does not know.
fn tensor(p: &Pickle, id: Id, depth: usize) -> Result<Option<TensorRef>, String> {
    let Obj::Call { callable, args } = p.get(id) else {
        return Ok(None);
    };
    let args = p.items(*args).ok_or("arguments are not a tuple")?;
    match p.global(*callable) {
        Some(("torch._utils", "_rebuild_tensor_v2" | "_rebuild_tensor")) => {
            let [storage, offset, size, stride, ..] = args else {
                return Err("too few arguments".to_owned());
            };
            let Obj::Persistent(pid) = p.get(*storage) else {
                return Err("storage is not a persistent id".to_owned());
            };
            let dims = |id: Id| -> Result<Vec<usize>, String> {
                p.items(id)
                    .ok_or("size or stride is not a tuple")?
                    .iter()
                    .map(|&d| p.int(d).and_then(|v| usize::try_from(v).ok()))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| "size or stride is not natural numbers".to_owned())
            };
            let (size, stride) = (dims(*size)?, dims(*stride)?);
            if size.len() != stride.len() {
                return Err("size and stride differ in length".to_owned());
            }
            let offset = p
                .int(*offset)
                .and_then(|v| usize::try_from(v).ok())
                .ok_or("bad storage offset")?;
            Ok(Some(TensorRef {
                storage: storage_ref(p, *pid)?,
                offset,
                size,
                stride,
            }))
        }
        Some(("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state"))
            if depth < MAX_DEPTH =>
        {
            match args.first() {
                Some(&data) => tensor(p, data, depth + 1),
                None => Err("a parameter without data".to_owned()),
            }
        }
        _ => Ok(None),
    }
}

/// `('storage', torch.XStorage, key, location, numel[, view_metadata])`.
fn storage_ref(p: &Pickle, pid: Id) -> Result<StorageRef, String> {
    let items = p.items(pid).ok_or("persistent id is not a tuple")?;
    let [kind, class, key, _location, _numel, rest @ ..] = items else {
        return Err("persistent id too short".to_owned());
    };
    if p.str(*kind) != Some("storage") {
        return Err("persistent id is not a storage".to_owned());
    }
    let class = p
        .global(*class)
        .map(|(_, n)| n)
        .ok_or("storage type is not a class")?;
    let dtype =
        Dtype::of_storage(class).ok_or_else(|| format!("unsupported storage type {class}"))?;
    let key = match p.get(*key) {
        Obj::Str(s) => s.clone(),
        Obj::Int(v) => v.to_string(),
        _ => return Err("storage key is not a string".to_owned()),
    };
    // Legacy views: (view key, offset, size) into the storage under `key`.
    let offset = match rest.first().map(|&v| p.get(v)) {
        Some(Obj::Tuple(view)) => match view.as_slice() {
            [_, offset, _] => p
                .int(*offset)
                .and_then(|v| usize::try_from(v).ok())
                .ok_or("bad view offset")?,
            _ => return Err("bad view".to_owned()),
        },
        _ => 0,
    };
    Ok(StorageRef { key, dtype, offset })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Files written by `tests/fixtures/backbones/torch_checkpoints.py` with PyTorch 2.
    fn fixture(name: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/backbones")
            .join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn get<'a>(dict: &'a StateDict, name: &str) -> &'a Tensor {
        dict.tensors
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t)
            .unwrap_or_else(|| panic!("no {name} in {:?}", dict.tensors))
    }

    fn check_small(dict: &StateDict) {
        // a = arange(6).reshape(2, 3).t(): non-contiguous, stride (1, 3).
        let a = get(dict, "a");
        assert_eq!(a.shape, [3, 2]);
        assert_eq!(a.data, [0., 3., 1., 4., 2., 5.]);
        // b = arange(4) in float16; c = arange(4) / 2 in bfloat16.
        assert_eq!(get(dict, "b").data, [0., 1., 2., 3.]);
        assert_eq!(get(dict, "c").data, [0., 0.5, 1., 1.5]);
        // d = arange(24, float64).reshape(2, 3, 4).permute(2, 0, 1).
        let d = get(dict, "d");
        assert_eq!(d.shape, [4, 2, 3]);
        let want: Vec<f32> = (0..4)
            .flat_map(|k| {
                (0..2).flat_map(move |i| (0..3).map(move |j| (i * 12 + j * 4 + k) as f32))
            })
            .collect();
        assert_eq!(d.data, want);
        // e = arange(10.)[3:7]: storage offset 3, storage shared with `whole`.
        assert_eq!(get(dict, "e").data, [3., 4., 5., 6.]);
        assert_eq!(get(dict, "whole").data.len(), 10);
        // A parameter, and a nested dict flattened.
        assert_eq!(get(dict, "p").data, [0., 1., 2.]);
        assert_eq!(get(dict, "inner.q").shape, [1, 1, 1, 1]);
        // An int64 tensor (num_batches_tracked) is skipped; `module.` is gone.
        assert_eq!(dict.skipped, ["n"]);
        assert!(dict.tensors.iter().all(|(n, _)| !n.starts_with("module.")));
    }

    #[test]
    fn reads_torch_zip_files_with_strides_offsets_and_dtypes() {
        check_small(&read(&fixture("torch_small_zip.pth")).expect("reads"));
    }

    #[test]
    fn reads_torch_legacy_files_with_strides_offsets_and_dtypes() {
        check_small(&read(&fixture("torch_small_legacy.pth")).expect("reads"));
    }

    #[test]
    fn unknown_bytes_and_wrapperless_dicts_are_errors() {
        let err = read_any(b"hello world, no checkpoint").expect_err("garbage");
        assert!(err.contains("not a PyTorch checkpoint"), "{err}");
        // pickle.dumps({'epoch': 3}, protocol=2), as a legacy file's first pickle.
        let err = read_any(&[0x80, 2, b'}', b'.']).expect_err("no magic");
        assert!(err.contains("magic"), "{err}");
    }

    #[test]
    fn damaged_files_fail_cleanly() {
        for name in ["torch_small_zip.pth", "torch_small_legacy.pth"] {
            let bytes = fixture(name);
            let step = (bytes.len() / 300).max(1);
            for n in (0..bytes.len()).step_by(step) {
                let _ = read(&bytes[..n]);
                let mut flipped = bytes.clone();
                flipped[n] ^= 0x5a;
                let _ = read(&flipped);
            }
        }
    }
}
