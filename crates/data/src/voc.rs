//! PASCAL VOC: one `<annotation>` XML per image, as ArcGIS's PASCAL_VOC_rectangles export and
//! labelImg write it.

use std::fmt::Write as _;
use std::path::Path;

use quick_xml::escape::escape;
use serde::Deserialize;

use crate::open::{ClassKey, ParsedLabel, RawBox, file_name};
use crate::{ClassInfo, Sample};

#[derive(Deserialize)]
struct Annotation {
    size: Option<Size>,
    #[serde(rename = "object", default)]
    objects: Vec<Object>,
}

#[derive(Deserialize)]
struct Size {
    width: Option<String>,
    height: Option<String>,
}

/// Numbers are read as text and parsed by hand so that a bad value is reported with its object
/// and field rather than as a deserializer position.
#[derive(Deserialize)]
struct Object {
    name: Option<String>,
    difficult: Option<String>,
    iscrowd: Option<String>,
    bndbox: Option<BndBox>,
}

#[derive(Deserialize)]
struct BndBox {
    xmin: Option<String>,
    ymin: Option<String>,
    xmax: Option<String>,
    ymax: Option<String>,
}

/// Parses one VOC file. Errors are reasons, one per problem.
pub(crate) fn parse(path: &Path) -> Result<ParsedLabel, Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| vec![format!("cannot read: {e}")])?;
    if !text.trim_start().starts_with('<') {
        return Err(vec![
            "malformed xml: the file does not start with an element".to_owned(),
        ]);
    }
    let ann: Annotation =
        quick_xml::de::from_str(&text).map_err(|e| vec![format!("malformed xml: {e}")])?;
    let mut errors = Vec::new();
    let size = ann.size.and_then(|s| {
        let w = s
            .width
            .as_deref()
            .map(str::trim)
            .and_then(|v| v.parse::<f64>().ok());
        let h = s
            .height
            .as_deref()
            .map(str::trim)
            .and_then(|v| v.parse::<f64>().ok());
        match (w, h) {
            // Some exporters write sizes as floats ("400.0").
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            (Some(w), Some(h)) if w >= 0.0 && h >= 0.0 => Some((w as u32, h as u32)),
            _ => None,
        }
    });
    let mut boxes = Vec::with_capacity(ann.objects.len());
    for (i, obj) in ann.objects.into_iter().enumerate() {
        let place = format!("object {}", i + 1);
        match object(obj, &place) {
            Ok(b) => boxes.push(b),
            Err(e) => errors.push(format!("{place}: {e}")),
        }
    }
    if errors.is_empty() {
        Ok(ParsedLabel { boxes, size })
    } else {
        Err(errors)
    }
}

fn object(obj: Object, place: &str) -> Result<RawBox, String> {
    let name = obj
        .name
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty())
        .ok_or("no <name>")?;
    let bb = obj.bndbox.ok_or("no <bndbox>")?;
    let coord = |v: Option<String>, field: &str| -> Result<f32, String> {
        let v = v.ok_or_else(|| format!("no <{field}> in <bndbox>"))?;
        v.trim()
            .parse::<f32>()
            .map_err(|_| format!("<{field}> is '{}', not a number", v.trim()))
    };
    Ok(RawBox {
        class: ClassKey::Name(name),
        xmin: coord(bb.xmin, "xmin")?,
        ymin: coord(bb.ymin, "ymin")?,
        xmax: coord(bb.xmax, "xmax")?,
        ymax: coord(bb.ymax, "ymax")?,
        difficult: flag(obj.difficult, "difficult")?,
        iscrowd: flag(obj.iscrowd, "iscrowd")?,
        place: place.to_owned(),
        source: None,
    })
}

fn flag(v: Option<String>, field: &str) -> Result<bool, String> {
    match v.as_deref().map(str::trim) {
        None | Some("" | "0" | "false" | "False") => Ok(false),
        Some("1" | "true" | "True") => Ok(true),
        Some(other) => Err(format!("<{field}> is '{other}', expected 0 or 1")),
    }
}

/// The VOC XML of one sample. Coordinates are written in Rust's shortest round-trip form, so
/// integer pixels stay integers ("203") and fractional ones survive exactly. With `scores`
/// (one per box, as a detector's predictions have), each object carries its `<score>`.
pub fn to_xml(
    sample: &Sample,
    classes: &[ClassInfo],
    image_folder: &str,
    scores: Option<&[f32]>,
) -> String {
    let mut x = String::new();
    // Writing to a String cannot fail; the results are ignored on purpose.
    let _ = writeln!(x, "<annotation>");
    let _ = writeln!(x, "  <folder>{}</folder>", escape(image_folder));
    let _ = writeln!(
        x,
        "  <filename>{}</filename>",
        escape(file_name(&sample.image))
    );
    let _ = writeln!(x, "  <size>");
    let _ = writeln!(x, "    <width>{}</width>", sample.width);
    let _ = writeln!(x, "    <height>{}</height>", sample.height);
    let _ = writeln!(x, "    <depth>{}</depth>", sample.bands);
    let _ = writeln!(x, "  </size>");
    let _ = writeln!(x, "  <segmented>0</segmented>");
    for (i, b) in sample.boxes.iter().enumerate() {
        let name = classes.get(b.class).map_or("", |c| c.name.as_str());
        let _ = writeln!(x, "  <object>");
        let _ = writeln!(x, "    <name>{}</name>", escape(name));
        if let Some(score) = scores.and_then(|s| s.get(i)) {
            let _ = writeln!(x, "    <score>{score}</score>");
        }
        let _ = writeln!(x, "    <pose>Unspecified</pose>");
        let _ = writeln!(x, "    <truncated>0</truncated>");
        let _ = writeln!(x, "    <difficult>{}</difficult>", u8::from(b.difficult));
        if b.iscrowd {
            let _ = writeln!(x, "    <iscrowd>1</iscrowd>");
        }
        let _ = writeln!(x, "    <bndbox>");
        let _ = writeln!(x, "      <xmin>{}</xmin>", b.xmin);
        let _ = writeln!(x, "      <ymin>{}</ymin>", b.ymin);
        let _ = writeln!(x, "      <xmax>{}</xmax>", b.xmax);
        let _ = writeln!(x, "      <ymax>{}</ymax>", b.ymax);
        let _ = writeln!(x, "    </bndbox>");
        let _ = writeln!(x, "  </object>");
    }
    let _ = writeln!(x, "</annotation>");
    x
}
