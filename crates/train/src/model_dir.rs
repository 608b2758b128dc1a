//! What a trained model's folder holds besides its weights: [`ModelMeta`], defined with the
//! package that carries it.

pub use autodl_package::{META, ModelMeta, WEIGHTS};
