//! Reading a dataset folder: pairing, parallel validation, class resolution and splitting.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::classes::{ClassList, detection_classes};
use crate::detect::{is_label_txt, labels_dir};
use crate::files::{Stems, by_stem, images_dir};
use crate::image_io::{ImageInfo, probe_image};
use crate::{
    BadSample, BoxAnn, ClassInfo, DataError, Dataset, Format, OnBadSample, ReadOptions, Sample,
    Split, Task, arcgis, coco, kitti, rcnn, split, tiles, voc, yolo,
};

/// How a label names its class before the class list is known.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum ClassKey {
    /// PASCAL VOC and KITTI: by name.
    Name(String),
    /// YOLO and COCO: by id ([`ClassInfo::value`]).
    Id(u32),
}

/// A box as a label file gives it, in pixels, before its class is resolved.
#[derive(Clone, Debug)]
pub(crate) struct RawBox {
    pub class: ClassKey,
    pub xmin: f32,
    pub ymin: f32,
    pub xmax: f32,
    pub ymax: f32,
    pub difficult: bool,
    pub iscrowd: bool,
    /// "line 3" or "object 2", for messages.
    pub place: String,
    /// The file the box comes from when it is not the sample's label file (an RCNN_Masks mask).
    pub source: Option<PathBuf>,
}

/// The boxes of one label file, and the image size it declares, if any.
#[derive(Clone, Debug, Default)]
pub(crate) struct ParsedLabel {
    pub boxes: Vec<RawBox>,
    pub size: Option<(u32, u32)>,
}

/// What a sample's label is, per format.
enum LabelRef<'a> {
    File(PathBuf),
    Coco(&'a coco::CocoEntry),
    /// RCNN_Masks: the chip's mask in each class folder that has one.
    Masks(Vec<(ClassKey, PathBuf)>),
}

/// Reads, validates and splits the dataset in `root`.
///
/// Every image is decoded in full (in parallel) and every label checked. Bad samples are left out
/// and listed in [`Dataset::skipped`], or, with [`OnBadSample::Fail`], returned together in
/// [`DataError::BadSamples`]. An empty train or val split is an error either way.
pub fn open(root: &Path, opts: &ReadOptions) -> Result<Dataset, DataError> {
    split::check_options(opts)?;
    if !root.is_dir() {
        return Err(DataError::NotFound {
            path: root.to_path_buf(),
        });
    }
    let format = match opts.format {
        Some(f) => f,
        None => crate::detect_format(root)?,
    };
    let mut bad = Vec::new();
    let image_dir = images_dir(root, opts.images_dir.as_deref())?;
    let images = by_stem(
        &image_dir,
        |e| crate::files::IMAGE_EXTS.contains(&e),
        "image",
        &mut bad,
    )?;
    let read = match format.task() {
        Task::Detection => read_detection(root, format, &images, &mut bad)?,
        Task::PixelClassification => tiles::read(root, &images, opts, &mut bad)?,
    };
    let counts = arcgis::ReadCounts {
        images: images.files.len() + images.duplicates.len(),
        boxes: (format.task() == Task::Detection && bad.is_empty())
            .then(|| read.samples.iter().map(|s| s.boxes.len()).sum()),
    };
    let arcgis = arcgis::read_export(root, &counts)?;
    let mut split = split::assign(root, read.samples, &read.known_stems, opts, &mut bad)?;
    if let Some(bands) = &opts.bands {
        select_bands(bands, [&mut split.train, &mut split.val, &mut split.test])?;
    }
    // Sort for a stable report; validation ran in parallel but collected in order anyway.
    bad.sort_by(|a, b| a.path.cmp(&b.path));
    if opts.on_bad_sample == OnBadSample::Fail && !bad.is_empty() {
        return Err(DataError::BadSamples {
            root: root.to_path_buf(),
            samples: bad,
        });
    }
    for (which, samples) in [(Split::Train, &split.train), (Split::Val, &split.val)] {
        if samples.is_empty() {
            return Err(DataError::EmptySplit {
                root: root.to_path_buf(),
                split: which,
                detail: format!("{}, {} bad sample(s) skipped", split.source, bad.len()),
            });
        }
    }
    Ok(Dataset {
        root: root.to_path_buf(),
        format,
        task: format.task(),
        classes: read.classes,
        ignore_index: read.ignore_index,
        ignore_name: read.ignore_name,
        train: split.train,
        val: split.val,
        test: split.test,
        skipped: bad,
        split_source: split.source,
        bands: opts.bands.clone(),
        arcgis,
    })
}

/// Checks that every image has the bands asked for and counts only those as its bands.
fn select_bands<'a>(
    bands: &[u32],
    splits: impl IntoIterator<Item = &'a mut Vec<crate::Sample>>,
) -> Result<(), DataError> {
    if bands.is_empty() {
        return Err(DataError::InvalidOption {
            option: "bands",
            reason: "names no band".into(),
        });
    }
    for samples in splits {
        for s in samples.iter_mut() {
            if let Some(&b) = bands.iter().find(|&&b| b >= s.bands) {
                return Err(DataError::Unsupported {
                    path: s.image.clone(),
                    reason: format!(
                        "the image has {} bands; band {} was asked for ({})",
                        s.bands,
                        b + 1,
                        crate::band_list(bands)
                    ),
                });
            }
            s.bands = bands.len() as u32;
        }
    }
    Ok(())
}

/// The valid samples of a dataset before splitting.
pub(crate) struct ReadResult {
    pub classes: Vec<ClassInfo>,
    pub ignore_index: Option<u32>,
    pub ignore_name: Option<String>,
    /// Valid samples, sorted by stem.
    pub samples: Vec<Sample>,
    /// Every stem seen among images and labels, valid or not, so that a split list naming a
    /// skipped sample is not reported a second time as naming nothing.
    pub known_stems: HashSet<String>,
}

/// A sample whose image and label both parsed, before its classes are resolved.
struct Parsed {
    stem: String,
    image: PathBuf,
    label: PathBuf,
    info: ImageInfo,
    boxes: Vec<RawBox>,
}

fn read_detection(
    root: &Path,
    format: Format,
    images: &Stems,
    bad: &mut Vec<BadSample>,
) -> Result<ReadResult, DataError> {
    let mut known_stems: HashSet<String> = images
        .files
        .keys()
        .chain(&images.duplicates)
        .cloned()
        .collect();

    // Pair every image with its label; what is left over on either side is a bad sample.
    let mut pairs: Vec<(String, PathBuf, LabelRef<'_>)> = Vec::new();
    let coco_index;
    let class_list: Option<ClassList>;
    match format {
        Format::Coco => {
            coco_index = coco::read_index(root, bad)?;
            class_list = Some(coco_index.classes.clone());
            let json = coco_index.path.display().to_string();
            for (stem, image) in &images.files {
                match coco_index.entries.get(stem) {
                    Some(entry) => pairs.push((stem.clone(), image.clone(), LabelRef::Coco(entry))),
                    None => bad.push(BadSample::new(
                        image,
                        format!("image is not listed in {json}"),
                    )),
                }
            }
            for (stem, entry) in &coco_index.entries {
                known_stems.insert(stem.clone());
                if !images.seen(stem) {
                    bad.push(BadSample::new(
                        &coco_index.path,
                        format!(
                            "image '{}' (id {}) is listed but not found in the image folder",
                            entry.file_name, entry.id
                        ),
                    ));
                }
            }
        }
        Format::PascalVoc | Format::Kitti | Format::Yolo => {
            let dir = labels_dir(root).ok_or_else(|| DataError::MissingDir {
                path: root.join("labels"),
                what: "label",
            })?;
            let ext = if format == Format::PascalVoc {
                "xml"
            } else {
                "txt"
            };
            let map = match format {
                Format::Yolo => None,
                _ => arcgis::read_map(root, bad)?,
            };
            if let Some((map_path, entries)) = map {
                // An ArcGIS export: map.txt pairs images with labels.
                let listed = arcgis::map_images(&map_path, &entries, Some(&[ext]), bad);
                arcgis::unlisted_images(images, &entries, &map_path, bad);
                for (stem, e) in listed {
                    known_stems.insert(stem.clone());
                    pairs.push((stem, e.image, LabelRef::File(e.label)));
                }
            } else {
                let labels = by_stem(&dir, |e| e == ext, "label", bad)?;
                let label_files: BTreeMap<&String, &PathBuf> = labels
                    .files
                    .iter()
                    .filter(|(_, p)| ext == "xml" || is_label_txt(p))
                    .collect();
                known_stems.extend(labels.duplicates.iter().cloned());
                for (stem, image) in &images.files {
                    match label_files.get(stem) {
                        Some(label) => pairs.push((
                            stem.clone(),
                            image.clone(),
                            LabelRef::File((*label).clone()),
                        )),
                        // Reported as a duplicate already.
                        None if labels.duplicates.contains(stem) => {}
                        None => bad.push(BadSample::new(
                            image,
                            format!(
                                "image has no label file (expected {})",
                                dir.join(format!("{stem}.{ext}")).display()
                            ),
                        )),
                    }
                }
                for (stem, label) in label_files {
                    known_stems.insert(stem.clone());
                    if !images.seen(stem) {
                        bad.push(BadSample::new(
                            label,
                            "label has no image with the same stem",
                        ));
                    }
                }
            }
            class_list = detection_classes(root, format == Format::Yolo)?;
        }
        Format::RcnnMasks => {
            let dir = root.join("labels");
            if !dir.is_dir() {
                return Err(DataError::MissingDir {
                    path: dir,
                    what: "label",
                });
            }
            let folders = rcnn::index(&dir, bad)?;
            let image_list: BTreeMap<String, PathBuf> = match arcgis::read_map(root, bad)? {
                Some((map_path, entries)) => {
                    // map.txt names one label per chip, but the masks are kept per class
                    // folder: only its images are taken from it.
                    let listed = arcgis::map_images(&map_path, &entries, None, bad);
                    arcgis::unlisted_images(images, &entries, &map_path, bad);
                    listed.into_iter().map(|(s, e)| (s, e.image)).collect()
                }
                None => images.files.clone(),
            };
            for (stem, image) in &image_list {
                known_stems.insert(stem.clone());
                let masks = rcnn::masks_of(&folders, stem);
                if rcnn::ambiguous(&folders, stem) {
                    // Reported as a duplicate already.
                } else if masks.is_empty() {
                    bad.push(BadSample::new(
                        image,
                        format!(
                            "image has no mask in any class folder (expected {})",
                            dir.join("<class>").join(format!("{stem}.tif")).display()
                        ),
                    ));
                } else {
                    pairs.push((stem.clone(), image.clone(), LabelRef::Masks(masks)));
                }
            }
            for f in &folders {
                known_stems.extend(f.masks.duplicates.iter().cloned());
                for (stem, mask) in &f.masks.files {
                    if !image_list.contains_key(stem) && !images.seen(stem) {
                        bad.push(BadSample::new(mask, "mask has no image with the same stem"));
                    }
                }
            }
            class_list = detection_classes(root, false)?;
        }
        Format::ClassifiedTiles => {
            return Err(DataError::WrongTask {
                task: Task::PixelClassification,
                format,
            });
        }
    }

    // Decode every image and parse every label in parallel; both are independent per sample.
    let labels_root = root.join("labels");
    let results: Vec<Result<Parsed, Vec<BadSample>>> = pairs
        .par_iter()
        .map(|(stem, image, label)| parse_pair(format, stem, image, label, &labels_root))
        .collect();
    let mut parsed = Vec::new();
    for r in results {
        match r {
            Ok(p) => parsed.push(p),
            Err(mut b) => bad.append(&mut b),
        }
    }

    let (classes, source, from_emd) = match class_list {
        Some(list) => {
            let name = list.source_name();
            let from_emd = crate::files::ext_lower(&list.source) == "emd";
            (list.classes, Some(name), from_emd)
        }
        None => (classes_seen(&parsed), None, false),
    };
    let index = ClassIndex::new(&classes, from_emd);
    let source = source.unwrap_or_else(|| "the class list".to_owned());

    let mut samples = Vec::with_capacity(parsed.len());
    for p in parsed {
        let mut boxes = Vec::with_capacity(p.boxes.len());
        let mut errors = Vec::new();
        for b in p.boxes {
            let Some(class) = index.get(&b.class) else {
                let what = match &b.class {
                    ClassKey::Name(n) => format!("unknown class '{n}'"),
                    ClassKey::Id(id) => format!("unknown class id {id}"),
                };
                let file = b.source.as_ref().unwrap_or(&p.label);
                errors.push(BadSample::new(
                    file,
                    format!("{}: {what} (not in {source})", b.place),
                ));
                continue;
            };
            boxes.push(BoxAnn {
                class,
                xmin: b.xmin,
                ymin: b.ymin,
                xmax: b.xmax,
                ymax: b.ymax,
                difficult: b.difficult,
                iscrowd: b.iscrowd,
            });
        }
        if errors.is_empty() {
            samples.push(Sample {
                stem: p.stem,
                image: p.image,
                label: Some(p.label),
                width: p.info.width,
                height: p.info.height,
                bands: p.info.bands,
                boxes,
            });
        } else {
            bad.append(&mut errors);
        }
    }
    Ok(ReadResult {
        classes,
        ignore_index: None,
        ignore_name: None,
        samples,
        known_stems,
    })
}

/// Finds a label's class in a class list: a name by name, an id by value. ArcGIS writes class
/// values where a name is expected (KITTI's type, PASCAL VOC's `<name>`, RCNN_Masks' folder), so
/// with a class list from an `.emd` a name that is not in it but is an integer is looked up as a
/// value. (Not with `classes.txt`, where that would turn a misspelt label into another class.)
pub(crate) struct ClassIndex<'a> {
    by_name: HashMap<&'a str, usize>,
    by_value: HashMap<u32, usize>,
    names_may_be_values: bool,
}

impl<'a> ClassIndex<'a> {
    pub fn new(classes: &'a [ClassInfo], names_may_be_values: bool) -> Self {
        ClassIndex {
            by_name: classes
                .iter()
                .enumerate()
                .map(|(i, c)| (c.name.as_str(), i))
                .collect(),
            by_value: classes
                .iter()
                .enumerate()
                .map(|(i, c)| (c.value, i))
                .collect(),
            names_may_be_values,
        }
    }

    pub fn get(&self, key: &ClassKey) -> Option<usize> {
        match key {
            ClassKey::Name(n) => self.by_name.get(n.as_str()).copied().or_else(|| {
                self.names_may_be_values
                    .then(|| n.parse::<u32>().ok())
                    .flatten()
                    .and_then(|v| self.by_value.get(&v).copied())
            }),
            ClassKey::Id(id) => self.by_value.get(id).copied(),
        }
    }
}

/// The index of a label's class in `classes`, as reading an ArcGIS export resolves it.
pub(crate) fn resolve_class(classes: &[ClassInfo], key: &ClassKey) -> Option<usize> {
    ClassIndex::new(classes, true).get(key)
}

/// Without a class list: names seen, sorted (VOC, KITTI), or ids seen, sorted (YOLO).
fn classes_seen(parsed: &[Parsed]) -> Vec<ClassInfo> {
    let keys: BTreeSet<&ClassKey> = parsed
        .iter()
        .flat_map(|p| &p.boxes)
        .map(|b| &b.class)
        .collect();
    let mut out = Vec::new();
    let mut next = 0u32;
    for key in keys {
        match key {
            ClassKey::Name(n) => {
                out.push(ClassInfo {
                    value: next,
                    name: n.clone(),
                });
                next += 1;
            }
            ClassKey::Id(id) => out.push(ClassInfo {
                value: *id,
                name: id.to_string(),
            }),
        }
    }
    out
}

fn parse_pair(
    format: Format,
    stem: &str,
    image: &Path,
    label: &LabelRef<'_>,
    labels_root: &Path,
) -> Result<Parsed, Vec<BadSample>> {
    let info =
        probe_image(image).map_err(|e| vec![BadSample::new(image, error_reason(&e, "image"))])?;
    let (label_path, parsed) = match label {
        LabelRef::Masks(masks) => {
            let boxes = crate::rcnn::parse(masks, info.width, info.height)?;
            (
                labels_root.to_path_buf(),
                Ok(ParsedLabel { boxes, size: None }),
            )
        }
        LabelRef::File(path) => {
            let parsed = match format {
                Format::PascalVoc => voc::parse(path),
                Format::Kitti => kitti::parse(path),
                Format::Yolo => yolo::parse(path, &info),
                Format::Coco | Format::ClassifiedTiles | Format::RcnnMasks => {
                    Err(vec![format!("internal: {format} labels are not per-file")])
                }
            };
            (path.clone(), parsed)
        }
        LabelRef::Coco(entry) => (entry.json.clone(), entry.parsed()),
    };
    let fail = |reasons: Vec<String>| -> Vec<BadSample> {
        reasons
            .into_iter()
            .map(|r| BadSample::new(&label_path, r))
            .collect()
    };
    let parsed = parsed.map_err(fail)?;
    let mut reasons = Vec::new();
    if let Some((w, h)) = parsed.size
        && w > 0
        && h > 0
        && (w, h) != (info.width, info.height)
    {
        reasons.push(format!(
            "label gives image size {w}x{h} but {} is {}x{}",
            file_name(image),
            info.width,
            info.height
        ));
    }
    for b in &parsed.boxes {
        if let Some(r) = check_box(b, info.width, info.height) {
            reasons.push(r);
        }
    }
    if !reasons.is_empty() {
        return Err(fail(reasons));
    }
    Ok(Parsed {
        stem: stem.to_owned(),
        image: image.to_path_buf(),
        label: label_path,
        info,
        boxes: parsed.boxes,
    })
}

/// Slack for boxes converted from normalised coordinates, far below a pixel.
const EPS: f32 = 1e-3;

/// A box must have positive area and lie in the image. With inclusive `xmax` the last column is
/// `width - 1`; one pixel beyond that (`xmax == width`) is tolerated because exclusive-coordinate
/// tools write it.
fn check_box(b: &RawBox, width: u32, height: u32) -> Option<String> {
    let coords = [b.xmin, b.ymin, b.xmax, b.ymax];
    let desc = format!(
        "{}: box ({}, {}, {}, {})",
        b.place, b.xmin, b.ymin, b.xmax, b.ymax
    );
    if coords.iter().any(|c| !c.is_finite()) {
        return Some(format!("{desc} has a non-finite coordinate"));
    }
    if b.xmax <= b.xmin || b.ymax <= b.ymin {
        return Some(format!("{desc} has zero or negative area"));
    }
    #[allow(clippy::cast_precision_loss)]
    let (w, h) = (width as f32, height as f32);
    if b.xmin < -EPS || b.ymin < -EPS || b.xmax > w + EPS || b.ymax > h + EPS {
        return Some(format!("{desc} is outside the {width}x{height} image"));
    }
    None
}

/// The message of an error without its path prefix when it names the same file, so that a bad
/// sample reads "a.png: truncated ..." rather than naming the file twice.
pub(crate) fn error_reason(e: &DataError, what: &str) -> String {
    match e {
        DataError::Decode { reason, .. } => format!("cannot decode {what}: {reason}"),
        DataError::Unsupported { reason, .. } => format!("unsupported {what}: {reason}"),
        DataError::Io { source, .. } => format!("cannot read: {source}"),
        other => other.to_string(),
    }
}

pub(crate) fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}
