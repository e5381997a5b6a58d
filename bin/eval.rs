//! `eval`: evaluate a Hub model or a saved output directory on a task's split and print
//! the metrics the GLUE benchmark reports for it.

use std::path::PathBuf;

use burnbert::{LongInputArgs, ModelArgs, run};
use burnbert_data::{LabelSpace, PaddingBatcher, Task, label_names, read_examples};
use burnbert_eval::Metrics;
use clap::Parser;

#[derive(Parser)]
#[command(about = "Evaluate a BERT classifier on a GLUE split or a local file")]
struct Args {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    long_inputs: LongInputArgs,
    #[arg(long, default_value = "mrpc")]
    task: String,
    /// The split of `nyu-mll/glue` to evaluate (validation, test, train, ...).
    #[arg(long, default_value = "validation")]
    split: String,
    /// Evaluate this parquet/CSV/TSV/JSON-lines file (with the task's columns) instead.
    #[arg(long)]
    file: Option<PathBuf>,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Also draw the confusion matrix (classification tasks) into this PNG file.
    #[arg(long)]
    confusion_matrix: Option<PathBuf>,
}

fn main() -> std::process::ExitCode {
    run(|| {
        burnbert::single_process("eval")?;
        let args = Args::parse();
        anyhow::ensure!(args.batch_size > 0, "--batch-size must be at least 1");
        let task = Task::by_name(&args.task).map_err(anyhow::Error::msg)?;
        anyhow::ensure!(
            args.confusion_matrix.is_none() || !task.is_regression(),
            "--confusion-matrix needs a classification task; {} is a regression",
            task.name
        );
        // A file whose labels are text holds the model's class names (its id2label): it is
        // read once the model is loaded. Any other split is read first, to fail fast.
        let text_labels_file = match &args.file {
            Some(file) if label_names(file, &task.columns())?.is_some() => Some(file.as_path()),
            _ => None,
        };
        let numeric_rows = match text_labels_file {
            None => task.load_split(&args.model.hub(), &args.split, args.file.as_deref())?,
            Some(_) => Vec::new(),
        };
        let devices = args.model.devices()?;
        let loaded = args.model.load(&devices[0], None)?;
        loaded.warn_if_head_untrained(&args.model.model);
        let class_names: Vec<String> = match text_labels_file {
            Some(_) => (0..loaded.config.label_count())
                .map(|i| loaded.config.label_name(i))
                .collect(),
            None => task.label_names(),
        };
        let rows = match text_labels_file {
            Some(file) => read_examples(
                file,
                &task.columns(),
                &LabelSpace::Names(class_names.clone()),
            )?,
            None => numeric_rows,
        };
        anyhow::ensure!(
            loaded.config.label_count() == task.num_outputs(),
            "the model has {} outputs but task {} needs {}; evaluate a model fine-tuned for it",
            loaded.config.label_count(),
            task.name,
            task.num_outputs()
        );
        let (examples, windows) = args.long_inputs.encode(&loaded.tokenizer, &rows)?;
        let references =
            burnbert_eval::references(rows.iter().map(|row| row.label)).ok_or_else(|| {
                anyhow::anyhow!(
                    "split `{}` has unlabelled rows (label -1): nothing to score against",
                    args.split
                )
            })?;
        let batcher = PaddingBatcher {
            pad_id: loaded.tokenizer.pad_id(),
            pad_to_multiple_of: 1,
        };
        let started = std::time::Instant::now();
        let predictions = args.long_inputs.combine(
            burnbert_eval::predict(
                &loaded.model,
                &examples,
                &batcher,
                args.batch_size,
                &devices,
            ),
            windows.as_deref(),
            rows.len(),
        );
        let seconds = started.elapsed().as_secs_f64();
        let mut metrics = Metrics::new(task.metrics, task.labels.len());
        metrics.add_batch(&predictions.predicted, &references);
        let results = metrics.compute();
        if let Some(path) = &args.confusion_matrix {
            burnbert::plot::plot_confusion_matrix(&metrics.confusion_matrix(), &class_names, path)?;
        }
        if args.json {
            let device = burnbert_model::device_name(&devices[0]);
            let record = serde_json::json!({"task": task.name, "split": args.split, "examples": rows.len(), "device": device, "seconds": seconds, "metrics": results});
            println!("{record}");
        } else {
            let on: Vec<String> = devices.iter().map(burnbert_model::device_name).collect();
            println!(
                "{} {} ({} examples) on {} in {seconds:.2} s",
                task.name,
                args.split,
                rows.len(),
                on.join(", ")
            );
            for (name, value) in &results {
                println!("  {name:<22} {value:.4}");
            }
        }
        Ok(())
    })
}
