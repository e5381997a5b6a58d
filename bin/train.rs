//! `train`: fine-tune a BERT model on a GLUE task or your own data, the Hugging Face
//! course's "full training" as one program. Defaults are the course's recipe.

use std::path::PathBuf;

use anyhow::Context;
use burn::data::dataloader::batcher::Batcher;
use burnbert::{ModelArgs, run};
use burnbert_data::{Columns, Encoded, PaddingBatcher, Task, padding_ratio, read_examples};
use burnbert_train::{CheckpointDirs, Progress, ScheduleKind, TrainOptions, Validation};
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
    #[arg(long, default_value_t = 3)]
    num_epochs: usize,
    /// Examples per forward/backward pass on each device.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    #[arg(long, default_value_t = 32)]
    eval_batch_size: usize,
    #[arg(long, default_value_t = 5e-5, allow_negative_numbers = true)]
    learning_rate: f64,
    /// AdamW weight decay; biases and LayerNorm parameters are never decayed.
    #[arg(long, default_value_t = 0.01, allow_negative_numbers = true)]
    weight_decay: f64,
    #[arg(long, value_enum, default_value_t = ScheduleKind::Linear)]
    lr_scheduler_type: ScheduleKind,
    #[arg(long, conflicts_with = "warmup_ratio")]
    num_warmup_steps: Option<usize>,
    /// Warmup as a fraction of all optimizer steps.
    #[arg(long)]
    warmup_ratio: Option<f64>,
    #[arg(long, default_value_t = 1)]
    gradient_accumulation_steps: usize,
    #[arg(long)]
    max_grad_norm: Option<f64>,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Pad each batch to a multiple of this length [default: 1 on the CPU, 16 on GPUs, which
    /// compile kernels per shape].
    #[arg(long)]
    pad_to_multiple_of: Option<usize>,
    /// Batch examples of similar length together (less padding).
    #[arg(long)]
    group_by_length: bool,
    /// Drop the last, smaller batch of each epoch.
    #[arg(long)]
    drop_last: bool,
    /// Save a checkpoint every N optimizer steps, or `epoch`.
    #[arg(long)]
    checkpointing_steps: Option<String>,
    /// Continue from a checkpoint directory (or a directory of them: the latest).
    #[arg(long)]
    resume_from_checkpoint: Option<PathBuf>,
    /// Skip optimizer steps whose loss is NaN or infinite instead of stopping.
    #[arg(long)]
    skip_nonfinite: bool,
    /// Print the split sizes, one batch's shapes, the padding ratio and the step count, then exit.
    #[arg(long)]
    dry_run: bool,
    /// No progress output.
    #[arg(long)]
    quiet: bool,
}

impl Args {
    fn options(
        &self,
        train_examples: usize,
        devices: usize,
        gpu: bool,
    ) -> anyhow::Result<TrainOptions> {
        let (checkpoint_steps, checkpoint_epochs) = match self.checkpointing_steps.as_deref() {
            None => (None, false),
            Some("epoch") => (None, true),
            Some(n) => (
                Some(n.parse().map_err(|_| {
                    anyhow::anyhow!(
                        "--checkpointing-steps takes a number of steps or `epoch`, not `{n}`"
                    )
                })?),
                false,
            ),
        };
        let mut options = TrainOptions {
            epochs: self.num_epochs,
            batch_size: self.batch_size,
            learning_rate: self.learning_rate,
            weight_decay: self.weight_decay,
            schedule: self.lr_scheduler_type,
            warmup_steps: self.num_warmup_steps.unwrap_or(0),
            gradient_accumulation_steps: self.gradient_accumulation_steps,
            devices,
            max_grad_norm: self.max_grad_norm,
            seed: self.seed,
            pad_to_multiple_of: self.pad_to_multiple_of.unwrap_or(if gpu { 16 } else { 1 }),
            group_by_length: self.group_by_length,
            drop_last: self.drop_last,
            eval_batch_size: self.eval_batch_size,
            checkpoint_steps,
            checkpoint_epochs,
            skip_nonfinite: self.skip_nonfinite,
        };
        if options.pad_to_multiple_of == 0 {
            anyhow::bail!("--pad-to-multiple-of must be at least 1");
        }
        if let Some(ratio) = self.warmup_ratio {
            anyhow::ensure!(
                (0.0..=1.0).contains(&ratio),
                "--warmup-ratio must be between 0 and 1, not {ratio}"
            );
            options.warmup_steps =
                (ratio * options.total_steps(train_examples) as f64).ceil() as usize;
        }
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

fn main() -> std::process::ExitCode {
    run(|| {
        let args: Args = burnbert::parse_with_config()?;
        let task = Task::by_name(&args.task).map_err(anyhow::Error::msg)?;
        let devices = args.model.devices()?;
        let device = &devices[0];
        let gpu = !burnbert_model::is_cpu_backend(device);
        let hub = args.model.hub();

        // Data first: a bad file fails in a second, not after the model has loaded.
        let columns = args.columns(task)?;
        let load = |split: &str, file: &Option<PathBuf>| match file {
            Some(path) => {
                read_examples(path, &columns, task.label_space()).map_err(anyhow::Error::from)
            }
            None => task
                .load_split(&hub, split, None)
                .map_err(anyhow::Error::from),
        };
        let train_rows = load("train", &args.train_file)?;
        let validation_rows = load(task.validation_splits[0], &args.validation_file)?;
        anyhow::ensure!(
            train_rows.iter().all(|r| r.label.is_some()),
            "the training split has unlabelled rows (label -1); train on a labelled split"
        );
        let options = args.options(train_rows.len(), devices.len(), gpu)?;

        device.seed(options.seed);
        let loaded = args.model.load(device, Some(&task.label_names()))?;
        if !args.quiet {
            println!("model {}: {}", args.model.model, loaded.report);
        }
        let (train, took) = loaded.tokenizer.encode_all(&train_rows)?;
        let (validation, _) = loaded.tokenizer.encode_all(&validation_rows)?;
        if !args.quiet {
            println!(
                "tokenized {} training and {} validation examples in {:.2} s",
                train.len(),
                validation.len(),
                took.as_secs_f64()
            );
        }
        let batcher = PaddingBatcher {
            pad_id: loaded.tokenizer.pad_id(),
            pad_to_multiple_of: options.pad_to_multiple_of,
        };
        if args.dry_run {
            return dry_run(&train, &validation, &options, &batcher, device);
        }

        let output_dir = args.output_dir.clone();
        let dirs = CheckpointDirs {
            save_to: output_dir.as_ref().map(|d| d.join("checkpoints")),
            resume_from: args.resume_from_checkpoint.clone(),
        };
        anyhow::ensure!(
            dirs.save_to.is_some()
                || (options.checkpoint_steps.is_none() && !options.checkpoint_epochs),
            "--checkpointing-steps needs --output-dir to write the checkpoints to"
        );
        if let Some(dir) = &output_dir {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create --output-dir {}", dir.display()))?;
        }
        let mut progress = Progress::new(
            output_dir
                .as_ref()
                .map(|d| d.join("metrics.jsonl"))
                .as_deref(),
            dirs.resume_from.is_some(),
            args.quiet,
        )?;
        if !args.quiet {
            let on = match &args.model.devices {
                Some(list) => format!("--device {} --devices {list}", args.model.device),
                None => format!("--device {}", args.model.device),
            };
            println!(
                "training {} optimizer steps of effective batch {} on {on}",
                options.total_steps(train.len()),
                effective_batch(&options)
            );
        }
        let validation_set = Validation {
            examples: &validation,
            metrics: task.metrics,
            num_classes: task.labels.len(),
        };
        let trained = burnbert_train::train(
            loaded.model,
            &train,
            &validation_set,
            &options,
            &batcher,
            &devices,
            &dirs,
            &mut progress,
        )?;
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
        if let Some(dir) = &output_dir {
            trained.model.save_pretrained(&loaded.config, dir)?;
            std::fs::copy(&loaded.files.tokenizer, dir.join("tokenizer.json"))
                .with_context(|| format!("cannot copy tokenizer.json into {}", dir.display()))?;
            let results = serde_json::json!({
                "eval": last,
                "epochs": trained.state.epochs,
                "train_seconds": trained.seconds,
                "steps": trained.state.step,
                "skipped_nonfinite_steps": trained.state.skipped_nonfinite,
                "mixed_precision": args.model.mixed_precision,
                "options": options,
            });
            std::fs::write(
                dir.join("all_results.json"),
                serde_json::to_string_pretty(&results)?,
            )?;
            println!("saved the model and results to {}", dir.display());
        }
        Ok(())
    })
}

fn dry_run(
    train: &[Encoded],
    validation: &[Encoded],
    options: &TrainOptions,
    batcher: &PaddingBatcher,
    device: &burn::tensor::Device,
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
    Ok(())
}

/// `64 = batch 8 × 4 devices × accumulation 2`, for the dry run and the progress output.
fn effective_batch(options: &TrainOptions) -> String {
    format!(
        "{} = batch {} × {} device{} × accumulation {}",
        options.effective_batch_size(),
        options.batch_size,
        options.devices,
        if options.devices == 1 { "" } else { "s" },
        options.gradient_accumulation_steps
    )
}
