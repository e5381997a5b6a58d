//! Batches with dynamic padding (transformers' `DataCollatorWithPadding`), and the order
//! in which examples are batched each epoch.
//!
//! The order is a pure function of (seed, epoch), not the state of a running loader, so
//! a resumed run replays exactly the batches an uninterrupted one would have seen, and
//! several devices can each take their own share of a global batch.

use burn::data::dataloader::batcher::Batcher;
use burn::tensor::{Device, Int, Tensor, TensorData};
use burnbert_model::{BertInput, Labels};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::dataset::Label;
use crate::tokenize::Encoded;

/// Model inputs and, when every example has one, labels.
#[derive(Debug, Clone)]
pub struct Batch {
    pub input: BertInput,
    pub labels: Option<Labels>,
    /// Number of examples.
    pub size: usize,
}

/// Pads each batch to its longest sequence, rounded up to a multiple of `pad_to_multiple_of`.
#[derive(Debug, Clone)]
pub struct PaddingBatcher {
    pub pad_id: u32,
    /// 1 pads to the exact longest length; 8 or more bounds the number of distinct shapes,
    /// which GPU backends compile kernels for.
    pub pad_to_multiple_of: usize,
}

impl PaddingBatcher {
    /// The padded length of a batch whose longest sequence has `longest` tokens.
    pub fn padded_length(&self, longest: usize) -> usize {
        longest.div_ceil(self.pad_to_multiple_of.max(1)) * self.pad_to_multiple_of.max(1)
    }
}

impl Batcher<Encoded, Batch> for PaddingBatcher {
    fn batch(&self, items: Vec<Encoded>, device: &Device) -> Batch {
        let size = items.len();
        let seq = self.padded_length(items.iter().map(Encoded::len).max().unwrap_or(1));
        let mut ids = Vec::with_capacity(size * seq);
        let mut types = Vec::with_capacity(size * seq);
        let mut mask = Vec::with_capacity(size * seq);
        for item in &items {
            let pad = seq - item.len();
            ids.extend(item.input_ids.iter().map(|&t| t as i64));
            ids.extend(std::iter::repeat_n(self.pad_id as i64, pad));
            types.extend(item.token_type_ids.iter().map(|&t| t as i64));
            types.extend(std::iter::repeat_n(0, pad));
            mask.extend(std::iter::repeat_n(1i64, item.len()));
            mask.extend(std::iter::repeat_n(0, pad));
        }
        let tensor = |values: Vec<i64>| {
            Tensor::<2, Int>::from_data(TensorData::new(values, [size, seq]), device)
        };
        let labels = labels(&items, device);
        Batch {
            input: BertInput {
                input_ids: tensor(ids),
                token_type_ids: tensor(types),
                attention_mask: tensor(mask),
            },
            labels,
            size,
        }
    }
}

fn labels(items: &[Encoded], device: &Device) -> Option<Labels> {
    let labels: Option<Vec<Label>> = items.iter().map(|i| i.label).collect();
    let labels = labels?;
    let n = labels.len();
    Some(match labels.first()? {
        Label::Class(_) => {
            let classes: Vec<i64> = labels
                .iter()
                .map(|l| match l {
                    Label::Class(c) => *c as i64,
                    Label::Score(s) => *s as i64,
                })
                .collect();
            Labels::Classes(Tensor::from_data(TensorData::new(classes, [n]), device))
        }
        Label::Score(_) => {
            let scores: Vec<f32> = labels
                .iter()
                .map(|l| match l {
                    Label::Score(s) => *s,
                    Label::Class(c) => *c as f32,
                })
                .collect();
            Labels::Scores(Tensor::from_data(TensorData::new(scores, [n]), device))
        }
    })
}

/// How an epoch's examples are grouped into batches.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchPlan {
    pub batch_size: usize,
    /// Reshuffle every epoch (training); otherwise keep file order (evaluation).
    pub shuffle: bool,
    /// Drop the last batch when it is smaller than `batch_size`.
    pub drop_last: bool,
    /// Put examples of similar length together (order of batches still shuffled), which
    /// cuts padding.
    pub group_by_length: bool,
    pub seed: u64,
}

/// Examples grouped together when sorting by length: 50 batches' worth, as
/// transformers' `LengthGroupedSampler` uses.
const LENGTH_GROUP_BATCHES: usize = 50;

impl BatchPlan {
    /// The batches of epoch `epoch` (0-based) as lists of example indices.
    pub fn epoch(&self, lengths: &[usize], epoch: usize) -> Vec<Vec<usize>> {
        let mut order: Vec<usize> = (0..lengths.len()).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed.wrapping_add(epoch as u64));
        if self.shuffle {
            order.shuffle(&mut rng);
        }
        let mut batches: Vec<Vec<usize>> = if self.group_by_length {
            let mut batches = Vec::new();
            for group in order.chunks(self.batch_size * LENGTH_GROUP_BATCHES) {
                let mut group = group.to_vec();
                group.sort_by_key(|&i| std::cmp::Reverse(lengths[i]));
                batches.extend(group.chunks(self.batch_size).map(<[usize]>::to_vec));
            }
            // Keep the (possibly short) last batch last; shuffle the full ones.
            let last = batches.pop();
            if self.shuffle {
                batches.shuffle(&mut rng);
            }
            batches.extend(last);
            batches
        } else {
            order
                .chunks(self.batch_size)
                .map(<[usize]>::to_vec)
                .collect()
        };
        if self.drop_last && batches.last().is_some_and(|b| b.len() < self.batch_size) {
            batches.pop();
        }
        batches
    }

    /// Number of batches per epoch.
    pub fn batches_per_epoch(&self, examples: usize) -> usize {
        if self.drop_last {
            examples / self.batch_size
        } else {
            examples.div_ceil(self.batch_size)
        }
    }
}

/// Padded tokens per real token over `batches` (0.0 means no padding at all).
pub fn padding_ratio(batches: &[Vec<usize>], lengths: &[usize], batcher: &PaddingBatcher) -> f64 {
    let (mut real, mut padded) = (0usize, 0usize);
    for batch in batches {
        let longest = batch.iter().map(|&i| lengths[i]).max().unwrap_or(0);
        let seq = batcher.padded_length(longest);
        for &i in batch {
            real += lengths[i];
            padded += seq - lengths[i];
        }
    }
    padded as f64 / real.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(len: usize, label: usize) -> Encoded {
        Encoded {
            input_ids: (1..=len as u32).collect(),
            token_type_ids: vec![0; len],
            label: Some(Label::Class(label)),
        }
    }

    #[test]
    fn pads_to_the_longest_and_masks_padding() {
        let device = burnbert_model::parse_device("cpu").unwrap();
        let batcher = PaddingBatcher {
            pad_id: 0,
            pad_to_multiple_of: 1,
        };
        let batch = batcher.batch(vec![encoded(3, 1), encoded(5, 0)], &device);
        assert_eq!(batch.input.input_ids.dims(), [2, 5]);
        let ids = batch
            .input
            .input_ids
            .into_data()
            .iter::<i64>()
            .collect::<Vec<_>>();
        assert_eq!(ids, [1, 2, 3, 0, 0, 1, 2, 3, 4, 5]);
        let mask = batch
            .input
            .attention_mask
            .into_data()
            .iter::<i64>()
            .collect::<Vec<_>>();
        assert_eq!(mask, [1, 1, 1, 0, 0, 1, 1, 1, 1, 1]);
        match batch.labels {
            Some(Labels::Classes(c)) => {
                assert_eq!(c.into_data().iter::<i64>().collect::<Vec<_>>(), [1, 0])
            }
            other => panic!("expected classes, got {other:?}"),
        }

        let batcher = PaddingBatcher {
            pad_id: 0,
            pad_to_multiple_of: 8,
        };
        assert_eq!(
            batcher
                .batch(vec![encoded(9, 0)], &device)
                .input
                .input_ids
                .dims(),
            [1, 16]
        );
    }

    #[test]
    fn epochs_are_seeded_complete_and_reshuffled() {
        let lengths: Vec<usize> = (0..21).map(|i| 5 + i % 7).collect();
        let plan = BatchPlan {
            batch_size: 8,
            shuffle: true,
            drop_last: false,
            group_by_length: false,
            seed: 42,
        };
        let first = plan.epoch(&lengths, 0);
        assert_eq!(first, plan.epoch(&lengths, 0), "same seed, same order");
        assert_ne!(first, plan.epoch(&lengths, 1), "each epoch reshuffles");
        assert_eq!(first.iter().map(Vec::len).collect::<Vec<_>>(), [8, 8, 5]);
        let mut seen: Vec<usize> = first.concat();
        seen.sort();
        assert_eq!(seen, (0..21).collect::<Vec<_>>());
        assert_eq!(plan.batches_per_epoch(21), 3);

        let dropped = BatchPlan {
            drop_last: true,
            ..plan.clone()
        };
        assert_eq!(dropped.epoch(&lengths, 0).len(), 2);
        assert_eq!(dropped.batches_per_epoch(21), 2);
    }

    #[test]
    fn length_grouping_cuts_padding() {
        let lengths: Vec<usize> = (0..400).map(|i| 10 + (i * 37) % 90).collect();
        let batcher = PaddingBatcher {
            pad_id: 0,
            pad_to_multiple_of: 1,
        };
        let plan = BatchPlan {
            batch_size: 8,
            shuffle: true,
            drop_last: false,
            group_by_length: false,
            seed: 1,
        };
        let grouped = BatchPlan {
            group_by_length: true,
            ..plan.clone()
        };
        let random = padding_ratio(&plan.epoch(&lengths, 0), &lengths, &batcher);
        let sorted = padding_ratio(&grouped.epoch(&lengths, 0), &lengths, &batcher);
        assert!(sorted < random / 4.0, "grouped {sorted} vs random {random}");
        let mut seen = grouped.epoch(&lengths, 0).concat();
        seen.sort();
        assert_eq!(seen, (0..400).collect::<Vec<_>>());
    }
}
