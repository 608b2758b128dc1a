//! The `.dlpk` model package: a zip holding an ArcGIS-style `.emd` JSON, the Burn weights and
//! `model.json` (network, classes, normalisation statistics), so `autodl predict --model X.dlpk`
//! needs nothing else.
//!
//! Unpacking refuses any entry whose path would leave the target folder (`../x`, absolute
//! paths), so a hostile package cannot write outside it.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

use autodl_api::{MetricsFile, Task};
use serde_json::{Value, json};

/// `model.json` and its type, defined with the other boundary files in `autodl-api`.
pub use autodl_api::{META, ModelMeta, WEIGHTS};

/// Why a package could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The zip is malformed.
    #[error("{path}: not a valid package: {reason}")]
    Zip {
        /// The package.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// An entry would be written outside the target folder.
    #[error("{path}: refusing entry `{entry}`: its path leaves the package folder")]
    Escape {
        /// The package.
        path: PathBuf,
        /// The offending entry name.
        entry: String,
    },
    /// An entry, or the whole package, inflates beyond what a model can need.
    #[error("{path}: refusing entry `{entry}`: {reason}")]
    TooLarge {
        /// The package.
        path: PathBuf,
        /// The offending entry name.
        entry: String,
        /// The size and the limit, in words.
        reason: String,
    },
    /// A boundary file (`model.json`) is missing a field, has an unknown one or is
    /// inconsistent.
    #[error(transparent)]
    Contract(#[from] autodl_api::ContractError),
    /// A required file is missing from the model folder or the package.
    #[error("{path}: missing `{name}`")]
    Missing {
        /// The folder or package.
        path: PathBuf,
        /// The missing file.
        name: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PackageError + '_ {
    move |source| PackageError::Io {
        path: path.to_owned(),
        source,
    }
}

/// ArcGIS names for a family: `(ModelType, ModelName)`.
fn arcgis_names(family: &str, task: Task) -> (&'static str, String) {
    let model_type = match task {
        Task::Detection => "ObjectDetection",
        Task::PixelClassification => "ImageClassification",
    };
    // The family declares ArcGIS's name for it where ArcGIS has one; any other keeps its own.
    let name = autodl_api::network(family)
        .and_then(|f| f.arcgis_name())
        .unwrap_or(family)
        .to_owned();
    (model_type, name)
}

/// Builds the `.emd` JSON from a model folder's `model.json` and the headline numbers of its
/// `metrics.json`, when it has one.
pub fn emd(meta: &ModelMeta, metrics: Option<&MetricsFile>) -> Value {
    let (model_type, model_name) = arcgis_names(&meta.family, meta.task);
    let classes: Vec<Value> = meta
        .classes
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let [r, g, b] = autodl_api::class_colour(i);
            json!({ "Value": c.value, "Name": c.name, "Color": [r, g, b] })
        })
        .collect();
    let metrics = match metrics {
        Some(MetricsFile::PixelClassification(m)) => json!(m.metrics),
        Some(MetricsFile::Detection(m)) => json!(m.metrics),
        None => Value::Null,
    };
    json!({
        "Framework": "autodl-burn",
        "ModelConfiguration": "autodl",
        "ModelType": model_type,
        "ModelName": model_name,
        "ModelFile": WEIGHTS,
        "ModelParameters": { "backbone": meta.backbone, "family": meta.family },
        "ImageHeight": meta.tile_size,
        "ImageWidth": meta.tile_size,
        "ExtractBands": meta
            .extract_bands
            .clone()
            .unwrap_or_else(|| (0..meta.bands as u32).collect()),
        "Classes": classes,
        "IgnoreValue": meta.ignore_index,
        "NormalizationStats": { "band_means": meta.mean, "band_std": meta.std },
        "Metrics": metrics,
    })
}

/// A model folder's `model.json`, checked, and its files as package entries named
/// `<prefix><file>` (sorted; the `STOP` file left out); a folder without weights is refused.
fn model_entries(
    model_dir: &Path,
    prefix: &str,
) -> Result<(ModelMeta, Vec<(String, PathBuf)>), PackageError> {
    let meta = ModelMeta::read(model_dir)?;
    if !model_dir.join(WEIGHTS).is_file() {
        return Err(PackageError::Missing {
            path: model_dir.to_owned(),
            name: WEIGHTS.into(),
        });
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(model_dir)
        .map_err(io(model_dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.file_name().is_some_and(|n| n != "STOP"))
        .collect();
    files.sort();
    let entries = files
        .into_iter()
        .map(|f| {
            let file = f
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            (format!("{prefix}{file}"), f)
        })
        .collect();
    Ok((meta, entries))
}

/// Writes the package `out`: `<name>.emd` from `emd`, then each `(entry, file)`. Written
/// under a temporary name and renamed: a crash or a failed rerun leaves the previous package
/// whole.
fn write_zip(
    out: &Path,
    name: &str,
    emd: &Value,
    entries: &[(String, PathBuf)],
) -> Result<(), PackageError> {
    let file = autodl_api::files::AtomicFile::create(out).map_err(io(out))?;
    let mut zip = zip::ZipWriter::new(file);
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    let zerr = |e: zip::result::ZipError| PackageError::Zip {
        path: out.to_owned(),
        reason: e.to_string(),
    };
    let emd_text = serde_json::to_string_pretty(emd).map_err(|e| PackageError::Zip {
        path: out.to_owned(),
        reason: format!("cannot serialise the .emd: {e}"),
    })?;
    zip.start_file(format!("{name}.emd"), opts).map_err(zerr)?;
    zip.write_all(emd_text.as_bytes()).map_err(io(out))?;
    for (entry, path) in entries {
        zip.start_file(entry.as_str(), opts).map_err(zerr)?;
        let bytes = std::fs::read(path).map_err(io(path))?;
        zip.write_all(&bytes).map_err(io(out))?;
    }
    zip.finish().map_err(zerr)?.commit().map_err(io(out))
}

/// Packs a model folder (`model.json`, `model.mpk`, and whatever reports sit beside them)
/// into `out`, adding `<name>.emd` built from `model.json` and `metrics`.
pub fn write(
    model_dir: &Path,
    out: &Path,
    name: &str,
    metrics: Option<&MetricsFile>,
) -> Result<(), PackageError> {
    let (meta, entries) = model_entries(model_dir, "")?;
    write_zip(out, name, &emd(&meta, metrics), &entries)
}

/// Packs an ensemble folder (`ensemble.json` and its members' model folders, see
/// [`autodl_api::EnsembleMeta`]) into `out`, adding `<name>.emd` built from its first member's
/// `model.json`, its members, and `metrics` (the ensemble's own validation numbers).
pub fn write_ensemble(
    dir: &Path,
    out: &Path,
    name: &str,
    metrics: Option<&MetricsFile>,
) -> Result<(), PackageError> {
    let ensemble = autodl_api::EnsembleMeta::read(dir)?;
    let mut entries: Vec<(String, PathBuf)> = vec![(
        autodl_api::ENSEMBLE.to_owned(),
        dir.join(autodl_api::ENSEMBLE),
    )];
    let mut first = None;
    for m in &ensemble.members {
        let (meta, files) = model_entries(&dir.join(&m.dir), &format!("{}/", m.dir))?;
        first.get_or_insert(meta);
        entries.extend(files);
    }
    let Some(first) = first else {
        return Err(PackageError::Missing {
            path: dir.to_owned(),
            name: "a member".into(),
        });
    };
    let mut emd = emd(&first, metrics);
    emd["ModelName"] = json!("AutodlEnsemble");
    emd["ModelFile"] = json!(autodl_api::ENSEMBLE);
    emd["ModelParameters"] = json!({
        "members": ensemble.members.iter().map(|m| json!({
            "family": m.family, "backbone": m.backbone, "weight": m.weight, "folder": m.dir,
        })).collect::<Vec<_>>(),
        "flip-tta": ensemble.hflip,
    });
    write_zip(out, name, &emd, &entries)
}

/// Whether a zip entry name stays inside the folder it is unpacked into.
pub fn is_safe_entry(name: &str) -> bool {
    let path = Path::new(name);
    !name.contains('\\')
        && path
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

/// The most an entry holding weights (`.mpk`) may inflate to: several times the largest
/// network autodl builds (U-Net on ResNet-50, about 130 MB in `f32`).
pub const MAX_WEIGHTS_BYTES: u64 = 1 << 30;
/// The most `model.json`, the `.emd` or any other metadata entry may inflate to.
pub const MAX_METADATA_BYTES: u64 = 4 << 20;
/// The most any other entry (reports, curves, previews) may inflate to.
pub const MAX_OTHER_BYTES: u64 = 64 << 20;
/// The most a whole package may inflate to.
pub const MAX_TOTAL_BYTES: u64 = 2 << 30;
/// The most entries a package may hold.
pub const MAX_ENTRIES: usize = 10_000;

/// The inflated size allowed for an entry, by its name.
fn entry_limit(name: &str) -> u64 {
    let ext = Path::new(name)
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "mpk" => MAX_WEIGHTS_BYTES,
        "json" | "emd" => MAX_METADATA_BYTES,
        _ => MAX_OTHER_BYTES,
    }
}

/// Unpacks `package` into `dir` (which must exist) and returns `dir`. Every entry is checked
/// before anything is written (its path, and its declared size against [`entry_limit`] and
/// [`MAX_TOTAL_BYTES`]), so a refused package writes nothing; entries are then streamed to
/// disk, counting what really inflates, and a package that lies about its sizes is refused
/// when it passes the limit, with what it wrote removed.
pub fn unpack(package: &Path, dir: &Path) -> Result<PathBuf, PackageError> {
    let file = File::open(package).map_err(io(package))?;
    let zerr = |e: zip::result::ZipError| PackageError::Zip {
        path: package.to_owned(),
        reason: e.to_string(),
    };
    let too_large = |entry: &str, reason: String| PackageError::TooLarge {
        path: package.to_owned(),
        entry: entry.to_owned(),
        reason,
    };
    let mut zip = zip::ZipArchive::new(file).map_err(zerr)?;
    if zip.len() > MAX_ENTRIES {
        return Err(too_large(
            "*",
            format!("{} entries, over the limit of {MAX_ENTRIES}", zip.len()),
        ));
    }
    let mut declared = 0u64;
    for i in 0..zip.len() {
        let entry = zip.by_index_raw(i).map_err(zerr)?;
        if !is_safe_entry(entry.name()) {
            return Err(PackageError::Escape {
                path: package.to_owned(),
                entry: entry.name().to_owned(),
            });
        }
        let limit = entry_limit(entry.name());
        if entry.size() > limit {
            return Err(too_large(
                entry.name(),
                format!(
                    "it declares {} bytes, over the limit of {limit}",
                    entry.size()
                ),
            ));
        }
        declared = declared.saturating_add(entry.size());
    }
    if declared > MAX_TOTAL_BYTES {
        return Err(too_large(
            "*",
            format!(
                "the entries declare {declared} bytes in all, over the limit of {MAX_TOTAL_BYTES}"
            ),
        ));
    }
    let mut written: Vec<PathBuf> = Vec::new();
    let result = (|| {
        let mut total = 0u64;
        for i in 0..zip.len() {
            let entry = zip.by_index(i).map_err(zerr)?;
            if entry.is_dir() {
                continue;
            }
            let name = entry.name().to_owned();
            let target = dir.join(&name);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(io(parent))?;
            }
            let limit = entry_limit(&name).min(MAX_TOTAL_BYTES - total);
            let mut out = File::create(&target).map_err(io(&target))?;
            written.push(target.clone());
            // One byte past the limit tells a lying size from an exact one.
            let n = std::io::copy(&mut entry.take(limit + 1), &mut out).map_err(|e| {
                // A corrupt stream (bad CRC, bad deflate data) fails the read; name the package.
                PackageError::Zip {
                    path: package.to_owned(),
                    reason: format!("entry `{name}`: {e}"),
                }
            })?;
            if n > limit {
                return Err(too_large(
                    &name,
                    format!("it inflates past {limit} bytes, more than it declares"),
                ));
            }
            total += n;
        }
        Ok(())
    })();
    if let Err(e) = result {
        for f in written {
            let _ = std::fs::remove_file(f);
        }
        return Err(e);
    }
    if !dir.join(META).is_file() && !dir.join(autodl_api::ENSEMBLE).is_file() {
        return Err(PackageError::Missing {
            path: package.to_owned(),
            name: META.into(),
        });
    }
    Ok(dir.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model_dir(dir: &Path) {
        std::fs::write(
            dir.join("model.json"),
            r#"{"family":"unet","backbone":"resnet18","task":"pixel-classification","bands":3,"tile-size":64,
               "classes":[{"value":1,"name":"forest"},{"value":2,"name":"water"}],"ignore-index":0,"mean":[1,2,3],"std":[1,1,1],"params":{}}"#,
        )
        .unwrap();
        std::fs::write(dir.join("model.mpk"), b"weights").unwrap();
    }

    #[test]
    fn round_trip_with_emd() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("m");
        std::fs::create_dir(&src).unwrap();
        model_dir(&src);
        let pkg = tmp.path().join("m.dlpk");
        let mut cm = autodl_metrics::ConfusionMatrix::new(2);
        cm.add(&[0, 1, 1, 1], &[0, 1, 1, 0], None).unwrap();
        let metrics = MetricsFile::PixelClassification(autodl_api::PixelMetricsFile {
            metrics: cm.metrics(),
            classes: Vec::new(),
            confusion_matrix: cm.clone(),
            epochs: Vec::new(),
        });
        write(&src, &pkg, "unet-resnet18", Some(&metrics)).unwrap();
        let out = tmp.path().join("x");
        std::fs::create_dir(&out).unwrap();
        unpack(&pkg, &out).unwrap();
        assert_eq!(std::fs::read(out.join("model.mpk")).unwrap(), b"weights");
        let emd: Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("unet-resnet18.emd")).unwrap())
                .unwrap();
        // No family is registered in this crate's tests: the family's own name.
        assert_eq!(emd["ModelName"], "unet");
        assert_eq!(emd["ModelType"], "ImageClassification");
        assert_eq!(emd["ModelParameters"]["backbone"], "resnet18");
        assert_eq!(emd["ImageHeight"], 64);
        assert_eq!(emd["ExtractBands"], json!([0, 1, 2]));
        assert_eq!(emd["Classes"][1]["Name"], "water");
        assert_eq!(emd["Classes"][1]["Value"], 2);
        assert_eq!(emd["Metrics"]["mean_iou"], cm.metrics().mean_iou);
        assert_eq!(emd["IgnoreValue"], 0);
    }

    #[test]
    fn an_ensemble_round_trips_with_its_members() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("e");
        for m in ["a", "b"] {
            std::fs::create_dir_all(src.join(m)).unwrap();
            model_dir(&src.join(m));
        }
        let meta = ModelMeta::read(&src.join("a")).unwrap();
        let member = |dir: &str| autodl_api::EnsembleMember {
            dir: dir.into(),
            id: format!("unet-{dir}"),
            family: "unet".into(),
            backbone: "resnet18".into(),
            weight: 1.0,
        };
        let ensemble = autodl_api::EnsembleMeta {
            task: meta.task,
            classes: meta.classes.clone(),
            ignore_index: meta.ignore_index,
            members: vec![member("a"), member("b")],
            hflip: true,
            fusion_iou: 0.55,
            score_threshold: 0.0,
        };
        ensemble.save(&src).unwrap();
        let pkg = tmp.path().join("e.dlpk");
        write_ensemble(&src, &pkg, "ensemble-top2", None).unwrap();
        let out = tmp.path().join("x");
        std::fs::create_dir(&out).unwrap();
        unpack(&pkg, &out).unwrap();
        assert_eq!(autodl_api::EnsembleMeta::read(&out).unwrap(), ensemble);
        for m in ["a", "b"] {
            assert_eq!(
                std::fs::read(out.join(m).join("model.mpk")).unwrap(),
                b"weights"
            );
        }
        let emd: Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("ensemble-top2.emd")).unwrap())
                .unwrap();
        assert_eq!(emd["ModelName"], "AutodlEnsemble");
        assert_eq!(emd["ModelParameters"]["members"][1]["folder"], "b");
        // A member without weights is refused, naming it.
        std::fs::remove_file(src.join("b").join("model.mpk")).unwrap();
        let err = write_ensemble(&src, &pkg, "e", None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("model.mpk"), "{err}");
    }

    #[test]
    fn a_misspelt_model_json_is_refused_naming_it() {
        let tmp = tempfile::tempdir().unwrap();
        model_dir(tmp.path());
        let meta = tmp.path().join(META);
        let text = std::fs::read_to_string(&meta).unwrap();
        std::fs::write(&meta, text.replace("tile-size", "tile-sise")).unwrap();
        let err = write(tmp.path(), &tmp.path().join("m.dlpk"), "m", None).unwrap_err();
        let shown = err.to_string();
        assert!(shown.contains(&meta.display().to_string()), "{shown}");
        assert!(shown.contains("tile-sise"), "{shown}");
    }

    #[test]
    fn an_escaping_entry_is_refused_and_nothing_is_written() {
        let tmp = tempfile::tempdir().unwrap();
        let pkg = tmp.path().join("evil.dlpk");
        let mut zip = zip::ZipWriter::new(File::create(&pkg).unwrap());
        let opts = zip::write::SimpleFileOptions::default();
        zip.start_file("model.json", opts).unwrap();
        zip.write_all(b"{}").unwrap();
        zip.start_file("../x", opts).unwrap();
        zip.write_all(b"gotcha").unwrap();
        zip.finish().unwrap();
        let out = tmp.path().join("inner");
        std::fs::create_dir(&out).unwrap();
        let err = unpack(&pkg, &out).unwrap_err().to_string();
        assert!(
            err.contains("evil.dlpk") && err.contains("`../x`") && err.contains("leaves"),
            "{err}"
        );
        assert!(!tmp.path().join("x").exists());
        assert!(
            !out.join("model.json").exists(),
            "nothing is written from a refused package"
        );
    }

    fn zip_with(pkg: &Path, name: &str, bytes: &[u8]) {
        let mut zip = zip::ZipWriter::new(File::create(pkg).unwrap());
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        zip.start_file("model.json", opts).unwrap();
        zip.write_all(b"{}").unwrap();
        zip.start_file(name, opts).unwrap();
        zip.write_all(bytes).unwrap();
        zip.finish().unwrap();
    }

    #[test]
    fn an_entry_declaring_too_much_is_refused_before_inflating() {
        let tmp = tempfile::tempdir().unwrap();
        let pkg = tmp.path().join("bomb.dlpk");
        // 5 MiB of zeros deflates to a few KB; metadata may not exceed 4 MiB.
        zip_with(&pkg, "x.emd", &vec![0u8; 5 << 20]);
        assert!(std::fs::metadata(&pkg).unwrap().len() < 100_000);
        let out = tmp.path().join("inner");
        std::fs::create_dir(&out).unwrap();
        let err = unpack(&pkg, &out).unwrap_err().to_string();
        assert!(
            err.contains("bomb.dlpk") && err.contains("`x.emd`") && err.contains("declares"),
            "{err}"
        );
        assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0);
    }

    #[test]
    fn an_entry_inflating_past_its_declared_size_is_refused_and_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let pkg = tmp.path().join("liar.dlpk");
        zip_with(&pkg, "x.emd", &vec![0u8; 5 << 20]);
        // Rewrite the declared sizes (local header and central directory) to 1 KB.
        let mut bytes = std::fs::read(&pkg).unwrap();
        let real = (5u32 << 20).to_le_bytes();
        let mut patched = 0;
        for i in 0..bytes.len() - 4 {
            if bytes[i..i + 4] == real {
                bytes[i..i + 4].copy_from_slice(&1024u32.to_le_bytes());
                patched += 1;
            }
        }
        assert!(patched >= 2, "{patched}");
        std::fs::write(&pkg, bytes).unwrap();
        let out = tmp.path().join("inner");
        std::fs::create_dir(&out).unwrap();
        let err = unpack(&pkg, &out).unwrap_err().to_string();
        assert!(
            err.contains("liar.dlpk") && err.contains("`x.emd`"),
            "{err}"
        );
        assert!(!out.join("x.emd").exists(), "the partial entry is removed");
    }

    #[test]
    fn entry_names() {
        assert!(is_safe_entry("model.mpk"));
        assert!(is_safe_entry("a/b.png"));
        assert!(!is_safe_entry("../x"));
        assert!(!is_safe_entry("a/../../x"));
        assert!(!is_safe_entry("/etc/passwd"));
        assert!(!is_safe_entry("..\\x"));
    }
}
