//! Project automation: `cargo xtask test` (what CI runs) and `cargo xtask bench`.
//!
//! Kept to the standard library and anyhow so it builds in seconds.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

fn cargo_cmd() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()))
}

fn cargo(args: &[&str]) -> anyhow::Result<()> {
    eprintln!("xtask: cargo {}", args.join(" "));
    let status = cargo_cmd()
        .args(args)
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
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn python_ok(module: &str) -> bool {
    Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn bench(which: &[String]) -> anyhow::Result<()> {
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

    if on("backbones") {
        // The dev profile builds dependencies (Burn) at opt-level 3; a release build of Burn
        // would take another quarter of an hour.
        let out = output(cargo_cmd().args([
            "run",
            "-q",
            "-p",
            "autodl-backbones",
            "--example",
            "bench_backbones",
        ]))?;
        for line in out.lines().filter(|l| l.starts_with("backbone=")) {
            summary.push(format!("training step, batch 8, 224x224, cpu: {line}"));
        }
    }

    for (name, package, example) in [
        ("unet", "autodl-unet", "bench_unet"),
        ("retinanet", "autodl-retinanet", "bench_retinanet"),
    ] {
        if on(name) {
            let out = output(cargo_cmd().args(["run", "-q", "-p", package, "--example", example]))?;
            for line in out.lines().filter(|l| l.contains("img_per_s=")) {
                summary.push(format!("training step, cpu: {line}"));
            }
        }
    }

    println!("\n== benchmarks (this machine, side by side)");
    for line in summary {
        println!("{line}");
    }
    Ok(())
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
            // The CUDA backend must keep compiling even where no GPU exists to run it.
            cargo(&["check", "-p", "autodl-cli", "--features", "cuda"])?;
            cargo(&["test", "--workspace", "--exclude", "xtask"])
        }
        Some("bench") => bench(&args[1..]),
        Some("fuzz") => fuzz(&args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask <test|bench [augment|coco|backbones|unet|retinanet]...|fuzz [--seconds N] [TARGET...]>\n  test   check the CUDA build, then run every test (CI runs this)\n  bench  run the benchmarks beside their Python baselines\n  fuzz   build the fuzzer with coverage and run every target (default 600 s each)"
            );
            std::process::exit(2)
        }
    }
}
