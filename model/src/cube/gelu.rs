//! The exact GELU, `x · Φ(x)` with `Φ(x) = (1 + erf(x / √2)) / 2`, as one kernel forward and
//! one backward, with its own autodiff node.
//!
//! Burn builds it from five operations forward, and its default backward, which the GPU
//! backends take, is the derivative of GELU's tanh approximation, up to 8.7e-4 off the exact
//! one (tests/integration/parity.rs) and some fifteen operations long. The backward here is
//! the exact derivative, `Φ(x) + x · φ(x)`, as PyTorch's.

use burn::backend::Cube;
use burn::backend::autodiff::{
    checkpoint::{base::Checkpointer, strategy::NoCheckpointing},
    grads::Gradients,
    ops::{Backward, Ops, OpsKind, unary},
};
use burn::tensor::Tensor;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;

use super::{Tracked, elementwise_launch, empty_like, plain, tracked};
use kernel::{gelu_backward, gelu_forward};

/// The kernels, apart from the host code: CubeCL's `Tensor` is not Burn's.
mod kernel {
    use burn_cubecl::cubecl::{self, prelude::*};

    const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
    /// 1 / √(2π), the standard normal density at 0.
    const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;

    /// One unit per element.
    #[cube(launch)]
    pub fn gelu_forward<F: Float>(
        x: &Tensor<F>,
        output: &mut Tensor<F>,
        #[define(F)] _dtype: ElemType,
    ) {
        let i = ABSOLUTE_POS;
        if i >= x.len() {
            terminate!();
        }
        let v = f32::cast_from(x[i]);
        output[i] = F::cast_from(0.5 * v * (1.0 + Erf::erf(v * FRAC_1_SQRT_2)));
    }

    /// `grad_x = grad · (Φ(x) + x · φ(x))`, one unit per element.
    #[cube(launch)]
    pub fn gelu_backward<F: Float>(
        x: &Tensor<F>,
        grad: &Tensor<F>,
        grad_x: &mut Tensor<F>,
        #[define(F)] _dtype: ElemType,
    ) {
        let i = ABSOLUTE_POS;
        if i >= x.len() {
            terminate!();
        }
        let v = f32::cast_from(x[i]);
        let cdf = 0.5 * (1.0 + Erf::erf(v * FRAC_1_SQRT_2));
        let pdf = Exp::exp(v * v * f32::new(-0.5)) * FRAC_1_SQRT_2PI;
        grad_x[i] = F::cast_from(f32::cast_from(grad[i]) * (cdf + v * pdf));
    }
}

/// The exact GELU of `x` on a CubeCL device, differentiable when the device tracks
/// gradients. The caller checks [`super::applies`].
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if !x.device().is_autodiff() {
        return Tensor::from_primitive::<Cube>(forward(plain(x)));
    }
    let x = tracked(x);
    let output = match GeluBackward
        .prepare::<NoCheckpointing>([x.node()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let input = x.into_primitive();
            prep.finish(input.clone(), forward(input))
        }
        OpsKind::UnTracked(prep) => prep.finish(forward(x.into_primitive())),
    };
    Tensor::from_primitive::<Tracked>(output)
}

/// The autodiff node: its state is the input.
#[derive(Debug)]
struct GeluBackward;

impl Backward<Cube, 1> for GeluBackward {
    type State = CubeTensor;

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        unary::<Cube, _>(ops.parents, ops.node, grads, |grad| {
            let (x, grad) = (into_contiguous(ops.state), into_contiguous(grad));
            let grad_x = empty_like(&x);
            let (cube_dim, cube_count) = elementwise_launch(&x);
            let dtype = burn::backend::cubecl::dtype_to_storage_type(x.dtype);
            gelu_backward::launch(
                &x.client.clone(),
                cube_count,
                cube_dim,
                x.into_tensor_arg(),
                grad.into_tensor_arg(),
                grad_x.clone().into_tensor_arg(),
                dtype,
            );
            grad_x
        });
    }
}

fn forward(x: CubeTensor) -> CubeTensor {
    let x = into_contiguous(x);
    let output = empty_like(&x);
    let (cube_dim, cube_count) = elementwise_launch(&x);
    let dtype = burn::backend::cubecl::dtype_to_storage_type(x.dtype);
    gelu_forward::launch(
        &x.client.clone(),
        cube_count,
        cube_dim,
        x.into_tensor_arg(),
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
    /// in float64 (`assets/fixtures/gelu_reference.json`), to f32 precision.
    #[test]
    fn gpu_kernels_match_pytorch_forward_and_backward() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../assets/fixtures/gelu_reference.json"
        );
        let reference: Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let x = floats(&reference["x"]);
        let device = crate::parse_device("wgpu").unwrap().autodiff();
        let input =
            Tensor::<1>::from_data(TensorData::new(x.clone(), [x.len()]), &device).require_grad();
        assert!(super::super::applies(&input));
        let output = super::gelu(input.clone());
        let grads = output.clone().sum().backward();
        let values = |t: Tensor<1>| t.into_data().try_to_vec::<f32>().unwrap();
        for (what, actual, expected) in [
            ("gelu", values(output), floats(&reference["gelu"])),
            (
                "derivative",
                values(input.grad(&grads).unwrap()),
                floats(&reference["derivative"]),
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
    }
}
