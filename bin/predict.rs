//! `predict`: classify sentence pairs with a model from the Hub or a directory.
//!
//! Input: JSON lines with `sentence1` and (for pair tasks) `sentence2`, from a file or `-`
//! for stdin. Output: one JSON line per input, in order, with `logits`, `probabilities`
//! and `label` (the config's id2label name, else the class index).

use std::io::{BufReader, Write};

use anyhow::Context;
use burnbert::{LongInputArgs, ModelArgs, run};
use burnbert_data::{Example, PaddingBatcher, read_unlabelled_json_lines};
use clap::Parser;

#[derive(Parser)]
#[command(about = "Classify sentence pairs with a BERT model")]
struct Args {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    long_inputs: LongInputArgs,
    /// JSON lines with `sentence1` and optionally `sentence2`; `-` reads stdin.
    #[arg(long)]
    input: String,
    /// Examples per forward pass.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
}

fn read_inputs(input: &str) -> anyhow::Result<Vec<Example>> {
    let examples = if input == "-" {
        read_unlabelled_json_lines(std::io::stdin().lock(), "standard input")?
    } else {
        let file =
            std::fs::File::open(input).with_context(|| format!("cannot open --input {input}"))?;
        read_unlabelled_json_lines(BufReader::new(file), input)?
    };
    Ok(examples)
}

fn main() -> std::process::ExitCode {
    run(|| {
        burnbert::single_process("predict")?;
        let args = Args::parse();
        anyhow::ensure!(args.batch_size > 0, "--batch-size must be at least 1");
        let devices = args.model.devices()?;
        let loaded = args.model.load(&devices[0], None)?;
        loaded.warn_if_head_untrained(&args.model.model);
        let examples = read_inputs(&args.input)?;
        let (encoded, windows) = args.long_inputs.encode(&loaded.tokenizer, &examples)?;
        let batcher = PaddingBatcher {
            pad_id: loaded.tokenizer.pad_id(),
            pad_to_multiple_of: 1,
        };
        let predictions = args.long_inputs.combine(
            burnbert_eval::predict(&loaded.model, &encoded, &batcher, args.batch_size, &devices),
            windows.as_deref(),
            examples.len(),
        );
        let mut out = std::io::stdout().lock();
        for (logits, predicted) in predictions.logits.iter().zip(&predictions.predicted) {
            let probabilities = if logits.len() == 1 {
                logits.clone()
            } else {
                let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                let exp: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
                let sum: f32 = exp.iter().sum();
                exp.iter().map(|e| e / sum).collect()
            };
            let label = if logits.len() == 1 {
                serde_json::json!(predicted)
            } else {
                serde_json::json!(loaded.config.label_name(*predicted as usize))
            };
            let line = serde_json::json!({"logits": logits, "probabilities": probabilities, "label": label});
            writeln!(out, "{line}")?;
        }
        Ok(())
    })
}
