//! Writing trees_voc in every detection format and reading it back gives the same dataset.

// A test crate reports failure by panicking, helpers included.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use autodl_data::{
    Dataset, Format, ReadOptions, open, summarize, write_coco, write_kitti, write_voc, write_yolo,
};

fn trees_voc() -> PathBuf {
    let p = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/data/trees_voc"
    ));
    assert!(
        p.is_dir(),
        "dataset {} is missing: clone shared/ beside the workspace",
        p.display()
    );
    p
}

type Writer = fn(&Dataset, &Path) -> Result<(), autodl_data::DataError>;

fn assert_same(a: &Dataset, b: &Dataset, format: Format) {
    let names = |d: &Dataset| d.classes.iter().map(|c| c.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(a), names(b), "{format}: classes");
    assert_eq!(b.split_source, "splits/ files", "{format}");
    assert!(b.skipped.is_empty(), "{format}: {:?}", b.skipped);
    for (sa, sb) in [(&a.train, &b.train), (&a.val, &b.val)] {
        assert_eq!(sa.len(), sb.len(), "{format}: split sizes");
        for (x, y) in sa.iter().zip(sb.iter()) {
            assert_eq!(x.stem, y.stem, "{format}");
            assert_eq!(
                (x.width, x.height, x.bands),
                (y.width, y.height, y.bands),
                "{format}"
            );
            assert_eq!(x.boxes.len(), y.boxes.len(), "{format}: {}", x.stem);
            for (p, q) in x.boxes.iter().zip(y.boxes.iter()) {
                assert_eq!(a.classes[p.class].name, b.classes[q.class].name, "{format}");
                assert_eq!(
                    (p.difficult, p.iscrowd),
                    (q.difficult, q.iscrowd),
                    "{format}"
                );
                for (u, v) in [
                    (p.xmin, q.xmin),
                    (p.ymin, q.ymin),
                    (p.xmax, q.xmax),
                    (p.ymax, q.ymax),
                ] {
                    assert!(
                        (u - v).abs() <= 1e-3,
                        "{format}: {} box {p:?} vs {q:?}",
                        x.stem
                    );
                }
            }
        }
    }
    let (sa, sb) = (summarize(a).unwrap(), summarize(b).unwrap());
    assert_eq!(sa.images, sb.images, "{format}");
    assert_eq!(sa.image_size, sb.image_size, "{format}");
    let counts = |s: &autodl_data::Summary| {
        s.classes
            .iter()
            .map(|c| (c.name.clone(), c.count, c.difficult))
            .collect::<Vec<_>>()
    };
    assert_eq!(counts(&sa), counts(&sb), "{format}");
    let (ba, bb) = (sa.boxes.unwrap(), sb.boxes.unwrap());
    assert_eq!(
        (ba.total, ba.difficult),
        (bb.total, bb.difficult),
        "{format}"
    );
}

#[test]
fn round_trip_every_detection_format() {
    let original = open(&trees_voc(), &ReadOptions::default()).unwrap();
    let writers: [(Format, Writer); 4] = [
        (Format::PascalVoc, write_voc),
        (Format::Kitti, write_kitti),
        (Format::Coco, write_coco),
        (Format::Yolo, write_yolo),
    ];
    for (format, write) in writers {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join(format.as_str());
        write(&original, &out).unwrap();
        // Detection must recognise what we wrote, not only reading with the format forced.
        assert_eq!(autodl_data::detect_format(&out).unwrap(), format);
        let back = open(&out, &ReadOptions::default()).unwrap();
        assert_eq!(back.format, format);
        assert_same(&original, &back, format);
    }
}

#[test]
fn writing_into_a_non_empty_folder_is_refused() {
    let original = open(&trees_voc(), &ReadOptions::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("keep.txt"), "x").unwrap();
    let err = write_voc(&original, dir.path()).unwrap_err().to_string();
    assert!(err.contains("not empty"), "{err}");
}

#[test]
fn pixel_datasets_are_not_written_as_boxes() {
    let nc = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/data/nc_landcover"
    ));
    assert!(nc.is_dir(), "dataset {} is missing", nc.display());
    let ds = open(&nc, &ReadOptions::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let err = write_coco(&ds, &dir.path().join("x"))
        .unwrap_err()
        .to_string();
    assert_eq!(err, "cannot write a pixel-classification dataset as coco");
}
