//! New layers initialised as transformers' `_init_weights` does for every family here:
//! weights from N(0, `initializer_range`), biases at zero, LayerNorm at (1, 0).

use burn::module::Initializer;
use burn::nn::{Dropout, DropoutConfig, Embedding, EmbeddingConfig, Linear, LinearConfig};
use burn::tensor::Device;

use crate::config::ModelConfig;
use crate::layer_norm::LayerNorm;

fn normal(config: &ModelConfig) -> Initializer {
    Initializer::Normal {
        mean: 0.0,
        std: config.initializer_range,
    }
}

/// A `d_in → d_out` dense layer with a bias.
pub(crate) fn linear(config: &ModelConfig, d_in: usize, d_out: usize, device: &Device) -> Linear {
    linear_with_bias(config, d_in, d_out, true, device)
}

/// A `d_in → d_out` dense layer, with a bias or without (ModernBERT's).
pub(crate) fn linear_with_bias(
    config: &ModelConfig,
    d_in: usize,
    d_out: usize,
    bias: bool,
    device: &Device,
) -> Linear {
    let mut linear = LinearConfig::new(d_in, d_out)
        .with_bias(bias)
        .with_initializer(normal(config))
        .init(device);
    linear.bias = linear.bias.map(|bias| bias.map(|b| b.zeros_like()));
    linear
}

/// A table of `rows` embeddings of width `width`.
pub(crate) fn embedding(
    config: &ModelConfig,
    rows: usize,
    width: usize,
    device: &Device,
) -> Embedding {
    EmbeddingConfig::new(rows, width)
        .with_initializer(normal(config))
        .init(device)
}

/// LayerNorm over `width` with the config's epsilon (BERT's 1e-12, not Burn's 1e-5).
pub(crate) fn layer_norm(config: &ModelConfig, width: usize, device: &Device) -> LayerNorm {
    LayerNorm::new(width, config.layer_norm_eps, device)
}

pub(crate) fn dropout(p: f64) -> Dropout {
    DropoutConfig::new(p).init()
}
