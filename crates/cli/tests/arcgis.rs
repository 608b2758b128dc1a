//! ArcGIS exports through the real `autodl` binary: `data inspect` on an RCNN_Masks export
//! generated as ArcGIS writes it, and a detector trained on it for one epoch.

// The fixture builders below are test code too: a failure in them should stop the test.
#![allow(clippy::unwrap_used)]

use std::path::Path;

mod common;
use common::{autodl, text};

const SIZE: u32 = 64;

/// The squares of chip `i`: `(x0, y0, side)`; the first two are trees, the third (odd chips
/// only) a car.
fn squares(i: u32) -> Vec<(u32, u32, u32)> {
    let mut s = vec![
        ((i * 7) % 24, (i * 11) % 24, 14 + i % 3 * 4),
        ((i * 13) % 10 + 44, (i * 5) % 10 + 44, 12),
    ];
    if i % 2 == 1 {
        s.push((2, 50, 10));
    }
    s
}

fn write_tiff<C: tiff::encoder::colortype::ColorType<Inner = u8>>(path: &Path, data: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut enc = tiff::encoder::TiffEncoder::new(std::fs::File::create(path).unwrap()).unwrap();
    enc.write_image::<C>(SIZE, SIZE, data).unwrap();
    // The side files ArcGIS leaves beside every raster.
    let name = path.file_name().unwrap().to_str().unwrap();
    let dir = path.parent().unwrap();
    std::fs::write(path.with_extension("tfw"), "1\n0\n0\n-1\n0\n0\n").unwrap();
    std::fs::write(dir.join(format!("{name}.aux.xml")), "<PAMDataset/>").unwrap();
    std::fs::write(dir.join(format!("{name}.xml")), "<metadata/>").unwrap();
    std::fs::write(dir.join(format!("{name}.ovr")), [0u8; 8]).unwrap();
}

/// An RCNN_Masks export of 12 GeoTIFF chips: trees in `labels/1/` (two instances per chip, mask
/// values 1 and 2), cars in `labels/2/` on odd chips.
fn rcnn_export(root: &Path) {
    let mut map = String::new();
    for i in 0..12u32 {
        let sq = squares(i);
        let inside = |x: u32, y: u32| {
            sq.iter()
                .position(|&(x0, y0, s)| (x0..x0 + s).contains(&x) && (y0..y0 + s).contains(&y))
        };
        let mut rgb = Vec::new();
        let mut trees = Vec::new();
        let mut cars = Vec::new();
        for y in 0..SIZE {
            for x in 0..SIZE {
                let k = inside(x, y);
                let v: u8 = match k {
                    Some(2) => 120,
                    Some(_) => 210,
                    None => 50,
                };
                rgb.extend([v, v.wrapping_add((y / 4) as u8), v]);
                trees.push(match k {
                    Some(0) => 1,
                    Some(1) => 2,
                    _ => 0,
                });
                cars.push(u8::from(k == Some(2)));
            }
        }
        let c = format!("{i:09}");
        write_tiff::<tiff::encoder::colortype::RGB8>(&root.join(format!("images/{c}.tif")), &rgb);
        write_tiff::<tiff::encoder::colortype::Gray8>(
            &root.join(format!("labels/1/{c}.tif")),
            &trees,
        );
        if i % 2 == 1 {
            write_tiff::<tiff::encoder::colortype::Gray8>(
                &root.join(format!("labels/2/{c}.tif")),
                &cars,
            );
        }
        map += &format!("images\\{c}.tif labels\\{c}.tif\r\n");
    }
    std::fs::write(root.join("map.txt"), map).unwrap();
    std::fs::write(
        root.join("esri_model_definition.emd"),
        r#"{"ModelType": "ObjectDetection", "ImageHeight": 64, "ImageWidth": 64,
            "ExtractBands": [0, 1, 2],
            "Classes": [{"Value": 1, "Name": "tree", "Color": [0, 168, 0]},
                        {"Value": 2, "Name": "car", "Color": [230, 0, 0]}]}"#,
    )
    .unwrap();
    std::fs::write(
        root.join("esri_accumulated_stats.json"),
        r#"{"MetaDataMode": "RCNN_Masks", "NumTiles": 12}"#,
    )
    .unwrap();
    std::fs::write(
        root.join("stats.txt"),
        "Total number of image chips: 12\nTotal features: 30\n",
    )
    .unwrap();
}

#[test]
fn data_inspect_reads_an_rcnn_masks_export() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("export");
    rcnn_export(&data);
    let o = autodl(&["data", "inspect", data.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("format    rcnn-masks (detection)"), "{out}");
    assert!(out.contains("arcgis    export (RCNN_Masks)"), "{out}");
    assert!(out.contains("chips 64 x 64 px"), "{out}");
    assert!(out.contains("skipped   none"), "{out}");
    assert!(!out.contains("warning"), "{out}");

    let o = autodl(&["data", "inspect", data.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let summary: autodl_data::Summary = serde_json::from_slice(&o.stdout).unwrap();
    let counts: Vec<(&str, u64)> = summary
        .classes
        .iter()
        .map(|c| (c.name.as_str(), c.count.total()))
        .collect();
    assert_eq!(counts, [("tree", 24), ("car", 6)]);
    assert_eq!(summary.images.total(), 12);

    // A stats.txt that disagrees is shown, not fatal.
    std::fs::write(data.join("stats.txt"), "Total number of image chips: 13\n").unwrap();
    let o = autodl(&["data", "inspect", data.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("warning stats.txt line 1 says 13 image chips"),
        "{}",
        text(&o)
    );
}

#[test]
fn a_detector_trains_one_epoch_on_an_rcnn_masks_export() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("export");
    rcnn_export(&data);
    let out = dir.path().join("run");
    let o = autodl(&[
        "train",
        data.to_str().unwrap(),
        "--networks",
        "ssd",
        "--max-epochs",
        "1",
        "--batch-size",
        "4",
        "--time-limit",
        "60m",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        out.join("models/ssd-efficientnet-lite0.dlpk").is_file(),
        "{}",
        text(&o)
    );
}
