//! Each kind of bad input is named, with its file and reason, in skip mode and in fail mode.

// A test crate reports failure by panicking, helpers included.
#![allow(clippy::unwrap_used)]

mod common;

use autodl_data::{DataError, Format, ReadOptions, Split, open};
use common::{Tiny, expect_bad, png_bytes};

fn defaults() -> ReadOptions {
    ReadOptions::default()
}

#[test]
fn corrupt_image() {
    let t = Tiny::voc_dataset(3);
    // Deterministic noise: a PNG signature would be a different test.
    let noise: Vec<u8> = (0u32..500)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    t.write("images/bad.png", noise);
    t.voc("bad", 32, 32, &[("tree", 1.0, 1.0, 5.0, 5.0)]);
    let ds = expect_bad(
        t.root(),
        defaults(),
        &[("images/bad.png", "cannot decode image")],
    );
    assert_eq!(ds.train.len() + ds.val.len(), 3);
}

#[test]
fn truncated_png() {
    let t = Tiny::voc_dataset(3);
    let full = png_bytes(64, 64);
    t.write("images/cut.png", &full[..full.len() / 2]);
    t.voc("cut", 64, 64, &[("tree", 1.0, 1.0, 5.0, 5.0)]);
    expect_bad(
        t.root(),
        defaults(),
        &[("images/cut.png", "cannot decode image")],
    );
}

#[test]
fn truncated_jpeg() {
    let t = Tiny::voc_dataset(3);
    let img = image::RgbImage::from_fn(64, 64, |x, y| image::Rgb([x as u8 * 3, y as u8 * 3, 90]));
    let mut buf = std::io::Cursor::new(Vec::new());
    img.write_to(&mut buf, image::ImageFormat::Jpeg).unwrap();
    let full = buf.into_inner();
    t.write("images/cut.jpg", &full[..full.len() * 2 / 3]);
    t.voc("cut", 64, 64, &[("tree", 1.0, 1.0, 5.0, 5.0)]);
    expect_bad(
        t.root(),
        defaults(),
        &[("images/cut.jpg", "truncated jpeg")],
    );
}

#[test]
fn label_without_image() {
    let t = Tiny::voc_dataset(3);
    t.voc("orphan", 32, 32, &[("tree", 1.0, 1.0, 5.0, 5.0)]);
    expect_bad(
        t.root(),
        defaults(),
        &[("labels/orphan.xml", "label has no image")],
    );
}

#[test]
fn image_without_label() {
    let t = Tiny::voc_dataset(3);
    t.png("images/lonely.png", 32, 32);
    expect_bad(
        t.root(),
        defaults(),
        &[("images/lonely.png", "image has no label file")],
    );
}

#[test]
fn empty_label_file_is_an_image_without_objects() {
    let t = Tiny::voc_dataset(3);
    t.png("images/empty.png", 32, 32);
    t.write("labels/empty.txt", "");
    // A YOLO dataset: box lines decide the format, the empty file must be fine.
    let t2 = Tiny::new();
    for i in 0..3 {
        t2.png(&format!("images/s{i}.png"), 32, 32);
        t2.write(&format!("labels/s{i}.txt"), "0 0.5 0.5 0.25 0.25\n");
    }
    t2.png("images/empty.png", 32, 32);
    t2.write("labels/empty.txt", "");
    t2.write("classes.txt", "tree\n");
    let ds = open(t2.root(), &defaults()).unwrap();
    assert_eq!(ds.format, Format::Yolo);
    assert!(ds.skipped.is_empty(), "{:?}", ds.skipped);
    let empty = ds.samples().find(|(_, s)| s.stem == "empty").unwrap().1;
    assert!(empty.boxes.is_empty());
}

#[test]
fn box_outside_image_and_edge_tolerance() {
    let t = Tiny::voc_dataset(3);
    t.png("images/out.png", 32, 32);
    t.voc("out", 32, 32, &[("tree", 10.0, 10.0, 40.0, 20.0)]);
    t.png("images/neg.png", 32, 32);
    t.voc("neg", 32, 32, &[("tree", -3.0, 10.0, 20.0, 20.0)]);
    // xmax == width is one pixel past the last inclusive column and is tolerated.
    t.png("images/edge.png", 32, 32);
    t.voc("edge", 32, 32, &[("tree", 0.0, 0.0, 32.0, 32.0)]);
    let ds = expect_bad(
        t.root(),
        defaults(),
        &[
            (
                "labels/out.xml",
                "object 1: box (10, 10, 40, 20) is outside the 32x32 image",
            ),
            ("labels/neg.xml", "is outside the 32x32 image"),
        ],
    );
    assert!(ds.samples().any(|(_, s)| s.stem == "edge"));
    assert_eq!(ds.skipped.len(), 2, "{:?}", ds.skipped);
}

#[test]
fn zero_and_negative_area() {
    let t = Tiny::voc_dataset(3);
    t.png("images/flat.png", 32, 32);
    t.voc("flat", 32, 32, &[("tree", 5.0, 5.0, 5.0, 9.0)]);
    t.png("images/inverted.png", 32, 32);
    t.voc("inverted", 32, 32, &[("tree", 5.0, 9.0, 9.0, 4.0)]);
    expect_bad(
        t.root(),
        defaults(),
        &[
            ("labels/flat.xml", "zero or negative area"),
            ("labels/inverted.xml", "zero or negative area"),
        ],
    );
}

#[test]
fn unknown_class_name() {
    let t = Tiny::voc_dataset(3);
    t.write("classes.txt", "tree\n");
    t.png("images/car.png", 32, 32);
    t.voc(
        "car",
        32,
        32,
        &[("tree", 1.0, 1.0, 9.0, 9.0), ("car", 1.0, 1.0, 9.0, 9.0)],
    );
    let ds = expect_bad(
        t.root(),
        defaults(),
        &[(
            "labels/car.xml",
            "object 2: unknown class 'car' (not in classes.txt)",
        )],
    );
    assert_eq!(ds.classes.len(), 1);
}

#[test]
fn label_size_disagrees_with_image() {
    let t = Tiny::voc_dataset(3);
    t.png("images/big.png", 32, 32);
    t.voc("big", 64, 48, &[("tree", 1.0, 1.0, 9.0, 9.0)]);
    expect_bad(
        t.root(),
        defaults(),
        &[(
            "labels/big.xml",
            "label gives image size 64x48 but big.png is 32x32",
        )],
    );
}

#[test]
fn duplicate_stems() {
    let t = Tiny::voc_dataset(3);
    t.png("images/twin.png", 32, 32);
    image::RgbImage::new(32, 32)
        .save(t.path("images/twin.tif"))
        .unwrap();
    t.voc("twin", 32, 32, &[("tree", 1.0, 1.0, 9.0, 9.0)]);
    let ds = expect_bad(
        t.root(),
        defaults(),
        &[
            ("images/twin.png", "duplicate stem 'twin'"),
            ("images/twin.tif", "duplicate stem 'twin'"),
        ],
    );
    assert!(ds.samples().all(|(_, s)| s.stem != "twin"));
    // The label of a stem whose image is ambiguous must not be reported as an orphan.
    assert!(
        ds.skipped
            .iter()
            .all(|b| !b.path.ends_with("labels/twin.xml")),
        "{:?}",
        ds.skipped
    );
}

#[test]
fn split_lists_a_stem_with_no_sample() {
    let t = Tiny::voc_dataset(4);
    t.write("splits/train.txt", "s0\ns1\nghost\n");
    t.write("splits/val.txt", "s2\ns3\n");
    let ds = expect_bad(
        t.root(),
        defaults(),
        &[("splits/train.txt", "line 3: stem 'ghost' has no sample")],
    );
    assert_eq!((ds.train.len(), ds.val.len()), (2, 2));
}

#[test]
fn sample_missing_from_both_split_lists() {
    let t = Tiny::voc_dataset(4);
    t.write("splits/train.txt", "s0\ns1\n");
    t.write("splits/val.txt", "s2\n");
    expect_bad(
        t.root(),
        defaults(),
        &[(
            "images/s3.png",
            "not listed in splits/train.txt or splits/val.txt",
        )],
    );
}

#[test]
fn malformed_xml() {
    let t = Tiny::voc_dataset(3);
    t.png("images/broken.png", 32, 32);
    t.write(
        "labels/broken.xml",
        "<annotation><object><name>tree</name></annotation>",
    );
    t.png("images/garbage.png", 32, 32);
    t.write("labels/garbage.xml", "this is not xml at all");
    t.png("images/nobox.png", 32, 32);
    t.write(
        "labels/nobox.xml",
        "<annotation><object><name>tree</name><bndbox><xmin>1</xmin><ymin>a</ymin>\
         <xmax>5</xmax><ymax>5</ymax></bndbox></object></annotation>",
    );
    expect_bad(
        t.root(),
        defaults(),
        &[
            ("labels/broken.xml", "malformed xml"),
            ("labels/garbage.xml", "malformed xml"),
            ("labels/nobox.xml", "object 1: <ymin> is 'a', not a number"),
        ],
    );
}

fn coco_dataset() -> Tiny {
    let t = Tiny::new();
    for i in 0..3 {
        t.png(&format!("images/s{i}.png"), 32, 32);
    }
    t
}

#[test]
fn malformed_json_file() {
    let t = coco_dataset();
    t.write("annotations.json", "{\"images\": [");
    let err = open(t.root(), &defaults()).unwrap_err();
    assert!(matches!(err, DataError::Parse { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("annotations.json") && msg.contains("malformed json"),
        "{msg}"
    );
}

#[test]
fn malformed_json_entries() {
    let t = coco_dataset();
    t.write(
        "annotations.json",
        r#"{
          "images": [
            {"id": 1, "file_name": "s0.png", "width": 32, "height": 32},
            {"id": 2, "file_name": "s1.png", "width": 32, "height": 32},
            {"id": 3, "file_name": "s2.png", "width": 32, "height": 32},
            {"id": 4, "file_name": "gone.png", "width": 32, "height": 32}
          ],
          "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 8, 8]},
            {"id": 2, "image_id": 2, "category_id": 1, "bbox": [1, 1, 8]},
            {"id": 3, "image_id": 3, "category_id": 7, "bbox": [1, 1, 8, 8]},
            {"id": 4, "image_id": 9, "category_id": 1, "bbox": [1, 1, 8, 8]}
          ],
          "categories": [{"id": 1, "name": "tree"}]
        }"#,
    );
    // Only s0 survives, so the split cannot have a val sample; check in the split-free way.
    let err = open(t.root(), &defaults()).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::EmptySplit {
                split: Split::Val,
                ..
            }
        ),
        "{err}"
    );
    t.png("images/s3.png", 32, 32);
    let text = std::fs::read_to_string(t.path("annotations.json"))
        .unwrap()
        .replace(
            r#"{"id": 4, "file_name": "gone.png""#,
            r#"{"id": 5, "file_name": "s3.png", "width": 32, "height": 32},
            {"id": 4, "file_name": "gone.png""#,
        );
    t.write("annotations.json", text);
    expect_bad(
        t.root(),
        defaults(),
        &[
            (
                "annotations.json",
                "annotations[1] (id 2) of image 's1.png': bbox must be 4 numbers",
            ),
            (
                "annotations.json",
                "unknown class id 7 (not in annotations.json)",
            ),
            (
                "annotations.json",
                "annotations[3] (id 4): image_id 9 is not in images",
            ),
            (
                "annotations.json",
                "image 'gone.png' (id 4) is listed but not found",
            ),
        ],
    );
}

#[test]
fn malformed_yolo_lines() {
    let t = Tiny::new();
    for i in 0..3 {
        t.png(&format!("images/s{i}.png"), 32, 32);
        t.write(&format!("labels/s{i}.txt"), "0 0.5 0.5 0.25 0.25\n");
    }
    t.write("classes.txt", "tree\n");
    t.png("images/short.png", 32, 32);
    t.write("labels/short.txt", "0 0.5 0.5 0.25 0.25\n0 0.5 0.5\n");
    t.png("images/word.png", 32, 32);
    t.write("labels/word.txt", "0 0.5 half 0.25 0.25\n");
    t.png("images/id.png", 32, 32);
    t.write("labels/id.txt", "3 0.5 0.5 0.25 0.25\n");
    t.png("images/outside.png", 32, 32);
    t.write("labels/outside.txt", "0 0.95 0.5 0.25 0.25\n");
    expect_bad(
        t.root(),
        defaults(),
        &[
            (
                "labels/short.txt",
                "line 2: malformed yolo line: expected 5 fields",
            ),
            (
                "labels/word.txt",
                "line 1: malformed yolo line: 'half' is not a number",
            ),
            (
                "labels/id.txt",
                "line 1: unknown class id 3 (not in classes.txt)",
            ),
            ("labels/outside.txt", "outside the 32x32 image"),
        ],
    );
}

#[test]
fn malformed_kitti_lines() {
    let t = Tiny::new();
    let good = "tree 0.00 0 -10 2 3 20 25 -1 -1 -1 -1000 -1000 -1000 -10\n";
    for i in 0..3 {
        t.png(&format!("images/s{i}.png"), 32, 32);
        t.write(&format!("labels/s{i}.txt"), good);
    }
    t.png("images/short.png", 32, 32);
    t.write(
        "labels/short.txt",
        format!("{good}tree 0 0 -10 2 3 20 25\n"),
    );
    t.png("images/word.png", 32, 32);
    t.write(
        "labels/word.txt",
        "tree 0.00 0 -10 2 3 right 25 -1 -1 -1 -1000 -1000 -1000 -10\n",
    );
    let ds = expect_bad(
        t.root(),
        defaults(),
        &[
            (
                "labels/short.txt",
                "line 2: malformed kitti line: expected 15 or 16 fields, found 8",
            ),
            (
                "labels/word.txt",
                "line 1: malformed kitti line: right is 'right', not a number",
            ),
        ],
    );
    assert_eq!(ds.format, Format::Kitti);
}

#[test]
fn kitti_dontcare_and_difficult() {
    let t = Tiny::new();
    for i in 0..3 {
        t.png(&format!("images/s{i}.png"), 32, 32);
        t.write(
            &format!("labels/s{i}.txt"),
            "tree 0.00 3 -10 2 3 20 25 -1 -1 -1 -1000 -1000 -1000 -10\n\
             DontCare -1 -1 -10 0 0 10 10 -1 -1 -1 -1000 -1000 -1000 -10\n",
        );
    }
    let ds = open(t.root(), &defaults()).unwrap();
    assert!(ds.skipped.is_empty(), "{:?}", ds.skipped);
    let names: Vec<&str> = ds.classes.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["tree"]);
    assert!(
        ds.samples()
            .all(|(_, s)| s.boxes.len() == 1 && s.boxes[0].difficult)
    );
}

fn tiles_dataset() -> Tiny {
    let t = Tiny::new();
    t.write("classes.txt", "0 no data\n1 water\n2 forest\n");
    for i in 0..3 {
        t.png(&format!("images/t{i}.png"), 16, 16);
        t.mask(&format!("labels/t{i}.png"), 16, 16, &[0, 1, 2]);
    }
    t
}

#[test]
fn mask_of_another_size() {
    let t = tiles_dataset();
    t.png("images/small.png", 16, 16);
    t.mask("labels/small.png", 8, 16, &[1]);
    expect_bad(
        t.root(),
        defaults(),
        &[(
            "labels/small.png",
            "mask is 8x16 but image small.png is 16x16",
        )],
    );
}

#[test]
fn mask_values_outside_the_class_list() {
    let t = tiles_dataset();
    t.png("images/stray.png", 16, 16);
    t.mask("labels/stray.png", 16, 16, &[0, 1, 9, 9]);
    let ds = expect_bad(
        t.root(),
        defaults(),
        &[(
            "labels/stray.png",
            "mask values not in the class list (classes.txt): 9 (128 px)",
        )],
    );
    // The ignore value 0 ("no data") is allowed and not a class.
    assert_eq!(ds.ignore_index, Some(0));
    assert_eq!(ds.ignore_name.as_deref(), Some("no data"));
    assert_eq!(
        ds.classes.iter().map(|c| c.value).collect::<Vec<_>>(),
        [1, 2]
    );
}

#[test]
fn ignore_index_option_overrides_the_nodata_class() {
    let t = tiles_dataset();
    let opts = ReadOptions {
        ignore_index: Some(2),
        ..defaults()
    };
    let ds = open(t.root(), &opts).unwrap();
    assert_eq!(ds.ignore_index, Some(2));
    let names: Vec<&str> = ds.classes.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["no data", "water"]);
}

#[test]
fn tiles_image_without_mask_and_mask_without_image() {
    let t = tiles_dataset();
    t.png("images/alone.png", 16, 16);
    t.mask("labels/orphan.png", 16, 16, &[1]);
    expect_bad(
        t.root(),
        defaults(),
        &[
            ("images/alone.png", "image has no mask"),
            ("labels/orphan.png", "mask has no image"),
        ],
    );
}

#[test]
fn empty_split_is_an_error() {
    let t = Tiny::voc_dataset(3);
    t.write("splits/train.txt", "s0\ns1\ns2\n");
    t.write("splits/val.txt", "");
    let err = open(t.root(), &defaults()).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::EmptySplit {
                split: Split::Val,
                ..
            }
        ),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.starts_with("the val split of ") && msg.contains("has no samples"),
        "{msg}"
    );

    // A split emptied by skipping bad samples is an error too.
    let t = Tiny::voc_dataset(2);
    t.write("splits/train.txt", "s0\n");
    t.write("splits/val.txt", "s1\n");
    t.write("labels/s1.xml", "<annotation>");
    let err = open(t.root(), &defaults()).unwrap_err();
    assert!(err.to_string().contains("1 bad sample(s) skipped"), "{err}");
}

#[test]
fn fail_mode_lists_every_bad_sample() {
    let t = Tiny::voc_dataset(3);
    t.png("images/lonely.png", 32, 32);
    t.voc("orphan", 32, 32, &[("tree", 1.0, 1.0, 5.0, 5.0)]);
    t.png("images/flat.png", 32, 32);
    t.voc("flat", 32, 32, &[("tree", 5.0, 5.0, 5.0, 9.0)]);
    let opts = ReadOptions {
        on_bad_sample: autodl_data::OnBadSample::Fail,
        ..defaults()
    };
    let err = open(t.root(), &opts).unwrap_err();
    let DataError::BadSamples { samples, .. } = &err else {
        panic!("unexpected error: {err}");
    };
    assert_eq!(samples.len(), 3, "{err}");
    let msg = err.to_string();
    assert!(msg.starts_with("3 bad sample(s) in "), "{msg}");
    for name in ["lonely.png", "orphan.xml", "flat.xml"] {
        assert!(msg.contains(name), "{msg}");
    }
}

#[test]
fn missing_folder_and_unknown_layout() {
    let t = Tiny::new();
    let err = open(&t.path("nope"), &defaults()).unwrap_err().to_string();
    assert!(
        err.starts_with("dataset folder ") && err.ends_with("does not exist"),
        "{err}"
    );
    let err = open(t.root(), &defaults()).unwrap_err().to_string();
    assert!(err.contains("no recognisable dataset layout"), "{err}");
    for layout in ["pascal-voc", "kitti", "coco", "yolo", "classified-tiles"] {
        assert!(err.contains(layout), "{err}");
    }
}

#[test]
fn format_names() {
    for f in Format::ALL {
        assert_eq!(f.to_string().parse::<Format>().unwrap(), f);
        assert_eq!(serde_json::to_string(&f).unwrap(), format!("\"{f}\""));
    }
    assert_eq!(Format::PascalVoc.to_string(), "pascal-voc");
    let err = "voc".parse::<Format>().unwrap_err().to_string();
    assert!(
        err.contains("unknown dataset format 'voc'") && err.contains("pascal-voc"),
        "{err}"
    );
}
