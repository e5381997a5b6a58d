//! `report`: draw the pictures of a training run (loss, learning rate, validation metrics)
//! from its `metrics.jsonl`, again or for a run still in progress.

use std::path::PathBuf;
use std::process::ExitCode;

use burnbert::plot::plot_run;
use burnbert::run;
use burnbert_eval::log::read_log;
use clap::Parser;

#[derive(Parser)]
#[command(
    about = "Draw loss, learning-rate and validation-metric plots from a training run's metrics.jsonl"
)]
struct Args {
    /// The run's metrics log: metrics.jsonl in train's --output-dir.
    #[arg(long)]
    log: PathBuf,
    /// Where loss.png, learning_rate.png and eval.png go [default: the log's folder].
    #[arg(long)]
    out: Option<PathBuf>,
}

fn main() -> ExitCode {
    run(|| {
        let args = Args::parse();
        let log = read_log(&args.log)?;
        // `parent` of a bare file name is "", which joins to the current folder.
        let out = args
            .out
            .unwrap_or_else(|| args.log.parent().map(PathBuf::from).unwrap_or_default());
        let written = plot_run(&log, &out)?;
        if written.is_empty() {
            println!(
                "{}: no steps or epochs logged yet, nothing to draw",
                args.log.display()
            );
        }
        for path in written {
            println!("{}", path.display());
        }
        Ok(())
    })
}
