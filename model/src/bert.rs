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

use burn::module::{Initializer, Module};
use burn::nn::activation::ActivationConfig;
use burn::nn::{Dropout, DropoutConfig, Embedding, EmbeddingConfig, Linear, LinearConfig};
use burn::tensor::activation::{log_softmax, softmax};
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, DType, Device, FloatDType, Int, Tensor};

use crate::config::{Activation, BertConfig};
use crate::dropout::{dropout, dropout_applies};
use crate::layer_norm::LayerNorm;

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

/// `linear.forward(x)` in `x`'s float type. Under mixed precision
/// ([`BertForSequenceClassification::with_compute_dtype`]) the activations are bf16 while the
/// weights stay f32: the weights are cast for the product, as `torch.autocast` does, and their
/// gradients come back in f32 through the cast.
fn dense<const D: usize>(linear: &Linear, x: Tensor<D>) -> Tensor<D> {
    let dtype = x.dtype();
    burn::tensor::module::linear(
        x,
        linear.weight.val().cast(dtype),
        linear.bias.as_ref().map(|bias| bias.val().cast(dtype)),
    )
}

/// `linear` on every token of `[batch, seq, d_in]`, as one `[batch × seq, d_in]` matrix
/// product. Burn 0.22 keeps a 3-d input whose `seq` is a multiple of 8 as `batch` products
/// with the weight broadcast, and flex packs the weight again for each of them; as one
/// product a MiniLM train step took 1160–1190 ms instead of 1400–1470 (BENCHMARKS.md).
fn per_token(linear: &Linear, x: Tensor<3>) -> Tensor<3> {
    let [batch, seq, d_in] = x.dims();
    let d_out = linear.weight.dims()[1];
    dense(linear, x.reshape([batch * seq, d_in])).reshape([batch, seq, d_out])
}

/// `x · weight` on every token, without `linear`'s bias, which the GPU kernel that follows
/// adds.
#[cfg(any(feature = "cuda", feature = "wgpu"))]
fn per_token_unbiased(linear: &Linear, x: Tensor<3>) -> Tensor<3> {
    let [batch, seq, d_in] = x.dims();
    let weight = linear.weight.val().cast(x.dtype());
    let d_out = weight.dims()[1];
    x.reshape([batch * seq, d_in])
        .matmul(weight)
        .reshape([batch, seq, d_out])
}

/// Whether `dtype` is a 16-bit float, whose sums burnbert widens to f32.
pub(crate) fn is_half(dtype: DType) -> bool {
    matches!(dtype, DType::F16 | DType::BF16)
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
        let [q, k, v] =
            [&self.query, &self.key, &self.value].map(|dense| self.heads(dense, &hidden));

        let context = if dropout_applies(&self.dropout, &device) {
            let probabilities =
                attention_probabilities(q.matmul(k.transpose()), padding, self.head_dim);
            dropout(&self.dropout, probabilities).matmul(v)
        } else {
            // Without dropout on the probabilities, Burn's fused attention computes the same
            // softmax(QKᵀ/√d)·V (flex splits it over batch × heads on every core). It gives
            // padded keys -inf, transformers the most negative float: both weigh 0.
            let mask = padding.expand([batch, self.num_heads, seq, seq]);
            attention(q, k, v, Some(mask), None, AttentionModuleOptions::default())
        };
        merge_heads(context)
    }

    /// `dense(hidden)` as heads `[batch, heads, seq, head_dim]`. On GPUs they are contiguous,
    /// made by one kernel that also adds the bias (`crate::cube::heads`): cubek's matrix
    /// product copies a head-split view (its batch dimensions swapped) before every product
    /// that reads it, forward and backward. On the CPU they are a view, which flex multiplies
    /// faster than it copies it.
    fn heads(&self, dense: &Linear, hidden: &Tensor<3>) -> Tensor<4> {
        #[cfg(any(feature = "cuda", feature = "wgpu"))]
        if let Some(bias) = &dense.bias
            && crate::cube::applies(hidden)
        {
            let product = per_token_unbiased(dense, hidden.clone());
            return crate::cube::heads::split_heads(product, bias.val(), self.num_heads);
        }
        let [batch, seq, _] = hidden.dims();
        per_token(dense, hidden.clone())
            .reshape([batch, seq, self.num_heads, self.head_dim])
            .swap_dims(1, 2)
    }
}

/// Heads `[batch, heads, seq, head_dim]` merged into `[batch, seq, heads × head_dim]`: on GPUs
/// one kernel each way (`crate::cube::heads`), elsewhere a copy of the permuted view.
fn merge_heads(heads: Tensor<4>) -> Tensor<3> {
    #[cfg(any(feature = "cuda", feature = "wgpu"))]
    if crate::cube::applies(&heads) {
        return crate::cube::heads::merge_heads(heads);
    }
    let [batch, count, seq, head_dim] = heads.dims();
    heads
        .swap_dims(1, 2)
        .reshape([batch, seq, count * head_dim])
}

/// `softmax(scores / √head_dim)` over the keys, padded keys weighing 0. On GPUs one kernel
/// each way (`crate::cube::softmax`); elsewhere Burn's operations.
pub(crate) fn attention_probabilities(
    scores: Tensor<4>,
    padding: Tensor<4, Bool>,
    head_dim: usize,
) -> Tensor<4> {
    let divisor = (head_dim as f64).sqrt();
    #[cfg(any(feature = "cuda", feature = "wgpu"))]
    if crate::cube::applies(&scores) {
        return crate::cube::softmax::masked_softmax(scores, padding, divisor);
    }
    // Like the kernel, 16-bit scores are normalised in f32 (torch.autocast runs softmax in
    // f32 too).
    let dtype = scores.dtype();
    if is_half(dtype) {
        return attention_probabilities(scores.cast(FloatDType::F32), padding, head_dim)
            .cast(dtype);
    }
    // transformers adds the dtype's most negative finite value at padded keys, so their
    // softmax weight is exactly 0; masking with it gives the same numbers.
    let scores = scores.div_scalar(divisor);
    let min = scores.dtype().finfo().map_or(f32::MIN as f64, |f| f.min);
    softmax(scores.mask_fill(padding, min), 3)
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

    /// `layer_norm(dropout(dense(hidden)) + residual)`. On GPUs, after the matrix product, the
    /// bias, dropout, residual sum and LayerNorm are one kernel each way
    /// (`crate::cube::add_norm`).
    pub fn forward(&self, hidden: Tensor<3>, residual: Tensor<3>) -> Tensor<3> {
        #[cfg(any(feature = "cuda", feature = "wgpu"))]
        if let Some(bias) = &self.dense.bias
            && crate::cube::applies(&hidden)
        {
            let keep =
                dropout_applies(&self.dropout, &hidden.device()).then(|| 1.0 - self.dropout.prob);
            return crate::cube::add_norm::add_norm(
                per_token_unbiased(&self.dense, hidden),
                bias.val(),
                residual,
                [self.layer_norm.gamma.val(), self.layer_norm.beta.val()],
                self.layer_norm.epsilon,
                keep,
            );
        }
        let x = dropout(&self.dropout, per_token(&self.dense, hidden));
        self.layer_norm.forward(x + residual)
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
        // On GPUs the bias and the exact GELU are one kernel each way, with the exact
        // derivative (`crate::cube::gelu`); Burn's backward there is the tanh approximation's.
        #[cfg(any(feature = "cuda", feature = "wgpu"))]
        if let burn::nn::activation::Activation::Gelu(gelu) = &self.activation
            && !gelu.approximate
            && let Some(bias) = &self.dense.bias
            && crate::cube::applies(&hidden)
        {
            return crate::cube::gelu::gelu(per_token_unbiased(&self.dense, hidden), bias.val());
        }
        self.activation.forward(per_token(&self.dense, hidden))
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
