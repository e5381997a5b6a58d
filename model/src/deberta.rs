//! DeBERTa-v3 (transformers' model type `deberta-v2`) as Burn modules, mirroring
//! `modeling_deberta_v2.py`: checkpoint keys `deberta.embeddings.{word_embeddings,LayerNorm}`,
//! `deberta.encoder.layer.N.attention.self.{query,key,value}_proj`, BERT's
//! `attention.output`, `intermediate` and `output` (which transformers copies),
//! `deberta.encoder.{rel_embeddings,LayerNorm}`, and the head's `pooler.dense` and
//! `classifier`.
//!
//! What differs from BERT: no absolute positions and no token types; the embeddings are zeroed
//! at padding; and the attention adds to `q·kᵀ` the disentangled terms between each token and
//! the relative position of the other (`c2p`, `p2c`), read from shared relative embeddings
//! through the layer's own query and key projections, over log-bucketed distances. The head
//! (`ContextPooler`) is dense and GELU on the first token.

use burn::module::Module;
use burn::nn::{Dropout, Embedding, Linear};
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};

use crate::bert::{BertAddNorm, BertInput, BertIntermediate};
use crate::classifier::{Execution, Labels, SequenceClassifierOutput, first_token, loss};
use crate::config::{Activation, DebertaV2Options, ModelConfig};
use crate::init;
use crate::layer_norm::LayerNorm;
use crate::ops::{self, Layout, dense, dropout};
use crate::recompute;

fn options(config: &ModelConfig) -> &DebertaV2Options {
    config
        .deberta
        .as_ref()
        .expect("a DeBERTa-v2 config carries its options")
}

/// transformers' `make_log_bucket_position`: distances below `bucket_size / 2` are kept,
/// longer ones share logarithmically wider buckets up to `max_position`.
fn log_bucket(relative: i64, bucket_size: i64, max_position: i64) -> i64 {
    let mid = bucket_size / 2;
    let abs = if relative < mid && relative > -mid {
        mid - 1
    } else {
        relative.abs()
    };
    if abs <= mid {
        return relative;
    }
    // As torch, in f32.
    let log_pos = ((abs as f32 / mid as f32).ln() / ((max_position - 1) as f32 / mid as f32).ln()
        * (mid - 1) as f32)
        .ceil()
        + mid as f32;
    log_pos as i64 * relative.signum()
}

/// The rows of the relative embeddings each (query, key) pair reads: `c2p[q][k]` and
/// `p2c[k][q]`, from transformers' `build_relative_position` and
/// `disentangled_attention_bias`.
fn relative_indices(
    seq: usize,
    positions: &RelativePositions,
    device: &Device,
) -> [Tensor<2, Int>; 2] {
    let RelativePositions {
        span,
        buckets,
        max_distance,
    } = *positions;
    let relative = |q: usize, k: usize| {
        let distance = q as i64 - k as i64;
        if buckets > 0 {
            log_bucket(distance, buckets, max_distance)
        } else {
            distance
        }
    };
    let table = |f: &dyn Fn(usize, usize) -> i64| {
        let values: Vec<i64> = (0..seq)
            .flat_map(|row| (0..seq).map(move |column| (row, column)))
            .map(|(row, column)| f(row, column).clamp(0, 2 * span - 1))
            .collect();
        Tensor::<2, Int>::from_data(TensorData::new(values, [seq, seq]), device)
    };
    [
        table(&|q, k| relative(q, k) + span),
        // Row `k`, column `q`: the key's position relative to the query, negated.
        table(&|k, q| -relative(k, q) + span),
    ]
}

/// How relative positions are counted: `span` distances each side, bucketed where `buckets`
/// is positive, up to `max_distance`.
#[derive(Debug, Clone, Copy)]
struct RelativePositions {
    span: i64,
    buckets: i64,
    max_distance: i64,
}

/// Word embeddings, normalised, zeroed at padding and dropped out (transformers'
/// `DebertaV2Embeddings` without absolute positions or token types).
#[derive(Module, Debug)]
pub struct DebertaV2Embeddings {
    pub word_embeddings: Embedding,
    /// `embedding_size → hidden_size` where they differ (no bias).
    pub embed_proj: Option<Linear>,
    pub layer_norm: LayerNorm,
    pub dropout: Dropout,
}

impl DebertaV2Embeddings {
    pub fn new(config: &ModelConfig, device: &Device) -> Self {
        let width = config.embedding_size.unwrap_or(config.hidden_size);
        Self {
            word_embeddings: init::embedding(config, config.vocab_size, width, device),
            embed_proj: (width != config.hidden_size)
                .then(|| init::linear_with_bias(config, width, config.hidden_size, false, device)),
            layer_norm: init::layer_norm(config, config.hidden_size, device),
            dropout: init::dropout(config.hidden_dropout_prob),
        }
    }

    /// In `layout`: `[batch, seq, hidden]`, or `[1, tokens, hidden]` packed.
    pub fn forward(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Tensor<2, Int>,
        layout: &Layout,
    ) -> Tensor<3> {
        let (input_ids, attention_mask) =
            (layout.pack_ids(input_ids), layout.pack_ids(attention_mask));
        let [batch, seq] = input_ids.dims();
        let x = self.word_embeddings.forward(input_ids);
        let x = match &self.embed_proj {
            Some(project) => ops::per_token(project, x),
            None => x,
        };
        let real = attention_mask
            .float()
            .cast(x.dtype())
            .reshape([batch, seq, 1]);
        ops::token_dropout(&self.dropout, self.layer_norm.forward(x) * real, layout)
    }
}

/// transformers' `DisentangledSelfAttention` with shared position projections.
#[derive(Module, Debug)]
pub struct DisentangledSelfAttention {
    pub query_proj: Linear,
    pub key_proj: Linear,
    pub value_proj: Linear,
    pub dropout: Dropout,
    /// On the relative embeddings (transformers' `pos_dropout`, the hidden dropout).
    pub pos_dropout: Dropout,
    #[module(skip)]
    num_heads: usize,
    #[module(skip)]
    c2p: bool,
    #[module(skip)]
    p2c: bool,
}

impl DisentangledSelfAttention {
    pub fn new(config: &ModelConfig, device: &Device) -> Self {
        let h = config.hidden_size;
        let kinds = &options(config).pos_att_type;
        Self {
            query_proj: init::linear(config, h, h, device),
            key_proj: init::linear(config, h, h, device),
            value_proj: init::linear(config, h, h, device),
            dropout: init::dropout(config.attention_probs_dropout_prob),
            pos_dropout: init::dropout(config.hidden_dropout_prob),
            num_heads: config.num_attention_heads,
            c2p: kinds.iter().any(|kind| kind == "c2p"),
            p2c: kinds.iter().any(|kind| kind == "p2c"),
        }
    }

    /// `mask` is true where a query does not see a key, `[batch, 1, seq, seq]`;
    /// `relative_embeddings` `[2 × span, hidden]`, normalised by the encoder; `indices` from
    /// [`relative_indices`].
    pub fn forward(
        &self,
        hidden: Tensor<3>,
        mask: Tensor<4, Bool>,
        relative_embeddings: Tensor<2>,
        indices: &[Tensor<2, Int>; 2],
        layout: &Layout,
    ) -> Tensor<3> {
        let [q, k, v] = [&self.query_proj, &self.key_proj, &self.value_proj]
            .map(|dense| ops::split_heads(dense, &hidden, self.num_heads, layout));
        let head_dim = q.dims()[3];
        let relative = dropout(&self.pos_dropout, relative_embeddings)
            .cast(hidden.dtype())
            .unsqueeze_dim::<3>(0);
        let positions =
            |dense: &Linear| ops::split_heads(dense, &relative, self.num_heads, &Layout::Padded);
        let pos_key = self.c2p.then(|| positions(&self.key_proj));
        let pos_query = self.p2c.then(|| positions(&self.query_proj));
        let parts = 1 + usize::from(self.c2p) + usize::from(self.p2c);
        let [index, transposed_index] = indices.clone();
        let scores = ops::disentangled_scores(q, k, pos_query, pos_key, index, transposed_index);
        let divisor = ((head_dim * parts) as f64).sqrt();
        let probabilities = ops::masked_softmax(scores, mask, divisor);
        ops::merge_heads(dropout(&self.dropout, probabilities).matmul(v), layout)
    }
}

/// Self-attention and its output block (transformers' `DebertaV2Attention`).
#[derive(Module, Debug)]
pub struct DebertaV2Attention {
    /// `attention.self` in the checkpoint.
    pub self_attention: DisentangledSelfAttention,
    pub output: BertAddNorm,
}

/// One layer: BERT's, with the disentangled attention (transformers' `DebertaV2Layer`).
#[derive(Module, Debug)]
pub struct DebertaV2Layer {
    pub attention: DebertaV2Attention,
    pub intermediate: BertIntermediate,
    pub output: BertAddNorm,
}

impl DebertaV2Layer {
    pub fn new(config: &ModelConfig, device: &Device) -> Self {
        Self {
            attention: DebertaV2Attention {
                self_attention: DisentangledSelfAttention::new(config, device),
                output: BertAddNorm::new(config, config.hidden_size, device),
            },
            intermediate: BertIntermediate::new(config, device),
            output: BertAddNorm::new(config, config.intermediate_size, device),
        }
    }

    pub fn forward(
        &self,
        hidden: Tensor<3>,
        mask: Tensor<4, Bool>,
        relative_embeddings: Tensor<2>,
        indices: &[Tensor<2, Int>; 2],
        layout: &Layout,
    ) -> Tensor<3> {
        let attended = self.attention.self_attention.forward(
            hidden.clone(),
            mask,
            relative_embeddings,
            indices,
            layout,
        );
        let attended = self.attention.output.forward(attended, hidden, layout);
        self.output.forward(
            self.intermediate.forward(attended.clone()),
            attended,
            layout,
        )
    }
}

/// The layers with the shared relative embeddings (transformers' `DebertaV2Encoder`).
#[derive(Module, Debug)]
pub struct DebertaV2Encoder {
    pub layer: Vec<DebertaV2Layer>,
    /// `[2 × span, hidden]`.
    pub rel_embeddings: Embedding,
    /// Normalises the relative embeddings where `norm_rel_ebd` is `"layer_norm"`.
    pub layer_norm: Option<LayerNorm>,
}

/// The bare encoder (transformers' `DebertaV2Model`).
#[derive(Module, Debug)]
pub struct DebertaV2Model {
    pub embeddings: DebertaV2Embeddings,
    pub encoder: DebertaV2Encoder,
    #[module(skip)]
    positions: RelativePositions,
    /// Mixed precision and padding-free execution, as [`crate::BertModel`]'s.
    #[module(skip)]
    pub(crate) execution: Execution,
}

impl DebertaV2Model {
    pub fn new(config: &ModelConfig, device: &Device) -> Self {
        let options = options(config);
        let span = options.attention_span(config);
        Self {
            embeddings: DebertaV2Embeddings::new(config, device),
            encoder: DebertaV2Encoder {
                layer: (0..config.num_hidden_layers)
                    .map(|_| DebertaV2Layer::new(config, device))
                    .collect(),
                rel_embeddings: init::embedding(config, 2 * span, config.hidden_size, device),
                layer_norm: (options.norm_rel_ebd == "layer_norm")
                    .then(|| init::layer_norm(config, config.hidden_size, device)),
            },
            positions: RelativePositions {
                span: span as i64,
                buckets: options.position_buckets,
                max_distance: options.max_relative_distance(config) as i64,
            },
            execution: Execution::default(),
        }
    }

    /// The last hidden state, `[batch, seq, hidden]`, in the parameters' float type; DeBERTa-v3
    /// reads no token types.
    pub fn forward(&self, input: BertInput) -> Tensor<3> {
        let [batch, seq] = input.attention_mask.dims();
        let device = input.input_ids.device();
        // transformers' `get_attention_mask`: a pair is seen where both tokens are real, so a
        // padded query weighs all keys equally.
        let real = input.attention_mask.clone().equal_elem(1);
        let seen = real
            .clone()
            .reshape([batch, 1, seq, 1])
            .expand([batch, 1, seq, seq])
            .bool_and(
                real.reshape([batch, 1, 1, seq])
                    .expand([batch, 1, seq, seq]),
            );
        let mask = seen.bool_not();
        let indices = relative_indices(seq, &self.positions, &device);

        let layout = self.execution.layout(&input.attention_mask);
        let embedded = self
            .embeddings
            .forward(input.input_ids, input.attention_mask, &layout);
        let param_dtype = embedded.dtype();
        let relative = self.encoder.rel_embeddings.weight.val();
        let relative = match &self.encoder.layer_norm {
            Some(norm) => norm.forward(relative),
            None => relative,
        };
        let mut hidden = self.execution.compute_in(embedded);
        // The relative embeddings carry gradients into every layer: an input of each.
        let relative = relative.unsqueeze::<3>();
        for layer in &self.encoder.layer {
            let (mask, indices, layout) = (mask.clone(), indices.clone(), layout.clone());
            let checkpointing = self.execution.gradient_checkpointing;
            hidden = recompute::layer(
                checkpointing,
                layer,
                [hidden, relative.clone()],
                move |layer, [hidden, relative]| {
                    let relative = relative.squeeze_dim::<2>(0);
                    layer.forward(hidden, mask.clone(), relative, &indices, &layout)
                },
            );
        }
        layout.unpack(hidden).cast(param_dtype)
    }
}

/// Dense and activation on the first token (transformers' `ContextPooler`).
#[derive(Module, Debug)]
pub struct ContextPooler {
    pub dense: Linear,
    pub dropout: Dropout,
    #[module(skip)]
    activation: Activation,
}

/// transformers' `DebertaV2ForSequenceClassification`.
#[derive(Module, Debug)]
pub struct DebertaV2ForSequenceClassification {
    pub deberta: DebertaV2Model,
    pub pooler: ContextPooler,
    pub classifier: Linear,
    /// `cls_dropout`, else the hidden dropout.
    pub dropout: Dropout,
}

impl DebertaV2ForSequenceClassification {
    pub fn new(config: &ModelConfig, device: &Device) -> Self {
        let options = options(config);
        let h = config.hidden_size;
        Self {
            deberta: DebertaV2Model::new(config, device),
            pooler: ContextPooler {
                dense: init::linear(config, h, h, device),
                dropout: init::dropout(options.pooler_dropout),
                activation: options.pooler_hidden_act,
            },
            classifier: init::linear(config, h, config.label_count(), device),
            dropout: init::dropout(config.head_dropout()),
        }
    }

    /// Logits for a batch, and the mean loss when labels are given.
    pub fn forward(&self, input: BertInput, labels: Option<Labels>) -> SequenceClassifierOutput {
        let first = dropout(
            &self.pooler.dropout,
            first_token(self.deberta.forward(input)),
        );
        let pooled = ops::dense_activation_rows(&self.pooler.dense, self.pooler.activation, first);
        let logits = dense(&self.classifier, dropout(&self.dropout, pooled));
        let loss = labels.map(|labels| loss(logits.clone(), labels));
        SequenceClassifierOutput { loss, logits }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hand-computed from `make_log_bucket_position` with bucket size 8 and maximum 64:
    /// distances within 4 are kept; beyond, `ceil(ln(|d| / 4) / ln(63 / 4) × 3) + 4`.
    #[test]
    fn distances_beyond_half_the_buckets_share_log_buckets() {
        for (distance, bucket) in [
            (0, 0),
            (3, 3),
            (-4, -4),
            (5, 5),
            (11, 6),
            (-11, -6),
            (63, 7),
        ] {
            assert_eq!(log_bucket(distance, 8, 64), bucket, "distance {distance}");
        }
    }
}
