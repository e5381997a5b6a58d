//! Loading Hugging Face checkpoints into a [`SequenceClassifier`] of their family, and saving
//! it back in their layout.
//!
//! The tensor files are read by burn-store: `SafetensorsStore` for `model.safetensors`,
//! `PytorchStore` for `pytorch_model.bin`. The latter parses the pickle itself and never
//! executes pickled code. Their PyTorch adapters transpose `Linear` weights and map
//! LayerNorm's `weight`/`bias` to Burn's `gamma`/`beta`, and skip the enum's variant in module
//! paths; this file only adds the key renames the families need and a transformers-style load
//! report.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::store::{
    ApplyError, ApplyResult, BurnToPyTorchAdapter, KeyRemapper, ModuleSnapshot,
    PyTorchToBurnAdapter, PytorchStore, SafetensorsStore,
};
use burn::tensor::Device;

use crate::config::{Family, ModelConfig};
use crate::{ModelError, SequenceClassifier};

/// Module path fragments whose names differ in transformers' checkpoints, between dots.
/// (Older checkpoints name LayerNorm's parameters `gamma`/`beta`, as Burn's `LayerNorm` does.)
const RENAMES: [(&str, &str); 5] = [
    ("layer_norm", "LayerNorm"),
    ("attention.self_attention", "attention.self"),
    ("wqkv", "Wqkv"),
    ("wi", "Wi"),
    ("wo", "Wo"),
];

/// The pattern and replacement that rename the fragment `from` to `to` between dots.
fn between_dots(from: &str, to: &str) -> (String, String) {
    (
        format!(r"\.{}\.", from.replace('.', r"\.")),
        format!(".{to}."),
    )
}

fn remapper(patterns: impl Iterator<Item = (String, String)>) -> KeyRemapper {
    patterns.fold(KeyRemapper::new(), |remapper, (from, to)| {
        remapper.add_pattern(from, to).expect("constant patterns")
    })
}

/// Checkpoint key → module path. Real checkpoints come with or without the encoder's prefix
/// (a fine-tuned `…ForSequenceClassification`, or a bare `…Model`): the bare encoder's
/// top-level modules get the family's prefix first.
fn load_remapper(family: Family) -> KeyRemapper {
    let top = match family {
        Family::Bert => r"^(embeddings|encoder|pooler)\.",
        Family::Roberta => r"^(embeddings|encoder)\.",
        Family::DistilBert => r"^(embeddings|transformer)\.",
        Family::Electra => r"^(embeddings|embeddings_project|encoder)\.",
        Family::ModernBert => r"^(embeddings|layers|final_norm)\.",
        Family::DebertaV2 => r"^(embeddings|encoder)\.",
    };
    let prefix = (top.to_string(), format!("{}.$1.", family.prefix()));
    let renames = RENAMES
        .iter()
        .map(|&(module, key)| between_dots(key, module));
    remapper(std::iter::once(prefix).chain(renames))
}

/// Module path → checkpoint key, for saving in transformers' naming.
fn save_remapper() -> KeyRemapper {
    remapper(
        RENAMES
            .iter()
            .map(|&(module, key)| between_dots(module, key)),
    )
}

/// What happened to each weight, like the warning transformers prints after `from_pretrained`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadReport {
    /// How many tensors came from the checkpoint.
    pub loaded: usize,
    /// Weights the checkpoint lacked, freshly initialised (the classification head of a
    /// pretrained encoder), in checkpoint naming.
    pub newly_initialized: Vec<String>,
    /// Checkpoint tensors the model has no place for (`cls.predictions.*`, buffers such as
    /// `embeddings.position_ids`), as named in the file.
    pub unused: Vec<String>,
}

impl std::fmt::Display for LoadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "loaded {} tensors", self.loaded)?;
        if !self.newly_initialized.is_empty() {
            write!(
                f,
                "; newly initialised (train them before use): {}",
                self.newly_initialized.join(", ")
            )?;
        }
        if !self.unused.is_empty() {
            write!(
                f,
                "; unused from the checkpoint: {}",
                self.unused.join(", ")
            )?;
        }
        Ok(())
    }
}

/// The name a module path has in a transformers checkpoint.
pub fn checkpoint_name(module_path: &str) -> String {
    let name = RENAMES
        .iter()
        .fold(module_path.to_string(), |name, (module, key)| {
            name.replace(&format!(".{module}."), &format!(".{key}."))
        });
    // Only LayerNorm has `gamma` and `beta`, under any module name (DistilBERT's
    // `sa_layer_norm`); transformers calls them `weight` and `bias`.
    match name.rsplit_once('.') {
        Some((module, "gamma")) => format!("{module}.weight"),
        Some((module, "beta")) => format!("{module}.bias"),
        _ => name,
    }
}

/// Modules a pretrained encoder checkpoint may lack: transformers initialises them and warns.
fn may_be_missing(module_path: &str) -> bool {
    // ModernBERT's `head` is in its masked-LM checkpoints, not in a bare encoder's.
    [
        "classifier.",
        "pre_classifier.",
        "bert.pooler.",
        "head.",
        "pooler.",
    ]
    .iter()
    .any(|head| module_path.starts_with(head))
}

impl SequenceClassifier {
    /// Builds the model for `config` on `device` and loads `weights` into it
    /// (`*.safetensors`, or a PyTorch `*.bin`/`*.pt`/`*.pth` state dict).
    pub fn from_pretrained(
        config: &ModelConfig,
        weights: &Path,
        device: &Device,
    ) -> Result<(Self, LoadReport), ModelError> {
        let mut model = Self::new(config, device);
        let error = |message: String| ModelError::Weights {
            path: weights.to_path_buf(),
            message,
        };
        if !weights.is_file() {
            return Err(error(
                "no such file; a model directory needs model.safetensors or pytorch_model.bin"
                    .into(),
            ));
        }
        let remapper = load_remapper(config.family);
        let result = if is_pytorch_file(weights) {
            let mut store = PytorchStore::from_file(weights)
                .validate(false)
                .allow_partial(true)
                .skip_enum_variants(true)
                .remap(remapper);
            model.load_from(&mut store).map_err(|e| {
                error(format!(
                    "not a readable PyTorch state dict ({e}); re-download it, or convert it to \
                     model.safetensors"
                ))
            })?
        } else {
            let mut store = SafetensorsStore::from_file(weights)
                .with_from_adapter(PyTorchToBurnAdapter)
                .validate(false)
                .allow_partial(true)
                .skip_enum_variants(true)
                .remap(remapper);
            model.load_from(&mut store).map_err(|e| {
                error(format!(
                    "not a readable safetensors file ({e}); it may be truncated: re-download it"
                ))
            })?
        };
        let report = check_applied(config, result).map_err(error)?;
        Ok((model, report))
    }

    /// Writes `model.safetensors` and `config.json` into `dir` with transformers' key names,
    /// so that transformers' `from_pretrained` and burnbert both load the directory.
    pub fn save_pretrained(&self, config: &ModelConfig, dir: &Path) -> Result<(), ModelError> {
        let io = |path: PathBuf| move |error| ModelError::Io { path, error };
        std::fs::create_dir_all(dir).map_err(io(dir.to_path_buf()))?;
        let weights = dir.join("model.safetensors");
        let mut store = SafetensorsStore::from_file(&weights)
            .with_to_adapter(BurnToPyTorchAdapter)
            .skip_enum_variants(true)
            .clear_metadata()
            // transformers refuses safetensors files without this marker.
            .metadata("format", "pt")
            .overwrite(true)
            .remap(save_remapper());
        self.clone()
            .valid()
            .save_into(&mut store)
            .map_err(|e| ModelError::Weights {
                path: weights.clone(),
                message: format!("cannot write: {e}"),
            })?;
        let config_path = dir.join("config.json");
        std::fs::write(&config_path, config.to_json()).map_err(io(config_path))
    }
}

fn is_pytorch_file(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("bin" | "pt" | "pth")
    )
}

/// Turns burn-store's result into a report, or an error that names the tensor at fault.
fn check_applied(config: &ModelConfig, result: ApplyResult) -> Result<LoadReport, String> {
    let family = config.family.prefix();
    let other_family = Family::MODEL_TYPES.iter().find(|(_, other)| {
        *other != config.family
            && result
                .unused
                .iter()
                .any(|key| key.starts_with(&format!("{}.", other.prefix())))
    });
    if let Some((model_type, other)) = other_family {
        return Err(format!(
            "the checkpoint holds a {model_type} model (its keys start with `{}.`) but \
             config.json's model_type says {family}; use the config.json that came with these \
             weights",
            other.prefix()
        ));
    }
    if let Some(error) = result.errors.first() {
        return Err(match error {
            ApplyError::ShapeMismatch {
                path,
                expected,
                found,
            } if path.ends_with(".embeddings.word_embeddings.weight") => format!(
                "config.json says vocab_size {} but the checkpoint's word embeddings have shape \
                 {:?}; the config and weights come from different models",
                config.vocab_size,
                found.as_slice()
            ),
            ApplyError::ShapeMismatch {
                path,
                expected,
                found,
            } => format!(
                "tensor `{}` has shape {:?} in the checkpoint but config.json implies {:?}; \
                 the config and weights come from different models",
                checkpoint_name(path),
                found.as_slice(),
                expected.as_slice()
            ),
            other => format!("{other}"),
        });
    }
    let (optional, required): (Vec<_>, Vec<_>) = result
        .missing
        .iter()
        .map(|(path, _)| path.as_str())
        .partition(|path| may_be_missing(path));
    if !required.is_empty() {
        let names: Vec<String> = required.iter().map(|p| checkpoint_name(p)).collect();
        let shown = names.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
        return Err(format!(
            "{} weights of the model are missing from the checkpoint (e.g. {shown}); \
             is it a {family} checkpoint with this config.json's shape?",
            names.len()
        ));
    }
    let unused: BTreeSet<String> = result.unused.iter().map(|p| checkpoint_name(p)).collect();
    Ok(LoadReport {
        loaded: result.applied.len(),
        newly_initialized: optional.iter().map(|p| checkpoint_name(p)).collect(),
        unused: unused.into_iter().collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_paths_map_to_transformers_names() {
        assert_eq!(
            checkpoint_name("bert.encoder.layer.3.attention.self_attention.query.weight"),
            "bert.encoder.layer.3.attention.self.query.weight"
        );
        assert_eq!(
            checkpoint_name("bert.embeddings.layer_norm.gamma"),
            "bert.embeddings.LayerNorm.weight"
        );
        assert_eq!(
            checkpoint_name("bert.encoder.layer.0.output.layer_norm.beta"),
            "bert.encoder.layer.0.output.LayerNorm.bias"
        );
    }
}
