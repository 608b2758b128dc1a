//! Helpers the CLI test files share: running the real `autodl` binary and reading what it said.

// Each test file uses what it needs of these.
#![allow(dead_code)]

use std::process::{Command, Output};

/// Runs the `autodl` binary built for these tests.
pub fn autodl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_autodl"))
        .args(args)
        .output()
        .expect("run autodl")
}

/// A run's stdout then stderr, for assertions and failure messages.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
