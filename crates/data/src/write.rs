//! Writing a detection dataset in any detection format, such that [`crate::open`] on the result
//! gives the same samples, boxes, classes and split.

use std::fs;
use std::path::Path;

use crate::open::file_name;
use crate::{ClassInfo, DataError, Dataset, Format, Task, coco, kitti, voc, yolo};

/// Writes `ds` as PASCAL VOC into the empty (or absent) folder `out`: `images/`,
/// `labels/<stem>.xml`, `classes.txt` and `splits/`.
pub fn write_voc(ds: &Dataset, out: &Path) -> Result<(), DataError> {
    write(ds, out, Format::PascalVoc)
}

/// Writes `ds` as KITTI into the empty (or absent) folder `out`: `images/`, `labels/<stem>.txt`,
/// `classes.txt` and `splits/`. Difficult boxes get `occluded = 3`.
pub fn write_kitti(ds: &Dataset, out: &Path) -> Result<(), DataError> {
    write(ds, out, Format::Kitti)
}

/// Writes `ds` as COCO into the empty (or absent) folder `out`: `images/`, `annotations.json`
/// and `splits/`.
pub fn write_coco(ds: &Dataset, out: &Path) -> Result<(), DataError> {
    write(ds, out, Format::Coco)
}

/// Writes `ds` as YOLO into the empty (or absent) folder `out`: `images/`, `labels/<stem>.txt`
/// (with `labels/<stem>.difficult` where boxes are difficult), `classes.txt` and `splits/`.
pub fn write_yolo(ds: &Dataset, out: &Path) -> Result<(), DataError> {
    write(ds, out, Format::Yolo)
}

fn write_file(path: &Path, text: &str) -> Result<(), DataError> {
    fs::write(path, text).map_err(|e| DataError::io(path, e))
}

fn create_dir(path: &Path) -> Result<(), DataError> {
    fs::create_dir_all(path).map_err(|e| DataError::io(path, e))
}

fn write(ds: &Dataset, out: &Path, format: Format) -> Result<(), DataError> {
    if ds.task != Task::Detection {
        return Err(DataError::WrongTask {
            task: ds.task,
            format,
        });
    }
    // Stale labels from an earlier run would become bad samples (or worse, valid ones), and
    // writing into the source folder would copy images onto themselves.
    if out.exists() {
        let mut entries = fs::read_dir(out).map_err(|e| DataError::io(out, e))?;
        if entries.next().is_some() {
            return Err(DataError::Write {
                path: out.to_path_buf(),
                reason: "the output folder is not empty".to_owned(),
            });
        }
    }
    check_class_names(&ds.classes, out, format)?;
    let images = out.join("images");
    create_dir(&images)?;
    for (_, s) in ds.samples() {
        let dst = images.join(file_name(&s.image));
        fs::copy(&s.image, &dst).map_err(|e| DataError::io(&s.image, e))?;
    }

    let labels = out.join("labels");
    match format {
        Format::PascalVoc | Format::Kitti | Format::Yolo => {
            create_dir(&labels)?;
            write_file(&out.join("classes.txt"), &class_txt(&ds.classes))?;
        }
        Format::Coco | Format::ClassifiedTiles | Format::RcnnMasks => {}
    }
    match format {
        Format::PascalVoc => {
            for (_, s) in ds.samples() {
                let xml = voc::to_xml(s, &ds.classes, "images", None);
                write_file(&labels.join(format!("{}.xml", s.stem)), &xml)?;
            }
        }
        Format::Kitti => {
            for (_, s) in ds.samples() {
                let txt = kitti::to_txt(s, &ds.classes);
                write_file(&labels.join(format!("{}.txt", s.stem)), &txt)?;
            }
        }
        Format::Yolo => {
            for (_, s) in ds.samples() {
                let path = labels.join(format!("{}.txt", s.stem));
                let (txt, difficult) = yolo::to_txt(s, &path)?;
                write_file(&path, &txt)?;
                if let Some(d) = difficult {
                    write_file(&path.with_extension("difficult"), &d)?;
                }
            }
        }
        Format::Coco => {
            let path = out.join("annotations.json");
            let doc = coco::to_json(ds);
            let text = serde_json::to_string_pretty(&doc).map_err(|e| DataError::Write {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            write_file(&path, &text)?;
        }
        // No writer for masks: boxes cannot become instance masks.
        Format::ClassifiedTiles | Format::RcnnMasks => {
            return Err(DataError::WrongTask {
                task: ds.task,
                format,
            });
        }
    }

    let splits = out.join("splits");
    create_dir(&splits)?;
    for (name, samples) in [("train.txt", &ds.train), ("val.txt", &ds.val)] {
        let text: String = samples.iter().map(|s| format!("{}\n", s.stem)).collect();
        write_file(&splits.join(name), &text)?;
    }
    Ok(())
}

/// Names must survive a one-name-per-line file, and KITTI's whitespace-separated fields.
fn check_class_names(classes: &[ClassInfo], out: &Path, format: Format) -> Result<(), DataError> {
    for c in classes {
        let bad = if c.name.trim().is_empty() {
            Some("is empty")
        } else if c.name.contains(['\n', '\r']) || c.name.trim() != c.name {
            Some("has a line break or surrounding whitespace")
        } else if format == Format::Kitti && c.name.contains(char::is_whitespace) {
            Some("contains whitespace, which kitti labels cannot hold")
        } else {
            None
        };
        if let Some(why) = bad {
            return Err(DataError::Write {
                path: out.to_path_buf(),
                reason: format!("class name '{}' {why}", c.name),
            });
        }
    }
    Ok(())
}

/// One name per line (values 0, 1, ...), which every YOLO tool reads. If every name itself
/// begins with an integer and a space ("1 tree"), that file would read back as `value name`
/// lines, so it is written in that form explicitly.
fn class_txt(classes: &[ClassInfo]) -> String {
    let ambiguous = !classes.is_empty()
        && classes.iter().all(|c| {
            c.name
                .split_once(char::is_whitespace)
                .is_some_and(|(v, _)| v.parse::<u32>().is_ok())
        });
    classes
        .iter()
        .enumerate()
        .map(|(i, c)| {
            if ambiguous {
                format!("{i} {}\n", c.name)
            } else {
                format!("{}\n", c.name)
            }
        })
        .collect()
}
