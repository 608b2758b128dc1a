//! The seeded random split is reproducible and depends on the seed.

// A test crate reports failure by panicking, helpers included.
#![allow(clippy::unwrap_used)]

mod common;

use autodl_data::{DataError, ReadOptions, open};
use common::Tiny;

fn val_stems(root: &std::path::Path, seed: u64) -> Vec<String> {
    let opts = ReadOptions {
        seed,
        ..ReadOptions::default()
    };
    let ds = open(root, &opts).unwrap();
    assert_eq!(
        ds.split_source,
        format!("seeded random split (seed {seed}, val fraction 0.2)")
    );
    assert_eq!(ds.train.len() + ds.val.len(), 20);
    ds.val.iter().map(|s| s.stem.clone()).collect()
}

#[test]
fn same_seed_same_split_other_seed_other_split() {
    let t = Tiny::voc_dataset(20);
    let a = val_stems(t.root(), 42);
    let b = val_stems(t.root(), 42);
    assert_eq!(a.len(), 4, "round(20 * 0.2) samples go to val");
    assert_eq!(a, b);
    let c = val_stems(t.root(), 7);
    assert_ne!(a, c);
}

#[test]
fn split_is_pinned() {
    // ChaCha8 is specified, so this list may only change if the algorithm is changed on purpose.
    let t = Tiny::voc_dataset(20);
    let val = val_stems(t.root(), 42);
    assert_eq!(val, ["s1", "s15", "s19", "s6"]);
    let ds = open(t.root(), &ReadOptions::default()).unwrap();
    let mut all: Vec<&str> = ds.samples().map(|(_, s)| s.stem.as_str()).collect();
    all.sort_unstable();
    let mut expected: Vec<String> = (0..20).map(|i| format!("s{i}")).collect();
    expected.sort_unstable();
    assert_eq!(all, expected);
}

#[test]
fn at_least_one_val_sample() {
    let t = Tiny::voc_dataset(2);
    let opts = ReadOptions {
        val_fraction: 0.0,
        ..ReadOptions::default()
    };
    let ds = open(t.root(), &opts).unwrap();
    assert_eq!((ds.train.len(), ds.val.len()), (1, 1));
}

#[test]
fn a_single_sample_cannot_be_split() {
    let t = Tiny::voc_dataset(1);
    let err = open(t.root(), &ReadOptions::default()).unwrap_err();
    assert!(matches!(err, DataError::EmptySplit { .. }), "{err}");
}

#[test]
fn val_fraction_out_of_range() {
    let t = Tiny::voc_dataset(3);
    for f in [-0.1, 1.0, f64::NAN] {
        let opts = ReadOptions {
            val_fraction: f,
            ..ReadOptions::default()
        };
        let err = open(t.root(), &opts).unwrap_err().to_string();
        assert!(err.starts_with("invalid read option val-fraction"), "{err}");
    }
}

#[test]
fn split_lists_may_hold_paths_and_a_test_list() {
    let t = Tiny::voc_dataset(5);
    t.write("splits/train.txt", "images/s0.png\ns1\n# comment\n\ns2\n");
    t.write("splits/val.txt", "s3\n");
    t.write("splits/test.txt", "s4\n");
    let ds = open(t.root(), &ReadOptions::default()).unwrap();
    assert!(ds.skipped.is_empty(), "{:?}", ds.skipped);
    assert_eq!((ds.train.len(), ds.val.len()), (3, 1));
    assert_eq!(ds.test.len(), 1);
    assert_eq!(ds.test[0].stem, "s4");
    let summary = autodl_data::summarize(&ds).unwrap();
    assert_eq!((summary.images.total(), summary.test_images), (4, 1));
    assert!(summary.to_text().contains("test      1 images held out"));
}

#[test]
fn a_test_fraction_leaves_validation_as_it_was_and_takes_from_training() {
    let t = Tiny::voc_dataset(20);
    let without = open(t.root(), &ReadOptions::default()).unwrap();
    let opts = ReadOptions {
        test_fraction: 0.25,
        ..ReadOptions::default()
    };
    let with = open(t.root(), &opts).unwrap();
    let stems = |s: &[autodl_data::Sample]| s.iter().map(|s| s.stem.clone()).collect::<Vec<_>>();
    assert_eq!(stems(&with.val), stems(&without.val));
    assert_eq!(with.test.len(), 5, "round(20 * 0.25)");
    assert_eq!(with.train.len(), 11);
    assert!(
        with.test
            .iter()
            .all(|s| !stems(&with.train).contains(&s.stem))
    );
    assert_eq!(
        stems(&open(t.root(), &opts).unwrap().test),
        stems(&with.test)
    );
    assert!(without.test.is_empty());
    for bad in [1.0, -0.1, 0.8] {
        let opts = ReadOptions {
            test_fraction: bad,
            ..ReadOptions::default()
        };
        let err = open(t.root(), &opts).unwrap_err().to_string();
        assert!(err.contains("test-fraction"), "{bad}: {err}");
    }
}
