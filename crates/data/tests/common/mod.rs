//! Builders for tiny datasets in temporary folders.

#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};

use autodl_data::{OnBadSample, ReadOptions, open};
use tempfile::TempDir;

/// A dataset folder that disappears with the value.
pub struct Tiny {
    pub dir: TempDir,
}

impl Tiny {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("images")).unwrap();
        fs::create_dir(dir.path().join("labels")).unwrap();
        Tiny { dir }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn write(&self, rel: &str, contents: impl AsRef<[u8]>) -> &Self {
        let p = self.path(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, contents).unwrap();
        self
    }

    /// An RGB PNG of `w`x`h` with a gradient, so it compresses to something non-trivial.
    pub fn png(&self, rel: &str, w: u32, h: u32) -> &Self {
        self.write(rel, png_bytes(w, h))
    }

    /// A single-channel 8-bit mask filled with `values` cyclically.
    pub fn mask(&self, rel: &str, w: u32, h: u32, values: &[u8]) -> &Self {
        let img = image::GrayImage::from_fn(w, h, |x, y| {
            image::Luma([values[((y * w + x) as usize) % values.len()]])
        });
        img.save(self.path(rel)).unwrap();
        self
    }

    /// A VOC label with the given `(class, xmin, ymin, xmax, ymax)` objects.
    pub fn voc(&self, stem: &str, w: u32, h: u32, objects: &[(&str, f32, f32, f32, f32)]) -> &Self {
        self.write(&format!("labels/{stem}.xml"), voc_xml(w, h, objects))
    }

    /// A VOC dataset of `n` 32x32 images named `s0`, `s1`, ... with one tree each.
    pub fn voc_dataset(n: usize) -> Self {
        let t = Tiny::new();
        for i in 0..n {
            t.png(&format!("images/s{i}.png"), 32, 32);
            t.voc(&format!("s{i}"), 32, 32, &[("tree", 2.0, 3.0, 20.0, 25.0)]);
        }
        t
    }
}

pub fn png_bytes(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x * 7) as u8, (y * 5) as u8, ((x + y) * 3) as u8])
    });
    let mut buf = std::io::Cursor::new(Vec::new());
    img.write_to(&mut buf, image::ImageFormat::Png).unwrap();
    buf.into_inner()
}

pub fn voc_xml(w: u32, h: u32, objects: &[(&str, f32, f32, f32, f32)]) -> String {
    let mut x = format!(
        "<annotation>\n  <size><width>{w}</width><height>{h}</height><depth>3</depth></size>\n"
    );
    for (name, x0, y0, x1, y1) in objects {
        x += &format!(
            "  <object><name>{name}</name><difficult>0</difficult><bndbox><xmin>{x0}</xmin>\
             <ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>\n"
        );
    }
    x + "</annotation>\n"
}

/// Opens `root` in skip mode and checks that every `(file, reason)` pair is among the skipped
/// samples (the path ending in `file`, the reason containing `reason`); then opens it in fail
/// mode and checks that the error lists every one of them. Returns the skip-mode dataset.
pub fn expect_bad(
    root: &Path,
    opts: ReadOptions,
    expected: &[(&str, &str)],
) -> autodl_data::Dataset {
    let ds = open(root, &opts).unwrap_or_else(|e| panic!("skip mode failed: {e}"));
    for (file, reason) in expected {
        assert!(
            ds.skipped
                .iter()
                .any(|b| b.path.ends_with(file) && b.reason.contains(reason)),
            "no skipped sample {file} with '{reason}' in:\n{}",
            ds.skipped
                .iter()
                .map(|b| format!("  {b}\n"))
                .collect::<String>()
        );
    }
    let fail = ReadOptions {
        on_bad_sample: OnBadSample::Fail,
        ..opts
    };
    let err = open(root, &fail).expect_err("fail mode accepted bad samples");
    assert!(
        matches!(err, autodl_data::DataError::BadSamples { .. }),
        "unexpected error: {err}"
    );
    let msg = err.to_string();
    assert!(msg.contains("on-bad-sample = fail"), "{msg}");
    for (file, reason) in expected {
        assert!(
            msg.lines().any(|l| l.contains(file) && l.contains(reason)),
            "error does not list {file} with '{reason}':\n{msg}"
        );
    }
    ds
}
