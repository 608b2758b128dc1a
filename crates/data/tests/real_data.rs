//! Reading the real datasets in `shared/data/` and checking the counts their READMEs give.

// A test crate reports failure by panicking, helpers included.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use autodl_data::{Format, ReadOptions, Split, Task, load_image, open, summarize};

/// The shared data folder beside the workspace; a missing folder fails the test loudly rather
/// than letting it pass by skipping.
fn shared(name: &str) -> PathBuf {
    let p = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data")).join(name);
    assert!(
        p.is_dir(),
        "dataset {} is missing: clone shared/ beside the workspace",
        p.display()
    );
    p
}

#[test]
fn trees_voc_counts() {
    let root = shared("trees_voc");
    assert_eq!(
        autodl_data::detect_format(&root).unwrap(),
        Format::PascalVoc
    );
    let ds = open(&root, &ReadOptions::default()).unwrap();
    assert_eq!(ds.format, Format::PascalVoc);
    assert_eq!(ds.task, Task::Detection);
    assert!(ds.skipped.is_empty(), "{:?}", ds.skipped);
    assert_eq!(ds.split_source, "splits/ files");
    assert_eq!(ds.classes.len(), 1);
    assert_eq!(ds.classes[0].name, "tree");
    assert_eq!((ds.train.len(), ds.val.len()), (31, 6));
    let boxes = |split: Split| ds.split(split).iter().map(|s| s.boxes.len()).sum::<usize>();
    assert_eq!((boxes(Split::Train), boxes(Split::Val)), (557, 122));
    let difficult = ds
        .samples()
        .flat_map(|(_, s)| &s.boxes)
        .filter(|b| b.difficult)
        .count();
    assert_eq!(difficult, 60);
    assert!(ds.samples().all(|(_, s)| s.bands == 3));

    let sum = summarize(&ds).unwrap();
    assert_eq!((sum.images.train, sum.images.val), (31, 6));
    assert_eq!(sum.count_unit, "boxes");
    assert_eq!(sum.classes.len(), 1);
    assert_eq!(
        (sum.classes[0].count.train, sum.classes[0].count.val),
        (557, 122)
    );
    assert_eq!(sum.classes[0].difficult.total(), 60);
    let stats = sum.boxes.as_ref().unwrap();
    assert_eq!((stats.total.train, stats.total.val), (557, 122));
    assert_eq!(stats.difficult.total(), 60);
    assert_eq!(stats.buckets.iter().map(|b| b.count).sum::<u64>(), 679);
    let size = sum.image_size.unwrap();
    assert_eq!((size.max_width, size.max_height), (400, 400));
    // The README says the smallest side is 160 px; the files say 299 (the last column).
    assert_eq!((size.min_width, size.min_height), (299, 400));
    assert_eq!(sum.bands, [3]);
    let text = sum.to_text();
    assert!(text.contains("pascal-voc"), "{text}");
    assert!(text.contains("31 train, 6 val, 37 total"), "{text}");
    assert!(text.contains("557"), "{text}");
    println!("{text}");
    let json = serde_json::to_string(&sum).unwrap();
    assert!(json.contains("\"format\":\"pascal-voc\""), "{json}");
}

#[test]
fn nc_landcover_counts() {
    let root = shared("nc_landcover");
    assert_eq!(
        autodl_data::detect_format(&root).unwrap(),
        Format::ClassifiedTiles
    );
    let ds = open(&root, &ReadOptions::default()).unwrap();
    assert!(ds.skipped.is_empty(), "{:?}", ds.skipped);
    assert_eq!(ds.task, Task::PixelClassification);
    assert_eq!((ds.train.len(), ds.val.len()), (33, 9));
    assert_eq!(ds.ignore_index, Some(0));
    let names: Vec<&str> = ds.classes.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "developed",
            "agriculture",
            "herbaceous",
            "shrubland",
            "forest",
            "water",
            "sediment"
        ]
    );
    assert!(
        ds.samples()
            .all(|(_, s)| s.bands == 3 && s.width == 64 && s.height == 64)
    );

    let sum = summarize(&ds).unwrap();
    assert_eq!(sum.count_unit, "pixels");
    let ignore = sum.ignore.as_ref().unwrap();
    assert_eq!(ignore.value, 0);
    let mut train = vec![ignore.pixels.train];
    let mut val = vec![ignore.pixels.val];
    train.extend(sum.classes.iter().map(|c| c.count.train));
    val.extend(sum.classes.iter().map(|c| c.count.val));
    assert_eq!(train, [10667, 38843, 280, 16559, 8211, 59064, 1410, 134]);
    assert_eq!(val, [4570, 9782, 100, 3927, 2548, 15443, 434, 60]);
    let text = sum.to_text();
    assert!(text.contains("[ignored]"), "{text}");
    println!("{text}");

    let ms = open(
        &root,
        &ReadOptions {
            images_dir: Some("images_ms".to_owned()),
            ..ReadOptions::default()
        },
    )
    .unwrap();
    assert!(ms.skipped.is_empty(), "{:?}", ms.skipped);
    assert_eq!((ms.train.len(), ms.val.len()), (33, 9));
    assert!(ms.samples().all(|(_, s)| s.bands == 6));
    let img = load_image(&ms.train[0].image).unwrap();
    assert_eq!(
        (img.width, img.height, img.bands, img.bit_depth),
        (64, 64, 6, 8)
    );
    assert_eq!(img.data.len(), 6 * 64 * 64);
    assert!(img.data.iter().all(|v| (0.0..=255.0).contains(v)));

    // Bands 4, 3, 2 (numbered from 1): three bands per sample, in that order.
    let picked = open(
        &root,
        &ReadOptions {
            images_dir: Some("images_ms".to_owned()),
            bands: Some(vec![3, 2, 1]),
            ..ReadOptions::default()
        },
    )
    .unwrap();
    assert!(picked.samples().all(|(_, s)| s.bands == 3));
    let three = picked.load_image(&picked.train[0]).unwrap();
    assert_eq!(three.bands, 3);
    let plane = 64 * 64;
    for (i, b) in [3, 2, 1].into_iter().enumerate() {
        assert_eq!(
            three.data[i * plane..(i + 1) * plane],
            img.data[b * plane..(b + 1) * plane]
        );
    }
    // A band the images lack is an error naming the image and the band.
    let err = open(
        &root,
        &ReadOptions {
            images_dir: Some("images_ms".to_owned()),
            bands: Some(vec![0, 6]),
            ..ReadOptions::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains(".tif") && err.contains("band 7"), "{err}");
}
