//! Listing the files of a dataset folder and pairing them by stem.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use crate::{BadSample, DataError};

/// Image file extensions we read, lowercase.
pub(crate) const IMAGE_EXTS: [&str; 5] = ["png", "jpg", "jpeg", "tif", "tiff"];

/// The lowercase extension of a path, or "".
pub(crate) fn ext_lower(path: &Path) -> String {
    path.extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default()
}

pub(crate) fn is_image(path: &Path) -> bool {
    IMAGE_EXTS.contains(&ext_lower(path).as_str())
}

pub(crate) fn stem_of(path: &Path) -> Option<String> {
    path.file_stem().and_then(|s| s.to_str()).map(str::to_owned)
}

/// Extensions of the files GIS tools leave beside a raster: world files (`.tfw`, `.pgw`, `.jgw`,
/// `.wld`, ...) and overviews (`.ovr`).
const SIDECAR_EXTS: [&str; 9] = [
    "tfw", "tifw", "tiffw", "pgw", "pngw", "jgw", "jpgw", "wld", "ovr",
];

/// Whether a file name is a GIS side file of a raster rather than an image or label: a world
/// file, overviews, `<name>.aux.xml`, or ArcGIS's metadata `<name>.tif.xml` (an image name
/// followed by `.xml`, which must not be taken for a PASCAL VOC label).
pub(crate) fn is_sidecar(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    let path = Path::new(&lower);
    let ext = ext_lower(path);
    if SIDECAR_EXTS.contains(&ext.as_str()) || lower.ends_with(".aux.xml") {
        return true;
    }
    ext == "xml"
        && path
            .file_stem()
            .is_some_and(|stem| is_image(Path::new(stem)))
}

/// The regular files of a folder, sorted by name (so everything downstream is deterministic).
pub(crate) fn list_dir(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let entries = fs::read_dir(dir).map_err(|e| DataError::io(dir, e))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| DataError::io(dir, e))?;
        let path = entry.path();
        let sidecar = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(is_sidecar);
        // Follow symlinks: datasets are often assembled from links into a shared store.
        if path.is_file() && !sidecar {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// The files of a folder keyed by stem.
pub(crate) struct Stems {
    /// Stems with exactly one file.
    pub files: BTreeMap<String, PathBuf>,
    /// Stems with several files, reported as bad samples and left out of `files`.
    pub duplicates: BTreeSet<String>,
}

impl Stems {
    /// Whether the stem exists at all, even if ambiguous; its partner file is then not an orphan.
    pub fn seen(&self, stem: &str) -> bool {
        self.files.contains_key(stem) || self.duplicates.contains(stem)
    }
}

/// Files of `dir` whose extension (lowercase) satisfies `keep`, keyed by stem. Two files with the
/// same stem are a bad sample each time, because we could not tell which one the label means;
/// neither is kept.
pub(crate) fn by_stem(
    dir: &Path,
    keep: impl Fn(&str) -> bool,
    what: &str,
    bad: &mut Vec<BadSample>,
) -> Result<Stems, DataError> {
    let mut groups: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for path in list_dir(dir)? {
        if !keep(&ext_lower(&path)) {
            continue;
        }
        let Some(stem) = stem_of(&path) else {
            bad.push(BadSample::new(&path, "file name is not valid utf-8"));
            continue;
        };
        groups.entry(stem).or_default().push(path);
    }
    let mut out = Stems {
        files: BTreeMap::new(),
        duplicates: BTreeSet::new(),
    };
    for (stem, paths) in groups {
        if let [only] = paths.as_slice() {
            out.files.insert(stem, only.clone());
        } else {
            let names: Vec<String> = paths
                .iter()
                .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .collect();
            for p in &paths {
                bad.push(BadSample::new(
                    p,
                    format!(
                        "duplicate stem '{stem}': {what} files {} share it",
                        names.join(", ")
                    ),
                ));
            }
            out.duplicates.insert(stem);
        }
    }
    Ok(out)
}

/// The image folder of a dataset: `opts.images_dir` or `images`.
pub(crate) fn images_dir(root: &Path, images_dir: Option<&str>) -> Result<PathBuf, DataError> {
    let dir = root.join(images_dir.unwrap_or("images"));
    if !dir.is_dir() {
        return Err(DataError::MissingDir {
            path: dir,
            what: "image",
        });
    }
    Ok(dir)
}

/// Reads a text file, naming it in the error.
pub(crate) fn read_text(path: &Path) -> Result<String, DataError> {
    fs::read_to_string(path).map_err(|e| DataError::io(path, e))
}
