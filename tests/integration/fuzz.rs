//! Property tests of the loaders users feed their own files to: whatever bytes a
//! `config.json`, `tokenizer.json` or `model.safetensors` holds, loading ends in `Ok` or a
//! clear `Err`, never a panic or a crash. The inputs are seeded mutations of the tiny
//! fixture (bytes flipped, cut, duplicated), so a failure replays exactly.

use burnbert_data::PairTokenizer;
use burnbert_model::{ModelConfig, SequenceClassifier};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::common::*;

const CASES: usize = 150;

/// A random edit of `bytes`: overwrite, delete, duplicate or truncate a stretch.
fn mutate(bytes: &[u8], rng: &mut ChaCha8Rng) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for _ in 0..rng.random_range(1..4) {
        if out.is_empty() {
            break;
        }
        let at = rng.random_range(0..out.len());
        let len = rng.random_range(1..=16).min(out.len() - at);
        match rng.random_range(0..4) {
            0 => out[at..at + len].iter_mut().for_each(|b| *b = rng.random()),
            1 => drop(out.drain(at..at + len)),
            2 => {
                let copy = out[at..at + len].to_vec();
                out.splice(at..at, copy);
            }
            _ => out.truncate(at),
        }
    }
    out
}

/// Mutations that stay inside the first `prefix` bytes (a file's header), and anywhere.
fn cases(bytes: &[u8], prefix: usize, seed: u64) -> impl Iterator<Item = Vec<u8>> + '_ {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..CASES).map(move |i| {
        if i % 2 == 0 {
            let head = mutate(&bytes[..prefix.min(bytes.len())], &mut rng);
            [head.as_slice(), &bytes[prefix.min(bytes.len())..]].concat()
        } else {
            mutate(bytes, &mut rng)
        }
    })
}

#[test]
fn mutated_configs_load_or_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    let original = std::fs::read(fixture("tiny-bert/config.json")).unwrap();
    let mut loaded = 0;
    for bytes in cases(&original, original.len(), 1) {
        std::fs::write(&path, &bytes).unwrap();
        match ModelConfig::from_file(&path) {
            Ok(config) => {
                loaded += 1;
                assert!(config.hidden_size % config.num_attention_heads == 0);
            }
            Err(e) => assert!(e.to_string().contains("config.json"), "{e}"),
        }
    }
    assert!(loaded < CASES, "some mutations must be rejected");
}

#[test]
fn mutated_tokenizers_load_or_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.json");
    let original = std::fs::read(fixture("tiny-bert/tokenizer.json")).unwrap();
    for bytes in cases(&original, 600, 2) {
        std::fs::write(&path, &bytes).unwrap();
        if let Err(e) = PairTokenizer::from_file(&path, 64) {
            assert!(e.to_string().contains("tokenizer.json"), "{e}");
        }
    }
}

#[test]
fn mutated_safetensors_load_or_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let config = ModelConfig::from_file(&fixture("tiny-bert/config.json")).unwrap();
    let original = std::fs::read(fixture("tiny-bert/model.safetensors")).unwrap();
    // The header: an 8-byte length, then JSON naming every tensor's dtype, shape and offsets.
    let header = 8 + u64::from_le_bytes(original[..8].try_into().unwrap()) as usize;
    let device = cpu();
    let mut rejected = 0;
    for bytes in cases(&original, header, 3) {
        std::fs::write(&path, &bytes).unwrap();
        if let Err(e) = SequenceClassifier::from_pretrained(&config, &path, &device) {
            assert!(e.to_string().contains("model.safetensors"), "{e}");
            rejected += 1;
        }
    }
    assert!(rejected > 0, "some mutations must be rejected");
}
