//! `bench`: how fast burnbert trains (or runs) an encoder of a given shape, on random weights and
//! random tokens, so that it can be set beside PyTorch (`bench/compare.py`) on the same machine.
//! The family (BERT, RoBERTa, ModernBERT, ...) is the shape's `model_type`, as in `train`.
//!
//! With `--lengths fixed` (the default) every step gets the same batch: `--batch` rows of
//! `--seq` random token ids, random labels. Padded positions hold the config's `pad_token_id`
//! (0 where it has none; RoBERTa's is 1, ModernBERT's 50283), and the real tokens are drawn
//! from the rest of the vocabulary, never the pad id, as `bench/compare.py` does: RoBERTa
//! numbers its positions by the pad id, so a real token equal to it would change the batch.
//! The PyTorch reference numbers in `shared/README.md` have "1/4 of each row padded"; read
//! literally, every row here ends in the same `seq / 4` (rounded down) padded positions, rather
//! than having a length drawn at random, so that the count of real tokens is exact and the same
//! on both sides. With `--lengths mrpc` the steps take real MRPC batches instead: the lengths of
//! MRPC's validation pairs, `--batch` at a time, each batch padded to its longest row.
//! burnbert skips the padded positions where it runs padding-free (`--padding-free`);
//! transformers computes them.
//!
//! A train step is forward + loss + backward + AdamW step; an infer step is a forward pass
//! of the model in validation mode, without autodiff. The first `--warmup` steps are not
//! timed; the device is synchronised before the clock is read after every step.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use burn::data::dataloader::batcher::Batcher;
use burn::module::Module;
use burn::tensor::{Device, DeviceConfig, DeviceError, FloatDType};
use burnbert::{MixedPrecision, PaddingFree, run};
use burnbert_data::{Encoded, Label, PaddingBatcher};
use burnbert_model::{Family, ModelConfig, SequenceClassifier};
use burnbert_train::memory::{BatchShape, MemoryEstimate};
use burnbert_train::{Data, World, optimizer_step};
use clap::{Parser, ValueEnum};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

/// The model shapes built into the program, from `assets/presets/` (the Hub's `config.json`s
/// of the models named).
const PRESETS: [(&str, &str); 6] = [
    (
        "bert-base",
        include_str!("../assets/presets/bert-base-uncased.json"),
    ),
    (
        "minilm-l6",
        include_str!("../assets/presets/minilm-l6.json"),
    ),
    ("tiny", include_str!("../assets/presets/tiny.json")),
    (
        "roberta-base",
        include_str!("../assets/presets/roberta-base.json"),
    ),
    (
        "modernbert-base",
        include_str!("../assets/presets/modernbert-base.json"),
    ),
    (
        "deberta-v3-base",
        include_str!("../assets/presets/deberta-v3-base.json"),
    ),
];

/// AdamW as in the course's recipe; the step's cost does not depend on the values.
const LEARNING_RATE: f64 = 5e-5;
const WEIGHT_DECAY: f64 = 0.01;

#[derive(Parser)]
#[command(
    about = "Measure burnbert's training or inference speed on a randomly initialised encoder \
             (any family it reads)",
    after_help = "Compare with PyTorch on the same machine: python bench/compare.py --help"
)]
struct Args {
    /// bert-base, minilm-l6, tiny, roberta-base, modernbert-base, deberta-v3-base, or the path
    /// of a Hugging Face config.json (of any family burnbert reads).
    #[arg(long, default_value = "bert-base")]
    model_shape: String,
    /// Rows per step.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Tokens per row, padding included (`--lengths fixed`); the longest row (`mrpc`).
    #[arg(long, default_value_t = 128)]
    seq: usize,
    /// The rows' lengths.
    #[arg(long, value_enum, default_value_t = Lengths::Fixed)]
    lengths: Lengths,
    /// Timed steps.
    #[arg(long, default_value_t = 20)]
    steps: usize,
    /// Untimed steps before them (kernel compilation, allocator growth).
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Float type of weights and activations (f16 and bf16 on GPU backends only).
    #[arg(long, value_enum, default_value_t = Dtype::F32)]
    dtype: Dtype,
    /// `bf16`: f32 weights and optimizer, the encoder computing in bfloat16 (as `train
    /// --mixed-precision bf16`, and PyTorch's autocast).
    #[arg(long, value_enum, default_value_t = MixedPrecision::No)]
    mixed_precision: MixedPrecision,
    /// As `train --gradient-checkpointing` (train mode).
    #[arg(long)]
    gradient_checkpointing: bool,
    /// As `train --padding-free`.
    #[arg(long, value_enum, default_value_t = PaddingFree::Auto)]
    padding_free: PaddingFree,
    #[arg(long, value_enum, default_value_t = Mode::Train)]
    mode: Mode,
    /// auto, cpu, ndarray, flex, wgpu[:N] or cuda[:N], as compiled in.
    #[arg(long, default_value = "auto")]
    device: String,
    /// Seeds the weights, the tokens, the labels and dropout.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Print one JSON object instead of the human-readable line.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum Dtype {
    F32,
    F16,
    Bf16,
}

impl Dtype {
    fn float(self) -> FloatDType {
        match self {
            Dtype::F32 => FloatDType::F32,
            Dtype::F16 => FloatDType::F16,
            Dtype::Bf16 => FloatDType::BF16,
        }
    }
}

/// How long the rows of the steps' batches are; their tokens are random either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum Lengths {
    /// One batch for every step: `--seq` positions a row, the last quarter of them padding.
    Fixed,
    /// Real MRPC batches: the lengths of MRPC's 408 validation pairs as all-MiniLM-L6-v2's
    /// tokenizer cuts them (`assets/fixtures/mrpc_validation_token_ids.json`), `--batch`
    /// consecutive pairs a step, each batch padded to its longest row, as the course's
    /// `DataCollatorWithPadding` pads.
    Mrpc,
}

/// MRPC's validation pairs, tokenized: their lengths give `--lengths mrpc` its rows.
const MRPC_VALIDATION: &str = include_str!("../assets/fixtures/mrpc_validation_token_ids.json");

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum Mode {
    /// Forward, loss, backward and an AdamW step.
    Train,
    /// Forward only, without autodiff.
    Infer,
}

/// What the program prints; `--json` gives it as is.
#[derive(Serialize)]
struct Report {
    program: &'static str,
    model_shape: String,
    num_hidden_layers: usize,
    hidden_size: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
    vocab_size: usize,
    parameters: usize,
    mode: Mode,
    dtype: Dtype,
    mixed_precision: MixedPrecision,
    padding_free: bool,
    gradient_checkpointing: bool,
    device: String,
    batch: usize,
    seq: usize,
    lengths: Lengths,
    /// Real (unpadded) tokens in each row, on average over the timed steps.
    real_tokens_per_row: f64,
    warmup: usize,
    /// Seconds of each timed step.
    step_seconds: Vec<f64>,
    median_step_seconds: f64,
    /// From the median step with `--lengths fixed`, where every step is alike; from all the
    /// timed steps with `mrpc`, whose batches differ.
    samples_per_second: f64,
    /// All positions, padding included.
    tokens_per_second: f64,
    real_tokens_per_second: f64,
    /// From before the device and model are set up to the end of the first step.
    time_to_first_step_seconds: f64,
    /// The process's peak resident memory (VmHWM); `None` off Linux.
    peak_rss_bytes: Option<u64>,
    /// What `train`'s memory guard estimates for the largest step (train mode on the CPU
    /// backends; `burnbert_train::memory`).
    peak_rss_estimate_bytes: Option<u64>,
    /// The largest device-allocator reservation seen after a step; `None` on backends that
    /// do not report one (the CPU backends).
    device_reserved_bytes: Option<u64>,
    /// The loss of the last step (train mode).
    final_loss: Option<f32>,
}

fn main() -> std::process::ExitCode {
    run(|| {
        let args = Args::parse();
        let config = checked_config(&args)?;
        let started = Instant::now();
        let device = device(&args)?;
        anyhow::ensure!(
            args.mixed_precision == MixedPrecision::No || matches!(args.dtype, Dtype::F32),
            "--mixed-precision keeps the weights in f32: give it without --dtype"
        );
        let compute_dtype = args.mixed_precision.compute_dtype(&device)?;
        let model = SequenceClassifier::new(&config, &device)
            .with_compute_dtype(compute_dtype)
            .with_padding_free(args.padding_free.on(&device));
        let parameters = model.num_params();

        let workload = workload(&config, &args)?;
        let (timings, final_loss) = measure(&args, &config, &workload, model, &device, started)?;
        let measured = Measured {
            parameters,
            workload: &workload,
            timings,
            final_loss,
        };
        let report = Report::new(&args, &config, &device, measured);
        if args.json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            println!("{}", human_line(&report));
        }
        Ok(())
    })
}

/// The model shape `--model-shape` names, once the flags are checked against it.
fn checked_config(args: &Args) -> anyhow::Result<ModelConfig> {
    anyhow::ensure!(
        args.batch > 0 && args.seq > 0 && args.steps > 0,
        "--batch, --seq and --steps must be at least 1"
    );
    let config = model_config(&args.model_shape)?;
    let max_seq = max_sequence_length(&config);
    anyhow::ensure!(
        args.seq <= max_seq,
        "--seq {} exceeds the model's longest sequence, {max_seq} (max_position_embeddings {})",
        args.seq,
        config.max_position_embeddings
    );
    Ok(config)
}

/// What the steps measured, for [`Report::new`].
struct Measured<'a> {
    parameters: usize,
    workload: &'a Workload,
    timings: Timings,
    final_loss: Option<f32>,
}

impl Report {
    fn new(args: &Args, config: &ModelConfig, device: &Device, measured: Measured) -> Self {
        let Measured {
            parameters,
            workload,
            timings,
            final_loss,
        } = measured;
        let padding_free = args.padding_free.on(device);
        let timed = &timings.step_seconds[args.warmup..];
        let median = median(timed);
        let timed_steps = args.warmup..args.warmup + args.steps;
        let [real, padded] = [true, false].map(|real| {
            timed_steps
                .clone()
                .map(|step| workload.tokens(step, real))
                .sum::<usize>() as f64
        });
        // The seconds that one step's rows, on average, take.
        let seconds = match args.lengths {
            Lengths::Fixed => median,
            Lengths::Mrpc => timed.iter().sum::<f64>() / args.steps as f64,
        };
        let per_step = |tokens: f64| tokens / args.steps as f64;
        Report {
            program: "burnbert",
            model_shape: args.model_shape.clone(),
            num_hidden_layers: config.num_hidden_layers,
            hidden_size: config.hidden_size,
            num_attention_heads: config.num_attention_heads,
            intermediate_size: config.intermediate_size,
            vocab_size: config.vocab_size,
            parameters,
            mode: args.mode,
            dtype: args.dtype,
            mixed_precision: args.mixed_precision,
            padding_free,
            gradient_checkpointing: args.gradient_checkpointing,
            device: format!("{device:?}"),
            batch: args.batch,
            seq: args.seq,
            lengths: args.lengths,
            real_tokens_per_row: per_step(real) / args.batch as f64,
            warmup: args.warmup,
            step_seconds: timed.to_vec(),
            median_step_seconds: median,
            samples_per_second: args.batch as f64 / seconds,
            tokens_per_second: per_step(padded) / seconds,
            real_tokens_per_second: per_step(real) / seconds,
            time_to_first_step_seconds: timings.first_step_done.as_secs_f64(),
            peak_rss_bytes: peak_rss_bytes(),
            peak_rss_estimate_bytes: burnbert_model::is_cpu_backend(device)
                .then(|| peak_rss_estimate(args, config, parameters, workload, padding_free))
                .flatten(),
            device_reserved_bytes: timings.device_reserved_bytes,
            final_loss,
        }
    }
}

/// A preset by name, else a `config.json` read from the path given.
/// The device `--device` names, its default float type `--dtype`, seeded with `--seed`.
fn device(args: &Args) -> anyhow::Result<Device> {
    let mut device = burnbert_model::parse_device(&args.device).map_err(anyhow::Error::msg)?;
    // The default float type must be set before the first tensor exists on the device.
    device
        .configure(DeviceConfig::default().float_dtype(args.dtype.float()))
        .map_err(|e| match e {
            DeviceError::UnsupportedDType { device, .. } => anyhow::anyhow!(
                "--dtype {} is not supported on {device}; use --dtype f32 (f16 and bf16 \
                 need a GPU backend such as --device cuda)",
                flag_name(args.dtype)
            ),
            other => other.into(),
        })?;
    device.seed(args.seed);
    Ok(device)
}

/// The random rows the steps take and which of them each step takes.
struct Workload {
    rows: Vec<Encoded>,
    /// Step `i` takes the rows `batches[i % batches.len()]`.
    batches: Vec<Vec<usize>>,
    /// Pads each batch to a multiple of this many positions.
    pad_to_multiple_of: usize,
}

impl Workload {
    fn batch(&self, step: usize) -> &[usize] {
        &self.batches[step % self.batches.len()]
    }

    /// The real tokens of step `step`'s batch, or its positions, padding included.
    fn tokens(&self, step: usize, real: bool) -> usize {
        let lengths = self
            .batch(step)
            .iter()
            .map(|&i| self.rows[i].input_ids.len());
        if real {
            return lengths.sum();
        }
        let longest = lengths.clone().max().unwrap_or(0);
        let padded = longest.div_ceil(self.pad_to_multiple_of) * self.pad_to_multiple_of;
        padded * self.batch(step).len()
    }
}

/// The memory guard's estimate of the largest step in train mode.
fn peak_rss_estimate(
    args: &Args,
    config: &ModelConfig,
    parameters: usize,
    workload: &Workload,
    padding_free: bool,
) -> Option<u64> {
    if !matches!(args.mode, Mode::Train) {
        return None;
    }
    (0..workload.batches.len())
        .map(|step| {
            let padded = workload.tokens(step, false);
            let rows = workload.batch(step).len();
            let shape = BatchShape {
                rows,
                seq: padded / rows,
                tokens: workload.tokens(step, padding_free),
            };
            MemoryEstimate::step(config, parameters, shape, args.gradient_checkpointing).total()
        })
        .max()
}

/// The rows of `--lengths`: one batch of `--batch` rows of `--seq` less a quarter, or MRPC's
/// validation pairs' lengths (at most `--seq`) in batches of `--batch`.
fn workload(config: &ModelConfig, args: &Args) -> anyhow::Result<Workload> {
    Ok(match args.lengths {
        Lengths::Fixed => Workload {
            rows: random_rows(
                config,
                args,
                &vec![real_tokens_per_row(args.seq); args.batch],
            ),
            batches: vec![(0..args.batch).collect()],
            pad_to_multiple_of: args.seq,
        },
        Lengths::Mrpc => {
            let pairs: serde_json::Value = serde_json::from_str(MRPC_VALIDATION)?;
            let lengths: Vec<usize> = pairs["input_ids"]
                .as_array()
                .context("the MRPC fixture has no input_ids")?
                .iter()
                .map(|ids| ids.as_array().map_or(0, Vec::len).min(args.seq))
                .collect();
            let indices: Vec<usize> = (0..lengths.len()).collect();
            Workload {
                rows: random_rows(config, args, &lengths),
                batches: indices.chunks(args.batch).map(<[usize]>::to_vec).collect(),
                pad_to_multiple_of: 1,
            }
        }
    })
}

/// Runs the warm-up and timed steps of `--mode` on the workload's batches: the step `train`
/// takes, or a forward pass. Returns the timings and the last training loss.
fn measure(
    args: &Args,
    config: &ModelConfig,
    workload: &Workload,
    model: SequenceClassifier,
    device: &Device,
    started: Instant,
) -> anyhow::Result<(Timings, Option<f32>)> {
    let total_steps = args.warmup + args.steps;
    let batcher = PaddingBatcher {
        pad_id: config.pad_token_id.unwrap_or(0) as u32,
        pad_to_multiple_of: workload.pad_to_multiple_of,
    };
    let mut step = 0..;
    let measured = match args.mode {
        // The step `train` takes.
        Mode::Train => {
            let devices = [device.clone().autodiff()];
            let data = Data {
                train: &workload.rows,
                validation: &[],
                metrics: &[],
                num_classes: config.label_count(),
                batcher: &batcher,
            };
            let mut optimizer = burnbert_train::optim::adamw(WEIGHT_DECAY);
            let model = model
                .to_device(&devices[0])
                .train()
                .with_gradient_checkpointing(args.gradient_checkpointing);
            let (timings, loss) = run_steps(device, total_steps, started, model, |model| {
                let group = [workload.batch(step.next().unwrap()).to_vec()];
                let (model, loss, _) = optimizer_step(
                    model,
                    &mut optimizer,
                    &group,
                    &data,
                    World::new(&devices),
                    LEARNING_RATE,
                    None,
                );
                (model, loss)
            })?;
            (timings, Some(loss))
        }
        Mode::Infer => {
            let batches: Vec<_> = workload
                .batches
                .iter()
                .map(|rows| {
                    let rows = rows.iter().map(|&i| workload.rows[i].clone()).collect();
                    batcher.batch(rows, device)
                })
                .collect();
            let model = model.valid();
            let (timings, _logits) = run_steps(device, total_steps, started, model, |model| {
                let batch = &batches[step.next().unwrap() % batches.len()];
                let logits = model.forward(batch.input.clone(), None).logits;
                (model, logits)
            })?;
            (timings, None)
        }
    };
    Ok(measured)
}

fn model_config(shape: &str) -> anyhow::Result<ModelConfig> {
    if let Some((_, text)) = PRESETS.iter().find(|(name, _)| *name == shape) {
        return ModelConfig::from_json(text).map_err(|e| anyhow::anyhow!("preset {shape}: {e}"));
    }
    let path = Path::new(shape);
    if !path.is_file() {
        let names: Vec<&str> = PRESETS.iter().map(|(name, _)| *name).collect();
        anyhow::bail!(
            "--model-shape `{shape}` is neither a preset ({}) nor a config.json file",
            names.join(", ")
        );
    }
    Ok(ModelConfig::from_file(path)?)
}

/// The longest row the model takes: `max_position_embeddings`, less `pad_token_id + 1` for the
/// RoBERTa family, whose positions start after the pad id (514 - 2 = 512 for roberta-base).
fn max_sequence_length(config: &ModelConfig) -> usize {
    if config.family == Family::Roberta {
        config
            .max_position_embeddings
            .saturating_sub(config.padding_idx() + 1)
    } else {
        config.max_position_embeddings
    }
}

/// Real tokens per row: all but the last quarter, as in the PyTorch reference.
fn real_tokens_per_row(seq: usize) -> usize {
    seq - seq / 4
}

/// Rows of the given lengths: random token ids in `[0, vocab_size)` other than the pad id
/// (the batcher pads the rest: the config's `pad_token_id`, else 0, with attention mask 0),
/// one segment, and random class labels.
fn random_rows(config: &ModelConfig, args: &Args, lengths: &[usize]) -> Vec<Encoded> {
    let mut rng = StdRng::seed_from_u64(args.seed);
    let pad_id = config.pad_token_id.unwrap_or(0) as i64;
    let vocab = config.vocab_size as i64;
    // Draw from the vocabulary less the pad id, then step over it.
    let skip_pad = (0..vocab).contains(&pad_id) && vocab > 1;
    let real_token = |rng: &mut StdRng| {
        let id = if skip_pad {
            let id = rng.random_range(0..vocab - 1);
            if id >= pad_id { id + 1 } else { id }
        } else {
            rng.random_range(0..vocab)
        };
        id as u32
    };
    let ids: Vec<Vec<u32>> = lengths
        .iter()
        .map(|&len| (0..len).map(|_| real_token(&mut rng)).collect())
        .collect();
    let classes = config.label_count();
    ids.into_iter()
        .map(|input_ids| Encoded {
            token_type_ids: vec![0; input_ids.len()],
            input_ids,
            label: Some(Label::Class(rng.random_range(0..classes))),
        })
        .collect()
}

/// What `run_steps` measured.
struct Timings {
    /// Seconds of every step, warm-up included.
    step_seconds: Vec<f64>,
    /// From `started` to the end of the first step.
    first_step_done: Duration,
    device_reserved_bytes: Option<u64>,
}

/// Runs `count` steps, threading `state` (the model) through `step`, and times each up to
/// the device's completion of its work. Returns the last step's output.
fn run_steps<S, T>(
    device: &Device,
    count: usize,
    started: Instant,
    mut state: S,
    mut step: impl FnMut(S) -> (S, T),
) -> anyhow::Result<(Timings, T)> {
    let mut step_seconds = Vec::with_capacity(count);
    let mut first_step_done = None;
    let mut device_reserved_bytes: Option<u64> = None;
    let mut last = None;
    for _ in 0..count {
        let clock = Instant::now();
        let (next, output) = step(state);
        // Backends queue work asynchronously: without the sync the clock would stop
        // when the work is submitted, not when it is done.
        device
            .sync()
            .context("the device failed while running a step")?;
        step_seconds.push(clock.elapsed().as_secs_f64());
        first_step_done.get_or_insert_with(|| started.elapsed());
        // Read after the clock stops: on fusion backends the reading is a sync of its own.
        // Allocators keep the pages they grew to, so the reservation after a step is close
        // to the step's peak.
        if let Some(usage) = device.memory_pool_usage() {
            device_reserved_bytes =
                Some(device_reserved_bytes.unwrap_or(0).max(usage.bytes_reserved));
        }
        state = next;
        last = Some(output);
    }
    let timings = Timings {
        step_seconds,
        first_step_done: first_step_done.expect("count is at least 1"),
        device_reserved_bytes,
    };
    Ok((timings, last.expect("count is at least 1")))
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len().is_multiple_of(2) {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    }
}

/// The process's peak resident set size, from `/proc/self/status` (Linux only).
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn human_line(r: &Report) -> String {
    let mut line = format!(
        "{} {} {} on {}: batch {} × seq {} ({:.1} real tokens per row), median step {:.1} ms over {} \
         steps after {} warm-up: {:.1} samples/s, {:.0} tokens/s ({:.0} real); first step done \
         after {:.2} s",
        r.model_shape,
        flag_name(r.mode),
        match r.mixed_precision {
            MixedPrecision::No => flag_name(r.dtype),
            mixed => format!("{}-mixed", flag_name(mixed)),
        },
        r.device,
        r.batch,
        r.seq,
        r.real_tokens_per_row,
        1000.0 * r.median_step_seconds,
        r.step_seconds.len(),
        r.warmup,
        r.samples_per_second,
        r.tokens_per_second,
        r.real_tokens_per_second,
        r.time_to_first_step_seconds,
    );
    if let Some(bytes) = r.peak_rss_bytes {
        line += &format!("; peak RSS {}", mib(bytes));
    }
    if let Some(bytes) = r.peak_rss_estimate_bytes {
        line += &format!(" (the memory guard's estimate {})", mib(bytes));
    }
    if let Some(bytes) = r.device_reserved_bytes {
        line += &format!("; device memory reserved {}", mib(bytes));
    }
    if let Some(loss) = r.final_loss {
        line += &format!("; last loss {loss:.4}");
    }
    line
}

/// The name a flag value has on the command line, for messages.
fn flag_name(value: impl ValueEnum) -> String {
    value
        .to_possible_value()
        .map(|v| v.get_name().to_string())
        .unwrap_or_default()
}
