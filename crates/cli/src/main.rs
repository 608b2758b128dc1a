//! `autodl`: point it at a folder of labelled images; it trains, tunes and ranks networks.
//!
//! A thin binary over the library crates: it parses arguments, prints, owns the progress bars,
//! and maps outcomes to exit codes (0 success, 1 run failed, 2 usage or configuration error).

/// `println!` that ends the process quietly when stdout is a closed pipe (`autodl plugins |
/// head`), as Unix tools do, instead of panicking.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout(), $($arg)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
        }
    }};
}

mod bench;
mod commands;
mod ensemble;
mod evaluate;
mod progress;
mod report;
mod study;
mod weights;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

// The plugin crates register themselves; naming them keeps the linker from dropping them.
use autodl_augment as _;
use autodl_batch_throughput as _;
use autodl_deeplab as _;
use autodl_eval_boxes as _;
use autodl_eval_pixels as _;
use autodl_faster_rcnn as _;
use autodl_fcos as _;
use autodl_pspnet as _;
use autodl_retinanet as _;
use autodl_ssd as _;
use autodl_tuner_random as _;
use autodl_tuner_tpe as _;
use autodl_unet as _;
use autodl_yolov3 as _;

/// AutoDL for imagery: train, tune and rank detection and pixel-classification networks.
#[derive(Parser, Debug)]
#[command(name = "autodl", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Print nothing but errors and the final result.
    #[arg(long, short, global = true)]
    quiet: bool,
}

// Parsed once per process: the size of the largest subcommand's flags costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum Command {
    /// Validate a pipeline file without touching a device.
    Check {
        /// The pipeline TOML file.
        file: PathBuf,
    },
    /// Look at a dataset.
    Data {
        #[command(subcommand)]
        command: DataCommand,
    },
    /// Train, rank and keep networks for a dataset folder or a pipeline file.
    Train(Box<commands::TrainArgs>),
    /// Run a trained model on images.
    Predict(commands::PredictArgs),
    /// Score predictions against ground truth with the metrics training reports: boxes
    /// (COCO AP/AR, VOC AP50, ArcGIS AP at IoU 0.1, precision, recall and F1) or masks
    /// (confusion matrix, mIoU, accuracy, dice).
    Evaluate(evaluate::EvaluateArgs),
    /// List the compiled-in plugins and backends, and the network families of plugin
    /// libraries loaded with `--plugin` or from `AUTODL_PLUGIN_PATH`.
    Plugins(commands::PluginsArgs),
    /// Import pretrained backbone weights (torchvision or timm ImageNet checkpoints) and list
    /// the weights each backbone starts from.
    Weights {
        #[command(subcommand)]
        command: WeightsCommand,
    },
    /// Measure speed on this machine (`cargo xtask bench` runs these beside their Python
    /// baselines).
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
    /// Claim and train the trials of a study shared with other workers (started by
    /// `autodl train --study URL --workers N`, or on other machines: see deploy/).
    Worker(study::WorkerArgs),
    /// Run one trial from a JSON spec (used by `train`, one child process per trial).
    #[command(hide = true)]
    Trial {
        /// The trial spec written by the orchestrator.
        #[arg(long)]
        spec: PathBuf,
        /// A plugin library the orchestrator loaded, to load here too.
        #[arg(long)]
        plugin: Vec<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// Training-step throughput of the backbones and U-Net (images per second).
    Train(bench::BenchTrainArgs),
    /// Every family's training and inference throughput on each backend, augmentation and
    /// evaluation speed (`cargo xtask bench --suite ...` runs it beside the Python baselines).
    Families(bench::BenchFamiliesArgs),
}

#[derive(Subcommand, Debug)]
enum WeightsCommand {
    /// Convert a downloaded checkpoint into `<backbone>.safetensors` in the weights folder,
    /// so that the backbone starts pretrained and advanced mode tunes it.
    Import(weights::ImportArgs),
    /// Each backbone's weights file, or none (random initialisation).
    List,
}

#[derive(Subcommand, Debug)]
enum DataCommand {
    /// Report format, splits, classes, sizes and bad samples.
    Inspect(commands::InspectArgs),
    /// Draw samples with their boxes or masks (and augmented copies) into one PNG.
    Preview(commands::PreviewArgs),
}

/// An error with the exit code it maps to.
pub struct Failure {
    code: u8,
    error: anyhow::Error,
}

impl Failure {
    /// A usage or configuration error (exit code 2).
    pub fn usage(error: impl Into<anyhow::Error>) -> Self {
        Failure {
            code: 2,
            error: error.into(),
        }
    }
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(error: E) -> Self {
        Failure {
            code: 1,
            error: error.into(),
        }
    }
}

fn main() -> ExitCode {
    // Every subcommand that trains or predicts runs on this process or a child of it.
    autodl_backend::tune_allocator();
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Check { file } => commands::check(&file),
        Command::Data {
            command: DataCommand::Inspect(args),
        } => commands::inspect(&args, cli.quiet),
        Command::Data {
            command: DataCommand::Preview(args),
        } => commands::preview(&args),
        Command::Train(args) => commands::train(&args, cli.quiet),
        Command::Predict(args) => commands::predict(&args, cli.quiet),
        Command::Evaluate(args) => evaluate::evaluate(&args),
        Command::Plugins(args) => commands::plugins(&args),
        Command::Weights {
            command: WeightsCommand::Import(args),
        } => weights::import(&args, cli.quiet),
        Command::Weights {
            command: WeightsCommand::List,
        } => weights::list(),
        Command::Bench {
            command: BenchCommand::Train(args),
        } => bench::bench_train(&args),
        Command::Bench {
            command: BenchCommand::Families(args),
        } => bench::bench_families(&args),
        Command::Worker(args) => study::worker(&args, cli.quiet),
        Command::Trial { spec, plugin } => commands::trial(&spec, &plugin),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure { code, error }) => {
            eprintln!("error: {error:#}");
            ExitCode::from(code)
        }
    }
}
