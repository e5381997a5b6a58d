//! AdamW's update as one CubeCL kernel per parameter: [`crate::adamw_step`].
//!
//! Burn's AdamW is about fourteen kernel launches per parameter, a large share of a bert-base
//! training step's launches and GPU time (BENCHMARKS.md, "GPU, second session"). Burn 0.22 has
//! no fused optimizer kernel, and its automatic fusion is off in burnbert (it compiled for
//! minutes before the first step), so this is written here: one pass that reads the
//! parameter, the gradient and both moments and updates the three in place.

use burn::backend::Cube;
use burn::tensor::Tensor;
use burn_cubecl::cubecl::{CubeDim, calculate_cube_count_elemwise};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;

use crate::StepScalars;
use kernel::{StepLaunch, adamw_kernel};

/// The kernel, apart from the host code: CubeCL's `Tensor` is not Burn's.
mod kernel {
    use burn_cubecl::cubecl::{self, prelude::*};

    /// The host's `StepScalars`, as a kernel argument.
    #[derive(CubeLaunch, CubeType)]
    pub struct Step {
        beta_1: f32,
        beta_2: f32,
        epsilon: f32,
        correction_1: f32,
        correction_2: f32,
        decay: f32,
        lr: f32,
    }

    /// One unit per element, updating the parameter and both moments in place; the
    /// arithmetic in f32 whatever the tensors' float type, and in the order of
    /// `burn::optim::AdamW`.
    #[cube(launch, create_dummy_kernel)]
    pub fn adamw_kernel<F: Float>(
        param: &mut Tensor<F>,
        grad: &Tensor<F>,
        moment_1: &mut Tensor<F>,
        moment_2: &mut Tensor<F>,
        step: Step,
        #[define(F)] _dtype: ElemType,
    ) {
        let i = ABSOLUTE_POS;
        if i >= param.len() {
            terminate!();
        }
        let g = f32::cast_from(grad[i]);
        let m = f32::cast_from(moment_1[i]) * step.beta_1 + g * (1.0 - step.beta_1);
        let v = f32::cast_from(moment_2[i]) * step.beta_2 + g * g * (1.0 - step.beta_2);
        let update = (m / step.correction_1) / ((v / step.correction_2).sqrt() + step.epsilon);
        param[i] = F::cast_from(f32::cast_from(param[i]) * step.decay - update * step.lr);
        moment_1[i] = F::cast_from(m);
        moment_2[i] = F::cast_from(v);
    }
}

/// [`crate::adamw_step`].
pub fn adamw_step<const D: usize>(
    param: Tensor<D>,
    grad: Tensor<D>,
    moment_1: Tensor<D>,
    moment_2: Tensor<D>,
    scalars: &StepScalars,
) -> (Tensor<D>, Tensor<D>, Tensor<D>) {
    let primitive = |tensor: Tensor<D>| {
        let tensor = tensor
            .try_into_primitive::<Cube>()
            .expect("adamw_step takes tensors on a CubeCL device (checked by the caller)");
        into_contiguous(tensor)
    };
    let writable = |tensor: Tensor<D>| {
        let tensor = primitive(tensor);
        match tensor.can_mut() {
            true => tensor,
            false => tensor.copy(),
        }
    };
    let (param, grad) = (writable(param), primitive(grad));
    let (moment_1, moment_2) = (writable(moment_1), writable(moment_2));

    let client = param.client.clone();
    let elements = param.meta.num_elements();
    let cube_dim = CubeDim::new(&client, elements);
    let cube_count = calculate_cube_count_elemwise(&client, elements, cube_dim);
    let dtype = burn::backend::cubecl::dtype_to_storage_type(param.dtype);
    adamw_kernel::launch(
        &client,
        cube_count,
        cube_dim,
        param.clone().into_tensor_arg(),
        grad.into_tensor_arg(),
        moment_1.clone().into_tensor_arg(),
        moment_2.clone().into_tensor_arg(),
        StepLaunch::new(
            scalars.beta_1,
            scalars.beta_2,
            scalars.epsilon,
            scalars.correction_1,
            scalars.correction_2,
            scalars.decay,
            scalars.lr,
        ),
        dtype,
    );
    let tensor = |primitive: CubeTensor| Tensor::<D>::from_primitive::<Cube>(primitive);
    (tensor(param), tensor(moment_1), tensor(moment_2))
}

#[cfg(all(test, feature = "cuda", feature = "wgpu"))]
mod tests {
    use super::kernel::{StepLaunch, adamw_kernel};

    /// The kernel's CUDA C++ compiles for an H100 in every float type.
    #[test]
    fn compiles_for_cuda() {
        crate::cuda_source::for_each_float_type(|e, dtype| {
            let step = StepLaunch::new(0.9, 0.999, 1e-8, 0.1, 0.001, 1.0, 1e-3);
            assert_compiles!(e, adamw_kernel[param, grad, moment_1, moment_2](step, dtype));
        });
    }
}
