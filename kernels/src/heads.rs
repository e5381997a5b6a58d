//! The attention's heads on the GPU: a dense layer's product `[batch, seq, heads × head_dim]`
//! split into contiguous heads `[batch, heads, seq, head_dim]` with the layer's bias added, and
//! heads merged back, as one kernel each way: [`crate::split_heads`], [`crate::merge_heads`].
//!
//! The heads as a view (`reshape` then `swap_dims`) have their batch dimensions out of order,
//! and cubek's matrix product copies such an operand before every product that reads it,
//! forward and backward; the bias was a kernel of its own before that.

use burn::backend::Cube;
use burn::backend::autodiff::{
    checkpoint::base::Checkpointer,
    grads::Gradients,
    ops::{Backward, Ops, unary},
};
use burn::tensor::Tensor;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;

use crate::autodiff::with_backward;
use crate::host::{elementwise_launch, empty, register_biased};
use kernel::{merge_heads_kernel, split_heads_kernel};

/// The kernels, apart from the host code: CubeCL's `Tensor` is not Burn's.
mod kernel {
    use burn_cubecl::cubecl::{self, prelude::*};

    /// `output[b, h, s, d] = input[b, s, h, d] (+ bias[h, d])`, one unit per element; the
    /// input is read through its strides.
    #[cube(launch, create_dummy_kernel)]
    pub fn split_heads_kernel<F: Float>(
        input: &Tensor<F>,
        bias: &Tensor<F>,
        output: &mut Tensor<F>,
        seq: usize,
        heads: usize,
        head_dim: usize,
        #[comptime] with_bias: bool,
        #[define(F)] _dtype: ElemType,
    ) {
        let i = ABSOLUTE_POS;
        if i >= output.len() {
            terminate!();
        }
        let d = i % head_dim;
        let s = (i / head_dim) % seq;
        let h = (i / (head_dim * seq)) % heads;
        let b = i / (head_dim * seq * heads);
        let column = h * head_dim + d;
        let mut value = f32::cast_from(
            input[b * input.stride(0) + s * input.stride(1) + column * input.stride(2)],
        );
        if with_bias {
            value += f32::cast_from(bias[column]);
        }
        output[i] = F::cast_from(value);
    }

    /// `output[b, s, h, d] = input[b, h, s, d]`, one unit per element; the input is read
    /// through its strides (the key's gradient comes transposed).
    #[cube(launch, create_dummy_kernel)]
    pub fn merge_heads_kernel<F: Float>(
        input: &Tensor<F>,
        output: &mut Tensor<F>,
        seq: usize,
        heads: usize,
        head_dim: usize,
        #[define(F)] _dtype: ElemType,
    ) {
        let i = ABSOLUTE_POS;
        if i >= output.len() {
            terminate!();
        }
        let d = i % head_dim;
        let h = (i / head_dim) % heads;
        let s = (i / (head_dim * heads)) % seq;
        let b = i / (head_dim * heads * seq);
        output[i] = input
            [b * input.stride(0) + h * input.stride(1) + s * input.stride(2) + d * input.stride(3)];
    }
}

/// [`crate::split_heads`].
pub fn split_heads(x: Tensor<3>, bias: Tensor<1>, heads: usize) -> Tensor<4> {
    let bias = bias.cast(x.dtype());
    with_backward(SplitBackward, [x.into(), bias.into()], |[x, bias]| {
        (split(x, Some(bias), heads), heads)
    })
}

/// [`crate::merge_heads`].
pub fn merge_heads(x: Tensor<4>) -> Tensor<3> {
    let heads = x.dims()[1];
    with_backward(MergeBackward, [x.into()], |[x]| (merge(x), heads))
}

/// The autodiff node of [`split_heads`]: its state is the number of heads.
#[derive(Debug)]
struct SplitBackward;

impl Backward<Cube, 2> for SplitBackward {
    type State = usize;

    fn backward(
        self,
        ops: Ops<Self::State, 2>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_bias] = ops.parents;
        let grad_x = merge(grads.consume::<Cube>(&ops.node));
        register_biased(grads, [node_x, node_bias].map(|n| n.map(|n| n.id)), grad_x);
    }
}

/// The autodiff node of [`merge_heads`]: its state is the number of heads.
#[derive(Debug)]
struct MergeBackward;

impl Backward<Cube, 1> for MergeBackward {
    type State = usize;

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let heads = ops.state;
        unary::<Cube, _>(ops.parents, ops.node, grads, |grad| {
            split(grad, None, heads)
        });
    }
}

/// `[batch, seq, heads × head_dim]` (+ bias) to `[batch, heads, seq, head_dim]`.
fn split(x: CubeTensor, bias: Option<CubeTensor>, heads: usize) -> CubeTensor {
    let shape = x.meta.shape().clone();
    let (batch, seq, width) = (shape[0], shape[1], shape[2]);
    let head_dim = width / heads;
    let output = empty(&x, [batch, heads, seq, head_dim]);
    let (cube_dim, cube_count) = elementwise_launch(&output);
    let dtype = burn::backend::cubecl::dtype_to_storage_type(x.dtype);
    let with_bias = bias.is_some();
    // Without a bias the kernel reads none; the input stands in for it.
    let bias = bias.map_or_else(|| x.clone(), into_contiguous);
    split_heads_kernel::launch(
        &x.client.clone(),
        cube_count,
        cube_dim,
        x.into_tensor_arg(),
        bias.into_tensor_arg(),
        output.clone().into_tensor_arg(),
        seq,
        heads,
        head_dim,
        with_bias,
        dtype,
    );
    output
}

/// `[batch, heads, seq, head_dim]` to `[batch, seq, heads × head_dim]`.
fn merge(x: CubeTensor) -> CubeTensor {
    let shape = x.meta.shape().clone();
    let (batch, heads, seq, head_dim) = (shape[0], shape[1], shape[2], shape[3]);
    let output = empty(&x, [batch, seq, heads * head_dim]);
    let (cube_dim, cube_count) = elementwise_launch(&output);
    let dtype = burn::backend::cubecl::dtype_to_storage_type(x.dtype);
    merge_heads_kernel::launch(
        &x.client.clone(),
        cube_count,
        cube_dim,
        x.into_tensor_arg(),
        output.clone().into_tensor_arg(),
        seq,
        heads,
        head_dim,
        dtype,
    );
    output
}

#[cfg(all(test, feature = "wgpu"))]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution, TensorData};

    /// Against the views on the CPU: the heads with the bias, the merge (of contiguous heads
    /// and of a transposed view), and the gradients of the inputs and the bias through both.
    #[test]
    fn split_and_merge_match_the_views_on_the_cpu() {
        let (batch, seq, heads, head_dim) = (3, 5, 4, 6);
        let width = heads * head_dim;
        let cpu = crate::testing::cpu();
        let random = |shape: Vec<usize>| {
            let n: usize = shape.iter().product();
            let values = Tensor::<1>::random([n], Distribution::Normal(0.0, 1.0), &cpu)
                .into_data()
                .try_to_vec::<f32>()
                .unwrap();
            TensorData::new(values, shape)
        };
        let (x, bias) = (random(vec![batch, seq, width]), random(vec![width]));
        let weights = random(vec![batch, heads, seq, head_dim]);
        // Heads stored as [batch, heads, head_dim, seq], merged from their transposed view.
        let transposed = random(vec![batch, heads, head_dim, seq]);
        let run = |device: &Device, kernels: bool| {
            let device = device.clone().autodiff();
            let x = Tensor::<3>::from_data(x.clone(), &device).require_grad();
            let bias = Tensor::<1>::from_data(bias.clone(), &device).require_grad();
            let weights = Tensor::<4>::from_data(weights.clone(), &device);
            let stored = Tensor::<4>::from_data(transposed.clone(), &device).require_grad();
            let split = match kernels {
                true => crate::split_heads(x.clone(), bias.clone(), heads),
                false => (x.clone() + bias.clone().unsqueeze())
                    .reshape([batch, seq, heads, head_dim])
                    .swap_dims(1, 2),
            };
            let merge = |heads: Tensor<4>| match kernels {
                true => crate::merge_heads(heads),
                false => heads.swap_dims(1, 2).reshape([batch, seq, width]),
            };
            // A loss that weighs every element of the heads differently, through the merge.
            let weighted = split.clone() * weights;
            let merged = merge(weighted) + merge(stored.clone().swap_dims(2, 3));
            let grads = (merged.clone() * merged.clone()).sum().backward();
            let values = |data: TensorData| data.try_to_vec::<f32>().unwrap();
            [
                values(split.into_data()),
                values(merged.into_data()),
                values(x.grad(&grads).unwrap().into_data()),
                values(bias.grad(&grads).unwrap().into_data()),
                values(stored.grad(&grads).unwrap().into_data()),
            ]
        };
        let expected = run(&cpu, false);
        let actual = run(&crate::testing::wgpu(), true);
        let names = ["split", "merged", "x grad", "bias grad", "transposed grad"];
        for (what, (actual, expected)) in names.iter().zip(actual.iter().zip(&expected)) {
            assert_eq!(actual.len(), expected.len(), "{what}");
            for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
                assert!(
                    (a - e).abs() <= 1e-5 * e.abs().max(1.0),
                    "{what}[{i}]: {a} vs {e}"
                );
            }
        }
    }

    /// The kernels' CUDA C++ compiles for an H100 in every float type, splitting with and
    /// without a bias.
    #[cfg(feature = "cuda")]
    #[test]
    fn compiles_for_cuda() {
        use super::kernel::{merge_heads_kernel, split_heads_kernel};
        crate::cuda_source::for_each_float_type(|e, dtype| {
            for with_bias in [false, true] {
                assert_compiles!(
                    e,
                    split_heads_kernel[input, bias, output](16, 12, 64, with_bias, dtype)
                );
            }
            assert_compiles!(e, merge_heads_kernel[input, output](16, 12, 64, dtype));
        });
    }
}
