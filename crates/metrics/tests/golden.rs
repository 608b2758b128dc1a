//! Golden test: every score must match scikit-learn's on the cases written
//! by `tests/fixtures/segmentation/make_expected.py`.

use autodl_metrics::{ConfusionMatrix, SegMetrics};
use serde::Deserialize;

const FIXTURE: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/segmentation/expected.json"
));

const TOL: f64 = 1e-6;

#[derive(Deserialize)]
struct Fixture {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    num_classes: usize,
    ignore: Option<u32>,
    truth: Vec<u32>,
    pred: Vec<u32>,
    confusion: Vec<Vec<u64>>,
    pixel_accuracy: f64,
    per_class: Vec<ExpectedClass>,
    classes_present: Vec<usize>,
    mean_iou: f64,
    mean_dice: f64,
    mean_precision: f64,
    mean_recall: f64,
    frequency_weighted_iou: f64,
}

#[derive(Deserialize)]
struct ExpectedClass {
    support: u64,
    predicted: u64,
    iou: Option<f64>,
    precision: Option<f64>,
    recall: Option<f64>,
    f1: Option<f64>,
}

fn cases() -> Vec<Case> {
    let fixture: Fixture = serde_json::from_str(FIXTURE).expect("fixture parses");
    assert!(fixture.cases.len() >= 5, "fixture lost its cases");
    fixture.cases
}

fn close(case: &str, what: &str, got: f64, want: f64) {
    assert!(
        (got - want).abs() <= TOL,
        "{case}: {what} is {got}, expected {want}"
    );
}

fn close_opt(case: &str, what: &str, got: Option<f64>, want: Option<f64>) {
    match (got, want) {
        (Some(g), Some(w)) => close(case, what, g, w),
        (None, None) => {}
        _ => panic!("{case}: {what} is {got:?}, expected {want:?}"),
    }
}

fn check(case: &Case, cm: &ConfusionMatrix, m: &SegMetrics) {
    let name = case.name.as_str();
    let n = case.num_classes;
    assert_eq!(cm.num_classes(), n);
    let want_counts: Vec<u64> = case.confusion.iter().flatten().copied().collect();
    assert_eq!(cm.counts(), want_counts.as_slice(), "{name}: counts");
    for (t, row) in case.confusion.iter().enumerate() {
        for (p, &v) in row.iter().enumerate() {
            assert_eq!(cm.get(t, p), v, "{name}: cell ({t}, {p})");
        }
    }

    close(
        name,
        "pixel accuracy",
        m.pixel_accuracy,
        case.pixel_accuracy,
    );
    close(name, "mean IoU", m.mean_iou, case.mean_iou);
    close(name, "mean dice", m.mean_dice, case.mean_dice);
    close(name, "mean F1", m.mean_f1, case.mean_dice);
    close(
        name,
        "mean precision",
        m.mean_precision,
        case.mean_precision,
    );
    close(name, "mean recall", m.mean_recall, case.mean_recall);
    close(
        name,
        "frequency-weighted IoU",
        m.frequency_weighted_iou,
        case.frequency_weighted_iou,
    );
    assert_eq!(m.classes_present, case.classes_present, "{name}: present");
    let counted: u64 = case.per_class.iter().map(|c| c.support).sum();
    assert_eq!(m.total_pixels, counted, "{name}: total pixels");

    assert_eq!(m.per_class.len(), n, "{name}: per-class length");
    for (c, (got, want)) in m.per_class.iter().zip(&case.per_class).enumerate() {
        assert_eq!(got.support, want.support, "{name}: support of class {c}");
        assert_eq!(
            got.predicted, want.predicted,
            "{name}: predicted of class {c}"
        );
        close_opt(name, &format!("IoU of class {c}"), got.iou, want.iou);
        close_opt(
            name,
            &format!("precision of class {c}"),
            got.precision,
            want.precision,
        );
        close_opt(
            name,
            &format!("recall of class {c}"),
            got.recall,
            want.recall,
        );
        close_opt(name, &format!("F1 of class {c}"), got.f1, want.f1);
    }
}

#[test]
fn matches_sklearn_in_one_add() {
    for case in cases() {
        let mut cm = ConfusionMatrix::new(case.num_classes);
        cm.add(&case.truth, &case.pred, case.ignore)
            .expect("fixture labels are in range");
        check(&case, &cm, &cm.metrics());
    }
}

#[test]
fn matches_sklearn_when_chunked_and_merged() {
    for case in cases() {
        // Uneven chunks, as from batches of different sizes spread over
        // workers: some go straight into `total`, the rest through `merge`.
        let mut total = ConfusionMatrix::new(case.num_classes);
        let mut rest = ConfusionMatrix::new(case.num_classes);
        let len = case.truth.len();
        let bounds = [0, len / 7, len / 3, len / 3 + 1, len * 4 / 5, len];
        for (i, w) in bounds.windows(2).enumerate() {
            let (a, b) = (w[0], w[1]);
            let mut part = ConfusionMatrix::new(case.num_classes);
            part.add(&case.truth[a..b], &case.pred[a..b], case.ignore)
                .expect("fixture labels are in range");
            if i % 2 == 0 {
                total.merge(&part).expect("same class count");
            } else {
                rest.merge(&part).expect("same class count");
            }
        }
        total.merge(&rest).expect("same class count");
        check(&case, &total, &total.metrics());
    }
}

#[test]
fn metrics_survive_a_json_round_trip() {
    for case in cases() {
        let mut cm = ConfusionMatrix::new(case.num_classes);
        cm.add(&case.truth, &case.pred, case.ignore)
            .expect("fixture labels are in range");
        let m = cm.metrics();
        let json = serde_json::to_string(&m).expect("metrics serialise");
        let back: SegMetrics = serde_json::from_str(&json).expect("metrics deserialise");
        check(&case, &cm, &back);
    }
}
