//! ELECTRA's discriminator as Burn modules, mirroring transformers' `modeling_electra.py`:
//! checkpoint keys `electra.embeddings`, `electra.embeddings_project` (when `embedding_size`
//! differs from `hidden_size`), `electra.encoder.layer.N` (BERT's layers, which transformers
//! copies) and `classifier.dense` / `classifier.out_proj`.
//!
//! What differs from BERT: the embeddings are `embedding_size` wide, LayerNorm included, and
//! projected to the hidden size; there is no pooler, and the head is RoBERTa's with GELU.

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::{Device, Tensor};

use crate::bert::{BertEmbeddings, BertEncoder, BertInput};
use crate::classifier::{Execution, Labels, SequenceClassifierOutput, loss, padding_mask};
use crate::config::ModelConfig;
use crate::init;
use crate::ops;
use crate::roberta::{HeadActivation, RobertaClassificationHead};

/// The bare encoder (transformers' `ElectraModel`).
#[derive(Module, Debug)]
pub struct ElectraModel {
    pub embeddings: BertEmbeddings,
    /// `embedding_size → hidden_size`, present only where they differ.
    pub embeddings_project: Option<Linear>,
    pub encoder: BertEncoder,
    /// Mixed precision and padding-free execution, as [`crate::BertModel`]'s.
    #[module(skip)]
    pub(crate) execution: Execution,
}

impl ElectraModel {
    pub fn new(config: &ModelConfig, device: &Device) -> Self {
        let width = config.embedding_size.unwrap_or(config.hidden_size);
        Self {
            embeddings: BertEmbeddings::new(config, width, device),
            embeddings_project: (width != config.hidden_size)
                .then(|| init::linear(config, width, config.hidden_size, device)),
            encoder: BertEncoder::new(config, device),
            execution: Execution::default(),
        }
    }

    /// The last hidden state, `[batch, seq, hidden]`, in the parameters' float type.
    pub fn forward(&self, input: BertInput) -> Tensor<3> {
        let layout = self.execution.layout(&input.attention_mask);
        let padding = padding_mask(input.attention_mask);
        let embedded = self
            .embeddings
            .forward(input.input_ids, input.token_type_ids, &layout);
        let embedded = match &self.embeddings_project {
            Some(project) => ops::per_token(project, embedded),
            None => embedded,
        };
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

/// transformers' `ElectraForSequenceClassification`.
#[derive(Module, Debug)]
pub struct ElectraForSequenceClassification {
    pub electra: ElectraModel,
    pub classifier: RobertaClassificationHead,
}

impl ElectraForSequenceClassification {
    pub fn new(config: &ModelConfig, device: &Device) -> Self {
        Self {
            electra: ElectraModel::new(config, device),
            classifier: RobertaClassificationHead::new(config, HeadActivation::Gelu, device),
        }
    }

    /// Logits for a batch, and the mean loss when labels are given.
    pub fn forward(&self, input: BertInput, labels: Option<Labels>) -> SequenceClassifierOutput {
        let logits = self.classifier.forward(self.electra.forward(input));
        let loss = labels.map(|labels| loss(logits.clone(), labels));
        SequenceClassifierOutput { loss, logits }
    }
}
