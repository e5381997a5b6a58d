//! The attention's heads on the GPU: a dense layer's product `[batch, seq, heads × head_dim]`
//! split into contiguous heads `[batch, heads, seq, head_dim]` with the layer's bias added, and
//! heads merged back, as one kernel each way, with their own autodiff nodes.
//!
//! The heads as a view (`reshape` then `swap_dims`) have their batch dimensions out of order,
//! and cubek's matrix product copies such an operand before every product that reads it,
//! forward and backward; the bias was a kernel of its own before that.

use burn::backend::Cube;
use burn::backend::autodiff::{
    checkpoint::{base::Checkpointer, strategy::NoCheckpointing},
    grads::Gradients,
    ops::{Backward, Ops, OpsKind, unary},
};
use burn::tensor::{Shape, Tensor};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;

use super::{Tracked, elementwise_launch, plain, register_biased, tracked};
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

/// `x + bias` (`x` `[batch, seq, heads × head_dim]`, `bias` `[heads × head_dim]`) as contiguous
/// heads `[batch, heads, seq, head_dim]`, in `x`'s float type (to which `bias` is cast). The
/// caller checks [`super::applies`].
pub fn split_heads(x: Tensor<3>, bias: Tensor<1>, heads: usize) -> Tensor<4> {
    let bias = bias.cast(x.dtype());
    if !x.device().is_autodiff() {
        let output = split(plain(x), Some(plain(bias)), heads);
        return Tensor::from_primitive::<Cube>(output);
    }
    let (x, bias) = (tracked(x), tracked(bias));
    let output = match SplitBackward
        .prepare::<NoCheckpointing>([x.node(), bias.node()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(
            heads,
            split(x.into_primitive(), Some(bias.into_primitive()), heads),
        ),
        OpsKind::UnTracked(prep) => prep.finish(split(
            x.into_primitive(),
            Some(bias.into_primitive()),
            heads,
        )),
    };
    Tensor::from_primitive::<Tracked>(output)
}

/// Heads `[batch, heads, seq, head_dim]` merged into `[batch, seq, heads × head_dim]`. The
/// caller checks [`super::applies`].
pub fn merge_heads(x: Tensor<4>) -> Tensor<3> {
    if !x.device().is_autodiff() {
        return Tensor::from_primitive::<Cube>(merge(plain(x)));
    }
    let x = tracked(x);
    let heads = x.primitive().meta.shape()[1];
    let output = match MergeBackward
        .prepare::<NoCheckpointing>([x.node()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(heads, merge(x.into_primitive())),
        OpsKind::UnTracked(prep) => prep.finish(merge(x.into_primitive())),
    };
    Tensor::from_primitive::<Tracked>(output)
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

/// A new contiguous tensor of `shape` in `like`'s float type, on its device.
fn empty<const D: usize>(like: &CubeTensor, shape: [usize; D]) -> CubeTensor {
    empty_device_dtype(
        like.client.clone(),
        like.device.clone(),
        Shape::new(shape),
        like.dtype,
    )
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
        let cpu = crate::parse_device("cpu").unwrap();
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
                true => split_heads(x.clone(), bias.clone(), heads),
                false => (x.clone() + bias.clone().unsqueeze())
                    .reshape([batch, seq, heads, head_dim])
                    .swap_dims(1, 2),
            };
            let merge = |heads: Tensor<4>| match kernels {
                true => merge_heads(heads),
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
        let actual = run(&crate::parse_device("wgpu").unwrap(), true);
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
    /// without a bias (`crate::cuda_source`).
    #[cfg(feature = "cuda")]
    #[test]
    fn compiles_for_cuda() {
        use crate::cuda_source::{assert_compiles, for_each_float_type};
        for_each_float_type(|e, dtype| {
            for with_bias in [false, true] {
                assert_compiles(super::kernel::split_heads_kernel::create_dummy_kernel(
                    e.device_properties.clone(),
                    e.target_properties.clone(),
                    e.count(),
                    e.dim(),
                    e.tensor(),
                    e.tensor(),
                    e.tensor(),
                    16,
                    12,
                    64,
                    with_bias,
                    dtype,
                ));
            }
            assert_compiles(super::kernel::merge_heads_kernel::create_dummy_kernel(
                e.device_properties.clone(),
                e.target_properties.clone(),
                e.count(),
                e.dim(),
                e.tensor(),
                e.tensor(),
                16,
                12,
                64,
                dtype,
            ));
        });
    }
}
