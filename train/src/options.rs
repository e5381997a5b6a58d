//! The options of a training run, declared once: each field is a command-line flag of
//! `train` (clap derives the flag, its default and its help from here), a key of a
//! `--config` file, and the plain data the loop reads. [`TrainOptions::default`] is the
//! course's recipe, taken from the same declarations.

use burnbert_data::BatchPlan;
use serde::{Deserialize, Serialize};

use crate::TrainError;
use crate::schedule::{Schedule, ScheduleKind};

/// The options of a run; the defaults are the course's recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
pub struct TrainOptions {
    /// Passes over the training data.
    #[arg(long = "num-epochs", default_value_t = 3)]
    pub epochs: usize,
    /// Examples per forward/backward pass on each device.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Examples per forward pass when evaluating.
    #[arg(long, default_value_t = 32)]
    pub eval_batch_size: usize,
    /// AdamW's peak learning rate.
    #[arg(long, default_value_t = 5e-5, allow_negative_numbers = true)]
    pub learning_rate: f64,
    /// AdamW's decoupled weight decay; biases and LayerNorm parameters are never decayed.
    #[arg(long, default_value_t = 0.01, allow_negative_numbers = true)]
    pub weight_decay: f64,
    /// The learning rate's shape after warmup.
    #[arg(long = "lr-scheduler-type", value_enum, default_value_t = ScheduleKind::Linear)]
    pub schedule: ScheduleKind,
    /// Optimizer steps of linear warmup from 0 to the peak learning rate.
    #[arg(
        long = "num-warmup-steps",
        default_value_t = 0,
        conflicts_with = "warmup_ratio"
    )]
    pub warmup_steps: usize,
    /// Warmup as a fraction of all optimizer steps, instead of --num-warmup-steps.
    #[arg(long)]
    pub warmup_ratio: Option<f64>,
    /// Micro-batches per device and optimizer step.
    #[arg(long, default_value_t = 1)]
    pub gradient_accumulation_steps: usize,
    /// Devices training in data parallel, each on its own micro-batches of every step: the
    /// length of `--devices`, which the program sets.
    #[arg(skip = 1usize)]
    pub devices: usize,
    /// Processes training in data parallel (MPI ranks, `crate::distributed`), each with
    /// `devices` devices: the launcher's world size, which the program sets.
    #[arg(skip = 1usize)]
    pub ranks: usize,
    /// Clip the global gradient norm to this value.
    #[arg(long)]
    pub max_grad_norm: Option<f64>,
    /// Fixes the head's initialisation, dropout and the data order.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Pad each batch to a multiple of this length [default: 1 on the CPU, 16 on GPUs, which
    /// compile kernels per shape].
    #[arg(long)]
    pub pad_to_multiple_of: Option<usize>,
    /// Batch examples of similar length together (less padding).
    #[arg(long)]
    pub group_by_length: bool,
    /// Drop the last, smaller batch of each epoch.
    #[arg(long)]
    pub drop_last: bool,
    /// Save a checkpoint every N optimizer steps, or at the end of every `epoch`.
    #[arg(long = "checkpointing-steps", value_parser = Checkpointing::parse)]
    pub checkpointing: Option<Checkpointing>,
    /// Skip (and count) optimizer steps whose loss is NaN or infinite instead of stopping.
    #[arg(long)]
    pub skip_nonfinite: bool,
    /// Keep only each encoder layer's input for the backward pass and run the layer again
    /// there: less memory for about a third more compute (transformers'
    /// `gradient_checkpointing_enable()`). The result is the same.
    #[arg(long)]
    pub gradient_checkpointing: bool,
    /// Refuse to start a run whose training step is estimated to need more than this many GiB
    /// (on the CPU backends, before the first step; `--dry-run` prints the estimate) [default:
    /// the memory available when the run starts]. `inf` turns the check off.
    #[arg(long = "memory-limit", value_name = "GIB")]
    #[serde(default)]
    pub memory_limit: Option<f64>,
}

/// When checkpoints are saved (`--checkpointing-steps`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Checkpointing {
    /// Every this many optimizer steps.
    Steps(usize),
    /// At the end of every epoch.
    Epoch,
}

impl Checkpointing {
    /// `--checkpointing-steps`'s value. The error is the same [`TrainError::Options`] that
    /// [`TrainOptions::validate`] gives, so the program reports both alike.
    pub fn parse(text: &str) -> Result<Self, TrainError> {
        match text {
            "epoch" => Ok(Self::Epoch),
            n => n.parse().map(Self::Steps).map_err(|_| {
                TrainError::Options(format!(
                    "--checkpointing-steps takes a number of steps or `epoch`, not `{n}`"
                ))
            }),
        }
    }
}

impl Default for TrainOptions {
    /// Every option at the default its flag declares.
    fn default() -> Self {
        use clap::{Args, FromArgMatches};
        let command = Self::augment_args(clap::Command::new("defaults"));
        Self::from_arg_matches(&command.get_matches_from(["defaults"]))
            .expect("every option has a default")
    }
}

impl TrainOptions {
    /// Checks the options against the data before anything runs; the error names the flag.
    pub fn validate(&self, train_examples: usize) -> Result<(), TrainError> {
        let bad = |m: String| Err(TrainError::Options(m));
        if self.batch_size == 0 {
            return bad("--batch-size must be at least 1".into());
        }
        if self.eval_batch_size == 0 {
            return bad("--eval-batch-size must be at least 1".into());
        }
        if self.gradient_accumulation_steps == 0 {
            return bad("--gradient-accumulation-steps must be at least 1".into());
        }
        if self.devices == 0 {
            return bad("--devices must name at least one device".into());
        }
        if self.epochs == 0 {
            return bad("--num-epochs must be at least 1".into());
        }
        if self.pad_to_multiple_of == Some(0) {
            return bad("--pad-to-multiple-of must be at least 1".into());
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return bad(format!(
                "--learning-rate must be a positive number, not {}",
                self.learning_rate
            ));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad(format!(
                "--weight-decay must be a number ≥ 0, not {}",
                self.weight_decay
            ));
        }
        if let Some(norm) = self.max_grad_norm
            && !(norm.is_finite() && norm > 0.0)
        {
            return bad(format!(
                "--max-grad-norm must be a positive number, not {norm}"
            ));
        }
        if let Some(ratio) = self.warmup_ratio
            && !(0.0..=1.0).contains(&ratio)
        {
            return bad(format!(
                "--warmup-ratio must be between 0 and 1, not {ratio}"
            ));
        }
        if let Some(gib) = self.memory_limit
            && (gib.is_nan() || gib <= 0.0)
        {
            return bad(format!(
                "--memory-limit must be a positive number of GiB (or inf), not {gib}"
            ));
        }
        if self.checkpointing == Some(Checkpointing::Steps(0)) {
            return bad("--checkpointing-steps must be at least 1".into());
        }
        let total = self.total_steps(train_examples);
        if total == 0 {
            return bad(format!(
                "{train_examples} training examples give no optimizer step with --batch-size {} \
                 and --drop-last",
                self.batch_size
            ));
        }
        if self.warmup_steps > total {
            return bad(format!(
                "--num-warmup-steps {} is longer than the whole run ({total} optimizer steps)",
                self.warmup_steps
            ));
        }
        Ok(())
    }

    /// How the training loop batches each epoch (the dry run shows its first epoch).
    pub fn plan(&self) -> BatchPlan {
        BatchPlan {
            batch_size: self.batch_size,
            shuffle: true,
            drop_last: self.drop_last,
            group_by_length: self.group_by_length,
            seed: self.seed,
        }
    }

    /// Micro-batches per optimizer step: one per device of every rank and accumulation step.
    pub fn micro_batches_per_step(&self) -> usize {
        self.workers() * self.gradient_accumulation_steps
    }

    /// The devices of all ranks, each of which trains on its own micro-batches.
    pub fn workers(&self) -> usize {
        self.devices * self.ranks
    }

    /// Examples per optimizer step: batch size × devices × ranks × accumulation steps.
    pub fn effective_batch_size(&self) -> usize {
        self.batch_size * self.micro_batches_per_step()
    }

    /// Optimizer steps per epoch; the last group of micro-batches may be partial and still steps.
    pub fn steps_per_epoch(&self, train_examples: usize) -> usize {
        self.plan()
            .batches_per_epoch(train_examples)
            .div_ceil(self.micro_batches_per_step())
    }

    /// Optimizer steps of the whole run.
    pub fn total_steps(&self, train_examples: usize) -> usize {
        self.steps_per_epoch(train_examples) * self.epochs
    }

    /// The learning rate at every step: `--warmup-ratio` of the run's steps (rounded up)
    /// or `--num-warmup-steps` of warmup, then the schedule's decay.
    pub fn schedule(&self, train_examples: usize) -> Schedule {
        let total_steps = self.total_steps(train_examples);
        Schedule {
            kind: self.schedule,
            peak: self.learning_rate,
            warmup_steps: match self.warmup_ratio {
                Some(ratio) => (ratio * total_steps as f64).ceil() as usize,
                None => self.warmup_steps,
            },
            total_steps,
        }
    }

    /// Whether a checkpoint is due after optimizer step `step` (1-based).
    pub fn checkpoint_due(&self, step: usize) -> bool {
        matches!(self.checkpointing, Some(Checkpointing::Steps(n)) if step.is_multiple_of(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The defaults are the course's recipe (its `num_epochs = 3`, `batch_size=8`,
    /// `AdamW(lr=5e-5)`, `get_scheduler("linear", num_warmup_steps=0)`) and torch's AdamW
    /// weight decay, as the flags declare them.
    #[test]
    fn defaults_are_the_course_recipe() {
        let options = TrainOptions::default();
        assert_eq!(
            (options.epochs, options.batch_size, options.learning_rate),
            (3, 8, 5e-5)
        );
        assert_eq!(options.schedule, ScheduleKind::Linear);
        assert_eq!((options.warmup_steps, options.warmup_ratio), (0, None));
        assert_eq!(options.weight_decay, 0.01);
        assert_eq!((options.devices, options.seed), (1, 42));
        assert_eq!(options.checkpointing, None);
    }

    #[test]
    fn warmup_ratio_rounds_up_to_whole_steps() {
        let options = TrainOptions {
            warmup_ratio: Some(0.1),
            ..TrainOptions::default()
        };
        // 50 examples in batches of 8: 7 steps per epoch, 21 in all; 10% is 2.1 steps.
        assert_eq!(options.schedule(50).warmup_steps, 3);
        let err = TrainOptions {
            warmup_ratio: Some(1.5),
            ..options
        }
        .validate(50)
        .unwrap_err();
        assert!(err.to_string().contains("--warmup-ratio"), "{err}");
    }

    #[test]
    fn checkpointing_takes_steps_or_epoch() {
        assert_eq!(Checkpointing::parse("epoch").unwrap(), Checkpointing::Epoch);
        assert_eq!(
            Checkpointing::parse("25").unwrap(),
            Checkpointing::Steps(25)
        );
        let err = Checkpointing::parse("often").unwrap_err().to_string();
        assert!(
            err.contains("--checkpointing-steps") && err.contains("`often`"),
            "{err}"
        );
        let every_3 = TrainOptions {
            checkpointing: Some(Checkpointing::Steps(3)),
            ..TrainOptions::default()
        };
        assert!(every_3.checkpoint_due(6) && !every_3.checkpoint_due(7));
        assert!(!TrainOptions::default().checkpoint_due(6));
    }
}
