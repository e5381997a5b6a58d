mod base;
#[cfg(feature = "nvptx")]
pub mod lowered_features;

pub use base::*;
