//! Decoding images and masks of various depths and band counts.

// A test crate reports failure by panicking, helpers included.
#![allow(clippy::unwrap_used)]

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use autodl_data::{load_image, load_mask};

fn write_png(
    path: &Path,
    w: u32,
    h: u32,
    color: png::ColorType,
    depth: png::BitDepth,
    data: &[u8],
    palette: Option<Vec<u8>>,
) {
    let file = BufWriter::new(File::create(path).unwrap());
    let mut enc = png::Encoder::new(file, w, h);
    enc.set_color(color);
    enc.set_depth(depth);
    if let Some(p) = palette {
        enc.set_palette(p);
    }
    let mut writer = enc.write_header().unwrap();
    writer.write_image_data(data).unwrap();
}

#[test]
fn sixteen_bit_rgb_png() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.png");
    let img = image::ImageBuffer::<image::Rgb<u16>, Vec<u16>>::from_fn(3, 2, |x, y| {
        image::Rgb([1000 * x as u16 + y as u16, 40000, 65535])
    });
    img.save(&path).unwrap();
    let got = load_image(&path).unwrap();
    assert_eq!(
        (got.width, got.height, got.bands, got.bit_depth),
        (3, 2, 3, 16)
    );
    // CHW: the first plane is red, row-major.
    assert_eq!(&got.data[..6], &[0.0, 1000.0, 2000.0, 1.0, 1001.0, 2001.0]);
    assert!(got.data[6..12].iter().all(|&v| v == 40000.0));
    assert!(got.data[12..].iter().all(|&v| v == 65535.0));
}

#[test]
fn one_band_png() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.png");
    let img = image::GrayImage::from_fn(4, 3, |x, y| image::Luma([(x * 10 + y) as u8]));
    img.save(&path).unwrap();
    let got = load_image(&path).unwrap();
    assert_eq!(
        (got.width, got.height, got.bands, got.bit_depth),
        (4, 3, 1, 8)
    );
    assert_eq!(got.data.len(), 12);
    assert_eq!(got.data[4 + 2], 21.0, "row 1, column 2");
}

#[test]
fn sixteen_bit_mask() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.png");
    let values: [u16; 6] = [0, 1, 300, 65535, 7, 1000];
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_be_bytes()).collect();
    write_png(
        &path,
        3,
        2,
        png::ColorType::Grayscale,
        png::BitDepth::Sixteen,
        &bytes,
        None,
    );
    let m = load_mask(&path).unwrap();
    assert_eq!((m.width, m.height), (3, 2));
    assert_eq!(m.data, values.map(u32::from));
}

#[test]
fn palette_and_packed_masks_give_indices() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.png");
    // Indices 0, 1, 2, 1 with colours that would expand to RGB in the `image` crate.
    write_png(
        &path,
        4,
        1,
        png::ColorType::Indexed,
        png::BitDepth::Eight,
        &[0, 1, 2, 1],
        Some(vec![0, 0, 0, 255, 0, 0, 0, 255, 0]),
    );
    assert_eq!(load_mask(&path).unwrap().data, [0, 1, 2, 1]);

    // 4-bit gray, 3 pixels per row packed into 2 bytes per row.
    let path = dir.path().join("g4.png");
    write_png(
        &path,
        3,
        2,
        png::ColorType::Grayscale,
        png::BitDepth::Four,
        &[0x12, 0x30, 0xF0, 0xA0],
        None,
    );
    assert_eq!(load_mask(&path).unwrap().data, [1, 2, 3, 15, 0, 10]);
}

#[test]
fn rgb_mask_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rgb.png");
    image::RgbImage::new(2, 2).save(&path).unwrap();
    let err = load_mask(&path).unwrap_err().to_string();
    assert!(err.contains("a mask needs one channel"), "{err}");
}

#[test]
fn tiff_mask_and_rgba_tiff() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.tif");
    image::ImageBuffer::<image::Luma<u16>, Vec<u16>>::from_fn(2, 2, |x, y| {
        image::Luma([(x + 2 * y) as u16 * 500])
    })
    .save(&path)
    .unwrap();
    assert_eq!(load_mask(&path).unwrap().data, [0, 500, 1000, 1500]);

    let path = dir.path().join("c.tif");
    image::RgbaImage::from_fn(2, 1, |x, _| image::Rgba([x as u8, 10, 20, 255]))
        .save(&path)
        .unwrap();
    let img = load_image(&path).unwrap();
    assert_eq!((img.bands, img.bit_depth), (4, 8));
    assert_eq!(img.data, [0.0, 1.0, 10.0, 10.0, 20.0, 20.0, 255.0, 255.0]);
}

#[test]
fn missing_and_corrupt_files_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("none.png");
    let err = load_image(&path).unwrap_err().to_string();
    assert!(err.contains("none.png"), "{err}");
    let path = dir.path().join("junk.tif");
    std::fs::write(&path, b"II*\0garbage").unwrap();
    let err = load_image(&path).unwrap_err().to_string();
    assert!(
        err.starts_with("cannot decode") && err.contains("junk.tif"),
        "{err}"
    );
}
