//! `cargo xtask tidy`: the architecture invariants of `ARCHITECTURE.md` that a text scan can
//! check, in the manner of rust-analyzer's `xtask/src/tidy.rs`.
//!
//! 1. `crates/core` and `crates/train` name no plugin: no plugin crate (`autodl-unet`,
//!    `autodl_unet`) in their sources or manifests, no registered family, tuner, deducer or
//!    evaluator name as a string literal in their sources.
//! 2. No library crate enables a Burn backend: no backend feature on `burn` or `autodl-backend`,
//!    no backend crate as a plain dependency, none in a `default` feature. Only the binaries
//!    ([`BINARIES`]) and dev-dependencies (tests, examples, benches) may.
//! 3. No boundary file is read as an untyped JSON value: `serde_json::Value` appears outside
//!    tests only in the commented [`UNTYPED_JSON_ALLOWED`] files.
//! 4. Every workspace crate inherits the workspace lints (`[lints] workspace = true`: missing
//!    docs and `unwrap` are errors under `clippy -D warnings`) and every crate root opens with a
//!    `//!` comment saying what the crate is for.
//!
//! The checks are plain string scans of the tree (no parser, no dependency), so they are
//! approximate by design: lines that are comments are skipped, and everything after a file's
//! first `#[cfg(test)]` counts as test code.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::Context;

/// One broken invariant, at a file and line (1-based; 0 when it is about the whole file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The file, relative to the checked root, with `/` separators.
    pub file: String,
    /// The line.
    pub line: usize,
    /// What is wrong, and what to do instead.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.message)
    }
}

/// Crates that must name no plugin (check 1).
const PLUGIN_FREE: [&str; 2] = ["crates/core", "crates/train"];

/// The binaries: the only crates that may enable a backend (check 2).
pub const BINARIES: [&str; 2] = ["crates/cli", "xtask"];

/// Burn features that select a backend (check 2).
const BURN_BACKEND_FEATURES: [&str; 16] = [
    "flex",
    "ndarray",
    "cuda",
    "rocm",
    "hip",
    "wgpu",
    "vulkan",
    "webgpu",
    "metal",
    "tch",
    "candle",
    "candle-cpu",
    "candle-cuda",
    "candle-metal",
    "cpu",
    "remote",
];

/// `autodl-backend`'s features that compile a backend in (check 2).
const AUTODL_BACKEND_FEATURES: [&str; 2] = ["flex", "cuda"];

/// Burn's backend crates, which a library may depend on only optionally (check 2).
const BURN_BACKEND_CRATES: [&str; 9] = [
    "burn-flex",
    "burn-ndarray",
    "burn-cuda",
    "burn-rocm",
    "burn-wgpu",
    "burn-tch",
    "burn-candle",
    "burn-cpu",
    "burn-remote",
];

/// Plugin names that a plugin-free crate still uses today: `(folder prefix, name)`. Each entry
/// must match something, so a fixed violation must leave the list too.
pub const PLUGIN_NAMES_ALLOWED: &[(&str, &str)] = &[];

/// Files that may use `serde_json::Value` outside tests: none of them reads one of our own
/// boundary files. Each entry must still use it.
pub const UNTYPED_JSON_ALLOWED: &[&str] = &[
    // COCO annotation files are a third-party format whose ids may be numbers or strings and
    // whose flags may be booleans or numbers: the reader walks the JSON itself and names every
    // bad field of every annotation.
    "crates/data/src/coco.rs",
    // Builds the ArcGIS `.emd` a package carries, from the typed `model.json` and
    // `metrics.json`; autodl writes it and never reads it back.
    "crates/package/src/lib.rs",
];

/// The allowlists a check runs with: the real ones ([`check`]) or a test's.
#[derive(Debug, Clone, Copy)]
pub struct Allowed<'a> {
    /// See [`PLUGIN_NAMES_ALLOWED`].
    pub plugin_names: &'a [(&'a str, &'a str)],
    /// See [`UNTYPED_JSON_ALLOWED`].
    pub untyped_json: &'a [&'a str],
}

/// Every violation in the tree at `root`, with the repository's allowlists.
pub fn check(root: &Path) -> anyhow::Result<Vec<Violation>> {
    check_with(
        root,
        Allowed {
            plugin_names: PLUGIN_NAMES_ALLOWED,
            untyped_json: UNTYPED_JSON_ALLOWED,
        },
    )
}

/// Every violation in the tree at `root`, with the given allowlists.
pub fn check_with(root: &Path, allowed: Allowed<'_>) -> anyhow::Result<Vec<Violation>> {
    let members = members(root)?;
    let mut out = Vec::new();
    plugin_names(root, allowed.plugin_names, &mut out)?;
    backend_features(root, &members, &mut out)?;
    untyped_json(root, allowed.untyped_json, &mut out)?;
    lints_and_docs(root, &members, &mut out)?;
    Ok(out)
}

/// `cargo xtask tidy`: prints every violation; an error when there is one.
pub fn run(root: &Path) -> anyhow::Result<()> {
    let violations = check(root)?;
    if violations.is_empty() {
        eprintln!("xtask: tidy: every invariant holds");
        return Ok(());
    }
    for v in &violations {
        eprintln!("{v}");
    }
    anyhow::bail!(
        "tidy: {} violation(s) of the invariants in ARCHITECTURE.md (see above)",
        violations.len()
    )
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// `path` relative to `root`, with `/` separators.
fn rel(root: &Path, path: &Path) -> String {
    let p = path.strip_prefix(root).unwrap_or(path);
    p.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// Every file under `dir` whose name ends with `suffix`, sorted, skipping `target` and hidden
/// folders.
fn files(dir: &Path, suffix: &str) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    if !dir.is_dir() {
        return Ok(out);
    }
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in
            std::fs::read_dir(&d).with_context(|| format!("cannot list {}", d.display()))?
        {
            let path = entry
                .with_context(|| format!("cannot list {}", d.display()))?
                .path();
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if path.is_dir() {
                if name != "target" && !name.starts_with('.') {
                    stack.push(path);
                }
            } else if name.ends_with(suffix) {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The quoted strings of `text`, in order.
fn strings(text: &str) -> Vec<&str> {
    text.split('"').skip(1).step_by(2).collect()
}

/// The workspace members' folders, from the root manifest's `members` globs (`dir/*` or `dir`).
fn members(root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let manifest = read(&root.join("Cargo.toml"))?;
    let Some(list) = logical_lines(&manifest)
        .into_iter()
        .find(|(_, l)| l.trim_start().starts_with("members"))
    else {
        anyhow::bail!(
            "{}: no workspace `members`",
            root.join("Cargo.toml").display()
        );
    };
    let mut out = Vec::new();
    for pattern in strings(&list.1) {
        if let Some(dir) = pattern.strip_suffix("/*") {
            let dir = root.join(dir);
            let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
                .with_context(|| format!("cannot list {}", dir.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.join("Cargo.toml").is_file())
                .collect();
            found.sort();
            out.extend(found);
        } else {
            out.push(root.join(pattern));
        }
    }
    Ok(out)
}

/// The lines of a TOML file with arrays and inline tables spread over several lines joined
/// into one, each with its first line's number; comments removed.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out: Vec<(usize, String)> = Vec::new();
    let mut depth = 0i32;
    for (i, raw) in text.lines().enumerate() {
        // A `#` inside a string is rare in our manifests; cutting at the first one is enough.
        let line = raw.split('#').next().unwrap_or("");
        let opens = line.matches(['[', '{']).count() as i32;
        let closes = line.matches([']', '}']).count() as i32;
        match out.last_mut() {
            Some(last) if depth > 0 => {
                last.1.push(' ');
                last.1.push_str(line.trim());
            }
            _ => out.push((i + 1, line.to_owned())),
        }
        depth = (depth + opens - closes).max(0);
    }
    out
}

/// Whether `line` holds `needle` as a whole name (not inside a longer identifier or crate name).
fn has_name(line: &str, needle: &str) -> bool {
    let part = |c: char| c.is_alphanumeric() || c == '_' || c == '-';
    line.match_indices(needle).any(|(i, _)| {
        let before = line[..i].chars().next_back();
        let after = line[i + needle.len()..].chars().next();
        !before.is_some_and(part) && !after.is_some_and(part)
    })
}

fn is_comment(line: &str) -> bool {
    let t = line.trim_start();
    t.starts_with("//") || t.starts_with('#') && !t.starts_with("#[") && !t.starts_with("#!")
}

/// The package name in a crate manifest.
fn package_name(manifest: &str) -> Option<String> {
    let mut in_package = false;
    for line in manifest.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            in_package = t == "[package]";
        } else if in_package
            && let Some(rest) = t.strip_prefix("name")
            && rest.trim_start().starts_with('=')
        {
            return strings(rest).first().map(|s| (*s).to_owned());
        }
    }
    None
}

/// The names plugins register: the literal given to a `*_family!` macro, and the literal an
/// `impl NetworkFamily | Tuner | BatchDeducer | Evaluator` returns from `fn name`.
fn registered_names(source: &str) -> Vec<String> {
    let mut out = Vec::new();
    let code: String = source
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    for (i, _) in code.match_indices("_family!(") {
        if let Some(name) = strings(&code[i..]).first() {
            out.push((*name).to_owned());
        }
    }
    for t in ["NetworkFamily", "Tuner", "BatchDeducer", "Evaluator"] {
        for (i, _) in code.match_indices(&format!("impl {t} for ")) {
            let rest = &code[i..];
            if let Some(at) = rest.find("fn name(&self)")
                && let Some(name) = strings(&rest[at..]).first()
            {
                out.push((*name).to_owned());
            }
        }
    }
    out
}

/// Check 1: no plugin crate or registered name in the plugin-free crates.
fn plugin_names(
    root: &Path,
    allowed: &[(&str, &str)],
    out: &mut Vec<Violation>,
) -> anyhow::Result<()> {
    let mut crates = Vec::new();
    let mut names = Vec::new();
    for manifest in files(&root.join("plugins"), "Cargo.toml")? {
        if let Some(name) = package_name(&read(&manifest)?) {
            crates.push(name.replace('_', "-"));
            crates.push(name.replace('-', "_"));
        }
        if let Some(dir) = manifest.parent() {
            for source in files(&dir.join("src"), ".rs")? {
                names.extend(registered_names(&read(&source)?));
            }
        }
    }
    names.sort();
    names.dedup();
    let mut used = vec![false; allowed.len()];
    for krate in PLUGIN_FREE {
        let mut scanned = files(&root.join(krate), ".rs")?;
        scanned.push(root.join(krate).join("Cargo.toml"));
        for path in scanned.iter().filter(|p| p.is_file()) {
            let file = rel(root, path);
            for (i, line) in read(path)?.lines().enumerate() {
                if is_comment(line) {
                    continue;
                }
                let crate_hits = crates.iter().filter(|c| has_name(line, c));
                let name_hits = names.iter().filter(|n| line.contains(&format!("\"{n}\"")));
                for (hit, what) in crate_hits
                    .map(|c| (c, "the plugin crate"))
                    .chain(name_hits.map(|n| (n, "the registered plugin name")))
                {
                    if let Some(k) = allowed
                        .iter()
                        .position(|(prefix, name)| file.starts_with(prefix) && name == hit)
                    {
                        used[k] = true;
                        continue;
                    }
                    out.push(Violation {
                        file: file.clone(),
                        line: i + 1,
                        message: format!(
                            "{krate} names {what} `{hit}`: the core finds plugins through the registry by a name the pipeline gives"
                        ),
                    });
                }
            }
        }
    }
    for ((prefix, name), used) in allowed.iter().zip(used) {
        if !used {
            out.push(Violation {
                file: "xtask/src/tidy.rs".into(),
                line: 0,
                message: format!(
                    "`({prefix:?}, {name:?})` in PLUGIN_NAMES_ALLOWED matches nothing any more: remove it"
                ),
            });
        }
    }
    Ok(())
}

/// Whether a manifest section holds dependencies that build into the crate itself (not
/// dev-dependencies, which only tests, examples and benches see).
fn is_build_dependency_table(section: &str) -> bool {
    let last = section.rsplit('.').next().unwrap_or(section);
    let table = if section.starts_with("target.") {
        last
    } else {
        section.split('.').next().unwrap_or(section)
    };
    table == "dependencies" || table == "build-dependencies"
}

/// The backend a dependency line `key = value` (or a `[dependencies.key]` table's line)
/// enables, if any.
fn enabled_backend(key: &str, value: &str) -> Option<String> {
    let features = |v: &str| -> Vec<String> {
        v.find("features")
            .map(|i| &v[i..])
            .and_then(|v| Some(&v[v.find('[')?..=v.find(']')?]))
            .map(|list| strings(list).iter().map(|s| (*s).to_owned()).collect())
            .unwrap_or_default()
    };
    let bad: &[&str] = match key {
        "burn" => &BURN_BACKEND_FEATURES,
        "autodl-backend" => &AUTODL_BACKEND_FEATURES,
        k if BURN_BACKEND_CRATES.contains(&k) => {
            return (!value.replace(' ', "").contains("optional=true"))
                .then(|| format!("the backend crate `{k}` as a dependency that is not optional"));
        }
        _ => return None,
    };
    features(value)
        .into_iter()
        .find(|f| bad.contains(&f.as_str()))
        .map(|f| format!("`{key}`'s backend feature `{f}`"))
}

/// Whether a feature list entry (`burn/flex`, `dep:burn-cuda`) turns a backend on.
fn backend_feature_entry(entry: &str) -> bool {
    if let Some(dep) = entry.strip_prefix("dep:") {
        return BURN_BACKEND_CRATES.contains(&dep);
    }
    match entry.split_once('/') {
        Some((dep, f)) => match dep.trim_end_matches('?') {
            "burn" => BURN_BACKEND_FEATURES.contains(&f),
            "autodl-backend" => AUTODL_BACKEND_FEATURES.contains(&f),
            d => BURN_BACKEND_CRATES.contains(&d),
        },
        None => false,
    }
}

/// Check 2: no backend enabled by a library crate (nor by the workspace for every crate).
fn backend_features(
    root: &Path,
    members: &[PathBuf],
    out: &mut Vec<Violation>,
) -> anyhow::Result<()> {
    let root_manifest = root.join("Cargo.toml");
    let mut manifests = vec![(root_manifest, true)];
    for m in members {
        let dir = rel(root, m);
        if !BINARIES.contains(&dir.as_str()) {
            manifests.push((m.join("Cargo.toml"), false));
        }
    }
    for (path, is_root) in manifests {
        let file = rel(root, &path);
        let text = read(&path)?;
        let mut section = String::new();
        let mut features: Vec<(usize, String, Vec<String>)> = Vec::new();
        for (line, l) in logical_lines(&text) {
            let t = l.trim();
            if t.starts_with('[') {
                section = t.trim_matches(['[', ']']).trim().to_owned();
                continue;
            }
            let Some((key, value)) = t.split_once('=') else {
                continue;
            };
            let key = key.trim().trim_end_matches(".workspace").trim_matches('"');
            let deps = if is_root {
                section == "workspace.dependencies"
            } else {
                is_build_dependency_table(&section)
            };
            // A `[dependencies.burn]` table names its dependency in the header.
            let table = if is_root {
                section.strip_prefix("workspace.dependencies.")
            } else {
                section
                    .strip_prefix("dependencies.")
                    .or_else(|| section.strip_prefix("build-dependencies."))
            };
            let found = if let Some(dep) = table {
                if key == "features" {
                    enabled_backend(dep, t)
                } else {
                    None
                }
            } else if deps {
                enabled_backend(key, value)
            } else {
                if section == "features" {
                    let list = strings(value).iter().map(|s| (*s).to_owned()).collect();
                    features.push((line, key.to_owned(), list));
                }
                None
            };
            if let Some(what) = found {
                out.push(Violation {
                    file: file.clone(),
                    line,
                    message: format!(
                        "a library crate enables {what}: only the binaries ({}) choose backends",
                        BINARIES.join(", ")
                    ),
                });
            }
        }
        // The `default` feature, followed through the crate's own features.
        let Some((line, _, _)) = features.iter().find(|(_, k, _)| k == "default") else {
            continue;
        };
        let mut todo = vec!["default".to_owned()];
        let mut seen = Vec::new();
        let mut backend = None;
        while let Some(name) = todo.pop() {
            if seen.contains(&name) {
                continue;
            }
            seen.push(name.clone());
            let Some((_, _, list)) = features.iter().find(|(_, k, _)| *k == name) else {
                continue;
            };
            for entry in list {
                if backend_feature_entry(entry) {
                    backend.get_or_insert_with(|| entry.clone());
                } else if !entry.contains(['/', ':']) {
                    todo.push(entry.clone());
                }
            }
        }
        if let Some(entry) = backend {
            out.push(Violation {
                file: file.clone(),
                line: *line,
                message: format!(
                    "a library crate's default features enable the backend `{entry}`: only the binaries ({}) choose backends",
                    BINARIES.join(", ")
                ),
            });
        }
    }
    Ok(())
}

/// Check 3: `serde_json::Value` outside tests only in the allowed files.
fn untyped_json(root: &Path, allowed: &[&str], out: &mut Vec<Violation>) -> anyhow::Result<()> {
    // Spelt in two halves so that this file does not match itself.
    let value_path = concat!("serde_json", "::Value");
    let value_import = concat!("use serde_json", "::{");
    let mut used = vec![false; allowed.len()];
    for dir in ["crates", "plugins", "xtask"] {
        for path in files(&root.join(dir), ".rs")? {
            let file = rel(root, &path);
            let test_only = file
                .split('/')
                .any(|c| matches!(c, "tests" | "benches" | "examples"));
            if test_only {
                continue;
            }
            let text = read(&path)?;
            let mut import: Option<(usize, String)> = None;
            for (i, line) in text.lines().enumerate() {
                if line.trim_start().starts_with("#[cfg(test)]") {
                    break;
                }
                if is_comment(line) {
                    continue;
                }
                // A `use serde_json::{...}` may span lines: gather it whole.
                if line.trim_start().starts_with(value_import) {
                    import = Some((i + 1, String::new()));
                }
                let mut hit = line.contains(value_path).then_some(i + 1);
                if let Some((at, text)) = &mut import {
                    text.push_str(line);
                    if line.contains('}') {
                        if has_name(text, "Value") {
                            hit = Some(*at);
                        }
                        import = None;
                    }
                }
                let Some(line) = hit else {
                    continue;
                };
                if let Some(k) = allowed.iter().position(|a| *a == file) {
                    used[k] = true;
                    continue;
                }
                out.push(Violation {
                    file: file.clone(),
                    line,
                    message: format!(
                        "JSON read as an untyped `{value_path}`: give the file one serde type (boundary files in `autodl_api::contracts`), or add the file to UNTYPED_JSON_ALLOWED with a comment saying why"
                    ),
                });
            }
        }
    }
    for (file, used) in allowed.iter().zip(used) {
        if !used {
            out.push(Violation {
                file: "xtask/src/tidy.rs".into(),
                line: 0,
                message: format!(
                    "`{file}` in UNTYPED_JSON_ALLOWED no longer uses an untyped JSON value: remove it"
                ),
            });
        }
    }
    Ok(())
}

/// Check 4: workspace lints in every member, a `//!` comment atop every crate root.
fn lints_and_docs(
    root: &Path,
    members: &[PathBuf],
    out: &mut Vec<Violation>,
) -> anyhow::Result<()> {
    for m in members {
        let manifest = m.join("Cargo.toml");
        let text = read(&manifest)?;
        let mut section = String::new();
        let mut inherits = false;
        for (_, l) in logical_lines(&text) {
            let t = l.trim();
            if t.starts_with('[') {
                section = t.to_owned();
            } else if section == "[lints]" && t.replace(' ', "") == "workspace=true" {
                inherits = true;
            }
        }
        if !inherits {
            out.push(Violation {
                file: rel(root, &manifest),
                line: 0,
                message: "no `[lints] workspace = true`: the crate would escape the workspace lints (missing docs, unwrap)".into(),
            });
        }
        let mut roots: Vec<PathBuf> = ["src/lib.rs", "src/main.rs"]
            .iter()
            .map(|r| m.join(r))
            .filter(|p| p.is_file())
            .collect();
        roots.extend(files(&m.join("src/bin"), ".rs")?);
        for r in roots {
            let text = read(&r)?;
            let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
            if !first.starts_with("//!") {
                out.push(Violation {
                    file: rel(root, &r),
                    line: 1,
                    message: "the crate root does not open with a `//!` comment saying what the crate is for".into(),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONE: Allowed<'static> = Allowed {
        plugin_names: &[],
        untyped_json: &[],
    };

    /// A small workspace that keeps every invariant, in a fresh temporary folder.
    struct Tree(PathBuf);

    impl Tree {
        fn new(name: &str) -> Tree {
            let dir =
                std::env::temp_dir().join(format!("xtask-tidy-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            let tree = Tree(dir);
            tree.write(
                "Cargo.toml",
                "[workspace]\nmembers = [\"crates/*\", \"plugins/*\", \"xtask\"]\n\n[workspace.dependencies]\nburn = { version = \"=0.21.0\", default-features = false, features = [\"std\", \"autodiff\"] }\n",
            );
            for (dir, name, deps, root) in [
                (
                    "crates/api",
                    "autodl-api",
                    "serde_json.workspace = true\n",
                    "src/lib.rs",
                ),
                (
                    "crates/core",
                    "autodl-core",
                    "autodl-api.workspace = true\n",
                    "src/lib.rs",
                ),
                (
                    "crates/train",
                    "autodl-train",
                    "burn.workspace = true\nautodl-backend.workspace = true\n",
                    "src/lib.rs",
                ),
                (
                    "crates/backend",
                    "autodl-backend",
                    "burn.workspace = true\nburn-flex = { version = \"=0.21.0\", optional = true }\n\n[features]\nflex = [\"burn/flex\", \"dep:burn-flex\"]\ncuda = [\"burn/cuda\"]\n",
                    "src/lib.rs",
                ),
                (
                    "crates/cli",
                    "autodl-cli",
                    "autodl-backend.workspace = true\nautodl-unet.workspace = true\n\n[features]\ndefault = [\"flex\"]\nflex = [\"autodl-backend/flex\"]\n",
                    "src/main.rs",
                ),
                (
                    "plugins/unet",
                    "autodl-unet",
                    "autodl-train.workspace = true\n\n[dev-dependencies]\nautodl-backend = { workspace = true, features = [\"flex\"] }\n",
                    "src/lib.rs",
                ),
                (
                    "plugins/tuner-tpe",
                    "autodl-tuner-tpe",
                    "autodl-api.workspace = true\n",
                    "src/lib.rs",
                ),
                ("xtask", "xtask", "anyhow.workspace = true\n", "src/main.rs"),
            ] {
                tree.write(
                    &format!("{dir}/Cargo.toml"),
                    &format!("[package]\nname = \"{name}\"\nversion = \"0.1.0\"\n\n[lints]\nworkspace = true\n\n[dependencies]\n{deps}"),
                );
                tree.write(
                    &format!("{dir}/{root}"),
                    &format!("//! The {name} crate.\n"),
                );
            }
            tree.write(
                "plugins/unet/src/lib.rs",
                "//! U-Net.\n\nautodl_train::backbone_family!(\n    /// The U-Net network family.\n    UnetFamily, \"unet\", Unet, build, default_lr = 1e-3\n);\n",
            );
            tree.write(
                "plugins/tuner-tpe/src/lib.rs",
                "//! TPE.\n\nimpl Tuner for Tpe {\n    fn name(&self) -> &'static str {\n        \"tpe\"\n    }\n}\n",
            );
            tree.write(
                "crates/core/src/lib.rs",
                "//! Core.\n\npub fn pick(name: &str) { let _ = autodl_api::tuner(name); }\n\n#[cfg(test)]\nmod tests {\n    fn t() { let _: serde_json::Value = serde_json::json!({\"a\": 1}); }\n}\n",
            );
            tree
        }

        fn write(&self, path: &str, text: &str) {
            let path = self.0.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }

        fn append(&self, path: &str, text: &str) {
            let old = std::fs::read_to_string(self.0.join(path)).unwrap();
            self.write(path, &format!("{old}{text}"));
        }

        fn check(&self) -> Vec<Violation> {
            check_with(&self.0, NONE).unwrap()
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// The one violation of `tree`, which must be at `file:line` and mention `text`.
    fn only(tree: &Tree, file: &str, line: usize, text: &str) {
        let v = tree.check();
        assert_eq!(v.len(), 1, "{v:#?}");
        assert_eq!((v[0].file.as_str(), v[0].line), (file, line), "{}", v[0]);
        assert!(v[0].message.contains(text), "{}", v[0]);
    }

    #[test]
    fn a_tidy_tree_passes() {
        let tree = Tree::new("clean");
        assert_eq!(tree.check(), Vec::new());
    }

    #[test]
    fn the_repository_is_tidy() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let v = check(&root).unwrap();
        assert!(
            v.is_empty(),
            "{}",
            v.iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        );
    }

    #[test]
    fn a_plugin_name_in_the_core_fails() {
        let tree = Tree::new("plugin-name");
        tree.write(
            "crates/core/src/plan.rs",
            "//! Plans.\n\n// \"unet\" in a comment is fine.\npub fn family() -> &'static str {\n    \"unet\"\n}\n",
        );
        only(&tree, "crates/core/src/plan.rs", 5, "`unet`");

        let tree = Tree::new("plugin-tuner");
        tree.write(
            "crates/train/src/fit.rs",
            "fn t() { autodl_api::tuner(\"tpe\"); }\n",
        );
        only(&tree, "crates/train/src/fit.rs", 1, "`tpe`");

        let tree = Tree::new("plugin-crate");
        tree.append("crates/train/Cargo.toml", "autodl-unet.workspace = true\n");
        only(
            &tree,
            "crates/train/Cargo.toml",
            11,
            "plugin crate `autodl-unet`",
        );

        let tree = Tree::new("plugin-path");
        tree.write("crates/train/src/seg.rs", "use autodl_unet::Unet;\n");
        only(&tree, "crates/train/src/seg.rs", 1, "`autodl_unet`");
    }

    #[test]
    fn the_plugin_allowlist_passes_its_entries_and_flags_stale_ones() {
        let tree = Tree::new("plugin-allowed");
        tree.write("crates/train/src/seg.rs", "use autodl_unet::Unet;\n");
        let allowed = Allowed {
            plugin_names: &[("crates/train/", "autodl_unet")],
            untyped_json: &[],
        };
        assert_eq!(check_with(&tree.0, allowed).unwrap(), Vec::new());
        tree.write("crates/train/src/seg.rs", "//! Nothing.\n");
        let v = check_with(&tree.0, allowed).unwrap();
        assert_eq!(v.len(), 1, "{v:#?}");
        assert!(v[0].message.contains("remove it"), "{}", v[0]);
    }

    #[test]
    fn a_backend_feature_in_a_library_fails() {
        let tree = Tree::new("backend-burn");
        tree.write(
            "crates/train/Cargo.toml",
            "[package]\nname = \"autodl-train\"\n\n[lints]\nworkspace = true\n\n[dependencies]\nburn = { workspace = true, features = [\"ndarray\"] }\n",
        );
        only(
            &tree,
            "crates/train/Cargo.toml",
            8,
            "`burn`'s backend feature `ndarray`",
        );

        let tree = Tree::new("backend-autodl");
        tree.append(
            "plugins/tuner-tpe/Cargo.toml",
            "autodl-backend = { workspace = true, features = [\n    \"cuda\",\n] }\n",
        );
        only(
            &tree,
            "plugins/tuner-tpe/Cargo.toml",
            10,
            "`autodl-backend`'s backend feature `cuda`",
        );

        let tree = Tree::new("backend-default");
        tree.append(
            "crates/backend/Cargo.toml",
            "default = [\"fast\"]\nfast = [\"flex\"]\n",
        );
        only(&tree, "crates/backend/Cargo.toml", 15, "`burn/flex`");

        let tree = Tree::new("backend-crate");
        tree.append("crates/core/Cargo.toml", "burn-wgpu = \"0.21\"\n");
        only(&tree, "crates/core/Cargo.toml", 10, "`burn-wgpu`");

        let tree = Tree::new("backend-workspace");
        tree.write(
            "Cargo.toml",
            "[workspace]\nmembers = [\"crates/*\", \"plugins/*\", \"xtask\"]\n\n[workspace.dependencies]\nburn = { version = \"=0.21.0\", features = [\"std\", \"cuda\"] }\n",
        );
        only(&tree, "Cargo.toml", 5, "`cuda`");
    }

    #[test]
    fn an_untyped_json_value_fails() {
        let tree = Tree::new("json-path");
        tree.write(
            "crates/core/src/runner.rs",
            "//! Runner.\n\nfn read(t: &str) -> Option<u64> {\n    let v: serde_json::Value = serde_json::from_str(t).ok()?;\n    v.get(\"epoch\")?.as_u64()\n}\n",
        );
        only(&tree, "crates/core/src/runner.rs", 4, "untyped");

        let tree = Tree::new("json-import");
        tree.write(
            "plugins/tuner-tpe/src/history.rs",
            "use serde_json::{\n    Value, from_str,\n};\n",
        );
        only(&tree, "plugins/tuner-tpe/src/history.rs", 1, "untyped");

        // Tests may read JSON as they like.
        let tree = Tree::new("json-tests");
        tree.write(
            "crates/core/tests/run.rs",
            "fn t() { let _: serde_json::Value = serde_json::from_str(\"1\").unwrap(); }\n",
        );
        assert_eq!(tree.check(), Vec::new());
    }

    #[test]
    fn a_crate_without_workspace_lints_or_docs_fails() {
        let tree = Tree::new("lints");
        tree.write(
            "plugins/tuner-tpe/Cargo.toml",
            "[package]\nname = \"autodl-tuner-tpe\"\n\n[lints.rust]\nmissing_docs = \"allow\"\n",
        );
        only(
            &tree,
            "plugins/tuner-tpe/Cargo.toml",
            0,
            "[lints] workspace = true",
        );

        let tree = Tree::new("docs");
        tree.write(
            "crates/api/src/lib.rs",
            "/// Not a crate comment.\npub struct A;\n",
        );
        only(&tree, "crates/api/src/lib.rs", 1, "`//!`");
    }
}
