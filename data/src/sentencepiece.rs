//! The parts of a SentencePiece `spm.model` that transformers' converters read: the pieces
//! with their scores and kinds, the unknown piece's id, the model type, and the normaliser's
//! precompiled character map.
//!
//! The file is a protocol-buffer `ModelProto` (sentencepiece's `sentencepiece_model.proto`).
//! This reads its wire format directly for these few fields rather than linking a protobuf
//! code generator and the `.proto` into the build.

use std::path::Path;

use crate::DataError;

/// What kind of piece a vocabulary entry is (`SentencePiece.Type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PieceKind {
    Normal,
    Unknown,
    /// `<s>`, `[CLS]` and the like: never produced from text, special to transformers.
    Control,
    UserDefined,
    Unused,
    Byte,
}

/// One vocabulary entry; its id is its position.
#[derive(Debug, Clone, PartialEq)]
pub struct Piece {
    pub piece: String,
    pub score: f32,
    pub kind: PieceKind,
}

/// `TrainerSpec.ModelType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SentencePieceType {
    Unigram,
    Bpe,
    Word,
    Char,
}

/// The fields of a `ModelProto` that a converter needs.
#[derive(Debug, Clone, PartialEq)]
pub struct SentencePieceModel {
    pub pieces: Vec<Piece>,
    pub model_type: SentencePieceType,
    /// `TrainerSpec.unk_id`; negative where the model has no unknown piece.
    pub unk_id: i32,
    /// `NormalizerSpec.precompiled_charsmap`; empty where the model normalises nothing.
    pub precompiled_charsmap: Vec<u8>,
}

impl SentencePieceModel {
    /// Reads `path`.
    pub fn read(path: &Path) -> Result<Self, DataError> {
        let bytes = std::fs::read(path)
            .map_err(|e| DataError::Io(format!("cannot read {}: {e}", path.display())))?;
        Self::parse(&bytes).map_err(|why| {
            DataError::Invalid(format!(
                "{}: not a readable SentencePiece model ({why}); re-download it",
                path.display()
            ))
        })
    }

    /// Parses a serialised `ModelProto`.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let mut model = Self {
            pieces: Vec::new(),
            model_type: SentencePieceType::Unigram,
            unk_id: 0,
            precompiled_charsmap: Vec::new(),
        };
        for field in Fields(bytes) {
            match field? {
                (1, Value::Bytes(piece)) => model.pieces.push(parse_piece(piece)?),
                (2, Value::Bytes(trainer)) => {
                    for field in Fields(trainer) {
                        match field? {
                            (3, Value::Varint(kind)) => model.model_type = model_type(kind)?,
                            (40, Value::Varint(id)) => model.unk_id = id as i32,
                            _ => {}
                        }
                    }
                }
                (3, Value::Bytes(normalizer)) => {
                    for field in Fields(normalizer) {
                        if let (2, Value::Bytes(map)) = field? {
                            model.precompiled_charsmap = map.to_vec();
                        }
                    }
                }
                _ => {}
            }
        }
        if model.pieces.is_empty() {
            return Err("it has no pieces".into());
        }
        Ok(model)
    }
}

fn parse_piece(bytes: &[u8]) -> Result<Piece, String> {
    let mut piece = Piece {
        piece: String::new(),
        score: 0.0,
        kind: PieceKind::Normal,
    };
    for field in Fields(bytes) {
        match field? {
            (1, Value::Bytes(text)) => {
                piece.piece = String::from_utf8(text.to_vec())
                    .map_err(|_| "a piece is not UTF-8".to_string())?
            }
            (2, Value::Fixed32(bits)) => piece.score = f32::from_bits(bits),
            (3, Value::Varint(kind)) => {
                piece.kind = match kind {
                    1 => PieceKind::Normal,
                    2 => PieceKind::Unknown,
                    3 => PieceKind::Control,
                    4 => PieceKind::UserDefined,
                    5 => PieceKind::Unused,
                    6 => PieceKind::Byte,
                    other => return Err(format!("piece type {other} is unknown")),
                }
            }
            _ => {}
        }
    }
    Ok(piece)
}

fn model_type(kind: u64) -> Result<SentencePieceType, String> {
    Ok(match kind {
        1 => SentencePieceType::Unigram,
        2 => SentencePieceType::Bpe,
        3 => SentencePieceType::Word,
        4 => SentencePieceType::Char,
        other => return Err(format!("model type {other} is unknown")),
    })
}

/// A field's value in the protobuf wire format.
#[derive(Debug, PartialEq)]
enum Value<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32(u32),
}

/// The `(field number, value)` pairs of one message, in order.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = self.0.split_first().ok_or("it ends inside a number")?;
            self.0 = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("a number is longer than ten bytes".into())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.0.len() {
            return Err("it ends inside a field".into());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn field(&mut self) -> Result<(u64, Value<'a>), String> {
        let key = self.varint()?;
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => Value::Fixed64(u64::from_le_bytes(self.take(8)?.try_into().unwrap())),
            2 => {
                let n = usize::try_from(self.varint()?).map_err(|_| "a field is too long")?;
                Value::Bytes(self.take(n)?)
            }
            5 => Value::Fixed32(u32::from_le_bytes(self.take(4)?.try_into().unwrap())),
            other => return Err(format!("wire type {other} is not used by spm.model")),
        };
        Ok((key >> 3, value))
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u64, Value<'a>), String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        let field = self.field();
        if field.is_err() {
            self.0 = &[];
        }
        Some(field)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key byte for fields below 16.
    fn key(field: u8, wire: u8) -> u8 {
        field << 3 | wire
    }

    fn piece(text: &str, score: f32, kind: u8) -> Vec<u8> {
        let mut bytes = vec![key(1, 2), text.len() as u8];
        bytes.extend(text.as_bytes());
        bytes.push(key(2, 5));
        bytes.extend(score.to_le_bytes());
        bytes.extend([key(3, 0), kind]);
        bytes
    }

    fn message(field: u8, body: &[u8]) -> Vec<u8> {
        let mut bytes = vec![key(field, 2), body.len() as u8];
        bytes.extend(body);
        bytes
    }

    #[test]
    fn reads_pieces_trainer_and_normalizer_fields() {
        let mut bytes = message(1, &piece("[PAD]", 0.0, 3));
        bytes.extend(message(1, &piece("▁the", -2.5, 1)));
        // trainer_spec: model_type 1 (field 3), unk_id -1 (field 40: key 0xc0 0x02, ten-byte
        // varint), and byte_fallback (field 35, skipped)
        let mut trainer = vec![key(3, 0), 1, 0xc0, 0x02];
        trainer.extend([0xff; 9]);
        trainer.extend([0x01, 0x98, 0x02, 1]);
        bytes.extend(message(2, &trainer));
        // normalizer_spec: name (field 1, skipped) and precompiled_charsmap (field 2)
        bytes.extend(message(3, &[key(1, 2), 1, b'x', key(2, 2), 3, 7, 8, 9]));
        let model = SentencePieceModel::parse(&bytes).unwrap();
        assert_eq!(
            model.pieces,
            vec![
                Piece {
                    piece: "[PAD]".into(),
                    score: 0.0,
                    kind: PieceKind::Control
                },
                Piece {
                    piece: "▁the".into(),
                    score: -2.5,
                    kind: PieceKind::Normal
                },
            ]
        );
        assert_eq!(model.model_type, SentencePieceType::Unigram);
        assert_eq!(model.unk_id, -1);
        assert_eq!(model.precompiled_charsmap, vec![7, 8, 9]);
    }

    #[test]
    fn truncated_or_foreign_bytes_are_errors() {
        let whole = message(1, &piece("a", -1.0, 1));
        for end in 1..whole.len() {
            assert!(SentencePieceModel::parse(&whole[..end]).is_err(), "{end}");
        }
        assert!(SentencePieceModel::parse(b"{\"version\": \"1.0\"}").is_err());
        assert!(SentencePieceModel::parse(&[]).is_err());
    }
}
