//! Every network family compiled into `autodl` passes the conformance suite
//! (`autodl-conformance`): a short training on tiny data, parameters refused, metrics with
//! their direction, prediction shapes, and identical predictions from the saved model.

#![allow(clippy::unwrap_used)]

// The plugin crates register themselves; naming them links them into this test as into the
// binary.
use autodl_augment as _;
use autodl_batch_throughput as _;
use autodl_deeplab as _;
use autodl_eval_boxes as _;
use autodl_eval_pixels as _;
use autodl_faster_rcnn as _;
use autodl_fcos as _;
use autodl_pspnet as _;
use autodl_retinanet as _;
use autodl_ssd as _;
use autodl_tuner_random as _;
use autodl_tuner_tpe as _;
use autodl_unet as _;
use autodl_yolov3 as _;

/// The autodl crates a file names with `use CRATE as _;`.
fn linked(source: &str) -> std::collections::BTreeSet<&str> {
    source
        .lines()
        .filter_map(|l| l.trim().strip_prefix("use ")?.strip_suffix(" as _;"))
        .filter(|name| name.starts_with("autodl_"))
        .collect()
}

#[test]
fn this_test_links_every_plugin_the_binary_links() {
    let binary = linked(include_str!("../src/main.rs"));
    let here = linked(include_str!("conformance.rs"));
    assert!(binary.len() >= 14, "{binary:?}");
    let missing: Vec<_> = binary.difference(&here).collect();
    assert!(
        missing.is_empty(),
        "add `use CRATE as _;` for {missing:?} to this test, so that it runs the suite on every family `autodl` registers"
    );
}

#[test]
fn every_registered_family_passes_the_conformance_suite() {
    let families = autodl_api::networks();
    let names: Vec<&str> = families.iter().map(|f| f.name()).collect();
    for expected in [
        "unet",
        "pspnet",
        "deeplab",
        "ssd",
        "retinanet",
        "yolov3",
        "fcos",
        "faster-rcnn",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} is not registered: {names:?}"
        );
    }
    let options = autodl_conformance::Options::default();
    let mut failed = Vec::new();
    let mut table = String::new();
    for family in families {
        let report = autodl_conformance::run(family, &options).unwrap();
        table += &format!(
            "{report}{:<12} took {:.1} s\n",
            report.family, report.seconds
        );
        if !report.passed() {
            failed.push(report.family.clone());
        }
    }
    // Shown with `--nocapture`, and with the failure.
    println!("{table}");
    assert!(failed.is_empty(), "{failed:?} fail the suite:\n{table}");
}
