//! Data for fine-tuning: files from the Hugging Face Hub, GLUE and local datasets,
//! sentence-pair tokenization and dynamically padded batches (the course's sections 2–3).

pub mod batch;
pub mod dataset;
pub mod hub;
pub mod task;
pub mod tokenize;

use std::path::Path;

pub use batch::{Batch, BatchPlan, PaddingBatcher, padding_ratio};
pub use dataset::{Columns, Example, Label, LabelSpace, read_examples};
pub use hub::{Hub, ModelFiles};
pub use task::{GLUE_TASKS, MetricKind, Task};
pub use tokenize::{Encoded, PairTokenizer};

/// The Hub dataset that holds GLUE.
pub const GLUE_DATASET: &str = "nyu-mll/glue";

/// What can go wrong getting data; every message says where and, when it can, how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Hub(String),
    #[error("{0}")]
    Io(String),
    #[error("{0}")]
    Invalid(String),
}

impl Task {
    /// The columns of this task's files.
    pub fn columns(&self) -> Columns {
        Columns {
            text_a: self.text_columns.0.into(),
            text_b: self.text_columns.1.map(Into::into),
            label: "label".into(),
        }
    }

    /// The labels this task's files may hold.
    pub fn label_space(&self) -> LabelSpace {
        LabelSpace {
            num_classes: self.labels.len(),
        }
    }

    /// Reads `split` of this task: from `file` when given, else from the Hub's `nyu-mll/glue`.
    pub fn load_split(
        &self,
        hub: &Hub,
        split: &str,
        file: Option<&Path>,
    ) -> Result<Vec<Example>, DataError> {
        let path = match file {
            Some(path) => path.to_path_buf(),
            None => hub.dataset_file(GLUE_DATASET, &self.hub_file(split))?,
        };
        read_examples(&path, &self.columns(), self.label_space())
    }
}
