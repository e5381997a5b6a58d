//! What the programs in `bin/` share: model loading from the Hub or a directory, and
//! turning errors into one clear line and a non-zero exit code; and `train`'s reporting
//! (progress, metrics log, plots, TensorBoard).

pub mod plot;
pub mod progress;
pub mod tensorboard;

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use burn::tensor::{DType, Device, FloatDType};
use burnbert_data::{Encoded, Example, Hub, ModelFiles, PairTokenizer};
use burnbert_eval::Predictions;
use burnbert_model::{LoadReport, ModelConfig, SequenceClassifier};

/// Flags every program takes to find a model.
#[derive(Debug, Clone, clap::Args)]
pub struct ModelArgs {
    /// A Hub model id (e.g. sentence-transformers/all-MiniLM-L6-v2) or a local directory in
    /// Hugging Face layout (config.json, tokenizer.json, model.safetensors or pytorch_model.bin).
    #[arg(long)]
    pub model: String,
    /// Branch, tag or commit of a Hub model or dataset.
    #[arg(long, default_value = "main")]
    pub revision: String,
    /// Read only the local Hugging Face cache (also HF_HUB_OFFLINE=1).
    #[arg(long)]
    pub offline: bool,
    /// Truncate inputs to this many tokens [default: the model's max_position_embeddings].
    #[arg(long)]
    pub max_length: Option<usize>,
    /// auto, cpu, ndarray, flex, wgpu[:N] or cuda[:N], as compiled in.
    #[arg(long, env = "BURNBERT_DEVICE", default_value = "auto")]
    pub device: String,
    /// Run data parallel on these devices of --device's backend: numbers (0,1,3) or `all`.
    #[arg(long)]
    pub devices: Option<String>,
    /// `bf16`: compute the encoder in bfloat16 while the weights and the optimizer stay in
    /// f32, as Accelerate's `--mixed_precision bf16`.
    #[arg(long, value_enum, default_value_t = MixedPrecision::No)]
    pub mixed_precision: MixedPrecision,
    /// `true`: the encoder works on the batch's real tokens only, `false`: on every position,
    /// padding included. The same model, equal up to float rounding (dropout draws its masks
    /// per real token, so a run with dropout differs); `auto` is padding-free on the CPU and
    /// padded on GPUs.
    #[arg(long, value_enum, default_value_t = PaddingFree::Auto)]
    pub padding_free: PaddingFree,
}

/// Whether the encoder skips padding ([`SequenceClassifier::with_padding_free`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PaddingFree {
    /// Padding-free on the CPU backends; padded on GPUs, where it has not been measured faster.
    Auto,
    True,
    False,
}

impl PaddingFree {
    /// Whether to skip padding on `device`.
    pub fn on(self, device: &Device) -> bool {
        match self {
            PaddingFree::Auto => burnbert_model::is_cpu_backend(device),
            PaddingFree::True => true,
            PaddingFree::False => false,
        }
    }
}

/// Accelerate's `mixed_precision` setting. fp16 is not offered: it needs loss scaling to keep
/// small gradients from flushing to zero, which burnbert does not do; bf16 has f32's range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MixedPrecision {
    /// Everything in f32.
    No,
    /// bfloat16 activations and matrix products, f32 weights, gradients and optimizer state.
    Bf16,
}

impl MixedPrecision {
    /// The compute type for [`SequenceClassifier::with_compute_dtype`], checked
    /// against what `device` can do.
    pub fn compute_dtype(self, device: &Device) -> anyhow::Result<Option<FloatDType>> {
        match self {
            MixedPrecision::No => Ok(None),
            MixedPrecision::Bf16 if device.supports_dtype(DType::BF16) => {
                Ok(Some(FloatDType::BF16))
            }
            MixedPrecision::Bf16 => anyhow::bail!(
                "--mixed-precision bf16: {device:?} has no bfloat16 (ndarray and wgpu do not); \
                 use --device cuda or --device flex, or leave --mixed-precision at `no`"
            ),
        }
    }
}

/// Flags for inputs longer than the model takes, shared by `eval` and `predict`.
#[derive(Debug, Clone, clap::Args)]
pub struct LongInputArgs {
    /// Cut an input longer than --max-length into windows that overlap by this many tokens
    /// and combine the windows' logits (transformers' `stride` with
    /// `return_overflowing_tokens=True`; of a pair, the longer sentence is cut and the other
    /// kept whole in every window). Without it, long inputs are truncated.
    #[arg(long)]
    pub stride: Option<usize>,
    /// How the windows' logits make the input's: their mean, or each output's maximum.
    #[arg(long, value_enum, default_value_t = Combine::Mean, requires = "stride")]
    pub combine_windows: Combine,
}

/// `--combine-windows`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Combine {
    Mean,
    Max,
}

impl LongInputArgs {
    /// The rows the model reads for `examples` and, with --stride, the example each row (a
    /// window) belongs to.
    pub fn encode(
        &self,
        tokenizer: &PairTokenizer,
        examples: &[Example],
    ) -> anyhow::Result<(Vec<Encoded>, Option<Vec<usize>>)> {
        Ok(match self.stride {
            None => (tokenizer.encode_all(examples)?.0, None),
            Some(stride) => {
                let (windows, owners) = tokenizer.encode_windows(examples, stride)?;
                (windows, Some(owners))
            }
        })
    }

    /// One prediction per example from those of its rows: the windows' logits combined, where
    /// `owners` (from [`Self::encode`]) says which example each row is.
    pub fn combine(
        &self,
        rows: Predictions,
        owners: Option<&[usize]>,
        examples: usize,
    ) -> Predictions {
        let Some(owners) = owners else {
            return rows;
        };
        let mut combined: Vec<Option<(Vec<f32>, usize)>> = vec![None; examples];
        for (logits, &owner) in rows.logits.into_iter().zip(owners) {
            match &mut combined[owner] {
                None => combined[owner] = Some((logits, 1)),
                Some((sum, count)) => {
                    for (into, value) in sum.iter_mut().zip(logits) {
                        *into = match self.combine_windows {
                            Combine::Mean => *into + value,
                            Combine::Max => into.max(value),
                        };
                    }
                    *count += 1;
                }
            }
        }
        let logits = combined
            .into_iter()
            .map(|entry| {
                let (mut logits, count) = entry.expect("every example has a window");
                if self.combine_windows == Combine::Mean {
                    logits.iter_mut().for_each(|l| *l /= count as f32);
                }
                logits
            })
            .collect();
        Predictions::from_logits(logits)
    }
}

/// A model ready to use, with its tokenizer and where it came from.
pub struct LoadedModel {
    pub model: SequenceClassifier,
    pub config: ModelConfig,
    pub tokenizer: PairTokenizer,
    pub files: ModelFiles,
    pub report: LoadReport,
}

impl LoadedModel {
    /// Warns, as transformers does after `from_pretrained`, when the checkpoint had no
    /// classification head: `eval` and `predict` would then score a head drawn at random,
    /// differently on every run.
    pub fn warn_if_head_untrained(&self, model: &str) {
        let mut head: Vec<&str> = self
            .report
            .newly_initialized
            .iter()
            .filter(|name| name.starts_with("classifier."))
            .map(String::as_str)
            .collect();
        head.sort_unstable();
        if !head.is_empty() {
            eprintln!(
                "warning: `{model}` has no trained classification head ({} newly initialised \
                 at random), so its predictions are random; fine-tune it first \
                 (`train --model {model} --output-dir DIR`, then `--model DIR`)",
                head.join(", ")
            );
        }
    }
}

impl ModelArgs {
    pub fn hub(&self) -> Hub {
        Hub::from_env(&self.revision, self.offline)
    }

    /// Under an MPI launcher, one GPU per rank: `--device cuda` or `wgpu` (or `auto` that
    /// finds CUDA) without a number or `--devices` becomes the GPU numbered by the rank's
    /// place on its machine. Ranks on the CPU share it.
    pub fn for_rank(&mut self, local_rank: usize) {
        if self.devices.is_some() || self.device.contains(':') {
            return;
        }
        let cuda = burnbert_model::parse_device("cuda").ok();
        let auto_is_cuda = self.device == "auto"
            && cuda.is_some()
            && burnbert_model::parse_device("auto").ok() == cuda;
        if auto_is_cuda {
            self.device = "cuda".into();
        }
        if matches!(self.device.as_str(), "cuda" | "wgpu") {
            self.device = format!("{}:{local_rank}", self.device);
        }
    }

    /// The devices to run on (`--devices`, else the one `--device`); the first becomes
    /// Burn's default device for this process (see `select_device`).
    pub fn devices(&self) -> anyhow::Result<Vec<Device>> {
        burnbert_model::select_devices(&self.device, self.devices.as_deref())
            .map_err(anyhow::Error::msg)
    }

    /// Loads config, tokenizer and weights; `labels` replaces the head's labels (fine-tuning
    /// a pretrained encoder for a task).
    pub fn load(&self, device: &Device, labels: Option<&[String]>) -> anyhow::Result<LoadedModel> {
        let files = self.hub().model_files(&self.model)?;
        let mut config = ModelConfig::from_file(&files.config)?;
        if let Some(labels) = labels {
            let head_fits = config.label_count() == labels.len() && config.id2label.is_some();
            if !head_fits {
                config.set_labels(labels);
            }
        }
        let max_length = self.max_length.unwrap_or(config.max_position_embeddings);
        if max_length > config.max_position_embeddings {
            anyhow::bail!(
                "--max-length {max_length} exceeds the model's max_position_embeddings {}",
                config.max_position_embeddings
            );
        }
        let tokenizer = PairTokenizer::from_files(&files.tokenizer, max_length)?;
        if tokenizer.vocab_size() > config.vocab_size {
            anyhow::bail!(
                "{}: the tokenizer has {} tokens but config.json's vocab_size is {}; they come \
                 from different models",
                files.tokenizer.path().display(),
                tokenizer.vocab_size(),
                config.vocab_size
            );
        }
        let compute_dtype = self.mixed_precision.compute_dtype(device)?;
        let (model, report) = SequenceClassifier::from_pretrained(&config, &files.weights, device)
            .with_context(|| format!("loading model `{}`", self.model))?;
        let model = model
            .with_compute_dtype(compute_dtype)
            .with_padding_free(self.padding_free.on(device));
        Ok(LoadedModel {
            model,
            config,
            tokenizer,
            files,
            report,
        })
    }
}

/// Parses the command line like `P::parse`, with the settings of a TOML file named by
/// `--config FILE` (the launch configuration `accelerate config` writes for the course)
/// read as flags placed before it, so that the command line overrides the file.
///
/// Keys are the program's flag names (`batch_size` or `batch-size`); `true` turns a switch
/// on, a list is joined with commas (`devices = [0, 1]`).
pub fn parse_with_config<P: clap::Parser>() -> anyhow::Result<P> {
    let mut args: Vec<String> = std::env::args().collect();
    let file = args
        .iter()
        .position(|a| a == "--config")
        .and_then(|i| args.get(i + 1).cloned())
        .or_else(|| {
            args.iter()
                .find_map(|a| a.strip_prefix("--config=").map(str::to_string))
        });
    if let Some(file) = file {
        let flags = config_flags(&P::command(), &args[0], Path::new(&file))?;
        args.splice(1..1, flags);
    }
    P::try_parse_from(args).or_else(|e| {
        // A value that an option's own parser refused: reported like the options' other
        // errors (`TrainOptions::validate`), which name the flag.
        match std::error::Error::source(&e)
            .and_then(|s| s.downcast_ref::<burnbert_train::TrainError>())
        {
            Some(error) => Err(anyhow::anyhow!("{error}")),
            None => e.exit(),
        }
    })
}

/// The flags that a `--config` file stands for.
fn config_flags(
    command: &clap::Command,
    program: &str,
    path: &Path,
) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--config {}: cannot read it", path.display()))?;
    let table: toml::Table =
        toml::from_str(&text).with_context(|| format!("--config {}", path.display()))?;
    let mut flags = Vec::new();
    for (key, value) in table {
        let flag = key.replace('_', "-");
        let takes_value = match command
            .get_arguments()
            .find(|a| a.get_long() == Some(flag.as_str()) && flag != "config")
        {
            Some(arg) => arg.get_action().takes_values(),
            None => anyhow::bail!(
                "--config {}: unknown setting `{key}`; settings are the flags of `{} --help`",
                path.display(),
                Path::new(program).file_name().unwrap_or_default().display()
            ),
        };
        let text = |value: &toml::Value| match value {
            toml::Value::String(s) => Some(s.clone()),
            toml::Value::Integer(_) | toml::Value::Float(_) => Some(value.to_string()),
            _ => None,
        };
        // Some(None): the switch alone; Some(Some(v)): the flag and its value.
        let given = match (&value, takes_value) {
            (toml::Value::Boolean(true), false) => Some(None),
            (toml::Value::Boolean(false), false) => continue,
            (toml::Value::Array(items), true) => {
                let items: Option<Vec<String>> = items.iter().map(text).collect();
                items.map(|items| Some(items.join(",")))
            }
            (value, true) => text(value).map(Some),
            _ => None,
        };
        let Some(given) = given else {
            anyhow::bail!(
                "--config {}: `{key} = {value}` is not a value for --{flag}{}",
                path.display(),
                if takes_value {
                    ""
                } else {
                    " (a switch: true or false)"
                }
            );
        };
        flags.push(format!("--{flag}"));
        flags.extend(given);
    }
    Ok(flags)
}

/// Fails where an MPI launcher started `program` as one of several ranks: only `train` runs
/// across processes; `eval` and `predict` split their work over `--devices` in one process.
pub fn single_process(program: &str) -> anyhow::Result<()> {
    let ranks = burnbert_train::distributed::init()?;
    anyhow::ensure!(
        ranks.world() == 1,
        "`{program}` runs in one process, and mpirun started {} of it: run it without mpirun \
         (--devices splits its work over several devices)",
        ranks.world()
    );
    Ok(())
}

/// Runs a program's body, with the allocator set up for tensors (`keep_freed_memory`): an
/// error is printed as one line (with its causes) on stderr and the exit code is 1; panics
/// are not the way errors leave burnbert.
pub fn run(body: impl FnOnce() -> anyhow::Result<()>) -> ExitCode {
    keep_freed_memory();
    let result = body();
    // After the body, which joins the MPI world first thing where it trains.
    let ranks = burnbert_train::distributed::ranks();
    match result {
        Ok(()) => {
            ranks.finish();
            ExitCode::SUCCESS
        }
        Err(error) if ranks.world() == 1 => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
        // An interruption stops every rank at the same step (they agree on it), so each
        // leaves MPI in order; rank 0 says where the checkpoint is.
        Err(error)
            if matches!(
                error.downcast_ref(),
                Some(burnbert_train::TrainError::Interrupted { .. })
            ) =>
        {
            if ranks.is_main() {
                eprintln!("error: {error:#}");
            }
            ranks.finish();
            ExitCode::FAILURE
        }
        // One rank's error ends the job: the others would wait for it in their next
        // all-reduce.
        Err(error) => {
            eprintln!("error: rank {}: {error:#}", ranks.rank());
            ranks.abort(1)
        }
    }
}

/// Makes glibc's `malloc` keep freed memory for the next allocation instead of handing it
/// back to the kernel; returns whether glibc took both settings (false elsewhere).
///
/// With dynamic padding nearly every batch has new tensor shapes, and by default glibc
/// serves each large tensor with fresh `mmap` pages, which the kernel zeroes on first touch,
/// and unmaps them when the tensor is freed: page faults were a measurable part of MRPC
/// training on the CPU, which serving them from the heap removes (BENCHMARKS.md).
fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes glibc's allocation thresholds; any value is valid.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX) == 1
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    false
}

#[cfg(test)]
mod tests {
    /// glibc refuses an mmap threshold it deems too high; this one must be taken.
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn glibc_takes_the_allocator_settings() {
        assert!(super::keep_freed_memory());
    }

    /// Hand-computed: example 0 has windows 0 and 2, example 1 window 1 alone.
    #[test]
    fn windows_combine_into_their_examples_logits() {
        use super::{Combine, LongInputArgs, Predictions};
        let windows =
            || Predictions::from_logits(vec![vec![1.0, 4.0], vec![2.0, -1.0], vec![3.0, 1.0]]);
        let owners = [0, 1, 0];
        let combine = |how| LongInputArgs {
            stride: Some(8),
            combine_windows: how,
        };
        let mean = combine(Combine::Mean).combine(windows(), Some(&owners), 2);
        assert_eq!(mean.logits, [vec![2.0, 2.5], vec![2.0, -1.0]]);
        assert_eq!(mean.predicted, [1.0, 0.0]);
        let max = combine(Combine::Max).combine(windows(), Some(&owners), 2);
        assert_eq!(max.logits, [vec![3.0, 4.0], vec![2.0, -1.0]]);
        assert_eq!(max.predicted, [1.0, 0.0]);
        // Without --stride the rows are the examples.
        let plain = combine(Combine::Mean).combine(windows(), None, 3);
        assert_eq!(plain, windows());
    }
}
