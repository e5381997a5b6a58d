//! ModernBERT as Burn modules, mirroring transformers' `modeling_modernbert.py`: checkpoint
//! keys `model.embeddings.{tok_embeddings,norm}`, `model.layers.N.{attn_norm,attn.Wqkv,attn.Wo,
//! mlp_norm,mlp.Wi,mlp.Wo}`, `model.final_norm`, and the head's `head.{dense,norm}` and
//! `classifier`. `Wqkv`, `Wi` and `Wo` are `wqkv`, `wi` and `wo` here; `crate::checkpoint` maps
//! them.
//!
//! What differs from BERT: no position embeddings but rotary ones on the queries and keys
//! (their base differs between global and local layers), pre-norm layers (the first without
//! `attn_norm`), a gated GELU feed-forward network, no biases by default, and most layers attend
//! only within a sliding window of `local_attention / 2` tokens each side. The head pools the
//! first token or the mean of the real ones, then dense, activation and LayerNorm.

use burn::module::Module;
use burn::nn::{Dropout, Embedding, Linear};
use burn::tensor::{Bool, Device, Int, Tensor};

use crate::bert::BertInput;
use crate::classifier::{
    Execution, Labels, SequenceClassifierOutput, first_token, loss, padding_mask,
};
use crate::config::{Activation, AttentionType, ModelConfig, ModernBertOptions, Pooling};
use crate::init;
use crate::layer_norm::LayerNorm;
use crate::ops::{self, Layout, dense, dropout};
use crate::recompute;

fn options(config: &ModelConfig) -> &ModernBertOptions {
    config
        .modernbert
        .as_ref()
        .expect("a ModernBERT config carries its options")
}

/// LayerNorm with or without `beta`, as `norm_bias` says.
fn norm(config: &ModelConfig, device: &Device) -> LayerNorm {
    let (width, epsilon) = (config.hidden_size, config.layer_norm_eps);
    if options(config).norm_bias {
        LayerNorm::new(width, epsilon, device)
    } else {
        LayerNorm::without_bias(width, epsilon, device)
    }
}

/// Token embeddings, normalised and dropped out (transformers' `ModernBertEmbeddings`).
#[derive(Module, Debug)]
pub struct ModernBertEmbeddings {
    pub tok_embeddings: Embedding,
    pub norm: LayerNorm,
    pub drop: Dropout,
}

impl ModernBertEmbeddings {
    pub fn new(config: &ModelConfig, device: &Device) -> Self {
        Self {
            tok_embeddings: init::embedding(config, config.vocab_size, config.hidden_size, device),
            norm: norm(config, device),
            drop: init::dropout(options(config).embedding_dropout),
        }
    }

    /// `input_ids` in `layout`, `[batch, seq]` or `[1, tokens]` packed; so is the output.
    pub fn forward(&self, input_ids: Tensor<2, Int>, layout: &Layout) -> Tensor<3> {
        ops::token_dropout(
            &self.drop,
            self.norm.forward(self.tok_embeddings.forward(input_ids)),
            layout,
        )
    }
}

/// Self-attention with rotary positions (transformers' `ModernBertAttention`).
#[derive(Module, Debug)]
pub struct ModernBertAttention {
    /// Queries, keys and values in one product: `Wqkv` in the checkpoint.
    pub wqkv: Linear,
    /// `Wo` in the checkpoint.
    pub wo: Linear,
    /// On the probabilities and on the output, as transformers' `attention_dropout`.
    pub dropout: Dropout,
    #[module(skip)]
    num_heads: usize,
}

impl ModernBertAttention {
    pub fn new(config: &ModelConfig, device: &Device) -> Self {
        let (h, bias) = (config.hidden_size, options(config).attention_bias);
        Self {
            wqkv: init::linear_with_bias(config, h, 3 * h, bias, device),
            wo: init::linear_with_bias(config, h, h, bias, device),
            dropout: init::dropout(config.attention_probs_dropout_prob),
            num_heads: config.num_attention_heads,
        }
    }

    /// `mask` is true where a query does not see a key; `rotary` the (cos, sin) tables of the
    /// layer's RoPE base.
    pub fn forward(
        &self,
        hidden: Tensor<3>,
        mask: Tensor<4, Bool>,
        rotary: &(Tensor<2>, Tensor<2>),
        layout: &Layout,
    ) -> Tensor<3> {
        // `Wqkv`'s output is (3, heads, head_dim) per token: queries, then keys, then values.
        let qkv = layout.unpack(ops::per_token(&self.wqkv, hidden));
        let [batch, seq, width] = qkv.dims();
        let head_dim = width / 3 / self.num_heads;
        let qkv = qkv
            .reshape([batch, seq, 3, self.num_heads, head_dim])
            .swap_dims(1, 3); // [batch, heads, 3, seq, head_dim]
        let part = |i: usize| {
            qkv.clone()
                .narrow(2, i, 1)
                .reshape([batch, self.num_heads, seq, head_dim])
        };
        let (cos, sin) = rotary;
        let q = ops::rotary(part(0), cos, sin);
        let k = ops::rotary(part(1), cos, sin);
        let context = ops::self_attention(q, k, part(2), mask, &self.dropout, layout);
        ops::token_dropout(&self.dropout, ops::per_token(&self.wo, context), layout)
    }
}

/// The gated feed-forward network (transformers' `ModernBertMLP`): `Wo(drop(act(x₁) · x₂))`
/// with `[x₁, x₂] = Wi(x)`.
#[derive(Module, Debug)]
pub struct ModernBertMlp {
    /// `Wi` in the checkpoint.
    pub wi: Linear,
    pub drop: Dropout,
    /// `Wo` in the checkpoint.
    pub wo: Linear,
    #[module(skip)]
    activation: Activation,
}

impl ModernBertMlp {
    pub fn new(config: &ModelConfig, device: &Device) -> Self {
        let (h, i, bias) = (
            config.hidden_size,
            config.intermediate_size,
            options(config).mlp_bias,
        );
        Self {
            wi: init::linear_with_bias(config, h, 2 * i, bias, device),
            drop: init::dropout(config.hidden_dropout_prob),
            wo: init::linear_with_bias(config, i, h, bias, device),
            activation: config.hidden_act,
        }
    }

    /// `hidden` in `layout`, and the output too.
    pub fn forward(&self, hidden: Tensor<3>, layout: &Layout) -> Tensor<3> {
        let gated = ops::gated_activation(&self.wi, self.activation, hidden);
        ops::per_token(&self.wo, ops::token_dropout(&self.drop, gated, layout))
    }
}

/// One pre-norm layer (transformers' `ModernBertEncoderLayer`).
#[derive(Module, Debug)]
pub struct ModernBertEncoderLayer {
    /// Absent in the first layer, whose input the embeddings' norm has normalised.
    pub attn_norm: Option<LayerNorm>,
    pub attn: ModernBertAttention,
    pub mlp_norm: LayerNorm,
    pub mlp: ModernBertMlp,
    #[module(skip)]
    attention_type: AttentionType,
}

impl ModernBertEncoderLayer {
    pub fn new(config: &ModelConfig, index: usize, device: &Device) -> Self {
        Self {
            attn_norm: (index > 0).then(|| norm(config, device)),
            attn: ModernBertAttention::new(config, device),
            mlp_norm: norm(config, device),
            mlp: ModernBertMlp::new(config, device),
            attention_type: options(config).attention_type(index),
        }
    }

    pub fn forward(
        &self,
        hidden: Tensor<3>,
        mask: Tensor<4, Bool>,
        rotary: &(Tensor<2>, Tensor<2>),
        layout: &Layout,
    ) -> Tensor<3> {
        let normed = match &self.attn_norm {
            Some(norm) => norm.forward(hidden.clone()),
            None => hidden.clone(),
        };
        let hidden = hidden + self.attn.forward(normed, mask, rotary, layout);
        hidden.clone() + self.mlp.forward(self.mlp_norm.forward(hidden), layout)
    }
}

/// The bare encoder (transformers' `ModernBertModel`).
#[derive(Module, Debug)]
pub struct ModernBertModel {
    pub embeddings: ModernBertEmbeddings,
    pub layers: Vec<ModernBertEncoderLayer>,
    pub final_norm: LayerNorm,
    /// RoPE's base for global and for sliding-window layers.
    #[module(skip)]
    rope_theta: [f64; 2],
    #[module(skip)]
    local_attention: usize,
    #[module(skip)]
    head_dim: usize,
    /// Mixed precision and padding-free execution, as [`crate::BertModel`]'s.
    #[module(skip)]
    pub(crate) execution: Execution,
}

impl ModernBertModel {
    pub fn new(config: &ModelConfig, device: &Device) -> Self {
        let options = options(config);
        Self {
            embeddings: ModernBertEmbeddings::new(config, device),
            layers: (0..config.num_hidden_layers)
                .map(|index| ModernBertEncoderLayer::new(config, index, device))
                .collect(),
            final_norm: norm(config, device),
            rope_theta: [
                AttentionType::FullAttention,
                AttentionType::SlidingAttention,
            ]
            .map(|attention| options.rope_theta(attention)),
            local_attention: options.local_attention,
            head_dim: config.head_dim(),
            execution: Execution::default(),
        }
    }

    /// The last hidden state after `final_norm`, `[batch, seq, hidden]`, in the parameters'
    /// float type; ModernBERT reads no token types.
    pub fn forward(&self, input: BertInput) -> Tensor<3> {
        let [batch, seq] = input.attention_mask.dims();
        let device = input.input_ids.device();
        let layout = self.execution.layout(&input.attention_mask);
        let padding = padding_mask(input.attention_mask);
        // transformers' `create_bidirectional_sliding_window_mask` on the eager path: a query
        // sees the keys within `local_attention / 2` positions.
        let positions = Tensor::<1, Int>::arange(0..seq as i64, &device);
        let distance =
            (positions.clone().unsqueeze_dim::<2>(1) - positions.unsqueeze_dim::<2>(0)).abs();
        let outside = distance
            .greater_elem((self.local_attention / 2) as i64)
            .reshape([1, 1, seq, seq]);
        let sliding = padding
            .clone()
            .expand([batch, 1, seq, seq])
            .bool_or(outside.expand([batch, 1, seq, seq]));
        let [full_rope, sliding_rope] = self
            .rope_theta
            .map(|theta| ops::rotary_tables(seq, self.head_dim, theta, &device));

        let embedded = self
            .embeddings
            .forward(layout.pack_ids(input.input_ids), &layout);
        let param_dtype = embedded.dtype();
        let mut hidden = self.execution.compute_in(embedded);
        for layer in &self.layers {
            let (mask, rope) = match layer.attention_type {
                AttentionType::FullAttention => (padding.clone(), &full_rope),
                AttentionType::SlidingAttention => (sliding.clone(), &sliding_rope),
            };
            let (rope, layout) = (rope.clone(), layout.clone());
            let checkpointing = self.execution.gradient_checkpointing;
            hidden = recompute::layer(checkpointing, layer, [hidden], move |layer, [hidden]| {
                layer.forward(hidden, mask.clone(), &rope, &layout)
            });
        }
        layout
            .unpack(self.final_norm.forward(hidden))
            .cast(param_dtype)
    }
}

/// Dense, activation and LayerNorm on the pooled state (transformers'
/// `ModernBertPredictionHead`).
#[derive(Module, Debug)]
pub struct ModernBertPredictionHead {
    pub dense: Linear,
    pub norm: LayerNorm,
    #[module(skip)]
    activation: Activation,
}

/// transformers' `ModernBertForSequenceClassification`.
#[derive(Module, Debug)]
pub struct ModernBertForSequenceClassification {
    pub model: ModernBertModel,
    pub head: ModernBertPredictionHead,
    pub drop: Dropout,
    pub classifier: Linear,
    #[module(skip)]
    pooling: Pooling,
}

impl ModernBertForSequenceClassification {
    pub fn new(config: &ModelConfig, device: &Device) -> Self {
        let options = options(config);
        let h = config.hidden_size;
        Self {
            model: ModernBertModel::new(config, device),
            head: ModernBertPredictionHead {
                dense: init::linear_with_bias(config, h, h, options.classifier_bias, device),
                norm: norm(config, device),
                activation: options.classifier_activation,
            },
            drop: init::dropout(config.head_dropout()),
            classifier: init::linear(config, h, config.label_count(), device),
            pooling: options.classifier_pooling,
        }
    }

    /// Logits for a batch, and the mean loss when labels are given.
    pub fn forward(&self, input: BertInput, labels: Option<Labels>) -> SequenceClassifierOutput {
        let mask = input.attention_mask.clone();
        let hidden = self.model.forward(input);
        let pooled = match self.pooling {
            Pooling::Cls => first_token(hidden),
            Pooling::Mean => {
                let [batch, seq] = mask.dims();
                let weights = mask.float().cast(hidden.dtype());
                let sum = (hidden * weights.clone().reshape([batch, seq, 1])).sum_dim(1);
                let [_, _, width] = sum.dims();
                sum.reshape([batch, width]) / weights.sum_dim(1)
            }
        };
        let pooled = self.head.norm.forward(ops::dense_activation_rows(
            &self.head.dense,
            self.head.activation,
            pooled,
        ));
        let logits = dense(&self.classifier, dropout(&self.drop, pooled));
        let loss = labels.map(|labels| loss(logits.clone(), labels));
        SequenceClassifierOutput { loss, logits }
    }
}
