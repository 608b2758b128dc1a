//! Drives the real `autodl` binary in temporary folders.

// The fixture builders below are test code too: a failure in them should stop the test.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;
use common::{autodl, text};

/// Runs autodl with `AUTODL_WEIGHTS_DIR` pointing at a corrupt `resnet18.safetensors`, so
/// that every resnet18 trial fails at run time, as a real broken weights file makes it.
fn autodl_with_broken_weights(args: &[&str], dir: &Path) -> Output {
    let weights = dir.join("broken-weights");
    std::fs::create_dir_all(&weights).unwrap();
    std::fs::write(
        weights.join("resnet18.safetensors"),
        b"not a safetensors file",
    )
    .unwrap();
    Command::new(env!("CARGO_BIN_EXE_autodl"))
        .args(args)
        .env("AUTODL_WEIGHTS_DIR", &weights)
        .output()
        .expect("run autodl")
}

/// The child processes of `pid`, from `/proc`.
#[cfg(unix)]
fn children_of(pid: u32) -> Vec<String> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// Whether process `pid` still runs: gone, or a zombie waiting for a reaper, is not running.
#[cfg(unix)]
fn running(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|st| {
        st.rsplit(')')
            .next()
            .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
    })
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn shared(name: &str) -> String {
    let p = repo().join("../shared/data").join(name);
    assert!(
        p.is_dir(),
        "{} is missing: the tests need ../shared/data beside the repo",
        p.display()
    );
    p.display().to_string()
}

#[test]
fn every_example_pipeline_checks() {
    let mut n = 0;
    for entry in std::fs::read_dir(repo().join("configs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let o = autodl(&["check", path.to_str().unwrap()]);
            assert!(o.status.success(), "{}: {}", path.display(), text(&o));
            n += 1;
        }
    }
    assert!(n >= 2, "expected a pipeline per task in configs/");
}

#[test]
fn misspelt_key_is_a_config_error_with_line_and_valid_keys() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.toml");
    std::fs::write(
        &file,
        "version = 1\n\n[data]\npath = \"x\"\nval-fraktion = 0.3\n",
    )
    .unwrap();
    let o = autodl(&["check", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("p.toml:5:1"), "{t}");
    assert!(
        t.contains("val-fraktion") && t.contains("`val-fraction`") && t.contains("`images-dir`"),
        "{t}"
    );
}

/// `autodl check` on a pipeline of `body` after a minimal header: exit code and output.
fn check_pipeline(body: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.toml");
    std::fs::write(&file, format!("version = 1\n[data]\npath = \"x\"\n{body}")).unwrap();
    let o = autodl(&["check", file.to_str().unwrap()]);
    (o.status.code(), text(&o))
}

#[test]
fn a_family_parameter_is_checked_against_what_the_family_declares() {
    // Line 4 is the first line of `body`.
    let (code, t) = check_pipeline("[params.retinanet]\nhead-chanels = 128\n");
    assert_eq!(code, Some(2), "{t}");
    assert!(
        t.contains("p.toml:5:") && t.contains("`head-chanels`"),
        "{t}"
    );
    assert!(t.contains("head-channels") && t.contains("box-loss"), "{t}");

    let (code, t) = check_pipeline("[params.retinanet]\n\nhead-depth = 9\n");
    assert_eq!(code, Some(2), "{t}");
    assert!(
        t.contains("p.toml:6:") && t.contains("from 0 to 4") && t.contains('9'),
        "{t}"
    );

    let (code, t) = check_pipeline("[params.deeplab]\ndecoder = \"v4\"\n");
    assert_eq!(code, Some(2), "{t}");
    assert!(
        t.contains("p.toml:5:") && t.contains("one of v3+, v3"),
        "{t}"
    );

    let (code, t) = check_pipeline("[params.yolo]\nx = 1\n");
    assert_eq!(code, Some(2), "{t}");
    assert!(
        t.contains("[params.yolo]") && t.contains("retinanet"),
        "{t}"
    );

    // A loss option of the pixel classifiers on a detection-only pipeline is read by nobody.
    let (code, t) = check_pipeline("[train]\nnetworks = [\"ssd\"]\ndice-fraction = 0.3\n");
    assert_eq!(code, Some(2), "{t}");
    assert!(
        t.contains("p.toml:6:") && t.contains("train.dice-fraction") && t.contains("unet"),
        "{t}"
    );

    let (code, t) = check_pipeline("[train]\nnetworks = [\"ssd\"]\nmetric = \"miou\"\n");
    assert_eq!(code, Some(2), "{t}");
    assert!(t.contains("ap50, coco-ap"), "{t}");
    // ArcGIS's ranking rule means a metric of every task.
    for networks in ["\"ssd\"", "\"unet\", \"yolov3\""] {
        let (code, t) = check_pipeline(&format!(
            "[train]\nnetworks = [{networks}]\nmetric = \"arcgis\"\n"
        ));
        assert_eq!(code, Some(0), "{t}");
    }
    // A backbone no listed network is built on, named with the ones they offer.
    let (code, t) = check_pipeline("[train]\nnetworks = [\"unet\"]\nbackbone = \"vgg99\"\n");
    assert_eq!(code, Some(2), "{t}");
    assert!(
        t.contains("train.backbone `vgg99`") && t.contains("darknet53"),
        "{t}"
    );
    let (code, t) = check_pipeline("[train]\nnetworks = [\"yolov3\"]\nbackbone = \"darknet53\"\n");
    assert_eq!(code, Some(0), "{t}");
    let (code, t) = check_pipeline("[train]\nmodel-name = \"../elsewhere\"\n");
    assert_eq!(code, Some(2), "{t}");
    assert!(t.contains("train.model-name"), "{t}");

    let (code, t) = check_pipeline(
        "[train]\nnetworks = [\"retinanet\"]\n[params.retinanet]\nhead-depth = 3\nbox-loss = \"giou\"\n",
    );
    assert_eq!(code, Some(0), "{t}");

    // FCOS declares its own box losses and assignment parameters.
    let (code, t) = check_pipeline("[params.fcos]\nbox-loss = \"smooth-l1\"\n");
    assert_eq!(code, Some(2), "{t}");
    assert!(
        t.contains("p.toml:5:") && t.contains("one of iou, giou"),
        "{t}"
    );
    let (code, t) = check_pipeline("[params.fcos]\nrange-scale = 0.5\n");
    assert_eq!(code, Some(2), "{t}");
    assert!(t.contains("from 1 to 16"), "{t}");
    let (code, t) = check_pipeline(
        "[train]\nnetworks = [\"fcos\"]\n[params.fcos]\nbox-loss = \"iou\"\ncentre-sampling = false\nrange-scale = 4.0\n",
    );
    assert_eq!(code, Some(0), "{t}");

    // YOLOv3's ignore threshold is an IoU.
    let (code, t) = check_pipeline("[params.yolov3]\nignore-iou = 1.5\n");
    assert_eq!(code, Some(2), "{t}");
    assert!(t.contains("p.toml:5:") && t.contains("from 0 to 1"), "{t}");
    let (code, t) = check_pipeline(
        "[train]\nnetworks = [\"yolov3\"]\n[params.yolov3]\nbox-loss = \"giou\"\nignore-iou = 0.6\n",
    );
    assert_eq!(code, Some(0), "{t}");
}

#[test]
fn unknown_tuner_deducer_or_augmentation_names_the_registered_ones() {
    let (code, t) = check_pipeline("[tune]\ntuner = \"bayes\"\n");
    assert_eq!(code, Some(2), "{t}");
    assert!(t.contains("p.toml:5:") && t.contains("`bayes`"), "{t}");
    assert!(t.contains("random") && t.contains("tpe"), "{t}");

    let (code, t) = check_pipeline("[tune]\npruner = \"median\"\n");
    assert_eq!(code, Some(2), "{t}");
    assert!(
        t.contains("line 5") && t.contains("`median`") && t.contains("asha, none"),
        "{t}"
    );

    let (code, t) = check_pipeline("[batch]\ndeducer = \"guess\"\n");
    assert_eq!(code, Some(2), "{t}");
    assert!(t.contains("p.toml:5:") && t.contains("throughput"), "{t}");

    let (code, t) = check_pipeline(
        "[[augment.steps]]\nname = \"hflip\"\n[[augment.steps]]\nname = \"swirl\"\nprobability = 0.5\n",
    );
    assert_eq!(code, Some(2), "{t}");
    assert!(
        t.contains("p.toml:7:") && t.contains("`swirl`") && t.contains("dihedral"),
        "{t}"
    );

    let (code, t) = check_pipeline(
        "[tune]\ntuner = \"random\"\n[batch]\ndeducer = \"throughput\"\n[[augment.steps]]\nname = \"vflip\"\nprobability = 0.5\n",
    );
    assert_eq!(code, Some(0), "{t}");
}

#[test]
fn augmentation_parameters_presets_and_pipelines_are_checked() {
    // Line 4 is the first line of `body`.
    let (code, t) = check_pipeline("[[augment.steps]]\nname = \"rotate\"\ndegrees = 400\n");
    assert_eq!(code, Some(2), "{t}");
    assert!(
        t.contains("p.toml:6:") && t.contains("rotate") && t.contains("from 0 to 180"),
        "{t}"
    );

    let (code, t) =
        check_pipeline("[[augment.steps]]\nname = \"cutout\"\nprobability = 0.5\nhole = 2\n");
    assert_eq!(code, Some(2), "{t}");
    assert!(
        t.contains("p.toml:7:") && t.contains("`hole`") && t.contains("holes, size"),
        "{t}"
    );

    let (code, t) = check_pipeline("[[augment.steps]]\nname = \"hflip\"\nstrength = 2\n");
    assert_eq!(code, Some(2), "{t}");
    assert!(t.contains("p.toml:6:") && t.contains("takes none"), "{t}");

    let (code, t) = check_pipeline(
        "[[augment.steps]]\nname = \"random-resized-crop\"\nmin-scale = 0.9\nmax-scale = 0.4\n",
    );
    assert_eq!(code, Some(2), "{t}");
    assert!(
        t.contains("p.toml:5:") && t.contains("`min-scale` (0.9) is above `max-scale` (0.4)"),
        "{t}"
    );

    let (code, t) = check_pipeline("[augment]\nmosaic = 1.5\n");
    assert_eq!(code, Some(2), "{t}");
    assert!(t.contains("line 5") && t.contains("augment.mosaic"), "{t}");

    let (code, t) = check_pipeline("[train]\nnetworks = [\"unet\"]\n[augment]\nmixup = 0.2\n");
    assert_eq!(code, Some(2), "{t}");
    assert!(
        t.contains("p.toml:7:") && t.contains("detection") && t.contains("unet"),
        "{t}"
    );

    let (code, t) =
        check_pipeline("[train]\nnetworks = [\"ssd\"]\n[augment]\nmosaic = 0.5\nmixup = 0.1\n");
    assert_eq!(code, Some(0), "{t}");

    let (code, t) = check_pipeline("[augment]\npreset = \"heavy\"\n");
    assert_eq!(code, Some(2), "{t}");
    assert!(
        t.contains("p.toml:5:") && t.contains("`heavy`") && t.contains("default, none"),
        "{t}"
    );

    let (code, t) = check_pipeline("[augment]\npipeline = \"kornia\"\n");
    assert_eq!(code, Some(2), "{t}");
    assert!(
        t.contains("p.toml:5:") && t.contains("`kornia`") && t.contains("standard"),
        "{t}"
    );

    let (code, t) = check_pipeline(
        "[augment]\npipeline = \"standard\"\n[[augment.steps]]\nname = \"blur\"\nsigma = 0.5\n[[augment.steps]]\nname = \"affine\"\ndegrees = 15\nshear = 0\n",
    );
    assert_eq!(code, Some(0), "{t}");
}

#[test]
fn an_unknown_or_mismatched_evaluator_names_the_registered_ones() {
    let (code, t) = check_pipeline("[evaluate]\nevaluator = \"mota\"\n");
    assert_eq!(code, Some(2), "{t}");
    assert!(t.contains("p.toml:5:") && t.contains("`mota`"), "{t}");
    assert!(
        t.contains("box-metrics") && t.contains("pixel-metrics"),
        "{t}"
    );

    // An evaluator of boxes for a pixel classifier.
    let (code, t) =
        check_pipeline("[train]\nnetworks = [\"unet\"]\n[evaluate]\nevaluator = \"box-metrics\"\n");
    assert_eq!(code, Some(2), "{t}");
    assert!(
        t.contains("p.toml:7:") && t.contains("unet") && t.contains("pixel-metrics"),
        "{t}"
    );

    // ... or for data the pipeline says is pixels.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.toml");
    std::fs::write(
        &file,
        "version = 1\ntask = \"pixel-classification\"\n[data]\npath = \"x\"\n[evaluate]\nevaluator = \"box-metrics\"\n",
    )
    .unwrap();
    let o = autodl(&["check", file.to_str().unwrap()]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(
        t.contains("p.toml:6:")
            && t.contains("pixel-classification")
            && t.contains("pixel-metrics"),
        "{t}"
    );

    // The ranking metric must be one the evaluator reports.
    let (code, t) = check_pipeline(
        "[train]\nnetworks = [\"ssd\"]\nmetric = \"coco-ap\"\n[evaluate]\nevaluator = \"box-metrics\"\n",
    );
    assert_eq!(code, Some(0), "{t}");
}

#[test]
fn missing_backend_is_a_clean_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.toml");
    std::fs::write(
        &file,
        "version = 1\nbackend = \"tpu\"\n[data]\npath = \"x\"\n",
    )
    .unwrap();
    let o = autodl(&["check", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("unknown backend `tpu`"), "{}", text(&o));
    if !cfg!(feature = "cuda") {
        std::fs::write(
            &file,
            "version = 1\nbackend = \"cuda:0\"\n[data]\npath = \"x\"\n",
        )
        .unwrap();
        let o = autodl(&["check", file.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(2));
        assert!(text(&o).contains("--features cuda"), "{}", text(&o));
    }
}

#[test]
fn inspect_trees_voc() {
    let o = autodl(&["data", "inspect", &shared("trees_voc"), "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let s = String::from_utf8_lossy(&o.stdout);
    let v: serde_json::Value = serde_json::from_str(&s).unwrap();
    let flat = v.to_string();
    assert!(flat.contains("pascal-voc"), "{flat}");
    let o = autodl(&["data", "inspect", &shared("trees_voc")]);
    let t = text(&o);
    assert!(
        t.contains("37") && t.contains("679") && t.contains("557") && t.contains("122"),
        "{t}"
    );
}

#[test]
fn inspect_nc_landcover() {
    let o = autodl(&["data", "inspect", &shared("nc_landcover")]);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    for n in ["42", "33", "38843", "59064", "9782", "15443"] {
        assert!(t.contains(n), "missing {n} in:\n{t}");
    }
}

#[test]
fn unknown_dataset_layout_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let o = autodl(&["data", "inspect", dir.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains(dir.path().to_str().unwrap()),
        "{}",
        text(&o)
    );
}

/// Writes a tiny classified-tiles dataset: bright squares are class 2 on class 1 ground.
fn tiny_tiles(root: &Path) {
    for d in ["images", "labels"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(root.join("classes.txt"), "0 nodata\n1 ground\n2 roof\n").unwrap();
    for i in 0..10u32 {
        let (x0, y0) = ((i * 3) % 16, (i * 5) % 16);
        let img = image::RgbImage::from_fn(32, 32, |x, y| {
            let inside = (x0..x0 + 12).contains(&x) && (y0..y0 + 12).contains(&y);
            let v = if inside { 200 } else { 40 } as u8;
            image::Rgb([v, v.wrapping_add((x * 2) as u8), v])
        });
        img.save(root.join(format!("images/t{i}.png"))).unwrap();
        let mask = image::GrayImage::from_fn(32, 32, |x, y| {
            let inside = (x0..x0 + 12).contains(&x) && (y0..y0 + 12).contains(&y);
            image::Luma([if y == 0 {
                0
            } else if inside {
                2
            } else {
                1
            }])
        });
        mask.save(root.join(format!("labels/t{i}.png"))).unwrap();
    }
}

/// Writes `splits/` putting `val` in validation and the other images of `root/images` in
/// training.
fn write_splits(root: &Path, val: &[&str]) {
    let mut train: Vec<String> = std::fs::read_dir(root.join("images"))
        .unwrap()
        .map(|e| {
            e.unwrap()
                .path()
                .file_stem()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|s| !val.contains(&s.as_str()))
        .collect();
    train.sort();
    std::fs::create_dir_all(root.join("splits")).unwrap();
    std::fs::write(root.join("splits/train.txt"), train.join("\n") + "\n").unwrap();
    std::fs::write(root.join("splits/val.txt"), val.join("\n") + "\n").unwrap();
}

/// The validation images of `root` as command-line arguments.
fn val_images(root: &Path, ext: &str) -> Vec<String> {
    std::fs::read_to_string(root.join("splits/val.txt"))
        .unwrap()
        .split_whitespace()
        .map(|s| root.join(format!("images/{s}.{ext}")).display().to_string())
        .collect()
}

/// The `.emd` a package carries, as JSON.
fn package_emd(pkg: &Path, id: &str) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    autodl_package::unpack(pkg, dir.path()).unwrap();
    read_json(&dir.path().join(format!("{id}.emd")))
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(
        &std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap()
}

#[test]
fn train_then_predict_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("tiles");
    tiny_tiles(&data);
    // A validation image wider than a prediction window (512 px), so that validation and
    // prediction both cut it into overlapping windows.
    image::RgbImage::from_fn(600, 40, |x, y| {
        let v = if (100..140).contains(&x) || (480..530).contains(&x) {
            200
        } else {
            40
        } as u8;
        image::Rgb([
            v,
            v.wrapping_add((x % 64 * 2) as u8),
            v.wrapping_add(y as u8),
        ])
    })
    .save(data.join("images/wide.png"))
    .unwrap();
    image::GrayImage::from_fn(600, 40, |x, y| {
        image::Luma([if y == 0 {
            0
        } else if (100..140).contains(&x) || (480..530).contains(&x) {
            2
        } else {
            1
        }])
    })
    .save(data.join("labels/wide.png"))
    .unwrap();
    write_splits(&data, &["t8", "t9", "wide"]);
    let out = dir.path().join("run");
    let o = autodl(&[
        "train",
        data.to_str().unwrap(),
        "--time-limit",
        "90s",
        "--max-epochs",
        "3",
        "--out",
        out.to_str().unwrap(),
        "--networks",
        "unet",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    for f in [
        "leaderboard.csv",
        "leaderboard.json",
        "leaderboard.md",
        "best-model/model.json",
        "best-model/model.mpk",
    ] {
        assert!(out.join(f).is_file(), "missing {f}");
    }
    let board: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("leaderboard.json")).unwrap())
            .unwrap();
    let row = &board[0];
    assert_eq!(row["status"], "completed", "{board}");
    assert!(row["batch-size"].as_u64().unwrap() >= 1);
    assert!(row["learning-rate"].as_f64().unwrap() > 0.0);

    // Resume: the finished trial is not trained again.
    let o = autodl(&[
        "train",
        data.to_str().unwrap(),
        "--time-limit",
        "90s",
        "--max-epochs",
        "3",
        "--out",
        out.to_str().unwrap(),
        "--networks",
        "unet",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("not trained again"), "{}", text(&o));

    let pred = dir.path().join("pred");
    let img = data.join("images/t3.png");
    let pkg = out.join("unet-efficientnet-lite0.dlpk");
    assert!(
        pkg.is_file(),
        "the best model is packaged at the output root"
    );
    // The family declares ArcGIS's name for it.
    assert_eq!(
        package_emd(&pkg, "unet-efficientnet-lite0")["ModelName"],
        "UnetClassifier"
    );
    let o = autodl(&[
        "predict",
        "--model",
        pkg.to_str().unwrap(),
        img.to_str().unwrap(),
        "--out",
        pred.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let mask = image::open(pred.join("t3.png")).unwrap().to_luma8();
    assert_eq!(mask.dimensions(), (32, 32));
    assert!(
        mask.pixels().all(|p| p[0] == 1 || p[0] == 2),
        "predicted values must be class values"
    );
    assert!(pred.join("previews/t3.png").is_file());

    // The package predicts what its leaderboard row scored: `autodl evaluate` on its masks
    // of the validation images gives the trial's confusion matrix, to the pixel.
    let val_pred = dir.path().join("val-pred");
    let mut args = vec![
        "predict".to_owned(),
        "--model".into(),
        pkg.display().to_string(),
        "--out".into(),
        val_pred.display().to_string(),
    ];
    args.extend(val_images(&data, "png"));
    let o = autodl(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", text(&o));
    let o = autodl(&[
        "evaluate",
        "--gt",
        data.to_str().unwrap(),
        "--masks",
        val_pred.to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let scored: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let trial = read_json(&out.join("trials/unet-efficientnet-lite0/metrics.json"));
    assert_eq!(scored["images"], 3);
    assert_eq!(
        scored["confusion-matrix"], trial["confusion-matrix"],
        "predict + evaluate vs the trial's validation"
    );
    assert_eq!(scored["metrics"]["mean_iou"], trial["metrics"]["mean_iou"]);
    assert_eq!(
        scored["metrics"]["mean_iou"].as_f64(),
        row["metric"].as_f64(),
        "the leaderboard's figure"
    );
    // A plain folder of truth masks scores the same, given the ignored value.
    let labels = data.join("labels");
    let o = autodl(&[
        "evaluate",
        "--gt",
        labels.to_str().unwrap(),
        "--masks",
        val_pred.to_str().unwrap(),
        "--ignore-value",
        "0",
        "--json",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let plain: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(plain["confusion-matrix"], trial["confusion-matrix"]);

    // Prediction never touches its inputs: an output folder holding them is refused...
    let before = std::fs::read(data.join("images/t3.png")).unwrap();
    let images = data.join("images");
    let o = autodl(&[
        "predict",
        "--model",
        pkg.to_str().unwrap(),
        images.to_str().unwrap(),
        "--out",
        images.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("choose another --out"), "{}", text(&o));
    assert_eq!(std::fs::read(data.join("images/t3.png")).unwrap(), before);
    // ... no earlier prediction is overwritten unless asked ...
    let o = autodl(&[
        "predict",
        "--model",
        pkg.to_str().unwrap(),
        img.to_str().unwrap(),
        "--out",
        pred.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--overwrite"), "{}", text(&o));
    let o = autodl(&[
        "predict",
        "--model",
        pkg.to_str().unwrap(),
        img.to_str().unwrap(),
        "--out",
        pred.to_str().unwrap(),
        "--overwrite",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    // ... and inputs whose names meet get outputs of their own.
    let odd = dir.path().join("odd");
    std::fs::create_dir_all(&odd).unwrap();
    std::fs::copy(data.join("images/t1.png"), odd.join("same.png")).unwrap();
    image::open(data.join("images/t2.png"))
        .unwrap()
        .save(odd.join("same.jpg"))
        .unwrap();
    std::fs::copy(data.join("images/t4.png"), odd.join("x.png")).unwrap();
    std::fs::copy(data.join("images/t5.png"), odd.join("x_preview.png")).unwrap();
    let odd_pred = dir.path().join("odd-pred");
    let o = autodl(&[
        "predict",
        "--model",
        pkg.to_str().unwrap(),
        odd.to_str().unwrap(),
        "--out",
        odd_pred.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    for f in [
        "same_png.png",
        "same_jpg.png",
        "x.png",
        "x_preview.png",
        "previews/x.png",
        "previews/x_preview.png",
        "previews/same_jpg.png",
    ] {
        assert!(odd_pred.join(f).is_file(), "missing {f}");
    }
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let o = autodl(&[
        "predict",
        "--model",
        pkg.to_str().unwrap(),
        empty.to_str().unwrap(),
        "--out",
        odd_pred.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("no images"), "{}", text(&o));

    // A model whose metadata disagrees with itself is an error naming the file and field.
    let broken = dir.path().join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    for f in ["model.json", "model.mpk"] {
        std::fs::copy(out.join("best-model").join(f), broken.join(f)).unwrap();
    }
    let mut meta = read_json(&broken.join("model.json"));
    meta["mean"] = serde_json::json!([0.0]);
    std::fs::write(broken.join("model.json"), meta.to_string()).unwrap();
    let o = autodl(&[
        "predict",
        "--model",
        broken.to_str().unwrap(),
        img.to_str().unwrap(),
        "--out",
        dir.path().join("never").to_str().unwrap(),
    ]);
    // Checked before any image is read, as a broken package's zip is: exit 2.
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("model.json: `mean` has 1 values for 3 bands"),
        "{}",
        text(&o)
    );

    // A rerun that trains nothing leaves the earlier results whole.
    let results: Vec<Vec<u8>> = [
        "leaderboard.json",
        "leaderboard.md",
        "report.html",
        "unet-efficientnet-lite0.dlpk",
    ]
    .iter()
    .map(|f| std::fs::read(out.join(f)).unwrap())
    .collect();
    let args = [
        "train",
        data.to_str().unwrap(),
        "--time-limit",
        "30s",
        "--backbone",
        "resnet18",
        "--out",
        out.to_str().unwrap(),
        "--networks",
        "unet",
    ];
    let o = autodl_with_broken_weights(&args, dir.path());
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("earlier results"), "{}", text(&o));
    for (f, bytes) in [
        "leaderboard.json",
        "leaderboard.md",
        "report.html",
        "unet-efficientnet-lite0.dlpk",
    ]
    .iter()
    .zip(results)
    {
        assert_eq!(std::fs::read(out.join(f)).unwrap(), bytes, "{f} changed");
    }
    assert!(
        std::fs::read_to_string(out.join("failed-run.md"))
            .unwrap()
            .contains("resnet18.safetensors")
    );
}

/// Writes a tiny PASCAL VOC dataset: bright squares of two sizes are `roof` boxes.
fn tiny_voc(root: &Path) {
    for d in ["images", "labels"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    for i in 0..16u32 {
        let squares = [
            ((i * 7) % 40, (i * 11) % 40, 14 + i % 3 * 4),
            ((i * 13 + 30) % 44, (i * 5 + 36) % 44, 12),
        ];
        let img = image::RgbImage::from_fn(64, 64, |x, y| {
            let inside = squares
                .iter()
                .any(|&(x0, y0, s)| (x0..x0 + s).contains(&x) && (y0..y0 + s).contains(&y));
            let v = if inside { 210 } else { 50 } as u8;
            image::Rgb([v, v.wrapping_add((y / 4) as u8), v])
        });
        img.save(root.join(format!("images/d{i}.png"))).unwrap();
        let objects: String = squares
            .iter()
            .map(|&(x0, y0, s)| {
                format!(
                    "<object><name>roof</name><difficult>0</difficult><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{}</xmax><ymax>{}</ymax></bndbox></object>",
                    x0 + s - 1,
                    y0 + s - 1
                )
            })
            .collect();
        let xml = format!(
            "<annotation><filename>d{i}.png</filename><size><width>64</width><height>64</height><depth>3</depth></size>{objects}</annotation>"
        );
        std::fs::write(root.join(format!("labels/d{i}.xml")), xml).unwrap();
    }
}

#[test]
fn detection_families_learn_and_predict_voc_and_coco() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("voc");
    tiny_voc(&data);
    // A validation image wider than a prediction window, detected in two windows.
    let squares = [(30u32, 20u32, 16u32), (300, 8, 14), (505, 30, 18)];
    image::RgbImage::from_fn(600, 64, |x, y| {
        let inside = squares
            .iter()
            .any(|&(x0, y0, s)| (x0..x0 + s).contains(&x) && (y0..y0 + s).contains(&y));
        let v = if inside { 210 } else { 50 } as u8;
        image::Rgb([v, v.wrapping_add((y / 4) as u8), v])
    })
    .save(data.join("images/wide.png"))
    .unwrap();
    let objects: String = squares
        .iter()
        .map(|&(x0, y0, s)| format!("<object><name>roof</name><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{}</xmax><ymax>{}</ymax></bndbox></object>", x0 + s - 1, y0 + s - 1))
        .collect();
    std::fs::write(
        data.join("labels/wide.xml"),
        format!(
            "<annotation><size><width>600</width><height>64</height></size>{objects}</annotation>"
        ),
    )
    .unwrap();
    write_splits(&data, &["d12", "d13", "d14", "d15", "wide"]);
    let out = dir.path().join("run");
    // A fixed batch and learning rate keep the test short; the squares are easy enough that
    // every detector must rank far above an untrained one (AP50 near 0). The even schedule
    // trains every family to the end, where successive halving would stop the weaker ones.
    let pipeline = dir.path().join("squares.toml");
    std::fs::write(
        &pipeline,
        format!(
            "version = 1\nseed = 3\n[data]\npath = {:?}\n[augment]\npreset = \"none\"\n\
             [train]\ntime-limit = \"6m\"\nbudget-schedule = \"even\"\nnetworks = [\"retinanet\", \"ssd\", \"fcos\", \"faster-rcnn\", \"yolov3\"]\nmax-epochs = 20\npatience = 20\n\
             batch-size = 4\nlearning-rate = 2e-3\ntile-size = 64\n",
            data
        ),
    )
    .unwrap();
    let o = autodl(&[
        "train",
        pipeline.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let board: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("leaderboard.json")).unwrap())
            .unwrap();
    let rows = board.as_array().unwrap();
    assert_eq!(rows.len(), 5, "{board}");
    for row in rows {
        assert_eq!(row["status"], "completed", "{board}");
        assert_eq!(row["metric-name"], "ap50", "{board}");
        assert!(row["metric"].as_f64().unwrap() > 0.5, "{board}");
    }
    let report = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(
        report.contains("Precision-recall"),
        "a detection report shows precision-recall curves"
    );

    let pred = dir.path().join("pred");
    let img = data.join("images/d3.png");
    // A strip wider than a prediction window (512 px): detected in overlapping windows whose
    // boxes are merged with NMS, so each square is found once.
    let strip = dir.path().join("strip.png");
    image::RgbImage::from_fn(700, 64, |x, y| {
        let inside = [(40, 20), (500, 10), (250, 30)]
            .iter()
            .any(|&(x0, y0)| (x0..x0 + 20).contains(&x) && (y0..y0 + 20).contains(&y));
        let v = if inside { 210 } else { 50 } as u8;
        image::Rgb([v, v.wrapping_add((y / 4) as u8), v])
    })
    .save(&strip)
    .unwrap();
    let pkg = out.join("models/retinanet-efficientnet-lite0.dlpk");
    let o = autodl(&[
        "predict",
        "--model",
        pkg.to_str().unwrap(),
        img.to_str().unwrap(),
        strip.to_str().unwrap(),
        "--out",
        pred.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let strip_xml = std::fs::read_to_string(pred.join("strip.xml")).unwrap();
    assert!(strip_xml.contains("<width>700</width>"), "{strip_xml}");
    let xs: Vec<f64> = strip_xml
        .split("<xmin>")
        .skip(1)
        .filter_map(|t| t.split('<').next()?.parse().ok())
        .collect();
    assert!(
        xs.iter().any(|&x| (480.0..=520.0).contains(&x)),
        "the square at x = 500 lies in the second window: {strip_xml}"
    );
    let xml = std::fs::read_to_string(pred.join("d3.xml")).unwrap();
    assert!(
        xml.contains("<annotation>") && xml.contains("<width>64</width>"),
        "{xml}"
    );
    assert!(
        xml.contains("<score>0."),
        "every predicted box carries its score: {xml}"
    );
    let coco: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(pred.join("detections.json")).unwrap())
            .unwrap();
    assert_eq!(coco["images"][0]["width"], 64);
    assert_eq!(coco["categories"][0]["name"], "roof");
    assert!(pred.join("previews/d3.png").is_file());

    // Each package predicts what its leaderboard row scored. `autodl evaluate` on its
    // detections of the validation images, against the dataset folder, recomputes the trial's
    // AP (predicting every box post-processing keeps, as validation ranks them) and its
    // precision, recall and F1 (predicting with the model's own threshold).
    for family in ["retinanet", "ssd", "fcos", "faster-rcnn", "yolov3"] {
        let trial = read_json(
            &out.join(format!("trials/{family}-efficientnet-lite0/metrics.json")),
        )["metrics"]
            .clone();
        let pkg = out.join(format!("models/{family}-efficientnet-lite0.dlpk"));
        // ArcGIS has no FCOS: its package names the family.
        let arcgis = match family {
            "ssd" => "SingleShotDetector",
            "retinanet" => "RetinaNet",
            "faster-rcnn" => "FasterRCNN",
            "yolov3" => "YOLOv3",
            other => other,
        };
        assert_eq!(
            package_emd(&pkg, &format!("{family}-efficientnet-lite0"))["ModelName"],
            arcgis
        );
        let score = |threshold: Option<&str>, eval_threshold: &str| -> serde_json::Value {
            let dir = dir
                .path()
                .join(format!("{family}-{}", threshold.unwrap_or("default")));
            let mut args = vec![
                "predict".to_owned(),
                "--model".into(),
                pkg.display().to_string(),
                "--out".into(),
                dir.display().to_string(),
            ];
            if let Some(t) = threshold {
                args.extend(["--score-threshold".to_owned(), t.to_owned()]);
            }
            args.extend(val_images(&data, "png"));
            let o = autodl(&args.iter().map(String::as_str).collect::<Vec<_>>());
            assert!(o.status.success(), "{}", text(&o));
            let dets = dir.join("detections.json");
            let o = autodl(&[
                "evaluate",
                "--gt",
                data.to_str().unwrap(),
                "--dets",
                dets.to_str().unwrap(),
                "--score-threshold",
                eval_threshold,
                "--json",
            ]);
            assert!(o.status.success(), "{}", text(&o));
            serde_json::from_slice(&o.stdout).unwrap()
        };
        let stored = trial["score-threshold"].to_string();
        // Predicting down to the family's validation score floor keeps every box validation
        // ranked (YOLOv3's objectness x class scores go down to 0.001, the others' to 0.05).
        let floor = if family == "yolov3" { "0.001" } else { "0.05" };
        let all = score(Some(floor), &stored);
        assert!(trial["ap50"].as_f64().unwrap() > 0.3, "{family}: {trial}");
        assert_eq!(
            all["voc-ap50"], trial["ap50"],
            "{family}: VOC AP50 from predict + evaluate vs the trial's"
        );
        let row = rows
            .iter()
            .find(|r| r["id"] == format!("{family}-efficientnet-lite0"))
            .unwrap();
        assert_eq!(
            all["voc-ap50"], row["metric"],
            "{family}: the leaderboard's figure"
        );
        assert_eq!(all["coco"]["ap"], trial["coco-ap"], "{family}: COCO AP");
        assert_eq!(
            all["arcgis-ap10"], trial["arcgis-ap10"],
            "{family}: ArcGIS AP10"
        );
        let kept = score(None, &stored);
        for k in ["precision", "recall", "f1"] {
            assert_eq!(
                kept[k], trial[k],
                "{family}: {k} at the stored threshold {stored}"
            );
        }
    }
}

#[test]
fn a_restarted_trial_resumes_from_its_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("voc");
    tiny_voc(&data);
    let trial = dir.path().join("trial");
    let mut spec = serde_json::json!({
        "id": "ssd-t", "family": "ssd", "backbone": "efficientnet-lite0",
        "data": {"root": data, "format": null, "images-dir": null, "val-fraction": 0.25, "ignore-index": null, "fail-on-bad-sample": true},
        "backend": "cpu", "seed": 1, "batch-size": 4, "learning-rate": 1e-3, "max-epochs": 1, "patience": 5,
        "time-budget-secs": 300.0, "tile-size": 64,
        "training": {"optimizer": "adamw", "schedule": "one-cycle", "weight-decay": 1e-4, "pretrained": true, "metric": null},
        "augment": {"preset": "none", "steps": [], "strength": 1.0}, "batch-deducer": "throughput", "params": {},
        "out-dir": trial,
    });
    let path = dir.path().join("spec.json");
    std::fs::write(&path, spec.to_string()).unwrap();
    let o = autodl(&["trial", "--spec", path.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(trial.join("checkpoint.json").is_file() && trial.join("checkpoint.mpk").is_file());

    // The orchestrator restarts a trial that ran out of memory at half the batch, resuming.
    spec["max-epochs"] = 2.into();
    spec["batch-size"] = 2.into();
    spec["resume"] = true.into();
    std::fs::write(&path, spec.to_string()).unwrap();
    let o = autodl(&["trial", "--spec", path.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("resuming after epoch 1 at batch size 2"),
        "{}",
        text(&o)
    );
    let last = text(&o).lines().last().unwrap().to_owned();
    let result: serde_json::Value = serde_json::from_str(&last).unwrap();
    let epochs: Vec<u64> = result["epochs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["epoch"].as_u64().unwrap())
        .collect();
    assert_eq!(epochs, vec![1, 2], "{last}");
    assert_eq!(result["batch-size"], 2);
}

#[test]
fn the_same_seed_gives_the_same_leaderboard() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("tiles");
    tiny_tiles(&data);
    let board = |name: &str| -> Vec<serde_json::Value> {
        let out = dir.path().join(name);
        let o = autodl(&[
            // A budget far beyond what two epochs need: the epoch count and the finder's sweep
            // length must not depend on how busy the machine is.
            "train",
            data.to_str().unwrap(),
            "--time-limit",
            "60m",
            "--max-epochs",
            "2",
            "--batch-size",
            "4",
            "--seed",
            "11",
            "--out",
            out.to_str().unwrap(),
            "--networks",
            "unet",
        ]);
        assert!(o.status.success(), "{}", text(&o));
        let board: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("leaderboard.json")).unwrap())
                .unwrap();
        // Everything but wall-clock times and folders.
        board
            .as_array()
            .unwrap()
            .iter()
            .map(|row| {
                let mut row = row.clone();
                let obj = row.as_object_mut().unwrap();
                obj.remove("train-secs");
                obj.remove("model-dir");
                row
            })
            .collect()
    };
    let first = board("a");
    assert_eq!(first.len(), 1);
    assert_eq!(first, board("b"));
}

/// The training losses per epoch of one trial of `network` on `data`, trained by a pipeline
/// with every choice fixed (batch size, learning rate, epochs, seed), with `AUTODL_KERNELS`
/// set to `kernels`.
fn loss_curve(dir: &Path, data: &Path, network: &str, kernels: &str) -> Vec<(f64, f64)> {
    let out = dir.join(format!("{network}-{kernels}"));
    let pipeline = dir.join(format!("{network}-{kernels}.toml"));
    std::fs::write(
        &pipeline,
        format!(
            "version = 1\nseed = 5\n[data]\npath = {data:?}\n[train]\ntime-limit = \"60m\"\n\
             networks = [\"{network}\"]\nmax-epochs = 3\npatience = 10\nbatch-size = 4\n\
             learning-rate = 1e-3\n"
        ),
    )
    .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_autodl"))
        .args(["train", pipeline.to_str().unwrap(), "--out"])
        .arg(&out)
        .env("AUTODL_KERNELS", kernels)
        .output()
        .expect("run autodl");
    assert!(o.status.success(), "{}", text(&o));
    let trial = std::fs::read_dir(out.join("trials"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let csv = std::fs::read_to_string(trial.join("epochs.csv")).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (train, val) = (col("train_loss"), col("val_loss"));
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[train].parse().unwrap(), f[val].parse().unwrap())
        })
        .collect()
}

/// Our kernels change only the order of summation: a few epochs of training through them give
/// the loss curve Burn's stock ops give, within what Adam makes of rounding (`AUTODL_KERNELS=stock`), for a pixel classifier
/// (convolutions, batch norm, pooling, resizing, concatenation, log-softmax, Adam) and a
/// detector (frozen batch norm folded into convolutions, group norm).
#[test]
fn our_kernels_train_the_loss_curve_of_burns_stock_ops() {
    let dir = tempfile::tempdir().unwrap();
    let tiles = dir.path().join("tiles");
    tiny_tiles(&tiles);
    let voc = dir.path().join("voc");
    tiny_voc(&voc);
    for (data, network) in [(&tiles, "unet"), (&voc, "retinanet")] {
        let ours = loss_curve(dir.path(), data, network, "ours");
        let stock = loss_curve(dir.path(), data, network, "stock");
        assert_eq!(ours.len(), 3, "{network}: {ours:?}");
        assert_eq!(ours.len(), stock.len(), "{network}");
        // Bit-identical curves would mean `AUTODL_KERNELS=stock` no longer reaches Burn's ops.
        assert_ne!(ours, stock, "{network}: the stock path is not reachable");
        for (epoch, (a, b)) in ours.iter().zip(&stock).enumerate() {
            for (what, x, y) in [("train", a.0, b.0), ("val", a.1, b.1)] {
                let rel = (x - y).abs() / y.abs().max(1e-6);
                // The first epoch's training losses agree to about 1e-5. Adam then magnifies
                // the summation-order differences of gradients near zero (its step is almost
                // their sign), so the weights after a few steps, and every later loss, drift
                // apart by a few 1e-3.
                let tolerance = if epoch == 0 && what == "train" {
                    1e-4
                } else {
                    2e-2
                };
                assert!(
                    rel < tolerance,
                    "{network} epoch {}: {what} loss {x} through our kernels, {y} through Burn's ({ours:?} against {stock:?})",
                    epoch + 1
                );
            }
        }
    }
}

/// Basic mode's successive halving, end to end with real training: of three networks the
/// weakest stops after the first rung, the two others continue from their checkpoints (their
/// epochs go on), and the whole run, data reading, packages and report included, ends within
/// 5 % of its one-minute limit. With ArcGIS's parameters: its ranking rule (pixel accuracy),
/// only the best model packaged, under the output model name.
#[test]
fn successive_halving_continues_the_better_networks_within_the_time_limit() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("tiles");
    tiny_tiles(&data);
    let pipeline = dir.path().join("halving.toml");
    // Patience and epochs beyond reach: every network could use all the time it gets.
    std::fs::write(
        &pipeline,
        format!(
            "version = 1\nseed = 3\n[data]\npath = {data:?}\n[train]\ntime-limit = \"1m\"\n\
             networks = [\"unet\", \"pspnet\", \"deeplab\"]\nmax-epochs = 10000\n\
             patience = 10000\nmetric = \"arcgis\"\nsave-evaluated-models = false\n\
             model-name = \"landcover\"\n"
        ),
    )
    .unwrap();
    let out = dir.path().join("out");
    let started = std::time::Instant::now();
    let o = autodl(&[
        "train",
        pipeline.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let wall = started.elapsed().as_secs_f64();
    let log = text(&o);
    assert!(o.status.success(), "{log}");
    assert!(wall <= 63.0, "a one-minute run took {wall:.1} s\n{log}");
    let board = read_json(&out.join("leaderboard.json"));
    let board = board.as_array().unwrap();
    let stopped: Vec<&serde_json::Value> =
        board.iter().filter(|r| r["status"] == "pruned").collect();
    assert_eq!(stopped.len(), 1, "{board:#?}");
    assert!(
        stopped[0]["reason"]
            .as_str()
            .unwrap()
            .contains("successive halving after rung 0"),
        "{board:#?}"
    );
    // Each survivor says where it went on from, and its curve continues from there.
    let mut continued = 0;
    for line in log.lines() {
        let Some((id, rest)) = line.split_once(": continuing after epoch ") else {
            continue;
        };
        let after: u32 = rest.split_whitespace().next().unwrap().parse().unwrap();
        let csv = std::fs::read_to_string(out.join("trials").join(id).join("epochs.csv")).unwrap();
        let epochs: Vec<u32> = csv
            .lines()
            .skip(1)
            .map(|l| l.split(',').next().unwrap().parse().unwrap())
            .collect();
        assert!(
            epochs.len() as u32 > after,
            "{id}: {epochs:?} after {after}"
        );
        assert_eq!(
            epochs,
            (1..=epochs.len() as u32).collect::<Vec<_>>(),
            "{id}"
        );
        assert_ne!(id, stopped[0]["id"].as_str().unwrap());
        continued += 1;
    }
    assert!(continued >= 2, "{log}");
    // ArcGIS's rule ranks pixel classifiers by pixel accuracy.
    assert!(
        board.iter().all(|r| r["metric-name"] == "accuracy"),
        "{board:#?}"
    );
    // Only the best model is packaged, and its package has the name asked for.
    let packaged: Vec<String> = std::fs::read_dir(out.join("models"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let best = board.iter().find(|r| r["rank"] == 1).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(packaged, vec![format!("{best}.dlpk")]);
    assert!(out.join("landcover.dlpk").is_file());
    assert!(!out.join(format!("{best}.dlpk")).exists());
    assert!(log.contains("landcover.dlpk"), "{log}");
}

/// Fine-tuning from a package (ArcGIS's "Pretrained Model"): a run given a `.dlpk` trains its
/// family and backbone, starting from its weights, so its first epoch scores far above a
/// fresh start's; a package of other classes is a usage error naming both.
#[test]
fn fine_tuning_starts_from_the_weights_of_a_package() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("tiles");
    tiny_tiles(&data);
    let first = dir.path().join("first");
    let o = autodl(&[
        "train",
        data.to_str().unwrap(),
        "--networks",
        "deeplab",
        "--time-limit",
        "60m",
        "--max-epochs",
        "12",
        "--batch-size",
        "4",
        "--seed",
        "2",
        "--out",
        first.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let package = first.join("deeplab-efficientnet-lite0.dlpk");
    // One epoch at a learning rate too small to learn anything: what it scores is what it
    // started from (the model itself: no flip TTA row to outrank it).
    let one_epoch = |name: &str, network: &str, from: Option<&Path>| -> (f64, String) {
        let pipeline = dir.path().join(format!("{name}.toml"));
        let from = from.map_or(String::new(), |p| format!("pretrained-model = {p:?}\n"));
        std::fs::write(
            &pipeline,
            format!(
                "version = 1\nseed = 2\n[data]\npath = {data:?}\n[train]\ntime-limit = \"60m\"\n\
                 networks = [\"{network}\"]\nmax-epochs = 1\nbatch-size = 4\nlearning-rate = 1e-9\n{from}\
                 [ensemble]\ntop = 0\ntta = false\n"
            ),
        )
        .unwrap();
        let out = dir.path().join(name);
        let o = autodl(&[
            "train",
            pipeline.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", text(&o));
        let board = read_json(&out.join("leaderboard.json"));
        let row = &board[0];
        (
            row["metric"].as_f64().unwrap(),
            format!("{} {}", row["model"], text(&o)),
        )
    };
    let (fresh, _) = one_epoch("fresh", "deeplab", None);
    // The package's family replaces the pipeline's networks.
    let (tuned, log) = one_epoch("tuned", "unet", Some(&package));
    assert!(log.starts_with("\"deeplab\""), "{log}");
    assert!(
        log.contains("fine-tuning deeplab on efficientnet-lite0"),
        "{log}"
    );
    let trained = read_json(&first.join("leaderboard.json"))[0]["metric"]
        .as_f64()
        .unwrap();
    assert!(
        tuned > fresh + 0.2 && (tuned - trained).abs() < 0.15,
        "fine-tuned {tuned}, fresh {fresh}, the package {trained}\n{log}"
    );

    // Other classes: a usage error before any training.
    std::fs::write(data.join("classes.txt"), "0 nodata\n1 field\n2 roof\n").unwrap();
    let o = autodl(&[
        "train",
        data.to_str().unwrap(),
        "--pretrained-model",
        package.to_str().unwrap(),
        "--time-limit",
        "1m",
        "--out",
        dir.path().join("other").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("same classes"), "{}", text(&o));
}

#[test]
fn advanced_mode_runs_with_the_tuner_and_augmentations_the_pipeline_names() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("tiles");
    tiny_tiles(&data);
    let out = dir.path().join("run");
    let pipeline = dir.path().join("p.toml");
    std::fs::write(
        &pipeline,
        format!(
            r#"version = 1
seed = 3
out = "{}"
[data]
path = "{}"
[train]
time-limit = "60m"
mode = "advanced"
networks = ["unet"]
max-epochs = 1
batch-size = 4
[params.unet]
dice-fraction = 0.25
[[augment.steps]]
name = "hflip"
probability = 0.5
[[augment.steps]]
name = "brightness-contrast"
probability = 0.8
contrast = 0.4
[[augment.steps]]
name = "rotate"
probability = 0.3
degrees = 10
[tune]
tuner = "random"
top = 1
max-trials = 2
"#,
            out.display(),
            data.display()
        ),
    )
    .unwrap();
    let o = autodl(&["check", pipeline.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let o = autodl(&["train", pipeline.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let board = read_json(&out.join("leaderboard.json"));
    let ids: Vec<&str> = board
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 3, "basic trial and two tuned ones: {ids:?}");
    assert!(
        ids.contains(&"unet-t1") && ids.contains(&"unet-t2"),
        "{ids:?}"
    );
    for id in ["unet-efficientnet-lite0", "unet-t1"] {
        let spec = read_json(&out.join(format!("trials/{id}/spec.json")));
        let steps: Vec<&str> = spec["augment"]["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap())
            .collect();
        assert_eq!(steps, ["hflip", "brightness-contrast", "rotate"], "{id}");
        // Each transform's parameters are complete: given ones as written, defaults filled.
        let bc = &spec["augment"]["steps"][1]["params"];
        assert_eq!(
            (bc["contrast"].as_f64(), bc["brightness"].as_f64()),
            (Some(0.4), Some(0.2)),
            "{id}"
        );
        assert_eq!(
            spec["augment"]["steps"][2]["params"]["degrees"], 10.0,
            "{id}"
        );
        assert_eq!(spec["augment"]["pipeline"], "standard", "{id}");
        // The family's parameters are complete and typed; the tuner's stay in their ranges.
        let params = spec["params"].as_object().unwrap();
        let mut keys: Vec<&str> = params.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            ["class-balance", "dice-fraction", "focal-gamma"],
            "{id}"
        );
        let dice = params["dice-fraction"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&dice), "{id}: {dice}");
    }
    let basic = read_json(&out.join("trials/unet-efficientnet-lite0/spec.json"));
    assert_eq!(basic["params"]["dice-fraction"], 0.25);
    for row in board.as_array().unwrap() {
        assert_eq!(row["status"], "completed", "{row}");
        // Only the bundled weights are here: the tuner offers no backbone it would train
        // from scratch (random search over all six would pick another four times in five).
        assert_eq!(row["backbone"], "efficientnet-lite0", "{row}");
    }
}

/// Advanced mode tunes the backbones whose pretrained weights are on the machine: the
/// bundled EfficientNet-Lite0, and any the weights folder adds.
#[test]
fn advanced_mode_tunes_only_backbones_with_pretrained_weights() {
    let tuned = |weights: Option<&Path>| -> String {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_autodl"));
        // The user's own weights folder (XDG_DATA_HOME, HOME) must not count either.
        cmd.arg("plugins").env_remove("AUTODL_WEIGHTS_DIR").env(
            "XDG_DATA_HOME",
            std::env::temp_dir().join("autodl-no-data-home"),
        );
        if let Some(w) = weights {
            cmd.env("AUTODL_WEIGHTS_DIR", w);
        }
        let o = cmd.output().unwrap();
        assert!(o.status.success(), "{}", text(&o));
        let out = text(&o);
        let mut lines = out.lines().skip_while(|l| !l.starts_with("network unet "));
        lines
            .nth(1)
            .and_then(|l| l.split_once("here): "))
            .map(|(_, b)| b.to_owned())
            .unwrap_or_else(|| panic!("no tuned backbones for unet in\n{out}"))
    };
    assert_eq!(tuned(None), "efficientnet-lite0");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("resnet34.safetensors"), b"").unwrap();
    assert_eq!(tuned(Some(dir.path())), "efficientnet-lite0, resnet34");
}

#[test]
fn a_failing_network_is_recorded_and_the_run_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("tiles");
    tiny_tiles(&data);
    let out = dir.path().join("run");
    // Broken pretrained weights fail each trial at run time: every network becomes a row
    // with its reason, and the run ends with code 1.
    let o = autodl_with_broken_weights(
        &[
            "train",
            data.to_str().unwrap(),
            "--time-limit",
            "60s",
            "--max-epochs",
            "1",
            "--backbone",
            "resnet18",
            "--networks",
            "unet,pspnet",
            "--out",
            out.to_str().unwrap(),
        ],
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let board = read_json(&out.join("leaderboard.json"));
    let rows = board.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{board}");
    for row in rows {
        assert_eq!(row["status"], "failed", "{board}");
        assert!(
            row["reason"]
                .as_str()
                .unwrap()
                .contains("resnet18.safetensors"),
            "{board}"
        );
    }
}

#[test]
fn a_run_that_could_train_nothing_is_a_usage_error_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("tiles");
    tiny_tiles(&data);
    let out = dir.path().join("run");
    for (args, message) in [
        (
            vec!["--backbone", "vgg99"],
            "train.backbone `vgg99` is offered by none of deeplab, pspnet, unet; backbones: darknet53, efficientnet-lite0",
        ),
        (
            vec!["--networks", "retinanet"],
            "retinanet solves detection, the data is pixel-classification",
        ),
        (vec!["--time-limit", "0"], "is zero"),
        (
            vec!["--time-limit", "18446744073709551615"],
            "longer than 30 days",
        ),
        (
            vec!["--time-limit", "5124095576030432h"],
            "longer than 30 days",
        ),
    ] {
        let mut all = vec![
            "train",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        all.extend(args);
        let o = autodl(&all);
        assert_eq!(o.status.code(), Some(2), "{all:?}: {}", text(&o));
        assert!(text(&o).contains(message), "{all:?}: {}", text(&o));
        assert!(
            !out.join("leaderboard.json").exists() && !out.join("trials").exists(),
            "{all:?} did work"
        );
    }
}

#[cfg(unix)]
#[test]
fn a_run_killed_after_its_first_trial_resumes_without_retraining_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("tiles");
    tiny_tiles(&data);
    let out = dir.path().join("run");
    let args = [
        "train",
        data.to_str().unwrap(),
        "--time-limit",
        "120s",
        "--max-epochs",
        "2",
        "--out",
        out.to_str().unwrap(),
        "--networks",
        "unet,deeplab",
    ];
    let mut child = Command::new(env!("CARGO_BIN_EXE_autodl"))
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let first = out.join("trials/unet-efficientnet-lite0/result.json");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !first.is_file() {
        assert!(
            std::time::Instant::now() < deadline,
            "the first trial never finished"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be killed"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // One run per output folder: a second one is refused, naming the first.
    let pid = child.id();
    let o = autodl(&args);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("in use by another autodl run (PID {pid})")),
        "{}",
        text(&o)
    );
    // SIGKILL the orchestrator alone: the trial it was running (found through /proc) ends
    // within 2 s by itself instead of computing on as an orphan.
    let mut children = children_of(pid);
    while children.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the second trial never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
        children = children_of(pid);
    }
    child.kill().unwrap();
    let _ = child.wait();
    let killed = std::time::Instant::now();
    while children.iter().any(|c| running(c))
        && killed.elapsed() < std::time::Duration::from_secs(2)
    {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        !children.iter().any(|c| running(c)),
        "trial processes {children:?} outlived their orchestrator by 2 s"
    );
    let before = std::fs::read_to_string(&first).unwrap();

    let o = autodl(&args);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("unet-efficientnet-lite0: finished in an earlier run; not trained again"),
        "{t}"
    );
    assert_eq!(
        std::fs::read_to_string(&first).unwrap(),
        before,
        "the finished trial was not trained again"
    );
    let board: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("leaderboard.json")).unwrap())
            .unwrap();
    assert_eq!(board.as_array().unwrap().len(), 2, "{board}");
}

#[test]
fn evaluate_matches_the_pycocotools_fixture() {
    let fixtures = repo().join("tests/fixtures/detection");
    let o = autodl(&[
        "evaluate",
        "--gt",
        fixtures.join("random_gt.json").to_str().unwrap(),
        "--dets",
        fixtures.join("random_dets.json").to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let got: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures.join("expected.json")).unwrap())
            .unwrap();
    let case = expected["fixtures"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "random")
        .unwrap();
    let keys = [
        "ap",
        "ap50",
        "ap75",
        "ap_small",
        "ap_medium",
        "ap_large",
        "ar1",
        "ar10",
        "ar100",
        "ar_small",
        "ar_medium",
        "ar_large",
    ];
    for (k, want) in keys.iter().zip(case["coco"].as_array().unwrap()) {
        let g = got["coco"][k]
            .as_f64()
            .unwrap_or_else(|| panic!("no {k} in {got}"));
        assert!(
            (g - want.as_f64().unwrap()).abs() < 1e-6,
            "{k}: {g} vs pycocotools {want}"
        );
    }
    let voc = case["voc"]["all_point"]["map"].as_f64().unwrap();
    assert!((got["voc-ap50"].as_f64().unwrap() - voc).abs() < 1e-6);
}

#[test]
fn evaluate_refuses_boxes_off_the_ground_truth_and_an_evaluator_of_another_task() {
    let dir = tempfile::tempdir().unwrap();
    let gt = dir.path().join("gt.json");
    std::fs::write(
        &gt,
        r#"{"images": [{"id": 1}], "categories": [{"id": 1}],
            "annotations": [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10]}]}"#,
    )
    .unwrap();
    let dets = dir.path().join("dets.json");
    std::fs::write(
        &dets,
        r#"[{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.9}]"#,
    )
    .unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec![
            "evaluate",
            "--gt",
            gt.to_str().unwrap(),
            "--dets",
            dets.to_str().unwrap(),
        ];
        args.extend(extra);
        autodl(&args)
    };
    let o = run(&["--json", "--evaluator", "box-metrics"]);
    assert!(o.status.success(), "{}", text(&o));
    let got: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(got["voc-ap50"], 1.0, "{got}");

    let o = run(&["--evaluator", "pixel-metrics"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("scores pixel-classification"),
        "{}",
        text(&o)
    );

    std::fs::write(
        &dets,
        r#"[{"image_id": 7, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.9}]"#,
    )
    .unwrap();
    let o = run(&[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("image 7") && text(&o).contains("does not list"),
        "{}",
        text(&o)
    );
}

#[cfg(unix)]
#[test]
fn sigterm_ends_the_run_and_its_trial_as_ctrl_c_does() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("tiles");
    tiny_tiles(&data);
    let out = dir.path().join("run");
    let mut child = Command::new(env!("CARGO_BIN_EXE_autodl"))
        .args([
            "train",
            data.to_str().unwrap(),
            "--time-limit",
            "120s",
            "--out",
            out.to_str().unwrap(),
            "--networks",
            "unet",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let mut children = children_of(pid);
    while children.is_empty() {
        assert!(std::time::Instant::now() < deadline, "no trial started");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended too soon"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
        children = children_of(pid);
    }
    let sent = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let status = child.wait().unwrap();
    assert!(!status.success(), "{status}");
    let killed = std::time::Instant::now();
    while children.iter().any(|c| running(c))
        && killed.elapsed() < std::time::Duration::from_secs(2)
    {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        !children.iter().any(|c| running(c)),
        "trial processes {children:?} outlived a SIGTERM by 2 s"
    );
}

/// Trains two families on `data` from a pipeline keeping every ensemble candidate, and
/// returns the run folder and its leaderboard rows.
fn run_with_ensembles(
    dir: &Path,
    data: &Path,
    networks: &str,
    extra: &str,
) -> (PathBuf, Vec<serde_json::Value>) {
    let out = dir.join("run");
    let pipeline = dir.join("p.toml");
    std::fs::write(
        &pipeline,
        format!(
            "version = 1\nseed = 5\nout = {out:?}\n[data]\npath = {data:?}\n[train]\n\
             time-limit = \"60m\"\nnetworks = [{networks}]\nmax-epochs = 3\nbatch-size = 4\n\
             learning-rate = 0.001\nbackbone = \"resnet18\"\n[ensemble]\nkeep = \"all\"\n{extra}"
        ),
    )
    .unwrap();
    let o = autodl(&["train", pipeline.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let rows = read_json(&out.join("leaderboard.json"))
        .as_array()
        .unwrap()
        .clone();
    (out, rows)
}

/// The leaderboard row `id`.
fn row<'a>(rows: &'a [serde_json::Value], id: &str) -> &'a serde_json::Value {
    rows.iter()
        .find(|r| r["id"] == id)
        .unwrap_or_else(|| panic!("no row {id} in {rows:#?}"))
}

#[test]
fn tta_and_ensembles_of_pixel_classifiers_are_rows_whose_packages_predict_their_score() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("tiles");
    tiny_tiles(&data);
    write_splits(&data, &["t0", "t5"]);
    let (out, rows) = run_with_ensembles(dir.path(), &data, "\"unet\", \"deeplab\"", "");
    // Rows are best first: the first single model is the one TTA was tried on.
    let best = rows
        .iter()
        .find(|r| r["model"] == "unet" || r["model"] == "deeplab")
        .unwrap();
    let tta = row(&rows, &format!("{}-tta", best["id"].as_str().unwrap()));
    assert_eq!(tta["model"], "tta");
    let ens = row(&rows, "ensemble-top2");
    assert_eq!(ens["model"], "ensemble");
    assert!(
        ens["reason"]
            .as_str()
            .unwrap()
            .contains("mean class probabilities"),
        "{ens}"
    );
    for r in [tta, ens] {
        let id = r["id"].as_str().unwrap();
        let pkg = out.join(format!("models/{id}.dlpk"));
        let pred = dir.path().join(format!("pred-{id}"));
        let mut args = vec![
            "predict".to_owned(),
            "--model".into(),
            pkg.display().to_string(),
            "--out".into(),
            pred.display().to_string(),
        ];
        args.extend(val_images(&data, "png"));
        let o = autodl(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(o.status.success(), "{}", text(&o));
        let o = autodl(&[
            "evaluate",
            "--gt",
            data.to_str().unwrap(),
            "--masks",
            pred.to_str().unwrap(),
            "--json",
        ]);
        assert!(o.status.success(), "{}", text(&o));
        let scored: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(
            scored["metrics"]["mean_iou"].as_f64(),
            r["metric"].as_f64(),
            "{id}: predict then evaluate gives the leaderboard's figure"
        );
    }
    // The best model's folder is whole, whatever the best is.
    let o = autodl(&[
        "predict",
        "--model",
        out.join("best-model").to_str().unwrap(),
        "--out",
        dir.path().join("pred-best").to_str().unwrap(),
        data.join("images/t0.png").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn an_ensemble_of_detectors_fuses_boxes_and_predict_runs_its_package() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("voc");
    tiny_voc(&data);
    write_splits(&data, &["d0", "d7", "d12"]);
    let (out, rows) = run_with_ensembles(
        dir.path(),
        &data,
        "\"fcos\", \"retinanet\"",
        "tta = false\n",
    );
    assert!(
        rows.iter().all(|r| r["model"] != "tta"),
        "tta = false tries no TTA: {rows:#?}"
    );
    let ens = row(&rows, "ensemble-top2");
    assert!(
        ens["reason"]
            .as_str()
            .unwrap()
            .contains("weighted box fusion"),
        "{ens}"
    );
    let pkg = out.join("models/ensemble-top2.dlpk");
    let pred = dir.path().join("pred");
    let mut args = vec![
        "predict".to_owned(),
        "--model".into(),
        pkg.display().to_string(),
        "--score-threshold".into(),
        "0".into(),
        "--out".into(),
        pred.display().to_string(),
    ];
    args.extend(val_images(&data, "png"));
    let o = autodl(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", text(&o));
    let o = autodl(&[
        "evaluate",
        "--gt",
        data.to_str().unwrap(),
        "--dets",
        pred.join("detections.json").to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let scored: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        scored["voc-ap50"].as_f64(),
        ens["metric"].as_f64(),
        "predict then evaluate gives the leaderboard's figure"
    );
    // Its own delivered threshold, chosen on validation like a single detector's.
    let o = autodl(&[
        "predict",
        "--model",
        pkg.to_str().unwrap(),
        "--out",
        dir.path().join("pred2").to_str().unwrap(),
        data.join("images/d0.png").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(dir.path().join("pred2/d0.xml").is_file());
}

#[test]
fn the_test_split_is_scored_once_after_ranking_and_changes_nothing_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("tiles");
    tiny_tiles(&data);
    write_splits(&data, &["t0", "t5"]);
    // t8 and t9 are the test split: listed in splits/test.txt, taken out of train.txt.
    let train = std::fs::read_to_string(data.join("splits/train.txt")).unwrap();
    let train: Vec<&str> = train
        .lines()
        .filter(|s| !["t8", "t9"].contains(s))
        .collect();
    std::fs::write(data.join("splits/train.txt"), train.join("\n") + "\n").unwrap();
    std::fs::write(data.join("splits/test.txt"), "t8\nt9\n").unwrap();
    let run = |name: &str| {
        let out = dir.path().join(name);
        let o = autodl(&[
            "train",
            data.to_str().unwrap(),
            "--networks",
            "unet",
            "--backbone",
            "resnet18",
            "--max-epochs",
            "2",
            "--batch-size",
            "4",
            "--seed",
            "9",
            "--time-limit",
            "60m",
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", text(&o));
        (read_json(&out.join("leaderboard.json")), text(&o), out)
    };
    let (first, log, out) = run("a");
    assert!(log.contains("/ 2 test"), "{log}");
    let rows = first.as_array().unwrap();
    assert!(
        rows.iter()
            .all(|r| r["model-dir"].is_null() || r["test-metric"].is_f64()),
        "every packaged model has a test score: {rows:#?}"
    );
    let md = std::fs::read_to_string(out.join("leaderboard.md")).unwrap();
    assert!(md.contains("| value | test |"), "{md}");
    assert!(log.contains("packaged model(s) on the test split"), "{log}");

    // Other test images and labels: everything before the test score is the same to the bit,
    // so nothing before ranking read them; the test score itself moves.
    for stem in ["t8", "t9"] {
        let img = image::RgbImage::from_fn(32, 32, |x, y| {
            image::Rgb([(x * 8) as u8, (y * 8) as u8, 128])
        });
        img.save(data.join(format!("images/{stem}.png"))).unwrap();
        image::GrayImage::from_fn(32, 32, |x, _| image::Luma([if x < 16 { 2 } else { 1 }]))
            .save(data.join(format!("labels/{stem}.png")))
            .unwrap();
    }
    let (second, _, _) = run("b");
    let strip = |v: &serde_json::Value| {
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let mut r = r.clone();
                let o = r.as_object_mut().unwrap();
                for k in ["test-metric", "test-metrics", "model-dir", "train-secs"] {
                    o.remove(k);
                }
                r
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(&first), strip(&second));
    let test = |v: &serde_json::Value| v[0]["test-metrics"].as_str().unwrap().to_owned();
    assert_ne!(
        test(&first),
        test(&second),
        "the test score reads the test split"
    );
}

/// Writes a 32x40 RGB GeoTIFF with a north-up transform and EPSG code `epsg`.
fn rgb_geotiff(path: &Path, transform: [f64; 6], epsg: u16) {
    geotiff_with_nodata(path, transform, epsg, None);
}

/// [`rgb_geotiff`], and with `Some(rows)`, GDAL's no-data tag `0` and its first `rows` rows
/// at 0 in every band.
fn geotiff_with_nodata(path: &Path, transform: [f64; 6], epsg: u16, nodata: Option<u32>) {
    use tiff::encoder::{TiffEncoder, colortype};
    use tiff::tags::Tag;
    let (w, h) = (32u32, 40u32);
    let empty = nodata.unwrap_or(0);
    let data: Vec<u8> = (0..h)
        .flat_map(|y| {
            (0..w).flat_map(move |x| {
                if y < empty {
                    return [0, 0, 0];
                }
                let v = if (8..20).contains(&x) && (10..22).contains(&y) {
                    200
                } else {
                    40
                } as u8;
                [v, v.wrapping_add((x * 2) as u8), v]
            })
        })
        .collect();
    let mut enc = TiffEncoder::new(std::fs::File::create(path).unwrap()).unwrap();
    let mut img = enc.new_image::<colortype::RGB8>(w, h).unwrap();
    let t = transform;
    img.encoder()
        .write_tag(Tag::Unknown(33550), &[t[1], -t[5], 0.0][..])
        .unwrap();
    img.encoder()
        .write_tag(Tag::Unknown(33922), &[0.0, 0.0, 0.0, t[0], t[3], 0.0][..])
        .unwrap();
    img.encoder()
        .write_tag(
            Tag::Unknown(34735),
            &[
                1u16, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, epsg,
            ][..],
        )
        .unwrap();
    if nodata.is_some() {
        img.encoder().write_tag(Tag::Unknown(42113), "0").unwrap();
    }
    img.write_data(&data).unwrap();
}

/// Trains `network` for one epoch on `data` into `out`.
fn train_one_epoch(data: &Path, network: &str, out: &Path) {
    let o = autodl(&[
        "train",
        data.to_str().unwrap(),
        "--networks",
        network,
        "--max-epochs",
        "1",
        "--batch-size",
        "4",
        "--time-limit",
        "60m",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn a_geotiff_predicts_a_class_geotiff_with_its_crs_transform_and_size() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("tiles");
    tiny_tiles(&data);
    write_splits(&data, &["t8", "t9"]);
    let out = dir.path().join("run");
    train_one_epoch(&data, "unet", &out);
    let scene = dir.path().join("scene");
    std::fs::create_dir_all(&scene).unwrap();
    let transform = [500_000.0, 0.5, 0.0, 4_000_000.0, 0.0, -0.5];
    rgb_geotiff(&scene.join("g.tif"), transform, 32617);
    // A plain image beside it gets today's outputs only.
    std::fs::copy(data.join("images/t3.png"), scene.join("plain.png")).unwrap();
    // One whose first 5 rows have no data (GDAL_NODATA 0 in every band).
    geotiff_with_nodata(&scene.join("nd.tif"), transform, 32617, Some(5));
    let pred = dir.path().join("pred");
    let o = autodl(&[
        "predict",
        "--model",
        out.join("best-model").to_str().unwrap(),
        scene.to_str().unwrap(),
        "--out",
        pred.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("g.tif"),
        "predict lists the GeoTIFF it wrote: {}",
        text(&o)
    );
    let back = autodl_data::read_georef(&pred.join("g.tif"))
        .unwrap()
        .expect("the prediction is georeferenced");
    assert_eq!(back.transform, transform);
    assert_eq!(back.epsg, Some(32617));
    let tif = autodl_data::load_mask(&pred.join("g.tif")).unwrap();
    let png = autodl_data::load_mask(&pred.join("g.png")).unwrap();
    assert_eq!((tif.width, tif.height), (32, 40));
    assert_eq!(
        tif.data, png.data,
        "the GeoTIFF holds the PNG's class values"
    );
    assert!(pred.join("plain.png").is_file());
    assert!(!pred.join("plain.tif").exists());
    // No data in, no data out: the class GeoTIFF declares a value no class has (0, the
    // classes being 1 and 2) and holds it where the input had no data; the PNG keeps classes.
    let mut dec =
        tiff::decoder::Decoder::new(std::fs::File::open(pred.join("nd.tif")).unwrap()).unwrap();
    let tag = dec
        .get_tag_ascii_string(tiff::tags::Tag::Unknown(42113))
        .unwrap();
    assert_eq!(tag.trim_end_matches('\0'), "0");
    let nd = autodl_data::load_mask(&pred.join("nd.tif")).unwrap();
    let nd_png = autodl_data::load_mask(&pred.join("nd.png")).unwrap();
    for (i, (&t, &p)) in nd.data.iter().zip(&nd_png.data).enumerate() {
        if i < 5 * 32 {
            assert_eq!(t, 0, "pixel {i} has no data");
        } else {
            assert_eq!(t, p, "pixel {i}");
        }
    }
    assert!(nd_png.data[..5 * 32].iter().all(|&v| v > 0));
    for f in ["nd.png", "nd.tif", "previews/nd.png"] {
        std::fs::remove_file(pred.join(f)).unwrap();
    }
    assert!(!pred.join("previews/g.tif").exists());

    // The GeoTIFF is a planned output: a second prediction refuses to overwrite it.
    let lone = dir.path().join("lone");
    std::fs::create_dir_all(&lone).unwrap();
    rgb_geotiff(&lone.join("g.tif"), transform, 32617);
    std::fs::remove_file(pred.join("g.png")).unwrap();
    std::fs::remove_file(pred.join("previews/g.png")).unwrap();
    std::fs::remove_file(pred.join("plain.png")).unwrap();
    std::fs::remove_file(pred.join("previews/plain.png")).unwrap();
    let o = autodl(&[
        "predict",
        "--model",
        out.join("best-model").to_str().unwrap(),
        lone.join("g.tif").to_str().unwrap(),
        "--out",
        pred.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("g.tif exists"), "{}", text(&o));

    // `evaluate --masks` counts a stem once when both its PNG and GeoTIFF are there.
    let o = autodl(&[
        "predict",
        "--model",
        out.join("best-model").to_str().unwrap(),
        lone.join("g.tif").to_str().unwrap(),
        "--out",
        pred.to_str().unwrap(),
        "--overwrite",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let truth = dir.path().join("truth");
    std::fs::create_dir_all(&truth).unwrap();
    image::GrayImage::from_fn(32, 40, |x, y| {
        image::Luma([if (8..20).contains(&x) && (10..22).contains(&y) {
            2
        } else {
            1
        }])
    })
    .save(truth.join("g.png"))
    .unwrap();
    let only_png = dir.path().join("only-png");
    std::fs::create_dir_all(&only_png).unwrap();
    std::fs::copy(pred.join("g.png"), only_png.join("g.png")).unwrap();
    let score = |masks: &Path| {
        let o = autodl(&[
            "evaluate",
            "--gt",
            truth.to_str().unwrap(),
            "--masks",
            masks.to_str().unwrap(),
            "--json",
        ]);
        assert!(o.status.success(), "{}", text(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    assert_eq!(score(&pred), score(&only_png));
}

#[test]
fn a_world_file_detection_gives_geojson_boxes_through_the_transform() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("voc");
    tiny_voc(&data);
    write_splits(&data, &["d12", "d13", "d14", "d15"]);
    let out = dir.path().join("run");
    train_one_epoch(&data, "ssd", &out);
    let scene = dir.path().join("scene");
    std::fs::create_dir_all(&scene).unwrap();
    let img = image::open(data.join("images/d3.png")).unwrap().to_rgb8();
    img.save(scene.join("s.jpg")).unwrap();
    // A D B E C F, C and F the centre of the top-left pixel; rotated a little.
    std::fs::write(
        scene.join("s.jgw"),
        "0.3\n0.05\n0.02\n-0.3\n600000.15\n5000000.85\n",
    )
    .unwrap();
    std::fs::write(
        scene.join("s.prj"),
        r#"PROJCS["WGS 84 / UTM zone 17N",GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,298.257223563]],PRIMEM["Greenwich",0],UNIT["degree",0.0174532925199433]],PROJECTION["Transverse_Mercator"],UNIT["metre",1],AUTHORITY["EPSG","32617"]]"#,
    )
    .unwrap();
    let pred = dir.path().join("pred");
    let o = autodl(&[
        "predict",
        "--model",
        out.join("models/ssd-efficientnet-lite0.dlpk")
            .to_str()
            .unwrap(),
        scene.join("s.jpg").to_str().unwrap(),
        "--out",
        pred.to_str().unwrap(),
        "--score-threshold",
        "0",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("s.geojson"),
        "predict lists the GeoJSON it wrote: {}",
        text(&o)
    );
    let coco = read_json(&pred.join("detections.json"));
    let geo = read_json(&pred.join("s.geojson"));
    assert_eq!(geo["type"], "FeatureCollection");
    assert_eq!(
        geo["crs"]["properties"]["name"],
        "urn:ogc:def:crs:EPSG::32617"
    );
    let anns = coco["annotations"].as_array().unwrap();
    let feats = geo["features"].as_array().unwrap();
    assert!(!anns.is_empty(), "{coco}");
    assert_eq!(anns.len(), feats.len());
    let (a, d, b, e) = (0.3, 0.05, 0.02, -0.3);
    let (x0, y0) = (
        600000.15 - a / 2.0 - b / 2.0,
        5000000.85 - d / 2.0 - e / 2.0,
    );
    let map = |px: f64, py: f64| [x0 + px * a + py * b, y0 + px * d + py * e];
    for (ann, f) in anns.iter().zip(feats) {
        let bb: Vec<f64> = ann["bbox"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let (x1, y1, x2, y2) = (bb[0], bb[1], bb[0] + bb[2], bb[1] + bb[3]);
        let want = [
            map(x1, y1),
            map(x2, y1),
            map(x2, y2),
            map(x1, y2),
            map(x1, y1),
        ];
        let ring = f["geometry"]["coordinates"][0].as_array().unwrap();
        assert_eq!(ring.len(), 5);
        for (got, want) in ring.iter().zip(want) {
            for k in 0..2 {
                let g = got[k].as_f64().unwrap();
                assert!((g - want[k]).abs() < 1e-4, "{got} vs {want:?}");
            }
        }
        assert_eq!(f["properties"]["class"], "roof");
        assert_eq!(f["properties"]["score"], ann["score"]);
    }
}

#[test]
fn bands_chosen_for_training_are_stored_and_picked_from_each_image_at_prediction() {
    let dir = tempfile::tempdir().unwrap();
    let data = shared("nc_landcover");
    let out = dir.path().join("run");
    let o = autodl(&[
        "train",
        &data,
        "--images-dir",
        "images_ms",
        "--bands",
        "4,3,2",
        "--networks",
        "unet",
        "--max-epochs",
        "1",
        "--batch-size",
        "8",
        "--no-tta",
        "--ensemble-top",
        "0",
        "--time-limit",
        "60m",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let model = out.join("best-model");
    let meta = read_json(&model.join("model.json"));
    assert_eq!(meta["bands"], 3);
    assert_eq!(meta["extract-bands"], serde_json::json!([3, 2, 1]));
    // The six-band tiles predict through the model's three bands; the RGB ones lack band 4.
    let ms = Path::new(&data).join("images_ms/nc_r0_c0.tif");
    let pred = dir.path().join("pred");
    let o = autodl(&[
        "predict",
        "--model",
        model.to_str().unwrap(),
        ms.to_str().unwrap(),
        "--out",
        pred.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(pred.join("nc_r0_c0.png").is_file());
    let rgb = Path::new(&data).join("images/nc_r0_c0.png");
    let o = autodl(&[
        "predict",
        "--model",
        model.to_str().unwrap(),
        rgb.to_str().unwrap(),
        "--out",
        dir.path().join("pred-rgb").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let t = text(&o);
    assert!(
        t.contains("nc_r0_c0.png") && t.contains("the model reads bands 4, 3, 2"),
        "{t}"
    );
    // A band number from 0 is a usage error.
    let o = autodl(&[
        "train",
        &data,
        "--bands",
        "0,1",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}
