//! Data-parallel training over several devices. CI has only the CPU, whose backends have
//! one device: N workers share it, which runs the whole multi-device path (a replica per
//! device in a thread of its own, gradients added on the first device, evaluation gathered
//! back into file order).

use burnbert_model::SequenceClassifier;
use burnbert_train::{CheckpointDirs, TrainOptions, World, accumulate_gradients};

use crate::common::*;
use crate::training::{
    assert_same_gradients, batcher, options, parameters, run_on, synthetic, tiny,
};

#[test]
fn devices_sharing_a_step_give_the_one_device_gradient() {
    let device = cpu().autodiff();
    let model = tiny(false, &device);
    let data = synthetic(12, 7);
    let all: Vec<usize> = (0..12).collect();
    let (one, one_loss, _) = accumulate_gradients(
        &model,
        std::slice::from_ref(&all),
        &data,
        &batcher(),
        World::new(std::slice::from_ref(&device)),
    );
    // Five micro-batches of unequal size on two devices: the first takes three, the second two.
    let micro: Vec<Vec<usize>> = [0..3, 3..5, 5..8, 8..10, 10..12]
        .into_iter()
        .map(|r| all[r].to_vec())
        .collect();
    let (two, two_loss, n) = accumulate_gradients(
        &model,
        &micro,
        &data,
        &batcher(),
        World::new(&[device.clone(), device]),
    );
    assert_eq!(n, 12);
    assert!(
        (one_loss - two_loss).abs() < 1e-5,
        "{one_loss} vs {two_loss}"
    );
    assert_same_gradients(&model, &one, &two);
}

/// N devices × batch B make the same updates as one device with batch N·B: the same
/// examples per step (the shuffled order does not depend on the batch size), the same mean
/// loss, the same weights within float noise. Without dropout, whose masks differ.
#[test]
fn two_devices_train_like_one_device_with_twice_the_batch() {
    let one_device = TrainOptions {
        batch_size: 8,
        ..options(2)
    };
    let two_devices = TrainOptions {
        batch_size: 4,
        devices: 2,
        ..options(2)
    };
    assert_eq!(two_devices.effective_batch_size(), 8);
    let (one, one_state) = run_on(&[cpu()], false, &one_device, &CheckpointDirs::default());
    let (two, two_state) = run_on(
        &[cpu(), cpu()],
        false,
        &two_devices,
        &CheckpointDirs::default(),
    );
    // 18 examples: steps of 8, 8 and 2, twice.
    assert_eq!((one_state.step, two_state.step), (6, 6));
    for (a, b) in one_state.epochs.iter().zip(&two_state.epochs) {
        assert!(
            (a.train_loss - b.train_loss).abs() < 1e-5,
            "epoch {}: loss {} on one device, {} on two",
            a.epoch,
            a.train_loss,
            b.train_loss
        );
        assert_eq!(a.metrics, b.metrics);
    }
    assert_close(
        &weights_but_key_biases(two),
        &weights_but_key_biases(one),
        1e-5,
        "weights after 6 steps",
    );
}

/// The parameters but the attention key biases: in exact arithmetic their gradient is zero
/// (softmax ignores a shift shared by all keys), so AdamW turns the float noise in it into
/// steps of about the learning rate, in either direction, whatever the devices.
fn weights_but_key_biases(mut model: SequenceClassifier) -> Vec<f32> {
    let SequenceClassifier::Bert(bert) = &mut model else {
        panic!("the tiny model is a BERT")
    };
    for layer in &mut bert.bert.encoder.layer {
        layer.attention.self_attention.key.bias = None;
    }
    parameters(&model)
}

#[test]
fn evaluation_over_devices_sees_every_example_once_in_file_order() {
    let model = tiny(false, &cpu());
    let data = synthetic(37, 3);
    let one = burnbert_eval::predict(&model, &data, &batcher(), 4, &[cpu()]);
    assert_eq!(one.logits.len(), 37);
    // 10 batches (the last of one example) over 2 and 3 devices: uneven shares.
    for n in [2, 3] {
        let many = burnbert_eval::predict(&model, &data, &batcher(), 4, &vec![cpu(); n]);
        assert_eq!(many, one, "{n} devices");
    }
}

#[test]
fn the_effective_batch_is_batch_times_devices_times_accumulation() {
    let options = TrainOptions {
        batch_size: 4,
        devices: 3,
        gradient_accumulation_steps: 2,
        ..TrainOptions::default()
    };
    assert_eq!(options.effective_batch_size(), 24);
    // 50 examples: 13 micro-batches (the last of 2), 6 per step: 3 steps, the last of one.
    assert_eq!(options.steps_per_epoch(50), 3);
    assert_eq!(options.total_steps(50), 9);
    let err = TrainOptions {
        devices: 0,
        ..options
    }
    .validate(50)
    .unwrap_err();
    assert!(err.to_string().contains("--devices"), "{err}");
}
