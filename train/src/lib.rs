//! The training loop of the Hugging Face course ("a full training", sections 4–7) on Burn:
//! forward, loss, backward, optimizer step, scheduler step, evaluation after each epoch,
//! with gradient accumulation, clipping, checkpoints and resumption.
//!
//! The library writes no files but its checkpoints: it tells an [`Observer`] what happens
//! (the `train` program shows progress, keeps the metrics log and draws the plots), and
//! stops at the next step when the caller's stop flag is set.

pub mod checkpoint;
pub mod distributed;
pub mod memory;
pub mod optim;
pub mod options;
pub mod schedule;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::data::dataloader::batcher::Batcher;
use burn::module::Module;
use burn::optim::{GradientsAccumulator, GradientsParams, ModuleOptimizer};
use burn::tensor::Device;
use burnbert_data::{Encoded, MetricKind, PaddingBatcher, padding_ratio};
use burnbert_eval::log::{EpochRecord, StepRecord};
use burnbert_eval::{Metrics, Predictions};
use burnbert_model::{SequenceClassifier, on_each_device};
use serde::{Deserialize, Serialize};

pub use distributed::World;
pub use options::{Checkpointing, TrainOptions};
pub use schedule::{Schedule, ScheduleKind};

/// What a run trains and evaluates on.
pub struct Data<'a> {
    pub train: &'a [Encoded],
    /// The evaluation split, measured after every epoch with `metrics`.
    pub validation: &'a [Encoded],
    pub metrics: &'a [MetricKind],
    /// 0 for regression.
    pub num_classes: usize,
    /// Pads examples into batches (the course's `DataCollatorWithPadding`).
    pub batcher: &'a PaddingBatcher,
}

/// What went wrong in training; each message says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("{0}")]
    Options(String),
    #[error("{0}")]
    Checkpoint(String),
    #[error("{0}")]
    Memory(String),
    #[error(
        "the loss is {loss} at optimizer step {step}; lower --learning-rate, add --max-grad-norm 1.0, \
         use f32 instead of half precision, or pass --skip-nonfinite to skip such steps"
    )]
    NonFinite { loss: f32, step: usize },
    #[error("stopped by Ctrl-C at optimizer step {step}{}", match saved {
        Some(path) => format!("; resume with --resume-from-checkpoint {}", path.display()),
        None => " (no checkpoint: run with --checkpointing-steps to keep progress)".into(),
    })]
    Interrupted { step: usize, saved: Option<PathBuf> },
}

/// Where a run keeps its checkpoints and whether it continues one.
#[derive(Debug, Clone, Default)]
pub struct CheckpointDirs {
    /// Where new checkpoints go (`OUTPUT_DIR/checkpoints`).
    pub save_to: Option<PathBuf>,
    /// A checkpoint to continue from.
    pub resume_from: Option<PathBuf>,
}

/// What the loop reports as it goes.
#[derive(Debug)]
pub enum Event<'a> {
    /// Continuing from this checkpoint, after `step` optimizer steps.
    Resumed { path: &'a Path, step: usize },
    /// The first step is about to run: `done` of `total_steps` are already done.
    Started { total_steps: usize, done: usize },
    /// An optimizer step was taken; a non-finite loss means it was skipped.
    Step(&'a StepRecord),
    /// An epoch ended and was evaluated.
    Epoch(&'a EpochRecord),
    /// A checkpoint was written here.
    Saved(&'a Path),
    /// The last epoch ended.
    Finished,
}

/// Whoever watches a run: the `train` program's progress bar, metrics log and plots.
pub trait Observer {
    fn event(&mut self, event: Event);
}

/// A closure observes too.
impl<F: FnMut(Event)> Observer for F {
    fn event(&mut self, event: Event) {
        self(event)
    }
}

/// Watches nothing.
impl Observer for () {
    fn event(&mut self, _: Event) {}
}

/// Where the loop stands, and what it has measured so far; checkpoints keep it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LoopState {
    /// Optimizer steps taken.
    pub step: usize,
    /// The epoch in progress (0-based).
    pub epoch: usize,
    /// Optimizer steps already taken in `epoch`.
    pub step_in_epoch: usize,
    /// Sum of the step losses in `epoch` so far, and how many steps it has.
    pub epoch_loss: f64,
    pub epoch_loss_steps: usize,
    /// Non-finite losses skipped so far (`--skip-nonfinite`).
    pub skipped_nonfinite: usize,
    /// Validation results of finished epochs.
    pub epochs: Vec<EpochRecord>,
    /// What fixes the run's data stream and schedule ([`checkpoint::run_identity`]); a
    /// checkpoint resumes only into the same. `None` in checkpoints written before runs were
    /// recorded.
    #[serde(default)]
    pub run: Option<std::collections::BTreeMap<String, String>>,
}

impl LoopState {
    /// Counts an optimizer step whose loss was `loss` (skipped when not finite).
    fn step_done(&mut self, loss: f32) {
        if loss.is_finite() {
            self.epoch_loss += loss as f64;
            self.epoch_loss_steps += 1;
        } else {
            self.skipped_nonfinite += 1;
        }
        self.step += 1;
        self.step_in_epoch += 1;
    }

    /// The mean loss of the epoch's steps so far.
    fn epoch_mean_loss(&self) -> f64 {
        self.epoch_loss / self.epoch_loss_steps.max(1) as f64
    }

    /// The optimizer steps of the epoch, `groups` of micro-batches, still to take. Only a
    /// checkpoint of another run (unrecorded, as older ones are) can be past their end.
    fn remaining<'a, T>(&self, groups: &'a [T]) -> Result<&'a [T], TrainError> {
        groups.get(self.step_in_epoch..).ok_or_else(|| {
            TrainError::Checkpoint(format!(
                "the checkpoint is at step {} of epoch {}, which has {} steps with these \
                 settings: resume with the settings it was saved with",
                self.step_in_epoch,
                self.epoch + 1,
                groups.len()
            ))
        })
    }

    /// Keeps the epoch's validation result and moves to the next epoch.
    fn epoch_done(&mut self, result: EpochRecord) {
        self.epochs.push(result);
        self.epoch += 1;
        self.step_in_epoch = 0;
        self.epoch_loss = 0.0;
        self.epoch_loss_steps = 0;
    }
}

/// How often the ranks of a run compare their weights (and once more at the end).
const WEIGHTS_CHECK_STEPS: usize = 50;

/// What a finished run returns.
pub struct Trained {
    pub model: SequenceClassifier,
    pub state: LoopState,
    pub seconds: f64,
}

/// Fine-tunes `model` on `data.train`, evaluating on `data.validation` after each epoch: the
/// course's loop. `devices` (`options.devices` of them) are plain devices; the loop trains
/// on their autodiff counterparts, and keeps the model and optimizer state on the first.
/// When `stop` is set, the loop saves a checkpoint (if it saves any) after the step in
/// progress and returns [`TrainError::Interrupted`].
pub fn train(
    model: SequenceClassifier,
    data: &Data,
    options: &TrainOptions,
    devices: &[Device],
    dirs: &CheckpointDirs,
    observer: &mut dyn Observer,
    stop: &AtomicBool,
) -> Result<Trained, TrainError> {
    let started = Instant::now();
    let devices: Vec<Device> = devices.iter().map(|d| d.clone().autodiff()).collect();
    let world = World::new(&devices);
    let references = check_run(data, options, world)?;
    let (mut model, mut optimizer, mut state) = start(model, data, options, world, dirs, observer)?;
    let schedule = options.schedule(data.train.len());
    let lengths: Vec<usize> = data.train.iter().map(Encoded::len).collect();
    // The rate counts from the first step of this run or of its resumption.
    let (steps_started, mut examples_done) = (Instant::now(), 0);

    while state.epoch < options.epochs {
        let batches = options.plan().epoch(&lengths, state.epoch);
        let groups: Vec<&[Vec<usize>]> = batches.chunks(options.micro_batches_per_step()).collect();
        for group in state.remaining(&groups)? {
            seed_dropout(world, options.seed, state.step);
            let lr = schedule.lr(state.step);
            let (stepped, loss, examples) = optimizer_step(
                model,
                &mut optimizer,
                group,
                data,
                world,
                lr,
                options.max_grad_norm,
            );
            model = stepped;
            if !loss.is_finite() && !options.skip_nonfinite {
                return Err(TrainError::NonFinite {
                    loss,
                    step: state.step + 1,
                });
            }
            state.step_done(loss);
            let step = state.step;
            examples_done += examples;
            observer.event(Event::Step(&StepRecord {
                step,
                epoch: state.epoch + 1,
                loss: loss as f64,
                lr,
                samples_per_second: examples_done as f64
                    / steps_started.elapsed().as_secs_f64().max(1e-9),
            }));

            // Every rank stops at the same step, whichever was interrupted.
            let interrupted = world.ranks.any(stop.load(Ordering::SeqCst));
            if step % WEIGHTS_CHECK_STEPS == 0 {
                world.ranks.check_same_weights(&model, step)?;
            }
            if options.checkpoint_due(step) || interrupted {
                let saved = save(dirs, world, &model, &optimizer, &state, observer)?;
                if interrupted {
                    return Err(TrainError::Interrupted { step, saved });
                }
            }
        }

        let padding = padding_ratio(&batches, &lengths, data.batcher);
        let result = evaluate(&model, data, options, world, &references, &state, padding);
        observer.event(Event::Epoch(&result));
        state.epoch_done(result);
        if options.checkpointing == Some(Checkpointing::Epoch) {
            save(dirs, world, &model, &optimizer, &state, observer)?;
        }
    }
    world.ranks.check_same_weights(&model, state.step)?;
    observer.event(Event::Finished);
    let seconds = started.elapsed().as_secs_f64();
    Ok(Trained {
        model: model.valid(),
        state,
        seconds,
    })
}

/// One optimizer step of [`train`]: the micro-batches of `group` forward and backward on
/// the `world`'s devices and ranks, their gradients summed, clipped to `max_grad_norm`, and
/// applied at `lr`. A step whose loss is not finite leaves the model as it was. Returns the
/// model, the mean loss and the number of examples.
pub fn optimizer_step(
    model: SequenceClassifier,
    optimizer: &mut ModuleOptimizer,
    group: &[Vec<usize>],
    data: &Data,
    world: World,
    lr: f64,
    max_grad_norm: Option<f64>,
) -> (SequenceClassifier, f32, usize) {
    let (grads, loss, examples) =
        accumulate_gradients(&model, group, data.train, data.batcher, world);
    if !loss.is_finite() {
        return (model, loss, examples);
    }
    let grads = match max_grad_norm {
        Some(max_norm) => optim::clip_grad_norm(&model, grads, max_norm).0,
        None => grads,
    };
    (optimizer.step(lr, model, grads), loss, examples)
}

/// The model on the training device, a new optimizer and loop state, or those of the
/// checkpoint the run resumes (which must be of this run, [`checkpoint::run_identity`]).
fn start(
    model: SequenceClassifier,
    data: &Data,
    options: &TrainOptions,
    world: World,
    dirs: &CheckpointDirs,
    observer: &mut dyn Observer,
) -> Result<(SequenceClassifier, ModuleOptimizer, LoopState), TrainError> {
    let model = model
        .to_device(&world.devices[0])
        .train()
        .with_gradient_checkpointing(options.gradient_checkpointing);
    let optimizer = optim::adamw(options.weight_decay);
    let run = checkpoint::run_identity(options, data.train, &model);
    if world.ranks.world() > 1 {
        let settings = rank_settings(&run, options, data, &model);
        world.ranks.check_same_settings(&settings)?;
    }
    world.ranks.connect(&world.devices[0])?;
    let (model, optimizer, state) = match &dirs.resume_from {
        None => (model, optimizer, LoopState::default()),
        Some(path) => {
            let path = checkpoint::resolve(path)?;
            let loaded = checkpoint::load(&path, model, optimizer, &run)?;
            observer.event(Event::Resumed {
                path: &path,
                step: loaded.2.step,
            });
            loaded
        }
    };
    let total_steps = options.total_steps(data.train.len());
    observer.event(Event::Started {
        total_steps,
        done: state.step,
    });
    Ok((
        model,
        optimizer,
        LoopState {
            run: Some(run),
            ..state
        },
    ))
}

/// What every rank of a run must share beyond the run's identity: the ranks split every step
/// alike only with as many devices and accumulation steps each; they must clip and compute
/// alike, start from the same weights, and evaluate the same examples.
fn rank_settings(
    run: &std::collections::BTreeMap<String, String>,
    options: &TrainOptions,
    data: &Data,
    model: &SequenceClassifier,
) -> std::collections::BTreeMap<String, String> {
    let mixed_precision = match model.compute_dtype() {
        None => "no".to_string(),
        Some(dtype) => format!("{dtype:?}").to_lowercase(),
    };
    let mut settings = run.clone();
    settings.extend([
        ("--devices (count)".into(), options.devices.to_string()),
        (
            "--gradient-accumulation-steps".into(),
            options.gradient_accumulation_steps.to_string(),
        ),
        (
            "--max-grad-norm".into(),
            options
                .max_grad_norm
                .map_or_else(|| "none".into(), |norm| norm.to_string()),
        ),
        ("--mixed-precision".into(), mixed_precision),
        (
            "model weights".into(),
            format!("hash {:016x}", distributed::weights_hash(model)),
        ),
        (
            "validation data".into(),
            checkpoint::describe_data(data.validation),
        ),
    ]);
    settings
}

/// The epoch's validation: `model`'s predictions on `data.validation` against `references`,
/// the epoch's mean training loss and its batches' `padding`.
fn evaluate(
    model: &SequenceClassifier,
    data: &Data,
    options: &TrainOptions,
    world: World,
    references: &[f64],
    state: &LoopState,
    padding: f64,
) -> EpochRecord {
    let predictions = predict_on_all_ranks(model, data, options.eval_batch_size, world);
    let mut metrics = Metrics::new(data.metrics, data.num_classes);
    metrics.add_batch(&predictions.predicted, references);
    EpochRecord {
        epoch: state.epoch + 1,
        metrics: metrics.compute(),
        train_loss: state.epoch_mean_loss(),
        padding_ratio: padding,
    }
}

/// `model`'s predictions on `data.validation` in file order, each rank predicting a share of
/// its batches (the same batches as one process) and every rank receiving them all.
fn predict_on_all_ranks(
    model: &SequenceClassifier,
    data: &Data,
    batch_size: usize,
    world: World,
) -> Predictions {
    let (ranks, devices) = (world.ranks, world.devices);
    let examples = data.validation;
    if ranks.world() == 1 {
        return burnbert_eval::predict(model, examples, data.batcher, batch_size, devices);
    }
    let batches = examples.len().div_ceil(batch_size);
    let first_example =
        |rank: usize| (batches * rank / ranks.world() * batch_size).min(examples.len());
    let shard = first_example(ranks.rank())..first_example(ranks.rank() + 1);
    let local = burnbert_eval::predict(
        model,
        &examples[shard.clone()],
        data.batcher,
        batch_size,
        devices,
    );
    // Every rank's logits in their rows of a table of zeros, summed: the whole table. A
    // regression head (no classes) has one output.
    let width = data.num_classes.max(1);
    let mut table = vec![0.0f32; examples.len() * width];
    for (row, logits) in shard.zip(&local.logits) {
        table[row * width..(row + 1) * width].copy_from_slice(logits);
    }
    ranks.sum(&mut table);
    Predictions::from_logits(table.chunks(width).map(<[f32]>::to_vec).collect())
}

/// Checks a run before its first step: the options against the data, the devices against
/// the options, and that every validation example has a label (returned as the metrics'
/// references), so that no problem waits for the end of an epoch.
fn check_run(data: &Data, options: &TrainOptions, world: World) -> Result<Vec<f64>, TrainError> {
    options.validate(data.train.len())?;
    if world.devices.len() != options.devices {
        return Err(TrainError::Options(format!(
            "{} devices given for a run planned on {}",
            world.devices.len(),
            options.devices
        )));
    }
    let world = world.ranks.world();
    if world != options.ranks {
        return Err(TrainError::Options(format!(
            "a run planned on {} ranks started in a world of {world}",
            options.ranks
        )));
    }
    burnbert_eval::references(data.validation.iter().map(|e| e.label)).ok_or_else(|| {
        TrainError::Options(
            "the validation split has unlabelled rows; pick a labelled split".into(),
        )
    })
}

/// Seeds every device's generator for `step`: dropout masks then depend on the step alone,
/// so a resumed run draws the same ones. Each worker (device `d` of rank `r`, worker
/// `r × devices + d` of the run) gets its own seed, so that ranks draw other masks for their
/// other examples. (The CPU backends have one generator for all their workers in a process,
/// drawn in whatever order the threads run: several CPU workers are not reproducible.)
fn seed_dropout(world: World, seed: u64, step: usize) {
    let first_worker = world.first_worker();
    for (d, device) in world.devices.iter().enumerate() {
        device.seed(
            seed.wrapping_mul(1_000_003)
                .wrapping_add(step as u64)
                .wrapping_add(((first_worker + d) as u64) << 32),
        );
    }
}

/// Saves a checkpoint where the run keeps them, if it keeps any, from rank 0 alone, and returns
/// its path.
fn save(
    dirs: &CheckpointDirs,
    world: World,
    model: &SequenceClassifier,
    optimizer: &ModuleOptimizer,
    state: &LoopState,
    observer: &mut dyn Observer,
) -> Result<Option<PathBuf>, TrainError> {
    let Some(dir) = dirs.save_to.as_ref().filter(|_| world.ranks.is_main()) else {
        return Ok(None);
    };
    let saved = checkpoint::save(dir, model, optimizer, state)?;
    observer.event(Event::Saved(&saved));
    Ok(Some(saved))
}

/// Forward and backward over one optimizer step's micro-batches (`group`, lists of
/// example indices) on the `world`'s devices and ranks: returns the summed gradients on the
/// first device, the group's mean loss and its size.
///
/// Each micro-batch's mean loss is weighted by its share of the group's examples, so the
/// summed gradient is that of the mean loss over the whole group, as one batch of all its
/// examples would give, also for a last, smaller group. With N devices in each of R ranks
/// ([`distributed`]), worker `w` (device `w % N` of rank `w / N`) takes micro-batches `w`,
/// `w + N·R`, ... on a replica of its own, in a thread of its own; the gradients are then
/// added on the rank's first device, as burn-train's multi-device strategy does (Burn 0.22's
/// all-reduce, `burn::tensor::distributed`, is implemented for CUDA only), and summed
/// across the ranks by MPI. Every rank gets the whole group's gradients and loss.
pub fn accumulate_gradients(
    model: &SequenceClassifier,
    group: &[Vec<usize>],
    train: &[Encoded],
    batcher: &PaddingBatcher,
    world: World,
) -> (GradientsParams, f32, usize) {
    let group_examples: usize = group.iter().map(Vec::len).sum();
    // Micro-batch i goes to worker i % workers, and worker w is device w % D of rank w / D:
    // this rank's micro-batches, in order, go to its devices in turn.
    let (ranks, devices) = (world.ranks, world.devices);
    let group: Vec<Vec<usize>> = group
        .iter()
        .enumerate()
        .filter(|(i, _)| i % world.workers() / devices.len() == ranks.rank())
        .map(|(_, micro_batch)| micro_batch.clone())
        .collect();
    let group = &group[..];
    let devices = &devices[..devices.len().min(group.len()).max(1)];
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
    // Then across ranks.
    let grads = ranks.sum_gradients(model, total.grads());
    let mut loss = [group_loss];
    ranks.sum(&mut loss);
    (grads, loss[0], group_examples)
}
