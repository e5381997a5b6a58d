//! Training checkpoints: model, optimizer state and loop position, written atomically.
//!
//! A checkpoint is a directory `step-NNNNNNNN/` with `model.bpk` and `optimizer.bpk`
//! (Burn's burnpack files; they keep parameter ids, which the optimizer state is keyed
//! by) and `state.json`. It is written under a temporary name, flushed to disk and then
//! renamed, so a crash or a full disk leaves the previous checkpoint as it was.

use std::fs::File;
use std::path::{Path, PathBuf};

use std::collections::BTreeMap;

use burn::module::Module;
use burn::optim::ModuleOptimizer;
use burnbert_data::{Encoded, Label};
use burnbert_model::SequenceClassifier;

use crate::{LoopState, TrainError, TrainOptions};

const MODEL: &str = "model.bpk";
const OPTIMIZER: &str = "optimizer.bpk";
/// The run identity's name for the micro-batches of an optimizer step, with how to change it.
const MICRO_BATCHES: &str = "micro-batches per optimizer step (ranks × --devices × \
                             --gradient-accumulation-steps)";
const STATE: &str = "state.json";
/// Older checkpoints beyond this many are removed.
const KEEP: usize = 2;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |e| TrainError::Checkpoint(format!("{}: {e}", path.display()))
}

/// Saves a checkpoint under `dir` and returns its path.
pub fn save(
    dir: &Path,
    model: &SequenceClassifier,
    optimizer: &ModuleOptimizer,
    state: &LoopState,
) -> Result<PathBuf, TrainError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let name = format!("step-{:08}", state.step);
    let tmp = dir.join(format!(".{name}.tmp"));
    let done = dir.join(&name);
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    let failed = |what: &str, e: &dyn std::fmt::Display| {
        let _ = std::fs::remove_dir_all(&tmp);
        TrainError::Checkpoint(format!(
            "cannot write the {what} of checkpoint {} ({e}); the previous checkpoint is intact. \
             Is the disk full?",
            done.display()
        ))
    };
    model
        .clone()
        .save_file(tmp.join(MODEL))
        .map_err(|e| failed("model", &e))?;
    optimizer
        .save(tmp.join(OPTIMIZER))
        .map_err(|e| failed("optimizer state", &e))?;
    let json = serde_json::to_vec_pretty(state).expect("the loop state serializes");
    std::fs::write(tmp.join(STATE), json).map_err(|e| failed("loop state", &e))?;
    for file in [MODEL, OPTIMIZER, STATE] {
        File::open(tmp.join(file))
            .and_then(|f| f.sync_all())
            .map_err(|e| failed(file, &e))?;
    }
    if done.exists() {
        std::fs::remove_dir_all(&done).map_err(io(&done))?;
    }
    std::fs::rename(&tmp, &done).map_err(|e| failed("directory", &e))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))?;
    prune(dir)?;
    Ok(done)
}

/// Complete checkpoints under `dir`, oldest first.
pub fn list(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("step-"))
                && p.join(STATE).is_file()
        })
        .collect();
    found.sort();
    found
}

fn prune(dir: &Path) -> Result<(), TrainError> {
    let all = list(dir);
    for old in &all[..all.len().saturating_sub(KEEP)] {
        std::fs::remove_dir_all(old).map_err(io(old))?;
    }
    Ok(())
}

/// Resolves `--resume-from-checkpoint`: a checkpoint directory, or a directory of them
/// (the latest complete one is taken).
pub fn resolve(path: &Path) -> Result<PathBuf, TrainError> {
    if path.join(STATE).is_file() {
        return Ok(path.to_path_buf());
    }
    list(path).pop().ok_or_else(|| {
        TrainError::Checkpoint(format!(
            "{}: no checkpoint here (expected step-N directories with {STATE}, as \
             --checkpointing-steps writes under OUTPUT_DIR/checkpoints)",
            path.display()
        ))
    })
}

/// Loads a checkpoint of the run `run` ([`run_identity`]) into `model` and `optimizer`,
/// returning the loop state; a checkpoint of another run is refused before its weights are
/// read.
///
/// Burn builds the optimizer state on its default device first (then moves it to the
/// training device at the next step): in a build with CUDA or wgpu compiled in, make the
/// training device the default (`burnbert_model::select_device`, or `BURN_DEVICE`).
pub fn load(
    path: &Path,
    model: SequenceClassifier,
    optimizer: ModuleOptimizer,
    run: &BTreeMap<String, String>,
) -> Result<(SequenceClassifier, ModuleOptimizer, LoopState), TrainError> {
    let bad = |what: &str, e: &dyn std::fmt::Display| {
        TrainError::Checkpoint(format!(
            "{}: cannot read the {what} ({e}); the checkpoint is damaged or from another model",
            path.display()
        ))
    };
    let state: LoopState =
        serde_json::from_slice(&std::fs::read(path.join(STATE)).map_err(io(path))?)
            .map_err(|e| bad("loop state", &e))?;
    check_same_run(path, state.run.as_ref(), run)?;
    let model = model
        .try_load_file(path.join(MODEL))
        .map_err(|e| bad("model", &e))?;
    let optimizer = optimizer
        .load(path.join(OPTIMIZER))
        .map_err(|e| bad("optimizer state", &e))?;
    Ok((model, optimizer, state))
}

/// What fixes a run's data stream, schedule and model, as flag and value: a checkpoint
/// keeps it (`LoopState::run`), and resumes only into a run with the same.
pub fn run_identity(
    options: &TrainOptions,
    train: &[Encoded],
    model: &SequenceClassifier,
) -> BTreeMap<String, String> {
    let total_steps = options.total_steps(train.len());
    let schedule = options.schedule(train.len());
    [
        ("--seed", options.seed.to_string()),
        ("--batch-size", options.batch_size.to_string()),
        // What makes a step: a checkpoint resumes on any number of ranks and devices whose
        // workers × accumulation steps make as many micro-batches per step.
        (MICRO_BATCHES, options.micro_batches_per_step().to_string()),
        ("--num-epochs", options.epochs.to_string()),
        ("--drop-last", options.drop_last.to_string()),
        ("--group-by-length", options.group_by_length.to_string()),
        ("--learning-rate", options.learning_rate.to_string()),
        ("--weight-decay", options.weight_decay.to_string()),
        (
            "--lr-scheduler-type",
            format!("{:?}", options.schedule).to_lowercase(),
        ),
        ("warmup steps", schedule.warmup_steps.to_string()),
        ("optimizer steps", total_steps.to_string()),
        ("training data", describe_data(train)),
        ("model parameters", model.num_params().to_string()),
    ]
    .into_iter()
    .map(|(flag, value)| (flag.to_string(), value))
    .collect()
}

/// Checks that a checkpoint's run is this one; the error lists every difference. A checkpoint
/// written before runs were recorded (no `run` in its state) is taken as it is; one that
/// records an empty run was not written by `save` and is refused, as nothing could be checked.
fn check_same_run(
    path: &Path,
    saved: Option<&BTreeMap<String, String>>,
    current: &BTreeMap<String, String>,
) -> Result<(), TrainError> {
    let Some(saved) = saved else {
        return Ok(());
    };
    if saved.is_empty() {
        return Err(TrainError::Checkpoint(format!(
            "{}: its {STATE} records no run settings (`\"run\": {{}}`), so it cannot be \
             checked against this run; it was edited or damaged. Resume from another checkpoint, \
             or start a new run without --resume-from-checkpoint",
            path.display()
        )));
    }
    // Earlier checkpoints kept the workers and the accumulation steps apart.
    let mut saved = saved.clone();
    if let (Some(workers), Some(steps)) = (
        saved.remove("--devices (count)"),
        saved.remove("--gradient-accumulation-steps"),
    ) {
        let micro_batches = workers
            .parse::<usize>()
            .ok()
            .zip(steps.parse::<usize>().ok());
        let micro_batches = micro_batches.map_or(workers, |(w, s)| (w * s).to_string());
        saved.insert(MICRO_BATCHES.into(), micro_batches);
    }
    let missing = String::from("(not recorded)");
    let differences: Vec<String> = saved
        .keys()
        .chain(current.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .filter_map(|key| {
            let (was, now) = (
                saved.get(key).unwrap_or(&missing),
                current.get(key).unwrap_or(&missing),
            );
            (was != now).then(|| format!("{key}: {was} in the checkpoint, {now} now"))
        })
        .collect();
    if differences.is_empty() {
        return Ok(());
    }
    Err(TrainError::Checkpoint(format!(
        "{} belongs to another run: {}. Resume with the settings it was saved with, or start a \
         new run without --resume-from-checkpoint",
        path.display(),
        differences.join("; ")
    )))
}

/// A data set as the run identity and the ranks' check name it: its size and [`data_hash`].
pub(crate) fn describe_data(examples: &[Encoded]) -> String {
    format!(
        "{} examples, hash {:016x}",
        examples.len(),
        data_hash(examples)
    )
}

/// FNV-1a over the examples' tokens and labels: a hash that stays the same across builds and
/// Rust versions (std's `DefaultHasher` does not promise that), to tell training sets apart.
fn data_hash(train: &[Encoded]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325_u64;
    let mut add = |value: u64| {
        for byte in value.to_le_bytes() {
            hash = (hash ^ byte as u64).wrapping_mul(0x0100_0000_01b3);
        }
    };
    for example in train {
        add(example.input_ids.len() as u64);
        example.input_ids.iter().for_each(|&id| add(id as u64));
        example.token_type_ids.iter().for_each(|&id| add(id as u64));
        match example.label {
            Some(Label::Class(class)) => add(class as u64),
            Some(Label::Score(score)) => add(score.to_bits() as u64 | 1 << 32),
            None => add(u64::MAX),
        }
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A checkpoint from before the micro-batches per step were recorded (with the workers
    /// and the accumulation steps apart) resumes where their product is the same, and only
    /// there.
    #[test]
    fn earlier_checkpoints_compare_by_micro_batches_per_step() {
        let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let saved = map(&[
            ("--devices (count)", "2"),
            ("--gradient-accumulation-steps", "3"),
            ("--seed", "42"),
        ]);
        let path = Path::new("checkpoint-6");
        let now = |micro_batches| map(&[(MICRO_BATCHES, micro_batches), ("--seed", "42")]);
        assert!(check_same_run(path, Some(&saved), &now("6")).is_ok());
        let err = check_same_run(path, Some(&saved), &now("3"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("{MICRO_BATCHES}: 6 in the checkpoint, 3 now")),
            "{err}"
        );
    }

    /// A state that records an empty run is refused, where one without a run (written before
    /// runs were recorded) is taken as it is: an empty run would pass any comparison.
    #[test]
    fn an_empty_recorded_run_is_refused_and_a_missing_one_taken() {
        let state = |json: &str| -> LoopState { serde_json::from_str(json).unwrap() };
        let unrecorded = state(
            r#"{"step": 3, "epoch": 0, "step_in_epoch": 3, "epoch_loss": 1.0,
            "epoch_loss_steps": 3, "skipped_nonfinite": 0, "epochs": []}"#,
        );
        let empty = state(
            r#"{"step": 3, "epoch": 0, "step_in_epoch": 3, "epoch_loss": 1.0,
            "epoch_loss_steps": 3, "skipped_nonfinite": 0, "epochs": [], "run": {}}"#,
        );
        let now: BTreeMap<String, String> = [("--seed".to_string(), "42".to_string())].into();
        let path = Path::new("step-00000003");
        assert!(check_same_run(path, unrecorded.run.as_ref(), &now).is_ok());
        let err = check_same_run(path, empty.run.as_ref(), &now)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("step-00000003: its state.json records no run settings"),
            "{err}"
        );
    }

    /// A resumed run reports the epochs before its checkpoint as the uninterrupted run did,
    /// to the bit. serde_json parses floats only to within one ulp unless its
    /// `float_roundtrip` feature is on: this epoch loss came back as ...443 without it.
    #[test]
    fn loop_state_floats_round_trip_exactly() {
        let loss = 1.6228551626205445_f64;
        let json = serde_json::to_vec_pretty(&loss).unwrap();
        let back: f64 = serde_json::from_slice(&json).unwrap();
        assert_eq!(back.to_bits(), loss.to_bits());
    }
}
