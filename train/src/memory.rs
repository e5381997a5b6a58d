//! The memory guard: a training step's peak resident memory, estimated from the model's shape
//! and the batch's, and checked against what the machine has before the first step, so that a
//! run that cannot fit says so and suggests the flags that would, instead of being killed by
//! the OS halfway through an epoch.
//!
//! The estimate counts, in f32, the parameters with their gradients and AdamW's two moments,
//! and the activations that autodiff keeps for the backward pass: per layer and token a
//! multiple of the hidden and intermediate widths, and per layer, row and head the `seq²`
//! attention scores where the attention keeps them (short rows). The multiples are fitted to
//! the peak RSS that `bench` measures on the CPU backend (BENCHMARKS.md, "The memory guard's
//! estimate"); they hold for the CPU backends only, where the step's memory is the process's.

use burnbert_model::ModelConfig;

use crate::{TrainError, TrainOptions};

const MIB: u64 = 1 << 20;

/// The process without the model: the runtime, the tokenizer and the tokenized data.
const RUNTIME_BYTES: u64 = 64 * MIB;
/// Bytes kept per layer and token, per unit of the hidden width.
const BYTES_PER_HIDDEN: f64 = 32.5;
/// Bytes kept per layer and token, per unit of the intermediate (feed-forward) width.
const BYTES_PER_INTERMEDIATE: f64 = 3.0;
/// Bytes kept per layer for each attention score (`batch × heads × seq²` of them).
const BYTES_PER_SCORE: f64 = 18.5;
/// Where the attention runs in blocks and keeps no scores (long rows on the CPU), bytes kept
/// per layer and token, per unit of the hidden width, on top of `BYTES_PER_HIDDEN`: its own
/// f32 copies of the queries, keys, values and output, and its backward pass's buffers.
const BLOCKED_BYTES_PER_HIDDEN: f64 = 27.0;
/// With `--gradient-checkpointing`, bytes kept per layer and token, per unit of the hidden
/// width: the layer's input, in f32 (`burnbert_model`'s `recompute`).
const CHECKPOINTED_BYTES_PER_HIDDEN: f64 = 4.0;

/// The shape of a training step's batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchShape {
    pub rows: usize,
    /// Positions a row, padding included: the attention's scores are `seq × seq` a head.
    pub seq: usize,
    /// Tokens that the per-token layers compute: `rows × seq` on the padded path, the real
    /// tokens alone on the padding-free path.
    pub tokens: usize,
}

impl BatchShape {
    /// `rows` rows of `seq` tokens each, every position computed.
    pub fn padded(rows: usize, seq: usize) -> Self {
        Self {
            rows,
            seq,
            tokens: rows * seq,
        }
    }
}

/// A training step's estimated peak, in bytes, by what holds it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MemoryEstimate {
    /// Parameters, their gradients and AdamW's two moments: 16 bytes a parameter.
    pub weights: u64,
    /// What the forward pass keeps for the backward pass.
    pub activations: u64,
}

impl MemoryEstimate {
    /// A step of a model of `parameters` parameters on a batch of `shape`, with
    /// `--gradient-checkpointing` or without.
    pub fn step(
        config: &ModelConfig,
        parameters: usize,
        shape: BatchShape,
        checkpointing: bool,
    ) -> Self {
        let tokens = shape.tokens as f64;
        let (per_hidden, scores) = match burnbert_model::cpu_attention_keeps_scores(shape.seq) {
            true => (
                BYTES_PER_HIDDEN,
                (shape.rows * config.num_attention_heads * shape.seq * shape.seq) as f64,
            ),
            false => (BYTES_PER_HIDDEN + BLOCKED_BYTES_PER_HIDDEN, 0.0),
        };
        let per_layer = tokens
            * (per_hidden * config.hidden_size as f64
                + BYTES_PER_INTERMEDIATE * config.intermediate_size as f64)
            + BYTES_PER_SCORE * scores;
        let layers = config.num_hidden_layers as f64;
        let activations = if checkpointing {
            // Every layer's input, and one layer's activations at a time, as it runs again.
            let inputs = tokens * CHECKPOINTED_BYTES_PER_HIDDEN * config.hidden_size as f64;
            per_layer + layers * inputs
        } else {
            per_layer * layers
        };
        Self {
            weights: 16 * parameters as u64,
            activations: activations as u64,
        }
    }

    /// With the rest of the process.
    pub fn total(&self) -> u64 {
        self.weights + self.activations + RUNTIME_BYTES
    }
}

/// Bytes this process can still take: the machine's available memory, or its cgroup's
/// (a container's limit) where that is less. `None` where the system does not say.
pub fn available_bytes() -> Option<u64> {
    use sysinfo::{MemoryRefreshKind, RefreshKind, System};
    let system = System::new_with_specifics(
        RefreshKind::nothing().with_memory(MemoryRefreshKind::everything()),
    );
    let machine = Some(system.available_memory()).filter(|&bytes| bytes > 0);
    let cgroup = system.cgroup_limits().map(|limits| limits.free_memory);
    machine.into_iter().chain(cgroup).min()
}

/// `3.25 GiB`.
pub fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// What a run's longest batch will take and whether that fits in `limit` bytes.
pub struct MemoryCheck<'a> {
    pub config: &'a ModelConfig,
    pub parameters: usize,
    pub options: &'a TrainOptions,
    /// The longest training row, in tokens (after truncation, padded to
    /// `--pad-to-multiple-of`): the batch that holds it is the step's worst.
    pub longest_row: usize,
}

impl MemoryCheck<'_> {
    /// The longest row's batch, every row as long as it: the worst step's bound.
    fn estimate(&self, batch: usize, seq: usize, checkpointing: bool) -> MemoryEstimate {
        let shape = BatchShape::padded(batch, seq);
        MemoryEstimate::step(self.config, self.parameters, shape, checkpointing)
    }

    /// The estimate of the run as set up; an error that names flags that fit when it does not
    /// fit in `limit` bytes.
    pub fn check(&self, limit: u64) -> Result<MemoryEstimate, TrainError> {
        let options = self.options;
        let asked = self.estimate(
            options.batch_size,
            self.longest_row,
            options.gradient_checkpointing,
        );
        if asked.total() <= limit {
            return Ok(asked);
        }
        let said = format!(
            "a training step at --batch-size {} on rows of up to {} tokens needs about {} \
             (weights, gradients and AdamW state {}, activations {}), but {} is available",
            options.batch_size,
            self.longest_row,
            gib(asked.total()),
            gib(asked.weights),
            gib(asked.activations),
            gib(limit),
        );
        Err(TrainError::Memory(format!(
            "{said}; {}",
            self.suggestion(limit)
        )))
    }

    /// Flags that fit in `limit`, in the order that changes the run least: smaller micro-batches
    /// with more accumulation (the same effective batch), then checkpointing, then shorter rows.
    fn suggestion(&self, limit: u64) -> String {
        let options = self.options;
        let checkpointing = options.gradient_checkpointing;
        let accumulation =
            |batch: usize| options.gradient_accumulation_steps * options.batch_size / batch;
        let smaller = (1..options.batch_size)
            .rev()
            .filter(|&b| options.batch_size.is_multiple_of(b));
        let flags: &[bool] = if checkpointing {
            &[true]
        } else {
            &[false, true]
        };
        for &flag in flags {
            for batch in smaller.clone() {
                if self.estimate(batch, self.longest_row, flag).total() <= limit {
                    let checkpoint = if flag && !checkpointing {
                        " --gradient-checkpointing"
                    } else {
                        ""
                    };
                    return format!(
                        "run with --batch-size {batch} --gradient-accumulation-steps {}{checkpoint} \
                         (the same effective batch, {})",
                        accumulation(batch),
                        options.effective_batch_size()
                    );
                }
            }
        }
        let fits = |seq: usize| self.estimate(1, seq, true).total() <= limit;
        match (1..self.longest_row).rev().find(|&seq| fits(seq)) {
            Some(seq) => format!(
                "even one row of {} tokens does not fit: run with --batch-size 1 \
                 --gradient-accumulation-steps {} --gradient-checkpointing --max-length {seq} \
                 (longer rows are truncated), or on a machine with more memory",
                self.longest_row,
                accumulation(1)
            ),
            None => format!(
                "the model's weights, gradients and AdamW state alone need {}: train on a \
                 machine with more memory",
                gib(self.estimate(1, 1, true).weights + RUNTIME_BYTES)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// bert-base-uncased with a two-class head: transformers'
    /// `BertForSequenceClassification(...).num_parameters()` is 109,483,778.
    const BERT_BASE_PARAMETERS: usize = 109_483_778;

    fn bert_base() -> ModelConfig {
        ModelConfig::from_json(include_str!("../../assets/presets/bert-base-uncased.json")).unwrap()
    }

    fn check<'a>(config: &'a ModelConfig, options: &'a TrainOptions) -> MemoryCheck<'a> {
        MemoryCheck {
            config,
            parameters: BERT_BASE_PARAMETERS,
            options,
            longest_row: 512,
        }
    }

    /// The guard's message for bert-base with `options` and `limit` bytes, which must refuse.
    fn refusal(options: &TrainOptions, limit: u64) -> String {
        check(&bert_base(), options)
            .check(limit)
            .unwrap_err()
            .to_string()
    }

    /// bert-base's estimate at `batch` rows of `seq` tokens.
    fn at(batch: usize, seq: usize, checkpointing: bool) -> u64 {
        let shape = BatchShape::padded(batch, seq);
        MemoryEstimate::step(&bert_base(), BERT_BASE_PARAMETERS, shape, checkpointing).total()
    }

    #[test]
    fn weights_are_four_f32_copies_of_every_parameter() {
        let estimate = MemoryEstimate::step(&bert_base(), 1000, BatchShape::padded(8, 128), false);
        assert_eq!(estimate.weights, 16_000);
    }

    #[test]
    fn the_padding_free_path_keeps_fewer_activations() {
        let config = bert_base();
        let padded = BatchShape::padded(8, 128);
        let real = BatchShape {
            tokens: 600,
            ..padded
        };
        let [padded, real] =
            [padded, real].map(|shape| MemoryEstimate::step(&config, 0, shape, false).activations);
        assert!(real < padded, "{real} vs {padded}");
    }

    #[test]
    fn a_run_that_fits_passes_with_its_estimate() {
        let (config, options) = (bert_base(), TrainOptions::default());
        let limit = at(8, 512, false);
        let estimate = check(&config, &options).check(limit).unwrap();
        assert_eq!(estimate.total(), limit);
    }

    #[test]
    fn too_large_a_batch_is_split_into_accumulation_steps() {
        let options = TrainOptions::default();
        // Room for 4 rows of 512 but not 8.
        let limit = at(4, 512, false) + 1;
        let error = refusal(&options, limit);
        assert!(
            error.contains("--batch-size 8 on rows of up to 512 tokens"),
            "{error}"
        );
        assert!(
            error.contains(&format!("{} is available", gib(limit))),
            "{error}"
        );
        assert!(
            error.contains("run with --batch-size 4 --gradient-accumulation-steps 2 (the same effective batch, 8)"),
            "{error}"
        );
    }

    #[test]
    fn accumulation_already_asked_for_is_kept_in_the_effective_batch() {
        let options = TrainOptions {
            gradient_accumulation_steps: 3,
            ..TrainOptions::default()
        };
        let limit = at(2, 512, false) + 1;
        let error = refusal(&options, limit);
        assert!(
            error.contains(
                "--batch-size 2 --gradient-accumulation-steps 12 (the same effective batch, 24)"
            ),
            "{error}"
        );
    }

    #[test]
    fn a_row_too_long_for_one_row_is_cut_with_max_length() {
        let options = TrainOptions::default();
        let limit = at(1, 300, true) + 1;
        let error = refusal(&options, limit);
        assert!(
            error.contains("--batch-size 1 --gradient-accumulation-steps 8 --gradient-checkpointing --max-length 300 "),
            "{error}"
        );
    }

    #[test]
    fn a_model_too_large_for_the_machine_says_so() {
        let options = TrainOptions::default();
        let error = refusal(&options, 1 << 30);
        assert!(error.contains("alone need 1.69 GiB"), "{error}");
    }

    #[test]
    fn the_memory_available_is_at_most_what_the_kernel_reports() {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
        let kib: u64 = meminfo
            .lines()
            .find_map(|line| line.strip_prefix("MemAvailable:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("MemAvailable in /proc/meminfo");
        let bytes = available_bytes().expect("Linux reports its available memory");
        // Both readings move a little between the two reads.
        assert!(
            bytes > 0 && bytes <= kib * 1024 + (64 << 20),
            "{bytes} vs {kib} KiB"
        );
    }
}
