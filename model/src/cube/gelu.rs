//! The exact GELU of a biased input, `GELU(x + bias)` with `GELU(v) = v · Φ(v)` and `Φ(v) =
//! (1 + erf(v / √2)) / 2`, as one kernel forward and one backward (plus the column sums of the
//! bias gradient), with its own autodiff node. The bias is the feed-forward network's first
//! dense layer's, whose matrix product comes without it.
//!
//! Burn builds GELU from five operations forward, and its default backward, which the GPU
//! backends take, is the derivative of GELU's tanh approximation, up to 8.7e-4 off the exact
//! one (tests/integration/parity.rs) and some fifteen operations long. The backward here is
//! the exact derivative, `Φ(v) + v · φ(v)`, as PyTorch's.

use burn::backend::Cube;
use burn::backend::autodiff::{
    checkpoint::{base::Checkpointer, strategy::NoCheckpointing},
    grads::Gradients,
    ops::{Backward, Ops, OpsKind},
};
use burn::tensor::Tensor;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;

use super::{Tracked, elementwise_launch, empty_like, plain, register_biased, tracked};
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

/// The exact GELU of `x + bias` on a CubeCL device, `x`'s rows as long as `bias`, in `x`'s
/// float type (to which `bias` is cast); differentiable when the device tracks gradients. The
/// caller checks [`super::applies`].
pub fn gelu<const D: usize>(x: Tensor<D>, bias: Tensor<1>) -> Tensor<D> {
    let bias = bias.cast(x.dtype());
    if !x.device().is_autodiff() {
        return Tensor::from_primitive::<Cube>(forward(plain(x), plain(bias)));
    }
    let (x, bias) = (tracked(x), tracked(bias));
    let output = match GeluBackward
        .prepare::<NoCheckpointing>([x.node(), bias.node()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let (x, bias) = (x.into_primitive(), bias.into_primitive());
            prep.finish((x.clone(), bias.clone()), forward(x, bias))
        }
        OpsKind::UnTracked(prep) => prep.finish(forward(x.into_primitive(), bias.into_primitive())),
    };
    Tensor::from_primitive::<Tracked>(output)
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
        let device = crate::parse_device("wgpu").unwrap().autodiff();
        let input =
            Tensor::<2>::from_data(TensorData::new(shifted, [rows, 3]), &device).require_grad();
        let bias_tensor =
            Tensor::<1>::from_data(TensorData::new(bias.to_vec(), [3]), &device).require_grad();
        assert!(super::super::applies(&input));
        let output = super::gelu(input.clone(), bias_tensor.clone());
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

    /// The kernels' CUDA C++ compiles for an H100 in every float type
    /// (`crate::cuda_source`).
    #[cfg(feature = "cuda")]
    #[test]
    fn compiles_for_cuda() {
        use crate::cuda_source::{assert_compiles, for_each_float_type};
        for_each_float_type(|e, dtype| {
            assert_compiles(super::kernel::gelu_forward::create_dummy_kernel(
                e.device_properties.clone(),
                e.target_properties.clone(),
                e.count(),
                e.dim(),
                e.tensor(),
                e.tensor(),
                e.tensor(),
                dtype,
            ));
            assert_compiles(super::kernel::gelu_backward::create_dummy_kernel(
                e.device_properties.clone(),
                e.target_properties.clone(),
                e.count(),
                e.dim(),
                e.tensor(),
                e.tensor(),
                e.tensor(),
                e.tensor(),
                dtype,
            ));
        });
    }
}
