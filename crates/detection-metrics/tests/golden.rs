//! Golden test: every COCO number must match pycocotools', and every VOC
//! number the NumPy port of the devkit's, on the fixtures written by
//! `tests/fixtures/detection/make_expected.py`.

use autodl_detection_metrics::{
    VocMethod, VocResult, arcgis_ap, coco_evaluate, iou_thresholds, precision_recall_f1,
    read_coco_dets, read_coco_gt, recall_thresholds, voc_ap,
};
use serde::Deserialize;

const DIR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/detection/"
);

const TOL: f64 = 1e-6;

#[derive(Deserialize)]
struct Expected {
    iou_thresholds: Vec<f64>,
    recall_thresholds: Vec<f64>,
    fixtures: Vec<Fixture>,
}

#[derive(Deserialize)]
struct Fixture {
    name: String,
    gt: String,
    dets: String,
    coco: Vec<f64>,
    coco_per_category: Vec<PerCategory>,
    voc: Voc,
    prf: Vec<Prf>,
}

#[derive(Deserialize)]
struct PerCategory {
    category: u32,
    ap: f64,
    ap50: f64,
    ap75: f64,
    ar100: f64,
}

#[derive(Deserialize)]
struct Voc {
    all_point: ExpectedVoc,
    eleven_point: ExpectedVoc,
    arcgis_0_1: ExpectedVoc,
}

#[derive(Deserialize)]
struct ExpectedVoc {
    map: Option<f64>,
    per_class: Vec<(u32, Option<f64>)>,
}

#[derive(Deserialize)]
struct Prf {
    category: u32,
    tp: u64,
    fp: u64,
    #[serde(rename = "fn")]
    fn_: u64,
}

fn expected() -> Expected {
    let text = std::fs::read_to_string(format!("{DIR}expected.json"))
        .expect("expected.json is missing: run tests/fixtures/detection/make_expected.py");
    serde_json::from_str(&text).expect("expected.json does not have the shape this test reads")
}

fn close(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => (a - b).abs() <= TOL,
        (None, None) => true,
        _ => false,
    }
}

fn check_voc(fixture: &str, what: &str, got: &VocResult, want: &ExpectedVoc) {
    assert!(
        close(got.map, want.map),
        "{fixture} {what} mAP: got {:?}, want {:?}",
        got.map,
        want.map
    );
    assert_eq!(
        got.per_class.len(),
        want.per_class.len(),
        "{fixture} {what} classes"
    );
    for (g, w) in got.per_class.iter().zip(&want.per_class) {
        assert_eq!(g.0, w.0, "{fixture} {what} class order");
        assert!(
            close(g.1, w.1),
            "{fixture} {what} class {}: got {:?}, want {:?}",
            g.0,
            g.1,
            w.1
        );
    }
}

#[test]
fn thresholds_are_bitwise_pycocotools() {
    let e = expected();
    assert_eq!(iou_thresholds().to_vec(), e.iou_thresholds);
    assert_eq!(recall_thresholds().to_vec(), e.recall_thresholds);
}

#[test]
fn coco_matches_pycocotools() {
    let e = expected();
    assert!(e.fixtures.len() >= 5);
    for f in &e.fixtures {
        let gt = read_coco_gt(format!("{DIR}{}", f.gt)).unwrap();
        let dets = read_coco_dets(format!("{DIR}{}", f.dets)).unwrap();
        let got = coco_evaluate(&gt.images, &gt.categories, &gt.annotations, &dets);
        let stats = got.summary.as_array();
        for (i, (g, w)) in stats.iter().zip(&f.coco).enumerate() {
            assert!(
                (g - w).abs() <= TOL,
                "{} stat {i}: got {g}, want {w}",
                f.name
            );
        }
        assert_eq!(
            got.per_category.len(),
            f.coco_per_category.len(),
            "{}",
            f.name
        );
        for (g, w) in got.per_category.iter().zip(&f.coco_per_category) {
            assert_eq!(g.category, w.category, "{}", f.name);
            for (what, gv, wv) in [
                ("ap", g.ap, w.ap),
                ("ap50", g.ap50, w.ap50),
                ("ap75", g.ap75, w.ap75),
                ("ar100", g.ar100, w.ar100),
            ] {
                assert!(
                    (gv - wv).abs() <= TOL,
                    "{} category {} {what}: got {gv}, want {wv}",
                    f.name,
                    g.category
                );
            }
        }
    }
}

#[test]
fn voc_matches_devkit_port() {
    for f in &expected().fixtures {
        let gt = read_coco_gt(format!("{DIR}{}", f.gt)).unwrap();
        let dets = read_coco_dets(format!("{DIR}{}", f.dets)).unwrap();
        let gts = &gt.annotations;
        let all = voc_ap(gts, &dets, 0.5, VocMethod::AllPoint);
        check_voc(&f.name, "all-point", &all, &f.voc.all_point);
        let eleven = voc_ap(gts, &dets, 0.5, VocMethod::ElevenPoint);
        check_voc(&f.name, "11-point", &eleven, &f.voc.eleven_point);
        check_voc(&f.name, "arcgis", &arcgis_ap(gts, &dets), &f.voc.arcgis_0_1);

        let prf = precision_recall_f1(gts, &dets, 0.5, 0.5);
        assert_eq!(prf.len(), f.prf.len(), "{}", f.name);
        for (g, w) in prf.iter().zip(&f.prf) {
            assert_eq!(
                (g.category, g.tp, g.fp, g.fn_),
                (w.category, w.tp, w.fp, w.fn_),
                "{} prf",
                f.name
            );
        }
    }
}

#[test]
fn fixtures_cover_the_edge_cases() {
    // The golden numbers only guard what the fixtures contain; make sure the
    // cases the evaluator special-cases are really there.
    let e = expected();
    let load = |name: &str| {
        let f = e.fixtures.iter().find(|f| f.name == name).unwrap();
        let gt = read_coco_gt(format!("{DIR}{}", f.gt)).unwrap();
        let dets = read_coco_dets(format!("{DIR}{}", f.dets)).unwrap();
        (gt, dets)
    };
    let (gt, dets) = load("empty_images");
    assert!(
        dets.iter()
            .any(|d| gt.annotations.iter().all(|g| g.image_id != d.image_id))
    );
    assert!(
        gt.annotations
            .iter()
            .any(|g| dets.iter().all(|d| d.image_id != g.image_id))
    );
    let (gt, dets) = load("crowd");
    assert!(gt.annotations.iter().any(|g| g.iscrowd));
    assert!(dets.iter().filter(|d| d.image_id == 1).count() > 100);
    let (gt, dets) = load("missing_category");
    assert!(gt.categories.iter().any(|&c| {
        gt.annotations.iter().any(|g| g.category == c) && dets.iter().all(|d| d.category != c)
    }));
    let (gt, _) = load("difficult");
    assert!(gt.annotations.iter().any(|g| g.difficult));
    let (gt, _) = load("area_ranges");
    for (lo, hi) in [(0.0, 1024.0), (1024.0, 9216.0), (9216.0, 1e10)] {
        assert!(
            gt.annotations
                .iter()
                .any(|g| (lo..=hi).contains(&g.coco_area()))
        );
    }
}
