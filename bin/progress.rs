//! What `train` shows and keeps while the loop runs: a progress bar on a terminal (plain log
//! lines otherwise), the per-epoch metrics table, the metrics log (`metrics.jsonl`), the
//! pictures of the run redrawn after every epoch, and TensorBoard's event files
//! (`--report-to tensorboard`). The training library only reports [`Event`]s.

use std::fs::File;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use burnbert_eval::log::{EpochRecord, Record, RunLog, StepRecord, read_log};
use burnbert_train::{Event, Observer};
use indicatif::{ProgressBar, ProgressStyle};

use crate::tensorboard::EventWriter;

/// Where a run's records go besides the terminal (`--report-to`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportTo {
    /// `metrics.jsonl` and the plots only.
    None,
    /// Also TensorBoard event files in OUTPUT_DIR/tensorboard.
    Tensorboard,
}

/// Reports a run's events to the terminal, and with an output directory to its log, plots
/// and TensorBoard.
pub struct Progress {
    terminal: Terminal,
    files: Option<RunFiles>,
    tensorboard: Option<EventWriter>,
}

impl Progress {
    /// `output_dir` receives `metrics.jsonl` (appended to when `resuming`), the plots and,
    /// with `report_to`, TensorBoard's files; `quiet` shows nothing.
    pub fn new(
        output_dir: Option<&Path>,
        resuming: bool,
        quiet: bool,
        report_to: ReportTo,
    ) -> anyhow::Result<Self> {
        let files = output_dir
            .map(|dir| RunFiles::open(dir, resuming))
            .transpose()?;
        let tensorboard = match (output_dir, report_to) {
            (Some(dir), ReportTo::Tensorboard) => {
                Some(EventWriter::create(&dir.join("tensorboard"))?)
            }
            (None, ReportTo::Tensorboard) => {
                anyhow::bail!(
                    "--report-to tensorboard needs --output-dir to write the event files to"
                )
            }
            (_, ReportTo::None) => None,
        };
        Ok(Self {
            terminal: Terminal::new(quiet),
            files,
            tensorboard,
        })
    }

    fn record(&mut self, record: Record) {
        if let Some(tensorboard) = &mut self.tensorboard {
            // A full disk must not stop training; checkpoints report their own failures.
            let _ = tensorboard.record(&record);
        }
        if let Some(files) = &mut self.files {
            let epoch_ended = matches!(record, Record::Epoch(_));
            files.append(record);
            if epoch_ended && let Err(error) = files.plot() {
                // Pictures are a bonus: failing to draw them must not stop training.
                self.terminal
                    .note(&format!("warning: cannot draw the run's plots: {error:#}"));
            }
        }
    }
}

impl Observer for Progress {
    fn event(&mut self, event: Event) {
        match event {
            Event::Resumed { path, step } => self
                .terminal
                .note(&format!("resumed from {} at step {step}", path.display())),
            Event::Started { total_steps, done } => self.terminal.start(total_steps, done),
            Event::Step(record) => {
                self.terminal.step(record);
                self.record(Record::Step(record.clone()));
            }
            Event::Epoch(result) => {
                self.terminal.note(&epoch_table(result));
                self.record(Record::Epoch(result.clone()));
            }
            Event::Saved(path) => self
                .terminal
                .note(&format!("saved checkpoint {}", path.display())),
            Event::Finished => self.terminal.finish(),
        }
    }
}

/// `epoch 1 | train loss 0.5432 | padding 31.0% | accuracy 0.8100 | f1 0.8700`.
fn epoch_table(result: &EpochRecord) -> String {
    let mut table = format!(
        "epoch {} | train loss {:.4} | padding {:.1}%",
        result.epoch,
        result.train_loss,
        100.0 * result.padding_ratio
    );
    for (name, value) in &result.metrics {
        table.push_str(&format!(" | {name} {value:.4}"));
    }
    table
}

/// The progress bar, or plain lines every 50 steps where stdout is not a terminal.
struct Terminal {
    bar: Option<ProgressBar>,
    /// Plain lines every this many steps when there is no bar; `None` when quiet.
    every: Option<usize>,
    running_loss: f64,
    total_steps: usize,
}

impl Terminal {
    fn new(quiet: bool) -> Self {
        Self {
            bar: (!quiet && std::io::stdout().is_terminal()).then(ProgressBar::hidden),
            every: (!quiet).then_some(50),
            running_loss: f64::NAN,
            total_steps: 0,
        }
    }

    fn start(&mut self, total_steps: usize, done: usize) {
        self.total_steps = total_steps;
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

    fn step(&mut self, record: &StepRecord) {
        let StepRecord {
            step,
            epoch,
            loss,
            lr,
            samples_per_second: rate,
        } = *record;
        self.running_loss = if self.running_loss.is_finite() {
            0.98 * self.running_loss + 0.02 * loss
        } else {
            loss
        };
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
                .is_some_and(|every| step.is_multiple_of(every) || step == self.total_steps) =>
            {
                println!("epoch {epoch} step {step}/{} {msg}", self.total_steps);
            }
            None => {}
        }
    }

    /// A line of text that does not disturb the bar.
    fn note(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.println(text),
            None if self.every.is_some() => println!("{text}"),
            None => {}
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// `metrics.jsonl` and the run's pictures beside it, drawn from the records in memory.
struct RunFiles {
    file: File,
    dir: PathBuf,
    log: RunLog,
}

impl RunFiles {
    /// Opens `dir/metrics.jsonl`; a resumed run appends to it, after reading back what the
    /// run before it logged, so that the plots show the whole run.
    fn open(dir: &Path, resuming: bool) -> anyhow::Result<Self> {
        let path = dir.join("metrics.jsonl");
        let log = match resuming && path.exists() {
            true => read_log(&path).unwrap_or_else(|error| {
                eprintln!("warning: {error}; the plots will show the resumed steps only");
                RunLog::default()
            }),
            false => RunLog::default(),
        };
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(resuming)
            .truncate(!resuming)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        // A killed run may have left half a record: start the resumed records on a new line.
        if resuming && std::fs::read(&path).is_ok_and(|b| b.last().is_some_and(|&c| c != b'\n')) {
            writeln!(file)?;
        }
        Ok(Self {
            file,
            dir: dir.to_path_buf(),
            log,
        })
    }

    fn append(&mut self, record: Record) {
        let line = serde_json::to_string(&record).expect("log records serialize");
        // A full disk must not stop training; checkpoints report their own failures.
        let _ = writeln!(self.file, "{line}");
        self.log.push(record);
    }

    fn plot(&self) -> anyhow::Result<Vec<PathBuf>> {
        Ok(crate::plot::plot_run(&self.log, &self.dir)?)
    }
}

/// Set when the user presses Ctrl-C; the loop then saves a checkpoint and stops.
pub fn interrupt_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let handler_flag = flag.clone();
    // If a handler is already installed (an embedding program's), Ctrl-C keeps its meaning.
    let _ = ctrlc::set_handler(move || handler_flag.store(true, Ordering::SeqCst));
    flag
}
