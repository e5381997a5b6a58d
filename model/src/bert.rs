//! BERT as Burn modules, mirroring transformers' `modeling_bert.py` so that every
//! checkpoint key has an obvious home: `embeddings`, `encoder.layer.N.attention.self`,
//! `...attention.output`, `...intermediate`, `...output`, `pooler`, and for
//! sequence classification `bert.*` plus `classifier`.
//!
//! Two names differ from the checkpoint because Rust forbids them: `attention.self`
//! is `attention.self_attention`, and `LayerNorm` is `layer_norm`. `crate::checkpoint`
//! maps them both ways.
//!
//! The modules carry no backend type: the `Device` a model is created on decides
//! where it runs (ndarray, flex, wgpu or CUDA), and an autodiff device makes it trainable.
//! The operations that have a faster GPU version (LayerNorm, Add & Norm, GELU, the heads, the
//! attention's softmax, dropout) are called from `crate::ops`, which holds both.

use burn::module::Module;
use burn::nn::{Dropout, Embedding, Linear};
use burn::tensor::{Bool, Device, Int, Tensor};

use crate::classifier::{
    Execution, Labels, SequenceClassifierOutput, first_token, loss, padding_mask,
};
use crate::config::{Activation, ModelConfig};
use crate::init;
use crate::layer_norm::LayerNorm;
use crate::ops::{self, Layout, dense, dropout};
use crate::recompute;

/// One batch of tokenized text, as the tokenizer gives it.
#[derive(Debug, Clone)]
pub struct BertInput {
    /// Token ids, `[batch, seq]`.
    pub input_ids: Tensor<2, Int>,
    /// 0 for the first sentence of a pair, 1 for the second, `[batch, seq]`; the families
    /// without token types read none.
    pub token_type_ids: Tensor<2, Int>,
    /// 1 for a real token, 0 for padding, `[batch, seq]`.
    pub attention_mask: Tensor<2, Int>,
}

/// What `BertModel::forward` returns, like transformers' `BaseModelOutputWithPooling`.
#[derive(Debug, Clone)]
pub struct BertOutput {
    /// `[batch, seq, hidden]`.
    pub last_hidden_state: Tensor<3>,
    /// `tanh(dense([CLS]))`, `[batch, hidden]`; `None` for a model without pooler.
    pub pooler_output: Option<Tensor<2>>,
}

/// Word, position and token-type embeddings, summed, normalised and dropped out.
#[derive(Module, Debug)]
pub struct BertEmbeddings {
    pub word_embeddings: Embedding,
    pub position_embeddings: Embedding,
    pub token_type_embeddings: Embedding,
    pub layer_norm: LayerNorm,
    pub dropout: Dropout,
}

impl BertEmbeddings {
    /// Embeddings of `width`: the hidden size, or ELECTRA's `embedding_size`.
    pub fn new(config: &ModelConfig, width: usize, device: &Device) -> Self {
        Self {
            word_embeddings: init::embedding(config, config.vocab_size, width, device),
            position_embeddings: init::embedding(
                config,
                config.max_position_embeddings,
                width,
                device,
            ),
            token_type_embeddings: init::embedding(config, config.type_vocab_size, width, device),
            layer_norm: init::layer_norm(config, width, device),
            dropout: init::dropout(config.hidden_dropout_prob),
        }
    }

    /// Embeddings at the absolute positions 0..seq, the same for every row (transformers'
    /// `position_ids`), in `layout`.
    ///
    /// # Shapes
    ///
    /// `input_ids` and `token_type_ids` `[batch, seq]`; the output is `[batch, seq, width]`,
    /// or `[1, tokens, width]` packed.
    pub fn forward(
        &self,
        input_ids: Tensor<2, Int>,
        token_type_ids: Tensor<2, Int>,
        layout: &Layout,
    ) -> Tensor<3> {
        let positions = absolute_positions(&input_ids);
        self.forward_at(input_ids, token_type_ids, positions, layout)
    }

    /// Embeddings at the given positions, `[batch, seq]` each, in `layout`.
    pub fn forward_at(
        &self,
        input_ids: Tensor<2, Int>,
        token_type_ids: Tensor<2, Int>,
        positions: Tensor<2, Int>,
        layout: &Layout,
    ) -> Tensor<3> {
        let x = self.word_embeddings.forward(layout.pack_ids(input_ids))
            + self.position_embeddings.forward(layout.pack_ids(positions))
            + self
                .token_type_embeddings
                .forward(layout.pack_ids(token_type_ids));
        ops::token_dropout(&self.dropout, self.layer_norm.forward(x), layout)
    }
}

/// Positions 0..seq in every row of `[batch, seq]` ids.
pub(crate) fn absolute_positions(input_ids: &Tensor<2, Int>) -> Tensor<2, Int> {
    let [batch, seq] = input_ids.dims();
    Tensor::<1, Int>::arange(0..seq as i64, &input_ids.device())
        .unsqueeze::<2>()
        .expand([batch, seq])
}

/// Multi-head scaled dot-product self-attention (transformers' `BertSelfAttention`).
#[derive(Module, Debug)]
pub struct BertSelfAttention {
    pub query: Linear,
    pub key: Linear,
    pub value: Linear,
    pub dropout: Dropout,
    num_heads: usize,
}

impl BertSelfAttention {
    pub fn new(config: &ModelConfig, device: &Device) -> Self {
        let h = config.hidden_size;
        Self {
            query: init::linear(config, h, h, device),
            key: init::linear(config, h, h, device),
            value: init::linear(config, h, h, device),
            dropout: init::dropout(config.attention_probs_dropout_prob),
            num_heads: config.num_attention_heads,
        }
    }

    /// `padding` is true at padded key positions, `[batch, 1, 1, seq]`; `hidden` is in
    /// `layout`, and so is the output.
    pub fn forward(
        &self,
        hidden: Tensor<3>,
        padding: Tensor<4, Bool>,
        layout: &Layout,
    ) -> Tensor<3> {
        let [q, k, v] = [&self.query, &self.key, &self.value]
            .map(|dense| ops::split_heads(dense, &hidden, self.num_heads, layout));
        ops::self_attention(q, k, v, padding, &self.dropout, layout)
    }
}

/// Dense + dropout + residual LayerNorm, the "Add & Norm" after the attention and after the
/// feed-forward network: transformers' `BertSelfOutput` and `BertOutput`, which differ only
/// in the dense layer's input size.
#[derive(Module, Debug)]
pub struct BertAddNorm {
    pub dense: Linear,
    pub layer_norm: LayerNorm,
    pub dropout: Dropout,
}

impl BertAddNorm {
    /// `d_in` is the hidden size after the attention, the intermediate size after the
    /// feed-forward network.
    pub fn new(config: &ModelConfig, d_in: usize, device: &Device) -> Self {
        Self {
            dense: init::linear(config, d_in, config.hidden_size, device),
            layer_norm: init::layer_norm(config, config.hidden_size, device),
            dropout: init::dropout(config.hidden_dropout_prob),
        }
    }

    /// `layer_norm(dropout(dense(hidden)) + residual)`, both in `layout`.
    pub fn forward(&self, hidden: Tensor<3>, residual: Tensor<3>, layout: &Layout) -> Tensor<3> {
        ops::add_norm(
            &self.dense,
            &self.dropout,
            &self.layer_norm,
            hidden,
            residual,
            layout,
        )
    }
}

/// Self-attention and its output block.
#[derive(Module, Debug)]
pub struct BertAttention {
    /// `attention.self` in the checkpoint.
    pub self_attention: BertSelfAttention,
    pub output: BertAddNorm,
}

impl BertAttention {
    pub fn new(config: &ModelConfig, device: &Device) -> Self {
        Self {
            self_attention: BertSelfAttention::new(config, device),
            output: BertAddNorm::new(config, config.hidden_size, device),
        }
    }

    pub fn forward(
        &self,
        hidden: Tensor<3>,
        padding: Tensor<4, Bool>,
        layout: &Layout,
    ) -> Tensor<3> {
        let attended = self.self_attention.forward(hidden.clone(), padding, layout);
        self.output.forward(attended, hidden, layout)
    }
}

/// The feed-forward expansion with the configured activation.
#[derive(Module, Debug)]
pub struct BertIntermediate {
    pub dense: Linear,
    #[module(skip)]
    activation: Activation,
}

impl BertIntermediate {
    pub fn new(config: &ModelConfig, device: &Device) -> Self {
        Self {
            dense: init::linear(config, config.hidden_size, config.intermediate_size, device),
            activation: config.hidden_act,
        }
    }

    pub fn forward(&self, hidden: Tensor<3>) -> Tensor<3> {
        ops::dense_activation(&self.dense, self.activation, hidden)
    }
}

/// One transformer block: attention, then the feed-forward network.
#[derive(Module, Debug)]
pub struct BertLayer {
    pub attention: BertAttention,
    pub intermediate: BertIntermediate,
    /// The projection back to the hidden size (transformers' `BertOutput`).
    pub output: BertAddNorm,
}

impl BertLayer {
    pub fn new(config: &ModelConfig, device: &Device) -> Self {
        Self {
            attention: BertAttention::new(config, device),
            intermediate: BertIntermediate::new(config, device),
            output: BertAddNorm::new(config, config.intermediate_size, device),
        }
    }

    pub fn forward(
        &self,
        hidden: Tensor<3>,
        padding: Tensor<4, Bool>,
        layout: &Layout,
    ) -> Tensor<3> {
        let attended = self.attention.forward(hidden, padding, layout);
        self.output.forward(
            self.intermediate.forward(attended.clone()),
            attended,
            layout,
        )
    }
}

/// The stack of layers; `layer` is a list so checkpoint keys read `encoder.layer.N`.
#[derive(Module, Debug)]
pub struct BertEncoder {
    pub layer: Vec<BertLayer>,
}

impl BertEncoder {
    pub fn new(config: &ModelConfig, device: &Device) -> Self {
        Self {
            layer: (0..config.num_hidden_layers)
                .map(|_| BertLayer::new(config, device))
                .collect(),
        }
    }

    /// `hidden` in `layout`, and the output too; with `checkpointing`, each layer is
    /// recomputed in the backward pass ([`recompute::layer`]).
    pub fn forward(
        &self,
        mut hidden: Tensor<3>,
        padding: Tensor<4, Bool>,
        layout: &Layout,
        checkpointing: bool,
    ) -> Tensor<3> {
        for layer in &self.layer {
            let (padding, layout) = (padding.clone(), layout.clone());
            hidden = recompute::layer(checkpointing, layer, [hidden], move |layer, [hidden]| {
                layer.forward(hidden, padding.clone(), &layout)
            });
        }
        hidden
    }
}

/// `tanh(dense(hidden[:, 0]))`: the [CLS] summary the classifier reads.
#[derive(Module, Debug)]
pub struct BertPooler {
    pub dense: Linear,
}

impl BertPooler {
    pub fn new(config: &ModelConfig, device: &Device) -> Self {
        Self {
            dense: init::linear(config, config.hidden_size, config.hidden_size, device),
        }
    }

    pub fn forward(&self, hidden: Tensor<3>) -> Tensor<2> {
        dense(&self.dense, first_token(hidden)).tanh()
    }
}

/// The bare encoder (transformers' `BertModel`).
#[derive(Module, Debug)]
pub struct BertModel {
    pub embeddings: BertEmbeddings,
    pub encoder: BertEncoder,
    pub pooler: Option<BertPooler>,
    /// Mixed precision and padding-free execution ([`crate::SequenceClassifier`]).
    #[module(skip)]
    pub(crate) execution: Execution,
}

impl BertModel {
    pub fn new(config: &ModelConfig, device: &Device) -> Self {
        Self {
            embeddings: BertEmbeddings::new(config, config.hidden_size, device),
            encoder: BertEncoder::new(config, device),
            pooler: Some(BertPooler::new(config, device)),
            execution: Execution::default(),
        }
    }

    /// Runs the embeddings in the parameters' float type (a lookup of f32 rows is cheaper
    /// than casting a 30,522-row table), the encoder and pooler in the mixed-precision type if
    /// one is set, and returns the outputs in the parameters' type again. Padding-free, the
    /// last hidden state is zero at padded positions.
    pub fn forward(&self, input: BertInput) -> BertOutput {
        let layout = self.execution.layout(&input.attention_mask);
        let padding = padding_mask(input.attention_mask);
        let embedded = self
            .embeddings
            .forward(input.input_ids, input.token_type_ids, &layout);
        let param_dtype = embedded.dtype();
        let hidden = self.encoder.forward(
            self.execution.compute_in(embedded),
            padding,
            &layout,
            self.execution.gradient_checkpointing,
        );
        let last_hidden_state = layout.unpack(hidden);
        let pooler_output = self
            .pooler
            .as_ref()
            .map(|p| p.forward(last_hidden_state.clone()).cast(param_dtype));
        BertOutput {
            last_hidden_state: last_hidden_state.cast(param_dtype),
            pooler_output,
        }
    }
}

/// BERT with dropout and a linear head on the pooled output
/// (transformers' `BertForSequenceClassification`).
#[derive(Module, Debug)]
pub struct BertForSequenceClassification {
    pub bert: BertModel,
    pub dropout: Dropout,
    pub classifier: Linear,
}

impl BertForSequenceClassification {
    /// A randomly initialised model; `crate::checkpoint` loads pretrained weights into it.
    pub fn new(config: &ModelConfig, device: &Device) -> Self {
        Self {
            bert: BertModel::new(config, device),
            dropout: init::dropout(config.head_dropout()),
            classifier: init::linear(config, config.hidden_size, config.label_count(), device),
        }
    }

    /// Logits for a batch, and the mean loss when labels are given.
    pub fn forward(&self, input: BertInput, labels: Option<Labels>) -> SequenceClassifierOutput {
        let output = self.bert.forward(input);
        let pooled = output
            .pooler_output
            .expect("BertForSequenceClassification always has a pooler");
        let logits = self.classifier.forward(dropout(&self.dropout, pooled));
        let loss = labels.map(|labels| loss(logits.clone(), labels));
        SequenceClassifierOutput { loss, logits }
    }
}
