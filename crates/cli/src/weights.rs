//! `autodl weights`: import a downloaded ImageNet checkpoint as a backbone's pretrained
//! weights, and list the weights each backbone would start from.

use std::path::PathBuf;

use anyhow::anyhow;
use autodl_backbones::{Arch, ImportError, NAMES, default_weights, weights_dir};
use autodl_backend::BackendChoice;

use crate::Failure;

type Outcome = Result<(), Failure>;

/// `autodl weights import`.
#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    /// The checkpoint: a torchvision or timm `.pth`/`.pt` (zip or legacy format) or a
    /// `.safetensors` file.
    file: PathBuf,
    /// The backbone it holds (default: told from its tensor names).
    #[arg(long)]
    backbone: Option<String>,
    /// The folder to write `<backbone>.safetensors` into (default: the weights folder,
    /// `$AUTODL_WEIGHTS_DIR`, else `$XDG_DATA_HOME/autodl/weights`, else
    /// `~/.local/share/autodl/weights`).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Replace weights already there.
    #[arg(long)]
    force: bool,
}

fn no_folder() -> Failure {
    Failure::usage(anyhow!(
        "no weights folder: set AUTODL_WEIGHTS_DIR or HOME, or pass --dir"
    ))
}

/// `autodl weights import`.
pub fn import(args: &ImportArgs, quiet: bool) -> Outcome {
    let backbone = args
        .backbone
        .as_deref()
        .map(str::parse::<Arch>)
        .transpose()
        .map_err(Failure::usage)?;
    let dir = match &args.dir {
        Some(dir) => dir.clone(),
        None => weights_dir().ok_or_else(no_folder)?,
    };
    let imported = autodl_backend::with_backend!(BackendChoice::Cpu, |B, device| {
        autodl_backbones::import_weights::<B>(&args.file, &dir, backbone, args.force, &device)
    })
    .map_err(Failure::usage)?;
    let imported = imported.map_err(|e| {
        let hint = match &e {
            ImportError::Exists { .. } => "; pass --force to replace it",
            ImportError::Unrecognised { .. } => "; pass --backbone NAME if it is one of them",
            _ => "",
        };
        let usage = e.is_usage();
        let error = anyhow!("{e}{hint}");
        if usage {
            Failure::usage(error)
        } else {
            Failure::from(error)
        }
    })?;
    if !quiet {
        outln!(
            "{} weights ({} naming, {} tensors, {:.1} M parameters{}) from {}",
            imported.backbone,
            imported.naming,
            imported.tensors,
            imported.parameters as f64 / 1e6,
            match imported.classes {
                Some(n) => format!(", a {n}-class classifier"),
                None => String::new(),
            },
            args.file.display()
        );
    }
    outln!("wrote {}", imported.path.display());
    let name = imported.backbone.name();
    if default_weights(name).as_deref() == Some(imported.path.as_path()) {
        if !quiet {
            outln!(
                "{name} now starts pretrained, and advanced mode tunes it (`autodl weights list`)"
            );
        }
    } else {
        outln!(
            "note: {name} does not load from there; set AUTODL_WEIGHTS_DIR={} to use it",
            dir.display()
        );
    }
    Ok(())
}

/// `autodl weights list`.
pub fn list() -> Outcome {
    match weights_dir() {
        Some(dir) => outln!("weights folder: {}", dir.display()),
        None => outln!("weights folder: none (set AUTODL_WEIGHTS_DIR or HOME)"),
    }
    let mut missing = false;
    for name in NAMES {
        match default_weights(name) {
            Some(path) => outln!("{name:<20} {}", path.display()),
            None => {
                missing = true;
                outln!("{name:<20} none — random init");
            }
        }
    }
    if missing {
        outln!(
            "import a torchvision or timm ImageNet checkpoint with `autodl weights import FILE`"
        );
    }
    Ok(())
}
