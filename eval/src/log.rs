//! The log of a training run (`metrics.jsonl`): one JSON object per optimizer step and per
//! epoch. `train` writes these records as the run goes, and `report` and the plots read them
//! back; both go through the types here, so the schema is declared once.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};

/// Why a log could not be read.
// I/O errors are part of the message, not a `source`: programs print the whole chain
// (`{:#}`), which would say them twice.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The file could not be read.
    #[error("cannot read {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    /// A line of the log is not a step or epoch record; `line` is 1-based.
    #[error("{}: line {line}: {message}", path.display())]
    Line {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// One optimizer step of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Optimizer steps done, 1-based.
    pub step: usize,
    /// The epoch the step belongs to, 1-based.
    pub epoch: usize,
    /// NaN where the step's loss was not finite (written as `null`).
    #[serde(deserialize_with = "nan_if_null")]
    pub loss: f64,
    /// The learning rate the step used.
    #[serde(deserialize_with = "nan_if_null")]
    pub lr: f64,
    /// Training examples per second since the run (or its resumption) started.
    #[serde(default = "nan", deserialize_with = "nan_if_null")]
    pub samples_per_second: f64,
}

/// The validation after one epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// 1-based.
    pub epoch: usize,
    /// Metric name to value (NaN where it was not finite), the log's `eval` object
    /// (`metrics` in checkpoints written before the training loop used this record).
    #[serde(
        rename = "eval",
        alias = "metrics",
        deserialize_with = "nan_if_null_map"
    )]
    pub metrics: BTreeMap<String, f64>,
    /// Mean training loss over the epoch's steps.
    #[serde(deserialize_with = "nan_if_null")]
    pub train_loss: f64,
    /// Padded tokens per real token in the epoch's training batches.
    #[serde(default = "nan", deserialize_with = "nan_if_null")]
    pub padding_ratio: f64,
}

/// One line of the log.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Record {
    Step(StepRecord),
    Epoch(EpochRecord),
}

/// A run's records, as [`RunLog::push`] keeps them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunLog {
    /// One record per optimizer step.
    pub steps: Vec<StepRecord>,
    /// One record per finished epoch.
    pub epochs: Vec<EpochRecord>,
}

impl RunLog {
    /// Adds a record. A run resumed from a checkpoint redoes the steps after the checkpoint,
    /// so a record replaces those it goes back over: a step record the steps from its number
    /// on and the epoch records from its epoch on, an epoch record those from its epoch on.
    pub fn push(&mut self, record: Record) {
        match record {
            Record::Step(step) => {
                while self.steps.last().is_some_and(|s| s.step >= step.step) {
                    self.steps.pop();
                }
                self.epochs.retain(|e| e.epoch < step.epoch);
                self.steps.push(step);
            }
            Record::Epoch(epoch) => {
                self.epochs.retain(|e| e.epoch < epoch.epoch);
                self.epochs.push(epoch);
            }
        }
    }
}

fn nan() -> f64 {
    f64::NAN
}

// serde_json writes NaN and infinities as `null`.
fn nan_if_null<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(deserializer)?.unwrap_or(f64::NAN))
}

fn nan_if_null_map<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, f64>, D::Error> {
    let map = BTreeMap::<String, Option<f64>>::deserialize(deserializer)?;
    Ok(map
        .into_iter()
        .map(|(name, value)| (name, value.unwrap_or(f64::NAN)))
        .collect())
}

/// Reads a `metrics.jsonl` written by training into a [`RunLog`] (see [`RunLog::push`] for
/// resumed runs). Blank lines are skipped, and so is an unfinished last line (the log of a
/// run in progress); any other line that is not a step record (with `step`) or an epoch
/// record (with `eval`) is an error naming its line.
pub fn read_log(path: &Path) -> Result<RunLog, LogError> {
    let text = fs::read_to_string(path).map_err(|error| LogError::Read {
        path: path.to_path_buf(),
        error,
    })?;
    let mut log = RunLog::default();
    let mut lines = text.lines().enumerate().peekable();
    while let Some((index, line)) = lines.next() {
        if line.trim().is_empty() {
            continue;
        }
        match parse_record(line) {
            Ok(record) => log.push(record),
            // Training appends each record with several writes, so a reader may see half a line.
            Err(_) if lines.peek().is_none() && !text.ends_with('\n') => {}
            Err(message) => {
                return Err(LogError::Line {
                    path: path.to_path_buf(),
                    line: index + 1,
                    message,
                });
            }
        }
    }
    Ok(log)
}

fn parse_record(line: &str) -> Result<Record, String> {
    let value: serde_json::Value = serde_json::from_str(line).map_err(|e| json_message(&e))?;
    let record = if value.get("step").is_some() {
        StepRecord::deserialize(&value).map(Record::Step)
    } else if value.get("eval").is_some() {
        EpochRecord::deserialize(&value).map(Record::Epoch)
    } else {
        return Err(
            "neither a step record (with \"step\") nor an epoch record (with \"eval\")".into(),
        );
    };
    record.map_err(|e| json_message(&e))
}

/// serde_json's message with "at line 1 column N" shortened to the column: the caller
/// names the line of the file.
fn json_message(error: &serde_json::Error) -> String {
    let text = error.to_string();
    match text.strip_suffix(&format!(
        " at line {} column {}",
        error.line(),
        error.column()
    )) {
        Some(message) => format!("{message} (column {})", error.column()),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A checkpoint written when the loop's epochs had a type of their own (with `metrics`
    /// for `eval`) still loads.
    #[test]
    fn epoch_records_read_the_older_metrics_key() {
        let old = r#"{"epoch": 2, "metrics": {"accuracy": 0.5, "f1": null}, "train_loss": 0.25, "padding_ratio": 0.3}"#;
        let record: EpochRecord = serde_json::from_str(old).unwrap();
        assert_eq!(
            (record.epoch, record.train_loss, record.padding_ratio),
            (2, 0.25, 0.3)
        );
        assert_eq!(record.metrics["accuracy"], 0.5);
        assert!(record.metrics["f1"].is_nan());
    }

    /// What the writer writes, the reader reads back, NaN (JSON's `null`) included.
    #[test]
    fn records_round_trip_through_json_lines() {
        let step = StepRecord {
            step: 3,
            epoch: 1,
            loss: f64::NAN,
            lr: 4.5e-5,
            samples_per_second: 12.25,
        };
        let epoch = EpochRecord {
            epoch: 1,
            metrics: BTreeMap::from([("accuracy".into(), 0.75), ("f1".into(), f64::NAN)]),
            train_loss: 0.5,
            padding_ratio: 0.25,
        };
        let text = [Record::Step(step.clone()), Record::Epoch(epoch.clone())]
            .iter()
            .map(|r| serde_json::to_string(r).unwrap() + "\n")
            .collect::<String>();
        assert!(text.contains(r#""loss":null"#), "{text}");
        assert!(
            text.contains(r#""eval":{"accuracy":0.75,"f1":null}"#),
            "{text}"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        fs::write(&path, text).unwrap();
        let log = read_log(&path).unwrap();
        assert_eq!(log.steps.len(), 1);
        assert!(log.steps[0].loss.is_nan());
        assert_eq!(log.steps[0].samples_per_second, 12.25);
        assert_eq!(log.epochs[0].metrics["accuracy"], 0.75);
        assert!(log.epochs[0].metrics["f1"].is_nan());
        assert_eq!(log.epochs[0].padding_ratio, 0.25);
    }
}
