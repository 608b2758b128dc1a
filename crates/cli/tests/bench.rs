//! `autodl bench families`: its JSON report, a backend it cannot run skipped with the reason,
//! and an unknown backend a usage error.

#![allow(clippy::unwrap_used)]

mod common;
use common::{autodl, text};

use autodl_conformance::bench::{BackendStatus, BenchReport};

#[test]
fn the_smoke_suite_measures_a_family_and_writes_its_report() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let o = autodl(&[
        "bench",
        "families",
        "unet",
        "--suite",
        "smoke",
        "--backend",
        "cpu",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let report: BenchReport =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report.suite, "smoke");
    let [cpu] = &report.backends[..] else {
        panic!("one backend asked for: {report:?}")
    };
    assert_eq!(cpu.status, BackendStatus::Ran);
    let [unet] = &cpu.families[..] else {
        panic!("one family asked for: {report:?}")
    };
    assert_eq!((unet.family.as_str(), unet.error.as_ref()), ("unet", None));
    assert!(
        unet.train_images_per_sec.is_some_and(|r| r > 0.0),
        "{report:?}"
    );
    assert!(
        unet.infer_images_per_sec.is_some_and(|r| r > 0.0),
        "{report:?}"
    );
    let aug = report.augmentation.as_ref().unwrap();
    assert!(aug.images > 0 && aug.images_per_sec > 0.0, "{report:?}");
    let eval = report.evaluation.as_ref().unwrap();
    assert_eq!((eval.detections, eval.truths), (10_000, 2_000));
    // The table names the family with its figures.
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("unet"),
        "{}",
        text(&o)
    );
}

#[test]
fn a_backend_not_compiled_in_is_skipped_with_the_reason() {
    if autodl_backend_compiled_with_cuda() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let o = autodl(&[
        "bench",
        "families",
        "--suite",
        "smoke",
        "--backend",
        "cuda",
        "--families-only",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let report: BenchReport =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    match &report.backends[0].status {
        BackendStatus::NotCompiled { reason, .. } => {
            assert!(reason.contains("--features cuda"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    assert!(report.backends[0].families.is_empty());
    assert!(text(&o).contains("skipped"), "{}", text(&o));
}

/// Whether this test's `autodl` carries the CUDA backend (`autodl plugins` lists it).
fn autodl_backend_compiled_with_cuda() -> bool {
    let o = autodl(&["plugins"]);
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .any(|l| l.to_lowercase().contains("backend") && l.contains("cuda"))
}

#[test]
fn an_unknown_backend_or_family_is_a_usage_error() {
    for args in [
        &["bench", "families", "--backend", "tpu", "--families-only"][..],
        &["bench", "families", "no-such-net", "--families-only"][..],
    ] {
        let o = autodl(args);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    }
}
