//! What network families share besides the training loops: small layers the heads are built
//! from ([`layers`]), and the glue for families on a shared backbone ([`backboned`]: pretrained
//! weights, N-band adaptation, training and prediction through `autodl-train`) with the
//! [`backbone_family!`] and [`detector_family!`] macros that declare and register such a
//! family. It sits between the backbones plugin and the family plugins, so that
//! `autodl-train` does not depend on the backbones plugin.

pub mod backboned;
// The family macros name these through `$crate`, so that a family crate (an out-of-tree plugin
// reaching them through `autodl-plugin-sdk`) needs no dependency of its own on either.
#[doc(hidden)]
pub use autodl_api as __api;
#[doc(hidden)]
pub use autodl_backend as __backend;
pub mod layers;
pub mod roi_align;
