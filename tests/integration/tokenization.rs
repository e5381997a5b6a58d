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
    let dir = fixture("tiny-bpe");
    check_fixture_pairs(
        "tiny-bpe",
        &[
            TokenizerFiles::Json(dir.join("tokenizer.json")),
            TokenizerFiles::ByteLevelBpe {
                vocab: dir.join("vocab.json"),
                merges: dir.join("merges.txt"),
            },
        ],
        1,
    );
}

/// DeBERTa-v3's SentencePiece Unigram, from `tokenizer.json` and built from `spm.model` alone,
/// against transformers' `DebertaV2TokenizerFast` (`assets/fixtures/tiny-unigram/`, a model
/// sentencepiece trained on MRPC's training text with its default NFKC rules): `[CLS] a [SEP]
/// b [SEP]` with token types, and `[MASK]` added after the vocabulary.
#[test]
fn sentencepiece_unigram_pairs_match_transformers() {
    // A DeBERTa-v3 directory as the Hub has it: spm.model and tokenizer_config.json only.
    let local = tempfile::tempdir().unwrap();
    for (from, name) in [
        ("tiny-deberta-v2/config.json", "config.json"),
        ("tiny-deberta-v2/model.safetensors", "model.safetensors"),
        ("tiny-unigram/spm.model", "spm.model"),
    ] {
        std::fs::copy(fixture(from), local.path().join(name)).unwrap();
    }
    let config = local.path().join("tokenizer_config.json");
    std::fs::write(&config, r#"{"do_lower_case": false, "vocab_type": "spm"}"#).unwrap();
    let spm = Hub::from_env("main", true)
        .model_files(local.path().to_str().unwrap())
        .unwrap()
        .tokenizer;
    assert_eq!(
        spm,
        TokenizerFiles::SentencePiece {
            model: local.path().join("spm.model"),
            config: Some(config),
        }
    );
    let dir = fixture("tiny-unigram");
    check_fixture_pairs(
        "tiny-unigram",
        &[
            TokenizerFiles::Json(dir.join("tokenizer.json")),
            spm.clone(),
        ],
        0,
    );
    let reference = json("tiny-unigram/reference.json");
    let tokenizer = PairTokenizer::from_files(&spm, 128).unwrap();
    assert_eq!(
        tokenizer.vocab_size() as i64,
        reference["special_tokens"]["[MASK]"].as_i64().unwrap() + 1
    );
    // Text that the NFKC character map and the whitespace steps change, which MRPC lacks.
    let unusual = &reference["unusual_pairs"];
    let rows: Vec<Example> = unusual["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|pair| Example {
            text_a: pair[0].as_str().unwrap().into(),
            text_b: Some(pair[1].as_str().unwrap().into()),
            label: None,
        })
        .collect();
    let (encoded, _) = tokenizer.encode_all(&rows).unwrap();
    for (i, e) in encoded.iter().enumerate() {
        let ids: Vec<i64> = e.input_ids.iter().map(|&t| t as i64).collect();
        let types: Vec<i64> = e.token_type_ids.iter().map(|&t| t as i64).collect();
        assert_eq!(ids, ints(&unusual["input_ids"][i]), "unusual pair {i}");
        assert_eq!(
            types,
            ints(&unusual["token_type_ids"][i]),
            "unusual pair {i}"
        );
    }
}

/// The ids (and token types, where the reference has them) that each of `files` gives for
/// MRPC's validation pairs are those in the fixture `name`'s reference.json, whole and
/// truncated to 24 tokens.
fn check_fixture_pairs(name: &str, files: &[TokenizerFiles], pad_id: u32) {
    require_hf_home();
    let hub = Hub::from_env("main", true);
    let rows = Task::by_name("mrpc")
        .unwrap()
        .load_split(&hub, "validation", None)
        .unwrap();
    let reference = json(&format!("{name}/reference.json"));
    let has_types = reference.get("token_type_ids").is_some();
    for files in files {
        let tokenizer = PairTokenizer::from_files(files, 128).unwrap();
        assert_eq!(tokenizer.pad_id(), pad_id, "{files:?}: pad id");
        let (encoded, _) = tokenizer.encode_all(&rows).unwrap();
        assert_eq!(encoded.len(), 408);
        for (i, e) in encoded.iter().enumerate() {
            let ids: Vec<i64> = e.input_ids.iter().map(|&t| t as i64).collect();
            assert_eq!(ids, ints(&reference["input_ids"][i]), "{files:?}: pair {i}");
            if has_types {
                let types: Vec<i64> = e.token_type_ids.iter().map(|&t| t as i64).collect();
                let want = ints(&reference["token_type_ids"][i]);
                assert_eq!(types, want, "{files:?}: types of pair {i}");
            }
        }
        let truncating = PairTokenizer::from_files(files, 24).unwrap();
        let (short, _) = truncating.encode_all(&rows[..8]).unwrap();
        for (i, e) in short.iter().enumerate() {
            let ids: Vec<i64> = e.input_ids.iter().map(|&t| t as i64).collect();
            let want = ints(&reference["truncated_24"]["input_ids"][i]);
            assert_eq!(ids, want, "{files:?}: truncated pair {i}");
        }
    }
}

/// `eval --stride` and `predict --stride`: a long input's windows are transformers'
/// `return_overflowing_tokens=True` windows with the same stride (of a pair, the longer sentence
/// cut, the other whole in each), they cover every token, and an input that fits is one window,
/// the row without `--stride`.
#[test]
fn windows_of_long_inputs_match_transformers() {
    require_hf_home();
    let reference = json("windows_reference.json");
    let files = Hub::from_env("main", true)
        .model_files(reference["tokenizer"].as_str().unwrap())
        .unwrap();
    let max_length = reference["max_length"].as_u64().unwrap() as usize;
    let stride = reference["stride"].as_u64().unwrap() as usize;
    let tokenizer = PairTokenizer::from_files(&files.tokenizer, max_length).unwrap();
    let whole = PairTokenizer::from_files(&files.tokenizer, 512).unwrap();
    let cases = reference["cases"].as_array().unwrap();
    let examples: Vec<Example> = cases
        .iter()
        .map(|case| Example {
            text_a: case["sentence1"].as_str().unwrap().into(),
            text_b: case["sentence2"].as_str().map(Into::into),
            label: None,
        })
        .collect();
    let (windows, owners) = tokenizer.encode_windows(&examples, stride).unwrap();
    let (rows, _) = tokenizer.encode_all(&examples).unwrap();
    let (untruncated, _) = whole.encode_all(&examples).unwrap();
    for (index, case) in cases.iter().enumerate() {
        let what = case["what"].as_str().unwrap();
        let mine: Vec<_> = windows
            .iter()
            .zip(&owners)
            .filter(|(_, owner)| **owner == index)
            .map(|(window, _)| window)
            .collect();
        let want = case["input_ids"].as_array().unwrap();
        assert_eq!(mine.len(), want.len(), "{what}: windows");
        for (w, (window, want)) in mine.iter().zip(want).enumerate() {
            let ids: Vec<i64> = window.input_ids.iter().map(|&t| t as i64).collect();
            assert_eq!(ids, ints(want), "{what}: input_ids of window {w}");
            let types: Vec<i64> = window.token_type_ids.iter().map(|&t| t as i64).collect();
            assert_eq!(
                types,
                ints(&case["token_type_ids"][w]),
                "{what}: token types"
            );
        }
        if mine.len() == 1 {
            assert_eq!(
                mine[0].input_ids, rows[index].input_ids,
                "{what}: not the plain row"
            );
        }
        if case["sentence2"].is_null() {
            // [CLS] text [SEP]: the windows' texts, each after the first less the `stride`
            // tokens it repeats, are the whole text.
            let text = |ids: &[u32]| ids[1..ids.len() - 1].to_vec();
            let mut covered = text(&mine[0].input_ids);
            for window in &mine[1..] {
                covered.extend_from_slice(&text(&window.input_ids)[stride..]);
            }
            assert_eq!(
                covered,
                text(&untruncated[index].input_ids),
                "{what}: coverage"
            );
        }
    }
}
