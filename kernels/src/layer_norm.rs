//! LayerNorm as one kernel forward and one backward (plus the two column sums of the weight
//! and bias gradients): [`crate::layer_norm`]. Statistics use the two-pass variance PyTorch
//! uses.
//!
//! Burn 0.22 computes LayerNorm from primitive operations on every backend except flex's
//! inference path, and its autodiff differentiates each of them: about 9 kernel launches
//! forward and 25 backward per LayerNorm on a GPU.

use burn::backend::Cube;
use burn::backend::autodiff::{
    checkpoint::base::Checkpointer,
    grads::Gradients,
    ops::{Backward, Ops},
};
use burn::tensor::{DType, Shape, Tensor};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;

use crate::autodiff::with_backward;
use crate::host::{column_sums, empty_like, row_launch};
use kernel::{layer_norm_backward, layer_norm_forward};

/// The kernels, apart from the host code: CubeCL's `Tensor` is not Burn's. The row helpers are
/// shared with `crate::add_norm`, whose kernels normalise a sum computed first.
pub(crate) mod kernel {
    use crate::host::UNITS;
    use crate::reduce::cube_sum;
    use burn_cubecl::cubecl::{self, prelude::*};

    /// LayerNorm of row `row` of `x`, `(x - mean) * rstd * gamma + beta`, into `output`, by the
    /// units of one cube; keeps the row's mean and `rstd = 1 / sqrt(var + epsilon)` for the
    /// backward pass.
    #[cube]
    #[allow(clippy::too_many_arguments)]
    pub fn normalize_row<F: Float>(
        x: &Tensor<F>,
        gamma: &Tensor<F>,
        beta: &Tensor<F>,
        output: &mut Tensor<F>,
        mean: &mut Tensor<f32>,
        rstd: &mut Tensor<f32>,
        row: usize,
        epsilon: f32,
    ) {
        let width = gamma.len();
        let start = row * width;
        let mut shared = Shared::new_slice(UNITS as usize);

        let mut sum = 0.0f32;
        let mut i = UNIT_POS as usize;
        while i < width {
            sum += f32::cast_from(x[start + i]);
            i += CUBE_DIM as usize;
        }
        let row_mean = cube_sum(sum, &mut shared) / width as f32;

        let mut squares = 0.0f32;
        i = UNIT_POS as usize;
        while i < width {
            let centered = f32::cast_from(x[start + i]) - row_mean;
            squares += centered * centered;
            i += CUBE_DIM as usize;
        }
        let variance = cube_sum(squares, &mut shared) / width as f32;
        let row_rstd = 1.0 / (variance + epsilon).sqrt();

        i = UNIT_POS as usize;
        while i < width {
            let normalized = (f32::cast_from(x[start + i]) - row_mean) * row_rstd;
            output[start + i] =
                F::cast_from(normalized * f32::cast_from(gamma[i]) + f32::cast_from(beta[i]));
            i += CUBE_DIM as usize;
        }
        if UNIT_POS == 0 {
            mean[row] = row_mean;
            rstd[row] = row_rstd;
        }
    }

    /// The backward pass of [`normalize_row`] for row `row`, by the units of one cube: with
    /// `x̂ = (x - mean) * rstd` and `g = dy * gamma`, `dx = rstd * (g - mean(g) - x̂ *
    /// mean(g * x̂))`, and `dy * x̂`, whose column sums are gamma's gradient.
    #[cube]
    #[allow(clippy::too_many_arguments)]
    pub fn normalize_row_backward<F: Float>(
        x: &Tensor<F>,
        gamma: &Tensor<F>,
        mean: &Tensor<f32>,
        rstd: &Tensor<f32>,
        grad: &Tensor<F>,
        grad_x: &mut Tensor<F>,
        grad_times_normalized: &mut Tensor<F>,
        row: usize,
    ) {
        let width = gamma.len();
        let start = row * width;
        let (row_mean, row_rstd) = (mean[row], rstd[row]);
        let mut shared = Shared::new_slice(UNITS as usize);

        let mut sum_g = 0.0f32;
        let mut sum_g_normalized = 0.0f32;
        let mut i = UNIT_POS as usize;
        while i < width {
            let normalized = (f32::cast_from(x[start + i]) - row_mean) * row_rstd;
            let g = f32::cast_from(grad[start + i]) * f32::cast_from(gamma[i]);
            sum_g += g;
            sum_g_normalized += g * normalized;
            i += CUBE_DIM as usize;
        }
        let mean_g = cube_sum(sum_g, &mut shared) / width as f32;
        let mean_g_normalized = cube_sum(sum_g_normalized, &mut shared) / width as f32;

        i = UNIT_POS as usize;
        while i < width {
            let normalized = (f32::cast_from(x[start + i]) - row_mean) * row_rstd;
            let dy = f32::cast_from(grad[start + i]);
            let g = dy * f32::cast_from(gamma[i]);
            grad_x[start + i] =
                F::cast_from(row_rstd * (g - mean_g - normalized * mean_g_normalized));
            grad_times_normalized[start + i] = F::cast_from(dy * normalized);
            i += CUBE_DIM as usize;
        }
    }

    /// [`normalize_row`] for one row per cube.
    #[cube(launch, create_dummy_kernel)]
    pub fn layer_norm_forward<F: Float>(
        x: &Tensor<F>,
        gamma: &Tensor<F>,
        beta: &Tensor<F>,
        output: &mut Tensor<F>,
        mean: &mut Tensor<f32>,
        rstd: &mut Tensor<f32>,
        epsilon: f32,
        #[define(F)] _dtype: ElemType,
    ) {
        let row = CUBE_POS;
        if row >= mean.len() {
            terminate!();
        }
        normalize_row::<F>(x, gamma, beta, output, mean, rstd, row, epsilon);
    }

    /// [`normalize_row_backward`] for one row per cube.
    #[cube(launch, create_dummy_kernel)]
    pub fn layer_norm_backward<F: Float>(
        x: &Tensor<F>,
        gamma: &Tensor<F>,
        mean: &Tensor<f32>,
        rstd: &Tensor<f32>,
        grad: &Tensor<F>,
        grad_x: &mut Tensor<F>,
        grad_times_normalized: &mut Tensor<F>,
        #[define(F)] _dtype: ElemType,
    ) {
        let row = CUBE_POS;
        if row >= mean.len() {
            terminate!();
        }
        normalize_row_backward::<F>(
            x,
            gamma,
            mean,
            rstd,
            grad,
            grad_x,
            grad_times_normalized,
            row,
        );
    }
}

/// [`crate::layer_norm`].
pub fn layer_norm<const D: usize>(
    input: Tensor<D>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    epsilon: f64,
) -> Tensor<D> {
    let dtype = input.dtype();
    let (gamma, beta) = (gamma.cast(dtype), beta.cast(dtype));
    let inputs = [input.into(), gamma.into(), beta.into()];
    with_backward(LayerNormBackward, inputs, |[x, gamma, beta]| {
        let (output, mean, rstd) = forward(x.clone(), gamma.clone(), beta, epsilon);
        (output, (x, gamma, mean, rstd))
    })
}

/// The autodiff node: its state is the input, gamma, and each row's mean and rstd.
#[derive(Debug)]
struct LayerNormBackward;

impl Backward<Cube, 3> for LayerNormBackward {
    type State = (CubeTensor, CubeTensor, CubeTensor, CubeTensor);

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_gamma, node_beta] = ops.parents;
        let grad = grads.consume::<Cube>(&ops.node);
        let (x, gamma, mean, rstd) = ops.state;
        let (grad_x, grad_times_normalized) = backward(x, gamma, mean, rstd, grad.clone());
        if let Some(node) = node_x {
            grads.register::<Cube>(node.id, grad_x);
        }
        if let Some(node) = node_gamma {
            grads.register::<Cube>(node.id, column_sums(grad_times_normalized));
        }
        if let Some(node) = node_beta {
            grads.register::<Cube>(node.id, column_sums(grad));
        }
    }
}

/// Each row's mean and rstd, as f32 tensors of `rows`.
pub(crate) fn statistics(like: &CubeTensor, rows: usize) -> (CubeTensor, CubeTensor) {
    let statistic = || {
        empty_device_dtype(
            like.client.clone(),
            like.device.clone(),
            Shape::new([rows]),
            DType::F32,
        )
    };
    (statistic(), statistic())
}

/// The normalized rows, and each row's mean and rstd in f32.
fn forward(
    x: CubeTensor,
    gamma: CubeTensor,
    beta: CubeTensor,
    epsilon: f64,
) -> (CubeTensor, CubeTensor, CubeTensor) {
    let (x, gamma, beta) = (
        into_contiguous(x),
        into_contiguous(gamma),
        into_contiguous(beta),
    );
    let width = gamma.meta.num_elements();
    let rows = x.meta.num_elements() / width;
    let (output, (mean, rstd)) = (empty_like(&x), statistics(&x, rows));
    let (cube_dim, cube_count) = row_launch(&x, rows, width);
    let dtype = burn::backend::cubecl::dtype_to_storage_type(x.dtype);
    layer_norm_forward::launch(
        &x.client.clone(),
        cube_count,
        cube_dim,
        x.into_tensor_arg(),
        gamma.into_tensor_arg(),
        beta.into_tensor_arg(),
        output.clone().into_tensor_arg(),
        mean.clone().into_tensor_arg(),
        rstd.clone().into_tensor_arg(),
        epsilon as f32,
        dtype,
    );
    (output, mean, rstd)
}

/// The input's gradient, and `grad * x̂` (whose column sums are gamma's gradient).
pub(crate) fn backward(
    x: CubeTensor,
    gamma: CubeTensor,
    mean: CubeTensor,
    rstd: CubeTensor,
    grad: CubeTensor,
) -> (CubeTensor, CubeTensor) {
    let (x, grad) = (into_contiguous(x), into_contiguous(grad));
    let (rows, width) = (mean.meta.num_elements(), gamma.meta.num_elements());
    let (grad_x, grad_times_normalized) = (empty_like(&x), empty_like(&x));
    let (cube_dim, cube_count) = row_launch(&x, rows, width);
    let dtype = burn::backend::cubecl::dtype_to_storage_type(x.dtype);
    layer_norm_backward::launch(
        &x.client.clone(),
        cube_count,
        cube_dim,
        x.into_tensor_arg(),
        gamma.into_tensor_arg(),
        mean.into_tensor_arg(),
        rstd.into_tensor_arg(),
        grad.into_tensor_arg(),
        grad_x.clone().into_tensor_arg(),
        grad_times_normalized.clone().into_tensor_arg(),
        dtype,
    );
    (grad_x, grad_times_normalized)
}

#[cfg(all(test, feature = "cuda", feature = "wgpu"))]
mod tests {
    /// The kernels' CUDA C++ compiles for an H100 in every float type.
    #[test]
    fn compiles_for_cuda() {
        use super::kernel::{layer_norm_backward, layer_norm_forward};
        crate::cuda_source::for_each_float_type(|e, dtype| {
            assert_compiles!(
                e,
                layer_norm_forward[x, gamma, beta, output, mean, rstd](1e-12, dtype)
            );
            assert_compiles!(
                e,
                layer_norm_backward[x, gamma, mean, rstd, grad, grad_x, grad_times_normalized](
                    dtype
                )
            );
        });
    }
}
