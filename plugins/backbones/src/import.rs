//! Importing an ImageNet checkpoint a user downloaded (torchvision or timm, as a PyTorch `.pth`
//! in the zip or the legacy format, or as safetensors) into the weights folder, as
//! `<backbone>.safetensors` with contiguous float32 tensors under the names the loader reads,
//! so that [`crate::default_weights`] finds it.
//!
//! Which backbone a checkpoint holds is named by the caller or told from its tensor names and
//! block counts. timm's MobileNetV2 (`mobilenetv2_100`) is renamed to torchvision's layout;
//! timm's ResNets already use torchvision's names. The converted file is loaded into the
//! backbone by the ordinary loader before it is renamed into place, so a file that is there
//! loads.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;

use crate::{Arch, BackboneConfig, BackboneError, NAMES};
use autodl_checkpoint::Tensor;

/// Why a checkpoint could not be imported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    /// The file is missing, unreadable or not a checkpoint.
    #[error("cannot read checkpoint {}: {reason}", path.display())]
    Read {
        /// The checkpoint.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The tensors match none of the backbones' layouts.
    #[error(
        "cannot tell which backbone {} holds: its {tensors} tensors ({}) look like {looks_like}; \
         the backbones are {}",
        path.display(),
        examples.join(", "),
        NAMES.join(", ")
    )]
    Unrecognised {
        /// The checkpoint.
        path: PathBuf,
        /// How many float tensors it holds.
        tensors: usize,
        /// The first few tensor names.
        examples: Vec<String>,
        /// What its names suggest.
        looks_like: String,
    },
    /// The converted tensors do not load into the backbone (a tensor missing, of another
    /// shape, or unexpected), named as in the checkpoint.
    #[error(transparent)]
    Load(#[from] BackboneError),
    /// The destination exists and replacing it was not asked for.
    #[error("{} already exists", path.display())]
    Exists {
        /// The existing file.
        path: PathBuf,
    },
    /// The weights file could not be written.
    #[error("cannot write {}: {reason}", path.display())]
    Write {
        /// The file or folder.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

impl ImportError {
    /// Whether the input is at fault (the file, or the backbone named), rather than the
    /// machine (a write that failed).
    pub fn is_usage(&self) -> bool {
        !matches!(self, ImportError::Write { .. })
    }
}

/// What an import wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    /// The backbone the weights are for.
    pub backbone: Arch,
    /// The file written, `<dir>/<backbone>.safetensors`.
    pub path: PathBuf,
    /// The naming the checkpoint used (`torchvision`, `timm`, ...).
    pub naming: &'static str,
    /// Float tensors written.
    pub tensors: usize,
    /// Learned parameters among them (batch norm's running statistics left out).
    pub parameters: usize,
    /// Classes of the ImageNet classifier, when the checkpoint has one.
    pub classes: Option<usize>,
    /// Entries left out: integer tensors such as `num_batches_tracked`.
    pub skipped: usize,
}

/// A backbone and the naming its checkpoint uses, or what the names look like instead.
type Detection = Result<(Arch, Naming), String>;

/// How a checkpoint's names relate to the loader's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Naming {
    /// Already the loader's (torchvision, efficientnet_pytorch, autodl's own Darknet-53).
    Native(&'static str),
    /// timm's MobileNetV2, renamed to torchvision's.
    TimmMobileNetV2,
}

impl Naming {
    fn name(self) -> &'static str {
        match self {
            Naming::Native(n) => n,
            Naming::TimmMobileNetV2 => "timm",
        }
    }
}

/// Tensor names and shapes, with the block counts detection needs.
struct Layout<'a> {
    shapes: HashMap<&'a str, &'a [usize]>,
}

impl Layout<'_> {
    fn has(&self, name: &str) -> bool {
        self.shapes.contains_key(name)
    }

    fn shape(&self, name: &str) -> Option<&[usize]> {
        self.shapes.get(name).copied()
    }

    /// How many numbered children `prefix` has (`layer1.` with `layer1.0.`, `layer1.1.`: 2).
    fn count(&self, prefix: &str) -> usize {
        self.shapes
            .keys()
            .filter_map(|n| {
                n.strip_prefix(prefix)?
                    .split('.')
                    .next()?
                    .parse::<usize>()
                    .ok()
            })
            .collect::<BTreeSet<_>>()
            .len()
    }

    /// Blocks per stage of a timm EfficientNet-style network (`blocks.S.I.`).
    fn timm_stages(&self) -> Vec<usize> {
        (0..)
            .map(|s| self.count(&format!("blocks.{s}.")))
            .take_while(|&n| n > 0)
            .take(16)
            .collect()
    }

    fn is_timm_mobile(&self) -> bool {
        self.has("conv_stem.weight") && self.has("blocks.0.0.conv_dw.weight")
    }

    fn detect(&self) -> Detection {
        if self.has("conv1.weight") && self.has("layer1.0.conv1.weight") {
            let blocks: Vec<usize> = (1..=4).map(|l| self.count(&format!("layer{l}."))).collect();
            let bottleneck = self.has("layer1.0.conv3.weight");
            return match (blocks.as_slice(), bottleneck) {
                ([2, 2, 2, 2], false) => Ok((Arch::ResNet18, Naming::Native("torchvision"))),
                ([3, 4, 6, 3], false) => Ok((Arch::ResNet34, Naming::Native("torchvision"))),
                ([3, 4, 6, 3], true) => Ok((Arch::ResNet50, Naming::Native("torchvision"))),
                _ => Err(format!(
                    "a ResNet with {} {} blocks per stage",
                    blocks
                        .iter()
                        .map(usize::to_string)
                        .collect::<Vec<_>>()
                        .join("-"),
                    if bottleneck { "bottleneck" } else { "basic" }
                )),
            };
        }
        if self.has("features.0.0.weight") {
            let stages = self.count("features.");
            return if self.has("features.1.conv.0.0.weight") && stages == 19 {
                Ok((Arch::MobileNetV2, Naming::Native("torchvision")))
            } else {
                Err(format!(
                    "a torchvision network with {stages} `features` stages (MobileNetV2 has 19)"
                ))
            };
        }
        if self.is_timm_mobile() {
            let stages = self.timm_stages();
            return if stages == [1, 2, 3, 4, 3, 3, 1]
                && self.shape("conv_stem.weight") == Some(&[32, 3, 3, 3])
            {
                Ok((Arch::MobileNetV2, Naming::TimmMobileNetV2))
            } else {
                Err(format!(
                    "a timm EfficientNet-style network with blocks {stages:?} per stage \
                     (timm's mobilenetv2_100 has [1, 2, 3, 4, 3, 3, 1])"
                ))
            };
        }
        if self.has("_conv_stem.weight") {
            let blocks = self.count("_blocks.");
            let se = self.shapes.keys().any(|n| n.contains("._se_"));
            return if blocks == 16 && !se {
                Ok((
                    Arch::EfficientNetLite0,
                    Naming::Native("efficientnet_pytorch"),
                ))
            } else {
                Err(format!(
                    "an efficientnet_pytorch EfficientNet with {blocks} blocks{}",
                    if se {
                        " and squeeze-excitation (a B-model, not Lite0)"
                    } else {
                        ""
                    }
                ))
            };
        }
        if self.has("stages.0.down.conv.weight") && self.count("stages.") == 5 {
            return Ok((Arch::Darknet53, Naming::Native("autodl")));
        }
        Err(
            "none of the layouts known (torchvision or timm ResNet and MobileNetV2, \
             efficientnet_pytorch EfficientNet-Lite0, autodl's Darknet-53)"
                .to_owned(),
        )
    }
}

/// torchvision's name for a tensor of timm's `mobilenetv2_100` (others unchanged, so that
/// the loader names them as unexpected).
fn timm_mobilenetv2_name(name: &str) -> String {
    const REPEATS: [usize; 7] = [1, 2, 3, 4, 3, 3, 1];
    let head = [
        ("conv_stem.", "features.0.0."),
        ("bn1.", "features.0.1."),
        ("conv_head.", "features.18.0."),
        ("bn2.", "features.18.1."),
        ("classifier.", "classifier.1."),
    ];
    for (from, to) in head {
        if let Some(rest) = name.strip_prefix(from) {
            return format!("{to}{rest}");
        }
    }
    let mut parts = name.splitn(5, '.');
    if let (Some("blocks"), Some(s), Some(i), Some(layer), Some(param)) = (
        parts.next(),
        parts.next().and_then(|s| s.parse::<usize>().ok()),
        parts.next().and_then(|i| i.parse::<usize>().ok()),
        parts.next(),
        parts.next(),
    ) && s < REPEATS.len()
    {
        let feature = 1 + REPEATS[..s].iter().sum::<usize>() + i;
        // The first stage's blocks have no expansion, which shifts torchvision's numbering.
        let to = match (s, layer) {
            (0, "conv_dw") => Some("0.0"),
            (0, "bn1") => Some("0.1"),
            (0, "conv_pw") => Some("1"),
            (0, "bn2") => Some("2"),
            (_, "conv_pw") => Some("0.0"),
            (_, "bn1") => Some("0.1"),
            (_, "conv_dw") => Some("1.0"),
            (_, "bn2") => Some("1.1"),
            (_, "conv_pwl") => Some("2"),
            (_, "bn3") => Some("3"),
            _ => None,
        };
        if let Some(to) = to {
            return format!("features.{feature}.conv.{to}.{param}");
        }
    }
    name.to_owned()
}

/// A checkpoint's tensors under the loader's names, and the backbone they are for.
struct Converted {
    arch: Arch,
    naming: Naming,
    tensors: Vec<(String, Tensor)>,
    /// Entries left out (integer tensors).
    skipped: usize,
}

/// Which backbone `source`'s tensors are for, with the names the loader reads.
fn convert(source: &Path, backbone: Option<Arch>) -> Result<Converted, ImportError> {
    let read_error = |reason: String| ImportError::Read {
        path: source.to_path_buf(),
        reason,
    };
    let bytes = std::fs::read(source).map_err(|e| read_error(e.to_string()))?;
    let dict = autodl_checkpoint::read(&bytes).map_err(|e| read_error(e.to_string()))?;
    drop(bytes);
    if let Some((name, _)) = dict
        .tensors
        .iter()
        .find(|(_, t)| t.data.iter().any(|v| !v.is_finite()))
    {
        return Err(read_error(format!("tensor `{name}` holds NaN or infinity")));
    }
    let layout = Layout {
        shapes: dict
            .tensors
            .iter()
            .map(|(n, t)| (n.as_str(), t.shape.as_slice()))
            .collect(),
    };
    let (arch, naming) = match backbone {
        Some(Arch::MobileNetV2) if layout.is_timm_mobile() => {
            (Arch::MobileNetV2, Naming::TimmMobileNetV2)
        }
        Some(arch) => (arch, Naming::Native("as named")),
        None => layout
            .detect()
            .map_err(|looks_like| ImportError::Unrecognised {
                path: source.to_path_buf(),
                tensors: dict.tensors.len(),
                examples: dict
                    .tensors
                    .iter()
                    .take(3)
                    .map(|(n, _)| n.clone())
                    .collect(),
                looks_like,
            })?,
    };
    drop(layout);
    let skipped = dict.skipped.len();
    let mut tensors = dict.tensors;
    if naming == Naming::TimmMobileNetV2 {
        for (name, _) in &mut tensors {
            *name = timm_mobilenetv2_name(name);
        }
    }
    Ok(Converted {
        arch,
        naming,
        tensors,
        skipped,
    })
}

fn write_safetensors(
    path: &Path,
    tensors: &[(String, Tensor)],
    metadata: HashMap<String, String>,
) -> Result<(), String> {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, t)| t.data.iter().flat_map(|v| v.to_le_bytes()).collect())
        .collect();
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, t), b)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, t.shape.clone(), b)
                .map(|v| (name.clone(), v))
                .map_err(|e| format!("tensor `{name}`: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    safetensors::serialize_to_file(views, Some(metadata), path).map_err(|e| e.to_string())
}

/// Converts the checkpoint `source` into `<dir>/<backbone>.safetensors`: `backbone` when
/// given, else the one its tensors are for. The file is written under a temporary name, loaded
/// into the backbone on `device` with the ordinary loader, and only then renamed into place;
/// an existing file is replaced only with `overwrite`.
pub fn import_weights<B: Backend>(
    source: &Path,
    dir: &Path,
    backbone: Option<Arch>,
    overwrite: bool,
    device: &B::Device,
) -> Result<Imported, ImportError> {
    if let Some(arch) = backbone {
        let dest = dir.join(format!("{}.safetensors", arch.name()));
        if dest.exists() && !overwrite {
            return Err(ImportError::Exists { path: dest });
        }
    }
    let Converted {
        arch,
        naming,
        tensors,
        skipped,
    } = convert(source, backbone)?;
    let dest = dir.join(format!("{}.safetensors", arch.name()));
    if dest.exists() && !overwrite {
        return Err(ImportError::Exists { path: dest });
    }
    let write_error = |path: &Path, reason: String| ImportError::Write {
        path: path.to_path_buf(),
        reason,
    };
    std::fs::create_dir_all(dir).map_err(|e| write_error(dir, e.to_string()))?;
    // A name `default_weights` never picks, ending in `.safetensors` for the loader.
    let part = dir.join(format!(
        ".{}.import-{}.safetensors",
        arch.name(),
        std::process::id()
    ));
    // One key only: safetensors writes its metadata from a hash map, in no fixed order, and
    // the same checkpoint should give the same file.
    let metadata = HashMap::from([("format".to_owned(), "pt".to_owned())]);
    let result = write_safetensors(&part, &tensors, metadata)
        .map_err(|e| write_error(&part, e))
        .and_then(|()| {
            BackboneConfig::new(arch.name(), 3)
                .with_weights(&part)
                .init::<B>(device)
                .map_err(|e| ImportError::Load(e.with_path(source)))
        })
        .and_then(|model| {
            std::fs::rename(&part, &dest)
                .map_err(|e| write_error(&dest, e.to_string()))
                .map(|()| model.has_classifier())
        });
    if result.is_err() {
        let _ = std::fs::remove_file(&part);
    }
    let has_classifier = result?;
    let classifier = arch.classifier_file_name();
    let classes = tensors
        .iter()
        .find(|(n, _)| *n == classifier)
        .and_then(|(_, t)| t.shape.first().copied())
        .filter(|_| has_classifier);
    let parameters = tensors
        .iter()
        .filter(|(n, _)| !n.ends_with("running_mean") && !n.ends_with("running_var"))
        .map(|(_, t)| t.data.len())
        .sum();
    Ok(Imported {
        backbone: arch,
        path: dest,
        naming: naming.name(),
        tensors: tensors.len(),
        parameters,
        classes,
        skipped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(names: &[(&str, &[usize])]) -> Detection {
        Layout {
            shapes: names.iter().copied().collect(),
        }
        .detect()
    }

    fn resnet(blocks: [usize; 4], bottleneck: bool) -> Vec<String> {
        let mut names = vec!["conv1.weight".to_owned(), "fc.weight".to_owned()];
        for (l, &n) in blocks.iter().enumerate() {
            for b in 0..n {
                let convs = if bottleneck { 3 } else { 2 };
                for c in 1..=convs {
                    names.push(format!("layer{}.{b}.conv{c}.weight", l + 1));
                }
            }
        }
        names
    }

    fn detect_names(names: &[String]) -> Detection {
        let pairs: Vec<(&str, &[usize])> = names.iter().map(|n| (n.as_str(), &[][..])).collect();
        layout(&pairs)
    }

    #[test]
    fn resnets_are_told_apart_by_blocks_and_bottlenecks() {
        let arch = |b, bn| detect_names(&resnet(b, bn)).map(|(a, _)| a);
        assert_eq!(arch([2, 2, 2, 2], false), Ok(Arch::ResNet18));
        assert_eq!(arch([3, 4, 6, 3], false), Ok(Arch::ResNet34));
        assert_eq!(arch([3, 4, 6, 3], true), Ok(Arch::ResNet50));
        let err = arch([3, 4, 23, 3], true).expect_err("resnet101");
        assert!(err.contains("3-4-23-3 bottleneck"), "{err}");
    }

    #[test]
    fn timm_mobilenetv2_names_become_torchvision_names() {
        for (timm, torchvision) in [
            ("conv_stem.weight", "features.0.0.weight"),
            ("bn1.running_var", "features.0.1.running_var"),
            ("blocks.0.0.conv_dw.weight", "features.1.conv.0.0.weight"),
            ("blocks.0.0.bn1.bias", "features.1.conv.0.1.bias"),
            ("blocks.0.0.conv_pw.weight", "features.1.conv.1.weight"),
            ("blocks.0.0.bn2.weight", "features.1.conv.2.weight"),
            ("blocks.1.0.conv_pw.weight", "features.2.conv.0.0.weight"),
            (
                "blocks.1.1.bn2.running_mean",
                "features.3.conv.1.1.running_mean",
            ),
            ("blocks.3.3.conv_pwl.weight", "features.10.conv.2.weight"),
            ("blocks.6.0.bn3.bias", "features.17.conv.3.bias"),
            ("conv_head.weight", "features.18.0.weight"),
            ("bn2.weight", "features.18.1.weight"),
            ("classifier.bias", "classifier.1.bias"),
            (
                "blocks.1.0.se.conv_reduce.weight",
                "blocks.1.0.se.conv_reduce.weight",
            ),
        ] {
            assert_eq!(timm_mobilenetv2_name(timm), torchvision, "{timm}");
        }
    }

    #[test]
    fn unknown_layouts_say_what_they_look_like() {
        let err = detect_names(&[
            "features.0.0.weight".to_owned(),
            "features.1.block.0.0.weight".to_owned(),
        ])
        .expect_err("mobilenetv3");
        assert!(err.contains("torchvision network with 2"), "{err}");
        let err = detect_names(&["encoder.weight".to_owned()]).expect_err("unknown");
        assert!(err.contains("none of the layouts"), "{err}");
    }
}
