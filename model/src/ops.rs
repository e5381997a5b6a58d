//! The operations the model families share, each with a fast path where one exists: Burn's
//! reference body, which every backend runs (the CPU always), and a single dispatch to
//! burnbert's own kernel (the `burnbert-kernels` crate) where one applies. The families'
//! files (`bert.rs`, `roberta.rs`, ...) call these and nothing of the kernels; a reader who
//! does not care about GPUs can read the reference bodies alone.
//!
//! `burnbert_kernels::applies` is false on the CPU backends, with `BURNBERT_GPU_KERNELS=0`,
//! for a kernel that disagreed with Burn's operations on the device (its self-check),
//! and always in a build without `wgpu` or `cuda`, so no `#[cfg]` is needed here.

use burn::nn::{Dropout, Linear};
use burn::tensor::activation::{gelu, gelu_approximate, relu, softmax};
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, DType, Distribution, FloatDType, IndexingUpdateOp, Int, Tensor};
use burnbert_kernels::{self as kernels, Kernel};

use crate::config::Activation;
use crate::device::is_cpu_backend;
use crate::dropout::{cpu_mask, dropout_applies};
use crate::layer_norm::LayerNorm;

/// Whether `dtype` is a 16-bit float, whose sums burnbert widens to f32.
pub(crate) fn is_half(dtype: DType) -> bool {
    matches!(dtype, DType::F16 | DType::BF16)
}

/// Where a batch's tokens sit in the per-token tensors, `[rows, tokens, width]`.
///
/// Padding-free execution, as FlashAttention's variable-length path and transformers'
/// ModernBERT unpadding: after the embeddings, the real tokens of the batch are one
/// `[1, tokens, width]` row, and every per-token operation (the dense layers, LayerNorm,
/// Add & Norm, GELU, dropout) runs on real tokens only. The attention scatters its queries,
/// keys and values back into `[batch, seq]` for the scores ([`split_heads`]) and gathers the
/// real tokens' context again ([`merge_heads`]): it is a small share of a layer's work, and
/// one gather and one scatter each way cost less in Burn's autodiff than cutting the row into
/// sequences, where every slice's backward writes a gradient the size of the whole row.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // one per forward pass, borrowed by every layer
pub enum Layout {
    /// `[batch, seq, width]`, padding included, as the batch came.
    Padded,
    /// `[1, tokens, width]`: the real tokens only, sequence after sequence.
    Packed {
        /// Each real token's index in the flattened `[batch × seq]`, `[tokens]`.
        real: Tensor<1, Int>,
        /// `real` on the host, where the CPU's dropout masks are drawn ([`token_dropout`]).
        places: Vec<usize>,
        batch: usize,
        seq: usize,
    },
}

impl Layout {
    /// Packed where `padding_free` is asked and `attention_mask` (`[batch, seq]`, 0 at padding)
    /// has any padding; padded otherwise.
    pub fn new(attention_mask: &Tensor<2, Int>, padding_free: bool) -> Self {
        let [batch, seq] = attention_mask.dims();
        if !padding_free {
            return Self::Padded;
        }
        let places: Vec<usize> = attention_mask
            .to_data()
            .iter::<i64>()
            .enumerate()
            .filter(|&(_, mask)| mask != 0)
            .map(|(index, _)| index)
            .collect();
        if places.len() == batch * seq {
            return Self::Padded;
        }
        let real = places.iter().map(|&index| index as i64).collect();
        let real = Tensor::from_data(
            burn::tensor::TensorData::new(real, [places.len()]),
            &attention_mask.device(),
        );
        Self::Packed {
            real,
            places,
            batch,
            seq,
        }
    }

    /// Ids or positions of the batch, `[batch, seq]`, in this layout's rows: `[1, tokens]`
    /// when packed.
    pub fn pack_ids(&self, ids: Tensor<2, Int>) -> Tensor<2, Int> {
        match self {
            Self::Padded => ids,
            Self::Packed {
                real, batch, seq, ..
            } => {
                let tokens = real.dims()[0];
                ids.reshape([batch * seq])
                    .select(0, real.clone())
                    .reshape([1, tokens])
            }
        }
    }

    /// `[batch, seq, width]` in this layout: `[1, tokens, width]` when packed.
    pub fn pack(&self, x: Tensor<3>) -> Tensor<3> {
        match self {
            Self::Padded => x,
            Self::Packed {
                real, batch, seq, ..
            } => {
                let ([_, _, width], tokens) = (x.dims(), real.dims()[0]);
                x.reshape([batch * seq, width])
                    .select(0, real.clone())
                    .reshape([1, tokens, width])
            }
        }
    }

    /// This layout's rows back in `[batch, seq, width]`, zeros at padding.
    pub fn unpack(&self, x: Tensor<3>) -> Tensor<3> {
        match self {
            Self::Padded => x,
            Self::Packed {
                real, batch, seq, ..
            } => {
                let [_, tokens, width] = x.dims();
                let zeros = Tensor::zeros([batch * seq, width], (&x.device(), x.dtype()));
                zeros
                    .select_assign(
                        0,
                        real.clone(),
                        x.reshape([tokens, width]),
                        IndexingUpdateOp::Add,
                    )
                    .reshape([*batch, *seq, width])
            }
        }
    }
}

/// `linear.forward(x)` in `x`'s float type. Under mixed precision
/// ([`crate::BertForSequenceClassification::with_compute_dtype`]) the activations are bf16
/// while the weights stay f32: the weights are cast for the product, as `torch.autocast` does,
/// and their gradients come back in f32 through the cast.
pub fn dense<const D: usize>(linear: &Linear, x: Tensor<D>) -> Tensor<D> {
    let dtype = x.dtype();
    burn::tensor::module::linear(
        x,
        linear.weight.val().cast(dtype),
        linear.bias.as_ref().map(|bias| bias.val().cast(dtype)),
    )
}

/// `linear` on every token of `[batch, seq, d_in]`, as one `[batch × seq, d_in]` matrix
/// product. Burn 0.22 keeps a 3-d input whose `seq` is a multiple of 8 as `batch` products
/// with the weight broadcast, and flex packs the weight again for each of them; one product
/// is faster (BENCHMARKS.md).
pub fn per_token(linear: &Linear, x: Tensor<3>) -> Tensor<3> {
    let [batch, seq, d_in] = x.dims();
    let d_out = linear.weight.dims()[1];
    dense(linear, x.reshape([batch * seq, d_in])).reshape([batch, seq, d_out])
}

/// [`per_token`] without `linear`'s bias, which the kernel that follows adds.
fn per_token_unbiased(linear: &Linear, x: Tensor<3>) -> Tensor<3> {
    let [batch, seq, d_in] = x.dims();
    let weight = linear.weight.val().cast(x.dtype());
    let d_out = weight.dims()[1];
    x.reshape([batch * seq, d_in])
        .matmul(weight)
        .reshape([batch, seq, d_out])
}

/// LayerNorm of `input` over its last axis, `(x - mean) / sqrt(var + epsilon) * gamma + beta`
/// with the biased variance, as PyTorch. Under mixed precision (`input` in bf16, the
/// parameters in f32) gamma and beta are cast to the input's type.
///
/// # Shapes
///
/// `input` `[..., width]`, `gamma` and `beta` `[width]`.
pub fn layer_norm<const D: usize>(
    input: Tensor<D>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    epsilon: f64,
) -> Tensor<D> {
    let dtype = input.dtype();
    let (gamma, beta) = (gamma.cast(dtype), beta.cast(dtype));
    if kernels::applies(Kernel::LayerNorm, &input.device()) {
        return kernels::layer_norm(input, gamma, beta, epsilon);
    }
    // As Burn's `LayerNorm` for f16, which cannot hold the sum of squares, and as the GPU
    // kernel: 16-bit inputs are normalised in f32.
    if is_half(dtype) {
        let wide = FloatDType::F32;
        let output = burn::tensor::module::layer_norm(
            input.cast(wide),
            gamma.cast(wide),
            Some(beta.cast(wide)),
            epsilon,
        );
        return output.cast(dtype);
    }
    burn::tensor::module::layer_norm(input, gamma, Some(beta), epsilon)
}

/// `layer` applied to `x`: in training on an autodiff device, each element is zeroed with
/// probability `layer.prob` and the others are scaled by `1 / (1 - prob)`, as
/// `torch.nn.Dropout` and Burn do; otherwise `x` unchanged. On the CPU backends the mask comes
/// from [`crate::dropout`]'s ChaCha8 stream, faster than Burn's; elsewhere from Burn's
/// Bernoulli tensor.
pub fn dropout<const D: usize>(layer: &Dropout, x: Tensor<D>) -> Tensor<D> {
    dropout_in_rows(layer, x, None)
}

/// [`dropout`] of per-token activations in `layout`. On the CPU backends a packed token's mask
/// is the one its place in `[batch, seq]` draws, so the padding-free path drops exactly what
/// the padded path drops at the real tokens, and with the same seed the two train alike.
/// Elsewhere (kernels, Burn's Bernoulli) the packed masks are other draws of the same
/// distribution.
///
/// # Shapes
///
/// `x` `[batch, seq, width]`, or `[1, tokens, width]` packed.
pub fn token_dropout(layer: &Dropout, x: Tensor<3>, layout: &Layout) -> Tensor<3> {
    match layout {
        Layout::Padded => dropout(layer, x),
        Layout::Packed { places, .. } => dropout_in_rows(layer, x, Some(places.as_slice())),
    }
}

/// [`dropout`], the CPU's mask drawn for rows at `rows` ([`cpu_mask`]).
fn dropout_in_rows<const D: usize>(
    layer: &Dropout,
    x: Tensor<D>,
    rows: Option<&[usize]>,
) -> Tensor<D> {
    let device = x.device();
    if !dropout_applies(layer, &device) {
        return x;
    }
    let keep = 1.0 - layer.prob;
    if kernels::applies(Kernel::Dropout, &device) {
        let seed = crate::dropout::draw(|| kernels::dropout_seed(&device));
        return kernels::dropout(x, seed, keep);
    }
    // Burn's Bernoulli tensor cannot be drawn again, which a checkpointed layer needs.
    let mask = if is_cpu_backend(&device) || crate::dropout::taping() {
        cpu_mask(x.shape(), keep, rows, &device).cast(x.dtype())
    } else {
        x.random_like(Distribution::Bernoulli(keep))
            .mul_scalar(1.0 / keep)
    };
    x * mask
}

/// `dense(hidden)` split into the attention's heads, as transformers'
/// `self.query(hidden).view(batch, seq, heads, head_dim).transpose(1, 2)`; a packed `hidden`
/// ([`Layout`]) is projected as it is and its heads laid out in `[batch, seq]`, zeros at
/// padding. On the CPU the heads are a view, which flex multiplies faster than it copies it;
/// the GPU kernel makes them contiguous and adds the bias on the way (cubek's matrix product
/// copies a head-split view before every product that reads it).
///
/// # Shapes
///
/// `hidden` `[batch, seq, hidden]`, or `[1, tokens, hidden]` packed; the output is
/// `[batch, heads, seq, hidden / heads]`.
pub fn split_heads(dense: &Linear, hidden: &Tensor<3>, heads: usize, layout: &Layout) -> Tensor<4> {
    if let Some(bias) = &dense.bias
        && kernels::applies(Kernel::SplitHeads, &hidden.device())
    {
        let product = layout.unpack(per_token_unbiased(dense, hidden.clone()));
        return kernels::split_heads(product, bias.val(), heads);
    }
    let output = layout.unpack(per_token(dense, hidden.clone()));
    let [batch, seq, width] = output.dims();
    let head_dim = width / heads;
    output
        .reshape([batch, seq, heads, head_dim])
        .swap_dims(1, 2)
}

/// Heads merged back into one row per token, in `layout`.
///
/// # Shapes
///
/// `heads` `[batch, heads, seq, head_dim]`; the output is `[batch, seq, heads × head_dim]`, or
/// `[1, tokens, heads × head_dim]` packed.
pub fn merge_heads(heads: Tensor<4>, layout: &Layout) -> Tensor<3> {
    if kernels::applies(Kernel::MergeHeads, &heads.device()) {
        return layout.pack(kernels::merge_heads(heads));
    }
    let [batch, count, seq, head_dim] = heads.dims();
    let merged = heads
        .swap_dims(1, 2)
        .reshape([batch, seq, count * head_dim]);
    layout.pack(merged)
}

/// The attention's probabilities: `softmax(scores / √head_dim)` over the keys, padded keys
/// weighing 0.
///
/// # Shapes
///
/// `scores` `[batch, heads, queries, keys]`, `padding` `[batch, 1, 1, keys]` (true at padded
/// keys) or `[batch, 1, queries, keys]`; the output is `scores`' shape.
pub fn attention_probabilities(
    scores: Tensor<4>,
    padding: Tensor<4, Bool>,
    head_dim: usize,
) -> Tensor<4> {
    masked_softmax(scores, padding, (head_dim as f64).sqrt())
}

/// `softmax(scores / divisor)` over the last axis, masked entries weighing 0: as
/// [`attention_probabilities`], for scores scaled otherwise (DeBERTa's).
pub fn masked_softmax(scores: Tensor<4>, mask: Tensor<4, Bool>, divisor: f64) -> Tensor<4> {
    // The kernel takes one mask row for all queries.
    if mask.dims()[2] == 1 && kernels::applies(Kernel::MaskedSoftmax, &scores.device()) {
        return kernels::masked_softmax(scores, mask, divisor);
    }
    // Like the kernel, 16-bit scores are normalised in f32 (torch.autocast runs softmax in
    // f32 too).
    let dtype = scores.dtype();
    if is_half(dtype) {
        return masked_softmax(scores.cast(FloatDType::F32), mask, divisor).cast(dtype);
    }
    // transformers adds the dtype's most negative finite value at padded keys, so their
    // softmax weight is exactly 0; masking with it gives the same numbers. A query whose keys
    // are all masked weighs them equally, as there.
    let scores = scores.div_scalar(divisor);
    let min = scores.dtype().finfo().map_or(f32::MIN as f64, |f| f.min);
    softmax(scores.mask_fill(mask, min), 3)
}

/// DeBERTa's disentangled attention scores (transformers' `DisentangledSelfAttention`):
/// content to content `q·kᵀ`, plus content to position `q·pos_keyᵀ` read at each pair's
/// relative-position index (`c2p`), plus position to content `k·pos_queryᵀ` read at the
/// transposed pair's index (`p2c`), all divided by `√(head_dim × (1 + parts))` by the
/// softmax's caller. `index[q][k]` is the row of the relative embeddings for query `q` and
/// key `k`; `transposed_index[k][q]` that of the position-to-content term.
///
/// # Shapes
///
/// `q`, `k` `[batch, heads, seq, head_dim]`; `pos_query`, `pos_key` `[1, heads, 2 × span,
/// head_dim]`; `index` and `transposed_index` `[seq, seq]`; the output is
/// `[batch, heads, seq, seq]`.
pub fn disentangled_scores(
    q: Tensor<4>,
    k: Tensor<4>,
    pos_query: Option<Tensor<4>>,
    pos_key: Option<Tensor<4>>,
    index: Tensor<2, burn::tensor::Int>,
    transposed_index: Tensor<2, burn::tensor::Int>,
) -> Tensor<4> {
    let [batch, heads, seq, head_dim] = q.dims();
    let mut scores = q.clone().matmul(k.clone().transpose());
    // Each head's rows of every sequence against that head's relative positions, as one
    // product per head: broadcasting the positions over the batch instead (expand or repeat)
    // gave wrong gradients on wgpu (measured: DeBERTa's position gradients off by their own
    // size), and copies them besides.
    let per_head = |x: Tensor<4>, position: Tensor<4>| {
        let [_, _, rows, width] = position.dims();
        let x = x.swap_dims(0, 1).reshape([heads, batch * seq, head_dim]);
        let position = position.reshape([heads, rows, width]);
        x.matmul(position.transpose())
            .reshape([heads, batch, seq, rows])
            .swap_dims(0, 1)
    };
    let gather_index = |index: Tensor<2, burn::tensor::Int>| {
        index
            .reshape([1, 1, seq, seq])
            .expand([batch, heads, seq, seq])
    };
    if let Some(pos_key) = pos_key {
        let c2p = per_head(q, pos_key);
        scores = scores + c2p.gather(3, gather_index(index));
    }
    if let Some(pos_query) = pos_query {
        let p2c = per_head(k, pos_query);
        scores = scores
            + p2c
                .gather(3, gather_index(transposed_index))
                .swap_dims(2, 3);
    }
    scores
}

/// Multi-head scaled dot-product attention of heads split by [`split_heads`], merged back:
/// `softmax(QKᵀ/√head_dim)·V` with masked keys weighing 0, and `dropout_layer` on the
/// probabilities in training (transformers' `eager_attention_forward`). Training on the CPU
/// takes long sequences in blocks of queries, keeping no `seq × seq` buffer
/// (`crate::attention`).
///
/// # Shapes
///
/// `q`, `k` and `v` `[batch, heads, seq, head_dim]`; `mask` (true at the keys a query does
/// not see) `[batch, 1, 1, seq]` for padding alone, `[batch, 1, seq, seq]` where it differs by
/// query (ModernBERT's sliding window). The output is `[batch, seq, heads × head_dim]`, or
/// `[1, tokens, heads × head_dim]` in a packed `layout`.
pub fn self_attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    mask: Tensor<4, Bool>,
    dropout_layer: &Dropout,
    layout: &Layout,
) -> Tensor<3> {
    let [batch, heads, seq, head_dim] = q.dims();
    let per_query = mask.dims()[2] > 1;
    let device = q.device();
    #[cfg(feature = "flex")]
    if crate::attention::applies(&device, seq) {
        let keep = dropout_applies(dropout_layer, &device).then_some(1.0 - dropout_layer.prob);
        let divisor = (head_dim as f64).sqrt();
        let context = crate::attention::attention(q, k, v, mask, divisor, keep);
        return merge_heads(context, layout);
    }
    let context = if dropout_applies(dropout_layer, &device) || per_query {
        // A query whose keys are all masked (padding outside a sliding window) weighs them all
        // equally in transformers, which adds the most negative float; Burn's fused attention
        // masks with -inf and would give NaN there.
        let probabilities = attention_probabilities(q.matmul(k.transpose()), mask, head_dim);
        dropout(dropout_layer, probabilities).matmul(v)
    } else {
        // Without dropout on the probabilities, Burn's fused attention computes the same
        // softmax(QKᵀ/√d)·V (flex splits it over batch × heads on every core). It gives
        // padded keys -inf, transformers the most negative float: both weigh 0.
        let mask = mask.expand([batch, heads, seq, seq]);
        attention(q, k, v, Some(mask), None, AttentionModuleOptions::default())
    };
    merge_heads(context, layout)
}

/// `cos` and `sin` of rotary position embeddings, for positions `0..seq` and one head of
/// `head_dim`, as transformers' default RoPE: frequencies `θ^(-2i/head_dim)` for
/// `i < head_dim / 2`, each twice (`cat(freqs, freqs)`).
///
/// # Shapes
///
/// Both are `[seq, head_dim]`.
pub fn rotary_tables(
    seq: usize,
    head_dim: usize,
    theta: f64,
    device: &burn::tensor::Device,
) -> (Tensor<2>, Tensor<2>) {
    let half = head_dim / 2;
    let angles: Vec<f64> = (0..seq)
        .flat_map(|position| {
            (0..head_dim).map(move |j| {
                let i = j % half;
                position as f64 * theta.powf(-((2 * i) as f64) / head_dim as f64)
            })
        })
        .collect();
    let table = |f: fn(f64) -> f64| {
        let values: Vec<f32> = angles.iter().map(|&a| f(a) as f32).collect();
        Tensor::<2>::from_data(
            burn::tensor::TensorData::new(values, [seq, head_dim]),
            device,
        )
    };
    (table(f64::cos), table(f64::sin))
}

/// Rotary position embedding of queries or keys: `x·cos + rotate_half(x)·sin`, where
/// `rotate_half` of `[x₁, x₂]` (the two halves of a head) is `[-x₂, x₁]`
/// (transformers' `apply_rotary_pos_emb`).
///
/// # Shapes
///
/// `x` `[batch, heads, seq, head_dim]`, `cos` and `sin` `[seq, head_dim]` from
/// [`rotary_tables`]; the output is `x`'s shape.
pub fn rotary(x: Tensor<4>, cos: &Tensor<2>, sin: &Tensor<2>) -> Tensor<4> {
    let dtype = x.dtype();
    let [_, _, _, head_dim] = x.dims();
    let half = head_dim / 2;
    let (cos, sin) = (
        cos.clone().cast(dtype).unsqueeze::<4>(),
        sin.clone().cast(dtype).unsqueeze::<4>(),
    );
    let rotated = Tensor::cat(
        vec![
            x.clone().narrow(3, half, half).neg(),
            x.clone().narrow(3, 0, half),
        ],
        3,
    );
    x * cos + rotated * sin
}

/// The gated feed-forward expansion (GeGLU, ModernBERT's MLP): `dense` gives
/// `[input, gate]`, and the output is `activation(input) · gate`.
///
/// # Shapes
///
/// `hidden` `[batch, seq, d_in]`; `dense` gives `2 × d_out` features, and the output is
/// `[batch, seq, d_out]`.
pub fn gated_activation(dense: &Linear, activation: Activation, hidden: Tensor<3>) -> Tensor<3> {
    let both = per_token(dense, hidden);
    let width = both.dims()[2] / 2;
    let gate = both.clone().narrow(2, width, width);
    let input = both.narrow(2, 0, width);
    activate(activation, input) * gate
}

/// `activation(x)`; the exact GELU through its kernel where one applies, whose backward is
/// exact as PyTorch's (Burn's is the tanh approximation's derivative).
fn activate<const D: usize>(activation: Activation, x: Tensor<D>) -> Tensor<D> {
    match activation {
        Activation::Gelu if kernels::applies(Kernel::BiasGelu, &x.device()) => {
            let width = x.dims()[D - 1];
            let no_bias = Tensor::<1>::zeros([width], &x.device());
            kernels::bias_gelu(x, no_bias)
        }
        Activation::Gelu => gelu(x),
        Activation::GeluNew | Activation::GeluPytorchTanh => gelu_approximate(x),
        Activation::Relu => relu(x),
    }
}

/// The feed-forward network's expansion, `activation(dense(hidden))`; the exact GELU goes
/// through [`dense_gelu`] and its kernel.
///
/// # Shapes
///
/// `hidden` `[batch, seq, d_in]`; the output is `[batch, seq, d_out]`.
pub fn dense_activation(dense: &Linear, activation: Activation, hidden: Tensor<3>) -> Tensor<3> {
    match activation {
        Activation::Gelu => dense_gelu(dense, hidden),
        other => activate(other, per_token(dense, hidden)),
    }
}

/// [`dense_activation`] of one vector per row, as the classification heads apply it to their
/// pooled state: the same kernels as for tokens.
///
/// # Shapes
///
/// `pooled` `[batch, d_in]`; the output is `[batch, d_out]`.
pub fn dense_activation_rows(
    dense: &Linear,
    activation: Activation,
    pooled: Tensor<2>,
) -> Tensor<2> {
    dense_activation(dense, activation, pooled.unsqueeze_dim::<3>(1)).squeeze_dim::<2>(1)
}

/// The feed-forward network's expansion with the exact GELU, `gelu(dense(hidden))`. The GPU
/// kernel adds the bias and applies GELU in one pass, and differentiates it exactly, as
/// PyTorch (Burn's own backward is the tanh approximation's derivative).
///
/// # Shapes
///
/// `hidden` `[batch, seq, d_in]`; the output is `[batch, seq, d_out]`.
pub fn dense_gelu(dense: &Linear, hidden: Tensor<3>) -> Tensor<3> {
    if let Some(bias) = &dense.bias
        && kernels::applies(Kernel::BiasGelu, &hidden.device())
    {
        return kernels::bias_gelu(per_token_unbiased(dense, hidden), bias.val());
    }
    activate(Activation::Gelu, per_token(dense, hidden))
}

/// "Add & Norm", `layer_norm(dropout(dense(hidden)) + residual)`: the end of transformers'
/// `BertSelfOutput` and `BertOutput`. After the matrix product, the GPU kernel does the bias,
/// dropout, residual sum and LayerNorm in one pass each way.
///
/// # Shapes
///
/// `hidden` `[batch, seq, d_in]`, `residual` `[batch, seq, d_out]`, both in `layout` (their
/// dropout is [`token_dropout`]); the output is `residual`'s shape.
pub fn add_norm(
    dense: &Linear,
    dropout_layer: &Dropout,
    norm: &LayerNorm,
    hidden: Tensor<3>,
    residual: Tensor<3>,
    layout: &Layout,
) -> Tensor<3> {
    if let Some(bias) = &dense.bias
        && kernels::applies(Kernel::AddNorm, &hidden.device())
    {
        let device = hidden.device();
        let dropout = dropout_applies(dropout_layer, &device).then(|| {
            let seed = crate::dropout::draw(|| kernels::dropout_seed(&device));
            (seed, 1.0 - dropout_layer.prob)
        });
        return kernels::add_norm(
            per_token_unbiased(dense, hidden),
            bias.val(),
            residual,
            [norm.gamma.val(), norm.beta_or_zeros()],
            norm.epsilon,
            dropout,
        );
    }
    let x = token_dropout(dropout_layer, per_token(dense, hidden), layout);
    norm.forward(x + residual)
}
