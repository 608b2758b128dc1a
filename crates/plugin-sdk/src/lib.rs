//! The SDK of out-of-tree network-family plugins: a family written exactly as an in-tree one
//! (a Burn network implementing `train::seg::SegNet` or `train::det::Detector`, declared with
//! [`backbone_family!`] or [`detector_family!`]), compiled as a `cdylib` in its own Cargo
//! project, and exported with one line:
//!
//! ```ignore
//! autodl_plugin_sdk::nets::backbone_family!(MyFamily, "my-family", MyNet, build, default_lr = 1e-3);
//! autodl_plugin_sdk::export_family!(MyFamily);
//! ```
//!
//! `autodl train --plugin libmy_family.so` (or `plugins = [...]` in a pipeline, or a folder in
//! `AUTODL_PLUGIN_PATH`) then loads it. The library links its own copy of Burn and of the
//! crates re-exported here; only JSON crosses between it and `autodl`, through the versioned
//! C ABI of `autodl-plugin-abi`. Enable the backends the library should run on with this
//! crate's `flex` (CPU) and `cuda` features.
//!
//! Burn's derives name `burn::...`: a module deriving `Module` brings the name in with
//! `use autodl_plugin_sdk::burn;`.

pub use autodl_api as api;
pub use autodl_backbones as backbones;
pub use autodl_backend as backend;
pub use autodl_backend::burn;
pub use autodl_nets as nets;
pub use autodl_nets::{backbone_family, detector_family};
pub use autodl_plugin_abi::{ABI_VERSION, ENTRY_POINT, export_family};
pub use autodl_train as train;

// Linked so that their registrations are in the library's registry: a family's training
// looks up its augmentation pipeline, batch deducer and evaluator by name.
use autodl_augment as _;
use autodl_batch_throughput as _;
use autodl_eval_boxes as _;
use autodl_eval_pixels as _;
