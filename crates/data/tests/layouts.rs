//! Layout detection and class lists across the variants tools write.

// A test crate reports failure by panicking, helpers included.
#![allow(clippy::unwrap_used)]

mod common;

use autodl_data::{DataError, Format, ReadOptions, detect_format, open};
use common::Tiny;

#[test]
fn arcgis_classified_tiles_with_emd_and_sidecars() {
    let t = Tiny::new();
    t.write(
        "esri_model_definition.emd",
        r#"{"ModelConfiguration": "x", "Classes": [
            {"Value": 1, "Name": "Water", "Color": [0, 0, 255]},
            {"Value": 2, "Name": "Forest", "Color": [0, 255, 0]},
            {"Value": 3, "Name": "No Data (ignore)", "Color": [0, 0, 0]}]}"#,
    );
    // ArcGIS's map.txt pairs images with labels; it must not be taken for a class list.
    t.write(
        "map.txt",
        "images\\t0.png labels\\t0.png\nimages\\t1.png labels\\t1.png\nimages\\t2.png labels\\t2.png\n",
    );
    t.write("esri_accumulated_stats.json", "{}");
    for i in 0..3 {
        t.png(&format!("images/t{i}.png"), 8, 8);
        t.mask(&format!("labels/t{i}.png"), 8, 8, &[1, 2, 3]);
        t.write(&format!("labels/t{i}.png.aux.xml"), "<PAMDataset/>");
    }
    assert_eq!(detect_format(t.root()).unwrap(), Format::ClassifiedTiles);
    let ds = open(t.root(), &ReadOptions::default()).unwrap();
    assert!(ds.skipped.is_empty(), "{:?}", ds.skipped);
    assert_eq!(ds.ignore_index, Some(3));
    let names: Vec<&str> = ds.classes.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["Water", "Forest"]);
}

#[test]
fn tiles_without_a_class_list_use_the_values_seen() {
    let t = Tiny::new();
    for i in 0..3 {
        t.png(&format!("images/t{i}.png"), 8, 8);
        t.mask(&format!("labels/t{i}.png"), 8, 8, &[4, 9]);
    }
    let ds = open(t.root(), &ReadOptions::default()).unwrap();
    assert_eq!(ds.ignore_index, None);
    assert_eq!(
        ds.classes.iter().map(|c| c.value).collect::<Vec<_>>(),
        [4, 9]
    );
}

#[test]
fn yolo_with_data_yaml_and_difficult_side_file() {
    let t = Tiny::new();
    t.write("data.yaml", "train: images\nnames:\n  0: tree\n  1: car\n");
    for i in 0..3 {
        t.png(&format!("images/s{i}.png"), 40, 20);
        t.write(
            &format!("labels/s{i}.txt"),
            "1 0.5 0.5 0.5 0.5\n0 0.25 0.25 0.1 0.1\n",
        );
    }
    t.write("labels/s1.difficult", "1\n");
    assert_eq!(detect_format(t.root()).unwrap(), Format::Yolo);
    let ds = open(t.root(), &ReadOptions::default()).unwrap();
    assert!(ds.skipped.is_empty(), "{:?}", ds.skipped);
    let s1 = ds.samples().find(|(_, s)| s.stem == "s1").unwrap().1;
    let b = &s1.boxes[0];
    assert_eq!(ds.classes[b.class].name, "car");
    assert_eq!((b.xmin, b.ymin, b.xmax, b.ymax), (10.0, 5.0, 30.0, 15.0));
    assert!(!b.difficult && s1.boxes[1].difficult);
}

#[test]
fn coco_in_annotations_folder_with_string_ids_and_crowd() {
    let t = Tiny::new();
    std::fs::remove_dir(t.path("labels")).unwrap();
    for i in 0..3 {
        t.png(&format!("images/s{i}.png"), 32, 32);
    }
    t.write(
        "annotations/instances.json",
        r#"{"images": [
            {"id": "a", "file_name": "images/s0.png", "width": 32, "height": 32},
            {"id": "b", "file_name": "s1.png"},
            {"id": "c", "file_name": "s2.png"}],
          "annotations": [
            {"id": 1, "image_id": "a", "category_id": 5, "bbox": [1.5, 2, 10, 4], "iscrowd": 1},
            {"id": 2, "image_id": "b", "category_id": 5, "bbox": [1, 2, 3, 4], "difficult": true}],
          "categories": [{"id": 5, "name": "tree"}]}"#,
    );
    assert_eq!(detect_format(t.root()).unwrap(), Format::Coco);
    let ds = open(t.root(), &ReadOptions::default()).unwrap();
    assert!(ds.skipped.is_empty(), "{:?}", ds.skipped);
    assert_eq!(ds.classes[0].value, 5);
    let s0 = ds.samples().find(|(_, s)| s.stem == "s0").unwrap().1;
    assert_eq!(
        (s0.boxes[0].xmin, s0.boxes[0].xmax, s0.boxes[0].ymax),
        (1.5, 11.5, 6.0)
    );
    assert!(s0.boxes[0].iscrowd);
    let s1 = ds.samples().find(|(_, s)| s.stem == "s1").unwrap().1;
    assert!(s1.boxes[0].difficult);
}

#[test]
fn empty_txt_labels_are_ambiguous() {
    let t = Tiny::new();
    for i in 0..3 {
        t.png(&format!("images/s{i}.png"), 8, 8);
        t.write(&format!("labels/s{i}.txt"), "");
    }
    let err = detect_format(t.root()).unwrap_err();
    assert!(matches!(err, DataError::AmbiguousFormat { .. }), "{err}");
    assert!(err.to_string().contains("set the format"), "{err}");
    // Naming the format resolves it.
    let opts = ReadOptions {
        format: Some(Format::Kitti),
        ..ReadOptions::default()
    };
    assert_eq!(open(t.root(), &opts).unwrap().format, Format::Kitti);
}

#[test]
fn missing_image_folder() {
    let t = Tiny::voc_dataset(2);
    let opts = ReadOptions {
        images_dir: Some("images_ms".to_owned()),
        ..ReadOptions::default()
    };
    let err = open(t.root(), &opts).unwrap_err().to_string();
    assert!(
        err.starts_with("image folder ") && err.contains("images_ms"),
        "{err}"
    );
}
