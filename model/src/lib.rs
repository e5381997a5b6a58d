//! BERT for sequence classification as Burn modules, written once for every backend,
//! with Hugging Face `config.json` parsing and checkpoint loading and saving.
//!
//! `bert.rs` reads like transformers' `modeling_bert.py`; the operations that have a GPU
//! kernel of their own (`burnbert-kernels`) are in `ops.rs`, each with Burn's reference body
//! beside the kernel's dispatch. `device.rs` parses and selects devices; `parallel.rs` runs
//! work on several devices at once.
//!
//! ```no_run
//! use burnbert_model::{BertConfig, BertForSequenceClassification, parse_device};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let device = parse_device("cpu")?;
//! let config = BertConfig::from_file("model/config.json".as_ref())?;
//! let (model, report) =
//!     BertForSequenceClassification::from_pretrained(&config, "model/model.safetensors".as_ref(), &device)?;
//! println!("{report}");
//! # Ok(()) }
//! ```

mod bert;
mod checkpoint;
mod config;
mod device;
mod dropout;
mod layer_norm;
mod ops;
mod parallel;

use std::path::PathBuf;

pub use bert::*;
pub use burnbert_kernels::runs_own_kernels;
pub use checkpoint::{LoadReport, checkpoint_name};
pub use config::{Activation, BertConfig};
pub use device::{
    available_devices, device_name, is_cpu_backend, parse_device, select_device, select_devices,
};
pub use layer_norm::LayerNorm;
pub use parallel::on_each_device;

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
