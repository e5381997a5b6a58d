//! The encoder families against transformers: the tiny random-weight models that
//! `make_fixtures.py families` saved with `save_pretrained` (`assets/fixtures/tiny-<model_type>/`)
//! load by their `model_type`, give transformers' hidden states, logits and loss on every
//! backend, and save back the file transformers wrote. Their training is checked step for step
//! in `training_parity.rs`.

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::Device;
use burnbert_model::{Family, ModelConfig, SequenceClassifier};
use safetensors::SafeTensors;

use crate::common::*;

/// f32 against f32 through the same arithmetic in another order, as `parity.rs`.
const TOLERANCE: f32 = 1e-4;

/// Each fixture's `model_type` and the family burnbert builds for it.
const FAMILIES: [(&str, Family); 6] = [
    ("roberta", Family::Roberta),
    ("xlm-roberta", Family::Roberta),
    ("electra", Family::Electra),
    ("distilbert", Family::DistilBert),
    ("modernbert", Family::ModernBert),
    ("deberta-v2", Family::DebertaV2),
];

fn load(model_type: &str, device: &Device) -> (ModelConfig, SequenceClassifier) {
    load_dir(&fixture(&format!("tiny-{model_type}")), device)
}

/// The config and model of a directory that transformers' `save_pretrained` wrote.
fn load_dir(dir: &Path, device: &Device) -> (ModelConfig, SequenceClassifier) {
    let config = ModelConfig::from_file(&dir.join("config.json")).unwrap();
    let (model, report) =
        SequenceClassifier::from_pretrained(&config, &dir.join("model.safetensors"), device)
            .unwrap();
    assert!(
        report.newly_initialized.is_empty() && report.unused.is_empty(),
        "{}: {report}",
        dir.display()
    );
    (config, model)
}

#[test]
fn every_family_matches_transformers_on_every_backend() {
    for device in devices() {
        for (model_type, family) in FAMILIES {
            let dir = fixture(&format!("tiny-{model_type}"));
            check_forward(&dir, family, &device);
        }
    }
}

/// Each family once at its base checkpoint's shape: the random-weight models that
/// `make_fixtures.py base-size` writes where `BURNBERT_BASE_SIZE_DIR` says (hundreds of MB each,
/// so not committed), with a batch of 200 tokens, longer than ModernBERT's local window. Run by
/// `bench/base-size-parity.sh`; the README keeps its last result.
#[test]
#[ignore = "needs the base-size models: run bench/base-size-parity.sh"]
fn every_family_matches_transformers_at_base_size() {
    let root = std::env::var("BURNBERT_BASE_SIZE_DIR")
        .expect("BURNBERT_BASE_SIZE_DIR: where make_fixtures.py base-size wrote the models");
    for (model_type, family) in FAMILIES {
        check_forward(&Path::new(&root).join(model_type), family, &cpu());
    }
}

/// The model in `dir` is of `family` and gives its reference.json's hidden states, logits and
/// loss on `device`.
fn check_forward(dir: &Path, family: Family, device: &Device) {
    let (config, model) = load_dir(dir, device);
    assert_eq!(config.family, family, "{}", dir.display());
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    let what = |part: &str| format!("{} on {device:?}: {part}", dir.display());
    let input = input(&reference, device);
    assert_close(
        &values(model.last_hidden_state(input.clone())),
        &floats(&reference["last_hidden_state"]),
        TOLERANCE,
        &what("last_hidden_state"),
    );
    assert_logits_and_loss(&model, input, &reference, TOLERANCE, &what("forward"));
}

/// The tensors of a safetensors file by name, as f32 bits with their shapes.
fn tensors(bytes: &[u8]) -> BTreeMap<String, (Vec<usize>, Vec<u8>)> {
    let file = SafeTensors::deserialize(bytes).unwrap();
    file.tensors()
        .into_iter()
        .map(|(name, view)| (name, (view.shape().to_vec(), view.data().to_vec())))
        .collect()
}

/// What burnbert saves is what transformers' `save_pretrained` wrote: the same key names,
/// shapes and bits, and a config.json with the family's own field names, which transformers
/// reads as before.
#[test]
fn every_family_saves_the_checkpoint_transformers_wrote() {
    for (model_type, _) in FAMILIES {
        let (config, model) = load(model_type, &cpu());
        let out = tempfile::tempdir().unwrap();
        model.save_pretrained(&config, out.path()).unwrap();
        let theirs =
            std::fs::read(fixture(&format!("tiny-{model_type}/model.safetensors"))).unwrap();
        let ours = std::fs::read(out.path().join("model.safetensors")).unwrap();
        let (theirs, ours) = (tensors(&theirs), tensors(&ours));
        assert_eq!(
            ours.keys().collect::<Vec<_>>(),
            theirs.keys().collect::<Vec<_>>(),
            "{model_type}: key names"
        );
        for (name, tensor) in &theirs {
            assert!(ours[name] == *tensor, "{model_type}: {name} differs");
        }
        let read = |path: std::path::PathBuf| -> serde_json::Value {
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
        };
        let theirs = read(fixture(&format!("tiny-{model_type}/config.json")));
        let ours = read(out.path().join("config.json"));
        for (key, value) in theirs.as_object().unwrap() {
            assert_eq!(
                ours.get(key),
                Some(value),
                "{model_type}: config.json's {key}"
            );
        }
    }
}

/// A checkpoint whose family burnbert does not build, and one family's weights under another's
/// config, each get one error that says so.
#[test]
fn unsupported_and_mismatched_families_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    std::fs::copy(fixture("tiny-bert/config.json"), &config).unwrap();
    crate::errors::edit_config(dir.path(), |c| c["model_type"] = "deberta".into());
    let err = ModelConfig::from_file(&config).unwrap_err().to_string();
    assert!(
        err.contains("model_type \"deberta\" is not supported")
            && err.contains(
                "bert, roberta, xlm-roberta, camembert, distilbert, electra, modernbert, deberta-v2"
            ),
        "{err}"
    );
    // DeBERTa-v2 checkpoints other than DeBERTa-v3's architecture.
    std::fs::copy(fixture("tiny-deberta-v2/config.json"), &config).unwrap();
    crate::errors::edit_config(dir.path(), |c| c["conv_kernel_size"] = 3.into());
    let err = ModelConfig::from_file(&config).unwrap_err().to_string();
    assert!(
        err.contains("DeBERTa-v2 with conv_kernel_size above 0 is not supported"),
        "{err}"
    );
    let bert = ModelConfig::from_file(&fixture("tiny-bert/config.json")).unwrap();
    for (model_type, prefix) in [("roberta", "roberta"), ("electra", "electra")] {
        let weights = fixture(&format!("tiny-{model_type}/model.safetensors"));
        let err = SequenceClassifier::from_pretrained(&bert, &weights, &cpu())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!(
                "holds a {model_type} model (its keys start with `{prefix}.`)"
            )) && err.contains("model_type says bert"),
            "{err}"
        );
    }
    let roberta = ModelConfig::from_file(&fixture("tiny-roberta/config.json")).unwrap();
    let err = SequenceClassifier::from_pretrained(
        &roberta,
        &fixture("tiny-bert/model.safetensors"),
        &cpu(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("holds a bert model"), "{err}");
}

/// Mixed precision and several devices take every family as they take BERT. In bf16 on flex
/// (f16 on wgpu, whose lavapipe has no bf16) the logits are as close to f32's as torch's bf16
/// autocast gets; two devices sharing a batch give the one-device gradients.
#[cfg(feature = "flex")]
#[test]
fn every_family_runs_in_mixed_precision_and_on_two_devices() {
    use burn::tensor::FloatDType;
    use burnbert_data::{Encoded, Label, PaddingBatcher};
    use burnbert_train::{World, accumulate_gradients};

    let mut mixed = vec![(
        burnbert_model::parse_device("flex").unwrap(),
        FloatDType::BF16,
    )];
    if cfg!(feature = "wgpu") {
        mixed.push((
            burnbert_model::parse_device("wgpu").unwrap(),
            FloatDType::F16,
        ));
    }
    for (model_type, _) in FAMILIES {
        let dir = fixture(&format!("tiny-{model_type}"));
        let reference = json(&format!("tiny-{model_type}/reference.json"));
        for (device, dtype) in &mixed {
            let (_, model) = load_dir(&dir, device);
            let exact = values(
                model
                    .clone()
                    .forward(input(&reference, device), None)
                    .logits,
            );
            let model = model.with_compute_dtype(Some(*dtype));
            let logits = values(model.forward(input(&reference, device), None).logits);
            // as parity.rs holds MiniLM: within 4 times the error of torch's bf16 autocast
            let autocast = floats(&reference["logits_autocast_bf16"]);
            let torch_error = autocast
                .iter()
                .zip(floats(&reference["logits"]))
                .fold(0.0f32, |m, (a, f)| m.max((a - f).abs()));
            let what = format!("{model_type} in {dtype:?} on {device:?}: logits");
            assert_close(&logits, &exact, 4.0 * torch_error, &what);
            assert_ne!(logits, exact, "{what}: not computed in 16 bits");
        }

        // The eval batch's rows, unpadded, as the batcher takes them.
        let rows: Vec<Encoded> = (0..3)
            .map(|i| {
                let len = ints(&reference["attention_mask"][i]).iter().sum::<i64>() as usize;
                let ids = ints(&reference["input_ids"][i]);
                let types = ints(&reference["token_type_ids"][i]);
                Encoded {
                    input_ids: ids[..len].iter().map(|&t| t as u32).collect(),
                    token_type_ids: types[..len].iter().map(|&t| t as u32).collect(),
                    label: Some(Label::Class(ints(&reference["labels"])[i] as usize)),
                }
            })
            .collect();
        let batcher = PaddingBatcher {
            pad_id: ints(&reference["input_ids"][2])[11] as u32,
            pad_to_multiple_of: 1,
        };
        let device = cpu().autodiff();
        let mut config = ModelConfig::from_file(&dir.join("config.json")).unwrap();
        config.hidden_dropout_prob = 0.0;
        config.attention_probs_dropout_prob = 0.0;
        config.classifier_dropout = None;
        let (model, _) =
            SequenceClassifier::from_pretrained(&config, &dir.join("model.safetensors"), &device)
                .unwrap();
        let one_device = [device.clone()];
        let (one, one_loss, _) = accumulate_gradients(
            &model,
            &[vec![0, 1, 2]],
            &rows,
            &batcher,
            World::new(&one_device),
        );
        let two_devices = [device.clone(), device];
        let (two, two_loss, n) = accumulate_gradients(
            &model,
            &[vec![0, 1], vec![2]],
            &rows,
            &batcher,
            World::new(&two_devices),
        );
        assert_eq!(n, 3);
        assert!(
            (one_loss - two_loss).abs() < 1e-5,
            "{model_type}: {one_loss} vs {two_loss}"
        );
        crate::training::assert_same_gradients(&model, &one, &two);
    }
}
