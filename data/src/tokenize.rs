//! Sentence-pair tokenization with the model's own tokenizer, as transformers'
//! `tokenizer(s1, s2, truncation=True)` does it: the family's special tokens (`[CLS] a [SEP] b
//! [SEP]`, RoBERTa's `<s> a </s></s> b </s>`), longest-first truncation, and no padding
//! (batches are padded dynamically).
//!
//! The tokenizer comes from `tokenizer.json` where the checkpoint has one. Where it has only
//! the files of transformers' slow tokenizers, it is built as transformers' converters
//! (`convert_slow_tokenizer.py`) build the fast one: WordPiece from `vocab.txt`, byte-level BPE
//! from `vocab.json` and `merges.txt`, and DeBERTa-v2's SentencePiece Unigram from `spm.model`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::models::unigram::Unigram;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::normalizers::{Lowercase, NFC, Precompiled, Replace, Strip};
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::pre_tokenizers::punctuation::Punctuation;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::processors::roberta::RobertaProcessing;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{
    AddedToken, EncodeInput, Encoding, Model, NormalizerWrapper, PostProcessor,
    PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer, TruncationDirection,
};

use crate::DataError;
use crate::dataset::{Example, Label};
use crate::sentencepiece::{PieceKind, SentencePieceModel, SentencePieceType};

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
    /// `spm.model` (DeBERTa-v3): SentencePiece Unigram, with `do_lower_case`,
    /// `split_by_punct` and `add_prefix_space` from `tokenizer_config.json`.
    SentencePiece {
        model: PathBuf,
        config: Option<PathBuf>,
    },
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
            Self::SentencePiece { model, config } => std::iter::once(model.as_path())
                .chain(config.as_deref())
                .collect(),
        }
    }

    /// The file that names this tokenizer in messages.
    pub fn path(&self) -> &Path {
        match self {
            Self::Json(path) => path,
            Self::WordPiece { vocab, .. } | Self::ByteLevelBpe { vocab, .. } => vocab,
            Self::SentencePiece { model, .. } => model,
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
                let lowercase = config_flag(config.as_deref(), "do_lower_case", true)?;
                Self::configured(word_piece(vocab, lowercase)?, max_length)
            }
            TokenizerFiles::ByteLevelBpe { vocab, merges } => {
                Self::configured(byte_level_bpe(vocab, merges)?, max_length)
            }
            TokenizerFiles::SentencePiece { model, config } => {
                let flag = |name, default| config_flag(config.as_deref(), name, default);
                let options = SentencePieceOptions {
                    lowercase: flag("do_lower_case", false)?,
                    split_by_punct: flag("split_by_punct", false)?,
                    add_prefix_space: flag("add_prefix_space", true)?,
                };
                Self::configured(deberta_unigram(model, options)?, max_length)
            }
        }
    }

    /// Loads `tokenizer.json`, dropping whatever padding and truncation it has baked in
    /// (all-MiniLM-L6-v2's pads everything to 128): `encode_all` truncates to `max_length`.
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
            .with_truncation(None)
            .map_err(|e| DataError::Invalid(e.to_string()))?;
        let specials = tokenizer
            .get_post_processor()
            .map_or(0, |p| p.added_tokens(true));
        if max_length <= specials + 1 {
            return Err(DataError::Invalid(format!(
                "max length {max_length} leaves no room for a sentence pair beside the \
                 tokenizer's {specials} special tokens; use a larger --max-length"
            )));
        }
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
        let failed = |e| DataError::Invalid(format!("tokenization failed: {e}"));
        let texts_a: Vec<EncodeInput> = examples.iter().map(|e| e.text_a.as_str().into()).collect();
        let texts_b: Vec<EncodeInput> = examples
            .iter()
            .filter_map(|e| e.text_b.as_deref().map(Into::into))
            .collect();
        let mut b = self
            .tokenizer
            .encode_batch(texts_b, false)
            .map_err(failed)?
            .into_iter();
        let mut encoded = Vec::with_capacity(examples.len());
        for (a, example) in self
            .tokenizer
            .encode_batch(texts_a, false)
            .map_err(failed)?
            .into_iter()
            .zip(examples)
        {
            let pair = example.text_b.as_ref().and_then(|_| b.next());
            let (a, pair) = self.truncated(a, pair);
            let encoding = self.tokenizer.post_process(a, pair, true).map_err(failed)?;
            encoded.push(Encoded {
                input_ids: encoding.get_ids().to_vec(),
                token_type_ids: encoding.get_type_ids().to_vec(),
                label: example.label,
            });
        }
        Ok((encoded, start.elapsed()))
    }

    /// Every example in windows of at most `max_length` tokens, as transformers'
    /// `return_overflowing_tokens=True` with `stride` gives them: the text (of a pair, the
    /// longer one, the other kept whole in every window, as `truncation="only_second"` or
    /// `"only_first"`) cut into pieces that overlap by `stride` tokens, each with its special
    /// tokens. An example that fits is one window, the row [`Self::encode_all`] gives. Returns
    /// the windows in order and, for each, the index of its example.
    pub fn encode_windows(
        &self,
        examples: &[Example],
        stride: usize,
    ) -> Result<(Vec<Encoded>, Vec<usize>), DataError> {
        let failed = |e| DataError::Invalid(format!("tokenization failed: {e}"));
        let (mut windows, mut owners) = (Vec::new(), Vec::new());
        for (index, example) in examples.iter().enumerate() {
            let encode = |text: &str| self.tokenizer.encode(text, false).map_err(failed);
            let a = encode(&example.text_a)?;
            let b = example.text_b.as_deref().map(encode).transpose()?;
            let specials = self
                .tokenizer
                .get_post_processor()
                .map_or(0, |p| p.added_tokens(b.is_some()));
            let room = self.max_length - specials;
            let kept = b.as_ref().map_or(0, |b| a.len().min(b.len()));
            let fits = a.len() + b.as_ref().map_or(0, Encoding::len) <= room;
            if !fits && room <= kept + stride {
                return Err(DataError::Invalid(format!(
                    "example {}: --stride {stride} leaves no room for a window: {} tokens of \
                     --max-length {} are special tokens and the shorter sentence's; use a \
                     larger --max-length or a smaller --stride",
                    index + 1,
                    specials + kept,
                    self.max_length
                )));
            }
            // The piece that is cut, and the sentence kept whole beside it (first or second).
            let (mut cut, whole, cut_is_first) = match b {
                Some(b) if b.len() >= a.len() => (b, Some(a), false),
                Some(b) => (a, Some(b), true),
                None => (a, None, true),
            };
            cut.truncate(room - kept, stride, TruncationDirection::Right);
            let rest = cut.take_overflowing();
            for piece in std::iter::once(cut).chain(rest) {
                let (first, second) = match (&whole, cut_is_first) {
                    (None, _) => (piece, None),
                    (Some(whole), true) => (piece, Some(whole.clone())),
                    (Some(whole), false) => (whole.clone(), Some(piece)),
                };
                let encoding = self
                    .tokenizer
                    .post_process(first, second, true)
                    .map_err(failed)?;
                windows.push(Encoded {
                    input_ids: encoding.get_ids().to_vec(),
                    token_type_ids: encoding.get_type_ids().to_vec(),
                    label: example.label,
                });
                owners.push(index);
            }
        }
        Ok((windows, owners))
    }

    /// `a` and `b` cut to `max_length` with their special tokens, as transformers'
    /// `truncation=True` (longest first) does with the Python tokenizers 0.23.3: a sequence
    /// shorter than half the room keeps every token, otherwise each gets half and the longer one
    /// the odd token. This is done here rather than by the tokenizers crate because its 0.23.2
    /// gives the odd token to the second sentence with some tokenizers (SentencePiece Unigram's),
    /// whatever their lengths.
    fn truncated(&self, mut a: Encoding, mut b: Option<Encoding>) -> (Encoding, Option<Encoding>) {
        let specials = self
            .tokenizer
            .get_post_processor()
            .map_or(0, |p| p.added_tokens(b.is_some()));
        let room = self.max_length - specials;
        let cut = |encoding: &mut Encoding, n| encoding.truncate(n, 0, TruncationDirection::Right);
        match b.as_mut() {
            None => cut(&mut a, room),
            Some(b) if a.len() + b.len() > room => {
                let shorter = a.len().min(b.len());
                let (short, long) = if shorter <= room / 2 {
                    (shorter, room - shorter)
                } else {
                    (room / 2, room - room / 2)
                };
                let (n_a, n_b) = if a.len() > b.len() {
                    (long, short)
                } else {
                    (short, long)
                };
                cut(&mut a, n_a);
                cut(b, n_b);
            }
            Some(_) => {}
        }
        (a, b)
    }
}

fn invalid(path: &Path, why: impl std::fmt::Display) -> DataError {
    DataError::Invalid(format!("{}: {why}", path.display()))
}

/// A true-or-false setting of a `tokenizer_config.json`, `default` when the file or the
/// setting is absent (the tokenizer class's own default).
fn config_flag(config: Option<&Path>, name: &str, default: bool) -> Result<bool, DataError> {
    let Some(config) = config else {
        return Ok(default);
    };
    let text = std::fs::read_to_string(config)
        .map_err(|e| DataError::Io(format!("cannot read {}: {e}", config.display())))?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| invalid(config, format!("not valid JSON ({e}); re-download it")))?;
    match value.get(name) {
        None => Ok(default),
        Some(serde_json::Value::Bool(flag)) => Ok(*flag),
        Some(other) => Err(invalid(
            config,
            format!("{name} is {other}, not true or false"),
        )),
    }
}

/// The id of `token` in `model`, which the tokenizer's template needs; where `path` lacks it
/// the error says "has no `token` `missing`".
fn required_id(
    model: &impl Model,
    path: &Path,
    token: &str,
    missing: &str,
) -> Result<u32, DataError> {
    model
        .token_to_id(token)
        .ok_or_else(|| invalid(path, format!("has no {token} {missing}")))
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
    let id = |token| required_id(&model, vocab, token, "token; is it BERT's vocabulary?");
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
    let id = |token| required_id(&model, vocab, token, "token; is it RoBERTa's vocabulary?");
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

/// The settings of transformers' `DebertaV2Tokenizer` that change how text is split.
struct SentencePieceOptions {
    lowercase: bool,
    split_by_punct: bool,
    add_prefix_space: bool,
}

/// DeBERTa-v2's and v3's Unigram from `spm.model`, as transformers' `DebertaV2Tokenizer`
/// builds it: sentencepiece's normalisation (its precompiled character map, trailing spaces
/// stripped, runs of spaces made one), `▁` before every word, `[CLS] a [SEP] b [SEP]` with
/// token types 0 and 1, and `[MASK]` added after the vocabulary where the model lacks it.
fn deberta_unigram(path: &Path, options: SentencePieceOptions) -> Result<Tokenizer, DataError> {
    let spm = SentencePieceModel::read(path)?;
    if spm.model_type != SentencePieceType::Unigram {
        return Err(invalid(
            path,
            format!(
                "a SentencePiece {:?} model; burnbert builds DeBERTa's Unigram tokenizer from \
                 spm.model (for other models, save the tokenizer with transformers' \
                 save_pretrained to get a tokenizer.json)",
                spm.model_type
            ),
        ));
    }
    let vocab = spm
        .pieces
        .iter()
        .map(|p| (p.piece.clone(), f64::from(p.score)))
        .collect();
    let unk_id = usize::try_from(spm.unk_id).ok();
    let model = Unigram::from(vocab, unk_id, false)
        .map_err(|e| invalid(path, format!("its pieces: {e}")))?;
    let id = |token| required_id(&model, path, token, "piece; is it DeBERTa-v3's spm.model?");
    let (cls, sep) = (id("[CLS]")?, id("[SEP]")?);

    let mut normalizers: Vec<NormalizerWrapper> = Vec::new();
    if options.lowercase {
        normalizers.push(Lowercase.into());
    }
    let replace = |pattern: &str| {
        Replace::new(
            tokenizers::normalizers::replace::ReplacePattern::Regex(pattern.into()),
            " ",
        )
        .map_err(|e| invalid(path, e))
    };
    if spm.precompiled_charsmap.is_empty() {
        normalizers.push(replace(r"\s{2,}|[\n\r\t]")?.into());
        normalizers.push(NFC.into());
        normalizers.push(Strip::new(false, true).into());
    } else {
        let charsmap = Precompiled::from(&spm.precompiled_charsmap)
            .map_err(|e| invalid(path, format!("its precompiled character map: {e}")))?;
        normalizers.push(charsmap.into());
        normalizers.push(Strip::new(false, true).into());
        normalizers.push(replace(" {2,}")?.into());
    }

    let scheme = if options.add_prefix_space {
        PrependScheme::Always
    } else {
        PrependScheme::First
    };
    let metaspace = Metaspace::new('▁', scheme, true);
    let mut pre_tokenizers: Vec<PreTokenizerWrapper> = Vec::new();
    if options.split_by_punct {
        pre_tokenizers.push(Punctuation::new(SplitDelimiterBehavior::Isolated).into());
    }
    pre_tokenizers.push(metaspace.clone().into());

    let template = TemplateProcessing::builder()
        .try_single("[CLS]:0 $A:0 [SEP]:0")
        .and_then(|t| t.try_pair("[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1"))
        .map(|t| {
            t.special_tokens(vec![("[CLS]", cls), ("[SEP]", sep)])
                .build()
        })
        .map_err(|e| invalid(path, e))?
        .map_err(|e| invalid(path, e))?;

    let mut tokenizer = Tokenizer::new(model);
    tokenizer
        .with_normalizer(Some(tokenizers::normalizers::Sequence::new(normalizers)))
        .map_err(|e| invalid(path, e))?;
    tokenizer
        .with_pre_tokenizer(Some(tokenizers::pre_tokenizers::sequence::Sequence::new(
            pre_tokenizers,
        )))
        .with_post_processor(Some(template))
        .with_decoder(Some(metaspace));
    // sentencepiece's control pieces, then the tokenizer's own special tokens, [MASK] among
    // them whether or not it is a piece
    let control = spm
        .pieces
        .iter()
        .filter(|p| p.kind == PieceKind::Control)
        .map(|p| p.piece.as_str());
    let specials: Vec<AddedToken> = control
        .chain(["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"])
        .map(|token| AddedToken::from(token, true))
        .collect();
    tokenizer
        .add_special_tokens(specials)
        .map_err(|e| invalid(path, format!("its special tokens: {e}")))?;
    Ok(tokenizer)
}
