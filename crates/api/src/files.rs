//! Files that must never be left half-written or overwrite what they should not: result
//! files written to a temporary name and renamed, and the names `autodl predict` gives its
//! outputs.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::Task;

/// A file being written under a temporary name beside its final path; [`AtomicFile::commit`]
/// renames it into place, so a reader (or a crash) sees the old file or the new one, never a
/// part. Dropped without a commit, the temporary file is removed.
#[derive(Debug)]
pub struct AtomicFile {
    tmp: PathBuf,
    path: PathBuf,
    file: std::fs::File,
    committed: bool,
}

impl AtomicFile {
    /// Starts writing `path`.
    pub fn create(path: &Path) -> std::io::Result<AtomicFile> {
        let name = path
            .file_name()
            .map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned());
        let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
        let file = std::fs::File::create(&tmp)?;
        Ok(AtomicFile {
            tmp,
            path: path.to_owned(),
            file,
            committed: false,
        })
    }

    /// Flushes the data to disk and renames the file into place.
    pub fn commit(mut self) -> std::io::Result<()> {
        self.file.sync_all()?;
        std::fs::rename(&self.tmp, &self.path)?;
        self.committed = true;
        Ok(())
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.file.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

impl std::io::Seek for AtomicFile {
    fn seek(&mut self, pos: std::io::SeekFrom) -> std::io::Result<u64> {
        self.file.seek(pos)
    }
}

impl std::io::Read for AtomicFile {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.file.read(buf)
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Writes `bytes` to `path` through an [`AtomicFile`].
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = AtomicFile::create(path)?;
    f.write_all(bytes)?;
    f.commit()
}

/// Name of the COCO file a detector's prediction writes for all its images.
pub const DETECTIONS_JSON: &str = "detections.json";

/// Folder of an output folder that holds the coloured previews.
pub const PREVIEWS: &str = "previews";

/// The files `autodl predict` writes for one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PredictionFiles {
    /// The labels: a class-value PNG, or PASCAL VOC XML for boxes.
    pub label: PathBuf,
    /// The coloured preview, in [`PREVIEWS`].
    pub preview: PathBuf,
    /// The georeferenced labels, written only for an image with a georeference: a
    /// single-band class-value GeoTIFF (`<stem>.tif`), or the boxes as GeoJSON polygons
    /// (`<stem>.geojson`).
    pub geo: PathBuf,
}

/// Where prediction writes the outputs of the image given the output stem `stem` (from
/// [`output_stems`]).
pub fn prediction_files(task: Task, out_dir: &Path, stem: &str) -> PredictionFiles {
    let (ext, geo) = match task {
        Task::Detection => ("xml", "geojson"),
        Task::PixelClassification => ("png", "tif"),
    };
    PredictionFiles {
        label: out_dir.join(format!("{stem}.{ext}")),
        preview: out_dir.join(PREVIEWS).join(format!("{stem}.png")),
        geo: out_dir.join(format!("{stem}.{geo}")),
    }
}

/// Every file a prediction of `images` into `out_dir` writes, in order; `georeferenced[i]`
/// says whether image `i` has a georeference (and so gets [`PredictionFiles::geo`] too).
pub fn planned_outputs(
    task: Task,
    out_dir: &Path,
    images: &[PathBuf],
    georeferenced: &[bool],
) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = output_stems(images)
        .iter()
        .enumerate()
        .flat_map(|(i, s)| {
            let f = prediction_files(task, out_dir, s);
            let geo = georeferenced.get(i).copied().unwrap_or(false);
            [Some(f.label), Some(f.preview), geo.then_some(f.geo)]
        })
        .flatten()
        .collect();
    if task == Task::Detection {
        files.push(out_dir.join(DETECTIONS_JSON));
    }
    files
}

/// One output stem per image, unique even on a case-insensitive file system: the image's stem,
/// or, where two images share a stem (`a.png` and `a.jpg`), the stem and extension (`a_png`,
/// `a_jpg`), with `_2`, `_3`, ... where even those meet (`x/a.png` and `y/a.png`).
pub fn output_stems(images: &[PathBuf]) -> Vec<String> {
    let stem = |p: &PathBuf| {
        p.file_stem()
            .map_or_else(|| "image".to_owned(), |s| s.to_string_lossy().into_owned())
    };
    let mut count = std::collections::HashMap::<String, usize>::new();
    for p in images {
        *count.entry(stem(p).to_lowercase()).or_default() += 1;
    }
    let mut taken = HashSet::new();
    images
        .iter()
        .map(|p| {
            let base = stem(p);
            let mut name = if count.get(&base.to_lowercase()).copied().unwrap_or(0) > 1 {
                match p.extension() {
                    Some(ext) => format!("{base}_{}", ext.to_string_lossy()),
                    None => base.clone(),
                }
            } else {
                base
            };
            let first = name.clone();
            let mut n = 2;
            while !taken.insert(name.to_lowercase()) {
                name = format!("{first}_{n}");
                n += 1;
            }
            name
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(v: &[&str]) -> Vec<PathBuf> {
        v.iter().map(PathBuf::from).collect()
    }

    #[test]
    fn stems_never_collide() {
        assert_eq!(output_stems(&paths(&["a/x.png", "a/y.jpg"])), ["x", "y"]);
        assert_eq!(
            output_stems(&paths(&["same.png", "same.jpg"])),
            ["same_png", "same_jpg"]
        );
        assert_eq!(
            output_stems(&paths(&["a/x.png", "b/x.png", "c/X.png"])),
            ["x_png", "x_png_2", "X_png_3"]
        );
        assert_eq!(
            output_stems(&paths(&["s.png", "s.jpg", "s_png.tif"])),
            ["s_png", "s_jpg", "s_png_2"]
        );
    }

    #[test]
    fn a_preview_never_lands_on_a_label() {
        let out = Path::new("o");
        let files = planned_outputs(
            Task::PixelClassification,
            out,
            &paths(&["x.png", "x_preview.png"]),
            &[true, true],
        );
        let unique: HashSet<_> = files.iter().collect();
        assert_eq!(unique.len(), files.len(), "{files:?}");
    }

    #[test]
    fn an_atomic_file_replaces_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("board.json");
        std::fs::write(&path, "old").unwrap();
        {
            let mut f = AtomicFile::create(&path).unwrap();
            f.write_all(b"half").unwrap();
            // Dropped without commit: the old file stays, no temporary is left.
        }
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        write_atomic(&path, b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
    }
}
