//! `train`: fine-tune a BERT model on a GLUE task or your own data, the Hugging Face
//! course's "full training" as one program. Defaults are the course's recipe.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use burn::data::dataloader::batcher::Batcher;
use burn::module::Module;
use burn::tensor::Device;
use burnbert::progress::{Progress, ReportTo, interrupt_flag};
use burnbert::{LoadedModel, MixedPrecision, ModelArgs, run};
use burnbert_data::{
    Columns, Encoded, Example, Hub, LabelSpace, PaddingBatcher, Task, TokenizerFiles, label_names,
    padding_ratio, read_examples,
};
use burnbert_eval::log::EpochRecord;
use burnbert_model::ModelConfig;
use burnbert_train::distributed::Ranks;
use burnbert_train::memory::{self, MemoryCheck, MemoryEstimate};
use burnbert_train::{CheckpointDirs, Data, TrainOptions, Trained};
use clap::Parser;

#[derive(Parser)]
#[command(
    about = "Fine-tune BERT for sequence classification (the Hugging Face course's MRPC recipe by default)",
    // A flag given again (on the command line after --config's file) overrides the first.
    args_override_self = true
)]
struct Args {
    /// A TOML file of settings, `batch_size = 16` or `devices = [0, 1]`: any flag of this
    /// program by name; flags on the command line override it.
    #[arg(long)]
    config: Option<PathBuf>,
    #[command(flatten)]
    model: ModelArgs,
    /// GLUE task: its columns, labels and metrics.
    #[arg(long, default_value = "mrpc")]
    task: String,
    /// Train on this CSV/TSV/JSON-lines/parquet file instead of the task's Hub split.
    #[arg(long)]
    train_file: Option<PathBuf>,
    /// Evaluate on this file instead of the task's Hub validation split.
    #[arg(long)]
    validation_file: Option<PathBuf>,
    /// Text column(s) of --train-file/--validation-file: one name, or two separated by a comma.
    #[arg(long)]
    text_columns: Option<String>,
    /// Label column of --train-file/--validation-file.
    #[arg(long, default_value = "label")]
    label_column: String,
    /// Where the fine-tuned model, metrics log, results and checkpoints go.
    #[arg(long)]
    output_dir: Option<PathBuf>,
    #[command(flatten)]
    options: TrainOptions,
    /// Continue from a checkpoint directory (or a directory of them: the latest).
    #[arg(long)]
    resume_from_checkpoint: Option<PathBuf>,
    /// Also write the run's scalars for TensorBoard, into OUTPUT_DIR/tensorboard.
    #[arg(long, value_enum, default_value_t = ReportTo::None)]
    report_to: ReportTo,
    /// Print the split sizes, one batch's shapes, the padding ratio and the step count, then exit.
    #[arg(long)]
    dry_run: bool,
    /// No progress output.
    #[arg(long)]
    quiet: bool,
}

impl Args {
    /// The flags, on the command line and in `--config`'s file. With several ranks, each
    /// process takes the GPU of its rank on its machine, and rank 0 alone shows progress (it
    /// alone writes files).
    fn for_rank(ranks: &Ranks) -> anyhow::Result<Self> {
        let mut args: Args = burnbert::parse_with_config()?;
        if ranks.world() > 1 {
            args.model.for_rank(ranks.local_rank());
            args.quiet |= !ranks.is_main();
        }
        Ok(args)
    }

    /// The options with what the devices decide: their number, and on GPUs batches padded to
    /// a multiple of 16 unless `--pad-to-multiple-of` says otherwise.
    fn options(
        &self,
        train_examples: usize,
        devices: usize,
        gpu: bool,
    ) -> anyhow::Result<TrainOptions> {
        let mut options = self.options.clone();
        options.devices = devices;
        options
            .pad_to_multiple_of
            .get_or_insert(if gpu { 16 } else { 1 });
        options.validate(train_examples)?;
        Ok(options)
    }

    fn columns(&self, task: &Task) -> anyhow::Result<Columns> {
        let mut columns = task.columns();
        columns.label = self.label_column.clone();
        if let Some(names) = &self.text_columns {
            let mut parts = names.split(',').map(str::trim);
            columns.text_a = parts.next().unwrap_or_default().to_string();
            columns.text_b = parts.next().map(str::to_string);
            anyhow::ensure!(
                !columns.text_a.is_empty() && parts.next().is_none(),
                "--text-columns takes one or two column names separated by a comma"
            );
        }
        Ok(columns)
    }
}

/// The training and validation rows, and the classes their labels name.
struct Splits {
    train: Vec<Example>,
    validation: Vec<Example>,
    labels: LabelSpace,
}

impl Splits {
    /// The classes' names, for the model's `id2label`: the training file's where its labels
    /// are text, else the task's.
    fn label_names(&self, task: &Task) -> Vec<String> {
        match &self.labels {
            LabelSpace::Names(names) => names.clone(),
            _ => task.label_names(),
        }
    }
}

impl Args {
    /// The training and validation rows as the model's token ids; says how long it took.
    fn tokenize(
        &self,
        loaded: &LoadedModel,
        train: &[Example],
        validation: &[Example],
    ) -> anyhow::Result<(Vec<Encoded>, Vec<Encoded>)> {
        let (train, took) = loaded.tokenizer.encode_all(train)?;
        let (validation, _) = loaded.tokenizer.encode_all(validation)?;
        if !self.quiet {
            println!(
                "tokenized {} training and {} validation examples in {:.2} s",
                train.len(),
                validation.len(),
                took.as_secs_f64()
            );
        }
        Ok((train, validation))
    }

    /// The task's Hub splits, or the files given instead. Text labels in the training file
    /// make its sorted names the classes (`run_glue_no_trainer.py`'s label list).
    fn read_splits(&self, task: &Task, hub: &Hub) -> anyhow::Result<Splits> {
        let columns = self.columns(task)?;
        let names = match &self.train_file {
            Some(path) => label_names(path, &columns)?,
            None => None,
        };
        let labels = match names {
            Some(names) => {
                anyhow::ensure!(
                    self.validation_file.is_some(),
                    "the training file's labels are names ({}); pass --validation-file with \
                     the same names (the task's Hub split has numbers)",
                    names.join(", ")
                );
                anyhow::ensure!(
                    names.len() == task.labels.len(),
                    "the training file has {} labels ({}) but task {} has {} classes; choose \
                     the --task whose classes these are",
                    names.len(),
                    names.join(", "),
                    task.name,
                    task.labels.len()
                );
                LabelSpace::Names(names)
            }
            None => task.label_space(),
        };
        let read = |split: &str, file: &Option<PathBuf>| match file {
            Some(path) => read_examples(path, &columns, &labels).map_err(anyhow::Error::from),
            None => task
                .load_split(hub, split, None)
                .map_err(anyhow::Error::from),
        };
        let train = read("train", &self.train_file)?;
        let validation = read(task.validation_splits[0], &self.validation_file)?;
        anyhow::ensure!(
            train.iter().all(|r| r.label.is_some()),
            "the training split has unlabelled rows (label -1); train on a labelled split"
        );
        Ok(Splits {
            train,
            validation,
            labels,
        })
    }
}

impl Args {
    /// Where checkpoints go (`OUTPUT_DIR/checkpoints`) and come from.
    fn checkpoint_dirs(&self, options: &TrainOptions) -> anyhow::Result<CheckpointDirs> {
        let dirs = CheckpointDirs {
            save_to: self.output_dir.as_ref().map(|d| d.join("checkpoints")),
            resume_from: self.resume_from_checkpoint.clone(),
        };
        anyhow::ensure!(
            dirs.save_to.is_some() || options.checkpointing.is_none(),
            "--checkpointing-steps needs --output-dir to write the checkpoints to"
        );
        Ok(dirs)
    }

    /// The run's progress output and logs; rank 0 alone writes files (the library saves its
    /// checkpoints from rank 0 alone).
    fn progress(&self, dirs: &CheckpointDirs, main_rank: bool) -> anyhow::Result<Progress> {
        let writes_to = self.output_dir.as_deref().filter(|_| main_rank);
        if let Some(dir) = writes_to {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create --output-dir {}", dir.display()))?;
        }
        Progress::new(
            writes_to,
            dirs.resume_from.is_some(),
            self.quiet,
            self.report_to,
        )
    }
}

/// What the run is about to do: its world, its devices, its steps and their batch.
fn announce(ranks: &Ranks, devices: &[Device], options: &TrainOptions, train_examples: usize) {
    if ranks.world() > 1 {
        println!(
            "world: {}, {} device(s) each",
            ranks.describe(),
            devices.len()
        );
    }
    let on: Vec<String> = devices.iter().map(burnbert_model::device_name).collect();
    println!(
        "training {} optimizer steps of effective batch {} on {}",
        options.total_steps(train_examples),
        effective_batch(options),
        on.join(", ")
    );
}

/// `all_results.json`: what the run measured and how it was set up.
#[derive(serde::Serialize)]
struct AllResults<'a> {
    /// The last epoch's validation metrics.
    eval: &'a BTreeMap<String, f64>,
    epochs: &'a [EpochRecord],
    train_seconds: f64,
    steps: usize,
    skipped_nonfinite_steps: usize,
    mixed_precision: MixedPrecision,
    options: &'a TrainOptions,
}

/// Says what the run reached and, with `--output-dir`, saves there the fine-tuned model in
/// Hugging Face layout (config, weights, the tokenizer's own files) and `all_results.json`.
fn save_outputs(
    args: &Args,
    trained: &Trained,
    config: &ModelConfig,
    tokenizer: &TokenizerFiles,
    options: &TrainOptions,
) -> anyhow::Result<()> {
    let last = trained
        .state
        .epochs
        .last()
        .map(|e| e.metrics.clone())
        .unwrap_or_default();
    println!(
        "trained {} steps in {:.1} s; validation {}",
        trained.state.step,
        trained.seconds,
        serde_json::to_string(&last)?
    );
    let Some(dir) = &args.output_dir else {
        return Ok(());
    };
    trained.model.save_pretrained(config, dir)?;
    for file in tokenizer.files() {
        let name = file.file_name().expect("tokenizer files are files");
        std::fs::copy(file, dir.join(name))
            .with_context(|| format!("cannot copy {} into {}", file.display(), dir.display()))?;
    }
    let results = AllResults {
        eval: &last,
        epochs: &trained.state.epochs,
        train_seconds: trained.seconds,
        steps: trained.state.step,
        skipped_nonfinite_steps: trained.state.skipped_nonfinite,
        mixed_precision: args.model.mixed_precision,
        options,
    };
    std::fs::write(
        dir.join("all_results.json"),
        serde_json::to_string_pretty(&results)?,
    )?;
    println!("saved the model and results to {}", dir.display());
    Ok(())
}

fn main() -> std::process::ExitCode {
    run(|| {
        let ranks = burnbert_train::distributed::init()?;
        let args = Args::for_rank(ranks)?;
        let task = Task::by_name(&args.task).map_err(anyhow::Error::msg)?;
        let devices = args.model.devices()?;
        let device = &devices[0];
        let gpu = !burnbert_model::is_cpu_backend(device);
        let hub = args.model.hub();

        // Data first: a bad file fails in a second, not after the model has loaded.
        let splits = args.read_splits(task, &hub)?;
        let mut options = args.options(splits.train.len(), devices.len(), gpu)?;
        options.ranks = ranks.world();

        device.seed(options.seed);
        let loaded = args.model.load(device, Some(&splits.label_names(task)))?;
        if !args.quiet {
            println!("model {}: {}", args.model.model, loaded.report);
        }
        let (train, validation) = args.tokenize(&loaded, &splits.train, &splits.validation)?;
        let batcher = PaddingBatcher {
            pad_id: loaded.tokenizer.pad_id(),
            pad_to_multiple_of: options.pad_to_multiple_of.unwrap_or(1),
        };
        // The memory guard, on the CPU backends, where the step's memory is the process's.
        let memory = (!gpu)
            .then(|| check_memory(&loaded, &train, &options))
            .transpose()?;
        if args.dry_run {
            return dry_run(&train, &validation, &options, &batcher, device, memory);
        }

        let dirs = args.checkpoint_dirs(&options)?;
        let mut progress = args.progress(&dirs, ranks.is_main())?;
        // The ranks join NCCL now, on CUDA GPUs, so that the world printed says how they sum.
        ranks.connect(device)?;
        if !args.quiet {
            announce(ranks, &devices, &options, train.len());
        }
        let data = Data {
            train: &train,
            validation: &validation,
            metrics: task.metrics,
            num_classes: splits.labels.num_classes(),
            batcher: &batcher,
        };
        let trained = burnbert_train::train(
            loaded.model,
            &data,
            &options,
            &devices,
            &dirs,
            &mut progress,
            &interrupt_flag(),
        )?;
        if ranks.is_main() {
            let tokenizer = &loaded.files.tokenizer;
            save_outputs(&args, &trained, &loaded.config, tokenizer, &options)?;
        }
        Ok(())
    })
}

/// The step's estimated peak and the memory it may take, or an error that says which flags
/// would fit (`burnbert_train::memory`).
fn check_memory(
    loaded: &LoadedModel,
    train: &[Encoded],
    options: &TrainOptions,
) -> anyhow::Result<(MemoryEstimate, u64)> {
    let multiple = options.pad_to_multiple_of.unwrap_or(1);
    let longest = train.iter().map(Encoded::len).max().unwrap_or(1);
    let check = MemoryCheck {
        config: &loaded.config,
        parameters: loaded.model.num_params(),
        options,
        longest_row: longest.div_ceil(multiple) * multiple,
    };
    // `inf` GiB is u64::MAX bytes: the cast saturates.
    let limit = match options.memory_limit {
        Some(gib) => (gib * (1u64 << 30) as f64) as u64,
        None => memory::available_bytes().unwrap_or(u64::MAX),
    };
    Ok((check.check(limit)?, limit))
}

fn dry_run(
    train: &[Encoded],
    validation: &[Encoded],
    options: &TrainOptions,
    batcher: &PaddingBatcher,
    device: &burn::tensor::Device,
    memory: Option<(MemoryEstimate, u64)>,
) -> anyhow::Result<()> {
    let lengths: Vec<usize> = train.iter().map(Encoded::len).collect();
    let batches = options.plan().epoch(&lengths, 0);
    let first: Vec<Encoded> = batches[0].iter().map(|&i| train[i].clone()).collect();
    let batch = batcher.batch(first, device);
    println!(
        "splits: train {} examples, validation {}",
        train.len(),
        validation.len()
    );
    println!("device: {}", burnbert_model::device_name(device));
    println!(
        "first batch: input_ids {:?}, token_type_ids {:?}, attention_mask {:?}, labels [{}]",
        batch.input.input_ids.dims(),
        batch.input.token_type_ids.dims(),
        batch.input.attention_mask.dims(),
        batch.size
    );
    println!(
        "padding ratio (epoch 1): {:.1}% padded tokens per real token",
        100.0 * padding_ratio(&batches, &lengths, batcher)
    );
    println!(
        "optimizer steps: {} per epoch × {} epochs = {} (effective batch {})",
        options.steps_per_epoch(train.len()),
        options.epochs,
        options.total_steps(train.len()),
        effective_batch(options)
    );
    if let Some((estimate, limit)) = memory {
        let of = match limit {
            u64::MAX => String::new(),
            limit => format!(" of {} available", memory::gib(limit)),
        };
        println!(
            "peak memory (estimate): {}{of} (weights, gradients and AdamW state {}, \
             activations {})",
            memory::gib(estimate.total()),
            memory::gib(estimate.weights),
            memory::gib(estimate.activations)
        );
    }
    Ok(())
}

/// `64 = batch 8 × 4 devices × accumulation 2`, for the dry run and the progress output.
fn effective_batch(options: &TrainOptions) -> String {
    let s = |n: usize| if n == 1 { "" } else { "s" };
    let ranks = match options.ranks {
        1 => String::new(),
        n => format!(" × {n} ranks"),
    };
    format!(
        "{} = batch {} × {} device{}{ranks} × accumulation {}",
        options.effective_batch_size(),
        options.batch_size,
        options.devices,
        s(options.devices),
        options.gradient_accumulation_steps
    )
}
