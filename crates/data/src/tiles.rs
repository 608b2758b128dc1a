//! Classified tiles (pixel classification): `images/<stem>.*` with `labels/<stem>.png|tif`, a
//! single-channel mask of class values, as ArcGIS's Classified_Tiles export writes it.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::classes::{is_nodata_name, tile_classes};
use crate::files::{Stems, by_stem};
use crate::image_io::{load_mask, probe_image};
use crate::open::{ReadResult, error_reason, file_name};
use crate::{BadSample, ClassInfo, DataError, ReadOptions, Sample};

/// Pixel counts per mask value.
pub(crate) type Histogram = BTreeMap<u32, u64>;

/// Counts the pixels of each value in a mask.
pub(crate) fn histogram(data: &[u32]) -> Histogram {
    let mut h = Histogram::new();
    for &v in data {
        *h.entry(v).or_insert(0) += 1;
    }
    h
}

struct Tile {
    sample: Sample,
    hist: Histogram,
}

pub(crate) fn read(
    root: &Path,
    images: &Stems,
    opts: &ReadOptions,
    bad: &mut Vec<BadSample>,
) -> Result<ReadResult, DataError> {
    let dir = root.join("labels");
    if !dir.is_dir() {
        return Err(DataError::MissingDir {
            path: dir,
            what: "label",
        });
    }
    let mut known_stems: HashSet<String> = images
        .files
        .keys()
        .chain(&images.duplicates)
        .cloned()
        .collect();
    let mut pairs = Vec::new();
    if let Some((map_path, entries)) = crate::arcgis::read_map(root, bad)? {
        // An ArcGIS export: map.txt pairs images with masks.
        let listed = crate::arcgis::map_images(&map_path, &entries, Some(&MASK_EXTS), bad);
        crate::arcgis::unlisted_images(images, &entries, &map_path, bad);
        for (stem, e) in listed {
            known_stems.insert(stem.clone());
            pairs.push((stem, e.image, e.label));
        }
        return finish(root, pairs, known_stems, opts, bad);
    }
    let masks = by_stem(&dir, |e| MASK_EXTS.contains(&e), "mask", bad)?;
    known_stems.extend(masks.duplicates.iter().cloned());
    for (stem, image) in &images.files {
        match masks.files.get(stem) {
            Some(mask) => pairs.push((stem.clone(), image.clone(), mask.clone())),
            // Reported as a duplicate already.
            None if masks.duplicates.contains(stem) => {}
            None => bad.push(BadSample::new(
                image,
                format!(
                    "image has no mask (expected {} with extension png or tif)",
                    dir.join(stem).display()
                ),
            )),
        }
    }
    for (stem, mask) in &masks.files {
        known_stems.insert(stem.clone());
        if !images.seen(stem) {
            bad.push(BadSample::new(mask, "mask has no image with the same stem"));
        }
    }

    finish(root, pairs, known_stems, opts, bad)
}

/// Mask file extensions.
const MASK_EXTS: [&str; 3] = ["png", "tif", "tiff"];

/// Reads the paired tiles and resolves their classes.
fn finish(
    root: &Path,
    pairs: Vec<(String, PathBuf, PathBuf)>,
    known_stems: HashSet<String>,
    opts: &ReadOptions,
    bad: &mut Vec<BadSample>,
) -> Result<ReadResult, DataError> {
    let results: Vec<Result<Tile, BadSample>> = pairs
        .par_iter()
        .map(|(stem, image, mask)| read_tile(stem, image, mask))
        .collect();
    let mut tiles = Vec::with_capacity(results.len());
    for r in results {
        match r {
            Ok(t) => tiles.push(t),
            Err(b) => bad.push(b),
        }
    }

    let list = tile_classes(root)?;
    let ignore_index = opts.ignore_index.or_else(|| {
        list.as_ref()
            .and_then(|l| l.classes.iter().find(|c| is_nodata_name(&c.name)))
            .map(|c| c.value)
    });
    let (classes, ignore_name, source) = match &list {
        Some(l) => {
            let ignore_name = l
                .classes
                .iter()
                .find(|c| Some(c.value) == ignore_index)
                .map(|c| c.name.clone());
            let classes: Vec<ClassInfo> = l
                .classes
                .iter()
                .filter(|c| Some(c.value) != ignore_index)
                .cloned()
                .collect();
            (classes, ignore_name, Some(l.source_name()))
        }
        None => {
            // No class list: the values present are the classes.
            let seen: BTreeSet<u32> = tiles.iter().flat_map(|t| t.hist.keys().copied()).collect();
            let classes = seen
                .into_iter()
                .filter(|v| Some(*v) != ignore_index)
                .map(|value| ClassInfo {
                    value,
                    name: format!("class {value}"),
                })
                .collect();
            (classes, None, None)
        }
    };

    let mut samples = Vec::with_capacity(tiles.len());
    for t in tiles {
        if let Some(source) = &source {
            let stray: Vec<String> = t
                .hist
                .iter()
                .filter(|(v, _)| {
                    Some(**v) != ignore_index && !classes.iter().any(|c| c.value == **v)
                })
                .map(|(v, n)| format!("{v} ({n} px)"))
                .collect();
            if !stray.is_empty() {
                let mask = t.sample.label.clone().unwrap_or_default();
                bad.push(BadSample::new(
                    mask,
                    format!(
                        "mask values not in the class list ({source}): {}",
                        stray.join(", ")
                    ),
                ));
                continue;
            }
        }
        samples.push(t.sample);
    }
    Ok(ReadResult {
        classes,
        ignore_index,
        ignore_name,
        samples,
        known_stems,
    })
}

fn read_tile(stem: &str, image: &Path, mask_path: &Path) -> Result<Tile, BadSample> {
    let info = probe_image(image).map_err(|e| BadSample::new(image, error_reason(&e, "image")))?;
    let mask =
        load_mask(mask_path).map_err(|e| BadSample::new(mask_path, error_reason(&e, "mask")))?;
    if (mask.width, mask.height) != (info.width, info.height) {
        return Err(BadSample::new(
            mask_path,
            format!(
                "mask is {}x{} but image {} is {}x{}",
                mask.width,
                mask.height,
                file_name(image),
                info.width,
                info.height
            ),
        ));
    }
    Ok(Tile {
        sample: Sample {
            stem: stem.to_owned(),
            image: image.to_path_buf(),
            label: Some(mask_path.to_path_buf()),
            width: info.width,
            height: info.height,
            bands: info.bands,
            boxes: Vec::new(),
        },
        hist: histogram(&mask.data),
    })
}
