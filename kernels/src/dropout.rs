//! Dropout as one kernel forward and one backward: [`crate::dropout`]. The mask is drawn from
//! Philox4x32-10 keyed by the mask's 64-bit seed and counting over the elements, and drawn
//! again in the backward pass instead of kept.
//!
//! Burn's dropout is three kernels forward (a Bernoulli tensor, its scaling, the product) and
//! keeps the mask for the backward pass: for bert-base at batch 32 × 128, 300 MB of
//! attention-probability masks per step.

use burn::backend::Cube;
use burn::backend::autodiff::{
    checkpoint::base::Checkpointer,
    grads::Gradients,
    ops::{Backward, Ops, unary},
};
use burn::tensor::{DType, Device, Distribution, Tensor};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;

use crate::autodiff::{Input, with_backward};
use crate::host::{elementwise_launch, empty_like};
use kernel::dropout_mask;

/// The kernels, apart from the host code: CubeCL's `Tensor` is not Burn's. [`kept`] is shared
/// with `crate::add_norm`, which drops out inside its own kernel.
pub(crate) mod kernel {
    use burn_cubecl::cubecl::{self, prelude::*};

    /// Word `word` (0 to 3) of the Philox4x32-10 block of `counter` under `key` (Salmon,
    /// Moraes, Dror and Shaw, "Parallel Random Numbers: As Easy as 1, 2, 3", SC 2011; the
    /// generator of cuRAND and of PyTorch's CUDA dropout). Ten rounds of two 32 × 32 → 64-bit
    /// products, as Random123's `philox4x32_R`; the tests check its published answers.
    #[cube]
    #[allow(clippy::too_many_arguments)]
    pub fn philox(c0: u32, c1: u32, c2: u32, c3: u32, k0: u32, k1: u32, word: u32) -> u32 {
        let (mut c0, mut c1, mut c2, mut c3) = (c0, c1, c2, c3);
        let (mut k0, mut k1) = (k0, k1);
        #[unroll]
        for _ in 0..10u32 {
            let (hi0, lo0) = (c0.mul_hi(0xD251_1F53u32), c0 * 0xD251_1F53u32);
            let (hi1, lo1) = (c2.mul_hi(0xCD9E_8D57u32), c2 * 0xCD9E_8D57u32);
            c0 = hi1 ^ c1 ^ k0;
            c1 = lo1;
            c2 = hi0 ^ c3 ^ k1;
            c3 = lo0;
            // The Weyl sequence of the key (the golden ratio and √3 - 1, as 32-bit fractions).
            k0 += 0x9E37_79B9u32;
            k1 += 0xBB67_AE85u32;
        }
        select(
            word < 2u32,
            select(word == 0u32, c0, c1),
            select(word == 2u32, c2, c3),
        )
    }

    /// Whether element `index` is kept: its uniform 32-bit draw is below `threshold`. The
    /// mask's 64-bit seed is the key; the element's block of four, `index / 4`, is the 64-bit
    /// counter, and `index % 4` picks the word. Distinct seeds give independent streams, and
    /// the counter never repeats within a mask, so no two masks or elements share a draw.
    #[cube]
    pub fn kept(seed: &Tensor<f32>, index: usize, threshold: u32) -> bool {
        // The seed's three floats carry 24 random bits each (see `seed`).
        let (s0, s1, s2) = (
            u32::cast_from(seed[0]),
            u32::cast_from(seed[1]),
            u32::cast_from(seed[2]),
        );
        let (key_low, key_high) = (s0 | (s1 << 24u32), (s1 >> 8u32) | (s2 << 16u32));
        let block = index / 4;
        // Two shifts of 16: one of 32 would be undefined where `usize` is 32 bits wide.
        let block_high = u32::cast_from((block >> 16) >> 16);
        let word = u32::cast_from(index % 4);
        philox(
            u32::cast_from(block),
            block_high,
            0u32,
            0u32,
            key_low,
            key_high,
            word,
        ) < threshold
    }

    /// `output = input * scale` where the mask keeps the element, else 0; one unit per
    /// element. The same kernel applies the mask to the activations forward and to their
    /// gradient backward.
    #[cube(launch, create_dummy_kernel)]
    pub fn dropout_mask<F: Float>(
        input: &Tensor<F>,
        seed: &Tensor<f32>,
        output: &mut Tensor<F>,
        threshold: u32,
        scale: f32,
        #[define(F)] _dtype: ElemType,
    ) {
        let i = ABSOLUTE_POS;
        if i >= input.len() {
            terminate!();
        }
        let value = f32::cast_from(input[i]) * scale;
        output[i] = F::cast_from(select(kept(seed, i, threshold), value, 0.0));
    }
}

/// [`crate::dropout`].
pub fn dropout<const D: usize>(x: Tensor<D>, seed: Tensor<1>, keep: f64) -> Tensor<D> {
    dropout_with(x, Mask::with_seed(seed, keep))
}

/// [`crate::dropout_seed`]: three floats of 24 random bits each, exact in f32; the kernels
/// take 64 of the 72.
pub fn seed(device: &Device) -> Tensor<1> {
    Tensor::<1>::random(
        [3],
        Distribution::Uniform(0.0, (1 << 24) as f64),
        (device, DType::F32),
    )
}

/// [`dropout`] with the given mask.
pub(crate) fn dropout_with<const D: usize>(x: Tensor<D>, mask: Mask) -> Tensor<D> {
    with_backward(DropoutBackward, [x.into()], |[x]| (mask.apply(x), mask))
}

/// One dropout mask: enough to draw it again.
#[derive(Debug, Clone)]
pub(crate) struct Mask {
    pub seed: CubeTensor,
    /// An element is kept where its 32-bit draw is below this.
    pub threshold: u32,
    /// `1 / keep`.
    pub scale: f32,
}

impl Mask {
    /// The mask of `seed`, three integers below 2^24 as f32 on a CubeCL device.
    pub fn with_seed(seed: Tensor<1>, keep: f64) -> Self {
        Self {
            seed: Input::from(seed).into_primitive(),
            threshold: (keep * 2f64.powi(32)).min(u32::MAX as f64) as u32,
            scale: (1.0 / keep) as f32,
        }
    }

    /// The mask applied to `tensor`: the activations forward, their gradient backward.
    pub fn apply(&self, tensor: CubeTensor) -> CubeTensor {
        let tensor = into_contiguous(tensor);
        let output = empty_like(&tensor);
        let client = tensor.client.clone();
        let (cube_dim, cube_count) = elementwise_launch(&tensor);
        let dtype = burn::backend::cubecl::dtype_to_storage_type(tensor.dtype);
        dropout_mask::launch(
            &client,
            cube_count,
            cube_dim,
            tensor.into_tensor_arg(),
            self.seed.clone().into_tensor_arg(),
            output.clone().into_tensor_arg(),
            self.threshold,
            self.scale,
            dtype,
        );
        output
    }
}

/// The autodiff node: its state is the mask's seed and scalars.
#[derive(Debug)]
struct DropoutBackward;

impl Backward<Cube, 1> for DropoutBackward {
    type State = Mask;

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        unary::<Cube, _>(ops.parents, ops.node, grads, |grad| ops.state.apply(grad));
    }
}

#[cfg(all(test, feature = "wgpu"))]
mod tests {
    use super::*;
    use burn::tensor::TensorData;
    use burn_cubecl::cubecl::{CubeCount, CubeDim};
    use test_kernel::philox_block;

    mod test_kernel {
        use super::super::kernel::philox;
        use burn_cubecl::cubecl::{self, prelude::*};

        /// The four words of one Philox4x32-10 block, as eight 16-bit halves in f32 (exact).
        #[cube(launch)]
        #[allow(clippy::too_many_arguments)]
        pub fn philox_block(
            output: &mut Tensor<f32>,
            c0: u32,
            c1: u32,
            c2: u32,
            c3: u32,
            k0: u32,
            k1: u32,
        ) {
            let word = ABSOLUTE_POS;
            if word < 4 {
                let value = philox(c0, c1, c2, c3, k0, k1, u32::cast_from(word));
                output[2 * word] = f32::cast_from(value & 0xFFFFu32);
                output[2 * word + 1] = f32::cast_from(value >> 16u32);
            }
        }
    }

    /// The generator's block for `counter` and `key`, computed on wgpu.
    fn block(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
        let device = crate::testing::wgpu();
        let output = Input::from(Tensor::<1>::zeros([8], &device)).into_primitive();
        let client = output.client.clone();
        let [c0, c1, c2, c3] = counter;
        let [k0, k1] = key;
        philox_block::launch(
            &client,
            CubeCount::Static(1, 1, 1),
            CubeDim::new_1d(4),
            output.clone().into_tensor_arg(),
            c0,
            c1,
            c2,
            c3,
            k0,
            k1,
        );
        let halves: Vec<f32> = Tensor::<1>::from_primitive::<Cube>(output)
            .into_data()
            .try_to_vec()
            .unwrap();
        std::array::from_fn(|w| halves[2 * w] as u32 | ((halves[2 * w + 1] as u32) << 16))
    }

    /// The kernel's Philox4x32-10 gives Random123's published known answers.
    #[test]
    fn philox_gives_random123s_known_answers() {
        for (counter, key, expected) in crate::self_check::PHILOX_KNOWN_ANSWERS {
            assert_eq!(
                block(counter, key),
                expected,
                "counter {counter:x?}, key {key:x?}"
            );
        }
    }

    /// Elements in the masks below: 2^20, so that a correlation between two independent
    /// masks, Pearson's r, has a standard deviation of 1 / √N = 1 / 1024.
    const N: usize = 1 << 20;

    /// Whether each of [`N`] elements is kept by the mask of `seed` (three 24-bit integers),
    /// keeping half.
    fn kept_with_seed(seed: [f32; 3]) -> Vec<bool> {
        let device = crate::testing::wgpu();
        let seed = Tensor::<1>::from_data(TensorData::new(seed.to_vec(), [3]), &device);
        kept(Mask::with_seed(seed, 0.5), &device)
    }

    /// Where `mask` keeps an element of a vector of [`N`] ones.
    fn kept(mask: Mask, device: &Device) -> Vec<bool> {
        let ones = Input::from(Tensor::<1>::ones([N], device)).into_primitive();
        let output = Tensor::<1>::from_primitive::<Cube>(mask.apply(ones));
        let values: Vec<f32> = output.into_data().try_to_vec().unwrap();
        assert!(values.iter().all(|&v| v == 0.0 || v == 2.0));
        values.iter().map(|&v| v != 0.0).collect()
    }

    /// Pearson's correlation of two masks (as 0 and 1).
    fn correlation(a: &[bool], b: &[bool]) -> f64 {
        let n = a.len() as f64;
        let mean = |m: &[bool]| m.iter().filter(|&&k| k).count() as f64 / n;
        let (mean_a, mean_b) = (mean(a), mean(b));
        let both = a.iter().zip(b).filter(|(x, y)| **x && **y).count() as f64 / n;
        (both - mean_a * mean_b) / (mean_a * (1.0 - mean_a) * mean_b * (1.0 - mean_b)).sqrt()
    }

    /// Five standard deviations of the correlation of independent masks: a false failure
    /// once in about 1.7 million comparisons; the old hash-based masks' permuted copies
    /// correlate fully at their offset, and a stream that repeats correlates at 1.
    const BOUND: f64 = 5.0 / 1024.0;

    /// The kernel's masks are Philox4x32-10's as drawn on the host (`self_check::host_mask`,
    /// whose generator gives Random123's answers), element for element: the key made of the
    /// seed, the counters, the word of each element and the threshold (half: 2^31). A small
    /// seed, and the one whose 64-bit key has every bit set.
    #[test]
    fn masks_are_philox_as_drawn_on_the_host() {
        for seed in [[12345, 678, 9], [0xFF_FFFF; 3]] {
            let kept = kept_with_seed(seed.map(|s| s as f32));
            let host = crate::self_check::host_mask(seed, 1 << 31, N);
            let differ = (0..N).find(|&i| kept[i] != host[i]);
            assert_eq!(
                differ.map(|i| (i, kept[i])),
                None,
                "seed {seed:x?}: (element, kept by the kernel) where the host's mask differs"
            );
        }
    }

    /// The keep fraction: half of 2^20 draws, within five standard deviations (512 × 5).
    #[test]
    fn keeps_the_asked_fraction() {
        let mask = kept_with_seed([12345.0, 678.0, 9.0]);
        let count = mask.iter().filter(|&&k| k).count() as i64;
        assert!(
            (count - N as i64 / 2).abs() < 5 * 512,
            "{count} of {N} kept"
        );
    }

    /// Masks of neighbouring seeds (the lowest bit, and the highest of the 64), of
    /// neighbouring elements of one mask, and of the layers and steps of a run (successive
    /// draws after one `Device::seed`, and the seeds of neighbouring steps) do not correlate.
    #[test]
    fn masks_of_neighbouring_seeds_elements_layers_and_steps_do_not_correlate() {
        let base = kept_with_seed([1000.0, 2000.0, 3000.0]);
        let next_seed = kept_with_seed([1001.0, 2000.0, 3000.0]);
        // Bit 63 of the key is bit 15 of the third float (its bits 16 to 23 are not used).
        let high_seed = kept_with_seed([1000.0, 2000.0, 3000.0 + (1 << 15) as f32]);
        let device = crate::testing::wgpu();
        let _turn = crate::testing::seeding();
        let draw = || kept(Mask::with_seed(seed(&device), 0.5), &device);
        device.seed(41);
        let (layer_1, layer_2) = (draw(), draw());
        device.seed(42);
        let next_step = draw();
        let pairs: [(&str, &[bool], &[bool]); 6] = [
            ("neighbouring seeds", &base, &next_seed),
            ("seeds apart in the key's highest bit", &base, &high_seed),
            ("two layers", &layer_1, &layer_2),
            ("neighbouring steps", &layer_1, &next_step),
            ("neighbouring elements", &base[1..], &base[..N - 1]),
            ("elements four apart", &base[4..], &base[..N - 4]),
        ];
        for (what, a, b) in pairs {
            let r = correlation(a, b);
            assert!(r.abs() < BOUND, "{what}: correlation {r}");
        }
    }

    /// The same seed gives the same mask every time (burnbert-model's dropout tests check
    /// that `Device::seed` gives the same seeds).
    #[test]
    fn a_seed_gives_the_same_mask_every_time() {
        let seed = [7.0, 8.0, 9.0];
        assert_eq!(kept_with_seed(seed), kept_with_seed(seed));
    }

    /// The kernel's CUDA C++ compiles for an H100 in every float type.
    #[cfg(feature = "cuda")]
    #[test]
    fn compiles_for_cuda() {
        use super::kernel::dropout_mask;
        crate::cuda_source::for_each_float_type(|e, dtype| {
            assert_compiles!(e, dropout_mask[input, seed, output](1 << 31, 2.0, dtype));
        });
    }
}
