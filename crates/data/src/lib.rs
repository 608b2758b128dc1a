//! Dataset reading, validation and writing for autodl.
//!
//! A dataset is a folder: `images/` plus labels in one of the layouts in [`Format`]. [`open`] detects
//! the layout, pairs images with labels by file stem, decodes every image (so a truncated file is
//! found before training, not halfway through it), checks every label, and splits the samples into
//! train and val, either from `splits/train.txt` and `splits/val.txt` or by a seeded shuffle.
//!
//! Architecture invariant: the crate never prints and never panics on bad input. Every problem
//! with a sample becomes a [`BadSample`] that names the file and the reason; the caller decides
//! whether to skip it ([`OnBadSample::Skip`], listed in [`Dataset::skipped`]) or to stop
//! ([`OnBadSample::Fail`], one [`DataError::BadSamples`] listing all of them).
//!
//! Box coordinates are kept in pixels exactly as PASCAL VOC writes them (0-based in the data we
//! ship, `xmax`/`ymax` inclusive), and every reader and writer converts to and from that one
//! convention, so that writing a dataset in any format and reading it back gives the same boxes.

mod classes;
mod coco;
mod detect;
mod error;
mod files;
mod georef;
mod image_io;
mod kitti;
mod open;
mod scene;
mod split;
mod summary;
mod tiles;
mod voc;
mod write;
mod yolo;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use detect::detect_format;
pub use error::DataError;
pub use georef::{GeoRef, GeoTiffWriter, epsg_of_wkt, read_georef};
pub use image_io::{
    Image, MAX_DECODED_BYTES, MAX_PIXELS, Mask, RawImage, load_image, load_mask, load_raw_image,
};
pub use open::open;
pub use scene::{MAX_SCENE_PIXELS, RowBlock, SceneReader};
pub use summary::{
    BoxStats, ClassSummary, IgnoreSummary, LongestSide, SizeBucket, SizeRange, SplitCounts,
    Summary, summarize,
};
pub use voc::to_xml as voc_xml;
pub use write::{write_coco, write_kitti, write_voc, write_yolo};

/// What a dataset teaches a model to do: the one task type of the whole workspace.
pub use autodl_api::Task;

/// The on-disk layout of a dataset.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// `images/` + `labels/<stem>.xml` (or `annotations/`), as ArcGIS's PASCAL_VOC_rectangles
    /// export writes it.
    PascalVoc,
    /// `images/` + `labels/<stem>.txt`, 15 fields per object. KITTI has no difficult flag: a
    /// difficult box is written with `occluded = 3` ("unknown") and read back that way.
    Kitti,
    /// `images/` + one COCO `.json`. The non-standard annotation field `difficult` carries the
    /// difficult flag (absent means false).
    Coco,
    /// `images/` + `labels/<stem>.txt` with `class cx cy w h` normalised, plus `classes.txt` or
    /// `obj.names`. YOLO has no difficult flag: the indices of difficult boxes (0-based line
    /// numbers among the boxes) go to the side file `labels/<stem>.difficult`, one per line.
    Yolo,
    /// `images/` + `labels/<stem>.png|tif` single-channel class-index masks.
    ClassifiedTiles,
}

impl Format {
    /// Every format, in the order [`detect_format`] reports them.
    pub const ALL: [Format; 5] = [
        Format::PascalVoc,
        Format::Kitti,
        Format::Coco,
        Format::Yolo,
        Format::ClassifiedTiles,
    ];

    /// The task this format's labels describe.
    pub fn task(self) -> Task {
        match self {
            Format::ClassifiedTiles => Task::PixelClassification,
            Format::PascalVoc | Format::Kitti | Format::Coco | Format::Yolo => Task::Detection,
        }
    }

    /// The kebab-case name, as in configs and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::PascalVoc => "pascal-voc",
            Format::Kitti => "kitti",
            Format::Coco => "coco",
            Format::Yolo => "yolo",
            Format::ClassifiedTiles => "classified-tiles",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Format {
    type Err = DataError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Format::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| DataError::UnknownFormat {
                name: s.to_owned(),
                valid: Format::ALL.map(Format::as_str).join(", "),
            })
    }
}

/// What [`open`] does with a sample that fails validation.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum OnBadSample {
    /// Leave the sample out and list it in [`Dataset::skipped`].
    #[default]
    Skip,
    /// Return [`DataError::BadSamples`] listing every bad sample.
    Fail,
}

/// How to read a dataset folder.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "kebab-case", default)]
pub struct ReadOptions {
    /// The layout; `None` detects it with [`detect_format`].
    pub format: Option<Format>,
    /// The sub-folder holding the images; `None` means `images`.
    pub images_dir: Option<String>,
    /// The share of samples that go to val; used only when `splits/` is absent.
    pub val_fraction: f64,
    /// The share of samples held out as the test split; used only when `splits/` is absent
    /// (else `splits/test.txt` names them). Validation is chosen as without it, and the test
    /// samples come out of the rest.
    pub test_fraction: f64,
    /// The seed of the random split; used only when `splits/` is absent.
    pub seed: u64,
    /// Skip bad samples or fail on them.
    pub on_bad_sample: OnBadSample,
    /// Pixel classification: the mask value to ignore, overriding the class named "no data".
    pub ignore_index: Option<u32>,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            format: None,
            images_dir: None,
            val_fraction: 0.2,
            test_fraction: 0.0,
            seed: 42,
            on_bad_sample: OnBadSample::Skip,
            ignore_index: None,
        }
    }
}

/// One class: its value and its name. Defined with the files it is written into
/// (`model.json`, `metrics.json`) in `autodl-api`.
pub use autodl_api::ClassInfo;

/// One bounding box, in pixels, `xmax`/`ymax` inclusive as PASCAL VOC gives them.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct BoxAnn {
    /// Index into [`Dataset::classes`].
    pub class: usize,
    /// Left edge.
    pub xmin: f32,
    /// Top edge.
    pub ymin: f32,
    /// Right edge (inclusive).
    pub xmax: f32,
    /// Bottom edge (inclusive).
    pub ymax: f32,
    /// Hard to see; VOC average precision ignores these boxes.
    pub difficult: bool,
    /// COCO crowd region.
    pub iscrowd: bool,
}

impl BoxAnn {
    /// The box as continuous corners `[x1, y1, x2, y2]`: a box from pixel 3 to pixel 5
    /// (inclusive) spans 3 to 6. Training, validation and evaluation all read boxes so.
    pub fn corners(&self) -> [f32; 4] {
        [self.xmin, self.ymin, self.xmax + 1.0, self.ymax + 1.0]
    }
}

/// One image with its labels.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Sample {
    /// File name without extension; images and labels are paired by it.
    pub stem: String,
    /// The image file.
    pub image: PathBuf,
    /// The label file (for COCO the shared `.json`).
    pub label: Option<PathBuf>,
    /// Image width in pixels.
    pub width: u32,
    /// Image height in pixels.
    pub height: u32,
    /// Number of bands (channels) in the image.
    pub bands: u32,
    /// The boxes; empty for pixel classification.
    pub boxes: Vec<BoxAnn>,
}

/// A part of the dataset.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum Split {
    /// Samples the model learns from.
    Train,
    /// Samples the model is scored on.
    Val,
}

impl Split {
    /// The lowercase name, as in `splits/<name>.txt`.
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A sample (or a file) that failed validation, and why.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct BadSample {
    /// The file at fault: the image, the label, or the split list.
    pub path: PathBuf,
    /// What is wrong with it.
    pub reason: String,
}

impl BadSample {
    pub(crate) fn new(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        BadSample {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for BadSample {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.reason)
    }
}

/// A validated dataset, split into train and val.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Dataset {
    /// The folder it was read from.
    pub root: PathBuf,
    /// The layout it was read as.
    pub format: Format,
    /// The task its labels describe.
    pub task: Task,
    /// The classes; for pixel classification the ignore class is not among them.
    pub classes: Vec<ClassInfo>,
    /// Pixel classification: the mask value that is not scored.
    pub ignore_index: Option<u32>,
    /// Pixel classification: the name the class list gives the ignore value ("nodata (ignore)"),
    /// if it names it.
    pub ignore_name: Option<String>,
    /// Samples to train on, sorted by stem.
    pub train: Vec<Sample>,
    /// Samples to validate on, sorted by stem.
    pub val: Vec<Sample>,
    /// Samples held out for the test score (from `splits/test.txt` or `test-fraction`), sorted
    /// by stem: training, tuning and ranking never read them; every packaged model is scored
    /// on them once, after ranking.
    pub test: Vec<Sample>,
    /// Samples left out because they failed validation.
    pub skipped: Vec<BadSample>,
    /// Where the split came from, for reports.
    pub split_source: String,
}

impl Dataset {
    /// The samples of one split.
    pub fn split(&self, split: Split) -> &[Sample] {
        match split {
            Split::Train => &self.train,
            Split::Val => &self.val,
        }
    }

    /// Every sample, train first.
    pub fn samples(&self) -> impl Iterator<Item = (Split, &Sample)> {
        self.train
            .iter()
            .map(|s| (Split::Train, s))
            .chain(self.val.iter().map(|s| (Split::Val, s)))
    }
}
