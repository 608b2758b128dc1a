//! `cargo xtask bench`: the benchmark suite (`--suite smoke|full`: every registered family's
//! training and inference throughput on each `--backend`, augmentation and evaluation speed,
//! measured by `autodl bench families`), and the single benchmarks by name; each beside its
//! Python baseline when that is importable, with the ratio.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use autodl_conformance::bench::{BackendStatus, Baseline, BenchReport};

use crate::{cargo_cmd, output, root};

/// `cargo xtask bench [--backend cpu,cuda] [--suite smoke|full]`, or the benchmarks named.
pub fn bench(args: &[String]) -> anyhow::Result<()> {
    let mut backends = vec!["cpu".to_owned()];
    let mut suite = None;
    let mut names = false;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--backend" => {
                backends = rest
                    .next()
                    .context("--backend needs a value: cpu, cuda or both as cpu,cuda")?
                    .split(',')
                    .map(str::to_owned)
                    .collect();
            }
            "--suite" => {
                suite = Some(match rest.next().map(String::as_str) {
                    Some("smoke") => Suite::Smoke,
                    Some("full") => Suite::Full,
                    _ => bail!("--suite needs a value: smoke or full"),
                });
            }
            "--steps" => {
                rest.next();
            }
            _ => names = true,
        }
    }
    if names && suite.is_none() {
        if backends.len() > 1 {
            bail!("the benchmarks by name take one --backend");
        }
        return named(args);
    }
    if names {
        bail!("--suite runs every benchmark: name none, or leave --suite out");
    }
    let started = std::time::Instant::now();
    suite_run(suite.unwrap_or(Suite::Full), &backends)?;
    eprintln!(
        "xtask: bench suite done in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The sizes of `cargo xtask bench --suite`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suite {
    /// Tiny sizes, few iterations: that everything runs (CI).
    Smoke,
    /// Figures that mean something.
    Full,
}

impl Suite {
    fn name(self) -> &'static str {
        match self {
            Suite::Smoke => "smoke",
            Suite::Full => "full",
        }
    }
}

/// `autodl bench families` built in the dev profile (dependencies optimised), with the `cuda`
/// feature when asked: its JSON report.
fn families(
    suite: Suite,
    backends: &[String],
    cuda: bool,
    extra: &[&str],
) -> anyhow::Result<BenchReport> {
    let json = std::env::temp_dir().join(format!(
        "autodl-bench-{}-{}.json",
        std::process::id(),
        if cuda { "cuda" } else { "default" }
    ));
    let mut cmd = cargo_cmd();
    cmd.args(["run", "-q", "-p", "autodl-cli"]);
    if cuda {
        cmd.args(["--features", "cuda"]);
    }
    cmd.args([
        "--",
        "bench",
        "families",
        "--suite",
        suite.name(),
        "--backend",
    ])
    .arg(backends.join(","))
    .arg("--json")
    .arg(&json)
    .args(extra);
    // Its table (stdout) is printed again below with the baselines; the JSON is what we read.
    output(&mut cmd)?;
    let text = std::fs::read_to_string(&json)
        .with_context(|| format!("cannot read {}", json.display()))?;
    let _ = std::fs::remove_file(&json);
    serde_json::from_str(&text).with_context(|| format!("{}: not a bench report", json.display()))
}

/// Runs the suite on `backends` (a CUDA backend in a build with the `cuda` feature when a
/// device is present; skipped with the reason otherwise), the Python baselines beside it, and
/// prints the table; the JSON goes to `$CARGO_TARGET_DIR/bench-<suite>.json`.
pub fn suite_run(suite: Suite, backends: &[String]) -> anyhow::Result<()> {
    let shared = root().join("../shared");
    let voc = shared.join("data/trees_voc");
    let mut extra: Vec<String> = Vec::new();
    if suite == Suite::Full && voc.is_dir() {
        extra.extend(["--voc".to_owned(), voc.display().to_string()]);
    }
    let extra_refs: Vec<&str> = extra.iter().map(String::as_str).collect();
    let mut report = families(suite, backends, false, &extra_refs)?;
    // A backend this build lacks but whose device is here: measure it with a build that has it.
    let rebuild: Vec<String> = report
        .backends
        .iter()
        .filter(|b| {
            matches!(
                b.status,
                BackendStatus::NotCompiled {
                    device_present: true,
                    ..
                }
            )
        })
        .map(|b| b.backend.clone())
        .collect();
    if !rebuild.is_empty() {
        eprintln!("xtask: a CUDA device is present: building autodl with `--features cuda`");
        let cuda = families(suite, &rebuild, true, &["--families-only"])?;
        for b in cuda.backends {
            if let Some(slot) = report.backends.iter_mut().find(|s| s.backend == b.backend) {
                *slot = b;
            }
        }
    }
    report.baselines = baselines(suite, &report, &shared, backends)?;
    let dir =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join(format!("bench-{}.json", suite.name()));
    std::fs::write(&path, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("cannot write {}", path.display()))?;
    println!("\n{report}");
    println!("report: {}", path.display());
    for b in &report.backends {
        if let Some(e) = b.families.iter().find_map(|f| f.error.as_ref()) {
            bail!("a family could not be measured on {}: {e}", b.backend);
        }
    }
    Ok(())
}

/// The Python baselines beside `report`'s figures, or why each did not run.
fn baselines(
    suite: Suite,
    report: &BenchReport,
    shared: &Path,
    backends: &[String],
) -> anyhow::Result<Vec<Baseline>> {
    let mut out = Vec::new();
    let missing =
        |name: &str, library: &str, unit: &str, ours: Option<f64>, why: String| Baseline {
            name: name.to_owned(),
            library: library.to_owned(),
            value: None,
            ours,
            unit: unit.to_owned(),
            speedup: None,
            note: why,
        };
    let ours_aug = report.augmentation.as_ref().map(|a| a.images_per_sec);
    let voc = shared.join("data/trees_voc");
    if !python_ok("albumentations") {
        out.push(missing(
            "augmentation",
            "albumentations",
            "img/s",
            ours_aug,
            "albumentations is not importable: `pip install albumentations`".to_owned(),
        ));
    } else if suite == Suite::Smoke || !voc.is_dir() {
        out.push(missing(
            "augmentation",
            "albumentations",
            "img/s",
            ours_aug,
            "runs on the trees_voc tiles in --suite full only".to_owned(),
        ));
    } else {
        let text = output(
            Command::new("python3")
                .arg(shared.join("bench/albumentations_detection.py"))
                .arg(&voc),
        )?;
        let theirs = before(&text, "img/s");
        out.push(Baseline {
            name: "augmentation".to_owned(),
            library: "albumentations".to_owned(),
            value: theirs,
            ours: ours_aug,
            unit: "img/s".to_owned(),
            speedup: theirs.zip(ours_aug).map(|(t, o)| o / t),
            note: "one thread each; ours the default detection preset, theirs a list like it"
                .to_owned(),
        });
    }
    let ours_eval = report.evaluation.as_ref().map(|e| e.seconds);
    if python_ok("pycocotools") {
        let text = output(Command::new("python3").arg(shared.join("bench/pycocotools_eval.py")))?;
        // "pycocotools: N dets vs M gt: 0.96s AP=...": the seconds follow the last colon.
        let theirs = text
            .rsplit(": ")
            .next()
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.trim_end_matches('s').parse::<f64>().ok());
        out.push(Baseline {
            name: "COCO evaluation".to_owned(),
            library: "pycocotools".to_owned(),
            value: theirs,
            ours: ours_eval,
            unit: "s".to_owned(),
            speedup: theirs.zip(ours_eval).map(|(t, o)| t / o),
            note: "the same workload, each from its own seeded generator".to_owned(),
        });
    } else {
        out.push(missing(
            "COCO evaluation",
            "pycocotools",
            "s",
            ours_eval,
            "pycocotools is not importable: `pip install pycocotools`".to_owned(),
        ));
    }
    for backend in backends {
        let ran = report
            .backends
            .iter()
            .any(|b| &b.backend == backend && b.status == BackendStatus::Ran);
        if !ran {
            continue;
        }
        if suite == Suite::Smoke {
            out.push(missing(
                &format!("train step on {backend}"),
                "pytorch",
                "img/s",
                None,
                "the backbone and U-Net steps beside PyTorch run in --suite full only".to_owned(),
            ));
        } else {
            out.extend(bench_train(shared, backend, "3")?.1);
        }
    }
    Ok(out)
}

/// The number after `key=` on any line of `text`.
fn field(text: &str, key: &str) -> Option<f64> {
    text.split_whitespace().find_map(|w| {
        w.strip_prefix(key)?
            .strip_prefix('=')?
            .trim_end_matches('s')
            .parse()
            .ok()
    })
}

/// The number just before `unit` in `text` (for the Python baselines' sentences).
fn before(text: &str, unit: &str) -> Option<f64> {
    let i = text.find(unit)?;
    text[..i]
        .split_whitespace()
        .last()?
        .trim_end_matches('s')
        .parse()
        .ok()
}

fn python_ok(module: &str) -> bool {
    Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The benchmarks by name (`cargo xtask bench [--backend cpu|cuda] [--steps N] NAME...`), each
/// beside its Python baseline.
fn named(args: &[String]) -> anyhow::Result<()> {
    let mut backend = "cpu";
    // Timed training steps per net: PyTorch's figures over 3 steps varied by a fifth between
    // runs on the 2-core machine; 10 settle within a few per cent.
    let mut steps = "10";
    let mut which = Vec::new();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        if arg == "--backend" {
            backend = rest
                .next()
                .context("--backend needs a value: cpu or cuda")?;
        } else if arg == "--steps" {
            steps = rest
                .next()
                .filter(|s| s.parse::<usize>().is_ok_and(|n| n > 0))
                .context("--steps needs a positive number of timed training steps")?;
        } else {
            which.push(arg.clone());
        }
    }
    let all = which.is_empty();
    let on = |name: &str| all || which.iter().any(|w| w == name);
    let shared = root().join("../shared");
    let mut summary = Vec::new();

    if on("augment") {
        let voc = shared.join("data/trees_voc");
        let ours = output(
            cargo_cmd()
                .args([
                    "run",
                    "--release",
                    "-q",
                    "-p",
                    "autodl-augment",
                    "--example",
                    "bench_augment",
                    "--",
                ])
                .arg(&voc),
        )?;
        let ours =
            field(&ours, "images_per_sec").context("bench_augment printed no images_per_sec")?;
        let mut line =
            format!("augmentation (trees_voc, detection preset): autodl {ours:.0} img/s");
        if python_ok("albumentations") {
            let base = output(
                Command::new("python3")
                    .arg(shared.join("bench/albumentations_detection.py"))
                    .arg(&voc),
            )?;
            if let Some(b) = before(&base, "img/s") {
                line += &format!(
                    ", albumentations {b:.0} img/s (one process), ratio {:.1}x",
                    ours / b
                );
            }
        } else {
            line +=
                " (albumentations not installed: `pip install albumentations` for the baseline)";
        }
        summary.push(line);
    }

    if on("coco") {
        let dir = std::env::temp_dir().join("autodl-bench-coco");
        std::fs::create_dir_all(&dir)?;
        let have_data = python_ok("numpy")
            && Command::new("python3")
                .arg(root().join("tests/fixtures/detection/make_bench_data.py"))
                .arg(&dir)
                .status()
                .is_ok_and(|s| s.success());
        let mut cmd = cargo_cmd();
        cmd.args([
            "run",
            "--release",
            "-q",
            "-p",
            "autodl-detection-metrics",
            "--example",
            "bench_coco",
            "--",
        ]);
        if have_data {
            cmd.arg(&dir);
        }
        let ours = output(&mut cmd)?;
        let ours = field(&ours, "seconds").context("bench_coco printed no seconds")?;
        let mut line =
            format!("COCO evaluation (10,000 detections vs 2,000 boxes): autodl {ours:.4} s");
        if python_ok("pycocotools") {
            let base =
                output(Command::new("python3").arg(shared.join("bench/pycocotools_eval.py")))?;
            // "pycocotools: N dets vs M gt: 0.96s AP=...": the seconds follow the last colon.
            if let Some(b) = base
                .rsplit(": ")
                .next()
                .and_then(|s| s.split_whitespace().next())
                .and_then(|s| s.trim_end_matches('s').parse::<f64>().ok())
            {
                line += &format!(", pycocotools {b:.2} s, ratio {:.0}x faster", b / ours);
            }
        } else {
            line += " (pycocotools not installed: `pip install pycocotools` for the baseline)";
        }
        summary.push(line);
    }

    // `train` runs the backbone and U-Net steps beside PyTorch; `backbones` and `unet` run ours
    // alone, and only when named.
    let named = |name: &str| which.iter().any(|w| w == name);
    for (name, nets) in [("backbones", &TRAIN_NETS[..5]), ("unet", &TRAIN_NETS[5..])] {
        if named(name) {
            for line in train_steps(backend, steps, nets)?
                .lines()
                .filter(|l| l.contains("img_per_s="))
            {
                summary.push(format!("training step, {backend}: {line}"));
            }
        }
    }
    if named("retinanet") || all {
        let out = example("autodl-retinanet", "bench_retinanet")?;
        for line in out.lines().filter(|l| l.contains("img_per_s=")) {
            summary.push(format!("training step, cpu: {line}"));
        }
    }

    if on("train") {
        summary.extend(bench_train(&shared, backend, steps)?.0);
    }

    println!("\n== benchmarks (this machine, side by side)");
    for line in summary {
        println!("{line}");
    }
    Ok(())
}

/// The output of a training-step bench example, built in the dev profile: it builds
/// dependencies (Burn) optimised, and a release build of Burn would take another quarter of an
/// hour.
fn example(package: &str, name: &str) -> anyhow::Result<String> {
    output(cargo_cmd().args(["run", "-q", "-p", package, "--example", name]))
}

/// The nets of `cargo xtask bench train`, in the order `pytorch_train_step.py` runs them.
const TRAIN_NETS: [&str; 6] = [
    "resnet18",
    "resnet34",
    "resnet50",
    "mobilenetv2",
    "efficientnet-lite0",
    "unet-resnet18",
];

/// Our training-step benchmark (`autodl bench train`) for `nets` on `backend`, built in the
/// dev profile (it builds dependencies, Burn among them, optimised) with the `cuda` feature
/// when the backend asks for it.
fn train_steps(backend: &str, steps: &str, nets: &[&str]) -> anyhow::Result<String> {
    let mut cmd = cargo_cmd();
    cmd.args(["run", "-q", "-p", "autodl-cli"]);
    if backend.starts_with("cuda") {
        cmd.args(["--features", "cuda"]);
    }
    cmd.args([
        "--",
        "bench",
        "train",
        "--backend",
        backend,
        "--steps",
        steps,
    ])
    .args(nets);
    output(&mut cmd)
}

/// `cargo xtask bench train [--backend cpu|cuda]`: the training-step throughput of every net
/// (the protocol of `../shared/bench/pytorch_train_step.py`: batch 8, one warm-up step, then
/// timed steps), beside PyTorch's on the same device when it is importable. Prints
/// `model=NAME img_per_s=X` per net, with the cores our process kept busy and the ratio to
/// PyTorch. `AUTODL_KERNELS=stock` in the environment measures Burn's stock ops instead of
/// our kernels.
fn bench_train(
    shared: &Path,
    backend: &str,
    steps: &str,
) -> anyhow::Result<(Vec<String>, Vec<Baseline>)> {
    let ours_out = train_steps(backend, steps, &TRAIN_NETS)?;
    let mut ours = Vec::new();
    for line in ours_out.lines() {
        let name = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("model="));
        if let (Some(name), Some(rate)) = (name, field(line, "img_per_s")) {
            ours.push((name.to_owned(), rate, field(line, "cores")));
        }
    }
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let device = if backend.starts_with("cuda") {
        "cuda"
    } else {
        "cpu"
    };
    let script = shared.join("bench/pytorch_train_step.py");
    let importable = python_ok("torch") && script.exists();
    let torch = if importable {
        Some(output(Command::new("python3").arg(&script).args([
            "--threads",
            &threads.to_string(),
            "--device",
            device,
            "--steps",
            steps,
        ]))?)
    } else {
        println!(
            "PyTorch is not importable (or {} is missing): `pip install torch torchvision` (about 5 GB) to run the baseline beside ours",
            script.display()
        );
        None
    };
    let mode = if std::env::var("AUTODL_KERNELS").is_ok_and(|v| v == "stock") {
        "burn stock ops"
    } else {
        "autodl kernels"
    };
    let mut lines = Vec::new();
    let mut baselines = Vec::new();
    for name in TRAIN_NETS {
        let Some((_, rate, cores)) = ours.iter().find(|(n, _, _)| n == name) else {
            bail!("the training benchmark printed no line for {name}");
        };
        let mut line = format!("model={name} img_per_s={rate:.2}");
        if let Some(c) = cores {
            line.push_str(&format!(" cores={c:.2}"));
        }
        let theirs = torch.as_deref().and_then(|t| {
            t.lines()
                .find(|l| l.split_whitespace().any(|w| w == format!("model={name}")))
                .and_then(|l| field(l, "img_per_s"))
        });
        if let Some(t) = theirs {
            line.push_str(&format!(" pytorch_img_per_s={t:.2} ratio={:.2}", rate / t));
        }
        baselines.push(Baseline {
            name: format!("train step {name} on {backend}"),
            library: "pytorch".to_owned(),
            value: theirs,
            ours: Some(*rate),
            unit: "img/s".to_owned(),
            speedup: theirs.map(|t| rate / t),
            note: if importable {
                format!("batch 8, {steps} timed steps, {mode}, {threads} threads")
            } else {
                "torch is not importable: `pip install torch torchvision`".to_owned()
            },
        });
        println!("{line}");
        lines.push(format!(
            "training step, {backend}, {mode}, {threads} threads: {line}"
        ));
    }
    Ok((lines, baselines))
}
