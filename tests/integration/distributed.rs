//! Training across processes under `mpirun` (`--features mpi`), on the CPU over loopback: the
//! ranks train as one process with all their micro-batches, their gathered evaluation sees
//! every example once, mismatched flags fail, and a killed rank ends the job.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output};
use std::time::{Duration, Instant};

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::Tensor;
use burnbert_data::{PaddingBatcher, Task, read_examples};

use crate::common::*;
use crate::errors::{edit_config, model_args, tiny_data, tiny_model_dir};

/// `mpirun` as CI runs it (as root, more ranks than cores, offline, on the CPU), with
/// `options` of its own, before the programs it starts are added.
fn mpirun_with(options: &[&str]) -> Command {
    let mut command = Command::new("mpirun");
    command
        .args(["--allow-run-as-root", "--oversubscribe"])
        .args(options)
        .env("HF_HUB_OFFLINE", "1")
        .env("BURNBERT_DEVICE", "cpu")
        .env_remove("BURN_DEVICE");
    command
}

/// `mpirun` starting `ranks` copies of `train` with `args`.
fn mpirun(ranks: usize, args: &[String]) -> Command {
    let mut command = mpirun_with(&["-np", &ranks.to_string()]);
    command.arg(env!("CARGO_BIN_EXE_train")).args(args);
    command
}

fn train(args: &[String]) -> Output {
    program(env!("CARGO_BIN_EXE_train"))
        .args(args)
        .output()
        .unwrap()
}

fn succeeded(output: &Output) {
    assert!(
        output.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The tiny model without dropout, so that any split of a batch gives the same update, and
/// its training data; returns the arguments of a run into `out`.
struct Tiny {
    dir: tempfile::TempDir,
    model: PathBuf,
    train_file: String,
    validation_file: String,
}

impl Tiny {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("model");
        std::fs::create_dir(&model).unwrap();
        tiny_model_dir(&model);
        edit_config(&model, |config| {
            config["hidden_dropout_prob"] = 0.0.into();
            config["attention_probs_dropout_prob"] = 0.0.into();
        });
        let (train_file, validation_file) = tiny_data(dir.path());
        Self {
            dir,
            model,
            train_file,
            validation_file,
        }
    }

    /// The tiny random-weight model of `model_type` that transformers saved
    /// (`assets/fixtures/tiny-<model_type>/`), every dropout 0, with tiny-bert's tokenizer.
    fn of_family(model_type: &str) -> Self {
        let tiny = Self::new();
        for file in ["config.json", "model.safetensors"] {
            let from = fixture(&format!("tiny-{model_type}/{file}"));
            std::fs::copy(from, tiny.model.join(file)).unwrap();
        }
        edit_config(&tiny.model, |config| {
            for (key, value) in config.as_object_mut().unwrap() {
                if key.contains("dropout") && value.is_number() {
                    *value = 0.0.into();
                }
            }
        });
        tiny
    }

    fn args(&self, out: &str, extra: &[&str]) -> Vec<String> {
        let out = self.dir.path().join(out);
        let mut args: Vec<String> = [
            "--model",
            self.model.to_str().unwrap(),
            "--train-file",
            &self.train_file,
            "--validation-file",
            &self.validation_file,
            "--eval-batch-size",
            "1",
            "--output-dir",
            out.to_str().unwrap(),
        ]
        .map(String::from)
        .to_vec();
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    fn out(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn results(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("all_results.json")).unwrap()).unwrap()
}

/// Waits until `dir` holds `count` checkpoints, for at most 2 minutes.
fn wait_for_checkpoints(dir: &Path, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while burnbert_train::checkpoint::list(dir).len() < count {
        assert!(Instant::now() < deadline, "no checkpoint within 2 minutes");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends `signal` to process `pid` and waits, at most 60 s, for `job` to end: its exit
/// status and standard error.
fn end_with_signal(job: &mut Child, signal: &str, pid: &str) -> (ExitStatus, String) {
    Command::new("kill").args([signal, pid]).status().unwrap();
    let sent = Instant::now();
    let status = loop {
        if let Some(status) = job.try_wait().unwrap() {
            break status;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(60),
            "the job outlived {signal} by 60 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(job.stderr.as_mut().unwrap(), &mut err).unwrap();
    (status, err)
}

/// Every weight of the model saved in `dir`, by module path.
fn weights(dir: &Path) -> Vec<(String, Vec<f32>)> {
    let loaded = model_args(dir).load(&cpu(), None).unwrap();
    by_path(&loaded.model, None)
}

/// Which final weights [`assert_same_run`] compares.
#[derive(Clone, Copy, PartialEq)]
enum Weights {
    All,
    /// All but the attention's key biases: their gradient is zero in exact arithmetic, so
    /// what AdamW makes of it is rounding, normalised, up to the learning rate per step
    /// whenever the gradients are summed in another order.
    ButKeyBiases,
}

/// Two runs' epochs (losses and metrics) within `tolerance`, and final weights within
/// `weight_tolerance`.
fn assert_same_run(
    a: &Path,
    b: &Path,
    tolerance: f64,
    (compared, weight_tolerance): (Weights, f64),
) {
    let (a_results, b_results) = (results(a), results(b));
    let (a_epochs, b_epochs) = (
        a_results["epochs"].as_array().unwrap(),
        b_results["epochs"].as_array().unwrap(),
    );
    assert_eq!(a_epochs.len(), b_epochs.len());
    for (x, y) in a_epochs.iter().zip(b_epochs) {
        let close = |p: &str, q: &str| {
            let (u, v) = (x[p][q].as_f64(), y[p][q].as_f64());
            let (u, v) = match q {
                "" => (x[p].as_f64().unwrap(), y[p].as_f64().unwrap()),
                _ => (u.unwrap(), v.unwrap()),
            };
            assert!((u - v).abs() <= tolerance, "{p} {q}: {u} vs {v}");
        };
        close("train_loss", "");
        close("eval", "accuracy");
        close("eval", "f1");
    }
    let (a, b) = (weights(a), weights(b));
    assert_eq!(a.len(), b.len());
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        if compared == Weights::ButKeyBiases && name.ends_with(".key.bias") {
            continue;
        }
        assert_eq!(x.len(), y.len(), "{name}");
        for (i, (x, y)) in x.iter().zip(y).enumerate() {
            assert!(
                ((x - y).abs() as f64) <= weight_tolerance,
                "{name}[{i}]: {x} vs {y}"
            );
        }
    }
}

/// Each parameter's module path and values, in `model`'s order: its gradient in `grads`
/// (empty where it has none), or without `grads` its weights.
fn by_path(model: &impl Module, grads: Option<&GradientsParams>) -> Vec<(String, Vec<f32>)> {
    struct Collect<'a> {
        grads: Option<&'a GradientsParams>,
        path: ModulePath,
        out: Vec<(String, Vec<f32>)>,
    }
    impl ModuleVisitor for Collect<'_> {
        fn enter_module(&mut self, name: &str, container_type: &str) {
            self.path.enter(name, container_type);
        }
        fn exit_module(&mut self, _name: &str, container_type: &str) {
            self.path.exit(container_type);
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let tensor = match self.grads {
                Some(grads) => grads.get::<D>(param.id),
                None => Some(param.val()),
            };
            let values = tensor.map_or_else(Vec::new, |tensor| {
                tensor.into_data().convert::<f32>().iter::<f32>().collect()
            });
            self.out.push((self.path.joined(), values));
        }
    }
    let mut collect = Collect {
        grads,
        path: ModulePath::default(),
        out: Vec::new(),
    };
    model.visit(&mut collect);
    collect.out
}

/// The summed gradients of one optimizer step of `tiny`'s model over the training examples of
/// `group` (micro-batches of example indices), as `train`'s loop takes them: on this rank's
/// share of the micro-batches, summed over the ranks of this process's world.
fn step_gradients(tiny: &Path, train_file: &str, group: &[Vec<usize>]) -> Vec<(String, Vec<f32>)> {
    let device = cpu();
    let loaded = model_args(tiny).load(&device, None).unwrap();
    let task = Task::by_name("mrpc").unwrap();
    let rows = read_examples(Path::new(train_file), &task.columns(), &task.label_space()).unwrap();
    let (train, _) = loaded.tokenizer.encode_all(&rows).unwrap();
    let batcher = PaddingBatcher {
        pad_id: loaded.tokenizer.pad_id(),
        pad_to_multiple_of: 1,
    };
    let training = device.autodiff();
    let model = loaded.model.to_device(&training).train();
    let (grads, _, _) = burnbert_train::accumulate_gradients(
        &model,
        group,
        &train,
        &batcher,
        burnbert_train::World::new(&[training]),
    );
    by_path(&model, Some(&grads))
}

/// Where `rank_of_two_summing_gradients` writes rank 0's gradients, and where it finds the
/// model and the data.
const GRADIENTS_OUT: &str = "BURNBERT_TEST_GRADIENTS_OUT";
const TINY_DIR: &str = "BURNBERT_TEST_TINY_DIR";

/// One of the two ranks of `two_ranks_sum_the_gradients_of_one_batch_of_eight`, which starts
/// this test binary under mpirun to run it: the first step's gradients over 2 micro-batches
/// of 4, one a rank, summed by MPI. Run alone it fails, as it is not among two ranks.
#[test]
#[ignore = "a rank of two_ranks_sum_the_gradients_of_one_batch_of_eight, which runs it"]
fn rank_of_two_summing_gradients() {
    let out = std::env::var(GRADIENTS_OUT).expect("started by its test, under mpirun");
    let tiny = PathBuf::from(std::env::var(TINY_DIR).unwrap());
    let ranks = burnbert_train::distributed::init().unwrap();
    assert_eq!(ranks.world(), 2, "one of 2 ranks");
    let train_file = tiny.join("train.jsonl");
    let group = [(0..4).collect(), (4..8).collect()];
    let grads = step_gradients(&tiny.join("model"), train_file.to_str().unwrap(), &group);
    if ranks.is_main() {
        std::fs::write(out, serde_json::to_vec(&grads).unwrap()).unwrap();
    }
    ranks.finish();
}

/// The gradients that 2 ranks sum over their micro-batches of 4 are those of one batch of
/// the same 8 examples, each parameter's to 1e-6 of its largest: MPI adds every rank's share,
/// each weighted by its part of the step's examples, once. The attention's key biases, whose
/// gradient is zero in exact arithmetic (a softmax does not change when a constant is added
/// to a row's scores), are rounding alone: to 1e-6 of the largest gradient of all.
#[test]
fn two_ranks_sum_the_gradients_of_one_batch_of_eight() {
    let tiny = Tiny::new();
    let out = tiny.out("rank-0-gradients.json");
    let this_binary = std::env::current_exe().unwrap();
    let ranks = mpirun_with(&["-np", "2"])
        .arg(this_binary)
        .args(["--exact", "distributed::rank_of_two_summing_gradients"])
        .args(["--ignored", "--test-threads", "1"])
        .env(GRADIENTS_OUT, &out)
        .env(TINY_DIR, tiny.dir.path())
        .output()
        .unwrap();
    succeeded(&ranks);
    let summed: Vec<(String, Vec<f32>)> =
        serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let one_batch = step_gradients(&tiny.model, &tiny.train_file, &[(0..8).collect()]);
    assert_eq!(summed.len(), one_batch.len());
    let largest = |values: &[f32]| values.iter().fold(0f32, |m, g| m.max(g.abs()));
    let largest_of_all = one_batch.iter().fold(0f32, |m, (_, g)| m.max(largest(g)));
    assert!(largest_of_all > 0.0);
    for ((name, summed), (_, one)) in summed.iter().zip(&one_batch) {
        assert_eq!(summed.len(), one.len(), "{name}");
        let scale = match name.ends_with(".key.bias") {
            true => largest_of_all,
            false => largest(one),
        };
        for (j, (a, b)) in summed.iter().zip(one).enumerate() {
            assert!(
                (a - b).abs() <= 1e-6 * scale,
                "{name}[{j}]: {a} summed by the ranks, {b} in one batch (scale {scale})"
            );
        }
    }
}

/// 2 ranks × batch 4 make the update of one process with batch 8: 24 examples, 3 steps an
/// epoch, 6 steps. Against one process whose two CPU workers take the same micro-batches,
/// the losses, metrics (evaluated in shards and gathered) and weights are equal to 1e-6 (the
/// same sums); against one batch of 8, the losses and metrics to 1e-5, and the weights but
/// the key biases ([`Weights::ButKeyBiases`]) to 1e-5, which they move 3.5e-3 from the
/// start at this learning rate. The gradient norms of these steps lie on both sides of the
/// clipping norm, so a gradient summed with the wrong scale is clipped at other steps and
/// changes the weights (by 1.3e-3 when doubled), which AdamW alone would hide.
#[test]
fn two_ranks_train_as_one_process_with_their_batches_together() {
    let tiny = Tiny::new();
    let epochs = [
        "--num-epochs",
        "2",
        "--learning-rate",
        "1e-3",
        "--max-grad-norm",
        "30",
    ];
    let ranks = mpirun(
        2,
        &tiny.args("ranks", &[&["--batch-size", "4"], &epochs[..]].concat()),
    )
    .output()
    .unwrap();
    succeeded(&ranks);
    let stdout = String::from_utf8_lossy(&ranks.stdout);
    assert!(stdout.contains("world: 2 ranks on 1 node"), "{stdout}");
    assert!(
        stdout.contains("8 = batch 4 × 1 device × 2 ranks"),
        "{stdout}"
    );
    // Rank 0 alone prints progress.
    assert_eq!(stdout.matches("trained 6 steps").count(), 1, "{stdout}");
    let workers = ["--batch-size", "4", "--devices", "0,1"];
    let workers = train(&tiny.args("workers", &[&workers[..], &epochs[..]].concat()));
    succeeded(&workers);
    assert_same_run(
        &tiny.out("ranks"),
        &tiny.out("workers"),
        1e-6,
        (Weights::All, 1e-6),
    );
    let one = train(&tiny.args("one", &[&["--batch-size", "8"], &epochs[..]].concat()));
    succeeded(&one);
    assert_same_run(
        &tiny.out("ranks"),
        &tiny.out("one"),
        1e-5,
        (Weights::ButKeyBiases, 1e-5),
    );
}

/// The new families train under mpirun as BERT does: two ranks make the run of one process
/// with two devices.
#[test]
fn every_family_trains_on_two_ranks_as_on_two_devices() {
    for model_type in ["electra", "distilbert", "modernbert", "deberta-v2"] {
        let tiny = Tiny::of_family(model_type);
        let epochs = [
            "--num-epochs",
            "1",
            "--learning-rate",
            "1e-3",
            "--batch-size",
            "4",
        ];
        let ranks = mpirun(2, &tiny.args("ranks", &epochs)).output().unwrap();
        succeeded(&ranks);
        let workers = train(&tiny.args("workers", &[&epochs[..], &["--devices", "0,1"]].concat()));
        succeeded(&workers);
        let config = std::fs::read_to_string(tiny.out("ranks").join("config.json")).unwrap();
        let config: serde_json::Value = serde_json::from_str(&config).unwrap();
        assert_eq!(config["model_type"], model_type);
        assert_same_run(
            &tiny.out("ranks"),
            &tiny.out("workers"),
            1e-6,
            (Weights::All, 1e-6),
        );
    }
}

/// Evaluation over 3 ranks gathers every example once, in file order: the metrics of one
/// process with the same three workers (CPU workers sharing one device).
#[test]
fn three_ranks_gather_the_evaluation_of_one_process() {
    let tiny = Tiny::new();
    let extra = ["--batch-size", "2", "--num-epochs", "1"];
    let ranks = mpirun(3, &tiny.args("ranks", &extra)).output().unwrap();
    succeeded(&ranks);
    let one = train(&tiny.args("one", &[&extra[..], &["--devices", "0,1,2"]].concat()));
    succeeded(&one);
    assert_same_run(
        &tiny.out("ranks"),
        &tiny.out("one"),
        1e-6,
        (Weights::All, 1e-6),
    );
}

/// Runs rank 0 and rank 1 of one job with their own arguments (mpirun's MPMD form), which
/// must fail; returns the job's standard error.
fn two_ranks_failing(rank_0: &[String], rank_1: &[String]) -> String {
    let (succeeded, err) = two_ranks(rank_0, rank_1);
    assert!(!succeeded, "{err}");
    err
}

/// Runs rank 0 and rank 1 of one job with their own arguments: whether it succeeded, and its
/// standard error.
fn two_ranks(rank_0: &[String], rank_1: &[String]) -> (bool, String) {
    let output = mpirun_with(&["-np", "1"])
        .arg(env!("CARGO_BIN_EXE_train"))
        .args(rank_0)
        .args([":", "-np", "1"])
        .arg(env!("CARGO_BIN_EXE_train"))
        .args(rank_1)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&output.stderr).into_owned();
    (output.status.success(), err)
}

/// `args` with `flag`'s value replaced by `value`.
fn replaced(args: &[String], flag: &str, value: &str) -> Vec<String> {
    let mut args = args.to_vec();
    let at = args.iter().position(|a| a == flag).unwrap() + 1;
    args[at] = value.into();
    args
}

/// A copy of the JSON-lines file `from` with every label flipped: as many examples, other data.
fn labels_flipped(from: &str, to: &Path) -> String {
    let rows: Vec<String> = std::fs::read_to_string(from)
        .unwrap()
        .lines()
        .map(|line| {
            let mut row: serde_json::Value = serde_json::from_str(line).unwrap();
            row["label"] = (1 - row["label"].as_i64().unwrap()).into();
            row.to_string()
        })
        .collect();
    std::fs::write(to, rows.join("\n")).unwrap();
    to.to_str().unwrap().into()
}

/// Ranks started with different flags, weights or data fail, naming the difference, and end
/// the job: the flags that shape a step, clipping and mixed precision, the model's weights (a
/// copy of the tiny model with one bit of one weight flipped) and either data set (as many
/// examples, labels flipped).
#[test]
fn ranks_with_different_settings_fail_with_the_difference() {
    let tiny = Tiny::new();
    let rank_0 = tiny.args("run", &["--batch-size", "4"]);
    let with = |extra: &[&str]| tiny.args("run", &[&["--batch-size", "4"], extra].concat());
    let other_model = tiny.out("other-model");
    std::fs::create_dir(&other_model).unwrap();
    for file in ["config.json", "tokenizer.json", "model.safetensors"] {
        std::fs::copy(tiny.model.join(file), other_model.join(file)).unwrap();
    }
    let weights = other_model.join("model.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    // The lowest bit of the last f32 weight (safetensors stores little-endian data last).
    let at = bytes.len() - 4;
    bytes[at] ^= 1;
    std::fs::write(&weights, bytes).unwrap();
    let train_file = labels_flipped(&tiny.train_file, &tiny.out("train-flipped.jsonl"));
    let validation_file =
        labels_flipped(&tiny.validation_file, &tiny.out("validation-flipped.jsonl"));
    let cases = [
        (
            with(&["--batch-size", "2"]),
            "--batch-size is 2 on rank 1, 4 on rank 0",
        ),
        (
            with(&["--max-grad-norm", "1"]),
            "--max-grad-norm is 1 on rank 1, none on rank 0",
        ),
        (
            with(&["--mixed-precision", "bf16"]),
            "--mixed-precision is bf16 on rank 1, no on rank 0",
        ),
        (
            replaced(&rank_0, "--model", other_model.to_str().unwrap()),
            "model weights is hash ",
        ),
        (
            replaced(&rank_0, "--train-file", &train_file),
            "training data is 24 examples, hash ",
        ),
        (
            replaced(&rank_0, "--validation-file", &validation_file),
            "validation data is 6 examples, hash ",
        ),
    ];
    let missed: Vec<String> = cases
        .into_iter()
        .map(|(rank_1, expected)| (expected, two_ranks(&rank_0, &rank_1)))
        .filter(|(expected, (succeeded, err))| {
            *succeeded || !err.contains(expected) || err.contains("panicked")
        })
        .map(|(expected, (succeeded, err))| {
            format!("expected `{expected}`, got (job succeeded: {succeeded}): {err}")
        })
        .collect();
    assert!(missed.is_empty(), "{}", missed.join("\n\n"));
}

/// A rank killed with SIGKILL mid-run ends the whole job within 60 s, naming the rank; the
/// last checkpoint resumes on one process with one worker, which accumulates the two
/// micro-batches the two ranks took at each step, to the uninterrupted result.
#[test]
fn a_killed_rank_ends_the_job_and_its_checkpoint_resumes_on_one_worker() {
    let tiny = Tiny::new();
    let extra = [
        "--batch-size",
        "2",
        "--num-epochs",
        "3",
        "--checkpointing-steps",
        "1",
    ];
    let whole = train(&tiny.args("whole", &[&extra[..], &["--devices", "0,1"]].concat()));
    succeeded(&whole);

    let mut job = mpirun(2, &tiny.args("killed", &extra))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let checkpoints = tiny.out("killed").join("checkpoints");
    wait_for_checkpoints(&checkpoints, 2);
    // mpirun's children are the ranks; kill the last one started.
    let children = Command::new("pgrep")
        .args(["-P", &job.id().to_string(), "-f", "train"])
        .output()
        .unwrap();
    let pids = String::from_utf8_lossy(&children.stdout).to_string();
    let victim = pids
        .lines()
        .last()
        .expect("mpirun's ranks are its children")
        .trim()
        .to_string();
    let killed_at = Instant::now();
    let (status, err) = end_with_signal(&mut job, "-9", &victim);
    assert!(!status.success(), "{err}");
    assert!(err.contains("rank") && err.contains("signal 9"), "{err}");
    assert!(!tiny.out("killed").join("model.safetensors").exists());
    // The other rank, too, is gone before the checkpoint is resumed.
    for pid in pids.lines() {
        while Path::new(&format!("/proc/{}", pid.trim())).exists() {
            assert!(
                killed_at.elapsed() < Duration::from_secs(60),
                "rank {pid} outlived the job"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    let one_worker = ["--gradient-accumulation-steps", "2"];
    let mut resume = tiny.args("killed", &[&extra[..], &one_worker[..]].concat());
    resume.extend([
        "--resume-from-checkpoint".into(),
        checkpoints.to_str().unwrap().into(),
    ]);
    succeeded(&train(&resume));
    assert_same_run(
        &tiny.out("whole"),
        &tiny.out("killed"),
        1e-6,
        (Weights::All, 1e-6),
    );
}

/// Ctrl-C (SIGINT to mpirun, which sends the ranks SIGTERM) stops every rank at the same
/// step and saves one checkpoint there from rank 0, given the time to finish the step
/// (`--mca odls_base_sigkill_timeout`, README "Several machines").
#[test]
fn ctrl_c_to_mpirun_saves_one_checkpoint_and_stops_every_rank() {
    let tiny = Tiny::new();
    // Quiet: once interrupted, mpirun stops forwarding the ranks' output, and the tiny run's
    // line per (millisecond-long) epoch would fill the pipe and block rank 0.
    let extra = [
        "--batch-size",
        "2",
        "--num-epochs",
        "100000",
        "--checkpointing-steps",
        "100",
        "--quiet",
    ];
    let mut job = mpirun_with(&["--mca", "odls_base_sigkill_timeout", "10", "-np", "2"])
        .arg(env!("CARGO_BIN_EXE_train"))
        .args(tiny.args("run", &extra))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let checkpoints = tiny.out("run").join("checkpoints");
    wait_for_checkpoints(&checkpoints, 1);
    let mpirun_pid = job.id().to_string();
    let (status, err) = end_with_signal(&mut job, "-INT", &mpirun_pid);
    assert!(!status.success(), "{err}");
    let stopped = err
        .lines()
        .filter(|line| line.starts_with("error: stopped by Ctrl-C at optimizer step"))
        .collect::<Vec<_>>();
    assert_eq!(
        stopped.len(),
        1,
        "rank 0 alone says where it stopped: {err}"
    );
    let last = burnbert_train::checkpoint::list(&checkpoints)
        .pop()
        .unwrap();
    assert!(stopped[0].ends_with(last.to_str().unwrap()), "{err}");
}

/// A rank that cannot read its data fails the whole job with its own error, promptly, instead
/// of leaving rank 0 waiting in the first collective.
#[test]
fn a_rank_that_cannot_load_its_data_ends_the_job_with_its_error() {
    let tiny = Tiny::new();
    let rank_0 = tiny.args("run", &["--batch-size", "2"]);
    let rank_1 = replaced(
        &rank_0,
        "--train-file",
        tiny.out("missing.jsonl").to_str().unwrap(),
    );
    let started = Instant::now();
    let err = two_ranks_failing(&rank_0, &rank_1);
    assert!(started.elapsed() < Duration::from_secs(60), "{err}");
    assert!(
        err.contains("error: rank 1: ") && err.contains("missing.jsonl"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

/// `eval` and `predict` run in one process: under mpirun they say so instead of running N
/// times over.
#[test]
fn eval_and_predict_under_mpirun_say_they_run_in_one_process() {
    for (program, path) in [
        ("eval", env!("CARGO_BIN_EXE_eval")),
        ("predict", env!("CARGO_BIN_EXE_predict")),
    ] {
        let output = mpirun_with(&["-np", "2"]).arg(path).output().unwrap();
        let err = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{program}: {err}");
        assert!(
            err.contains(&format!("`{program}` runs in one process")),
            "{program}: {err}"
        );
    }
}
