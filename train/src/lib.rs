//! The training loop of the Hugging Face course ("a full training", sections 4–7) on Burn:
//! forward, loss, backward, optimizer step, scheduler step, evaluation after each epoch,
//! with gradient accumulation, clipping, checkpoints and resumption.

pub mod checkpoint;
pub mod optim;
pub mod progress;
pub mod schedule;

use std::path::PathBuf;
use std::time::Instant;

use burn::data::dataloader::batcher::Batcher;
use burn::module::Module;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::Device;
use burnbert_data::{BatchPlan, Encoded, MetricKind, PaddingBatcher, padding_ratio};
use burnbert_eval::Metrics;
use burnbert_model::{BertForSequenceClassification, on_each_device};
use serde::{Deserialize, Serialize};

pub use checkpoint::LoopState;
pub use progress::Progress;
pub use schedule::{Schedule, ScheduleKind};

/// The options of a run: plain data, defaulting to the course's recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainOptions {
    pub epochs: usize,
    /// Examples per micro-batch (per forward/backward).
    pub batch_size: usize,
    pub learning_rate: f64,
    /// AdamW's decoupled weight decay (not applied to biases and LayerNorm).
    pub weight_decay: f64,
    pub schedule: ScheduleKind,
    pub warmup_steps: usize,
    /// Micro-batches per device and optimizer step.
    pub gradient_accumulation_steps: usize,
    /// Devices training in data parallel, each on its own micro-batches of every step.
    pub devices: usize,
    /// Clip the global gradient norm to this value.
    pub max_grad_norm: Option<f64>,
    /// Fixes head initialisation, dropout and data order.
    pub seed: u64,
    pub pad_to_multiple_of: usize,
    pub group_by_length: bool,
    pub drop_last: bool,
    pub eval_batch_size: usize,
    /// Save a checkpoint every N optimizer steps.
    pub checkpoint_steps: Option<usize>,
    /// Save a checkpoint at the end of every epoch.
    pub checkpoint_epochs: bool,
    /// Skip (and count) steps whose loss is NaN or infinite instead of stopping.
    pub skip_nonfinite: bool,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            epochs: 3,
            batch_size: 8,
            learning_rate: 5e-5,
            weight_decay: 0.01,
            schedule: ScheduleKind::Linear,
            warmup_steps: 0,
            gradient_accumulation_steps: 1,
            devices: 1,
            max_grad_norm: None,
            seed: 42,
            pad_to_multiple_of: 1,
            group_by_length: false,
            drop_last: false,
            eval_batch_size: 32,
            checkpoint_steps: None,
            checkpoint_epochs: false,
            skip_nonfinite: false,
        }
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
        if self.checkpoint_steps == Some(0) {
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

    /// Micro-batches per optimizer step: one per device and accumulation step.
    pub fn micro_batches_per_step(&self) -> usize {
        self.devices * self.gradient_accumulation_steps
    }

    /// Examples per optimizer step: batch size × devices × accumulation steps.
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

    pub fn schedule(&self, train_examples: usize) -> Schedule {
        Schedule {
            kind: self.schedule,
            peak: self.learning_rate,
            warmup_steps: self.warmup_steps,
            total_steps: self.total_steps(train_examples),
        }
    }
}

/// Validation results after one epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochResult {
    /// 1-based.
    pub epoch: usize,
    pub metrics: std::collections::BTreeMap<String, f64>,
    /// Mean training loss over the epoch's steps.
    pub train_loss: f64,
    /// Padded tokens per real token in the epoch's training batches.
    pub padding_ratio: f64,
}

/// The evaluation split and what to measure on it.
pub struct Validation<'a> {
    pub examples: &'a [Encoded],
    pub metrics: &'a [MetricKind],
    /// 0 for regression.
    pub num_classes: usize,
}

/// What went wrong in training; each message says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("{0}")]
    Options(String),
    #[error("{0}")]
    Checkpoint(String),
    #[error(
        "the loss is {loss} at optimizer step {step}; lower --learning-rate, add --max-grad-norm 1.0, \
         use f32 instead of half precision, or pass --skip-nonfinite to skip such steps"
    )]
    NonFinite { loss: f32, step: usize },
    #[error("stopped by Ctrl-C at optimizer step {step}{saved}")]
    Interrupted { step: usize, saved: String },
}

/// Where a run keeps its checkpoints and whether it continues one.
#[derive(Debug, Clone, Default)]
pub struct CheckpointDirs {
    /// Where new checkpoints go (`OUTPUT_DIR/checkpoints`).
    pub save_to: Option<PathBuf>,
    /// A checkpoint to continue from.
    pub resume_from: Option<PathBuf>,
}

/// What a finished run returns.
pub struct Trained {
    pub model: BertForSequenceClassification,
    pub state: LoopState,
    pub seconds: f64,
}

/// Forward and backward over one optimizer step's micro-batches (`group`, lists of
/// example indices) on `devices`: returns the summed gradients on the first device, the
/// group's mean loss and its size.
///
/// Each micro-batch's mean loss is weighted by its share of the group's examples, so the
/// summed gradient is that of the mean loss over the whole group, as one batch of all its
/// examples would give, also for a last, smaller group. Device `d` takes micro-batches
/// `d`, `d + N`, ... on a replica of its own, in a thread of its own; the gradients are then
/// added on the first device, as burn-train's multi-device strategy does (Burn 0.22's
/// all-reduce, `burn::tensor::distributed`, is implemented for CUDA only).
pub fn accumulate_gradients(
    model: &BertForSequenceClassification,
    group: &[Vec<usize>],
    train: &[Encoded],
    batcher: &PaddingBatcher,
    devices: &[Device],
) -> (GradientsParams, f32, usize) {
    let group_examples: usize = group.iter().map(Vec::len).sum();
    let devices = &devices[..devices.len().min(group.len())];
    let shards = on_each_device(devices, |d, device| {
        // A replica has the model's parameter ids, so its gradients add up with the model's.
        let replica = match devices.len() {
            1 => model.clone(),
            _ => model.clone().fork(device),
        };
        let mut accumulated = GradientsAccumulator::new();
        let mut shard_loss = 0.0;
        for indices in group.iter().skip(d).step_by(devices.len()) {
            let items = indices.iter().map(|&i| train[i].clone()).collect();
            let batch = batcher.batch(items, device);
            let output = replica.forward(batch.input, batch.labels);
            let loss = output.loss.expect("training examples have labels")
                * (batch.size as f64 / group_examples as f64);
            shard_loss += loss.clone().into_scalar::<f32>();
            let grads = GradientsParams::from_grads(loss.backward(), &replica);
            accumulated.accumulate(&replica, grads);
        }
        (accumulated.grads(), shard_loss)
    });
    let mut total = GradientsAccumulator::new();
    let mut group_loss = 0.0;
    for (grads, loss) in shards {
        total.accumulate(model, grads.to_device(&devices[0], model));
        group_loss += loss;
    }
    (total.grads(), group_loss, group_examples)
}

/// Fine-tunes `model` on `train`, evaluating on `validation` after each epoch: the course's
/// loop. `devices` (`options.devices` of them) are plain devices; the loop trains on their
/// autodiff counterparts, and keeps the model and optimizer state on the first.
#[allow(clippy::too_many_arguments)]
pub fn train(
    model: BertForSequenceClassification,
    train: &[Encoded],
    validation: &Validation,
    options: &TrainOptions,
    batcher: &PaddingBatcher,
    devices: &[Device],
    dirs: &CheckpointDirs,
    progress: &mut Progress,
) -> Result<Trained, TrainError> {
    options.validate(train.len())?;
    if devices.len() != options.devices {
        return Err(TrainError::Options(format!(
            "{} devices given for a run planned on {}",
            devices.len(),
            options.devices
        )));
    }
    let started = Instant::now();
    let devices: Vec<Device> = devices.iter().map(|d| d.clone().autodiff()).collect();
    let device = &devices[0];
    let mut model = model.to_device(device).train();
    let mut optimizer = optim::adamw(options.weight_decay);
    let mut state = LoopState {
        step: 0,
        epoch: 0,
        step_in_epoch: 0,
        epoch_loss: 0.0,
        epoch_loss_steps: 0,
        skipped_nonfinite: 0,
        epochs: Vec::new(),
    };
    if let Some(path) = &dirs.resume_from {
        let path = checkpoint::resolve(path)?;
        (model, optimizer, state) = checkpoint::load(&path, model, optimizer)?;
        progress.note(&format!(
            "resumed from {} at step {}",
            path.display(),
            state.step
        ));
    }
    let plan = options.plan();
    let schedule = options.schedule(train.len());
    let lengths: Vec<usize> = train.iter().map(Encoded::len).collect();
    progress.start(schedule.total_steps, state.step);
    let interrupted = progress::interrupt_flag();

    while state.epoch < options.epochs {
        let batches = plan.epoch(&lengths, state.epoch);
        let groups: Vec<&[Vec<usize>]> = batches.chunks(options.micro_batches_per_step()).collect();
        for group in &groups[state.step_in_epoch..] {
            // Dropout masks depend on the step alone, so a resumed run draws the same ones.
            // (The CPU backends have one generator for all their workers, drawn in whatever
            // order the threads run: several CPU workers are not reproducible.)
            for (d, device) in devices.iter().enumerate() {
                device.seed(
                    options
                        .seed
                        .wrapping_mul(1_000_003)
                        .wrapping_add(state.step as u64)
                        .wrapping_add((d as u64) << 32),
                );
            }
            let (mut grads, step_loss, group_examples) =
                accumulate_gradients(&model, group, train, batcher, &devices);
            let lr = schedule.lr(state.step);
            if !step_loss.is_finite() {
                if !options.skip_nonfinite {
                    return Err(TrainError::NonFinite {
                        loss: step_loss,
                        step: state.step + 1,
                    });
                }
                state.skipped_nonfinite += 1;
            } else {
                if let Some(max_norm) = options.max_grad_norm {
                    grads = optim::clip_grad_norm(&model, grads, max_norm).0;
                }
                model = optimizer.step(lr, model, grads);
                state.epoch_loss += step_loss as f64;
                state.epoch_loss_steps += 1;
            }
            state.step += 1;
            state.step_in_epoch += 1;
            progress.step(state.epoch + 1, state.step, step_loss, lr, group_examples);

            let due = options
                .checkpoint_steps
                .is_some_and(|n| state.step % n == 0);
            let stop = interrupted.load(std::sync::atomic::Ordering::SeqCst);
            if let Some(dir) = &dirs.save_to
                && (due || stop)
            {
                let saved = checkpoint::save(dir, &model, &optimizer, &state)?;
                progress.note(&format!("saved checkpoint {}", saved.display()));
                if stop {
                    return Err(TrainError::Interrupted {
                        step: state.step,
                        saved: format!(
                            "; resume with --resume-from-checkpoint {}",
                            saved.display()
                        ),
                    });
                }
            } else if stop {
                return Err(TrainError::Interrupted {
                    step: state.step,
                    saved: " (no checkpoint: run with --checkpointing-steps to keep progress)"
                        .into(),
                });
            }
        }

        let mut metrics = Metrics::new(validation.metrics, validation.num_classes);
        let predictions = burnbert_eval::predict(
            &model,
            validation.examples,
            batcher,
            options.eval_batch_size,
            &devices,
        );
        let references = burnbert_eval::references(validation.examples).ok_or_else(|| {
            TrainError::Options(
                "the validation split has unlabelled rows; pick a labelled split".into(),
            )
        })?;
        metrics.add_batch(&predictions.predicted, &references);
        let result = EpochResult {
            epoch: state.epoch + 1,
            metrics: metrics.compute(),
            train_loss: state.epoch_loss / state.epoch_loss_steps.max(1) as f64,
            padding_ratio: padding_ratio(&batches, &lengths, batcher),
        };
        progress.epoch_end(&result);
        state.epochs.push(result);
        state.epoch += 1;
        state.step_in_epoch = 0;
        state.epoch_loss = 0.0;
        state.epoch_loss_steps = 0;
        if options.checkpoint_epochs
            && let Some(dir) = &dirs.save_to
        {
            let saved = checkpoint::save(dir, &model, &optimizer, &state)?;
            progress.note(&format!("saved checkpoint {}", saved.display()));
        }
    }
    progress.finish();
    Ok(Trained {
        model: model.valid(),
        state,
        seconds: started.elapsed().as_secs_f64(),
    })
}
