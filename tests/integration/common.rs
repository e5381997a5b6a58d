//! Helpers shared by the integration tests: fixture paths, JSON arrays, model inputs.

use std::path::PathBuf;

use burn::tensor::{Device, Int, Tensor, TensorData};
use burnbert_model::{BertForSequenceClassification, BertInput, SequenceClassifier};
use serde_json::Value;

/// `assets/fixtures/...`, written by `assets/fixtures/make_fixtures.py`.
pub fn fixture(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("assets/fixtures")
        .join(path)
}

pub fn json(path: &str) -> Value {
    let text = std::fs::read_to_string(fixture(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap()
}

/// A nested JSON array of numbers, flattened row-major.
pub fn floats(value: &Value) -> Vec<f32> {
    match value {
        Value::Array(items) => items.iter().flat_map(floats).collect(),
        Value::Number(n) => vec![n.as_f64().unwrap() as f32],
        other => panic!("not a number array: {other}"),
    }
}

pub fn ints(value: &Value) -> Vec<i64> {
    floats(value).into_iter().map(|f| f as i64).collect()
}

/// `[rows, cols]` of a 2-D JSON array.
pub fn dims2(value: &Value) -> [usize; 2] {
    let rows = value.as_array().unwrap();
    [rows.len(), rows[0].as_array().unwrap().len()]
}

pub fn int_tensor(value: &Value, device: &Device) -> Tensor<2, Int> {
    Tensor::from_data(TensorData::new(ints(value), dims2(value)), device)
}

/// A module path while a `ModuleVisitor` walks a model, in the checkpoint's naming: the
/// model's enum variant (`Bert`) is no part of it.
#[derive(Default)]
pub struct ModulePath(Vec<String>);

impl ModulePath {
    pub fn enter(&mut self, name: &str, container_type: &str) {
        if !container_type.starts_with("Enum:") {
            self.0.push(name.to_string());
        }
    }

    pub fn exit(&mut self, container_type: &str) {
        if !container_type.starts_with("Enum:") {
            self.0.pop();
        }
    }

    pub fn joined(&self) -> String {
        self.0.join(".")
    }
}

/// The BERT inside a model known to be one.
pub fn bert(model: &SequenceClassifier) -> &BertForSequenceClassification {
    match model {
        SequenceClassifier::Bert(bert) => bert,
        other => panic!("not a BERT: {other:?}"),
    }
}

/// The model inputs stored in a reference file.
pub fn input(reference: &Value, device: &Device) -> BertInput {
    BertInput {
        input_ids: int_tensor(&reference["input_ids"], device),
        token_type_ids: int_tensor(&reference["token_type_ids"], device),
        attention_mask: int_tensor(&reference["attention_mask"], device),
    }
}

pub fn values<const D: usize>(tensor: Tensor<D>) -> Vec<f32> {
    tensor.into_data().try_to_vec::<f32>().unwrap()
}

/// Largest absolute difference, asserted below `tolerance`.
pub fn assert_close(actual: &[f32], expected: &[f32], tolerance: f32, what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    let worst = actual
        .iter()
        .zip(expected)
        .map(|(a, e)| (a - e).abs())
        .fold(0.0f32, f32::max);
    assert!(
        worst <= tolerance,
        "{what}: max abs difference {worst} > {tolerance}"
    );
}

/// `model`'s logits and mean loss on `input` with the reference's `labels` are the reference's
/// `logits` and `loss`, within `tolerance`.
pub fn assert_logits_and_loss(
    model: &SequenceClassifier,
    input: BertInput,
    reference: &Value,
    tolerance: f32,
    what: &str,
) {
    let labels = ints(&reference["labels"]);
    let labels = burnbert_model::Labels::Classes(Tensor::from_data(
        TensorData::new(labels.clone(), [labels.len()]),
        &input.input_ids.device(),
    ));
    let output = model.forward(input, Some(labels));
    assert_close(
        &values(output.logits),
        &floats(&reference["logits"]),
        tolerance,
        &format!("{what}: logits"),
    );
    let loss = values(output.loss.unwrap())[0];
    assert!(
        (loss - reference["loss"].as_f64().unwrap() as f32).abs() < tolerance,
        "{what}: loss {loss}"
    );
}

/// Says why a test cannot run and lets it pass, unless `BURNBERT_REQUIRE_ALL_TESTS` is set (as
/// `scripts/test` sets it): then a missing prerequisite fails the test instead.
pub fn skip_unless_required(why: &str) {
    if std::env::var_os("BURNBERT_REQUIRE_ALL_TESTS").is_some() {
        panic!("{why}, and BURNBERT_REQUIRE_ALL_TESTS is set: every test must run");
    }
    eprintln!("skipped: {why}");
}

/// Says that `test` cannot run on this machine, and why, for a test whose subject this CPU
/// does not have: printed, and appended as `test: reason` to the file that `BURNBERT_NOT_RUN`
/// names, which `scripts/test` lists at its end, so that a test that checked nothing does not
/// pass in silence.
pub fn not_run(test: &str, reason: &str) {
    use std::io::Write;
    eprintln!("not run on this CPU: {test}, because {reason}");
    if let Some(path) = std::env::var_os("BURNBERT_NOT_RUN") {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut file| writeln!(file, "burnbert {test}: {reason}"))
            .expect("the file BURNBERT_NOT_RUN names can be written");
    }
}

/// A command running one of burnbert's programs as a user would, offline and on the CPU.
///
/// `BURN_DEVICE` is removed: `scripts/test` sets it for the in-process tests, and the
/// programs must choose Burn's default device themselves (`select_device`), or resuming in a
/// CUDA build on a machine without a GPU would panic.
pub fn program(path: &str) -> std::process::Command {
    let mut command = std::process::Command::new(path);
    command
        .env("HF_HUB_OFFLINE", "1")
        .env("BURNBERT_DEVICE", "cpu")
        .env_remove("BURN_DEVICE");
    command
}

/// The CPU device most tests run on: ndarray, the unit tests' backend, when compiled in
/// (CI builds it beside flex, the default CPU backend), else the default CPU backend.
pub fn cpu() -> Device {
    let name = if cfg!(feature = "ndarray") {
        "ndarray"
    } else {
        "cpu"
    };
    burnbert_model::parse_device(name).unwrap()
}

/// The devices the parity and training tests cover: every backend compiled in (in CI,
/// ndarray, flex, and wgpu on Mesa's lavapipe, a Vulkan driver that runs on the CPU).
pub fn devices() -> Vec<Device> {
    let mut devices = vec![cpu()];
    for (name, compiled) in [
        ("flex", cfg!(feature = "flex")),
        ("wgpu", cfg!(feature = "wgpu")),
    ] {
        if compiled {
            let device = burnbert_model::parse_device(name).unwrap();
            if !devices.contains(&device) {
                devices.push(device);
            }
        }
    }
    devices
}

/// The offline Hugging Face cache that `scripts/test` lays out (`HF_HOME`).
pub fn require_hf_home() {
    let home = std::env::var("HF_HOME").expect(
        "HF_HOME is not set: run the tests through scripts/test, which lays out the offline cache",
    );
    assert!(
        PathBuf::from(&home)
            .join("hub/models--sentence-transformers--all-MiniLM-L6-v2")
            .is_dir(),
        "{home} has no all-MiniLM-L6-v2: run ../shared/seed-hf-home.sh {home}"
    );
}
