//! Sentence-pair tokenization with the model's own `tokenizer.json`, as transformers'
//! `tokenizer(s1, s2, truncation=True)` does it: `[CLS] a [SEP] b [SEP]`, token types 0
//! then 1, longest-first truncation, and no padding (batches are padded dynamically).

use std::path::Path;
use std::time::{Duration, Instant};

use tokenizers::{
    EncodeInput, Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy,
};

use crate::DataError;
use crate::dataset::{Example, Label};

/// One tokenized example, unpadded.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    pub input_ids: Vec<u32>,
    pub token_type_ids: Vec<u32>,
    pub label: Option<Label>,
}

impl Encoded {
    /// Number of real tokens.
    pub fn len(&self) -> usize {
        self.input_ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.input_ids.is_empty()
    }
}

/// A `tokenizer.json` set up for dynamic padding and truncation to `max_length`.
#[derive(Clone)]
pub struct PairTokenizer {
    tokenizer: Tokenizer,
    max_length: usize,
}

impl PairTokenizer {
    /// Loads `tokenizer.json`, replacing whatever padding and truncation it has baked in
    /// (all-MiniLM-L6-v2's pads everything to 128) with no padding and longest-first
    /// truncation to `max_length`.
    pub fn from_file(path: &Path, max_length: usize) -> Result<Self, DataError> {
        let unreadable = |why: String| {
            DataError::Invalid(format!(
                "{}: not a readable tokenizer.json ({why}); re-download it or pass a model \
                 directory with a valid one",
                path.display()
            ))
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| DataError::Io(format!("cannot read {}: {e}", path.display())))?;
        // tokenizers 0.23 panics on some malformed files instead of returning an error (its
        // decoder deserializer unwraps a nested parse), which the fuzz tests found: check the
        // JSON syntax first, and turn a remaining panic into an error.
        serde_json::from_str::<serde_json::Value>(&text)
            .map_err(|e| unreadable(format!("not JSON: {e}")))?;
        let mut tokenizer = std::panic::catch_unwind(|| text.parse::<Tokenizer>())
            .map_err(|_| unreadable("the tokenizers library could not parse it".into()))?
            .map_err(|e| unreadable(e.to_string()))?;
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| DataError::Invalid(format!("max length {max_length}: {e}")))?;
        Ok(Self {
            tokenizer,
            max_length,
        })
    }

    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// The id of the padding token (`[PAD]`, 0 in BERT vocabularies).
    pub fn pad_id(&self) -> u32 {
        self.tokenizer.token_to_id("[PAD]").unwrap_or(0)
    }

    /// The size of the vocabulary, special tokens included.
    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }

    /// Tokenizes all examples in parallel, in order, and says how long it took.
    pub fn encode_all(&self, examples: &[Example]) -> Result<(Vec<Encoded>, Duration), DataError> {
        let start = Instant::now();
        let inputs: Vec<EncodeInput> = examples
            .iter()
            .map(|e| match &e.text_b {
                Some(b) => (e.text_a.as_str(), b.as_str()).into(),
                None => e.text_a.as_str().into(),
            })
            .collect();
        let encodings = self
            .tokenizer
            .encode_batch(inputs, true)
            .map_err(|e| DataError::Invalid(format!("tokenization failed: {e}")))?;
        let encoded = encodings
            .into_iter()
            .zip(examples)
            .map(|(encoding, example)| Encoded {
                input_ids: encoding.get_ids().to_vec(),
                token_type_ids: encoding.get_type_ids().to_vec(),
                label: example.label,
            })
            .collect();
        Ok((encoded, start.elapsed()))
    }
}
