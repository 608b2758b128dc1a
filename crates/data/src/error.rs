//! The crate's one error type.

use std::path::PathBuf;

use crate::{BadSample, Format, Split, Task};

/// Everything that can stop reading or writing a dataset.
///
/// Problems with single samples are not errors unless [`crate::OnBadSample::Fail`] is chosen;
/// then they all arrive together in [`DataError::BadSamples`].
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The dataset folder is missing.
    #[error("dataset folder {} does not exist", path.display())]
    NotFound {
        /// The folder asked for.
        path: PathBuf,
    },

    /// A folder the layout needs is missing.
    #[error("{what} folder {} does not exist", path.display())]
    MissingDir {
        /// The folder expected.
        path: PathBuf,
        /// What it should hold ("image", "label").
        what: &'static str,
    },

    /// No known layout matched the folder.
    #[error("no recognisable dataset layout in {}: looked for {looked_for}", root.display())]
    NoFormat {
        /// The dataset folder.
        root: PathBuf,
        /// The layouts tried, in words.
        looked_for: String,
    },

    /// The folder matches a layout but details are contradictory (say, two COCO files).
    #[error("cannot tell the layout of {}: {reason}", root.display())]
    AmbiguousFormat {
        /// The dataset folder.
        root: PathBuf,
        /// What is ambiguous and how to resolve it.
        reason: String,
    },

    /// An ArcGIS export in a metadata format autodl does not read (Labeled_Tiles, ...).
    #[error(
        "{} is an ArcGIS {mode} export (MetaDataMode in esri_accumulated_stats.json), which autodl \
         does not read; export as PASCAL_VOC_rectangles, KITTI_rectangles, RCNN_Masks or \
         Classified_Tiles",
        root.display()
    )]
    UnsupportedExport {
        /// The dataset folder.
        root: PathBuf,
        /// The export's `MetaDataMode`.
        mode: String,
    },

    /// A format name that is not one of [`Format::ALL`].
    #[error("unknown dataset format '{name}' (valid: {valid})")]
    UnknownFormat {
        /// The name given.
        name: String,
        /// The valid names.
        valid: String,
    },

    /// A [`crate::ReadOptions`] value out of range.
    #[error("invalid read option {option}: {reason}")]
    InvalidOption {
        /// The option's name.
        option: &'static str,
        /// Why it is invalid.
        reason: String,
    },

    /// A file could not be read or written.
    #[error("cannot access {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A file every sample depends on (class list, COCO json) is malformed.
    #[error("cannot parse {}: {reason}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the line where known.
        reason: String,
    },

    /// An image or mask could not be decoded.
    #[error("cannot decode {}: {reason}", path.display())]
    Decode {
        /// The file.
        path: PathBuf,
        /// The decoder's complaint.
        reason: String,
    },

    /// An image or mask decodes but has a layout this crate does not handle.
    #[error("unsupported image {}: {reason}", path.display())]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// What is unsupported.
        reason: String,
    },

    /// Validation found bad samples and [`crate::OnBadSample::Fail`] was chosen.
    #[error(
        "{} bad sample(s) in {} with on-bad-sample = fail:{}",
        samples.len(),
        root.display(),
        list(samples)
    )]
    BadSamples {
        /// The dataset folder.
        root: PathBuf,
        /// Every bad sample found.
        samples: Vec<BadSample>,
    },

    /// After skipping bad samples a split has nothing left.
    #[error("the {split} split of {} has no samples ({detail})", root.display())]
    EmptySplit {
        /// The dataset folder.
        root: PathBuf,
        /// The empty split.
        split: Split,
        /// Where the split came from and how many samples were skipped.
        detail: String,
    },

    /// A writer was given a dataset of the wrong task.
    #[error("cannot write a {task} dataset as {format}")]
    WrongTask {
        /// The dataset's task.
        task: Task,
        /// The format asked for.
        format: Format,
    },

    /// A dataset cannot be written as asked (say, onto itself, or a class name the format cannot
    /// store).
    #[error("cannot write {}: {reason}", path.display())]
    Write {
        /// The file or folder.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            source,
        }
    }
}

fn list(samples: &[BadSample]) -> String {
    samples.iter().map(|s| format!("\n  {s}")).collect()
}
