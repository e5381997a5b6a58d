//! Training across processes under `mpirun` (`--features mpi`), on the CPU over loopback: the
//! ranks train as one process with all their micro-batches, their gathered evaluation sees
//! every example once, mismatched flags fail, and a killed rank ends the job.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output};
use std::time::{Duration, Instant};

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;

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

/// Every weight of the model saved in `dir`.
fn weights(dir: &Path) -> Vec<f32> {
    struct Collect(Vec<f32>);
    impl ModuleVisitor for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let values = param.val().into_data().convert::<f32>();
            self.0.extend(values.iter::<f32>());
        }
    }
    let loaded = model_args(dir).load(&cpu(), None).unwrap();
    let mut collect = Collect(Vec::new());
    loaded.model.visit(&mut collect);
    collect.0
}

/// Two runs' epochs (losses and metrics) within `tolerance`, and final weights within
/// `weight_tolerance`.
fn assert_same_run(a: &Path, b: &Path, tolerance: f64, weight_tolerance: f64) {
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
        close("metrics", "accuracy");
        close("metrics", "f1");
    }
    let (a, b) = (weights(a), weights(b));
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert!(
            ((x - y).abs() as f64) <= weight_tolerance,
            "weight {i}: {x} vs {y}"
        );
    }
}

/// 2 ranks × batch 4 make the update of one process with batch 8: 24 examples, 3 steps an
/// epoch, 6 steps. Against one process whose two CPU workers take the same micro-batches,
/// the losses, metrics (evaluated in shards and gathered) and weights are equal to 1e-6 (the
/// same sums); against one batch of 8, the losses and metrics to 1e-5, and the weights to
/// 3e-4: AdamW divides by the root of the second moment, so a gradient near zero whose
/// rounding differs (the sum over 8 in another order) can move its weight by up to the
/// learning rate (5e-5) in each of the 6 steps.
#[test]
fn two_ranks_train_as_one_process_with_their_batches_together() {
    let tiny = Tiny::new();
    let epochs = ["--num-epochs", "2"];
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
    assert_same_run(&tiny.out("ranks"), &tiny.out("workers"), 1e-6, 1e-6);
    let one = train(&tiny.args("one", &[&["--batch-size", "8"], &epochs[..]].concat()));
    succeeded(&one);
    assert_same_run(&tiny.out("ranks"), &tiny.out("one"), 1e-5, 3e-4);
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
    assert_same_run(&tiny.out("ranks"), &tiny.out("one"), 1e-6, 1e-6);
}

/// Runs rank 0 and rank 1 of one job with their own arguments (mpirun's MPMD form), which
/// must fail; returns the job's standard error.
fn two_ranks_failing(rank_0: &[String], rank_1: &[String]) -> String {
    let output = mpirun_with(&["-np", "1"])
        .arg(env!("CARGO_BIN_EXE_train"))
        .args(rank_0)
        .args([":", "-np", "1"])
        .arg(env!("CARGO_BIN_EXE_train"))
        .args(rank_1)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "{err}");
    err
}

/// Ranks started with different flags fail, naming the first difference, and end the job.
#[test]
fn ranks_with_different_flags_fail_with_the_difference() {
    let tiny = Tiny::new();
    let rank_0 = tiny.args("run", &["--batch-size", "4"]);
    let rank_1 = tiny.args("run", &["--batch-size", "2"]);
    let err = two_ranks_failing(&rank_0, &rank_1);
    assert!(
        err.contains("--batch-size is 2 on rank 1, 4 on rank 0"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
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
    assert_same_run(&tiny.out("whole"), &tiny.out("killed"), 1e-6, 1e-6);
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
    let mut rank_1 = rank_0.clone();
    let train_file = rank_1.iter().position(|a| a == "--train-file").unwrap() + 1;
    rank_1[train_file] = tiny.out("missing.jsonl").to_str().unwrap().into();
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
