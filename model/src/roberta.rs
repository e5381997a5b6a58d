//! RoBERTa as Burn modules, mirroring transformers' `modeling_roberta.py`, which XLM-RoBERTa
//! and CamemBERT share: checkpoint keys `roberta.embeddings`, `roberta.encoder.layer.N` (BERT's
//! layers, which transformers copies) and `classifier.dense` / `classifier.out_proj`.
//!
//! What differs from BERT: positions count from `padding_idx + 1` over the real tokens only,
//! the token types are all 0 (RoBERTa's tokenizers return none), there is no pooler, and the
//! head reads the first token (`<s>`) through its own dense layer.

use burn::module::Module;
use burn::nn::{Dropout, Linear};
use burn::tensor::{Device, Int, Tensor};

use crate::bert::{BertEmbeddings, BertEncoder, BertInput};
use crate::classifier::{
    Execution, Labels, SequenceClassifierOutput, first_token, loss, padding_mask,
};
use crate::config::{Activation, ModelConfig};
use crate::init;
use crate::ops::{self, dense, dropout};

/// The bare encoder (transformers' `RobertaModel` with `add_pooling_layer=False`).
#[derive(Module, Debug)]
pub struct RobertaModel {
    /// BERT's embeddings, read at RoBERTa's positions.
    pub embeddings: BertEmbeddings,
    pub encoder: BertEncoder,
    #[module(skip)]
    padding_idx: usize,
    /// Mixed precision and padding-free execution, as [`crate::BertModel`]'s.
    #[module(skip)]
    pub(crate) execution: Execution,
}

impl RobertaModel {
    pub fn new(config: &ModelConfig, device: &Device) -> Self {
        Self {
            embeddings: BertEmbeddings::new(config, config.hidden_size, device),
            encoder: crate::bert::BertEncoder::new(config, device),
            padding_idx: config.padding_idx(),
            execution: Execution::default(),
        }
    }

    /// The last hidden state, `[batch, seq, hidden]`, in the parameters' float type.
    pub fn forward(&self, input: BertInput) -> Tensor<3> {
        let layout = self.execution.layout(&input.attention_mask);
        let padding = padding_mask(input.attention_mask);
        let positions = position_ids(input.input_ids.clone(), self.padding_idx);
        let token_types = input.input_ids.zeros_like();
        let embedded = self
            .embeddings
            .forward_at(input.input_ids, token_types, positions, &layout);
        let param_dtype = embedded.dtype();
        let hidden = self.encoder.forward(
            self.execution.compute_in(embedded),
            padding,
            &layout,
            self.execution.gradient_checkpointing,
        );
        layout.unpack(hidden).cast(param_dtype)
    }
}

/// transformers' `create_position_ids_from_input_ids`: real tokens are numbered from
/// `padding_idx + 1` in order, padding tokens get `padding_idx`.
fn position_ids(input_ids: Tensor<2, Int>, padding_idx: usize) -> Tensor<2, Int> {
    let real = input_ids.not_equal_elem(padding_idx as i64).int();
    (real.clone().cumsum(1) * real).add_scalar(padding_idx as i64)
}

/// The activation between the head's two dense layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadActivation {
    /// RoBERTa's.
    Tanh,
    /// ELECTRA's (`get_activation("gelu")`).
    Gelu,
}

/// The first token through dropout, dense, the activation, dropout and the output projection
/// (transformers' `RobertaClassificationHead`, and `ElectraClassificationHead` with GELU).
#[derive(Module, Debug)]
pub struct RobertaClassificationHead {
    pub dense: Linear,
    pub dropout: Dropout,
    pub out_proj: Linear,
    #[module(skip)]
    activation: HeadActivation,
}

impl RobertaClassificationHead {
    pub fn new(config: &ModelConfig, activation: HeadActivation, device: &Device) -> Self {
        let h = config.hidden_size;
        Self {
            dense: init::linear(config, h, h, device),
            dropout: init::dropout(config.head_dropout()),
            out_proj: init::linear(config, h, config.label_count(), device),
            activation,
        }
    }

    /// # Shapes
    ///
    /// `hidden` `[batch, seq, hidden]`; the logits are `[batch, num_labels]`.
    pub fn forward(&self, hidden: Tensor<3>) -> Tensor<2> {
        let x = dropout(&self.dropout, first_token(hidden));
        let x = match self.activation {
            HeadActivation::Tanh => dense(&self.dense, x).tanh(),
            HeadActivation::Gelu => ops::dense_activation_rows(&self.dense, Activation::Gelu, x),
        };
        dense(&self.out_proj, dropout(&self.dropout, x))
    }
}

/// transformers' `RobertaForSequenceClassification`.
#[derive(Module, Debug)]
pub struct RobertaForSequenceClassification {
    pub roberta: RobertaModel,
    pub classifier: RobertaClassificationHead,
}

impl RobertaForSequenceClassification {
    pub fn new(config: &ModelConfig, device: &Device) -> Self {
        Self {
            roberta: RobertaModel::new(config, device),
            classifier: RobertaClassificationHead::new(config, HeadActivation::Tanh, device),
        }
    }

    /// Logits for a batch, and the mean loss when labels are given.
    pub fn forward(&self, input: BertInput, labels: Option<Labels>) -> SequenceClassifierOutput {
        let logits = self.classifier.forward(self.roberta.forward(input));
        let loss = labels.map(|labels| loss(logits.clone(), labels));
        SequenceClassifierOutput { loss, logits }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hand-computed from `create_position_ids_from_input_ids` with padding_idx 1.
    #[test]
    fn positions_count_real_tokens_after_the_padding_index() {
        let device = Device::default();
        let ids = Tensor::<2, Int>::from_data(
            [[0, 7, 2, 2, 9, 2, 1, 1], [0, 5, 2, 1, 1, 1, 1, 1]],
            &device,
        );
        let positions = position_ids(ids, 1).into_data().convert::<i64>();
        assert_eq!(
            positions.try_to_vec::<i64>().unwrap(),
            [2, 3, 4, 5, 6, 7, 1, 1, 2, 3, 4, 1, 1, 1, 1, 1]
        );
    }
}
