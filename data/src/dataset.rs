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

/// The labels a split may hold.
#[derive(Debug, Clone, PartialEq)]
pub enum LabelSpace {
    /// Class indices `0..n` (-1 marks an unlabelled row).
    Classes(usize),
    /// Regression scores.
    Scores,
    /// Class names, each class's index its position: a file whose labels are text
    /// (`"equivalent"`), as `run_glue_no_trainer.py` maps them.
    Names(Vec<String>),
}

/// A label as the file holds it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum LabelCell<'a> {
    Number(f64),
    Text(&'a str),
}

impl LabelSpace {
    /// The number of classes, 0 for scores.
    pub fn num_classes(&self) -> usize {
        match self {
            Self::Classes(n) => *n,
            Self::Scores => 0,
            Self::Names(names) => names.len(),
        }
    }

    fn label(&self, cell: LabelCell, at: &dyn Fn() -> String) -> Result<Option<Label>, DataError> {
        let invalid = |why: String| Err(DataError::Invalid(format!("{}: {why}", at())));
        let value = match (cell, self) {
            (LabelCell::Number(-1.0), _) => return Ok(None),
            (LabelCell::Text(text), Self::Names(names)) => {
                return match names.iter().position(|name| name == text) {
                    Some(class) => Ok(Some(Label::Class(class))),
                    None => invalid(format!(
                        "label {text:?} is not one of the training file's labels ({}); every \
                         label must appear in the training file",
                        names.join(", ")
                    )),
                };
            }
            (LabelCell::Text(text), _) => {
                return invalid(format!(
                    "label {text:?} is not a number; labels that are text are read as class \
                     names when the training file's labels are text too"
                ));
            }
            (LabelCell::Number(value), Self::Names(names)) => {
                return invalid(format!(
                    "label {value} is a number, but the training file's labels are names ({}); \
                     use the names here too",
                    names.join(", ")
                ));
            }
            (LabelCell::Number(value), _) => value,
        };
        match self {
            Self::Scores if !value.is_finite() => invalid(format!("label {value} is not a number")),
            Self::Scores => Ok(Some(Label::Score(value as f32))),
            _ => {
                let n = self.num_classes();
                if value.fract() != 0.0 || value < 0.0 || value >= n as f64 {
                    return invalid(format!(
                        "label {value} is outside the task's classes 0..={} (-1 marks an \
                         unlabelled row)",
                        n - 1
                    ));
                }
                Ok(Some(Label::Class(value as usize)))
            }
        }
    }
}

/// The distinct labels of `path` in sorted order where they are text, as
/// `run_glue_no_trainer.py` builds its label list from the training file; `None` where they are
/// numbers.
pub fn label_names(path: &Path, columns: &Columns) -> Result<Option<Vec<String>>, DataError> {
    let mut names = std::collections::BTreeSet::new();
    let mut number = None;
    read_rows(path, columns, &mut |cell, at| {
        match cell {
            LabelCell::Text(text) => {
                names.insert(text.to_string());
            }
            LabelCell::Number(value) => {
                number.get_or_insert_with(|| format!("{}: label {value}", at()));
            }
        }
        Ok(None)
    })?;
    match (names.is_empty(), number) {
        (true, _) => Ok(None),
        (false, None) => Ok(Some(names.into_iter().collect())),
        (false, Some(number)) => Err(DataError::Invalid(format!(
            "{number} is a number, but other labels are text (e.g. {:?}); use one kind",
            names.first().unwrap()
        ))),
    }
}

/// What reading a row's label gives: its label, given the cell and where it is.
type LabelOf<'a> =
    dyn FnMut(LabelCell, &dyn Fn() -> String) -> Result<Option<Label>, DataError> + 'a;

/// Reads every row of `path`, by its extension: `.parquet`, `.csv`, `.tsv`, `.jsonl`/`.json`.
pub fn read_examples(
    path: &Path,
    columns: &Columns,
    labels: &LabelSpace,
) -> Result<Vec<Example>, DataError> {
    let examples = read_rows(path, columns, &mut |cell, at| labels.label(cell, at))?;
    if examples.is_empty() {
        return Err(DataError::Invalid(format!(
            "{}: the split is empty (no rows)",
            path.display()
        )));
    }
    Ok(examples)
}

/// Every row of `path`, each label read by `label_of`.
fn read_rows(
    path: &Path,
    columns: &Columns,
    label_of: &mut LabelOf,
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
    match extension.as_str() {
        "parquet" => read_parquet(path, columns, label_of),
        "csv" => read_delimited(path, b',', columns, label_of),
        "tsv" => read_delimited(path, b'\t', columns, label_of),
        "jsonl" | "json" => read_json_lines(path, columns, label_of),
        _ => Err(DataError::Invalid(format!(
            "{}: unknown file type; use .parquet, .csv, .tsv or .jsonl",
            path.display()
        ))),
    }
}

fn open(path: &Path) -> Result<File, DataError> {
    File::open(path).map_err(|e| DataError::Io(format!("cannot open {}: {e}", path.display())))
}

fn read_parquet(
    path: &Path,
    columns: &Columns,
    label_of: &mut LabelOf,
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
                label: label_at(path, &columns.label, label, i, row, label_of)?,
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
    label_of: &mut LabelOf,
) -> Result<Option<Label>, DataError> {
    let at = || format!("{}: column `{name}`, row {row}", path.display());
    if column.is_null(i) {
        return Err(DataError::Invalid(format!("{}: the label is null", at())));
    }
    let number = |value| LabelCell::Number(value);
    let cell = match column.data_type() {
        DataType::Int64 => number(column.as_primitive::<Int64Type>().value(i) as f64),
        DataType::Int32 => number(column.as_primitive::<Int32Type>().value(i) as f64),
        DataType::Int16 => number(column.as_primitive::<Int16Type>().value(i) as f64),
        DataType::Int8 => number(column.as_primitive::<Int8Type>().value(i) as f64),
        DataType::Float64 => number(column.as_primitive::<Float64Type>().value(i)),
        DataType::Float32 => number(column.as_primitive::<Float32Type>().value(i) as f64),
        DataType::Utf8 => LabelCell::Text(column.as_string::<i32>().value(i)),
        DataType::LargeUtf8 => LabelCell::Text(column.as_string::<i64>().value(i)),
        DataType::Utf8View => LabelCell::Text(column.as_string_view().value(i)),
        other => {
            return Err(DataError::Invalid(format!(
                "{}: column `{name}` holds {other}, not numbers or text labels",
                path.display()
            )));
        }
    };
    label_of(cell, &at)
}

fn read_delimited(
    path: &Path,
    delimiter: u8,
    columns: &Columns,
    label_of: &mut LabelOf,
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
        let cell = match label_text.parse() {
            Ok(value) => LabelCell::Number(value),
            Err(_) => LabelCell::Text(label_text),
        };
        examples.push(Example {
            text_a: field(a).to_string(),
            text_b: b.map(|b| field(b).to_string()),
            label: label_of(cell, &|| at(&columns.label))?,
        });
    }
    Ok(examples)
}

fn read_json_lines(
    path: &Path,
    columns: &Columns,
    label_of: &mut LabelOf,
) -> Result<Vec<Example>, DataError> {
    let source = path.display().to_string();
    json_lines(
        BufReader::new(open(path)?),
        &source,
        columns,
        Some(label_of),
    )
}

/// JSON lines without labels, as `predict` takes them: `sentence1`, and `sentence2` where a
/// line has one. `source` names the input in messages (a path, or standard input).
pub fn read_unlabelled_json_lines(
    reader: impl BufRead,
    source: &str,
) -> Result<Vec<Example>, DataError> {
    let columns = Columns {
        text_a: "sentence1".into(),
        text_b: Some("sentence2".into()),
        label: String::new(),
    };
    json_lines(reader, source, &columns, None)
}

/// Every line of `reader` that is not blank, one JSON object each. With `label_of`, every
/// column is required; without, the rows have no label and the second text is optional.
fn json_lines(
    reader: impl BufRead,
    source: &str,
    columns: &Columns,
    mut label_of: Option<&mut LabelOf>,
) -> Result<Vec<Example>, DataError> {
    let mut examples = Vec::new();
    for (row, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| DataError::Io(format!("{source}: line {}: {e}", row + 1)))?;
        if line.trim().is_empty() {
            continue;
        }
        let at = |name: &str| format!("{source}: line {}, field `{name}`", row + 1);
        let object: serde_json::Value = serde_json::from_str(&line).map_err(|e| {
            DataError::Invalid(format!("{source}: line {}: not JSON: {e}", row + 1))
        })?;
        let text = |name: &str| match object.get(name) {
            Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
            Some(serde_json::Value::Null) | None => Ok(None),
            Some(other) => Err(DataError::Invalid(format!(
                "{}: {other} is not text",
                at(name)
            ))),
        };
        let required = |name: &str| {
            text(name)?.ok_or_else(|| DataError::Invalid(format!("{}: missing or null", at(name))))
        };
        let (text_b, label) = match label_of.as_deref_mut() {
            Some(label_of) => {
                let cell = match object.get(&columns.label) {
                    Some(serde_json::Value::Number(n)) => {
                        LabelCell::Number(n.as_f64().unwrap_or(f64::NAN))
                    }
                    Some(serde_json::Value::String(text)) => LabelCell::Text(text),
                    Some(other) => {
                        return Err(DataError::Invalid(format!(
                            "{}: {other} is not a label (a number or text)",
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
                (
                    columns.text_b.as_deref().map(required).transpose()?,
                    label_of(cell, &|| at(&columns.label))?,
                )
            }
            None => (
                columns.text_b.as_deref().map(text).transpose()?.flatten(),
                None,
            ),
        };
        examples.push(Example {
            text_a: required(&columns.text_a)?,
            text_b,
            label,
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

    const TWO: LabelSpace = LabelSpace::Classes(2);

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
            let err = read_examples(&path, &pair_columns(), &TWO)
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
        let rows = read_examples(&path, &pair_columns(), &TWO).unwrap();
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
        let err = read_examples(&path, &pair_columns(), &TWO)
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
        let err = read_examples(&path, &pair_columns(), &TWO)
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
        let err = read_examples(&path, &pair_columns(), &TWO)
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
        let err = read_examples(&path, &single, &TWO).unwrap_err().to_string();
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
        let rows = read_examples(&path, &pair_columns(), &LabelSpace::Scores).unwrap();
        assert_eq!(rows[0].label, Some(Label::Score(3.8)));
    }

    /// Text labels, as `run_glue_no_trainer.py` takes them: the training file's distinct labels
    /// sorted are the classes, in every format; a label the training file lacks, or labels of
    /// both kinds, are named errors.
    #[test]
    fn text_labels_are_the_training_files_sorted_names() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("train.csv");
        std::fs::write(
            &csv,
            "sentence1,sentence2,label\na,b,not_equivalent\nc,d,equivalent\ne,f,not_equivalent\n",
        )
        .unwrap();
        let jsonl = dir.path().join("train.jsonl");
        std::fs::write(
            &jsonl,
            "{\"sentence1\": \"a\", \"sentence2\": \"b\", \"label\": \"not_equivalent\"}\n\
             {\"sentence1\": \"c\", \"sentence2\": \"d\", \"label\": \"equivalent\"}\n\
             {\"sentence1\": \"e\", \"sentence2\": \"f\", \"label\": \"not_equivalent\"}\n",
        )
        .unwrap();
        let parquet = dir.path().join("train.parquet");
        write_parquet(
            &parquet,
            vec![
                (
                    "sentence1",
                    Arc::new(StringArray::from(vec!["a", "c", "e"])) as ArrayRef,
                ),
                (
                    "sentence2",
                    Arc::new(StringArray::from(vec!["b", "d", "f"])),
                ),
                (
                    "label",
                    Arc::new(StringArray::from(vec![
                        "not_equivalent",
                        "equivalent",
                        "not_equivalent",
                    ])),
                ),
            ],
        );
        let names = vec!["equivalent".to_string(), "not_equivalent".to_string()];
        for path in [&csv, &jsonl, &parquet] {
            assert_eq!(
                label_names(path, &pair_columns()).unwrap(),
                Some(names.clone()),
                "{}",
                path.display()
            );
            let rows =
                read_examples(path, &pair_columns(), &LabelSpace::Names(names.clone())).unwrap();
            let labels: Vec<_> = rows.iter().map(|r| r.label).collect();
            let (equivalent, not) = (Some(Label::Class(0)), Some(Label::Class(1)));
            assert_eq!(labels, [not, equivalent, not], "{}", path.display());
        }
        let numbers = dir.path().join("numbers.csv");
        std::fs::write(&numbers, "sentence1,sentence2,label\na,b,1\n").unwrap();
        assert_eq!(label_names(&numbers, &pair_columns()).unwrap(), None);

        let only = LabelSpace::Names(vec!["equivalent".into()]);
        let err = read_examples(&csv, &pair_columns(), &only)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(
                "train.csv: column `label`, row 0: label \"not_equivalent\" is not one of \
                          the training file's labels (equivalent)"
            ),
            "{err}"
        );
        let err = read_examples(&numbers, &pair_columns(), &LabelSpace::Names(names))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("label 1 is a number, but the training file's labels are names"),
            "{err}"
        );
        let mixed = dir.path().join("mixed.csv");
        std::fs::write(&mixed, "sentence1,sentence2,label\na,b,yes\nc,d,0\n").unwrap();
        let err = label_names(&mixed, &pair_columns())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(
                "mixed.csv: column `label`, row 1: label 0 is a number, but other labels \
                          are text (e.g. \"yes\")"
            ),
            "{err}"
        );
    }

    #[test]
    fn unlabelled_json_lines_take_the_second_sentence_where_a_line_has_one() {
        let lines = "{\"sentence1\": \"a\", \"sentence2\": \"b\"}\n\n{\"sentence1\": \"c\"}\n";
        let examples = read_unlabelled_json_lines(lines.as_bytes(), "input").unwrap();
        let texts: Vec<_> = examples
            .iter()
            .map(|e| (e.text_a.as_str(), e.text_b.as_deref(), e.label.is_none()))
            .collect();
        assert_eq!(texts, [("a", Some("b"), true), ("c", None, true)]);
        let no_first = format!("{lines}{{\"sentence2\": \"d\"}}\n");
        let error = read_unlabelled_json_lines(no_first.as_bytes(), "input").unwrap_err();
        assert_eq!(
            error.to_string(),
            "input: line 4, field `sentence1`: missing or null"
        );
    }

    #[test]
    fn csv_tsv_and_json_lines() {
        let dir = tempfile::tempdir().unwrap();
        let csv_path = dir.path().join("d.csv");
        std::fs::write(&csv_path, "sentence1,sentence2,label\n\"a, b\",c,1\n").unwrap();
        let rows = read_examples(&csv_path, &pair_columns(), &TWO).unwrap();
        assert_eq!(rows[0].text_a, "a, b");

        let tsv_path = dir.path().join("d.tsv");
        std::fs::write(&tsv_path, "sentence1\tsentence2\tlabel\na\tc\tx\n").unwrap();
        let err = read_examples(&tsv_path, &pair_columns(), &TWO)
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
        let err = read_examples(&json_path, &pair_columns(), &TWO)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 1, field `sentence2`: missing or null"),
            "{err}"
        );

        std::fs::write(&json_path, "").unwrap();
        let err = read_examples(&json_path, &pair_columns(), &TWO)
            .unwrap_err()
            .to_string();
        assert!(err.contains("the split is empty"), "{err}");

        let err = read_examples(&dir.path().join("none.csv"), &pair_columns(), &TWO)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cannot open") && err.contains("none.csv"),
            "{err}"
        );
    }
}
