//! RCNN_Masks, ArcGIS's instance-segmentation export: `images/<chip>.*` with one folder per class
//! under `labels/`, each holding `<chip>.tif|png` for the chips that class appears in. A mask is
//! single-channel: 0 is background and every other value is one instance of the folder's class.
//!
//! This is the layout `arcgis.learn.prepare_data` reads for `RCNN_Masks`: it pairs a chip with
//! `labels/<folder>/<chip stem>.<ext>` in every class folder, maps the folder to its class through
//! the `.emd`, and splits each mask into instances by its distinct non-zero values. ArcGIS names
//! the folders by class; we accept the class value (`labels/1/`) or the class name
//! (`labels/tree/`), either resolved through the class list.
//!
//! For the detectors every instance is a box (its pixels' extent, `xmax`/`ymax` inclusive, a
//! one-pixel-wide extent widened to two as arcgis.learn does); [`instance_masks`] reads the
//! masks themselves again on demand, so a dataset holds no mask in memory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::files::{Stems, by_stem, is_image, list_dir};
use crate::image_io::{Mask, load_mask};
use crate::open::{ClassKey, RawBox};
use crate::{BadSample, DataError, Dataset, Sample};

/// One class folder of `labels/` and its masks by stem.
pub(crate) struct ClassFolder {
    pub key: ClassKey,
    pub masks: Stems,
}

/// The class a folder names: a class name, or a class value that the `.emd` resolves.
pub(crate) fn folder_key(name: &str) -> ClassKey {
    ClassKey::Name(name.to_owned())
}

/// The sub-folders of `labels` that hold at least one mask image, sorted by name.
pub(crate) fn class_dirs(labels: &Path) -> Result<Vec<PathBuf>, DataError> {
    let entries = std::fs::read_dir(labels).map_err(|e| DataError::io(labels, e))?;
    let mut dirs = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| DataError::io(labels, e))?.path();
        if path.is_dir() && list_dir(&path)?.iter().any(|p| is_image(p)) {
            dirs.push(path);
        }
    }
    dirs.sort();
    Ok(dirs)
}

/// Every class folder with its masks; duplicate stems within a folder are bad samples.
pub(crate) fn index(
    labels: &Path,
    bad: &mut Vec<BadSample>,
) -> Result<Vec<ClassFolder>, DataError> {
    let mut out = Vec::new();
    for dir in class_dirs(labels)? {
        let Some(name) = dir.file_name().and_then(|n| n.to_str()) else {
            bad.push(BadSample::new(&dir, "folder name is not valid utf-8"));
            continue;
        };
        out.push(ClassFolder {
            key: folder_key(name),
            masks: by_stem(&dir, |e| MASK_EXTS.contains(&e), "mask", bad)?,
        });
    }
    Ok(out)
}

/// The masks of one chip found by looking up `<folder>/<stem>.<ext>` in every class folder, in
/// the order [`masks_of`] gives them, without listing the folders' files.
fn chip_masks(labels: &Path, stem: &str) -> Result<Vec<(ClassKey, PathBuf)>, DataError> {
    let entries = std::fs::read_dir(labels).map_err(|e| DataError::io(labels, e))?;
    let mut dirs = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| DataError::io(labels, e))?.path();
        if path.is_dir() {
            dirs.push(path);
        }
    }
    dirs.sort();
    let mut out = Vec::new();
    for dir in dirs {
        // Upper case only when lower case is absent: on a case-insensitive file system both
        // name the same file.
        let found: Vec<PathBuf> = MASK_EXTS
            .iter()
            .filter_map(|ext| {
                [ext.to_string(), ext.to_ascii_uppercase()]
                    .into_iter()
                    .map(|e| dir.join(format!("{stem}.{e}")))
                    .find(|p| p.is_file())
            })
            .collect();
        let Some(name) = dir.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        match found.as_slice() {
            [] => {}
            [one] => out.push((folder_key(name), one.clone())),
            _ => {
                return Err(DataError::Parse {
                    path: dir.clone(),
                    reason: format!("several masks have the stem '{stem}'"),
                });
            }
        }
    }
    Ok(out)
}

/// Mask file extensions, lowercase.
const MASK_EXTS: [&str; 3] = ["tif", "tiff", "png"];

/// Whether some class folder holds several masks with this stem (each already a bad sample): the
/// chip's objects cannot be told, so the chip is left out.
pub(crate) fn ambiguous(folders: &[ClassFolder], stem: &str) -> bool {
    folders.iter().any(|f| f.masks.duplicates.contains(stem))
}

/// The masks of one chip, in folder order.
pub(crate) fn masks_of(folders: &[ClassFolder], stem: &str) -> Vec<(ClassKey, PathBuf)> {
    folders
        .iter()
        .filter_map(|f| f.masks.files.get(stem).map(|p| (f.key.clone(), p.clone())))
        .collect()
}

/// One instance of a mask: its value and the inclusive extent of its pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Extent {
    pub value: u32,
    pub xmin: u32,
    pub ymin: u32,
    pub xmax: u32,
    pub ymax: u32,
}

/// The instances of a mask, by value.
pub(crate) fn extents(mask: &Mask) -> Vec<Extent> {
    let mut by_value: BTreeMap<u32, Extent> = BTreeMap::new();
    let w = mask.width as usize;
    if w == 0 {
        return Vec::new();
    }
    for (y, row) in mask.data.chunks_exact(w).enumerate() {
        let y = u32::try_from(y).unwrap_or(u32::MAX);
        for (x, &value) in row.iter().enumerate() {
            if value == 0 {
                continue;
            }
            let x = u32::try_from(x).unwrap_or(u32::MAX);
            by_value
                .entry(value)
                .and_modify(|e| {
                    e.xmin = e.xmin.min(x);
                    e.xmax = e.xmax.max(x);
                    e.ymin = e.ymin.min(y);
                    e.ymax = e.ymax.max(y);
                })
                .or_insert(Extent {
                    value,
                    xmin: x,
                    ymin: y,
                    xmax: x,
                    ymax: y,
                });
        }
    }
    by_value.into_values().collect()
}

/// The boxes of one chip's masks, checked against the image size; problems are bad samples
/// naming the mask.
pub(crate) fn parse(
    masks: &[(ClassKey, PathBuf)],
    width: u32,
    height: u32,
) -> Result<Vec<RawBox>, Vec<BadSample>> {
    let mut boxes = Vec::new();
    let mut bad = Vec::new();
    for (key, path) in masks {
        let mask = match load_mask(path) {
            Ok(m) => m,
            Err(e) => {
                bad.push(BadSample::new(path, crate::open::error_reason(&e, "mask")));
                continue;
            }
        };
        if (mask.width, mask.height) != (width, height) {
            bad.push(BadSample::new(
                path,
                format!(
                    "mask is {}x{} but its image is {width}x{height}",
                    mask.width, mask.height
                ),
            ));
            continue;
        }
        for e in extents(&mask) {
            let [xmin, ymin, xmax, ymax] = box_of(&e);
            boxes.push(RawBox {
                class: key.clone(),
                xmin,
                ymin,
                xmax,
                ymax,
                difficult: false,
                iscrowd: false,
                place: format!("instance {}", e.value),
                source: Some(path.clone()),
            });
        }
    }
    if bad.is_empty() { Ok(boxes) } else { Err(bad) }
}

/// The box of an extent, in the crate's inclusive convention. A one-pixel-wide (or -high) extent
/// is widened by one pixel, as arcgis.learn does, so that it has an area.
#[allow(clippy::cast_precision_loss)]
fn box_of(e: &Extent) -> [f32; 4] {
    let widen = |lo: u32, hi: u32| if hi == lo { hi + 1 } else { hi };
    [
        e.xmin as f32,
        e.ymin as f32,
        widen(e.xmin, e.xmax) as f32,
        widen(e.ymin, e.ymax) as f32,
    ]
}

/// One object of an RCNN_Masks chip: its class, its box and its pixels within the box.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct InstanceMask {
    /// Index into [`Dataset::classes`].
    pub class: usize,
    /// The instance's value in its mask.
    pub value: u32,
    /// The mask file it comes from.
    pub source: PathBuf,
    /// The box, as in [`Sample::boxes`]: `[xmin, ymin, xmax, ymax]`, inclusive.
    pub bbox: [f32; 4],
    /// Left column of the crop (the first pixel of the instance's extent).
    pub x: u32,
    /// Top row of the crop.
    pub y: u32,
    /// Width of the crop: the instance's extent.
    pub width: u32,
    /// Height of the crop.
    pub height: u32,
    /// `height * width` flags, row-major: whether each pixel of the crop is the instance's.
    pub mask: Vec<bool>,
}

/// The instance masks of one sample of an RCNN_Masks dataset, in the order of its
/// [`Sample::boxes`] (instance `i` is box `i`). Reads the sample's masks again; nothing is kept.
pub fn instance_masks(ds: &Dataset, sample: &Sample) -> Result<Vec<InstanceMask>, DataError> {
    let mut out = Vec::new();
    for (key, path) in chip_masks(&ds.root.join("labels"), &sample.stem)? {
        let class =
            crate::open::resolve_class(&ds.classes, &key).ok_or_else(|| DataError::Parse {
                path: path.clone(),
                reason: format!(
                    "the class of its folder ({}) is not among the dataset's classes",
                    key_text(&key)
                ),
            })?;
        let mask = load_mask(&path)?;
        let w = mask.width as usize;
        for e in extents(&mask) {
            let (cw, ch) = (e.xmax - e.xmin + 1, e.ymax - e.ymin + 1);
            let mut flags = Vec::with_capacity(cw as usize * ch as usize);
            for y in e.ymin..=e.ymax {
                let row = &mask.data[y as usize * w..][..w];
                flags.extend(
                    row[e.xmin as usize..=e.xmax as usize]
                        .iter()
                        .map(|&v| v == e.value),
                );
            }
            out.push(InstanceMask {
                class,
                value: e.value,
                source: path.clone(),
                bbox: box_of(&e),
                x: e.xmin,
                y: e.ymin,
                width: cw,
                height: ch,
                mask: flags,
            });
        }
    }
    Ok(out)
}

fn key_text(key: &ClassKey) -> String {
    match key {
        ClassKey::Name(n) => n.clone(),
        ClassKey::Id(id) => id.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extents_per_value() {
        #[rustfmt::skip]
        let data = vec![
            0, 1, 1, 0,
            0, 1, 0, 2,
            3, 0, 0, 2,
        ];
        let mask = Mask {
            width: 4,
            height: 3,
            data,
        };
        let e = extents(&mask);
        assert_eq!(e.len(), 3);
        assert_eq!((e[0].xmin, e[0].ymin, e[0].xmax, e[0].ymax), (1, 0, 2, 1));
        assert_eq!((e[1].xmin, e[1].ymin, e[1].xmax, e[1].ymax), (3, 1, 3, 2));
        // A single pixel is widened to an area.
        assert_eq!(box_of(&e[2]), [0.0, 2.0, 1.0, 3.0]);
    }
}
