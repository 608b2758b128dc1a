//! ArcGIS "Export Training Data For Deep Learning" folders, generated as ArcGIS writes them:
//! GeoTIFF chips with their side files, `esri_model_definition.emd`, `map.txt` with Windows
//! backslashes, `stats.txt` and `esri_accumulated_stats.json`.

// A test crate reports failure by panicking, helpers included.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs;
use std::path::Path;

use autodl_data::{
    DataError, Dataset, Format, ReadOptions, detect_format, instance_masks, open, summarize,
};
use common::{Tiny, expect_bad};

const EMD: &str = r#"{
  "Framework": "Keras", "ModelConfiguration": "x", "ModelType": "ObjectDetection",
  "ImageHeight": 32, "ImageWidth": 32, "ExtractBands": [0, 1, 2],
  "ImageSpaceUsed": "MAP_SPACE",
  "Classes": [
    {"Value": 1, "Name": "tree", "Color": [0, 168, 0]},
    {"Value": 2, "Name": "car", "Color": [230, 0, 0]},
    {"Value": 3, "Name": "building", "Color": [-1, -1, -1]}
  ]
}"#;

/// An RGB GeoTIFF chip of `w`x`h` with the side files ArcGIS writes beside it.
fn chip(t: &Tiny, rel: &str, w: u32, h: u32) {
    use tiff::encoder::{TiffEncoder, colortype};
    use tiff::tags::Tag;
    let path = t.path(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let data: Vec<u8> = (0..w * h)
        .flat_map(|i| [(i * 7) as u8, (i * 3) as u8, (i / 5) as u8])
        .collect();
    let mut enc = TiffEncoder::new(fs::File::create(&path).unwrap()).unwrap();
    let mut img = enc.new_image::<colortype::RGB8>(w, h).unwrap();
    img.encoder()
        .write_tag(Tag::Unknown(33550), &[0.5f64, 0.5, 0.0][..])
        .unwrap();
    img.encoder()
        .write_tag(
            Tag::Unknown(33922),
            &[0.0f64, 0.0, 0.0, 500_000.0, 4_000_000.0, 0.0][..],
        )
        .unwrap();
    img.write_data(&data).unwrap();
    sidecars(t, rel);
}

/// World file, overviews, PAM and metadata XML beside a raster.
fn sidecars(t: &Tiny, rel: &str) {
    let stem = rel.strip_suffix(".tif").unwrap();
    t.write(&format!("{stem}.tfw"), "0.5\n0\n0\n-0.5\n500000\n4000000\n");
    t.write(&format!("{rel}.aux.xml"), "<PAMDataset></PAMDataset>");
    t.write(&format!("{rel}.ovr"), [0u8, 1, 2, 3]);
    t.write(
        &format!("{rel}.xml"),
        "<?xml version=\"1.0\"?><metadata><Esri/></metadata>",
    );
}

/// A single-band 8-bit TIFF mask; `pixels` are `(x0, y0, x1, y1, value)` rectangles, inclusive.
fn mask_tif(t: &Tiny, rel: &str, w: u32, h: u32, pixels: &[(u32, u32, u32, u32, u8)]) {
    use tiff::encoder::{TiffEncoder, colortype};
    let mut data = vec![0u8; (w * h) as usize];
    for &(x0, y0, x1, y1, v) in pixels {
        for y in y0..=y1 {
            for x in x0..=x1 {
                data[(y * w + x) as usize] = v;
            }
        }
    }
    let path = t.path(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut enc = TiffEncoder::new(fs::File::create(&path).unwrap()).unwrap();
    enc.write_image::<colortype::Gray8>(w, h, &data).unwrap();
    sidecars(t, rel);
}

fn chip_name(i: usize) -> String {
    format!("{i:09}")
}

/// The files every export has: the `.emd`, the JSON statistics, map.txt and stats.txt.
fn export_files(t: &Tiny, mode: &str, n: usize, label_ext: &str, features: usize) {
    t.write("esri_model_definition.emd", EMD);
    t.write(
        "esri_accumulated_stats.json",
        format!(r#"{{"MetaDataMode": "{mode}", "NumTiles": {n}, "ClassAttributes": {{}}}}"#),
    );
    let map: String = (0..n)
        .map(|i| {
            let c = chip_name(i);
            format!("images\\{c}.tif labels\\{c}.{label_ext}\r\n")
        })
        .collect();
    t.write("map.txt", map);
    t.write(
        "stats.txt",
        format!(
            "Export Training Data For Deep Learning\nTotal number of image chips: {n}\n\
             Total features: {features}\nImage chip size: 32\n"
        ),
    );
}

fn kitti_line(class: &str, b: (f32, f32, f32, f32)) -> String {
    format!(
        "{class} 0.00 0 0.00 {:.2} {:.2} {:.2} {:.2} 0.00 0.00 0.00 0.00 0.00 0.00 0.00\n",
        b.0, b.1, b.2, b.3
    )
}

/// A KITTI_rectangles export of `n` chips: chip i has one tree and, when odd, a car.
fn kitti_export(n: usize) -> Tiny {
    let t = Tiny::new();
    let mut features = 0;
    for i in 0..n {
        let c = chip_name(i);
        chip(&t, &format!("images/{c}.tif"), 32, 32);
        let mut txt = kitti_line("1", (2.0, 3.0, 20.0, 25.0));
        features += 1;
        if i % 2 == 1 {
            txt += &kitti_line("2", (10.0, 10.0, 30.0, 31.0));
            features += 1;
        }
        t.write(&format!("labels/{c}.txt"), txt);
    }
    export_files(&t, "KITTI_rectangles", n, "txt", features);
    t
}

fn class_counts(ds: &Dataset) -> Vec<(String, u32, u64)> {
    summarize(ds)
        .unwrap()
        .classes
        .into_iter()
        .map(|c| (c.name, c.value, c.count.total()))
        .collect()
}

fn names(ds: &Dataset) -> Vec<&str> {
    ds.classes.iter().map(|c| c.name.as_str()).collect()
}

#[test]
fn kitti_with_numeric_classes_takes_names_from_the_emd() {
    let t = kitti_export(6);
    assert_eq!(detect_format(t.root()).unwrap(), Format::Kitti);
    let ds = open(t.root(), &ReadOptions::default()).unwrap();
    assert!(ds.skipped.is_empty(), "{:?}", ds.skipped);
    assert_eq!(ds.format, Format::Kitti);
    assert_eq!(
        class_counts(&ds),
        [
            ("tree".to_owned(), 1, 6),
            ("car".to_owned(), 2, 3),
            ("building".to_owned(), 3, 0)
        ]
    );
    let a = ds.arcgis.as_ref().unwrap();
    assert_eq!(a.metadata_mode.as_deref(), Some("KITTI_rectangles"));
    assert_eq!(a.chip_size, Some([32, 32]));
    assert_eq!(a.classes[1].color, Some([230, 0, 0]));
    assert_eq!(a.map_pairs, Some(6));
    assert!(a.warnings.is_empty(), "{:?}", a.warnings);
    // Every box kept its pixels.
    let s = ds
        .samples()
        .find(|(_, s)| s.stem == chip_name(1))
        .unwrap()
        .1;
    assert_eq!(s.boxes.len(), 2);
    assert_eq!((s.boxes[1].class, s.boxes[1].xmax), (1, 30.0));

    // Without the JSON statistics, the numeric first field still says KITTI.
    fs::remove_file(t.path("esri_accumulated_stats.json")).unwrap();
    assert_eq!(detect_format(t.root()).unwrap(), Format::Kitti);
}

#[test]
fn kitti_values_without_an_emd_are_their_own_names() {
    let t = kitti_export(4);
    fs::remove_file(t.path("esri_model_definition.emd")).unwrap();
    let ds = open(t.root(), &ReadOptions::default()).unwrap();
    assert!(ds.skipped.is_empty(), "{:?}", ds.skipped);
    assert_eq!(names(&ds), ["1", "2"]);
}

#[test]
fn pascal_voc_export_takes_its_classes_from_the_emd() {
    let t = Tiny::new();
    for i in 0..4 {
        let c = chip_name(i);
        chip(&t, &format!("images/{c}.tif"), 32, 32);
        // ArcGIS writes the class value as the name; a name works as well.
        let objects: &[(&str, f32, f32, f32, f32)] = if i % 2 == 0 {
            &[("1", 1.0, 1.0, 9.0, 9.0), ("car", 5.0, 5.0, 25.0, 20.0)]
        } else {
            &[("tree", 1.0, 1.0, 9.0, 9.0)]
        };
        t.voc(&c, 32, 32, objects);
        t.write(&format!("labels/{c}.xml.aux.xml"), "<PAMDataset/>");
    }
    export_files(&t, "PASCAL_VOC_rectangles", 4, "xml", 6);
    assert_eq!(detect_format(t.root()).unwrap(), Format::PascalVoc);
    let ds = open(t.root(), &ReadOptions::default()).unwrap();
    assert!(ds.skipped.is_empty(), "{:?}", ds.skipped);
    assert_eq!(
        class_counts(&ds),
        [
            ("tree".to_owned(), 1, 4),
            ("car".to_owned(), 2, 2),
            ("building".to_owned(), 3, 0)
        ]
    );
}

/// An RCNN_Masks export of `n` chips. Every chip has two trees (mask values 1 and 2) in
/// `labels/1/`; even chips also have a car in `labels/2/`.
fn rcnn_export(n: usize) -> Tiny {
    let t = Tiny::new();
    let mut features = 0;
    for i in 0..n {
        let c = chip_name(i);
        chip(&t, &format!("images/{c}.tif"), 32, 32);
        mask_tif(
            &t,
            &format!("labels/1/{c}.tif"),
            32,
            32,
            &[(2, 3, 10, 12, 1), (20, 20, 29, 30, 2), (20, 31, 20, 31, 2)],
        );
        features += 2;
        if i % 2 == 0 {
            mask_tif(
                &t,
                &format!("labels/2/{c}.tif"),
                32,
                32,
                &[(0, 25, 7, 31, 5)],
            );
            features += 1;
        }
    }
    export_files(&t, "RCNN_Masks", n, "tif", features);
    t
}

#[test]
fn rcnn_masks_are_read_as_boxes_with_instance_masks() {
    let t = rcnn_export(6);
    assert_eq!(detect_format(t.root()).unwrap(), Format::RcnnMasks);
    let ds = open(t.root(), &ReadOptions::default()).unwrap();
    assert!(ds.skipped.is_empty(), "{:?}", ds.skipped);
    assert_eq!(ds.format, Format::RcnnMasks);
    assert_eq!(
        class_counts(&ds),
        [
            ("tree".to_owned(), 1, 12),
            ("car".to_owned(), 2, 3),
            ("building".to_owned(), 3, 0)
        ]
    );
    assert!(ds.arcgis.as_ref().unwrap().warnings.is_empty());

    let s = ds
        .samples()
        .find(|(_, s)| s.stem == chip_name(0))
        .unwrap()
        .1;
    let boxes: Vec<(usize, [f32; 4])> = s
        .boxes
        .iter()
        .map(|b| (b.class, [b.xmin, b.ymin, b.xmax, b.ymax]))
        .collect();
    assert_eq!(
        boxes,
        [
            (0, [2.0, 3.0, 10.0, 12.0]),
            (0, [20.0, 20.0, 29.0, 31.0]),
            (1, [0.0, 25.0, 7.0, 31.0])
        ]
    );
    let masks = instance_masks(&ds, s).unwrap();
    assert_eq!(masks.len(), s.boxes.len());
    for (m, b) in masks.iter().zip(&s.boxes) {
        assert_eq!(m.class, b.class);
        assert_eq!(m.bbox, [b.xmin, b.ymin, b.xmax, b.ymax]);
        assert_eq!(m.mask.len(), (m.width * m.height) as usize);
    }
    // The second tree: a 10x11 block and one pixel below its left column.
    let second = &masks[1];
    assert_eq!(
        (second.x, second.y, second.width, second.height),
        (20, 20, 10, 12)
    );
    assert_eq!(second.mask.iter().filter(|&&p| p).count(), 10 * 11 + 1);
    assert!(
        !second.mask[(11 * 10 + 1) as usize],
        "only (20, 31) is set in the last row"
    );

    // Without the JSON statistics, the class folders still say RCNN_Masks.
    fs::remove_file(t.path("esri_accumulated_stats.json")).unwrap();
    assert_eq!(detect_format(t.root()).unwrap(), Format::RcnnMasks);
}

#[test]
fn rcnn_class_folders_may_be_named_by_class() {
    let t = rcnn_export(4);
    fs::rename(t.path("labels/1"), t.path("labels/tree")).unwrap();
    let ds = open(t.root(), &ReadOptions::default()).unwrap();
    assert!(ds.skipped.is_empty(), "{:?}", ds.skipped);
    assert_eq!(class_counts(&ds)[0], ("tree".to_owned(), 1, 8));
}

#[test]
fn a_class_value_missing_from_the_emd_names_file_and_line() {
    let t = kitti_export(4);
    let bad = format!("labels/{}.txt", chip_name(1));
    t.write(
        &bad,
        kitti_line("1", (2.0, 3.0, 20.0, 25.0)) + &kitti_line("7", (1.0, 1.0, 5.0, 5.0)),
    );
    expect_bad(
        t.root(),
        ReadOptions::default(),
        &[(
            bad.as_str(),
            "line 2: unknown class '7' (not in esri_model_definition.emd)",
        )],
    );
}

#[test]
fn an_rcnn_folder_missing_from_the_emd_names_the_mask() {
    let t = rcnn_export(4);
    let bad = format!("labels/9/{}.tif", chip_name(2));
    mask_tif(&t, &bad, 32, 32, &[(1, 1, 4, 4, 1)]);
    expect_bad(
        t.root(),
        ReadOptions::default(),
        &[(
            bad.as_str(),
            "instance 1: unknown class '9' (not in esri_model_definition.emd)",
        )],
    );
}

#[test]
fn map_txt_pairs_images_and_names_missing_files_by_line() {
    let t = kitti_export(4);
    let c = |i| chip_name(i);
    // Line 3 names a chip that is not there, line 4 a label that is not there, line 5 is
    // malformed; chip 2 (and its label) is left out of the list.
    t.write(
        "map.txt",
        format!(
            "images\\{0}.tif labels\\{0}.txt\nimages/{1}.tif labels/{1}.txt\n\
             images\\{2}.tif labels\\{2}.txt\nimages\\{3}.tif labels\\missing.txt\nonly-one-field\n",
            c(0),
            c(1),
            c(9),
            c(3)
        ),
    );
    let ds = expect_bad(
        t.root(),
        ReadOptions::default(),
        &[
            (
                "map.txt",
                &format!("line 3: image 'images\\{}.tif' does not exist", c(9)),
            ),
            (
                "map.txt",
                "line 4: label 'labels\\missing.txt' does not exist",
            ),
            (
                "map.txt",
                "line 5: expected an image path and a label path, found 1 field(s)",
            ),
            (&format!("images/{}.tif", c(2)), "image is not listed in"),
        ],
    );
    let mut stems: Vec<&str> = ds.samples().map(|(_, s)| s.stem.as_str()).collect();
    stems.sort_unstable();
    assert_eq!(stems, [c(0), c(1)]);
    // Chip 3 is listed (on a bad line): it is not also reported as unlisted.
    assert!(
        !ds.skipped
            .iter()
            .any(|b| b.path.ends_with(format!("images/{}.tif", c(3)))),
        "{:?}",
        ds.skipped
    );
}

#[test]
fn stats_txt_disagreeing_with_the_chips_is_a_warning() {
    let t = rcnn_export(4);
    t.write(
        "stats.txt",
        "Total number of image chips: 10\nTotal features: 12\n",
    );
    let ds = open(t.root(), &ReadOptions::default()).unwrap();
    let warnings = &ds.arcgis.as_ref().unwrap().warnings;
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("stats.txt line 1 says 10 image chips") && w.contains("but 4")),
        "{warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("stats.txt line 2 says 12 features") && w.contains("but 10")),
        "{warnings:?}"
    );
    let text = summarize(&ds).unwrap().to_text();
    assert!(text.contains("arcgis    export (RCNN_Masks)"), "{text}");
    assert!(text.contains("class 2 car colour #e60000"), "{text}");
    assert!(text.contains("warning stats.txt line 1"), "{text}");
}

#[test]
fn an_export_format_we_do_not_read_is_named() {
    let t = Tiny::new();
    chip(&t, "images/000000000.tif", 32, 32);
    t.voc("000000000", 32, 32, &[("1", 0.0, 0.0, 31.0, 31.0)]);
    t.write(
        "esri_accumulated_stats.json",
        r#"{"MetaDataMode": "Labeled_Tiles"}"#,
    );
    let err = detect_format(t.root()).unwrap_err();
    assert!(
        matches!(&err, DataError::UnsupportedExport { mode, .. } if mode == "Labeled_Tiles"),
        "{err}"
    );
    assert!(err.to_string().contains("RCNN_Masks"), "{err}");
    assert!(open(t.root(), &ReadOptions::default()).is_err());
}

#[test]
fn side_files_of_mask_chips_are_not_taken_for_voc_labels() {
    // Classified tiles with ArcGIS's `<chip>.tif.xml` metadata beside each mask.
    let t = Tiny::new();
    for i in 0..3 {
        let c = chip_name(i);
        chip(&t, &format!("images/{c}.tif"), 8, 8);
        mask_tif(&t, &format!("labels/{c}.tif"), 8, 8, &[(0, 0, 3, 3, 1)]);
    }
    assert!(Path::new(&t.path("labels/000000000.tif.xml")).is_file());
    assert_eq!(detect_format(t.root()).unwrap(), Format::ClassifiedTiles);
    let ds = open(t.root(), &ReadOptions::default()).unwrap();
    assert!(ds.skipped.is_empty(), "{:?}", ds.skipped);
    assert!(ds.arcgis.is_none());
}

#[test]
fn classified_tiles_are_paired_by_map_txt() {
    let t = Tiny::new();
    t.write("esri_model_definition.emd", EMD);
    t.write(
        "esri_accumulated_stats.json",
        r#"{"MetaDataMode": "Classified_Tiles"}"#,
    );
    let mut map = String::new();
    for i in 0..4 {
        let c = chip_name(i);
        chip(&t, &format!("images/{c}.tif"), 8, 8);
        // The masks carry another stem than their chips: only map.txt pairs them.
        mask_tif(
            &t,
            &format!("labels/m{i}.tif"),
            8,
            8,
            &[(0, 0, 3, 7, 1), (4, 0, 7, 7, 2)],
        );
        map += &format!("images\\{c}.tif labels\\m{i}.tif\r\n");
    }
    map += "images\\000000000.tif labels\\m0.tif\n";
    t.write("map.txt", map);
    let ds = expect_bad(
        t.root(),
        ReadOptions::default(),
        &[(
            "map.txt",
            "line 5: image 'images\\000000000.tif' is listed again (first on line 1)",
        )],
    );
    assert_eq!(ds.format, Format::ClassifiedTiles);
    assert_eq!(ds.samples().count(), 4);
    for (_, s) in ds.samples() {
        let i: u32 = s.stem.parse().unwrap();
        assert!(s.label.as_ref().unwrap().ends_with(format!("m{i}.tif")));
    }
}
