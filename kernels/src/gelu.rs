//! The exact GELU of a biased input as one kernel forward and one backward (plus the column
//! sums of the bias gradient): [`crate::bias_gelu`].
//!
//! Burn builds GELU from five operations forward, and its default backward, which the GPU
//! backends take, is the derivative of GELU's tanh approximation, up to 8.7e-4 off the exact
//! one (tests/integration/parity.rs) and some fifteen operations long. The backward here is
//! the exact derivative, `Φ(v) + v · φ(v)`, as PyTorch's.

use burn::backend::Cube;
use burn::backend::autodiff::{
    checkpoint::base::Checkpointer,
    grads::Gradients,
    ops::{Backward, Ops},
};
use burn::tensor::Tensor;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;

use crate::autodiff::with_backward;
use crate::host::{elementwise_launch, empty_like, register_biased};
use kernel::{gelu_backward, gelu_forward};

/// The kernels, apart from the host code: CubeCL's `Tensor` is not Burn's.
mod kernel {
    use burn_cubecl::cubecl::{self, prelude::*};

    const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
    /// 1 / √(2π), the standard normal density at 0.
    const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;

    /// `x + bias` at element `i` of `x`, whose rows are as long as `bias`.
    #[cube]
    fn biased<F: Float>(x: &Tensor<F>, bias: &Tensor<F>, i: usize) -> f32 {
        f32::cast_from(x[i]) + f32::cast_from(bias[i % bias.len()])
    }

    /// One unit per element.
    #[cube(launch, create_dummy_kernel)]
    pub fn gelu_forward<F: Float>(
        x: &Tensor<F>,
        bias: &Tensor<F>,
        output: &mut Tensor<F>,
        #[define(F)] _dtype: ElemType,
    ) {
        let i = ABSOLUTE_POS;
        if i >= x.len() {
            terminate!();
        }
        let v = biased::<F>(x, bias, i);
        output[i] = F::cast_from(0.5 * v * (1.0 + Erf::erf(v * FRAC_1_SQRT_2)));
    }

    /// `grad_x = grad · (Φ(v) + v · φ(v))` with `v = x + bias`, one unit per element.
    #[cube(launch, create_dummy_kernel)]
    pub fn gelu_backward<F: Float>(
        x: &Tensor<F>,
        bias: &Tensor<F>,
        grad: &Tensor<F>,
        grad_x: &mut Tensor<F>,
        #[define(F)] _dtype: ElemType,
    ) {
        let i = ABSOLUTE_POS;
        if i >= x.len() {
            terminate!();
        }
        let v = biased::<F>(x, bias, i);
        let cdf = 0.5 * (1.0 + Erf::erf(v * FRAC_1_SQRT_2));
        let pdf = Exp::exp(v * v * f32::new(-0.5)) * FRAC_1_SQRT_2PI;
        grad_x[i] = F::cast_from(f32::cast_from(grad[i]) * (cdf + v * pdf));
    }
}

/// [`crate::bias_gelu`].
pub fn bias_gelu<const D: usize>(x: Tensor<D>, bias: Tensor<1>) -> Tensor<D> {
    let bias = bias.cast(x.dtype());
    with_backward(GeluBackward, [x.into(), bias.into()], |[x, bias]| {
        (forward(x.clone(), bias.clone()), (x, bias))
    })
}

/// The autodiff node: its state is the input and the bias.
#[derive(Debug)]
struct GeluBackward;

impl Backward<Cube, 2> for GeluBackward {
    type State = (CubeTensor, CubeTensor);

    fn backward(
        self,
        ops: Ops<Self::State, 2>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_bias] = ops.parents;
        let grad = into_contiguous(grads.consume::<Cube>(&ops.node));
        let (x, bias) = (into_contiguous(ops.state.0), into_contiguous(ops.state.1));
        let grad_x = empty_like(&x);
        let (cube_dim, cube_count) = elementwise_launch(&x);
        let dtype = burn::backend::cubecl::dtype_to_storage_type(x.dtype);
        gelu_backward::launch(
            &x.client.clone(),
            cube_count,
            cube_dim,
            x.into_tensor_arg(),
            bias.into_tensor_arg(),
            grad.into_tensor_arg(),
            grad_x.clone().into_tensor_arg(),
            dtype,
        );
        register_biased(grads, [node_x, node_bias].map(|n| n.map(|n| n.id)), grad_x);
    }
}

fn forward(x: CubeTensor, bias: CubeTensor) -> CubeTensor {
    let (x, bias) = (into_contiguous(x), into_contiguous(bias));
    let output = empty_like(&x);
    let (cube_dim, cube_count) = elementwise_launch(&x);
    let dtype = burn::backend::cubecl::dtype_to_storage_type(x.dtype);
    gelu_forward::launch(
        &x.client.clone(),
        cube_count,
        cube_dim,
        x.into_tensor_arg(),
        bias.into_tensor_arg(),
        output.clone().into_tensor_arg(),
        dtype,
    );
    output
}

#[cfg(all(test, feature = "wgpu"))]
mod tests {
    use burn::tensor::{Tensor, TensorData};
    use serde_json::Value;

    fn floats(value: &Value) -> Vec<f32> {
        value
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect()
    }

    /// On wgpu (lavapipe) the kernels give PyTorch's exact GELU and its derivative, computed
    /// in float64 (`assets/fixtures/gelu_reference.json`), to f32 precision: at `x + bias`
    /// for rows of three with a bias of three values, and the bias's gradient as the sum of
    /// the derivatives in its column.
    #[test]
    fn gpu_kernels_match_pytorch_forward_and_backward() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../assets/fixtures/gelu_reference.json"
        );
        let reference: Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let x = floats(&reference["x"]);
        let bias = [0.5f32, -0.25, 0.125];
        let rows = x.len() / bias.len();
        assert_eq!(rows * bias.len(), x.len());
        let shifted: Vec<f32> = x.iter().enumerate().map(|(i, v)| v - bias[i % 3]).collect();
        let device = crate::testing::wgpu().autodiff();
        let input =
            Tensor::<2>::from_data(TensorData::new(shifted, [rows, 3]), &device).require_grad();
        let bias_tensor =
            Tensor::<1>::from_data(TensorData::new(bias.to_vec(), [3]), &device).require_grad();
        assert!(crate::applies(crate::Kernel::BiasGelu, &device));
        let output = crate::bias_gelu(input.clone(), bias_tensor.clone());
        let grads = output.clone().sum().backward();
        let values = |t: Tensor<2>| t.into_data().try_to_vec::<f32>().unwrap();
        let derivative = floats(&reference["derivative"]);
        for (what, actual, expected) in [
            ("gelu", values(output), floats(&reference["gelu"])),
            (
                "derivative",
                values(input.grad(&grads).unwrap()),
                derivative.clone(),
            ),
        ] {
            for (i, (a, e)) in actual.iter().zip(&expected).enumerate() {
                assert!(
                    (a - e).abs() <= 1e-6 * e.abs().max(1.0),
                    "{what}[{i}] at x = {}: {a} vs {e}",
                    x[i]
                );
            }
        }
        let bias_grad = bias_tensor.grad(&grads).unwrap().into_data();
        for (column, actual) in bias_grad.iter::<f32>().enumerate() {
            let expected: f64 = derivative
                .iter()
                .skip(column)
                .step_by(3)
                .map(|&d| d as f64)
                .sum();
            assert!(
                (actual as f64 - expected).abs() <= 1e-5 * expected.abs().max(1.0),
                "bias gradient [{column}]: {actual} vs {expected}"
            );
        }
    }

    /// The kernels' CUDA C++ compiles for an H100 in every float type.
    #[cfg(feature = "cuda")]
    #[test]
    fn compiles_for_cuda() {
        use super::kernel::{gelu_backward, gelu_forward};
        crate::cuda_source::for_each_float_type(|e, dtype| {
            assert_compiles!(e, gelu_forward[x, bias, output](dtype));
            assert_compiles!(e, gelu_backward[x, bias, grad, grad_x](dtype));
        });
    }
}
