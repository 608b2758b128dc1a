//! KITTI object labels: one `.txt` per image, one object per line,
//! `type truncated occluded alpha left top right bottom h w l x y z ry [score]`.
//!
//! KITTI has no difficult flag. We store a difficult box as `occluded = 3` ("unknown") and read
//! `occluded == 3` back as difficult; every other box is written with `occluded = 0`. Objects of
//! type `DontCare` are regions to ignore and are not read as boxes. A type that is an unsigned
//! integer is a class value, as ArcGIS's KITTI_rectangles export writes it: the export's `.emd`
//! gives its name, and without an `.emd` the value is the name.

use std::fmt::Write as _;
use std::path::Path;

use crate::open::{ClassKey, ParsedLabel, RawBox};
use crate::{ClassInfo, Sample};

/// Parses one KITTI file. Errors are reasons, one per bad line.
pub(crate) fn parse(path: &Path) -> Result<ParsedLabel, Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| vec![format!("cannot read: {e}")])?;
    let mut boxes = Vec::new();
    let mut errors = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let place = format!("line {}", i + 1);
        match parse_line(line, &place) {
            Ok(Some(b)) => boxes.push(b),
            Ok(None) => {}
            Err(e) => errors.push(format!("{place}: {e}")),
        }
    }
    if errors.is_empty() {
        Ok(ParsedLabel { boxes, size: None })
    } else {
        Err(errors)
    }
}

fn parse_line(line: &str, place: &str) -> Result<Option<RawBox>, String> {
    let f: Vec<&str> = line.split_whitespace().collect();
    if !(15..=16).contains(&f.len()) {
        return Err(format!(
            "malformed kitti line: expected 15 or 16 fields, found {}",
            f.len()
        ));
    }
    if f[0] == "DontCare" {
        return Ok(None);
    }
    let num = |i: usize, what: &str| -> Result<f32, String> {
        f[i].parse::<f32>()
            .map_err(|_| format!("malformed kitti line: {what} is '{}', not a number", f[i]))
    };
    // Checked for syntax even though unused, so a shifted column is caught.
    num(1, "truncated")?;
    let occluded: i32 = f[2].parse().map_err(|_| {
        format!(
            "malformed kitti line: occluded is '{}', not an integer",
            f[2]
        )
    })?;
    Ok(Some(RawBox {
        // A class value, as ArcGIS writes it, is resolved against the `.emd` when the classes
        // are read.
        class: ClassKey::Name(f[0].to_owned()),
        xmin: num(4, "left")?,
        ymin: num(5, "top")?,
        xmax: num(6, "right")?,
        ymax: num(7, "bottom")?,
        difficult: occluded == 3,
        iscrowd: false,
        place: place.to_owned(),
        source: None,
    }))
}

/// The KITTI text of one sample. 3-D fields are KITTI's "unknown" values.
pub(crate) fn to_txt(sample: &Sample, classes: &[ClassInfo]) -> String {
    let mut t = String::new();
    for b in &sample.boxes {
        let name = classes.get(b.class).map_or("", |c| c.name.as_str());
        let occluded = if b.difficult { 3 } else { 0 };
        // Writing to a String cannot fail.
        let _ = writeln!(
            t,
            "{name} 0.00 {occluded} -10 {} {} {} {} -1 -1 -1 -1000 -1000 -1000 -10",
            b.xmin, b.ymin, b.xmax, b.ymax
        );
    }
    t
}
