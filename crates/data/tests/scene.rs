//! A scene read band by band gives the samples a whole decode gives, for the TIFF layouts
//! GIS software writes (fixtures from `tests/fixtures/scenes/make_scenes.py`, written by
//! tifffile).

use std::path::PathBuf;

use autodl_data::SceneReader;

const W: usize = 75;
const H: usize = 53;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/scenes")
        .join(name)
}

/// The fixtures' sample at band `b`, row `y`, column `x`.
fn value(b: usize, y: usize, x: usize, modulus: usize) -> f32 {
    ((b * 37 + y * 11 + x * 3) % modulus) as f32
}

#[test]
fn every_layout_reads_band_by_band_as_it_decodes_whole() {
    for (name, bands, modulus) in [
        ("tiled_rgb8_deflate.tif", 3, 251),
        ("tiled_planar6_u16.tif", 6, 65521),
        ("strips_planar4_u16_deflate.tif", 4, 65521),
        ("strips_rgb8.tif", 3, 251),
        ("strips_gray16.tif", 1, 65521),
    ] {
        let path = fixture(name);
        let whole = autodl_data::load_raw_image(&path).unwrap();
        let mut scene = SceneReader::open(&path).unwrap();
        assert!(scene.streamed(), "{name}");
        assert_eq!(
            (scene.width(), scene.height(), scene.bands()),
            (W as u32, H as u32, bands as u32),
            "{name}"
        );
        // Bands of rows that start inside chunks, overlap the last one and run past the end.
        for (y0, rows) in [(0, 16), (12, 20), (30, 9), (40, 30), (52, 1)] {
            let block = scene.rows(y0, rows).unwrap();
            for b in 0..bands {
                for y in y0..(y0 + rows).min(H) {
                    let mut got = vec![0f32; W - 2];
                    block.band_row(b, y, 2, &mut got);
                    let want: Vec<f32> = (2..W).map(|x| value(b, y, x, modulus)).collect();
                    assert_eq!(got, want, "{name} band {b} row {y}");
                    let mut decoded = vec![0f32; W - 2];
                    whole.band_row(b, y, 2, &mut decoded);
                    assert_eq!(got, decoded, "{name} band {b} row {y}");
                }
            }
        }
    }
}

#[test]
fn a_block_already_held_is_not_read_again() {
    let mut scene = SceneReader::open(&fixture("strips_rgb8.tif")).unwrap();
    let first = scene.rows(10, 20).unwrap().image as *const _;
    let again = scene.rows(15, 5).unwrap();
    assert_eq!(again.row0, 10);
    assert!(std::ptr::eq(again.image, first));
}

#[test]
fn other_formats_are_decoded_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.png");
    image::RgbImage::from_fn(9, 4, |x, y| image::Rgb([x as u8, y as u8, 7]))
        .save(&path)
        .unwrap();
    let mut scene = SceneReader::open(&path).unwrap();
    assert!(!scene.streamed());
    let block = scene.rows(2, 1).unwrap();
    let mut row = vec![0f32; 9];
    block.band_row(1, 3, 0, &mut row);
    assert_eq!(row, vec![3.0; 9]);
}

#[test]
fn a_truncated_tiff_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.tif");
    let bytes = std::fs::read(fixture("tiled_planar6_u16.tif")).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = SceneReader::open(&path)
        .and_then(|mut s| s.rows(0, H).map(|_| ()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("cut.tif"), "{err}");
}

/// An ENVI raster (band-sequential 16-bit samples and a text header with its map info), a
/// format only GDAL reads here: with the `gdal` feature it reads band by band, with its
/// georeference.
#[cfg(feature = "gdal")]
#[test]
fn a_format_gdal_reads_is_a_scene_with_its_georeference() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scene.dat");
    let bands = 3;
    let mut raw = Vec::new();
    for b in 0..bands {
        for y in 0..H {
            for x in 0..W {
                raw.extend((value(b, y, x, 65521) as u16).to_le_bytes());
            }
        }
    }
    std::fs::write(&path, raw).unwrap();
    std::fs::write(
        dir.path().join("scene.hdr"),
        format!(
            "ENVI\nsamples = {W}\nlines = {H}\nbands = {bands}\nheader offset = 0\n\
             file type = ENVI Standard\ndata type = 12\ninterleave = bsq\nbyte order = 0\n\
             map info = {{UTM, 1, 1, 500000, 4000000, 0.5, 0.5, 17, North, WGS-84}}\n"
        ),
    )
    .unwrap();
    let mut scene = SceneReader::open(&path).unwrap();
    assert!(scene.streamed());
    assert_eq!(
        (
            scene.width(),
            scene.height(),
            scene.bands(),
            scene.bit_depth()
        ),
        (W as u32, H as u32, 3, 16)
    );
    for (y0, rows) in [(0, 16), (40, 30)] {
        let block = scene.rows(y0, rows).unwrap();
        for b in 0..bands {
            for y in y0..(y0 + rows).min(H) {
                let mut got = vec![0f32; W];
                block.band_row(b, y, 0, &mut got);
                let want: Vec<f32> = (0..W).map(|x| value(b, y, x, 65521)).collect();
                assert_eq!(got, want, "band {b} row {y}");
            }
        }
    }
    let g = autodl_data::read_georef(&path)
        .unwrap()
        .expect("a georeference");
    assert_eq!(g.transform, [500000.0, 0.5, 0.0, 4000000.0, 0.0, -0.5]);
    // GDAL recognises the map info's UTM zone 17 North on WGS 84.
    assert_eq!(g.epsg, Some(32617), "{:?}", g.wkt);
}
