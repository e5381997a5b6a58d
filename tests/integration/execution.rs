//! The ways of running the same model against the plain one, which is the reference (it
//! matches transformers: `families.rs`, `parity.rs`), for every family:
//! - padding-free execution (`SequenceClassifier::with_padding_free`): with dropout off, the
//!   same logits, loss and gradients on batches of very different lengths, and the same
//!   weights after three AdamW steps, up to float summation order; with dropout on, a packed
//!   token draws its padded place's mask, and the two agree as well;
//! - gradient checkpointing (`SequenceClassifier::with_gradient_checkpointing`): each layer
//!   runs again in the backward pass with the same dropout masks, so the same logits, loss,
//!   gradients and AdamW steps.

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::Device;
use burnbert_data::{Encoded, Label, PaddingBatcher};
use burnbert_model::{BertInput, Labels, ModelConfig, SequenceClassifier};
use burnbert_train::{Data, World, optimizer_step};
use rand::{Rng, SeedableRng};

use crate::common::*;
use crate::training_parity::{Named, named, zero_gradient};

/// The float noise of another summation order, relative to each tensor's largest entry.
const TOLERANCE: f32 = 1e-5;

/// Gradient checkpointing recomputes the same operations on the same operands.
const CHECKPOINTED_TOLERANCE: f32 = 1e-6;

/// Every family's tiny model: BERT's and the others' (`make_fixtures.py families`).
fn fixtures() -> impl Iterator<Item = &'static str> {
    std::iter::once("bert").chain(crate::training_parity::FAMILIES)
}

/// Rows of the batches: one long row and the rest short; every row full (nothing to skip);
/// mixed lengths with a one-token row. 24 positions are three of the tiny ModernBERT's
/// 8-token local windows.
const BATCHES: [&[usize]; 3] = [&[24, 3, 5, 2], &[24, 24, 24, 24], &[7, 24, 1, 12]];

/// The AdamW steps' learning rate, large enough that three steps move the weights far beyond
/// the tolerance.
const LR: f64 = 1e-3;

fn config(fixture_name: &str) -> ModelConfig {
    ModelConfig::from_file(&fixture(&format!("tiny-{fixture_name}/config.json"))).unwrap()
}

/// The fixture's model, with its dropout or without.
fn model(fixture_name: &str, dropout: bool, device: &Device) -> SequenceClassifier {
    let mut config = config(fixture_name);
    if !dropout {
        config.hidden_dropout_prob = 0.0;
        config.attention_probs_dropout_prob = 0.0;
        config.classifier_dropout = None;
    }
    let weights = fixture(&format!("tiny-{fixture_name}/model.safetensors"));
    SequenceClassifier::from_pretrained(&config, &weights, device)
        .unwrap()
        .0
}

/// What one forward and backward pass gives.
struct Pass {
    logits: Vec<f32>,
    loss: Vec<f32>,
    grads: Vec<Named>,
}

/// The logits, loss and gradients of one forward and backward pass.
fn forward_backward(model: &SequenceClassifier, input: &BertInput, labels: &Labels) -> Pass {
    let output = model.forward(input.clone(), Some(labels.clone()));
    let loss = output.loss.unwrap();
    let grads = GradientsParams::from_grads(loss.backward(), model);
    Pass {
        logits: values(output.logits),
        loss: values(loss),
        grads: named(model, Some(&grads)),
    }
}

/// Two passes' logits, loss and every gradient, to `tolerance` of each one's scale.
fn assert_same_pass(actual: &Pass, expected: &Pass, tolerance: f32, what: &str) {
    let part = |part: &str| format!("{what}: {part}");
    assert_relative(&actual.logits, &expected.logits, tolerance, &part("logits"));
    assert_relative(&actual.loss, &expected.loss, tolerance, &part("loss"));
    assert_same_gradients(&actual.grads, &expected.grads, tolerance, &part("gradient"));
}

/// Three AdamW steps of `padded` padding-free and padded: the same losses and weights.
fn assert_padding_free_steps_alike(
    padded: SequenceClassifier,
    config: &ModelConfig,
    device: &Device,
    what: &str,
) {
    let (losses, weights) = adamw_steps(padded.clone().with_padding_free(true), config, device);
    let (want_losses, want_weights) = adamw_steps(padded, config, device);
    assert_relative(&losses, &want_losses, TOLERANCE, &format!("{what}: losses"));
    let what = format!("{what}: weights");
    assert_same_weights(&weights, &want_weights, LR, BATCHES.len(), &what);
}

/// Every fixture's rows of [`BATCHES`], one after another.
fn training_rows(config: &ModelConfig) -> Vec<Encoded> {
    BATCHES
        .iter()
        .enumerate()
        .flat_map(|(seed, lengths)| rows(config, lengths, seed as u64))
        .collect()
}

/// The losses and final weights of `train`'s own step on each of [`BATCHES`] in turn, on
/// `device`, seeded with 42 first.
fn adamw_steps(
    mut model: SequenceClassifier,
    config: &ModelConfig,
    device: &Device,
) -> (Vec<f32>, Vec<Named>) {
    let train = training_rows(config);
    let data = Data {
        train: &train,
        validation: &[],
        metrics: &[],
        num_classes: config.label_count(),
        batcher: &batcher(config),
    };
    device.seed(42);
    let mut optimizer = burnbert_train::optim::adamw(0.01);
    let mut losses = Vec::new();
    for step in 0..BATCHES.len() {
        let group = [(4 * step..4 * step + 4).collect::<Vec<_>>()];
        let (stepped, loss, _) = optimizer_step(
            model,
            &mut optimizer,
            &group,
            &data,
            World::new(std::slice::from_ref(device)),
            LR,
            None,
        );
        model = stepped;
        losses.push(loss);
    }
    (losses, named(&model, None))
}

/// Rows of random tokens of the given lengths (never the pad id, which RoBERTa's positions
/// count from), two sentences where the family reads token types.
fn rows(config: &ModelConfig, lengths: &[usize], seed: u64) -> Vec<Encoded> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let pad = config.pad_token_id.unwrap_or(0) as u32;
    lengths
        .iter()
        .enumerate()
        .map(|(i, &len)| {
            let input_ids = (0..len)
                .map(|_| {
                    loop {
                        let id = rng.random_range(0..config.vocab_size as u32);
                        if id != pad {
                            break id;
                        }
                    }
                })
                .collect();
            let types = config.type_vocab_size.max(1) as u32;
            Encoded {
                input_ids,
                token_type_ids: (0..len).map(|t| u32::from(2 * t >= len) % types).collect(),
                label: Some(Label::Class(i % config.label_count())),
            }
        })
        .collect()
}

fn batcher(config: &ModelConfig) -> PaddingBatcher {
    PaddingBatcher {
        pad_id: config.pad_token_id.unwrap_or(0) as u32,
        pad_to_multiple_of: 1,
    }
}

/// The rows padded into one batch, as `train` gives them to the model.
fn batch(config: &ModelConfig, rows: &[Encoded], device: &Device) -> (BertInput, Labels) {
    let padded =
        burn::data::dataloader::batcher::Batcher::batch(&batcher(config), rows.to_vec(), device);
    (padded.input, padded.labels.unwrap())
}

fn max_abs(values: &[f32]) -> f32 {
    values.iter().fold(0.0, |m, v| m.max(v.abs()))
}

/// `actual` within `tolerance` of `expected`'s largest entry.
fn assert_relative(actual: &[f32], expected: &[f32], tolerance: f32, what: &str) {
    assert_close(actual, expected, tolerance * max_abs(expected), what);
}

/// Two models' gradients, tensor by tensor. Those zero in exact arithmetic (the attention's
/// key biases) keep only rounding: they are held to the model's largest gradient instead.
fn assert_same_gradients(actual: &[Named], expected: &[Named], tolerance: f32, what: &str) {
    assert_eq!(actual.len(), expected.len());
    let largest = expected
        .iter()
        .map(|t| max_abs(&t.values))
        .fold(0.0, f32::max);
    for (tensor, want) in actual.iter().zip(expected) {
        let what = format!("{what}: {}", tensor.name);
        let scale = if zero_gradient(&tensor.name) {
            largest
        } else {
            max_abs(&want.values)
        };
        assert_close(&tensor.values, &want.values, tolerance * scale, &what);
    }
}

/// Two models' weights after `steps` AdamW steps at learning rate `lr`, tensor by tensor, to
/// [`TOLERANCE`] of each tensor's largest entry. AdamW normalises each entry's step, so an
/// entry whose gradient was within rounding of zero in some step moves by up to `lr` either
/// way whatever the arithmetic (measured: one entry of tiny XLM-R's word embeddings, 1.6e-5 of
/// the largest apart): one entry in 10,000 may differ, by no more than `lr` a step. The key
/// biases, whose every gradient is rounding, are not compared.
fn assert_same_weights(actual: &[Named], expected: &[Named], lr: f64, steps: usize, what: &str) {
    assert_eq!(actual.len(), expected.len());
    let reach = (lr * steps as f64) as f32;
    let (mut entries, mut off) = (0, Vec::new());
    for (tensor, want) in actual.iter().zip(expected) {
        if zero_gradient(&tensor.name) {
            continue;
        }
        let tolerance = TOLERANCE * max_abs(&want.values);
        for (at, (a, b)) in tensor.values.iter().zip(&want.values).enumerate() {
            entries += 1;
            if (a - b).abs() > tolerance {
                let entry = format!("{} entry {at}: {a} against {b}", tensor.name);
                assert!((a - b).abs() <= reach, "{what}: {entry}");
                off.push(entry);
            }
        }
    }
    assert!(
        off.len() * 10_000 <= entries,
        "{what}: {} of {entries} entries differ: {off:?}",
        off.len()
    );
}

/// Logits, loss, every gradient, and that the padding-free model skipped the padding: its
/// last hidden state is zero at padded positions, where the padded path computes them.
#[test]
fn every_family_gives_the_padded_paths_logits_loss_and_gradients() {
    for device in devices() {
        let device = device.autodiff();
        for name in fixtures() {
            let padded = model(name, false, &device);
            let config = config(name);
            for (seed, lengths) in BATCHES.iter().enumerate() {
                let what = format!("{name} on {device:?}, lengths {lengths:?}");
                let (input, labels) = batch(&config, &rows(&config, lengths, seed as u64), &device);
                let free = padded.clone().with_padding_free(true);
                let pass = forward_backward(&free, &input, &labels);
                let want = forward_backward(&padded, &input, &labels);
                assert_same_pass(&pass, &want, TOLERANCE, &what);
                let what = format!("{what}: ");

                let plain = device.clone().without_autodiff();
                let (plain_input, _) = batch(&config, &rows(&config, lengths, seed as u64), &plain);
                let hidden = |model: SequenceClassifier| {
                    values(model.valid().last_hidden_state(plain_input.clone()))
                };
                let width = config.hidden_size;
                let seq = lengths.iter().max().unwrap();
                let at_padding = |hidden: &[f32]| {
                    lengths
                        .iter()
                        .enumerate()
                        .flat_map(|(row, &len)| (len..*seq).map(move |t| (row * seq + t) * width))
                        .flat_map(|start| hidden[start..start + width].to_vec())
                        .collect::<Vec<f32>>()
                };
                let (free_padding, padded_padding) = (
                    at_padding(&hidden(free)),
                    at_padding(&hidden(padded.clone())),
                );
                if lengths.iter().all(|len| len == seq) {
                    assert!(free_padding.is_empty());
                } else {
                    assert!(
                        free_padding.iter().all(|&v| v == 0.0),
                        "{what}: padding computed"
                    );
                    assert!(
                        padded_padding.iter().any(|&v| v != 0.0),
                        "{what}: padded path"
                    );
                }
            }
        }
    }
}

/// Three AdamW steps of `train`'s own step on the three batches, padding-free and padded.
#[test]
fn every_family_takes_the_padded_paths_adamw_steps() {
    let device = cpu().autodiff();
    for name in fixtures() {
        let (config, padded) = (config(name), model(name, false, &device));
        assert_padding_free_steps_alike(padded, &config, &device, name);
    }
}

/// With dropout on, on the CPU backends: a packed token draws the mask its place in the padded
/// batch draws (`ops::token_dropout`), so the padding-free path computes the padded path's
/// function with the same randomness: the same logits, loss and gradients, and the same three
/// AdamW steps, up to float summation order. Dropout draws from Burn's process-wide
/// generators, which other tests draw from too, so the comparison runs alone, in a process of
/// its own.
#[test]
fn every_family_trains_padding_free_as_padded_with_dropout() {
    run_alone("execution::padding_free_with_dropout_alone");
}

#[test]
#[ignore = "run alone in its own process by every_family_trains_padding_free_as_padded_with_dropout"]
fn padding_free_with_dropout_alone() {
    for device in devices().into_iter().filter(burnbert_model::is_cpu_backend) {
        let device = device.autodiff();
        for name in fixtures() {
            let (config, padded) = (config(name), model(name, true, &device));
            for (seed, lengths) in BATCHES.iter().enumerate() {
                let what = format!("{name} on {device:?}, lengths {lengths:?}");
                let (input, labels) = batch(&config, &rows(&config, lengths, seed as u64), &device);
                let run = |model: &SequenceClassifier| {
                    device.seed(7);
                    forward_backward(model, &input, &labels)
                };
                let pass = run(&padded.clone().with_padding_free(true));
                assert_same_pass(&pass, &run(&padded), TOLERANCE, &what);
            }
            let what = format!("{name} on {device:?}");
            assert_padding_free_steps_alike(padded, &config, &device, &what);
        }
    }
}

/// `test`, an ignored test of this binary, alone in a process of its own, where no other test
/// draws from Burn's generators; it must run and pass.
fn run_alone(test: &str) {
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--ignored", "--test-threads=1"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout) + String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("1 passed"), "{test} did not run: {text}");
}

/// With gradient checkpointing (`SequenceClassifier::with_gradient_checkpointing`, which `train
/// --gradient-checkpointing` sets), with dropout on, on every backend (wgpu with burnbert's
/// kernels), on both paths and with pretrained or lazily initialised weights: each layer runs
/// again in the backward pass and draws the masks it drew forward, so the logits, loss, every
/// gradient and three AdamW steps are the plain run's.
#[test]
fn every_family_trains_alike_with_gradient_checkpointing() {
    run_alone("execution::gradient_checkpointing_alone");
}

#[test]
#[ignore = "run alone in its own process by every_family_trains_alike_with_gradient_checkpointing"]
fn gradient_checkpointing_alone() {
    // `train` itself, with dropout.
    let run = |gradient_checkpointing| {
        let options = burnbert_train::TrainOptions {
            gradient_checkpointing,
            ..crate::training::options(1)
        };
        let (model, state) = crate::training::run_on(&[cpu()], true, &options, &Default::default());
        (crate::training::parameters(&model), state.epochs)
    };
    let (weights, epochs) = run(true);
    let (want_weights, want_epochs) = run(false);
    assert_relative(
        &weights,
        &want_weights,
        CHECKPOINTED_TOLERANCE,
        "train's weights",
    );
    assert_eq!(epochs, want_epochs);

    for plain_device in devices() {
        let device = plain_device.clone().autodiff();
        for name in fixtures() {
            let config = config(name);
            for (random, padding_free) in [(false, false), (false, true), (true, false)] {
                let what = format!("{name} on {device:?}, padding-free {padding_free}");
                // Random weights are initialised lazily, at their first use: as `bench` makes them.
                let (what, model) = match random {
                    false => (what, model(name, true, &device)),
                    true => {
                        let random = SequenceClassifier::new(&config, &plain_device);
                        (what + ", random", random.to_device(&device).train())
                    }
                };
                let plain = model.with_padding_free(padding_free);
                let checkpointed = plain.clone().with_gradient_checkpointing(true);
                let run = |model: &SequenceClassifier| {
                    device.seed(7);
                    let (input, labels) = batch(&config, &rows(&config, BATCHES[0], 0), &device);
                    forward_backward(model, &input, &labels)
                };
                assert_same_pass(
                    &run(&checkpointed),
                    &run(&plain),
                    CHECKPOINTED_TOLERANCE,
                    &what,
                );
                let part = |part: &str| format!("{what}: {part}");
                let (losses, weights) = adamw_steps(checkpointed, &config, &device);
                let (want_losses, want_weights) = adamw_steps(plain, &config, &device);
                assert_relative(
                    &losses,
                    &want_losses,
                    CHECKPOINTED_TOLERANCE,
                    &part("losses"),
                );
                let tensors = weights.iter().zip(&want_weights);
                for (tensor, want) in tensors {
                    let what = part(&tensor.name);
                    assert_relative(&tensor.values, &want.values, CHECKPOINTED_TOLERANCE, &what);
                }
            }
        }
    }
}
