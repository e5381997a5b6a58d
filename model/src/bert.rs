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

use burn::module::{Initializer, Module};
use burn::nn::activation::ActivationConfig;
use burn::nn::{Dropout, DropoutConfig, Embedding, EmbeddingConfig, Linear, LinearConfig};
use burn::tensor::activation::log_softmax;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, Device, FloatDType, Int, Tensor};

use crate::config::{Activation, BertConfig};
use crate::dropout::dropout_applies;
use crate::layer_norm::LayerNorm;
use crate::ops::{self, dense, dropout};

/// One batch of tokenized text, as the tokenizer gives it.
#[derive(Debug, Clone)]
pub struct BertInput {
    /// Token ids, `[batch, seq]`.
    pub input_ids: Tensor<2, Int>,
    /// 0 for the first sentence of a pair, 1 for the second, `[batch, seq]`.
    pub token_type_ids: Tensor<2, Int>,
    /// 1 for a real token, 0 for padding, `[batch, seq]`.
    pub attention_mask: Tensor<2, Int>,
}

/// Targets for the classification head's loss.
#[derive(Debug, Clone)]
pub enum Labels {
    /// Class indices, `[batch]`: cross-entropy loss.
    Classes(Tensor<1, Int>),
    /// Scores, `[batch]`, for a one-output head (STS-B): mean squared error.
    Scores(Tensor<1>),
}

/// What `BertModel::forward` returns, like transformers' `BaseModelOutputWithPooling`.
#[derive(Debug, Clone)]
pub struct BertOutput {
    /// `[batch, seq, hidden]`.
    pub last_hidden_state: Tensor<3>,
    /// `tanh(dense([CLS]))`, `[batch, hidden]`; `None` for a model without pooler.
    pub pooler_output: Option<Tensor<2>>,
}

/// What `BertForSequenceClassification::forward` returns: `outputs.loss, outputs.logits`.
#[derive(Debug, Clone)]
pub struct SequenceClassifierOutput {
    /// Mean loss over the batch, `[1]`, when labels were given.
    pub loss: Option<Tensor<1>>,
    /// `[batch, num_labels]`.
    pub logits: Tensor<2>,
}

/// transformers initialises weights from N(0, initializer_range) and biases at zero.
fn normal(config: &BertConfig) -> Initializer {
    Initializer::Normal {
        mean: 0.0,
        std: config.initializer_range,
    }
}

fn linear(config: &BertConfig, d_in: usize, d_out: usize, device: &Device) -> Linear {
    let mut linear = LinearConfig::new(d_in, d_out)
        .with_initializer(normal(config))
        .init(device);
    linear.bias = linear.bias.map(|bias| bias.map(|b| b.zeros_like()));
    linear
}

fn layer_norm(config: &BertConfig, device: &Device) -> LayerNorm {
    // BERT's epsilon is 1e-12, not Burn's default 1e-5.
    LayerNorm::new(config.hidden_size, config.layer_norm_eps, device)
}

fn dropout_layer(p: f64) -> Dropout {
    DropoutConfig::new(p).init()
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
    pub fn new(config: &BertConfig, device: &Device) -> Self {
        let embedding = |n, d| {
            EmbeddingConfig::new(n, d)
                .with_initializer(normal(config))
                .init(device)
        };
        Self {
            word_embeddings: embedding(config.vocab_size, config.hidden_size),
            position_embeddings: embedding(config.max_position_embeddings, config.hidden_size),
            token_type_embeddings: embedding(config.type_vocab_size, config.hidden_size),
            layer_norm: layer_norm(config, device),
            dropout: dropout_layer(config.hidden_dropout_prob),
        }
    }

    pub fn forward(&self, input_ids: Tensor<2, Int>, token_type_ids: Tensor<2, Int>) -> Tensor<3> {
        let [batch, seq] = input_ids.dims();
        let device = input_ids.device();
        // Absolute positions 0..seq, the same for every row (transformers' `position_ids`).
        let positions = Tensor::<1, Int>::arange(0..seq as i64, &device)
            .unsqueeze::<2>()
            .expand([batch, seq]);
        let x = self.word_embeddings.forward(input_ids)
            + self.position_embeddings.forward(positions)
            + self.token_type_embeddings.forward(token_type_ids);
        dropout(&self.dropout, self.layer_norm.forward(x))
    }
}

/// Multi-head scaled dot-product self-attention (transformers' `BertSelfAttention`).
#[derive(Module, Debug)]
pub struct BertSelfAttention {
    pub query: Linear,
    pub key: Linear,
    pub value: Linear,
    pub dropout: Dropout,
    num_heads: usize,
    head_dim: usize,
}

impl BertSelfAttention {
    pub fn new(config: &BertConfig, device: &Device) -> Self {
        let h = config.hidden_size;
        Self {
            query: linear(config, h, h, device),
            key: linear(config, h, h, device),
            value: linear(config, h, h, device),
            dropout: dropout_layer(config.attention_probs_dropout_prob),
            num_heads: config.num_attention_heads,
            head_dim: config.head_dim(),
        }
    }

    /// `padding` is true at padded key positions, `[batch, 1, 1, seq]`.
    pub fn forward(&self, hidden: Tensor<3>, padding: Tensor<4, Bool>) -> Tensor<3> {
        let [batch, seq, _] = hidden.dims();
        let device = hidden.device();
        let [q, k, v] = [&self.query, &self.key, &self.value]
            .map(|dense| ops::split_heads(dense, &hidden, self.num_heads));

        let context = if dropout_applies(&self.dropout, &device) {
            let probabilities =
                ops::attention_probabilities(q.matmul(k.transpose()), padding, self.head_dim);
            dropout(&self.dropout, probabilities).matmul(v)
        } else {
            // Without dropout on the probabilities, Burn's fused attention computes the same
            // softmax(QKᵀ/√d)·V (flex splits it over batch × heads on every core). It gives
            // padded keys -inf, transformers the most negative float: both weigh 0.
            let mask = padding.expand([batch, self.num_heads, seq, seq]);
            attention(q, k, v, Some(mask), None, AttentionModuleOptions::default())
        };
        ops::merge_heads(context)
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
    pub fn new(config: &BertConfig, d_in: usize, device: &Device) -> Self {
        Self {
            dense: linear(config, d_in, config.hidden_size, device),
            layer_norm: layer_norm(config, device),
            dropout: dropout_layer(config.hidden_dropout_prob),
        }
    }

    /// `layer_norm(dropout(dense(hidden)) + residual)`.
    pub fn forward(&self, hidden: Tensor<3>, residual: Tensor<3>) -> Tensor<3> {
        ops::add_norm(
            &self.dense,
            &self.dropout,
            &self.layer_norm,
            hidden,
            residual,
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
    pub fn new(config: &BertConfig, device: &Device) -> Self {
        Self {
            self_attention: BertSelfAttention::new(config, device),
            output: BertAddNorm::new(config, config.hidden_size, device),
        }
    }

    pub fn forward(&self, hidden: Tensor<3>, padding: Tensor<4, Bool>) -> Tensor<3> {
        let attended = self.self_attention.forward(hidden.clone(), padding);
        self.output.forward(attended, hidden)
    }
}

/// The feed-forward expansion with the configured activation.
#[derive(Module, Debug)]
pub struct BertIntermediate {
    pub dense: Linear,
    activation: burn::nn::activation::Activation,
}

impl BertIntermediate {
    pub fn new(config: &BertConfig, device: &Device) -> Self {
        let activation = match config.hidden_act {
            Activation::Gelu => ActivationConfig::Gelu,
            Activation::GeluNew | Activation::GeluPytorchTanh => ActivationConfig::GeluApproximate,
            Activation::Relu => ActivationConfig::Relu,
        };
        Self {
            dense: linear(config, config.hidden_size, config.intermediate_size, device),
            activation: activation.init(device),
        }
    }

    pub fn forward(&self, hidden: Tensor<3>) -> Tensor<3> {
        match &self.activation {
            burn::nn::activation::Activation::Gelu(gelu) if !gelu.approximate => {
                ops::dense_gelu(&self.dense, hidden)
            }
            activation => activation.forward(ops::per_token(&self.dense, hidden)),
        }
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
    pub fn new(config: &BertConfig, device: &Device) -> Self {
        Self {
            attention: BertAttention::new(config, device),
            intermediate: BertIntermediate::new(config, device),
            output: BertAddNorm::new(config, config.intermediate_size, device),
        }
    }

    pub fn forward(&self, hidden: Tensor<3>, padding: Tensor<4, Bool>) -> Tensor<3> {
        let attended = self.attention.forward(hidden, padding);
        self.output
            .forward(self.intermediate.forward(attended.clone()), attended)
    }
}

/// The stack of layers; `layer` is a list so checkpoint keys read `encoder.layer.N`.
#[derive(Module, Debug)]
pub struct BertEncoder {
    pub layer: Vec<BertLayer>,
}

impl BertEncoder {
    pub fn new(config: &BertConfig, device: &Device) -> Self {
        Self {
            layer: (0..config.num_hidden_layers)
                .map(|_| BertLayer::new(config, device))
                .collect(),
        }
    }

    pub fn forward(&self, mut hidden: Tensor<3>, padding: Tensor<4, Bool>) -> Tensor<3> {
        for layer in &self.layer {
            hidden = layer.forward(hidden, padding.clone());
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
    pub fn new(config: &BertConfig, device: &Device) -> Self {
        Self {
            dense: linear(config, config.hidden_size, config.hidden_size, device),
        }
    }

    pub fn forward(&self, hidden: Tensor<3>) -> Tensor<2> {
        let [batch, _, hidden_size] = hidden.dims();
        let cls = hidden.narrow(1, 0, 1).reshape([batch, hidden_size]);
        dense(&self.dense, cls).tanh()
    }
}

/// The bare encoder (transformers' `BertModel`).
#[derive(Module, Debug)]
pub struct BertModel {
    pub embeddings: BertEmbeddings,
    pub encoder: BertEncoder,
    pub pooler: Option<BertPooler>,
    /// Mixed precision: the float type the encoder and pooler compute in, when it is not the
    /// parameters' own. Set with [`BertForSequenceClassification::with_compute_dtype`].
    #[module(skip)]
    compute_dtype: Option<FloatDType>,
}

impl BertModel {
    pub fn new(config: &BertConfig, device: &Device) -> Self {
        Self {
            embeddings: BertEmbeddings::new(config, device),
            encoder: BertEncoder::new(config, device),
            pooler: Some(BertPooler::new(config, device)),
            compute_dtype: None,
        }
    }

    /// Runs the embeddings in the parameters' float type (a lookup of f32 rows is cheaper
    /// than casting a 30,522-row table), the encoder and pooler in the mixed-precision type if one is set,
    /// and returns the outputs in the parameters' type again.
    pub fn forward(&self, input: BertInput) -> BertOutput {
        let [batch, seq] = input.attention_mask.dims();
        let padding = input
            .attention_mask
            .equal_elem(0)
            .reshape([batch, 1, 1, seq]);
        let embedded = self
            .embeddings
            .forward(input.input_ids, input.token_type_ids);
        let param_dtype = embedded.dtype();
        let embedded = match self.compute_dtype {
            Some(dtype) => embedded.cast(dtype),
            None => embedded,
        };
        let last_hidden_state = self.encoder.forward(embedded, padding);
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
    pub fn new(config: &BertConfig, device: &Device) -> Self {
        // As transformers: `classifier_dropout` when set, else the hidden dropout.
        let head_dropout = config
            .classifier_dropout
            .unwrap_or(config.hidden_dropout_prob);
        Self {
            bert: BertModel::new(config, device),
            dropout: dropout_layer(head_dropout),
            classifier: linear(config, config.hidden_size, config.label_count(), device),
        }
    }

    /// Mixed precision: the encoder computes in `dtype` (bf16, say) while the parameters, their
    /// gradients and so the optimizer's state stay in their own type (f32), as Accelerate's
    /// `mixed_precision="bf16"` trains. The embeddings, the classification head and the loss
    /// stay in the parameters' type; LayerNorm and the attention's softmax accumulate in f32.
    /// `None` computes everything in the parameters' type.
    pub fn with_compute_dtype(mut self, dtype: Option<FloatDType>) -> Self {
        self.bert.compute_dtype = dtype;
        self
    }

    /// The mixed-precision type the encoder computes in, if any
    /// ([`Self::with_compute_dtype`]).
    pub fn compute_dtype(&self) -> Option<FloatDType> {
        self.bert.compute_dtype
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

/// Mean cross-entropy over classes, or mean squared error for a one-output head.
pub fn loss(logits: Tensor<2>, labels: Labels) -> Tensor<1> {
    match labels {
        Labels::Classes(classes) => {
            let picked = log_softmax(logits, 1).gather(1, classes.unsqueeze_dim(1));
            picked.mean().neg()
        }
        Labels::Scores(scores) => {
            let [batch, _] = logits.dims();
            (logits.reshape([batch]) - scores).square().mean()
        }
    }
}
