//! Bad models, tokenizers and training runs: each gets one clear error that says what and
//! where, never a panic. (Data-file errors are tested in `burnbert-data`, flags in `programs`.)

use std::path::Path;
use std::process::Command;

use burnbert::{MixedPrecision, ModelArgs, PaddingFree};

use crate::common::*;

/// A copy of the tiny fixture model (config, tokenizer, weights) that a test may break.
pub fn tiny_model_dir(dir: &Path) {
    for file in ["config.json", "tokenizer.json", "model.safetensors"] {
        std::fs::copy(fixture(&format!("tiny-bert/{file}")), dir.join(file)).unwrap();
    }
}

pub fn model_args(dir: &Path) -> ModelArgs {
    ModelArgs {
        model: dir.to_str().unwrap().into(),
        revision: "main".into(),
        offline: true,
        max_length: None,
        device: "cpu".into(),
        devices: None,
        mixed_precision: MixedPrecision::No,
        padding_free: PaddingFree::Auto,
    }
}

fn load_error(dir: &Path) -> String {
    match model_args(dir).load(&cpu(), None) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => format!("{e:#}"),
    }
}

pub fn edit_config(dir: &Path, edit: impl Fn(&mut serde_json::Value)) {
    let path = dir.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(path, config.to_string()).unwrap();
}

#[test]
fn broken_model_directories_are_named_and_explained() {
    let check = |break_it: &dyn Fn(&Path), expected: &[&str]| {
        let dir = tempfile::tempdir().unwrap();
        tiny_model_dir(dir.path());
        break_it(dir.path());
        let err = load_error(dir.path());
        for part in expected {
            assert!(err.contains(part), "expected {part:?} in: {err}");
        }
    };
    check(
        &|d| std::fs::remove_file(d.join("config.json")).unwrap(),
        &["has no config.json"],
    );
    check(
        &|d| std::fs::write(d.join("config.json"), "{ not json").unwrap(),
        &["config.json", "not valid JSON"],
    );
    check(
        &|d| {
            edit_config(d, |c| {
                drop(c.as_object_mut().unwrap().remove("hidden_size"))
            })
        },
        &["config.json", "missing field `hidden_size`"],
    );
    check(
        &|d| edit_config(d, |c| c["hidden_act"] = "mish".into()),
        &["config.json", "unknown variant `mish`"],
    );
    check(
        &|d| std::fs::remove_file(d.join("model.safetensors")).unwrap(),
        &["neither model.safetensors nor pytorch_model.bin"],
    );
    check(
        &|d| {
            let bytes = std::fs::read(d.join("model.safetensors")).unwrap();
            std::fs::write(d.join("model.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
        },
        &["model.safetensors", "not a readable safetensors file"],
    );
    check(
        &|d| {
            std::fs::write(
                d.join("model.safetensors"),
                b"PK\x03\x04 this is a zip, not safetensors",
            )
            .unwrap()
        },
        &["model.safetensors", "not a readable safetensors file"],
    );
    check(
        &|d| edit_config(d, |c| c["intermediate_size"] = 40.into()),
        &[
            "tensor `bert.encoder.layer.0.intermediate.dense.weight`",
            "different models",
        ],
    );
    check(
        &|d| edit_config(d, |c| c["vocab_size"] = 120.into()),
        &["vocab_size 120", "word embeddings have shape [99, 32]"],
    );
    check(
        &|d| std::fs::write(d.join("tokenizer.json"), "{}").unwrap(),
        &["tokenizer.json", "not a readable tokenizer.json"],
    );
    check(
        &|d| edit_config(d, |c| c["vocab_size"] = 50.into()),
        &["the tokenizer has 99 tokens but config.json's vocab_size is 50"],
    );
}

fn train(args: &[&str]) -> std::process::Output {
    program(env!("CARGO_BIN_EXE_train"))
        .args(args)
        .output()
        .unwrap()
}

/// A small local MRPC-like training file in the tiny vocabulary's words.
pub fn tiny_data(dir: &Path) -> (String, String) {
    let rows: Vec<String> = (0..24)
        .map(|i| {
            serde_json::json!({
                "sentence1": format!("the company said it would {}", ["rise", "fall", "be"][i % 3]),
                "sentence2": format!("shares of the company {}", ["rose", "fell", "were"][i % 2]),
                "label": i % 2,
            })
            .to_string()
        })
        .collect();
    let (train_file, validation_file) = (dir.join("train.jsonl"), dir.join("validation.jsonl"));
    std::fs::write(&train_file, rows.join("\n")).unwrap();
    std::fs::write(&validation_file, rows[..6].join("\n")).unwrap();
    (
        train_file.to_str().unwrap().into(),
        validation_file.to_str().unwrap().into(),
    )
}

#[test]
fn a_diverging_loss_stops_with_the_step_or_is_skipped_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let (train_file, validation_file) = tiny_data(dir.path());
    let model = fixture("tiny-bert");
    let args = [
        "--model",
        model.to_str().unwrap(),
        "--train-file",
        &train_file,
        "--validation-file",
        &validation_file,
        "--batch-size",
        "4",
        "--num-epochs",
        "1",
        "--learning-rate",
        "1e30",
        "--quiet",
    ];
    let stopped = train(&args);
    let err = String::from_utf8_lossy(&stopped.stderr);
    assert_eq!(stopped.status.code(), Some(1), "{err}");
    assert!(
        err.contains("the loss is NaN at optimizer step 2")
            || err.contains("the loss is inf at optimizer step 2"),
        "{err}"
    );
    assert!(
        err.contains("lower --learning-rate") && err.contains("--skip-nonfinite"),
        "{err}"
    );

    let out = dir.path().join("skipped");
    let mut skipping = args.to_vec();
    skipping.extend(["--skip-nonfinite", "--output-dir", out.to_str().unwrap()]);
    let finished = train(&skipping);
    assert!(
        finished.status.success(),
        "{}",
        String::from_utf8_lossy(&finished.stderr)
    );
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("all_results.json")).unwrap())
            .unwrap();
    assert_eq!(
        results["skipped_nonfinite_steps"], 5,
        "steps 2..=6 of 6 diverge: {results}"
    );
}

/// `--mixed-precision bf16` where the backend has no bfloat16 (ndarray) says so and how to
/// go on; on flex the same run trains and records the setting.
#[test]
fn mixed_precision_needs_bfloat16_and_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let (train_file, validation_file) = tiny_data(dir.path());
    let model = fixture("tiny-bert");
    let out = dir.path().join("run");
    let run = |device: &str| {
        train(&[
            "--model",
            model.to_str().unwrap(),
            "--train-file",
            &train_file,
            "--validation-file",
            &validation_file,
            "--num-epochs",
            "1",
            "--mixed-precision",
            "bf16",
            "--device",
            device,
            "--output-dir",
            out.to_str().unwrap(),
            "--quiet",
        ])
    };
    if cfg!(feature = "ndarray") {
        let refused = run("ndarray");
        let err = String::from_utf8_lossy(&refused.stderr);
        assert_eq!(refused.status.code(), Some(1), "{err}");
        assert!(
            err.contains("--mixed-precision bf16") && err.contains("no bfloat16"),
            "{err}"
        );
        assert!(!out.join("all_results.json").exists());
    }
    if cfg!(feature = "flex") {
        let trained = run("flex");
        let err = String::from_utf8_lossy(&trained.stderr);
        assert!(trained.status.success(), "{err}");
        let results: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("all_results.json")).unwrap())
                .unwrap();
        assert_eq!(results["mixed_precision"], "bf16");
        assert!(
            results["epochs"][0]["train_loss"]
                .as_f64()
                .unwrap()
                .is_finite()
        );
    }
}

/// Kill -9 a run after its first checkpoint, resume it, and end where an uninterrupted
/// run ends: same weights, same metrics.
#[test]
fn resuming_after_sigkill_reaches_the_uninterrupted_result() {
    let dir = tempfile::tempdir().unwrap();
    let (train_file, validation_file) = tiny_data(dir.path());
    let run = |out: &Path| tiny_run_args(&train_file, &validation_file, out, "3");
    let whole = dir.path().join("whole");
    let uninterrupted = train(&run(&whole).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        uninterrupted.status.success(),
        "{}",
        String::from_utf8_lossy(&uninterrupted.stderr)
    );

    let killed = dir.path().join("killed");
    let mut child = program(env!("CARGO_BIN_EXE_train"))
        .args(run(&killed))
        .spawn()
        .unwrap();
    let checkpoints = killed.join("checkpoints");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while burnbert_train::checkpoint::list(&checkpoints).len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint within 2 minutes"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL: no handler runs, whatever was being written stays half-written
    child.wait().unwrap();
    assert!(
        !killed.join("model.safetensors").exists(),
        "the run was killed before finishing"
    );

    let mut resume = run(&killed);
    resume.extend([
        "--resume-from-checkpoint".into(),
        checkpoints.to_str().unwrap().into(),
    ]);
    let resumed = train(&resume.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );

    let results = |d: &Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(d.join("all_results.json")).unwrap()).unwrap()
    };
    assert_eq!(
        results(&whole)["epochs"],
        results(&killed)["epochs"],
        "same losses and metrics per epoch"
    );
    assert_eq!(
        std::fs::read(whole.join("model.safetensors")).unwrap(),
        std::fs::read(killed.join("model.safetensors")).unwrap(),
        "bit-identical final weights"
    );
}

pub fn tiny_run_args(
    train_file: &str,
    validation_file: &str,
    out: &Path,
    epochs: &str,
) -> Vec<String> {
    let model = fixture("tiny-bert");
    [
        "--model",
        model.to_str().unwrap(),
        "--train-file",
        train_file,
        "--validation-file",
        validation_file,
        "--batch-size",
        "2",
        "--num-epochs",
        epochs,
        "--checkpointing-steps",
        "1",
        "--quiet",
        "--output-dir",
        out.to_str().unwrap(),
    ]
    .map(String::from)
    .to_vec()
}

/// Ctrl-C saves a checkpoint at the current step and exits, saying how to resume.
#[test]
fn ctrl_c_saves_a_checkpoint_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let (train_file, validation_file) = tiny_data(dir.path());
    let out = dir.path().join("run");
    let child = program(env!("CARGO_BIN_EXE_train"))
        .args(tiny_run_args(&train_file, &validation_file, &out, "50"))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let checkpoints = out.join("checkpoints");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while burnbert_train::checkpoint::list(&checkpoints).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint within 2 minutes"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let output = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(err.contains("stopped by Ctrl-C at optimizer step"), "{err}");
    assert!(
        err.contains("resume with --resume-from-checkpoint"),
        "{err}"
    );
    let step: usize = err
        .split("optimizer step ")
        .nth(1)
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let last = burnbert_train::checkpoint::list(&checkpoints)
        .pop()
        .unwrap();
    assert!(
        last.ends_with(format!("step-{step:08}")),
        "{last:?} for step {step}"
    );
}

/// A disk that fills up while a checkpoint is written: the run ends with a clear error
/// and the previous checkpoint is intact (it resumes). Needs root to mount a small tmpfs.
#[test]
fn a_full_disk_keeps_the_previous_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (train_file, validation_file) = tiny_data(dir.path());
    let disk = dir.path().join("disk");
    std::fs::create_dir(&disk).unwrap();
    // One tiny checkpoint (model, AdamW moments, state) takes about 260 KB: room for one.
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=400k", "tmpfs"])
        .arg(&disk)
        .status();
    if !mounted.is_ok_and(|s| s.success()) {
        skip_unless_required("mounting a 400 KB tmpfs failed (it needs root)");
        return;
    }
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    let _unmount = Unmount(&disk);
    let out = disk.join("run");
    let full = train(
        &tiny_run_args(&train_file, &validation_file, &out, "1")
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    let err = String::from_utf8_lossy(&full.stderr);
    assert_eq!(full.status.code(), Some(1), "{err}");
    assert!(
        err.contains("the previous checkpoint is intact") && err.contains("disk full"),
        "{err}"
    );
    let saved = burnbert_train::checkpoint::list(&out.join("checkpoints"));
    assert_eq!(saved.len(), 1, "{saved:?}");
    assert!(
        !out.join("checkpoints").read_dir().unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains("tmp"))
    );

    let elsewhere = dir.path().join("resumed");
    let mut resume = tiny_run_args(&train_file, &validation_file, &elsewhere, "1");
    resume.extend([
        "--resume-from-checkpoint".into(),
        saved[0].to_str().unwrap().into(),
    ]);
    let resumed = train(&resume.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
}
