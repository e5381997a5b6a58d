//! `ModelConfig`: the fields of a Hugging Face `config.json` that shape an encoder of one of
//! the supported families ([`Family`]), in BERT's names.

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

/// The model families burnbert builds, chosen by `config.json`'s `model_type` as transformers'
/// Auto classes choose theirs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `bert` (`modeling_bert.py`).
    Bert,
    /// `roberta`, and `xlm-roberta` and `camembert`, which transformers builds with the same
    /// code (`modeling_roberta.py`).
    Roberta,
    /// `distilbert` (`modeling_distilbert.py`).
    DistilBert,
    /// `electra`, the discriminator (`modeling_electra.py`).
    Electra,
    /// `modernbert` (`modeling_modernbert.py`).
    ModernBert,
    /// `deberta-v2`, the model type of the DeBERTa-v3 checkpoints (`modeling_deberta_v2.py`).
    DebertaV2,
}

impl Family {
    /// The `model_type` values burnbert reads, and their families.
    pub const MODEL_TYPES: [(&'static str, Family); 8] = [
        ("bert", Family::Bert),
        ("roberta", Family::Roberta),
        ("xlm-roberta", Family::Roberta),
        ("camembert", Family::Roberta),
        ("distilbert", Family::DistilBert),
        ("electra", Family::Electra),
        ("modernbert", Family::ModernBert),
        ("deberta-v2", Family::DebertaV2),
    ];

    /// The family of a `model_type`; the error names it and lists those supported.
    pub fn from_model_type(model_type: &str) -> Result<Self, String> {
        Self::MODEL_TYPES
            .iter()
            .find(|(name, _)| *name == model_type)
            .map(|(_, family)| *family)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::MODEL_TYPES.iter().map(|(name, _)| *name).collect();
                format!(
                    "model_type {model_type:?} is not supported; burnbert reads {}",
                    names.join(", ")
                )
            })
    }

    /// The checkpoint prefix of the encoder, transformers' `base_model_prefix`.
    pub fn prefix(self) -> &'static str {
        match self {
            Family::Bert => "bert",
            Family::Roberta => "roberta",
            Family::DistilBert => "distilbert",
            Family::Electra => "electra",
            Family::ModernBert => "model",
            Family::DebertaV2 => "deberta",
        }
    }

    /// The family's names for BERT's fields, translated when a config is read and back when
    /// it is written, as transformers' `attribute_map` does for some of them, and the
    /// defaults of its transformers config where they differ from BERT's.
    fn names_and_defaults(self) -> (&'static [(&'static str, &'static str)], serde_json::Value) {
        match self {
            // `configuration_distilbert.py`; it has no token types.
            Family::DistilBert => (
                &[
                    ("dim", "hidden_size"),
                    ("n_layers", "num_hidden_layers"),
                    ("n_heads", "num_attention_heads"),
                    ("hidden_dim", "intermediate_size"),
                    ("activation", "hidden_act"),
                    ("dropout", "hidden_dropout_prob"),
                    ("attention_dropout", "attention_probs_dropout_prob"),
                    ("seq_classif_dropout", "classifier_dropout"),
                ],
                serde_json::json!({"seq_classif_dropout": 0.2}),
            ),
            // `configuration_modernbert.py`; it has no token types, and its own fields stay in
            // `extra` for [`ModernBertOptions`].
            Family::ModernBert => (
                &[
                    ("hidden_activation", "hidden_act"),
                    ("norm_eps", "layer_norm_eps"),
                    ("mlp_dropout", "hidden_dropout_prob"),
                    ("attention_dropout", "attention_probs_dropout_prob"),
                ],
                serde_json::json!({"norm_eps": 1e-5, "mlp_dropout": 0.0,
                    "attention_dropout": 0.0, "classifier_dropout": 0.0}),
            ),
            // `configuration_deberta_v2.py`; DeBERTa-v3 has no token types.
            Family::DebertaV2 => (
                &[("cls_dropout", "classifier_dropout")],
                serde_json::json!({"layer_norm_eps": 1e-7}),
            ),
            Family::Bert | Family::Roberta | Family::Electra => (&[], serde_json::json!({})),
        }
    }

    /// Whether the model has token-type embeddings.
    fn has_token_types(self) -> bool {
        !matches!(
            self,
            Family::DistilBert | Family::ModernBert | Family::DebertaV2
        )
    }
}

/// DeBERTa-v2's fields beyond BERT's, with `configuration_deberta_v2.py`'s defaults where
/// DeBERTa-v3 uses them; the settings of other DeBERTa-v2 checkpoints (absolute positions,
/// token types, the convolution layer, separate position projections) are refused by name.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DebertaV2Options {
    /// `c2p` (content to position) and `p2c` (position to content); the Hub's configs write
    /// `"p2c|c2p"`, transformers' `save_pretrained` a list.
    #[serde(default, deserialize_with = "list_or_bars")]
    pub pos_att_type: Vec<String>,
    /// Relative distances are bucketed logarithmically beyond `position_buckets / 2`.
    #[serde(default = "defaults::minus_one")]
    pub position_buckets: i64,
    /// The largest relative distance; `max_position_embeddings` when below 1.
    #[serde(default = "defaults::minus_one")]
    pub max_relative_positions: i64,
    /// `"layer_norm"`: the relative embeddings are normalised (the encoder's `LayerNorm`).
    #[serde(default = "defaults::none")]
    pub norm_rel_ebd: String,
    #[serde(default)]
    pub pooler_hidden_size: Option<usize>,
    #[serde(default)]
    pub pooler_dropout: f64,
    #[serde(default = "defaults::hidden_act")]
    pub pooler_hidden_act: Activation,
    #[serde(default)]
    relative_attention: bool,
    #[serde(default = "defaults::yes")]
    position_biased_input: bool,
    #[serde(default)]
    share_att_key: bool,
    #[serde(default)]
    conv_kernel_size: usize,
}

/// A list of strings, or one string of them joined by `|`.
fn list_or_bars<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        List(Vec<String>),
        Bars(String),
    }
    Ok(match Either::deserialize(deserializer)? {
        Either::List(list) => list,
        Either::Bars(text) => text
            .split('|')
            .map(|part| part.trim().to_lowercase())
            .filter(|part| !part.is_empty())
            .collect(),
    })
}

impl DebertaV2Options {
    fn validate(&self, config: &ModelConfig) -> Result<(), String> {
        let unsupported = [
            (!self.relative_attention, "relative_attention false"),
            (self.position_biased_input, "position_biased_input true"),
            (self.conv_kernel_size > 0, "conv_kernel_size above 0"),
            (!self.share_att_key, "share_att_key false"),
        ];
        if let Some((_, what)) = unsupported.iter().find(|(is, _)| *is) {
            return Err(format!(
                "DeBERTa-v2 with {what} is not supported; burnbert builds DeBERTa-v3's \
                 architecture (relative attention with shared keys, no absolute positions, no \
                 token types, no convolution)"
            ));
        }
        if let Some(other) = self
            .pos_att_type
            .iter()
            .find(|kind| !matches!(kind.as_str(), "c2p" | "p2c"))
        {
            return Err(format!("pos_att_type {other:?} is not c2p or p2c"));
        }
        if self.pooler_hidden_size.unwrap_or(config.hidden_size) != config.hidden_size {
            return Err("pooler_hidden_size differs from hidden_size".into());
        }
        if !matches!(self.norm_rel_ebd.as_str(), "layer_norm" | "none") {
            return Err(format!(
                "norm_rel_ebd {:?} is not \"layer_norm\" or \"none\"",
                self.norm_rel_ebd
            ));
        }
        Ok(())
    }

    /// How many relative distances each side the attention tells apart (`att_span`), and so
    /// half the rows of `rel_embeddings`.
    pub fn attention_span(&self, config: &ModelConfig) -> usize {
        if self.position_buckets > 0 {
            self.position_buckets as usize
        } else {
            self.max_relative_distance(config)
        }
    }

    /// `max_relative_positions`, or `max_position_embeddings` where it is below 1.
    pub fn max_relative_distance(&self, config: &ModelConfig) -> usize {
        if self.max_relative_positions < 1 {
            config.max_position_embeddings
        } else {
            self.max_relative_positions as usize
        }
    }
}

/// The attention pattern of a ModernBERT layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttentionType {
    /// Every token attends to every token.
    FullAttention,
    /// Each token attends to the tokens within `local_attention / 2` of it.
    SlidingAttention,
}

/// How ModernBERT's classification head pools the last hidden state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    /// The first token.
    Cls,
    /// The mean over the real tokens.
    Mean,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct RopeTheta {
    rope_theta: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct RopeParameters {
    full_attention: RopeTheta,
    sliding_attention: RopeTheta,
}

/// ModernBERT's fields beyond BERT's, with `configuration_modernbert.py`'s defaults. Older
/// configs give `global_attn_every_n_layers` and `global_rope_theta` / `local_rope_theta`;
/// newer ones `layer_types` and `rope_parameters` as well.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ModernBertOptions {
    #[serde(default)]
    pub norm_bias: bool,
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default)]
    pub mlp_bias: bool,
    #[serde(default)]
    pub classifier_bias: bool,
    #[serde(default = "defaults::hidden_act")]
    pub classifier_activation: Activation,
    #[serde(default = "defaults::pooling")]
    pub classifier_pooling: Pooling,
    #[serde(default)]
    pub embedding_dropout: f64,
    /// The sliding window's width: a token sees `local_attention / 2` tokens each side.
    #[serde(default = "defaults::local_attention")]
    pub local_attention: usize,
    #[serde(default = "defaults::global_attn_every_n_layers")]
    global_attn_every_n_layers: usize,
    #[serde(default)]
    layer_types: Option<Vec<AttentionType>>,
    #[serde(default)]
    rope_parameters: Option<RopeParameters>,
    #[serde(default = "defaults::global_rope_theta")]
    global_rope_theta: f64,
    #[serde(default = "defaults::local_rope_theta")]
    local_rope_theta: f64,
}

impl ModernBertOptions {
    /// Layer `index`'s attention: `layer_types`, else global every
    /// `global_attn_every_n_layers` layers from the first.
    pub fn attention_type(&self, index: usize) -> AttentionType {
        match &self.layer_types {
            Some(types) => types[index],
            None if index.is_multiple_of(self.global_attn_every_n_layers) => {
                AttentionType::FullAttention
            }
            None => AttentionType::SlidingAttention,
        }
    }

    /// RoPE's base for a layer of `attention`.
    pub fn rope_theta(&self, attention: AttentionType) -> f64 {
        match (&self.rope_parameters, attention) {
            (Some(p), AttentionType::FullAttention) => p.full_attention.rope_theta,
            (Some(p), AttentionType::SlidingAttention) => p.sliding_attention.rope_theta,
            (None, AttentionType::FullAttention) => self.global_rope_theta,
            (None, AttentionType::SlidingAttention) => self.local_rope_theta,
        }
    }

    fn validate(&self, layers: usize) -> Result<(), String> {
        if let Some(types) = &self.layer_types
            && types.len() != layers
        {
            return Err(format!(
                "layer_types has {} entries for {layers} layers",
                types.len()
            ));
        }
        if self.global_attn_every_n_layers == 0 {
            return Err("`global_attn_every_n_layers` is 0; it must be at least 1".into());
        }
        Ok(())
    }
}

/// An encoder's configuration, read from a Hugging Face `config.json`.
///
/// The five shape fields are required; every other field has the default of the family's
/// transformers config. Fields burnbert does not use are kept in `extra` so that a config
/// written back (next to a fine-tuned model) loses nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// The family named by `model_type` (BERT when it is absent, as older BERT checkpoints).
    #[serde(skip, default = "defaults::family")]
    pub family: Family,
    /// ModernBERT's own fields, read from `extra`.
    #[serde(skip)]
    pub modernbert: Option<ModernBertOptions>,
    /// DeBERTa-v2's own fields, read from `extra`.
    #[serde(skip)]
    pub deberta: Option<DebertaV2Options>,
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
    /// ELECTRA: the width of the embeddings, projected to `hidden_size` when it differs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding_size: Option<usize>,
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
    use super::{Activation, Family, Pooling};
    pub fn minus_one() -> i64 {
        -1
    }
    pub fn none() -> String {
        "none".into()
    }
    pub fn yes() -> bool {
        true
    }
    pub fn pooling() -> Pooling {
        Pooling::Cls
    }
    pub fn local_attention() -> usize {
        128
    }
    pub fn global_attn_every_n_layers() -> usize {
        3
    }
    pub fn global_rope_theta() -> f64 {
        160_000.0
    }
    pub fn local_rope_theta() -> f64 {
        10_000.0
    }
    pub fn family() -> Family {
        Family::Bert
    }
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

impl ModelConfig {
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
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
        let serde_json::Value::Object(mut fields) = value else {
            return Err("not a JSON object; a config.json holds one `{...}`".into());
        };
        let family = match fields.get("model_type") {
            None => Family::Bert,
            Some(serde_json::Value::String(name)) => Family::from_model_type(name)?,
            Some(other) => return Err(format!("model_type {other} is not a string")),
        };
        if family == Family::DistilBert
            && fields.get("sinusoidal_pos_embds") == Some(&serde_json::Value::Bool(true))
        {
            return Err(
                "sinusoidal_pos_embds is true: DistilBERT with fixed sinusoidal \
                        positions is not supported, only learned ones"
                    .into(),
            );
        }
        let (names, defaults) = family.names_and_defaults();
        for (name, value) in defaults.as_object().expect("defaults are an object") {
            fields.entry(name).or_insert(value.clone());
        }
        for (theirs, ours) in names {
            if let Some(value) = fields.remove(*theirs) {
                fields.insert((*ours).into(), value);
            }
        }
        if family == Family::DebertaV2
            && fields.get("type_vocab_size").and_then(|v| v.as_u64()) > Some(0)
        {
            return Err(
                "DeBERTa-v2 with type_vocab_size above 0 is not supported; burnbert \
                        builds DeBERTa-v3's architecture, which has no token types"
                    .into(),
            );
        }
        if !family.has_token_types() {
            fields.insert("type_vocab_size".into(), serde_json::json!(1));
        }
        let mut config: Self =
            serde_json::from_value(serde_json::Value::Object(fields)).map_err(|e| {
                // In the family's own names.
                let mut message = format!(
                    "{e} (`hidden_act` may be one of gelu, gelu_new, gelu_pytorch_tanh, relu)"
                );
                for (theirs, ours) in names {
                    message = message.replace(&format!("`{ours}`"), &format!("`{theirs}`"));
                }
                message
            })?;
        config.family = family;
        if family == Family::ModernBert {
            let options: ModernBertOptions = config.family_options()?;
            options.validate(config.num_hidden_layers)?;
            config.modernbert = Some(options);
        }
        if family == Family::DebertaV2 {
            let options: DebertaV2Options = config.family_options()?;
            options.validate(&config)?;
            config.deberta = Some(options);
        }
        match family {
            // transformers' RobertaConfig and ElectraConfig defaults.
            Family::Roberta => {
                config.pad_token_id.get_or_insert(1);
            }
            Family::Electra => {
                config.embedding_size.get_or_insert(128);
            }
            Family::Bert | Family::DistilBert | Family::ModernBert | Family::DebertaV2 => {}
        }
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
            ("embedding_size", self.embedding_size.unwrap_or(1)),
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

    /// A family's own fields, read from `extra` with their defaults.
    fn family_options<T: serde::de::DeserializeOwned>(&self) -> Result<T, String> {
        serde_json::from_value(serde_json::Value::Object(self.extra.clone()))
            .map_err(|e| e.to_string())
    }

    /// The dropout before the classification head: `classifier_dropout` when set, else the
    /// hidden dropout, as transformers' heads choose it.
    pub fn head_dropout(&self) -> f64 {
        self.classifier_dropout.unwrap_or(self.hidden_dropout_prob)
    }

    /// RoBERTa's padding token, after which its positions count (`padding_idx`).
    pub fn padding_idx(&self) -> usize {
        self.pad_token_id.unwrap_or(1)
    }

    /// Writes the config as pretty JSON in the family's own names, as `save_pretrained` does.
    pub fn to_json(&self) -> String {
        let mut value = serde_json::to_value(self).expect("a ModelConfig always serializes");
        let fields = value
            .as_object_mut()
            .expect("a struct serializes to an object");
        match self.family {
            // DeBERTa-v3 writes its absence of token types as 0.
            Family::DebertaV2 => {
                fields.insert("type_vocab_size".into(), serde_json::json!(0));
            }
            family if !family.has_token_types() => {
                fields.remove("type_vocab_size");
            }
            _ => {}
        }
        if self.family == Family::DistilBert {
            // DistilBERT's epsilon is fixed, not a field.
            fields.remove("layer_norm_eps");
        }
        for (theirs, ours) in self.family.names_and_defaults().0 {
            if let Some(value) = fields.remove(*ours) {
                fields.insert((*theirs).into(), value);
            }
        }
        serde_json::to_string_pretty(&value).expect("JSON values always serialize")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"{"vocab_size": 99, "hidden_size": 32, "num_hidden_layers": 2,
        "num_attention_heads": 4, "intermediate_size": 37, "model_type": "bert"}"#;

    #[test]
    fn fills_transformers_defaults_and_keeps_unknown_fields() {
        let config = ModelConfig::from_json(MINIMAL).unwrap();
        assert_eq!(config.hidden_act, Activation::Gelu);
        assert_eq!(config.layer_norm_eps, 1e-12);
        assert_eq!(config.max_position_embeddings, 512);
        assert_eq!(config.label_count(), 2);
        assert_eq!(config.extra["model_type"], "bert");
        let again = ModelConfig::from_json(&config.to_json()).unwrap();
        assert_eq!(again, config);
    }

    #[test]
    fn missing_field_is_named() {
        let err = ModelConfig::from_json(r#"{"vocab_size": 99}"#).unwrap_err();
        assert!(err.contains("missing field `hidden_size`"), "{err}");
    }

    #[test]
    fn unknown_activation_is_named() {
        let text = MINIMAL.replace("\"model_type\"", "\"hidden_act\": \"quick_gelu\", \"x\"");
        let err = ModelConfig::from_json(&text).unwrap_err();
        assert!(err.contains("quick_gelu"), "{err}");
    }

    #[test]
    fn heads_must_divide_hidden_size() {
        let text = MINIMAL.replace("\"num_attention_heads\": 4", "\"num_attention_heads\": 5");
        let err = ModelConfig::from_json(&text).unwrap_err();
        assert!(err.contains("not a multiple"), "{err}");
    }

    /// DeBERTa-v3's Hub config writes `pos_att_type` as `"p2c|c2p"`; transformers' own
    /// `save_pretrained` as a list.
    #[test]
    fn deberta_position_attention_types_read_either_way() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/presets");
        let hub = ModelConfig::from_file(&dir.join("deberta-v3-base.json")).unwrap();
        let listed = hub.to_json().replace("\"p2c|c2p\"", "[\"p2c\", \"c2p\"]");
        for config in [hub, ModelConfig::from_json(&listed).unwrap()] {
            let options = config.deberta.unwrap();
            assert_eq!(options.pos_att_type, ["p2c", "c2p"]);
            assert_eq!(options.position_buckets, 256);
        }
    }

    #[test]
    fn labels_set_by_a_task_round_trip() {
        let mut config = ModelConfig::from_json(MINIMAL).unwrap();
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
            ("roberta-base", (50265, 768, 12, 12, 3072, 514)),
            ("modernbert-base", (50368, 768, 22, 12, 1152, 8192)),
            ("deberta-v3-base", (128100, 768, 12, 12, 3072, 512)),
        ] {
            let c = ModelConfig::from_file(&dir.join(format!("{name}.json"))).unwrap();
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
            if c.family == Family::Bert {
                assert_eq!((c.type_vocab_size, c.layer_norm_eps), (2, 1e-12), "{name}");
            }
        }
    }
}
