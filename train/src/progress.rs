//! What the user sees and keeps while training: a progress bar on a terminal (plain log
//! lines otherwise), the per-epoch metrics table, and a JSON-lines metrics log.

use std::fs::File;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::EpochResult;

/// Reports steps and epochs to the terminal and to `metrics.jsonl`.
pub struct Progress {
    bar: Option<ProgressBar>,
    log: Option<File>,
    /// Where `log` is, to redraw the run's plots beside it after each epoch.
    log_path: Option<PathBuf>,
    /// Plain lines every this many steps when there is no bar; `None` when quiet.
    every: Option<usize>,
    running_loss: f64,
    started: Instant,
    examples: usize,
    total_steps: usize,
}

impl Progress {
    /// `log` receives one JSON object per step and per epoch, appended to what is there
    /// when `resuming`; `quiet` shows nothing.
    pub fn new(log: Option<&Path>, resuming: bool, quiet: bool) -> std::io::Result<Self> {
        let log_path = log.map(Path::to_path_buf);
        let mut log = log
            .map(|path| {
                std::fs::OpenOptions::new()
                    .create(true)
                    .write(true)
                    .append(resuming)
                    .truncate(!resuming)
                    .open(path)
            })
            .transpose()?;
        // A killed run may have left half a record: start the resumed records on a new line.
        if let (true, Some(file), Some(path)) = (resuming, log.as_mut(), &log_path)
            && std::fs::read(path).is_ok_and(|b| b.last().is_some_and(|&c| c != b'\n'))
        {
            writeln!(file)?;
        }
        let bar = (!quiet && std::io::stdout().is_terminal()).then(ProgressBar::hidden);
        Ok(Self {
            bar,
            log,
            log_path,
            every: (!quiet).then_some(50),
            running_loss: f64::NAN,
            started: Instant::now(),
            examples: 0,
            total_steps: 0,
        })
    }

    pub fn start(&mut self, total_steps: usize, done: usize) {
        self.total_steps = total_steps;
        self.started = Instant::now();
        if let Some(bar) = &self.bar {
            bar.set_draw_target(indicatif::ProgressDrawTarget::stdout());
            bar.set_length(total_steps as u64);
            bar.set_position(done as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "epoch {prefix} [{bar:30}] {pos}/{len} {msg} eta {eta}",
                )
                .expect("a valid template")
                .progress_chars("=> "),
            );
        }
    }

    /// One optimizer step done.
    pub fn step(&mut self, epoch: usize, step: usize, loss: f32, lr: f64, examples: usize) {
        let loss = loss as f64;
        self.running_loss = if self.running_loss.is_finite() {
            0.98 * self.running_loss + 0.02 * loss
        } else {
            loss
        };
        self.examples += examples;
        let rate = self.examples as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
        self.write(json!({"step": step, "epoch": epoch, "loss": loss, "lr": lr, "samples_per_second": rate}));
        let msg = format!(
            "loss {:.4} lr {lr:.2e} {rate:.1} samples/s",
            self.running_loss
        );
        match &self.bar {
            Some(bar) => {
                bar.set_prefix(epoch.to_string());
                bar.set_message(msg);
                bar.set_position(step as u64);
            }
            None if self
                .every
                .is_some_and(|every| step % every == 0 || step == self.total_steps) =>
            {
                println!("epoch {epoch} step {step}/{} {msg}", self.total_steps);
            }
            None => {}
        }
    }

    /// Validation after an epoch: a small table, and a log record.
    pub fn epoch_end(&mut self, result: &EpochResult) {
        let mut table = format!(
            "epoch {} | train loss {:.4} | padding {:.1}%",
            result.epoch,
            result.train_loss,
            100.0 * result.padding_ratio
        );
        for (name, value) in &result.metrics {
            table.push_str(&format!(" | {name} {value:.4}"));
        }
        self.note(&table);
        self.write(
            json!({"epoch": result.epoch, "eval": result.metrics, "train_loss": result.train_loss,
            "padding_ratio": result.padding_ratio}),
        );
        if let Some(path) = &self.log_path {
            let dir = path.parent().unwrap_or(Path::new("."));
            // Pictures are a bonus: failing to draw them must not stop training.
            if let Err(error) = burnbert_eval::plot::read_log(path)
                .and_then(|log| burnbert_eval::plot::plot_run(&log, dir))
            {
                self.note(&format!("warning: cannot draw the run's plots: {error}"));
            }
        }
    }

    /// A line of text that does not disturb the bar.
    pub fn note(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.println(text),
            None if self.every.is_some() => println!("{text}"),
            None => {}
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }

    fn write(&mut self, record: serde_json::Value) {
        if let Some(log) = &mut self.log {
            // A full disk must not stop training; checkpoints report their own failures.
            let _ = writeln!(log, "{record}");
        }
    }
}

/// Set when the user presses Ctrl-C; the loop then saves a checkpoint and stops.
pub fn interrupt_flag() -> Arc<AtomicBool> {
    static FLAG: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();
    FLAG.get_or_init(|| {
        let flag = Arc::new(AtomicBool::new(false));
        let handler_flag = flag.clone();
        // If a handler is already installed (an embedding program's), Ctrl-C keeps its meaning.
        let _ = ctrlc::set_handler(move || handler_flag.store(true, Ordering::SeqCst));
        flag
    })
    .clone()
}
