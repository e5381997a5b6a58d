//! The attention's `softmax(mask_fill(scores / divisor, padded keys, MIN))` over the keys as
//! one kernel forward and one backward: [`crate::masked_softmax`].
//!
//! Burn computes it as a division, a mask fill and five softmax operations (maximum, subtract,
//! exponential, sum, divide), each a pass over the `[batch, heads, queries, keys]` scores and
//! each differentiated on its own.

use burn::backend::Cube;
use burn::backend::autodiff::{
    checkpoint::base::Checkpointer,
    grads::Gradients,
    ops::{Backward, Ops, unary},
};
use burn::tensor::{Bool, Tensor};
use burn_cubecl::cubecl::prelude::ElemType;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;

use crate::autodiff::{plain_bool, with_backward};
use crate::host::{empty_like, row_launch};
use kernel::{masked_softmax_backward, masked_softmax_forward};

/// The kernels, apart from the host code: CubeCL's `Tensor` is not Burn's.
mod kernel {
    use crate::host::UNITS;
    use crate::reduce::{cube_max, cube_sum};
    use burn_cubecl::cubecl::{self, prelude::*};

    /// Where a padded key's score goes: transformers adds the float type's most negative
    /// value, so that a row of padding alone still sums to 1.
    const PADDED: f32 = -3.4028235e38;

    /// Whether key `index` of `padded`, Burn's storage of a bool tensor, is padding: any
    /// value with its lowest bit set is true (as Burn's own `bool_cast` reads it).
    #[cube]
    fn is_padded<B: Int>(padded: &Tensor<B>, index: usize) -> bool {
        (padded[index] & B::new(1)) == B::new(1)
    }

    /// The row's probabilities, one row of keys per cube. `padded` is `[batch, keys]`, true
    /// at padded keys, and `rows_per_batch` rows (heads × queries) share a batch's row of it.
    #[cube(launch, create_dummy_kernel)]
    pub fn masked_softmax_forward<F: Float, B: Int>(
        scores: &Tensor<F>,
        padded: &Tensor<B>,
        output: &mut Tensor<F>,
        rows_per_batch: u32,
        divisor: f32,
        #[define(F, B)] _dtypes: [ElemType; 2],
    ) {
        let row = CUBE_POS;
        let width = padded.shape(1);
        if row * width >= scores.len() {
            terminate!();
        }
        let start = row * width;
        let mask_start = (row / rows_per_batch as usize) * width;
        let mut shared = Shared::new_slice(UNITS as usize);

        let mut row_max = f32::new(PADDED);
        let mut i = UNIT_POS as usize;
        while i < width {
            let score = f32::cast_from(scores[start + i]) / divisor;
            let padded_key = is_padded(padded, mask_start + i);
            row_max = max(row_max, select(padded_key, PADDED, score));
            i += CUBE_DIM as usize;
        }
        let row_max = cube_max(row_max, &mut shared);

        let mut sum = 0.0f32;
        i = UNIT_POS as usize;
        while i < width {
            let score = f32::cast_from(scores[start + i]) / divisor;
            let padded_key = is_padded(padded, mask_start + i);
            sum += (select(padded_key, PADDED, score) - row_max).exp();
            i += CUBE_DIM as usize;
        }
        let sum = cube_sum(sum, &mut shared);

        i = UNIT_POS as usize;
        while i < width {
            let score = f32::cast_from(scores[start + i]) / divisor;
            let padded_key = is_padded(padded, mask_start + i);
            let probability = (select(padded_key, PADDED, score) - row_max).exp() / sum;
            output[start + i] = F::cast_from(probability);
            i += CUBE_DIM as usize;
        }
    }

    /// The scores' gradient from the probabilities `y` and theirs, `g`:
    /// `y * (g - sum(g * y)) / divisor`, and 0 at padded keys (whose scores were replaced).
    #[cube(launch, create_dummy_kernel)]
    pub fn masked_softmax_backward<F: Float, B: Int>(
        output: &Tensor<F>,
        grad: &Tensor<F>,
        padded: &Tensor<B>,
        grad_scores: &mut Tensor<F>,
        rows_per_batch: u32,
        divisor: f32,
        #[define(F, B)] _dtypes: [ElemType; 2],
    ) {
        let row = CUBE_POS;
        let width = padded.shape(1);
        if row * width >= output.len() {
            terminate!();
        }
        let start = row * width;
        let mask_start = (row / rows_per_batch as usize) * width;
        let mut shared = Shared::new_slice(UNITS as usize);

        let mut dot = 0.0f32;
        let mut i = UNIT_POS as usize;
        while i < width {
            dot += f32::cast_from(grad[start + i]) * f32::cast_from(output[start + i]);
            i += CUBE_DIM as usize;
        }
        let dot = cube_sum(dot, &mut shared);

        i = UNIT_POS as usize;
        while i < width {
            let y = f32::cast_from(output[start + i]);
            let gradient = y * (f32::cast_from(grad[start + i]) - dot) / divisor;
            let padded_key = is_padded(padded, mask_start + i);
            grad_scores[start + i] = F::cast_from(select(padded_key, 0.0, gradient));
            i += CUBE_DIM as usize;
        }
    }
}

/// [`crate::masked_softmax`].
pub fn masked_softmax(scores: Tensor<4>, padding: Tensor<4, Bool>, divisor: f64) -> Tensor<4> {
    let [batch, heads, queries, keys] = scores.dims();
    let rows_per_batch = (heads * queries) as u32;
    // The kernels read the bool tensor as Burn stores it: no cast to floats per layer.
    let padded = plain_bool(padding.reshape([batch, keys]));
    let divisor = divisor as f32;
    with_backward(MaskedSoftmaxBackward, [scores.into()], |[scores]| {
        let output = forward(scores, padded.clone(), rows_per_batch, divisor);
        (output.clone(), (output, padded, rows_per_batch, divisor))
    })
}

/// The autodiff node: its state is the probabilities, the padding and the two scalars.
#[derive(Debug)]
struct MaskedSoftmaxBackward;

impl Backward<Cube, 1> for MaskedSoftmaxBackward {
    type State = (CubeTensor, CubeTensor, u32, f32);

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let (output, padded, rows_per_batch, divisor) = ops.state;
        unary::<Cube, _>(ops.parents, ops.node, grads, |grad| {
            let grad = into_contiguous(grad);
            let grad_scores = empty_like(&output);
            let width = padded.meta.shape()[1];
            let rows = output.meta.num_elements() / width;
            let (cube_dim, cube_count) = row_launch(&output, rows, width);
            let dtypes = storage_types(&output, &padded);
            masked_softmax_backward::launch(
                &output.client.clone(),
                cube_count,
                cube_dim,
                output.into_tensor_arg(),
                grad.into_tensor_arg(),
                padded.into_tensor_arg(),
                grad_scores.clone().into_tensor_arg(),
                rows_per_batch,
                divisor,
                dtypes,
            );
            grad_scores
        });
    }
}

/// The probabilities, one cube per row of keys.
fn forward(
    scores: CubeTensor,
    padded: CubeTensor,
    rows_per_batch: u32,
    divisor: f32,
) -> CubeTensor {
    let (scores, padded) = (into_contiguous(scores), into_contiguous(padded));
    let width = padded.meta.shape()[1];
    let rows = scores.meta.num_elements() / width;
    let output = empty_like(&scores);
    let (cube_dim, cube_count) = row_launch(&scores, rows, width);
    let dtypes = storage_types(&scores, &padded);
    masked_softmax_forward::launch(
        &scores.client.clone(),
        cube_count,
        cube_dim,
        scores.into_tensor_arg(),
        padded.into_tensor_arg(),
        output.clone().into_tensor_arg(),
        rows_per_batch,
        divisor,
        dtypes,
    );
    output
}

/// The kernels' `dtypes`: the scores' float type and the padding's bool storage.
fn storage_types(scores: &CubeTensor, padded: &CubeTensor) -> [ElemType; 2] {
    [scores.dtype, padded.dtype].map(burn::backend::cubecl::dtype_to_storage_type)
}

#[cfg(all(test, feature = "wgpu"))]
mod tests {
    use burn::tensor::activation::softmax;
    use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};

    /// The probabilities and the scores' gradient for the loss `sum(probabilities × weights)`
    /// on `device` (with autodiff), `batch × 3 heads × 5 queries × keys`, where batch row `b`
    /// has its last `padded[b]` keys padded: by the kernels where they apply, else by Burn's
    /// operations as burnbert-model's `ops::attention_probabilities` runs them on the CPU.
    fn run(
        device: &Device,
        scores: &[f32],
        weights: &[f32],
        padded: &[usize],
        keys: usize,
    ) -> [Vec<f32>; 2] {
        let device = device.clone().autodiff();
        let shape = [padded.len(), 3, 5, keys];
        let tensor = |values: &[f32]| {
            Tensor::<4>::from_data(TensorData::new(values.to_vec(), shape), &device)
        };
        let scores = tensor(scores).require_grad();
        let mask: Vec<i64> = padded
            .iter()
            .flat_map(|&p| (0..keys).map(move |k| (k >= keys - p) as i64))
            .collect();
        let padding =
            Tensor::<2, Int>::from_data(TensorData::new(mask, [padded.len(), keys]), &device)
                .equal_elem(1)
                .reshape([padded.len(), 1, 1, keys]);
        let divisor = 64f64.sqrt();
        let probabilities = match crate::applies(crate::Kernel::MaskedSoftmax, &scores.device()) {
            true => crate::masked_softmax(scores.clone(), padding, divisor),
            false => softmax(
                scores
                    .clone()
                    .div_scalar(divisor)
                    .mask_fill(padding, f32::MIN),
                3,
            ),
        };
        let grads = (probabilities.clone() * tensor(weights)).sum().backward();
        let values = |t: Tensor<4>| t.into_data().try_to_vec::<f32>().unwrap();
        [values(probabilities), values(scores.grad(&grads).unwrap())]
    }

    /// On wgpu (lavapipe) the kernels give the CPU's probabilities and gradient (Burn's
    /// division, mask fill and softmax, differentiated by its autodiff), for rows of keys
    /// shorter and longer than a cube, some keys padded, and a row with every key padded.
    #[test]
    fn gpu_kernels_match_the_cpu_forward_and_backward() {
        let (cpu, gpu) = (crate::testing::cpu(), crate::testing::wgpu());
        assert!(crate::applies(
            crate::Kernel::MaskedSoftmax,
            &gpu.clone().autodiff()
        ));
        for keys in [40, 200] {
            let padded = [0, 7, keys];
            let n = padded.len() * 3 * 5 * keys;
            let random = |std: f64| {
                Tensor::<1>::random([n], Distribution::Normal(0.0, std), &cpu)
                    .into_data()
                    .try_to_vec::<f32>()
                    .unwrap()
            };
            let (scores, weights) = (random(20.0), random(1.0));
            let expected = run(&cpu, &scores, &weights, &padded, keys);
            let actual = run(&gpu, &scores, &weights, &padded, keys);
            for ((a, e), name) in actual
                .iter()
                .zip(&expected)
                .zip(["probabilities", "gradient"])
            {
                for (i, (a, e)) in a.iter().zip(e).enumerate() {
                    assert!(
                        (a - e).abs() <= 1e-6 + 1e-4 * e.abs(),
                        "{keys} keys: {name}[{i}]: {a} vs {e}"
                    );
                }
            }
        }
    }

    /// The kernels' CUDA C++ compiles for an H100 in every float type, with the padding
    /// stored as u8 or u32.
    #[cfg(feature = "cuda")]
    #[test]
    fn compiles_for_cuda() {
        use super::kernel::{masked_softmax_backward, masked_softmax_forward};
        use burn::tensor::{BoolStore, DType};
        crate::cuda_source::for_each_float_type(|e, dtype| {
            for store in [BoolStore::U8, BoolStore::U32] {
                let dtypes = [
                    dtype,
                    burn::backend::cubecl::dtype_to_storage_type(DType::Bool(store)),
                ];
                assert_compiles!(
                    e,
                    masked_softmax_forward[scores, padded, output](12, 8.0, dtypes)
                );
                assert_compiles!(
                    e,
                    masked_softmax_backward[output, grad, padded, grad_scores](12, 8.0, dtypes)
                );
            }
        });
    }
}
