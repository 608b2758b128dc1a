//! Project automation: `cargo xtask test`, what CI runs.
//!
//! Kept to the standard library and anyhow so it builds in seconds.

use std::process::Command;

use anyhow::{Context, bail};

fn cargo(args: &[&str]) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    eprintln!("xtask: cargo {}", args.join(" "));
    let status = Command::new(&cargo).args(args).status().with_context(|| format!("cannot run {cargo}"))?;
    if !status.success() {
        bail!("cargo {} failed", args.join(" "));
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
        _ => {
            eprintln!("usage: cargo xtask test\n  test   check the CUDA build, then run every test (CI runs this)");
            std::process::exit(2)
        }
    }
}
