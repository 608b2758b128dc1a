//! Errors of this crate.

use std::path::{Path, PathBuf};

use crate::NAMES;

/// Why a backbone could not be built or its weights not loaded.
///
/// Tensor names are the ones in the weights file (torchvision or efficientnet_pytorch naming),
/// so that they can be looked up in the file with any tool.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackboneError {
    /// The name is not one of [`NAMES`].
    #[error("unknown backbone `{name}`: expected one of {}", NAMES.join(", "))]
    UnknownName {
        /// The name asked for.
        name: String,
    },
    /// Zero input bands.
    #[error("backbone `{name}` needs at least one input band")]
    NoBands {
        /// The backbone.
        name: String,
    },
    /// The file is missing, unreadable or in an unsupported format.
    #[error("cannot load weights {}: {reason}", path.display())]
    Weights {
        /// The weights file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The file lacks a tensor the backbone needs.
    #[error(
        "weights {} lack tensor `{name}` that {backbone} needs ({missing} of {expected} tensors missing{hint})",
        path.display(),
        hint = if missing == expected { "; are they for another architecture?" } else { "" }
    )]
    MissingTensor {
        /// The weights file.
        path: PathBuf,
        /// The first missing tensor, in the file's naming.
        name: String,
        /// The backbone being loaded.
        backbone: String,
        /// How many of the backbone's tensors the file lacks.
        missing: usize,
        /// How many tensors the backbone has.
        expected: usize,
    },
    /// A tensor has another shape than the backbone's.
    #[error(
        "weights {}: tensor `{name}` has shape {found:?} but {backbone} expects {expected:?}",
        path.display()
    )]
    ShapeMismatch {
        /// The weights file.
        path: PathBuf,
        /// The tensor, in the file's naming.
        name: String,
        /// The backbone being loaded.
        backbone: String,
        /// The shape the backbone expects (file layout).
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
    },
    /// The file holds a tensor the backbone does not have.
    #[error(
        "weights {} hold tensor `{name}` that {backbone} does not have; are they for another architecture?",
        path.display()
    )]
    UnexpectedTensor {
        /// The weights file.
        path: PathBuf,
        /// The tensor, in the file's naming.
        name: String,
        /// The backbone being loaded.
        backbone: String,
    },
}

impl BackboneError {
    /// The same error about the file at `path` (errors about a converted copy name the
    /// original).
    pub(crate) fn with_path(self, file: &Path) -> Self {
        let path = file.to_path_buf();
        match self {
            BackboneError::Weights { reason, .. } => BackboneError::Weights { path, reason },
            BackboneError::MissingTensor {
                name,
                backbone,
                missing,
                expected,
                ..
            } => BackboneError::MissingTensor {
                path,
                name,
                backbone,
                missing,
                expected,
            },
            BackboneError::ShapeMismatch {
                name,
                backbone,
                expected,
                found,
                ..
            } => BackboneError::ShapeMismatch {
                path,
                name,
                backbone,
                expected,
                found,
            },
            BackboneError::UnexpectedTensor { name, backbone, .. } => {
                BackboneError::UnexpectedTensor {
                    path,
                    name,
                    backbone,
                }
            }
            other => other,
        }
    }
}
