//! Data for fine-tuning: files from the Hugging Face Hub, GLUE and local datasets,
//! sentence-pair tokenization and dynamically padded batches (the course's sections 2–3).

pub mod batch;
pub mod dataset;
pub mod hub;
pub mod sentencepiece;
pub mod task;
pub mod tokenize;

use std::path::Path;

pub use batch::{Batch, BatchPlan, PaddingBatcher, padding_ratio};
pub use dataset::{
    Columns, Example, Label, LabelSpace, label_names, read_examples, read_unlabelled_json_lines,
};
pub use hub::{Hub, ModelFiles};
pub use task::{GLUE_TASKS, MetricKind, Task};
pub use tokenize::{Encoded, PairTokenizer, TokenizerFiles};

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
        if self.is_regression() {
            LabelSpace::Scores
        } else {
            LabelSpace::Classes(self.labels.len())
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
        read_examples(&path, &self.columns(), &self.label_space())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
    use parquet::arrow::ArrowWriter;

    use super::*;

    /// Every GLUE task reads a parquet file with its own columns, as `nyu-mll/glue` has them.
    #[test]
    fn every_glue_task_reads_its_columns() {
        let dir = tempfile::tempdir().unwrap();
        let hub = Hub::from_env("main", true);
        for task in GLUE_TASKS {
            let mut columns: Vec<(&str, ArrayRef)> = vec![(
                task.text_columns.0,
                Arc::new(StringArray::from(vec!["first", "second"])),
            )];
            if let Some(b) = task.text_columns.1 {
                columns.push((b, Arc::new(StringArray::from(vec!["other", "another"]))));
            }
            let label: ArrayRef = if task.is_regression() {
                Arc::new(Float64Array::from(vec![0.5, 4.75]))
            } else {
                Arc::new(Int64Array::from(vec![0, task.labels.len() as i64 - 1]))
            };
            columns.push(("label", label));
            columns.push(("idx", Arc::new(Int64Array::from(vec![0, 1]))));
            let batch = RecordBatch::try_from_iter(columns).unwrap();
            let path = dir.path().join(format!("{}.parquet", task.name));
            let mut writer =
                ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), batch.schema(), None)
                    .unwrap();
            writer.write(&batch).unwrap();
            writer.close().unwrap();

            let rows = task.load_split(&hub, "train", Some(&path)).unwrap();
            assert_eq!(rows.len(), 2, "{}", task.name);
            assert_eq!(
                rows[1].text_b.is_some(),
                task.text_columns.1.is_some(),
                "{}",
                task.name
            );
            let expected = if task.is_regression() {
                Label::Score(4.75)
            } else {
                Label::Class(task.labels.len() - 1)
            };
            assert_eq!(rows[1].label, Some(expected), "{}", task.name);
        }
    }
}
