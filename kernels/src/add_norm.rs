//! "Add & Norm" after the attention and after the feed-forward network,
//! `LayerNorm(dropout(hidden + bias) + residual)`, as one kernel forward and one backward
//! (plus one reduction for the bias, gamma and beta gradients): [`crate::add_norm`].
//!
//! Apart, the bias, the dropout, the residual sum and the LayerNorm are four kernels forward
//! and each a pass over the activations; the backward pass adds the dropout's. The dropout
//! mask is [`crate::dropout`]'s, Philox4x32-10 over the elements' indices.

use burn::backend::Cube;
use burn::backend::autodiff::{
    checkpoint::base::Checkpointer,
    grads::Gradients,
    ops::{Backward, Ops},
};
use burn::backend::ops::FloatTensorOps;
use burn::tensor::{Shape, Tensor};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;

use crate::autodiff::with_backward;
use crate::dropout::Mask;
use crate::host::{block, block_column_sums, column_sums, empty_like, row_launch};
use crate::layer_norm::{self, statistics};
use kernel::{add_norm_backward, add_norm_forward};

/// The kernels, apart from the host code: CubeCL's `Tensor` is not Burn's.
mod kernel {
    use crate::dropout::kernel::kept;
    use crate::layer_norm::kernel::{normalize_row, normalize_row_backward};
    use burn_cubecl::cubecl::{self, prelude::*};

    /// For one row per cube: `sum = dropout(hidden + bias) + residual`, kept for the
    /// backward pass, and its LayerNorm into `output`. Without `dropout` nothing is dropped
    /// (`seed`, `threshold` and `scale` are not read).
    #[cube(launch, create_dummy_kernel)]
    #[allow(clippy::too_many_arguments)]
    pub fn add_norm_forward<F: Float>(
        hidden: &Tensor<F>,
        bias: &Tensor<F>,
        residual: &Tensor<F>,
        gamma: &Tensor<F>,
        beta: &Tensor<F>,
        seed: &Tensor<f32>,
        sum: &mut Tensor<F>,
        output: &mut Tensor<F>,
        mean: &mut Tensor<f32>,
        rstd: &mut Tensor<f32>,
        threshold: u32,
        scale: f32,
        epsilon: f32,
        #[comptime] dropout: bool,
        #[define(F)] _dtype: ElemType,
    ) {
        let row = CUBE_POS;
        if row >= mean.len() {
            terminate!();
        }
        let width = gamma.len();
        let start = row * width;
        // Each unit writes the elements it reads again in `normalize_row`: no sync needed.
        let mut i = UNIT_POS as usize;
        while i < width {
            let index = start + i;
            let mut value = f32::cast_from(hidden[index]) + f32::cast_from(bias[i]);
            if dropout {
                value = select(kept(seed, index, threshold), value * scale, 0.0);
            }
            sum[index] = F::cast_from(value + f32::cast_from(residual[index]));
            i += CUBE_DIM as usize;
        }
        normalize_row::<F>(&*sum, gamma, beta, output, mean, rstd, row, epsilon);
    }

    /// For one row per cube: the LayerNorm's backward pass on `sum`, giving the residual's
    /// gradient `grad_sum`; and `partials`, `[3, rows, width]`: `grad * x̂`, `grad`, and the
    /// hidden input's gradient (`grad_sum` through the dropout mask), whose column sums are
    /// the gradients of gamma, beta and the bias.
    #[cube(launch, create_dummy_kernel)]
    #[allow(clippy::too_many_arguments)]
    pub fn add_norm_backward<F: Float>(
        sum: &Tensor<F>,
        gamma: &Tensor<F>,
        mean: &Tensor<f32>,
        rstd: &Tensor<f32>,
        grad: &Tensor<F>,
        seed: &Tensor<f32>,
        grad_sum: &mut Tensor<F>,
        partials: &mut Tensor<F>,
        threshold: u32,
        scale: f32,
        #[define(F)] _dtype: ElemType,
    ) {
        let row = CUBE_POS;
        if row >= mean.len() {
            terminate!();
        }
        // `grad * x̂` goes to the first block, at the same index as in `sum`.
        normalize_row_backward::<F>(sum, gamma, mean, rstd, grad, grad_sum, partials, row);
        // Each unit reads back the elements of `grad_sum` it wrote.
        let width = gamma.len();
        let (start, block) = (row * width, mean.len() * width);
        let mut i = UNIT_POS as usize;
        while i < width {
            let index = start + i;
            partials[block + index] = grad[index];
            let value = f32::cast_from(grad_sum[index]) * scale;
            partials[2 * block + index] =
                F::cast_from(select(kept(seed, index, threshold), value, 0.0));
            i += CUBE_DIM as usize;
        }
    }
}

/// [`crate::add_norm`].
pub fn add_norm<const D: usize>(
    hidden: Tensor<D>,
    bias: Tensor<1>,
    residual: Tensor<D>,
    [gamma, beta]: [Tensor<1>; 2],
    epsilon: f64,
    dropout: Option<(Tensor<1>, f64)>,
) -> Tensor<D> {
    let mask = dropout.map(|(seed, keep)| Mask::with_seed(seed, keep));
    add_norm_with(hidden, bias, residual, [gamma, beta], epsilon, mask)
}

/// [`add_norm`] with the given dropout mask, if any.
pub(crate) fn add_norm_with<const D: usize>(
    hidden: Tensor<D>,
    bias: Tensor<1>,
    residual: Tensor<D>,
    [gamma, beta]: [Tensor<1>; 2],
    epsilon: f64,
    mask: Option<Mask>,
) -> Tensor<D> {
    let dtype = hidden.dtype();
    let residual = residual.cast(dtype);
    let [bias, gamma, beta] = [bias, gamma, beta].map(|vector| vector.cast(dtype));
    let device = hidden.device();
    assert!(
        mask.is_none() || device.is_autodiff(),
        "dropout needs a device that tracks gradients"
    );
    let inputs = [
        hidden.into(),
        bias.into(),
        residual.into(),
        gamma.into(),
        beta.into(),
    ];
    with_backward(
        AddNormBackward,
        inputs,
        |[hidden, bias, residual, gamma, beta]| {
            let kept_gamma = gamma.clone();
            let (output, (sum, mean, rstd)) = forward(
                [hidden, residual],
                [bias, gamma, beta],
                mask.as_ref(),
                epsilon,
            );
            let state = State {
                sum,
                gamma: kept_gamma,
                mean,
                rstd,
                mask,
            };
            (output, state)
        },
    )
}

/// What the backward pass needs: the normalised sum, gamma, each row's statistics, the mask.
#[derive(Debug, Clone)]
struct State {
    sum: CubeTensor,
    gamma: CubeTensor,
    mean: CubeTensor,
    rstd: CubeTensor,
    mask: Option<Mask>,
}

/// The autodiff node, for the parents hidden, bias, residual, gamma and beta.
#[derive(Debug)]
struct AddNormBackward;

impl Backward<Cube, 5> for AddNormBackward {
    type State = State;

    fn backward(
        self,
        ops: Ops<Self::State, 5>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let [node_hidden, node_bias, node_residual, node_gamma, node_beta] = ops.parents;
        let grad = into_contiguous(grads.consume::<Cube>(&ops.node));
        let state = ops.state;
        let (sum, gamma) = (into_contiguous(state.sum), state.gamma);
        // The gradients of hidden, residual, gamma, beta and the bias.
        let gradients: [CubeTensor; 5] = match state.mask {
            // Nothing dropped: LayerNorm's backward pass, and the hidden input's gradient is
            // the residual's.
            None => {
                let (grad_sum, grad_times_normalized) =
                    layer_norm::backward(sum, gamma, state.mean, state.rstd, grad.clone());
                let [gamma_grad, beta_grad, bias_grad] =
                    [grad_times_normalized, grad, grad_sum.clone()].map(column_sums);
                [grad_sum.clone(), grad_sum, gamma_grad, beta_grad, bias_grad]
            }
            Some(mask) => {
                let (rows, width) = (state.mean.meta.num_elements(), gamma.meta.num_elements());
                let (cube_dim, cube_count) = row_launch(&sum, rows, width);
                let dtype = burn::backend::cubecl::dtype_to_storage_type(sum.dtype);
                let grad_sum = empty_like(&sum);
                let partials = empty_device_dtype(
                    sum.client.clone(),
                    sum.device.clone(),
                    Shape::new([3, rows, width]),
                    sum.dtype,
                );
                let shape = sum.meta.shape().clone();
                add_norm_backward::launch(
                    &sum.client.clone(),
                    cube_count,
                    cube_dim,
                    sum.into_tensor_arg(),
                    gamma.into_tensor_arg(),
                    state.mean.into_tensor_arg(),
                    state.rstd.into_tensor_arg(),
                    grad.into_tensor_arg(),
                    mask.seed.into_tensor_arg(),
                    grad_sum.clone().into_tensor_arg(),
                    partials.clone().into_tensor_arg(),
                    mask.threshold,
                    mask.scale,
                    dtype,
                );
                let [gamma_grad, beta_grad, bias_grad] = block_column_sums(partials.clone());
                let grad_hidden =
                    Cube::float_reshape(Cube::float_slice(partials, &block(2)), shape);
                [grad_hidden, grad_sum, gamma_grad, beta_grad, bias_grad]
            }
        };
        let nodes = [node_hidden, node_residual, node_gamma, node_beta, node_bias];
        for (node, grad) in nodes.into_iter().zip(gradients) {
            if let Some(node) = node {
                grads.register::<Cube>(node.id, grad);
            }
        }
    }
}

/// The normalised rows, and the sum they normalise with each row's mean and rstd.
fn forward(
    [hidden, residual]: [CubeTensor; 2],
    [bias, gamma, beta]: [CubeTensor; 3],
    mask: Option<&Mask>,
    epsilon: f64,
) -> (CubeTensor, (CubeTensor, CubeTensor, CubeTensor)) {
    let [hidden, residual] = [hidden, residual].map(into_contiguous);
    let [bias, gamma, beta] = [bias, gamma, beta].map(into_contiguous);
    let width = gamma.meta.num_elements();
    let rows = hidden.meta.num_elements() / width;
    let (sum, output) = (empty_like(&hidden), empty_like(&hidden));
    let (mean, rstd) = statistics(&hidden, rows);
    let (cube_dim, cube_count) = row_launch(&hidden, rows, width);
    let dtype = burn::backend::cubecl::dtype_to_storage_type(hidden.dtype);
    // Without a mask the kernel reads no seed; any f32 tensor stands in for it.
    let (seed, threshold, scale) = match mask {
        Some(mask) => (mask.seed.clone(), mask.threshold, mask.scale),
        None => (mean.clone(), u32::MAX, 1.0),
    };
    add_norm_forward::launch(
        &hidden.client.clone(),
        cube_count,
        cube_dim,
        hidden.into_tensor_arg(),
        bias.into_tensor_arg(),
        residual.into_tensor_arg(),
        gamma.into_tensor_arg(),
        beta.into_tensor_arg(),
        seed.into_tensor_arg(),
        sum.clone().into_tensor_arg(),
        output.clone().into_tensor_arg(),
        mean.clone().into_tensor_arg(),
        rstd.clone().into_tensor_arg(),
        threshold,
        scale,
        epsilon as f32,
        mask.is_some(),
        dtype,
    );
    (output, (sum, mean, rstd))
}

#[cfg(all(test, feature = "wgpu"))]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution, TensorData};

    const ROWS: usize = 37;
    const WIDTH: usize = 200;

    /// The inputs hidden, bias, residual, gamma, beta and the weights of the loss
    /// `sum(output × weights)`, drawn on the CPU.
    fn inputs() -> [Vec<f32>; 6] {
        let cpu = crate::testing::cpu();
        let random = |n: usize, mean: f64, std: f64| {
            Tensor::<1>::random([n], Distribution::Normal(mean, std), &cpu)
                .into_data()
                .try_to_vec::<f32>()
                .unwrap()
        };
        let matrix = ROWS * WIDTH;
        [
            random(matrix, 0.5, 2.0),
            random(WIDTH, 0.0, 1.0),
            random(matrix, -1.0, 3.0),
            random(WIDTH, 1.0, 0.5),
            random(WIDTH, 0.0, 1.0),
            random(matrix, 0.0, 1.0),
        ]
    }

    /// The output and the gradients of the five inputs on `device` (with autodiff), by
    /// `add_norm` (`fused`) or by Burn's operations and the other kernels where they apply
    /// (dropout and LayerNorm), as burnbert-model's `ops::add_norm` runs them apart.
    fn run(
        device: &Device,
        inputs: &[Vec<f32>; 6],
        keep: Option<f64>,
        fused: bool,
    ) -> Vec<Vec<f32>> {
        let device = device.clone().autodiff();
        let tensor = |values: &Vec<f32>| {
            let shape = match values.len() {
                WIDTH => vec![WIDTH],
                _ => vec![ROWS, WIDTH],
            };
            TensorData::new(values.clone(), shape)
        };
        let matrix = |i: usize| Tensor::<2>::from_data(tensor(&inputs[i]), &device).require_grad();
        let vector = |i: usize| Tensor::<1>::from_data(tensor(&inputs[i]), &device).require_grad();
        let (hidden, bias, residual) = (matrix(0), vector(1), matrix(2));
        let (gamma, beta) = (vector(3), vector(4));
        let weights = Tensor::<2>::from_data(tensor(&inputs[5]), &device);
        let output = if fused {
            crate::add_norm(
                hidden.clone(),
                bias.clone(),
                residual.clone(),
                [gamma.clone(), beta.clone()],
                1e-12,
                keep.map(|keep| (crate::dropout_seed(&device), keep)),
            )
        } else {
            let biased = hidden.clone() + bias.clone().unsqueeze();
            let dropped = match keep {
                Some(keep) => crate::dropout(biased, crate::dropout_seed(&device), keep),
                None => biased,
            };
            let sum = dropped + residual.clone();
            match crate::applies(crate::Kernel::LayerNorm, &sum.device()) {
                true => crate::layer_norm(sum, gamma.clone(), beta.clone(), 1e-12),
                false => {
                    burn::tensor::module::layer_norm(sum, gamma.clone(), Some(beta.clone()), 1e-12)
                }
            }
        };
        let grads = (output.clone() * weights).sum().backward();
        let mut results = vec![output.into_data().try_to_vec::<f32>().unwrap()];
        for grad in [hidden.grad(&grads), residual.grad(&grads)] {
            results.push(grad.unwrap().into_data().try_to_vec::<f32>().unwrap());
        }
        for grad in [bias.grad(&grads), gamma.grad(&grads), beta.grad(&grads)] {
            results.push(grad.unwrap().into_data().try_to_vec::<f32>().unwrap());
        }
        results
    }

    fn assert_close(actual: &[Vec<f32>], expected: &[Vec<f32>], tolerance: f32, what: &str) {
        let names = ["output", "hidden", "residual", "bias", "gamma", "beta"];
        for ((actual, expected), name) in actual.iter().zip(expected).zip(names) {
            let scale = expected.iter().map(|e| e.abs()).fold(1e-3, f32::max);
            for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
                assert!(
                    (a - e).abs() <= tolerance * scale,
                    "{what}: {name}[{i}]: {a} vs {e}"
                );
            }
        }
    }

    /// Without dropout, the kernel's output and gradients against Burn's operations on the
    /// CPU.
    #[test]
    fn matches_the_cpu_without_dropout() {
        let inputs = inputs();
        let (wgpu, cpu) = (crate::testing::wgpu(), crate::testing::cpu());
        let expected = run(&cpu, &inputs, None, false);
        assert_close(
            &run(&wgpu, &inputs, None, true),
            &expected,
            1e-4,
            "wgpu vs CPU",
        );
    }

    /// With dropout, the kernel against the dropout and LayerNorm kernels apart, from the same
    /// seed: the same mask, output and gradients.
    #[test]
    fn drops_out_as_the_dropout_kernel_does() {
        let _turn = crate::testing::seeding();
        let inputs = inputs();
        let wgpu = crate::testing::wgpu();
        wgpu.seed(7);
        let apart = run(&wgpu, &inputs, Some(0.9), false);
        wgpu.seed(7);
        let fused = run(&wgpu, &inputs, Some(0.9), true);
        assert_close(&fused, &apart, 1e-5, "fused vs apart");
        // The mask dropped about a tenth of the hidden gradients.
        let dropped = fused[1].iter().filter(|&&g| g == 0.0).count() as f64;
        let fraction = dropped / (ROWS * WIDTH) as f64;
        assert!((0.07..0.13).contains(&fraction), "dropped {fraction}");
    }

    /// The kernels' CUDA C++ compiles for an H100 in every float type, with and without
    /// dropout.
    #[cfg(feature = "cuda")]
    #[test]
    fn compiles_for_cuda() {
        use super::kernel::{add_norm_backward, add_norm_forward};
        crate::cuda_source::for_each_float_type(|e, dtype| {
            for dropout in [false, true] {
                assert_compiles!(
                    e,
                    add_norm_forward[
                        hidden, bias, residual, gamma, beta, seed, sum, output, mean, rstd
                    ](1 << 31, 2.0, 1e-12, dropout, dtype)
                );
            }
            assert_compiles!(
                e,
                add_norm_backward[sum, gamma, mean, rstd, grad, seed, grad_sum, partials](
                    1 << 31,
                    2.0,
                    dtype
                )
            );
        });
    }
}
