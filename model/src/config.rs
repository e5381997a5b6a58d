//! `BertConfig`: the fields of a Hugging Face `config.json` that shape a BERT model.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::ModelError;

/// The hidden activation named by `hidden_act`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// The exact GELU, `x * Φ(x)` (transformers' `"gelu"`).
    Gelu,
    /// The tanh approximation of GELU (transformers' `"gelu_new"`).
    GeluNew,
    /// The same tanh approximation under PyTorch's name.
    GeluPytorchTanh,
    /// `max(0, x)`.
    Relu,
}

/// A BERT model's configuration, read from a Hugging Face `config.json`.
///
/// The five shape fields are required; every other field has transformers' `BertConfig`
/// default. Fields burnbert does not use are kept in `extra` so that a config written back
/// (next to a fine-tuned model) loses nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "defaults::hidden_act")]
    pub hidden_act: Activation,
    #[serde(default = "defaults::dropout")]
    pub hidden_dropout_prob: f64,
    #[serde(default = "defaults::dropout")]
    pub attention_probs_dropout_prob: f64,
    /// Dropout before the classification head; `hidden_dropout_prob` when absent.
    #[serde(default)]
    pub classifier_dropout: Option<f64>,
    #[serde(default = "defaults::max_position_embeddings")]
    pub max_position_embeddings: usize,
    #[serde(default = "defaults::type_vocab_size")]
    pub type_vocab_size: usize,
    #[serde(default = "defaults::layer_norm_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "defaults::initializer_range")]
    pub initializer_range: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pad_token_id: Option<usize>,
    /// Label names by class index; keys are the indices as strings, as in `config.json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id2label: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label2id: Option<BTreeMap<String, usize>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_labels: Option<usize>,
    /// `"regression"`, `"single_label_classification"` or `"multi_label_classification"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem_type: Option<String>,
    /// Every other field of the file (`architectures`, `model_type`, ...), kept as it was.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

mod defaults {
    use super::Activation;
    pub fn hidden_act() -> Activation {
        Activation::Gelu
    }
    pub fn dropout() -> f64 {
        0.1
    }
    pub fn max_position_embeddings() -> usize {
        512
    }
    pub fn type_vocab_size() -> usize {
        2
    }
    pub fn layer_norm_eps() -> f64 {
        1e-12
    }
    pub fn initializer_range() -> f64 {
        0.02
    }
}

impl BertConfig {
    /// Reads and checks a `config.json`.
    pub fn from_file(path: &Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|error| ModelError::Io {
            path: path.to_path_buf(),
            error,
        })?;
        Self::from_json(&text).map_err(|message| ModelError::Config {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Parses and checks the text of a `config.json`; the error says what is wrong.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let config: Self = serde_json::from_str(text).map_err(|e| match e.classify() {
            serde_json::error::Category::Data => {
                format!("{e} (hidden_act may be one of gelu, gelu_new, gelu_pytorch_tanh, relu)")
            }
            _ => format!("not valid JSON: {e}"),
        })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        for (name, value) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
            ("type_vocab_size", self.type_vocab_size),
        ] {
            if value == 0 {
                return Err(format!("`{name}` is 0; it must be at least 1"));
            }
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        for (name, p) in [
            ("hidden_dropout_prob", Some(self.hidden_dropout_prob)),
            (
                "attention_probs_dropout_prob",
                Some(self.attention_probs_dropout_prob),
            ),
            ("classifier_dropout", self.classifier_dropout),
        ] {
            if let Some(p) = p
                && !(0.0..1.0).contains(&p)
            {
                return Err(format!(
                    "`{name}` is {p}; a dropout probability is in [0, 1)"
                ));
            }
        }
        if let Some(labels) = &self.id2label {
            for key in labels.keys() {
                if key.parse::<usize>().is_err() {
                    return Err(format!("id2label key {key:?} is not a class index"));
                }
            }
        }
        Ok(())
    }

    /// The number of outputs of the classification head: `num_labels`, else the size of
    /// `id2label`, else 2 (transformers' default).
    pub fn label_count(&self) -> usize {
        self.num_labels
            .or_else(|| self.id2label.as_ref().map(|m| m.len()))
            .unwrap_or(2)
    }

    /// The name of class `index`: its `id2label` entry, else the index itself.
    pub fn label_name(&self, index: usize) -> String {
        self.id2label
            .as_ref()
            .and_then(|m| m.get(&index.to_string()).cloned())
            .unwrap_or_else(|| index.to_string())
    }

    /// Sets the classification head's labels (names in class order), as the training
    /// program does before fine-tuning on a task.
    pub fn set_labels(&mut self, names: &[String]) {
        self.num_labels = Some(names.len());
        self.id2label = Some(
            names
                .iter()
                .enumerate()
                .map(|(i, n)| (i.to_string(), n.clone()))
                .collect(),
        );
        self.label2id = Some(
            names
                .iter()
                .enumerate()
                .map(|(i, n)| (n.clone(), i))
                .collect(),
        );
        self.problem_type = Some(
            if names.len() == 1 {
                "regression"
            } else {
                "single_label_classification"
            }
            .into(),
        );
    }

    /// Whether the head regresses one score (STS-B) rather than classifying.
    pub fn is_regression(&self) -> bool {
        self.problem_type.as_deref() == Some("regression") || self.label_count() == 1
    }

    /// The dimension of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Writes the config as pretty JSON, as `save_pretrained` does.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a BertConfig always serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"{"vocab_size": 99, "hidden_size": 32, "num_hidden_layers": 2,
        "num_attention_heads": 4, "intermediate_size": 37, "model_type": "bert"}"#;

    #[test]
    fn fills_transformers_defaults_and_keeps_unknown_fields() {
        let config = BertConfig::from_json(MINIMAL).unwrap();
        assert_eq!(config.hidden_act, Activation::Gelu);
        assert_eq!(config.layer_norm_eps, 1e-12);
        assert_eq!(config.max_position_embeddings, 512);
        assert_eq!(config.label_count(), 2);
        assert_eq!(config.extra["model_type"], "bert");
        let again = BertConfig::from_json(&config.to_json()).unwrap();
        assert_eq!(again, config);
    }

    #[test]
    fn missing_field_is_named() {
        let err = BertConfig::from_json(r#"{"vocab_size": 99}"#).unwrap_err();
        assert!(err.contains("missing field `hidden_size`"), "{err}");
    }

    #[test]
    fn unknown_activation_is_named() {
        let text = MINIMAL.replace("\"model_type\"", "\"hidden_act\": \"quick_gelu\", \"x\"");
        let err = BertConfig::from_json(&text).unwrap_err();
        assert!(err.contains("quick_gelu"), "{err}");
    }

    #[test]
    fn heads_must_divide_hidden_size() {
        let text = MINIMAL.replace("\"num_attention_heads\": 4", "\"num_attention_heads\": 5");
        let err = BertConfig::from_json(&text).unwrap_err();
        assert!(err.contains("not a multiple"), "{err}");
    }

    #[test]
    fn labels_set_by_a_task_round_trip() {
        let mut config = BertConfig::from_json(MINIMAL).unwrap();
        config.set_labels(&["not_equivalent".into(), "equivalent".into()]);
        assert_eq!(config.label_name(1), "equivalent");
        assert!(!config.is_regression());
        config.set_labels(&["score".into()]);
        assert!(config.is_regression());
    }

    /// The benchmark's model-shape presets (`assets/presets/`) parse into the shapes they name:
    /// (vocab, hidden, layers, heads, intermediate, positions).
    #[test]
    fn benchmark_presets_have_their_shapes() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/presets");
        for (name, shape) in [
            ("bert-base-uncased", (30522, 768, 12, 12, 3072, 512)),
            ("minilm-l6", (30522, 384, 6, 12, 1536, 512)),
            ("tiny", (99, 32, 2, 4, 37, 64)),
        ] {
            let c = BertConfig::from_file(&dir.join(format!("{name}.json"))).unwrap();
            let got = (
                c.vocab_size,
                c.hidden_size,
                c.num_hidden_layers,
                c.num_attention_heads,
                c.intermediate_size,
                c.max_position_embeddings,
            );
            assert_eq!(got, shape, "{name}");
            assert_eq!(c.hidden_act, Activation::Gelu, "{name}");
            assert_eq!((c.type_vocab_size, c.layer_norm_eps), (2, 1e-12), "{name}");
        }
    }
}
