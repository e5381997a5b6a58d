//! DistilBERT as Burn modules, mirroring transformers' `modeling_distilbert.py`: checkpoint
//! keys `distilbert.embeddings`, `distilbert.transformer.layer.N.attention.{q,k,v,out}_lin`,
//! `….sa_layer_norm`, `….ffn.lin1` / `lin2`, `….output_layer_norm`, and the head's
//! `pre_classifier` and `classifier`.
//!
//! The layers compute what BERT's do, under other names, with one difference: no dropout
//! after the attention's output projection. There are no token types, and the head is
//! `classifier(dropout(relu(pre_classifier([CLS]))))`.

use burn::module::Module;
use burn::nn::{Dropout, Embedding, Linear};
use burn::tensor::activation::relu;
use burn::tensor::{Bool, Device, Int, Tensor};

use crate::bert::{BertInput, absolute_positions};
use crate::classifier::{
    Execution, Labels, SequenceClassifierOutput, first_token, loss, padding_mask,
};
use crate::config::{Activation, ModelConfig};
use crate::init;
use crate::layer_norm::LayerNorm;
use crate::ops::{self, Layout, dense, dropout};
use crate::recompute;

/// Word and position embeddings, summed, normalised and dropped out (transformers'
/// `Embeddings`).
#[derive(Module, Debug)]
pub struct DistilBertEmbeddings {
    pub word_embeddings: Embedding,
    pub position_embeddings: Embedding,
    pub layer_norm: LayerNorm,
    pub dropout: Dropout,
}

impl DistilBertEmbeddings {
    pub fn new(config: &ModelConfig, device: &Device) -> Self {
        let dim = config.hidden_size;
        Self {
            word_embeddings: init::embedding(config, config.vocab_size, dim, device),
            position_embeddings: init::embedding(
                config,
                config.max_position_embeddings,
                dim,
                device,
            ),
            layer_norm: init::layer_norm(config, dim, device),
            dropout: init::dropout(config.hidden_dropout_prob),
        }
    }

    pub fn forward(&self, input_ids: Tensor<2, Int>, layout: &Layout) -> Tensor<3> {
        let positions = layout.pack_ids(absolute_positions(&input_ids));
        let x = self.word_embeddings.forward(layout.pack_ids(input_ids))
            + self.position_embeddings.forward(positions);
        ops::token_dropout(&self.dropout, self.layer_norm.forward(x), layout)
    }
}

/// transformers' `DistilBertSelfAttention`, the output projection `out_lin` included.
#[derive(Module, Debug)]
pub struct MultiHeadSelfAttention {
    pub q_lin: Linear,
    pub k_lin: Linear,
    pub v_lin: Linear,
    pub out_lin: Linear,
    pub dropout: Dropout,
    #[module(skip)]
    n_heads: usize,
}

impl MultiHeadSelfAttention {
    pub fn new(config: &ModelConfig, device: &Device) -> Self {
        let dim = config.hidden_size;
        Self {
            q_lin: init::linear(config, dim, dim, device),
            k_lin: init::linear(config, dim, dim, device),
            v_lin: init::linear(config, dim, dim, device),
            out_lin: init::linear(config, dim, dim, device),
            dropout: init::dropout(config.attention_probs_dropout_prob),
            n_heads: config.num_attention_heads,
        }
    }

    /// The attended context before `out_lin`, which the block's Add & Norm applies.
    pub fn forward(
        &self,
        hidden: Tensor<3>,
        padding: Tensor<4, Bool>,
        layout: &Layout,
    ) -> Tensor<3> {
        let [q, k, v] = [&self.q_lin, &self.k_lin, &self.v_lin]
            .map(|dense| ops::split_heads(dense, &hidden, self.n_heads, layout));
        ops::self_attention(q, k, v, padding, &self.dropout, layout)
    }
}

/// The feed-forward network: `lin1`, the activation, `lin2`, dropout (transformers' `FFN`).
#[derive(Module, Debug)]
pub struct Ffn {
    pub lin1: Linear,
    pub lin2: Linear,
    pub dropout: Dropout,
    #[module(skip)]
    activation: Activation,
}

impl Ffn {
    pub fn new(config: &ModelConfig, device: &Device) -> Self {
        Self {
            lin1: init::linear(config, config.hidden_size, config.intermediate_size, device),
            lin2: init::linear(config, config.intermediate_size, config.hidden_size, device),
            dropout: init::dropout(config.hidden_dropout_prob),
            activation: config.hidden_act,
        }
    }
}

/// One layer (transformers' `TransformerBlock`): post-norm attention and feed-forward.
#[derive(Module, Debug)]
pub struct TransformerBlock {
    pub attention: MultiHeadSelfAttention,
    pub sa_layer_norm: LayerNorm,
    pub ffn: Ffn,
    pub output_layer_norm: LayerNorm,
    /// DistilBERT drops nothing between `out_lin` and `sa_layer_norm`.
    no_dropout: Dropout,
}

impl TransformerBlock {
    pub fn new(config: &ModelConfig, device: &Device) -> Self {
        Self {
            attention: MultiHeadSelfAttention::new(config, device),
            sa_layer_norm: init::layer_norm(config, config.hidden_size, device),
            ffn: Ffn::new(config, device),
            output_layer_norm: init::layer_norm(config, config.hidden_size, device),
            no_dropout: init::dropout(0.0),
        }
    }

    pub fn forward(
        &self,
        hidden: Tensor<3>,
        padding: Tensor<4, Bool>,
        layout: &Layout,
    ) -> Tensor<3> {
        let context = self.attention.forward(hidden.clone(), padding, layout);
        let attended = ops::add_norm(
            &self.attention.out_lin,
            &self.no_dropout,
            &self.sa_layer_norm,
            context,
            hidden,
            layout,
        );
        let expanded = ops::dense_activation(&self.ffn.lin1, self.ffn.activation, attended.clone());
        ops::add_norm(
            &self.ffn.lin2,
            &self.ffn.dropout,
            &self.output_layer_norm,
            expanded,
            attended,
            layout,
        )
    }
}

/// The stack of layers; `layer` is a list so checkpoint keys read `transformer.layer.N`.
#[derive(Module, Debug)]
pub struct Transformer {
    pub layer: Vec<TransformerBlock>,
}

/// The bare encoder (transformers' `DistilBertModel`).
#[derive(Module, Debug)]
pub struct DistilBertModel {
    pub embeddings: DistilBertEmbeddings,
    pub transformer: Transformer,
    /// Mixed precision and padding-free execution, as [`crate::BertModel`]'s.
    #[module(skip)]
    pub(crate) execution: Execution,
}

impl DistilBertModel {
    pub fn new(config: &ModelConfig, device: &Device) -> Self {
        Self {
            embeddings: DistilBertEmbeddings::new(config, device),
            transformer: Transformer {
                layer: (0..config.num_hidden_layers)
                    .map(|_| TransformerBlock::new(config, device))
                    .collect(),
            },
            execution: Execution::default(),
        }
    }

    /// The last hidden state, `[batch, seq, dim]`, in the parameters' float type; DistilBERT
    /// reads no token types.
    pub fn forward(&self, input: BertInput) -> Tensor<3> {
        let layout = self.execution.layout(&input.attention_mask);
        let padding = padding_mask(input.attention_mask);
        let embedded = self.embeddings.forward(input.input_ids, &layout);
        let param_dtype = embedded.dtype();
        let mut hidden = self.execution.compute_in(embedded);
        for layer in &self.transformer.layer {
            let (padding, layout) = (padding.clone(), layout.clone());
            let checkpointing = self.execution.gradient_checkpointing;
            hidden = recompute::layer(checkpointing, layer, [hidden], move |layer, [hidden]| {
                layer.forward(hidden, padding.clone(), &layout)
            });
        }
        layout.unpack(hidden).cast(param_dtype)
    }
}

/// transformers' `DistilBertForSequenceClassification`.
#[derive(Module, Debug)]
pub struct DistilBertForSequenceClassification {
    pub distilbert: DistilBertModel,
    pub pre_classifier: Linear,
    pub classifier: Linear,
    /// `seq_classif_dropout`.
    pub dropout: Dropout,
}

impl DistilBertForSequenceClassification {
    pub fn new(config: &ModelConfig, device: &Device) -> Self {
        let dim = config.hidden_size;
        Self {
            distilbert: DistilBertModel::new(config, device),
            pre_classifier: init::linear(config, dim, dim, device),
            classifier: init::linear(config, dim, config.label_count(), device),
            dropout: init::dropout(config.head_dropout()),
        }
    }

    /// Logits for a batch, and the mean loss when labels are given.
    pub fn forward(&self, input: BertInput, labels: Option<Labels>) -> SequenceClassifierOutput {
        let pooled = relu(dense(
            &self.pre_classifier,
            first_token(self.distilbert.forward(input)),
        ));
        let logits = dense(&self.classifier, dropout(&self.dropout, pooled));
        let loss = labels.map(|labels| loss(logits.clone(), labels));
        SequenceClassifierOutput { loss, logits }
    }
}
