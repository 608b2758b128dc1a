//! Network families in plugin libraries loaded at run time: a family scaffolded out of tree by
//! `cargo xtask new-family --out-of-tree`, built as a `cdylib` outside the workspace, listed,
//! trained to a leaderboard row and predicted with; and libraries that fail on purpose (a
//! wrong ABI version, no entry point, panics), each with its message.

// The fixture builders below are test code too: a failure in them should stop the test.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;
use common::text;
use std::sync::OnceLock;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The target folder these tests were built in: plugin builds share it, so that they reuse
/// the compiled dependencies instead of building Burn again.
fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.env("CARGO_TARGET_DIR", target_dir());
    cmd
}

fn run(cmd: &mut Command) -> Output {
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{cmd:?}: {}", text(&o));
    o
}

fn autodl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_autodl"))
        .args(args)
        .env_remove("AUTODL_PLUGIN_PATH")
        .output()
        .unwrap()
}

/// Builds the project in `dir` and copies its library to `to`.
fn build_library(dir: &Path, lib_name: &str, features: &[&str], to: &Path) {
    let started = std::time::Instant::now();
    let mut cmd = cargo();
    cmd.arg("build")
        .arg("--manifest-path")
        .arg(dir.join("Cargo.toml"));
    if !features.is_empty() {
        cmd.arg("--features").arg(features.join(","));
    }
    run(&mut cmd);
    // How long a plugin build takes with the shared target folder, for the CI's budget.
    eprintln!(
        "built {lib_name} {features:?} in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let lib = format!(
        "{}{lib_name}{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    );
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::copy(target_dir().join("debug").join(lib), to).unwrap();
}

/// The variants of `crates/plugin-abi/tests/faulty-plugin`, built once: a copy of the project
/// outside the workspace, with the workspace's lock file, built per feature (into the target
/// folder's scratch space, replaced by each run).
fn faulty() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("faulty-plugins");
        let _ = std::fs::remove_dir_all(&dir);
        let project = dir.join("faulty-plugin");
        let fixture = repo().join("crates/plugin-abi/tests/faulty-plugin");
        std::fs::create_dir_all(project.join("src")).unwrap();
        // The copy names the workspace's crates by absolute path.
        let manifest = std::fs::read_to_string(fixture.join("Cargo.toml"))
            .unwrap()
            .replace(
                "\"../../../api\"",
                &format!("{:?}", repo().join("crates/api").canonicalize().unwrap()),
            )
            .replace(
                "\"../..\"",
                &format!(
                    "{:?}",
                    repo().join("crates/plugin-abi").canonicalize().unwrap()
                ),
            );
        std::fs::write(project.join("Cargo.toml"), manifest).unwrap();
        std::fs::copy(fixture.join("src/lib.rs"), project.join("src/lib.rs")).unwrap();
        std::fs::copy(repo().join("Cargo.lock"), project.join("Cargo.lock")).unwrap();
        for (variant, features) in [
            ("panic", &[][..]),
            ("wrong-abi", &["wrong-abi"][..]),
            ("no-entry", &["no-entry"][..]),
            ("panic-describe", &["panic-describe"][..]),
        ] {
            build_library(
                &project,
                "faulty_plugin",
                features,
                &dir.join(format!("lib{variant}{}", std::env::consts::DLL_SUFFIX)),
            );
        }
        dir
    })
}

fn faulty_lib(variant: &str) -> String {
    faulty()
        .join(format!("lib{variant}{}", std::env::consts::DLL_SUFFIX))
        .display()
        .to_string()
}

/// Ten 32x32 tiles of three classes with a split, as `crates/cli/tests/cli.rs` trains on.
fn tiny_tiles(root: &Path) {
    for d in ["images", "labels", "splits"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(root.join("classes.txt"), "0 nodata\n1 ground\n2 roof\n").unwrap();
    for i in 0..10u32 {
        let (x0, y0) = ((i * 3) % 16, (i * 5) % 16);
        let inside = move |x: u32, y: u32| (x0..x0 + 12).contains(&x) && (y0..y0 + 12).contains(&y);
        let img = image::RgbImage::from_fn(32, 32, |x, y| {
            let v = if inside(x, y) { 200 } else { 40 } as u8;
            image::Rgb([v, v.wrapping_add((x * 2) as u8), v])
        });
        img.save(root.join(format!("images/t{i}.png"))).unwrap();
        let mask = image::GrayImage::from_fn(32, 32, |x, y| {
            image::Luma([if y == 0 {
                0
            } else if inside(x, y) {
                2
            } else {
                1
            }])
        });
        mask.save(root.join(format!("labels/t{i}.png"))).unwrap();
    }
    std::fs::write(
        root.join("splits/train.txt"),
        "t0\nt1\nt2\nt3\nt4\nt5\nt6\nt7\n",
    )
    .unwrap();
    std::fs::write(root.join("splits/val.txt"), "t8\nt9\n").unwrap();
}

#[test]
fn a_scaffolded_out_of_tree_family_loads_trains_to_a_row_and_predicts() {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("demo-net");
    run(cargo()
        .current_dir(repo())
        .args(["run", "-q", "-p", "xtask", "--", "new-family", "demo-net"])
        .arg("--out-of-tree")
        .arg(&project));
    let lib = dir.path().join("plugins").join(format!(
        "{}demo{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    ));
    build_library(&project, "autodl_plugin_demo_net", &[], &lib);
    let lib_arg = lib.display().to_string();

    // Listed with its parameters, only when loaded.
    let o = autodl(&["plugins", "--plugin", &lib_arg]);
    assert!(o.status.success(), "{}", text(&o));
    let listing = text(&o);
    assert!(
        listing.contains("network demo-net") && listing.contains("pixel-classification"),
        "{listing}"
    );
    assert!(
        listing.contains("[params.demo-net] head-width = 32"),
        "{listing}"
    );
    assert!(!text(&autodl(&["plugins"])).contains("demo-net"));

    // Trained from a pipeline that names the library, in a trial child process.
    let data = dir.path().join("tiles");
    tiny_tiles(&data);
    let out = dir.path().join("run");
    let pipeline = dir.path().join("pipeline.toml");
    std::fs::write(
        &pipeline,
        format!(
            "version = 1\nplugins = [\"plugins/{}\"]\n[data]\npath = \"tiles\"\n[train]\nnetworks = [\"demo-net\"]\n[params.demo-net]\nhead-width = 16\n[ensemble]\nkeep = \"all\"\n",
            lib.file_name().unwrap().to_string_lossy()
        ),
    )
    .unwrap();
    let o = autodl(&["check", pipeline.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let o = autodl(&[
        "train",
        pipeline.to_str().unwrap(),
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
    let board: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("leaderboard.json")).unwrap())
            .unwrap();
    let rows = board.as_array().unwrap();
    let trained = rows.iter().find(|r| r["model"] == "demo-net").unwrap();
    assert_eq!(trained["status"], "completed", "{board}");
    // Flip test-time augmentation runs the family's `infer` through the library too, in the
    // `autodl predict` child that scores it.
    let tta = format!("{}-tta", trained["id"].as_str().unwrap());
    assert!(rows.iter().any(|r| r["id"] == tta.as_str()), "{board}");
    let package = out.join(format!("{}.dlpk", trained["id"].as_str().unwrap()));
    assert!(package.is_file(), "{}", package.display());

    // Its package predicts through the library, found by --plugin or AUTODL_PLUGIN_PATH.
    let image = data.join("images/t8.png").display().to_string();
    let pred = dir.path().join("pred");
    let o = autodl(&[
        "predict",
        "--model",
        package.to_str().unwrap(),
        &image,
        "--out",
        pred.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("needs network `demo-net`, which this binary lacks"),
        "{}",
        text(&o)
    );
    let o = autodl(&[
        "predict",
        "--plugin",
        &lib_arg,
        "--model",
        package.to_str().unwrap(),
        &image,
        "--out",
        pred.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(pred.join("t8.png").is_file(), "{}", text(&o));
    let pred2 = dir.path().join("pred2");
    let o = Command::new(env!("CARGO_BIN_EXE_autodl"))
        .args(["predict", "--model", package.to_str().unwrap(), &image])
        .arg("--out")
        .arg(&pred2)
        .env("AUTODL_PLUGIN_PATH", lib.parent().unwrap())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        std::fs::read(pred.join("t8.png")).unwrap(),
        std::fs::read(pred2.join("t8.png")).unwrap()
    );
}

#[test]
fn a_library_of_another_abi_version_is_a_usage_error() {
    let o = autodl(&["plugins", "--plugin", &faulty_lib("wrong-abi")]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains(
            "built for plugin ABI version 999, but this autodl loads version 1: rebuild it against this autodl's autodl-plugin-sdk"
        ),
        "{}",
        text(&o)
    );
}

#[test]
fn a_library_without_the_entry_point_is_a_usage_error() {
    let o = autodl(&["plugins", "--plugin", &faulty_lib("no-entry")]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("not an autodl plugin: the library has no `autodl_plugin_v1` symbol"),
        "{}",
        text(&o)
    );
    // Nor is a file that is no library at all, or none at all.
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("libjunk.so");
    std::fs::write(&junk, b"not a library").unwrap();
    let o = autodl(&["plugins", "--plugin", junk.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("cannot load the library"), "{}", text(&o));
    let o = autodl(&["plugins", "--plugin", "no/such/libplugin.so"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("plugin no/such/libplugin.so:"),
        "{}",
        text(&o)
    );
}

#[test]
fn a_library_that_panics_while_describing_itself_is_a_usage_error() {
    let o = autodl(&["plugins", "--plugin", &faulty_lib("panic-describe")]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("panicked in `describe`: boom in describe"),
        "{}",
        text(&o)
    );
}

#[test]
fn a_family_that_panics_in_training_is_a_failed_row() {
    let lib = faulty_lib("panic");
    let o = autodl(&["plugins", "--plugin", &lib]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("network faulty"), "{}", text(&o));
    // A library without evaluators of its own is scored by the host's for its task.
    assert!(text(&o).contains("  metrics: miou"), "{}", text(&o));
    // The same library under two names would make `faulty` ambiguous.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("libcopy.so");
    std::fs::copy(&lib, &copy).unwrap();
    let o = autodl(&[
        "plugins",
        "--plugin",
        &lib,
        "--plugin",
        copy.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("a network family called `faulty` is already registered"),
        "{}",
        text(&o)
    );
    // One library named twice (by the search path and by --plugin) is loaded once.
    let o = Command::new(env!("CARGO_BIN_EXE_autodl"))
        .args(["plugins", "--plugin", copy.to_str().unwrap()])
        .env("AUTODL_PLUGIN_PATH", dir.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        text(&o).matches("network faulty").count(),
        1,
        "{}",
        text(&o)
    );

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("tiles");
    tiny_tiles(&data);
    let out = dir.path().join("run");
    let o = autodl(&[
        "train",
        data.to_str().unwrap(),
        "--plugin",
        &lib,
        "--networks",
        "faulty",
        "--max-epochs",
        "1",
        "--batch-size",
        "4",
        "--time-limit",
        "10m",
        "--out",
        out.to_str().unwrap(),
    ]);
    // The run survives the panic and says no network trained.
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let board: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("leaderboard.json")).unwrap())
            .unwrap();
    let row = &board[0];
    assert_eq!(row["model"], "faulty", "{board}");
    assert_eq!(row["status"], "failed", "{board}");
    assert!(
        row["reason"]
            .as_str()
            .unwrap()
            .contains("panicked in `train`: boom in train"),
        "{board}"
    );
}
