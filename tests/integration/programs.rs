//! The programs end to end, as a user runs them: `train` on a small local split of MRPC
//! with the real all-MiniLM-L6-v2, then `predict` and `eval` on the directory it saved.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use crate::common::*;

fn run_program(name: &str, args: &[&str]) -> Output {
    let path = match name {
        "train" => env!("CARGO_BIN_EXE_train"),
        "eval" => env!("CARGO_BIN_EXE_eval"),
        "predict" => env!("CARGO_BIN_EXE_predict"),
        "bench" => env!("CARGO_BIN_EXE_bench"),
        other => panic!("no program {other}"),
    };
    program(path).args(args).output().unwrap()
}

/// `predict`'s answers for the JSON lines in `input`, one per line, with the model in `model`.
fn predict(model: &str, input: &Path) -> Vec<serde_json::Value> {
    let predicted = run_program(
        "predict",
        &["--model", model, "--input", input.to_str().unwrap()],
    );
    assert!(
        predicted.status.success(),
        "predict with {model} failed: {}",
        stderr(&predicted)
    );
    stdout(&predicted)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// `eval --json` of `model` on `file` (with `extra` flags), which must succeed.
fn eval_json(model: &str, file: &Path, extra: &[&str]) -> serde_json::Value {
    let args = [
        &["--model", model, "--file", file.to_str().unwrap(), "--json"],
        extra,
    ]
    .concat();
    let evaluated = run_program("eval", &args);
    assert!(
        evaluated.status.success(),
        "eval of {model} {extra:?} failed: {}",
        stderr(&evaluated)
    );
    serde_json::from_str(stdout(&evaluated).trim()).unwrap()
}

/// `eval`'s metrics are those `train` reported in all_results.json.
fn assert_eval_reproduces_train(
    evaluated: &serde_json::Value,
    results: &serde_json::Value,
    what: &str,
) {
    for metric in ["accuracy", "f1"] {
        let (a, b) = (
            evaluated["metrics"][metric].as_f64().unwrap(),
            results["eval"][metric].as_f64().unwrap(),
        );
        assert!(
            (a - b).abs() < 1e-9,
            "{what}: {metric}: eval {a} vs train {b}"
        );
    }
}

/// The first `n` rows of the cached MRPC validation split as JSON lines.
fn mrpc_rows(n: usize, skip: usize, path: &Path) {
    let task = burnbert_data::Task::by_name("mrpc").unwrap();
    let rows = task
        .load_split(
            &burnbert_data::Hub::from_env("main", true),
            "validation",
            None,
        )
        .unwrap();
    let lines: Vec<String> = rows[skip..skip + n]
        .iter()
        .map(|r| {
            let label = match r.label {
                Some(burnbert_data::Label::Class(c)) => c,
                _ => unreachable!(),
            };
            serde_json::json!({"sentence1": r.text_a, "sentence2": r.text_b, "label": label})
                .to_string()
        })
        .collect();
    std::fs::write(path, lines.join("\n")).unwrap();
}

#[test]
fn train_then_predict_and_eval_the_saved_model() {
    require_hf_home();
    let dir = tempfile::tempdir().unwrap();
    let (train_file, validation_file, out) = (
        dir.path().join("train.jsonl"),
        dir.path().join("validation.jsonl"),
        dir.path().join("run"),
    );
    mrpc_rows(16, 0, &train_file);
    mrpc_rows(10, 100, &validation_file);
    let out_str = out.to_str().unwrap();
    let trained = run_program(
        "train",
        &[
            "--model",
            "sentence-transformers/all-MiniLM-L6-v2",
            "--train-file",
            train_file.to_str().unwrap(),
            "--validation-file",
            validation_file.to_str().unwrap(),
            "--num-epochs",
            "1",
            "--batch-size",
            "8",
            "--output-dir",
            out_str,
            "--quiet",
            "--report-to",
            "tensorboard",
        ],
    );
    assert!(
        trained.status.success(),
        "train failed: {}",
        stderr(&trained)
    );
    check_tensorboard(&out);
    for file in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "all_results.json",
        "metrics.jsonl",
    ] {
        assert!(
            out.join(file).is_file(),
            "{file} missing from the output directory"
        );
    }
    let config = read_json(&out.join("config.json"));
    assert_eq!(config["id2label"]["1"], "equivalent");
    let results = read_json(&out.join("all_results.json"));
    assert_eq!(results["steps"], 2);

    // eval on the same split reproduces what train printed for the final model.
    let matrix = dir.path().join("confusion.png");
    let evaluated = run_program(
        "eval",
        &[
            "--model",
            out_str,
            "--file",
            validation_file.to_str().unwrap(),
            "--json",
            "--confusion-matrix",
            matrix.to_str().unwrap(),
        ],
    );
    assert!(
        evaluated.status.success(),
        "eval failed: {}",
        stderr(&evaluated)
    );
    assert!(
        !stderr(&evaluated).contains("classification head"),
        "{}",
        stderr(&evaluated)
    );
    let evaluated: serde_json::Value = serde_json::from_str(stdout(&evaluated).trim()).unwrap();
    assert_eq!(evaluated["examples"], 10);
    // How long the predictions took, for comparing with other tools.
    assert!(evaluated["seconds"].as_f64().is_some_and(|s| s > 0.0));
    // The device named as it resolved (`cpu` is flex here), not as the flag spells it.
    assert_eq!(evaluated["device"], "cpu (flex)");
    assert!(
        std::fs::read(&matrix).unwrap().starts_with(b"\x89PNG"),
        "the confusion matrix is a PNG"
    );
    for picture in ["loss.png", "learning_rate.png", "eval.png"] {
        assert!(out.join(picture).is_file(), "train drew no {picture}");
    }
    assert_eval_reproduces_train(&evaluated, &results, "");
    // On two devices (CPU workers), in batches of 3: the same examples, the same metrics.
    let on_two = run_program(
        "eval",
        &[
            "--model",
            out_str,
            "--file",
            validation_file.to_str().unwrap(),
            "--json",
            "--devices",
            "0,1",
            "--batch-size",
            "3",
        ],
    );
    assert!(on_two.status.success(), "{}", stderr(&on_two));
    let on_two: serde_json::Value = serde_json::from_str(stdout(&on_two).trim()).unwrap();
    assert_eq!(on_two["examples"], 10);
    assert_eq!(on_two["metrics"], evaluated["metrics"]);

    // predict reads JSON lines and answers one line per input, in order.
    let lines = predict(out_str, &validation_file);
    assert_eq!(lines.len(), 10);
    let correct = lines
        .iter()
        .zip(std::fs::read_to_string(&validation_file).unwrap().lines())
        .filter(|(p, row)| {
            let row: serde_json::Value = serde_json::from_str(row).unwrap();
            let name = if row["label"] == 1 {
                "equivalent"
            } else {
                "not_equivalent"
            };
            p["label"] == name
        })
        .count();
    assert!(
        (correct as f64 / 10.0 - evaluated["metrics"]["accuracy"].as_f64().unwrap()).abs() < 1e-9
    );
    let probabilities = floats(&lines[0]["probabilities"]);
    assert!((probabilities.iter().sum::<f32>() - 1.0).abs() < 1e-5);

    // The pretrained encoder has no classification head: predict answers, and warns that
    // the answers are random.
    let untrained = run_program(
        "predict",
        &[
            "--model",
            "sentence-transformers/all-MiniLM-L6-v2",
            "--input",
            validation_file.to_str().unwrap(),
        ],
    );
    assert!(untrained.status.success(), "{}", stderr(&untrained));
    assert_eq!(stdout(&untrained).lines().count(), 10);
    assert!(
        stderr(&untrained).contains(
            "warning: `sentence-transformers/all-MiniLM-L6-v2` has no trained classification \
             head (classifier.bias, classifier.weight newly initialised at random)"
        ),
        "{}",
        stderr(&untrained)
    );
}

/// `--report-to tensorboard` wrote what `metrics.jsonl` holds, as TensorBoard's own reader
/// (`read_tensorboard.py`, which checks every record's CRC) reads it back: each step's loss,
/// learning rate and rate, and each epoch's loss and metrics, to f32's precision.
fn check_tensorboard(out: &Path) {
    let python = std::env::var("BURNBERT_TENSORBOARD_PYTHON").expect(
        "BURNBERT_TENSORBOARD_PYTHON is not set: run the tests through scripts/test, which \
         installs TensorBoard's reader",
    );
    let reader =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/integration/read_tensorboard.py");
    let read = std::process::Command::new(python)
        .arg(reader)
        .arg(out.join("tensorboard"))
        .output()
        .unwrap();
    assert!(read.status.success(), "{}", stderr(&read));
    let scalars: serde_json::Value = serde_json::from_str(stdout(&read).trim()).unwrap();
    let log = burnbert_eval::log::read_log(&out.join("metrics.jsonl")).unwrap();
    let series = |tag: &str| -> Vec<(u64, f32)> {
        scalars[tag]
            .as_array()
            .unwrap_or_else(|| panic!("no {tag} in {scalars}"))
            .iter()
            .map(|point| {
                (
                    point[0].as_u64().unwrap(),
                    point[1].as_f64().unwrap() as f32,
                )
            })
            .collect()
    };
    let steps = |value: fn(&burnbert_eval::log::StepRecord) -> f64| -> Vec<(u64, f32)> {
        log.steps
            .iter()
            .map(|s| (s.step as u64, value(s) as f32))
            .collect()
    };
    assert_eq!(log.steps.len(), 2);
    assert_eq!(series("train/loss"), steps(|s| s.loss));
    assert_eq!(series("train/learning_rate"), steps(|s| s.lr));
    assert_eq!(
        series("train/samples_per_second"),
        steps(|s| s.samples_per_second)
    );
    let epoch = &log.epochs[0];
    assert_eq!(
        series("train/epoch_loss"),
        vec![(1, epoch.train_loss as f32)]
    );
    for (name, &value) in &epoch.metrics {
        assert_eq!(
            series(&format!("eval/{name}")),
            vec![(1, value as f32)],
            "{name}"
        );
    }
}

/// The tensors of a safetensors file by name, with their shapes and bytes.
fn safetensors_file(path: &Path) -> BTreeMap<String, (Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    safetensors::SafeTensors::deserialize(&bytes)
        .unwrap()
        .tensors()
        .into_iter()
        .map(|(name, view)| (name, (view.shape().to_vec(), view.data().to_vec())))
        .collect()
}

/// Each family that burnbert reads by config.json's `model_type` goes through the programs as
/// a user's own checkpoint would: a directory with the tiny random-weight ELECTRA, DistilBERT,
/// ModernBERT, DeBERTa-v3 and (the control) BERT that transformers saved (`assets/fixtures/tiny-<model_type>/`) and
/// tiny-bert's WordPiece tokenizer is trained for 2 steps on MRPC rows, and the directory
/// `train` saves keeps the family: config.json every field of the input with its value (the
/// family's own names, DistilBERT's `dim` and `n_layers`, none of BERT's), model.safetensors
/// the input's key names and shapes under the family's prefix (`electra.`, `distilbert.`)
/// with every tensor changed by training, and the tokenizer; the loss is finite, and `eval`
/// and `predict` load that directory and reproduce the validation metrics `train` reported.
/// With wgpu compiled in, `train` and `eval` do the same on it.
#[test]
fn every_family_trains_evaluates_and_predicts_from_its_own_directory() {
    require_hf_home();
    let dir = tempfile::tempdir().unwrap();
    let (train_file, validation_file) = (
        dir.path().join("train.jsonl"),
        dir.path().join("validation.jsonl"),
    );
    mrpc_rows(16, 0, &train_file);
    mrpc_rows(10, 100, &validation_file);
    // The family, the prefix of its encoder's weights (the head's are `classifier.`,
    // DistilBERT's `pre_classifier.`, ModernBERT's `head.`, DeBERTa's `pooler.`), and config
    // fields of other
    // families it must not gain.
    let families: [(&str, &str, &[&str]); 5] = [
        ("bert", "bert.", &["dim", "n_layers", "embedding_size"]),
        (
            "electra",
            "electra.",
            &["dim", "n_layers", "n_heads", "hidden_dim"],
        ),
        (
            "distilbert",
            "distilbert.",
            &[
                "hidden_size",
                "type_vocab_size",
                "num_hidden_layers",
                "num_attention_heads",
                "intermediate_size",
            ],
        ),
        (
            "modernbert",
            "model.",
            &[
                "hidden_act",
                "layer_norm_eps",
                "type_vocab_size",
                "hidden_dropout_prob",
            ],
        ),
        (
            "deberta-v2",
            "deberta.",
            &["dim", "n_layers", "embedding_size"],
        ),
    ];
    for (model_type, prefix, foreign) in families {
        let fixture_dir = fixture(&format!("tiny-{model_type}"));
        let model = dir.path().join(format!("{model_type}-model"));
        let out = dir.path().join(format!("{model_type}-run"));
        std::fs::create_dir(&model).unwrap();
        for file in ["config.json", "model.safetensors"] {
            std::fs::copy(fixture_dir.join(file), model.join(file)).unwrap();
        }
        std::fs::copy(
            fixture("tiny-bert/tokenizer.json"),
            model.join("tokenizer.json"),
        )
        .unwrap();
        let out_str = out.to_str().unwrap();
        let trained = run_program(
            "train",
            &[
                "--model",
                model.to_str().unwrap(),
                "--train-file",
                train_file.to_str().unwrap(),
                "--validation-file",
                validation_file.to_str().unwrap(),
                "--num-epochs",
                "1",
                "--batch-size",
                "8",
                "--output-dir",
                out_str,
                "--quiet",
            ],
        );
        assert!(
            trained.status.success(),
            "{model_type}: train failed: {}",
            stderr(&trained)
        );

        // config.json: the family's model_type and its own field names, with their values.
        let (input_config, config) = (
            read_json(&fixture_dir.join("config.json")),
            read_json(&out.join("config.json")),
        );
        assert_eq!(config["model_type"], model_type);
        for (key, value) in input_config.as_object().unwrap() {
            assert_eq!(
                config.get(key),
                Some(value),
                "{model_type}: config.json's {key}"
            );
        }
        for key in foreign {
            assert!(
                config.get(key).is_none(),
                "{model_type}: config.json has another family's `{key}`: {config}"
            );
        }

        // model.safetensors: the input's names and shapes, under the family's prefix, trained.
        let (before, after) = (
            safetensors_file(&fixture_dir.join("model.safetensors")),
            safetensors_file(&out.join("model.safetensors")),
        );
        assert_eq!(
            after.keys().collect::<Vec<_>>(),
            before.keys().collect::<Vec<_>>(),
            "{model_type}: model.safetensors' key names"
        );
        let encoder = after.keys().filter(|k| k.starts_with(prefix)).count();
        assert!(encoder > 0, "{model_type}: no key starts with {prefix}");
        for (name, (shape, bytes)) in &after {
            assert!(
                name.starts_with(prefix)
                    || name.starts_with("classifier.")
                    || name.starts_with("pre_classifier.")
                    || name.starts_with("head.")
                    || name.starts_with("pooler."),
                "{model_type}: {name} is neither under {prefix} nor the head's"
            );
            assert_eq!(*shape, before[name].0, "{model_type}: {name}'s shape");
            assert!(
                *bytes != before[name].1,
                "{model_type}: training left {name} unchanged"
            );
        }
        assert_eq!(
            std::fs::read(out.join("tokenizer.json")).unwrap(),
            std::fs::read(fixture("tiny-bert/tokenizer.json")).unwrap(),
            "{model_type}: the tokenizer was not copied"
        );

        // The loss of every step, and of the epoch, is a number.
        let log = burnbert_eval::log::read_log(&out.join("metrics.jsonl")).unwrap();
        assert_eq!(log.steps.len(), 2, "{model_type}");
        for step in &log.steps {
            assert!(step.loss.is_finite(), "{model_type}: step {step:?}");
        }
        assert!(log.epochs[0].train_loss.is_finite(), "{model_type}");
        let results = read_json(&out.join("all_results.json"));
        assert_eq!(results["steps"], 2, "{model_type}");

        // eval and predict load the saved directory: the metrics train printed, valid answers.
        let evaluated = run_program(
            "eval",
            &[
                "--model",
                out_str,
                "--file",
                validation_file.to_str().unwrap(),
                "--json",
            ],
        );
        assert!(
            evaluated.status.success(),
            "{model_type}: eval failed: {}",
            stderr(&evaluated)
        );
        assert!(
            !stderr(&evaluated).contains("classification head"),
            "{model_type}: {}",
            stderr(&evaluated)
        );
        let evaluated: serde_json::Value = serde_json::from_str(stdout(&evaluated).trim()).unwrap();
        assert_eq!(evaluated["examples"], 10, "{model_type}");
        assert_eval_reproduces_train(&evaluated, &results, model_type);
        let lines = predict(out_str, &validation_file);
        assert_eq!(lines.len(), 10, "{model_type}");
        for line in &lines {
            assert!(
                line["label"] == "equivalent" || line["label"] == "not_equivalent",
                "{model_type}: {line}"
            );
            let probabilities = floats(&line["probabilities"]);
            assert_eq!(probabilities.len(), 2, "{model_type}: {line}");
            assert!(
                (probabilities.iter().sum::<f32>() - 1.0).abs() < 1e-5,
                "{model_type}: {line}"
            );
        }

        // The same on wgpu (Mesa's lavapipe in CI): train, then eval of the saved directory
        // reproduces the metrics train reported.
        #[cfg(feature = "wgpu")]
        {
            let gpu_out = dir.path().join(format!("{model_type}-wgpu"));
            let gpu_out = gpu_out.to_str().unwrap();
            let files = ["--train-file", train_file.to_str().unwrap()];
            let validation = ["--validation-file", validation_file.to_str().unwrap()];
            let run = ["--num-epochs", "1", "--batch-size", "8", "--quiet"];
            let on_wgpu = ["--device", "wgpu", "--output-dir", gpu_out];
            let model_arg = ["--model", model.to_str().unwrap()];
            let args = [&model_arg[..], &files, &validation, &run, &on_wgpu].concat();
            let trained = run_program("train", &args);
            assert!(
                trained.status.success(),
                "{model_type}: train on wgpu failed: {}",
                stderr(&trained)
            );
            let results = read_json(&Path::new(gpu_out).join("all_results.json"));
            assert_eq!(results["steps"], 2, "{model_type} on wgpu");
            let evaluated = eval_json(gpu_out, &validation_file, &["--device", "wgpu"]);
            assert_eval_reproduces_train(&evaluated, &results, &format!("{model_type} on wgpu"));
        }
    }
}

/// `BURN_CUBECL_MATMUL` (vendor/burn-cubecl, benchmarking a GPU's matrix-product routines)
/// runs the routine it names: on lavapipe, which has no tensor cores, a cooperative-matrix
/// routine is tried and declines, which it says; a name that is not a routine is refused by
/// name; either way the step runs, on the default routine, to the same loss as without it.
#[cfg(feature = "wgpu")]
#[test]
fn burn_cubecl_matmul_selects_the_routine_it_names() {
    let step = |routine: Option<&str>| {
        let mut command = program(env!("CARGO_BIN_EXE_bench"));
        let args = [
            "--model-shape",
            "tiny",
            "--batch",
            "2",
            "--seq",
            "16",
            "--steps",
            "1",
            "--warmup",
            "0",
            "--device",
            "wgpu",
            "--json",
        ];
        command.args(args).env_remove("BURN_CUBECL_MATMUL");
        if let Some(routine) = routine {
            command.env("BURN_CUBECL_MATMUL", routine);
        }
        let output = command.output().unwrap();
        assert!(output.status.success(), "{routine:?}: {}", stderr(&output));
        let result: serde_json::Value = serde_json::from_str(stdout(&output).trim()).unwrap();
        (result["final_loss"].as_f64().unwrap(), stderr(&output))
    };
    let (default_loss, said) = step(None);
    assert!(!said.contains("BURN_CUBECL_MATMUL"), "{said}");
    let (loss, said) = step(Some("simple-cmma"));
    assert!(
        said.contains("BURN_CUBECL_MATMUL's routine declined a problem"),
        "{said}"
    );
    assert_eq!(loss, default_loss);
    let (loss, said) = step(Some("fastest"));
    assert!(
        said.contains("BURN_CUBECL_MATMUL=fastest is not one of simple-cmma"),
        "{said}"
    );
    assert_eq!(loss, default_loss);
}

#[test]
fn predict_reads_pairs_and_single_sentences_from_a_hub_model() {
    require_hf_home();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, "{\"sentence1\": \"A cat sat.\", \"sentence2\": \"A cat was sitting.\"}\n{\"sentence1\": \"Only one.\"}\n").unwrap();
    let output = run_program(
        "predict",
        &[
            "--model",
            "sentence-transformers/all-MiniLM-L6-v2",
            "--input",
            input.to_str().unwrap(),
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let lines: Vec<serde_json::Value> = stdout(&output)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    // all-MiniLM-L6-v2 has no id2label: labels are class indices.
    assert!(
        lines.iter().all(|l| l["label"] == "0" || l["label"] == "1"),
        "{lines:?}"
    );
    assert_eq!(floats(&lines[1]["logits"]).len(), 2);
}

#[test]
fn bad_input_gets_one_clear_line_and_exit_code_1() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere");
    let mut cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--model", missing.to_str().unwrap(), "--dry-run"],
            "not in the Hugging Face cache",
        ),
        (
            vec!["--model", "x", "--task", "squad"],
            "unknown task `squad`",
        ),
        (
            vec!["--model", "x", "--device", "tpu"],
            "unknown device `tpu`",
        ),
        (
            vec!["--model", "x", "--batch-size", "0"],
            "--batch-size must be at least 1",
        ),
        (
            vec!["--model", "x", "--learning-rate", "-1"],
            "--learning-rate must be a positive number",
        ),
        (
            vec!["--model", "x", "--learning-rate", "NaN"],
            "--learning-rate must be a positive number",
        ),
        (
            vec!["--model", "x", "--gradient-accumulation-steps", "0"],
            "--gradient-accumulation-steps must be at least 1",
        ),
        (
            vec!["--model", "x", "--num-warmup-steps", "100000"],
            "longer than the whole run",
        ),
        (
            vec!["--model", "x", "--checkpointing-steps", "often"],
            "--checkpointing-steps takes a number",
        ),
        (
            vec!["--model", "x", "--memory-limit", "0"],
            "--memory-limit must be a positive number of GiB (or inf), not 0",
        ),
    ];
    // Without the cuda feature, or with it on a machine without an NVIDIA GPU (as CI is).
    if let Err(expected) = burnbert_model::parse_device("cuda") {
        cases.push((vec!["--model", "x", "--device", "cuda"], expected.leak()));
    }
    for (args, expected) in cases {
        let output = run_program("train", &args);
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.starts_with("error: ") && err.contains(expected),
            "{args:?}: {err}"
        );
        assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    }
}

#[test]
fn dry_run_shows_splits_a_batch_padding_and_steps() {
    require_hf_home();
    let output = run_program(
        "train",
        &[
            "--model",
            "sentence-transformers/all-MiniLM-L6-v2",
            "--dry-run",
            "--gradient-accumulation-steps",
            "2",
        ],
    );
    let text = stdout(&output);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        text.contains("splits: train 3668 examples, validation 408"),
        "{text}"
    );
    // The course's batch: input_ids [8, L] with L the longest pair of the batch.
    let shape = text
        .lines()
        .find(|l| l.starts_with("first batch: input_ids [8, "))
        .expect(&text);
    let longest: usize = shape["first batch: input_ids [8, ".len()..]
        .split(']')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!((20..=103).contains(&longest), "{shape}");
    assert!(text.contains("padding ratio (epoch 1): "), "{text}");
    // 3668 examples / 8 = 459 batches; 2 per step = 230 steps per epoch, the last one partial.
    assert!(
        text.contains(
            "optimizer steps: 230 per epoch × 3 epochs = 690 \
             (effective batch 16 = batch 8 × 1 device × accumulation 2)"
        ),
        "{text}"
    );
}

/// The memory guard (`burnbert_train::memory`): a run whose step will not fit in the memory
/// it may take says so before anything runs, and writes nothing; the dry run shows the
/// estimate. Its suggestions are tested beside it; what the estimate is worth against a
/// measured peak, by `the_memory_guard_estimates_the_peak_that_bench_measures`.
#[test]
fn a_run_that_will_not_fit_in_memory_is_refused_before_it_starts() {
    require_hf_home();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let model = ["--model", "sentence-transformers/all-MiniLM-L6-v2"];
    let refused = run_program(
        "train",
        &[
            &model[..],
            &[
                "--output-dir",
                out.to_str().unwrap(),
                "--memory-limit",
                "0.3",
            ],
        ]
        .concat(),
    );
    let err = stderr(&refused);
    assert_eq!(refused.status.code(), Some(1), "{err}");
    // MRPC's longest training pair is 103 tokens with this tokenizer.
    assert!(
        err.starts_with("error: a training step at --batch-size 8 on rows of up to 103 tokens"),
        "{err}"
    );
    assert!(err.contains("but 0.30 GiB is available"), "{err}");
    assert!(err.contains("alone need"), "{err}");
    assert!(!out.exists(), "the refused run wrote {}", out.display());

    let dry = run_program("train", &[&model[..], &["--dry-run"]].concat());
    let text = stdout(&dry);
    assert!(dry.status.success(), "{}", stderr(&dry));
    let line = text
        .lines()
        .find(|l| l.starts_with("peak memory (estimate): "))
        .expect(&text);
    assert!(
        line.contains(" available (weights, gradients and AdamW state "),
        "{line}"
    );
}

/// The memory guard's estimate of a training step against the peak resident memory that the
/// kernel records for the same step in `bench` (VmHWM), on the default CPU backend: within the
/// 15 % that the guard is held to, on the padded and the padding-free path, and with
/// gradient checkpointing.
#[test]
fn the_memory_guard_estimates_the_peak_that_bench_measures() {
    for (shape, batch, seq, padding_free, checkpointing) in [
        ("minilm-l6", "8", "256", "false", false),
        ("minilm-l6", "4", "512", "true", false),
        ("minilm-l6", "4", "512", "true", true),
    ] {
        let checkpointing = checkpointing.then_some("--gradient-checkpointing");
        let output = run_program(
            "bench",
            &[
                "--model-shape",
                shape,
                "--batch",
                batch,
                "--seq",
                seq,
                "--steps",
                "1",
                "--warmup",
                "1",
                "--device",
                "flex",
                "--padding-free",
                padding_free,
                "--json",
            ]
            .into_iter()
            .chain(checkpointing)
            .collect::<Vec<_>>(),
        );
        assert!(output.status.success(), "{}", stderr(&output));
        let report: serde_json::Value = serde_json::from_str(stdout(&output).trim()).unwrap();
        let measured = report["peak_rss_bytes"].as_f64().unwrap();
        let estimated = report["peak_rss_estimate_bytes"].as_f64().unwrap();
        let ratio = estimated / measured;
        assert!(
            (0.85..=1.15).contains(&ratio),
            "{shape} {batch} × {seq}, padding-free {padding_free}, {checkpointing:?}: estimated \
             {estimated} bytes, measured {measured} ({ratio:.3})"
        );
    }
}

/// `--config FILE` sets flags like `accelerate config`; the command line overrides it.
#[test]
fn a_config_file_sets_flags_that_the_command_line_overrides() {
    require_hf_home();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("launch.toml");
    std::fs::write(
        &config,
        "devices = [0, 1]\nbatch_size = 4\ngradient_accumulation_steps = 2\n\
         group_by_length = false\nlearning_rate = 3e-5\n",
    )
    .unwrap();
    let model = "sentence-transformers/all-MiniLM-L6-v2";
    let config = config.to_str().unwrap();
    let output = run_program(
        "train",
        &[
            "--config",
            config,
            "--model",
            model,
            "--dry-run",
            "--batch-size",
            "2",
        ],
    );
    let text = stdout(&output);
    assert!(output.status.success(), "{}", stderr(&output));
    // 3668 examples / 2 = 1834 micro-batches, 2 devices × 2 accumulation per step: 459 steps.
    assert!(
        text.contains(
            "optimizer steps: 459 per epoch × 3 epochs = 1377 \
             (effective batch 8 = batch 2 × 2 devices × accumulation 2)"
        ),
        "{text}"
    );

    let bad = |contents: &str, expected: &str| {
        std::fs::write(dir.path().join("bad.toml"), contents).unwrap();
        let path = dir.path().join("bad.toml");
        let output = run_program(
            "train",
            &[
                "--config",
                path.to_str().unwrap(),
                "--model",
                model,
                "--dry-run",
            ],
        );
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{contents}: {err}");
        assert!(
            err.starts_with("error: --config ") && err.contains(expected),
            "{err}"
        );
    };
    bad(
        "batch = 4",
        "unknown setting `batch`; settings are the flags of `train --help`",
    );
    bad(
        "group_by_length = 3",
        "is not a value for --group-by-length (a switch: true or false)",
    );
    bad("batch_size = [", "TOML parse error");
    let output = run_program("train", &["--config", "/no/such.toml", "--model", model]);
    assert!(stderr(&output).contains("--config /no/such.toml: cannot read it"));
}

/// A split that is not in the default cache (`test`) is read when the cache has it.
#[test]
fn eval_reads_any_split_the_cache_has() {
    require_hf_home();
    let home = tempfile::tempdir().unwrap();
    let source =
        PathBuf::from(std::env::var("HF_HOME").unwrap()).join("hub/datasets--nyu-mll--glue");
    let target = home.path().join("hub/datasets--nyu-mll--glue");
    let commit = std::fs::read_to_string(source.join("refs/main")).unwrap();
    let snapshot = target.join("snapshots").join(commit.trim()).join("mrpc");
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::create_dir_all(target.join("refs")).unwrap();
    std::fs::copy(source.join("refs/main"), target.join("refs/main")).unwrap();
    let validation = source
        .join("snapshots")
        .join(commit.trim())
        .join("mrpc/validation-00000-of-00001.parquet");
    std::fs::copy(&validation, snapshot.join("test-00000-of-00001.parquet")).unwrap();
    let model = fixture("tiny-bert");
    let run = |split: &str| {
        program(env!("CARGO_BIN_EXE_eval"))
            .args([
                "--model",
                model.to_str().unwrap(),
                "--split",
                split,
                "--json",
            ])
            .env("HF_HOME", home.path())
            .output()
            .unwrap()
    };
    let test = run("test");
    assert!(test.status.success(), "{}", stderr(&test));
    let result: serde_json::Value = serde_json::from_str(stdout(&test).trim()).unwrap();
    assert_eq!(result["examples"], 408);
    assert_eq!(result["split"], "test");
    let missing = run("train");
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stderr(&missing)
            .contains("mrpc/train-00000-of-00001.parquet is not in the Hugging Face cache"),
        "{}",
        stderr(&missing)
    );
}

/// On a machine where wgpu finds no adapter (simulated by pointing the Vulkan loader and
/// libglvnd's EGL at drivers that do not exist), `--device wgpu` is a clear error and
/// `--device auto` runs on the CPU with a note saying why.
#[cfg(feature = "wgpu")]
#[test]
fn without_a_wgpu_adapter_auto_runs_on_the_cpu_and_wgpu_says_why_not() {
    require_hf_home();
    let without_adapters = |args: &[&str]| {
        program(env!("CARGO_BIN_EXE_train"))
            .args(args)
            .env("VK_DRIVER_FILES", "/nonexistent/vulkan-driver.json")
            .env(
                "__EGL_VENDOR_LIBRARY_FILENAMES",
                "/nonexistent/egl-vendor.json",
            )
            .env_remove("BURNBERT_DEVICE")
            .output()
            .unwrap()
    };
    let model = "sentence-transformers/all-MiniLM-L6-v2";
    let output = without_adapters(&["--model", model, "--device", "wgpu", "--dry-run"]);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(
        err.starts_with("error: ") && err.contains("no wgpu adapter found"),
        "{err}"
    );
    assert!(err.contains("--device cpu"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    let output = without_adapters(&["--model", model, "--device", "auto", "--dry-run"]);
    let err = stderr(&output);
    assert!(output.status.success(), "{err}");
    assert!(
        err.contains("note: --device auto: no GPU found (")
            && err.contains("no wgpu adapter)")
            && err.contains("runs on the CPU"),
        "{err}"
    );
    assert_eq!(err.matches("note: --device auto").count(), 1, "{err}");
    let out = stdout(&output);
    assert!(out.contains("device: cpu (flex)"), "{out}");
}

/// One binary for every x86-64 CPU: gemm and burn-flex's loops pick their widest kernels at
/// run time, AVX-512 where the CPU has it (burn-flex's `x86-v4`, `model/Cargo.toml`), else
/// AVX2 and FMA, else the baseline's SSE2. Here the same `train` runs under QEMU emulating a
/// CPU one step narrower than this one, a Haswell (AVX2, no AVX-512) below an AVX-512 CPU or
/// a Nehalem (no AVX) below an AVX2 one, and trains the tiny model to the native run's loss
/// and metrics (to 1e-5: the kernels sum in other orders). QEMU emulates no AVX-512, so on a
/// CPU without it the AVX-512 kernels are compared with nothing, which the test says.
#[test]
fn a_narrower_cpu_trains_to_the_same_result() {
    const TEST: &str = "programs::a_narrower_cpu_trains_to_the_same_result";
    let narrower = if std::is_x86_feature_detected!("avx512f") {
        "Haswell"
    } else if std::is_x86_feature_detected!("avx2") {
        not_run(
            &format!("{TEST} (AVX-512 against AVX2)"),
            "it has no AVX-512, and QEMU emulates none",
        );
        "Nehalem"
    } else {
        return not_run(
            TEST,
            "it has neither AVX-512 nor AVX2 to compare with the baseline",
        );
    };
    let qemu = std::process::Command::new("qemu-x86_64")
        .arg("--version")
        .output();
    if !qemu.is_ok_and(|o| o.status.success()) {
        skip_unless_required("qemu-x86_64 (Debian's qemu-user) is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (train_file, validation_file) = crate::errors::tiny_data(dir.path());
    let args = |out: &str| {
        crate::errors::tiny_run_args(&train_file, &validation_file, &dir.path().join(out), "1")
    };
    let native = run_program(
        "train",
        &args("native")
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert!(native.status.success(), "{}", stderr(&native));
    let emulated = program("qemu-x86_64")
        .args(["-cpu", narrower, env!("CARGO_BIN_EXE_train")])
        .args(args("narrower"))
        .output()
        .unwrap();
    assert!(emulated.status.success(), "{}", stderr(&emulated));
    let results = |name: &str| read_json(&dir.path().join(name).join("all_results.json"));
    let (native, emulated) = (results("native"), results("narrower"));
    for (what, a, b) in [
        (
            "train loss",
            &native["epochs"][0]["train_loss"],
            &emulated["epochs"][0]["train_loss"],
        ),
        (
            "accuracy",
            &native["eval"]["accuracy"],
            &emulated["eval"]["accuracy"],
        ),
        ("f1", &native["eval"]["f1"], &emulated["eval"]["f1"]),
    ] {
        let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
        assert!((a - b).abs() <= 1e-5, "{what}: native {a}, {narrower} {b}");
    }
}

/// Labels that are text, as `run_glue_no_trainer.py` takes them: the training file's distinct
/// labels, sorted, become the classes and the saved model's id2label/label2id; `eval` reads a
/// file of those names through the model's id2label and agrees with what `train` reported;
/// `predict` answers with the names; a validation label the training file lacks is refused
/// with the file, row and label.
#[test]
fn text_labels_become_the_models_class_names() {
    require_hf_home();
    let dir = tempfile::tempdir().unwrap();
    // MRPC's rows with its class names for labels (1 = equivalent), as CSV.
    let write = |n: usize, skip: usize, path: &Path| {
        let jsonl = path.with_extension("jsonl");
        mrpc_rows(n, skip, &jsonl);
        let mut csv = String::from("sentence1,sentence2,label\n");
        for line in std::fs::read_to_string(&jsonl).unwrap().lines() {
            let row: serde_json::Value = serde_json::from_str(line).unwrap();
            let quote =
                |v: &serde_json::Value| format!("\"{}\"", v.as_str().unwrap().replace('"', "\"\""));
            let label = ["not_equivalent", "equivalent"][row["label"].as_u64().unwrap() as usize];
            csv += &format!(
                "{},{},{label}\n",
                quote(&row["sentence1"]),
                quote(&row["sentence2"])
            );
        }
        std::fs::write(path, csv).unwrap();
    };
    let (train_file, validation_file, out) = (
        dir.path().join("train.csv"),
        dir.path().join("validation.csv"),
        dir.path().join("run"),
    );
    write(16, 0, &train_file);
    write(10, 100, &validation_file);
    let train = |validation: &Path| {
        run_program(
            "train",
            &[
                "--model",
                "sentence-transformers/all-MiniLM-L6-v2",
                "--train-file",
                train_file.to_str().unwrap(),
                "--validation-file",
                validation.to_str().unwrap(),
                "--num-epochs",
                "1",
                "--batch-size",
                "8",
                "--output-dir",
                out.to_str().unwrap(),
                "--quiet",
            ],
        )
    };
    let trained = train(&validation_file);
    assert!(
        trained.status.success(),
        "train failed: {}",
        stderr(&trained)
    );
    let config = read_json(&out.join("config.json"));
    assert_eq!(
        config["id2label"],
        serde_json::json!({"0": "equivalent", "1": "not_equivalent"})
    );
    assert_eq!(
        config["label2id"],
        serde_json::json!({"equivalent": 0, "not_equivalent": 1})
    );
    let results = read_json(&out.join("all_results.json"));

    let evaluated = eval_json(out.to_str().unwrap(), &validation_file, &[]);
    assert_eq!(evaluated["examples"], 10);
    assert_eval_reproduces_train(&evaluated, &results, "");

    let input = dir.path().join("input.jsonl");
    mrpc_rows(4, 100, &input);
    for answer in predict(out.to_str().unwrap(), &input) {
        let label = answer["label"].as_str().unwrap();
        assert!(
            ["equivalent", "not_equivalent"].contains(&label),
            "{answer}"
        );
    }

    let unseen = dir.path().join("unseen.csv");
    let text = std::fs::read_to_string(&validation_file).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    let third = lines[3].rsplit_once(',').unwrap().0.to_string() + ",maybe";
    lines[3] = &third;
    std::fs::write(&unseen, lines.join("\n")).unwrap();
    let refused = train(&unseen);
    assert!(!refused.status.success());
    let err = stderr(&refused);
    assert!(
        err.contains(
            "unseen.csv: column `label`, row 2: label \"maybe\" is not one of the \
                      training file's labels (equivalent, not_equivalent)"
        ),
        "{err}"
    );
}
