//! Project automation: `cargo xtask test` (what CI runs), `cargo xtask tidy` (the
//! architecture invariants), `cargo xtask bench` and `cargo xtask fuzz`.
//!
//! Kept to the standard library and anyhow so it builds in seconds.

mod new_family;
mod tidy;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

fn cargo_cmd() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()))
}

fn cargo(args: &[&str]) -> anyhow::Result<()> {
    cargo_with(args, &[])
}

/// `cargo ARGS` with extra environment variables.
fn cargo_with(args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<()> {
    let shown: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v} ")).collect();
    eprintln!("xtask: {}cargo {}", shown.concat(), args.join(" "));
    let status = cargo_cmd()
        .args(args)
        .envs(env.iter().copied())
        .status()
        .context("cannot run cargo")?;
    if !status.success() {
        bail!("cargo {} failed", args.join(" "));
    }
    Ok(())
}

/// Runs a command and returns its stdout; stderr passes through.
fn output(cmd: &mut Command) -> anyhow::Result<String> {
    eprintln!("xtask: {cmd:?}");
    let out = cmd
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed");
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
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

fn root() -> PathBuf {
    // `cargo xtask` (`cargo run`) sets the variable at run time too; prefer that, because cargo
    // reuses a binary built from another checkout of the same sources in a shared target
    // folder, and the compile-time path would then name that checkout.
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .join("..")
}

fn python_ok(module: &str) -> bool {
    Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn bench(args: &[String]) -> anyhow::Result<()> {
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
        summary.extend(bench_train(&shared, backend, steps)?);
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
fn bench_train(shared: &Path, backend: &str, steps: &str) -> anyhow::Result<Vec<String>> {
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
    let torch = if python_ok("torch") && script.exists() {
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
        println!("{line}");
        lines.push(format!(
            "training step, {backend}, {mode}, {threads} threads: {line}"
        ));
    }
    Ok(lines)
}

/// `cargo xtask fuzz [--seconds N] [TARGET...]`: builds `autodl-fuzz` in release with
/// SanitizerCoverage edge instrumentation (for the target triple only, so build scripts and
/// proc macros are left alone) in its own target folder, then runs it: every target (or the
/// ones named) for N seconds each (default 600), new inputs kept in `crates/fuzz/corpus/`,
/// crashing ones in `target/fuzz-artifacts/`.
fn fuzz(args: &[String]) -> anyhow::Result<()> {
    let rustc = output(Command::new("rustc").arg("-vV"))?;
    let host = rustc
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .context("rustc -vV names no host")?
        .to_owned();
    let base = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".to_owned());
    let target_dir = PathBuf::from(base).join("fuzz");
    let flags = [
        "-Cpasses=sancov-module",
        "-Cllvm-args=-sanitizer-coverage-level=3",
        "-Cllvm-args=-sanitizer-coverage-trace-pc-guard",
        "-Cdebug-assertions",
        "-Coverflow-checks",
    ]
    .join(" ");
    eprintln!("xtask: RUSTFLAGS=\"{flags}\" cargo build --release -p autodl-fuzz --target {host}");
    let status = cargo_cmd()
        .args(["build", "--release", "-p", "autodl-fuzz", "--target", &host])
        .arg("--target-dir")
        .arg(&target_dir)
        .env("RUSTFLAGS", &flags)
        .status()
        .context("cannot run cargo")?;
    if !status.success() {
        bail!("building the fuzzer failed");
    }
    let exe = target_dir.join(&host).join("release/autodl-fuzz");
    let mut cmd = Command::new(&exe);
    if !args.iter().any(|a| a == "--seconds") {
        cmd.args(["--seconds", "600"]);
    }
    cmd.args(args)
        .args(["--corpus", "crates/fuzz/corpus", "--artifacts"])
        .arg(target_dir.join("artifacts"));
    eprintln!("xtask: {cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {}", exe.display()))?;
    if !status.success() {
        bail!("the fuzzer found crashes (see above)");
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("test") => {
            // Formatting and lints first: they fail in seconds where the tests take minutes.
            cargo(&["fmt", "--all", "--", "--check"])?;
            cargo(&[
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ])?;
            // The architecture invariants, and the tests of xtask itself (`--workspace` below
            // leaves xtask out).
            tidy::run(&root())?;
            cargo(&["test", "-p", "xtask"])?;
            // The CUDA backend must keep compiling even where no GPU exists to run it.
            cargo(&["check", "-p", "autodl-cli", "--features", "cuda"])?;
            cargo(&["test", "--workspace", "--exclude", "xtask"])?;
            // The CPU kernels once more on the baseline x86-64 build of their SIMD loops, as a
            // CPU without AVX2 runs them.
            cargo_with(
                &[
                    "test",
                    "-p",
                    "autodl-backend",
                    "--features",
                    "flex",
                    "--lib",
                    "kernels",
                ],
                &[("AUTODL_SIMD", "scalar")],
            )
        }
        Some("bench") => bench(&args[1..]),
        Some("fuzz") => fuzz(&args[1..]),
        Some("new-family") => new_family::run(&root(), &args[1..]),
        Some("tidy") => {
            if let Err(e) = tidy::run(&root()) {
                eprintln!("{e:#}");
                std::process::exit(1)
            }
            Ok(())
        }
        _ => {
            eprintln!(
                "usage: cargo xtask <test|tidy|bench [--backend cpu|cuda] [--steps N] [augment|coco|backbones|unet|retinanet|train]...|fuzz [--seconds N] [TARGET...]>\n  test   rustfmt, clippy and tidy, check the CUDA build, then run every test (CI runs this)\n  tidy   check the architecture invariants (plugin names, backends, typed JSON, lints, docs)\n  bench  run the benchmarks beside their Python baselines\n  fuzz   build the fuzzer with coverage and run every target (default 600 s each)"
            );
            std::process::exit(2)
        }
    }
}
