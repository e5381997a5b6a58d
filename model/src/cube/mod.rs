//! burnbert's own CubeCL kernels for the GPU backends (CUDA, wgpu), each with its autodiff
//! node: LayerNorm, the attention's scaled, masked softmax, the exact GELU, dropout, and the
//! "Add & Norm" that follows the attention and the feed-forward network (bias, dropout,
//! residual sum and LayerNorm in one), and the attention's heads split (with the bias) and
//! merged.
//!
//! Burn 0.22 builds each from primitive operations and differentiates each of them, one
//! kernel launch and one pass over memory apiece; its automatic fusion, which would merge
//! them, is off in burnbert (it compiled for minutes before a first step, BENCHMARKS.md).
//! Here each is one kernel forward and one backward. The CPU backends keep Burn's versions.
//!
//! LayerNorm, Add & Norm and softmax work row by row: one cube of up to [`UNITS`] units per row, striding
//! over it, with the row's sums and maxima meeting in shared memory; GELU and dropout take one
//! unit per element. Arithmetic is f32 whatever the tensors' float type.

pub mod add_norm;
#[cfg(all(feature = "cuda", feature = "wgpu"))]
pub mod cuda_source;
pub mod dropout;
pub mod gelu;
pub mod heads;
pub mod layer_norm;
pub mod softmax;

use burn::backend::Cube;
use burn::backend::autodiff::{
    Autodiff, NodeId, checkpoint::strategy::NoCheckpointing, grads::Gradients,
};
use burn::backend::ops::FloatTensorOps;
use burn::tensor::{Bool, GradientCheckpointingStrategy, Tensor};
use burn::tensor::{Shape, Slice};
use burn_cubecl::cubecl::{CubeCount, CubeDim, calculate_cube_count_elemwise};
use burn_cubecl::tensor::CubeTensor;

/// The most units in a cube, one cube per row: a power of two, for the tree reductions.
const UNITS: u32 = 128;

/// An autodiff tensor on a CubeCL device, as Burn's autodiff backend holds it.
type Tracked = Autodiff<Cube, NoCheckpointing>;

/// Whether these kernels take `tensor`: where burnbert's kernels run
/// ([`crate::runs_own_kernels`]), without gradient checkpointing (whose autodiff type the
/// kernels' nodes are not written for).
pub fn applies<const D: usize>(tensor: &Tensor<D>) -> bool {
    let device = tensor.device();
    crate::device::runs_own_kernels(&device)
        && matches!(
            device.gradient_checkpointing_strategy(),
            None | Some(GradientCheckpointingStrategy::Disabled)
        )
}

/// The CubeCL tensor under a tensor on a device without autodiff.
fn plain<const D: usize>(tensor: Tensor<D>) -> CubeTensor {
    tensor
        .try_into_primitive::<Cube>()
        .expect("a CubeCL tensor (checked by `applies`)")
}

/// The CubeCL tensor under a bool tensor, on a device with or without autodiff (which keeps
/// bool tensors as they are).
fn plain_bool<const D: usize>(tensor: Tensor<D, Bool>) -> CubeTensor {
    match tensor.device().is_autodiff() {
        true => tensor.try_into_primitive::<Tracked>(),
        false => tensor.try_into_primitive::<Cube>(),
    }
    .expect("a CubeCL bool tensor (checked by `applies`)")
}

/// The autodiff tensor under a tensor on an autodiff device.
fn tracked<const D: usize>(
    tensor: Tensor<D>,
) -> <Tracked as burn::backend::BackendTypes>::FloatTensorPrimitive {
    tensor
        .try_into_primitive::<Tracked>()
        .expect("an autodiff CubeCL tensor without checkpointing (checked by `applies`)")
}

/// A new contiguous tensor of `like`'s shape and float type.
fn empty_like(like: &CubeTensor) -> CubeTensor {
    burn_cubecl::ops::numeric::empty_device_dtype(
        like.client.clone(),
        like.device.clone(),
        like.meta.shape().clone(),
        like.dtype,
    )
}

/// The sum over every row of `tensor`, whose last axis is the row, as `[width]`: the gradient
/// of a vector (gamma, beta, a bias) added to every row.
fn column_sums(tensor: CubeTensor) -> CubeTensor {
    let shape = tensor.meta.shape().clone();
    let width = shape[shape.num_dims() - 1];
    let rows = tensor.meta.num_elements() / width;
    let [sums] = block_column_sums(Cube::float_reshape(tensor, Shape::new([1, rows, width])));
    sums
}

/// The column sums of each block of `blocks`, `[N, rows, width]`, in one reduction: the
/// gradients of N vectors added to every row, as `[width]` each.
fn block_column_sums<const N: usize>(blocks: CubeTensor) -> [CubeTensor; N] {
    let width = blocks.meta.shape()[2];
    let sums = Cube::float_reshape(Cube::float_sum_dim(blocks, 1), Shape::new([N, width]));
    std::array::from_fn(|k| {
        Cube::float_reshape(
            Cube::float_slice(sums.clone(), &block(k)),
            Shape::new([width]),
        )
    })
}

/// The slice of block `k` along the first axis (a view where the offset is aligned).
fn block(k: usize) -> [Slice; 1] {
    [Slice::new(k as isize, Some(k as isize + 1), 1)]
}

/// Registers `grad`, the gradient of an input to which a bias was added along its rows, for
/// that input (when it tracks one), and its column sums for the bias.
fn register_biased(grads: &mut Gradients, [input, bias]: [Option<NodeId>; 2], grad: CubeTensor) {
    if let Some(bias) = bias {
        grads.register::<Cube>(bias, column_sums(grad.clone()));
    }
    if let Some(input) = input {
        grads.register::<Cube>(input, grad);
    }
}

/// One unit per element of `tensor`.
fn elementwise_launch(tensor: &CubeTensor) -> (CubeDim, CubeCount) {
    let elements = tensor.meta.num_elements();
    let cube_dim = CubeDim::new(&tensor.client, elements);
    let count = calculate_cube_count_elemwise(&tensor.client, elements, cube_dim);
    (cube_dim, count)
}

/// One cube per row of `rows`, of `width` elements each: as many units as the row has
/// elements, rounded up to a power of two, from a plane of 32 up to [`UNITS`].
fn row_launch(tensor: &CubeTensor, rows: usize, width: usize) -> (CubeDim, CubeCount) {
    let units = (width.next_power_of_two() as u32).clamp(32, UNITS);
    let cube_dim = CubeDim::new_1d(units);
    let count = calculate_cube_count_elemwise(&tensor.client, rows * units as usize, cube_dim);
    (cube_dim, count)
}

/// Reductions over a cube's units, for the kernels.
mod reduce {
    use burn_cubecl::cubecl::{self, prelude::*};

    /// The sum (or with `maximum`, the maximum) of every unit's `value` in the cube, in every
    /// unit. `shared` holds one value per unit; the cube has a power-of-two number of units.
    #[cube]
    fn cube_reduce(value: f32, shared: &mut Shared<[f32]>, #[comptime] maximum: bool) -> f32 {
        shared[UNIT_POS as usize] = value;
        sync_cube();
        let mut active = CUBE_DIM / 2;
        while active > 0 {
            if UNIT_POS < active {
                let mine = shared[UNIT_POS as usize];
                let other = shared[(UNIT_POS + active) as usize];
                shared[UNIT_POS as usize] = if maximum {
                    max(mine, other)
                } else {
                    mine + other
                };
            }
            sync_cube();
            active /= 2;
        }
        let result = shared[0];
        // Every unit reads the result before the next reduction overwrites it.
        sync_cube();
        result
    }

    #[cube]
    pub fn cube_sum(value: f32, shared: &mut Shared<[f32]>) -> f32 {
        cube_reduce(value, shared, false)
    }

    #[cube]
    pub fn cube_max(value: f32, shared: &mut Shared<[f32]>) -> f32 {
        cube_reduce(value, shared, true)
    }
}
