//! Dropout as one kernel forward and one backward: [`crate::dropout`]. The mask is a hash of a
//! seed and each element's index, drawn again in the backward pass instead of kept.
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

    /// PCG's output permutation as a 32-bit hash (Jarzynski and Olano, "Hash Functions for
    /// GPU Rendering", 2020): every input bit moves every output bit.
    #[cube]
    fn pcg_hash(input: u32) -> u32 {
        let state = input * 747_796_405u32 + 2_891_336_453u32;
        let word = ((state >> ((state >> 28u32) + 4u32)) ^ state) * 277_803_737u32;
        (word >> 22u32) ^ word
    }

    /// Whether element `index` is kept: a uniform 32-bit draw below `threshold`.
    #[cube]
    pub fn kept(seed: &Tensor<f32>, index: usize, threshold: u32) -> bool {
        let stream = pcg_hash(u32::cast_from(seed[0]));
        pcg_hash(stream ^ u32::cast_from(index)) < threshold
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
pub fn dropout<const D: usize>(x: Tensor<D>, keep: f64) -> Tensor<D> {
    let mask = Mask::draw(&x.device(), keep);
    with_backward(DropoutBackward, [x.into()], |[x]| (mask.apply(x), mask))
}

/// One dropout mask: enough to draw it again.
#[derive(Debug, Clone)]
pub(crate) struct Mask {
    pub seed: CubeTensor,
    /// An element is kept where its 32-bit hash is below this.
    pub threshold: u32,
    /// `1 / keep`.
    pub scale: f32,
}

impl Mask {
    /// A mask keeping each element with probability `keep`, its seed drawn from Burn's
    /// generator on `device` (a CubeCL device).
    pub fn draw(device: &Device, keep: f64) -> Self {
        // 24 random bits, exactly representable in f32.
        let seed = Tensor::<1>::random(
            [1],
            Distribution::Uniform(0.0, (1 << 24) as f64),
            (device, DType::F32),
        );
        Self {
            seed: Input::from(seed).into_primitive(),
            threshold: (keep * 2f64.powi(32)).min(u32::MAX as f64) as u32,
            scale: (1.0 / keep) as f32,
        }
    }

    /// The mask applied to `tensor`: the activations forward, their gradient backward.
    fn apply(&self, tensor: CubeTensor) -> CubeTensor {
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

#[cfg(all(test, feature = "cuda", feature = "wgpu"))]
mod tests {
    /// The kernel's CUDA C++ compiles for an H100 in every float type.
    #[test]
    fn compiles_for_cuda() {
        use super::kernel::dropout_mask;
        crate::cuda_source::for_each_float_type(|e, dtype| {
            assert_compiles!(e, dropout_mask[input, seed, output](1 << 31, 2.0, dtype));
        });
    }
}
