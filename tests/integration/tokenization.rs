//! Tokenization against transformers' ids for every MRPC validation pair, read through
//! hf-hub from the offline cache exactly as `train` reads them.

use burnbert_data::{Example, Hub, PairTokenizer, Task, TokenizerFiles};

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
    assert!(matches!(files.tokenizer, TokenizerFiles::Json(_)));
    check_mrpc_ids(&rows, &files.tokenizer);

    // The same vocabulary without tokenizer.json: WordPiece built from vocab.txt, lower-cased
    // as its tokenizer_config.json says.
    let dir = tempfile::tempdir().unwrap();
    for name in [
        "config.json",
        "vocab.txt",
        "tokenizer_config.json",
        "model.safetensors",
    ] {
        std::fs::copy(files.config.with_file_name(name), dir.path().join(name)).unwrap();
    }
    let local = hub.model_files(dir.path().to_str().unwrap()).unwrap();
    assert!(
        matches!(
            &local.tokenizer,
            TokenizerFiles::WordPiece {
                config: Some(_),
                ..
            }
        ),
        "{:?}",
        local.tokenizer
    );
    check_mrpc_ids(&rows, &local.tokenizer);
}

/// `tokenizer`'s ids for MRPC's validation pairs are transformers' all-MiniLM-L6-v2's.
fn check_mrpc_ids(rows: &[Example], files: &TokenizerFiles) {
    let reference = json("mrpc_validation_token_ids.json");
    // all-MiniLM-L6-v2's tokenizer.json pads to 128; the override gives unpadded ids.
    let tokenizer = PairTokenizer::from_files(files, 512).unwrap();
    let (encoded, _) = tokenizer.encode_all(rows).unwrap();
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
    let truncating = PairTokenizer::from_files(files, 24).unwrap();
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

/// RoBERTa's byte-level BPE, from `tokenizer.json` and built from `vocab.json` + `merges.txt`,
/// against transformers' `RobertaTokenizerFast` over MRPC's validation pairs
/// (`assets/fixtures/tiny-bpe/`, a vocabulary the fixture script trained on MRPC's training
/// text): `<s> a </s></s> b </s>`.
#[test]
fn byte_level_bpe_pairs_match_transformers() {
    require_hf_home();
    let hub = Hub::from_env("main", true);
    let rows = Task::by_name("mrpc")
        .unwrap()
        .load_split(&hub, "validation", None)
        .unwrap();
    let reference = json("tiny-bpe/reference.json");
    let dir = fixture("tiny-bpe");
    for files in [
        TokenizerFiles::Json(dir.join("tokenizer.json")),
        TokenizerFiles::ByteLevelBpe {
            vocab: dir.join("vocab.json"),
            merges: dir.join("merges.txt"),
        },
    ] {
        let tokenizer = PairTokenizer::from_files(&files, 128).unwrap();
        assert_eq!(tokenizer.pad_id(), 1, "{files:?}: <pad>");
        let (encoded, _) = tokenizer.encode_all(&rows).unwrap();
        assert_eq!(encoded.len(), 408);
        for (i, e) in encoded.iter().enumerate() {
            let ids: Vec<i64> = e.input_ids.iter().map(|&t| t as i64).collect();
            assert_eq!(ids, ints(&reference["input_ids"][i]), "{files:?}: pair {i}");
        }
        let truncating = PairTokenizer::from_files(&files, 24).unwrap();
        let (short, _) = truncating.encode_all(&rows[..8]).unwrap();
        for (i, e) in short.iter().enumerate() {
            let ids: Vec<i64> = e.input_ids.iter().map(|&t| t as i64).collect();
            let want = ints(&reference["truncated_24"]["input_ids"][i]);
            assert_eq!(ids, want, "{files:?}: truncated pair {i}");
        }
    }
}
