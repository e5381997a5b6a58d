//! Evaluation: metrics like 🤗 Evaluate's, batched inference without autodiff, and the
//! records of a run's log. Its pictures are the programs' (`bin/plot.rs`).

pub mod log;
pub mod metrics;

use burn::data::dataloader::batcher::Batcher;
use burn::module::Module;
use burn::tensor::{Device, FloatDType};
use burnbert_data::{Encoded, Label, PaddingBatcher};
use burnbert_model::{SequenceClassifier, on_each_device};

pub use metrics::Metrics;

/// Predictions for a split, in its order.
#[derive(Debug, Clone, PartialEq)]
pub struct Predictions {
    /// Logits per example.
    pub logits: Vec<Vec<f32>>,
    /// Predicted class (argmax), or the score for a one-output head.
    pub predicted: Vec<f64>,
}

/// Runs `model` over `examples` in file order, `batch_size` at a time, in eval mode (no
/// dropout, no autodiff graph). Every example is seen exactly once, the last batch
/// being smaller when the split size is not a multiple of the batch size. With several
/// `devices`, device `d` takes batches `d`, `d + N`, ... in a thread of its own, and the
/// logits are put back in file order.
pub fn predict(
    model: &SequenceClassifier,
    examples: &[Encoded],
    batcher: &PaddingBatcher,
    batch_size: usize,
    devices: &[Device],
) -> Predictions {
    let batches: Vec<&[Encoded]> = examples.chunks(batch_size).collect();
    let per_device = on_each_device(devices, |d, device| {
        // Inference builds no autodiff graph, whatever device the caller trains on.
        let device = &device.clone().without_autodiff();
        let model = model.valid().to_device(device);
        let mut logits = Vec::new();
        for chunk in batches.iter().skip(d).step_by(devices.len()) {
            let batch = batcher.batch(chunk.to_vec(), device);
            let output = model.forward(batch.input, None);
            let [rows, cols] = output.logits.dims();
            // A model with half-precision weights gives half-precision logits.
            let values = output
                .logits
                .cast(FloatDType::F32)
                .into_data()
                .try_to_vec::<f32>()
                .expect("f32 logits");
            logits.push(
                (0..rows)
                    .map(|r| values[r * cols..(r + 1) * cols].to_vec())
                    .collect::<Vec<_>>(),
            );
        }
        logits
    });
    // Batch i came from device i % N, as its (i / N)-th batch.
    let mut per_device: Vec<_> = per_device.into_iter().map(Vec::into_iter).collect();
    let logits: Vec<Vec<f32>> = (0..batches.len())
        .flat_map(|i| {
            per_device[i % devices.len()]
                .next()
                .expect("every batch ran")
        })
        .collect();
    Predictions::from_logits(logits)
}

impl Predictions {
    /// The predictions of `logits`, one row per example.
    pub fn from_logits(logits: Vec<Vec<f32>>) -> Self {
        let predicted = logits
            .iter()
            .map(|row| {
                if row.len() == 1 {
                    row[0] as f64
                } else {
                    row.iter()
                        .enumerate()
                        .max_by(|a, b| a.1.total_cmp(b.1))
                        .map_or(0.0, |(i, _)| i as f64)
                }
            })
            .collect();
        Predictions { logits, predicted }
    }
}

/// The references of examples with these `labels` as metric inputs, or `None` when some are
/// unlabelled.
pub fn references(labels: impl IntoIterator<Item = Option<Label>>) -> Option<Vec<f64>> {
    labels
        .into_iter()
        .map(|label| match label? {
            Label::Class(c) => Some(c as f64),
            Label::Score(s) => Some(s as f64),
        })
        .collect()
}
