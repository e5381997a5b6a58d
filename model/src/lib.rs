//! The encoder families as Burn modules, written once for every backend, with Hugging Face
//! `config.json` parsing and checkpoint loading and saving.
//!
//! One file per family, each read beside its transformers `modeling_*.py`: `bert.rs`,
//! `roberta.rs` (also XLM-RoBERTa and CamemBERT), `distilbert.rs`, `electra.rs`,
//! `modernbert.rs`, `deberta.rs` (DeBERTa-v3).
//! `classifier.rs` picks the family a `config.json` names, as transformers'
//! `AutoModelForSequenceClassification` does. The operations the families share, with their
//! GPU kernels (`burnbert-kernels`), are in `ops.rs`, each with Burn's reference body beside
//! the kernel's dispatch; `attention.rs` is the CPU's attention for long sequences in training.
//! `recompute.rs` checkpoints each encoder layer for `--gradient-checkpointing`. `device.rs`
//! parses and selects devices; `parallel.rs` runs work on several devices at once.
//!
//! ```no_run
//! use burnbert_model::{ModelConfig, SequenceClassifier, parse_device};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let device = parse_device("cpu")?;
//! let config = ModelConfig::from_file("model/config.json".as_ref())?;
//! let (model, report) =
//!     SequenceClassifier::from_pretrained(&config, "model/model.safetensors".as_ref(), &device)?;
//! println!("{report}");
//! # Ok(()) }
//! ```

#[cfg(feature = "flex")]
mod attention;
mod bert;
mod checkpoint;
mod classifier;
mod config;
mod deberta;
mod device;
mod distilbert;
mod dropout;
mod electra;
mod init;
mod layer_norm;
mod modernbert;
mod ops;
mod parallel;
mod recompute;
mod roberta;

use std::path::PathBuf;

pub use bert::*;
pub use burnbert_kernels::runs_own_kernels;
pub use checkpoint::{LoadReport, checkpoint_name};
pub use classifier::{Labels, SequenceClassifier, SequenceClassifierOutput, loss};
pub use config::{
    Activation, AttentionType, DebertaV2Options, Family, ModelConfig, ModernBertOptions, Pooling,
};
pub use deberta::*;
pub use device::{
    available_devices, device_name, is_cpu_backend, parse_device, select_device, select_devices,
};
pub use distilbert::*;
pub use electra::*;
pub use layer_norm::LayerNorm;
pub use modernbert::*;
pub use parallel::on_each_device;
pub use roberta::*;

/// Whether a training step on the CPU keeps each layer's `seq × seq` attention probabilities
/// for the backward pass at rows of `seq` positions: below the length from which it computes
/// the attention in blocks of queries (`attention.rs`), and in builds without flex.
pub fn cpu_attention_keeps_scores(seq: usize) -> bool {
    #[cfg(feature = "flex")]
    return !attention::is_blocked(seq);
    #[cfg(not(feature = "flex"))]
    true
}

/// What can go wrong reading a model; every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot read {path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Weights { path: PathBuf, message: String },
}
