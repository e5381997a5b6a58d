//! Reading a split into memory: GLUE's parquet files (the `parquet` crate's arrow reader),
//! or a user's CSV, TSV or JSON-lines file. Every problem is reported with the file, the
//! column and the row.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type};
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::DataError;

/// A supervised target: a class index, or a score for regression.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Label {
    Class(usize),
    Score(f32),
}

/// One row: a text (or a pair) and its label. GLUE's test splits mark missing labels
/// with -1; those rows have `label: None`.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub text_a: String,
    pub text_b: Option<String>,
    pub label: Option<Label>,
}

/// Which columns hold the texts and the label.
#[derive(Debug, Clone, PartialEq)]
pub struct Columns {
    pub text_a: String,
    pub text_b: Option<String>,
    pub label: String,
}

/// The labels a split may hold: `num_classes` classes, or scores when it is 0.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LabelSpace {
    pub num_classes: usize,
}

impl LabelSpace {
    fn label(&self, value: f64, at: impl Fn() -> String) -> Result<Option<Label>, DataError> {
        if value == -1.0 {
            return Ok(None);
        }
        if self.num_classes == 0 {
            if !value.is_finite() {
                return Err(DataError::Invalid(format!(
                    "{}: label {value} is not a number",
                    at()
                )));
            }
            return Ok(Some(Label::Score(value as f32)));
        }
        if value.fract() != 0.0 || value < 0.0 || value >= self.num_classes as f64 {
            return Err(DataError::Invalid(format!(
                "{}: label {value} is outside the task's classes 0..={} (-1 marks an unlabelled row)",
                at(),
                self.num_classes - 1
            )));
        }
        Ok(Some(Label::Class(value as usize)))
    }
}

/// Reads every row of `path`, by its extension: `.parquet`, `.csv`, `.tsv`, `.jsonl`/`.json`.
pub fn read_examples(
    path: &Path,
    columns: &Columns,
    labels: LabelSpace,
) -> Result<Vec<Example>, DataError> {
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_lowercase();
    // An empty table file has no header or schema to name columns from: say so, not that a
    // column is missing. (An empty JSON-lines file is an empty split, said below.)
    if extension != "jsonl"
        && extension != "json"
        && std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() == 0)
    {
        return Err(DataError::Invalid(format!(
            "{}: the file is empty; it needs a header row (or fields) with the columns {}",
            path.display(),
            [
                Some(&columns.text_a),
                columns.text_b.as_ref(),
                Some(&columns.label)
            ]
            .into_iter()
            .flatten()
            .map(|name| format!("`{name}`"))
            .collect::<Vec<_>>()
            .join(", ")
        )));
    }
    let examples = match extension.as_str() {
        "parquet" => read_parquet(path, columns, labels)?,
        "csv" => read_delimited(path, b',', columns, labels)?,
        "tsv" => read_delimited(path, b'\t', columns, labels)?,
        "jsonl" | "json" => read_json_lines(path, columns, labels)?,
        _ => {
            return Err(DataError::Invalid(format!(
                "{}: unknown file type; use .parquet, .csv, .tsv or .jsonl",
                path.display()
            )));
        }
    };
    if examples.is_empty() {
        return Err(DataError::Invalid(format!(
            "{}: the split is empty (no rows)",
            path.display()
        )));
    }
    Ok(examples)
}

fn open(path: &Path) -> Result<File, DataError> {
    File::open(path).map_err(|e| DataError::Io(format!("cannot open {}: {e}", path.display())))
}

fn read_parquet(
    path: &Path,
    columns: &Columns,
    labels: LabelSpace,
) -> Result<Vec<Example>, DataError> {
    let unreadable = |e: &dyn std::fmt::Display| {
        DataError::Invalid(format!(
            "{}: not a readable parquet file: {e}",
            path.display()
        ))
    };
    let reader = ParquetRecordBatchReaderBuilder::try_new(open(path)?)
        .map_err(|e| unreadable(&e))?
        .build()
        .map_err(|e| unreadable(&e))?;
    let mut examples = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| unreadable(&e))?;
        let first_row = examples.len();
        let column = |name: &str| column_of(path, &batch, name);
        let text_a = column(&columns.text_a)?;
        let text_b = columns.text_b.as_deref().map(column).transpose()?;
        let label = column(&columns.label)?;
        for i in 0..batch.num_rows() {
            let row = first_row + i;
            examples.push(Example {
                text_a: text_at(path, &columns.text_a, text_a, i, row)?,
                text_b: text_b
                    .map(|c| text_at(path, columns.text_b.as_deref().unwrap_or(""), c, i, row))
                    .transpose()?,
                label: label_at(path, &columns.label, label, i, row, labels)?,
            });
        }
    }
    Ok(examples)
}

fn column_of<'a>(
    path: &Path,
    batch: &'a RecordBatch,
    name: &str,
) -> Result<&'a dyn Array, DataError> {
    batch
        .column_by_name(name)
        .map(|c| c.as_ref())
        .ok_or_else(|| {
            let names: Vec<_> = batch
                .schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect();
            DataError::Invalid(format!(
                "{}: no column `{name}`; its columns are: {}",
                path.display(),
                names.join(", ")
            ))
        })
}

fn text_at(
    path: &Path,
    name: &str,
    column: &dyn Array,
    i: usize,
    row: usize,
) -> Result<String, DataError> {
    if column.is_null(i) {
        return Err(DataError::Invalid(format!(
            "{}: column `{name}`, row {row}: the text is null",
            path.display()
        )));
    }
    let text = match column.data_type() {
        DataType::Utf8 => column.as_string::<i32>().value(i),
        DataType::LargeUtf8 => column.as_string::<i64>().value(i),
        DataType::Utf8View => column.as_string_view().value(i),
        other => {
            return Err(DataError::Invalid(format!(
                "{}: column `{name}` holds {other}, not text",
                path.display()
            )));
        }
    };
    Ok(text.to_string())
}

fn label_at(
    path: &Path,
    name: &str,
    column: &dyn Array,
    i: usize,
    row: usize,
    labels: LabelSpace,
) -> Result<Option<Label>, DataError> {
    let at = || format!("{}: column `{name}`, row {row}", path.display());
    if column.is_null(i) {
        return Err(DataError::Invalid(format!("{}: the label is null", at())));
    }
    let value = match column.data_type() {
        DataType::Int64 => column.as_primitive::<Int64Type>().value(i) as f64,
        DataType::Int32 => column.as_primitive::<Int32Type>().value(i) as f64,
        DataType::Int16 => column.as_primitive::<Int16Type>().value(i) as f64,
        DataType::Int8 => column.as_primitive::<Int8Type>().value(i) as f64,
        DataType::Float64 => column.as_primitive::<Float64Type>().value(i),
        DataType::Float32 => column.as_primitive::<Float32Type>().value(i) as f64,
        other => {
            return Err(DataError::Invalid(format!(
                "{}: column `{name}` holds {other}, not numeric labels",
                path.display()
            )));
        }
    };
    labels.label(value, at)
}

fn read_delimited(
    path: &Path,
    delimiter: u8,
    columns: &Columns,
    labels: LabelSpace,
) -> Result<Vec<Example>, DataError> {
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .from_reader(open(path)?);
    let headers = reader
        .headers()
        .map_err(|e| {
            DataError::Invalid(format!("{}: cannot read the header: {e}", path.display()))
        })?
        .clone();
    let index = |name: &str| {
        headers.iter().position(|h| h == name).ok_or_else(|| {
            DataError::Invalid(format!(
                "{}: no column `{name}`; its columns are: {}",
                path.display(),
                headers.iter().collect::<Vec<_>>().join(", ")
            ))
        })
    };
    let a = index(&columns.text_a)?;
    let b = columns.text_b.as_deref().map(index).transpose()?;
    let l = index(&columns.label)?;
    let mut examples = Vec::new();
    for (row, record) in reader.records().enumerate() {
        let record = record
            .map_err(|e| DataError::Invalid(format!("{}: row {row}: {e}", path.display())))?;
        let field = |i: usize| record.get(i).unwrap_or("");
        let at = |name: &str| format!("{}: column `{name}`, row {row}", path.display());
        let label_text = field(l).trim();
        let value: f64 = label_text.parse().map_err(|_| {
            DataError::Invalid(format!(
                "{}: label {label_text:?} is not a number",
                at(&columns.label)
            ))
        })?;
        examples.push(Example {
            text_a: field(a).to_string(),
            text_b: b.map(|b| field(b).to_string()),
            label: labels.label(value, || at(&columns.label))?,
        });
    }
    Ok(examples)
}

fn read_json_lines(
    path: &Path,
    columns: &Columns,
    labels: LabelSpace,
) -> Result<Vec<Example>, DataError> {
    let mut examples = Vec::new();
    for (row, line) in BufReader::new(open(path)?).lines().enumerate() {
        let line =
            line.map_err(|e| DataError::Io(format!("{}: line {}: {e}", path.display(), row + 1)))?;
        if line.trim().is_empty() {
            continue;
        }
        let at = |name: &str| format!("{}: line {}, field `{name}`", path.display(), row + 1);
        let object: serde_json::Value = serde_json::from_str(&line).map_err(|e| {
            DataError::Invalid(format!(
                "{}: line {}: not JSON: {e}",
                path.display(),
                row + 1
            ))
        })?;
        let text = |name: &str| match object.get(name) {
            Some(serde_json::Value::String(s)) => Ok(s.clone()),
            Some(serde_json::Value::Null) | None => {
                Err(DataError::Invalid(format!("{}: missing or null", at(name))))
            }
            Some(other) => Err(DataError::Invalid(format!(
                "{}: {other} is not text",
                at(name)
            ))),
        };
        let value = match object.get(&columns.label) {
            Some(serde_json::Value::Number(n)) => n.as_f64().unwrap_or(f64::NAN),
            Some(other) => {
                return Err(DataError::Invalid(format!(
                    "{}: {other} is not a numeric label",
                    at(&columns.label)
                )));
            }
            None => {
                return Err(DataError::Invalid(format!(
                    "{}: missing",
                    at(&columns.label)
                )));
            }
        };
        examples.push(Example {
            text_a: text(&columns.text_a)?,
            text_b: columns.text_b.as_deref().map(text).transpose()?,
            label: labels.label(value, || at(&columns.label))?,
        });
    }
    Ok(examples)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use arrow_array::{ArrayRef, Float64Array, Int64Array, StringArray};
    use parquet::arrow::ArrowWriter;

    fn pair_columns() -> Columns {
        Columns {
            text_a: "sentence1".into(),
            text_b: Some("sentence2".into()),
            label: "label".into(),
        }
    }

    const TWO: LabelSpace = LabelSpace { num_classes: 2 };

    fn write_parquet(path: &Path, columns: Vec<(&str, ArrayRef)>) {
        let batch = RecordBatch::try_from_iter(columns).unwrap();
        let mut writer =
            ArrowWriter::try_new(File::create(path).unwrap(), batch.schema(), None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
    }

    /// An empty CSV, TSV or parquet file says that it is empty and which columns it needs.
    #[test]
    fn an_empty_file_says_it_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["train.csv", "train.tsv", "train.parquet"] {
            let path = dir.path().join(name);
            File::create(&path).unwrap();
            let err = read_examples(&path, &pair_columns(), TWO)
                .unwrap_err()
                .to_string();
            assert!(err.contains(&format!("{name}: the file is empty")), "{err}");
            assert!(err.contains("`sentence1`, `sentence2`, `label`"), "{err}");
        }
    }

    #[test]
    fn parquet_pairs_with_unlabelled_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("split.parquet");
        write_parquet(
            &path,
            vec![
                (
                    "sentence1",
                    Arc::new(StringArray::from(vec!["a", "b"])) as ArrayRef,
                ),
                (
                    "sentence2",
                    Arc::new(StringArray::from(vec!["c", "d"])) as ArrayRef,
                ),
                ("label", Arc::new(Int64Array::from(vec![1, -1])) as ArrayRef),
            ],
        );
        let rows = read_examples(&path, &pair_columns(), TWO).unwrap();
        assert_eq!(rows[0].text_b.as_deref(), Some("c"));
        assert_eq!(rows[0].label, Some(Label::Class(1)));
        assert_eq!(rows[1].label, None);
    }

    #[test]
    fn parquet_errors_name_file_column_and_row() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.parquet");
        write_parquet(
            &path,
            vec![
                (
                    "sentence1",
                    Arc::new(StringArray::from(vec![Some("a"), None])) as ArrayRef,
                ),
                (
                    "sentence2",
                    Arc::new(StringArray::from(vec!["c", "d"])) as ArrayRef,
                ),
                ("label", Arc::new(Int64Array::from(vec![1, 0])) as ArrayRef),
            ],
        );
        let err = read_examples(&path, &pair_columns(), TWO)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("bad.parquet: column `sentence1`, row 1: the text is null"),
            "{err}"
        );

        write_parquet(
            &path,
            vec![
                (
                    "sentence1",
                    Arc::new(StringArray::from(vec!["a"])) as ArrayRef,
                ),
                (
                    "sentence2",
                    Arc::new(StringArray::from(vec!["c"])) as ArrayRef,
                ),
                ("label", Arc::new(Int64Array::from(vec![2])) as ArrayRef),
            ],
        );
        let err = read_examples(&path, &pair_columns(), TWO)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("row 0: label 2 is outside the task's classes 0..=1"),
            "{err}"
        );

        write_parquet(
            &path,
            vec![
                ("sentence1", Arc::new(Int64Array::from(vec![3])) as ArrayRef),
                (
                    "sentence2",
                    Arc::new(StringArray::from(vec!["c"])) as ArrayRef,
                ),
                ("label", Arc::new(Int64Array::from(vec![0])) as ArrayRef),
            ],
        );
        let err = read_examples(&path, &pair_columns(), TWO)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("column `sentence1` holds Int64, not text"),
            "{err}"
        );
        let single = Columns {
            text_b: None,
            label: "y".into(),
            ..pair_columns()
        };
        let err = read_examples(&path, &single, TWO).unwrap_err().to_string();
        assert!(
            err.contains("no column `y`; its columns are: sentence1, sentence2, label"),
            "{err}"
        );
    }

    #[test]
    fn regression_scores_from_parquet() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stsb.parquet");
        write_parquet(
            &path,
            vec![
                (
                    "sentence1",
                    Arc::new(StringArray::from(vec!["a"])) as ArrayRef,
                ),
                (
                    "sentence2",
                    Arc::new(StringArray::from(vec!["b"])) as ArrayRef,
                ),
                ("label", Arc::new(Float64Array::from(vec![3.8])) as ArrayRef),
            ],
        );
        let rows = read_examples(&path, &pair_columns(), LabelSpace { num_classes: 0 }).unwrap();
        assert_eq!(rows[0].label, Some(Label::Score(3.8)));
    }

    #[test]
    fn csv_tsv_and_json_lines() {
        let dir = tempfile::tempdir().unwrap();
        let csv_path = dir.path().join("d.csv");
        std::fs::write(&csv_path, "sentence1,sentence2,label\n\"a, b\",c,1\n").unwrap();
        let rows = read_examples(&csv_path, &pair_columns(), TWO).unwrap();
        assert_eq!(rows[0].text_a, "a, b");

        let tsv_path = dir.path().join("d.tsv");
        std::fs::write(&tsv_path, "sentence1\tsentence2\tlabel\na\tc\tx\n").unwrap();
        let err = read_examples(&tsv_path, &pair_columns(), TWO)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("column `label`, row 0: label \"x\" is not a number"),
            "{err}"
        );

        let json_path = dir.path().join("d.jsonl");
        std::fs::write(
            &json_path,
            "{\"sentence1\": \"a\", \"sentence2\": null, \"label\": 0}\n",
        )
        .unwrap();
        let err = read_examples(&json_path, &pair_columns(), TWO)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 1, field `sentence2`: missing or null"),
            "{err}"
        );

        std::fs::write(&json_path, "").unwrap();
        let err = read_examples(&json_path, &pair_columns(), TWO)
            .unwrap_err()
            .to_string();
        assert!(err.contains("the split is empty"), "{err}");

        let err = read_examples(&dir.path().join("none.csv"), &pair_columns(), TWO)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cannot open") && err.contains("none.csv"),
            "{err}"
        );
    }
}
