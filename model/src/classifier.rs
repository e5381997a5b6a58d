//! The model a `config.json` names: [`SequenceClassifier`] holds one family's
//! `…ForSequenceClassification`, as transformers' `AutoModelForSequenceClassification`
//! returns one, and the inputs, outputs and loss they all share.

use burn::module::Module;
use burn::tensor::activation::log_softmax;
use burn::tensor::{Bool, Device, FloatDType, Int, Tensor};

use crate::config::{Family, ModelConfig};
use crate::ops::Layout;
use crate::{
    BertForSequenceClassification, BertInput, DebertaV2ForSequenceClassification,
    DistilBertForSequenceClassification, ElectraForSequenceClassification,
    ModernBertForSequenceClassification, RobertaForSequenceClassification,
};

/// Targets for the classification head's loss.
#[derive(Debug, Clone)]
pub enum Labels {
    /// Class indices, `[batch]`: cross-entropy loss.
    Classes(Tensor<1, Int>),
    /// Scores, `[batch]`, for a one-output head (STS-B): mean squared error.
    Scores(Tensor<1>),
}

/// What a model's `forward` returns: `outputs.loss, outputs.logits`.
#[derive(Debug, Clone)]
pub struct SequenceClassifierOutput {
    /// Mean loss over the batch, `[1]`, when labels were given.
    pub loss: Option<Tensor<1>>,
    /// `[batch, num_labels]`.
    pub logits: Tensor<2>,
}

/// One family's model for sequence classification. The enum adds no level to the module
/// paths that checkpoints see (burn-store skips enum variants), so each family keeps its
/// transformers key names.
#[derive(Module, Debug)]
pub enum SequenceClassifier {
    Bert(BertForSequenceClassification),
    Roberta(RobertaForSequenceClassification),
    DistilBert(DistilBertForSequenceClassification),
    Electra(ElectraForSequenceClassification),
    ModernBert(ModernBertForSequenceClassification),
    DebertaV2(DebertaV2ForSequenceClassification),
}

impl SequenceClassifier {
    /// A randomly initialised model of `config`'s family; `crate::checkpoint` loads
    /// pretrained weights into it.
    pub fn new(config: &ModelConfig, device: &Device) -> Self {
        match config.family {
            Family::Bert => Self::Bert(BertForSequenceClassification::new(config, device)),
            Family::Roberta => Self::Roberta(RobertaForSequenceClassification::new(config, device)),
            Family::DistilBert => {
                Self::DistilBert(DistilBertForSequenceClassification::new(config, device))
            }
            Family::Electra => Self::Electra(ElectraForSequenceClassification::new(config, device)),
            Family::ModernBert => {
                Self::ModernBert(ModernBertForSequenceClassification::new(config, device))
            }
            Family::DebertaV2 => {
                Self::DebertaV2(DebertaV2ForSequenceClassification::new(config, device))
            }
        }
    }

    /// Logits for a batch, and the mean loss when labels are given.
    pub fn forward(&self, input: BertInput, labels: Option<Labels>) -> SequenceClassifierOutput {
        match self {
            Self::Bert(model) => model.forward(input, labels),
            Self::Roberta(model) => model.forward(input, labels),
            Self::DistilBert(model) => model.forward(input, labels),
            Self::Electra(model) => model.forward(input, labels),
            Self::ModernBert(model) => model.forward(input, labels),
            Self::DebertaV2(model) => model.forward(input, labels),
        }
    }

    /// The encoder's last hidden state, `[batch, seq, hidden]`: what the head reads.
    pub fn last_hidden_state(&self, input: BertInput) -> Tensor<3> {
        match self {
            Self::Bert(model) => model.bert.forward(input).last_hidden_state,
            Self::Roberta(model) => model.roberta.forward(input),
            Self::DistilBert(model) => model.distilbert.forward(input),
            Self::Electra(model) => model.electra.forward(input),
            Self::ModernBert(model) => model.model.forward(input),
            Self::DebertaV2(model) => model.deberta.forward(input),
        }
    }

    /// Mixed precision: the encoder computes in `dtype` (bf16, say) while the parameters, their
    /// gradients and so the optimizer's state stay in their own type (f32), as Accelerate's
    /// `mixed_precision="bf16"` trains. The embeddings, the classification head and the loss
    /// stay in the parameters' type; LayerNorm and the attention's softmax accumulate in f32.
    /// `None` computes everything in the parameters' type.
    pub fn with_compute_dtype(mut self, dtype: Option<FloatDType>) -> Self {
        self.execution_mut().compute_dtype = dtype;
        self
    }

    /// The mixed-precision type the encoder computes in, if any
    /// ([`Self::with_compute_dtype`]).
    pub fn compute_dtype(&self) -> Option<FloatDType> {
        self.execution().compute_dtype
    }

    /// Padding-free execution: after the embeddings, the encoder works on the batch's real
    /// tokens only, so no dense layer, LayerNorm, activation or dropout runs on padding
    /// ([`crate::ops::Layout`]). The same model on the same batch: logits, loss and gradients
    /// are the padded path's up to float summation order; dropout draws one mask value per
    /// real token, so its random stream differs. `false` (the default) runs every position.
    pub fn with_padding_free(mut self, padding_free: bool) -> Self {
        self.execution_mut().padding_free = padding_free;
        self
    }

    /// Whether the encoder skips padding ([`Self::with_padding_free`]).
    pub fn padding_free(&self) -> bool {
        self.execution().padding_free
    }

    /// Activation checkpointing, as transformers' `gradient_checkpointing_enable()`: in
    /// training, each encoder layer keeps only its input for the backward pass and runs again
    /// there ([`crate::recompute`]), with the same dropout masks, so the loss and gradients are
    /// the same for about a third more compute. `false` (the default) keeps every activation.
    pub fn with_gradient_checkpointing(mut self, checkpointing: bool) -> Self {
        self.execution_mut().gradient_checkpointing = checkpointing;
        self
    }

    fn execution(&self) -> &Execution {
        match self {
            Self::Bert(model) => &model.bert.execution,
            Self::Roberta(model) => &model.roberta.execution,
            Self::DistilBert(model) => &model.distilbert.execution,
            Self::Electra(model) => &model.electra.execution,
            Self::ModernBert(model) => &model.model.execution,
            Self::DebertaV2(model) => &model.deberta.execution,
        }
    }

    fn execution_mut(&mut self) -> &mut Execution {
        match self {
            Self::Bert(model) => &mut model.bert.execution,
            Self::Roberta(model) => &mut model.roberta.execution,
            Self::DistilBert(model) => &mut model.distilbert.execution,
            Self::Electra(model) => &mut model.electra.execution,
            Self::ModernBert(model) => &mut model.model.execution,
            Self::DebertaV2(model) => &mut model.deberta.execution,
        }
    }
}

impl From<BertForSequenceClassification> for SequenceClassifier {
    fn from(model: BertForSequenceClassification) -> Self {
        Self::Bert(model)
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

/// True at padded key positions, `[batch, 1, 1, seq]`, from the attention mask
/// `[batch, seq]`.
pub(crate) fn padding_mask(attention_mask: Tensor<2, Int>) -> Tensor<4, Bool> {
    let [batch, seq] = attention_mask.dims();
    attention_mask.equal_elem(0).reshape([batch, 1, 1, seq])
}

/// How a family's encoder runs, beside its weights.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Execution {
    /// Mixed precision: the float type the encoder computes in, when it is not the
    /// parameters' own ([`SequenceClassifier::with_compute_dtype`]).
    pub compute_dtype: Option<FloatDType>,
    /// Real tokens only, in a [`Layout::Packed`] row ([`SequenceClassifier::with_padding_free`]).
    pub padding_free: bool,
    /// Each encoder layer recomputed in the backward pass
    /// ([`SequenceClassifier::with_gradient_checkpointing`]).
    pub gradient_checkpointing: bool,
}

impl Execution {
    /// `hidden` in the mixed-precision type, if one is set.
    pub fn compute_in(&self, hidden: Tensor<3>) -> Tensor<3> {
        match self.compute_dtype {
            Some(dtype) => hidden.cast(dtype),
            None => hidden,
        }
    }

    /// The layout of a batch with this `attention_mask`, `[batch, seq]`.
    pub fn layout(&self, attention_mask: &Tensor<2, Int>) -> Layout {
        Layout::new(attention_mask, self.padding_free)
    }
}

/// The first token's hidden state, `[batch, hidden]`: [CLS], or RoBERTa's `<s>`.
pub(crate) fn first_token(hidden: Tensor<3>) -> Tensor<2> {
    let [batch, _, width] = hidden.dims();
    hidden.narrow(1, 0, 1).reshape([batch, width])
}
