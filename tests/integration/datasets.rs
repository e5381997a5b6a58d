//! A user's own data files as other tools write them, read as the Hub's split reads.

use burnbert_data::{Example, Hub, Task};

use crate::common::*;

/// The first 16 rows of MRPC's validation split, from the offline cache.
fn mrpc_validation_head() -> Vec<Example> {
    require_hf_home();
    let hub = Hub::from_env("main", true);
    let mut rows = Task::by_name("mrpc")
        .unwrap()
        .load_split(&hub, "validation", None)
        .unwrap();
    rows.truncate(16);
    rows
}

/// Parquet files compressed as pyarrow, Polars (zstd by default) and Spark write them
/// (`assets/fixtures/parquet/`, written by pyarrow with each codec) read as the Hub's file.
#[test]
fn parquet_files_in_every_common_codec_read_as_the_hub_split() {
    let expected = mrpc_validation_head();
    let mrpc = Task::by_name("mrpc").unwrap();
    for codec in ["snappy", "zstd", "gzip", "lz4", "brotli"] {
        let path = fixture(&format!("parquet/mrpc-validation-16-{codec}.parquet"));
        let rows = mrpc
            .load_split(&Hub::from_env("main", true), "validation", Some(&path))
            .unwrap_or_else(|e| panic!("{codec}: {e}"));
        assert_eq!(rows, expected, "{codec}");
    }
}

/// A CSV saved by Excel on Windows: a byte-order mark before the header and CRLF line ends,
/// with a quoted field that holds a comma and a doubled quote.
#[test]
fn csv_with_a_byte_order_mark_and_crlf_line_ends_reads_as_the_hub_split() {
    let expected = mrpc_validation_head();
    let quote = |text: &str| format!("\"{}\"", text.replace('"', "\"\""));
    let mut csv = String::from("\u{feff}idx,sentence1,sentence2,label\r\n");
    for (i, row) in expected.iter().enumerate() {
        let label = match row.label {
            Some(burnbert_data::Label::Class(c)) => c,
            other => panic!("{other:?}"),
        };
        let b = row.text_b.as_deref().unwrap();
        csv += &format!("{i},{},{},{label}\r\n", quote(&row.text_a), quote(b));
    }
    assert!(expected.iter().any(|r| r.text_a.contains(',')));
    assert!(
        expected
            .iter()
            .any(|r| r.text_b.as_deref().unwrap().contains('"'))
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("validation.csv");
    std::fs::write(&path, csv).unwrap();
    let rows = Task::by_name("mrpc")
        .unwrap()
        .load_split(&Hub::from_env("main", true), "validation", Some(&path))
        .unwrap();
    assert_eq!(rows, expected);
}
