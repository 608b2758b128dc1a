//! What ArcGIS Pro's "Export Training Data For Deep Learning" writes beside the chips and
//! labels: the model definition `esri_model_definition.emd` (classes with their colours, chip
//! size, model type, bands), `map.txt` (one `image label` pair per line, Windows backslashes),
//! `stats.txt` (a text summary) and `esri_accumulated_stats.json` (of which only `MetaDataMode`,
//! the export's metadata format, is read; its other statistics are left alone on purpose).
//!
//! These are files another program writes, with many more fields than we use, so their types
//! accept unknown fields; every field we do read is typed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::files::{Stems, ext_lower, list_dir, read_text};
use crate::{BadSample, ClassInfo, DataError, Format};

/// The model definition's usual file name; any other `*.emd` in the root is read too.
pub(crate) const EMD_NAME: &str = "esri_model_definition.emd";
/// The pair list.
pub(crate) const MAP_NAME: &str = "map.txt";
/// The text summary.
pub(crate) const STATS_NAME: &str = "stats.txt";
/// The JSON statistics, whose `MetaDataMode` names the export's format.
pub(crate) const ACCUMULATED_STATS_NAME: &str = "esri_accumulated_stats.json";

/// One class of an ArcGIS export, as its `.emd` lists it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ArcgisClass {
    /// `Value`: the class value labels and masks use.
    pub value: u32,
    /// `Name`.
    pub name: String,
    /// `Color` as RGB; `None` when absent or not three values in 0..=255 (ArcGIS writes
    /// `[-1, -1, -1]` for "no colour").
    pub color: Option<[u8; 3]>,
}

/// One `label: number` line of `stats.txt`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct StatLine {
    /// 1-based line number.
    pub line: usize,
    /// The text before the number, trimmed.
    pub label: String,
    /// The number.
    pub value: f64,
}

/// What an ArcGIS export folder says about itself, beside its chips and labels.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct ArcgisExport {
    /// `MetaDataMode` of `esri_accumulated_stats.json` (`PASCAL_VOC_rectangles`, ...).
    pub metadata_mode: Option<String>,
    /// The `.emd` read, if any.
    pub model_definition: Option<PathBuf>,
    /// `ModelType` of the `.emd` (`ObjectDetection`, `ImageClassification`, ...).
    pub model_type: Option<String>,
    /// `ImageWidth` and `ImageHeight` of the `.emd`: the chip size.
    pub chip_size: Option<[u32; 2]>,
    /// `ExtractBands` of the `.emd`: the source bands the chips hold.
    pub extract_bands: Vec<u32>,
    /// The `.emd`'s classes with their colours.
    pub classes: Vec<ArcgisClass>,
    /// How many image/label pairs `map.txt` lists, when it is a pair list.
    pub map_pairs: Option<usize>,
    /// The `label: number` lines of `stats.txt`, as written.
    pub stats: Vec<StatLine>,
    /// Disagreements between the sidecars and what was read (never fatal).
    pub warnings: Vec<String>,
}

#[derive(Deserialize)]
struct EmdFile {
    #[serde(rename = "Classes", default)]
    classes: Vec<EmdClassFile>,
    #[serde(rename = "ModelType", default)]
    model_type: Option<String>,
    #[serde(rename = "ImageWidth", default)]
    image_width: Option<f64>,
    #[serde(rename = "ImageHeight", default)]
    image_height: Option<f64>,
    #[serde(rename = "ExtractBands", default)]
    extract_bands: Option<Vec<f64>>,
}

/// Older exports spell the keys `ClassValue` and `ClassName`.
#[derive(Deserialize)]
struct EmdClassFile {
    #[serde(rename = "Value", alias = "ClassValue")]
    value: u32,
    #[serde(rename = "Name", alias = "ClassName")]
    name: String,
    #[serde(rename = "Color", default)]
    color: Option<Vec<f64>>,
}

#[derive(Deserialize)]
struct AccumulatedStatsFile {
    #[serde(rename = "MetaDataMode", default)]
    metadata_mode: Option<String>,
}

/// A parsed `.emd`.
pub(crate) struct Emd {
    pub classes: Vec<ArcgisClass>,
    pub model_type: Option<String>,
    pub chip_size: Option<[u32; 2]>,
    pub extract_bands: Vec<u32>,
}

impl Emd {
    /// The class list, or `None` when the `.emd` lists no classes.
    pub fn class_infos(&self) -> Option<Vec<ClassInfo>> {
        (!self.classes.is_empty()).then(|| {
            self.classes
                .iter()
                .map(|c| ClassInfo {
                    value: c.value,
                    name: c.name.clone(),
                })
                .collect()
        })
    }
}

/// Parses a model definition's text; the error is the reason.
pub(crate) fn parse_emd_text(text: &str) -> Result<Emd, String> {
    let f: EmdFile = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let whole = |v: f64| -> Option<u32> {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        (v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v <= f64::from(u32::MAX))
            .then_some(v as u32)
    };
    let classes = f
        .classes
        .into_iter()
        .map(|c| ArcgisClass {
            value: c.value,
            name: c.name,
            color: c.color.and_then(|rgb| match rgb.as_slice() {
                [r, g, b] => {
                    let byte = |v: f64| whole(v).and_then(|v| u8::try_from(v).ok());
                    Some([byte(*r)?, byte(*g)?, byte(*b)?])
                }
                _ => None,
            }),
        })
        .collect();
    let chip_size = match (
        f.image_width.and_then(whole),
        f.image_height.and_then(whole),
    ) {
        (Some(w), Some(h)) if w > 0 && h > 0 => Some([w, h]),
        _ => None,
    };
    Ok(Emd {
        classes,
        model_type: f.model_type,
        chip_size,
        extract_bands: f
            .extract_bands
            .unwrap_or_default()
            .into_iter()
            .filter_map(whole)
            .collect(),
    })
}

/// The model definition of an export: `esri_model_definition.emd`, else the first `*.emd` in
/// the root.
pub(crate) fn find_emd(root: &Path) -> Result<Option<PathBuf>, DataError> {
    let emd = root.join(EMD_NAME);
    if emd.is_file() {
        return Ok(Some(emd));
    }
    Ok(list_dir(root)?.into_iter().find(|p| ext_lower(p) == "emd"))
}

/// Reads and parses the `.emd` at `path`.
pub(crate) fn read_emd(path: &Path) -> Result<Emd, DataError> {
    parse_emd_text(&read_text(path)?).map_err(|reason| DataError::Parse {
        path: path.to_path_buf(),
        reason,
    })
}

/// `MetaDataMode` of `esri_accumulated_stats.json`, if the file is there and says it. A file
/// that is not the JSON we expect is passed over (its statistics are not needed).
pub(crate) fn metadata_mode(root: &Path) -> Option<String> {
    let text = std::fs::read_to_string(root.join(ACCUMULATED_STATS_NAME)).ok()?;
    serde_json::from_str::<AccumulatedStatsFile>(&text)
        .ok()?
        .metadata_mode
}

/// What an ArcGIS metadata format is read as: `Ok(format)`, or `Err(())` for the formats
/// autodl does not read (Labeled_Tiles, MultiLabeled_Tiles, Export_Tiles, CycleGAN,
/// SuperResolution, ...).
pub(crate) fn format_of_mode(mode: &str) -> Result<Format, ()> {
    match mode {
        "PASCAL_VOC_rectangles" => Ok(Format::PascalVoc),
        "KITTI_rectangles" => Ok(Format::Kitti),
        "Classified_Tiles" => Ok(Format::ClassifiedTiles),
        "RCNN_Masks" => Ok(Format::RcnnMasks),
        _ => Err(()),
    }
}

/// One `image label` line of `map.txt`, paths made relative to the root with `/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct MapEntry {
    /// 1-based.
    pub line: usize,
    /// As written.
    pub image_text: String,
    /// As written.
    pub label_text: String,
    /// Resolved against the root.
    pub image: PathBuf,
    /// Resolved against the root.
    pub label: PathBuf,
}

/// A `map.txt` path: backslashes become separators; relative paths are taken from the root.
fn resolve(root: &Path, text: &str) -> PathBuf {
    let rel: PathBuf = text.split(['\\', '/']).filter(|s| !s.is_empty()).collect();
    if text.starts_with(['/', '\\']) || text.get(1..2) == Some(":") {
        // An absolute path (`C:\...` or `/...`), kept as written.
        PathBuf::from(text.replace('\\', "/"))
    } else {
        root.join(rel)
    }
}

/// Whether `map.txt` is a class list (`value name` lines, as some tools write) rather than
/// ArcGIS's pair list.
pub(crate) fn map_is_class_list(text: &str) -> bool {
    crate::classes::looks_like_value_names(text)
}

/// Parses the lines of a pair list; malformed lines are reasons naming their line.
pub(crate) fn parse_map(root: &Path, text: &str) -> (Vec<MapEntry>, Vec<String>) {
    let mut entries = Vec::new();
    let mut errors = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            [image, label] => entries.push(MapEntry {
                line: line_no,
                image_text: (*image).to_owned(),
                label_text: (*label).to_owned(),
                image: resolve(root, image),
                label: resolve(root, label),
            }),
            _ => errors.push(format!(
                "line {line_no}: expected an image path and a label path, found {} field(s)",
                fields.len()
            )),
        }
    }
    (entries, errors)
}

/// The pair list of an export: `None` without `map.txt` or when it is a class list.
/// Malformed lines become bad samples naming `map.txt` and the line.
pub(crate) fn read_map(
    root: &Path,
    bad: &mut Vec<BadSample>,
) -> Result<Option<(PathBuf, Vec<MapEntry>)>, DataError> {
    let path = root.join(MAP_NAME);
    if !path.is_file() {
        return Ok(None);
    }
    let text = read_text(&path)?;
    if map_is_class_list(&text) {
        return Ok(None);
    }
    let (entries, errors) = parse_map(root, &text);
    bad.extend(errors.into_iter().map(|e| BadSample::new(&path, e)));
    Ok(Some((path, entries)))
}

/// The images `map.txt` lists, keyed by stem, each with its entry; a missing image or label
/// file, an image listed twice, or a label file whose extension is not among `label_exts` is a
/// bad sample naming `map.txt` and the line. `label_exts` of `None` leaves the label column
/// unchecked (RCNN_Masks lists one mask path per chip but keeps masks per class folder).
pub(crate) fn map_images(
    map_path: &Path,
    entries: &[MapEntry],
    label_exts: Option<&[&str]>,
    bad: &mut Vec<BadSample>,
) -> BTreeMap<String, MapEntry> {
    let mut out = BTreeMap::new();
    let mut first_line: HashMap<PathBuf, usize> = HashMap::new();
    for e in entries {
        let fail = |reason: String| BadSample::new(map_path, format!("line {}: {reason}", e.line));
        if let Some(first) = first_line.get(&e.image) {
            bad.push(fail(format!(
                "image '{}' is listed again (first on line {first})",
                e.image_text
            )));
            continue;
        }
        first_line.insert(e.image.clone(), e.line);
        if !e.image.is_file() {
            bad.push(fail(format!(
                "image '{}' does not exist (looked for {})",
                e.image_text,
                e.image.display()
            )));
            continue;
        }
        if let Some(exts) = label_exts {
            if !exts.contains(&ext_lower(&e.label).as_str()) {
                bad.push(fail(format!(
                    "label '{}' is not a .{} file",
                    e.label_text,
                    exts.join(" or .")
                )));
                continue;
            }
            if !e.label.is_file() {
                bad.push(fail(format!(
                    "label '{}' does not exist (looked for {})",
                    e.label_text,
                    e.label.display()
                )));
                continue;
            }
        }
        let Some(stem) = crate::files::stem_of(&e.image) else {
            bad.push(fail(format!(
                "image name '{}' is not valid utf-8",
                e.image_text
            )));
            continue;
        };
        if out.contains_key(&stem) {
            bad.push(fail(format!(
                "image '{}' has the same stem as an image listed before",
                e.image_text
            )));
            continue;
        }
        out.insert(stem, e.clone());
    }
    out
}

/// Images of the image folder that `map.txt` does not list are bad samples. (One it lists on a
/// line that is bad is reported for that line only.)
pub(crate) fn unlisted_images(
    images: &Stems,
    entries: &[MapEntry],
    map_path: &Path,
    bad: &mut Vec<BadSample>,
) {
    let listed: HashSet<&PathBuf> = entries.iter().map(|e| &e.image).collect();
    for image in images.files.values() {
        if !listed.contains(image) {
            bad.push(BadSample::new(
                image,
                format!("image is not listed in {}", map_path.display()),
            ));
        }
    }
}

/// Parses `stats.txt` loosely: every line that ends in a number after `:`, `=` or a tab is
/// kept with its label; everything else is passed over.
pub(crate) fn parse_stats(text: &str) -> Vec<StatLine> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        let Some(pos) = line.rfind([':', '=', '\t']) else {
            continue;
        };
        let (label, value) = (line[..pos].trim(), line[pos + 1..].trim());
        let value = value.replace(',', "");
        if let Ok(v) = value.parse::<f64>()
            && v.is_finite()
            && !label.is_empty()
        {
            out.push(StatLine {
                line: i + 1,
                label: label.to_owned(),
                value: v,
            });
        }
    }
    out
}

/// What was read from an export, to check `stats.txt` against.
pub(crate) struct ReadCounts {
    /// Images found (valid or not).
    pub images: usize,
    /// Boxes (features) of the valid samples; `None` when they cannot be compared (pixel
    /// classification, or samples were left out).
    pub boxes: Option<usize>,
}

/// Lines of `stats.txt` that state the number of image chips, and of features in all.
fn stat_kind(label: &str) -> Option<&'static str> {
    let l = label.to_lowercase();
    let about_size = [
        "size", "pixel", "width", "height", "band", "min", "max", "mean",
    ]
    .iter()
    .any(|w| l.contains(w));
    if about_size {
        return None;
    }
    let features = l.contains("feature") || l.contains("object");
    let images = l.contains("image") || l.contains("chip") || l.contains("tile");
    let total = l.contains("total") || l.contains("number") || l.starts_with("num");
    match (features, images) {
        (true, _) if total && !l.contains("with") && !l.contains("per") => Some("features"),
        (false, true) if total => Some("images"),
        _ => None,
    }
}

/// Everything the sidecars of `root` say, checked against what was read; `None` when the folder
/// has no ArcGIS sidecar at all.
pub(crate) fn read_export(
    root: &Path,
    counts: &ReadCounts,
) -> Result<Option<ArcgisExport>, DataError> {
    let emd_path = find_emd(root)?;
    let mode = metadata_mode(root);
    let map_path = root.join(MAP_NAME);
    let stats_path = root.join(STATS_NAME);
    let has_stats_json = root.join(ACCUMULATED_STATS_NAME).is_file();
    if emd_path.is_none() && mode.is_none() && !has_stats_json && !stats_path.is_file() {
        // A map.txt alone is not enough to call the folder an export.
        let map_pairs = map_path.is_file() && !map_is_class_list(&read_text(&map_path)?);
        if !map_pairs {
            return Ok(None);
        }
    }
    let mut out = ArcgisExport {
        metadata_mode: mode,
        ..ArcgisExport::default()
    };
    if let Some(path) = emd_path {
        let emd = read_emd(&path)?;
        out.model_type = emd.model_type;
        out.chip_size = emd.chip_size;
        out.extract_bands = emd.extract_bands;
        out.classes = emd.classes;
        out.model_definition = Some(path);
    }
    if map_path.is_file() {
        let text = read_text(&map_path)?;
        if !map_is_class_list(&text) {
            out.map_pairs = Some(parse_map(root, &text).0.len());
        }
    }
    if stats_path.is_file() {
        out.stats = parse_stats(&read_text(&stats_path)?);
        for s in &out.stats {
            #[allow(clippy::cast_precision_loss)]
            let (what, read) = match stat_kind(&s.label) {
                Some("images") => ("image chips", counts.images as f64),
                Some("features") => match counts.boxes {
                    Some(n) => ("features", n as f64),
                    None => continue,
                },
                _ => continue,
            };
            if (s.value - read).abs() > 0.5 {
                out.warnings.push(format!(
                    "{STATS_NAME} line {} says {} {what} ('{}') but {read} were read",
                    s.line, s.value, s.label
                ));
            }
        }
    }
    if let Some(map) = out.map_pairs
        && map != counts.images
    {
        out.warnings.push(format!(
            "{MAP_NAME} lists {map} image(s) but the image folder holds {}",
            counts.images
        ));
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emd_fields_and_colours() {
        let emd = parse_emd_text(
            r#"{"ModelType": "ObjectDetection", "ImageHeight": 256, "ImageWidth": 128,
               "ExtractBands": [0, 1, 2],
               "Classes": [{"Value": 1, "Name": "tree", "Color": [10, 200, 30]},
                           {"ClassValue": 2, "ClassName": "car", "Color": [-1, -1, -1]}],
               "Other": {"nested": true}}"#,
        )
        .unwrap();
        assert_eq!(emd.chip_size, Some([128, 256]));
        assert_eq!(emd.model_type.as_deref(), Some("ObjectDetection"));
        assert_eq!(emd.extract_bands, [0, 1, 2]);
        assert_eq!(emd.classes[0].color, Some([10, 200, 30]));
        assert_eq!(emd.classes[1].name, "car");
        assert_eq!(emd.classes[1].color, None);
    }

    #[test]
    fn map_lines_with_either_slash() {
        let root = Path::new("/data/export");
        let (entries, errors) = parse_map(
            root,
            "images\\000000000.tif labels\\000000000.xml\n\nimages/1.tif labels/1.xml\nbad\n",
        );
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].image, root.join("images").join("000000000.tif"));
        assert_eq!(entries[1].label, root.join("labels").join("1.xml"));
        assert_eq!(
            errors,
            ["line 4: expected an image path and a label path, found 1 field(s)"]
        );
    }

    #[test]
    fn stats_lines_are_read_loosely() {
        let s = parse_stats(
            "Export statistics\nTotal number of image chips: 12\nTotal features = 1,010\n\
             Chip size: 256\nfree text without a number: abc\n",
        );
        let kinds: Vec<(Option<&str>, f64)> =
            s.iter().map(|l| (stat_kind(&l.label), l.value)).collect();
        assert_eq!(
            kinds,
            [
                (Some("images"), 12.0),
                (Some("features"), 1010.0),
                (None, 256.0)
            ]
        );
    }
}
