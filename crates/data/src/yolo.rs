//! YOLO (darknet / ultralytics) labels: one `.txt` per image, `class cx cy w h` per line,
//! normalised by the image size.
//!
//! YOLO has no difficult flag. The 0-based indices of difficult boxes (counting box lines only)
//! go to the side file `labels/<stem>.difficult`, one per line; other tools ignore it.
//!
//! Conversion keeps the crate's convention that a box's width is `xmax - xmin`, so
//! `cx = (xmin + xmax) / 2 / width` and `w = (xmax - xmin) / width`. Values are computed in `f64`
//! and written in shortest round-trip form, so reading them back is exact to `f32` precision.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;

use crate::image_io::ImageInfo;
use crate::open::{ClassKey, ParsedLabel, RawBox};
use crate::{DataError, Sample};

/// Parses one YOLO file, with its `.difficult` side file if present.
pub(crate) fn parse(path: &Path, info: &ImageInfo) -> Result<ParsedLabel, Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| vec![format!("cannot read: {e}")])?;
    let (w, h) = (f64::from(info.width), f64::from(info.height));
    let mut boxes = Vec::new();
    let mut errors = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let place = format!("line {}", i + 1);
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() != 5 {
            errors.push(format!(
                "{place}: malformed yolo line: expected 5 fields (class cx cy w h), found {}",
                f.len()
            ));
            continue;
        }
        let Ok(class) = f[0].parse::<u32>() else {
            errors.push(format!(
                "{place}: malformed yolo line: class '{}' is not a non-negative integer",
                f[0]
            ));
            continue;
        };
        let nums: Result<Vec<f64>, String> = f[1..]
            .iter()
            .map(|v| {
                v.parse::<f64>()
                    .map_err(|_| format!("{place}: malformed yolo line: '{v}' is not a number"))
            })
            .collect();
        let [cx, cy, bw, bh] = match nums.as_deref() {
            Ok(&[a, b, c, d]) => [a, b, c, d],
            Ok(_) => continue,
            Err(e) => {
                errors.push(e.clone());
                continue;
            }
        };
        #[allow(clippy::cast_possible_truncation)]
        boxes.push(RawBox {
            class: ClassKey::Id(class),
            xmin: ((cx - bw / 2.0) * w) as f32,
            ymin: ((cy - bh / 2.0) * h) as f32,
            xmax: ((cx + bw / 2.0) * w) as f32,
            ymax: ((cy + bh / 2.0) * h) as f32,
            difficult: false,
            iscrowd: false,
            place,
            source: None,
        });
    }
    let side = path.with_extension("difficult");
    if side.is_file() {
        match read_difficult(&side) {
            Ok(indices) => {
                for i in indices {
                    match boxes.get_mut(i) {
                        Some(b) => b.difficult = true,
                        None => errors.push(format!(
                            "{} names box {i}, but there are only {} boxes",
                            side.display(),
                            boxes.len()
                        )),
                    }
                }
            }
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(ParsedLabel { boxes, size: None })
    } else {
        Err(errors)
    }
}

fn read_difficult(path: &Path) -> Result<BTreeSet<usize>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.parse::<usize>()
                .map_err(|_| format!("{}: '{l}' is not a box index", path.display()))
        })
        .collect()
}

/// The label text and the `.difficult` side-file text (`None` when no box is difficult).
pub(crate) fn to_txt(sample: &Sample, path: &Path) -> Result<(String, Option<String>), DataError> {
    if sample.width == 0 || sample.height == 0 {
        return Err(DataError::Write {
            path: path.to_path_buf(),
            reason: format!("image {} has zero size", sample.stem),
        });
    }
    let (w, h) = (f64::from(sample.width), f64::from(sample.height));
    let mut t = String::new();
    let mut difficult = String::new();
    for (i, b) in sample.boxes.iter().enumerate() {
        let (x0, y0, x1, y1) = (
            f64::from(b.xmin),
            f64::from(b.ymin),
            f64::from(b.xmax),
            f64::from(b.ymax),
        );
        // Writing to a String cannot fail.
        let _ = writeln!(
            t,
            "{} {} {} {} {}",
            b.class,
            (x0 + x1) / 2.0 / w,
            (y0 + y1) / 2.0 / h,
            (x1 - x0) / w,
            (y1 - y0) / h
        );
        if b.difficult {
            let _ = writeln!(difficult, "{i}");
        }
    }
    Ok((t, (!difficult.is_empty()).then_some(difficult)))
}
