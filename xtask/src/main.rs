//! Project automation: `cargo xtask test` (what CI runs), `cargo xtask tidy` (the
//! architecture invariants), `cargo xtask bench` and `cargo xtask fuzz`.
//!
//! Kept to the standard library and anyhow so it builds in seconds.

mod bench;
mod new_family;
mod tidy;

use std::path::PathBuf;
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

fn root() -> PathBuf {
    // `cargo xtask` (`cargo run`) sets the variable at run time too; prefer that, because cargo
    // reuses a binary built from another checkout of the same sources in a shared target
    // folder, and the compile-time path would then name that checkout.
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .join("..")
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

/// Whether PostgreSQL's server binaries are on this machine (`PATH`, or Debian's
/// `/usr/lib/postgresql/<version>/bin`).
fn has_postgres() -> bool {
    let on_path = Command::new("sh")
        .args(["-c", "command -v pg_ctl && command -v initdb"])
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    on_path
        || std::fs::read_dir("/usr/lib/postgresql").is_ok_and(|d| {
            d.filter_map(Result::ok)
                .any(|e| e.path().join("bin/pg_ctl").is_file())
        })
}

/// Installs Debian's `postgresql` package when its server binaries are missing (the tests of
/// studies shared by workers run a throwaway server), and the `postgres` user the server runs
/// as under root.
fn ensure_postgres() -> anyhow::Result<()> {
    if !has_postgres() {
        eprintln!("xtask: installing PostgreSQL (Debian package `postgresql`) for the study tests");
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
        let apt = |args: &[&str]| -> anyhow::Result<bool> {
            let mut cmd = if root {
                Command::new("apt-get")
            } else {
                let mut c = Command::new("sudo");
                c.args(["-n", "apt-get"]);
                c
            };
            cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
            Ok(cmd.status().context("cannot run apt-get")?.success())
        };
        if !apt(&["install", "-y", "--no-install-recommends", "postgresql"])? {
            apt(&["update"])?;
            if !apt(&["install", "-y", "--no-install-recommends", "postgresql"])? {
                bail!("cannot install PostgreSQL: `apt-get install postgresql` failed");
            }
        }
        if !has_postgres() {
            bail!("PostgreSQL was installed but pg_ctl and initdb are not found");
        }
    }
    let user = Command::new("id")
        .arg("postgres")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !user {
        let _ = Command::new("useradd")
            .args(["--system", "--no-create-home", "postgres"])
            .status();
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
            // The shared-study tests start a throwaway PostgreSQL server on loopback.
            ensure_postgres()?;
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
            )?;
            // Every benchmark still runs: the smoke suite, tiny sizes, on the CPU.
            bench::suite_run(bench::Suite::Smoke, &["cpu".to_owned()])
        }
        Some("bench") => bench::bench(&args[1..]),
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
                "usage: cargo xtask <test|tidy|bench [--backend cpu,cuda] [--suite smoke|full]|bench [--backend cpu|cuda] [--steps N] [augment|coco|backbones|unet|retinanet|train]...|fuzz [--seconds N] [TARGET...]|new-family NAME [--out-of-tree DIR]>\n  test   rustfmt, clippy and tidy, check the CUDA build, then run every test (CI runs this)\n  tidy   check the architecture invariants (plugin names, backends, typed JSON, lints, docs)\n  bench  the suite (every family, augmentation, evaluation; default full) or the benchmarks named, beside their Python baselines\n  fuzz   build the fuzzer with coverage and run every target (default 600 s each)\n  new-family  scaffold a network family in plugins/NAME, or as a plugin project in DIR"
            );
            std::process::exit(2)
        }
    }
}
