//! Class lists: `classes.txt`, `obj.names`, YOLO's `data.yaml`, ArcGIS's `.emd` and `map.txt`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::arcgis::{find_emd, read_emd};
use crate::files::read_text;
use crate::{ClassInfo, DataError};

/// A class list and the file it came from.
#[derive(Debug, Clone)]
pub(crate) struct ClassList {
    pub classes: Vec<ClassInfo>,
    pub source: PathBuf,
}

impl ClassList {
    /// The file name, for messages like "not in classes.txt".
    pub fn source_name(&self) -> String {
        self.source
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.source.display().to_string())
    }
}

/// The first existing file among `names` in `root`, then in `root/labels`.
fn find_file(root: &Path, names: &[&str]) -> Option<PathBuf> {
    [root.to_path_buf(), root.join("labels")]
        .iter()
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| p.is_file())
}

/// Detection class list: for PASCAL VOC, KITTI and RCNN_Masks an ArcGIS `.emd` with classes,
/// else `classes.txt`; for YOLO `classes.txt`, `obj.names` or `data.yaml`.
pub(crate) fn detection_classes(root: &Path, yolo: bool) -> Result<Option<ClassList>, DataError> {
    if !yolo && let Some(list) = emd_classes(root)? {
        return Ok(Some(list));
    }
    let names: &[&str] = if yolo {
        &["classes.txt", "obj.names"]
    } else {
        &["classes.txt"]
    };
    if let Some(path) = find_file(root, names) {
        return Ok(Some(ClassList {
            classes: parse_class_txt(&path)?,
            source: path,
        }));
    }
    if yolo && let Some(path) = find_file(root, &["data.yaml", "dataset.yaml"]) {
        return Ok(Some(ClassList {
            classes: parse_yaml_names(&path)?,
            source: path,
        }));
    }
    Ok(None)
}

/// Pixel-classification class list: an ArcGIS `.emd`, else `map.txt` when it is a class list
/// (in ArcGIS exports it pairs image and label paths instead, and is then passed over), else
/// `classes.txt`.
pub(crate) fn tile_classes(root: &Path) -> Result<Option<ClassList>, DataError> {
    if let Some(list) = emd_classes(root)? {
        return Ok(Some(list));
    }
    let map = root.join("map.txt");
    if map.is_file() && looks_like_value_names(&read_text(&map)?) {
        return Ok(Some(ClassList {
            classes: parse_class_txt(&map)?,
            source: map,
        }));
    }
    let txt = root.join("classes.txt");
    if txt.is_file() {
        return Ok(Some(ClassList {
            classes: parse_class_txt(&txt)?,
            source: txt,
        }));
    }
    Ok(None)
}

fn content_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
}

/// A `value name` line: an unsigned integer, whitespace, then a name.
fn split_value_name(line: &str) -> Option<(u32, &str)> {
    let (value, name) = line.split_once(char::is_whitespace)?;
    let name = name.trim();
    if name.is_empty() {
        return None;
    }
    Some((value.parse().ok()?, name))
}

pub(crate) fn looks_like_value_names(text: &str) -> bool {
    let mut lines = content_lines(text).peekable();
    lines.peek().is_some() && lines.all(|(_, l)| split_value_name(l).is_some())
}

/// `classes.txt` comes in two shapes, both in use: one name per line (values 0, 1, ...) or
/// `value name` per line. It is the second when every line starts with an integer.
pub(crate) fn parse_class_txt(path: &Path) -> Result<Vec<ClassInfo>, DataError> {
    let text = read_text(path)?;
    let mut classes = Vec::new();
    if looks_like_value_names(&text) {
        for (_, line) in content_lines(&text) {
            if let Some((value, name)) = split_value_name(line) {
                classes.push(ClassInfo {
                    value,
                    name: name.to_owned(),
                });
            }
        }
    } else {
        for (value, (_, name)) in (0u32..).zip(content_lines(&text)) {
            classes.push(ClassInfo {
                value,
                name: name.to_owned(),
            });
        }
    }
    check_unique(path, &classes)?;
    Ok(classes)
}

fn check_unique(path: &Path, classes: &[ClassInfo]) -> Result<(), DataError> {
    if classes.is_empty() {
        return Err(DataError::Parse {
            path: path.to_path_buf(),
            reason: "no classes listed".to_owned(),
        });
    }
    let mut values = HashSet::new();
    let mut names = HashSet::new();
    for c in classes {
        if !values.insert(c.value) {
            return Err(DataError::Parse {
                path: path.to_path_buf(),
                reason: format!("class value {} is listed twice", c.value),
            });
        }
        if !names.insert(c.name.as_str()) {
            return Err(DataError::Parse {
                path: path.to_path_buf(),
                reason: format!("class name '{}' is listed twice", c.name),
            });
        }
    }
    Ok(())
}

/// The `names:` of a YOLO `data.yaml`, in any of its three spellings: a flow list
/// (`names: [a, b]`), a block list (`- a`) or a block map (`0: a`). A YAML parser would be a
/// dependency for one key.
fn parse_yaml_names(path: &Path) -> Result<Vec<ClassInfo>, DataError> {
    let text = read_text(path)?;
    let err = |reason: &str| DataError::Parse {
        path: path.to_path_buf(),
        reason: reason.to_owned(),
    };
    let unquote = |s: &str| s.trim().trim_matches(|c| c == '\'' || c == '"').to_owned();
    let mut lines = text.lines();
    let mut classes = Vec::new();
    let mut found = false;
    while let Some(line) = lines.next() {
        let Some(rest) = line.strip_prefix("names:") else {
            continue;
        };
        found = true;
        let rest = rest.split(" #").next().unwrap_or_default().trim();
        if let Some(inner) = rest.strip_prefix('[') {
            let inner = inner
                .strip_suffix(']')
                .ok_or_else(|| err("names: [ is not closed on the same line"))?;
            for (value, name) in (0u32..).zip(inner.split(',')) {
                classes.push(ClassInfo {
                    value,
                    name: unquote(name),
                });
            }
        } else if rest.is_empty() {
            for line in lines.by_ref() {
                let item = line.trim();
                if item.is_empty() || item.starts_with('#') {
                    continue;
                }
                if !line.starts_with([' ', '\t', '-']) {
                    break;
                }
                if let Some(name) = item.strip_prefix('-') {
                    let value = u32::try_from(classes.len()).map_err(|_| err("too many names"))?;
                    classes.push(ClassInfo {
                        value,
                        name: unquote(name),
                    });
                } else if let Some((value, name)) = item.split_once(':') {
                    let value = value
                        .trim()
                        .parse()
                        .map_err(|_| err(&format!("names entry '{item}' has no integer key")))?;
                    classes.push(ClassInfo {
                        value,
                        name: unquote(name),
                    });
                } else {
                    return Err(err(&format!("cannot read names entry '{item}'")));
                }
            }
        } else {
            return Err(err(
                "names: is neither a [list] nor followed by indented entries",
            ));
        }
        break;
    }
    if !found {
        return Err(err("no names: key"));
    }
    check_unique(path, &classes)?;
    Ok(classes)
}

/// The `Classes` of the export's ArcGIS model definition; `None` without an `.emd` or when it
/// lists no classes, as some detection exports do.
fn emd_classes(root: &Path) -> Result<Option<ClassList>, DataError> {
    let Some(path) = find_emd(root)? else {
        return Ok(None);
    };
    let Some(classes) = read_emd(&path)?.class_infos() else {
        return Ok(None);
    };
    check_unique(&path, &classes)?;
    Ok(Some(ClassList {
        classes,
        source: path,
    }))
}

/// Whether a class name means "no data" and so marks pixels that are not scored: `nodata`,
/// `no data`, `no-data`, `no_data`, alone or followed by more (`nodata (ignore)`).
pub(crate) fn is_nodata_name(name: &str) -> bool {
    let n = name.trim().to_lowercase().replace(['-', '_'], " ");
    ["no data", "nodata"].iter().any(|p| {
        n.strip_prefix(p)
            .is_some_and(|rest| !rest.starts_with(|c: char| c.is_alphanumeric()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodata_names() {
        for n in [
            "nodata",
            "NoData",
            "no data",
            "No-Data",
            "no_data",
            "nodata (ignore)",
            "no data (ignore)",
        ] {
            assert!(is_nodata_name(n), "{n}");
        }
        for n in ["forest", "nodatabase", "notes", "data"] {
            assert!(!is_nodata_name(n), "{n}");
        }
    }

    #[test]
    fn yaml_names() -> Result<(), DataError> {
        let dir = tempfile::tempdir().map_err(|e| DataError::io("tmp", e))?;
        let p = dir.path().join("data.yaml");
        for text in [
            "path: x\nnames: [tree, 'car']\nnc: 2\n",
            "names:\n  - tree\n  - car\nnc: 2\n",
            "names:\n  0: tree\n  1: \"car\"\n",
        ] {
            std::fs::write(&p, text).map_err(|e| DataError::io(&p, e))?;
            let names: Vec<String> = parse_yaml_names(&p)?.into_iter().map(|c| c.name).collect();
            assert_eq!(names, ["tree", "car"], "{text}");
        }
        Ok(())
    }
}
