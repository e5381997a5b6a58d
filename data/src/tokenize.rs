//! Sentence-pair tokenization with the model's own tokenizer, as transformers'
//! `tokenizer(s1, s2, truncation=True)` does it: the family's special tokens (`[CLS] a [SEP] b
//! [SEP]`, RoBERTa's `<s> a </s></s> b </s>`), longest-first truncation, and no padding
//! (batches are padded dynamically).
//!
//! The tokenizer comes from `tokenizer.json` where the checkpoint has one. Where it has only
//! the files of transformers' slow tokenizers, it is built as transformers' converters
//! (`convert_slow_tokenizer.py`) build the fast one: WordPiece from `vocab.txt`, byte-level BPE
//! from `vocab.json` and `merges.txt`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::processors::roberta::RobertaProcessing;
use tokenizers::{
    AddedToken, EncodeInput, Model, Tokenizer, TruncationDirection, TruncationParams,
    TruncationStrategy,
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

/// The files a checkpoint's tokenizer is made from, in the order transformers prefers them.
#[derive(Debug, Clone, PartialEq)]
pub enum TokenizerFiles {
    /// `tokenizer.json`, the fast tokenizer as saved.
    Json(PathBuf),
    /// `vocab.txt` (BERT, DistilBERT, ELECTRA): WordPiece, lower-cased unless
    /// `tokenizer_config.json` says `"do_lower_case": false`.
    WordPiece {
        vocab: PathBuf,
        config: Option<PathBuf>,
    },
    /// `vocab.json` and `merges.txt` (RoBERTa): byte-level BPE.
    ByteLevelBpe { vocab: PathBuf, merges: PathBuf },
}

impl TokenizerFiles {
    /// Every file, to be copied beside a fine-tuned model.
    pub fn files(&self) -> Vec<&Path> {
        match self {
            Self::Json(path) => vec![path],
            Self::WordPiece { vocab, config } => std::iter::once(vocab.as_path())
                .chain(config.as_deref())
                .collect(),
            Self::ByteLevelBpe { vocab, merges } => vec![vocab, merges],
        }
    }

    /// The file that names this tokenizer in messages.
    pub fn path(&self) -> &Path {
        match self {
            Self::Json(path) => path,
            Self::WordPiece { vocab, .. } | Self::ByteLevelBpe { vocab, .. } => vocab,
        }
    }
}

/// A tokenizer set up for dynamic padding and truncation to `max_length`.
#[derive(Clone)]
pub struct PairTokenizer {
    tokenizer: Tokenizer,
    max_length: usize,
}

impl PairTokenizer {
    /// The tokenizer `files` make, truncating to `max_length`.
    pub fn from_files(files: &TokenizerFiles, max_length: usize) -> Result<Self, DataError> {
        match files {
            TokenizerFiles::Json(path) => Self::from_file(path, max_length),
            TokenizerFiles::WordPiece { vocab, config } => {
                let lowercase = match config {
                    Some(config) => do_lower_case(config)?,
                    None => true,
                };
                Self::configured(word_piece(vocab, lowercase)?, max_length)
            }
            TokenizerFiles::ByteLevelBpe { vocab, merges } => {
                Self::configured(byte_level_bpe(vocab, merges)?, max_length)
            }
        }
    }

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
        let tokenizer = std::panic::catch_unwind(|| text.parse::<Tokenizer>())
            .map_err(|_| unreadable("the tokenizers library could not parse it".into()))?
            .map_err(|e| unreadable(e.to_string()))?;
        Self::configured(tokenizer, max_length)
    }

    fn configured(mut tokenizer: Tokenizer, max_length: usize) -> Result<Self, DataError> {
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

    /// The id of the padding token: `[PAD]` (0 in BERT vocabularies), else `<pad>` (1 in
    /// RoBERTa's), else 0.
    pub fn pad_id(&self) -> u32 {
        ["[PAD]", "<pad>"]
            .iter()
            .find_map(|token| self.tokenizer.token_to_id(token))
            .unwrap_or(0)
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

fn invalid(path: &Path, why: impl std::fmt::Display) -> DataError {
    DataError::Invalid(format!("{}: {why}", path.display()))
}

/// `do_lower_case` of a `tokenizer_config.json`, true when absent (BertTokenizer's default).
fn do_lower_case(config: &Path) -> Result<bool, DataError> {
    let text = std::fs::read_to_string(config)
        .map_err(|e| DataError::Io(format!("cannot read {}: {e}", config.display())))?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| invalid(config, format!("not valid JSON ({e}); re-download it")))?;
    match value.get("do_lower_case") {
        None => Ok(true),
        Some(serde_json::Value::Bool(lower)) => Ok(*lower),
        Some(other) => Err(invalid(
            config,
            format!("do_lower_case is {other}, not true or false"),
        )),
    }
}

/// The vocabulary's special tokens marked special, as transformers adds them: their spelling
/// in a text is the token, whole.
fn add_special_tokens(
    tokenizer: &mut Tokenizer,
    tokens: &[&str],
    vocab: &Path,
) -> Result<(), DataError> {
    let present: Vec<AddedToken> = tokens
        .iter()
        .filter(|token| tokenizer.token_to_id(token).is_some())
        .map(|token| AddedToken::from(*token, true))
        .collect();
    tokenizer
        .add_special_tokens(present)
        .map(|_| ())
        .map_err(|e| invalid(vocab, format!("its special tokens: {e}")))
}

/// BERT's WordPiece from `vocab.txt`, as transformers' `BertConverter`: BERT's normaliser
/// (accents stripped with lower-casing), its pre-tokeniser, `[CLS] a [SEP] b [SEP]`.
fn word_piece(vocab: &Path, lowercase: bool) -> Result<Tokenizer, DataError> {
    let model = WordPiece::from_file(&vocab.to_string_lossy())
        .unk_token("[UNK]".into())
        .continuing_subword_prefix("##".into())
        .max_input_chars_per_word(100)
        .build()
        .map_err(|e| invalid(vocab, format!("not a readable vocab.txt ({e})")))?;
    let id = |token: &str| {
        model.token_to_id(token).ok_or_else(|| {
            invalid(
                vocab,
                format!("has no {token} token; is it BERT's vocabulary?"),
            )
        })
    };
    let (cls, sep) = (id("[CLS]")?, id("[SEP]")?);
    id("[UNK]")?;
    let mut tokenizer = Tokenizer::new(model);
    tokenizer
        .with_normalizer(Some(BertNormalizer::new(true, true, None, lowercase)))
        .map_err(|e| invalid(vocab, e))?;
    tokenizer
        .with_pre_tokenizer(Some(BertPreTokenizer))
        .with_post_processor(Some(BertProcessing::new(
            ("[SEP]".into(), sep),
            ("[CLS]".into(), cls),
        )))
        .with_decoder(Some(WordPieceDecoder::default()));
    add_special_tokens(
        &mut tokenizer,
        &["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
        vocab,
    )?;
    Ok(tokenizer)
}

/// RoBERTa's byte-level BPE from `vocab.json` and `merges.txt`, as transformers'
/// `RobertaConverter`: no prefix space, `<s> a </s></s> b </s>`.
fn byte_level_bpe(vocab: &Path, merges: &Path) -> Result<Tokenizer, DataError> {
    let model = BPE::from_file(&vocab.to_string_lossy(), &merges.to_string_lossy())
        .build()
        .map_err(|e| {
            invalid(
                vocab,
                format!(
                    "with {} not a readable BPE vocabulary ({e})",
                    merges.display()
                ),
            )
        })?;
    let id = |token: &str| {
        model.token_to_id(token).ok_or_else(|| {
            invalid(
                vocab,
                format!("has no {token} token; is it RoBERTa's vocabulary?"),
            )
        })
    };
    let (bos, eos) = (id("<s>")?, id("</s>")?);
    let mut tokenizer = Tokenizer::new(model);
    tokenizer
        .with_pre_tokenizer(Some(ByteLevel::new(false, true, true)))
        .with_post_processor(Some(
            RobertaProcessing::new(("</s>".into(), eos), ("<s>".into(), bos))
                .trim_offsets(true)
                .add_prefix_space(false),
        ))
        .with_decoder(Some(ByteLevelDecoder::default()));
    add_special_tokens(
        &mut tokenizer,
        &["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        vocab,
    )?;
    Ok(tokenizer)
}
