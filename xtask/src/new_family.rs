//! `cargo xtask new-family NAME [--out-of-tree DIR]`: scaffolds a pixel-classification
//! network family on the shared backbones, with a typed parameter, a unit test, a README and a
//! sample pipeline.
//!
//! In-tree it becomes `plugins/NAME` (`autodl-NAME`), added to the workspace dependencies, to
//! `crates/cli/Cargo.toml` and to `crates/cli/src/main.rs` so that the linker keeps its
//! registration. Out of tree it becomes a standalone `cdylib` project in DIR that depends on
//! `crates/plugin-sdk` by path and exports the family with `export_family!`; it carries this
//! workspace's `Cargo.lock` and compiles its dependencies with this workspace's profile, so a
//! build sharing autodl's target folder (`CARGO_TARGET_DIR`) reuses them instead of
//! rebuilding Burn.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// Runs `new-family` with its arguments (those after `new-family`).
pub fn run(root: &Path, args: &[String]) -> anyhow::Result<()> {
    let usage = "usage: cargo xtask new-family NAME [--out-of-tree DIR]";
    let (name, out) = match args {
        [name] => (name, None),
        [name, flag, dir] if flag == "--out-of-tree" => (name, Some(PathBuf::from(dir))),
        _ => bail!("{usage}"),
    };
    let names = Names::new(name)?;
    let root = root
        .canonicalize()
        .with_context(|| format!("cannot find the repository at {}", root.display()))?;
    let root = root.as_path();
    match out {
        None => in_tree(root, &names),
        Some(dir) => out_of_tree(root, &names, &dir),
    }
}

/// The spellings of a family's name.
struct Names {
    /// `my-net`: the family's name in pipelines.
    name: String,
    /// `MyNet`: the prefix of its types.
    camel: String,
}

impl Names {
    fn new(name: &str) -> anyhow::Result<Names> {
        let valid = name.starts_with(|c: char| c.is_ascii_lowercase())
            && !name.ends_with('-')
            && !name.contains("--")
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !valid {
            bail!(
                "`{name}` is not a family name: use lowercase letters, digits and single dashes, starting with a letter (such as `my-net`)"
            );
        }
        let camel = name
            .split('-')
            .map(|part| {
                let mut chars = part.chars();
                chars.next().map_or_else(String::new, |first| {
                    first.to_ascii_uppercase().to_string() + chars.as_str()
                })
            })
            .collect();
        Ok(Names {
            name: name.to_owned(),
            camel,
        })
    }

    fn snake(&self) -> String {
        self.name.replace('-', "_")
    }
}

/// The family's source: `prelude` brings the crates in (directly in-tree, through the SDK out
/// of tree), `register` is the `backbone_family!` path, `export` what follows it.
fn lib_rs(n: &Names, prelude: &str, register: &str, export: &str, backend_test: &str) -> String {
    let (name, camel) = (&n.name, &n.camel);
    format!(
        r#"//! The `{name}` network family: pixel classification with a small head over the stride-4
//! features of one of autodl's shared backbones, scaffolded by `cargo xtask new-family`.
//! Replace the network with your own; the training loop, validation, packages and prediction
//! come from autodl's shared code through `backbone_family!`.

{prelude}
use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

/// The `{name}` network: a 3x3 convolution block of `head-width` channels over the
/// backbone's stride-4 features, then a classifier, upsampled to the input size.
#[derive(Module, Debug)]
pub struct {camel}Net<B: Backend> {{
    backbone: Backbone<B>,
    mix: ConvBnRelu<B>,
    head: Conv2d<B>,
}}

impl<B: Backend> {camel}Net<B> {{
    /// Builds the head on `backbone`.
    pub fn new(backbone: Backbone<B>, classes: usize, width: usize, device: &B::Device) -> Self {{
        let [c4, _, _, _] = backbone.channels();
        {camel}Net {{
            mix: ConvBnRelu::new(c4, width, 3, 1, device),
            head: classifier(width, classes, device),
            backbone,
        }}
    }}
}}

impl<B: Backend> SegNet<B> for {camel}Net<B> {{
    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {{
        let [_, _, h, w] = x.dims();
        let [f4, _, _, _] = self.backbone.features(x);
        resize(kernels::conv2d(&self.head, self.mix.forward(f4)), h, w)
    }}
}}

/// The default of `head-width`.
const HEAD_WIDTH: i64 = 32;

/// The family's own parameters: `autodl check` checks a pipeline's `[params.{name}]`
/// against them and advanced mode tunes those with a range.
fn params() -> Vec<ParamDecl> {{
    vec![
        ParamDecl::fixed(
            "head-width",
            "channels of the head's convolution block",
            ParamKind::Integer {{
                min: 8,
                max: 256,
                default: HEAD_WIDTH,
            }},
        )
        .tuned(Dimension::Uniform {{
            low: 16.0,
            high: 64.0,
        }}),
    ]
}}

fn build<B: Backend>(
    backbone: Backbone<B>,
    classes: usize,
    params: &Params,
    device: &B::Device,
) -> {camel}Net<B> {{
    // The planner hands the family its declared parameters checked and complete.
    let width = params
        .number("head-width")
        .map_or(HEAD_WIDTH as usize, |w| w as usize);
    {camel}Net::new(backbone, classes, width, device)
}}

{register}!(
    /// The `{name}` network family.
    {camel}Family, "{name}", {camel}Net, build, default_lr = 1e-3, params = params()
);
{export}
#[cfg(test)]
mod tests {{
    use super::*;
    use {backend_test}::{{Autodiff, Flex}};

    #[test]
    fn logits_have_the_input_size_for_any_band_count() {{
        type B = Autodiff<Flex>;
        let device = Default::default();
        for bands in [1, 3, 6] {{
            let backbone = {nets}::backboned::backbone::<B>("mobilenetv2", bands, false, &device)
                .expect("a backbone");
            let net = {camel}Net::new(backbone, 4, 16, &device);
            let out = net.forward(Tensor::zeros([2, bands, 32, 48], &device));
            assert_eq!(out.dims(), [2, 4, 32, 48]);
        }}
    }}
}}
"#,
        nets = if register.starts_with("autodl_plugin_sdk") {
            "autodl_plugin_sdk::nets"
        } else {
            "autodl_nets"
        },
    )
}

fn readme(n: &Names, build: &str, use_it: &str) -> String {
    let name = &n.name;
    format!(
        r#"# {name}

A pixel-classification network family for autodl, scaffolded by `cargo xtask new-family`: a
3x3 convolution block of `head-width` channels over a shared backbone's stride-4 features, and
a classifier upsampled to the input size. Everything else (batch deduction, the learning-rate
finder, epochs within the time budget, validation, packages, prediction) is autodl's shared
training loop, reached through `backbone_family!`.

## Build

{build}

## Use

{use_it}

## Parameters

`[params.{name}]` in a pipeline:

- `head-width`: channels of the head's convolution block, a whole number from 8 to 256
  (default 32; advanced mode tunes it from 16 to 64).
"#
    )
}

fn pipeline(n: &Names, plugins_line: &str, data: &str) -> String {
    let name = &n.name;
    format!(
        r#"# Trains the `{name}` family on the example land-cover tiles.
version = 1
name = "{name}"
{plugins_line}
[data]
path = "{data}"

[train]
time-limit = "5m"
networks = ["{name}"]

[params.{name}]
head-width = 32
"#
    )
}

fn write_new(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!("xtask: wrote {}", path.display());
    Ok(())
}

/// Formats a generated source file as `cargo fmt` would (best effort: without rustfmt the file
/// stays as written, which compiles the same).
fn format(path: &Path) {
    let formatted = std::process::Command::new("rustfmt")
        .args(["--edition", "2024"])
        .arg(path)
        .status()
        .is_ok_and(|s| s.success());
    if !formatted {
        eprintln!("xtask: could not run rustfmt on {}", path.display());
    }
}

fn in_tree(root: &Path, n: &Names) -> anyhow::Result<()> {
    let dir = root.join("plugins").join(&n.name);
    if dir.exists() {
        bail!("{} exists already", dir.display());
    }
    let krate = format!("autodl-{}", n.name);
    let root_toml = root.join("Cargo.toml");
    let cli_toml = root.join("crates/cli/Cargo.toml");
    let main_rs = root.join("crates/cli/src/main.rs");
    let read = |p: &Path| {
        std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))
    };
    let (root_text, cli_text, main_text) = (read(&root_toml)?, read(&cli_toml)?, read(&main_rs)?);
    if root_text.contains(&format!("\n{krate} = ")) {
        bail!("the workspace already has a dependency `{krate}`");
    }
    // Each edit is prepared before anything is written, so a failure leaves the tree alone.
    let root_text = insert_after(
        &root_text,
        "autodl-backbones = { path = \"plugins/backbones\" }\n",
        &format!("{krate} = {{ path = \"plugins/{}\" }}\n", n.name),
        &root_toml,
    )?;
    let cli_text = insert_after(
        &cli_text,
        "# Plugins: named here so the linker keeps their registrations.\n",
        &format!("{krate}.workspace = true\n"),
        &cli_toml,
    )?;
    let main_text = add_use(
        &main_text,
        &format!("use autodl_{} as _;", n.snake()),
        &main_rs,
    )?;

    write_new(
        &dir.join("Cargo.toml"),
        &format!(
            r#"[package]
name = "{krate}"
version.workspace = true
edition.workspace = true
license.workspace = true
rust-version.workspace = true
description = "The {name} pixel-classification network family for autodl"

[lints]
workspace = true

[dependencies]
burn.workspace = true
autodl-api.workspace = true
autodl-backbones.workspace = true
autodl-backend.workspace = true
autodl-train.workspace = true
autodl-nets.workspace = true

[dev-dependencies]
# Tests run the network on the CPU backend; the library itself enables no backend.
autodl-backend = {{ workspace = true, features = ["flex"] }}
"#,
            name = n.name
        ),
    )?;
    let prelude = "use autodl_api::{Dimension, ParamDecl, ParamKind, Params, ParamsExt};
use autodl_backbones::Backbone;
use autodl_backend::kernels;
use autodl_nets::layers::{ConvBnRelu, classifier, resize};
use autodl_train::seg::SegNet;";
    write_new(
        &dir.join("src/lib.rs"),
        &lib_rs(
            n,
            prelude,
            "autodl_nets::backbone_family",
            "",
            "burn::backend",
        ),
    )?;
    format(&dir.join("src/lib.rs"));
    write_new(
        &dir.join("README.md"),
        &readme(
            n,
            &format!(
                "It is a crate of the workspace, linked into `autodl` (`crates/cli`):\n`cargo build -p autodl-cli`, and `cargo test -p {krate}` for its test."
            ),
            &format!(
                "`autodl train plugins/{0}/pipeline.toml`, or `autodl train DIR --networks {0}`;\n`autodl plugins` lists it with its parameters.",
                n.name
            ),
        ),
    )?;
    write_new(
        &dir.join("pipeline.toml"),
        &pipeline(n, "", "../../examples/data/nc_landcover"),
    )?;
    for (path, text) in [
        (&root_toml, root_text),
        (&cli_toml, cli_text),
        (&main_rs, main_text),
    ] {
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("xtask: added {krate} to {}", path.display());
    }
    Ok(())
}

fn insert_after(text: &str, anchor: &str, line: &str, file: &Path) -> anyhow::Result<String> {
    let at = text
        .find(anchor)
        .with_context(|| format!("{}: cannot find `{}`", file.display(), anchor.trim()))?
        + anchor.len();
    Ok(format!("{}{line}{}", &text[..at], &text[at..]))
}

/// Adds `line` to the block of `use autodl_... as _;` lines, in rustfmt's order.
fn add_use(text: &str, line: &str, file: &Path) -> anyhow::Result<String> {
    let lines: Vec<&str> = text.lines().collect();
    let is_keep = |l: &str| l.starts_with("use autodl_") && l.ends_with(" as _;");
    let first = lines
        .iter()
        .position(|l| is_keep(l))
        .with_context(|| format!("{}: no `use autodl_... as _;` lines", file.display()))?;
    let count = lines[first..].iter().take_while(|l| is_keep(l)).count();
    let mut block: BTreeSet<&str> = lines[first..first + count].iter().copied().collect();
    block.insert(line);
    let mut out: Vec<&str> = lines[..first].to_vec();
    out.extend(block);
    out.extend(&lines[first + count..]);
    Ok(out.join("\n") + "\n")
}

/// The workspace's crates by package name, with their folders, from `[workspace.dependencies]`.
fn workspace_crates(root_text: &str) -> Vec<(String, String)> {
    root_text
        .lines()
        .filter_map(|l| {
            let (name, rest) = l.split_once(" = { path = \"")?;
            let path = rest.split('"').next()?;
            name.starts_with("autodl-")
                .then(|| (name.to_owned(), path.to_owned()))
        })
        .collect()
}

/// The workspace crates `start` depends on, itself included, following their
/// `[dependencies]`.
fn closure(
    root: &Path,
    crates: &[(String, String)],
    start: &str,
) -> anyhow::Result<BTreeSet<String>> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![start.to_owned()];
    while let Some(name) = todo.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        let Some((_, dir)) = crates.iter().find(|(n, _)| *n == name) else {
            bail!("`{name}` is not in [workspace.dependencies]");
        };
        let manifest = root.join(dir).join("Cargo.toml");
        let text = std::fs::read_to_string(&manifest)
            .with_context(|| format!("cannot read {}", manifest.display()))?;
        let mut in_deps = false;
        for line in text.lines() {
            if line.starts_with('[') {
                in_deps = line.trim() == "[dependencies]";
            } else if in_deps
                && let Some(dep) = line.split(['.', ' ', '=']).next()
                && dep.starts_with("autodl-")
            {
                todo.push(dep.to_owned());
            }
        }
    }
    Ok(seen)
}

/// The profile sections of the plugin project: the workspace's own, and for each workspace
/// crate the plugin compiles, the settings it has as a workspace member (a path dependency
/// outside its workspace would get `[profile.dev.package."*"]`'s, a different build).
fn profiles(root_text: &str, members: &BTreeSet<String>) -> String {
    // Each section with the comment lines just above its header.
    let mut sections: Vec<(String, Vec<String>)> = Vec::new();
    let mut comments: Vec<String> = Vec::new();
    for line in root_text.lines() {
        if line.starts_with('[') {
            let mut header = comments.join("\n");
            if !header.is_empty() {
                header.push('\n');
            }
            sections.push((header + line, Vec::new()));
            comments.clear();
        } else if line.starts_with('#') {
            comments.push(line.to_owned());
        } else if let Some((_, body)) = sections.last_mut() {
            body.append(&mut comments);
            body.push(line.to_owned());
        }
    }
    let mut out = String::new();
    for (header, body) in &sections {
        if header
            .lines()
            .last()
            .is_some_and(|h| h.starts_with("[profile."))
        {
            out += &format!("{header}\n{}\n\n", body.join("\n").trim());
        }
    }
    for member in members {
        let header = format!("[profile.dev.package.{member}]");
        if !sections.iter().any(|(h, _)| h.ends_with(&header)) {
            out += &format!(
                "{header}\nopt-level = 1\ndebug-assertions = true\noverflow-checks = true\n\n"
            );
        }
    }
    out
}

fn out_of_tree(root: &Path, n: &Names, dir: &Path) -> anyhow::Result<()> {
    if dir.read_dir().is_ok_and(|mut d| d.next().is_some()) {
        bail!("{} exists and is not empty", dir.display());
    }
    let root_text = std::fs::read_to_string(root.join("Cargo.toml"))
        .context("cannot read the workspace's Cargo.toml")?;
    let crates = workspace_crates(&root_text);
    let members = closure(root, &crates, "autodl-plugin-sdk")?;
    let krate = format!("autodl-plugin-{}", n.name);
    let lib = format!(
        "lib{}{}",
        krate.replace('-', "_"),
        std::env::consts::DLL_SUFFIX
    );
    let sdk = root.join("crates/plugin-sdk");
    write_new(
        &dir.join("Cargo.toml"),
        &format!(
            r#"[package]
name = "{krate}"
version = "0.1.0"
edition = "2024"
publish = false
description = "The {name} network family, an autodl plugin library"

[lib]
crate-type = ["cdylib"]

[dependencies]
# `flex`: the library trains and predicts on the CPU; add "cuda" for NVIDIA GPUs.
autodl-plugin-sdk = {{ path = {sdk:?}, features = ["flex"] }}

# A project of its own, wherever it lies.
[workspace]

# autodl's profile, and its crates built as autodl builds them: with autodl's Cargo.lock
# beside this file, a build sharing autodl's target folder (CARGO_TARGET_DIR) reuses what
# autodl compiled (Burn first) instead of compiling it again.
{profiles}"#,
            name = n.name,
            sdk = sdk.display().to_string(),
            profiles = profiles(&root_text, &members),
        ),
    )?;
    std::fs::copy(root.join("Cargo.lock"), dir.join("Cargo.lock"))
        .with_context(|| format!("cannot copy Cargo.lock into {}", dir.display()))?;
    let prelude =
        "use autodl_plugin_sdk::api::{Dimension, ParamDecl, ParamKind, Params, ParamsExt};
use autodl_plugin_sdk::backbones::Backbone;
use autodl_plugin_sdk::backend::kernels;
// Burn's derives name `burn::...`.
use autodl_plugin_sdk::burn;
use autodl_plugin_sdk::nets::layers::{ConvBnRelu, classifier, resize};
use autodl_plugin_sdk::train::seg::SegNet;";
    write_new(
        &dir.join("src/lib.rs"),
        &lib_rs(
            n,
            prelude,
            "autodl_plugin_sdk::backbone_family",
            &format!(
                "\n// The library's C entry point, `autodl_plugin_v1`, through which autodl loads the family.\nautodl_plugin_sdk::export_family!({}Family);\n",
                n.camel
            ),
            "burn::backend",
        ),
    )?;
    format(&dir.join("src/lib.rs"));
    write_new(
        &dir.join("README.md"),
        &readme(
            n,
            &format!(
                "`cargo build` gives the plugin library `target/debug/{lib}` (with\n`CARGO_TARGET_DIR=<autodl's target folder>`, under that folder instead, reusing what autodl\ncompiled). It depends on autodl's `autodl-plugin-sdk` by path ({}); rebuild it when autodl\nchanges: a library built for another plugin ABI version is refused.",
                sdk.display()
            ),
            &format!(
                "`autodl train pipeline.toml` (its `plugins` names the library), or\n`autodl train DIR --networks {0} --plugin target/debug/{lib}`; `autodl plugins --plugin\ntarget/debug/{lib}` lists it with its parameters, and `autodl predict --plugin ...` runs\nits packages. A folder named in `AUTODL_PLUGIN_PATH` has its libraries loaded by default.",
                n.name
            ),
        ),
    )?;
    write_new(
        &dir.join("pipeline.toml"),
        &pipeline(
            n,
            &format!("plugins = [\"target/debug/{lib}\"]   # relative to this file\n"),
            &root
                .join("examples/data/nc_landcover")
                .display()
                .to_string(),
        ),
    )?;
    write_new(&dir.join(".gitignore"), "/target\n")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_spelt() {
        assert!(Names::new("My-net").is_err());
        assert!(Names::new("my--net").is_err());
        assert!(Names::new("net-").is_err());
        assert!(Names::new("9net").is_err());
        let n = Names::new("my-net2").expect("valid");
        assert_eq!(
            (n.camel.as_str(), n.snake().as_str()),
            ("MyNet2", "my_net2")
        );
    }

    #[test]
    fn a_use_line_goes_into_the_block_in_order() {
        let text = "//! x\n\nuse autodl_a as _;\nuse autodl_c as _;\n\nfn main() {}\n";
        let out = add_use(text, "use autodl_b as _;", Path::new("main.rs")).expect("a block");
        assert_eq!(
            out,
            "//! x\n\nuse autodl_a as _;\nuse autodl_b as _;\nuse autodl_c as _;\n\nfn main() {}\n"
        );
    }

    /// `cargo tree` of the project in `dir`: one `package features` line per package.
    fn tree(dir: &Path, args: &[&str]) -> BTreeSet<String> {
        let out = crate::cargo_cmd()
            .current_dir(dir)
            .args(["tree", "-q", "--prefix", "none", "-f", "{p} {f}"])
            .args(args)
            .output()
            .expect("cargo tree runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.trim_end_matches(" (*)").to_owned())
            .collect()
    }

    #[test]
    fn a_plugin_compiles_its_dependencies_with_autodl_s_features() {
        let root = crate::root().canonicalize().expect("the repository");
        let dir = std::env::temp_dir().join(format!("autodl-new-family-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        out_of_tree(&root, &Names::new("probe").expect("valid"), &dir).expect("scaffolded");
        // What `cargo test --workspace` (CI) compiles, and what the plugin compiles.
        let autodl = tree(
            &root,
            &[
                "--workspace",
                "--exclude",
                "xtask",
                "-e",
                "normal,build,dev",
            ],
        );
        let plugin = tree(&dir, &["-e", "normal,build"]);
        let _ = std::fs::remove_dir_all(&dir);
        let rebuilt: Vec<&String> = plugin
            .difference(&autodl)
            .filter(|l| !l.starts_with("autodl-plugin-"))
            .collect();
        assert!(
            rebuilt.is_empty(),
            "a plugin would compile these with other features (or versions) than autodl, and everything above them again, Burn included; give crates/plugin-sdk the dependencies that turn the same features on:\n{rebuilt:#?}"
        );
    }

    #[test]
    fn the_sdk_closure_and_profiles_cover_the_crates_a_plugin_compiles() {
        let root = crate::root();
        let text = std::fs::read_to_string(root.join("Cargo.toml")).expect("Cargo.toml");
        let members =
            closure(&root, &workspace_crates(&text), "autodl-plugin-sdk").expect("closure");
        for krate in [
            "autodl-plugin-sdk",
            "autodl-plugin-abi",
            "autodl-api",
            "autodl-train",
            "autodl-augment",
        ] {
            assert!(members.contains(krate), "{krate} missing from {members:?}");
        }
        assert!(!members.contains("autodl-cli"));
        let p = profiles(&text, &members);
        assert!(
            p.contains("[profile.dev.package.autodl-train]\nopt-level = 1\n"),
            "{p}"
        );
        // The workspace's own section for augment, not a second one.
        assert_eq!(
            p.matches("[profile.dev.package.autodl-augment]").count(),
            1,
            "{p}"
        );
    }
}
