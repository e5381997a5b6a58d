//! What burnbert knows about each GLUE task, in one table: adding a task is one entry.

/// A metric a task reports; `burnbert-eval` computes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Accuracy,
    /// Binary F1 of class 1.
    F1,
    /// Matthews correlation coefficient.
    Matthews,
    Pearson,
    Spearman,
}

impl MetricKind {
    /// The name 🤗 Evaluate's `glue` metric uses.
    pub fn name(self) -> &'static str {
        match self {
            Self::Accuracy => "accuracy",
            Self::F1 => "f1",
            Self::Matthews => "matthews_correlation",
            Self::Pearson => "pearson",
            Self::Spearman => "spearmanr",
        }
    }
}

/// One GLUE task as published in the Hub dataset `nyu-mll/glue`.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    /// The configuration name on the Hub (`mrpc`), also `--task`.
    pub name: &'static str,
    /// The text column, and the second one for sentence-pair tasks.
    pub text_columns: (&'static str, Option<&'static str>),
    /// Class names by index; empty for regression (STS-B, scores 0 to 5).
    pub labels: &'static [&'static str],
    /// The validation split(s); MNLI has matched and mismatched ones.
    pub validation_splits: &'static [&'static str],
    /// What the GLUE benchmark reports for the task.
    pub metrics: &'static [MetricKind],
}

use MetricKind::*;

/// The GLUE tasks, as 🤗 Datasets and 🤗 Evaluate's `glue` metric describe them.
pub const GLUE_TASKS: &[Task] = &[
    Task {
        name: "cola",
        text_columns: ("sentence", None),
        labels: &["unacceptable", "acceptable"],
        validation_splits: &["validation"],
        metrics: &[Matthews],
    },
    Task {
        name: "sst2",
        text_columns: ("sentence", None),
        labels: &["negative", "positive"],
        validation_splits: &["validation"],
        metrics: &[Accuracy],
    },
    Task {
        name: "mrpc",
        text_columns: ("sentence1", Some("sentence2")),
        labels: &["not_equivalent", "equivalent"],
        validation_splits: &["validation"],
        metrics: &[Accuracy, F1],
    },
    Task {
        name: "qqp",
        text_columns: ("question1", Some("question2")),
        labels: &["not_duplicate", "duplicate"],
        validation_splits: &["validation"],
        metrics: &[Accuracy, F1],
    },
    Task {
        name: "stsb",
        text_columns: ("sentence1", Some("sentence2")),
        labels: &[],
        validation_splits: &["validation"],
        metrics: &[Pearson, Spearman],
    },
    Task {
        name: "mnli",
        text_columns: ("premise", Some("hypothesis")),
        labels: &["entailment", "neutral", "contradiction"],
        validation_splits: &["validation_matched", "validation_mismatched"],
        metrics: &[Accuracy],
    },
    Task {
        name: "qnli",
        text_columns: ("question", Some("sentence")),
        labels: &["entailment", "not_entailment"],
        validation_splits: &["validation"],
        metrics: &[Accuracy],
    },
    Task {
        name: "rte",
        text_columns: ("sentence1", Some("sentence2")),
        labels: &["entailment", "not_entailment"],
        validation_splits: &["validation"],
        metrics: &[Accuracy],
    },
    Task {
        name: "wnli",
        text_columns: ("sentence1", Some("sentence2")),
        labels: &["not_entailment", "entailment"],
        validation_splits: &["validation"],
        metrics: &[Accuracy],
    },
];

impl Task {
    /// The task named `name`, or an error listing the known ones.
    pub fn by_name(name: &str) -> Result<&'static Task, String> {
        GLUE_TASKS
            .iter()
            .find(|t| t.name == name.to_lowercase())
            .ok_or_else(|| {
                let known: Vec<_> = GLUE_TASKS.iter().map(|t| t.name).collect();
                format!("unknown task `{name}`; known tasks: {}", known.join(", "))
            })
    }

    /// Whether the task regresses a score instead of classifying.
    pub fn is_regression(&self) -> bool {
        self.labels.is_empty()
    }

    /// Outputs of the classification head: the number of classes, or 1 for regression.
    pub fn num_outputs(&self) -> usize {
        self.labels.len().max(1)
    }

    /// Label names for the model's config (`score` for regression).
    pub fn label_names(&self) -> Vec<String> {
        if self.is_regression() {
            vec!["score".into()]
        } else {
            self.labels.iter().map(|l| l.to_string()).collect()
        }
    }

    /// The file of `split` in `nyu-mll/glue`, e.g. `mrpc/validation-00000-of-00001.parquet`.
    pub fn hub_file(&self, split: &str) -> String {
        format!("{}/{split}-00000-of-00001.parquet", self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mrpc_is_the_course_task() {
        let mrpc = Task::by_name("MRPC").unwrap();
        assert_eq!(mrpc.text_columns, ("sentence1", Some("sentence2")));
        assert_eq!(mrpc.num_outputs(), 2);
        assert_eq!(mrpc.metrics, &[Accuracy, F1]);
        assert_eq!(mrpc.hub_file("train"), "mrpc/train-00000-of-00001.parquet");
    }

    #[test]
    fn stsb_regresses_and_mnli_has_two_validation_splits() {
        let stsb = Task::by_name("stsb").unwrap();
        assert!(stsb.is_regression());
        assert_eq!(stsb.num_outputs(), 1);
        assert_eq!(Task::by_name("mnli").unwrap().validation_splits.len(), 2);
    }

    #[test]
    fn unknown_task_lists_known_ones() {
        let err = Task::by_name("squad").unwrap_err();
        assert!(
            err.contains("unknown task `squad`") && err.contains("mrpc"),
            "{err}"
        );
    }
}
