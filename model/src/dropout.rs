//! Dropout's condition and its mask on the CPU backends; `crate::ops::dropout` applies it.
//!
//! Burn's CPU backends (flex, ndarray) fill a random tensor one element at a time through a
//! freshly built `Bernoulli` sampler (`TensorData::random`), a noticeable part of a train step,
//! most of it for the attention-probability masks. There the mask is filled here from ChaCha8
//! instead, which is faster (BENCHMARKS.md has the measurements). Its seed is drawn from Burn's
//! generator, so `Device::seed` keeps runs reproducible as before. Each element's value is a
//! fixed word of the stream, so a padding-free batch's tokens can draw the values of their
//! places in the padded batch (`crate::ops::token_dropout`). On the GPU backends dropout
//! is one kernel each way (`burnbert_kernels::dropout`), its mask drawn on the device from a
//! seed that Burn's generator draws there too.
//!
//! Every mask starts from a draw of Burn's generator ([`draw`]), which a checkpointed layer
//! records as it runs and replays when it runs again in the backward pass
//! ([`recorded`], [`replayed`]; `crate::recompute`), so that it drops the same elements.

use std::cell::RefCell;
use std::collections::VecDeque;

use burn::nn::Dropout;
use burn::tensor::{Device, Distribution, Shape, Tensor, TensorData};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

/// Whether `layer` drops anything on `device`, by the conditions of Burn's
/// `Dropout::forward`: frozen or evaluating layers, and devices that cannot take a backward
/// pass, pass the input through.
pub fn dropout_applies(layer: &Dropout, device: &Device) -> bool {
    layer.training.is_enabled() && device.is_autodiff() && layer.prob > 0.0
}

/// A mask of `1 / keep` with probability `keep` and 0 otherwise, made on the host.
///
/// `rows` places the rows of `shape`'s last axis in a larger grid: row `r` takes the mask
/// values that row `rows[r]` of the whole grid would take. Packed tokens
/// ([`crate::ops::Layout`]) pass their places in `[batch × seq]`, so that they are dropped
/// exactly as the same tokens of the padded batch. `None` is the tensor in order.
pub(crate) fn cpu_mask<const D: usize>(
    shape: Shape,
    keep: f64,
    rows: Option<&[usize]>,
    device: &Device,
) -> Tensor<D> {
    let seed = mask_seed(device);
    let len = shape.num_elements();
    let values = match rows {
        Some(rows) => mask_values(len, shape[D - 1], rows, seed, keep),
        None => mask_values(len, len.max(1), &[0], seed, keep),
    };
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// The seed of a CPU mask's ChaCha8 stream, from a [`draw`] of Burn's generator on `device`.
pub(crate) fn mask_seed(device: &Device) -> u64 {
    // Two uniform f32 from Burn's generator carry 24 random bits each.
    let draws = draw(|| Tensor::<1>::random([2], Distribution::Default, device)).into_data();
    draws
        .iter::<f32>()
        .fold(0u64, |seed, u| (seed << 24) | (u * (1 << 24) as f32) as u64)
}

/// The draws this thread's masks start from, while a checkpointed layer records or replays
/// them.
enum Tape {
    Recording(Vec<Tensor<1>>),
    Replaying(VecDeque<Tensor<1>>),
}

thread_local! {
    static TAPE: RefCell<Option<Tape>> = const { RefCell::new(None) };
}

/// The random draw a mask starts from: `random()`, Burn's generator's next draw, kept when a
/// layer is [`recorded`]; the recorded draw, in order, when it is [`replayed`].
pub(crate) fn draw(random: impl FnOnce() -> Tensor<1>) -> Tensor<1> {
    TAPE.with_borrow_mut(|tape| match tape {
        None => random(),
        Some(Tape::Recording(draws)) => {
            let drawn = random();
            draws.push(drawn.clone());
            drawn
        }
        Some(Tape::Replaying(draws)) => draws
            .pop_front()
            .expect("a replayed layer draws no more masks than when it was recorded"),
    })
}

/// Whether masks are being recorded or replayed on this thread: then every mask must start
/// from [`draw`].
pub(crate) fn taping() -> bool {
    TAPE.with_borrow(Option::is_some)
}

/// `run()`, and the draws its masks started from, in order.
pub(crate) fn recorded<R>(run: impl FnOnce() -> R) -> (R, Vec<Tensor<1>>) {
    let outer = TAPE.replace(Some(Tape::Recording(Vec::new())));
    let result = run();
    match TAPE.replace(outer) {
        Some(Tape::Recording(draws)) => (result, draws),
        _ => unreachable!("the tape recorded here is restored here"),
    }
}

/// `run()` with its masks starting from `draws`, as [`recorded`] gave them: the same masks
/// where `run` is the same computation.
pub(crate) fn replayed<R>(draws: Vec<Tensor<1>>, run: impl FnOnce() -> R) -> R {
    let outer = TAPE.replace(Some(Tape::Replaying(draws.into())));
    let result = run();
    let rest = TAPE.replace(outer);
    assert!(
        matches!(&rest, Some(Tape::Replaying(left)) if left.is_empty()),
        "a replayed layer draws as many masks as when it was recorded"
    );
    result
}

/// `len` mask values from the ChaCha8 stream of `seed`, in rows of `width`: element `c` of row
/// `r` takes word `rows[r] × width + c`, and is `1 / keep` where that u32 word falls below
/// `keep` of the range, 0 otherwise.
fn mask_values(len: usize, width: usize, rows: &[usize], seed: u64, keep: f64) -> Vec<f32> {
    // Each chunk starts its own copy of the stream at its words, so the mask is the same
    // however the chunks fall on the cores.
    const CHUNK: usize = 1 << 15;
    let mut values = vec![0.0f32; len];
    values
        .par_chunks_mut(CHUNK)
        .enumerate()
        .for_each(|(index, chunk)| {
            let mut element = index * CHUNK;
            let mut rest = chunk;
            while !rest.is_empty() {
                let (row, column) = (element / width, element % width);
                let (run, tail) = rest.split_at_mut((width - column).min(rest.len()));
                fill_mask(run, seed, keep, rows[row] * width + column);
                element += run.len();
                rest = tail;
            }
        });
    values
}

/// `mask` from words `first_word..` of the ChaCha8 stream of `seed`: `1 / keep` where a word
/// falls below `keep` of the u32 range, 0 otherwise. A mask's element `i` takes word `i`, so any
/// part of it can be drawn again on its own (`crate::attention` draws its blocks' this way).
pub(crate) fn fill_mask(mask: &mut [f32], seed: u64, keep: f64, first_word: usize) {
    // P(u32 < threshold) = keep.
    let threshold = (keep * 2f64.powi(32)) as u64;
    let scale = (1.0 / keep) as f32;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_word_pos(first_word as u128);
    for value in mask.iter_mut() {
        *value = if (rng.next_u32() as u64) < threshold {
            scale
        } else {
            0.0
        };
    }
}

/// Burn's generators are one per backend and process; tests that seed them and draw take
/// turns, or a test running beside them would draw between the seeding and the mask.
#[cfg(test)]
pub(crate) fn seeding() -> std::sync::MutexGuard<'static, ()> {
    static GENERATORS: std::sync::Mutex<()> = std::sync::Mutex::new(());
    GENERATORS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::dropout;
    use burn::module::Module;
    use burn::nn::DropoutConfig;

    /// The CPU, and wgpu (lavapipe) where compiled in, where dropout is burnbert's kernel.
    fn devices() -> Vec<Device> {
        #[cfg_attr(not(feature = "wgpu"), allow(unused_mut))]
        let mut devices = vec![crate::parse_device("cpu").unwrap().autodiff()];
        #[cfg(feature = "wgpu")]
        devices.push(crate::parse_device("wgpu").unwrap().autodiff());
        devices
    }

    fn ones(device: &Device) -> Tensor<2> {
        Tensor::ones([200, 500], device)
    }

    #[test]
    fn zeroes_a_fraction_prob_and_scales_the_rest() {
        let _turn = seeding();
        for device in devices() {
            device.seed(7);
            let out = dropout(&DropoutConfig::new(0.1).init(), ones(&device)).into_data();
            let values: Vec<f32> = out.iter::<f32>().collect();
            // 100,000 Bernoulli(0.9) draws: standard deviation 95, so 5 sigma is ±475; and in
            // each tenth (standard deviation 30), ±150.
            let kept = |values: &[f32]| values.iter().filter(|&&v| v != 0.0).count() as i64;
            let all = kept(&values);
            assert!(
                (all - 90_000).abs() < 475,
                "{device:?}: {all} kept of 100000"
            );
            for (i, tenth) in values.chunks(10_000).enumerate() {
                let part = kept(tenth);
                assert!(
                    (part - 9_000).abs() < 150,
                    "{device:?}: {part} kept in tenth {i}"
                );
            }
            // A kept 1.0 becomes 1 / 0.9 exactly as Burn computes it in f32.
            let scale = (1.0 / 0.9f64) as f32;
            assert!(values.iter().all(|&v| v == 0.0 || v == scale), "{device:?}");
        }
    }

    /// The chunks drawn on the cores read as one stream drawn in order.
    #[test]
    fn mask_is_one_chacha_stream_in_order() {
        let len = 100_003;
        let mut rng = ChaCha8Rng::seed_from_u64(42);
        let threshold = (0.9 * 2f64.powi(32)) as u64;
        let scale = (1.0 / 0.9f64) as f32;
        let serial: Vec<f32> = (0..len)
            .map(|_| {
                if (rng.next_u32() as u64) < threshold {
                    scale
                } else {
                    0.0
                }
            })
            .collect();
        assert_eq!(mask_values(len, len, &[0], 42, 0.9), serial);
    }

    /// Rows placed in a grid take the grid's mask values at their places, across chunks.
    #[test]
    fn placed_rows_take_the_grid_rows_at_their_places() {
        let width = 10_007;
        let grid = mask_values(6 * width, width, &[0, 1, 2, 3, 4, 5], 9, 0.9);
        let places = [4, 1, 5];
        let placed = mask_values(places.len() * width, width, &places, 9, 0.9);
        for (row, &place) in places.iter().enumerate() {
            assert_eq!(
                placed[row * width..(row + 1) * width],
                grid[place * width..(place + 1) * width],
                "row {row}"
            );
        }
        assert_eq!(grid, mask_values(6 * width, 6 * width, &[0], 9, 0.9));
    }

    #[test]
    fn gradient_flows_through_the_kept_elements_only() {
        let _turn = seeding();
        for device in devices() {
            device.seed(3);
            let x = ones(&device).require_grad();
            let out = dropout(&DropoutConfig::new(0.5).init(), x.clone());
            let grads = out.clone().sum().backward();
            let grad = x.grad(&grads).unwrap();
            // d(sum)/dx is the mask itself: 2 where kept, 0 where dropped.
            out.inner().into_data().assert_eq(&grad.into_data(), true);
        }
    }

    #[test]
    fn burn_seed_makes_masks_reproducible() {
        let _turn = seeding();
        for device in devices() {
            let layer = DropoutConfig::new(0.1).init();
            let draw = || dropout(&layer, ones(&device)).into_data();
            let mask = |seed| {
                device.seed(seed);
                draw()
            };
            mask(1).assert_eq(&mask(1), true);
            assert_ne!(mask(1), mask(2), "{device:?}");
            // Two layers after one seeding draw two masks.
            device.seed(1);
            let (first, second) = (draw(), draw());
            assert_ne!(first, second, "{device:?}");
        }
    }

    #[test]
    fn identity_when_evaluating_or_without_autodiff() {
        for device in devices() {
            let layer = DropoutConfig::new(0.1).init();
            let expected = ones(&device).into_data();
            dropout(&layer.clone().valid(), ones(&device))
                .into_data()
                .assert_eq(&expected, true);
            let plain = device.clone().without_autodiff();
            dropout(&layer, ones(&plain))
                .into_data()
                .assert_eq(&expected, true);
        }
    }
}
