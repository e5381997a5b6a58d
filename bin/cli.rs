//! What the programs in `bin/` share: model loading from the Hub or a directory, and
//! turning errors into one clear line and a non-zero exit code.

use std::process::ExitCode;

use anyhow::Context;
use burn::tensor::Device;
use burnbert_data::{Hub, ModelFiles, PairTokenizer};
use burnbert_model::{BertConfig, BertForSequenceClassification, LoadReport};

/// Flags every program takes to find a model.
#[derive(Debug, Clone, clap::Args)]
pub struct ModelArgs {
    /// A Hub model id (e.g. sentence-transformers/all-MiniLM-L6-v2) or a local directory in
    /// Hugging Face layout (config.json, tokenizer.json, model.safetensors or pytorch_model.bin).
    #[arg(long)]
    pub model: String,
    /// Branch, tag or commit of a Hub model or dataset.
    #[arg(long, default_value = "main")]
    pub revision: String,
    /// Read only the local Hugging Face cache (also HF_HUB_OFFLINE=1).
    #[arg(long)]
    pub offline: bool,
    /// Truncate inputs to this many tokens [default: the model's max_position_embeddings].
    #[arg(long)]
    pub max_length: Option<usize>,
    /// auto, cpu, ndarray, flex, wgpu[:N] or cuda[:N], as compiled in.
    #[arg(long, env = "BURNBERT_DEVICE", default_value = "auto")]
    pub device: String,
}

/// A model ready to use, with its tokenizer and where it came from.
pub struct LoadedModel {
    pub model: BertForSequenceClassification,
    pub config: BertConfig,
    pub tokenizer: PairTokenizer,
    pub files: ModelFiles,
    pub report: LoadReport,
}

impl ModelArgs {
    pub fn hub(&self) -> Hub {
        Hub::from_env(&self.revision, self.offline)
    }

    pub fn device(&self) -> anyhow::Result<Device> {
        burnbert_model::parse_device(&self.device).map_err(anyhow::Error::msg)
    }

    /// Loads config, tokenizer and weights; `labels` replaces the head's labels (fine-tuning
    /// a pretrained encoder for a task).
    pub fn load(&self, device: &Device, labels: Option<&[String]>) -> anyhow::Result<LoadedModel> {
        let files = self.hub().model_files(&self.model)?;
        let mut config = BertConfig::from_file(&files.config)?;
        if let Some(labels) = labels {
            let head_fits = config.label_count() == labels.len() && config.id2label.is_some();
            if !head_fits {
                config.set_labels(labels);
            }
        }
        let max_length = self.max_length.unwrap_or(config.max_position_embeddings);
        if max_length > config.max_position_embeddings {
            anyhow::bail!(
                "--max-length {max_length} exceeds the model's max_position_embeddings {}",
                config.max_position_embeddings
            );
        }
        let tokenizer = PairTokenizer::from_file(&files.tokenizer, max_length)?;
        if tokenizer.vocab_size() > config.vocab_size {
            anyhow::bail!(
                "{}: the tokenizer has {} tokens but config.json's vocab_size is {}; they come \
                 from different models",
                files.tokenizer.display(),
                tokenizer.vocab_size(),
                config.vocab_size
            );
        }
        let (model, report) =
            BertForSequenceClassification::from_pretrained(&config, &files.weights, device)
                .with_context(|| format!("loading model `{}`", self.model))?;
        Ok(LoadedModel {
            model,
            config,
            tokenizer,
            files,
            report,
        })
    }
}

/// Runs a program's body: an error is printed as one line (with its causes) on stderr and
/// the exit code is 1; panics are not the way errors leave burnbert.
pub fn run(body: impl FnOnce() -> anyhow::Result<()>) -> ExitCode {
    match body() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
