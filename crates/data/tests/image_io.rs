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

/// CRC-32 of a PNG chunk's type and data.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A PNG of a few bytes whose header declares `w x h` 8-bit gray pixels.
fn png_declaring(path: &Path, w: u32, h: u32) {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = |kind: &[u8], data: &[u8]| {
        out.extend((data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend(data);
        out.extend(&body);
        out.extend(crc32(&body).to_be_bytes());
    };
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend(h.to_be_bytes());
    ihdr.extend([8, 0, 0, 0, 0]);
    chunk(b"IHDR", &ihdr);
    // A zlib stream of a few zero rows, then nothing.
    chunk(
        b"IDAT",
        &[0x78, 0x9c, 0x63, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01],
    );
    chunk(b"IEND", &[]);
    std::fs::write(path, out).unwrap();
}

/// A little-endian TIFF of a few bytes whose header declares `w x h` gray pixels of `bits`.
fn tiff_declaring(path: &Path, w: u32, h: u32, bits: u32) {
    let entries: [(u16, u16, u32); 8] = [
        (256, 4, w),    // ImageWidth, LONG
        (257, 4, h),    // ImageLength
        (258, 3, bits), // BitsPerSample, SHORT
        (259, 3, 1),    // Compression: none
        (262, 3, 1),    // Photometric: black is zero
        (273, 4, 200),  // StripOffsets
        (278, 4, h),    // RowsPerStrip
        (279, 4, 16),   // StripByteCounts
    ];
    let mut out = b"II*\0".to_vec();
    out.extend(8u32.to_le_bytes());
    out.extend((entries.len() as u16).to_le_bytes());
    for (tag, kind, value) in entries {
        out.extend(tag.to_le_bytes());
        out.extend(kind.to_le_bytes());
        out.extend(1u32.to_le_bytes());
        if kind == 3 {
            out.extend((value as u16).to_le_bytes());
            out.extend([0, 0]);
        } else {
            out.extend(value.to_le_bytes());
        }
    }
    out.extend(0u32.to_le_bytes());
    out.resize(216, 0);
    std::fs::write(path, out).unwrap();
}

#[test]
fn images_and_masks_declaring_huge_sizes_are_refused_before_allocating() {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("bomb.png");
    png_declaring(&png, 100_000, 100_000);
    assert!(std::fs::metadata(&png).unwrap().len() < 3000);
    let tif = dir.path().join("bomb.tif");
    tiff_declaring(&tif, 46_000, 46_000, 8);
    for err in [
        load_mask(&png).unwrap_err().to_string(),
        load_image(&png).unwrap_err().to_string(),
        load_mask(&tif).unwrap_err().to_string(),
        load_image(&tif).unwrap_err().to_string(),
        autodl_data::load_raw_image(&tif).unwrap_err().to_string(),
    ] {
        assert!(
            err.contains("bomb.") && err.contains("image too large") && err.contains("pixels"),
            "{err}"
        );
    }
    // Within the pixel limit, 64-bit samples would still take too much.
    let wide = dir.path().join("wide.tif");
    tiff_declaring(&wide, 30_000, 30_000, 64);
    let err = load_image(&wide).unwrap_err().to_string();
    assert!(
        err.contains("wide.tif") && err.contains("MiB decoded"),
        "{err}"
    );
}

#[test]
fn raw_rows_match_the_f32_image() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.png");
    let img = image::RgbImage::from_fn(5, 3, |x, y| image::Rgb([x as u8, y as u8, 7]));
    img.save(&path).unwrap();
    let full = load_image(&path).unwrap();
    let raw = autodl_data::load_raw_image(&path).unwrap();
    let mut row = [0f32; 3];
    for b in 0..3 {
        for y in 0..3 {
            raw.band_row(b, y, 2, &mut row);
            let start = b * 15 + y * 5 + 2;
            assert_eq!(row, full.data[start..start + 3], "band {b} row {y}");
        }
    }
}
