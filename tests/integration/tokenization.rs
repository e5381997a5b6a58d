//! Tokenization against transformers' ids for every MRPC validation pair, read through
//! hf-hub from the offline cache exactly as `train` reads them.

use burnbert_data::{Hub, PairTokenizer, Task};

use crate::common::*;

#[test]
fn mrpc_validation_ids_match_transformers() {
    require_hf_home();
    let hub = Hub::from_env("main", true);
    let task = Task::by_name("mrpc").unwrap();
    let rows = task.load_split(&hub, "validation", None).unwrap();
    assert_eq!(rows.len(), 408);
    let files = hub
        .model_files("sentence-transformers/all-MiniLM-L6-v2")
        .unwrap();
    let reference = json("mrpc_validation_token_ids.json");

    // all-MiniLM-L6-v2's tokenizer.json pads to 128; the override gives unpadded ids.
    let tokenizer = PairTokenizer::from_file(&files.tokenizer, 512).unwrap();
    let (encoded, _) = tokenizer.encode_all(&rows).unwrap();
    for (i, e) in encoded.iter().enumerate() {
        let ids: Vec<i64> = e.input_ids.iter().map(|&t| t as i64).collect();
        let types: Vec<i64> = e.token_type_ids.iter().map(|&t| t as i64).collect();
        assert_eq!(
            ids,
            ints(&reference["input_ids"][i]),
            "input_ids of pair {i}"
        );
        assert_eq!(
            types,
            ints(&reference["token_type_ids"][i]),
            "token_type_ids of pair {i}"
        );
    }
    let labels: Vec<i64> = rows
        .iter()
        .map(|r| match r.label {
            Some(burnbert_data::Label::Class(c)) => c as i64,
            other => panic!("MRPC label {other:?}"),
        })
        .collect();
    assert_eq!(labels, ints(&reference["label"]));

    // Longest-first truncation to 24 tokens, as transformers' `truncation=True`.
    let truncating = PairTokenizer::from_file(&files.tokenizer, 24).unwrap();
    let (short, _) = truncating.encode_all(&rows[..8]).unwrap();
    let expected = &reference["truncated_24"];
    for (i, e) in short.iter().enumerate() {
        let ids: Vec<i64> = e.input_ids.iter().map(|&t| t as i64).collect();
        assert_eq!(ids, ints(&expected["input_ids"][i]), "truncated pair {i}");
        let types: Vec<i64> = e.token_type_ids.iter().map(|&t| t as i64).collect();
        assert_eq!(
            types,
            ints(&expected["token_type_ids"][i]),
            "truncated types {i}"
        );
    }
}
