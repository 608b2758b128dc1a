//! Telling the layout of a dataset folder from the files in it.

use std::path::{Path, PathBuf};

use crate::files::{ext_lower, is_image, list_dir, read_text, stem_of};
use crate::{DataError, Format};

const LOOKED_FOR: &str = "labels/*.xml or annotations/*.xml (pascal-voc), \
labels/*.txt with 15 or 16 fields per line starting with a class name or value (kitti), \
a coco .json in the root, annotations/ or labels/ (coco), \
labels/*.txt with 5 numbers per line (yolo), \
labels/*.png or *.tif single-channel masks (classified-tiles), \
labels/<class>/*.png or *.tif instance masks (rcnn-masks)";

/// Names of files that sit among labels but hold class names, not labels.
pub(crate) const CLASS_FILE_STEMS: [&str; 2] = ["classes", "obj"];

/// The folder holding per-image label files: `labels/`, else `annotations/`.
pub(crate) fn labels_dir(root: &Path) -> Option<PathBuf> {
    ["labels", "annotations"]
        .into_iter()
        .map(|d| root.join(d))
        .find(|d| d.is_dir())
}

/// Whether a `.txt` in the labels folder is a label file rather than a class list.
pub(crate) fn is_label_txt(path: &Path) -> bool {
    ext_lower(path) == "txt"
        && !stem_of(path).is_some_and(|s| CLASS_FILE_STEMS.contains(&s.as_str()))
}

/// COCO annotation files: `.json` in the root (ArcGIS's `esri_*.json` statistics excepted), in
/// `annotations/` and in `labels/`.
pub(crate) fn coco_candidates(root: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut out = Vec::new();
    for dir in [
        root.to_path_buf(),
        root.join("annotations"),
        root.join("labels"),
    ] {
        if !dir.is_dir() {
            continue;
        }
        for path in list_dir(&dir)? {
            let esri = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("esri_"));
            if ext_lower(&path) == "json" && !esri {
                out.push(path);
            }
        }
    }
    Ok(out)
}

/// Detects the layout of the dataset in `root`.
///
/// An ArcGIS export says its format: the `MetaDataMode` of `esri_accumulated_stats.json` decides,
/// and a format autodl does not read is an error naming it. Otherwise the label folder decides:
/// `.xml` files mean PASCAL VOC, image files mean classified tiles, `.txt` files are YOLO or KITTI
/// by the shape of their first non-empty line, sub-folders of masks mean RCNN_Masks, and a
/// `.json` with no per-image labels means COCO. GIS side files (`.aux.xml`, `.tif.xml`, world
/// files, overviews) are not labels.
pub fn detect_format(root: &Path) -> Result<Format, DataError> {
    if !root.is_dir() {
        return Err(DataError::NotFound {
            path: root.to_path_buf(),
        });
    }
    if let Some(mode) = crate::arcgis::metadata_mode(root) {
        return crate::arcgis::format_of_mode(&mode).map_err(|()| DataError::UnsupportedExport {
            root: root.to_path_buf(),
            mode,
        });
    }
    for dir in ["labels", "annotations"].map(|d| root.join(d)) {
        if !dir.is_dir() {
            continue;
        }
        let files = list_dir(&dir)?;
        if files.iter().any(|p| ext_lower(p) == "xml") {
            return Ok(Format::PascalVoc);
        }
        if files.iter().any(|p| is_image(p)) {
            return Ok(Format::ClassifiedTiles);
        }
        let txts: Vec<&PathBuf> = files.iter().filter(|p| is_label_txt(p)).collect();
        if !txts.is_empty() {
            return sniff_txt(root, &txts);
        }
        if !crate::rcnn::class_dirs(&dir)?.is_empty() {
            return Ok(Format::RcnnMasks);
        }
    }
    if !coco_candidates(root)?.is_empty() {
        return Ok(Format::Coco);
    }
    Err(DataError::NoFormat {
        root: root.to_path_buf(),
        looked_for: LOOKED_FOR.to_owned(),
    })
}

/// YOLO and KITTI both keep one `.txt` per image; the first object line tells them apart.
fn sniff_txt(root: &Path, txts: &[&PathBuf]) -> Result<Format, DataError> {
    for path in txts {
        let text = read_text(path)?;
        let Some((n, line)) = text
            .lines()
            .enumerate()
            .find(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        else {
            continue;
        };
        let fields: Vec<&str> = line.split_whitespace().collect();
        let numeric = |f: &&str| f.parse::<f64>().is_ok();
        if fields.len() == 5 && fields.iter().all(numeric) {
            return Ok(Format::Yolo);
        }
        // KITTI's type is a name, or a class value in ArcGIS's exports.
        let kitti_type = !numeric(&fields[0]) || fields[0].parse::<u32>().is_ok();
        if (15..=16).contains(&fields.len()) && kitti_type {
            return Ok(Format::Kitti);
        }
        return Err(DataError::AmbiguousFormat {
            root: root.to_path_buf(),
            reason: format!(
                "{} line {} has {} fields; yolo lines have 5 numbers and kitti lines 15 or 16 \
                 fields starting with a class name or value",
                path.display(),
                n + 1,
                fields.len()
            ),
        });
    }
    // Every label file is empty (no objects anywhere): only a YOLO class list can decide.
    if root.join("obj.names").is_file() || root.join("data.yaml").is_file() {
        return Ok(Format::Yolo);
    }
    Err(DataError::AmbiguousFormat {
        root: root.to_path_buf(),
        reason: "every labels/*.txt is empty, so yolo and kitti look alike; set the format"
            .to_owned(),
    })
}
