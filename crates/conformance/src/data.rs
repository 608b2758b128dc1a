//! Tiny generated datasets: the suite's training data, and the benchmarks' (`autodl bench
//! families`).

use std::path::{Path, PathBuf};

use autodl_api::Task;

use crate::ConformanceError;

/// The classes of a tiny dataset: (mask value or VOC name index, name). Pixel classification
/// also has value 0, `nodata`, on the first row of every mask: an ignored value, as real tiles
/// have at their edges.
const PIXEL_CLASSES: [(u32, &str); 2] = [(1, "ground"), (2, "roof")];
/// The detection classes, by VOC object name.
const BOX_CLASSES: [&str; 2] = ["roof", "tree"];

/// A tiny dataset written by [`write_tiny_dataset`].
#[derive(Debug, Clone)]
pub struct TinyData {
    /// The dataset folder (classified tiles or PASCAL VOC, with `splits/`).
    pub root: PathBuf,
    /// The training images.
    pub train: Vec<PathBuf>,
    /// The validation images.
    pub val: Vec<PathBuf>,
    /// How many classes a model trained on it predicts.
    pub classes: usize,
}

/// Writes a tiny dataset for `task` into `root`: `train + val` square images of `size` pixels
/// (bright squares on a dark ground: `roof` and `ground` pixels, or `roof` and `tree` boxes),
/// with `splits/train.txt` and `splits/val.txt` putting the first `train` images in training.
pub fn write_tiny_dataset(
    task: Task,
    root: &Path,
    train: usize,
    val: usize,
    size: u32,
) -> Result<TinyData, ConformanceError> {
    for d in ["images", "labels", "splits"] {
        create_dir(&root.join(d))?;
    }
    if task == Task::PixelClassification {
        let classes: String = std::iter::once("0 nodata\n".to_owned())
            .chain(PIXEL_CLASSES.iter().map(|(v, n)| format!("{v} {n}\n")))
            .collect();
        write(&root.join("classes.txt"), classes.as_bytes())?;
    }
    let mut stems = Vec::new();
    for i in 0..(train + val) as u32 {
        let stem = format!("t{i}");
        let squares = squares(i, size);
        let image = image::RgbImage::from_fn(size, size, |x, y| {
            let v = match inside(&squares, x, y) {
                Some(0) => 210,
                Some(_) => 140,
                None => 40,
            };
            image::Rgb([v, v.wrapping_add((y * 2) as u8), v])
        });
        let path = root.join(format!("images/{stem}.png"));
        image.save(&path).map_err(|e| image_error(&path, e))?;
        match task {
            Task::PixelClassification => {
                let mask = image::GrayImage::from_fn(size, size, |x, y| {
                    image::Luma([match (y, inside(&squares, x, y)) {
                        (0, _) => 0,
                        (_, Some(_)) => PIXEL_CLASSES[1].0 as u8,
                        (_, None) => PIXEL_CLASSES[0].0 as u8,
                    }])
                });
                let path = root.join(format!("labels/{stem}.png"));
                mask.save(&path).map_err(|e| image_error(&path, e))?;
            }
            Task::Detection => {
                let objects: String = squares
                    .iter()
                    .enumerate()
                    .map(|(k, &(x0, y0, s))| {
                        format!(
                            "<object><name>{}</name><difficult>0</difficult><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{}</xmax><ymax>{}</ymax></bndbox></object>",
                            BOX_CLASSES[k % BOX_CLASSES.len()],
                            x0 + s - 1,
                            y0 + s - 1
                        )
                    })
                    .collect();
                let xml = format!(
                    "<annotation><filename>{stem}.png</filename><size><width>{size}</width><height>{size}</height><depth>3</depth></size>{objects}</annotation>"
                );
                write(&root.join(format!("labels/{stem}.xml")), xml.as_bytes())?;
            }
        }
        stems.push(stem);
    }
    let (train_stems, val_stems) = stems.split_at(train);
    for (name, list) in [("train", train_stems), ("val", val_stems)] {
        write(
            &root.join(format!("splits/{name}.txt")),
            (list.join("\n") + "\n").as_bytes(),
        )?;
    }
    let paths = |list: &[String]| -> Vec<PathBuf> {
        list.iter()
            .map(|s| root.join(format!("images/{s}.png")))
            .collect()
    };
    Ok(TinyData {
        root: root.to_owned(),
        train: paths(train_stems),
        val: paths(val_stems),
        classes: match task {
            Task::PixelClassification => PIXEL_CLASSES.len(),
            Task::Detection => BOX_CLASSES.len(),
        },
    })
}

/// Writes an RGB image of `width` by `height` pixels, in the style of the tiny datasets, for
/// prediction only.
pub fn write_image(path: &Path, width: u32, height: u32) -> Result<(), ConformanceError> {
    let squares = squares(7, width.min(height));
    image::RgbImage::from_fn(width, height, |x, y| {
        let v = if inside(&squares, x, y).is_some() {
            210
        } else {
            40
        };
        image::Rgb([v, v, v.wrapping_add((x * 3) as u8)])
    })
    .save(path)
    .map_err(|e| image_error(path, e))
}

/// Two squares `(x0, y0, side)` of image `i`, inside a `size` square; the first is larger.
fn squares(i: u32, size: u32) -> [(u32, u32, u32); 2] {
    let big = (size * 3 / 8).max(4);
    let small = (size / 4).max(3);
    let free = |s: u32| size.saturating_sub(s).max(1);
    [
        ((i * 7) % free(big), (i * 11 + 3) % free(big), big),
        (
            (i * 13 + size / 2) % free(small),
            (i * 5 + size / 2) % free(small),
            small,
        ),
    ]
}

/// The index of the first square holding pixel `(x, y)`.
fn inside(squares: &[(u32, u32, u32)], x: u32, y: u32) -> Option<usize> {
    squares
        .iter()
        .position(|&(x0, y0, s)| (x0..x0 + s).contains(&x) && (y0..y0 + s).contains(&y))
}

fn create_dir(path: &Path) -> Result<(), ConformanceError> {
    std::fs::create_dir_all(path).map_err(|source| ConformanceError::Io {
        path: path.to_owned(),
        source,
    })
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), ConformanceError> {
    std::fs::write(path, bytes).map_err(|source| ConformanceError::Io {
        path: path.to_owned(),
        source,
    })
}

fn image_error(path: &Path, e: image::ImageError) -> ConformanceError {
    ConformanceError::Io {
        path: path.to_owned(),
        source: std::io::Error::other(e.to_string()),
    }
}
