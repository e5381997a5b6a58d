//! The Burn model against transformers' outputs (`assets/fixtures/make_fixtures.py`),
//! for both checkpoint formats, legacy key names, a bare encoder, and a real pretrained
//! checkpoint (all-MiniLM-L6-v2) from the offline Hugging Face cache.

use crate::common::*;
use burn::tensor::{DType, Device, FloatDType, Tensor, TensorData};
use burnbert_data::Hub;
use burnbert_model::{BertInput, Labels, ModelConfig, SequenceClassifier};

/// f32 against f32 through the same arithmetic in another order.
const TOLERANCE: f32 = 1e-4;

fn load(
    dir: &str,
    weights: &str,
    device: &Device,
) -> (SequenceClassifier, burnbert_model::LoadReport) {
    let config = ModelConfig::from_file(&fixture(&format!("{dir}/config.json"))).unwrap();
    SequenceClassifier::from_pretrained(&config, &fixture(&format!("{dir}/{weights}")), device)
        .unwrap()
}

fn check_tiny(
    model: &SequenceClassifier,
    reference: &serde_json::Value,
    what: &str,
    device: &Device,
) {
    let what = &format!("{what} on {device:?}");
    let input = input(reference, device);
    let encoder = bert(model).bert.forward(input.clone());
    assert_close(
        &values(encoder.last_hidden_state),
        &floats(&reference["last_hidden_state"]),
        TOLERANCE,
        &format!("{what}: last_hidden_state"),
    );
    assert_close(
        &values(encoder.pooler_output.unwrap()),
        &floats(&reference["pooler_output"]),
        TOLERANCE,
        &format!("{what}: pooler_output"),
    );
    assert_eq!(ints(&reference["labels"]).len(), 3);
    assert_logits_and_loss(model, input, reference, TOLERANCE, what);
}

#[test]
fn tiny_safetensors_matches_transformers_on_every_backend() {
    for device in devices() {
        let (model, report) = load("tiny-bert", "model.safetensors", &device);
        assert!(
            report.newly_initialized.is_empty() && report.unused.is_empty(),
            "{report}"
        );
        assert_eq!(report.loaded, 41);
        check_tiny(
            &model,
            &json("tiny-bert/reference.json"),
            "safetensors",
            &device,
        );
    }
}

#[test]
fn tiny_pytorch_bin_matches_transformers() {
    let (model, _) = load("tiny-bert", "pytorch_model.bin", &cpu());
    check_tiny(
        &model,
        &json("tiny-bert/reference.json"),
        "pytorch_model.bin",
        &cpu(),
    );
}

#[test]
fn legacy_gamma_beta_names_load() {
    let (model, report) = load("tiny-bert-legacy", "pytorch_model.bin", &cpu());
    assert_eq!(report.loaded, 41, "{report}");
    check_tiny(
        &model,
        &json("tiny-bert/reference.json"),
        "legacy names",
        &cpu(),
    );
}

#[test]
fn bare_encoder_loads_and_reports_the_new_head() {
    let (model, report) = load("tiny-bert-base-model", "model.safetensors", &cpu());
    let mut new = report.newly_initialized.clone();
    new.sort();
    assert_eq!(new, ["classifier.bias", "classifier.weight"]);
    assert_eq!(report.unused, ["bert.embeddings.position_ids"], "{report}");
    let reference = json("tiny-bert/reference.json");
    let encoder = bert(&model).bert.forward(input(&reference, &cpu()));
    assert_close(
        &values(encoder.pooler_output.unwrap()),
        &floats(&reference["pooler_output"]),
        TOLERANCE,
        "bare encoder pooler_output",
    );
}

#[test]
fn regression_head_uses_mse() {
    let device = cpu();
    let (model, _) = load("tiny-bert-regression", "model.safetensors", &device);
    let reference = json("tiny-bert-regression/reference.json");
    let labels = Labels::Scores(Tensor::from_data(
        TensorData::new(floats(&reference["labels"]), [3]),
        &device,
    ));
    let output = model.forward(input(&reference, &device), Some(labels));
    assert_close(
        &values(output.logits),
        &floats(&reference["logits"]),
        TOLERANCE,
        "regression logits",
    );
    let loss = values(output.loss.unwrap())[0];
    assert!(
        (loss - reference["loss"].as_f64().unwrap() as f32).abs() < TOLERANCE,
        "mse {loss}"
    );
}

#[test]
fn padding_does_not_change_real_tokens() {
    let device = cpu();
    let (model, _) = load("tiny-bert", "model.safetensors", &device);
    let reference = json("tiny-bert/reference.json");
    // Row 2 has 5 real tokens of 12: run it alone, unpadded.
    let row = |key: &str| ints(&reference[key][2])[..5].to_vec();
    let alone = BertInput {
        input_ids: Tensor::from_data(TensorData::new(row("input_ids"), [1, 5]), &device),
        token_type_ids: Tensor::from_data(TensorData::new(row("token_type_ids"), [1, 5]), &device),
        attention_mask: Tensor::from_data(TensorData::new(row("attention_mask"), [1, 5]), &device),
    };
    let unpadded = values(bert(&model).bert.forward(alone).last_hidden_state);
    let padded = values(
        bert(&model)
            .bert
            .forward(input(&reference, &device))
            .last_hidden_state,
    );
    let hidden = 32;
    let padded_row2 = &padded[2 * 12 * hidden..2 * 12 * hidden + 5 * hidden];
    assert_close(&unpadded, padded_row2, 1e-5, "row 2 padded vs alone");
}

/// all-MiniLM-L6-v2 from the offline cache on `device`, with its load report.
fn minilm(device: &Device) -> (SequenceClassifier, burnbert_model::LoadReport) {
    require_hf_home();
    let files = Hub::from_env("main", true)
        .model_files("sentence-transformers/all-MiniLM-L6-v2")
        .unwrap();
    let config = ModelConfig::from_file(&files.config).unwrap();
    SequenceClassifier::from_pretrained(&config, &files.weights, device).unwrap()
}

/// all-MiniLM-L6-v2 in f32 against transformers, on every backend compiled in (ndarray,
/// flex, and wgpu with burnbert's GPU kernels in CI).
#[test]
fn all_minilm_l6_v2_from_the_offline_cache_matches_transformers() {
    let reference = json("minilm_reference.json");
    for device in devices() {
        let (model, report) = minilm(&device);
        assert!(
            report
                .unused
                .contains(&"bert.embeddings.position_ids".to_string()),
            "{report}"
        );
        let output = bert(&model).bert.forward(input(&reference, &device));
        let [batch, seq] = dims2(&reference["input_ids"]);
        let on = |what: &str| format!("{device:?}: MiniLM {what}");
        assert_close(
            &values(output.pooler_output.unwrap()),
            &floats(&reference["pooler_output"]),
            TOLERANCE,
            &on("pooler_output"),
        );
        let hidden = output.last_hidden_state;
        let cls = hidden.clone().narrow(1, 0, 1).reshape([batch, 384]);
        assert_close(
            &values(cls),
            &floats(&reference["last_hidden_state_cls"]),
            TOLERANCE,
            &on("[CLS]"),
        );
        let first_pair = floats(&reference["last_hidden_state_first_pair"]);
        let real = first_pair.len() / 384;
        let pair0 = hidden
            .clone()
            .narrow(0, 0, 1)
            .narrow(1, 0, real)
            .reshape([real * 384]);
        assert_close(
            &values(pair0),
            &first_pair,
            TOLERANCE,
            &on("pair 0 hidden states"),
        );
        let sums = hidden.sum_dim(2).reshape([batch * seq]);
        assert_close(
            &values(sums),
            &floats(&reference["last_hidden_state_token_sum"]),
            1e-3,
            &on("token sums"),
        );
    }
}

/// Largest absolute difference between two arrays.
fn max_difference(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Mixed precision (`--mixed-precision bf16`) on every backend with bfloat16, and in f16 on
/// wgpu (lavapipe has no bfloat16), which runs burnbert's GPU kernels as CUDA does in bf16:
/// MiniLM's outputs stay within a few times the distance that bf16 autocast moves
/// transformers' own (both measured from transformers' f32 outputs), come back in f32, and do
/// move: a run that ignored the setting would sit within f32 rounding of the reference.
#[test]
fn all_minilm_l6_v2_in_mixed_precision_is_as_close_as_torch_autocast() {
    let reference = json("minilm_reference.json");
    let [batch, _] = dims2(&reference["input_ids"]);
    let runs: Vec<(Device, FloatDType)> = devices()
        .into_iter()
        .filter_map(|device| {
            if device.supports_dtype(DType::BF16) {
                Some((device, FloatDType::BF16))
            } else if burnbert_model::runs_own_kernels(&device) {
                Some((device, FloatDType::F16))
            } else {
                None
            }
        })
        .collect();
    assert!(
        !cfg!(feature = "flex") || runs.iter().any(|(_, d)| *d == FloatDType::BF16),
        "flex has bfloat16"
    );
    for (device, dtype) in runs {
        let model = minilm(&device).0.with_compute_dtype(Some(dtype));
        let output = bert(&model).bert.forward(input(&reference, &device));
        let pooled = output.pooler_output.unwrap();
        let cls = output
            .last_hidden_state
            .narrow(1, 0, 1)
            .reshape([batch, 384]);
        assert_eq!((pooled.dtype(), cls.dtype()), (DType::F32, DType::F32));
        for (what, ours, f32_key, autocast_key) in [
            (
                "pooler_output",
                pooled,
                "pooler_output",
                "autocast_bf16_pooler_output",
            ),
            (
                "[CLS]",
                cls,
                "last_hidden_state_cls",
                "autocast_bf16_last_hidden_state_cls",
            ),
        ] {
            let exact = floats(&reference[f32_key]);
            let ours = max_difference(&values(ours), &exact);
            let autocast = max_difference(&floats(&reference[autocast_key]), &exact);
            println!("{device:?} {what}: burnbert {dtype:?} {ours}, bf16 autocast {autocast}");
            assert!(
                ours > 2.0 * TOLERANCE && ours <= 4.0 * autocast,
                "{device:?} MiniLM {what}: {dtype:?} moved it by {ours}, bf16 autocast by {autocast}"
            );
        }
    }
}

/// Burn's exact GELU, forward and backward, against PyTorch's in float64 on every backend.
/// flex computes it with burnbert's branch-free erf (vendor/README.md), whose error bound
/// (1.5e-7) is PyTorch's own on the CPU. The other backends take Burn 0.22's default
/// `gelu_backward`, which is the derivative of GELU's tanh approximation, not of the exact
/// GELU they compute forward: up to 8.7e-4 off PyTorch's derivative.
#[test]
fn gelu_matches_pytorch_forward_and_backward_on_every_backend() {
    let reference = json("gelu_reference.json");
    let x = floats(&reference["x"]);
    let flex = burnbert_model::parse_device("flex").ok();
    for device in devices() {
        let derivative_tolerance = if Some(&device) == flex.as_ref() {
            1e-6
        } else {
            1e-3
        };
        let device = device.autodiff();
        let input =
            Tensor::<1>::from_data(TensorData::new(x.clone(), [x.len()]), &device).require_grad();
        let output = burn::tensor::activation::gelu(input.clone());
        let grads = output.clone().sum().backward();
        let derivative = input.grad(&grads).unwrap();
        let what = format!("gelu on {device:?}");
        assert_close(&values(output), &floats(&reference["gelu"]), 1e-6, &what);
        assert_close(
            &values(derivative),
            &floats(&reference["derivative"]),
            derivative_tolerance,
            &format!("{what}: derivative"),
        );
    }
}

/// Sums and maxima over either axis of tall, wide and odd-sized matrices (a bias gradient is a
/// sum over 4096 rows) against the same computed here in f64. On wgpu they run the reduction
/// routine that burnbert's patched burn-cubecl picks (vendor/README.md).
#[test]
fn axis_reductions_match_f64_on_every_backend() {
    for (rows, cols) in [(4096, 96), (6, 4096), (1000, 31)] {
        // Deterministic values in [-2, 2).
        let data: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 250.0)
            .collect();
        let at = |r: usize, c: usize| data[r * cols + c] as f64;
        let column_sums: Vec<f32> = (0..cols)
            .map(|c| (0..rows).map(|r| at(r, c)).sum::<f64>() as f32)
            .collect();
        let row_sums: Vec<f32> = (0..rows)
            .map(|r| (0..cols).map(|c| at(r, c)).sum::<f64>() as f32)
            .collect();
        let column_maxima: Vec<f32> = (0..cols)
            .map(|c| (0..rows).map(|r| at(r, c)).fold(f64::MIN, f64::max) as f32)
            .collect();
        for device in devices() {
            let x = Tensor::<2>::from_data(TensorData::new(data.clone(), [rows, cols]), &device);
            let what = format!("{rows} × {cols} on {device:?}");
            assert_close(
                &values(x.clone().sum_dim(0)),
                &column_sums,
                2e-3,
                &format!("{what}: column sums"),
            );
            assert_close(
                &values(x.clone().sum_dim(1)),
                &row_sums,
                2e-3,
                &format!("{what}: row sums"),
            );
            assert_close(
                &values(x.max_dim(0)),
                &column_maxima,
                0.0,
                &format!("{what}: column maxima"),
            );
        }
    }
}
