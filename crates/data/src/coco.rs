//! COCO detection JSON: one file with `images`, `annotations` and `categories`.
//!
//! `bbox` is `[x, y, w, h]` and converts with the crate's convention `w = xmax - xmin`.
//! Category ids become [`ClassInfo::value`]. The difficult flag, which COCO lacks, travels in
//! the extra annotation field `difficult` (0/1 or a boolean; absent means false).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::classes::ClassList;
use crate::detect::coco_candidates;
use crate::files::{read_text, stem_of};
use crate::open::{ClassKey, ParsedLabel, RawBox, file_name};
use crate::{BadSample, ClassInfo, DataError, Dataset};

/// The annotations of one image of a COCO file.
#[derive(Debug, Clone)]
pub(crate) struct CocoEntry {
    /// The image id, as written.
    pub id: String,
    pub file_name: String,
    /// The COCO file, named in bad samples.
    pub json: PathBuf,
    size: Option<(u32, u32)>,
    boxes: Vec<RawBox>,
    errors: Vec<String>,
}

impl CocoEntry {
    pub(crate) fn parsed(&self) -> Result<ParsedLabel, Vec<String>> {
        if self.errors.is_empty() {
            Ok(ParsedLabel {
                boxes: self.boxes.clone(),
                size: self.size,
            })
        } else {
            Err(self.errors.clone())
        }
    }
}

/// A parsed COCO file, with its entries keyed by image stem.
pub(crate) struct CocoIndex {
    pub path: PathBuf,
    pub classes: ClassList,
    pub entries: BTreeMap<String, CocoEntry>,
}

/// The one COCO file of a dataset.
fn find_json(root: &Path) -> Result<PathBuf, DataError> {
    let candidates = coco_candidates(root)?;
    match candidates.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(DataError::NoFormat {
            root: root.to_path_buf(),
            looked_for: "a coco .json in the root, annotations/ or labels/".to_owned(),
        }),
        many => Err(DataError::AmbiguousFormat {
            root: root.to_path_buf(),
            reason: format!(
                "several coco .json files ({}); keep one",
                many.iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }),
    }
}

/// An id as a map key: COCO ids are integers, but some tools write strings.
fn id_key(v: &Value) -> Option<String> {
    match v {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

fn as_u32(v: &Value) -> Option<u32> {
    v.as_u64().and_then(|n| u32::try_from(n).ok())
}

/// A 0/1 or boolean flag; absent is false.
fn flag(v: Option<&Value>) -> Result<bool, String> {
    match v {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(n) if n.as_u64() == Some(0) => Ok(false),
        Some(n) if n.as_u64() == Some(1) => Ok(true),
        Some(other) => Err(format!("'{other}' is not 0, 1, true or false")),
    }
}

/// Reads the COCO file of `root`. A file that is not JSON, or lacks `images` or `categories`,
/// is an error (no sample can be read); a bad entry inside is a bad sample.
pub(crate) fn read_index(root: &Path, bad: &mut Vec<BadSample>) -> Result<CocoIndex, DataError> {
    let path = find_json(root)?;
    let parse_err = |reason: String| DataError::Parse {
        path: path.clone(),
        reason,
    };
    let text = read_text(&path)?;
    let doc: Value =
        serde_json::from_str(&text).map_err(|e| parse_err(format!("malformed json: {e}")))?;
    let array = |key: &str, required: bool| -> Result<Vec<Value>, DataError> {
        match doc.get(key) {
            Some(Value::Array(a)) => Ok(a.clone()),
            None if !required => Ok(Vec::new()),
            _ => Err(parse_err(format!("no '{key}' array at the top level"))),
        }
    };
    let images = array("images", true)?;
    let annotations = array("annotations", false)?;
    let categories = array("categories", true)?;

    let mut classes = Vec::with_capacity(categories.len());
    for (i, c) in categories.iter().enumerate() {
        let id = c.get("id").and_then(as_u32);
        let name = c.get("name").and_then(Value::as_str);
        match (id, name) {
            (Some(value), Some(name)) => classes.push(ClassInfo {
                value,
                name: name.to_owned(),
            }),
            _ => {
                return Err(parse_err(format!(
                    "categories[{i}] needs an integer 'id' and a string 'name'"
                )));
            }
        }
    }

    let mut entries: BTreeMap<String, CocoEntry> = BTreeMap::new();
    let mut by_id: HashMap<String, String> = HashMap::new();
    for (i, img) in images.iter().enumerate() {
        let id = img.get("id").and_then(id_key);
        let name = img.get("file_name").and_then(Value::as_str);
        let (Some(id), Some(name)) = (id, name) else {
            bad.push(BadSample::new(
                &path,
                format!("images[{i}] needs an 'id' and a 'file_name'"),
            ));
            continue;
        };
        // `file_name` may carry a folder ("images/a.jpg"); images are matched by stem.
        let Some(stem) = stem_of(Path::new(name)) else {
            bad.push(BadSample::new(
                &path,
                format!("images[{i}]: file_name '{name}' has no stem"),
            ));
            continue;
        };
        let size = match (
            img.get("width").and_then(as_u32),
            img.get("height").and_then(as_u32),
        ) {
            (Some(w), Some(h)) => Some((w, h)),
            _ => None,
        };
        if let Some(first) = entries.get_mut(&stem) {
            // An image listed twice cannot be trusted either way.
            first.errors.push(format!(
                "images[{i}]: stem '{stem}' is listed twice (file_name '{name}' and '{}')",
                first.file_name
            ));
            by_id.insert(id, stem);
            continue;
        }
        by_id.insert(id.clone(), stem.clone());
        entries.insert(
            stem,
            CocoEntry {
                id,
                file_name: name.to_owned(),
                json: path.clone(),
                size,
                boxes: Vec::new(),
                errors: Vec::new(),
            },
        );
    }

    for (i, ann) in annotations.iter().enumerate() {
        let place = match ann.get("id").and_then(id_key) {
            Some(id) => format!("annotations[{i}] (id {id})"),
            None => format!("annotations[{i}]"),
        };
        let Some(image_id) = ann.get("image_id").and_then(id_key) else {
            bad.push(BadSample::new(&path, format!("{place}: no image_id")));
            continue;
        };
        let Some(entry) = by_id.get(&image_id).and_then(|s| entries.get_mut(s)) else {
            bad.push(BadSample::new(
                &path,
                format!("{place}: image_id {image_id} is not in images"),
            ));
            continue;
        };
        match annotation(ann, &place) {
            Ok(b) => entry.boxes.push(b),
            Err(e) => entry
                .errors
                .push(format!("{place} of image '{}': {e}", entry.file_name)),
        }
    }

    let classes = ClassList {
        classes,
        source: path.clone(),
    };
    Ok(CocoIndex {
        path,
        classes,
        entries,
    })
}

fn annotation(ann: &Value, place: &str) -> Result<RawBox, String> {
    let class = ann
        .get("category_id")
        .and_then(as_u32)
        .ok_or("no integer category_id")?;
    let bbox: Vec<f64> = match ann.get("bbox") {
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_f64).collect(),
        _ => return Err("no bbox".to_owned()),
    };
    let &[x, y, w, h] = bbox.as_slice() else {
        return Err("bbox must be 4 numbers [x, y, w, h]".to_owned());
    };
    let iscrowd = flag(ann.get("iscrowd")).map_err(|e| format!("iscrowd {e}"))?;
    let difficult = flag(ann.get("difficult")).map_err(|e| format!("difficult {e}"))?;
    #[allow(clippy::cast_possible_truncation)]
    Ok(RawBox {
        class: ClassKey::Id(class),
        xmin: x as f32,
        ymin: y as f32,
        xmax: (x + w) as f32,
        ymax: (y + h) as f32,
        difficult,
        iscrowd,
        place: place.to_owned(),
        source: None,
    })
}

/// The COCO document of a dataset: train images first, then val, ids from 1.
pub(crate) fn to_json(ds: &Dataset) -> Value {
    let mut images = Vec::new();
    let mut annotations = Vec::new();
    let mut ann_id = 0u64;
    for (image_id, (_, s)) in (1u64..).zip(ds.samples()) {
        images.push(json!({
            "id": image_id,
            "file_name": file_name(&s.image),
            "width": s.width,
            "height": s.height,
        }));
        for b in &s.boxes {
            ann_id += 1;
            // In f64 the difference of two f32 values is exact, so x + w gives xmax back.
            let (x, y) = (f64::from(b.xmin), f64::from(b.ymin));
            let (w, h) = (f64::from(b.xmax) - x, f64::from(b.ymax) - y);
            let category = ds.classes.get(b.class).map_or(0, |c| c.value);
            annotations.push(json!({
                "id": ann_id,
                "image_id": image_id,
                "category_id": category,
                "bbox": [x, y, w, h],
                "area": w * h,
                "iscrowd": u8::from(b.iscrowd),
                "difficult": u8::from(b.difficult),
            }));
        }
    }
    let categories: Vec<Value> = ds
        .classes
        .iter()
        .map(|c| json!({ "id": c.value, "name": c.name }))
        .collect();
    json!({
        "images": images,
        "annotations": annotations,
        "categories": categories,
    })
}
