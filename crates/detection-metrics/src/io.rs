//! Readers for COCO JSON: a ground-truth file (`images`, `annotations`,
//! `categories`) and a result list (`[{image_id, category_id, bbox, score}]`).
//!
//! Only the fields evaluation needs are read; everything else (segmentations,
//! file names, annotation ids) is skipped. A ground-truth annotation may carry
//! a VOC-style `difficult` flag, which pycocotools ignores and the VOC
//! functions honour.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Detection, GtBox};

/// Errors from reading COCO JSON.
#[derive(Debug, thiserror::Error)]
pub enum DetectionError {
    /// The file could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The text is not JSON of the expected shape.
    #[error("invalid COCO {what}{}", in_file(path.as_deref()))]
    Parse {
        /// `"ground truth"` or `"detections"`.
        what: &'static str,
        /// The file, when the text came from one.
        path: Option<PathBuf>,
        /// Where and why parsing stopped.
        #[source]
        source: serde_json::Error,
    },
}

fn in_file(path: Option<&Path>) -> String {
    path.map(|p| format!(" in {}", p.display()))
        .unwrap_or_default()
}

/// A COCO ground-truth file, reduced to what evaluation needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CocoGt {
    /// Ids of the `images` list, in file order: the image set evaluated.
    pub images: Vec<u64>,
    /// Ids of the `categories` list, in file order: the categories
    /// evaluated.
    pub categories: Vec<u32>,
    /// The `annotations`, in file order.
    pub annotations: Vec<GtBox>,
}

#[derive(Deserialize)]
struct RawGt {
    images: Vec<RawId>,
    #[serde(default)]
    annotations: Vec<RawAnnotation>,
    categories: Vec<RawCategory>,
}

#[derive(Deserialize)]
struct RawId {
    id: u64,
}

#[derive(Deserialize)]
struct RawCategory {
    id: u32,
}

#[derive(Deserialize)]
struct RawAnnotation {
    image_id: u64,
    category_id: u32,
    bbox: [f64; 4],
    area: Option<f64>,
    #[serde(default)]
    iscrowd: Flag,
    #[serde(default)]
    difficult: Flag,
}

/// A 0/1 flag, written as a number by COCO tools and sometimes as a boolean
/// by others.
#[derive(Deserialize, Default, Clone, Copy)]
#[serde(untagged)]
enum Flag {
    Bool(bool),
    Int(i64),
    #[default]
    Absent,
}

impl Flag {
    fn is_set(self) -> bool {
        match self {
            Flag::Bool(b) => b,
            Flag::Int(i) => i != 0,
            Flag::Absent => false,
        }
    }
}

#[derive(Deserialize)]
struct RawDetection {
    image_id: u64,
    category_id: u32,
    bbox: [f64; 4],
    score: f64,
}

/// What `autodl predict` writes for a detector (`detections.json`): COCO-shaped, with the
/// images it ran on (so that ground truth can be matched by file name), the categories by
/// class index, and one annotation per kept box with its score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CocoPredictions {
    /// The images, in the order they were given.
    pub images: Vec<CocoImage>,
    /// The categories: id = class index.
    pub categories: Vec<CocoCategory>,
    /// The boxes.
    pub annotations: Vec<CocoPrediction>,
}

/// An image of [`CocoPredictions`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CocoImage {
    /// Id the annotations refer to.
    pub id: u64,
    /// The image's file name (no folder).
    pub file_name: String,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

/// A category of [`CocoPredictions`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CocoCategory {
    /// Class index.
    pub id: u32,
    /// Class name.
    pub name: String,
}

/// A predicted box of [`CocoPredictions`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CocoPrediction {
    /// Annotation id, from 1.
    pub id: u64,
    /// The image's id.
    pub image_id: u64,
    /// Class index.
    pub category_id: u32,
    /// `[x, y, width, height]` in pixels, continuous coordinates.
    pub bbox: [f64; 4],
    /// `width * height`.
    pub area: f64,
    /// Always 0.
    pub iscrowd: u8,
    /// Confidence.
    pub score: f64,
}

impl CocoPredictions {
    /// The boxes as detections to evaluate.
    pub fn detections(&self) -> Vec<Detection> {
        self.annotations
            .iter()
            .map(|a| Detection {
                image_id: a.image_id,
                category: a.category_id,
                bbox: a.bbox,
                score: a.score,
            })
            .collect()
    }
}

/// Reads `autodl predict`'s `detections.json`.
pub fn read_predictions(path: impl AsRef<Path>) -> Result<CocoPredictions, DetectionError> {
    let path = path.as_ref();
    serde_json::from_str(&read(path)?).map_err(|source| DetectionError::Parse {
        what: "predictions",
        path: Some(path.to_path_buf()),
        source,
    })
}

/// A box given by its corners `[x1, y1, x2, y2]` as COCO's `[x, y, width, height]`. Every
/// box autodl scores (validation, `autodl predict`, `autodl evaluate` on a dataset folder)
/// goes through this one conversion, so the same box gives the same numbers everywhere.
pub fn coco_bbox(corners: [f32; 4]) -> [f64; 4] {
    let [x1, y1, x2, y2] = corners;
    [
        f64::from(x1),
        f64::from(y1),
        f64::from(x2 - x1),
        f64::from(y2 - y1),
    ]
}

/// Parses a COCO ground-truth JSON text.
pub fn parse_coco_gt(text: &str) -> Result<CocoGt, DetectionError> {
    parse_gt(text, None)
}

/// Parses a COCO result list (JSON array of detections), or an object whose `annotations`
/// carry scores.
pub fn parse_coco_dets(text: &str) -> Result<Vec<Detection>, DetectionError> {
    parse_dets(text, None)
}

/// Reads a COCO ground-truth JSON file.
pub fn read_coco_gt(path: impl AsRef<Path>) -> Result<CocoGt, DetectionError> {
    let path = path.as_ref();
    parse_gt(&read(path)?, Some(path))
}

/// Reads a COCO result file (JSON array of detections), or `autodl predict`'s
/// `detections.json`.
pub fn read_coco_dets(path: impl AsRef<Path>) -> Result<Vec<Detection>, DetectionError> {
    let path = path.as_ref();
    parse_dets(&read(path)?, Some(path))
}

fn read(path: &Path) -> Result<String, DetectionError> {
    std::fs::read_to_string(path).map_err(|source| DetectionError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn parse_gt(text: &str, path: Option<&Path>) -> Result<CocoGt, DetectionError> {
    let raw: RawGt = serde_json::from_str(text).map_err(|source| DetectionError::Parse {
        what: "ground truth",
        path: path.map(Path::to_path_buf),
        source,
    })?;
    Ok(CocoGt {
        images: raw.images.into_iter().map(|i| i.id).collect(),
        categories: raw.categories.into_iter().map(|c| c.id).collect(),
        annotations: raw
            .annotations
            .into_iter()
            .map(|a| GtBox {
                image_id: a.image_id,
                category: a.category_id,
                bbox: a.bbox,
                area: a.area,
                iscrowd: a.iscrowd.is_set(),
                difficult: a.difficult.is_set(),
            })
            .collect(),
    })
}

/// A result list, or a COCO-shaped object whose `annotations` carry scores (what
/// `autodl predict` writes).
#[derive(Deserialize)]
#[serde(untagged)]
enum RawDetections {
    List(Vec<RawDetection>),
    Object { annotations: Vec<RawDetection> },
}

fn parse_dets(text: &str, path: Option<&Path>) -> Result<Vec<Detection>, DetectionError> {
    let raw: RawDetections =
        serde_json::from_str(text).map_err(|source| DetectionError::Parse {
            what: "detections",
            path: path.map(Path::to_path_buf),
            source,
        })?;
    let raw = match raw {
        RawDetections::List(l) | RawDetections::Object { annotations: l } => l,
    };
    Ok(raw
        .into_iter()
        .map(|d| Detection {
            image_id: d.image_id,
            category: d.category_id,
            bbox: d.bbox,
            score: d.score,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_flags_as_numbers_or_booleans() {
        let gt = parse_coco_gt(
            r#"{"images": [{"id": 3, "width": 10}], "categories": [{"id": 1, "name": "a"}],
                "annotations": [
                  {"id": 1, "image_id": 3, "category_id": 1, "bbox": [1, 2, 3, 4], "iscrowd": 1},
                  {"image_id": 3, "category_id": 1, "bbox": [1, 2, 3, 4], "area": 5.5,
                   "iscrowd": false, "difficult": true}]}"#,
        )
        .unwrap();
        assert_eq!(gt.images, vec![3]);
        assert_eq!(gt.categories, vec![1]);
        let [a, b] = gt.annotations.as_slice() else {
            panic!("two annotations")
        };
        assert!(a.iscrowd && !a.difficult);
        assert_eq!(a.coco_area(), 12.0);
        assert!(!b.iscrowd && b.difficult);
        assert_eq!(b.coco_area(), 5.5);
    }

    #[test]
    fn parse_errors_name_the_file() {
        let err = parse_gt("[]", Some(Path::new("gt.json"))).unwrap_err();
        assert_eq!(err.to_string(), "invalid COCO ground truth in gt.json");
        let err = parse_coco_dets(r#"[{"image_id": 1}]"#).unwrap_err();
        assert_eq!(err.to_string(), "invalid COCO detections");
        assert!(std::error::Error::source(&err).is_some());
    }

    #[test]
    fn missing_file_is_a_read_error() {
        let err = read_coco_dets("/nonexistent/dets.json").unwrap_err();
        assert!(matches!(err, DetectionError::Read { .. }));
        assert_eq!(err.to_string(), "cannot read /nonexistent/dets.json");
    }
}
